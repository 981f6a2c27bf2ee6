//! Cost of one rate-limit decision, with 1 key and with 1 M keys present (the issue asks for
//! 1 M; the run before used 100 k).
//!
//! Run: `cargo bench --bench ratelimit -- --warm-up-time 1 --measurement-time 2`
//!
//! `baseline/dashmap_*` decides the same way on a `DashMap` (entry API), for comparison with the
//! sharded mutexes `MemoryLimiter` uses; `*_sweep_*` is how long reclamation holds locks.

use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use hookgate::clock::Clock;
use hookgate::ratelimit::{gcra, KeyHasher, KeyValue, LimitKeyHash, MemoryLimiter, TierLimiter};

const FREE: NonZeroU32 = NonZeroU32::new(60).unwrap();
const KEYS: usize = 1_000_000;

/// A clock that moves `step` per reading. At one second, every decision finds a refilled bucket,
/// so each one is allowed and writes its key (the costlier path).
struct TickClock {
    nanos: AtomicU64,
    step: AtomicU64,
}

impl TickClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            nanos: AtomicU64::new(1_700_000_000_000_000_000),
            step: AtomicU64::new(1_000_000_000),
        })
    }
}

impl Clock for TickClock {
    fn now(&self) -> Duration {
        let step = self.step.load(Ordering::Relaxed);
        Duration::from_nanos(self.nanos.fetch_add(step, Ordering::Relaxed))
    }
}

fn keys(n: usize) -> Vec<LimitKeyHash> {
    let hasher = KeyHasher::random();
    (0..n)
        .map(|i| hasher.route_key("orders", KeyValue::Header(format!("tenant-{i}").as_bytes())))
        .collect()
}

/// A limiter holding `keys`, all filled at one instant (a moving clock would let a growing
/// shard reclaim the earlier ones).
fn limiter_with(keys: &[LimitKeyHash]) -> MemoryLimiter {
    let clock = TickClock::new();
    let limiter = MemoryLimiter::new(clock.clone());
    clock.step.store(0, Ordering::Relaxed);
    for key in keys {
        limiter.decide(key, FREE);
    }
    clock.step.store(1_000_000_000, Ordering::Relaxed);
    limiter
}

fn bench_math_and_hash(c: &mut Criterion) {
    let rate = gcra::Rate::per_minute(FREE);
    c.bench_function("gcra/decide", |b| {
        let mut now = 1_700_000_000_000_000_000u64;
        let mut tat = 0;
        b.iter(|| {
            now += 500_000_000;
            let (d, t) = gcra::decide(black_box(tat), now, rate);
            tat = t;
            d
        })
    });
    let hasher = KeyHasher::random();
    c.bench_function("key/route_key_header", |b| {
        b.iter(|| {
            hasher.route_key(
                black_box("orders"),
                KeyValue::Header(black_box(b"tenant-4711")),
            )
        })
    });
}

fn bench_memory(c: &mut Criterion) {
    let all = keys(KEYS);
    let one = limiter_with(&all[..1]);
    c.bench_function("memory/decide/1_key", |b| {
        b.iter(|| one.decide(black_box(&all[0]), FREE))
    });

    let dynamic: &dyn TierLimiter = &one;
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("memory/check_async_trait/1_key", |b| {
        b.iter(|| {
            // `async_trait` boxes the future: this measures that allocation too.
            match dynamic
                .check(black_box(all[0]), FREE)
                .as_mut()
                .poll(&mut cx)
            {
                Poll::Ready(decision) => decision.unwrap(),
                Poll::Pending => unreachable!("the memory limiter never waits"),
            }
        })
    });

    let many = limiter_with(&all);
    assert_eq!(many.len(), KEYS);
    c.bench_function("memory/decide/1m_keys", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7919) % KEYS; // a prime stride: no cache-friendly order
            many.decide(black_box(&all[i]), FREE)
        })
    });

    c.bench_function("memory/sweep_step_4_of_64_shards/1m_live_keys", |b| {
        // TAT ≈ now + 1 s for every key: the sweep visits all and removes none.
        let clock = Arc::new(FrozenClock);
        let limiter = MemoryLimiter::new(clock);
        for key in &all {
            limiter.decide(key, FREE);
        }
        b.iter(|| limiter.sweep(4))
    });
}

/// A clock that never moves.
struct FrozenClock;

impl Clock for FrozenClock {
    fn now(&self) -> Duration {
        Duration::from_secs(1_700_000_000)
    }
}

#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("LimitKeyHash hashes as one u64")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Dash = DashMap<LimitKeyHash, u64, BuildHasherDefault<PassThrough>>;

/// The same decision as `MemoryLimiter::decide`, on a `DashMap`.
fn dash_decide(map: &Dash, clock: &dyn Clock, key: &LimitKeyHash) -> gcra::Decision {
    let now = clock.now().as_nanos() as u64;
    let mut tat = map.entry(*key).or_insert(0);
    let (d, t) = gcra::decide(*tat, now, gcra::Rate::per_minute(FREE));
    *tat = t;
    d
}

fn bench_dashmap_baseline(c: &mut Criterion) {
    let all = keys(KEYS);
    let clock = TickClock::new();
    let one = Dash::default();
    c.bench_function("baseline/dashmap_decide/1_key", |b| {
        b.iter(|| dash_decide(&one, &*clock, black_box(&all[0])))
    });
    let many = Dash::default();
    for key in &all {
        dash_decide(&many, &*clock, key);
    }
    c.bench_function("baseline/dashmap_decide/1m_keys", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7919) % KEYS;
            dash_decide(&many, &*clock, black_box(&all[i]))
        })
    });
    c.bench_function("baseline/dashmap_retain_all/1m_live_keys", |b| {
        let now = 0; // every TAT is later: nothing removed
        b.iter(|| many.retain(|_, tat| *tat > now))
    });
}

criterion_group!(
    benches,
    bench_math_and_hash,
    bench_memory,
    bench_dashmap_baseline
);
criterion_main!(benches);

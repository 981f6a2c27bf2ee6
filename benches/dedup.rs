//! Deduplication store benchmarks: the cost of claim + commit, and memory per entry.
//!
//! Run with `cargo bench --bench dedup -- --warm-up-time 1 --measurement-time 2`. Before the
//! timed benchmarks it prints the live heap bytes per entry (counted by the global allocator
//! below) of the memory store and, for comparison, of `lru::LruCache` and `dashmap::DashMap`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use hookgate::clock::{Clock, ManualClock};
use hookgate::dedup::{
    Claim, ClaimOutcome, DeliveryKey, DeliveryStore, KeyHasher, MemoryStore, DEFAULT_TTL,
};

/// The system allocator, counting the bytes currently allocated (as requested: the
/// allocator's own per-chunk overhead is not included).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: usize = 1_000_000;
const LEASE: Duration = Duration::from_secs(35);

/// Key number `n`: distinct, uniformly spread bits (splitmix64 on each half), like real keys.
fn key(n: u64) -> DeliveryKey {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (lo, hi) = (splitmix(n), splitmix(n ^ 0x5555_5555_5555_5555));
    DeliveryKey::from_u128(u128::from(hi) << 64 | u128::from(lo))
}

/// Live heap bytes `build` leaves behind, with what it built.
fn measure<T>(build: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let built = build();
    (built, LIVE.load(Ordering::Relaxed) - before)
}

/// Fills a store of capacity `ENTRIES` until it is full (shards fill unevenly, so slightly
/// more than `ENTRIES` keys are delivered and a few evicted), reporting bytes per entry.
fn full_store(clock: Arc<dyn Clock>) -> (MemoryStore, u64) {
    let capacity = NonZeroUsize::new(ENTRIES).unwrap();
    let started = Instant::now();
    let ((store, next), bytes) = measure(|| {
        let store = MemoryStore::new(capacity, DEFAULT_TTL, clock);
        let mut n = 0;
        loop {
            for _ in 0..10_000 {
                let token = store.claim_now(key(n), LEASE).claimed().unwrap();
                assert!(store.commit_now(key(n), token));
                n += 1;
            }
            if n as usize >= ENTRIES && store.len() == ENTRIES {
                break (store, n);
            }
        }
    });
    println!(
        "dedup memory: {:.1} bytes/entry at {} entries ({} delivered, {} evicted, filled in {:?})",
        bytes as f64 / store.len() as f64,
        store.len(),
        next,
        store.evictions(),
        started.elapsed(),
    );
    (store, next)
}

fn compare_memory() {
    let (lru, bytes) = measure(|| {
        let mut lru = lru::LruCache::<u128, u64>::unbounded();
        for n in 0..ENTRIES as u64 {
            lru.put(key(n).as_u128(), n);
        }
        lru
    });
    println!(
        "lru::LruCache<u128, u64> memory: {:.1} bytes/entry at {} entries",
        bytes as f64 / lru.len() as f64,
        lru.len()
    );
    drop(lru);

    let (map, bytes) = measure(|| {
        let map = dashmap::DashMap::<u128, u64>::new();
        for n in 0..ENTRIES as u64 {
            map.insert(key(n).as_u128(), n);
        }
        map
    });
    println!(
        "dashmap::DashMap<u128, u64> memory: {:.1} bytes/entry at {} entries",
        bytes as f64 / map.len() as f64,
        map.len()
    );
    drop(map);

    let (map, bytes) = measure(|| {
        let mut map = HashMap::<u128, u64>::new();
        for n in 0..ENTRIES as u64 {
            map.insert(key(n).as_u128(), n);
        }
        map
    });
    println!(
        "std HashMap<u128, u64> memory: {:.1} bytes/entry at {} entries",
        bytes as f64 / map.len() as f64,
        map.len()
    );
}

/// Runs a future that never waits (the memory store's) to completion in one poll.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory store never waits"),
    }
}

fn benches(c: &mut Criterion, full: &MemoryStore, mut next: u64) {
    let mut group = c.benchmark_group("dedup");

    let hasher = KeyHasher::random();
    group.bench_function("key_hash", |b| {
        b.iter(|| {
            hasher.key(
                black_box("stripe"),
                black_box(b"evt_1NQ3sJ2eZvKYlo2CQx1yR0Aa"),
            )
        })
    });

    // One key, claimed and released over and over.
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    let store = MemoryStore::new(
        NonZeroUsize::new(ENTRIES).unwrap(),
        DEFAULT_TTL,
        clock.clone(),
    );
    let k = key(u64::MAX);
    group.bench_function(BenchmarkId::new("claim_release", "1_key"), |b| {
        b.iter(|| {
            let token = store.claim_now(black_box(k), LEASE).claimed().unwrap();
            assert!(store.release_now(k, token));
        })
    });

    // One key, claimed and committed over and over: with a 1 s TTL and the clock moving
    // 1 s a round, each claim first reclaims the previous round's record.
    let second = Duration::from_secs(1);
    let store = MemoryStore::new(NonZeroUsize::new(ENTRIES).unwrap(), second, clock.clone());
    group.bench_function(BenchmarkId::new("claim_commit", "1_key"), |b| {
        b.iter(|| {
            clock.advance(second);
            let token = store.claim_now(black_box(k), LEASE).claimed().unwrap();
            assert!(store.commit_now(k, token));
        })
    });

    // The same through the trait object and the guard (boxed `async_trait` futures).
    let dyn_store: Arc<dyn DeliveryStore> = Arc::new(store);
    group.bench_function(BenchmarkId::new("guard_claim_commit", "1_key"), |b| {
        b.iter(|| {
            clock.advance(second);
            let claim = ready(Claim::acquire(&dyn_store, black_box(k), LEASE)).unwrap();
            let ClaimOutcome::Claimed(claim) = claim else {
                panic!("free")
            };
            assert!(ready(claim.commit()).unwrap());
        })
    });

    // A full store of 1 M delivered IDs: each new delivery evicts the oldest.
    group.bench_function(BenchmarkId::new("claim_commit", "1M_keys"), |b| {
        b.iter(|| {
            let k = key(next);
            next += 1;
            let token = full.claim_now(black_box(k), LEASE).claimed().unwrap();
            assert!(full.commit_now(k, token));
        })
    });

    // A duplicate of a delivered ID among 1 M: the hit path.
    let mut probe = next - 1;
    group.bench_function(BenchmarkId::new("duplicate", "1M_keys"), |b| {
        b.iter(|| {
            probe = if probe == next - ENTRIES as u64 / 2 {
                next - 1
            } else {
                probe - 1
            };
            let outcome = full.claim_now(black_box(key(probe)), LEASE);
            assert_eq!(outcome, ClaimOutcome::Committed);
        })
    });
    group.finish();
}

fn main() {
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    let (full, next) = full_store(clock);
    compare_memory();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &full, next);
    criterion.final_summary();
}

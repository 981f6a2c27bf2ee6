//! One suite, two backends: every test here runs unchanged against the memory backend and
//! against the Redis backend (on a `redis-server` of its own, over plain TCP and over TLS),
//! through the `Backend` trait the gateway uses. All run on real time, with short leases and
//! TTLs, polling with deadlines.

mod common;

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use hookgate::config::model::{OnStateError, PemFile, RedisState, RedisTls, RedisUrl, Secret};
use hookgate::dedup::{
    Claim, ClaimOutcome, ClaimToken, DedupPolicy, DeliveryKey, DeliveryStore, IdSource, KeyHasher,
};
use hookgate::metrics::Metrics;
use hookgate::ratelimit::{self, KeyValue, LimitKeyHash, Verdict};
use hookgate::state::{Admission, Ask, Backend, MemoryBackend, RedisBackend, StateError};

/// Route 0 deduplicates (TTL 1 s); route 1 doesn't.
const DEDUP: usize = 0;
const NO_DEDUP: usize = 1;
const LEASE: Duration = Duration::from_secs(30);
const FREE: NonZeroU32 = NonZeroU32::new(60).unwrap();

/// A backend under test, and the Redis server behind it if any.
struct Fixture {
    backend: Arc<dyn Backend>,
    _redis: Option<RedisServer>,
    /// The certificates of a TLS Redis.
    _pki: Option<tempfile::TempDir>,
    /// What the Redis backend records (its batches among them).
    metrics: Option<Metrics>,
}

impl Fixture {
    fn store(&self) -> Arc<dyn DeliveryStore> {
        self.backend.store(DEDUP).expect("route 0 deduplicates")
    }

    async fn claim(&self, key: DeliveryKey, lease: Duration) -> ClaimOutcome {
        self.store().claim(key, lease).await.unwrap()
    }

    async fn check(&self, key: LimitKeyHash, per_minute: NonZeroU32) -> ratelimit::Decision {
        self.backend.limiter().check(key, per_minute).await.unwrap()
    }

    async fn admit(&self, ask: Ask) -> Admission {
        self.backend.admit(ask).await.unwrap()
    }

    /// With Redis: the batches sent so far, and how many held more than one operation.
    fn batches(&self) -> Option<Batches> {
        self.metrics.as_ref().map(Batches::of)
    }
}

/// What `hookgate_state_batch_ops{backend="redis"}` shows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Batches {
    /// Calls to Redis.
    calls: f64,
    /// Operations they carried.
    ops: f64,
    /// Calls that carried one operation.
    single: f64,
    /// Calls that carried at most 64.
    up_to_64: f64,
    /// Calls that carried at most 128.
    up_to_128: f64,
}

impl Batches {
    fn of(metrics: &Metrics) -> Self {
        let text = metrics.render();
        let series = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Self {
            calls: series(r#"hookgate_state_batch_ops_count{backend="redis"} "#),
            ops: series(r#"hookgate_state_batch_ops_sum{backend="redis"} "#),
            single: series(r#"hookgate_state_batch_ops_bucket{backend="redis",le="1"} "#),
            up_to_64: series(r#"hookgate_state_batch_ops_bucket{backend="redis",le="64"} "#),
            up_to_128: series(r#"hookgate_state_batch_ops_bucket{backend="redis",le="128"} "#),
        }
    }

    /// Whether some call since `before` carried more than one operation.
    fn grouped_since(&self, before: Batches) -> bool {
        self.calls - before.calls > self.single - before.single
    }
}

fn policies() -> Vec<Option<DedupPolicy>> {
    let mut policy = DedupPolicy::new(IdSource::BodyHash);
    policy.ttl = Duration::from_secs(1);
    vec![Some(policy), None]
}

fn memory() -> Fixture {
    Fixture {
        backend: Arc::new(MemoryBackend::new(&policies(), hookgate::clock::system())),
        _redis: None,
        _pki: None,
        metrics: None,
    }
}

fn redis() -> Fixture {
    let server = RedisServer::start();
    let url = server.url();
    redis_fixture(server, &url, None, None)
}

/// The Redis backend over `rediss://`, trusting the test CA that signed the server's certificate.
fn redis_tls() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path(), "suite");
    let server = RedisServer::start_tls(&pki, false);
    let tls = RedisTls {
        ca: Some(PemFile {
            pem: std::fs::read(&pki.ca).unwrap(),
            path: pki.ca.clone(),
        }),
        client: None,
    };
    let url = server.tls_url();
    redis_fixture(server, &url, Some(tls), Some(dir))
}

fn redis_fixture(
    server: RedisServer,
    url: &str,
    tls: Option<RedisTls>,
    pki: Option<tempfile::TempDir>,
) -> Fixture {
    // Generous: a loaded CI machine must not turn a slow answer into a failed test.
    let settings = redis_settings(url, Duration::from_secs(2), tls);
    let metrics = Metrics::new();
    let backend = RedisBackend::new(&settings, &policies(), metrics.state("redis"));
    Fixture {
        backend: Arc::new(backend),
        _redis: Some(server),
        _pki: pki,
        metrics: Some(metrics),
    }
}

fn redis_settings(url: &str, timeout: Duration, tls: Option<RedisTls>) -> RedisState {
    RedisState {
        url: RedisUrl::parse(url).unwrap(),
        timeout,
        on_error: OnStateError::FailClosed,
        key_prefix: "suite".into(),
        key_secret: Secret::new("0123456789abcdef0123456789abcdef"),
        tls: tls.map(Box::new),
    }
}

/// Runs each listed test against both backends: `memory::<test>`, `redis::<test>` and
/// `redis_tls::<test>`.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::memory()).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::redis()).await
                }
            )*
        }
        mod redis_tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::redis_tls()).await
                }
            )*
        }
    };
}

suite!(
    a_claim_is_exclusive_then_committed_for_the_ttl,
    a_released_claim_frees_the_id,
    a_stale_token_changes_nothing,
    a_claim_expires_after_its_lease,
    concurrent_claims_of_one_id_make_one_claim,
    a_dropped_guard_releases_its_claim,
    the_free_tier_passes_60_then_denies_with_headers,
    limit_keys_are_independent,
    concurrent_checks_allow_exactly_the_limit,
    denied_requests_consume_nothing_and_the_bucket_refills,
    admission_checks_the_limit_then_claims,
    a_limited_admission_claims_nothing,
    an_admission_with_nothing_to_decide_admits,
    concurrent_claims_of_many_ids_make_one_claim_each_then_settle,
    concurrent_admissions_on_one_limit_admit_exactly_the_limit,
);

fn delivery(id: &str) -> DeliveryKey {
    KeyHasher::from_secret(&[7; 32]).key("orders", id.as_bytes())
}

fn sender(name: &str) -> LimitKeyHash {
    ratelimit::KeyHasher::with_key([9; 32]).route_key("orders", KeyValue::Header(name.as_bytes()))
}

/// Polls `done` until it is true, failing after `deadline`.
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !done().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    }
}

async fn a_claim_is_exclusive_then_committed_for_the_ttl(f: Fixture) {
    let key = delivery("evt-1");
    let ClaimOutcome::Claimed(token) = f.claim(key, LEASE).await else {
        panic!("a fresh ID is free");
    };
    assert_eq!(f.claim(key, LEASE).await, ClaimOutcome::InFlight);
    assert!(f.store().commit(key, token).await.unwrap());
    assert_eq!(f.claim(key, LEASE).await, ClaimOutcome::Committed);
    assert!(
        f.claim(delivery("evt-2"), LEASE).await.claimed().is_some(),
        "another ID is another delivery"
    );
    // The route's TTL is 1 s (the memory store rounds expiry up to the next whole second).
    eventually(
        "the delivered record to expire",
        Duration::from_secs(5),
        || async { f.claim(key, LEASE).await != ClaimOutcome::Committed },
    )
    .await;
}

async fn a_released_claim_frees_the_id(f: Fixture) {
    let key = delivery("evt-r");
    let token = f.claim(key, LEASE).await.claimed().unwrap();
    assert!(f.store().release(key, token).await.unwrap());
    let again = f.claim(key, LEASE).await.claimed().expect("free again");
    assert_ne!(again, token, "a new claim has a new token");
}

async fn a_stale_token_changes_nothing(f: Fixture) {
    let store = f.store();
    let key = delivery("evt-s");
    let first = f.claim(key, LEASE).await.claimed().unwrap();
    assert!(store.release(key, first).await.unwrap());
    let second = f.claim(key, LEASE).await.claimed().unwrap();
    // The first claim's holder comes back late: it neither commits nor deletes the second.
    assert!(!store.commit(key, first).await.unwrap());
    assert!(!store.release(key, first).await.unwrap());
    assert_eq!(f.claim(key, LEASE).await, ClaimOutcome::InFlight);
    assert!(store.commit(key, second).await.unwrap());
    // Nor does any token release a delivered record.
    assert!(!store.release(key, second).await.unwrap());
    assert_eq!(f.claim(key, LEASE).await, ClaimOutcome::Committed);
}

async fn a_claim_expires_after_its_lease(f: Fixture) {
    let key = delivery("evt-lease");
    let lease = Duration::from_millis(300);
    let started = Instant::now();
    let dead = f.claim(key, lease).await.claimed().unwrap();
    let end = started + Duration::from_secs(5);
    let retry = loop {
        match f.claim(key, lease).await {
            ClaimOutcome::Claimed(token) => break token,
            outcome => assert_eq!(outcome, ClaimOutcome::InFlight),
        }
        assert!(Instant::now() < end, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    };
    assert!(started.elapsed() >= lease - Duration::from_millis(5));
    // The dead claim's holder can no longer commit: the retry owns the ID.
    assert!(!f.store().commit(key, dead).await.unwrap());
    assert!(f.store().commit(key, retry).await.unwrap());
}

async fn concurrent_claims_of_one_id_make_one_claim(f: Fixture) {
    let store = f.store();
    let key = delivery("evt-race");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim(key, LEASE).await.unwrap() })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            ClaimOutcome::Claimed(_) => claimed += 1,
            outcome => assert_eq!(outcome, ClaimOutcome::InFlight),
        }
    }
    assert_eq!(claimed, 1);
}

async fn a_dropped_guard_releases_its_claim(f: Fixture) {
    let store = f.store();
    let key = delivery("evt-drop");
    let claim = Claim::acquire(&store, key, LEASE).await.unwrap();
    let claim = claim.claimed().expect("free");
    drop(claim); // a request that died before settling
    eventually(
        "the dropped claim to be released",
        Duration::from_secs(5),
        || async { f.claim(key, LEASE).await.claimed().is_some() },
    )
    .await;
}

async fn the_free_tier_passes_60_then_denies_with_headers(f: Fixture) {
    let key = sender("acme");
    for i in 0..60 {
        let d = f.check(key, FREE).await;
        assert!(d.is_allowed(), "request {i}");
        assert_eq!(
            (d.limit, d.remaining, d.reset_secs),
            (FREE, 59 - i, u64::from(i) + 1)
        );
    }
    let denied = f.check(key, FREE).await;
    assert_eq!(
        denied.verdict,
        Verdict::Denied {
            retry_after_secs: std::num::NonZeroU64::new(1).unwrap()
        }
    );
    assert_eq!((denied.remaining, denied.reset_secs), (0, 60));
}

async fn limit_keys_are_independent(f: Fixture) {
    let (a, b) = (sender("a"), sender("b"));
    let three = NonZeroU32::new(3).unwrap();
    for _ in 0..3 {
        assert!(f.check(a, three).await.is_allowed());
    }
    assert!(!f.check(a, three).await.is_allowed());
    let d = f.check(b, three).await;
    assert_eq!((d.is_allowed(), d.remaining), (true, 2));
}

async fn concurrent_checks_allow_exactly_the_limit(f: Fixture) {
    let backend = f.backend.clone();
    let key = sender("race");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let backend = backend.clone();
            tokio::spawn(async move { backend.limiter().check(key, FREE).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap().is_allowed() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 60);
}

async fn denied_requests_consume_nothing_and_the_bucket_refills(f: Fixture) {
    // 60 per minute: the burst, then one request back every second.
    let key = sender("flood");
    let start = Instant::now();
    for _ in 0..60 {
        assert!(f.check(key, FREE).await.is_allowed());
    }
    // Hammering the empty bucket (well within the first second) is denied and counts nothing.
    let mut denied = 0;
    while denied < 100 && start.elapsed() < Duration::from_millis(500) {
        assert!(!f.check(key, FREE).await.is_allowed());
        denied += 1;
    }
    assert!(denied > 0);
    // So the refill comes one interval after the burst, as if nothing had been denied.
    eventually("the bucket to refill", Duration::from_secs(5), || async {
        f.check(key, FREE).await.is_allowed()
    })
    .await;
    let refilled = start.elapsed();
    assert!(
        refilled >= Duration::from_millis(990) && refilled < Duration::from_millis(1900),
        "refilled after {refilled:?}"
    );
}

async fn admission_checks_the_limit_then_claims(f: Fixture) {
    let ask = Ask {
        route: DEDUP,
        limit: Some((sender("tenant"), FREE)),
        claim: Some((delivery("evt-a"), LEASE)),
    };
    let Admission::Admitted(Some(claim)) = f.admit(ask).await else {
        panic!("admitted with a claim");
    };
    assert!(matches!(f.admit(ask).await, Admission::InFlight));
    assert!(claim.commit().await.unwrap());
    assert!(matches!(f.admit(ask).await, Admission::Duplicate));
    // All three were counted: the limit is checked first.
    assert_eq!(f.check(sender("tenant"), FREE).await.remaining, 60 - 4);
}

async fn a_limited_admission_claims_nothing(f: Fixture) {
    let three = NonZeroU32::new(3).unwrap();
    let tenant = sender("limited");
    for _ in 0..3 {
        assert!(f.check(tenant, three).await.is_allowed());
    }
    let ask = Ask {
        route: DEDUP,
        limit: Some((tenant, three)),
        claim: Some((delivery("evt-l"), LEASE)),
    };
    let Admission::Limited(decision) = f.admit(ask).await else {
        panic!("limited");
    };
    assert!(decision.retry_after_secs().is_some());
    assert_eq!((decision.limit, decision.remaining), (three, 0));
    // The ID was not claimed: its retry will be forwarded once the limit passes it.
    assert!(f.claim(delivery("evt-l"), LEASE).await.claimed().is_some());
}

async fn an_admission_with_nothing_to_decide_admits(f: Fixture) {
    let nothing = Ask {
        route: DEDUP,
        limit: None,
        claim: None,
    };
    assert!(matches!(f.admit(nothing).await, Admission::Admitted(None)));
    // A claim on a route without dedup claims nothing.
    let no_store = Ask {
        route: NO_DEDUP,
        limit: None,
        claim: Some((delivery("evt-n"), LEASE)),
    };
    assert!(matches!(f.admit(no_store).await, Admission::Admitted(None)));
    // The limit alone.
    let limit_only = Ask {
        route: NO_DEDUP,
        limit: Some((sender("solo"), FREE)),
        claim: None,
    };
    assert!(matches!(
        f.admit(limit_only).await,
        Admission::Admitted(None)
    ));
    assert_eq!(f.check(sender("solo"), FREE).await.remaining, 60 - 2);
}

/// Runs `task(0)` … `task(n - 1)` as concurrent tasks; their results, in that order.
async fn concurrently<T, F, Fut>(n: usize, mut task: F) -> Vec<T>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// Another token than `token` (of the same key): a holder whose claim is not this one.
fn stale(token: ClaimToken) -> ClaimToken {
    let value = token.get().get().checked_add(1).unwrap_or(1);
    ClaimToken::new(NonZeroU64::new(value).unwrap())
}

async fn concurrent_claims_of_many_ids_make_one_claim_each_then_settle(f: Fixture) {
    const IDS: usize = 50;
    const CLAIMS: usize = 500;
    let before = f.batches();
    let store = f.store();
    let keys: Arc<Vec<DeliveryKey>> = Arc::new(
        (0..IDS)
            .map(|i| delivery(&format!("evt-many-{i}")))
            .collect(),
    );
    let claim_all = || {
        concurrently(CLAIMS, |i| {
            let (store, key) = (store.clone(), keys[i % IDS]);
            async move { (i % IDS, store.claim(key, LEASE).await.unwrap()) }
        })
    };

    let mut tokens = vec![None; IDS];
    for (id, outcome) in claim_all().await {
        match outcome {
            ClaimOutcome::Claimed(token) => {
                assert!(tokens[id].replace(token).is_none(), "ID {id} claimed twice");
            }
            outcome => assert_eq!(outcome, ClaimOutcome::InFlight, "ID {id}"),
        }
    }
    let tokens: Arc<Vec<ClaimToken>> = Arc::new(
        (tokens.into_iter().enumerate())
            .map(|(id, token)| token.unwrap_or_else(|| panic!("ID {id} was never claimed")))
            .collect(),
    );

    // Settled concurrently: even IDs committed, odd ones released, each alongside a late holder
    // of another token doing the same, which changes nothing.
    let settled = concurrently(2 * IDS, |i| {
        let (store, id, late) = (store.clone(), i % IDS, i >= IDS);
        let (key, token) = (keys[id], tokens[id]);
        let token = if late { stale(token) } else { token };
        async move {
            let done = match id % 2 {
                0 => store.commit(key, token).await.unwrap(),
                _ => store.release(key, token).await.unwrap(),
            };
            (id, late, done)
        }
    })
    .await;
    for (id, late, done) in settled {
        assert_eq!(done, !late, "ID {id}, late: {late}");
    }

    // Delivered IDs are duplicates now; released ones are claimed again, once each.
    let mut claimed = [0; IDS];
    for (id, outcome) in claim_all().await {
        match (id % 2, outcome) {
            (0, outcome) => assert_eq!(outcome, ClaimOutcome::Committed, "ID {id}"),
            (_, ClaimOutcome::Claimed(_)) => claimed[id] += 1,
            (_, outcome) => assert_eq!(outcome, ClaimOutcome::InFlight, "ID {id}"),
        }
    }
    for (id, claims) in claimed.iter().enumerate().filter(|(id, _)| id % 2 == 1) {
        assert_eq!(*claims, 1, "ID {id}");
    }

    if let (Some(before), Some(after)) = (before, f.batches()) {
        assert_eq!(after.ops - before.ops, (2 * CLAIMS + 2 * IDS) as f64);
        assert!(
            after.grouped_since(before),
            "no call carried more than one operation: {before:?} → {after:?}"
        );
    }
}

async fn concurrent_admissions_on_one_limit_admit_exactly_the_limit(f: Fixture) {
    const ASKS: usize = 100;
    let limit = NonZeroU32::new(25).unwrap();
    let tenant = sender("crowd");
    let ask = move |i: usize| Ask {
        route: DEDUP,
        limit: Some((tenant, limit)),
        claim: Some((delivery(&format!("evt-crowd-{i}")), LEASE)),
    };
    let before = f.batches();
    let backend = f.backend.clone();
    let admissions = concurrently(ASKS, |i| {
        let backend = backend.clone();
        async move { (i, backend.admit(ask(i)).await.unwrap()) }
    })
    .await;
    let (mut admitted, mut limited) = (Vec::new(), Vec::new());
    for (i, admission) in admissions {
        match admission {
            Admission::Admitted(Some(claim)) => admitted.push((i, claim)),
            Admission::Limited(decision) => {
                assert_eq!((decision.limit, decision.remaining), (limit, 0));
                assert!(decision.retry_after_secs().is_some());
                limited.push(i);
            }
            other => panic!("admission {i}: {other:?}"),
        }
    }
    assert_eq!(admitted.len(), limit.get() as usize);
    assert_eq!(limited.len(), ASKS - admitted.len());
    if let (Some(before), Some(after)) = (before, f.batches()) {
        assert_eq!(after.ops - before.ops, ASKS as f64);
        assert!(
            after.grouped_since(before),
            "no call carried more than one operation: {before:?} → {after:?}"
        );
    }
    // The admitted hold their claims; the limited claimed nothing.
    for (i, _) in &admitted {
        let key = delivery(&format!("evt-crowd-{i}"));
        assert_eq!(f.claim(key, LEASE).await, ClaimOutcome::InFlight, "{i}");
    }
    for i in limited {
        let key = delivery(&format!("evt-crowd-{i}"));
        assert!(f.claim(key, LEASE).await.claimed().is_some(), "{i}");
    }
    for (i, claim) in admitted {
        assert!(claim.commit().await.unwrap(), "{i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Redis only: how operations are batched, and what a failing batch does to its callers.

/// A Redis backend on `server` with `timeout`, recording in the metrics returned with it.
fn redis_backend(server: &RedisServer, timeout: Duration) -> (Arc<RedisBackend>, Metrics) {
    let metrics = Metrics::new();
    let settings = redis_settings(&server.url(), timeout, None);
    let backend = RedisBackend::new(&settings, &policies(), metrics.state("redis"));
    (Arc::new(backend), metrics)
}

/// The value of `hookgate_state_errors_total{backend="redis",op}`.
fn errors(metrics: &Metrics, op: &str) -> f64 {
    let series = format!("hookgate_state_errors_total{{backend=\"redis\",op=\"{op}\"}} ");
    (metrics.render().lines())
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Redis's `connected_clients` (the connection asking included).
fn connected_clients(server: &RedisServer) -> u64 {
    let info: String = server.cmd(&["INFO", "clients"]);
    (info.lines())
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sends_what_queued_meanwhile_as_one_call_of_at_most_128() {
    const CLAIMS: usize = 300;
    let server = RedisServer::start();
    let (backend, metrics) = redis_backend(&server, Duration::from_secs(5));
    let store = backend.store(DEDUP).unwrap();
    assert!(store.claim(delivery("evt-warm"), LEASE).await.unwrap() != ClaimOutcome::InFlight);
    let _: String = server.cmd(&["CONFIG", "RESETSTAT"]);
    let before = Batches::of(&metrics);

    // Redis holds every write for half a second: the first call waits in Redis, and every
    // other claim queues behind it meanwhile.
    let _: String = server.cmd(&["CLIENT", "PAUSE", "500", "WRITE"]);
    let outcomes = concurrently(CLAIMS, |i| {
        let store = store.clone();
        async move { store.claim(delivery(&format!("evt-held-{i}")), LEASE).await }
    })
    .await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert!(outcome.unwrap().claimed().is_some(), "claim {i}");
    }

    let after = Batches::of(&metrics);
    let calls = after.calls - before.calls;
    assert_eq!(after.ops - before.ops, CLAIMS as f64);
    assert_eq!(
        server.calls("evalsha") as f64,
        calls,
        "one EVALSHA per batch"
    );
    // The first call (what was queued when it left), then the other 300 in full batches.
    assert!(calls <= 5.0, "{calls} calls: {before:?} → {after:?}");
    assert!(
        after.up_to_64 - before.up_to_64 < calls,
        "no batch of more than 64: {before:?} → {after:?}"
    );
    assert_eq!(after.up_to_128, after.calls, "a batch of more than 128");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_admissions_that_time_out_fail_in_time_and_release_their_claims() {
    const ASKS: usize = 50;
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let (backend, metrics) = redis_backend(&server, timeout);
    let ask = |i: usize| Ask {
        route: DEDUP,
        limit: Some((sender("stalled"), FREE)),
        claim: Some((delivery(&format!("evt-stalled-{i}")), LEASE)),
    };
    let Ok(Admission::Admitted(Some(claim))) = backend.admit(ask(ASKS)).await else {
        panic!("Redis answers before the pause");
    };
    assert!(claim.commit().await.unwrap());

    // Redis stalls longer than the timeout: every admission queued meanwhile fails in time, the
    // first batch's in Redis and the others behind it alike.
    // Far longer than the timeout, so an admission that waited for the pause's end shows.
    let _: String = server.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let paused = Instant::now();
    let results = concurrently(ASKS, |i| {
        let backend = backend.clone();
        async move {
            let started = Instant::now();
            let result = backend.admit(ask(i)).await;
            (started.elapsed(), result)
        }
    })
    .await;
    for (i, (waited, result)) in results.into_iter().enumerate() {
        match result {
            Err(StateError::Timeout(after)) => assert_eq!(after, timeout),
            other => panic!("admission {i}: {other:?}"),
        }
        // Its own deadline, not the pause's end (half the pause: room for a loaded machine).
        assert!(waited < Duration::from_secs(5), "{i}: {waited:?}");
    }
    assert!(paused.elapsed() < Duration::from_secs(5));
    assert!(errors(&metrics, "admit") >= ASKS as f64);

    // Redis answers again: the next calls succeed, and no claim of the failed admissions is
    // left behind (the one that reached Redis was released after it).
    let _: String = server.cmd(&["CLIENT", "UNPAUSE"]);
    eventually("Redis to answer again", Duration::from_secs(10), || async {
        backend.admit(ask(ASKS + 1)).await.is_ok()
    })
    .await;
    let store = backend.store(DEDUP).unwrap();
    for i in 0..ASKS {
        let key = delivery(&format!("evt-stalled-{i}"));
        let outcome = store.claim(key, LEASE).await.unwrap();
        assert!(outcome.claimed().is_some(), "evt-stalled-{i} is still held");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_mid_batch_fails_its_callers_then_calls_succeed_again() {
    const CLAIMS: usize = 50;
    let mut server = RedisServer::start();
    let timeout = Duration::from_secs(2);
    let (backend, metrics) = redis_backend(&server, timeout);
    let store = backend.store(DEDUP).unwrap();
    assert!(store.claim(delivery("evt-up"), LEASE).await.is_ok());
    let before = Batches::of(&metrics);

    // A batch held in Redis, others queued behind it; then Redis dies.
    let _: String = server.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    let tasks: Vec<_> = (0..CLAIMS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = store
                    .claim(delivery(&format!("evt-dying-{i}")), LEASE)
                    .await;
                (started.elapsed(), result)
            })
        })
        .collect();
    eventually(
        "a batch to be in flight",
        Duration::from_secs(5),
        || async { Batches::of(&metrics).calls > before.calls },
    )
    .await;
    server.stop();
    for (i, task) in tasks.into_iter().enumerate() {
        let (waited, result) = task.await.unwrap();
        assert!(result.is_err(), "claim {i}: {result:?}");
        assert!(waited < timeout + Duration::from_secs(1), "{i}: {waited:?}");
    }
    assert!(errors(&metrics, "claim") >= CLAIMS as f64);

    // Back (empty, without the script): the next calls reconnect, load it and succeed.
    server.restart();
    eventually(
        "claims to succeed again",
        Duration::from_secs(10),
        || async { store.claim(delivery("evt-back"), LEASE).await.is_ok() },
    )
    .await;
    let outcomes = concurrently(CLAIMS, |i| {
        let store = store.clone();
        async move {
            store
                .claim(delivery(&format!("evt-dying-{i}")), LEASE)
                .await
        }
    })
    .await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert!(outcome.unwrap().claimed().is_some(), "claim {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reloads_share_one_batcher_which_ends_with_the_last_backend() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Handle::current().metrics();
    let idle = runtime.num_alive_tasks();
    let (backend, _metrics) = redis_backend(&server, Duration::from_secs(2));
    let store = backend.store(DEDUP).unwrap();
    assert!(store.claim(delivery("evt-first"), LEASE).await.is_ok());
    let running = runtime.num_alive_tasks();
    assert!(running > idle, "the batcher runs");
    // The test's connection, and the backend's one.
    assert_eq!(connected_clients(&server), 2);

    // A reload makes a backend on the same connection and batcher: no task, no connection more.
    let reloaded: Vec<RedisBackend> = (0..20).map(|_| backend.reconfigured(&policies())).collect();
    for (i, again) in reloaded.iter().enumerate() {
        let store = again.store(DEDUP).unwrap();
        let outcome = store
            .claim(delivery(&format!("evt-reload-{i}")), LEASE)
            .await;
        assert!(outcome.unwrap().claimed().is_some());
    }
    assert!(runtime.num_alive_tasks() <= running);
    assert_eq!(connected_clients(&server), 2);

    // The first backend goes (its configuration was replaced): the others still answer.
    drop((backend, store));
    let store = reloaded[19].store(DEDUP).unwrap();
    assert!(store.claim(delivery("evt-after"), LEASE).await.is_ok());
    drop((reloaded, store));
    eventually(
        "the batcher and its connection to end",
        Duration::from_secs(5),
        || async { runtime.num_alive_tasks() <= idle && connected_clients(&server) == 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_checks_of_one_key_in_one_batch_decide_as_one_by_one() {
    const CHECKS: usize = 100;
    let server = RedisServer::start();
    let (backend, metrics) = redis_backend(&server, Duration::from_secs(5));
    let key = sender("batched");
    assert!(backend.limiter().check(sender("warm"), FREE).await.is_ok());
    let before = Batches::of(&metrics);

    // Queued while Redis holds the first call: the others arrive in one or two batches.
    let _: String = server.cmd(&["CLIENT", "PAUSE", "300", "WRITE"]);
    let decisions = concurrently(CHECKS, |_| {
        let backend = backend.clone();
        async move { backend.limiter().check(key, FREE).await.unwrap() }
    })
    .await;
    let after = Batches::of(&metrics);
    assert!(after.calls - before.calls <= 3.0, "{before:?} → {after:?}");

    // As 100 checks one after the other: 60 allowed, with every remaining count from 59 down
    // to 0 and the matching reset, then 40 denied.
    let mut allowed: Vec<(u32, u64)> = (decisions.iter())
        .filter(|d| d.is_allowed())
        .map(|d| (d.remaining, d.reset_secs))
        .collect();
    allowed.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..60).map(|r| (r, u64::from(60 - r))).collect();
    assert_eq!(allowed, expected);
    for denied in decisions.iter().filter(|d| !d.is_allowed()) {
        assert_eq!((denied.remaining, denied.reset_secs), (0, 60));
        assert_eq!(denied.retry_after_secs().map(|s| s.get()), Some(1));
    }
    // Stored once, as the last check left it: the bucket is empty for a minute.
    let keys: Vec<String> = server.cmd(&["KEYS", "suite:rate:*"]);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let ttls: Vec<i64> = keys.iter().map(|k| server.cmd(&["PTTL", k])).collect();
    assert!(
        ttls.iter().any(|ttl| (55_000..=60_000).contains(ttl)),
        "{ttls:?}"
    );
    let next = backend.limiter().check(key, FREE).await.unwrap();
    assert_eq!((next.is_allowed(), next.reset_secs), (false, 60));
}

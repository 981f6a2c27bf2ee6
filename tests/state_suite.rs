//! One suite, two backends: every test here runs unchanged against the memory backend and
//! against the Redis backend (on a `redis-server` of its own, over plain TCP and over TLS),
//! through the `Backend` trait the gateway uses. All run on real time, with short leases and
//! TTLs, polling with deadlines.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use hookgate::config::model::{OnStateError, PemFile, RedisState, RedisTls, RedisUrl, Secret};
use hookgate::dedup::{
    Claim, ClaimOutcome, DedupPolicy, DeliveryKey, DeliveryStore, IdSource, KeyHasher,
};
use hookgate::metrics::Metrics;
use hookgate::ratelimit::{self, KeyValue, LimitKeyHash, Verdict};
use hookgate::state::{Admission, Ask, Backend, MemoryBackend, RedisBackend};

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
    let settings = RedisState {
        url: RedisUrl::parse(url).unwrap(),
        // Generous: a loaded CI machine must not turn a slow answer into a failed test.
        timeout: Duration::from_secs(2),
        on_error: OnStateError::FailClosed,
        key_prefix: "suite".into(),
        key_secret: Secret::new("0123456789abcdef0123456789abcdef"),
        tls: tls.map(Box::new),
    };
    let backend = RedisBackend::new(&settings, &policies(), Metrics::new().state("redis"));
    Fixture {
        backend: Arc::new(backend),
        _redis: Some(server),
        _pki: pki,
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

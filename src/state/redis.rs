//! The Redis backend: dedup records and rate-limit buckets shared by every replica.
//!
//! # Keys
//!
//! Every key is `<key_prefix>:<kind>:<32 hex digits>`, the hex being a keyed hash (see
//! [`super::shared_hashers`]): Redis never sees a route name, a delivery ID, a header value, a
//! client IP or a secret.
//!
//! | key | value | expires |
//! |---|---|---|
//! | `hookgate:dedup:<DeliveryKey>` | `f<token>` while in flight; `d` once delivered | the lease; then the route's `dedup.ttl` |
//! | `hookgate:rate:<LimitKeyHash>` | the GCRA TAT, `<seconds>:<nanoseconds>` | when the bucket is full again (≤ 1 min) |
//!
//! # Round trips
//!
//! Three Lua scripts, sent by SHA (`EVALSHA`) and loaded again whenever Redis answers
//! `NOSCRIPT` (after a restart or `SCRIPT FLUSH`); the maintenance job loads them at start.
//! - `admit.lua`: a verified request's tier limit and dedup claim in one call (also the limit
//!   alone, for `unverified_per_ip`, and the claim alone);
//! - `commit.lua`, `release.lua`: settle a claim, only if its token still matches.
//!
//! So a request costs one round trip before it is forwarded and, if it claimed a delivery, one
//! after. Every call runs under `state.timeout`; the connection is one multiplexed connection
//! (redis-rs's `ConnectionManager`), made on first use and made again after a failure.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use super::{Admission, Ask, Backend, StateError};
use crate::config::model::{RedisState, RedisTls};
use crate::dedup::{
    Claim, ClaimOutcome, ClaimToken, DedupPolicy, DeliveryKey, DeliveryStore, StoreError,
};
use crate::metrics::{StateMetrics, StateOp};
use crate::ratelimit::{Decision, LimitError, LimitKeyHash, Rate, TierLimiter, Verdict};

/// The admission script: tier limit (GCRA), then dedup claim.
const ADMIT_LUA: &str = include_str!("lua/admit.lua");
/// Commits a claim if its token matches.
const COMMIT_LUA: &str = include_str!("lua/commit.lua");
/// Releases a claim if its token matches.
const RELEASE_LUA: &str = include_str!("lua/release.lua");

/// Attempts per reconnection before the next call starts another round: small, because every
/// call has its own timeout and the next one tries again anyway.
const RECONNECT_ATTEMPTS: usize = 2;
/// Shortest and longest pause between reconnection attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(10);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Redis state for every route: a [`TierLimiter`], a [`DeliveryStore`] per deduplicating route,
/// and an admission that decides both in one script.
pub struct RedisBackend {
    conn: Arc<Conn>,
    limiter: RedisLimiter,
    /// One store per route, by route index; `None` for routes without dedup.
    stores: Vec<Option<Arc<RedisStore>>>,
}

impl RedisBackend {
    /// A backend on `settings` for routes with these dedup policies (by route index),
    /// recording each call in `metrics`. Connects on first use, never here.
    pub fn new(
        settings: &RedisState,
        policies: &[Option<DedupPolicy>],
        metrics: StateMetrics,
    ) -> Self {
        if settings.url.is_tls() {
            // The redis crate builds its rustls config on the process-wide crypto provider;
            // ring is the one this build enables. Already set (by an earlier backend): fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let conn = Arc::new(Conn {
            url: settings.url.as_str().to_string(),
            tls: settings.tls.as_deref().map(tls_certificates),
            manager: tokio::sync::OnceCell::new(),
            timeout: settings.timeout,
            prefix: settings.key_prefix.clone(),
            admit: Script::new(ADMIT_LUA),
            commit: Script::new(COMMIT_LUA),
            release: Script::new(RELEASE_LUA),
            metrics,
        });
        Self::on(conn, policies)
    }

    /// The backend of a reloaded configuration: the same connection, with stores for the new
    /// routes' policies. Records live in Redis under hashes of the route name, so a route that
    /// keeps its name keeps its deliveries and buckets.
    pub fn reconfigured(&self, policies: &[Option<DedupPolicy>]) -> Self {
        Self::on(self.conn.clone(), policies)
    }

    fn on(conn: Arc<Conn>, policies: &[Option<DedupPolicy>]) -> Self {
        let stores = policies
            .iter()
            .map(|policy| {
                policy.as_ref().map(|policy| {
                    Arc::new(RedisStore {
                        conn: conn.clone(),
                        ttl_ms: millis_ceil(policy.ttl),
                    })
                })
            })
            .collect();
        Self {
            limiter: RedisLimiter { conn: conn.clone() },
            conn,
            stores,
        }
    }

    /// Loads the three scripts into Redis (`SCRIPT LOAD`), counted as `ping` calls.
    pub async fn load_scripts(&self) -> Result<(), StateError> {
        let conn = &self.conn;
        conn.timed(StateOp::Ping, async {
            let mut manager = conn.manager().await?;
            for script in [&conn.admit, &conn.commit, &conn.release] {
                script.load_async(&mut manager).await?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn limiter(&self) -> &dyn TierLimiter {
        &self.limiter
    }

    fn store(&self, route: usize) -> Option<Arc<dyn DeliveryStore>> {
        self.stores
            .get(route)?
            .as_ref()
            .map(|s| s.clone() as Arc<dyn DeliveryStore>)
    }

    /// One `admit.lua` call for the limit and the claim together.
    async fn admit(&self, ask: Ask) -> Result<Admission, StateError> {
        // As in the default: a claim on a route without a store claims nothing.
        let claim = match (ask.claim, self.stores.get(ask.route).cloned().flatten()) {
            (Some((key, lease)), Some(store)) => Some((key, lease, new_token(), store)),
            _ => None,
        };
        if ask.limit.is_none() && claim.is_none() {
            return Ok(Admission::Admitted(None));
        }
        let asked = claim
            .as_ref()
            .map(|(key, lease, token, _)| (*key, *lease, *token));
        let reply = match self.conn.admit(StateOp::Admit, ask.limit, asked).await {
            Ok(reply) => reply,
            Err(e) => {
                // The script may have run before the call timed out. Releasing the claim it
                // may hold (a no-op unless the stored token is ours) keeps the sender's retry
                // from being answered 409 until the lease runs out.
                if let Some((key, _, token, store)) = claim {
                    drop(Claim::adopt(store, key, token));
                }
                return Err(e);
            }
        };
        if let Some(decision) = reply.decision.filter(|d| !d.is_allowed()) {
            return Ok(Admission::Limited(decision));
        }
        Ok(match (reply.claim, claim) {
            (Some(ClaimOutcome::Claimed(())), Some((key, _, token, store))) => {
                Admission::Admitted(Some(Claim::adopt(store, key, token)))
            }
            (Some(ClaimOutcome::InFlight), _) => Admission::InFlight,
            (Some(ClaimOutcome::Committed), _) => Admission::Duplicate,
            _ => Admission::Admitted(None),
        })
    }

    /// A `PING` within the timeout.
    async fn ready(&self) -> Result<(), StateError> {
        let conn = &self.conn;
        conn.timed(StateOp::Ping, async {
            let mut manager = conn.manager().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut manager)
                .await
                .map(drop)
        })
        .await
    }
}

/// The rate limiter on Redis: `admit.lua` with the limit alone.
pub struct RedisLimiter {
    conn: Arc<Conn>,
}

#[async_trait]
impl TierLimiter for RedisLimiter {
    async fn check(
        &self,
        key: LimitKeyHash,
        per_minute: NonZeroU32,
    ) -> Result<Decision, LimitError> {
        let reply = self
            .conn
            .admit(StateOp::Check, Some((key, per_minute)), None)
            .await?;
        reply
            .decision
            .ok_or_else(|| failure("the admission script returned no decision").into())
    }
}

/// One route's dedup store on Redis. Records expire in Redis itself, so it keeps no count:
/// [`DeliveryStore::len`] and [`DeliveryStore::evictions`] are 0 (see Redis's `INFO`).
pub struct RedisStore {
    conn: Arc<Conn>,
    /// The route's `dedup.ttl`, in milliseconds.
    ttl_ms: u64,
}

#[async_trait]
impl DeliveryStore for RedisStore {
    async fn claim(&self, key: DeliveryKey, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        let token = new_token();
        let reply = self
            .conn
            .admit(StateOp::Claim, None, Some((key, lease, token)))
            .await?;
        Ok(match reply.claim {
            Some(ClaimOutcome::Claimed(())) => ClaimOutcome::Claimed(token),
            Some(ClaimOutcome::InFlight) => ClaimOutcome::InFlight,
            Some(ClaimOutcome::Committed) => ClaimOutcome::Committed,
            None => return Err(failure("the admission script claimed nothing").into()),
        })
    }

    async fn commit(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
        let conn = &self.conn;
        let mut call = conn.commit.prepare_invoke();
        call.key(conn.dedup_key(key))
            .arg(in_flight(token))
            .arg(self.ttl_ms);
        Ok(conn.run::<i64>(StateOp::Commit, &call).await? == 1)
    }

    async fn release(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
        let conn = &self.conn;
        let mut call = conn.release.prepare_invoke();
        call.key(conn.dedup_key(key)).arg(in_flight(token));
        Ok(conn.run::<i64>(StateOp::Release, &call).await? == 1)
    }

    fn len(&self) -> usize {
        0
    }

    fn evictions(&self) -> u64 {
        0
    }
}

/// The connection, the scripts and what every call shares.
struct Conn {
    /// The URL, credentials included: only handed to the client, never shown.
    url: String,
    /// The CA and client certificate of a `rediss://` URL with a `state.tls` block.
    tls: Option<redis::TlsCertificates>,
    /// Made on first use, inside a runtime (the manager spawns its tasks on the current one).
    manager: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
    prefix: String,
    admit: Script,
    commit: Script,
    release: Script,
    metrics: StateMetrics,
}

/// The redis crate's form of `state.tls`.
fn tls_certificates(tls: &RedisTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls.client.as_ref().map(|id| redis::ClientTlsConfig {
            client_cert: id.cert.pem.clone(),
            client_key: id.key.pem.clone(),
        }),
        root_cert: tls.ca.as_ref().map(|ca| ca.pem.clone()),
    }
}

/// What `admit.lua` answered, as far as it was asked.
struct AdmitReply {
    /// The limit's decision, if a limit was asked.
    decision: Option<Decision>,
    /// The claim's outcome, if a claim was asked and the limit allowed it.
    claim: Option<ClaimOutcome<()>>,
}

impl Conn {
    /// The connection manager, made on the first call.
    async fn manager(&self) -> redis::RedisResult<ConnectionManager> {
        self.manager
            .get_or_try_init(|| async {
                let client = match &self.tls {
                    Some(certificates) => {
                        redis::Client::build_with_tls(self.url.as_str(), certificates.clone())?
                    }
                    // A `rediss://` URL without `state.tls` trusts the system's roots.
                    None => redis::Client::open(self.url.as_str())?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(RECONNECT_ATTEMPTS)
                    .set_min_delay(RECONNECT_MIN_DELAY)
                    .set_max_delay(RECONNECT_MAX_DELAY);
                ConnectionManager::new_lazy_with_config(client, config)
            })
            .await
            .cloned()
    }

    /// Runs `call` under the timeout and records it as `op`.
    async fn timed<T>(
        &self,
        op: StateOp,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StateError::Unavailable(Box::new(error))),
            Err(_) => Err(StateError::Timeout(self.timeout)),
        };
        self.metrics
            .record(op, started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    /// Invokes a script (`EVALSHA`, loading it first if Redis answers `NOSCRIPT`).
    async fn run<T: FromRedisValue>(
        &self,
        op: StateOp,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        self.timed(op, async {
            let mut manager = self.manager().await?;
            call.invoke_async(&mut manager).await
        })
        .await
    }

    /// One `admit.lua` call: the limit if `limit` is given, then the claim if `claim` is.
    async fn admit(
        &self,
        op: StateOp,
        limit: Option<(LimitKeyHash, NonZeroU32)>,
        claim: Option<(DeliveryKey, Duration, ClaimToken)>,
    ) -> Result<AdmitReply, StateError> {
        let mode = match (limit.is_some(), claim.is_some()) {
            (true, true) => "lc",
            (true, false) => "l",
            _ => "c",
        };
        let mut call = self.admit.prepare_invoke();
        call.arg(mode);
        if let Some((key, per_minute)) = limit {
            let rate = Rate::per_minute(per_minute);
            call.key(self.rate_key(&key))
                .arg(per_minute.get())
                .arg(rate.interval_nanos());
        }
        if let Some((key, lease, token)) = claim {
            call.key(self.dedup_key(key))
                .arg(in_flight(token))
                .arg(millis_ceil(lease).max(1));
        }
        let reply: Vec<i64> = self.run(op, &call).await?;
        let [allowed, remaining, reset, retry, claimed] = reply[..] else {
            return Err(failure("the admission script returned an unexpected reply"));
        };
        let verdict = if allowed == 1 {
            Verdict::Allowed
        } else {
            let retry = NonZeroU64::new(u64::try_from(retry).unwrap_or(1));
            Verdict::Denied {
                retry_after_secs: retry.unwrap_or(NonZeroU64::MIN),
            }
        };
        let decision = limit.map(|(_, per_minute)| Decision {
            verdict,
            limit: per_minute,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_secs: u64::try_from(reset).unwrap_or(0),
        });
        let claim = match claimed {
            1 => Some(ClaimOutcome::Claimed(())),
            2 => Some(ClaimOutcome::InFlight),
            3 => Some(ClaimOutcome::Committed),
            _ => None,
        };
        Ok(AdmitReply { decision, claim })
    }

    /// `<prefix>:rate:<hash>`.
    fn rate_key(&self, key: &LimitKeyHash) -> String {
        let mut name = format!("{}:rate:", self.prefix);
        for byte in key.as_bytes() {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    /// `<prefix>:dedup:<hash>`.
    fn dedup_key(&self, key: DeliveryKey) -> String {
        format!("{}:dedup:{:032x}", self.prefix, key.as_u128())
    }
}

/// A reply the scripts never give, as an error.
fn failure(message: &'static str) -> StateError {
    StateError::Unavailable(message.into())
}

/// A fresh random claim token: no replica can guess another's.
fn new_token() -> ClaimToken {
    ClaimToken::new(rand::random::<NonZeroU64>())
}

/// The in-flight marker of `token`: `f<token>`.
fn in_flight(token: ClaimToken) -> String {
    format!("f{}", token.get())
}

/// A duration in whole milliseconds, rounded up (a record never expires early).
fn millis_ceil(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_durations() {
        let token = ClaimToken::new(NonZeroU64::new(42).unwrap());
        assert_eq!(in_flight(token), "f42");
        assert_eq!(millis_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(millis_ceil(Duration::from_secs(86_400)), 86_400_000);
        assert_ne!(new_token(), new_token());
    }
}

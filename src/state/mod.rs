//! The backends of the stateful checks (dedup records, rate-limit buckets), built from the
//! configuration's `state` block.
//!
//! The proxy asks the state two things, both through [`State`]:
//! - [`State::check_unverified`]: the optional per-IP limit on requests not verified yet;
//! - [`State::admit`]: for a verified request, its route's tier limit and its dedup claim
//!   together ([`Ask`] → [`Admission`]), so that a shared backend decides both in one round
//!   trip. A limited request claims nothing.
//!
//! Each backend implements [`Backend`]: a [`TierLimiter`], one [`DeliveryStore`] per route, and
//! the admission. [`MemoryBackend`] keeps everything in this process and admits by calling its
//! limiter then its store (the trait's default); [`RedisBackend`] shares everything between
//! replicas and admits in one Lua script. With Redis, `on_error` decides what a failed call
//! means: `fail_closed` answers 503, `fail_open` decides from this process's memory instead.

pub mod memory;
pub mod redis;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::Sha256;

use crate::clock::Clock;
use crate::config::model::{OnStateError, StateConfig};
use crate::config::{Config, Secret};
use crate::dedup::{self, Claim, ClaimOutcome, DeliveryKey, DeliveryStore, StoreError};
use crate::metrics::Metrics;
use crate::ratelimit::{self, Decision, LimitError, LimitKeyHash, TierLimiter};
use crate::runtime::Live;
use crate::snapshot::Snapshot;

pub use memory::MemoryBackend;
pub use redis::RedisBackend;

/// How often idle state is reclaimed and the dedup gauges refreshed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// What a verified request asks of the state before it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The route, by index in the configuration: whose dedup store claims.
    pub route: usize,
    /// The tier limit to check: the sender's key and the limit in requests per minute.
    pub limit: Option<(LimitKeyHash, NonZeroU32)>,
    /// The delivery to claim, and the claim's lease.
    pub claim: Option<(DeliveryKey, Duration)>,
}

/// The state's answer to an [`Ask`].
#[derive(Debug)]
pub enum Admission {
    /// Within the limit (or none asked): forward, holding the claim if one was asked.
    Admitted(Option<Claim>),
    /// Over the tier limit: answer 429 with this decision's headers. Nothing was claimed.
    Limited(Decision),
    /// The delivery is being forwarded right now by another request: answer 409.
    InFlight,
    /// The delivery was already forwarded and accepted: answer 200 (duplicate).
    Duplicate,
}

/// Why the state could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The backend did not answer within its timeout.
    #[error("state backend timed out after {0:?}")]
    Timeout(Duration),
    /// The backend could not be reached or answered with an error.
    #[error("state backend unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for StateError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Timeout(after) => Self::Timeout(after),
            StoreError::Unavailable(source) => Self::Unavailable(source),
        }
    }
}

impl From<LimitError> for StateError {
    fn from(error: LimitError) -> Self {
        match error {
            LimitError::Timeout => Self::Timeout(Duration::ZERO),
            LimitError::Backend(source) => Self::Unavailable(source),
        }
    }
}

impl From<StateError> for StoreError {
    fn from(error: StateError) -> Self {
        match error {
            StateError::Timeout(after) => Self::Timeout(after),
            StateError::Unavailable(source) => Self::Unavailable(source),
        }
    }
}

impl From<StateError> for LimitError {
    fn from(error: StateError) -> Self {
        match error {
            StateError::Timeout(_) => Self::Timeout,
            StateError::Unavailable(source) => Self::Backend(source),
        }
    }
}

/// Where the stateful checks keep their state: a limiter, a dedup store per route, and the
/// admission of a verified request.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The tier limits and the `unverified_per_ip` limit (their keys never collide).
    fn limiter(&self) -> &dyn TierLimiter;

    /// The dedup store of route `route`, if that route deduplicates.
    fn store(&self, route: usize) -> Option<Arc<dyn DeliveryStore>>;

    /// Checks the tier limit, then, if the request passes, claims the delivery: what
    /// [`Ask`] asks for, in that order. A limited request claims nothing; a request that is a
    /// duplicate or in flight was still counted by the limiter.
    ///
    /// By default this calls [`Backend::limiter`] then the route's [`Backend::store`] (two
    /// calls); a networked backend overrides it to decide both in one round trip.
    async fn admit(&self, ask: Ask) -> Result<Admission, StateError> {
        if let Some((key, per_minute)) = ask.limit {
            let decision = self.limiter().check(key, per_minute).await?;
            if !decision.is_allowed() {
                return Ok(Admission::Limited(decision));
            }
        }
        let (Some((key, lease)), Some(store)) = (ask.claim, self.store(ask.route)) else {
            return Ok(Admission::Admitted(None));
        };
        Ok(match Claim::acquire(&store, key, lease).await? {
            ClaimOutcome::Claimed(claim) => Admission::Admitted(Some(claim)),
            ClaimOutcome::InFlight => Admission::InFlight,
            ClaimOutcome::Committed => Admission::Duplicate,
        })
    }

    /// Whether the backend can answer right now (`/readyz`). By default: always.
    async fn ready(&self) -> Result<(), StateError> {
        Ok(())
    }
}

/// Every backend of one gateway, and the keys it hashes with.
pub struct State {
    /// Hashes rate-limit keys (route + selected value, or client IP) to fixed-size keys.
    pub limit_keys: ratelimit::KeyHasher,
    /// Hashes route + delivery ID to fixed-size keys.
    pub delivery_keys: dedup::KeyHasher,
    /// The secret of `delivery_keys` with the memory backend (what a snapshot saves); `None`
    /// with Redis, whose keys derive from `state.key_secret`.
    delivery_secret: Option<[u8; 32]>,
    /// The route names, by index: how a reload finds each route's state again.
    names: Vec<String>,
    clock: Arc<dyn Clock>,
    /// This process's memory: the backend when no Redis is configured, else the fallback of
    /// `fail_open`.
    local: Arc<MemoryBackend>,
    /// Redis, when configured.
    shared: Option<Shared>,
}

/// The shared backend and what its failures mean.
struct Shared {
    redis: Arc<RedisBackend>,
    on_error: OnStateError,
    /// Whether the last call failed (`fail_open` decided from memory), to log the transitions
    /// rather than every request.
    degraded: Arc<AtomicBool>,
}

impl State {
    /// The backends `config.state` asks for, reading time from `clock` (memory) and recording
    /// Redis calls in `metrics`. Connecting to Redis is lazy: this never waits on it.
    pub fn new(config: &Config, clock: Arc<dyn Clock>, metrics: &Metrics) -> Self {
        Self::with_snapshot(config, clock, metrics, None)
    }

    /// As [`State::new`], with the memory backend starting from `snapshot`: its hashing secret,
    /// and the delivered IDs of the routes that still exist by name and deduplicate. Ignored
    /// with Redis (which keeps its own records).
    pub fn with_snapshot(
        config: &Config,
        clock: Arc<dyn Clock>,
        metrics: &Metrics,
        snapshot: Option<Snapshot>,
    ) -> Self {
        let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        let policies: Vec<_> = config.routes.iter().map(|r| r.dedup.clone()).collect();
        let local = Arc::new(MemoryBackend::new(&policies, clock.clone()));
        let StateConfig::Redis(settings) = &config.state else {
            let secret = snapshot
                .as_ref()
                .map_or_else(rand::random::<[u8; 32]>, |s| s.key_secret);
            let state = Self {
                limit_keys: ratelimit::KeyHasher::random(),
                delivery_keys: dedup::KeyHasher::from_secret(&secret),
                delivery_secret: Some(secret),
                names,
                clock,
                local,
                shared: None,
            };
            if let Some(snapshot) = &snapshot {
                state.import(snapshot);
            }
            return state;
        };
        let (limit_keys, delivery_keys) = shared_hashers(&settings.key_secret);
        let redis = RedisBackend::new(settings, &policies, metrics.state("redis"));
        Self {
            limit_keys,
            delivery_keys,
            delivery_secret: None,
            names,
            clock,
            local,
            shared: Some(Shared {
                redis: Arc::new(redis),
                on_error: settings.on_error,
                degraded: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// The state for a reloaded `config`, on the same backends: the same hashers, limiter
    /// buckets and Redis connection, and each route's dedup records found again by its name
    /// (see [`MemoryBackend::reconfigured`]). The `state` block itself is not reloaded: the
    /// backend, its URL and its settings stay as they were at start.
    pub fn reconfigured(&self, config: &Config) -> Self {
        let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        let policies: Vec<_> = config.routes.iter().map(|r| r.dedup.clone()).collect();
        let local = self
            .local
            .reconfigured(&self.names, &names, &policies, self.clock.clone());
        Self {
            limit_keys: self.limit_keys.clone(),
            delivery_keys: self.delivery_keys.clone(),
            delivery_secret: self.delivery_secret,
            names,
            clock: self.clock.clone(),
            local: Arc::new(local),
            shared: self.shared.as_ref().map(|shared| Shared {
                redis: Arc::new(shared.redis.reconfigured(&policies)),
                on_error: shared.on_error,
                degraded: shared.degraded.clone(),
            }),
        }
    }

    /// Adds the delivered IDs of `snapshot` to the memory backend's routes that still exist by
    /// name and deduplicate; IDs already held are skipped. Returns how many were added, or
    /// `None` with Redis or when the snapshot's keys were made with another secret (they
    /// would match nothing).
    pub fn import(&self, snapshot: &Snapshot) -> Option<usize> {
        if self.shared.is_some() || self.delivery_secret != Some(snapshot.key_secret) {
            return None;
        }
        let mut added = 0;
        for (name, records) in &snapshot.routes {
            let index = self.names.iter().position(|n| n == name);
            if let Some(store) = index.and_then(|i| self.local.memory_store(i)) {
                added += store.import(records);
            }
        }
        Some(added)
    }

    /// The memory backend's delivered IDs and hashing secret, for `state.snapshot_path`;
    /// `None` with Redis.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let secret = self.delivery_secret?;
        if self.shared.is_some() {
            return None;
        }
        let routes = (self.names.iter().enumerate())
            .filter_map(|(i, name)| {
                let store = self.local.memory_store(i)?;
                Some((name.clone(), store.delivered()))
            })
            .collect();
        Some(Snapshot {
            key_secret: secret,
            routes,
        })
    }

    /// The tier limit and dedup claim of a verified request ([`Backend::admit`]). With Redis and
    /// `fail_open`, a failed call is decided from this process's memory instead.
    pub async fn admit(&self, ask: Ask) -> Result<Admission, StateError> {
        let Some(shared) = &self.shared else {
            return self.local.admit(ask).await;
        };
        let result = shared.redis.admit(ask).await;
        if shared.fall_back(&result) {
            return self.local.admit(ask).await;
        }
        result
    }

    /// The `unverified_per_ip` limit of `ip`'s key (`key`), at `per_minute`.
    pub async fn check_unverified(
        &self,
        key: LimitKeyHash,
        per_minute: NonZeroU32,
    ) -> Result<Decision, StateError> {
        let Some(shared) = &self.shared else {
            return Ok(self.local.limiter().check(key, per_minute).await?);
        };
        let result = shared.redis.limiter().check(key, per_minute).await;
        let result = result.map_err(StateError::from);
        if shared.fall_back(&result) {
            return Ok(self.local.limiter().check(key, per_minute).await?);
        }
        result
    }

    /// The key of a client IP under the `unverified_per_ip` limit.
    pub fn unverified_ip_key(&self, ip: IpAddr) -> LimitKeyHash {
        self.limit_keys.unverified_ip_key(ip)
    }

    /// Whether requests can be decided right now: false only with Redis, `fail_closed`, and
    /// Redis not answering a PING within its timeout.
    pub async fn is_ready(&self) -> bool {
        match &self.shared {
            Some(shared) if shared.on_error == OnStateError::FailClosed => {
                shared.redis.ready().await.is_ok()
            }
            _ => true,
        }
    }

    /// Loads the Redis scripts, so the first requests don't pay for it; a no-op without Redis.
    /// A failure is only logged: the scripts are loaded again whenever Redis lacks them.
    pub async fn warm_up(&self) {
        if let Some(shared) = &self.shared {
            if let Err(error) = shared.redis.load_scripts().await {
                tracing::warn!(%error, "could not load the Redis scripts yet");
            }
        }
    }

    /// The in-memory dedup store of route `index`, if it deduplicates: the store itself with
    /// the memory backend, the `fail_open` fallback with Redis.
    pub fn local_store(&self, index: usize) -> Option<Arc<dyn DeliveryStore>> {
        self.local.store(index)
    }

    /// One bounded step of reclaiming expired records and idle buckets in memory.
    pub fn reclaim_step(&self) {
        self.local.reclaim_step();
    }
}

impl Shared {
    /// Whether the shared call that gave `result` is to be decided from memory instead: it
    /// failed, under `fail_open`. Logs when that starts and when Redis answers again.
    fn fall_back<T>(&self, result: &Result<T, StateError>) -> bool {
        match (result, self.on_error) {
            (Ok(_), _) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: deciding from the shared state");
                }
                false
            }
            (Err(_), OnStateError::FailClosed) => false,
            (Err(error), OnStateError::FailOpen) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "Redis failed: deciding from this process's memory (fail_open) until it answers again");
                }
                true
            }
        }
    }
}

/// The rate-limit and delivery key hashers of every replica sharing `secret`: each gets its own
/// key, derived as `HMAC-SHA256(secret, purpose)`.
pub fn shared_hashers(secret: &Secret) -> (ratelimit::KeyHasher, dedup::KeyHasher) {
    let derive = |purpose: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.key_bytes())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    };
    (
        ratelimit::KeyHasher::with_key(derive(b"hookgate state: rate-limit keys v1")),
        dedup::KeyHasher::from_secret(&derive(b"hookgate state: delivery keys v1")),
    )
}

/// The periodic job: reclaims state in memory and refreshes the dedup gauges of the serving
/// runtime (whichever a reload swapped in). With Redis it first loads the scripts.
pub struct Maintenance {
    live: Live,
    /// The eviction total last reported, by route name (a reload may give a route a new store,
    /// whose count starts again).
    reported: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Maintenance {
    pub fn new(live: Live) -> Self {
        Self {
            live,
            reported: Default::default(),
        }
    }

    /// One maintenance step (also what tests call). The gauges count the records in memory:
    /// with Redis, those of the `fail_open` fallback (Redis's own are in its `INFO keyspace`).
    pub fn step(&self) {
        let runtime = self.live.load();
        runtime.state.reclaim_step();
        runtime.forwarder.sweep_idle();
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for route in &runtime.routes {
            let Some(store) = runtime.state.local_store(route.index) else {
                continue;
            };
            route.metrics.dedup_entries.set(store.len() as i64);
            let total = store.evictions();
            let before = match reported.get_mut(&route.name) {
                Some(last) => std::mem::replace(last, total),
                None => {
                    reported.insert(route.name.clone(), total);
                    0
                }
            };
            // A count that went down belongs to a new store: all of it is new.
            let new = if total >= before {
                total - before
            } else {
                total
            };
            route.metrics.dedup_evictions.inc_by(new);
        }
    }
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let state = self.live.load().state.clone();
        state.warm_up().await;
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.step(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_sharing_a_secret_hash_alike() {
        let (a_limit, a_dedup) = shared_hashers(&Secret::new("x".repeat(32)));
        let (b_limit, b_dedup) = shared_hashers(&Secret::new("x".repeat(32)));
        let (c_limit, c_dedup) = shared_hashers(&Secret::new("y".repeat(32)));
        let value = ratelimit::KeyValue::Route;
        assert_eq!(a_limit.route_key("r", value), b_limit.route_key("r", value));
        assert_ne!(a_limit.route_key("r", value), c_limit.route_key("r", value));
        assert_eq!(a_dedup.key("r", b"evt"), b_dedup.key("r", b"evt"));
        assert_ne!(a_dedup.key("r", b"evt"), c_dedup.key("r", b"evt"));
    }
}

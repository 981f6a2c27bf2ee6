//! The backends of the stateful checks (dedup records, rate-limit buckets), built from the
//! configuration. The proxy reaches them only through the [`DeliveryStore`] and
//! [`TierLimiter`] traits; today both live in this process's memory.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::clock::Clock;
use crate::config::Config;
use crate::dedup::{self, DeliveryStore, MemoryStore};
use crate::metrics::RouteMetrics;
use crate::ratelimit::{self, MemoryLimiter, TierLimiter};

/// How often idle state is reclaimed and the dedup gauges refreshed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// Records examined per dedup shard per maintenance step: bounded, so it never stalls requests.
const SWEEP_PER_SHARD: usize = 256;
/// Limiter shards examined per maintenance step.
const LIMITER_SHARDS_PER_STEP: usize = 16;

/// Every backend of one gateway.
pub struct State {
    /// Tier limits of verified requests and the `unverified_per_ip` limit (separate key spaces).
    pub limiter: Arc<dyn TierLimiter>,
    /// Hashes rate-limit keys (route + selected value, or client IP) to fixed-size keys.
    pub limit_keys: ratelimit::KeyHasher,
    /// Hashes route + delivery ID to fixed-size keys.
    pub delivery_keys: dedup::KeyHasher,
    /// One dedup store per route, by route index; `None` for routes without dedup.
    stores: Vec<Option<Arc<MemoryStore>>>,
    memory_limiter: Arc<MemoryLimiter>,
}

impl State {
    /// In-memory backends for `config`, reading time from `clock`.
    pub fn memory(config: &Config, clock: Arc<dyn Clock>) -> Self {
        let memory_limiter = Arc::new(MemoryLimiter::new(clock.clone()));
        let stores = config
            .routes
            .iter()
            .map(|r| {
                r.dedup
                    .as_ref()
                    .map(|policy| Arc::new(MemoryStore::for_policy(policy, clock.clone())))
            })
            .collect();
        Self {
            limiter: memory_limiter.clone(),
            limit_keys: ratelimit::KeyHasher::random(),
            delivery_keys: dedup::KeyHasher::random(),
            stores,
            memory_limiter,
        }
    }

    /// The dedup store of route `index`, if it deduplicates.
    pub fn store(&self, index: usize) -> Option<Arc<dyn DeliveryStore>> {
        self.stores
            .get(index)?
            .as_ref()
            .map(|s| s.clone() as Arc<dyn DeliveryStore>)
    }

    /// One bounded step of reclaiming expired records and idle buckets.
    pub fn reclaim_step(&self) {
        for store in self.stores.iter().flatten() {
            store.sweep(SWEEP_PER_SHARD);
        }
        self.memory_limiter.sweep(LIMITER_SHARDS_PER_STEP);
    }
}

/// The periodic job: reclaims state and refreshes the dedup gauges.
pub struct Maintenance {
    state: Arc<State>,
    /// Metric handles by route index, with the eviction total last reported.
    routes: Vec<(RouteMetrics, std::sync::atomic::AtomicU64)>,
}

impl Maintenance {
    pub fn new(state: Arc<State>, routes: Vec<RouteMetrics>) -> Self {
        Self {
            state,
            routes: routes
                .into_iter()
                .map(|m| (m, std::sync::atomic::AtomicU64::new(0)))
                .collect(),
        }
    }

    /// One maintenance step (also what tests call).
    pub fn step(&self) {
        use std::sync::atomic::Ordering;
        self.state.reclaim_step();
        for (index, (metrics, reported)) in self.routes.iter().enumerate() {
            let Some(store) = self.state.store(index) else {
                continue;
            };
            metrics.dedup_entries.set(store.len() as i64);
            let total = store.evictions();
            let before = reported.swap(total, Ordering::Relaxed);
            metrics.dedup_evictions.inc_by(total.saturating_sub(before));
        }
    }
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.step(),
            }
        }
    }
}

//! The in-process backend: a [`MemoryLimiter`] and a [`MemoryStore`] per deduplicating route.
//! It never fails and never waits; each gateway process decides alone.

use std::sync::Arc;

use super::Backend;
use crate::clock::Clock;
use crate::dedup::{DedupPolicy, DeliveryStore, MemoryStore};
use crate::ratelimit::{MemoryLimiter, TierLimiter};

/// Records examined per dedup shard per maintenance step: bounded, so it never stalls requests.
const SWEEP_PER_SHARD: usize = 256;
/// Limiter shards examined per maintenance step.
const LIMITER_SHARDS_PER_STEP: usize = 16;

/// State in this process's memory. Admission is the [`Backend`] default: the limiter, then the
/// route's store.
pub struct MemoryBackend {
    /// Shared with the backends that reloads build from this one.
    limiter: Arc<MemoryLimiter>,
    /// One store per route, by route index; `None` for routes without dedup.
    stores: Vec<Option<Arc<MemoryStore>>>,
}

impl MemoryBackend {
    /// A backend for routes with these dedup policies (by route index), reading time from
    /// `clock`. Nothing is allocated until records arrive.
    pub fn new(policies: &[Option<DedupPolicy>], clock: Arc<dyn Clock>) -> Self {
        let stores = policies
            .iter()
            .map(|policy| {
                policy
                    .as_ref()
                    .map(|policy| Arc::new(MemoryStore::for_policy(policy, clock.clone())))
            })
            .collect();
        Self {
            limiter: Arc::new(MemoryLimiter::new(clock)),
            stores,
        }
    }

    /// The backend of a reloaded configuration: the same limiter (its buckets are keyed by
    /// route name, so they carry over), and per route `policies[i]` of `names[i]`, the store
    /// the route of that name had here (`old_names`), when its capacity and TTL are unchanged.
    /// A route whose capacity or TTL changed gets a new store holding the old one's delivered
    /// IDs, with their expiries; a new route gets an empty one.
    pub fn reconfigured(
        &self,
        old_names: &[String],
        names: &[String],
        policies: &[Option<DedupPolicy>],
        clock: Arc<dyn Clock>,
    ) -> Self {
        let stores = names
            .iter()
            .zip(policies)
            .map(|(name, policy)| {
                let policy = policy.as_ref()?;
                let old = (old_names.iter().position(|n| n == name))
                    .and_then(|i| self.stores.get(i).cloned().flatten());
                match old {
                    Some(old)
                        if old.capacity() == policy.capacity.get() && old.ttl() == policy.ttl =>
                    {
                        Some(old)
                    }
                    old => {
                        let store = Arc::new(MemoryStore::for_policy(policy, clock.clone()));
                        if let Some(old) = old {
                            store.import(&old.delivered());
                        }
                        Some(store)
                    }
                }
            })
            .collect();
        Self {
            limiter: self.limiter.clone(),
            stores,
        }
    }

    /// The memory store of route `route`, if it deduplicates (for snapshots).
    pub fn memory_store(&self, route: usize) -> Option<&Arc<MemoryStore>> {
        self.stores.get(route)?.as_ref()
    }

    /// One bounded step of reclaiming expired records and idle buckets.
    pub fn reclaim_step(&self) {
        for store in self.stores.iter().flatten() {
            store.sweep(SWEEP_PER_SHARD);
        }
        self.limiter.sweep(LIMITER_SHARDS_PER_STEP);
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn limiter(&self) -> &dyn TierLimiter {
        &*self.limiter
    }

    fn store(&self, route: usize) -> Option<Arc<dyn DeliveryStore>> {
        self.stores
            .get(route)?
            .as_ref()
            .map(|s| s.clone() as Arc<dyn DeliveryStore>)
    }
}

//! Per-tier rate limiting with GCRA (issue 4).
//!
//! Each route has a [`RateLimit`]: a tier's requests per minute, counted per [`LimitKey`] value.
//! Only verified requests are checked. The limit allows a burst of a whole minute's budget, then
//! refills smoothly, one request per `60 s / limit` ([`gcra`]); the count is exact.
//!
//! The proxy, per verified request:
//! 1. hashes what the route's key selects: [`KeyHasher::route_key`] → [`LimitKeyHash`];
//! 2. asks the limiter: [`TierLimiter::check`]`(key, limit.per_minute)` → [`Decision`];
//! 3. answers 429 with `Retry-After` when denied, and shows `RateLimit-Limit`, `-Remaining` and
//!    `-Reset` from the decision either way.
//!
//! The optional `unverified_per_ip` limit, checked before the body is read, is a second limiter
//! instance with its own keys ([`KeyHasher::unverified_ip_key`]).
//!
//! Backends: [`MemoryLimiter`] for one process; a shared store (Redis) implements the same trait
//! and mirrors [`gcra::decide`].

pub mod gcra;
pub mod key;
pub mod memory;
pub mod tier;

use std::num::NonZeroU32;

use async_trait::async_trait;

pub use gcra::{Decision, Rate, Verdict};
pub use key::{KeyHasher, KeyValue, LimitKeyHash};
pub use memory::MemoryLimiter;
pub use tier::{LimitKey, RateLimit, Tiers};

/// Decides whether a sender may send one more request, and counts it if so.
#[async_trait]
pub trait TierLimiter: Send + Sync {
    /// Checks one request for `key` against `per_minute` requests per minute (burst of the same
    /// size). An allowed request is counted; a denied one is not. Atomic per key, however many
    /// tasks check at once.
    ///
    /// Errors only when the backend cannot answer; the caller chooses to fail open or closed.
    async fn check(
        &self,
        key: LimitKeyHash,
        per_minute: NonZeroU32,
    ) -> Result<Decision, LimitError>;

    /// Does one bounded step of reclaiming idle keys and returns how many it removed. A
    /// background job calls it periodically (about once a second).
    ///
    /// By default this does nothing and returns 0: for stores that expire keys themselves.
    fn reclaim_idle(&self) -> usize {
        0
    }
}

/// Why a limiter could not decide.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The backend did not answer in time.
    #[error("rate-limit backend timed out")]
    Timeout,
    /// The backend failed (connection, protocol, script error).
    #[error("rate-limit backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

//! The store behind deduplication, and the guard that makes a claim impossible to leak.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::DeliveryKey;

/// Proof of ownership of an in-flight claim, returned by [`DeliveryStore::claim`].
///
/// Only the holder of the token can commit or release the claim, so a request whose lease ran
/// out (and whose ID was claimed again by a retry) cannot delete or commit the retry's claim.
/// Backends choose the values: a counter in the memory store, a random number in a shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(NonZeroU64);

impl ClaimToken {
    /// A token with the given value.
    pub const fn new(value: NonZeroU64) -> Self {
        Self(value)
    }

    /// The token's value, e.g. to store it in a backend.
    pub const fn get(self) -> NonZeroU64 {
        self.0
    }
}

/// What [`DeliveryStore::claim`] found. `T` is what a successful claim yields: the raw
/// [`ClaimToken`] from a store, or a [`Claim`] guard from [`Claim::acquire`].
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimOutcome<T = ClaimToken> {
    /// The ID was free (never seen, released, expired or its lease ran out): it is now claimed
    /// as in flight by the caller, who forwards the request and then commits or releases.
    Claimed(T),
    /// Another request with this ID is being forwarded right now: answer 409, don't forward.
    InFlight,
    /// This ID was already delivered within the TTL: answer 200 (duplicate), don't forward.
    Committed,
}

impl<T> ClaimOutcome<T> {
    /// The claim, if one was made.
    pub fn claimed(self) -> Option<T> {
        match self {
            Self::Claimed(t) => Some(t),
            Self::InFlight | Self::Committed => None,
        }
    }
}

/// Why a store could not answer. The memory backend never fails; a networked backend can.
/// The caller decides whether to fail open (forward without deduplication) or closed (503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or answered with an error.
    #[error("deduplication store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend did not answer in time.
    #[error("deduplication store timed out after {0:?}")]
    Timeout(Duration),
}

/// How a claim ends when its guard finishes it from synchronous code; see
/// [`DeliveryStore::settle_detached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The upstream accepted the delivery: keep the ID as delivered for the TTL.
    Commit,
    /// The delivery did not go through: forget the ID, so the sender's retry is forwarded.
    Release,
}

/// Where delivery IDs are claimed, committed and released: one instance per route (each with
/// its own TTL and capacity), reached only through this trait so backends can be swapped.
///
/// The life of a delivery, as in Stripe's idempotency keys and svix-bridge's two-state record:
/// `claim` makes an *in-flight* record with a short lease; `commit` turns it into a *delivered*
/// record that lives for the route's TTL; `release` deletes it. Use [`Claim::acquire`] rather
/// than calling these directly: its guard releases the claim on every path that doesn't
/// commit, including panics and cancelled futures.
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Atomically claims `key` for `lease` if it is free. Of any number of concurrent claims of
    /// a free key, exactly one gets [`ClaimOutcome::Claimed`]. The in-flight record expires by
    /// itself after `lease` (give the upstream timeout plus a margin), so a request that dies
    /// without releasing never blocks its ID for longer than that.
    async fn claim(&self, key: DeliveryKey, lease: Duration) -> Result<ClaimOutcome, StoreError>;

    /// Marks the claimed delivery as delivered, for the store's TTL. Returns `Ok(false)` when
    /// the claim was no longer the caller's (its lease ran out and the ID was claimed again,
    /// or it was evicted); nothing is changed then.
    async fn commit(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError>;

    /// Deletes the caller's in-flight claim so the ID can be claimed again. Returns
    /// `Ok(false)`, changing nothing, when the record is not the caller's claim (a newer
    /// claim, or a commit): a stale guard never deletes someone else's record.
    async fn release(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError>;

    /// Commits or releases a claim from synchronous code: the [`Claim`] guard's `Drop`. By
    /// default this spawns the operation on the current tokio runtime, if there is one, and
    /// logs its failure; without a runtime nothing happens and the lease expires the claim.
    /// Stores that can finish the operation without waiting (memory) do it inline instead.
    fn settle_detached(self: Arc<Self>, key: DeliveryKey, token: ClaimToken, settle: Settle) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                ?key,
                ?settle,
                "no runtime to settle a dropped claim; its lease will expire it"
            );
            return;
        };
        runtime.spawn(async move {
            let result = match settle {
                Settle::Commit => self.commit(key, token).await,
                Settle::Release => self.release(key, token).await,
            };
            if let Err(error) = result {
                tracing::warn!(?key, ?settle, %error, "settling a dropped claim failed; its lease will expire it");
            }
        });
    }

    /// Records currently held (in flight and delivered, including expired ones not reclaimed
    /// yet), for the `hookgate_dedup_entries{route}` gauge.
    fn len(&self) -> usize;

    /// Whether the store holds no record.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records evicted to make room since the store was created (expired records reclaimed
    /// don't count). A monotonic total: add the difference since the previous reading to
    /// `hookgate_dedup_evictions_total{route}`.
    fn evictions(&self) -> u64;
}

/// What the guard must do if it is dropped now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Dropped before commit or release: the request died, release.
    Release,
    /// Dropped while `commit` was waiting on the store: the upstream succeeded, so finish the
    /// commit (the delivery is committed even if the sender hung up meanwhile).
    Commit,
    /// Settled: nothing to do.
    Nothing,
}

/// An in-flight claim that cannot be leaked: it ends with [`Claim::commit`] or
/// [`Claim::release`], and if it is dropped without either (an error path, a panic, a future
/// cancelled because the client hung up) it releases the claim itself.
#[must_use = "dropping a Claim releases it at once"]
pub struct Claim {
    store: Arc<dyn DeliveryStore>,
    key: DeliveryKey,
    token: ClaimToken,
    pending: Pending,
}

impl Claim {
    /// Claims `key` in `store` for `lease` ([`DeliveryStore::claim`]) and wraps a successful
    /// claim in a guard.
    pub async fn acquire(
        store: &Arc<dyn DeliveryStore>,
        key: DeliveryKey,
        lease: Duration,
    ) -> Result<ClaimOutcome<Claim>, StoreError> {
        Ok(match store.claim(key, lease).await? {
            ClaimOutcome::Claimed(token) => ClaimOutcome::Claimed(Claim {
                store: Arc::clone(store),
                key,
                token,
                pending: Pending::Release,
            }),
            ClaimOutcome::InFlight => ClaimOutcome::InFlight,
            ClaimOutcome::Committed => ClaimOutcome::Committed,
        })
    }

    /// Wraps a claim that `store` made by other means than [`Claim::acquire`] in a guard, which
    /// then commits or releases it like any other. For backends that make the claim in one call
    /// together with another check (the Redis admission script: tier limit and claim at once).
    pub fn adopt(store: Arc<dyn DeliveryStore>, key: DeliveryKey, token: ClaimToken) -> Claim {
        Claim {
            store,
            key,
            token,
            pending: Pending::Release,
        }
    }

    /// The upstream answered 2xx: keep the ID as delivered for the TTL. `Ok(false)` means the
    /// claim had already been lost (see [`DeliveryStore::commit`]). If this future is dropped
    /// before the store answers, the guard still finishes the commit.
    pub async fn commit(mut self) -> Result<bool, StoreError> {
        self.pending = Pending::Commit;
        let result = self.store.commit(self.key, self.token).await;
        // Answered, even with an error: a failed commit is left to the lease.
        self.pending = Pending::Nothing;
        result
    }

    /// The delivery did not go through (non-2xx, unreachable, timeout, reset): free the ID so
    /// the sender's retry is forwarded. `Ok(false)` means the record was no longer this claim.
    pub async fn release(mut self) -> Result<bool, StoreError> {
        let result = self.store.release(self.key, self.token).await;
        self.pending = Pending::Nothing;
        result
    }

    /// The claimed key.
    pub fn key(&self) -> DeliveryKey {
        self.key
    }

    /// The claim's token.
    pub fn token(&self) -> ClaimToken {
        self.token
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let settle = match self.pending {
            Pending::Release => Settle::Release,
            Pending::Commit => Settle::Commit,
            Pending::Nothing => return,
        };
        Arc::clone(&self.store).settle_detached(self.key, self.token, settle);
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.key)
            .field("token", &self.token)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

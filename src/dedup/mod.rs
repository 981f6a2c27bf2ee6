//! Deduplication by delivery ID (issue 3), modelled on Stripe's idempotency keys.
//!
//! A verified request's delivery ID is read per its route's [`DedupPolicy`] ([`extract_id`]),
//! hashed with the route into a fixed-size [`DeliveryKey`] ([`KeyHasher`]), and claimed in the
//! route's [`DeliveryStore`] through a [`Claim`] guard:
//!
//! | situation                               | answer              | forwarded?                     |
//! |-----------------------------------------|---------------------|--------------------------------|
//! | first delivery of an ID                 | upstream's answer   | yes; the ID is claimed in flight |
//! | upstream answered 2xx                   | —                   | [`Claim::commit`]: kept for the TTL |
//! | non-2xx, unreachable, timeout, reset    | upstream's / 502 / 504 | [`Claim::release`] (or drop): the retry is forwarded |
//! | same ID while the first is in flight    | 409                 | no ([`ClaimOutcome::InFlight`]) |
//! | same ID after commit                    | 200 duplicate       | no ([`ClaimOutcome::Committed`]) |
//!
//! ```no_run
//! # use std::{sync::Arc, time::Duration};
//! # use hookgate::dedup::*;
//! # async fn forward() -> u16 { 200 }
//! # async fn example(store: Arc<dyn DeliveryStore>, keys: KeyHasher) -> Result<u16, StoreError> {
//! let key = keys.key("stripe", b"evt_1");
//! let lease = Duration::from_secs(30 + 5); // upstream timeout + margin
//! match Claim::acquire(&store, key, lease).await? {
//!     ClaimOutcome::InFlight => Ok(409),
//!     ClaimOutcome::Committed => Ok(200),
//!     ClaimOutcome::Claimed(claim) => {
//!         let status = forward().await; // if this panics or is cancelled, `claim` releases
//!         if (200..300).contains(&status) {
//!             claim.commit().await?;
//!         } else {
//!             claim.release().await?;
//!         }
//!         Ok(status)
//!     }
//! }
//! # }
//! ```
//!
//! The [`ReplayWindow`] (same issue) refuses payloads whose `timestamp` is too old or too far
//! ahead, so a captured request can't be replayed once its record has expired.

mod key;
pub mod memory;
mod policy;
mod replay;
mod store;

pub use key::{DeliveryKey, KeyHasher};
pub use memory::MemoryStore;
pub use policy::{
    capacity_below_ttl, entries_needed, extract_id, DedupPolicy, DeliveryId, IdSource, MissingId,
    DEFAULT_CAPACITY, DEFAULT_TTL,
};
pub use replay::{parse_rfc3339, ReplayError, ReplayWindow};
pub use store::{Claim, ClaimOutcome, ClaimToken, DeliveryStore, Settle, StoreError};

//! Delivery keys: a fixed-size keyed hash of route + delivery ID.
//!
//! Stores never see the raw ID. They keep 16 bytes per delivery whatever the ID's length, and
//! a sender who controls IDs cannot aim them at one hash bucket or shard, because the hash is
//! keyed with a secret the sender doesn't know.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A delivery's identity in a [`DeliveryStore`](super::DeliveryStore): the first 128 bits of
/// `HMAC-SHA256(secret, len(route) || route || id)`.
///
/// The route's length (u32, big-endian) comes first, so `("ab", "c")` and `("a", "bc")` never
/// share a key: the same ID on two routes gives two unrelated keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey(u128);

impl DeliveryKey {
    /// A key from its 128 bits. For backends that read keys back and for tests and benchmarks;
    /// the gateway builds keys with [`KeyHasher::key`].
    pub const fn from_u128(bits: u128) -> Self {
        Self(bits)
    }

    /// The key's 128 bits (uniformly distributed: stores use them directly as hash values).
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Debug for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryKey({:032x})", self.0)
    }
}

/// Turns (route, delivery ID) into a [`DeliveryKey`] with a secret key.
///
/// One per process is enough ([`KeyHasher::random`]). Gateways that share a store (a future
/// Redis backend) must share the secret too ([`KeyHasher::from_secret`]), or they would not
/// recognise each other's deliveries.
#[derive(Clone)]
pub struct KeyHasher {
    /// HMAC state with the key already absorbed: each key costs a clone (a copy, no heap) and
    /// two SHA-256 compressions for route + ID up to 51 bytes.
    mac: Hmac<Sha256>,
}

impl KeyHasher {
    /// A hasher with a fresh random 256-bit secret (from the operating system's CSPRNG, via
    /// `rand`'s thread generator). Keys differ from one process to the next.
    pub fn random() -> Self {
        Self::from_secret(&rand::random::<[u8; 32]>())
    }

    /// A hasher with a given secret, for stores shared between processes and for tests.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .expect("HMAC-SHA256 accepts keys of any length");
        Self { mac }
    }

    /// The key of delivery `id` on route `route`. Allocates nothing.
    pub fn key(&self, route: &str, id: &[u8]) -> DeliveryKey {
        let mut mac = self.mac.clone();
        // Route names are config strings; saturating keeps this total even for absurd ones.
        let route_len = u32::try_from(route.len()).unwrap_or(u32::MAX);
        mac.update(&route_len.to_be_bytes());
        mac.update(route.as_bytes());
        mac.update(id);
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        DeliveryKey(u128::from_le_bytes(first))
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_route_id_and_secret() {
        let h = KeyHasher::from_secret(&[7; 32]);
        let k = h.key("stripe", b"evt_1");
        assert_eq!(k, h.key("stripe", b"evt_1"), "deterministic");
        assert_ne!(k, h.key("github", b"evt_1"), "routes never collide");
        assert_ne!(k, h.key("stripe", b"evt_2"));
        // The length prefix keeps the (route, id) split unambiguous.
        assert_ne!(h.key("ab", b"c"), h.key("a", b"bc"));
        assert_ne!(k, KeyHasher::from_secret(&[8; 32]).key("stripe", b"evt_1"));
        assert_ne!(
            KeyHasher::random().key("stripe", b"evt_1"),
            KeyHasher::random().key("stripe", b"evt_1")
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", KeyHasher::from_secret(&[1; 32])),
            "KeyHasher(<secret>)"
        );
        assert_eq!(
            format!("{:?}", DeliveryKey::from_u128(0xab)),
            "DeliveryKey(000000000000000000000000000000ab)"
        );
    }
}

//! Fixed-size, keyed hashes of what a limit counts per: the limiter never stores raw strings.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// Which sender a limit counts for: a keyed hash of the limit's scope and the key's value.
///
/// 16 bytes of keyed SHA-256: unforgeable without the hasher's key (no one can aim collisions at a
/// victim's bucket or at one map shard), and collisions by chance are out of reach (2^-64 at
/// 2^32 keys).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LimitKeyHash([u8; 16]);

impl LimitKeyHash {
    /// The hash's bytes, e.g. to name the key in a shared store.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first half, which the in-memory map hashes by.
    pub(crate) fn low(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().unwrap_or_default())
    }

    /// The second half, which picks the in-memory map's shard.
    pub(crate) fn high(&self) -> u64 {
        u64::from_le_bytes(self.0[8..].try_into().unwrap_or_default())
    }
}

impl Hash for LimitKeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniformly random: half of it is a perfect table hash.
        state.write_u64(self.low());
    }
}

impl fmt::Debug for LimitKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LimitKeyHash(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// The value a route's [`LimitKey`](super::LimitKey) selected from one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyValue<'a> {
    /// `route`: one bucket for the whole route.
    Route,
    /// `header:NAME`: the header's raw value (the caller decides what a missing header means).
    Header(&'a [u8]),
    /// `client_ip`: the peer address; an IPv4-mapped IPv6 address counts as its IPv4 address.
    ClientIp(IpAddr),
}

/// Hashes limit keys with a secret key, so stored state is fixed-size and carries no raw values.
///
/// Build one per process with [`KeyHasher::random`] for an in-memory limiter. Gateways sharing a
/// store must hash alike: build theirs with [`KeyHasher::with_key`] from one configured secret.
#[derive(Clone)]
pub struct KeyHasher {
    /// SHA-256 state after absorbing one 64-byte block holding the key: each hash then costs
    /// one compression for values up to ~40 bytes.
    prefix: Sha256,
}

/// Domain tags: the same route and value never collide across key spaces.
const TAG_ROUTE_LIMIT: u8 = 1;
const TAG_UNVERIFIED_IP: u8 = 2;

impl KeyHasher {
    /// A hasher with a fresh random key (from the OS-seeded thread RNG).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Self::with_key(key)
    }

    /// A hasher with the given secret key; the same key gives the same hashes in any process.
    pub fn with_key(key: [u8; 32]) -> Self {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        block[32..].copy_from_slice(b"hookgate ratelimit key hash v1\0\0");
        Self {
            prefix: Sha256::new_with_prefix(block),
        }
    }

    /// The key of a verified request under `route`'s limit, given what the route's `LimitKey`
    /// selected.
    pub fn route_key(&self, route: &str, value: KeyValue<'_>) -> LimitKeyHash {
        let mut h = self.prefix.clone();
        h.update([TAG_ROUTE_LIMIT]);
        h.update((route.len() as u64).to_le_bytes());
        h.update(route.as_bytes());
        match value {
            KeyValue::Route => h.update([0]),
            KeyValue::Header(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v);
            }
            KeyValue::ClientIp(ip) => {
                h.update([2]);
                update_ip(&mut h, ip);
            }
        }
        finish(h)
    }

    /// The key of a not-yet-verified request under the global `unverified_per_ip` limit.
    pub fn unverified_ip_key(&self, ip: IpAddr) -> LimitKeyHash {
        let mut h = self.prefix.clone();
        h.update([TAG_UNVERIFIED_IP]);
        update_ip(&mut h, ip);
        finish(h)
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<secret key>)")
    }
}

fn update_ip(h: &mut Sha256, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            h.update([4]);
            h.update(v4.octets());
        }
        IpAddr::V6(v6) => {
            h.update([6]);
            h.update(v6.octets());
        }
    }
}

fn finish(h: Sha256) -> LimitKeyHash {
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    LimitKeyHash(out)
}

/// Table hasher for keys that are already uniform hashes: passes [`LimitKeyHash::low`] through.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `LimitKeyHash`; a correct (FNV-1a) fallback for anything else.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`PassThroughHasher`]s for the in-memory map.
pub(crate) type PassThrough = BuildHasherDefault<PassThroughHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn hashes_separate_routes_kinds_values_and_key_spaces() {
        let h = KeyHasher::random();
        let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();
        let keys = [
            h.route_key("a", KeyValue::Route),
            h.route_key("b", KeyValue::Route),
            h.route_key("a", KeyValue::Header(b"t1")),
            h.route_key("a", KeyValue::Header(b"t2")),
            h.route_key("b", KeyValue::Header(b"t1")),
            h.route_key("a", KeyValue::Header(b"")),
            // Length prefixes: route "a" + value "bc" is not route "ab" + value "c".
            h.route_key("ab", KeyValue::Header(b"c")),
            h.route_key("a", KeyValue::Header(b"bc")),
            h.route_key("a", KeyValue::ClientIp(ip)),
            h.unverified_ip_key(ip),
        ];
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert_eq!(keys[2], h.route_key("a", KeyValue::Header(b"t1")));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let h = KeyHasher::random();
        let v4: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();
        let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().into();
        assert_eq!(h.unverified_ip_key(v4), h.unverified_ip_key(mapped));
        let other: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert_ne!(h.unverified_ip_key(v4), h.unverified_ip_key(other));
    }

    #[test]
    fn the_key_decides_the_hash() {
        let a = KeyHasher::with_key([7; 32]);
        let b = KeyHasher::with_key([7; 32]);
        let c = KeyHasher::with_key([8; 32]);
        let k = |h: &KeyHasher| h.route_key("r", KeyValue::Header(b"tenant"));
        assert_eq!(k(&a), k(&b));
        assert_ne!(k(&a), k(&c));
        assert_ne!(k(&KeyHasher::random()), k(&KeyHasher::random()));
        assert!(!format!("{a:?}").contains('7'));
    }

    #[test]
    fn table_hash_is_the_low_half() {
        let key = KeyHasher::random().route_key("r", KeyValue::Route);
        let mut hasher = PassThroughHasher::default();
        key.hash(&mut hasher);
        assert_eq!(hasher.finish(), key.low());
        assert_ne!(key.low(), key.high());
    }
}

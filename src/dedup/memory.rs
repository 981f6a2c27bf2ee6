//! The in-process [`DeliveryStore`]: one per route, sharded, 32 bytes per delivered ID.
//!
//! # Layout
//!
//! A route's committed IDs all live for the same TTL, so commit order *is* expiry order. Each
//! shard therefore keeps its delivered records in a ring buffer in commit order, and finds them
//! through an open-addressing index of ring positions:
//!
//! - `ring`: 20-byte records (the 128-bit key and the expiry in whole seconds), oldest first.
//!   Expiry and eviction both take the front: O(1), exact, no second copy of the key.
//! - `index`: 8-byte entries (the key's first 32 bits and the ring position), linear probing,
//!   load ≤ 2/3 (12 bytes per record), deletion by backward shift (no tombstones). Keys are
//!   already uniform keyed hashes, so their bits are the hash; the 32 bits kept in the entry
//!   place it and screen lookups, so only a real match reads the ring.
//! - `inflight`: a small `HashMap` for claims being forwarded (token and lease deadline). They
//!   are few (one per request on the wire), end in any order, and move to the ring on commit.
//!
//! Ring and index grow by doubling up to the shard's share of the capacity and never past it,
//! so a full store holds exactly `capacity` records in 32 bytes each. Neither shrinks.
//!
//! # Why not `lru` or `dashmap`
//!
//! Measured by `cargo bench --bench dedup` (a counting global allocator, live bytes as
//! requested from the allocator, 1,000,000 entries with `u128` keys and `u64` values):
//!
//! | structure                                  | bytes per entry |
//! |--------------------------------------------|-----------------|
//! | this store (16 shards, full)               | 32.0            |
//! | `lru::LruCache<u128, u64>`                 | 83.7            |
//! | `dashmap::DashMap<u128, u64>`              | 69.2            |
//! | `std::collections::HashMap<u128, u64>`     | 69.2            |
//!
//! `lru` allocates a linked node per entry (key, value, two pointers) plus a hash table of
//! pointers to the nodes, and its order is recency, the wrong order here (a duplicate must not
//! extend a record's life). `dashmap` and `HashMap` are SwissTables of 32-byte `(u128, u64)`
//! slots with a power-of-two bucket count at load ≤ 7/8: at 1 M entries they sit just past a
//! doubling (2^21 buckets, 48% full), and they have no expiry order, so expiring or evicting
//! the oldest would take a full scan or a second structure with a second copy of each key.
//! Neither meets the target of 48 bytes per entry; ring + index does, with exact oldest-first
//! eviction. An index of bare `u32` positions (load ≤ 1/2) measured 28.0 bytes per entry but
//! was 15-30% slower at 1 M entries (every probe read the ring), so the 8-byte entry won.
//!
//! # Reclaiming and evicting
//!
//! - Each claim first pops at most [`RECLAIM_PER_CLAIM`] expired records off its shard's
//!   front; [`MemoryStore::sweep`] pops a bounded number per shard for a background job. Lookups
//!   ignore expired records, so reclamation is only about memory, never about correctness.
//! - A claim that finds its shard full pops the front record: the delivered ID closest to
//!   expiry. This is exact within a shard; across shards it is approximate (each shard evicts
//!   its own oldest, and keys spread uniformly, so the victim is among the store's oldest; see
//!   the `eviction_across_shards_is_approximately_oldest_first` test). A shard fills when it
//!   holds `capacity / shards` records, so evictions can start slightly below `capacity`.
//! - In-flight claims are evicted only from a shard that has no delivered record left (the one
//!   whose lease ends first): evicting one would let a concurrent duplicate through at once
//!   and make its owner's commit fail, whereas the oldest delivered record is the one least
//!   likely to see a retry. A claim whose lease ran out is replaced by the next claim of its ID; the rest
//!   are dropped by [`MemoryStore::sweep`] (a pass over the in-flight claims only, which are
//!   bounded by the requests in flight).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    ClaimOutcome, ClaimToken, DedupPolicy, DeliveryKey, DeliveryStore, Settle, StoreError,
};
use crate::clock::Clock;

/// Expired records a claim reclaims, at most, before doing its own work. More than one, so
/// reclamation keeps up with expiry (which runs at the past commit rate) even when claims
/// are fewer than commits were.
pub const RECLAIM_PER_CLAIM: usize = 4;

/// Most shards a store is split into: enough that concurrent claims rarely wait on each other.
const MAX_SHARDS: usize = 16;
/// Fewest records per shard when the shard count is chosen: small stores keep one shard, so
/// their eviction order stays exact.
const MIN_SHARD_CAPACITY: usize = 4096;
/// Largest shard: ring positions (plus one) and the index length must fit in `u32`.
const MAX_SHARD_CAPACITY: usize = (u32::MAX / 2) as usize;
/// First allocation of a shard's ring and index.
const MIN_ALLOCATION: usize = 16;

/// The in-memory [`DeliveryStore`] of one route. Operations never wait on anything but their
/// shard's mutex, held for a bounded number of steps; they never fail.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    capacity: usize,
    evictions: AtomicU64,
}

impl MemoryStore {
    /// A store keeping at most `capacity` records, each delivered ID for `ttl` (rounded up to
    /// whole seconds), reading time from `clock`. Nothing is allocated until records arrive.
    /// Splits into up to 16 shards, one per 4096 records of capacity.
    pub fn new(capacity: NonZeroUsize, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let shards = (capacity.get() / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        let shards = NonZeroUsize::new(shards).unwrap_or(NonZeroUsize::MIN);
        Self::with_shards(capacity, ttl, clock, shards)
    }

    /// The store for a route's [`DedupPolicy`] (its `capacity` and `ttl`).
    pub fn for_policy(policy: &DedupPolicy, clock: Arc<dyn Clock>) -> Self {
        Self::new(policy.capacity, policy.ttl, clock)
    }

    /// Like [`MemoryStore::new`] with an explicit shard count (at most `capacity`); one shard
    /// makes eviction order exact. Capacity is capped at 2^31 records per shard.
    pub fn with_shards(
        capacity: NonZeroUsize,
        ttl: Duration,
        clock: Arc<dyn Clock>,
        shards: NonZeroUsize,
    ) -> Self {
        let count = shards.get().min(capacity.get());
        let capacity = capacity.get().min(count * MAX_SHARD_CAPACITY);
        let (base, extra) = (capacity / count, capacity % count);
        let shards = (0..count)
            .map(|i| Mutex::new(Shard::new(base + usize::from(i < extra))))
            .collect();
        Self {
            shards,
            clock,
            ttl,
            capacity,
            evictions: AtomicU64::new(0),
        }
    }

    /// [`DeliveryStore::claim`] without the future: the memory store never waits.
    pub fn claim_now(&self, key: DeliveryKey, lease: Duration) -> ClaimOutcome {
        let now = Now::read(&*self.clock);
        let lease_ms = u64::try_from(lease.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let (outcome, evicted) = self.lock(key).claim(key, now, lease_ms);
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// [`DeliveryStore::commit`] without the future.
    pub fn commit_now(&self, key: DeliveryKey, token: ClaimToken) -> bool {
        let now = Now::read(&*self.clock);
        let expires = now.secs_ceil(self.ttl);
        self.lock(key).commit(key, token, expires)
    }

    /// [`DeliveryStore::release`] without the future.
    pub fn release_now(&self, key: DeliveryKey, token: ClaimToken) -> bool {
        self.lock(key).release(key, token)
    }

    /// Reclaims expired records for a background job: at most `max_per_shard` delivered
    /// records from each shard (each shard's lock is held for that long only), and every
    /// in-flight claim whose lease ran out. Returns how many records were reclaimed.
    pub fn sweep(&self, max_per_shard: usize) -> usize {
        let now = Now::read(&*self.clock);
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let before = shard.inflight.len();
                shard.inflight.retain(|_, f| f.deadline_ms > now.ms);
                before - shard.inflight.len() + shard.reclaim(now.secs, max_per_shard)
            })
            .sum()
    }

    /// The delivered IDs still live, each with its expiry (whole seconds since the epoch),
    /// oldest first: what a snapshot saves and what a rebuilt store takes over.
    /// In-flight claims are left out: their requests are in this process only.
    pub fn delivered(&self) -> Vec<(DeliveryKey, u32)> {
        let now = Now::read(&*self.clock);
        let mut records: Vec<(DeliveryKey, u32)> = Vec::new();
        for shard in self.shards.iter() {
            lock(shard).live_records(now.secs, &mut records);
        }
        // Each shard is in expiry order already; a stable sort merges them.
        records.sort_by_key(|&(_, expires)| expires);
        records
    }

    /// Adds delivered IDs with their expiry (as [`MemoryStore::delivered`] gives them, oldest
    /// first), as if committed then. Expired records and IDs already held are skipped; a full
    /// shard makes room as a claim would (the oldest record goes). Returns how many were added.
    pub fn import(&self, records: &[(DeliveryKey, u32)]) -> usize {
        let now = Now::read(&*self.clock);
        let mut added = 0;
        for &(key, expires) in records {
            if expires <= now.secs {
                continue;
            }
            let (inserted, evicted) = self.lock(key).insert_delivered(key, expires, now);
            added += usize::from(inserted);
            if evicted {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        added
    }

    /// Records held: in flight and delivered, including expired ones not reclaimed yet.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).total()).sum()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live records evicted to make room since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Most records the store keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a delivered ID is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self, key: DeliveryKey) -> MutexGuard<'_, Shard> {
        // The top 32 bits pick the shard; the index uses the bottom ones.
        let top = (key.as_u128() >> 96) as u64;
        lock(&self.shards[((top * self.shards.len() as u64) >> 32) as usize])
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn claim(&self, key: DeliveryKey, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        Ok(self.claim_now(key, lease))
    }

    async fn commit(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
        Ok(self.commit_now(key, token))
    }

    async fn release(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
        Ok(self.release_now(key, token))
    }

    /// Settles at once, on the dropping thread: no runtime needed, nothing left to chance.
    fn settle_detached(self: Arc<Self>, key: DeliveryKey, token: ClaimToken, settle: Settle) {
        match settle {
            Settle::Commit => self.commit_now(key, token),
            Settle::Release => self.release_now(key, token),
        };
    }

    fn len(&self) -> usize {
        MemoryStore::len(self)
    }

    fn evictions(&self) -> u64 {
        MemoryStore::evictions(self)
    }
}

/// A shard's lock. A panic while it was held cannot leave a record half-written (every
/// mutation is a few plain stores), so a poisoned lock is used as is.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time, read once per operation, in the units records use.
#[derive(Debug, Clone, Copy)]
struct Now {
    /// Whole seconds since the epoch: delivered records' unit.
    secs: u32,
    /// Milliseconds since the epoch: leases' unit.
    ms: u64,
    exact: Duration,
}

impl Now {
    fn read(clock: &dyn Clock) -> Self {
        let exact = clock.now();
        Self {
            secs: u32::try_from(exact.as_secs()).unwrap_or(u32::MAX),
            ms: u64::try_from(exact.as_millis()).unwrap_or(u64::MAX),
            exact,
        }
    }

    /// `now + ttl`, rounded up to whole seconds: a record never expires early.
    fn secs_ceil(self, ttl: Duration) -> u32 {
        let end = self.exact.saturating_add(ttl);
        let secs = end.as_secs() + u64::from(end.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }
}

/// A delivered ID: its key and when it expires. 20 bytes, 4-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    key: [u32; 4],
    /// Expiry, whole seconds since the epoch: valid while `now.secs < expires`.
    expires: u32,
}

const _: () = assert!(std::mem::size_of::<Rec>() == 20);

fn words(key: DeliveryKey) -> [u32; 4] {
    let k = key.as_u128();
    [
        k as u32,
        (k >> 32) as u32,
        (k >> 64) as u32,
        (k >> 96) as u32,
    ]
}

/// An in-flight claim.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    token: NonZeroU64,
    /// The lease ends at this time (ms since the epoch): the claim is dead from then on.
    deadline_ms: u64,
}

/// Keys are uniform keyed hashes already: hashing them again would only cost time.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here (through `write_u128`); this is for completeness.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type InFlightMap = HashMap<u128, InFlight, BuildHasherDefault<KeyBits>>;

/// `hash` scaled onto `0..n` (Lemire's fast range): any `n`, not only powers of two.
fn home(hash: u32, n: usize) -> usize {
    ((u64::from(hash) * n as u64) >> 32) as usize
}

/// Whether `k` lies in the cyclic interval `(from, to]`.
fn cyclic_between(from: usize, k: usize, to: usize) -> bool {
    if from <= to {
        from < k && k <= to
    } else {
        from < k || k <= to
    }
}

/// Most entries per index slot, as a fraction: linear probing stays short below 2/3.
const MAX_LOAD: (usize, usize) = (2, 3);

/// An index slot: a record's first key word (its hash: it places the entry and screens
/// lookups without touching the ring) and its ring position + 1. Zero is an empty slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry(u64);

impl Entry {
    const EMPTY: Entry = Entry(0);

    fn new(hash: u32, pos: usize) -> Self {
        let pos = u32::try_from(pos + 1).expect("shard capacity fits in u32");
        Self(u64::from(hash) << 32 | u64::from(pos))
    }

    fn hash(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn pos(self) -> usize {
        (self.0 as u32) as usize - 1
    }
}

/// One shard: at most `cap` records, delivered (ring) plus in flight.
struct Shard {
    cap: usize,
    /// Delivered records in commit order, a ring of `cap` positions; `ring.len()` grows until
    /// the first wrap, and positions never move.
    ring: Vec<Rec>,
    /// Position of the oldest record.
    head: usize,
    /// Records in the ring.
    len: usize,
    /// An [`Entry`] for every indexed record.
    index: Vec<u64>,
    /// Non-empty index slots. A record superseded by a newer commit of its key (possible only
    /// once it expired) stays in the ring, unindexed, until it is popped.
    indexed: usize,
    inflight: InFlightMap,
    last_token: u64,
    /// Expiry of the newest record: expiries never decrease along the ring, even if the wall
    /// clock steps back.
    last_expires: u32,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            ring: Vec::new(),
            head: 0,
            len: 0,
            index: Vec::new(),
            indexed: 0,
            inflight: InFlightMap::default(),
            last_token: 0,
            last_expires: 0,
        }
    }

    fn total(&self) -> usize {
        self.len + self.inflight.len()
    }

    /// The claim itself; also says whether a live record was evicted to make room.
    fn claim(&mut self, key: DeliveryKey, now: Now, lease_ms: u64) -> (ClaimOutcome, bool) {
        self.reclaim(now.secs, RECLAIM_PER_CLAIM);
        let k = key.as_u128();
        if let Some(f) = self.inflight.get(&k) {
            if f.deadline_ms > now.ms {
                return (ClaimOutcome::InFlight, false);
            }
            // Its lease ran out: the request died without a word; the ID is free again.
            self.inflight.remove(&k);
        }
        let words = words(key);
        if let Some(slot) = self.find(&words) {
            if self.ring[Entry(self.index[slot]).pos()].expires > now.secs {
                return (ClaimOutcome::Committed, false);
            }
        }
        let evicted = self.total() >= self.cap && self.make_room(now);
        self.last_token += 1;
        let token = NonZeroU64::new(self.last_token).expect("tokens count up from 1");
        self.inflight.insert(
            k,
            InFlight {
                token,
                deadline_ms: now.ms.saturating_add(lease_ms),
            },
        );
        (ClaimOutcome::Claimed(ClaimToken::new(token)), evicted)
    }

    fn commit(&mut self, key: DeliveryKey, token: ClaimToken, expires: u32) -> bool {
        let k = key.as_u128();
        match self.inflight.get(&k) {
            Some(f) if f.token == token.get() => self.inflight.remove(&k),
            _ => return false,
        };
        // The claim held a place, so the ring has room for the record.
        self.last_expires = self.last_expires.max(expires);
        let words = words(key);
        let pos = self.push(Rec {
            key: words,
            expires: self.last_expires,
        });
        self.index_insert(&words, pos);
        true
    }

    fn release(&mut self, key: DeliveryKey, token: ClaimToken) -> bool {
        let k = key.as_u128();
        match self.inflight.get(&k) {
            Some(f) if f.token == token.get() => self.inflight.remove(&k).is_some(),
            _ => false,
        }
    }

    /// Appends the live, indexed records to `out`, oldest first (a record superseded by a
    /// newer commit of its key is not indexed, and is left out).
    fn live_records(&self, now_secs: u32, out: &mut Vec<(DeliveryKey, u32)>) {
        for i in 0..self.len {
            let pos = (self.head + i) % self.cap;
            let rec = self.ring[pos];
            if rec.expires <= now_secs {
                continue;
            }
            let indexed = self
                .find(&rec.key)
                .is_some_and(|slot| Entry(self.index[slot]).pos() == pos);
            if indexed {
                let [a, b, c, d] = rec.key.map(u128::from);
                out.push((
                    DeliveryKey::from_u128(a | b << 32 | c << 64 | d << 96),
                    rec.expires,
                ));
            }
        }
    }

    /// Records `key` as delivered until `expires` unless it is held already (delivered and
    /// live, or in flight). Returns whether it was added and whether a live record was evicted
    /// to make room.
    fn insert_delivered(&mut self, key: DeliveryKey, expires: u32, now: Now) -> (bool, bool) {
        let words = words(key);
        let live = self
            .find(&words)
            .is_some_and(|slot| self.ring[Entry(self.index[slot]).pos()].expires > now.secs);
        if live || self.inflight.contains_key(&key.as_u128()) {
            return (false, false);
        }
        let evicted = self.total() >= self.cap && self.make_room(now);
        self.last_expires = self.last_expires.max(expires);
        let pos = self.push(Rec {
            key: words,
            expires: self.last_expires,
        });
        self.index_insert(&words, pos);
        (true, evicted)
    }

    /// Pops up to `max` expired records off the front; returns how many.
    fn reclaim(&mut self, now_secs: u32, max: usize) -> usize {
        let mut popped = 0;
        while popped < max && self.len > 0 && self.ring[self.head].expires <= now_secs {
            self.pop();
            popped += 1;
        }
        popped
    }

    /// Frees one place in a full shard; returns whether a live record had to go.
    fn make_room(&mut self, now: Now) -> bool {
        if self.len > 0 {
            // The front is the delivered record closest to expiry.
            let live = self.ring[self.head].expires > now.secs;
            self.pop();
            return live;
        }
        // Only claims in flight: the one whose lease ends first goes.
        let Some((&victim, f)) = self.inflight.iter().min_by_key(|(_, f)| f.deadline_ms) else {
            return false;
        };
        let live = f.deadline_ms > now.ms;
        self.inflight.remove(&victim);
        live
    }

    /// Appends a record at the back of the ring; returns its position.
    fn push(&mut self, rec: Rec) -> usize {
        debug_assert!(self.len < self.cap);
        let mut tail = self.head + self.len;
        if tail >= self.cap {
            tail -= self.cap;
        }
        if tail == self.ring.len() {
            // Not wrapped yet: grow, by doubling, up to exactly `cap`.
            if self.ring.len() == self.ring.capacity() {
                let more = self.ring.len().max(MIN_ALLOCATION);
                self.ring
                    .reserve_exact(more.min(self.cap - self.ring.len()));
            }
            self.ring.push(rec);
        } else {
            self.ring[tail] = rec;
        }
        self.len += 1;
        tail
    }

    /// Removes the front record.
    fn pop(&mut self) {
        let pos = self.head;
        let key = self.ring[pos].key;
        self.index_remove(&key, pos);
        self.head = if pos + 1 == self.cap { 0 } else { pos + 1 };
        self.len -= 1;
    }

    /// The index slot of `key`'s record.
    fn find(&self, key: &[u32; 4]) -> Option<usize> {
        let n = self.index.len();
        if n == 0 {
            return None;
        }
        let mut slot = home(key[0], n);
        loop {
            match Entry(self.index[slot]) {
                Entry::EMPTY => return None,
                // Only a matching first word costs a visit to the ring.
                e if e.hash() == key[0] && self.ring[e.pos()].key == *key => return Some(slot),
                _ => slot = if slot + 1 == n { 0 } else { slot + 1 },
            }
        }
    }

    /// Points `key` at ring position `pos`, replacing an older (expired) record of the key.
    fn index_insert(&mut self, key: &[u32; 4], pos: usize) {
        if (self.indexed + 1) * MAX_LOAD.1 > self.index.len() * MAX_LOAD.0 {
            self.grow_index();
        }
        let entry = Entry::new(key[0], pos);
        let n = self.index.len();
        let mut slot = home(key[0], n);
        loop {
            match Entry(self.index[slot]) {
                Entry::EMPTY => break,
                e if e.hash() == key[0] && self.ring[e.pos()].key == *key => {
                    self.index[slot] = entry.0;
                    return;
                }
                _ => slot = if slot + 1 == n { 0 } else { slot + 1 },
            }
        }
        self.index[slot] = entry.0;
        self.indexed += 1;
    }

    /// Grows the index by doubling, up to `cap / MAX_LOAD` slots, and re-places every entry
    /// (from the index alone: entries carry their hash). Amortised O(1) per insert, like any
    /// growing hash table.
    fn grow_index(&mut self) {
        let most = (self.cap * MAX_LOAD.1).div_ceil(MAX_LOAD.0);
        let len = (self.index.len() * 2).max(MIN_ALLOCATION).min(most);
        let old = std::mem::replace(&mut self.index, vec![Entry::EMPTY.0; len]);
        for entry in old.into_iter().map(Entry).filter(|&e| e != Entry::EMPTY) {
            let mut slot = home(entry.hash(), len);
            while self.index[slot] != Entry::EMPTY.0 {
                slot = if slot + 1 == len { 0 } else { slot + 1 };
            }
            self.index[slot] = entry.0;
        }
    }

    /// Removes the index entry of the record at `pos` (if it is indexed: a superseded record
    /// is not), closing the gap by backward shift so probe chains stay unbroken.
    fn index_remove(&mut self, key: &[u32; 4], pos: usize) {
        let n = self.index.len();
        if n == 0 {
            return;
        }
        let target = Entry::new(key[0], pos);
        let mut hole = home(key[0], n);
        loop {
            match Entry(self.index[hole]) {
                Entry::EMPTY => return,
                e if e == target => break,
                _ => hole = if hole + 1 == n { 0 } else { hole + 1 },
            }
        }
        let mut next = hole;
        loop {
            next = if next + 1 == n { 0 } else { next + 1 };
            let entry = Entry(self.index[next]);
            if entry == Entry::EMPTY {
                break;
            }
            // An entry may move back into the hole unless its home lies after the hole.
            if !cyclic_between(hole, home(entry.hash(), n), next) {
                self.index[hole] = entry.0;
                hole = next;
            }
        }
        self.index[hole] = Entry::EMPTY.0;
        self.indexed -= 1;
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    fn check(&self) {
        assert!(self.total() <= self.cap, "over capacity");
        assert!(self.len <= self.ring.len() && self.ring.len() <= self.cap);
        assert!(self.indexed * MAX_LOAD.1 <= self.index.len() * MAX_LOAD.0);
        let live = |pos: usize| (pos + self.cap - self.head) % self.cap < self.len;
        let mut expires = 0;
        for i in 0..self.len {
            let rec = self.ring[(self.head + i) % self.cap];
            assert!(rec.expires >= expires, "expiry order");
            expires = rec.expires;
        }
        let n = self.index.len();
        let mut seen = 0;
        for (slot, entry) in self.index.iter().map(|&e| Entry(e)).enumerate() {
            if entry == Entry::EMPTY {
                continue;
            }
            seen += 1;
            assert!(live(entry.pos()), "index points outside the ring");
            let key = self.ring[entry.pos()].key;
            assert_eq!(entry.hash(), key[0]);
            assert_eq!(self.find(&key), Some(slot), "probe chain broken");
            // No empty slot between the entry's home and its slot.
            let mut s = home(key[0], n);
            while s != slot {
                assert_ne!(Entry(self.index[s]), Entry::EMPTY, "gap in probe chain");
                s = (s + 1) % n;
            }
        }
        assert_eq!(seen, self.indexed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::dedup::{Claim, KeyHasher};

    const T0: Duration = Duration::from_secs(1_700_000_000);
    const TTL: Duration = Duration::from_secs(3600);
    const LEASE: Duration = Duration::from_secs(30);

    fn store(capacity: usize, shards: usize) -> (Arc<MemoryStore>, Arc<ManualClock>) {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::with_shards(
            NonZeroUsize::new(capacity).unwrap(),
            TTL,
            clock.clone(),
            NonZeroUsize::new(shards).unwrap(),
        );
        (Arc::new(store), clock)
    }

    fn key(n: u64) -> DeliveryKey {
        KeyHasher::from_secret(&[42; 32]).key("route", &n.to_le_bytes())
    }

    fn claimed(outcome: ClaimOutcome) -> ClaimToken {
        match outcome {
            ClaimOutcome::Claimed(token) => token,
            other => panic!("expected Claimed, got {other:?}"),
        }
    }

    fn check(store: &MemoryStore) {
        for shard in store.shards.iter() {
            lock(shard).check();
        }
    }

    /// What a claim would answer, without claiming.
    fn peek(store: &MemoryStore, key: DeliveryKey) -> ClaimOutcome<()> {
        let now = Now::read(&*store.clock);
        let shard = store.lock(key);
        if let Some(f) = shard.inflight.get(&key.as_u128()) {
            if f.deadline_ms > now.ms {
                return ClaimOutcome::InFlight;
            }
        }
        match shard.find(&words(key)) {
            Some(slot) if shard.ring[Entry(shard.index[slot]).pos()].expires > now.secs => {
                ClaimOutcome::Committed
            }
            _ => ClaimOutcome::Claimed(()),
        }
    }

    #[test]
    fn sequential_duplicates() {
        let (s, _) = store(100, 1);
        let k = key(1);
        let token = claimed(s.claim_now(k, LEASE));
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::InFlight);
        assert!(s.commit_now(k, token));
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::Committed);
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::Committed);
        assert!(!s.commit_now(k, token), "a claim commits once");
        assert_eq!(s.len(), 1);
        check(&s);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_of_one_id_admit_exactly_one() {
        let (s, _) = store(1_000_000, 16);
        let s: Arc<dyn DeliveryStore> = s;
        let start = Arc::new(tokio::sync::Barrier::new(100));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (s, start) = (s.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    s.claim(key(7), LEASE).await.unwrap()
                })
            })
            .collect();
        let (mut won, mut in_flight) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                ClaimOutcome::Claimed(_) => won += 1,
                ClaimOutcome::InFlight => in_flight += 1,
                ClaimOutcome::Committed => panic!("nothing was committed"),
            }
        }
        assert_eq!((won, in_flight), (1, 99));
    }

    #[test]
    fn concurrent_claims_from_threads_admit_exactly_one_per_id() {
        let (s, _) = store(10_000, 16);
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..1000)
                            .filter(|&i| s.claim_now(key(i), LEASE).claimed().is_some())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1000);
        check(&s);
    }

    #[test]
    fn release_frees_the_id() {
        let (s, _) = store(100, 1);
        let k = key(1);
        let token = claimed(s.claim_now(k, LEASE));
        assert!(s.release_now(k, token));
        assert!(!s.release_now(k, token), "released once");
        assert!(s.is_empty());
        let again = claimed(s.claim_now(k, LEASE));
        assert_ne!(again, token, "each claim has its own token");
        assert!(!s.release_now(k, token), "the old token is stale");
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::InFlight);
    }

    #[test]
    fn lease_expiry_frees_a_dead_claim() {
        let (s, clock) = store(100, 1);
        let k = key(1);
        let first = claimed(s.claim_now(k, LEASE));
        clock.advance(LEASE - Duration::from_millis(1));
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::InFlight);
        clock.advance(Duration::from_millis(1));
        let second = claimed(s.claim_now(k, LEASE));
        // The first request, back from the dead, can neither commit nor release the retry's claim.
        assert!(!s.commit_now(k, first));
        assert!(!s.release_now(k, first));
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::InFlight);
        assert!(s.commit_now(k, second));
        assert!(!s.release_now(k, second), "release never deletes a commit");
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::Committed);
        assert_eq!(s.len(), 1);
        check(&s);
    }

    #[test]
    fn a_claim_still_held_after_its_lease_can_commit() {
        let (s, clock) = store(100, 1);
        let k = key(1);
        let token = claimed(s.claim_now(k, LEASE));
        clock.advance(LEASE * 2);
        // Nobody claimed it meanwhile, so it is still the owner's.
        assert!(s.commit_now(k, token));
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::Committed);
    }

    #[test]
    fn ttl_expiry_of_a_delivered_id() {
        let (s, clock) = store(100, 1);
        let k = key(1);
        clock.advance(Duration::from_millis(400)); // TTL rounds up to whole seconds
        let token = claimed(s.claim_now(k, LEASE));
        assert!(s.commit_now(k, token));
        clock.advance(TTL - Duration::from_millis(400));
        assert_eq!(
            s.claim_now(k, LEASE),
            ClaimOutcome::Committed,
            "TTL never ends early"
        );
        clock.advance(Duration::from_millis(999));
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::Committed);
        clock.advance(Duration::from_millis(1));
        let again = claimed(s.claim_now(k, LEASE));
        assert!(s.commit_now(k, again), "an expired ID is delivered anew");
        assert_eq!(s.claim_now(k, LEASE), ClaimOutcome::Committed);
        check(&s);
    }

    #[test]
    fn routes_are_independent() {
        let (s, _) = store(100, 4);
        let h = KeyHasher::from_secret(&[1; 32]);
        let (a, b) = (h.key("stripe", b"evt_1"), h.key("github", b"evt_1"));
        let token = claimed(s.claim_now(a, LEASE));
        assert!(s.commit_now(a, token));
        assert_eq!(s.claim_now(a, LEASE), ClaimOutcome::Committed);
        assert!(
            s.claim_now(b, LEASE).claimed().is_some(),
            "same ID, other route"
        );
    }

    #[test]
    fn eviction_takes_the_record_closest_to_expiry() {
        let (s, clock) = store(3, 1);
        for n in 1..=3 {
            assert!(s.commit_now(key(n), claimed(s.claim_now(key(n), LEASE))));
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(s.evictions(), 0);
        let token = claimed(s.claim_now(key(4), LEASE));
        assert_eq!(s.evictions(), 1);
        assert_eq!(
            peek(&s, key(1)),
            ClaimOutcome::Claimed(()),
            "oldest evicted"
        );
        assert_eq!(peek(&s, key(2)), ClaimOutcome::Committed);
        assert_eq!(peek(&s, key(3)), ClaimOutcome::Committed);
        assert!(s.commit_now(key(4), token));
        assert!(s.claim_now(key(5), LEASE).claimed().is_some());
        assert_eq!(
            peek(&s, key(2)),
            ClaimOutcome::Claimed(()),
            "next oldest evicted"
        );
        assert_eq!(peek(&s, key(3)), ClaimOutcome::Committed);
        assert_eq!(peek(&s, key(4)), ClaimOutcome::Committed);
        assert_eq!((s.len(), s.evictions()), (3, 2));
        check(&s);
    }

    #[test]
    fn in_flight_claims_are_evicted_last() {
        let (s, clock) = store(3, 1);
        let _x = claimed(s.claim_now(key(1), Duration::from_secs(60)));
        assert!(s.commit_now(key(2), claimed(s.claim_now(key(2), LEASE))));
        let _z = claimed(s.claim_now(key(3), Duration::from_secs(10)));
        // Full: the one delivered record goes, not a claim in flight.
        let _w = claimed(s.claim_now(key(4), Duration::from_secs(20)));
        assert_eq!(peek(&s, key(2)), ClaimOutcome::Claimed(()));
        assert_eq!(peek(&s, key(1)), ClaimOutcome::InFlight);
        // Only claims left: the one whose lease ends first (key 3) goes.
        clock.advance(Duration::from_secs(1));
        let _v = claimed(s.claim_now(key(5), LEASE));
        assert_eq!(peek(&s, key(3)), ClaimOutcome::Claimed(()));
        assert_eq!(peek(&s, key(1)), ClaimOutcome::InFlight);
        assert_eq!(peek(&s, key(4)), ClaimOutcome::InFlight);
        assert_eq!(s.evictions(), 2);
        // A dead claim is not a live record: replacing it is no eviction.
        clock.advance(Duration::from_secs(60));
        let _u = claimed(s.claim_now(key(6), LEASE));
        assert_eq!(s.evictions(), 2);
        check(&s);
    }

    #[test]
    fn eviction_across_shards_is_approximately_oldest_first() {
        // 16 shards of 256: each evicts its own oldest. Keys spread uniformly, so after 8192
        // deliveries the newest 3000 all survive and the oldest 3000 are all gone.
        let (s, clock) = store(4096, 16);
        for n in 0..8192 {
            assert!(s.commit_now(key(n), claimed(s.claim_now(key(n), LEASE))));
            clock.advance(Duration::from_millis(100));
        }
        check(&s);
        assert!(s.len() <= 4096 && s.len() > 4096 - 100, "len {}", s.len());
        assert_eq!(s.evictions(), 8192 - s.len() as u64);
        for n in 0..3000 {
            assert_eq!(
                peek(&s, key(n)),
                ClaimOutcome::Claimed(()),
                "key {n} survived"
            );
        }
        for n in 8192 - 3000..8192 {
            assert_eq!(
                peek(&s, key(n)),
                ClaimOutcome::Committed,
                "key {n} was evicted"
            );
        }
    }

    #[test]
    fn expired_records_are_reclaimed_incrementally() {
        let (s, clock) = store(1000, 1);
        for n in 0..1000 {
            assert!(s.commit_now(key(n), claimed(s.claim_now(key(n), LEASE))));
        }
        clock.advance(TTL);
        // A claim does a bounded amount of reclamation, not a full pass.
        let _ = claimed(s.claim_now(key(5000), LEASE));
        assert_eq!(s.len(), 1000 - RECLAIM_PER_CLAIM + 1);
        let _ = claimed(s.claim_now(key(5001), LEASE));
        assert_eq!(s.len(), 1000 - 2 * RECLAIM_PER_CLAIM + 2);
        // A background sweep: bounded per call too.
        assert_eq!(s.sweep(100), 100);
        assert_eq!(s.len(), 1000 - 2 * RECLAIM_PER_CLAIM + 2 - 100);
        assert_eq!(s.sweep(usize::MAX), 1000 - 2 * RECLAIM_PER_CLAIM - 100);
        assert_eq!(s.len(), 2, "the two claims in flight");
        // Their leases run out: the sweep drops them as well.
        clock.advance(LEASE);
        assert_eq!(s.sweep(0), 2);
        assert!(s.is_empty());
        assert_eq!(s.evictions(), 0, "expiry is not eviction");
        check(&s);
        // Expired but unreclaimed records never answer Committed.
        assert!(s.commit_now(key(1), claimed(s.claim_now(key(1), LEASE))));
        clock.advance(TTL);
        assert!(s.claim_now(key(1), LEASE).claimed().is_some());
    }

    #[test]
    fn a_redelivered_id_supersedes_its_expired_record() {
        let (s, clock) = store(20, 1);
        for n in 0..10 {
            assert!(s.commit_now(key(n), claimed(s.claim_now(key(n), LEASE))));
        }
        clock.advance(TTL);
        // This claim reclaims only the first few records: key 9's old one is still in the ring.
        let token = claimed(s.claim_now(key(9), LEASE));
        assert!(s.commit_now(key(9), token));
        check(&s);
        assert_eq!(s.len(), 10 - RECLAIM_PER_CLAIM + 1);
        // Popping the superseded record must not unindex the new one.
        assert_eq!(s.sweep(usize::MAX), 10 - RECLAIM_PER_CLAIM);
        check(&s);
        assert_eq!(s.len(), 1);
        assert_eq!(peek(&s, key(9)), ClaimOutcome::Committed);
    }

    #[test]
    fn the_shard_count_follows_capacity() {
        let clock = ManualClock::new(T0);
        let n = |cap: usize| {
            MemoryStore::new(NonZeroUsize::new(cap).unwrap(), TTL, clock.clone())
                .shards
                .len()
        };
        assert_eq!((n(1), n(4095), n(8192), n(1_000_000)), (1, 1, 2, 16));
        let s = MemoryStore::with_shards(
            NonZeroUsize::new(10).unwrap(),
            TTL,
            clock.clone(),
            NonZeroUsize::new(4).unwrap(),
        );
        let caps: Vec<_> = s.shards.iter().map(|sh| lock(sh).cap).collect();
        assert_eq!(caps, [3, 3, 2, 2]);
        let s = MemoryStore::for_policy(
            &DedupPolicy::new(crate::dedup::IdSource::BodyHash),
            clock.clone(),
        );
        assert_eq!(
            (s.capacity(), s.ttl()),
            (1_000_000, Duration::from_secs(86_400))
        );
    }

    /// Random operations against a simple model, checking every invariant as it goes: ring
    /// wrap-around, index growth, backward-shift deletion and superseded records.
    #[test]
    fn matches_a_model_under_random_operations() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        #[derive(Clone, Copy, Debug)]
        enum State {
            InFlight(ClaimToken, u64),
            Committed(u32),
        }

        let clock = ManualClock::new(T0);
        let ttl = Duration::from_secs(10);
        // Room for every key at once, so no live record is ever evicted and the model needs
        // no eviction logic; the ring still wraps many times.
        let s = MemoryStore::with_shards(
            NonZeroUsize::new(64).unwrap(),
            ttl,
            clock.clone(),
            NonZeroUsize::MIN,
        );
        let mut model: HashMap<u64, State> = HashMap::new();
        let mut tokens: Vec<(u64, ClaimToken)> = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        for step in 0..200_000 {
            let now = Now::read(&*clock);
            match rng.random_range(0..10) {
                0..=4 => {
                    let n = rng.random_range(0..40);
                    let lease = Duration::from_millis(rng.random_range(1000..6000));
                    let expected = match model.get(&n) {
                        Some(State::InFlight(_, deadline)) if *deadline > now.ms => {
                            ClaimOutcome::InFlight
                        }
                        Some(State::Committed(expires)) if *expires > now.secs => {
                            ClaimOutcome::Committed
                        }
                        _ => ClaimOutcome::Claimed(()),
                    };
                    let got = s.claim_now(key(n), lease);
                    if let ClaimOutcome::Claimed(token) = got {
                        assert_eq!(expected, ClaimOutcome::Claimed(()), "step {step}");
                        model.insert(n, State::InFlight(token, now.ms + lease.as_millis() as u64));
                        tokens.push((n, token));
                    } else {
                        let got = match got {
                            ClaimOutcome::InFlight => ClaimOutcome::InFlight,
                            _ => ClaimOutcome::Committed,
                        };
                        assert_eq!(got, expected, "step {step}");
                    }
                }
                5..=8 if !tokens.is_empty() => {
                    // Mostly recent tokens, sometimes stale ones.
                    let i = tokens.len() - 1 - rng.random_range(0..tokens.len().min(8));
                    let (n, token) = tokens.swap_remove(i);
                    let owner = matches!(model.get(&n), Some(State::InFlight(t, _)) if *t == token);
                    if rng.random_bool(0.6) {
                        assert_eq!(s.commit_now(key(n), token), owner, "step {step}");
                        if owner {
                            model.insert(n, State::Committed(now.secs_ceil(ttl)));
                        }
                    } else {
                        assert_eq!(s.release_now(key(n), token), owner, "step {step}");
                        if owner {
                            model.remove(&n);
                        }
                    }
                }
                _ => clock.advance(Duration::from_millis(rng.random_range(0..1500))),
            }
            if step % 97 == 0 {
                check(&s);
            }
            if step % 5000 == 0 {
                // The sweep drops dead claims: so does the model.
                s.sweep(8);
                let now = Now::read(&*clock);
                model.retain(|_, st| !matches!(st, State::InFlight(_, d) if *d <= now.ms));
            }
        }
        assert_eq!(s.evictions(), 0);
        check(&s);
    }

    #[test]
    fn a_dropped_guard_releases_at_once() {
        let (s, _) = store(100, 1);
        let dyn_store: Arc<dyn DeliveryStore> = s.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let claim = Claim::acquire(&dyn_store, key(1), LEASE).await.unwrap();
            let claim = claim.claimed().expect("free");
            assert_eq!(claim.key(), key(1));
            assert!(matches!(
                Claim::acquire(&dyn_store, key(1), LEASE).await.unwrap(),
                ClaimOutcome::InFlight
            ));
            drop(claim);
        });
        // Released synchronously by the memory store: no runtime needed any more.
        assert!(s.is_empty());
        assert!(s.claim_now(key(1), LEASE).claimed().is_some());
    }

    #[tokio::test]
    async fn guard_commit_and_release() {
        let (s, _) = store(100, 1);
        let dyn_store: Arc<dyn DeliveryStore> = s.clone();
        let claim = Claim::acquire(&dyn_store, key(1), LEASE)
            .await
            .unwrap()
            .claimed()
            .unwrap();
        assert!(claim.commit().await.unwrap());
        assert!(matches!(
            Claim::acquire(&dyn_store, key(1), LEASE).await.unwrap(),
            ClaimOutcome::Committed
        ));
        let claim = Claim::acquire(&dyn_store, key(2), LEASE)
            .await
            .unwrap()
            .claimed()
            .unwrap();
        assert!(claim.release().await.unwrap());
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_request_releases_its_claim() {
        let (s, _) = store(100, 1);
        let dyn_store: Arc<dyn DeliveryStore> = s.clone();
        let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel();
        let request = tokio::spawn(async move {
            let claim = Claim::acquire(&dyn_store, key(1), LEASE).await.unwrap();
            claimed_tx.send(()).unwrap();
            // Forwarding to an upstream that never answers.
            std::future::pending::<()>().await;
            drop(claim);
        });
        claimed_rx.await.unwrap();
        assert_eq!(peek(&s, key(1)), ClaimOutcome::InFlight);
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert!(s.is_empty());
        assert!(s.claim_now(key(1), LEASE).claimed().is_some());
    }

    #[tokio::test]
    async fn a_timed_out_request_releases_its_claim() {
        let (s, _) = store(100, 1);
        let dyn_store: Arc<dyn DeliveryStore> = s.clone();
        let request = async {
            let _claim = Claim::acquire(&dyn_store, key(1), LEASE).await.unwrap();
            std::future::pending::<()>().await;
        };
        // The deadline fires after the request's first poll, which made the claim.
        tokio::select! {
            biased;
            _ = request => unreachable!(),
            _ = std::future::ready(()) => {}
        }
        assert!(s.is_empty());
        assert!(s.claim_now(key(1), LEASE).claimed().is_some());
    }

    #[tokio::test]
    async fn a_panicking_request_releases_its_claim() {
        let (s, _) = store(100, 1);
        let dyn_store: Arc<dyn DeliveryStore> = s.clone();
        let request = tokio::spawn(async move {
            let _claim = Claim::acquire(&dyn_store, key(1), LEASE).await.unwrap();
            panic!("bug while forwarding");
        });
        assert!(request.await.unwrap_err().is_panic());
        assert!(s.is_empty());
        // And on a plain thread, without any runtime.
        let dyn_store: Arc<dyn DeliveryStore> = s.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let claim = rt
                .block_on(Claim::acquire(&dyn_store, key(2), LEASE))
                .unwrap();
            drop(rt);
            let _claim = claim;
            panic!("bug outside the runtime");
        });
        assert!(thread.join().is_err());
        assert!(s.is_empty());
    }

    /// A store that answers only after yielding once, like a networked one, and so takes the
    /// trait's default `settle_detached`.
    struct Remote(MemoryStore);

    #[async_trait]
    impl DeliveryStore for Remote {
        async fn claim(
            &self,
            key: DeliveryKey,
            lease: Duration,
        ) -> Result<ClaimOutcome, StoreError> {
            tokio::task::yield_now().await;
            Ok(self.0.claim_now(key, lease))
        }

        async fn commit(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
            tokio::task::yield_now().await;
            Ok(self.0.commit_now(key, token))
        }

        async fn release(&self, key: DeliveryKey, token: ClaimToken) -> Result<bool, StoreError> {
            tokio::task::yield_now().await;
            Ok(self.0.release_now(key, token))
        }

        fn len(&self) -> usize {
            self.0.len()
        }

        fn evictions(&self) -> u64 {
            self.0.evictions()
        }
    }

    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never became true");
    }

    #[tokio::test]
    async fn an_async_store_settles_dropped_guards_on_the_runtime() {
        let clock = ManualClock::new(T0);
        let remote = Arc::new(Remote(MemoryStore::new(
            NonZeroUsize::new(100).unwrap(),
            TTL,
            clock,
        )));
        let store: Arc<dyn DeliveryStore> = remote.clone();

        // Dropped: released by a spawned task.
        let claim = Claim::acquire(&store, key(1), LEASE)
            .await
            .unwrap()
            .claimed()
            .unwrap();
        drop(claim);
        until(|| remote.is_empty()).await;

        // Cancelled in the middle of its commit (the sender hung up after the upstream said
        // 2xx): the commit is finished anyway.
        let claim = Claim::acquire(&store, key(2), LEASE)
            .await
            .unwrap()
            .claimed()
            .unwrap();
        tokio::select! {
            biased;
            _ = claim.commit() => unreachable!("the commit yields first"),
            _ = std::future::ready(()) => {}
        }
        until(|| peek(&remote.0, key(2)) == ClaimOutcome::Committed).await;
        assert!(matches!(
            Claim::acquire(&store, key(2), LEASE).await.unwrap(),
            ClaimOutcome::Committed
        ));
    }

    fn commit(store: &MemoryStore, n: u64) {
        let token = claimed(store.claim_now(key(n), LEASE));
        assert!(store.commit_now(key(n), token));
    }

    #[test]
    fn delivered_records_move_to_another_store_with_their_expiry() {
        let (old, clock) = store(100, 4);
        for n in 0..10 {
            commit(&old, n);
            clock.advance(Duration::from_secs(60));
        }
        // One in flight: not exported. One expired: not exported.
        let _inflight = claimed(old.claim_now(key(100), LEASE));
        clock.advance(TTL - Duration::from_secs(60 * 9) - Duration::from_secs(1));
        let records = old.delivered();
        // key(0) committed at T0 expires at T0 + TTL; now is T0 + TTL + 59 s: gone. key(1)
        // expires at T0 + TTL + 60 s: still there.
        assert_eq!(records.len(), 9, "{records:?}");
        assert!(records.windows(2).all(|w| w[0].1 <= w[1].1), "oldest first");
        assert_eq!(records[0], (key(1), (T0 + TTL).as_secs() as u32 + 60));

        // A store of another capacity and TTL takes them over, expiries unchanged.
        let new = MemoryStore::with_shards(
            NonZeroUsize::new(5).unwrap(),
            Duration::from_secs(10),
            clock.clone(),
            NonZeroUsize::new(1).unwrap(),
        );
        assert_eq!(new.import(&records), 9);
        check(&new);
        // Full at 5: the 4 oldest made room, and were counted as evictions.
        assert_eq!(new.len(), 5);
        assert_eq!(new.evictions(), 4);
        assert_eq!(new.delivered(), records[4..].to_vec());
        // Importing again adds nothing.
        assert_eq!(new.import(&records[4..]), 0);
        assert!(matches!(
            new.claim_now(key(9), LEASE),
            ClaimOutcome::Committed
        ));
        assert!(matches!(
            new.claim_now(key(4), LEASE),
            ClaimOutcome::Claimed(_)
        ));
        // Records keep their own expiry, not the new store's TTL.
        // key(9) was committed at T0 + 540 s: it expires at T0 + TTL + 540 s, 481 s from now.
        clock.advance(Duration::from_secs(480));
        assert!(matches!(
            new.claim_now(key(9), LEASE),
            ClaimOutcome::Committed
        ));
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            new.claim_now(key(9), LEASE),
            ClaimOutcome::Claimed(_)
        ));
        check(&new);
    }

    #[test]
    fn import_skips_expired_records_and_ids_in_flight() {
        let (store, _clock) = store(10, 1);
        let token = claimed(store.claim_now(key(1), LEASE));
        let now = T0.as_secs() as u32;
        let added = store.import(&[(key(0), now), (key(1), now + 100), (key(2), now + 100)]);
        assert_eq!(added, 1, "key(0) expired, key(1) in flight");
        assert!(store.commit_now(key(1), token));
        assert_eq!(store.delivered().len(), 2);
        check(&store);
    }
}

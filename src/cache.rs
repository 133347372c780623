//! A map that outside input fills, with bounds: entries and bytes in all and per owner (the
//! registry host whose answers filled it), expired entries swept on every insert, and
//! eviction that takes from the owner holding the most (its least recently used entry
//! first), so one registry — or one tenant's many host names — can neither grow the map
//! past its bounds nor flush a quieter registry's entries while it holds more itself.
//!
//! Used for bearer tokens and remembered challenges (`probe::auth`) and credential-provider
//! answers (`credentials::provider`). Below every module that caches: depends on nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use serde::Serialize;

/// Bookkeeping counted for every entry besides what the caller measures (the slot, the
/// owner's name, the map's own share): keeps a flood of tiny entries bounded in bytes too.
const SLOT_OVERHEAD: usize = 96;

/// The bounds of one cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// At most this many entries per owner.
    pub owner_entries: usize,
    /// At most this many bytes per owner; a single larger entry is refused.
    pub owner_bytes: usize,
}

/// What a cache holds and has dropped, for `/status` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub entries: usize,
    /// Bytes held by the entries, as measured at insert plus a fixed overhead per entry.
    pub bytes: usize,
    /// Distinct owners (registry hosts) with entries.
    pub owners: usize,
    /// Entries dropped to stay within the bounds (an owner's share, or the whole).
    pub evicted: u64,
    /// Expired entries removed.
    pub expired: u64,
    /// Entries never stored because one alone is over an owner's share.
    pub refused: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
}

struct Slot<V> {
    value: V,
    owner: String,
    bytes: usize,
    expires: Instant,
    /// Logical clock of the last insert or hit (least recently used = smallest).
    used: u64,
}

#[derive(Clone, Copy, Default)]
struct Usage {
    entries: usize,
    bytes: usize,
}

/// A bounded map from `K` to `V`; see the module documentation.
pub struct BoundedCache<K, V> {
    limits: Limits,
    map: HashMap<K, Slot<V>>,
    owners: HashMap<String, Usage>,
    bytes: usize,
    clock: u64,
    evicted: u64,
    expired: u64,
    refused: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedCache<K, V> {
    pub fn new(limits: Limits) -> Self {
        BoundedCache {
            limits,
            map: HashMap::new(),
            owners: HashMap::new(),
            bytes: 0,
            clock: 0,
            evicted: 0,
            expired: 0,
            refused: 0,
        }
    }

    /// The value for `key` unless it has expired (an expired one is removed).
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        let expired = self.map.get(key)?.expires <= now;
        if expired {
            self.remove(key);
            self.expired += 1;
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        let slot = self.map.get_mut(key)?;
        slot.used = clock;
        Some(&slot.value)
    }

    /// Store `value` for `owner` until `expires`; `bytes` is what the caller measured of
    /// key and value. Returns false (nothing stored, an older value for `key` dropped)
    /// when the entry alone is over an owner's share.
    pub fn insert(
        &mut self,
        key: K,
        value: V,
        owner: &str,
        bytes: usize,
        expires: Instant,
        now: Instant,
    ) -> bool {
        let bytes = bytes
            .saturating_add(owner.len())
            .saturating_add(SLOT_OVERHEAD);
        self.sweep(now);
        self.remove(&key);
        if bytes > self.limits.owner_bytes || bytes > self.limits.max_bytes {
            self.refused += 1;
            return false;
        }
        self.clock += 1;
        let usage = self.owners.entry(owner.to_string()).or_default();
        usage.entries += 1;
        usage.bytes += bytes;
        self.bytes += bytes;
        self.map.insert(
            key,
            Slot {
                value,
                owner: owner.to_string(),
                bytes,
                expires,
                used: self.clock,
            },
        );
        while self.over_owner_share(owner) {
            if !self.evict_lru_of(owner) {
                break;
            }
        }
        while self.map.len() > self.limits.max_entries || self.bytes > self.limits.max_bytes {
            let Some(victim) = self.largest_owner(owner) else {
                break;
            };
            if !self.evict_lru_of(&victim) {
                break;
            }
        }
        true
    }

    /// Remove every expired entry; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let dead: Vec<K> = self
            .map
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.remove(k);
        }
        self.expired += dead.len() as u64;
        dead.len()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.map.len(),
            bytes: self.bytes,
            owners: self.owners.len(),
            evicted: self.evicted,
            expired: self.expired,
            refused: self.refused,
            max_entries: self.limits.max_entries,
            max_bytes: self.limits.max_bytes,
        }
    }

    /// When `key`'s entry expires, if there is one.
    pub fn expires(&self, key: &K) -> Option<Instant> {
        self.map.get(key).map(|s| s.expires)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn over_owner_share(&self, owner: &str) -> bool {
        self.owners.get(owner).is_some_and(|u| {
            u.entries > self.limits.owner_entries || u.bytes > self.limits.owner_bytes
        })
    }

    /// The owner to take from when the whole is over: the one holding the most bytes
    /// (then entries); on a tie the owner that is inserting, so a newcomer never pushes
    /// out an equal peer.
    fn largest_owner(&self, inserting: &str) -> Option<String> {
        self.owners
            .iter()
            .max_by_key(|(o, u)| (u.bytes, u.entries, o.as_str() == inserting))
            .map(|(o, _)| o.clone())
    }

    /// Evict `owner`'s least recently used entry; false when it has none.
    fn evict_lru_of(&mut self, owner: &str) -> bool {
        let victim = self
            .map
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.remove(&k);
                self.evicted += 1;
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.bytes = self.bytes.saturating_sub(slot.bytes);
        if let Some(u) = self.owners.get_mut(&slot.owner) {
            u.entries = u.entries.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(slot.bytes);
            if u.entries == 0 {
                self.owners.remove(&slot.owner);
            }
        }
        Some(slot.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: Limits = Limits {
        max_entries: 8,
        max_bytes: 8 * 1024,
        owner_entries: 4,
        owner_bytes: 3 * 1024,
    };

    fn later(now: Instant, s: u64) -> Instant {
        now + Duration::from_secs(s)
    }

    #[test]
    fn an_owner_over_its_share_loses_its_own_oldest_entries() {
        let now = Instant::now();
        let mut c = BoundedCache::new(LIMITS);
        c.insert(
            "quiet".to_string(),
            0,
            "quiet.example",
            100,
            later(now, 60),
            now,
        );
        for i in 0..20 {
            c.insert(
                format!("loud-{i}"),
                i,
                "loud.example",
                500,
                later(now, 60),
                now,
            );
        }
        let st = c.stats();
        assert!(
            st.entries <= LIMITS.max_entries && st.bytes <= LIMITS.max_bytes,
            "{st:?}"
        );
        assert!(
            c.get(&"quiet".to_string(), now).is_some(),
            "the quiet owner keeps its entry"
        );
        assert!(
            c.get(&"loud-19".to_string(), now).is_some(),
            "the newest entry stays"
        );
        assert!(c.get(&"loud-0".to_string(), now).is_none());
        assert!(st.evicted >= 16, "{st:?}");
    }

    #[test]
    fn many_owners_over_the_whole_are_trimmed_from_the_largest() {
        let now = Instant::now();
        let mut c = BoundedCache::new(LIMITS);
        c.insert(
            "small".to_string(),
            0,
            "small.example",
            50,
            later(now, 60),
            now,
        );
        for host in 0..30 {
            for i in 0..3 {
                let owner = format!("h{host}.example");
                c.insert(format!("{owner}/{i}"), i, &owner, 700, later(now, 60), now);
            }
            let st = c.stats();
            assert!(st.entries <= LIMITS.max_entries, "{st:?}");
            assert!(st.bytes <= LIMITS.max_bytes, "{st:?}");
        }
        assert!(
            c.get(&"small".to_string(), now).is_some(),
            "never the smallest owner"
        );
    }

    #[test]
    fn an_entry_over_an_owners_share_is_refused_and_expired_ones_are_swept() {
        let now = Instant::now();
        let mut c = BoundedCache::new(LIMITS);
        assert!(c.insert(1, "x", "o", 100, later(now, 1), now));
        assert!(!c.insert(1, "huge", "o", 1 << 20, later(now, 60), now));
        assert!(c.is_empty(), "the older value for the key is gone too");
        assert_eq!(c.stats().refused, 1);
        c.insert(2, "a", "o", 100, later(now, 1), now);
        c.insert(3, "b", "p", 100, later(now, 100), now);
        // Expired entries go on the next insert, not only when looked up.
        c.insert(4, "c", "q", 100, later(now, 100), later(now, 5));
        let st = c.stats();
        assert_eq!((st.entries, st.expired), (2, 1), "{st:?}");
        assert_eq!(c.sweep(later(now, 200)), 2);
        let st = c.stats();
        assert_eq!((st.entries, st.bytes, st.owners), (0, 0, 0), "{st:?}");
    }

    #[test]
    fn a_hit_makes_an_entry_recent() {
        let now = Instant::now();
        let mut c = BoundedCache::new(LIMITS);
        for i in 0..4 {
            c.insert(i, i, "o", 100, later(now, 60), now);
        }
        assert!(c.get(&0, now).is_some());
        c.insert(4, 4, "o", 100, later(now, 60), now);
        assert!(c.get(&0, now).is_some(), "recently used: kept");
        assert!(c.get(&1, now).is_none(), "least recently used: evicted");
    }
}

//! The cache of the auth service's positive answers, keyed by a digest of the credentials that
//! were sent to it, bounded in size and in age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest as _, Sha256};

/// A digest of the credential headers: the cache never holds a credential itself, and two
/// different credentials cannot share an entry.
pub(super) type Key = [u8; 32];

/// Shards, each behind its own lock, so that requests of different callers rarely wait for one
/// another; a lock is held for one map operation.
const SHARDS: usize = 16;

/// The digest of the values of `names` in `headers`, or `None` when the request carries none
/// of them (an anonymous caller is never served from the cache).
pub(super) fn key(names: &[HeaderName], headers: &HeaderMap) -> Option<Key> {
    let mut hasher = Sha256::new();
    let mut any = false;
    for (index, name) in names.iter().enumerate() {
        for value in headers.get_all(name) {
            any = true;
            // Index and length first, so that no two sets of values hash alike.
            hasher.update(u64::try_from(index).unwrap_or(u64::MAX).to_le_bytes());
            hasher.update(u64::try_from(value.len()).unwrap_or(u64::MAX).to_le_bytes());
            hasher.update(value.as_bytes());
        }
    }
    any.then(|| hasher.finalize().into())
}

#[derive(Debug)]
struct Entry<V> {
    expires: Instant,
    value: V,
}

/// One shard's entries.
type Shard<V> = HashMap<Key, Entry<V>>;

/// Answers by key, each kept for `ttl`, at most about `capacity` of them.
#[derive(Debug)]
pub(super) struct Cache<V> {
    ttl: Duration,
    per_shard: usize,
    shards: Box<[Mutex<Shard<V>>]>,
}

impl<V: Clone> Cache<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[usize::from(key[0]) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer cached for `key`, unless it has expired by `now`.
    pub fn get(&self, key: &Key, now: Instant) -> Option<V> {
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(entry) if entry.expires > now => Some(entry.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `value` for `key` from `now`. A full shard first drops its expired entries, then,
    /// when that is not enough, an arbitrary one.
    pub fn insert(&self, key: Key, value: V, now: Instant) {
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, entry| entry.expires > now);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(
            key,
            Entry {
                expires: now + self.ttl,
                value,
            },
        );
    }

    /// The number of entries, expired ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keys_follow_the_credentials_only() {
        let names = [
            HeaderName::from_static("cookie"),
            HeaderName::from_static("authorization"),
        ];
        assert_eq!(key(&names, &headers(&[("accept", "x")])), None);
        let alice = key(&names, &headers(&[("cookie", "s=alice")]));
        assert!(alice.is_some());
        assert_eq!(
            alice,
            key(&names, &headers(&[("cookie", "s=alice"), ("accept", "y")])),
            "other headers do not count"
        );
        assert_ne!(alice, key(&names, &headers(&[("cookie", "s=bob")])));
        assert_ne!(
            alice,
            key(&names, &headers(&[("authorization", "s=alice")])),
            "the header a value came in counts"
        );
        assert_ne!(
            key(&names, &headers(&[("cookie", "a"), ("cookie", "b")])),
            key(&names, &headers(&[("cookie", "ab")])),
        );
    }

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let start = Instant::now();
        let cache = Cache::new(Duration::from_secs(10), 32);
        let k = |n: u8| {
            let mut key = [0u8; 32];
            key[0] = n;
            key[1] = n / 16;
            key
        };
        cache.insert(k(1), 1, start);
        assert_eq!(cache.get(&k(1), start + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get(&k(1), start + Duration::from_secs(10)), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when seen");
        for n in 0..=255 {
            cache.insert(k(n), u32::from(n), start);
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        assert_eq!(cache.get(&k(255), start), Some(255), "the newest stays");
    }
}

//! A small map whose entries expire, for caching review answers (TokenReview,
//! SubjectAccessReview).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A small map whose entries expire, for caching review answers. Bounded: when full, expired
/// entries are dropped first, then the one closest to expiry.
pub(crate) struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, (value, now + ttl));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ttl_cache_expires_and_stays_bounded() {
        let cache = TtlCache::new(2);
        cache.insert("a", 1, Duration::from_secs(10));
        cache.insert("b", 2, Duration::from_millis(40));
        assert_eq!(cache.get(&"a"), Some(1));
        // Full: the entry closest to expiry ("b") makes room.
        cache.insert("c", 3, Duration::from_secs(30));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"b"), None);
        cache.insert("d", 4, Duration::from_millis(40));
        assert_eq!(cache.get(&"a"), None, "a was closest to expiry");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get(&"d"), None, "expired");
        assert_eq!(cache.get(&"c"), Some(3));
        cache.insert("e", 5, Duration::ZERO);
        assert_eq!(cache.get(&"e"), None, "zero TTL is not cached");
    }
}

//! A map that many threads read while one thread changes it, without a reader ever waiting.
//!
//! Keys are spread over shards, each an immutable `HashMap` behind an [`ArcSwap`]: a reader
//! loads a shard's current map and looks the key up (no lock, no shared write); a batch of
//! changes copies only the shards it touches and swaps each in whole, as aardvark-dns swaps
//! its record set. Copying the whole map instead would cost every change O(all names): with
//! 100,000 services, tens of milliseconds. Readers see each shard before or after a batch,
//! never half-written.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// A read-mostly map split into shards.
pub struct ShardedMap<K, V> {
    shards: Box<[ArcSwap<HashMap<K, V>>]>,
    /// Picks a key's shard (the shards' own maps hash with keys of their own).
    spread: RandomState,
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    /// An empty map of `shards` shards (at least one).
    pub fn new(shards: usize) -> Self {
        ShardedMap {
            shards: (0..shards.max(1))
                .map(|_| ArcSwap::from_pointee(HashMap::new()))
                .collect(),
            spread: RandomState::new(),
        }
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The high bits: the shards' maps use the low ones of a different hash anyway.
        let hash = self.spread.hash_one(key);
        ((hash >> 32) as usize) % self.shards.len()
    }

    /// Calls `read` with the value of `key`, if any, while the shard holding it stays loaded.
    pub fn with<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shards[self.shard_of(key)].load();
        shard.get(key).map(read)
    }

    /// Applies `changes` (a value to set, or `None` to remove the key), in order: each shard
    /// touched is copied once, changed, and swapped in.
    pub fn apply(&self, changes: Vec<(K, Option<V>)>) {
        if changes.is_empty() {
            return;
        }
        let mut by_shard: HashMap<usize, Vec<(K, Option<V>)>> = HashMap::new();
        for (key, value) in changes {
            by_shard
                .entry(self.shard_of(&key))
                .or_default()
                .push((key, value));
        }
        for (index, changes) in by_shard {
            let shard = &self.shards[index];
            let mut map = HashMap::clone(&shard.load());
            for (key, value) in changes {
                match value {
                    Some(value) => map.insert(key, value),
                    None => map.remove(&key),
                };
            }
            shard.store(Arc::new(map));
        }
    }

    /// How many keys there are (a sum over the shards: for metrics, not for hot paths).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.load().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_applied_in_order_across_shards() {
        let map: ShardedMap<String, u32> = ShardedMap::new(8);
        map.apply((0..100).map(|index| (index.to_string(), Some(index))).collect());
        assert_eq!(map.len(), 100);
        assert_eq!(map.with("42", |value| *value), Some(42));
        map.apply(vec![
            ("42".into(), None),
            ("7".into(), Some(70)),
            ("7".into(), None),
            ("7".into(), Some(700)),
        ]);
        assert_eq!(map.with("42", |_| ()), None);
        assert_eq!(map.with("7", |value| *value), Some(700));
        assert_eq!(map.len(), 99);
    }

    #[test]
    fn readers_keep_the_shard_they_loaded() {
        let map: ShardedMap<u8, Arc<str>> = ShardedMap::new(1);
        map.apply(vec![(1, Some("before".into()))]);
        let seen = map.with(&1, |value| {
            // A writer swapping the shard meanwhile does not change what this reader holds.
            map.apply(vec![(1, Some("after".into()))]);
            value.to_string()
        });
        assert_eq!(seen.as_deref(), Some("before"));
        assert_eq!(map.with(&1, |value| value.to_string()).as_deref(), Some("after"));
    }
}

//! Collections whose copies share everything a change does not touch. The routing table and the
//! validated config are snapshots: a change of one tenant makes a new snapshot beside the old one,
//! which requests keep using until they end. With these, that new snapshot copies one shard of each
//! map and one chunk of the tenant list, and the spines that point at them (about √n and 1,024
//! entries), instead of every tenant: a change costs microseconds at a million tenants, and two
//! snapshots cost little more memory than one.
//!
//! Reads cost what a plain hash map's do, plus one hash that picks the shard.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};

/// A hash map in shards behind `Arc`s. Cloning it clones the spine's `Arc`; changing an entry
/// copies the spine and that entry's shard if another copy still shares them. A key is hashed once:
/// bits the shards' tables do not use (above the 40th) pick the shard.
pub struct ShardedMap<K, V> {
    shards: Arc<[Shard<K, V>]>,
    hasher: RandomState,
    len: usize,
}

type Shard<K, V> = Arc<HashTable<(K, V)>>;

impl<K, V> Clone for ShardedMap<K, V> {
    fn clone(&self) -> Self {
        ShardedMap {
            shards: Arc::clone(&self.shards),
            hasher: self.hasher.clone(),
            len: self.len,
        }
    }
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap")
            .field("len", &self.len)
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap::with_capacity(0)
    }
}

/// About √n shards, so that the spine and one shard, what a change copies, are both small. At most
/// 4,096: the shard index takes 12 of the hash's bits 40 to 63.
fn shard_count(entries: usize) -> usize {
    let root = (entries as f64).sqrt().ceil() as usize;
    root.next_power_of_two().clamp(8, 4096)
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    /// An empty map sized for `entries`.
    pub fn with_capacity(entries: usize) -> Self {
        let shards = shard_count(entries);
        let per_shard = entries / shards + 1;
        ShardedMap {
            shards: (0..shards)
                .map(|_| Arc::new(HashTable::with_capacity(per_shard)))
                .collect(),
            hasher: RandomState::default(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard_of(&self, hash: u64) -> usize {
        // A power of two; the tables use the low bits for buckets and the top seven for tags.
        ((hash >> 40) as usize) & (self.shards.len() - 1)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        self.shards
            .get(self.shard_of(hash))?
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    fn shard_mut(&mut self, index: usize) -> Option<&mut HashTable<(K, V)>> {
        Arc::make_mut(&mut self.shards)
            .get_mut(index)
            .map(Arc::make_mut)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.len > 4 * self.shards.len() * self.shards.len() {
            self.reshard();
        }
        let hash = self.hasher.hash_one(&key);
        let hasher = self.hasher.clone();
        let index = self.shard_of(hash);
        let shard = self.shard_mut(index)?;
        match shard.entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((key, value));
                self.len += 1;
                None
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let index = self.shard_of(hash);
        // Looked up first, so that removing what is not there copies nothing.
        self.shards
            .get(index)?
            .find(hash, |(k, _)| k.borrow() == key)?;
        let ((_, old), _) = self
            .shard_mut(index)?
            .find_entry(hash, |(k, _)| k.borrow() == key)
            .ok()?
            .remove();
        self.len -= 1;
        Some(old)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k, v)))
    }

    /// A map grown well past its shard count (by many single inserts) is laid out again, so that a
    /// change never copies a large shard. Rare: each time takes a fourfold growth.
    fn reshard(&mut self) {
        let mut bigger = ShardedMap::with_capacity(self.len * 4);
        for (k, v) in self.iter() {
            bigger.insert(k.clone(), v.clone());
        }
        *self = bigger;
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for ShardedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(items: I) -> Self {
        let items = items.into_iter();
        let mut map = ShardedMap::with_capacity(items.size_hint().0);
        for (k, v) in items {
            map.insert(k, v);
        }
        map
    }
}

/// Entries per chunk of a `ChunkedVec`: a change copies one chunk of `Arc`s (8 KiB).
const CHUNK: usize = 1024;

/// A list in chunks behind `Arc`s: indexing costs two loads, and a change copies the spine and one
/// chunk if another copy still shares them. Removal moves the last entry into the hole. Chunks and
/// spine are slices, one load less than vectors on every read; a push copies the last chunk.
pub struct ChunkedVec<T> {
    chunks: Arc<[Arc<[T]>]>,
    len: usize,
}

impl<T> Clone for ChunkedVec<T> {
    fn clone(&self) -> Self {
        ChunkedVec {
            chunks: Arc::clone(&self.chunks),
            len: self.len,
        }
    }
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec {
            chunks: Arc::new([]),
            len: 0,
        }
    }
}

impl<T> std::fmt::Debug for ChunkedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedVec")
            .field("len", &self.len)
            .finish()
    }
}

impl<T: Clone> ChunkedVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    pub fn last(&self) -> Option<&T> {
        self.get(self.len.checked_sub(1)?)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + DoubleEndedIterator + Clone {
        Iter {
            chunks: &self.chunks,
            front: 0,
            back: self.len,
        }
    }

    /// Replaces entry `index`, returning the old one (`None`, and nothing changed, when out of range).
    pub fn set(&mut self, index: usize, value: T) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let chunk = Arc::make_mut(&mut self.chunks).get_mut(index / CHUNK)?;
        let slot = Arc::make_mut(chunk).get_mut(index % CHUNK)?;
        Some(std::mem::replace(slot, value))
    }

    pub fn push(&mut self, value: T) {
        let full = self.chunks.last().is_none_or(|c| c.len() == CHUNK);
        if full {
            let mut spine = self.chunks.to_vec();
            spine.push(Arc::from(vec![value]));
            self.chunks = spine.into();
        } else if let Some(last) = Arc::make_mut(&mut self.chunks).last_mut() {
            let mut grown = last.to_vec();
            grown.push(value);
            *last = grown.into();
        }
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last()?;
        let mut shrunk = last.to_vec();
        let value = shrunk.pop()?;
        if shrunk.is_empty() {
            let mut spine = self.chunks.to_vec();
            spine.pop();
            self.chunks = spine.into();
        } else if let Some(last) = Arc::make_mut(&mut self.chunks).last_mut() {
            *last = shrunk.into();
        }
        self.len -= 1;
        Some(value)
    }

    /// Removes entry `index`, moving the last entry into its place; returns the removed entry.
    pub fn swap_remove(&mut self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let last = self.pop()?;
        if index == self.len {
            return Some(last);
        }
        self.set(index, last)
    }
}

impl<T: Clone> std::ops::Index<usize> for ChunkedVec<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(v) => v,
            None => panic!("index {index} out of range for a list of {}", self.len),
        }
    }
}

impl<T: Clone> FromIterator<T> for ChunkedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut chunks: Vec<Arc<[T]>> = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut len = 0;
        for item in items {
            chunk.push(item);
            len += 1;
            if chunk.len() == CHUNK {
                chunks.push(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)).into());
            }
        }
        if !chunk.is_empty() {
            chunks.push(chunk.into());
        }
        ChunkedVec {
            chunks: chunks.into(),
            len,
        }
    }
}

#[derive(Clone)]
struct Iter<'a, T> {
    chunks: &'a [Arc<[T]>],
    front: usize,
    back: usize,
}

impl<'a, T> Iter<'a, T> {
    fn at(&self, index: usize) -> Option<&'a T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        if self.front >= self.back {
            return None;
        }
        let item = self.at(self.front);
        self.front += 1;
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

impl<'a, T> DoubleEndedIterator for Iter<'a, T> {
    fn next_back(&mut self) -> Option<&'a T> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        self.at(self.back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    #[test]
    fn a_map_behaves_like_a_hash_map_and_copies_share_until_changed() {
        let mut map: ShardedMap<String, usize> = (0..5000).map(|i| (i.to_string(), i)).collect();
        let mut plain: HashMap<String, usize> = (0..5000).map(|i| (i.to_string(), i)).collect();
        let before = map.clone();
        let mut seed = 7u64;
        for round in 0..20_000usize {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = ((seed >> 33) % 8000).to_string();
            if (seed >> 20) % 3 == 0 {
                assert_eq!(map.remove(key.as_str()), plain.remove(&key));
            } else {
                assert_eq!(map.insert(key.clone(), round), plain.insert(key, round));
            }
        }
        assert_eq!(map.len(), plain.len());
        for (k, v) in &plain {
            assert_eq!(map.get(k.as_str()), Some(v));
        }
        assert_eq!(map.iter().count(), plain.len());
        // The copy taken before is untouched.
        assert_eq!(before.len(), 5000);
        assert!((0..5000).all(|i| before.get(i.to_string().as_str()) == Some(&i)));
    }

    #[test]
    fn a_change_copies_one_shard_not_the_map() {
        let map: ShardedMap<u32, u32> = (0..100_000).map(|i| (i, i)).collect();
        let mut next = map.clone();
        next.insert(7, 70);
        let shared = map
            .shards
            .iter()
            .zip(next.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, map.shards.len() - 1);
        assert_eq!(map.get(&7), Some(&7));
        assert_eq!(next.get(&7), Some(&70));
    }

    #[test]
    fn a_map_grown_from_empty_is_resharded() {
        let mut map: ShardedMap<u32, u32> = ShardedMap::default();
        for i in 0..50_000 {
            map.insert(i, i);
        }
        assert!(map.shards.len() >= 64, "{} shards", map.shards.len());
        assert!((0..50_000).all(|i| map.get(&i) == Some(&i)));
    }

    #[test]
    fn a_list_pushes_pops_sets_and_swap_removes_like_a_vec() {
        let mut list: ChunkedVec<usize> = (0..3000).collect();
        let mut plain: Vec<usize> = (0..3000).collect();
        let before = list.clone();
        assert_eq!(list.swap_remove(5), Some(plain.swap_remove(5)));
        assert_eq!(list.swap_remove(list.len() - 1), plain.pop());
        list.set(100, 42);
        plain[100] = 42;
        for i in 0..2000 {
            list.push(i);
            plain.push(i);
        }
        for _ in 0..1500 {
            assert_eq!(list.pop(), plain.pop());
        }
        assert_eq!(list.len(), plain.len());
        assert!(list.iter().eq(plain.iter()));
        assert!(list.iter().rev().eq(plain.iter().rev()));
        assert_eq!(list.set(list.len(), 1), None);
        assert_eq!(list.swap_remove(list.len()), None);
        assert!(before.iter().copied().eq(0..3000));
        let mut emptied: ChunkedVec<u8> = (0..3).collect();
        while emptied.pop().is_some() {}
        assert!(emptied.is_empty());
        assert_eq!(emptied.last(), None);
        emptied.push(1);
        assert_eq!(emptied.last(), Some(&1));
    }
}

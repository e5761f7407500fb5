//! A bounded least-recently-used map (the role of `resty.lrucache` and of a shared
//! dict's eviction in Kong): at most `max_entries` entries and `max_weight` units of
//! weight (bytes for proxy-cache); inserting past either bound evicts from the least
//! recently used end. Get, insert and remove are O(1): entries live in a slab linked in
//! use order, found through a hash map of slab indexes. Not synchronised: callers wrap
//! it in a mutex.

use std::collections::HashMap;
use std::hash::Hash;

const NIL: usize = usize::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    weight: usize,
    prev: usize,
    next: usize,
}

pub struct Lru<K, V> {
    map: HashMap<K, usize>,
    slab: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    weight: usize,
    max_entries: usize,
    max_weight: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub fn new(max_entries: usize, max_weight: usize) -> Lru<K, V> {
        Lru {
            map: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            weight: 0,
            max_entries: max_entries.max(1),
            max_weight,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total weight of the entries held.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The value of `key`, marked most recently used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_front(i);
        self.slab[i].as_ref().map(|n| &n.value)
    }

    /// Inserts (or replaces) `key`. An entry heavier than the whole budget is not kept.
    /// Returns how many other entries were evicted to make room.
    pub fn insert(&mut self, key: K, value: V, weight: usize) -> usize {
        self.remove(&key);
        if weight > self.max_weight {
            return 0;
        }
        let mut evicted = 0;
        while self.tail != NIL
            && (self.map.len() + 1 > self.max_entries || self.weight + weight > self.max_weight)
        {
            let t = self.tail;
            self.drop_index(t);
            evicted += 1;
        }
        let node = Node {
            key: key.clone(),
            value,
            weight,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(node);
                i
            }
            None => {
                self.slab.push(Some(node));
                self.slab.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.weight += weight;
        evicted
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        self.drop_index(i)
    }

    fn drop_index(&mut self, i: usize) -> Option<V> {
        self.unlink(i);
        let node = self.slab.get_mut(i)?.take()?;
        self.map.remove(&node.key);
        self.weight -= node.weight;
        self.free.push(i);
        Some(node.value)
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = match self.slab.get(i).and_then(|n| n.as_ref()) {
            Some(n) => (n.prev, n.next),
            None => return,
        };
        match prev {
            NIL => self.head = next,
            p => {
                if let Some(n) = self.slab[p].as_mut() {
                    n.next = next;
                }
            }
        }
        match next {
            NIL => self.tail = prev,
            n => {
                if let Some(n) = self.slab[n].as_mut() {
                    n.prev = prev;
                }
            }
        }
        if let Some(n) = self.slab[i].as_mut() {
            n.prev = NIL;
            n.next = NIL;
        }
    }

    fn push_front(&mut self, i: usize) {
        let old = self.head;
        if let Some(n) = self.slab[i].as_mut() {
            n.prev = NIL;
            n.next = old;
        }
        if old != NIL {
            if let Some(n) = self.slab[old].as_mut() {
                n.prev = i;
            }
        } else {
            self.tail = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_count_and_weight() {
        let mut l: Lru<String, u32> = Lru::new(3, 100);
        l.insert("a".into(), 1, 10);
        l.insert("b".into(), 2, 10);
        l.insert("c".into(), 3, 10);
        assert_eq!(l.get("a"), Some(&1)); // a is now the most recent
        l.insert("d".into(), 4, 10); // evicts b
        assert!(l.get("b").is_none());
        assert_eq!(l.len(), 3);
        // Weight: 30 held (d, a, c from most to least recent); 80 more evicts c only.
        assert_eq!(l.insert("e".into(), 5, 80), 1);
        assert!(l.get("c").is_none());
        assert_eq!(l.get("a"), Some(&1));
        assert_eq!(l.get("d"), Some(&4));
        assert_eq!(l.weight(), 100);
        // Heavier than the whole budget: not kept, nothing evicted.
        assert_eq!(l.insert("huge".into(), 6, 101), 0);
        assert!(l.get("huge").is_none());
        assert_eq!(l.len(), 3);
        // Replacing a key replaces its weight.
        l.insert("d".into(), 7, 5);
        assert_eq!(l.weight(), 95);
        assert_eq!(l.remove("e"), Some(5));
        assert_eq!(l.weight(), 15);
        for i in 0..1000u32 {
            l.insert(format!("k{i}"), i, 1);
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("k999"), Some(&999));
    }
}

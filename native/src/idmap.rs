//! `IdMap`: an insertion-ordered map from an id (a string) to a time, the shape of an
//! account's remembered ids (`seen_cdrs`, `seen_commands`) and of its domestic seconds per
//! month, kept in three allocations whatever the number of ids: their text back to back,
//! the entries (where each id's text is, and its value), and from nine entries on a hash
//! index. A map of `String`s costs one allocation per id besides its table, which is most
//! of a held account's memory and, spread over the heap, most of what encoding a held
//! account waits for (`bench/analysis.md`).
//!
//! It behaves as the `IndexMap<String, i64>` it replaces (and a Python dict): inserting a
//! key that is there changes its value in place; `retain` keeps the order; equality does
//! not depend on the order.

use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// Maps this size or smaller are searched entry by entry, with no hash index.
const SCAN_UP_TO: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u32,
    len: u32,
    value: i64,
}

#[derive(Clone, Default)]
pub struct IdMap {
    text: String,
    entries: Vec<Entry>,
    /// Positions into `entries`, once there are more than `SCAN_UP_TO` of them.
    index: Option<Box<HashTable<u32>>>,
}

/// One byte of every 64 of `b`, combined (what reading `b` through brings into the cache).
pub fn touch_bytes(b: &[u8]) -> u64 {
    b.iter()
        .step_by(64)
        .fold(b.last().copied().unwrap_or(0) as u64, |x, &c| {
            x.rotate_left(1) ^ c as u64
        })
}

/// The hash of the ids: seeded once per process at random (the ids come from the input).
fn hasher() -> &'static foldhash::fast::FixedState {
    static SEED: OnceLock<foldhash::fast::FixedState> = OnceLock::new();
    SEED.get_or_init(|| {
        foldhash::fast::FixedState::with_seed(foldhash::fast::RandomState::default().hash_one(0u8))
    })
}

impl IdMap {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key_of(&self, e: &Entry) -> &str {
        key(&self.text, e)
    }

    fn position(&self, k: &str) -> Option<usize> {
        match &self.index {
            None => self
                .entries
                .iter()
                .position(|e| e.len as usize == k.len() && self.key_of(e) == k),
            Some(index) => {
                let hash = hasher().hash_one(k);
                index
                    .find(hash, |&i| self.key_of(&self.entries[i as usize]) == k)
                    .map(|&i| i as usize)
            }
        }
    }

    /// Read what looking `k` up and then adding it reads: the search, and the ends of
    /// the entries and the text (see `Account::touch`).
    pub fn touch(&self, k: &str) -> i64 {
        let found = self.position(k).map_or(0, |i| i as i64 + 1);
        let last = self.entries.last().map_or(0, |e| e.value);
        let end = self.text.as_bytes().last().copied().unwrap_or(0) as i64;
        found ^ last ^ end
    }

    /// Read a byte of every cache line of the entries and of the text, as encoding them
    /// all reads them (`Held::plan` touches the next accounts before encoding them).
    pub fn touch_all(&self) -> u64 {
        let entries = self
            .entries
            .iter()
            .step_by(4)
            .fold(0, |x, e| x ^ e.value as u64);
        entries ^ touch_bytes(self.text.as_bytes())
    }

    pub fn get(&self, k: &str) -> Option<&i64> {
        self.position(k).map(|i| &self.entries[i].value)
    }

    pub fn contains_key(&self, k: &str) -> bool {
        self.position(k).is_some()
    }

    /// Set `k` to `value`: in place when it is there (the order kept), else at the end.
    pub fn insert(&mut self, k: &str, value: i64) {
        match self.position(k) {
            Some(i) => self.entries[i].value = value,
            None => self.push_new(k, value),
        }
    }

    /// Add `k`, known not to be there (the caller has just looked), at the end: `insert`
    /// without its search.
    pub fn push_new(&mut self, k: &str, value: i64) {
        debug_assert!(self.position(k).is_none(), "{k} is there");
        let start = u32::try_from(self.text.len()).expect("an account's ids fit in 4 GiB");
        let len = u32::try_from(k.len()).expect("an id fits in 4 GiB");
        self.text.push_str(k);
        self.entries.push(Entry { start, len, value });
        let n = self.entries.len();
        let (entries, text) = (&self.entries, &self.text);
        match self.index.as_mut() {
            Some(index) => {
                let rehash = |&i: &u32| hash_entry(text, &entries[i as usize]);
                index.insert_unique(hasher().hash_one(k), (n - 1) as u32, rehash);
            }
            None if n > SCAN_UP_TO => self.reindex(),
            None => {}
        }
    }

    /// Keep the entries `keep` says yes to, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut i64) -> bool) {
        let old_text = &self.text;
        let kept: Vec<bool> = self
            .entries
            .iter_mut()
            .map(|e| keep(key(old_text, e), &mut e.value))
            .collect();
        if kept.iter().all(|&k| k) {
            return; // nothing went: the positions stay
        }
        let mut text = String::with_capacity(self.text.len());
        let mut entries = Vec::with_capacity(self.entries.len());
        for (e, _) in self.entries.iter().zip(&kept).filter(|(_, &k)| k) {
            entries.push(Entry {
                start: text.len() as u32,
                ..*e
            });
            text.push_str(key(&self.text, e));
        }
        text.shrink_to_fit();
        entries.shrink_to_fit();
        self.text = text;
        self.entries = entries;
        self.index = None;
        if self.entries.len() > SCAN_UP_TO {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        let mut index = HashTable::with_capacity(self.entries.len());
        let (entries, text) = (&self.entries, &self.text);
        for (i, e) in entries.iter().enumerate() {
            index.insert_unique(hash_entry(text, e), i as u32, |&j: &u32| {
                hash_entry(text, &entries[j as usize])
            });
        }
        self.index = Some(Box::new(index));
    }

    /// Give back what growing left spare (an account read from the store keeps its size).
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    /// The entries in their order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.entries.iter().map(move |e| (self.key_of(e), e.value))
    }

    /// The entries from the `n`th on (the ones added since a write that had `n`).
    pub fn iter_from(&self, n: usize) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.entries[n.min(self.entries.len())..]
            .iter()
            .map(move |e| (self.key_of(e), e.value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(move |e| self.key_of(e))
    }
}

/// An entry's id in `text`.
fn key<'t>(text: &'t str, e: &Entry) -> &'t str {
    &text[e.start as usize..(e.start + e.len) as usize]
}

fn hash_entry(text: &str, e: &Entry) -> u64 {
    hasher().hash_one(key(text, e))
}

impl std::ops::Index<&str> for IdMap {
    type Output = i64;
    fn index(&self, k: &str) -> &i64 {
        self.get(k).expect("no such id")
    }
}

impl PartialEq for IdMap {
    /// The same ids with the same values, in any order (as `IndexMap`'s equality).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(&v))
    }
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<(&'a str, i64)> for IdMap {
    fn from_iter<I: IntoIterator<Item = (&'a str, i64)>>(items: I) -> Self {
        let mut m = IdMap::default();
        for (k, v) in items {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Map;

    /// The same operations on an `IdMap` and on the `IndexMap` it replaces.
    fn same(m: &IdMap, r: &Map<String, i64>) {
        assert_eq!(m.len(), r.len());
        let got: Vec<(String, i64)> = m.iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let want: Vec<(String, i64)> = r.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(got, want);
        for (k, v) in r {
            assert_eq!(m.get(k), Some(v));
            assert!(m.contains_key(k));
        }
        assert!(!m.contains_key("absent"));
    }

    #[test]
    fn behaves_as_an_insertion_ordered_map_across_the_index_threshold() {
        let mut m = IdMap::default();
        let mut r: Map<String, i64> = Map::default();
        // A deterministic mix of new keys (by `insert` and `push_new`), repeated keys (in
        // place), prunes and multi-byte text, past the size where the index is built and
        // back under it.
        let mut x: u64 = 7;
        for step in 0..3_000i64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = format!("id-{}-é", (x >> 33) % 400);
            if step % 2 == 1 && !r.contains_key(&k) {
                m.push_new(&k, step); // a new key, as the ledger adds one it has looked for
            } else {
                m.insert(&k, step);
            }
            r.insert(k, step);
            if step % 97 == 0 {
                let cut = step - 150;
                m.retain(|_, v| *v >= cut);
                r.retain(|_, v| *v >= cut);
            }
            if step % 13 == 0 {
                same(&m, &r);
            }
        }
        same(&m, &r);
        m.retain(|k, _| k.starts_with("id-1"));
        r.retain(|k, _| k.starts_with("id-1"));
        same(&m, &r);
        m.retain(|_, _| false);
        assert!(m.is_empty());
        m.insert("", 3);
        assert_eq!(m.get(""), Some(&3));
    }

    #[test]
    fn retain_may_change_values_and_iter_from_skips_the_first_n() {
        let mut m: IdMap = [("a", 1), ("b", 2), ("c", 3)].into_iter().collect();
        m.retain(|_, v| {
            *v *= 10;
            true
        });
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![("a", 10), ("b", 20), ("c", 30)]
        );
        assert_eq!(m.iter_from(2).collect::<Vec<_>>(), vec![("c", 30)]);
        assert_eq!(m.iter_from(9).count(), 0);
        assert_eq!(m["b"], 20);
    }

    #[test]
    fn equality_does_not_depend_on_the_order() {
        let a: IdMap = [("x", 1), ("y", 2)].into_iter().collect();
        let b: IdMap = [("y", 2), ("x", 1)].into_iter().collect();
        let c: IdMap = [("y", 2), ("x", 3)].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}

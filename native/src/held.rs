//! The Kafka worker's accounts between batches, held natively: the account cache of the
//! native batch step (rater/worker/store.py `NativeAccountStore`), the same rules as the
//! Python `AccountStore` and `IdSegments` (rater/core/idsegments.py) keep for Python
//! `Account` objects.
//!
//! - Between batches each held account is the value its last batch wrote (or the store
//!   held), with its *durable* ids: the recent ids of that value, which alone may move
//!   into a segment (`durable_ids`).
//! - During a batch the engine holds the accounts the batch uses (`lend` moves one out
//!   of here, `end_batch` moves them all back); the accounts the batch changed are listed
//!   in order (`changed`).
//! - `plan` makes, per changed account, its segment writes (`plan_segments`, as
//!   `IdSegments.plan`), its changelog value (`encode_judged`, as `encode_account(acct,
//!   judged)`) and its sweep due time (as `AccountStore.note_due`): bytes for the
//!   commit pipeline, at the end of the batch, before the next batch changes the account.
//! - The number held is bounded by the worker's account cache (`Generations`).
//! - An account no batch used for `idle_after` batches is kept in its stored form (its
//!   changelog value, `Slot::Idle`: about a third of the memory of the decoded one) and
//!   decoded when a batch uses it again, as if read from the store.

use crate::codec;
use crate::idmap::IdMap;
use crate::json::{write_str, Map};
use crate::ledger::{Account, RECHARGE_TIMEOUT};
use crate::rates::HashMap;
use compact_str::CompactString;
use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::BuildHasher;

/// Recent ids that make a segment (rater/core/idsegments.py `SEGMENT_AT`).
pub const SEGMENT_AT: usize = 2000;
/// Tenants whose segment ids are kept read (`IdSegments(cache_tenants=2000)`).
pub const OLDER_TENANTS: usize = 2000;
/// Between the tenant and the segment number in a segment's key.
pub const SEP: &[u8] = b"\x00ids\x00";

pub fn segment_key(tenant: &str, n: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + SEP.len() + 8);
    k.extend_from_slice(tenant.as_bytes());
    k.extend_from_slice(SEP);
    k.extend_from_slice(n.to_string().as_bytes());
    k
}

/// The recent ids the stored account holds, as far as `plan_segments` needs them: below
/// `SEGMENT_AT` none (as `durable_ids`).
pub fn durable_ids(recent: &IdMap) -> Vec<String> {
    if recent.len() >= SEGMENT_AT {
        recent.keys().map(str::to_owned).collect()
    } else {
        Vec::new()
    }
}

/// A map bounded by `limit` entries in two generations: what was used since the last
/// turn (`young`) and before it (`old`). When both hold more than `limit`, the old one is
/// dropped and the young one becomes old: what was not used for a whole generation goes
/// first, with no bookkeeping per entry (an approximation of least recently used). Which
/// entries go changes no output: a held value equals the stored one.
pub struct Generations<V> {
    young: HashMap<CompactString, V>,
    old: HashMap<CompactString, V>,
    pub limit: usize,
}

impl<V> Generations<V> {
    pub fn new(limit: usize) -> Self {
        Generations {
            young: HashMap::default(),
            old: HashMap::default(),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, k: &str) -> bool {
        self.young.contains_key(k) || self.old.contains_key(k)
    }

    pub fn get(&self, k: &str) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    pub fn get_mut(&mut self, k: &str) -> Option<&mut V> {
        match self.young.get_mut(k) {
            Some(v) => Some(v),
            None => self.old.get_mut(k),
        }
    }

    pub fn take(&mut self, k: &str) -> Option<V> {
        self.young.remove(k).or_else(|| self.old.remove(k))
    }

    /// Used now: into the young generation.
    pub fn put(&mut self, k: CompactString, v: V) {
        self.old.remove(&k);
        self.young.insert(k, v);
    }

    /// Back under the limit, if over it, keeping every entry `keep` names.
    pub fn bound(&mut self, keep: impl Fn(&str) -> bool) {
        if self.len() <= self.limit {
            return;
        }
        let kept: Vec<CompactString> = self.old.keys().filter(|k| keep(k)).cloned().collect();
        let mut young = std::mem::take(&mut self.young);
        for k in kept {
            if let Some(v) = self.old.remove(&k) {
                young.insert(k, v);
            }
        }
        self.old = young;
        let over = self.old.len().saturating_sub(self.limit);
        if over > 0 {
            let gone: Vec<CompactString> = self
                .old
                .keys()
                .filter(|k| !keep(k))
                .take(over)
                .cloned()
                .collect();
            for k in gone {
                self.old.remove(&k);
            }
        }
    }

    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.young.values().chain(self.old.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.young.values_mut().chain(self.old.values_mut())
    }
}

/// A held account: decoded, or idle and kept as the stored form (which decodes to the
/// same account, with the durable ids of a value read from the store).
pub enum Slot {
    Live(Box<Live>),
    Idle(Box<[u8]>),
}

/// A decoded held account, its durable ids, its recent CDR ids as last encoded, and the
/// batch that last used it.
pub struct Live {
    pub acct: Box<Account>,
    pub durable: Vec<String>,
    pub ids: Option<Box<EncodedIds>>,
    used: u64,
}

/// Batches an account may go unused before it is kept in its stored form.
pub const IDLE_AFTER: u64 = 16;

/// Accounts with this many recent CDR ids keep them encoded (`EncodedIds`).
pub const IDS_KEPT_ENCODED: usize = 8;

/// The recent CDR ids of a held account as its last write encoded them (the inside of its
/// `"sc"` object). Between two prunes (`pruned_at` unchanged) and two segment moves the
/// ledger only adds ids, at the end, so the next write copies these bytes and encodes only
/// the ids added since: an account written once per batch costs its new ids, not all of
/// them (format 1 writes every recent id in every value).
pub struct EncodedIds {
    pruned_at: i64,
    n: usize,
    body: Vec<u8>,
}

/// One changed account, planned: its segment writes (key, value; None deletes), its
/// changelog value, when the sweep is next due for it, and its balance and threshold
/// (the worker's metrics).
pub struct Planned {
    pub tenant: String,
    pub partition: i64,
    pub segments: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub value: Vec<u8>,
    pub due: Option<i64>,
    pub balance: i128,
    pub threshold: i128,
}

pub struct Held {
    /// Boxed (in `Slot`): a hash table's buckets are the size of its entries, and it keeps
    /// up to half of them empty; an account is several hundred bytes.
    pub accounts: Generations<Slot>,
    /// Batches begun (the clock of `idle_after`).
    batch: u64,
    idle_after: u64,
    /// The durable and encoded ids of the accounts lent to the engine for this batch
    /// (when it has any).
    lent: HashMap<String, (Vec<String>, Option<Box<EncodedIds>>)>,
    /// The accounts the batch (or the sweep) changed, in order, with their partition.
    pub changed: Map<String, i64>,
    /// The ids in each tenant's segments, once read (`IdSegments.older_ids`).
    older: Generations<HashSet<String>>,
}

impl Held {
    pub fn new(limit: usize, idle_after: u64) -> Held {
        Held {
            accounts: Generations::new(limit),
            batch: 0,
            idle_after: idle_after.max(1),
            lent: HashMap::default(),
            changed: Map::default(),
            older: Generations::new(OLDER_TENANTS),
        }
    }

    /// Another worker may change these accounts from now on: hold none of them.
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.lent.clear();
        self.changed.clear();
        self.older.clear();
    }

    /// Hold no account (a rebalance, a failed sweep): nor any change not planned.
    pub fn clear_accounts(&mut self) {
        self.accounts.clear();
        self.changed.clear();
    }

    /// A batch starts (the engine holds no account).
    pub fn begin(&mut self) {
        self.lent.clear();
        self.changed.clear();
        self.batch += 1;
    }

    fn live(&self, acct: Box<Account>, durable: Vec<String>, ids: Option<Box<EncodedIds>>) -> Slot {
        Slot::Live(Box::new(Live {
            acct,
            durable,
            ids,
            used: self.batch,
        }))
    }

    /// The held account, moved out for the engine's batch. `Err`: an idle one whose
    /// stored form does not decode (not reachable: it was encoded here).
    pub fn lend(&mut self, tenant: &str) -> Option<Result<Box<Account>, String>> {
        match self.accounts.take(tenant)? {
            Slot::Live(live) => {
                let Live {
                    acct, durable, ids, ..
                } = *live;
                if !durable.is_empty() || ids.is_some() {
                    self.lent.insert(tenant.to_owned(), (durable, ids));
                }
                Some(Ok(acct))
            }
            Slot::Idle(stored) => Some(self.lend_read(tenant, &stored)),
        }
    }

    /// An account read from the store (its stored form), for the engine's batch.
    pub fn lend_read(&mut self, tenant: &str, stored: &[u8]) -> Result<Box<Account>, String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let durable = durable_ids(&acct.seen_cdrs);
        if !durable.is_empty() {
            self.lent.insert(tenant.to_owned(), (durable, None));
        }
        Ok(acct)
    }

    /// An account read from the store, held (not lent).
    pub fn hold_read(&mut self, tenant: &str, stored: &[u8]) -> Result<(), String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let durable = durable_ids(&acct.seen_cdrs);
        let slot = self.live(acct, durable, None);
        self.accounts.put(tenant.into(), slot);
        self.bound();
        Ok(())
    }

    /// The held account in its stored form (without judged offsets), if held.
    pub fn stored(&self, tenant: &str) -> Option<Cow<'_, [u8]>> {
        Some(match self.accounts.get(tenant)? {
            Slot::Live(live) => Cow::Owned(codec::encode_account(&live.acct)),
            Slot::Idle(stored) => Cow::Borrowed(stored),
        })
    }

    pub fn idle_len(&self) -> usize {
        self.accounts
            .values()
            .filter(|s| matches!(s, Slot::Idle(_)))
            .count()
    }

    /// Every decoded account no batch used for `idle_after` batches, kept in its stored
    /// form instead. Run at the end of `plan`, when every changed account is planned
    /// (its held value is the one being written), once every `idle_after` batches, so an
    /// account stays decoded for `idle_after` to twice as many batches after its last use.
    fn idle(&mut self) {
        if !self.batch.is_multiple_of(self.idle_after) {
            return;
        }
        let since = self.batch.saturating_sub(self.idle_after);
        for slot in self.accounts.values_mut() {
            let Slot::Live(live) = slot else { continue };
            if live.used > since {
                continue;
            }
            let stored = encode_judged(&live.acct, &mut live.ids, None);
            *slot = Slot::Idle(stored.into_boxed_slice());
        }
    }

    /// Held accounts back under the cache limit; a changed account not yet planned stays.
    fn bound(&mut self) {
        let changed = &self.changed;
        self.accounts.bound(|k| changed.contains_key(k));
    }

    /// The engine's accounts come back at the end of its batch.
    pub fn end_batch(&mut self, engine_accounts: &mut HashMap<String, Box<Account>>) {
        for (tenant, acct) in engine_accounts.drain() {
            let (durable, ids) = self.lent.remove(&tenant).unwrap_or_default();
            let slot = self.live(acct, durable, ids);
            self.accounts.put(tenant.into(), slot);
        }
        self.lent.clear();
    }

    /// An account changed outside the engine (the sweep, in Python): its new value.
    pub fn put_changed(&mut self, stored: &[u8], partition: i64) -> Result<(), String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let tenant = acct.tenant_id.clone();
        let durable = match self.accounts.take(&tenant) {
            Some(Slot::Live(live)) => live.durable,
            Some(Slot::Idle(stored)) => durable_ids(&codec::decode_account(&stored)?.seen_cdrs),
            None => durable_ids(&acct.seen_cdrs),
        };
        let slot = self.live(acct, durable, None);
        self.changed.insert(tenant.to_string(), partition);
        self.accounts.put(tenant, slot);
        Ok(())
    }

    /// `IdSegments.seen_before`, when the tenant's segment ids are read already.
    pub fn older_seen(&mut self, tenant: &str, cdr_id: &str) -> Option<bool> {
        self.older.get(tenant).map(|ids| ids.contains(cdr_id))
    }

    /// The tenant's segment ids, read (each segment's value: ids one per line), kept;
    /// whether `cdr_id` is among them.
    pub fn older_read(&mut self, tenant: &str, values: &[Vec<u8>], cdr_id: &str) -> bool {
        let mut ids = HashSet::new();
        for v in values {
            if v.is_empty() {
                continue;
            }
            for id in String::from_utf8_lossy(v).split('\n') {
                ids.insert(id.to_owned());
            }
        }
        let seen = ids.contains(cdr_id);
        self.older.put(tenant.into(), ids);
        self.older.bound(|_| false);
        seen
    }

    /// Every changed account's writes (in the order they changed), then the held
    /// accounts bounded by the cache limit. `judged`: per partition, the (topic, last
    /// offset) pairs of the batch, written into the value (none for the sweep).
    pub fn plan<S: BuildHasher>(
        &mut self,
        judged: &std::collections::HashMap<i64, Vec<(String, i64)>, S>,
        horizon: i64,
    ) -> Vec<Planned> {
        let changed = std::mem::take(&mut self.changed);
        let mut out = Vec::with_capacity(changed.len());
        for (tenant, partition) in changed {
            let Some(Slot::Live(slot)) = self.accounts.get_mut(&tenant) else {
                continue; // not reachable: a changed account is held, decoded, until here
            };
            let recent = slot.acct.seen_cdrs.len();
            let segments = plan_segments(&mut slot.acct, &slot.durable, horizon, &mut self.older);
            if slot.acct.seen_cdrs.len() != recent {
                slot.ids = None; // ids moved out: encode them all again
            }
            let judged = judged.get(&partition).map(|v| v.as_slice());
            let value = encode_judged(&slot.acct, &mut slot.ids, judged);
            slot.durable = durable_ids(&slot.acct.seen_cdrs);
            out.push(Planned {
                due: due(&slot.acct),
                balance: slot.acct.balance(),
                threshold: slot.acct.low_balance_threshold,
                tenant,
                partition,
                segments,
                value,
            });
        }
        self.bound();
        self.idle();
        out
    }
}

/// The stored form with how far the batch judged the account's partition (`"in"`), as
/// `encode_account(acct, judged)` writes it; the recent ids from `ids` and into it.
pub fn encode_judged(
    acct: &Account,
    ids: &mut Option<Box<EncodedIds>>,
    judged: Option<&[(String, i64)]>,
) -> Vec<u8> {
    let sc = &acct.seen_cdrs;
    if ids
        .as_ref()
        .is_some_and(|c| c.pruned_at != acct.pruned_at || c.n > sc.len())
    {
        *ids = None;
    }
    if ids.is_none() && sc.len() >= IDS_KEPT_ENCODED {
        *ids = Some(Box::new(EncodedIds {
            pruned_at: acct.pruned_at,
            n: 0,
            body: Vec::with_capacity(40 * sc.len()),
        }));
    }
    let mut out = codec::encode_account_with(acct, &mut |out| {
        out.push(b'{');
        match ids.as_mut() {
            Some(c) => {
                if c.n < sc.len() {
                    if c.n > 0 {
                        c.body.push(b',');
                    }
                    codec::write_id_entries(&mut c.body, sc.iter_from(c.n));
                    c.n = sc.len();
                }
                out.extend_from_slice(&c.body);
            }
            None => codec::write_id_entries(out, sc.iter()),
        }
        out.push(b'}');
    });
    if let Some(j) = judged.filter(|j| !j.is_empty()) {
        out.pop(); // the closing brace
        out.extend_from_slice(b",\"in\":{");
        for (n, (topic, offset)) in j.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_str(&mut out, topic);
            out.push(b':');
            out.extend_from_slice(offset.to_string().as_bytes());
        }
        out.extend_from_slice(b"}}");
    }
    out
}

/// When the sweep is next due for the account (`AccountStore.note_due`): its first lot's
/// expiry, or its pending request's timeout, whichever comes first.
pub fn due(acct: &Account) -> Option<i64> {
    let lot = acct.lots.first().map(|l| l.expires_at);
    let request = acct.pending_request_id.as_ref().map(|_| {
        acct.pending_requested_at
            .saturating_add(RECHARGE_TIMEOUT + 1)
    });
    match (lot, request) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `IdSegments.plan`: segments whose ids are all past the horizon are deleted, and once
/// `SEGMENT_AT` of the durable ids are still recent they move into a new segment. Writes
/// to make (and acknowledge) before the account is written.
fn plan_segments(
    acct: &mut Account,
    durable: &[String],
    horizon: i64,
    older: &mut Generations<HashSet<String>>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut writes = Vec::new();
    if acct.id_segments.is_empty() && durable.len() < SEGMENT_AT {
        return writes;
    }
    let tenant = acct.tenant_id.clone();
    let cutoff = acct.cdr_watermark.saturating_sub(horizon);
    let mut keep = Vec::with_capacity(acct.id_segments.len() + 1);
    for &(n, latest) in &acct.id_segments {
        if latest < cutoff {
            writes.push((segment_key(&tenant, n), None));
            older.take(&tenant);
        } else {
            keep.push((n, latest));
        }
    }
    let recent = &mut acct.seen_cdrs;
    let moved: Vec<&String> = durable.iter().filter(|k| recent.contains_key(k)).collect();
    if moved.len() >= SEGMENT_AT {
        let n = acct.next_segment;
        acct.next_segment += 1;
        let latest = moved
            .iter()
            .map(|k| recent[k.as_str()])
            .max()
            .unwrap_or(i64::MIN);
        let mut value = Vec::with_capacity(moved.iter().map(|k| k.len() + 1).sum());
        for (i, k) in moved.iter().enumerate() {
            if i > 0 {
                value.push(b'\n');
            }
            value.extend_from_slice(k.as_bytes());
        }
        writes.push((segment_key(&tenant, n), Some(value)));
        let gone: HashSet<&str> = moved.iter().map(|k| k.as_str()).collect();
        recent.retain(|k, _| !gone.contains(k));
        keep.push((n, latest));
        if let Some(cached) = older.get_mut(&tenant) {
            cached.extend(moved.iter().map(|k| (*k).clone()));
        }
    }
    acct.id_segments = keep;
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(tenant: &str) -> Account {
        Account::new(tenant.into(), "p".into(), "USD".into())
    }

    #[test]
    fn generations_keep_what_was_used_last_and_stay_under_the_limit() {
        let mut g = Generations::new(3);
        for k in ["a", "b", "c"] {
            g.put(k.into(), 0);
        }
        g.bound(|_| false);
        assert_eq!(g.len(), 3);
        g.put("d".into(), 0);
        g.bound(|k| k != "a"); // all four turn old; one goes, not one `keep` names
        assert_eq!(g.len(), 3);
        assert!(g.contains("b") && g.contains("c") && g.contains("d"));
        g.put("b".into(), 1);
        g.put("e".into(), 1);
        g.bound(|k| k == "c"); // b and e were used since, c is kept: d goes
        assert!(g.contains("b") && g.contains("e") && g.contains("c") && !g.contains("d"));
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn an_account_unused_for_idle_after_batches_is_held_as_its_stored_form() {
        let mut h = Held::new(10, 2);
        let mut a = acct("t1");
        for i in 0..20i64 {
            a.seen_cdrs.insert(&format!("c{i}"), 100 + i);
        }
        let stored = codec::encode_account(&a);
        let judged = std::collections::HashMap::<i64, Vec<(String, i64)>>::new();
        h.begin(); // batch 1 uses it
        h.hold_read("t1", &stored).unwrap();
        h.plan(&judged, 1_000_000);
        h.begin(); // 2: the check runs; used one batch ago
        h.plan(&judged, 1_000_000);
        assert_eq!(h.idle_len(), 0);
        h.begin(); // 3
        h.plan(&judged, 1_000_000);
        h.begin(); // 4: the check runs; unused since batch 1
        h.plan(&judged, 1_000_000);
        assert_eq!((h.accounts.len(), h.idle_len()), (1, 1));
        assert_eq!(h.stored("t1").unwrap(), stored);
        assert_eq!(*h.lend("t1").unwrap().unwrap(), a);
    }

    #[test]
    fn judged_offsets_go_last_in_the_value_as_python_writes_them() {
        let a = acct("t1");
        let plain = codec::encode_account(&a);
        let v = encode_judged(
            &a,
            &mut None,
            Some(&[("cdrs".into(), 7), ("tenant-commands".into(), 3)]),
        );
        let mut expected = plain[..plain.len() - 1].to_vec();
        expected.extend_from_slice(br#","in":{"cdrs":7,"tenant-commands":3}}"#);
        assert_eq!(v, expected);
        assert_eq!(encode_judged(&a, &mut None, Some(&[])), plain);
    }

    #[test]
    fn ids_kept_encoded_give_the_bytes_of_a_whole_encoding_as_ids_are_added_and_pruned() {
        let mut a = acct("t1");
        let mut ids = None;
        for i in 0..100i64 {
            a.seen_cdrs.insert(&format!("c\"{i}"), 1000 + i);
            assert_eq!(encode_judged(&a, &mut ids, None), codec::encode_account(&a));
            assert_eq!(ids.is_some(), a.seen_cdrs.len() >= IDS_KEPT_ENCODED);
        }
        // A prune removes ids (and moves pruned_at): the kept bytes are not used.
        a.seen_cdrs.retain(|_, t| *t >= 1050);
        a.pruned_at = 5;
        assert_eq!(encode_judged(&a, &mut ids, None), codec::encode_account(&a));
        a.seen_cdrs.insert("late", 9);
        assert_eq!(encode_judged(&a, &mut ids, None), codec::encode_account(&a));
    }

    #[test]
    fn durable_ids_move_into_a_segment_once_there_are_segment_at_of_them() {
        let mut a = acct("t1");
        for i in 0..SEGMENT_AT {
            a.seen_cdrs.insert(&format!("c{i}"), 100 + i as i64);
        }
        let durable = durable_ids(&a.seen_cdrs);
        a.seen_cdrs.insert("new", 5_000);
        a.cdr_watermark = 5_000;
        let mut older = Generations::new(10);
        let w = plan_segments(&mut a, &durable, 1_000_000, &mut older);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, b"t1\x00ids\x000".to_vec());
        assert!(w[0].1.as_ref().unwrap().starts_with(b"c0\nc1\n"));
        assert_eq!(a.seen_cdrs.keys().collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(a.id_segments, vec![(0, 100 + SEGMENT_AT as i64 - 1)]);
        assert_eq!(a.next_segment, 1);
        // Past the horizon the segment is deleted.
        a.cdr_watermark = 10_000_000;
        let w = plan_segments(&mut a, &[], 1_000_000, &mut older);
        assert_eq!(w, vec![(b"t1\x00ids\x000".to_vec(), None)]);
        assert!(a.id_segments.is_empty());
    }

    #[test]
    fn due_is_the_first_lot_or_the_request_timeout_whichever_is_first() {
        let mut a = acct("t1");
        assert_eq!(due(&a), None);
        a.pending_request_id = Some("r".into());
        a.pending_requested_at = 10;
        assert_eq!(due(&a), Some(10 + RECHARGE_TIMEOUT + 1));
        a.lots.push(crate::ledger::Lot {
            lot_id: "l".into(),
            remaining: 1,
            purchased_at: 0,
            expires_at: 50,
            source: "manual".into(),
        });
        assert_eq!(due(&a), Some(50));
    }
}

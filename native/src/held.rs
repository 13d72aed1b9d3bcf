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
//!   `IdSegments.plan`), its changelog value (`encode_ids_into`, as `encode_account(acct,
//!   judged)`) and its sweep due time (as `AccountStore.note_due`): bytes for the
//!   commit pipeline, at the end of the batch, before the next batch changes the account.
//! - The number held is bounded by the worker's account cache (`Generations`).
//! - An account no batch used for `idle_after` batches is kept in its stored form (its
//!   changelog value, `Slot::Idle`: about a third of the memory of the decoded one) and
//!   decoded when a batch uses it again, as if read from the store.

use crate::codec::{self, Format};
use crate::idmap::touch_bytes;
use crate::index::TenantIndex;
use crate::json::Map;
use crate::ledger::{Account, RECHARGE_TIMEOUT};
use crate::rates::HashMap;
use compact_str::CompactString;
use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::BuildHasher;

/// The fewest recent ids that make a segment (rater/core/idsegments.py `SEGMENT_AT`).
pub const SEGMENT_AT: usize = 128;
/// Tenants whose segment ids are kept read, at least (`IdSegments(cache_tenants=2000)`);
/// the native store keeps as many as it holds accounts, if that is more (`OlderIds`).
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

/// Durable recent ids that make a new segment for an account listing `listed` segments
/// (`segment_at`): at least `least` (`SEGMENT_AT`, smaller in tests), and at least as
/// many as it lists.
pub fn segment_at(least: usize, listed: usize) -> usize {
    least.max(listed)
}

/// The recent ids the stored account holds, as far as `plan_segments` needs them: below
/// `segment_at` none (as `durable_ids`).
pub fn durable_ids(acct: &Account, least: usize) -> Vec<String> {
    let recent = &acct.seen_cdrs;
    if recent.len() >= segment_at(least, acct.id_segments.len()) {
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
/// same account, with the durable ids of a value read from the store) with where its
/// recent CDR ids' entries lie in it (the inside of its `"sc"` object): used again, the
/// account keeps those bytes as its `EncodedIds`, so its next write does not encode
/// every recent id anew.
pub enum Slot {
    Live(Box<Live>),
    Idle(Box<[u8]>, u32, u32),
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

/// Changed accounts `Held::plan` reads ahead of encoding them (`Held::touch`).
const PLAN_AHEAD: usize = 16;

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

/// One changed account, planned: its tenant, partition and segment writes (key, value;
/// None deletes). `plan` hands its changelog value beside it.
pub struct Planned {
    pub tenant: CompactString,
    pub partition: i64,
    pub segments: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

pub struct Held {
    /// Boxed (in `Slot`): a hash table's buckets are the size of its entries, and it keeps
    /// up to half of them empty; an account is several hundred bytes.
    pub accounts: Generations<Slot>,
    /// Batches begun (the clock of `idle_after`).
    batch: u64,
    idle_after: u64,
    /// The fewest durable ids that make a segment (`SEGMENT_AT`).
    segment_least: usize,
    /// The stored format of the values `plan` writes, and of idle accounts.
    pub format: Format,
    /// The durable and encoded ids of the accounts lent to the engine for this batch
    /// (when it has any).
    lent: HashMap<CompactString, (Vec<String>, Option<Box<EncodedIds>>)>,
    /// The accounts the batch (or the sweep) changed, in order, with their partition.
    pub changed: Map<CompactString, i64>,
    /// The ids in each tenant's segments, once read (`IdSegments.older_ids`), as hashes.
    older: Generations<OlderIds>,
    /// The hash of an id in `older` (a per-process random seed; tests make it collide).
    hasher: foldhash::fast::RandomState,
    id_hash: fn(&foldhash::fast::RandomState, &str) -> u64,
    /// Every account planned since the index was last cleared (a rebalance's rescan):
    /// when its sweep is due, its state. Not emptied with the held accounts.
    pub index: TenantIndex,
}

/// A tenant's segment ids, read: the 64-bit hash of each id with the segment it is in.
/// A hash not here answers exactly (the id is in no segment) without holding the ids
/// (about 20 bytes an id, against about 60 for the id itself); a hash here names the one
/// segment to read to confirm it, and a hash two ids share (not one in 2^64 pairs; they
/// keep the segment of the later one) is settled by reading them all. So the native store
/// keeps them for as many tenants as it holds accounts: a tenant that asks its segments
/// about every new id (every tenant with segments does) reads them once while held, not
/// once per batch when more tenants than `OLDER_TENANTS` are active.
pub type OlderIds = HashMap<u64, i64>;

/// What the held segment ids say about an id (`Held::older_seen`).
#[derive(Debug, PartialEq, Eq)]
pub enum Older {
    /// The tenant's segment ids are not held: read them all (`older_read`).
    Unread,
    /// In no segment.
    No,
    /// Maybe in this segment: read it to confirm (`older_confirm`).
    In(i64),
}

fn hash_id(state: &foldhash::fast::RandomState, id: &str) -> u64 {
    state.hash_one(id)
}

/// Whether the segment value (ids one per line) holds `cdr_id`.
pub fn segment_holds(value: &[u8], cdr_id: &str) -> bool {
    value
        .split(|b| *b == b'\n')
        .any(|line| line == cdr_id.as_bytes())
}

impl Held {
    pub fn new(limit: usize, idle_after: u64, segment_least: usize) -> Held {
        Held {
            accounts: Generations::new(limit),
            batch: 0,
            idle_after: idle_after.max(1),
            segment_least: segment_least.max(1),
            format: Format::default(),
            lent: HashMap::default(),
            changed: Map::default(),
            older: Generations::new(limit.max(OLDER_TENANTS)),
            hasher: foldhash::fast::RandomState::default(),
            id_hash: hash_id,
            index: TenantIndex::default(),
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

    /// Read what planning the held account of `tenant` reads (its slot, the account, its
    /// lots and remembered ids, or their kept encoding, and its tenant index entry) and
    /// return a value made of it, for `std::hint::black_box`: `plan` touches the next few
    /// accounts before it encodes them, so that their cache misses overlap.
    fn touch(&self, tenant: &str) -> u64 {
        let mut x = self.index.touch(tenant);
        if let Some(Slot::Live(slot)) = self.accounts.get(tenant) {
            let a = &slot.acct;
            x ^= (a.debt ^ a.pending_amount) as u64 ^ a.cdr_watermark as u64;
            x ^= a.lots.iter().fold(0, |x, l| x ^ l.remaining as u64);
            x ^= a.seen_commands.touch_all() ^ a.domestic_seconds_used.touch_all();
            x ^= match &slot.ids {
                Some(ids) => touch_bytes(&ids.body) ^ a.seen_cdrs.len() as u64,
                None => a.seen_cdrs.touch_all(),
            };
        }
        x
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
                    self.lent.insert(tenant.into(), (durable, ids));
                }
                Some(Ok(acct))
            }
            Slot::Idle(stored, a, z) => Some(self.lend_idle(tenant, &stored, a, z)),
        }
    }

    /// An idle account, for the engine's batch, its recent ids kept encoded from the
    /// stored form (the entries at `a..z`).
    fn lend_idle(
        &mut self,
        tenant: &str,
        stored: &[u8],
        a: u32,
        z: u32,
    ) -> Result<Box<Account>, String> {
        self.lend_stored(tenant, stored, Some(&stored[a as usize..z as usize]))
    }

    /// An account read from the store (its stored form), for the engine's batch.
    pub fn lend_read(&mut self, tenant: &str, stored: &[u8]) -> Result<Box<Account>, String> {
        self.lend_stored(tenant, stored, None)
    }

    /// A stored form decoded for the engine's batch, with its durable ids and, given the
    /// bytes of its recent ids' entries, those kept encoded.
    fn lend_stored(
        &mut self,
        tenant: &str,
        stored: &[u8],
        ids_body: Option<&[u8]>,
    ) -> Result<Box<Account>, String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let durable = durable_ids(&acct, self.segment_least);
        let ids = ids_body.and_then(|body| kept_ids(&acct, body));
        if !durable.is_empty() || ids.is_some() {
            self.lent.insert(tenant.into(), (durable, ids));
        }
        Ok(acct)
    }

    /// An account read from the store, held (not lent).
    pub fn hold_read(&mut self, tenant: &str, stored: &[u8]) -> Result<(), String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let durable = durable_ids(&acct, self.segment_least);
        let slot = self.live(acct, durable, None);
        self.accounts.put(tenant.into(), slot);
        self.bound();
        Ok(())
    }

    /// The held account in its stored form (without judged offsets), if held.
    pub fn stored(&self, tenant: &str) -> Option<Cow<'_, [u8]>> {
        Some(match self.accounts.get(tenant)? {
            Slot::Live(live) => Cow::Owned(codec::encode_account_as(&live.acct, self.format)),
            Slot::Idle(stored, ..) => Cow::Borrowed(stored),
        })
    }

    pub fn idle_len(&self) -> usize {
        self.accounts
            .values()
            .filter(|s| matches!(s, Slot::Idle(..)))
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
            let (stored, ids_at) = encode_ids(&live.acct, self.format, &mut live.ids);
            *slot = Slot::Idle(stored.into_boxed_slice(), ids_at.0, ids_at.1);
        }
    }

    /// Held accounts back under the cache limit; a changed account not yet planned stays.
    fn bound(&mut self) {
        let changed = &self.changed;
        self.accounts.bound(|k| changed.contains_key(k));
    }

    /// The engine's accounts come back at the end of its batch.
    pub fn end_batch(&mut self, engine_accounts: &mut HashMap<CompactString, Box<Account>>) {
        for (tenant, acct) in engine_accounts.drain() {
            let (durable, ids) = self.lent.remove(&tenant).unwrap_or_default();
            let slot = self.live(acct, durable, ids);
            self.accounts.put(tenant, slot);
        }
        self.lent.clear();
    }

    /// An account changed outside the engine (the sweep, in Python): its new value.
    pub fn put_changed(&mut self, stored: &[u8], partition: i64) -> Result<(), String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let tenant = acct.tenant_id.clone();
        let durable = match self.accounts.take(&tenant) {
            Some(Slot::Live(live)) => live.durable,
            Some(Slot::Idle(stored, ..)) => {
                durable_ids(&codec::decode_account(&stored)?, self.segment_least)
            }
            None => durable_ids(&acct, self.segment_least),
        };
        let slot = self.live(acct, durable, None);
        self.changed.insert(tenant.clone(), partition);
        self.accounts.put(tenant, slot);
        Ok(())
    }

    /// `IdSegments.seen_before`, as far as the held segment ids (`OlderIds`) answer it.
    pub fn older_seen(&self, tenant: &str, cdr_id: &str) -> Older {
        match self.older.get(tenant) {
            None => Older::Unread,
            Some(ids) => match ids.get(&(self.id_hash)(&self.hasher, cdr_id)) {
                None => Older::No,
                Some(&n) => Older::In(n),
            },
        }
    }

    /// The tenant's segments, read (segment number, value: ids one per line), kept as
    /// `OlderIds`; whether `cdr_id` is among them.
    pub fn older_read(&mut self, tenant: &str, values: &[(i64, Vec<u8>)], cdr_id: &str) -> bool {
        let mut ids = OlderIds::default();
        let mut seen = false;
        for (n, v) in values {
            if v.is_empty() {
                continue;
            }
            for id in v.split(|b| *b == b'\n') {
                let id = String::from_utf8_lossy(id);
                seen |= id == cdr_id;
                ids.insert((self.id_hash)(&self.hasher, &id), *n);
            }
        }
        self.older.put(tenant.into(), ids);
        self.older.bound(|_| false);
        seen
    }

    /// The tenant's segment ids are no longer kept (a read of them failed).
    pub fn older_forget(&mut self, tenant: &str) {
        self.older.take(tenant);
    }

    /// `IdSegments.seen_before` for the engine: from the held segment ids, reading (with
    /// `read(key)`) the one segment a hash names, or every segment `acct` lists when the
    /// ids are not held or the named segment does not hold the id (a shared hash).
    pub fn older_check(
        &mut self,
        acct: &Account,
        cdr_id: &str,
        read: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> bool {
        let tenant = acct.tenant_id.as_str();
        match self.older_seen(tenant, cdr_id) {
            Older::No => return false,
            Older::In(n) => {
                if read(&segment_key(tenant, n)).is_some_and(|v| segment_holds(&v, cdr_id)) {
                    return true;
                }
            }
            Older::Unread => {}
        }
        let values: Vec<(i64, Vec<u8>)> = acct
            .id_segments
            .iter()
            .filter_map(|&(n, _)| read(&segment_key(tenant, n)).map(|v| (n, v)))
            .collect();
        self.older_read(tenant, &values, cdr_id)
    }

    /// Every changed account's writes (in the order they changed), each noted in the
    /// tenant index and handed to `each` as it is planned, its changelog value in a buffer
    /// used again for the next (no allocation per account); then the held accounts
    /// bounded by the cache limit. `judged`: per partition, the (topic, last offset) pairs
    /// of the batch, written into the value (none for the sweep). An error from `each`
    /// stops the planning there; the accounts not yet planned are not (the worker then
    /// stops).
    pub fn plan<S: BuildHasher, E>(
        &mut self,
        judged: &std::collections::HashMap<i64, Vec<(String, i64)>, S>,
        horizon: i64,
        mut each: impl FnMut(Planned, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let changed = std::mem::take(&mut self.changed);
        let mut value = Vec::new();
        let mut done = Ok(());
        // The accounts a batch changed are scattered in memory, and planning one waits for
        // its reads one after another; reading the next few first overlaps their misses.
        let mut changed: Vec<(CompactString, i64)> = changed.into_iter().collect();
        for i in 0..changed.len() {
            if i % PLAN_AHEAD == 0 {
                let next = &changed[i..changed.len().min(i + PLAN_AHEAD)];
                std::hint::black_box(next.iter().fold(0, |x, (t, _)| x ^ self.touch(t)));
            }
            let (tenant, partition) = (std::mem::take(&mut changed[i].0), changed[i].1);
            let Some(Slot::Live(slot)) = self.accounts.get_mut(&tenant) else {
                continue; // not reachable: a changed account is held, decoded, until here
            };
            let recent = slot.acct.seen_cdrs.len();
            let segments = plan_segments(
                &mut slot.acct,
                &slot.durable,
                horizon,
                self.segment_least,
                &mut self.older,
                &|id| (self.id_hash)(&self.hasher, id),
            );
            if slot.acct.seen_cdrs.len() != recent {
                slot.ids = None; // ids moved out: encode them all again
            }
            let judged = judged.get(&partition).map(|v| v.as_slice());
            value.clear();
            encode_ids_into(&mut value, &slot.acct, self.format, &mut slot.ids, judged);
            slot.durable = durable_ids(&slot.acct, self.segment_least);
            let (balance, threshold) = (slot.acct.balance(), slot.acct.low_balance_threshold);
            self.index
                .note(&tenant, due(&slot.acct), balance, threshold);
            let planned = Planned {
                tenant,
                partition,
                segments,
            };
            done = each(planned, &value);
            if done.is_err() {
                break;
            }
        }
        self.bound();
        self.idle();
        done
    }
}

/// The kept form of an account's recent ids whose entries are `body` (what `encode_ids`
/// wrote for them), if it has enough of them to keep.
fn kept_ids(acct: &Account, body: &[u8]) -> Option<Box<EncodedIds>> {
    (acct.seen_cdrs.len() >= IDS_KEPT_ENCODED).then(|| {
        Box::new(EncodedIds {
            pruned_at: acct.pruned_at,
            n: acct.seen_cdrs.len(),
            body: body.to_vec(),
        })
    })
}

/// The stored form (`encode_account`, no judged offsets), the recent ids from `ids` and
/// into it, and where their entries lie in it (start and end: in format 1 the inside of
/// the `"sc"` object, in format 2 the entries after their count).
fn encode_ids(
    acct: &Account,
    format: Format,
    ids: &mut Option<Box<EncodedIds>>,
) -> (Vec<u8>, (u32, u32)) {
    let mut out = Vec::with_capacity(256 + 40 * (acct.seen_cdrs.len() + acct.seen_commands.len()));
    let at = encode_ids_into(&mut out, acct, format, ids, None);
    (out, at)
}

/// `encode_ids` with `judged`, appended to `out`; where the entries lie counts from the
/// start of `out`.
pub fn encode_ids_into(
    out: &mut Vec<u8>,
    acct: &Account,
    format: Format,
    ids: &mut Option<Box<EncodedIds>>,
    judged: Option<&[(String, i64)]>,
) -> (u32, u32) {
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
    // The entries from the `n`th on, appended: in format 2 each time is written as the
    // difference from the entry before it.
    let entries = |out: &mut Vec<u8>, n: usize| match format {
        Format::One => {
            if n > 0 && n < sc.len() {
                out.push(b',');
            }
            codec::write_id_entries(out, sc.iter_from(n));
        }
        Format::Two => {
            let prev = if n > 0 {
                sc.iter_from(n - 1).next().map_or(0, |e| e.1)
            } else {
                0
            };
            codec::write_map2_entries(out, sc.iter_from(n), prev);
        }
    };
    let mut at = (0, 0);
    codec::encode_account_into(out, acct, format, judged, &mut |out| {
        match format {
            Format::One => out.push(b'{'),
            Format::Two => codec::write_map2_count(out, sc.len()),
        }
        let start = out.len();
        match ids.as_mut() {
            Some(c) => {
                if c.n < sc.len() {
                    entries(&mut c.body, c.n);
                    c.n = sc.len();
                }
                out.extend_from_slice(&c.body);
            }
            None => entries(out, 0),
        }
        at = (start, out.len());
        if format == Format::One {
            out.push(b'}');
        }
    });
    let span = |n: usize| u32::try_from(n).expect("an account's stored form fits in 4 GiB");
    (span(at.0), span(at.1))
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
/// `segment_at` of the durable ids are still recent they move into a new segment. Writes
/// to make (and acknowledge) before the account is written.
fn plan_segments(
    acct: &mut Account,
    durable: &[String],
    horizon: i64,
    least: usize,
    older: &mut Generations<OlderIds>,
    hash: &dyn Fn(&str) -> u64,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut writes = Vec::new();
    if acct.id_segments.is_empty() && durable.len() < least {
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
    if moved.len() >= segment_at(least, keep.len()) {
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
            cached.extend(moved.iter().map(|k| (hash(k), n)));
        }
    }
    acct.id_segments = keep;
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored form with how far the batch judged the account's partition (`"in"`), as
    /// `encode_account(acct, judged, format)` writes it; the recent ids from `ids` and into it.
    fn encode_judged(
        acct: &Account,
        format: Format,
        ids: &mut Option<Box<EncodedIds>>,
        judged: Option<&[(String, i64)]>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        encode_ids_into(&mut out, acct, format, ids, judged);
        out
    }

    /// `Held::plan` for its effects on the held accounts.
    fn plan(h: &mut Held, judged: &std::collections::HashMap<i64, Vec<(String, i64)>>) {
        let done: Result<(), std::convert::Infallible> = h.plan(judged, 1_000_000, |_, _| Ok(()));
        let Ok(()) = done;
    }

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
        for format in [Format::One, Format::Two] {
            let mut h = Held::new(10, 2, SEGMENT_AT);
            h.format = format;
            let mut a = acct("t1");
            for i in 0..20i64 {
                a.seen_cdrs.insert(&format!("c{i}"), 100 + i);
            }
            let stored = codec::encode_account_as(&a, format);
            let judged = std::collections::HashMap::<i64, Vec<(String, i64)>>::new();
            h.begin(); // batch 1 uses it
            h.hold_read("t1", &stored).unwrap();
            plan(&mut h, &judged);
            h.begin(); // 2: the check runs; used one batch ago
            plan(&mut h, &judged);
            assert_eq!(h.idle_len(), 0);
            h.begin(); // 3
            plan(&mut h, &judged);
            h.begin(); // 4: the check runs; unused since batch 1
            plan(&mut h, &judged);
            assert_eq!((h.accounts.len(), h.idle_len()), (1, 1));
            assert_eq!(h.stored("t1").unwrap(), stored);
            assert_eq!(*h.lend("t1").unwrap().unwrap(), a);
        }
    }

    #[test]
    fn an_idle_account_used_again_keeps_its_recent_ids_encoded_from_its_stored_form() {
        for format in [Format::One, Format::Two] {
            let mut h = Held::new(10, 1, SEGMENT_AT);
            h.format = format;
            let mut a = acct("t1");
            for i in 0..20i64 {
                a.seen_cdrs.insert(&format!("c\"{i}"), 100 + i);
            }
            let judged = std::collections::HashMap::<i64, Vec<(String, i64)>>::new();
            h.begin(); // batch 1 uses it
            h.hold_read("t1", &codec::encode_account_as(&a, format))
                .unwrap();
            plan(&mut h, &judged);
            h.begin(); // 2: unused since batch 1
            plan(&mut h, &judged);
            assert_eq!(h.idle_len(), 1);
            let mut lent = h.lend("t1").unwrap().unwrap();
            assert_eq!(*lent, a);
            let (_, mut ids) = h.lent.remove("t1").unwrap();
            let kept = ids.as_ref().expect("its ids kept encoded");
            // The entries alone: format 1's "id":time pairs, format 2's id and the
            // difference from the time before (the first one's from 0).
            let whole: Vec<u8> = match format {
                Format::One => (0..20)
                    .map(|i| format!(r#""c\"{i}":{}"#, 100 + i))
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes(),
                Format::Two => (0..20u8)
                    .flat_map(|i| {
                        let id = format!("c\"{i}");
                        // The difference from the time before, zigzag: 100 is 200 (72 and
                        // 1 x 128: two bytes), 1 is 2.
                        let delta: &[u8] = if i == 0 { &[0xC8, 0x01] } else { &[0x02] };
                        let mut e = vec![id.len() as u8];
                        e.extend_from_slice(id.as_bytes());
                        e.extend_from_slice(delta);
                        e
                    })
                    .collect(),
            };
            assert_eq!(
                (kept.n, kept.pruned_at, &kept.body),
                (20, a.pruned_at, &whole)
            );
            // Its next write adds to them, and is the whole encoding.
            lent.seen_cdrs.insert("c20", 120);
            assert_eq!(
                encode_judged(&lent, format, &mut ids, None),
                codec::encode_account_as(&lent, format)
            );
            assert_eq!(ids.unwrap().n, 21);
        }
        // Fewer ids than are kept encoded: none kept.
        let few = acct("t2");
        assert!(kept_ids(&few, b"").is_none());
    }

    #[test]
    fn judged_offsets_go_where_python_writes_them() {
        let a = acct("t1");
        let judged = [("cdrs".into(), 7), ("tenant-commands".into(), 3)];
        // Format 1: an "in" object before the closing brace.
        let plain = codec::encode_account_as(&a, Format::One);
        let v = encode_judged(&a, Format::One, &mut None, Some(&judged));
        let mut expected = plain[..plain.len() - 1].to_vec();
        expected.extend_from_slice(br#","in":{"cdrs":7,"tenant-commands":3}}"#);
        assert_eq!(v, expected);
        assert_eq!(encode_judged(&a, Format::One, &mut None, Some(&[])), plain);
        // Format 2: the first field after the version, a count (0 in a value without) and
        // each topic with its offset (zigzag: 7 is 14, 3 is 6).
        let plain = codec::encode_account_as(&a, Format::Two);
        assert_eq!(plain[..2], [2, 0]);
        let v = encode_judged(&a, Format::Two, &mut None, Some(&judged));
        let mut expected = b"\x02\x02\x04cdrs\x0e\x0ftenant-commands\x06".to_vec();
        expected.extend_from_slice(&plain[2..]);
        assert_eq!(v, expected);
        assert_eq!(encode_judged(&a, Format::Two, &mut None, Some(&[])), plain);
    }

    #[test]
    fn ids_kept_encoded_give_the_bytes_of_a_whole_encoding_as_ids_are_added_and_pruned() {
        for format in [Format::One, Format::Two] {
            let whole = |a: &Account| codec::encode_account_as(a, format);
            let mut a = acct("t1");
            let mut ids = None;
            for i in 0..100i64 {
                // Times out of order too: format 2 writes differences, some negative.
                a.seen_cdrs
                    .insert(&format!("c\"{i}"), 1000 + i * (1 - 2 * (i % 3)));
                assert_eq!(encode_judged(&a, format, &mut ids, None), whole(&a));
                assert_eq!(ids.is_some(), a.seen_cdrs.len() >= IDS_KEPT_ENCODED);
            }
            // A prune removes ids (and moves pruned_at): the kept bytes are not used.
            a.seen_cdrs.retain(|_, t| *t >= 1050);
            a.pruned_at = 5;
            assert_eq!(encode_judged(&a, format, &mut ids, None), whole(&a));
            a.seen_cdrs.insert("late", 9);
            assert_eq!(encode_judged(&a, format, &mut ids, None), whole(&a));
            assert_eq!(codec::decode_account(&whole(&a)).unwrap(), a);
        }
    }

    #[test]
    fn durable_ids_move_into_a_segment_once_there_are_segment_at_of_them() {
        let mut a = acct("t1");
        for i in 0..SEGMENT_AT {
            a.seen_cdrs.insert(&format!("c{i}"), 100 + i as i64);
        }
        let durable = durable_ids(&a, SEGMENT_AT);
        a.seen_cdrs.insert("new", 5_000);
        a.cdr_watermark = 5_000;
        let mut older = Generations::new(10);
        let w = plan_segments(&mut a, &durable, 1_000_000, SEGMENT_AT, &mut older, &|id| {
            id.len() as u64
        });
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, b"t1\x00ids\x000".to_vec());
        assert!(w[0].1.as_ref().unwrap().starts_with(b"c0\nc1\n"));
        assert_eq!(a.seen_cdrs.keys().collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(a.id_segments, vec![(0, 100 + SEGMENT_AT as i64 - 1)]);
        assert_eq!(a.next_segment, 1);
        // Past the horizon the segment is deleted.
        a.cdr_watermark = 10_000_000;
        let w = plan_segments(&mut a, &[], 1_000_000, SEGMENT_AT, &mut older, &|id| {
            id.len() as u64
        });
        assert_eq!(w, vec![(b"t1\x00ids\x000".to_vec(), None)]);
        assert!(a.id_segments.is_empty());
    }

    #[test]
    fn an_account_listing_more_segments_than_the_least_moves_as_many_ids_as_it_lists() {
        // 5 segments listed, the least 3: 4 durable ids stay, 5 move.
        let mut a = acct("t1");
        a.id_segments = (0..5).map(|n| (n, 50 + n)).collect();
        a.next_segment = 5;
        a.cdr_watermark = 1_000;
        for i in 0..4i64 {
            a.seen_cdrs.insert(&format!("c{i}"), 100 + i);
        }
        let mut older = Generations::new(10);
        assert!(durable_ids(&a, 3).is_empty());
        let four: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        assert!(
            plan_segments(&mut a, &four, 1_000_000, 3, &mut older, &|id| id.len()
                as u64)
            .is_empty()
        );
        assert_eq!(a.seen_cdrs.len(), 4);
        a.seen_cdrs.insert("c4", 104);
        let durable = durable_ids(&a, 3);
        assert_eq!(durable.len(), 5);
        let w = plan_segments(&mut a, &durable, 1_000_000, 3, &mut older, &|id| {
            id.len() as u64
        });
        assert_eq!(
            w,
            vec![(
                b"t1\x00ids\x005".to_vec(),
                Some(b"c0\nc1\nc2\nc3\nc4".to_vec())
            )]
        );
        assert_eq!(a.id_segments.len(), 6);
        assert_eq!(a.id_segments[5], (5, 104));
        // Two listed segments past the horizon are deleted first; the threshold is then
        // taken from the four left (4 durable ids move).
        for i in 10..14i64 {
            a.seen_cdrs.insert(&format!("c{i}"), 200 + i);
        }
        a.cdr_watermark = 1_000 + 52;
        let durable: Vec<String> = (10..14).map(|i| format!("c{i}")).collect();
        let w = plan_segments(&mut a, &durable, 1_000, 3, &mut older, &|id| {
            id.len() as u64
        });
        let keys: Vec<&[u8]> = w.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            keys,
            vec![&b"t1\x00ids\x000"[..], b"t1\x00ids\x001", b"t1\x00ids\x006"]
        );
        assert_eq!(
            a.id_segments.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        assert!(a.seen_cdrs.is_empty());
    }

    /// A tenant with segments 0 (a, b) and 1 (c) in a store that counts its reads.
    fn two_segments() -> (Account, std::collections::HashMap<Vec<u8>, Vec<u8>>) {
        let mut a = acct("t1");
        a.id_segments = vec![(0, 10), (1, 20)];
        let mut store = std::collections::HashMap::new();
        store.insert(segment_key("t1", 0), b"a\nb".to_vec());
        store.insert(segment_key("t1", 1), b"c".to_vec());
        (a, store)
    }

    #[test]
    fn segment_ids_are_read_once_then_a_miss_reads_nothing_and_a_hit_reads_its_segment() {
        let (a, store) = two_segments();
        let mut h = Held::new(10, 2, SEGMENT_AT);
        let mut reads: Vec<Vec<u8>> = Vec::new();
        let mut read = |k: &[u8]| {
            reads.push(k.to_vec());
            store.get(k).cloned()
        };
        assert!(!h.older_check(&a, "x", &mut read)); // unread: both segments read
        assert!(!h.older_check(&a, "y", &mut read)); // a miss: nothing read
        assert!(h.older_check(&a, "c", &mut read)); // a hit: segment 1 read
        assert!(h.older_check(&a, "a", &mut read)); // segment 0
        let s0 = segment_key("t1", 0);
        let s1 = segment_key("t1", 1);
        assert_eq!(reads, vec![s0.clone(), s1.clone(), s1, s0]);
    }

    #[test]
    fn ids_that_share_a_hash_are_settled_by_reading_every_segment() {
        let (a, store) = two_segments();
        let mut h = Held::new(10, 2, SEGMENT_AT);
        h.id_hash = |_, _| 7; // every id one hash: it names the segment read last (1)
        let mut reads = 0;
        let mut read = |k: &[u8]| {
            reads += 1;
            store.get(k).cloned()
        };
        assert!(h.older_check(&a, "b", &mut read)); // unread: 2 reads
        assert_eq!(h.older_seen("t1", "b"), Older::In(1));
        assert!(h.older_check(&a, "a", &mut read)); // segment 1 does not hold it: 1 + 2 reads
        assert!(!h.older_check(&a, "z", &mut read)); // in none: 1 + 2 reads
        assert!(h.older_check(&a, "c", &mut read)); // 1 read
        assert_eq!(reads, 2 + 3 + 3 + 1);
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

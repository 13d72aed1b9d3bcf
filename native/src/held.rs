//! The Kafka worker's accounts between batches, held natively: the account cache of the
//! native batch step (rater/worker/store.py `NativeAccountStore`), the same rules as the
//! Python `AccountStore` and `IdSegments` (rater/core/idsegments.py) keep for Python
//! `Account` objects.
//!
//! - Between batches each held account is the value its last batch wrote (or the store
//!   held), with its *durable* ids: the recent ids of that value, which alone may move
//!   into a segment (`durable_ids`).
//! - During a batch the engine rates against the decoded held accounts in place: `begin`
//!   hands it the whole map (a swap, no account moves), an idle account or one read from
//!   the store joins it when a record asks (`lend_idle`, `lend_read`), and `end_batch`
//!   takes the map back; the accounts the batch changed are listed in order (`changed`).
//! - `plan` makes, per changed account, its segment writes (`plan_segments`, as
//!   `IdSegments.plan`), its changelog value (`encode_ids_into`, as `encode_account(acct,
//!   judged)`) and its sweep due time (as `AccountStore.note_due`): bytes for the
//!   commit pipeline, at the end of the batch, before the next batch changes the account.
//! - The number held is bounded by the worker's account cache, in two generations
//!   (`bound`): an account counts as used by the batch that read it in or changed it.
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

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn get(&self, k: &str) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    fn get_mut(&mut self, k: &str) -> Option<&mut V> {
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
}

/// What is held beside a decoded account: its durable ids (most accounts have none, which
/// allocates nothing), its recent CDR ids as last encoded, and the batch that last used it.
#[derive(Default)]
pub struct Note {
    durable: Box<[String]>,
    ids: Option<Box<EncodedIds>>,
    used: u64,
}

impl Note {
    fn new(durable: Vec<String>, ids: Option<Box<EncodedIds>>, used: u64) -> Note {
        Note {
            durable: durable.into_boxed_slice(),
            ids,
            used,
        }
    }
}

/// An idle account: its stored form (which decodes to the same account, with the durable
/// ids of a value read from the store), where its recent CDR ids' entries lie in it, and
/// the batch that last used it. Used again, the account keeps those bytes as its
/// `EncodedIds`, so its next write does not encode every recent id anew.
pub struct Idle {
    stored: Box<[u8]>,
    ids_at: (u32, u32),
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
    /// The decoded accounts, which the engine rates against in place: `begin` moves the
    /// whole map into the engine (`Engine::accounts`, a swap) and `end_batch` takes it
    /// back, with the accounts the batch read in. Boxed: a hash table's buckets are the
    /// size of its entries, and it keeps up to half of them empty.
    live: HashMap<CompactString, Box<Account>>,
    /// Beside each decoded account, also while the engine has it.
    notes: HashMap<CompactString, Note>,
    /// The accounts no batch used for `idle_after` batches, in their stored form.
    idle: HashMap<CompactString, Idle>,
    /// The accounts held at most between batches (the worker's account cache).
    limit: usize,
    /// Between `begin` and `end_batch`: the decoded accounts are the engine's.
    in_batch: bool,
    /// Batches begun (the clock of `idle_after` and of the cache's generations).
    batch: u64,
    /// The first batch of the cache's young generation (`bound`).
    turn: u64,
    idle_after: u64,
    /// The fewest durable ids that make a segment (`SEGMENT_AT`).
    segment_least: usize,
    /// The stored format of the values `plan` writes, and of idle accounts.
    pub format: Format,
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
            live: HashMap::default(),
            notes: HashMap::default(),
            idle: HashMap::default(),
            limit,
            in_batch: false,
            batch: 0,
            turn: 0,
            idle_after: idle_after.max(1),
            segment_least: segment_least.max(1),
            format: Format::default(),
            changed: Map::default(),
            older: Generations::new(limit.max(OLDER_TENANTS)),
            hasher: foldhash::fast::RandomState::default(),
            id_hash: hash_id,
            index: TenantIndex::default(),
        }
    }

    /// Accounts held, decoded or idle (between batches; during one, the engine has the
    /// decoded ones).
    pub fn len(&self) -> usize {
        self.live.len() + self.idle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// Whether the tenant's account is held (decoded and not the engine's now, or idle).
    pub fn contains(&self, tenant: &str) -> bool {
        self.live.contains_key(tenant) || self.idle.contains_key(tenant)
    }

    /// Another worker may change these accounts from now on: hold none of them.
    pub fn clear(&mut self) {
        self.clear_accounts();
        self.older.clear();
    }

    /// Hold no account (a rebalance, a failed sweep): nor any change not planned. During
    /// a batch the engine's accounts are dropped at its end (`end_batch`), not taken back.
    pub fn clear_accounts(&mut self) {
        self.live.clear();
        self.notes.clear();
        self.idle.clear();
        self.changed.clear();
        self.in_batch = false;
    }

    /// Read what planning the held account of `tenant` reads (the account, its lots and
    /// remembered ids, or their kept encoding, and its tenant index entry) and return a
    /// value made of it, for `std::hint::black_box`: `plan` touches the next few accounts
    /// before it encodes them, so that their cache misses overlap.
    fn touch(&self, tenant: &str) -> u64 {
        let mut x = self.index.touch(tenant);
        if let Some(a) = self.live.get(tenant) {
            x ^= (a.debt ^ a.pending_amount) as u64 ^ a.cdr_watermark as u64;
            x ^= a.lots.iter().fold(0, |x, l| x ^ l.remaining as u64);
            x ^= a.seen_commands.touch_all() ^ a.domestic_seconds_used.touch_all();
            x ^= match self.notes.get(tenant).and_then(|n| n.ids.as_ref()) {
                Some(ids) => touch_bytes(&ids.body) ^ a.seen_cdrs.len() as u64,
                None => a.seen_cdrs.touch_all(),
            };
        }
        x
    }

    /// A batch starts: the engine's accounts (`engine_accounts`, emptied first) become
    /// the decoded held ones, to rate against in place. A batch begun before and never
    /// ended (it failed) may have changed them: they are all dropped, and read again.
    pub fn begin(&mut self, engine_accounts: &mut HashMap<CompactString, Box<Account>>) {
        if self.in_batch {
            for tenant in engine_accounts.keys() {
                self.notes.remove(tenant.as_str());
            }
        }
        engine_accounts.clear();
        std::mem::swap(engine_accounts, &mut self.live);
        self.in_batch = true;
        self.changed.clear();
        self.batch += 1;
    }

    /// The batch is rated: the engine's accounts are held again, with those it read in
    /// or created (noted when `plan` plans them: a created account is a changed one).
    /// After a `clear` during the batch (a stop), none of them is.
    pub fn end_batch(&mut self, engine_accounts: &mut HashMap<CompactString, Box<Account>>) {
        if self.in_batch {
            std::mem::swap(engine_accounts, &mut self.live);
        } else {
            let live = &self.live;
            self.notes.retain(|t, _| live.contains_key(t.as_str()));
        }
        engine_accounts.clear();
        self.in_batch = false;
    }

    /// The idle account of `tenant`, decoded for the engine's batch (which holds it from
    /// now on), its recent ids kept encoded from the stored form. `Err`: a stored form
    /// that does not decode (not reachable: it was encoded here).
    pub fn lend_idle(&mut self, tenant: &str) -> Option<Result<Box<Account>, String>> {
        let idle = self.idle.remove(tenant)?;
        let (a, z) = (idle.ids_at.0 as usize, idle.ids_at.1 as usize);
        Some(self.decode_noted(tenant, &idle.stored, Some(&idle.stored[a..z])))
    }

    /// An account read from the store (its stored form), for the engine's batch.
    pub fn lend_read(&mut self, tenant: &str, stored: &[u8]) -> Result<Box<Account>, String> {
        self.decode_noted(tenant, stored, None)
    }

    /// A stored form decoded, noted as used now (for the engine's batch, or to hold) with
    /// its durable ids and, given the bytes of its recent ids' entries, those kept encoded.
    fn decode_noted(
        &mut self,
        tenant: &str,
        stored: &[u8],
        ids_body: Option<&[u8]>,
    ) -> Result<Box<Account>, String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let durable = durable_ids(&acct, self.segment_least);
        let ids = ids_body.and_then(|body| kept_ids(&acct, body));
        self.notes
            .insert(tenant.into(), Note::new(durable, ids, self.batch));
        Ok(acct)
    }

    /// An account read from the store, held (not lent): into `engine_accounts` during a
    /// batch, else among the decoded held accounts.
    pub fn hold_read(
        &mut self,
        tenant: &str,
        stored: &[u8],
        engine_accounts: &mut HashMap<CompactString, Box<Account>>,
    ) -> Result<(), String> {
        let acct = self.decode_noted(tenant, stored, None)?;
        self.idle.remove(tenant);
        if self.in_batch {
            engine_accounts.insert(tenant.into(), acct);
        } else {
            self.live.insert(tenant.into(), acct);
            self.bound();
        }
        Ok(())
    }

    /// Whether a batch has begun and not ended (the held accounts are the engine's).
    pub fn in_batch(&self) -> bool {
        self.in_batch
    }

    /// The held account in its stored form (without judged offsets), if held.
    pub fn stored(&self, tenant: &str) -> Option<Cow<'_, [u8]>> {
        if let Some(a) = self.live.get(tenant) {
            return Some(Cow::Owned(codec::encode_account_as(a, self.format)));
        }
        self.idle.get(tenant).map(|i| Cow::Borrowed(&*i.stored))
    }

    /// Every decoded account no batch used for `idle_after` batches, kept in its stored
    /// form instead. Run at the end of `plan`, when every changed account is planned
    /// (its held value is the one being written), once every `idle_after` batches, so an
    /// account stays decoded for `idle_after` to twice as many batches after its last use.
    fn idle(&mut self) {
        if !self.batch.is_multiple_of(self.idle_after) || self.in_batch {
            return;
        }
        let since = self.batch.saturating_sub(self.idle_after);
        let (live, notes, idle, format) =
            (&mut self.live, &mut self.notes, &mut self.idle, self.format);
        live.retain(|tenant, acct| {
            let Some(note) = notes.get_mut(tenant.as_str()) else {
                return true; // not reachable: every decoded account has its note
            };
            if note.used > since {
                return true;
            }
            let (stored, ids_at) = encode_ids(acct, format, &mut note.ids);
            let used = note.used;
            notes.remove(tenant.as_str());
            idle.insert(
                tenant.clone(),
                Idle {
                    stored: stored.into_boxed_slice(),
                    ids_at,
                    used,
                },
            );
            false
        });
    }

    /// Held accounts back under the cache limit, in two generations as `Generations`
    /// keeps them: what was used since the last turn (`Note::used`, `Idle::used` at or
    /// after `turn`) and before it. Over the limit, the older generation goes and a turn
    /// begins; if what is left is still over the limit, as many more go. A changed account
    /// not yet planned stays.
    fn bound(&mut self) {
        if self.len() <= self.limit {
            return;
        }
        let (turn, changed) = (self.turn, &self.changed);
        let young = |t: &CompactString, used: u64| used >= turn || changed.contains_key(t.as_str());
        self.notes.retain(|t, n| young(t, n.used));
        let notes = &self.notes;
        self.live.retain(|t, _| notes.contains_key(t.as_str()));
        self.idle.retain(|t, i| young(t, i.used));
        self.turn = self.batch + 1;
        let over = self.len().saturating_sub(self.limit);
        if over > 0 {
            let changed = &self.changed;
            let gone: Vec<CompactString> = self
                .live
                .keys()
                .chain(self.idle.keys())
                .filter(|t| !changed.contains_key(t.as_str()))
                .take(over)
                .cloned()
                .collect();
            for t in &gone {
                self.live.remove(t.as_str());
                self.notes.remove(t.as_str());
                self.idle.remove(t.as_str());
            }
        }
    }

    /// An account changed outside the engine (the sweep, in Python): its new value.
    pub fn put_changed(&mut self, stored: &[u8], partition: i64) -> Result<(), String> {
        let acct = Box::new(codec::decode_account(stored)?);
        let tenant = acct.tenant_id.clone();
        let durable = if self.live.remove(tenant.as_str()).is_some() {
            self.notes
                .remove(tenant.as_str())
                .map_or_else(Vec::new, |n| n.durable.into_vec())
        } else if let Some(idle) = self.idle.remove(tenant.as_str()) {
            durable_ids(&codec::decode_account(&idle.stored)?, self.segment_least)
        } else {
            durable_ids(&acct, self.segment_least)
        };
        self.notes
            .insert(tenant.clone(), Note::new(durable, None, self.batch));
        self.changed.insert(tenant.clone(), partition);
        self.live.insert(tenant, acct);
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
            let Some(acct) = self.live.get_mut(tenant.as_str()) else {
                continue; // not reachable: a changed account is held, decoded, until here
            };
            // A changed account was used now (one the batch created is noted here first).
            let note = self.notes.entry(tenant.clone()).or_default();
            note.used = self.batch;
            let recent = acct.seen_cdrs.len();
            let segments = plan_segments(
                acct,
                &note.durable,
                horizon,
                self.segment_least,
                &mut self.older,
                &|id| (self.id_hash)(&self.hasher, id),
            );
            if acct.seen_cdrs.len() != recent {
                note.ids = None; // ids moved out: encode them all again
            }
            let judged = judged.get(&partition).map(|v| v.as_slice());
            value.clear();
            encode_ids_into(&mut value, acct, self.format, &mut note.ids, judged);
            note.durable = durable_ids(acct, self.segment_least).into_boxed_slice();
            let (balance, threshold) = (acct.balance(), acct.low_balance_threshold);
            self.index.note(&tenant, due(acct), balance, threshold);
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

    type Accounts = HashMap<CompactString, Box<Account>>;

    /// A batch that uses no account: begun, ended, planned.
    fn unused_batch(h: &mut Held, engine: &mut Accounts) {
        h.begin(engine);
        h.end_batch(engine);
        plan(h, &std::collections::HashMap::new());
    }

    fn acct(tenant: &str) -> Account {
        Account::new(tenant.into(), "p".into(), "USD".into())
    }

    #[test]
    fn generations_keep_what_was_used_last_and_stay_under_the_limit() {
        let has = |g: &Generations<i32>, k: &str| g.get(k).is_some();
        let mut g = Generations::new(3);
        for k in ["a", "b", "c"] {
            g.put(k.into(), 0);
        }
        g.bound(|_| false);
        assert_eq!(g.len(), 3);
        g.put("d".into(), 0);
        g.bound(|k| k != "a"); // all four turn old; one goes, not one `keep` names
        assert_eq!(g.len(), 3);
        assert!(has(&g, "b") && has(&g, "c") && has(&g, "d"));
        g.put("b".into(), 1);
        g.put("e".into(), 1);
        g.bound(|k| k == "c"); // b and e were used since, c is kept: d goes
        assert!(has(&g, "b") && has(&g, "e") && has(&g, "c") && !has(&g, "d"));
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
            let mut engine = Accounts::default();
            h.begin(&mut engine); // batch 1 uses it: the engine holds it
            h.hold_read("t1", &stored, &mut engine).unwrap();
            assert_eq!((engine.len(), h.len()), (1, 0));
            h.end_batch(&mut engine);
            assert_eq!((engine.len(), h.len()), (0, 1));
            plan(&mut h, &judged);
            unused_batch(&mut h, &mut engine); // 2: the check runs; used one batch ago
            assert_eq!(h.idle_len(), 0);
            unused_batch(&mut h, &mut engine); // 3
            h.begin(&mut engine); // 4: the engine has it, decoded
            assert_eq!((engine.len(), h.len()), (1, 0));
            h.end_batch(&mut engine);
            plan(&mut h, &judged); // the check runs; unused since batch 1
            assert_eq!((h.len(), h.idle_len()), (1, 1));
            assert_eq!(h.stored("t1").unwrap(), stored);
            h.begin(&mut engine); // 5: idle, not the engine's until it asks
            assert!(engine.is_empty());
            assert_eq!(*h.lend_idle("t1").unwrap().unwrap(), a);
            assert_eq!(h.len(), 0);
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
            let mut engine = Accounts::default();
            h.begin(&mut engine); // batch 1 uses it
            h.hold_read("t1", &codec::encode_account_as(&a, format), &mut engine)
                .unwrap();
            h.end_batch(&mut engine);
            plan(&mut h, &std::collections::HashMap::new());
            unused_batch(&mut h, &mut engine); // 2: unused since batch 1
            assert_eq!(h.idle_len(), 1);
            h.begin(&mut engine);
            let mut lent = h.lend_idle("t1").unwrap().unwrap();
            assert_eq!(*lent, a);
            let mut ids = h.notes.remove("t1").unwrap().ids;
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
    fn the_engine_rates_the_held_accounts_in_place_and_hands_them_back_with_those_it_made() {
        let mut h = Held::new(10, 100, SEGMENT_AT);
        let mut engine = Accounts::default();
        let t1 = codec::encode_account_as(&acct("t1"), Format::Two);
        h.hold_read("t1", &t1, &mut engine).unwrap(); // between batches: held here
        assert_eq!((h.len(), engine.len()), (1, 0));
        h.begin(&mut engine);
        assert_eq!((h.len(), engine.len()), (0, 1));
        assert!(engine.contains_key("t1"));
        // The batch creates t2 (a configure_account) and changes it.
        engine.insert("t2".into(), Box::new(acct("t2")));
        h.changed.insert("t2".into(), 3);
        h.end_batch(&mut engine);
        assert_eq!((h.len(), engine.len()), (2, 0));
        let mut planned = Vec::new();
        let done: Result<(), std::convert::Infallible> =
            h.plan(&std::collections::HashMap::new(), 1_000_000, |p, value| {
                planned.push((p.tenant.to_string(), p.partition, value.to_vec()));
                Ok(())
            });
        let Ok(()) = done;
        let t2 = codec::encode_account_as(&acct("t2"), Format::Two);
        assert_eq!(planned, vec![("t2".to_string(), 3, t2)]);
        assert_eq!(h.notes["t2"].used, 1); // noted as used by batch 1 when planned
        assert_eq!(h.stored("t1").unwrap(), t1);
    }

    #[test]
    fn a_clear_during_a_batch_drops_the_engines_accounts_at_its_end() {
        let mut h = Held::new(10, 100, SEGMENT_AT);
        let mut engine = Accounts::default();
        let t1 = codec::encode_account_as(&acct("t1"), Format::Two);
        h.hold_read("t1", &t1, &mut engine).unwrap();
        h.begin(&mut engine);
        engine.insert("t2".into(), Box::new(acct("t2")));
        h.changed.insert("t2".into(), 0);
        h.clear(); // the app stops in the middle of the batch
        h.end_batch(&mut engine);
        assert_eq!((h.len(), engine.len(), h.notes.len()), (0, 0, 0));
        h.begin(&mut engine); // the next batch starts from the store
        assert!(engine.is_empty());
        // A batch that failed (never ended): the next one drops what it had.
        h.hold_read("t1", &t1, &mut engine).unwrap(); // during batch 2: the engine's
        h.begin(&mut engine);
        assert_eq!((h.len(), engine.len(), h.notes.len()), (0, 0, 0));
    }

    #[test]
    fn over_the_limit_what_was_not_used_since_the_last_turn_goes_and_a_changed_one_stays() {
        let stored = |t: &str| codec::encode_account_as(&acct(t), Format::Two);
        let mut h = Held::new(2, 100, SEGMENT_AT);
        let mut engine = Accounts::default();
        let judged = std::collections::HashMap::new();
        h.begin(&mut engine); // batch 1 reads three: over the limit, one goes
        for t in ["t1", "t2", "t3"] {
            h.hold_read(t, &stored(t), &mut engine).unwrap();
        }
        h.end_batch(&mut engine);
        plan(&mut h, &judged);
        let kept: Vec<&str> = ["t1", "t2", "t3"]
            .into_iter()
            .filter(|t| h.contains(t))
            .collect();
        assert_eq!(kept.len(), 2);
        // Batch 2 reads t4 and changes kept[0]: kept[1], unused since the turn, goes.
        h.begin(&mut engine);
        h.hold_read("t4", &stored("t4"), &mut engine).unwrap();
        h.changed.insert(kept[0].into(), 0);
        h.end_batch(&mut engine);
        plan(&mut h, &judged);
        assert!(h.contains(kept[0]) && h.contains("t4") && !h.contains(kept[1]));
        assert_eq!((h.len(), h.notes.len()), (2, 2));
        // The sweep changes t4; reading t5 before it is planned leaves t4 held.
        let mut h = Held::new(1, 100, SEGMENT_AT);
        h.hold_read("t1", &stored("t1"), &mut engine).unwrap();
        h.put_changed(&stored("t4"), 0).unwrap();
        h.hold_read("t5", &stored("t5"), &mut engine).unwrap();
        assert!(h.contains("t4") && !h.contains("t1") && !h.contains("t5"));
        assert_eq!(h.len(), 1);
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

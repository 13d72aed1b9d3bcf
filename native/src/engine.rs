//! One input record's bytes to its outputs' bytes, for every driver: decode (`records`),
//! apply (`ledger`), and a refusal turned into the reject record of SPEC 8. The accounts
//! are held here, natively; the driver hands them in and takes them out encoded.

use crate::json::{write_str, Obj};
use crate::ledger::{self, Account, Outcome, Status};
use crate::rates::HashMap;
use crate::rates::Tables;
use crate::records::{decode, Invalid, Record};
use compact_str::CompactString;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Where a record came from, as the reject names it.
pub enum Source<'a> {
    File {
        file: &'a str,
        line: u64,
    },
    Kafka {
        topic: &'a str,
        partition: i64,
        offset: i64,
    },
}

#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub outcomes: HashMap<(&'static str, &'static str), u64>,
    pub reasons: HashMap<&'static str, u64>,
    /// (currency, call type) -> micro-units; a handful of entries, searched in order.
    pub charged: Vec<((String, &'static str), i128)>,
    pub billable: HashMap<&'static str, i64>,
    pub events: HashMap<&'static str, u64>,
    pub recharge_failures: HashMap<String, u64>,
}

impl Tally {
    fn add(
        &mut self,
        kind: &'static str,
        out: &Outcome,
        call_type: Option<&'static str>,
        currency: Option<&str>,
    ) {
        *self.outcomes.entry((kind, out.status.name())).or_default() += 1;
        if out.status == Status::Rejected {
            *self.reasons.entry(out.reason).or_default() += 1;
        }
        if out.rated.is_some() {
            let ct = call_type.expect("a rated record is a CDR");
            let currency = currency.unwrap_or_default();
            let charged = &mut self.charged;
            match charged
                .iter_mut()
                .find(|((c, t), _)| *t == ct && c == currency)
            {
                Some((_, n)) => *n += out.charge,
                None => charged.push(((currency.to_owned(), ct), out.charge)),
            }
            *self.billable.entry(ct).or_default() += out.billable_seconds;
        }
        for t in &out.event_types {
            *self.events.entry(t).or_default() += 1;
        }
        for r in &out.recharge_failures {
            *self.recharge_failures.entry(r.clone()).or_default() += 1;
        }
    }
}

/// The outputs of records as JSON lines, appended in order.
#[derive(Default)]
pub struct Outputs {
    pub rated: Vec<u8>,
    pub events: Vec<u8>,
    pub requests: Vec<u8>,
    pub rejects: Vec<u8>,
}

fn push_line(sink: &mut Vec<u8>, item: &[u8]) {
    sink.extend_from_slice(item);
    sink.push(b'\n');
}

/// `records::decode`, after the size bound (rater/core/bounds.py): a larger input is refused
/// before it is parsed. Pure: `rate_lines` runs it on a second thread.
fn decode_bounded<'r>(
    raw: Option<&'r [u8]>,
    key: Option<&str>,
    max_record_bytes: usize,
) -> Result<Record<'r>, Invalid> {
    match raw {
        Some(r) if r.len() > max_record_bytes => Err(Invalid {
            reason: "invalid_record",
            detail: too_large_detail(r.len(), max_record_bytes),
            tenant_id: None,
        }),
        _ => decode(raw, key),
    }
}

/// The non-blank lines of a chunk with their numbers, as `rater rate` reads them: `\r`/`\n`
/// stripped from a line's end, blank lines skipped but counted.
fn lines(data: &[u8], first_line: u64) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = data;
    let mut lineno = first_line;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (line, next) = match find_newline(rest) {
                Some(i) => (&rest[..i + 1], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            let mut end = line.len();
            while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
                end -= 1;
            }
            let raw = &line[..end];
            let this_line = lineno;
            lineno += 1;
            if !raw
                .iter()
                .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
            {
                return Some((this_line, raw));
            }
        }
        None
    })
}

/// Lines decoded ahead by `rate_lines`'s second thread, handed over this many at a time.
const DECODE_BATCH: usize = 256;
/// Records whose accounts are touched together before they are applied (`Engine::warm`):
/// 16 rated the benchmark's input fastest of 8, 16 and 32 (and of 64 with a lighter touch).
const WARM_AHEAD: usize = 16;
/// A chunk smaller than this is rated on one thread (a thread costs more than it saves).
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// The position of the first `\n`, eight bytes at a time.
fn find_newline(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= b.len() {
        let w =
            u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes")) ^ (ONES * b'\n' as u64);
        if w.wrapping_sub(ONES) & !w & HIGH != 0 {
            break;
        }
        i += 8;
    }
    b[i..].iter().position(|c| *c == b'\n').map(|p| i + p)
}

pub struct Processed {
    pub kind: &'static str,
    /// Inline up to 24 bytes (`CompactString`): no allocation per record for most ids.
    pub tenant_id: Option<CompactString>,
    pub outcome: Outcome,
    pub reject: Option<Vec<u8>>,
}

/// `Processed` with the tenant id borrowed from the input where it can be (the offline
/// path does not keep it).
struct Handled<'r> {
    kind: &'static str,
    tenant_id: Option<Cow<'r, str>>,
    outcome: Outcome,
    reject: Option<Vec<u8>>,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// rater/core/bounds.py: the input bytes a reject's `raw` holds at most, and the largest input.
pub const RAW_LIMIT: usize = 16 * 1024;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 512 * 1024;

/// The longest prefix of `b` that is whole UTF-8 characters (b is a prefix of UTF-8 text).
fn utf8_prefix(b: &[u8]) -> &[u8] {
    match std::str::from_utf8(b) {
        Ok(_) => b,
        Err(e) => &b[..e.valid_up_to()],
    }
}

pub fn too_large_detail(size: usize, limit: usize) -> String {
    format!("record too large: {size} bytes, the limit is {limit} (--max-record-bytes)")
}

pub fn reject_record(
    reason: &str,
    detail: &str,
    raw: &[u8],
    source: &Source,
    tenant_id: Option<&str>,
) -> Vec<u8> {
    // rater/core/bounds.py raw_fields: at most RAW_LIMIT bytes of the input; text or base64 by
    // what the whole input is; a cut inside a character drops that character's bytes.
    let cut = &raw[..raw.len().min(RAW_LIMIT)];
    let (text, encoding) = match std::str::from_utf8(raw) {
        Ok(_) => (
            String::from_utf8_lossy(utf8_prefix(cut)).into_owned(),
            "utf-8",
        ),
        Err(_) => (base64(cut), "base64"),
    };
    let where_ = match source {
        Source::File { file, line } => format!("{file}\x1f{line}"),
        Source::Kafka {
            topic,
            partition,
            offset,
        } => format!("{topic}\x1f{partition}\x1f{offset}"),
    };
    let mut out = Vec::with_capacity(200 + raw.len());
    let mut o = Obj::new(&mut out);
    o.str(
        "event_id",
        &ledger::event_id(tenant_id.unwrap_or(""), "reject", &where_, "reject", ""),
    )
    .str("reason", reason)
    .str("detail", detail)
    .opt_str("tenant_id", tenant_id);
    {
        let k = o.key("source");
        let mut s = Obj::new(k);
        match source {
            Source::File { file, line } => {
                s.str("file", file).int("line", *line as i128);
            }
            Source::Kafka {
                topic,
                partition,
                offset,
            } => {
                s.str("topic", topic)
                    .int("partition", *partition as i128)
                    .int("offset", *offset as i128);
            }
        }
        s.end();
    }
    {
        let k = o.key("raw");
        write_str(k, &text);
    }
    o.str("raw_encoding", encoding);
    if cut.len() < raw.len() {
        let digest = Sha256::digest(raw);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        o.bool("raw_truncated", true)
            .int("raw_size", raw.len() as i128)
            .str("raw_sha256", &hex);
    }
    o.end();
    out
}

/// Where the worker's accounts live between batches, as the engine sees it.
pub trait Host {
    /// The tenant's account, or None when it has none.
    fn load(&mut self, tenant: &str) -> Option<Box<Account>>;
    /// Whether `cdr_id` is among the ids moved out of `acct` into segments.
    fn older_seen(&mut self, acct: &Account, cdr_id: &str) -> bool;
}

pub struct Engine {
    pub tables: Tables,
    /// Boxed: the worker moves each account in and out of here every batch (a pointer,
    /// not several hundred bytes), and the table's entries stay small.
    pub accounts: HashMap<CompactString, Box<Account>>,
    pub horizon: i64,
    pub tally: Tally,
    /// A larger input is rejected before it is decoded (rater/core/bounds.py).
    pub max_record_bytes: usize,
}

impl Engine {
    pub fn new(tables: Tables, horizon: i64) -> Engine {
        Engine {
            tables,
            accounts: HashMap::default(),
            horizon,
            tally: Tally::default(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// `raw` None: a Kafka record with a null value (a tombstone), rejected as such.
    pub fn process(
        &mut self,
        raw: Option<&[u8]>,
        key: Option<&str>,
        source: &Source,
        now: i64,
    ) -> Processed {
        self.process_with(raw, key, source, now, None)
    }

    /// `process` for a driver that keeps the accounts elsewhere (the Kafka worker): an
    /// account not held here is asked of `host` first.
    pub fn process_with(
        &mut self,
        raw: Option<&[u8]>,
        key: Option<&str>,
        source: &Source,
        now: i64,
        host: Option<&mut dyn Host>,
    ) -> Processed {
        let h = self.handle(raw, key, source, now, host);
        Processed {
            kind: h.kind,
            tenant_id: h.tenant_id.map(|t| CompactString::from(t.as_ref())),
            outcome: h.outcome,
            reject: h.reject,
        }
    }

    fn handle<'r>(
        &mut self,
        raw: Option<&'r [u8]>,
        key: Option<&str>,
        source: &Source,
        now: i64,
        host: Option<&mut dyn Host>,
    ) -> Handled<'r> {
        let decoded = decode_bounded(raw, key, self.max_record_bytes);
        self.apply_decoded(&decoded, raw.unwrap_or(b""), source, now, host)
    }

    /// The second half of `handle`: a decoded record (or its refusal) applied to its
    /// account, counted, and a refusal turned into its reject.
    fn apply_decoded<'r>(
        &mut self,
        decoded: &Result<Record<'r>, Invalid>,
        raw: &[u8],
        source: &Source,
        now: i64,
        mut host: Option<&mut dyn Host>,
    ) -> Handled<'r> {
        let record = match decoded {
            Ok(r) => r,
            Err(e) => {
                let mut out = Outcome::rejected(e.reason, e.detail.clone());
                out.has_account = false;
                self.tally.add("unknown", &out, None, None);
                let reject =
                    reject_record(e.reason, &out.detail, raw, source, e.tenant_id.as_deref());
                return Handled {
                    kind: "unknown",
                    tenant_id: e.tenant_id.clone().map(Cow::Owned),
                    outcome: out,
                    reject: Some(reject),
                };
            }
        };
        let tenant = record.tenant_cow();
        let (kind, call_type) = match &record {
            Record::Cdr(c) => ("cdr", Some(c.call_type)),
            Record::Command(_) => ("command", None),
        };
        if let Some(h) = host.as_deref_mut() {
            if !self.accounts.contains_key(tenant.as_ref()) {
                if let Some(a) = h.load(&tenant) {
                    self.accounts
                        .insert(CompactString::from(tenant.as_ref()), a);
                }
            }
        }
        // One search of the accounts: the account is counted through the same borrow.
        let mut acct = self.accounts.get_mut(tenant.as_ref()).map(|a| &mut **a);
        let (out, created) = match host {
            Some(h) => ledger::apply_with(
                acct.as_deref_mut(),
                record,
                &self.tables,
                now,
                self.horizon,
                &mut |a, id| h.older_seen(a, id),
            ),
            None => ledger::apply(acct.as_deref_mut(), record, &self.tables, now, self.horizon),
        };
        // A rated record's account was there before (`created` comes of a command).
        let currency = acct
            .filter(|_| out.has_account && out.rated.is_some())
            .map(|a| a.currency.as_str());
        self.tally.add(kind, &out, call_type, currency);
        if let Some(a) = created {
            self.accounts
                .insert(CompactString::from(tenant.as_ref()), Box::new(a));
        }
        let reject = if out.status == Status::Rejected {
            Some(reject_record(
                out.reason,
                &out.detail,
                raw,
                source,
                Some(&tenant),
            ))
        } else {
            None
        };
        Handled {
            kind,
            tenant_id: Some(tenant),
            outcome: out,
            reject,
        }
    }

    /// Every account's view (`view::write_view`) as one JSON object keyed by tenant, in
    /// tenant order: `balances.json` before its indentation.
    pub fn views_json(&self) -> Vec<u8> {
        let mut items: Vec<_> = self.accounts.iter().collect();
        items.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(400 * items.len() + 2);
        out.push(b'{');
        for (n, (tenant, acct)) in items.into_iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_str(&mut out, tenant);
            out.push(b':');
            crate::view::write_view(&mut out, acct);
        }
        out.push(b'}');
        out
    }

    /// The tenants whose balance is below zero, sorted.
    pub fn below_zero(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.balance() < 0)
            .map(|(t, _)| t.to_string())
            .collect();
        t.sort_unstable();
        t
    }

    /// The lines of a JSON-lines chunk (whole lines; `first_line` is the number of its
    /// first), as `rater rate` reads them: `\r`/`\n` stripped from a line's end, blank
    /// lines skipped but counted. Returns the records processed.
    pub fn rate_lines(
        &mut self,
        data: &[u8],
        file: &str,
        first_line: u64,
        now: i64,
        sinks: &mut Outputs,
    ) -> u64 {
        let parallel = data.len() >= PARALLEL_MIN_BYTES
            && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        if !parallel {
            let mut records = 0;
            for (line, raw) in lines(data, first_line) {
                records += 1;
                let decoded = decode_bounded(Some(raw), None, self.max_record_bytes);
                self.rate_one(&decoded, raw, file, line, now, sinks);
            }
            return records;
        }
        // Decoding depends on nothing but the line: a second thread decodes ahead while
        // this one applies the records in order, so the outputs are the same bytes. The
        // batches go back to it to be dropped: their records' memory is freed by the
        // thread that allocated it (cheaper in the C allocator), their vectors reused.
        let max = self.max_record_bytes;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<_>>(8);
            let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<_>>();
            scope.spawn(move || {
                let mut batch = Vec::with_capacity(DECODE_BATCH);
                for (line, raw) in lines(data, first_line) {
                    let mut decoded = decode_bounded(Some(raw), None, max);
                    // The rated record's event id needs no account: hashed here too.
                    if let Ok(Record::Cdr(c)) = &mut decoded {
                        c.rated_event_id = Some(ledger::rated_event_id(&c.tenant_id, &c.cdr_id));
                    }
                    batch.push((line, raw, decoded));
                    if batch.len() == DECODE_BATCH {
                        let next = match done_rx.try_recv() {
                            Ok(mut used) => {
                                used.clear();
                                used
                            }
                            Err(_) => Vec::with_capacity(DECODE_BATCH),
                        };
                        if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.send(batch);
                drop(tx);
                for used in done_rx {
                    drop(used);
                }
            });
            let mut records = 0;
            for batch in rx {
                for group in batch.chunks(WARM_AHEAD) {
                    self.warm(group.iter().map(|(_, _, decoded)| decoded));
                    for (line, raw, decoded) in group {
                        records += 1;
                        self.rate_one(decoded, raw, file, *line, now, sinks);
                    }
                }
                let _ = done_tx.send(batch);
            }
            drop(done_tx);
            records
        })
    }

    /// Touch the accounts the next records are applied to (`Account::touch`): the cache
    /// misses of a few records overlap here, where applying them one after the other
    /// would wait for each in turn (`bench/analysis.md`).
    fn warm<'a, 'r: 'a>(&self, decoded: impl Iterator<Item = &'a Result<Record<'r>, Invalid>>) {
        for d in decoded {
            if let Ok(Record::Cdr(c)) = d {
                if let Some(a) = self.accounts.get(c.tenant_id.as_ref()) {
                    std::hint::black_box(a.touch(&c.cdr_id));
                }
            }
        }
    }

    /// One decoded line of `rate_lines`, its outputs appended to `sinks`.
    fn rate_one(
        &mut self,
        decoded: &Result<Record, Invalid>,
        raw: &[u8],
        file: &str,
        line: u64,
        now: i64,
        sinks: &mut Outputs,
    ) {
        let p = self.apply_decoded(decoded, raw, &Source::File { file, line }, now, None);
        let out = p.outcome;
        if let Some(r) = &out.rated {
            push_line(&mut sinks.rated, r);
        }
        for e in &out.events {
            push_line(&mut sinks.events, e);
        }
        for r in &out.recharge_requests {
            push_line(&mut sinks.requests, r);
        }
        if let Some(r) = &p.reject {
            push_line(&mut sinks.rejects, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_python_writes_it() {
        // base64.b64encode(b"\xff\xfe") == b"//4=", of b"abc\xff" == b"YWJj/w==".
        assert_eq!(base64(b"\xff\xfe"), "//4=");
        assert_eq!(base64(b"abc\xff"), "YWJj/w==");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}

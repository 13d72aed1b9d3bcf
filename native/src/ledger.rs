//! The ledger of a tenant (SPEC 4 to 7), the same rules as rater/core/ledger.py in the same
//! order; read that file's theory of operation first, it holds here line by line:
//!
//! 1. Money is conserved: only `debit`, `credit` and `expire` change lots or debt, and
//!    each reports its amount in an output.
//! 2. A record is applied at most once: its id is checked before anything changes and
//!    remembered in the same account value (`remember`).
//! 3. A rejected record changes nothing: every check runs before the first mutation,
//!    with no exception (a request's own answer never times it out).
//! 4. Events follow crossings: `finish` compares the balance before the record with the
//!    balance after all of its effects, then emits the auto-recharge request.
//! 5. Outputs are a pure function of (account, record): event ids hash tenant, cause, type.
//! 6. A charged card is never lost (SPEC v1.1): a request that times out is kept in
//!    `timed_out_requests` for the horizon, and a late `succeeded` credits its lot once.
//!
//! Outputs are written straight to JSON bytes, byte for byte as orjson writes the Python
//! core's dicts (the key order of each dict is the order of the fields here).

use crate::idmap::IdMap;
use crate::json::Map;
use crate::json::{write_str, Obj, Short};
use crate::money::format_money;
use crate::pyrepr::repr;
use crate::rates::{billable_seconds, charge, Tables};
use crate::records::{AutoRecharge, Cdr, Command, CommandKind, Record};
use crate::time::{add_months, format_time, month_key, previous_month_key, utc_text, DAY, HOUR};
use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use compact_str::CompactString;

pub const DEFAULT_HORIZON: i64 = 7 * DAY;
pub const FUTURE_LIMIT: i64 = 24 * HOUR;
pub const RECHARGE_TIMEOUT: i64 = HOUR;
pub const LOT_LIFETIME_MONTHS: i64 = 12;
pub const PRUNE_EVERY: i64 = HOUR;
pub const NEVER: i64 = -(1 << 62);

#[derive(Debug, Clone, PartialEq)]
pub struct Lot {
    pub lot_id: CompactString,
    pub remaining: i128,
    pub purchased_at: i64,
    pub expires_at: i64,
    pub source: CompactString,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub tenant_id: CompactString,
    pub rate_plan: CompactString,
    pub currency: CompactString,
    pub low_balance_threshold: i128,
    pub included_domestic_minutes: i64,
    pub auto_recharge: Option<Box<AutoRecharge>>,
    pub recharge_suspended: bool,
    pub pending_request_id: Option<String>,
    pub pending_requested_at: i64,
    pub pending_amount: i128,
    pub recharge_count: i64,
    /// Requests that timed out, kept for the horizon (SPEC v1.1): id -> (amount, time of the timeout).
    pub timed_out_requests: TimedOut,
    /// The request whose timeout caused the suspension in force, if that is its cause.
    pub suspended_by: Option<String>,
    pub lots: Vec<Lot>,
    pub debt: i128,
    pub domestic_seconds_used: IdMap,
    pub seen_cdrs: IdMap,
    pub seen_commands: IdMap,
    pub cdr_watermark: i64,
    pub command_watermark: i64,
    pub pruned_at: i64,
    pub id_segments: Vec<(i64, i64)>,
    pub next_segment: i64,
}

/// The requests that timed out (`Account::timed_out_requests`): id -> (amount, time of the
/// timeout), in their order. Most accounts never have one, so an empty map is one word.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimedOut(Option<Box<Map<String, (i128, i64)>>>);

impl TimedOut {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &(i128, i64))> {
        self.0.iter().flat_map(|m| m.iter())
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(id))
    }

    pub fn get(&self, id: &str) -> Option<&(i128, i64)> {
        self.0.as_ref().and_then(|m| m.get(id))
    }

    pub fn insert(&mut self, id: String, v: (i128, i64)) {
        self.0.get_or_insert_with(Default::default).insert(id, v);
    }

    /// Remove `id`, keeping the order of the others.
    pub fn shift_remove(&mut self, id: &str) -> Option<(i128, i64)> {
        let m = self.0.as_mut()?;
        let v = m.shift_remove(id);
        if m.is_empty() {
            self.0 = None;
        }
        v
    }

    pub fn retain(&mut self, keep: impl FnMut(&String, &mut (i128, i64)) -> bool) {
        if let Some(m) = self.0.as_mut() {
            m.retain(keep);
            if m.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl FromIterator<(String, (i128, i64))> for TimedOut {
    fn from_iter<I: IntoIterator<Item = (String, (i128, i64))>>(items: I) -> Self {
        let m: Map<String, (i128, i64)> = items.into_iter().collect();
        TimedOut((!m.is_empty()).then(|| Box::new(m)))
    }
}

impl Account {
    pub fn new(tenant_id: String, rate_plan: String, currency: String) -> Account {
        Account {
            tenant_id: tenant_id.into(),
            rate_plan: rate_plan.into(),
            currency: currency.into(),
            low_balance_threshold: 0,
            included_domestic_minutes: 0,
            auto_recharge: None,
            recharge_suspended: false,
            pending_request_id: None,
            pending_requested_at: 0,
            pending_amount: 0,
            recharge_count: 0,
            timed_out_requests: TimedOut::default(),
            suspended_by: None,
            lots: Vec::new(),
            debt: 0,
            domestic_seconds_used: IdMap::default(),
            seen_cdrs: IdMap::default(),
            seen_commands: IdMap::default(),
            cdr_watermark: NEVER,
            command_watermark: NEVER,
            pruned_at: NEVER,
            id_segments: Vec::new(),
            next_segment: 0,
        }
    }

    pub fn balance(&self) -> i128 {
        self.lots.iter().map(|l| l.remaining).sum::<i128>() - self.debt
    }

    /// Read what applying a CDR with id `cdr_id` reads first (the account's fields, its
    /// first lot, the search of its recent ids, the end they grow at) and return a value
    /// made of it, for `std::hint::black_box`. Touching the accounts of the next few
    /// records before applying them lets their cache misses overlap.
    pub fn touch(&self, cdr_id: &str) -> i128 {
        let mut x = self.debt ^ self.low_balance_threshold ^ self.pending_amount;
        x ^= (self.cdr_watermark ^ self.pruned_at ^ self.included_domestic_minutes) as i128;
        x ^= self.lots.first().map_or(0, |l| l.remaining);
        x ^= self.seen_cdrs.touch(cdr_id) as i128;
        x ^= self.id_segments.len() as i128 ^ self.domestic_seconds_used.len() as i128;
        x
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Applied,
    Duplicate,
    Rejected,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
        }
    }
}

/// What one record did, its outputs already encoded.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    /// The record reached an account (applied, duplicate, or the late-answer reject).
    pub has_account: bool,
    pub rated: Option<Vec<u8>>,
    pub events: Vec<Vec<u8>>,
    pub event_types: Vec<&'static str>,
    /// The `reason` of each `auto_recharge_failed` event, in order (for the metrics).
    pub recharge_failures: Vec<String>,
    pub recharge_requests: Vec<Vec<u8>>,
    pub reason: &'static str,
    pub detail: String,
    pub charge: i128,
    pub billable_seconds: i64,
}

impl Outcome {
    pub fn rejected(reason: &'static str, detail: String) -> Outcome {
        let mut o = Outcome::new(Status::Rejected);
        o.reason = reason;
        o.detail = detail;
        o
    }

    fn new(status: Status) -> Outcome {
        Outcome {
            status,
            has_account: false,
            rated: None,
            events: Vec::new(),
            event_types: Vec::new(),
            recharge_failures: Vec::new(),
            recharge_requests: Vec::new(),
            reason: "",
            detail: String::new(),
            charge: 0,
            billable_seconds: 0,
        }
    }
}

fn reject(reason: &'static str, detail: String) -> Outcome {
    Outcome::rejected(reason, detail)
}

fn duplicate() -> Outcome {
    let mut o = Outcome::new(Status::Duplicate);
    o.has_account = true;
    o
}

/// blake2b-128 of `tenant \x1f kind \x1f cause \x1f type \x1f extra`, in hex (SPEC 7).
pub fn event_id(tenant: &str, kind: &str, cause_id: &str, type_: &str, extra: &str) -> Short {
    // The message in one piece (on the stack when short): one update, not nine.
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let len = tenant.len() + kind.len() + cause_id.len() + type_.len() + extra.len() + 4;
    let msg: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for (n, part) in [tenant, kind, cause_id, type_, extra].iter().enumerate() {
        if n > 0 {
            msg[at] = 0x1f;
            at += 1;
        }
        msg[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len();
    }
    Short::hex(&Blake2b::<U16>::digest(&*msg))
}

/// One extra field of a balance event, after the common ones.
enum F<'a> {
    S(&'static str, &'a str),
    Blocked,
}

/// Collects the balance events of one cause, in the order they happen.
struct Emitter<'c> {
    kind: &'static str,
    cause_id: &'c str,
    occurred_text: &'c str,
    events: Vec<Vec<u8>>,
    types: Vec<&'static str>,
    failures: Vec<String>,
}

impl Emitter<'_> {
    fn emit(&mut self, acct: &Account, type_: &'static str, extra: &str, fields: &[F]) {
        let mut out = Vec::with_capacity(320);
        let mut o = Obj::new(&mut out);
        o.str(
            "event_id",
            &event_id(&acct.tenant_id, self.kind, self.cause_id, type_, extra),
        )
        .str("type", type_)
        .str("tenant_id", &acct.tenant_id)
        .str("occurred_at", self.occurred_text);
        {
            let c = o.key("cause");
            let mut co = Obj::new(c);
            co.str("kind", self.kind).str("id", self.cause_id);
            co.end();
        }
        o.short("balance", &format_money(acct.balance()))
            .str("currency", &acct.currency);
        for f in fields {
            match f {
                F::S(k, v) => {
                    o.str(k, v);
                }
                F::Blocked => {
                    o.raw("blocked_call_types", b"[\"international\",\"toll_free\"]");
                }
            }
        }
        o.end();
        self.events.push(out);
        self.types.push(type_);
        if type_ == "auto_recharge_failed" {
            for f in fields {
                if let F::S("reason", r) = f {
                    self.failures.push((*r).to_owned());
                }
            }
        }
    }
}

fn expire(acct: &mut Account, at: i64, em: &mut Emitter) {
    while !acct.lots.is_empty() && acct.lots[0].expires_at <= at {
        let lot = acct.lots.remove(0);
        if lot.remaining != 0 {
            em.emit(
                acct,
                "funds_expired",
                &lot.lot_id,
                &[
                    F::S("amount", &format_money(lot.remaining)),
                    F::S("lot_id", &lot.lot_id),
                    F::S("expires_at", &format_time(lot.expires_at)),
                ],
            );
        }
    }
}

/// Time out the pending request if it is more than an hour old at `at`; never when the
/// record is that request's own answer (`answer_to`), which is applied as on time.
fn timeout(acct: &mut Account, at: i64, em: &mut Emitter, answer_to: Option<&str>) {
    if acct.pending_request_id.is_some()
        && acct.pending_request_id.as_deref() != answer_to
        && at - acct.pending_requested_at > RECHARGE_TIMEOUT
    {
        let request_id = acct.pending_request_id.take().expect("checked");
        acct.recharge_suspended = true;
        acct.suspended_by = Some(request_id.clone());
        acct.timed_out_requests
            .insert(request_id.clone(), (acct.pending_amount, at));
        em.emit(
            acct,
            "auto_recharge_failed",
            &request_id,
            &[F::S("request_id", &request_id), F::S("reason", "timeout")],
        );
    }
}

fn debit(acct: &mut Account, mut amount: i128) {
    while amount != 0 && !acct.lots.is_empty() {
        if acct.lots[0].remaining > amount {
            acct.lots[0].remaining -= amount;
            return;
        }
        amount -= acct.lots[0].remaining;
        acct.lots.remove(0);
    }
    acct.debt += amount;
}

fn lot_key(l: &Lot) -> (i64, i64, &str) {
    (l.expires_at, l.purchased_at, l.lot_id.as_str())
}

/// Pay debt first; the rest becomes a lot (left out of `lots` when nothing is left).
/// Returns the lot's id and expiry.
fn credit(acct: &mut Account, amount: i128, lot_id: &str, purchased_at: i64, source: &str) -> i64 {
    let paid = acct.debt.min(amount);
    acct.debt -= paid;
    let expires_at = add_months(purchased_at, LOT_LIFETIME_MONTHS);
    let lot = Lot {
        lot_id: lot_id.into(),
        remaining: amount - paid,
        purchased_at,
        expires_at,
        source: source.into(),
    };
    if lot.remaining != 0 {
        let key = lot_key(&lot);
        let i = acct.lots.partition_point(|x| lot_key(x) <= key);
        acct.lots.insert(i, lot);
    }
    expires_at
}

/// Crossings, then auto-recharge: the tail of SPEC 6's order of events.
/// `requested_at`: the time a request made now carries when it is not the event time (a
/// CDR's end, v1.1).
fn finish(
    acct: &mut Account,
    before: i128,
    at: i64,
    em: &mut Emitter,
    out: &mut Outcome,
    after: Option<i128>,
    requested_at: Option<i64>,
) {
    let after = after.unwrap_or_else(|| acct.balance());
    let threshold = acct.low_balance_threshold;
    if after < before {
        if threshold > 0 && before >= threshold && threshold > after {
            em.emit(
                acct,
                "low_balance",
                "",
                &[F::S("threshold", &format_money(threshold))],
            );
        }
        if before >= 0 && 0 > after {
            em.emit(acct, "below_zero", "", &[F::Blocked]);
        }
    } else if before < 0 && 0 <= after {
        em.emit(acct, "balance_restored", "", &[]);
    }
    let Some(ar) = &acct.auto_recharge else {
        return;
    };
    if !(ar.enabled
        && !acct.recharge_suspended
        && acct.pending_request_id.is_none()
        && after < ar.threshold)
    {
        return;
    }
    let ar = ar.clone();
    let method = ar
        .payment_method
        .as_ref()
        .expect("enabled auto-recharge has a card");
    if method.expires.as_str() < month_key(at).as_str() {
        acct.recharge_suspended = true;
        acct.suspended_by = None;
        em.emit(
            acct,
            "auto_recharge_failed",
            "card_expired",
            &[F::S("reason", "card_expired")],
        );
        return;
    }
    acct.recharge_count += 1;
    let request_id = format!("{}/recharge/{}", acct.tenant_id, acct.recharge_count);
    acct.pending_request_id = Some(request_id.clone());
    acct.pending_requested_at = requested_at.unwrap_or(at);
    acct.pending_amount = ar.amount;
    let amount = format_money(ar.amount);
    em.emit(
        acct,
        "auto_recharge_requested",
        "",
        &[F::S("amount", &amount), F::S("request_id", &request_id)],
    );
    let mut buf = Vec::with_capacity(300);
    let mut o = Obj::new(&mut buf);
    o.str(
        "event_id",
        &event_id(
            &acct.tenant_id,
            em.kind,
            em.cause_id,
            "recharge_request",
            "",
        ),
    )
    .str("request_id", &request_id)
    .str("tenant_id", &acct.tenant_id)
    .str("amount", &amount)
    .str("currency", &acct.currency);
    write_payment_method(o.key("payment_method"), &ar);
    match requested_at {
        None => o.str("requested_at", em.occurred_text),
        Some(t) => o.str("requested_at", &format_time(t)),
    };
    o.end();
    out.recharge_requests.push(buf);
}

pub fn write_payment_method(out: &mut Vec<u8>, ar: &AutoRecharge) {
    match &ar.payment_method {
        None => out.extend_from_slice(b"null"),
        Some(pm) => {
            let mut o = Obj::new(out);
            o.str("type", "card").str("expires", &pm.expires);
            if let Some(l) = &pm.last4 {
                o.str("last4", l);
            }
            o.end();
        }
    }
}

fn remember(acct: &mut Account, cdr: bool, record_id: &str, at: i64, horizon: i64) {
    let seen = if cdr {
        &mut acct.seen_cdrs
    } else {
        &mut acct.seen_commands
    };
    // Not there: `apply` returned a duplicate before any change otherwise.
    seen.push_new(record_id, at);
    let watermark = acct.cdr_watermark.max(acct.command_watermark);
    if watermark - acct.pruned_at >= PRUNE_EVERY {
        // Deterministic in the record sequence, so split runs prune exactly like one run.
        acct.pruned_at = watermark;
        let cutoff = acct.cdr_watermark.saturating_sub(horizon);
        acct.seen_cdrs.retain(|_, t| *t >= cutoff);
        let cutoff = acct.command_watermark.saturating_sub(horizon);
        acct.seen_commands.retain(|_, t| *t >= cutoff);
        // A timed-out request is kept for the horizon of the tenant's event time after
        // its timeout (SPEC v1.1), on the same deterministic schedule as the ids.
        let cutoff = watermark.saturating_sub(horizon);
        acct.timed_out_requests.retain(|_, (_, t)| *t >= cutoff);
    }
}

/// Whether a CDR id is among those the Kafka worker moved out of the account into id
/// segments (rater/core/idsegments.py); asked only for an account that lists segments.
pub type OlderSeen<'h> = &'h mut dyn FnMut(&Account, &str) -> bool;

/// Apply one record to its tenant's account. `acct` is changed in place when applied; a
/// `configure_account` that creates the account returns it as the second value.
pub fn apply(
    acct: Option<&mut Account>,
    record: &Record,
    tables: &Tables,
    now: i64,
    horizon: i64,
) -> (Outcome, Option<Account>) {
    apply_with(acct, record, tables, now, horizon, &mut |_, _| false)
}

/// `apply`, with the worker's question about ids moved to segments.
pub fn apply_with(
    acct: Option<&mut Account>,
    record: &Record,
    tables: &Tables,
    now: i64,
    horizon: i64,
    older_seen: OlderSeen,
) -> (Outcome, Option<Account>) {
    let at = record.event_time();
    if at > now.saturating_add(FUTURE_LIMIT) {
        let name = if matches!(record, Record::Cdr(_)) {
            "started_at"
        } else {
            "occurred_at"
        };
        return (
            reject(
                "invalid_timestamp",
                format!(
                    "{name}: {} is more than 24 hours after the processing clock {}",
                    format_time(at),
                    format_time(now)
                ),
            ),
            None,
        );
    }
    match record {
        Record::Cdr(c) => (apply_cdr(acct, c, tables, horizon, older_seen), None),
        Record::Command(c) => apply_command(acct, c, tables, horizon),
    }
}

/// The event id of a CDR's rated record.
pub fn rated_event_id(tenant_id: &str, cdr_id: &str) -> Short {
    event_id(tenant_id, "cdr", cdr_id, "rated_cdr", "")
}

fn apply_cdr(
    acct: Option<&mut Account>,
    cdr: &Cdr,
    tables: &Tables,
    horizon: i64,
    older_seen: OlderSeen,
) -> Outcome {
    // Checks: nothing changes until all have passed.
    let Some(acct) = acct else {
        return reject(
            "unknown_tenant",
            format!("tenant_id: no account for {}", repr(&cdr.tenant_id)),
        );
    };
    if acct.seen_cdrs.contains_key(cdr.cdr_id.as_ref())
        || (!acct.id_segments.is_empty() && older_seen(acct, &cdr.cdr_id))
    {
        return duplicate();
    }
    let at = cdr.started_at;
    if at < acct.cdr_watermark.saturating_sub(horizon) {
        return reject(
            "too_late",
            format!(
                "started_at: {} is more than the horizon before the tenant's latest call at {}",
                format_time(at),
                format_time(acct.cdr_watermark)
            ),
        );
    }
    let Some(plan) = tables.plans.get(acct.rate_plan.as_str()) else {
        return reject(
            "unknown_rate_plan",
            format!(
                "rate_plan: the account's plan {} is not loaded",
                repr(&acct.rate_plan)
            ),
        );
    };
    let Some(rate) = plan.lookup(cdr.call_type, &cdr.to[1..], at) else {
        return reject(
            "no_rate",
            format!(
                "to: no {} rate in plan {} for {} at {}",
                cdr.call_type,
                repr(&acct.rate_plan),
                cdr.to,
                format_time(at)
            ),
        );
    };

    // Effects.
    let mut out = Outcome::new(Status::Applied);
    out.has_account = true;
    let before = acct.balance();
    let started_text = utc_text(&cdr.started_at_text, at);
    let mut em = Emitter {
        kind: "cdr",
        cause_id: &cdr.cdr_id,
        occurred_text: &started_text,
        events: Vec::new(),
        types: Vec::new(),
        failures: Vec::new(),
    };
    expire(acct, at, &mut em);
    timeout(acct, at, &mut em, None);
    let billable = billable_seconds(cdr.duration, rate.first_increment, rate.next_increment);
    let mut covered = 0;
    if cdr.call_type == "domestic" && billable != 0 {
        let month = month_key(at);
        let used = acct.domestic_seconds_used.get(&month).copied().unwrap_or(0);
        covered = (acct.included_domestic_minutes * 60 - used)
            .max(0)
            .min(billable);
        if covered != 0 {
            // Python's `d[month] = used + covered` keeps an existing key's position.
            acct.domestic_seconds_used.insert(&month, used + covered);
            let previous = previous_month_key(&month);
            acct.domestic_seconds_used
                .retain(|m, _| m >= previous.as_str());
        }
    }
    let amount = charge(rate, billable - covered);
    debit(acct, amount);
    let after = acct.balance();
    out.charge = amount;
    out.billable_seconds = billable;
    // The event id depends on the record alone: `rate_lines` may have hashed it ahead.
    let rated_id = match cdr.rated_event_id {
        Some(id) if cdr.tenant_id == acct.tenant_id => id,
        _ => rated_event_id(&acct.tenant_id, &cdr.cdr_id),
    };
    let mut buf = Vec::with_capacity(600);
    let mut o = Obj::new(&mut buf);
    o.short("event_id", &rated_id)
        .str("cdr_id", &cdr.cdr_id)
        .str("tenant_id", &acct.tenant_id)
        .str("call_type", cdr.call_type)
        .str("to", &cdr.to)
        .opt_str("from", cdr.from.as_deref())
        .str("started_at", &started_text)
        .int("duration_seconds", cdr.duration as i128)
        .int("billable_seconds", billable as i128)
        .int("covered_seconds", covered as i128)
        .str("rate_plan", &acct.rate_plan)
        .str("rate_prefix", &rate.prefix)
        .str("rate_per_minute", &rate.rate_text)
        .str("connection_fee", &rate.fee_text)
        .short("charge", &format_money(amount))
        .str("currency", &acct.currency)
        .short("balance_after", &format_money(after));
    crate::json::write_object(o.key("attributes"), &cdr.attributes);
    o.end();
    out.rated = Some(buf);
    finish(
        acct,
        before,
        at,
        &mut em,
        &mut out,
        Some(after),
        Some(at + cdr.duration * crate::time::SECOND),
    );
    out.events = em.events;
    out.event_types = em.types;
    out.recharge_failures = em.failures;
    if at > acct.cdr_watermark {
        acct.cdr_watermark = at;
    }
    remember(acct, true, &cdr.cdr_id, at, horizon);
    out
}

fn apply_command(
    acct: Option<&mut Account>,
    cmd: &Command,
    tables: &Tables,
    horizon: i64,
) -> (Outcome, Option<Account>) {
    let at = cmd.occurred_at;
    let is_configure = matches!(cmd.kind, CommandKind::Configure { .. });
    // Checks: nothing changes until all have passed.
    if acct.is_none() && !is_configure {
        return (
            reject(
                "unknown_tenant",
                format!("tenant_id: no account for {}", repr(&cmd.tenant_id)),
            ),
            None,
        );
    }
    if let Some(a) = acct.as_deref() {
        if a.seen_commands.contains_key(&cmd.command_id) {
            return (duplicate(), None);
        }
        if at < a.command_watermark.saturating_sub(horizon) {
            return (
                reject(
                    "too_late",
                    format!(
                        "occurred_at: {} is more than the horizon before the tenant's latest command at {}",
                        format_time(at),
                        format_time(a.command_watermark)
                    ),
                ),
                None,
            );
        }
    }
    let rejected = match &cmd.kind {
        CommandKind::Configure {
            rate_plan,
            currency,
            ..
        } => check_configure(acct.as_deref(), rate_plan, currency, tables),
        CommandKind::AddFunds {
            currency,
            purchased_at,
            ..
        } => check_add_funds(
            acct.as_deref().expect("checked"),
            cmd,
            currency,
            *purchased_at,
        ),
        CommandKind::PaymentResult { request_id, .. } => {
            let a = acct.as_deref().expect("checked");
            if a.pending_request_id.as_deref() != Some(request_id.as_str())
                && !a.timed_out_requests.contains_key(request_id)
            {
                Some(reject(
                    "unknown_request",
                    format!(
                        "request_id: {} is neither the pending recharge request nor one that timed out",
                        repr(request_id)
                    ),
                ))
            } else {
                None
            }
        }
    };
    if let Some(r) = rejected {
        return (r, None);
    }

    // Effects.
    let mut created: Option<Account> = None;
    let acct: &mut Account = match acct {
        Some(a) => a,
        None => {
            let CommandKind::Configure {
                rate_plan: Some(plan_id),
                ..
            } = &cmd.kind
            else {
                unreachable!("checked by check_configure")
            };
            let plan = &tables.plans[plan_id];
            created = Some(Account::new(
                cmd.tenant_id.clone(),
                plan.plan_id.clone(),
                plan.currency.clone(),
            ));
            created.as_mut().expect("just made")
        }
    };
    let mut out = Outcome::new(Status::Applied);
    out.has_account = true;
    let before = acct.balance();
    let occurred_text = format_time(at);
    let mut em = Emitter {
        kind: "command",
        cause_id: &cmd.command_id,
        occurred_text: &occurred_text,
        events: Vec::new(),
        types: Vec::new(),
        failures: Vec::new(),
    };
    expire(acct, at, &mut em);
    let answer_to = match &cmd.kind {
        CommandKind::PaymentResult { request_id, .. } => Some(request_id.as_str()),
        _ => None,
    };
    timeout(acct, at, &mut em, answer_to);
    match &cmd.kind {
        CommandKind::Configure {
            rate_plan,
            low_balance_threshold,
            included_domestic_minutes,
            auto_recharge,
            ..
        } => {
            if let Some(p) = rate_plan {
                acct.rate_plan = p.as_str().into();
            }
            if let Some(t) = low_balance_threshold {
                acct.low_balance_threshold = *t;
            }
            if let Some(m) = included_domestic_minutes {
                acct.included_domestic_minutes = *m;
            }
            if let Some(ar) = auto_recharge {
                acct.auto_recharge = Some(Box::new(ar.clone()));
                acct.recharge_suspended = false;
                acct.suspended_by = None;
            }
        }
        CommandKind::AddFunds {
            amount,
            purchased_at,
            ..
        } => {
            let purchased_at = purchased_at.unwrap_or(at);
            let expires_at = credit(acct, *amount, &cmd.command_id, purchased_at, "manual");
            em.emit(
                acct,
                "funds_added",
                "",
                &[
                    F::S("amount", &format_money(*amount)),
                    F::S("lot_id", &cmd.command_id),
                    F::S("expires_at", &format_time(expires_at)),
                ],
            );
        }
        CommandKind::PaymentResult {
            request_id,
            succeeded,
            ..
        } if acct.pending_request_id.as_deref() != Some(request_id.as_str()) => {
            apply_late_answer(acct, request_id, *succeeded, at, &mut em);
        }
        CommandKind::PaymentResult {
            succeeded: true, ..
        } => {
            let request_id = acct.pending_request_id.take().expect("checked");
            let amount = acct.pending_amount;
            credit_recharge(acct, &request_id, amount, at, &mut em);
        }
        CommandKind::PaymentResult {
            succeeded: false,
            reason,
            ..
        } => {
            let request_id = acct.pending_request_id.take().expect("checked");
            acct.recharge_suspended = true;
            acct.suspended_by = None;
            em.emit(
                acct,
                "auto_recharge_failed",
                "",
                &[
                    F::S("request_id", &request_id),
                    F::S("reason", reason.as_deref().unwrap_or("declined")),
                ],
            );
        }
    }
    finish(acct, before, at, &mut em, &mut out, None, None);
    out.events = em.events;
    out.event_types = em.types;
    out.recharge_failures = em.failures;
    if at > acct.command_watermark {
        acct.command_watermark = at;
    }
    remember(acct, false, &cmd.command_id, at, horizon);
    (out, created)
}

fn check_configure(
    acct: Option<&Account>,
    rate_plan: &Option<String>,
    currency: &Option<String>,
    tables: &Tables,
) -> Option<Outcome> {
    if acct.is_none() && rate_plan.is_none() {
        return Some(reject(
            "invalid_record",
            "rate_plan: required when the account is created".into(),
        ));
    }
    let cur: String = match rate_plan {
        Some(plan_id) => {
            let Some(plan) = tables.plans.get(plan_id) else {
                return Some(reject(
                    "unknown_rate_plan",
                    format!("rate_plan: no plan {} is loaded", repr(plan_id)),
                ));
            };
            if let Some(a) = acct {
                if plan.currency != a.currency {
                    return Some(reject(
                        "currency_mismatch",
                        format!(
                            "rate_plan: plan {} is in {}, the account in {}",
                            repr(plan_id),
                            plan.currency,
                            a.currency
                        ),
                    ));
                }
            }
            plan.currency.clone()
        }
        None => acct.expect("checked").currency.to_string(),
    };
    if let Some(c) = currency {
        if *c != cur {
            return Some(reject(
                "currency_mismatch",
                format!("currency: {c} is not the account's currency {cur}"),
            ));
        }
    }
    None
}

fn check_add_funds(
    acct: &Account,
    cmd: &Command,
    currency: &Option<String>,
    purchased_at: Option<i64>,
) -> Option<Outcome> {
    if let Some(c) = currency {
        if *c != acct.currency {
            return Some(reject(
                "currency_mismatch",
                format!(
                    "currency: {c} is not the account's currency {}",
                    acct.currency
                ),
            ));
        }
    }
    let purchased_at = purchased_at.unwrap_or(cmd.occurred_at);
    if add_months(purchased_at, LOT_LIFETIME_MONTHS) <= cmd.occurred_at {
        return Some(reject(
            "invalid_record",
            format!(
                "purchased_at: funds bought at {} have expired by occurred_at",
                format_time(purchased_at)
            ),
        ));
    }
    None
}

fn credit_recharge(acct: &mut Account, request_id: &str, amount: i128, at: i64, em: &mut Emitter) {
    let expires_at = credit(acct, amount, request_id, at, "auto_recharge");
    em.emit(
        acct,
        "auto_recharge_succeeded",
        "",
        &[
            F::S("amount", &format_money(amount)),
            F::S("request_id", request_id),
            F::S("lot_id", request_id),
            F::S("expires_at", &format_time(expires_at)),
        ],
    );
}

/// The answer to a request that timed out (SPEC v1.1): the first answer settles it.
/// `succeeded` credits the lot as on time and lifts the suspension when this request's
/// timeout caused it; `failed` writes nothing. Either way the request is forgotten.
fn apply_late_answer(
    acct: &mut Account,
    request_id: &str,
    succeeded: bool,
    at: i64,
    em: &mut Emitter,
) {
    let (amount, _) = acct
        .timed_out_requests
        .shift_remove(request_id)
        .expect("checked");
    if !succeeded {
        return;
    }
    credit_recharge(acct, request_id, amount, at, em);
    if acct.suspended_by.as_deref() == Some(request_id) {
        acct.recharge_suspended = false;
        acct.suspended_by = None;
    }
}

/// The wall-clock sweep: expire lots and time out a pending recharge with no traffic.
/// None when nothing is due.
pub fn sweep(acct: &mut Account, now: i64) -> Option<Outcome> {
    let due_lot = acct
        .lots
        .first()
        .filter(|l| l.expires_at <= now)
        .map(|l| l.lot_id.to_string());
    let due_request =
        acct.pending_request_id.is_some() && now - acct.pending_requested_at > RECHARGE_TIMEOUT;
    if due_lot.is_none() && !due_request {
        return None;
    }
    let cause_id = due_lot
        .or_else(|| acct.pending_request_id.clone())
        .unwrap_or_default();
    let mut out = Outcome::new(Status::Applied);
    out.has_account = true;
    let before = acct.balance();
    let occurred_text = format_time(now);
    let mut em = Emitter {
        kind: "sweep",
        cause_id: &cause_id,
        occurred_text: &occurred_text,
        events: Vec::new(),
        types: Vec::new(),
        failures: Vec::new(),
    };
    expire(acct, now, &mut em);
    timeout(acct, now, &mut em, None);
    finish(acct, before, now, &mut em, &mut out, None, None);
    out.events = em.events;
    out.event_types = em.types;
    out.recharge_failures = em.failures;
    Some(out)
}

/// A JSON string, for callers that build a record around the ledger's outputs.
pub fn json_str(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    write_str(&mut v, s);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_blake2b_128_of_the_cause() {
        // hashlib.blake2b(b"t1\x1fcdr\x1fc1\x1frated_cdr\x1f", digest_size=16).hexdigest()
        assert_eq!(
            event_id("t1", "cdr", "c1", "rated_cdr", ""),
            "0c1db3a4ace76a73551eca58b9b67cd8"
        );
    }
}

//! The account codec: the stored form that rater/core/codec.py writes (`to_stored`, encoded
//! by orjson), byte for byte, so a state file or changelog written by either engine is
//! read by the other, and one written by the Python core before the native engine
//! existed is read as it is.
//!
//! Versioning: format 1 is this JSON object (it starts with `{`); format 2, written by
//! default, is the same fields in binary after the version byte `\x02` (its layout is
//! written out once, in rater/core/codec.py). No JSON text starts with `\x02`, so a reader
//! tells the formats apart from the first byte and an upgrade reads what the old code wrote.

use crate::idmap::IdMap;
use crate::json::{self, write_int, write_str, Obj, Object, Value};
use crate::ledger::{write_payment_method, Account, Lot, TimedOut};
use crate::records::{AutoRecharge, PaymentMethod};

fn write_ids(out: &mut Vec<u8>, m: &IdMap) {
    out.push(b'{');
    write_id_entries(out, m.iter());
    out.push(b'}');
}

/// `"id":time` entries, comma-separated (the inside of an id map's object).
pub fn write_id_entries<'m>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'m str, i64)>) {
    for (n, (k, v)) in entries.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        push_i64(out, v);
    }
}

/// An integer's decimal digits, with no allocation (ids are written by the thousand).
fn push_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// The stored format an account is written in (rater/core/codec.py `encode_account`'s
/// `format`): 2 by default, 1 for a rolling upgrade from a release that reads only format 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    One,
    #[default]
    Two,
}

impl Format {
    pub fn from_number(n: u8) -> Result<Format, String> {
        match n {
            1 => Ok(Format::One),
            2 => Ok(Format::Two),
            _ => Err(format!("account format {n} is not known (1 or 2)")),
        }
    }
}

/// The stored form in the default format, without judged offsets.
pub fn encode_account(a: &Account) -> Vec<u8> {
    encode_account_as(a, Format::default())
}

pub fn encode_account_as(a: &Account, format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 40 * (a.seen_cdrs.len() + a.seen_commands.len()));
    encode_account_into(&mut out, a, format, None, &mut |out| match format {
        Format::One => write_ids(out, &a.seen_cdrs),
        Format::Two => write_map2(out, &a.seen_cdrs),
    });
    out
}

/// `encode_account_as` appended to `out` (a buffer the caller reuses), with `judged` (per
/// input topic, the last offset its batch judged: `"in"`) and the recent CDR ids (`"sc"`,
/// the bulk of a busy account) written by `write_sc` (the worker's held accounts keep them
/// encoded between batches): in format 1 their JSON object, in format 2 their map.
pub fn encode_account_into(
    out: &mut Vec<u8>,
    a: &Account,
    format: Format,
    judged: Option<&[(String, i64)]>,
    write_sc: &mut dyn FnMut(&mut Vec<u8>),
) {
    match format {
        Format::One => {
            encode1_into(out, a, write_sc);
            if let Some(j) = judged.filter(|j| !j.is_empty()) {
                out.pop(); // the closing brace
                out.extend_from_slice(b",\"in\":{");
                write_id_entries(out, j.iter().map(|(t, o)| (t.as_str(), *o)));
                out.extend_from_slice(b"}}");
            }
        }
        Format::Two => encode2_into(out, a, judged.unwrap_or_default(), write_sc),
    }
}

/// Format 1: the JSON object of `to_stored`, as orjson writes it.
fn encode1_into(out: &mut Vec<u8>, a: &Account, write_sc: &mut dyn FnMut(&mut Vec<u8>)) {
    let mut o = Obj::new(out);
    o.str("t", &a.tenant_id)
        .str("p", &a.rate_plan)
        .str("c", &a.currency)
        .int("lbt", a.low_balance_threshold)
        .int("idm", a.included_domestic_minutes as i128);
    {
        let k = o.key("ar");
        match &a.auto_recharge {
            None => k.extend_from_slice(b"null"),
            Some(ar) => {
                let mut x = Obj::new(k);
                x.bool("enabled", ar.enabled)
                    .int("threshold", ar.threshold)
                    .int("amount", ar.amount);
                write_payment_method(x.key("payment_method"), ar);
                x.end();
            }
        }
    }
    o.bool("rs", a.recharge_suspended)
        .opt_str("pr", a.pending_request_id.as_deref())
        .int("pra", a.pending_requested_at as i128)
        .int("pam", a.pending_amount)
        .int("rc", a.recharge_count as i128);
    {
        let k = o.key("tor");
        k.push(b'{');
        for (n, (id, (amount, at))) in a.timed_out_requests.iter().enumerate() {
            if n > 0 {
                k.push(b',');
            }
            write_str(k, id);
            k.extend_from_slice(b":[");
            write_int(k, *amount);
            k.push(b',');
            write_int(k, *at as i128);
            k.push(b']');
        }
        k.push(b'}');
    }
    o.opt_str("sb", a.suspended_by.as_deref());
    {
        let k = o.key("lots");
        k.push(b'[');
        for (n, l) in a.lots.iter().enumerate() {
            if n > 0 {
                k.push(b',');
            }
            k.push(b'[');
            write_str(k, &l.lot_id);
            for v in [l.remaining, l.purchased_at as i128, l.expires_at as i128] {
                k.push(b',');
                write_int(k, v);
            }
            k.push(b',');
            write_str(k, &l.source);
            k.push(b']');
        }
        k.push(b']');
    }
    o.int("debt", a.debt);
    write_ids(o.key("dom"), &a.domestic_seconds_used);
    write_sc(o.key("sc"));
    write_ids(o.key("sm"), &a.seen_commands);
    o.int("cw", a.cdr_watermark as i128)
        .int("mw", a.command_watermark as i128)
        .int("pa", a.pruned_at as i128);
    {
        let k = o.key("sg");
        k.push(b'[');
        for (n, (seg, latest)) in a.id_segments.iter().enumerate() {
            if n > 0 {
                k.push(b',');
            }
            k.push(b'[');
            write_int(k, *seg as i128);
            k.push(b',');
            write_int(k, *latest as i128);
            k.push(b']');
        }
        k.push(b']');
    }
    o.int("ns", a.next_segment as i128);
    o.end();
}

/// Format 2's unsigned varint (LEB128).
fn put_uint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Format 2's signed integer: zigzag, then the varint.
fn put_int(out: &mut Vec<u8>, v: i128) {
    put_uint(out, ((v << 1) ^ (v >> 127)) as u128);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u128);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// A format 2 map: its count, then its entries (`write_map2_entries`).
pub fn write_map2(out: &mut Vec<u8>, m: &IdMap) {
    put_uint(out, m.len() as u128);
    write_map2_entries(out, m.iter(), 0);
}

/// Format 2 map entries: each id, then its value less the value of the entry before it
/// (`prev` for the first of these).
pub fn write_map2_entries<'m>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'m str, i64)>,
    mut prev: i64,
) {
    for (k, v) in entries {
        put_str(out, k);
        put_int(out, v as i128 - prev as i128);
        prev = v;
    }
}

/// A format 2 map's count (`write_map2`'s first part, for entries kept encoded).
pub fn write_map2_count(out: &mut Vec<u8>, n: usize) {
    put_uint(out, n as u128);
}

/// Format 2: the fields of format 1 in binary, the judged offsets first (rater/core/codec.py).
fn encode2_into(
    out: &mut Vec<u8>,
    a: &Account,
    judged: &[(String, i64)],
    write_sc: &mut dyn FnMut(&mut Vec<u8>),
) {
    out.push(2);
    put_uint(out, judged.len() as u128);
    for (topic, offset) in judged {
        put_str(out, topic);
        put_int(out, *offset as i128);
    }
    put_str(out, &a.tenant_id);
    put_str(out, &a.rate_plan);
    put_str(out, &a.currency);
    put_int(out, a.low_balance_threshold);
    put_int(out, a.included_domestic_minutes as i128);
    match &a.auto_recharge {
        None => out.push(0),
        Some(ar) => {
            out.push(1);
            out.push(ar.enabled as u8);
            put_int(out, ar.threshold);
            put_int(out, ar.amount);
            match &ar.payment_method {
                None => out.push(0),
                Some(pm) => {
                    out.push(if pm.last4.is_some() { 2 } else { 1 });
                    put_str(out, &pm.expires);
                    if let Some(l) = &pm.last4 {
                        put_str(out, l);
                    }
                }
            }
        }
    }
    out.push(a.recharge_suspended as u8);
    put_opt_str(out, a.pending_request_id.as_deref());
    put_int(out, a.pending_requested_at as i128);
    put_int(out, a.pending_amount);
    put_int(out, a.recharge_count as i128);
    put_uint(out, a.timed_out_requests.iter().count() as u128);
    for (id, (amount, at)) in a.timed_out_requests.iter() {
        put_str(out, id);
        put_int(out, *amount);
        put_int(out, *at as i128);
    }
    put_opt_str(out, a.suspended_by.as_deref());
    put_uint(out, a.lots.len() as u128);
    for l in &a.lots {
        put_str(out, &l.lot_id);
        put_int(out, l.remaining);
        put_int(out, l.purchased_at as i128);
        put_int(out, l.expires_at as i128);
        put_str(out, &l.source);
    }
    put_int(out, a.debt);
    write_map2(out, &a.domestic_seconds_used);
    write_sc(out);
    write_map2(out, &a.seen_commands);
    for v in [a.cdr_watermark, a.command_watermark, a.pruned_at] {
        put_int(out, v as i128);
    }
    put_uint(out, a.id_segments.len() as u128);
    for (n, latest) in &a.id_segments {
        put_int(out, *n as i128);
        put_int(out, *latest as i128);
    }
    put_int(out, a.next_segment as i128);
}

/// Format 2's fields read in order; a value that ends early or runs on is refused.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn ends(what: &str) -> String {
        format!("account format 2: ends inside {what}")
    }

    fn byte(&mut self, what: &str, most: u8) -> Result<u8, String> {
        let b = *self.data.get(self.at).ok_or_else(|| Self::ends(what))?;
        if b > most {
            return Err(format!("account format 2: {what}: {b} is not 0 to {most}"));
        }
        self.at += 1;
        Ok(b)
    }

    fn uint(&mut self, what: &str) -> Result<u128, String> {
        let mut v: u128 = 0;
        let mut shift = 0;
        loop {
            let b = *self.data.get(self.at).ok_or_else(|| Self::ends(what))?;
            self.at += 1;
            if shift == 126 && b > 3 {
                return Err(format!("account format 2: {what}: a varint past 128 bits"));
            }
            v |= ((b & 0x7F) as u128) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn int(&mut self, what: &str) -> Result<i128, String> {
        let z = self.uint(what)?;
        Ok(((z >> 1) as i128) ^ -((z & 1) as i128))
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        i64::try_from(self.int(what)?)
            .map_err(|_| format!("account format 2: {what}: out of range"))
    }

    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.uint(what)?;
        // Every item takes a byte at least: a count past the bytes left is not a count.
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.data.len() - self.at)
            .ok_or_else(|| Self::ends(what))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let n = self.count(what)?;
        let bytes = &self.data[self.at..self.at + n];
        self.at += n;
        std::str::from_utf8(bytes).map_err(|_| format!("account format 2: {what}: not UTF-8"))
    }

    fn opt_str(&mut self, what: &str) -> Result<Option<String>, String> {
        Ok(match self.byte(what, 1)? {
            0 => None,
            _ => Some(self.str(what)?.to_string()),
        })
    }

    fn map(&mut self, what: &str) -> Result<IdMap, String> {
        let mut out = IdMap::default();
        let mut prev: i128 = 0;
        for _ in 0..self.count(what)? {
            let k = self.str(what)?;
            let v = prev
                .checked_add(self.int(what)?)
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| format!("account format 2: {what}: out of range"))?;
            prev = v as i128;
            out.insert(k, v);
        }
        out.shrink_to_fit();
        Ok(out)
    }
}

/// A format 2 value's account (its judged offsets, first, read past: the worker reads them
/// in Python, rater/core/codec.py `judged_of`).
pub fn decode2(data: &[u8]) -> Result<Account, String> {
    let mut r = Reader { data, at: 1 };
    for _ in 0..r.count("in")? {
        r.str("in")?;
        r.i64("in")?;
    }
    let tenant_id = r.str("t")?.into();
    let rate_plan = r.str("p")?.into();
    let currency = r.str("c")?.into();
    let low_balance_threshold = r.int("lbt")?;
    let included_domestic_minutes = r.i64("idm")?;
    let auto_recharge = match r.byte("ar", 1)? {
        0 => None,
        _ => {
            let enabled = r.byte("ar.enabled", 1)? == 1;
            let threshold = r.int("ar.threshold")?;
            let amount = r.int("ar.amount")?;
            let payment_method = match r.byte("ar.payment_method", 2)? {
                0 => None,
                kind => Some(PaymentMethod {
                    expires: r.str("ar.payment_method.expires")?.to_string(),
                    last4: match kind {
                        2 => Some(r.str("ar.payment_method.last4")?.to_string()),
                        _ => None,
                    },
                }),
            };
            Some(Box::new(AutoRecharge {
                enabled,
                threshold,
                amount,
                payment_method,
            }))
        }
    };
    let recharge_suspended = r.byte("rs", 1)? == 1;
    let pending_request_id = r.opt_str("pr")?;
    let pending_requested_at = r.i64("pra")?;
    let pending_amount = r.int("pam")?;
    let recharge_count = r.i64("rc")?;
    let mut timed_out = Vec::new();
    for _ in 0..r.count("tor")? {
        let id = r.str("tor")?.to_string();
        timed_out.push((id, (r.int("tor")?, r.i64("tor")?)));
    }
    let suspended_by = r.opt_str("sb")?;
    let mut lots = Vec::new();
    for _ in 0..r.count("lots")? {
        lots.push(Lot {
            lot_id: r.str("lots")?.into(),
            remaining: r.int("lots")?,
            purchased_at: r.i64("lots")?,
            expires_at: r.i64("lots")?,
            source: r.str("lots")?.into(),
        });
    }
    let debt = r.int("debt")?;
    let domestic_seconds_used = r.map("dom")?;
    let seen_cdrs = r.map("sc")?;
    let seen_commands = r.map("sm")?;
    let cdr_watermark = r.i64("cw")?;
    let command_watermark = r.i64("mw")?;
    let pruned_at = r.i64("pa")?;
    let mut id_segments = Vec::new();
    for _ in 0..r.count("sg")? {
        id_segments.push((r.i64("sg")?, r.i64("sg")?));
    }
    let next_segment = r.i64("ns")?;
    if r.at != data.len() {
        return Err(format!(
            "account format 2: {} bytes after the last field",
            data.len() - r.at
        ));
    }
    let acct = Account {
        tenant_id,
        rate_plan,
        currency,
        low_balance_threshold,
        included_domestic_minutes,
        auto_recharge,
        recharge_suspended,
        pending_request_id,
        pending_requested_at,
        pending_amount,
        recharge_count,
        timed_out_requests: timed_out.into_iter().collect(),
        suspended_by,
        lots,
        debt,
        domestic_seconds_used,
        seen_cdrs,
        seen_commands,
        cdr_watermark,
        command_watermark,
        pruned_at,
        id_segments,
        next_segment,
    };
    Ok(acct)
}

fn field<'o, 'v>(m: &'o Object<'v>, k: &str) -> Result<&'o Value<'v>, String> {
    m.get(k).ok_or_else(|| format!("no field {k:?}"))
}

fn int(v: &Value, what: &str) -> Result<i128, String> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => Err(format!("{what}: not an integer")),
    }
}

fn i64_(v: &Value, what: &str) -> Result<i64, String> {
    i64::try_from(int(v, what)?).map_err(|_| format!("{what}: out of range"))
}

fn string(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s.to_string()),
        _ => Err(format!("{what}: not a string")),
    }
}

fn ids(v: &Value, what: &str) -> Result<IdMap, String> {
    let Value::Object(m) = v else {
        return Err(format!("{what}: not an object"));
    };
    let mut out = IdMap::default();
    for (k, v) in m.iter() {
        out.insert(k, i64_(v, what)?);
    }
    out.shrink_to_fit();
    Ok(out)
}

fn auto_recharge(v: &Value) -> Result<Option<AutoRecharge>, String> {
    let m = match v {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        _ => return Err("ar: not an object".into()),
    };
    let enabled = matches!(field(m, "enabled")?, Value::Bool(true));
    let payment_method = match field(m, "payment_method")? {
        Value::Null => None,
        Value::Object(pm) => Some(PaymentMethod {
            expires: string(field(pm, "expires")?, "ar.payment_method.expires")?,
            last4: match pm.get("last4") {
                None | Some(Value::Null) => None,
                Some(l) => Some(string(l, "ar.payment_method.last4")?),
            },
        }),
        _ => return Err("ar.payment_method: not an object".into()),
    };
    Ok(Some(AutoRecharge {
        enabled,
        threshold: int(field(m, "threshold")?, "ar.threshold")?,
        amount: int(field(m, "amount")?, "ar.amount")?,
        payment_method,
    }))
}

pub fn from_value(v: &Value) -> Result<Account, String> {
    let Value::Object(m) = v else {
        return Err("an account must be a JSON object".into());
    };
    let Value::Array(lots) = field(m, "lots")? else {
        return Err("lots: not an array".into());
    };
    let lots = lots
        .iter()
        .map(|l| match l {
            Value::Array(x) if x.len() == 5 => Ok(Lot {
                lot_id: string(&x[0], "lot_id")?.into(),
                remaining: int(&x[1], "remaining")?,
                purchased_at: i64_(&x[2], "purchased_at")?,
                expires_at: i64_(&x[3], "expires_at")?,
                source: string(&x[4], "source")?.into(),
            }),
            _ => Err(
                "lots: a lot is not [id, remaining, purchased_at, expires_at, source]".to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let id_segments = match m.get("sg") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| match s {
                Value::Array(x) if x.len() == 2 => Ok((i64_(&x[0], "sg")?, i64_(&x[1], "sg")?)),
                _ => Err("sg: not [n, latest]".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("sg: not an array".into()),
    };
    Ok(Account {
        tenant_id: string(field(m, "t")?, "t")?.into(),
        rate_plan: string(field(m, "p")?, "p")?.into(),
        currency: string(field(m, "c")?, "c")?.into(),
        low_balance_threshold: int(field(m, "lbt")?, "lbt")?,
        included_domestic_minutes: i64_(field(m, "idm")?, "idm")?,
        auto_recharge: auto_recharge(field(m, "ar")?)?.map(Box::new),
        recharge_suspended: matches!(field(m, "rs")?, Value::Bool(true)),
        pending_request_id: match field(m, "pr")? {
            Value::Null => None,
            v => Some(string(v, "pr")?),
        },
        pending_requested_at: i64_(field(m, "pra")?, "pra")?,
        pending_amount: int(field(m, "pam")?, "pam")?,
        recharge_count: i64_(field(m, "rc")?, "rc")?,
        // Absent from accounts written before SPEC v1.1 (as in rater/core/codec.py).
        timed_out_requests: match m.get("tor") {
            None => TimedOut::default(),
            Some(Value::Object(t)) => t
                .iter()
                .map(|(k, v)| match v {
                    Value::Array(x) if x.len() == 2 => {
                        Ok((k.to_string(), (int(&x[0], "tor")?, i64_(&x[1], "tor")?)))
                    }
                    _ => Err("tor: a request is not [amount, timed out at]".to_string()),
                })
                .collect::<Result<TimedOut, _>>()?,
            Some(_) => return Err("tor: not an object".into()),
        },
        suspended_by: match m.get("sb") {
            None | Some(Value::Null) => None,
            Some(v) => Some(string(v, "sb")?),
        },
        lots,
        debt: int(field(m, "debt")?, "debt")?,
        domestic_seconds_used: ids(field(m, "dom")?, "dom")?,
        seen_cdrs: ids(field(m, "sc")?, "sc")?,
        seen_commands: ids(field(m, "sm")?, "sm")?,
        cdr_watermark: i64_(field(m, "cw")?, "cw")?,
        command_watermark: i64_(field(m, "mw")?, "mw")?,
        pruned_at: i64_(field(m, "pa")?, "pa")?,
        id_segments,
        next_segment: match m.get("ns") {
            None => 0,
            Some(v) => i64_(v, "ns")?,
        },
    })
}

pub fn decode_account(data: &[u8]) -> Result<Account, String> {
    match data.first() {
        Some(b'{') => from_value(&json::parse(data)?),
        Some(2) => decode2(data),
        Some(v) => Err(format!("account format version {v} is not known")),
        None => Err("an empty account record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_times_are_written_as_python_writes_integers() {
        for v in [0, 7, -7, 1_795_514_400_000_000, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    #[test]
    fn an_account_written_before_spec_1_1_reads_with_nothing_timed_out() {
        let old = br#"{"t":"a","p":"p","c":"USD","lbt":0,"idm":0,"ar":null,"rs":false,"pr":null,"pra":0,"pam":0,"rc":0,"lots":[],"debt":0,"dom":{},"sc":{},"sm":{},"cw":0,"mw":0,"pa":0,"sg":[],"ns":0}"#;
        let a = decode_account(old).unwrap();
        assert!(a.timed_out_requests.is_empty() && a.suspended_by.is_none());
    }

    #[test]
    fn an_account_written_by_the_python_codec_reads_and_writes_back_the_same() {
        // Written by rater.core.codec.encode_account (orjson) for an account with one lot, a
        // card, a pending request and remembered ids.
        let py = br#"{"t":"acme","p":"standard-usd","c":"USD","lbt":5000000,"idm":100,"ar":{"enabled":true,"threshold":1000000,"amount":20000000,"payment_method":{"type":"card","expires":"2027-01","last4":"4242"}},"rs":false,"pr":"acme/recharge/1","pra":1795514400000000,"pam":20000000,"rc":1,"tor":{"acme/recharge/0":[15000000,1795510000000000]},"sb":"acme/recharge/0","lots":[["f1",9968500,1795514400000000,1827050400000000,"manual"]],"debt":0,"dom":{"2026-11":60},"sc":{"c1":1795514400000000},"sm":{"f1":1795514400000000},"cw":1795514400000000,"mw":1795514400000000,"pa":1795514400000000,"sg":[],"ns":0}"#;
        let a = decode_account(py).unwrap();
        assert_eq!(a.balance(), 9_968_500);
        assert_eq!(a.pending_request_id.as_deref(), Some("acme/recharge/1"));
        assert_eq!(
            a.timed_out_requests.get("acme/recharge/0"),
            Some(&(15_000_000, 1_795_510_000_000_000))
        );
        assert_eq!(encode_account_as(&a, Format::One), py.to_vec());
        // The same account as the Python codec writes it in format 2.
        let py2 = b"\x02\x00\x04acme\x0cstandard-usd\x03USD\x80\xad\xe2\x04\xc8\x01\x01\x01\x80\x89z\x80\xb4\x89\x13\x02\x072027-01\x044242\x00\x01\x0facme/recharge/1\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x80\xb4\x89\x13\x02\x01\x0facme/recharge/0\x80\x87\xa7\x0e\x80\xf0\xec\xfb\xb7\xc0\xb0\x06\x01\x0facme/recharge/0\x01\x02f1\xe8\xed\xc0\x09\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x80\xa0\xa1\xa1\xaa\xec\xbe\x06\x06manual\x00\x01\x072026-11x\x01\x02c1\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x01\x02f1\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x80\xa0\x82\xe0\xd8\xc0\xb0\x06\x00\x00";
        assert_eq!(encode_account(&a), py2.to_vec());
        assert_eq!(decode_account(py2).unwrap(), a);
    }

    #[test]
    fn a_format_2_value_cut_short_or_run_on_is_refused_with_the_field() {
        let mut a = Account::new("acme".into(), "standard-usd".into(), "USD".into());
        a.seen_cdrs.insert("c1", 1_795_514_400_000_000);
        let v = encode_account(&a);
        assert_eq!(decode_account(&v).unwrap(), a);
        for n in 1..v.len() {
            let e = decode_account(&v[..n]).unwrap_err();
            assert!(e.starts_with("account format 2: ends inside "), "{n}: {e}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert_eq!(
            decode_account(&longer).unwrap_err(),
            "account format 2: 1 bytes after the last field"
        );
        assert_eq!(
            decode_account(b"\x03").unwrap_err(),
            "account format version 3 is not known"
        );
    }
}

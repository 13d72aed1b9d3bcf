//! The account codec: the stored form that rater/core/codec.py writes (`to_stored`, encoded
//! by orjson), byte for byte, so a state file or changelog written by either engine is
//! read by the other, and one written by the Python core before the native engine
//! existed is read as it is.
//!
//! Versioning: format 1 is this JSON object (it starts with `{`). A later format starts
//! with its version byte (`\x02` ...), which no JSON text starts with, so a reader tells
//! the formats apart from the first byte and an upgrade reads what the old code wrote.

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

pub fn encode_account(a: &Account) -> Vec<u8> {
    encode_account_with(a, &mut |out| write_ids(out, &a.seen_cdrs))
}

/// `encode_account`, the recent CDR ids (`"sc"`, the bulk of a busy account) written by
/// `write_sc` (the worker's held accounts keep them encoded between batches).
pub fn encode_account_with(a: &Account, write_sc: &mut dyn FnMut(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 40 * (a.seen_cdrs.len() + a.seen_commands.len()));
    encode_account_into(&mut out, a, write_sc);
    out
}

/// `encode_account_with`, appended to `out` (a buffer the caller reuses).
pub fn encode_account_into(out: &mut Vec<u8>, a: &Account, write_sc: &mut dyn FnMut(&mut Vec<u8>)) {
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
        assert_eq!(encode_account(&a), py.to_vec());
    }
}

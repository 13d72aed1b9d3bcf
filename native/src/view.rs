//! The public view of an account (rater/core/codec.py `to_view`): what SPEC 9's
//! `balances.json` shows, money and times in wire format. Written here so that `rater
//! rate` does not decode every account's stored form (remembered ids included) into
//! Python objects to show a few fields; the differential tests compare it with `to_view`.

use crate::json::{write_int, write_str, Obj};
use crate::ledger::{write_payment_method, Account};
use crate::money::format_money;
use crate::time::format_time;

/// One account's view as orjson writes `to_view(a)`.
pub fn write_view(out: &mut Vec<u8>, a: &Account) {
    let mut o = Obj::new(out);
    o.str("tenant_id", &a.tenant_id)
        .str("balance", &format_money(a.balance()))
        .str("currency", &a.currency)
        .str("debt", &format_money(a.debt))
        .str("rate_plan", &a.rate_plan);
    {
        let lots = o.key("lots");
        lots.push(b'[');
        for (n, x) in a.lots.iter().enumerate() {
            if n > 0 {
                lots.push(b',');
            }
            let mut l = Obj::new(lots);
            l.str("lot_id", &x.lot_id)
                .str("remaining", &format_money(x.remaining))
                .str("purchased_at", &format_time(x.purchased_at))
                .str("expires_at", &format_time(x.expires_at))
                .str("source", &x.source);
            l.end();
        }
        lots.push(b']');
    }
    o.str(
        "low_balance_threshold",
        &format_money(a.low_balance_threshold),
    )
    .int(
        "included_domestic_minutes",
        a.included_domestic_minutes as i128,
    );
    if a.auto_recharge.is_some() || a.pending_request_id.is_some() || a.recharge_suspended {
        let k = o.key("auto_recharge");
        let mut ar = Obj::new(k);
        match &a.auto_recharge {
            Some(r) => {
                ar.bool("enabled", r.enabled)
                    .str("threshold", &format_money(r.threshold))
                    .str("amount", &format_money(r.amount));
                write_payment_method(ar.key("payment_method"), r);
            }
            None => {
                ar.bool("enabled", false)
                    .str("threshold", &format_money(0))
                    .str("amount", &format_money(0))
                    .raw("payment_method", b"null");
            }
        }
        ar.bool("suspended", a.recharge_suspended)
            .opt_str("pending_request_id", a.pending_request_id.as_deref());
        ar.end();
    } else {
        o.raw("auto_recharge", b"null");
    }
    {
        let d = o.key("domestic_seconds_used");
        let mut months: Vec<(&str, i64)> = a.domestic_seconds_used.iter().collect();
        months.sort();
        d.push(b'{');
        for (n, (m, s)) in months.into_iter().enumerate() {
            if n > 0 {
                d.push(b',');
            }
            write_str(d, m);
            d.push(b':');
            write_int(d, s as i128);
        }
        d.push(b'}');
    }
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_account_shows_zeros_and_no_auto_recharge() {
        // orjson.dumps(to_view(Account("t1", "std", "USD"))), read off the Python core.
        let a = Account::new("t1".into(), "std".into(), "USD".into());
        let mut out = Vec::new();
        write_view(&mut out, &a);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"tenant_id":"t1","balance":"0.000000","currency":"USD","debt":"0.000000","#,
                r#""rate_plan":"std","lots":[],"low_balance_threshold":"0.000000","#,
                r#""included_domestic_minutes":0,"auto_recharge":null,"domestic_seconds_used":{}}"#
            )
        );
    }
}

//! Input records (SPEC 3 and 5): bytes to a validated `Cdr` or `Command`, or the reject
//! reason and detail, with the same checks in the same order as rater/core/records.py (the
//! detail texts are compared byte for byte by the differential tests).

use crate::json::{self, Object, Short, Value};
use crate::money::parse_money;
use crate::pyrepr::{head, repr};
use crate::rates::CALL_TYPES;
use crate::time::parse_time;
use std::borrow::Cow;
use std::sync::OnceLock;

pub const MAX_DURATION: i128 = 86_400;

#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub reason: &'static str,
    pub detail: String,
    pub tenant_id: Option<String>,
}

fn invalid(detail: impl Into<String>, tenant: Option<&str>) -> Invalid {
    Invalid {
        reason: "invalid_record",
        detail: detail.into(),
        tenant_id: tenant.map(str::to_owned),
    }
}

/// A CDR; its texts borrow from the input when they hold no escapes.
#[derive(Debug, Clone)]
pub struct Cdr<'a> {
    pub cdr_id: Cow<'a, str>,
    pub tenant_id: Cow<'a, str>,
    pub call_type: &'static str,
    pub to: Cow<'a, str>,
    pub from: Option<Cow<'a, str>>,
    pub started_at: i64,
    pub started_at_text: Cow<'a, str>,
    pub duration: i64,
    pub attributes: Object<'a>,
    /// Its rated record's event id (`ledger::rated_event_id`), when hashed ahead.
    pub rated_event_id: Option<Short>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentMethod {
    pub expires: String,
    pub last4: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoRecharge {
    pub enabled: bool,
    pub threshold: i128,
    pub amount: i128,
    pub payment_method: Option<PaymentMethod>,
}

#[derive(Debug, Clone)]
pub enum CommandKind {
    Configure {
        rate_plan: Option<String>,
        currency: Option<String>,
        low_balance_threshold: Option<i128>,
        included_domestic_minutes: Option<i64>,
        auto_recharge: Option<AutoRecharge>,
    },
    AddFunds {
        amount: i128,
        purchased_at: Option<i64>,
        currency: Option<String>,
    },
    PaymentResult {
        request_id: String,
        succeeded: bool,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Command {
    pub command_id: String,
    pub tenant_id: String,
    pub occurred_at: i64,
    pub kind: CommandKind,
}

#[derive(Debug, Clone)]
pub enum Record<'a> {
    Cdr(Cdr<'a>),
    Command(Command),
}

impl<'a> Record<'a> {
    pub fn tenant_id(&self) -> &str {
        match self {
            Record::Cdr(c) => &c.tenant_id,
            Record::Command(c) => &c.tenant_id,
        }
    }
    /// The tenant id, borrowed from the input when it can be.
    pub fn tenant_cow(&self) -> Cow<'a, str> {
        match self {
            Record::Cdr(c) => c.tenant_id.clone(),
            Record::Command(c) => Cow::Owned(c.tenant_id.clone()),
        }
    }
    pub fn event_time(&self) -> i64 {
        match self {
            Record::Cdr(c) => c.started_at,
            Record::Command(c) => c.occurred_at,
        }
    }
}

/// How the bytes of a record that is not JSON are described: the Python bindings ask
/// orjson for its message (or, should orjson read what this parser refused, for its
/// canonical re-encoding, which is then parsed instead).
pub enum JsonVerdict {
    Message(String),
    Canonical(Vec<u8>),
}
pub static JSON_ERROR: OnceLock<fn(&[u8]) -> JsonVerdict> = OnceLock::new();

fn not_json(raw: &[u8], own: String) -> Result<Value<'static>, Invalid> {
    let detail = match JSON_ERROR.get() {
        Some(hook) => match hook(raw) {
            JsonVerdict::Message(m) => m,
            JsonVerdict::Canonical(bytes) => {
                if let Ok(v) = json::parse(&bytes) {
                    return Ok(v.into_owned());
                }
                head(&format!("not valid JSON: {own}"), 300).to_owned()
            }
        },
        None => head(&format!("not valid JSON: {own}"), 300).to_owned(),
    };
    Err(Invalid {
        reason: "invalid_json",
        detail,
        tenant_id: None,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn is_tenant(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

pub fn is_e164(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3
        && b.len() <= 16
        && b[0] == b'+'
        && (b'1'..=b'9').contains(&b[1])
        && b[2..].iter().all(u8::is_ascii_digit)
}

/// Parse and validate one input record; `key` is the Kafka key, when there is one.
/// `raw` None is a Kafka record with a null value (a tombstone).
pub fn decode<'a>(raw: Option<&'a [u8]>, key: Option<&str>) -> Result<Record<'a>, Invalid> {
    let Some(raw) = raw else {
        return Err(Invalid {
            reason: "invalid_json",
            detail: "null value (a Kafka tombstone): there is no record".into(),
            tenant_id: None,
        });
    };
    if raw.is_empty() {
        return Err(Invalid {
            reason: "invalid_json",
            detail: "empty value: there is no record".into(),
            tenant_id: None,
        });
    }
    let (v, repeated): (Value<'a>, Option<String>) = match json::parse_noting_repeats(raw) {
        Ok(x) => x,
        Err(own) => (not_json(raw, own)?, None),
    };
    let Value::Object(obj) = v else {
        return Err(invalid(
            format!("the record must be a JSON object, not {}", json_type(&v)),
            None,
        ));
    };
    if let Some(k) = repeated {
        // Parsers keep either of a repeated key's values: the record is ambiguous.
        let tenant = match obj.get("tenant_id") {
            Some(Value::Str(t)) if k != "tenant_id" && is_tenant(t) => Some(t.as_ref()),
            _ => None,
        };
        return Err(invalid(
            format!(
                "{}: the key appears more than once in an object (readers may take either value)",
                head(&k, 80)
            ),
            tenant,
        ));
    }
    let record = if obj.contains_key("cdr_id") {
        Record::Cdr(validate_cdr(obj)?)
    } else if obj.contains_key("command") {
        Record::Command(validate_command(obj)?)
    } else {
        let tenant = match obj.get("tenant_id") {
            Some(Value::Str(t)) if is_tenant(t) => Some(t.as_ref()),
            _ => None,
        };
        return Err(invalid(
            "cdr_id/command: the record has neither (a CDR needs cdr_id, a command needs command)",
            tenant,
        ));
    };
    if let Some(k) = key {
        let t = record.tenant_id();
        if k != t {
            return Err(invalid(
                format!(
                    "tenant_id: {} does not match the record key {}",
                    repr(t),
                    repr(head(k, 80))
                ),
                Some(t),
            ));
        }
    }
    Ok(record)
}

fn id(obj: &Object, name: &str, tenant: &str, limit: usize) -> Result<String, Invalid> {
    check_id(Value::get(obj, name), name, tenant, limit).map(str::to_owned)
}

/// An id field's value (None: absent or null), checked.
fn check_id<'v>(
    v: Option<&'v Value>,
    name: &str,
    tenant: &str,
    limit: usize,
) -> Result<&'v str, Invalid> {
    match v {
        None => Err(invalid(format!("{name}: required"), Some(tenant))),
        Some(Value::Str(s)) if (1..=limit).contains(&s.chars().count()) => {
            if s.chars()
                .any(|c| matches!(c as u32, 0..=0x1f | 0x7f..=0x9f))
            {
                return Err(invalid(
                    format!("{name}: must not contain control characters (U+0000 to U+001F, U+007F to U+009F)"),
                    Some(tenant),
                ));
            }
            Ok(s)
        }
        Some(_) => Err(invalid(
            format!("{name}: must be a string of 1 to {limit} characters"),
            Some(tenant),
        )),
    }
}

fn tenant(obj: &Object) -> Result<String, Invalid> {
    check_tenant(Value::get(obj, "tenant_id")).map(str::to_owned)
}

fn check_tenant<'v>(v: Option<&'v Value>) -> Result<&'v str, Invalid> {
    match v {
        None => Err(invalid("tenant_id: required", None)),
        Some(Value::Str(s)) if is_tenant(s) => Ok(s),
        Some(_) => Err(invalid(
            "tenant_id: must be 1 to 64 of A-Z a-z 0-9 . _ : -",
            None,
        )),
    }
}

fn time(obj: &Object, name: &str, tenant: &str) -> Result<i64, Invalid> {
    check_time(Value::get(obj, name), name, tenant)
}

fn check_time(v: Option<&Value>, name: &str, tenant: &str) -> Result<i64, Invalid> {
    match v {
        None => Err(invalid(format!("{name}: required"), Some(tenant))),
        Some(v) => parse_time(v).map_err(|e| invalid(format!("{name}: {e}"), Some(tenant))),
    }
}

fn money(
    obj: &Object,
    name: &str,
    tenant: &str,
    minimum: i128,
    required: bool,
) -> Result<Option<i128>, Invalid> {
    let Some(v) = Value::get(obj, name) else {
        if required {
            return Err(invalid(format!("{name}: required"), Some(tenant)));
        }
        return Ok(None);
    };
    let micro = parse_money(v).map_err(|e| invalid(format!("{name}: {e}"), Some(tenant)))?;
    if micro < minimum {
        let rule = if minimum > 0 { "> 0" } else { ">= 0" };
        return Err(invalid(format!("{name}: must be {rule}"), Some(tenant)));
    }
    Ok(Some(micro))
}

const E164_RULE: &str = "must be an E.164 number (+ then 2 to 15 digits, the first not 0)";

/// The fields of a CDR, in the order of `Cdr`; the other keys are its attributes.
const CDR_FIELDS: [&str; 7] = [
    "cdr_id",
    "tenant_id",
    "call_type",
    "to",
    "from",
    "started_at",
    "duration_seconds",
];

/// A CDR field's position in `CDR_FIELDS` (told apart by length first).
#[inline]
fn cdr_field(k: &str) -> Option<usize> {
    let i = match k.len() {
        6 => 0,
        9 if k.as_bytes()[0] == b't' => 1,
        9 => 2,
        2 => 3,
        4 => 4,
        10 => 5,
        16 => 6,
        _ => return None,
    };
    (CDR_FIELDS[i] == k).then_some(i)
}

/// The string of a value checked to be one, moved out (a borrowed one stays borrowed).
fn take_str<'a>(v: Value<'a>) -> Cow<'a, str> {
    match v {
        Value::Str(s) => s,
        _ => Cow::Borrowed(""),
    }
}

fn validate_cdr(obj: Object<'_>) -> Result<Cdr<'_>, Invalid> {
    // One pass over the keys (they are distinct: a repeated key was refused), then the
    // checks in the order of rater/core/records.py; JSON null reads as absent.
    let mut f: [Option<&Value>; 7] = [None; 7];
    // Where each field is among the entries, and which of the first 64 are fields.
    let mut at = [usize::MAX; 7];
    let mut field_bits = 0u64;
    let mut extras = 0;
    for (n, (k, v)) in obj.iter().enumerate() {
        match cdr_field(k) {
            Some(i) => {
                at[i] = n;
                if n < 64 {
                    field_bits |= 1 << n;
                }
                if !matches!(v, Value::Null) {
                    f[i] = Some(v);
                }
            }
            None => extras += 1,
        }
    }
    let [cdr_id_v, tenant_v, call_type_v, to_v, from_v, started_v, duration_v] = f;
    let tenant = check_tenant(tenant_v)?;
    let t = Some(tenant);
    check_id(cdr_id_v, "cdr_id", tenant, 128)?;
    let call_type = match call_type_v {
        None => return Err(invalid("call_type: required", t)),
        Some(Value::Str(s)) => match CALL_TYPES.iter().find(|c| **c == s.as_ref()) {
            Some(c) => *c,
            None => {
                return Err(invalid(
                    format!("call_type: must be one of {}", CALL_TYPES.join(", ")),
                    t,
                ))
            }
        },
        Some(_) => {
            return Err(invalid(
                format!("call_type: must be one of {}", CALL_TYPES.join(", ")),
                t,
            ))
        }
    };
    match to_v {
        None => return Err(invalid("to: required", t)),
        Some(Value::Str(s)) if is_e164(s) => {}
        Some(_) => return Err(invalid(format!("to: {E164_RULE}"), t)),
    }
    match from_v {
        None => {}
        Some(Value::Str(s)) if is_e164(s) => {}
        Some(_) => return Err(invalid(format!("from: {E164_RULE}"), t)),
    }
    let started_at = check_time(started_v, "started_at", tenant)?;
    let duration = match duration_v {
        None => return Err(invalid("duration_seconds: required", t)),
        Some(Value::Int(d)) if (0..=MAX_DURATION).contains(d) => *d as i64,
        Some(_) => {
            return Err(invalid(
                format!("duration_seconds: must be an integer from 0 to {MAX_DURATION}"),
                t,
            ))
        }
    };
    // All checked: move the texts out, the other keys stay as the attributes.
    let mut cdr = Cdr {
        cdr_id: Cow::Borrowed(""),
        tenant_id: Cow::Borrowed(""),
        call_type,
        to: Cow::Borrowed(""),
        from: None,
        started_at,
        started_at_text: Cow::Borrowed(""),
        duration,
        attributes: Object::default(),
        rated_event_id: None,
    };
    let mut rest = obj.into_entries();
    let mut take = |i: usize| match at[i] {
        usize::MAX => Value::Null,
        n => std::mem::replace(&mut rest[n].1, Value::Null),
    };
    cdr.cdr_id = take_str(take(0));
    cdr.tenant_id = take_str(take(1));
    cdr.to = take_str(take(3));
    if let v @ Value::Str(_) = take(4) {
        cdr.from = Some(take_str(v));
    }
    cdr.started_at_text = take_str(take(5));
    if extras > 0 {
        let mut n = 0;
        rest.retain(|(k, _)| {
            let field = if n < 64 {
                field_bits & 1 << n != 0
            } else {
                cdr_field(k).is_some()
            };
            n += 1;
            !field
        });
        cdr.attributes = Object::from_distinct(rest);
    }
    Ok(cdr)
}

const COMMANDS: [&str; 3] = ["configure_account", "add_funds", "payment_result"];
const COMMON: [&str; 4] = ["command_id", "tenant_id", "command", "occurred_at"];

fn allowed(command: &str, k: &str) -> bool {
    COMMON.contains(&k)
        || match command {
            "configure_account" => [
                "rate_plan",
                "currency",
                "low_balance_threshold",
                "included_domestic_minutes",
                "auto_recharge",
            ]
            .contains(&k),
            "add_funds" => ["amount", "purchased_at", "reference", "currency"].contains(&k),
            _ => ["request_id", "status", "reason"].contains(&k),
        }
}

fn currency(obj: &Object, tenant: &str) -> Result<Option<String>, Invalid> {
    match Value::get(obj, "currency") {
        None => Ok(None),
        Some(Value::Str(s)) if s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase()) => {
            Ok(Some(s.to_string()))
        }
        Some(_) => Err(invalid(
            "currency: must be an ISO 4217 code such as USD",
            Some(tenant),
        )),
    }
}

fn validate_command(obj: Object<'_>) -> Result<Command, Invalid> {
    let tenant = tenant(&obj)?;
    let t = Some(tenant.as_str());
    let command_id = id(&obj, "command_id", &tenant, 128)?;
    let command: &'static str = match Value::get(&obj, "command") {
        Some(Value::Str(s)) if COMMANDS.contains(&s.as_ref()) => {
            COMMANDS.iter().find(|c| **c == s.as_ref()).expect("listed")
        }
        _ => {
            return Err(invalid(
                format!("command: must be one of {}", COMMANDS.join(", ")),
                t,
            ))
        }
    };
    let occurred_at = time(&obj, "occurred_at", &tenant)?;
    for k in obj.keys() {
        if !allowed(command, k) {
            return Err(invalid(
                format!("{}: not a field of {command}", head(k, 64)),
                t,
            ));
        }
    }
    let kind = match command {
        "configure_account" => {
            let rate_plan = match Value::get(&obj, "rate_plan") {
                None => None,
                Some(Value::Str(s)) if (1..=64).contains(&s.chars().count()) => Some(s.to_string()),
                Some(_) => {
                    return Err(invalid(
                        "rate_plan: must be a plan id (a string of 1 to 64 characters)",
                        t,
                    ))
                }
            };
            let currency = currency(&obj, &tenant)?;
            let low_balance_threshold = money(&obj, "low_balance_threshold", &tenant, 0, false)?;
            let included_domestic_minutes = match Value::get(&obj, "included_domestic_minutes") {
                None => None,
                Some(Value::Int(m)) if (0..=1_000_000).contains(m) => Some(*m as i64),
                Some(_) => {
                    return Err(invalid(
                        "included_domestic_minutes: must be an integer from 0 to 1000000",
                        t,
                    ))
                }
            };
            let auto_recharge = match obj.get("auto_recharge") {
                None => None,
                Some(ar) => Some(auto_recharge(ar, &tenant)?),
            };
            CommandKind::Configure {
                rate_plan,
                currency,
                low_balance_threshold,
                included_domestic_minutes,
                auto_recharge,
            }
        }
        "add_funds" => {
            let amount = money(&obj, "amount", &tenant, 1, true)?.expect("required");
            let purchased_at = match Value::get(&obj, "purchased_at") {
                None => None,
                Some(_) => Some(time(&obj, "purchased_at", &tenant)?),
            };
            match Value::get(&obj, "reference") {
                None => {}
                Some(Value::Str(s)) if s.chars().count() <= 256 => {}
                Some(_) => {
                    return Err(invalid(
                        "reference: must be a string of at most 256 characters",
                        t,
                    ))
                }
            }
            let currency = currency(&obj, &tenant)?;
            CommandKind::AddFunds {
                amount,
                purchased_at,
                currency,
            }
        }
        _ => {
            let request_id = id(&obj, "request_id", &tenant, 200)?;
            let succeeded = match obj.get("status") {
                Some(Value::Str(s)) if s == "succeeded" => true,
                Some(Value::Str(s)) if s == "failed" => false,
                _ => return Err(invalid("status: must be succeeded or failed", t)),
            };
            let reason = match Value::get(&obj, "reason") {
                None => None,
                Some(Value::Str(s)) if (1..=256).contains(&s.chars().count()) => {
                    Some(s.to_string())
                }
                Some(_) => {
                    return Err(invalid(
                        "reason: must be a string of 1 to 256 characters",
                        t,
                    ))
                }
            };
            CommandKind::PaymentResult {
                request_id,
                succeeded,
                reason,
            }
        }
    };
    Ok(Command {
        command_id,
        tenant_id: tenant,
        occurred_at,
        kind,
    })
}

fn auto_recharge(ar: &Value, tenant: &str) -> Result<AutoRecharge, Invalid> {
    let t = Some(tenant);
    let Value::Object(ar) = ar else {
        return Err(invalid("auto_recharge: must be an object", t));
    };
    for k in ar.keys() {
        if !["enabled", "threshold", "amount", "payment_method"].contains(&k) {
            return Err(invalid(
                format!(
                    "auto_recharge.{}: not a field of auto_recharge",
                    head(k, 64)
                ),
                t,
            ));
        }
    }
    let enabled = match ar.get("enabled") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(invalid("auto_recharge.enabled: required, true or false", t)),
    };
    let prefixed = |e: Invalid| Invalid {
        detail: format!("auto_recharge.{}", e.detail),
        ..e
    };
    let threshold = money(ar, "threshold", tenant, 0, enabled).map_err(prefixed)?;
    let amount = money(ar, "amount", tenant, 1, enabled).map_err(prefixed)?;
    let mut out = AutoRecharge {
        enabled,
        threshold: threshold.unwrap_or(0),
        amount: amount.unwrap_or(0),
        payment_method: None,
    };
    let Some(pm) = Value::get(ar, "payment_method") else {
        if enabled {
            return Err(invalid(
                "auto_recharge.payment_method: required when enabled",
                t,
            ));
        }
        return Ok(out);
    };
    let Value::Object(pm) = pm else {
        return Err(invalid(
            "auto_recharge.payment_method: must be an object",
            t,
        ));
    };
    for k in pm.keys() {
        if !["type", "expires", "last4"].contains(&k) {
            return Err(invalid(
                format!(
                    "auto_recharge.payment_method.{}: not a field of payment_method",
                    head(k, 64)
                ),
                t,
            ));
        }
    }
    if !matches!(pm.get("type"), Some(Value::Str(s)) if s == "card") {
        return Err(invalid(
            "auto_recharge.payment_method.type: must be card",
            t,
        ));
    }
    let expires = match pm.get("expires") {
        Some(Value::Str(s)) if is_card_month(s) => s.to_string(),
        _ => {
            return Err(invalid(
                "auto_recharge.payment_method.expires: must be YYYY-MM",
                t,
            ))
        }
    };
    let last4 = match Value::get(pm, "last4") {
        None => None,
        Some(Value::Str(s)) if s.len() == 4 && s.bytes().all(|c| c.is_ascii_digit()) => {
            Some(s.to_string())
        }
        Some(_) => {
            return Err(invalid(
                "auto_recharge.payment_method.last4: must be 4 digits",
                t,
            ))
        }
    };
    out.payment_method = Some(PaymentMethod { expires, last4 });
    Ok(out)
}

/// `([0-9]{4})-(0[1-9]|1[0-2])`
fn is_card_month(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && matches!((b[5], b[6]), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_tenant` is `rater.core.records.TENANT_RE.fullmatch` (`[A-Za-z0-9._:-]{1,64}`):
    /// the expected answers are Python's, on the edges of the class (no Unicode digit or
    /// letter, no case folding, no trailing newline) and of the length (in characters
    /// there; every accepted character is one byte). tests/worker/test_native_store.py
    /// holds the worker's replay check to the same answers through the native feed.
    #[test]
    fn is_tenant_is_tenant_re() {
        let long = "a".repeat(64);
        let longer = "a".repeat(65);
        let wide = "\u{e9}".repeat(32); // 32 characters, 64 bytes
        let cases: [(&str, bool); 26] = [
            ("", false),
            ("a", true),
            (&long, true),
            (&longer, false),
            (&wide, false),
            ("A-Z_a.z:0-9", true),
            ("Z", true),
            ("-", true),
            ("..", true),
            ("_:", true),
            ("t 1", false),
            ("t1\n", false),
            ("\nt1", false),
            ("t1/x", false),
            ("t1\0", false),
            ("\u{e9}", false),
            ("t1\u{e9}", false),
            ("\u{661}", false),  // ARABIC-INDIC DIGIT ONE: not [0-9]
            ("\u{212a}", false), // KELVIN SIGN: no case folding
            ("\u{17f}", false),  // LATIN SMALL LETTER LONG S
            ("\u{ff21}", false), // FULLWIDTH A
            ("\u{fffd}", false), // an invalid key byte, decoded with "replace"
            ("t1+", false),
            ("t1@x", false),
            ("t1,", false),
            ("t1\t", false),
        ];
        for (s, expected) in cases {
            assert_eq!(is_tenant(s), expected, "{s:?}");
        }
    }

    fn detail(raw: &str) -> String {
        decode(Some(raw.as_bytes()), None).unwrap_err().detail
    }

    #[test]
    fn each_field_is_named_in_its_reject() {
        assert_eq!(
            detail("[1]"),
            "the record must be a JSON object, not an array"
        );
        assert_eq!(detail(r#"{"cdr_id":"c1"}"#), "tenant_id: required");
        assert_eq!(
            detail(r#"{"cdr_id":"c1","tenant_id":"t","call_type":"x"}"#),
            "call_type: must be one of conference_dialout, international, toll_free, domestic"
        );
        assert_eq!(
            detail(
                r#"{"command":"add_funds","command_id":"a","tenant_id":"t","occurred_at":"2026-01-01T00:00:00Z","amount":"-1"}"#
            ),
            "amount: must be > 0"
        );
        assert_eq!(
            detail(
                r#"{"command":"add_funds","command_id":"a","tenant_id":"t","occurred_at":"2026-01-01T00:00:00Z","x":1}"#
            ),
            "x: not a field of add_funds"
        );
    }
}

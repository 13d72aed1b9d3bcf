//! Money (SPEC 1): wire amounts to integer micro-units and back, as rater/core/money.py does.

use crate::json::{decimal, float_digits, Short, Value};
use crate::pyrepr::{head, repr};

pub const MICRO: i128 = 1_000_000;
pub const MAX_ABS_MICRO: i128 = 1_000_000_000_000 * MICRO;

/// A wire amount in micro-units, or the reason it is not one (the text after the field name).
pub fn parse_money(v: &Value) -> Result<i128, String> {
    match v {
        Value::Str(s) => parse_money_text(s),
        Value::Bool(_) => Err("must be a decimal string, not a boolean".into()),
        Value::Int(i) => {
            if i.abs() > MAX_ABS_MICRO / MICRO {
                return Err("is out of range".into());
            }
            Ok(i * MICRO)
        }
        Value::Float(f) => parse_float(*f),
        _ => Err("must be a decimal string".into()),
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

pub fn parse_money_text(text: &str) -> Result<i128, String> {
    // ([+-]?)([0-9]{1,13})(?:\.([0-9]{1,6}))?
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let ok = all_digits(whole)
        && whole.len() <= 13
        && frac.is_none_or(|f| all_digits(f) && f.len() <= 6);
    if !ok {
        // "." in text and [+-]?[0-9]+\.[0-9]{7,}
        if let Some(f) = frac {
            if all_digits(whole) && all_digits(f) && f.len() >= 7 {
                return Err(format!(
                    "has more than 6 fractional digits: {}",
                    repr(head(text, 40))
                ));
            }
        }
        // [+-]?[0-9]+(?:\.[0-9]{1,6})?: well formed, too many digits
        if all_digits(whole) && frac.is_none_or(|f| all_digits(f) && f.len() <= 6) {
            return Err("is out of range".into());
        }
        return Err(format!("is not a decimal amount: {}", repr(head(text, 40))));
    }
    let mut micro: i128 = whole.parse::<i128>().expect("digits") * MICRO;
    if let Some(f) = frac {
        let padded = format!("{f:0<6}");
        micro += padded.parse::<i128>().expect("digits");
    }
    if micro > MAX_ABS_MICRO {
        return Err("is out of range".into());
    }
    Ok(if neg { -micro } else { micro })
}

/// Python's `repr` of a float: shortest digits, scientific below 1e-4 and from 1e16.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, e) = float_digits(f);
    if (-4..16).contains(&e) {
        if e < 0 {
            format!("{sign}0.{}{}", "0".repeat((-e - 1) as usize), digits)
        } else {
            let int_len = e as usize + 1;
            if digits.len() <= int_len {
                format!("{sign}{}{}.0", digits, "0".repeat(int_len - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        }
    } else {
        let mant = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if e < 0 { "-" } else { "+" };
        format!("{sign}{mant}e{esign}{:02}", e.abs())
    }
}

fn parse_float(f: f64) -> Result<i128, String> {
    if !f.is_finite() {
        return Err("is not a finite number".into());
    }
    // Decimal(repr(f)) has the exponent of the last digit written; for a shortest form
    // "d.ddd" x 10^e that is e - (digits - 1) (an integral float's ".0" only raises it).
    let (digits, e) = float_digits(f);
    let scale = e - (digits.len() as i32 - 1);
    if scale < -6 {
        return Err(format!(
            "has more than 6 fractional digits: {}",
            repr(head(&py_float_repr(f), 40))
        ));
    }
    // abs(d) > 10**12: from 10^13 up always; at 10^12 unless it is exactly 10^12.
    if e >= 13 || (e == 12 && digits != "1") {
        return Err("is out of range".into());
    }
    let n: i128 = digits.parse().expect("digits");
    let micro_exp = scale + 6;
    let mut micro = n * 10i128.pow(micro_exp as u32);
    if f < 0.0 {
        micro = -micro;
    }
    Ok(micro)
}

/// Micro-units with exactly 6 fractional digits: -30000 -> "-0.030000" (inline text,
/// no allocation: it is written several times per record).
pub fn format_money(micro: i128) -> Short {
    let mut out = Short::default();
    if micro < 0 {
        out.push(b'-');
    }
    let a = micro.unsigned_abs();
    let mut digits = [0u8; 40];
    let at = decimal(&mut digits, a / 1_000_000);
    for &d in &digits[at..] {
        out.push(d);
    }
    out.push(b'.');
    let mut frac = (a % 1_000_000) as u32;
    let mut f = [b'0'; 6];
    for k in (0..6).rev() {
        f[k] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    for c in f {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_amounts_in_micro_units() {
        assert_eq!(parse_money(&Value::Str("12".into())), Ok(12_000_000));
        assert_eq!(parse_money(&Value::Str("-3.500000".into())), Ok(-3_500_000));
        assert_eq!(parse_money(&Value::Str("0.0315".into())), Ok(31_500));
        assert_eq!(parse_money(&Value::Float(0.1)), Ok(100_000));
        assert_eq!(parse_money(&Value::Float(100.0)), Ok(100_000_000));
        assert_eq!(parse_money(&Value::Float(5e-5)), Ok(50));
        assert_eq!(parse_money(&Value::Int(7)), Ok(7_000_000));
        assert_eq!(
            parse_money(&Value::Float(1e-7)),
            Err("has more than 6 fractional digits: '1e-07'".into())
        );
        assert_eq!(
            parse_money(&Value::Str("1.1234567".into())),
            Err("has more than 6 fractional digits: '1.1234567'".into())
        );
        assert_eq!(
            parse_money(&Value::Str("1e2".into())),
            Err("is not a decimal amount: '1e2'".into())
        );
        assert_eq!(
            parse_money(&Value::Float(1e13)),
            Err("is out of range".into())
        );
        assert_eq!(
            parse_money(&Value::Float(1e12)),
            Ok(1_000_000_000_000 * MICRO)
        );
    }

    #[test]
    fn python_float_repr() {
        for (f, want) in [
            (1e-7, "1e-07"),
            (1e16, "1e+16"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (100.0, "100.0"),
            (1e22, "1e+22"),
            (123.25, "123.25"),
        ] {
            assert_eq!(py_float_repr(f), want);
        }
    }

    #[test]
    fn six_fractional_digits_out() {
        assert_eq!(format_money(-30_000), "-0.030000");
        assert_eq!(format_money(12_500_000), "12.500000");
        assert_eq!(format_money(0), "0.000000");
        assert_eq!(format_money(-1_234_567_891_000_001), "-1234567891.000001");
    }
}

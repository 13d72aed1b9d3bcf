//! Timestamps (SPEC 1) as rater/core/timeutil.py reads and writes them: RFC 3339 with a zone
//! in, i64 UTC microseconds inside, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` out.

use crate::json::Value;
use crate::pyrepr::{head, repr};
use std::borrow::Cow;

pub const SECOND: i64 = 1_000_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;
const MIN_YEAR: i64 = 1970;
const MAX_YEAR: i64 = 9000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v = 0i64;
    for &c in b {
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// `datetime(y, mo, d, h, mi, s)`'s complaint, in CPython 3.11's words.
fn datetime_check(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Result<(), &'static str> {
    if !(1..=12).contains(&mo) {
        return Err("month must be in 1..12");
    }
    if d < 1 || d > days_in_month(y, mo) {
        return Err("day is out of range for month");
    }
    if h > 23 {
        return Err("hour must be in 0..23");
    }
    if mi > 59 {
        return Err("minute must be in 0..59");
    }
    if s > 59 {
        return Err("second must be in 0..59");
    }
    Ok(())
}

/// The common `YYYY-MM-DDTHH:MM:SSZ`; None for any other shape (then the full parser runs).
fn fast_utc(b: &[u8]) -> Option<i64> {
    if b.len() != 20 || b[19] != b'Z' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(MIN_YEAR..=MAX_YEAR).contains(&y) || datetime_check(y, mo, d, 0, 0, 0).is_err() {
        return None;
    }
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * DAY + ((h * 60 + mi) * 60 + s) * SECOND)
}

/// `[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+`: a date and time without a zone.
fn looks_zoneless(b: &[u8]) -> bool {
    b.len() > 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && matches!(b[10], b'T' | b't' | b' ')
        && b[11..]
            .iter()
            .all(|c| c.is_ascii_digit() || *c == b':' || *c == b'.')
}

pub fn parse_time_text(value: &str) -> Result<i64, String> {
    let b = value.as_bytes();
    if let Some(t) = fast_utc(b) {
        return Ok(t);
    }
    let bad = || {
        if looks_zoneless(b) {
            format!("has no zone offset: {}", repr(head(value, 40)))
        } else {
            format!("is not an RFC 3339 timestamp: {}", repr(head(value, 40)))
        }
    };
    // ([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})
    // (?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))
    if b.len() < 20
        || !(b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't')
            && b[13] == b':'
            && b[16] == b':')
    {
        return Err(bad());
    }
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        digits(&b[0..4]),
        digits(&b[5..7]),
        digits(&b[8..10]),
        digits(&b[11..13]),
        digits(&b[14..16]),
        digits(&b[17..19]),
    ) else {
        return Err(bad());
    };
    let mut i = 19;
    let mut frac: &[u8] = b"";
    if b[i] == b'.' {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == start || j - start > 9 {
            return Err(bad());
        }
        frac = &b[start..j];
        i = j;
    }
    let rest = &b[i..];
    let offset: Option<(bool, i64, i64)> = match rest {
        [b'Z' | b'z'] => None,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (Some(oh), Some(om)) = (digits(&[*h1, *h2]), digits(&[*m1, *m2])) else {
                return Err(bad());
            };
            Some((*sign == b'+', oh, om))
        }
        _ => return Err(bad()),
    };
    if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
        return Err(format!(
            "is out of range (years {MIN_YEAR} to {MAX_YEAR}): {}",
            repr(head(value, 40))
        ));
    }
    if let Err(e) = datetime_check(y, mo, d, h, mi, s) {
        return Err(format!(
            "is not a valid date and time: {} ({e})",
            repr(head(value, 40))
        ));
    }
    let mut micro = days_from_civil(y, mo, d) * DAY + ((h * 60 + mi) * 60 + s) * SECOND;
    if !frac.is_empty() {
        let f6: Vec<u8> = frac
            .iter()
            .take(6)
            .copied()
            .chain(std::iter::repeat(b'0'))
            .take(6)
            .collect();
        micro += digits(&f6).expect("digits");
    }
    if let Some((plus, oh, om)) = offset {
        if oh > 23 || om > 59 {
            return Err(format!(
                "has an invalid zone offset: {}",
                repr(head(value, 40))
            ));
        }
        let off = (oh * 60 + om) * MINUTE;
        micro = if plus { micro - off } else { micro + off };
    }
    Ok(micro)
}

pub fn parse_time(v: &Value) -> Result<i64, String> {
    match v {
        Value::Str(s) => parse_time_text(s),
        _ => Err("must be an RFC 3339 timestamp string".into()),
    }
}

fn split(micro: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let days = micro.div_euclid(DAY);
    let rem = micro.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / SECOND;
    (
        y,
        m,
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rem % SECOND,
    )
}

pub fn format_time(micro: i64) -> String {
    let (y, m, d, h, mi, sec, us) = split(micro);
    let mut out = String::with_capacity(28);
    let push = |out: &mut String, v: i64, width: usize| {
        let text = v.to_string();
        for _ in text.len()..width {
            out.push('0');
        }
        out.push_str(&text);
    };
    if (0..10000).contains(&y) {
        let y = y as u32;
        for div in [1000, 100, 10, 1] {
            out.push((b'0' + (y / div % 10) as u8) as char);
        }
    } else {
        push(&mut out, y, 4);
    }
    for (sep, v) in [('-', m), ('-', d), ('T', h), (':', mi), (':', sec)] {
        out.push(sep);
        out.push((b'0' + (v / 10) as u8) as char);
        out.push((b'0' + (v % 10) as u8) as char);
    }
    if us != 0 {
        out.push('.');
        let us = us as u32;
        for div in [100_000, 10_000, 1000, 100, 10, 1] {
            out.push((b'0' + (us / div % 10) as u8) as char);
        }
    }
    out.push('Z');
    out
}

/// `format_time(micro)`, reusing `text` when it is already written that way.
pub fn utc_text(text: &str, micro: i64) -> Cow<'_, str> {
    let b = text.as_bytes();
    if b.len() == 20 && b.is_ascii() && b[19] == b'Z' && b[10] == b'T' {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format_time(micro))
}

/// Calendar months later, the day clamped to the month's end.
pub fn add_months(micro: i64, months: i64) -> i64 {
    let days = micro.div_euclid(DAY);
    let rem = micro.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + months;
    let (ny, nm0) = (total.div_euclid(12), total.rem_euclid(12));
    let nd = d.min(days_in_month(ny, nm0 + 1));
    days_from_civil(ny, nm0 + 1, nd) * DAY + rem
}

/// The calendar month (UTC) of a time, as `YYYY-MM`.
pub fn month_key(micro: i64) -> String {
    let (y, m, _d) = civil_from_days(micro.div_euclid(DAY));
    year_month(y, m)
}

/// `YYYY-MM` (a year outside 0..=9999 as `format!("{y:04}")` writes it).
fn year_month(y: i64, m: i64) -> String {
    if !(0..10000).contains(&y) {
        return format!("{y:04}-{m:02}");
    }
    let mut s = String::with_capacity(7);
    for d in [
        y / 1000,
        y / 100 % 10,
        y / 10 % 10,
        y % 10,
        -1,
        m / 10,
        m % 10,
    ] {
        s.push(if d < 0 { '-' } else { (b'0' + d as u8) as char });
    }
    s
}

pub fn previous_month_key(key: &str) -> String {
    let y: i64 = key[..4].parse().unwrap_or(0);
    let m: i64 = key[5..7].parse().unwrap_or(1);
    if m == 1 {
        year_month(y - 1, 12)
    } else {
        year_month(y, m - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_and_out() {
        // 2026-11-24T10:00:00Z = 1795514400 s since the epoch (date -d ... +%s).
        assert_eq!(
            parse_time_text("2026-11-24T10:00:00Z"),
            Ok(1_795_514_400 * SECOND)
        );
        assert_eq!(
            parse_time_text("2026-11-24T11:00:00+01:00"),
            Ok(1_795_514_400 * SECOND)
        );
        assert_eq!(
            parse_time_text("2026-11-24t10:00:00.5z"),
            Ok(1_795_514_400 * SECOND + 500_000)
        );
        assert_eq!(
            format_time(1_795_514_400 * SECOND + 500_000),
            "2026-11-24T10:00:00.500000Z"
        );
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(1_795_514_400 * SECOND + 7),
            "2026-11-24T10:00:00.000007Z"
        );
        assert_eq!(
            parse_time_text("2026-11-24T10:00:00"),
            Err("has no zone offset: '2026-11-24T10:00:00'".into())
        );
        assert_eq!(
            parse_time_text("2026-02-30T10:00:00Z"),
            Err("is not a valid date and time: '2026-02-30T10:00:00Z' (day is out of range for month)".into())
        );
    }

    #[test]
    fn twelve_months_later_clamps_the_day() {
        let t = parse_time_text("2024-02-29T12:00:00Z").unwrap();
        assert_eq!(format_time(add_months(t, 12)), "2025-02-28T12:00:00Z");
        assert_eq!(month_key(t), "2024-02");
        assert_eq!(previous_month_key("2024-01"), "2023-12");
    }
}

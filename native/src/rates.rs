//! Rate tables (SPEC 4): lookup and charge. The CSV files are read and checked by the
//! Python loader (rater/core/rates.py), which hands the parsed rows over; this module indexes
//! them the same way and answers the same lookups.

use crate::money::format_money;
/// Hash maps with a fast hash seeded per process (keys come from the input).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub const CALL_TYPES: [&str; 4] = [
    "conference_dialout",
    "international",
    "toll_free",
    "domestic",
];

#[derive(Debug, Clone)]
pub struct Rate {
    pub prefix: String,
    pub rate_per_minute: i128,
    pub connection_fee: i128,
    pub first_increment: i64,
    pub next_increment: i64,
    pub effective_from: i64,
    pub rate_text: String,
    pub fee_text: String,
}

/// One row as the loader hands it over.
#[derive(Debug, Clone)]
pub struct Row {
    pub call_type: String,
    pub prefix: String,
    pub rate_per_minute: i128,
    pub connection_fee: i128,
    pub first_increment: i64,
    pub next_increment: i64,
    pub effective_from: i64,
}

#[derive(Debug, Default)]
struct ByType {
    /// prefix (`prefix_key`) -> (effective_from ascending, rates in the same order)
    by_prefix: HashMap<u64, (Vec<i64>, Vec<Rate>)>,
    /// the prefix lengths with rows, longest first
    lengths: Vec<usize>,
}

/// The longest prefix a lookup can match: an E.164 number has at most 15 digits.
const MAX_PREFIX: usize = 15;

/// A prefix of up to 15 digits as one number: its value and its length (leading zeros
/// count). None for anything else, which no E.164 number's digits can match.
fn prefix_key(prefix: &str) -> Option<u64> {
    if prefix.len() > MAX_PREFIX || !prefix.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let value = prefix.bytes().fold(0u64, |v, c| v * 10 + (c - b'0') as u64);
    Some(value << 4 | prefix.len() as u64)
}

#[derive(Debug)]
pub struct Plan {
    pub plan_id: String,
    pub currency: String,
    /// call type -> its rows; four call types at most, searched in order.
    types: Vec<(String, ByType)>,
}

impl Plan {
    pub fn new(plan_id: String, currency: String, mut rows: Vec<Row>) -> Plan {
        rows.sort_by(|a, b| {
            (&a.call_type, &a.prefix, a.effective_from).cmp(&(
                &b.call_type,
                &b.prefix,
                b.effective_from,
            ))
        });
        let mut types: Vec<(String, ByType)> = Vec::new();
        for r in rows {
            let Some(key) = prefix_key(&r.prefix) else {
                continue;
            };
            let t = match types.iter().position(|(ct, _)| *ct == r.call_type) {
                Some(i) => &mut types[i].1,
                None => {
                    types.push((r.call_type.clone(), ByType::default()));
                    &mut types.last_mut().expect("pushed").1
                }
            };
            let entry = t.by_prefix.entry(key).or_default();
            entry.0.push(r.effective_from);
            entry.1.push(Rate {
                prefix: r.prefix,
                rate_per_minute: r.rate_per_minute,
                connection_fee: r.connection_fee,
                first_increment: r.first_increment,
                next_increment: r.next_increment,
                effective_from: r.effective_from,
                rate_text: format_money(r.rate_per_minute).to_string(),
                fee_text: format_money(r.connection_fee).to_string(),
            });
        }
        for (_, t) in types.iter_mut() {
            let mut lengths: Vec<usize> = t.by_prefix.keys().map(|k| (k & 15) as usize).collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            lengths.dedup();
            t.lengths = lengths;
        }
        Plan {
            plan_id,
            currency,
            types,
        }
    }

    /// Longest prefix of `digits` with a row in force at `started_at`, then the latest
    /// `effective_from`; a prefix whose rows all start later falls through to a shorter one.
    pub fn lookup(&self, call_type: &str, digits: &str, started_at: i64) -> Option<&Rate> {
        let t = &self.types.iter().find(|(ct, _)| ct == call_type)?.1;
        // The value of each leading run of digits: prefixes[n] for the first n (only a
        // run of digits can equal a prefix).
        let d = digits.as_bytes();
        let usable = d
            .iter()
            .take(MAX_PREFIX)
            .take_while(|c| c.is_ascii_digit())
            .count();
        let mut prefixes = [0u64; MAX_PREFIX + 1];
        for n in 1..=usable {
            prefixes[n] = prefixes[n - 1] * 10 + (d[n - 1] - b'0') as u64;
        }
        for &n in &t.lengths {
            if n > usable {
                continue;
            }
            let Some((starts, rates)) = t.by_prefix.get(&(prefixes[n] << 4 | n as u64)) else {
                continue;
            };
            let i = starts.partition_point(|s| *s <= started_at);
            if i > 0 {
                return Some(&rates[i - 1]);
            }
        }
        None
    }
}

#[derive(Debug, Default)]
pub struct Tables {
    pub plans: HashMap<String, Plan>,
}

/// `0` for no call, `first` up to it, then whole `next` increments.
pub fn billable_seconds(duration: i64, first: i64, next: i64) -> i64 {
    if duration <= 0 {
        return 0;
    }
    if duration <= first {
        return first;
    }
    first + (duration - first + next - 1) / next * next
}

/// Connection fee plus `rate * seconds / 60` rounded half up once, in micro-units.
pub fn charge(rate: &Rate, charged_seconds: i64) -> i128 {
    if charged_seconds <= 0 {
        return 0;
    }
    rate.connection_fee + (rate.rate_per_minute * charged_seconds as i128 + 30).div_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_and_rounding() {
        assert_eq!(billable_seconds(0, 60, 6), 0);
        assert_eq!(billable_seconds(1, 60, 6), 60);
        assert_eq!(billable_seconds(61, 60, 6), 66);
        assert_eq!(billable_seconds(66, 60, 6), 66);
        let rate = Rate {
            prefix: "44".into(),
            rate_per_minute: 31_500, // 0.0315 a minute
            connection_fee: 10_000,
            first_increment: 60,
            next_increment: 6,
            effective_from: 0,
            rate_text: String::new(),
            fee_text: String::new(),
        };
        // 66 s at 0.0315/min = 0.03465 = 34650 micro, plus the 0.01 fee.
        assert_eq!(charge(&rate, 66), 44_650);
        // 1 s: 31500/60 = 525 exactly; 7 s: 3675.
        assert_eq!(charge(&rate, 7), 10_000 + 3_675);
        assert_eq!(charge(&rate, 0), 0);
    }

    #[test]
    fn longest_prefix_then_latest_row_in_force() {
        let row = |p: &str, rpm: i128, eff: i64| Row {
            call_type: "international".into(),
            prefix: p.into(),
            rate_per_minute: rpm,
            connection_fee: 0,
            first_increment: 60,
            next_increment: 60,
            effective_from: eff,
        };
        let plan = Plan::new(
            "p".into(),
            "USD".into(),
            vec![row("44", 1, 0), row("447", 2, 100), row("447", 3, 200)],
        );
        assert_eq!(
            plan.lookup("international", "447700", 50)
                .unwrap()
                .rate_per_minute,
            1
        );
        assert_eq!(
            plan.lookup("international", "447700", 150)
                .unwrap()
                .rate_per_minute,
            2
        );
        assert_eq!(
            plan.lookup("international", "447700", 250)
                .unwrap()
                .rate_per_minute,
            3
        );
        assert!(plan.lookup("domestic", "447700", 250).is_none());
    }
}

//! The tenant index of the worker's partitions (rater/worker/tenants.py `TenantIndex`):
//! when each tenant's wall-clock sweep is next due and its balance state, for every
//! account written since the last rebalance. Held beside the held accounts
//! (`crate::held::Held`), which note each account they plan here, so a batch's accounts
//! are indexed without a Python object per account; about 55 bytes a tenant against
//! about 124 in the two Python dicts and the tenant strings they keep besides.

use crate::rates::HashMap;
use compact_str::CompactString;

/// The states, in the order of rater/worker/tenants.py `STATES`.
pub const OK: u8 = 0;
pub const LOW: u8 = 1;
pub const NEGATIVE: u8 = 2;

/// `due` of an entry with nothing due.
const NOT_DUE: i64 = i64::MIN;

/// A tenant's balance state (rater/worker/tenants.py `tenant_state`): below zero, below
/// its low-balance threshold, or ok.
pub fn state(balance: i128, threshold: i128) -> u8 {
    if balance < 0 {
        NEGATIVE
    } else if threshold > 0 && balance < threshold {
        LOW
    } else {
        OK
    }
}

#[derive(Clone, Copy)]
struct Entry {
    due: i64,
    state: u8,
}

#[derive(Default)]
pub struct TenantIndex {
    tenants: HashMap<CompactString, Entry>,
}

impl TenantIndex {
    /// An account as written: when its next sweep is due (None: nothing is) and its state.
    pub fn note(&mut self, tenant: &str, due: Option<i64>, balance: i128, threshold: i128) {
        let entry = Entry {
            due: due.unwrap_or(NOT_DUE),
            state: state(balance, threshold),
        };
        match self.tenants.get_mut(tenant) {
            Some(e) => *e = entry,
            None => {
                self.tenants.insert(tenant.into(), entry);
            }
        }
    }

    /// Read the tenant's entry, as `note` does (`Held::touch`).
    pub fn touch(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(0, |e| e.due as u64)
    }

    pub fn forget_due(&mut self, tenant: &str) {
        if let Some(e) = self.tenants.get_mut(tenant) {
            e.due = NOT_DUE;
        }
    }

    /// The tenants whose sweep is due at `now`, earliest first, then by name.
    pub fn due_by(&self, now: i64) -> Vec<&str> {
        let mut due: Vec<(i64, &str)> = self
            .tenants
            .iter()
            .filter(|(_, e)| e.due != NOT_DUE && e.due <= now)
            .map(|(t, e)| (e.due, t.as_str()))
            .collect();
        due.sort_unstable();
        due.into_iter().map(|(_, t)| t).collect()
    }

    pub fn clear(&mut self) {
        self.tenants.clear();
    }

    /// How many tenants are in each state (`OK`, `LOW`, `NEGATIVE`).
    pub fn state_counts(&self) -> [u64; 3] {
        let mut counts = [0; 3];
        for e in self.tenants.values() {
            counts[e.state as usize] += 1;
        }
        counts
    }

    /// Tenant -> when its sweep is due, for those with one due.
    pub fn dues(&self) -> impl Iterator<Item = (&str, i64)> {
        self.tenants
            .iter()
            .filter(|(_, e)| e.due != NOT_DUE)
            .map(|(t, e)| (t.as_str(), e.due))
    }

    /// Tenant -> its state.
    pub fn states(&self) -> impl Iterator<Item = (&str, u8)> {
        self.tenants.iter().map(|(t, e)| (t.as_str(), e.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_negative_below_zero_low_below_a_positive_threshold_else_ok() {
        assert_eq!(state(-1, 0), NEGATIVE);
        assert_eq!(state(-1, 5_000_000), NEGATIVE);
        assert_eq!(state(4_999_999, 5_000_000), LOW);
        assert_eq!(state(5_000_000, 5_000_000), OK);
        assert_eq!(state(0, 0), OK); // no threshold: never low
        assert_eq!(state(0, 1), LOW);
    }

    #[test]
    fn due_by_lists_the_due_tenants_earliest_first_then_by_name() {
        let mut ix = TenantIndex::default();
        ix.note("b", Some(20), 1, 0);
        ix.note("a", Some(20), 1, 0);
        ix.note("c", Some(10), 1, 0);
        ix.note("d", Some(31), 1, 0);
        ix.note("e", None, -5, 0);
        assert_eq!(ix.due_by(30), vec!["c", "a", "b"]);
        assert_eq!(ix.due_by(9), Vec::<&str>::new());
        ix.forget_due("c");
        ix.note("a", None, 1, 0); // written again with nothing due
        assert_eq!(ix.due_by(100), vec!["b", "d"]);
        // Forgetting a due keeps the state; the counts are OK, LOW, NEGATIVE.
        assert_eq!(ix.state_counts(), [4, 0, 1]);
        ix.note("b", Some(20), 3, 5);
        assert_eq!(ix.state_counts(), [3, 1, 1]);
        assert_eq!(ix.states().count(), 5);
        ix.clear();
        assert_eq!(ix.states().count(), 0);
    }
}

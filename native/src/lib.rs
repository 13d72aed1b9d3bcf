//! rater's rating core in Rust (SPEC v1.1 sections 1 and 3 to 8): the same rules as the
//! Python core (rater/core/money.py, timeutil.py, records.py, rates.py, ledger.py, engine.py,
//! state.py), which stays the readable reference; the differential tests
//! (tests/core/test_native_diff.py) hold the two byte for byte equal.
#![forbid(unsafe_code)]

pub mod codec;
pub mod engine;
pub mod feed;
pub mod fetched;
pub mod held;
pub mod idmap;
pub mod index;
pub mod json;
pub mod ledger;
pub mod money;
pub mod outputs;
pub mod pyrepr;
pub mod rates;
pub mod recordbatch;
pub mod records;
pub mod time;
pub mod view;

#[cfg(feature = "python")]
mod pybatch;
#[cfg(feature = "python")]
mod pyfetched;
#[cfg(feature = "python")]
mod pyheld;
#[cfg(feature = "python")]
mod pyoutputs;
#[cfg(feature = "python")]
mod python;

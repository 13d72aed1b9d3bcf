//! The Python module `rater_native`: the engine behind rater/core/native_engine.py.
//! Bytes in, bytes out; no per-record Python objects on the offline path.

use crate::codec;
use crate::engine::{Engine, Host, Outputs, Processed, Source};
use crate::ledger::Account;
use crate::pyrepr::NON_ASCII_REPR;
use crate::rates::{Plan, Row, Tables};
use crate::records::{JsonVerdict, JSON_ERROR};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

type PlanArg = (
    String,
    String,
    Vec<(String, String, i128, i128, i64, i64, i64)>,
);

fn tables(plans: Vec<PlanArg>) -> Tables {
    let mut t = Tables::default();
    for (plan_id, currency, rows) in plans {
        let rows = rows
            .into_iter()
            .map(|(call_type, prefix, rpm, fee, first, next, eff)| Row {
                call_type,
                prefix,
                rate_per_minute: rpm,
                connection_fee: fee,
                first_increment: first,
                next_increment: next,
                effective_from: eff,
            })
            .collect();
        t.plans
            .insert(plan_id.clone(), Plan::new(plan_id, currency, rows));
    }
    t
}

fn py_repr(s: &str) -> String {
    Python::with_gil(|py| {
        PyString::new(py, s)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| format!("{s:?}"))
    })
}

fn orjson_verdict(raw: &[u8]) -> JsonVerdict {
    Python::with_gil(|py| {
        let orjson = match py.import("orjson") {
            Ok(m) => m,
            Err(e) => return JsonVerdict::Message(format!("not valid JSON: {e}")),
        };
        match orjson.call_method1("loads", (PyBytes::new(py, raw),)) {
            Ok(v) => match orjson
                .call_method1("dumps", (v,))
                .and_then(|b| b.extract::<Vec<u8>>())
            {
                Ok(bytes) => JsonVerdict::Canonical(bytes),
                Err(e) => JsonVerdict::Message(format!("not valid JSON: {e}")),
            },
            Err(e) => {
                let text = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
                let detail = format!("not valid JSON: {text}");
                JsonVerdict::Message(crate::pyrepr::head(&detail, 300).to_owned())
            }
        }
    })
}

type SourceParts = (Option<String>, String, u64, i64, i64);

fn source_parts(source: &Bound<'_, PyDict>) -> PyResult<SourceParts> {
    let file: Option<String> = source.get_item("file")?.map(|v| v.extract()).transpose()?;
    let line: u64 = source
        .get_item("line")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or(0);
    let topic: String = source
        .get_item("topic")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or_default();
    let partition: i64 = source
        .get_item("partition")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or(0);
    let offset: i64 = source
        .get_item("offset")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or(0);
    Ok((file, topic, line, partition, offset))
}

pub(crate) fn processed(py: Python<'_>, p: Processed) -> PyResult<Bound<'_, PyAny>> {
    let o = p.outcome;
    let events: Vec<Bound<PyBytes>> = o.events.iter().map(|e| PyBytes::new(py, e)).collect();
    let requests: Vec<Bound<PyBytes>> = o
        .recharge_requests
        .iter()
        .map(|e| PyBytes::new(py, e))
        .collect();
    let t = (
        p.kind,
        p.tenant_id.as_deref(),
        o.status.name(),
        o.reason,
        o.detail,
        o.rated.map(|r| PyBytes::new(py, &r)),
        events,
        requests,
        p.reject.map(|r| PyBytes::new(py, &r)),
        o.has_account,
    );
    t.into_pyobject(py).map(|b| b.into_any())
}

/// The worker's callbacks; the first exception is kept and raised after the record.
struct PyHost<'py> {
    load: Bound<'py, PyAny>,
    older_seen: Bound<'py, PyAny>,
    error: Option<PyErr>,
}

impl Host for PyHost<'_> {
    fn load(&mut self, tenant: &str) -> Option<Box<Account>> {
        if self.error.is_some() {
            return None;
        }
        let got = self
            .load
            .call1((tenant,))
            .and_then(|v| v.extract::<Option<Vec<u8>>>());
        match got {
            Ok(None) => None,
            Ok(Some(bytes)) => match codec::decode_account(&bytes) {
                Ok(a) => Some(Box::new(a)),
                Err(e) => {
                    self.error = Some(PyValueError::new_err(format!("account of {tenant:?}: {e}")));
                    None
                }
            },
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn older_seen(&mut self, acct: &Account, cdr_id: &str) -> bool {
        if self.error.is_some() {
            return false;
        }
        match self
            .older_seen
            .call1((acct.tenant_id.as_str(), cdr_id))
            .and_then(|v| v.is_truthy())
        {
            Ok(b) => b,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

#[pyclass(name = "Engine", module = "rater_native")]
pub(crate) struct PyEngine {
    pub(crate) inner: Engine,
    /// `rate_lines`'s output buffers, kept between calls (their pages stay mapped).
    sinks: Outputs,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (plans, horizon, max_record_bytes = crate::engine::DEFAULT_MAX_RECORD_BYTES))]
    fn new(plans: Vec<PlanArg>, horizon: i64, max_record_bytes: usize) -> Self {
        let mut inner = Engine::new(tables(plans), horizon);
        inner.max_record_bytes = max_record_bytes;
        PyEngine {
            inner,
            sinks: Outputs::default(),
        }
    }

    /// Swap in other rate tables (the worker's reload); the accounts stay.
    fn set_tables(&mut self, plans: Vec<PlanArg>) {
        self.inner.tables = tables(plans);
    }

    /// One record; `source` is {"topic", "partition", "offset"} or {"file", "line"}.
    /// Returns (kind, tenant_id, status, reason, detail, rated, events, requests,
    /// reject, has_account).
    #[pyo3(signature = (raw, key, source, now))]
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        raw: Option<&[u8]>,
        key: Option<&str>,
        source: &Bound<'py, PyDict>,
        now: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (file, topic, line, partition, offset) = source_parts(source)?;
        let src = match &file {
            Some(f) => Source::File { file: f, line },
            None => Source::Kafka {
                topic: &topic,
                partition,
                offset,
            },
        };
        let p = self.inner.process(raw, key, &src, now);
        processed(py, p)
    }

    /// `process` for the Kafka worker: an account this engine does not hold is asked of
    /// `load(tenant) -> bytes | None` (the stored form), and a CDR id not among an
    /// account's recent ids, when the account lists id segments, of
    /// `older_seen(tenant, cdr_id) -> bool`. An exception in either is raised here.
    #[pyo3(signature = (raw, key, source, now, load, older_seen))]
    #[allow(clippy::too_many_arguments)]
    fn process_hosted<'py>(
        &mut self,
        py: Python<'py>,
        raw: Option<&[u8]>,
        key: Option<&str>,
        source: &Bound<'py, PyDict>,
        now: i64,
        load: Bound<'py, PyAny>,
        older_seen: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (file, topic, line, partition, offset) = source_parts(source)?;
        let src = match &file {
            Some(f) => Source::File { file: f, line },
            None => Source::Kafka {
                topic: &topic,
                partition,
                offset,
            },
        };
        let mut host = PyHost {
            load,
            older_seen,
            error: None,
        };
        let p = self
            .inner
            .process_with(raw, key, &src, now, Some(&mut host));
        if let Some(e) = host.error {
            return Err(e);
        }
        processed(py, p)
    }

    /// The counts since the last call, then zero (the worker adds them to its metrics).
    fn take_tally<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.tally(py)?;
        self.inner.tally = Default::default();
        Ok(d)
    }

    /// Whole JSON lines of one input file (`rater rate`): returns (records, rated,
    /// events, requests, rejects), each output as newline-terminated JSON lines.
    fn rate_lines<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        file: &str,
        first_line: u64,
        now: i64,
    ) -> (
        u64,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
    ) {
        let (engine, sinks) = (&mut self.inner, &mut self.sinks);
        for s in [
            &mut sinks.rated,
            &mut sinks.events,
            &mut sinks.requests,
            &mut sinks.rejects,
        ] {
            s.clear();
        }
        // Rated CDRs are about two and a half times their input: one growth at most.
        sinks.rated.reserve(data.len() * 3);
        // Without the GIL: the caller may write the previous chunk's outputs meanwhile.
        let n = py.allow_threads(|| engine.rate_lines(data, file, first_line, now, sinks));
        (
            n,
            PyBytes::new(py, &sinks.rated),
            PyBytes::new(py, &sinks.events),
            PyBytes::new(py, &sinks.requests),
            PyBytes::new(py, &sinks.rejects),
        )
    }

    /// Every account's view (rater/core/codec.py `to_view`) as one JSON object keyed by
    /// tenant, in tenant order.
    fn views<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.views_json())
    }

    /// `balances.json`: the views indented as `orjson.dumps(views, option=OPT_INDENT_2)`
    /// writes them, and a newline.
    fn balances_json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut out = crate::json::indent2(&self.inner.views_json());
        out.push(b'\n');
        PyBytes::new(py, &out)
    }

    /// The tenants whose balance is below zero, sorted.
    fn below_zero(&self) -> Vec<String> {
        self.inner.below_zero()
    }

    /// Hand an account over in the stored form (rater/core/codec.py `encode_account`).
    fn put_account(&mut self, stored: &[u8]) -> PyResult<()> {
        let a = codec::decode_account(stored).map_err(PyValueError::new_err)?;
        self.inner.accounts.insert(a.tenant_id.clone(), Box::new(a));
        Ok(())
    }

    fn get_account<'py>(&self, py: Python<'py>, tenant: &str) -> Option<Bound<'py, PyBytes>> {
        self.inner
            .accounts
            .get(tenant)
            .map(|a| PyBytes::new(py, &codec::encode_account(a)))
    }

    fn drop_account(&mut self, tenant: &str) {
        self.inner.accounts.remove(tenant);
    }

    fn clear_accounts(&mut self) {
        self.inner.accounts.clear();
    }

    fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self.inner.accounts.keys().map(|k| k.to_string()).collect();
        t.sort();
        t
    }

    /// Every account, stored form, sorted by tenant.
    fn accounts<'py>(&self, py: Python<'py>) -> Vec<(String, Bound<'py, PyBytes>)> {
        let mut items: Vec<_> = self.inner.accounts.iter().collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        items
            .into_iter()
            .map(|(t, a)| (t.to_string(), PyBytes::new(py, &codec::encode_account(a))))
            .collect()
    }

    fn balance(&self, tenant: &str) -> Option<i128> {
        self.inner.accounts.get(tenant).map(|a| a.balance())
    }

    /// The counts for the summary and metrics: a dict of the rater.core.engine.Tally fields.
    fn tally<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.inner.tally;
        let d = PyDict::new(py);
        put_counts(&d, "outcomes", &t.outcomes)?;
        put_counts(&d, "reasons", &t.reasons)?;
        put_counts(&d, "charged", t.charged.iter().map(|(k, n)| (k, n)))?;
        put_counts(&d, "billable", &t.billable)?;
        put_counts(&d, "events", &t.events)?;
        put_counts(&d, "recharge_failures", &t.recharge_failures)?;
        Ok(d)
    }
}

/// `d[name] = {key: count, ...}`.
fn put_counts<'py, K, V>(
    d: &Bound<'py, PyDict>,
    name: &str,
    counts: impl IntoIterator<Item = (K, V)>,
) -> PyResult<()>
where
    K: IntoPyObject<'py>,
    V: IntoPyObject<'py>,
{
    let inner = PyDict::new(d.py());
    for (k, n) in counts {
        inner.set_item(k, n)?;
    }
    d.set_item(name, inner)
}

/// Decode and re-encode an account in the stored form (tests of the codec).
#[pyfunction]
fn recode_account<'py>(py: Python<'py>, stored: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let a = codec::decode_account(stored).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &codec::encode_account(&a)))
}

/// The event id of SPEC 7 (rater.core.ledger.event_id).
#[pyfunction]
#[pyo3(signature = (tenant, kind, cause_id, type_, extra = ""))]
fn event_id(tenant: &str, kind: &str, cause_id: &str, type_: &str, extra: &str) -> String {
    crate::ledger::event_id(tenant, kind, cause_id, type_, extra).to_string()
}

#[pymodule]
fn rater_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = NON_ASCII_REPR.set(py_repr);
    let _ = JSON_ERROR.set(orjson_verdict);
    m.add_class::<PyEngine>()?;
    m.add_class::<crate::pyheld::PyHeld>()?;
    m.add_class::<crate::pybatch::PyRecordBatch>()?;
    m.add_class::<crate::pyoutputs::PyBatchOutputs>()?;
    m.add_class::<crate::pyfetched::Record>()?;
    m.add_class::<crate::pyfetched::Records>()?;
    m.add_class::<crate::pyfetched::Origins>()?;
    m.add_function(wrap_pyfunction!(crate::pyfetched::read_fetch, m)?)?;
    m.add_function(wrap_pyfunction!(crate::pybatch::partition_batches, m)?)?;
    m.add_function(wrap_pyfunction!(recode_account, m)?)?;
    m.add_function(wrap_pyfunction!(event_id, m)?)?;
    let _ = PyList::empty(m.py());
    Ok(())
}

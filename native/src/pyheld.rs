//! `rater_native.Held`: the Kafka worker's accounts held natively between batches
//! (`crate::held`), and the batch step's records rated against them on an `Engine`.
//! What crosses into Python per batch is bytes: each record's outputs, and at the end
//! each changed account's changelog value and segment writes.

use crate::engine::{Host, Source};
use crate::held::{segment_key, Held};
use crate::ledger::{Account, Status};
use crate::python::{processed, PyEngine};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::collections::HashMap;

/// The engine's host for one record: held accounts first, else the store (`read`, the
/// worker's `get_raw`: in flight, then the table). The first exception is kept.
struct HeldHost<'a, 'py> {
    held: &'a mut Held,
    read: &'a Bound<'py, PyAny>,
    error: Option<PyErr>,
}

impl HeldHost<'_, '_> {
    fn read(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if self.error.is_some() {
            return None;
        }
        let py = self.read.py();
        match self
            .read
            .call1((PyBytes::new(py, key),))
            .and_then(|v| v.extract::<Option<Vec<u8>>>())
        {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

impl Host for HeldHost<'_, '_> {
    fn load(&mut self, tenant: &str) -> Option<Account> {
        if self.error.is_some() {
            return None;
        }
        if let Some(a) = self.held.lend(tenant) {
            return Some(a);
        }
        let raw = self.read(tenant.as_bytes())?;
        match self.held.lend_read(tenant, &raw) {
            Ok(a) => Some(a),
            Err(e) => {
                self.error = Some(PyValueError::new_err(format!("account of {tenant:?}: {e}")));
                None
            }
        }
    }

    fn older_seen(&mut self, acct: &Account, cdr_id: &str) -> bool {
        if self.error.is_some() {
            return false;
        }
        if let Some(seen) = self.held.older_seen(&acct.tenant_id, cdr_id) {
            return seen;
        }
        let values: Vec<Vec<u8>> = acct
            .id_segments
            .iter()
            .filter_map(|(n, _)| self.read(&segment_key(&acct.tenant_id, *n)))
            .collect();
        if self.error.is_some() {
            return false;
        }
        self.held.older_read(&acct.tenant_id, &values, cdr_id)
    }
}

#[pyclass(name = "Held", module = "rater_native")]
pub(crate) struct PyHeld {
    inner: Held,
    read: Py<PyAny>,
}

#[pymethods]
impl PyHeld {
    /// `limit`: the accounts held at most between batches (the worker's account cache);
    /// `read(key) -> bytes | None`: a table record as the next batch must read it.
    #[new]
    fn new(limit: usize, read: Py<PyAny>) -> Self {
        PyHeld {
            inner: Held::new(limit),
            read,
        }
    }

    /// A batch starts: `engine` holds no account.
    fn begin(&mut self, mut engine: PyRefMut<'_, PyEngine>) {
        engine.inner.accounts.clear();
        self.inner.begin();
    }

    /// One input record of the batch, rated on `engine` against the held accounts:
    /// `Engine.process`'s tuple. An account it changed is noted for `plan`.
    #[pyo3(signature = (engine, raw, key, topic, partition, offset, now))]
    #[allow(clippy::too_many_arguments)]
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        mut engine: PyRefMut<'py, PyEngine>,
        raw: Option<&[u8]>,
        key: Option<&str>,
        topic: &str,
        partition: i64,
        offset: i64,
        now: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let read = self.read.bind(py);
        let mut host = HeldHost {
            held: &mut self.inner,
            read,
            error: None,
        };
        let src = Source::Kafka {
            topic,
            partition,
            offset,
        };
        let p = engine
            .inner
            .process_with(raw, key, &src, now, Some(&mut host));
        if let Some(e) = host.error {
            return Err(e);
        }
        let o = &p.outcome;
        if (o.status == Status::Applied || !o.events.is_empty()) && o.has_account {
            if let Some(t) = &p.tenant_id {
                match self.inner.changed.get_mut(t) {
                    Some(at) => *at = partition,
                    None => {
                        self.inner.changed.insert(t.clone(), partition);
                    }
                }
            }
        }
        processed(py, p)
    }

    /// The batch is rated: the engine's accounts are held again.
    fn end_batch(&mut self, mut engine: PyRefMut<'_, PyEngine>) {
        self.inner.end_batch(&mut engine.inner.accounts);
    }

    /// Hold the tenant's account (read from the store if it is not held or in `engine`'s
    /// batch); whether it has one.
    fn hold(
        &mut self,
        py: Python<'_>,
        engine: PyRef<'_, PyEngine>,
        tenant: &str,
    ) -> PyResult<bool> {
        if engine.inner.accounts.contains_key(tenant) || self.inner.accounts.contains(tenant) {
            return Ok(true);
        }
        self.read_and_hold(py, tenant).map(|raw| raw.is_some())
    }

    /// The tenant's account in the stored form (held, or read from the store and held).
    fn get<'py>(&mut self, py: Python<'py>, tenant: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if let Some(slot) = self.inner.accounts.get(tenant) {
            return Ok(Some(PyBytes::new(
                py,
                &crate::codec::encode_account(&slot.acct),
            )));
        }
        Ok(self
            .read_and_hold(py, tenant)?
            .map(|raw| PyBytes::new(py, &raw)))
    }

    /// An account changed outside the engine (the sweep), in the stored form.
    fn put(&mut self, stored: &[u8], partition: i64) -> PyResult<()> {
        self.inner
            .put_changed(stored, partition)
            .map_err(PyValueError::new_err)
    }

    /// The writes of every changed account, in the order they changed: (segments,
    /// accounts, notes). Segments and accounts are changelog records
    /// `(changelog, partition, key, value, None)`; a note is `(tenant, due, balance,
    /// low_balance_threshold)`, due None when nothing is due. `judged`: partition ->
    /// [(topic, last offset)], written into each value of that partition.
    fn plan<'py>(
        &mut self,
        py: Python<'py>,
        changelog: &str,
        judged: HashMap<i64, Vec<(String, i64)>>,
        horizon: i64,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let planned = self.inner.plan(&judged, horizon);
        let segments = PyList::empty(py);
        let accounts = PyList::empty(py);
        let notes = PyList::empty(py);
        let none = py.None();
        for p in planned {
            for (key, value) in p.segments {
                let value = value.map(|v| PyBytes::new(py, &v));
                segments.append((changelog, p.partition, PyBytes::new(py, &key), value, &none))?;
            }
            let key = PyBytes::new(py, p.tenant.as_bytes());
            accounts.append((
                changelog,
                p.partition,
                key,
                PyBytes::new(py, &p.value),
                &none,
            ))?;
            notes.append((p.tenant, p.due, p.balance, p.threshold))?;
        }
        Ok((segments, accounts, notes))
    }

    /// Hold no account (a rebalance: another worker may change them).
    fn clear_accounts(&mut self) {
        self.inner.clear_accounts();
    }

    /// Hold nothing: no account, no segment ids.
    fn clear(&mut self) {
        self.inner.clear();
    }

    fn __len__(&self) -> usize {
        self.inner.accounts.len()
    }
}

impl PyHeld {
    fn read_and_hold(&mut self, py: Python<'_>, tenant: &str) -> PyResult<Option<Vec<u8>>> {
        let raw: Option<Vec<u8>> = self
            .read
            .bind(py)
            .call1((PyBytes::new(py, tenant.as_bytes()),))?
            .extract()?;
        if let Some(r) = &raw {
            self.inner
                .hold_read(tenant, r)
                .map_err(|e| PyValueError::new_err(format!("account of {tenant:?}: {e}")))?;
        }
        Ok(raw)
    }
}

//! `rater_native.Held`: the Kafka worker's accounts held natively between batches
//! (`crate::held`), and the batch step's records rated against them on an `Engine`.
//! What crosses into Python per batch is bytes: each changed account's changelog value
//! and segment writes, at the end; the outputs stay native (`rater_native.BatchOutputs`) until
//! their record batches.

use crate::codec::Format;
use crate::engine::{Host, Processed, Source};
use crate::feed::{self, HomeKey};
use crate::held::Held;
use crate::ledger::{Account, Status};
use crate::pyfetched::{InFetch, Origin, Origins, Record, Records, Run};
use crate::pyoutputs::PyBatchOutputs;
use crate::python::{processed, PyEngine};
use crate::records::is_tenant;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The engine's host for one record: held accounts first, else the store (`read`, the
/// worker's `get_raw`: in flight, then the table). The first exception is kept.
struct HeldHost<'a, 'py> {
    held: &'a mut Held,
    read: &'a Bound<'py, PyAny>,
    error: Option<PyErr>,
}

impl HeldHost<'_, '_> {
    fn read(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        read_record(self.read, &mut self.error, key)
    }
}

/// A table record through `read(key)`; the first exception is kept in `error` (and then
/// nothing more is read).
fn read_record(read: &Bound<'_, PyAny>, error: &mut Option<PyErr>, key: &[u8]) -> Option<Vec<u8>> {
    if error.is_some() {
        return None;
    }
    match read
        .call1((PyBytes::new(read.py(), key),))
        .and_then(|v| v.extract::<Option<Vec<u8>>>())
    {
        Ok(v) => v,
        Err(e) => {
            *error = Some(e);
            None
        }
    }
}

impl Host for HeldHost<'_, '_> {
    fn load(&mut self, tenant: &str) -> Option<Box<Account>> {
        if self.error.is_some() {
            return None;
        }
        match self.held.lend_idle(tenant) {
            Some(Ok(a)) => return Some(a),
            Some(Err(e)) => {
                self.error = Some(PyValueError::new_err(format!("account of {tenant:?}: {e}")));
                return None;
            }
            None => {}
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
        let HeldHost { held, read, error } = self;
        let mut read_key = |key: &[u8]| read_record(read, error, key);
        let seen = held.older_check(acct, cdr_id, &mut read_key);
        if self.error.is_some() {
            // A read failed: what was kept of the tenant's segment ids may lack some.
            self.held.older_forget(&acct.tenant_id);
            return false;
        }
        seen
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
    /// `read(key) -> bytes | None`: a table record as the next batch must read it;
    /// `idle_after`: batches an account may go unused before it is held in its stored form;
    /// `segment_least`: the fewest durable ids that make a segment (`SEGMENT_AT`; tests set
    /// it small); `format`: the stored format of the values `plan` writes (1 or 2).
    #[new]
    #[pyo3(signature = (limit, read, idle_after = crate::held::IDLE_AFTER, segment_least = crate::held::SEGMENT_AT, format = 2))]
    fn new(
        limit: usize,
        read: Py<PyAny>,
        idle_after: u64,
        segment_least: usize,
        format: u8,
    ) -> PyResult<Self> {
        let mut inner = Held::new(limit, idle_after, segment_least);
        inner.format = Format::from_number(format).map_err(PyValueError::new_err)?;
        Ok(PyHeld { inner, read })
    }

    /// A batch starts: `engine` rates against the held accounts, in place.
    fn begin(&mut self, mut engine: PyRefMut<'_, PyEngine>) {
        self.inner.begin(&mut engine.inner.accounts);
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
        note_changed(&mut self.inner, &p, partition);
        processed(py, p)
    }

    /// `NativeBatchProcessor.feed` in one call: the messages of a fetch, in order, onto
    /// `BatchResult`'s lists: a `rater_native.Records` (a run of one fetched partition,
    /// read span by span, with no Python object per record), or any iterable of objects
    /// with `topic`, `partition`, `offset`, `key`, `value` (a `Record`, aiokafka's
    /// `ConsumerRecord`, `rater.core.batch.Message`). A record on the wrong partition for
    /// its tenant goes to `forwards` as `(msg, partition, key)` (a run's record made into
    /// a `Record` for it); every other one is rated on `engine` against the held accounts
    /// (as `process`), its outputs appended to `outputs` (a `rater_native.BatchOutputs`,
    /// onto its first four topics: rated CDRs, balance events, recharge requests, rejects)
    /// with the record to `origins` (a `rater_native.Origins`, which notes a run's record
    /// by its place). The counts per (topic, status or "forwarded") are added to
    /// `records` (a `Counter`); the indexes in `outputs` of the outputs over
    /// `max_output_bytes` are appended to `oversized`, for the caller to replace
    /// (`BatchProcessor.output_refused`). When an exception stops the fetch, the records
    /// before it are all there, as the per-record step leaves them.
    ///
    /// `judged`: the worker's replay check (step 1c, `rater/worker/replay.py`
    /// `ReplayGuard.judged_before`), as the live `(suspect, judged_in)` dicts of its
    /// `ReplayGuard`, read per record (reading an account may add to `judged_in`); a
    /// record it says was judged before is skipped: no outputs, no count, one more
    /// `result.skipped` (added also when an exception stops the fetch).
    #[pyo3(signature = (engine, messages, now, partitions, max_output_bytes, outputs, origins, forwards, records, oversized, judged=None, result=None))]
    #[allow(clippy::too_many_arguments)]
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        mut engine: PyRefMut<'py, PyEngine>,
        messages: &Bound<'py, PyAny>,
        now: i64,
        partitions: u32,
        max_output_bytes: usize,
        outputs: &Bound<'py, PyBatchOutputs>,
        origins: &Bound<'py, Origins>,
        forwards: &Bound<'py, PyList>,
        records: &Bound<'py, PyAny>,
        oversized: &Bound<'py, PyList>,
        judged: Option<(Bound<'py, PyDict>, Bound<'py, PyDict>)>,
        result: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        if partitions == 0 {
            return Err(PyValueError::new_err("partitions: at least 1"));
        }
        if judged.is_some() && result.is_none() {
            return Err(PyValueError::new_err(
                "judged: needs the result its skipped records are counted in",
            ));
        }
        let mut fed = Fed {
            counts: Vec::new(),
            judged,
            skipped: 0,
        };
        let out = Sinks {
            max_output_bytes,
            outputs,
            origins,
            forwards,
            oversized,
        };
        let done = self.feed_all(&mut engine, messages, now, partitions, &out, &mut fed);
        // The counts of the records done, also on an error.
        let add = PyDict::new(py);
        for (topic, _, status, n) in &fed.counts {
            add.set_item((topic, *status), *n)?;
        }
        records.call_method1(intern!(py, "update"), (add,))?;
        if let (Some(result), true) = (result, fed.skipped > 0) {
            let name = intern!(py, "skipped");
            let skipped = result.getattr(name)?.add(fed.skipped)?;
            result.setattr(name, skipped)?;
        }
        done
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
        mut engine: PyRefMut<'_, PyEngine>,
        tenant: &str,
    ) -> PyResult<bool> {
        self.hold_in(py, &mut engine, tenant)
    }

    /// The tenant's account in the stored form (held, or read from the store and held).
    /// Between batches only (the sweep): during one the held accounts are the engine's,
    /// and an account read here would be held nowhere.
    fn get<'py>(&mut self, py: Python<'py>, tenant: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if self.inner.in_batch() {
            return Err(PyRuntimeError::new_err(
                "Held.get during a batch: its accounts are the engine's until end_batch",
            ));
        }
        if let Some(stored) = self.inner.stored(tenant) {
            return Ok(Some(PyBytes::new(py, &stored)));
        }
        // Between batches (the sweep): held among the decoded accounts, not an engine's.
        let raw = self.read_and_hold(py, tenant, &mut Default::default())?;
        Ok(raw.map(|raw| PyBytes::new(py, &raw)))
    }

    /// An account changed outside the engine (the sweep), in the stored form.
    fn put(&mut self, stored: &[u8], partition: i64) -> PyResult<()> {
        self.inner
            .put_changed(stored, partition)
            .map_err(PyValueError::new_err)
    }

    /// The writes of every changed account, in the order they changed: (segments,
    /// accounts), changelog records `(changelog, partition, key, value, None)`; each
    /// account is noted in the tenant index (`note_tenant`). `judged`: partition ->
    /// [(topic, last offset)], written into each value of that partition.
    fn plan<'py>(
        &mut self,
        py: Python<'py>,
        changelog: &str,
        judged: HashMap<i64, Vec<(String, i64)>>,
        horizon: i64,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let segments = PyList::empty(py);
        let accounts = PyList::empty(py);
        let none = py.None();
        let changelog = PyString::new(py, changelog);
        self.inner.plan(&judged, horizon, |p, value| {
            for (key, value) in p.segments {
                let value = value.map(|v| PyBytes::new(py, &v));
                segments.append((
                    &changelog,
                    p.partition,
                    PyBytes::new(py, &key),
                    value,
                    &none,
                ))?;
            }
            let key = PyBytes::new(py, p.tenant.as_bytes());
            accounts.append((&changelog, p.partition, key, PyBytes::new(py, value), &none))
        })?;
        Ok((segments, accounts))
    }

    /// The tenant index (rater/worker/tenants.py `HeldIndex`): an account as written,
    /// when its sweep is due (None: nothing is), its balance and low-balance threshold.
    #[pyo3(signature = (tenant, due, balance, threshold))]
    fn note_tenant(&mut self, tenant: &str, due: Option<i64>, balance: i128, threshold: i128) {
        self.inner.index.note(tenant, due, balance, threshold);
    }

    /// A stored account noted in the tenant index, decoded here (the rescan after a
    /// rebalance, `Sweeper._rescan`: every account of the partitions gained).
    fn note_stored(&mut self, tenant: &str, stored: &[u8]) -> PyResult<()> {
        let a = crate::codec::decode_account(stored)
            .map_err(|e| PyValueError::new_err(format!("account of {tenant:?}: {e}")))?;
        let due = crate::held::due(&a);
        self.inner
            .index
            .note(tenant, due, a.balance(), a.low_balance_threshold);
        Ok(())
    }

    fn forget_due(&mut self, tenant: &str) {
        self.inner.index.forget_due(tenant);
    }

    /// The tenants whose sweep is due at `now`, earliest first, then by name.
    fn due_by(&self, now: i64) -> Vec<&str> {
        self.inner.index.due_by(now)
    }

    fn clear_index(&mut self) {
        self.inner.index.clear();
    }

    /// Tenants in each state: ok, low, negative.
    fn state_counts(&self) -> [u64; 3] {
        self.inner.index.state_counts()
    }

    /// Tenant -> when its sweep is due (those with one due).
    fn dues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (tenant, due) in self.inner.index.dues() {
            out.set_item(tenant, due)?;
        }
        Ok(out)
    }

    /// Tenant -> its state (0 ok, 1 low, 2 negative).
    fn states<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (tenant, state) in self.inner.index.states() {
            out.set_item(tenant, state)?;
        }
        Ok(out)
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
        self.inner.len()
    }

    /// How many of the held accounts are held in their stored form (idle).
    fn idle_len(&self) -> usize {
        self.inner.idle_len()
    }
}

/// Where `feed` puts its results (`BatchResult`'s lists, the output topics, the bound,
/// the outputs over it).
struct Sinks<'a, 'py> {
    max_output_bytes: usize,
    outputs: &'a Bound<'py, PyBatchOutputs>,
    origins: &'a Bound<'py, Origins>,
    forwards: &'a Bound<'py, PyList>,
    oversized: &'a Bound<'py, PyList>,
}

/// `feed`'s counts per (topic, status), in the order first met, and the records skipped
/// as judged before by the replay check (`judged`, the `(suspect, judged_in)` dicts).
struct Fed<'py> {
    counts: Vec<(Bound<'py, PyAny>, String, &'static str, u64)>,
    judged: Option<(Bound<'py, PyDict>, Bound<'py, PyDict>)>,
    skipped: u64,
}

impl<'py> Fed<'py> {
    fn count(&mut self, topic: &Bound<'py, PyAny>, topic_text: &str, status: &'static str) {
        match self
            .counts
            .iter_mut()
            .find(|(_, t, s, _)| *s == status && t == topic_text)
        {
            Some((_, _, _, n)) => *n += 1,
            None => self
                .counts
                .push((topic.clone(), topic_text.to_owned(), status, 1)),
        }
    }
}

/// An account a processed record changed is noted, with its partition, for `plan`.
fn note_changed(held: &mut Held, p: &Processed, partition: i64) {
    let o = &p.outcome;
    if (o.status == Status::Applied || !o.events.is_empty()) && o.has_account {
        if let Some(t) = &p.tenant_id {
            match held.changed.get_mut(t.as_str()) {
                Some(at) => *at = partition,
                None => {
                    held.changed.insert(t.as_str().into(), partition);
                }
            }
        }
    }
}

/// One input record's fields: a native `Record`'s (its value read in the fetch's bytes),
/// or any other message's by attribute (aiokafka's `ConsumerRecord`, the core's
/// `Message`).
struct Input<'py> {
    topic: Bound<'py, PyString>,
    partition: i64,
    offset: i64,
    key: Option<InFetch<'py>>,
    value: Option<InFetch<'py>>,
}

/// A message's bytes attribute as a span of bytes (the whole of them).
fn whole<'py>(v: Bound<'py, PyAny>) -> PyResult<Option<InFetch<'py>>> {
    if v.is_none() {
        return Ok(None);
    }
    let b = v.downcast_into::<PyBytes>()?;
    let n = b.as_bytes().len();
    Ok(Some((b, 0, n)))
}

impl<'py> Input<'py> {
    fn read(msg: &Bound<'py, PyAny>) -> PyResult<Input<'py>> {
        let py = msg.py();
        if let Ok(record) = msg.downcast::<Record>() {
            let (run, i) = record.get().place();
            return Ok(Input::in_run(py, run, i));
        }
        Ok(Input {
            topic: msg
                .getattr(intern!(py, "topic"))?
                .downcast_into::<PyString>()?,
            partition: msg.getattr(intern!(py, "partition"))?.extract()?,
            offset: msg.getattr(intern!(py, "offset"))?.extract()?,
            key: whole(msg.getattr(intern!(py, "key"))?)?,
            value: whole(msg.getattr(intern!(py, "value"))?)?,
        })
    }

    /// Record `i` of `run`: its key and value read in the fetch's bytes.
    fn in_run(py: Python<'py>, run: &Run, i: u32) -> Input<'py> {
        Input {
            topic: run.topic_of(py).clone(),
            partition: run.partition(),
            offset: run.offset(i),
            key: run.key_in(py, i),
            value: run.value_in(py, i),
        }
    }

    fn key(&self) -> Option<&[u8]> {
        self.key.as_ref().map(|(b, a, z)| &b.as_bytes()[*a..*z])
    }

    fn value(&self) -> Option<&[u8]> {
        self.value.as_ref().map(|(b, a, z)| &b.as_bytes()[*a..*z])
    }

    /// The key as a Python object (the message's own bytes when it has them whole).
    fn key_object(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.key {
            None => py.None().into_bound(py),
            Some((b, 0, z)) if *z == b.as_bytes().len() => b.clone().into_any(),
            Some((b, a, z)) => PyBytes::new(py, &b.as_bytes()[*a..*z]).into_any(),
        }
    }
}

/// One input record as `feed` meets it: record `i` of a `Records`' run (no Python object
/// of its own), or a Python object.
enum Msg<'a, 'py> {
    InRun(&'a Arc<Run>, u32),
    Object(Bound<'py, PyAny>),
}

impl<'py> Msg<'_, 'py> {
    fn input(&self, py: Python<'py>) -> PyResult<Input<'py>> {
        match self {
            Msg::InRun(run, i) => Ok(Input::in_run(py, run, *i)),
            Msg::Object(msg) => Input::read(msg),
        }
    }

    /// The record as a Python object (a `Record` made for one of a run).
    fn object(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Msg::InRun(run, i) => Ok(Bound::new(py, run.record(*i))?.into_any()),
            Msg::Object(msg) => Ok(msg.clone()),
        }
    }

    /// As the origin of an output: a run's record by its place.
    fn origin(&self) -> Origin {
        match self {
            Msg::InRun(run, i) => Origin::InRun(Arc::clone(run), *i),
            Msg::Object(msg) => Origin::Object(msg.clone().unbind()),
        }
    }
}

/// What each record of one `feed` call is rated with.
struct Step<'a, 'py> {
    now: i64,
    partitions: u32,
    max_record_bytes: usize,
    read: &'a Bound<'py, PyAny>,
}

impl PyHeld {
    fn feed_all<'py>(
        &mut self,
        engine: &mut PyEngine,
        messages: &Bound<'py, PyAny>,
        now: i64,
        partitions: u32,
        out: &Sinks<'_, 'py>,
        fed: &mut Fed<'py>,
    ) -> PyResult<()> {
        let py = messages.py();
        // Its own reference: `self` is borrowed again for the replay check's reads.
        let read = &self.read.bind(py).clone();
        let step = Step {
            now,
            partitions,
            max_record_bytes: engine.inner.max_record_bytes,
            read,
        };
        let mut outputs = out.outputs.borrow_mut();
        if let Ok(records) = messages.downcast::<Records>() {
            // A run of a fetch: span by span, no Python object per record.
            let records = records.get();
            let run = records.run();
            for &i in records.indexes() {
                let msg = Msg::InRun(run, i);
                self.feed_one(engine, &msg, &step, out, &mut outputs, fed)?;
            }
            return Ok(());
        }
        for msg in messages.try_iter()? {
            let msg = Msg::Object(msg?);
            self.feed_one(engine, &msg, &step, out, &mut outputs, fed)?;
        }
        Ok(())
    }

    /// One record of `feed_all`: forwarded, skipped as judged before, or rated.
    fn feed_one<'py>(
        &mut self,
        engine: &mut PyEngine,
        msg: &Msg<'_, 'py>,
        step: &Step<'_, 'py>,
        out: &Sinks<'_, 'py>,
        outputs: &mut PyBatchOutputs,
        fed: &mut Fed<'py>,
    ) -> PyResult<()> {
        let py = step.read.py();
        let input = msg.input(py)?;
        let topic = input.topic.as_any();
        let topic_text = input.topic.to_str()?;
        let partition = input.partition;
        let key = input.key();
        let value = input.value();
        let home = feed::home_partition(key, value, step.partitions, step.max_record_bytes);
        if let Some((at, home_key)) = &home {
            if i64::from(*at) != partition {
                let home_key = match home_key {
                    HomeKey::Key => input.key_object(py),
                    HomeKey::Tenant(t) => PyBytes::new(py, t.as_bytes()).into_any(),
                };
                out.forwards.append((msg.object(py)?, *at, home_key))?;
                fed.count(topic, topic_text, "forwarded");
                return Ok(());
            }
        }
        let offset = input.offset;
        if let (Some(state), Some((_, home_key))) = (&fed.judged, &home) {
            // `ReplayGuard.judged_before(msg, home key)`: the key read as text.
            let tenant = match home_key {
                HomeKey::Key => feed::key_text(key).unwrap_or_default(),
                HomeKey::Tenant(t) => Cow::Borrowed(t.as_str()),
            };
            let at = PyTuple::new(py, [topic.clone(), partition.into_pyobject(py)?.into_any()])?;
            let offset_obj = offset.into_pyobject(py)?.into_any();
            if self.judged_before(engine, state, &at, &offset_obj, &tenant)? {
                fed.skipped += 1;
                return Ok(());
            }
        }
        let key_text = feed::key_text(key);
        let mut host = HeldHost {
            held: &mut self.inner,
            read: step.read,
            error: None,
        };
        let src = Source::Kafka {
            topic: topic_text,
            partition,
            offset,
        };
        let p =
            engine
                .inner
                .process_with(value, key_text.as_deref(), &src, step.now, Some(&mut host));
        if let Some(e) = host.error {
            return Err(e);
        }
        note_changed(&mut self.inner, &p, partition);
        let tenant = p.tenant_id.as_deref();
        for (kind, bytes) in feed::outputs(&p) {
            let out_key = if feed::keyed_by_tenant(kind, tenant) {
                tenant.map(str::as_bytes)
            } else {
                key
            };
            if bytes.len() > out.max_output_bytes {
                out.oversized.append(outputs.inner.len())?;
            }
            outputs.inner.push(kind.index(), out_key, bytes);
            out.origins.borrow_mut().inner.push(msg.origin());
        }
        fed.count(topic, topic_text, p.outcome.status.name());
        Ok(())
    }

    /// Step 1c for a record at home (`rater/worker/replay.py` `ReplayGuard.judged_before`,
    /// step by step): not judged unless its partition `at` (`(topic, partition)`) is
    /// suspect and `offset` at most the span's last offset, and its home key a tenant id
    /// (`TENANT_RE`); then the tenant's account is held (`_HeldAccounts.get`: a store read
    /// notes its judged offsets into `judged_in`) and the record was judged iff
    /// `judged_in[tenant].get(topic, -1) >= offset`.
    fn judged_before<'py>(
        &mut self,
        engine: &mut PyEngine,
        (suspect, judged_in): &(Bound<'py, PyDict>, Bound<'py, PyDict>),
        at: &Bound<'py, PyTuple>,
        offset: &Bound<'py, PyAny>,
        tenant: &str,
    ) -> PyResult<bool> {
        let py = at.py();
        let Some(span) = suspect.get_item(at)? else {
            return Ok(false);
        };
        if offset.gt(span.get_item(1)?)? {
            return Ok(false);
        }
        if !is_tenant(tenant) {
            return Ok(false); // not a tenant's key (the record is rejected, whatever the state)
        }
        self.hold_in(py, engine, tenant)?;
        match judged_in.get_item(tenant)? {
            Some(judged) if !judged.is_none() => {
                let topic = at.get_item(0)?;
                let through = judged.call_method1(intern!(py, "get"), (topic, -1))?;
                through.ge(offset)
            }
            _ => Ok(false),
        }
    }

    /// `hold`: the tenant's account held (read from the store if it is not held or in
    /// `engine`'s batch); whether it has one.
    fn hold_in(&mut self, py: Python<'_>, engine: &mut PyEngine, tenant: &str) -> PyResult<bool> {
        if engine.inner.accounts.contains_key(tenant) || self.inner.contains(tenant) {
            return Ok(true);
        }
        let raw = self.read_and_hold(py, tenant, &mut engine.inner.accounts)?;
        Ok(raw.is_some())
    }

    /// The tenant's account read from the store and held (`Held::hold_read`: during a
    /// batch into `engine_accounts`); its stored form.
    fn read_and_hold(
        &mut self,
        py: Python<'_>,
        tenant: &str,
        engine_accounts: &mut crate::rates::HashMap<compact_str::CompactString, Box<Account>>,
    ) -> PyResult<Option<Vec<u8>>> {
        let raw: Option<Vec<u8>> = self
            .read
            .bind(py)
            .call1((PyBytes::new(py, tenant.as_bytes()),))?
            .extract()?;
        if let Some(r) = &raw {
            self.inner
                .hold_read(tenant, r, engine_accounts)
                .map_err(|e| PyValueError::new_err(format!("account of {tenant:?}: {e}")))?;
        }
        Ok(raw)
    }
}

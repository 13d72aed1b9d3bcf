//! `rater_native.read_fetch`: the record batches of one fetched partition
//! (`crate::fetched`), each plain one's records as one `Records`, for the adapter's
//! `_FetchedRecords` (rater/worker/adapter.py) in place of aiokafka's one
//! `ConsumerRecord` per record. The records of a fetch are spans of its bytes, kept once
//! (`Run`) for all of its `Records`; `Held.feed` reads a `Records` span by span, and the
//! worker hands whole `Records` from the fetch to the rating call with no Python object
//! per record. Python gets a `Record` only where it asks for one record (indexing,
//! iterating: the continuity check's slow path, a forward, a reject that stands for a
//! refused output), and a copy of a key or value only when it reads one.

use crate::fetched::{self, Span, TIMESTAMP_TYPE_MASK};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PySlice, PyString};
use std::sync::Arc;

/// Bytes of a fetch and a span of them.
pub(crate) type InFetch<'py> = (Bound<'py, PyBytes>, usize, usize);

/// The plain records of one fetched partition, shared by the `Records` read from it.
pub(crate) struct Run {
    topic: Py<PyString>,
    partition: i64,
    fetch: Py<PyBytes>,
    /// Each record's span, and its timestamp type (its batch's: 1 log-append time).
    spans: Vec<(Span, i32)>,
}

impl Run {
    pub(crate) fn topic_of<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.topic.bind(py)
    }

    pub(crate) fn partition(&self) -> i64 {
        self.partition
    }

    pub(crate) fn offset(&self, i: u32) -> i64 {
        self.spans[i as usize].0.offset
    }

    fn in_fetch<'py>(&self, py: Python<'py>, at: Option<(usize, usize)>) -> Option<InFetch<'py>> {
        at.map(|(a, z)| (self.fetch.bind(py).clone(), a, z))
    }

    /// The fetch's bytes and where record `i`'s key lies in them (None: null).
    pub(crate) fn key_in<'py>(&self, py: Python<'py>, i: u32) -> Option<InFetch<'py>> {
        self.in_fetch(py, self.spans[i as usize].0.key)
    }

    /// The fetch's bytes and where record `i`'s value lies in them (None: null).
    pub(crate) fn value_in<'py>(&self, py: Python<'py>, i: u32) -> Option<InFetch<'py>> {
        self.in_fetch(py, self.spans[i as usize].0.value)
    }

    /// Record `i` as a Python object of its own (the run shared).
    pub(crate) fn record(self: &Arc<Self>, i: u32) -> Record {
        Record {
            run: Arc::clone(self),
            i,
        }
    }

    /// A copy of the bytes at `at` in the fetch (None: null).
    fn copy<'py>(
        &self,
        py: Python<'py>,
        at: Option<(usize, usize)>,
    ) -> Option<Bound<'py, PyBytes>> {
        at.map(|(a, z)| PyBytes::new(py, &self.fetch.as_bytes(py)[a..z]))
    }
}

/// One input record of a fetch, record `i` of its run: what the worker reads of
/// aiokafka's `ConsumerRecord`.
#[pyclass(frozen, name = "Record", module = "rater_native")]
pub(crate) struct Record {
    run: Arc<Run>,
    i: u32,
}

impl Record {
    /// Its run, and its index there.
    pub(crate) fn place(&self) -> (&Arc<Run>, u32) {
        (&self.run, self.i)
    }

    fn span(&self) -> &(Span, i32) {
        &self.run.spans[self.i as usize]
    }
}

#[pymethods]
impl Record {
    #[getter]
    fn topic(&self, py: Python<'_>) -> Py<PyString> {
        self.run.topic.clone_ref(py)
    }

    #[getter]
    fn partition(&self) -> i64 {
        self.run.partition
    }

    #[getter]
    fn offset(&self) -> i64 {
        self.span().0.offset
    }

    #[getter]
    fn timestamp(&self) -> i64 {
        self.span().0.timestamp
    }

    #[getter]
    fn timestamp_type(&self) -> i32 {
        self.span().1
    }

    /// A copy of the key (None: null).
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.run.copy(py, self.span().0.key)
    }

    /// A copy of the value (None: null).
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.run.copy(py, self.span().0.value)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Record({}/{}@{})",
            self.run.topic.bind(py),
            self.run.partition,
            self.offset()
        )
    }
}

/// Records of one fetched partition, in order: a sequence of `Record` to Python, each
/// made when it is read; to `Held.feed`, spans of the fetch.
#[pyclass(frozen, sequence, name = "Records", module = "rater_native")]
pub(crate) struct Records {
    run: Arc<Run>,
    /// The records' indexes in the run.
    at: Vec<u32>,
}

impl Records {
    pub(crate) fn run(&self) -> &Arc<Run> {
        &self.run
    }

    pub(crate) fn indexes(&self) -> &[u32] {
        &self.at
    }

    fn with(&self, at: Vec<u32>) -> Records {
        Records {
            run: self.run.clone(),
            at,
        }
    }
}

#[pymethods]
impl Records {
    fn __len__(&self) -> usize {
        self.at.len()
    }

    /// A `Record` (a negative index counts from the end), or a slice as `Records`.
    fn __getitem__<'py>(&self, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = index.py();
        if let Ok(slice) = index.downcast::<PySlice>() {
            let s = slice.indices(self.at.len() as isize)?;
            let mut at = Vec::with_capacity(s.slicelength);
            let mut i = s.start;
            for _ in 0..s.slicelength {
                at.push(self.at[i as usize]);
                i += s.step;
            }
            return Ok(Bound::new(py, self.with(at))?.into_any());
        }
        let i: isize = index
            .extract()
            .map_err(|_| PyTypeError::new_err("Records indices must be integers or slices"))?;
        let n = self.at.len() as isize;
        let i = if i < 0 { i + n } else { i };
        if i < 0 || i >= n {
            return Err(PyIndexError::new_err("Records index out of range"));
        }
        Ok(Bound::new(py, self.run.record(self.at[i as usize]))?.into_any())
    }

    /// Every record, as a list of `Record` to iterate.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for &i in &self.at {
            list.append(Bound::new(py, self.run.record(i))?)?;
        }
        list.as_any().try_iter().map(|it| it.into_any())
    }

    /// The records aiokafka's iterator yields from the fetch offset `offset` on: a record
    /// below the offset after the last one kept is left out (before the fetch offset, or
    /// an offset out of order in a batch not well formed).
    fn since(&self, offset: i64) -> Records {
        let mut next = offset;
        let mut at = Vec::with_capacity(self.at.len());
        for &i in &self.at {
            let o = self.run.offset(i);
            if o >= next {
                at.push(i);
                let Some(after) = o.checked_add(1) else {
                    break; // nothing is after the largest offset
                };
                next = after;
            }
        }
        self.with(at)
    }

    /// The oldest and the newest timestamp of the records (None: there are none).
    fn timestamp_range(&self) -> Option<(i64, i64)> {
        let stamps = self
            .at
            .iter()
            .map(|&i| self.run.spans[i as usize].0.timestamp);
        Some((stamps.clone().min()?, stamps.max()?))
    }

    /// `runs`, records of one fetch, one after the other as one `Records`.
    #[staticmethod]
    fn join(runs: Vec<PyRef<'_, Records>>) -> PyResult<Records> {
        let Some(first) = runs.first() else {
            return Err(PyValueError::new_err("join: no Records"));
        };
        let mut at = Vec::with_capacity(runs.iter().map(|r| r.at.len()).sum());
        for r in &runs {
            if !Arc::ptr_eq(&r.run, &first.run) {
                return Err(PyValueError::new_err("join: Records of different fetches"));
            }
            at.extend_from_slice(&r.at);
        }
        Ok(first.with(at))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let run = &self.run;
        match (self.at.first(), self.at.last()) {
            (Some(&a), Some(&z)) => format!(
                "Records({}/{}@{}..{}, {} records)",
                run.topic.bind(py),
                run.partition,
                run.offset(a),
                run.offset(z),
                self.at.len()
            ),
            _ => format!("Records({}/{}, empty)", run.topic.bind(py), run.partition),
        }
    }
}

/// One batch: (start, end, base offset, next offset, producer id, attributes, records):
/// the records a `Records`, or None when aiokafka is to read the batch (not plain, not
/// well formed, or its CRC wrong with `check_crcs`).
type FetchedBatch = (usize, usize, i64, i64, i64, i16, Option<Records>);

/// The whole record batches of `fetch`, the bytes aiokafka fetched for one partition of
/// `topic`, in order.
#[pyfunction]
pub(crate) fn read_fetch(
    fetch: &Bound<'_, PyBytes>,
    topic: &Bound<'_, PyString>,
    partition: i64,
    check_crcs: bool,
) -> PyResult<Vec<FetchedBatch>> {
    let buf = fetch.as_bytes();
    let mut spans: Vec<Span> = Vec::new();
    let mut stamped = Vec::new();
    let mut batches = Vec::new();
    for b in fetched::batches(buf) {
        spans.clear();
        let readable = b.is_plain()
            && (!check_crcs || b.crc_ok(buf))
            && fetched::records(buf, &b, &mut spans).is_some();
        let records = if readable {
            let timestamp_type = i32::from(b.attributes & TIMESTAMP_TYPE_MASK != 0);
            let first = stamped.len();
            stamped.extend(spans.drain(..).map(|s| (s, timestamp_type)));
            let index = |i: usize| {
                u32::try_from(i)
                    .map_err(|_| PyValueError::new_err("read_fetch: over 2**32 records"))
            };
            Some((index(first)?..index(stamped.len())?).collect::<Vec<u32>>())
        } else {
            None
        };
        batches.push((b, records));
    }
    let run = Arc::new(Run {
        topic: topic.clone().unbind(),
        partition,
        fetch: fetch.clone().unbind(),
        spans: stamped,
    });
    Ok(batches
        .into_iter()
        .map(|(b, records)| {
            let next_offset = b.next_offset();
            (
                b.start,
                b.end,
                b.base_offset,
                next_offset,
                b.producer_id,
                b.attributes,
                records.map(|at| Records {
                    run: run.clone(),
                    at,
                }),
            )
        })
        .collect())
}

/// Where an output came from: record `i` of a run (`Records`), or a Python object (a
/// `Record`, aiokafka's `ConsumerRecord`, the core's `Message`).
pub(crate) enum Origin {
    InRun(Arc<Run>, u32),
    Object(Py<PyAny>),
}

/// The input record of each output of a batch (`BatchResult.origins` of the native step):
/// a sequence of records to Python, each made when it is read (only to build the reject
/// that stands for an output Kafka refuses). `Held.feed` appends to it without a Python
/// object per output.
#[pyclass(sequence, name = "Origins", module = "rater_native")]
#[derive(Default)]
pub(crate) struct Origins {
    pub(crate) inner: Vec<Origin>,
}

impl Origins {
    fn item<'py>(&self, py: Python<'py>, at: usize) -> PyResult<Bound<'py, PyAny>> {
        match &self.inner[at] {
            Origin::InRun(run, i) => Ok(Bound::new(py, run.record(*i))?.into_any()),
            Origin::Object(obj) => Ok(obj.bind(py).clone()),
        }
    }
}

#[pymethods]
impl Origins {
    #[new]
    fn new() -> Self {
        Origins::default()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyAny>> {
        let n = self.inner.len() as isize;
        let at = if i < 0 { i + n } else { i };
        if at < 0 || at >= n {
            return Err(PyIndexError::new_err("Origins index out of range"));
        }
        self.item(py, at as usize)
    }

    fn append(&mut self, origin: Bound<'_, PyAny>) {
        self.inner.push(Origin::Object(origin.unbind()));
    }

    /// Every origin, as a list to iterate.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for at in 0..self.inner.len() {
            list.append(self.item(py, at)?)?;
        }
        list.as_any().try_iter().map(|it| it.into_any())
    }
}

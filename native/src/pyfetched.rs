//! `rater_native.read_fetch`: the record batches of one fetched partition
//! (`crate::fetched`), each plain one's records as `Record`s, for the adapter's
//! `_FetchedRecords` (rater/worker/adapter.py) in place of aiokafka's one
//! `ConsumerRecord` per record. A `Record` holds the places of its key and value in the
//! fetch's bytes; `Held.feed` reads them there, and Python gets a copy only when it asks.

use crate::fetched::{self, TIMESTAMP_TYPE_MASK};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

/// Bytes of a fetch and a span of them.
pub(crate) type InFetch<'py> = (Bound<'py, PyBytes>, usize, usize);

/// One input record of a fetch: what the worker reads of aiokafka's `ConsumerRecord`.
#[pyclass(frozen, name = "Record", module = "rater_native")]
pub(crate) struct Record {
    topic: Py<PyString>,
    partition: i64,
    offset: i64,
    timestamp: i64,
    timestamp_type: i32,
    fetch: Py<PyBytes>,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
}

impl Record {
    pub(crate) fn topic_of<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.topic.bind(py)
    }

    pub(crate) fn partition(&self) -> i64 {
        self.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    /// The fetch's bytes and where the key lies in them (None: null).
    pub(crate) fn key_in<'py>(&self, py: Python<'py>) -> Option<InFetch<'py>> {
        self.key.map(|(a, z)| (self.fetch.bind(py).clone(), a, z))
    }

    /// The fetch's bytes and where the value lies in them (None: null).
    pub(crate) fn value_in<'py>(&self, py: Python<'py>) -> Option<InFetch<'py>> {
        self.value.map(|(a, z)| (self.fetch.bind(py).clone(), a, z))
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

#[pymethods]
impl Record {
    #[getter]
    fn topic(&self, py: Python<'_>) -> Py<PyString> {
        self.topic.clone_ref(py)
    }

    #[getter(partition)]
    fn get_partition(&self) -> i64 {
        self.partition
    }

    #[getter(offset)]
    fn get_offset(&self) -> i64 {
        self.offset
    }

    #[getter]
    fn timestamp(&self) -> i64 {
        self.timestamp
    }

    #[getter]
    fn timestamp_type(&self) -> i32 {
        self.timestamp_type
    }

    /// A copy of the key (None: null).
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.copy(py, self.key)
    }

    /// A copy of the value (None: null).
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.copy(py, self.value)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Record({}/{}@{})",
            self.topic.bind(py),
            self.partition,
            self.offset
        )
    }
}

/// One batch: (start, end, base offset, next offset, producer id, attributes, records):
/// the records a list of `Record`, or None when aiokafka is to read the batch (not plain,
/// not well formed, or its CRC wrong with `check_crcs`).
type FetchedBatch<'py> = (usize, usize, i64, i64, i64, i16, Option<Bound<'py, PyList>>);

/// The whole record batches of `fetch`, the bytes aiokafka fetched for one partition of
/// `topic`, in order.
#[pyfunction]
pub(crate) fn read_fetch<'py>(
    fetch: &Bound<'py, PyBytes>,
    topic: &Bound<'py, PyString>,
    partition: i64,
    check_crcs: bool,
) -> PyResult<Vec<FetchedBatch<'py>>> {
    let py = fetch.py();
    let buf = fetch.as_bytes();
    let mut spans = Vec::new();
    let mut out = Vec::new();
    for b in fetched::batches(buf) {
        spans.clear();
        let readable = b.is_plain()
            && (!check_crcs || b.crc_ok(buf))
            && fetched::records(buf, &b, &mut spans).is_some();
        let records = if readable {
            let timestamp_type = i32::from(b.attributes & TIMESTAMP_TYPE_MASK != 0);
            let list = PyList::empty(py);
            for s in &spans {
                let record = Record {
                    topic: topic.clone().unbind(),
                    partition,
                    offset: s.offset,
                    timestamp: s.timestamp,
                    timestamp_type,
                    fetch: fetch.clone().unbind(),
                    key: s.key,
                    value: s.value,
                };
                list.append(Bound::new(py, record)?)?;
            }
            Some(list)
        } else {
            None
        };
        out.push((
            b.start,
            b.end,
            b.base_offset,
            b.next_offset(),
            b.producer_id,
            b.attributes,
            records,
        ));
    }
    Ok(out)
}

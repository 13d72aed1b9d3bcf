//! `rater_native.record_batches`: Kafka record batches built from a list of records in one
//! call (`crate::recordbatch`), for rater/worker/sending.py.

use crate::recordbatch::RecordBatch;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// One record batch, its records written; `finish` adds the header for the producer.
#[pyclass(name = "RecordBatch", module = "rater_native")]
pub(crate) struct PyRecordBatch {
    inner: RecordBatch,
}

#[pymethods]
impl PyRecordBatch {
    fn count(&self) -> i32 {
        self.inner.count()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    /// The batch as sent, with the producer's id, epoch and first sequence number.
    fn finish<'py>(
        &self,
        py: Python<'py>,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.finish(producer_id, producer_epoch, base_sequence))
    }
}

fn opt_bytes<'a>(v: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Option<&'a [u8]>> {
    if v.is_none() {
        return Ok(None);
    }
    match v.downcast::<PyBytes>() {
        Ok(b) => Ok(Some(b.as_bytes())),
        Err(_) => Err(PyTypeError::new_err(format!("{what}: not bytes or None"))),
    }
}

/// `items`, a list of (key, value, headers) with key and value bytes or None and headers
/// None or a list of (str, bytes or None), in batches of at most `batch_size` bytes (a
/// record alone in its batch whatever its size), every record stamped `timestamp_ms`.
#[pyfunction]
pub(crate) fn record_batches(
    items: &Bound<'_, PyList>,
    batch_size: usize,
    timestamp_ms: i64,
) -> PyResult<Vec<PyRecordBatch>> {
    let mut out = Vec::new();
    let mut batch = RecordBatch::new(batch_size);
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    for item in items.iter() {
        let item = item.downcast::<PyTuple>()?;
        if item.len() != 3 {
            return Err(PyTypeError::new_err("a record is (key, value, headers)"));
        }
        let (k, v, h) = (item.get_item(0)?, item.get_item(1)?, item.get_item(2)?);
        let key = opt_bytes(&k, "key")?;
        let value = opt_bytes(&v, "value")?;
        names.clear();
        values.clear();
        if !h.is_none() {
            for pair in h.try_iter()? {
                let (name, value): (String, Option<Vec<u8>>) = pair?.extract()?;
                names.push(name);
                values.push(value);
            }
        }
        let headers: Vec<(&str, Option<&[u8]>)> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        if !batch.append(timestamp_ms, key, value, &headers) {
            out.push(PyRecordBatch {
                inner: std::mem::replace(&mut batch, RecordBatch::new(batch_size)),
            });
            let fits = batch.append(timestamp_ms, key, value, &headers);
            debug_assert!(fits, "an empty batch takes any record");
        }
    }
    if batch.count() > 0 {
        out.push(PyRecordBatch { inner: batch });
    }
    Ok(out)
}

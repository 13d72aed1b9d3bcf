//! `rater_native.partition_batches`: a list of records to produce, partitioned and built
//! into Kafka record batches in one call (`crate::recordbatch`), for
//! rater/worker/sending.py.

use crate::feed::partition_for;
use crate::recordbatch::RecordBatch;
use indexmap::IndexMap;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::collections::HashMap;

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
        &mut self,
        py: Python<'py>,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Bound<'py, PyBytes> {
        let bytes = self
            .inner
            .finish(producer_id, producer_epoch, base_sequence);
        PyBytes::new(py, bytes)
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

/// A topic partition's record batches.
type Group<'py> = (Bound<'py, PyString>, i64, Vec<PyRecordBatch>);

/// `records`, a list of (topic, partition, key, value, headers) with partition None for
/// the key's murmur2 partition (partition 0 without a key, as rater/worker/sending.py
/// does), grouped per topic partition in the order first met, each group's records in
/// their order in batches below `batch_size` bytes (a record alone in its batch whatever
/// its size), every record stamped `timestamp_ms`. Key and value are bytes or None,
/// headers None or a list of (str, bytes or None). A topic with records to partition
/// and no entry in `counts` (its partitions) is returned in the second list, and then
/// nothing else: the caller asks the broker and calls again.
#[pyfunction]
pub(crate) fn partition_batches<'py>(
    records: &Bound<'py, PyList>,
    counts: HashMap<String, u32>,
    batch_size: usize,
    timestamp_ms: i64,
) -> PyResult<(Vec<Group<'py>>, Vec<String>)> {
    // The few topics met: name, the Python string, partitions (when given in `counts`).
    let mut topics: Vec<(String, Bound<'py, PyString>, Option<u32>)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for record in records.iter() {
        let record = record.downcast::<PyTuple>()?;
        let topic_obj = record.get_item(0)?;
        let topic_obj = topic_obj.downcast::<PyString>()?;
        let topic = topic_obj.to_str()?;
        let t = match topics.iter().position(|(name, _, _)| name == topic) {
            Some(t) => t,
            None => {
                let n = counts.get(topic).map(|n| (*n).max(1));
                topics.push((topic.to_owned(), topic_obj.clone(), n));
                topics.len() - 1
            }
        };
        if topics[t].2.is_none()
            && record.get_item(1)?.is_none()
            && !missing.iter().any(|m| m == topic)
        {
            missing.push(topic.to_owned());
        }
    }
    if !missing.is_empty() {
        return Ok((Vec::new(), missing));
    }
    let mut groups: IndexMap<(usize, i64), Vec<RecordBatch>> = IndexMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    for record in records.iter() {
        let record = record.downcast::<PyTuple>()?;
        if record.len() != 5 {
            return Err(PyTypeError::new_err(
                "a record is (topic, partition, key, value, headers)",
            ));
        }
        let topic_obj = record.get_item(0)?;
        let topic = topic_obj.downcast::<PyString>()?.to_str()?;
        let t = topics
            .iter()
            .position(|(name, _, _)| name == topic)
            .expect("every topic was met in the first pass");
        let (p, k, v, h) = (
            record.get_item(1)?,
            record.get_item(2)?,
            record.get_item(3)?,
            record.get_item(4)?,
        );
        let key = opt_bytes(&k, "key")?;
        let value = opt_bytes(&v, "value")?;
        let partition: i64 = if p.is_none() {
            match key {
                Some(key) if !key.is_empty() => {
                    i64::from(partition_for(key, topics[t].2.expect("asked for above")))
                }
                _ => 0,
            }
        } else {
            p.extract()?
        };
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
        let batches = groups
            .entry((t, partition))
            .or_insert_with(|| vec![RecordBatch::new(batch_size)]);
        let last = batches.last_mut().expect("a group has a batch");
        if !last.append(timestamp_ms, key, value, &headers) {
            let mut batch = RecordBatch::new(batch_size);
            let fits = batch.append(timestamp_ms, key, value, &headers);
            debug_assert!(fits, "an empty batch takes any record");
            batches.push(batch);
        }
    }
    let out = groups
        .into_iter()
        .map(|((t, partition), batches)| {
            let batches = batches
                .into_iter()
                .map(|inner| PyRecordBatch { inner })
                .collect();
            (topics[t].1.clone(), partition, batches)
        })
        .collect();
    Ok((out, Vec::new()))
}

//! `rater_native.partition_batches`: a list of records to produce, partitioned and built
//! into Kafka record batches in one call (`crate::recordbatch`), for
//! rater/worker/sending.py.

use crate::feed::partition_for;
use crate::outputs::BatchOutputs;
use crate::pyoutputs::PyBatchOutputs;
use crate::recordbatch::{Headers, RecordBatch};
use indexmap::IndexMap;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PySequence, PyString, PyTuple};
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

/// The topics met, each with its Python string and partition count (when in `counts`),
/// and the record batches of each topic partition in the order first met.
struct Grouping<'py> {
    topics: Vec<(String, Bound<'py, PyString>, Option<u32>)>,
    missing: Vec<String>,
    groups: IndexMap<(usize, i64), Vec<RecordBatch>>,
    batch_size: usize,
    timestamp_ms: i64,
}

impl<'py> Grouping<'py> {
    /// The index of `topic`; one to partition by key (`keyed`) and with no partition
    /// count is noted in `missing`.
    fn topic(
        &mut self,
        topic: &Bound<'py, PyString>,
        counts: &HashMap<String, u32>,
        keyed: bool,
    ) -> PyResult<usize> {
        let name = topic.to_str()?;
        let t = match self.topics.iter().position(|(n, _, _)| n == name) {
            Some(t) => t,
            None => {
                let n = counts.get(name).map(|n| (*n).max(1));
                self.topics.push((name.to_owned(), topic.clone(), n));
                self.topics.len() - 1
            }
        };
        if keyed && self.topics[t].2.is_none() && !self.missing.iter().any(|m| m == name) {
            self.missing.push(name.to_owned());
        }
        Ok(t)
    }

    /// One record onto its topic partition's last batch, or a new one when it is full.
    /// `partition` None: the key's murmur2 partition (0 without a key).
    fn append(
        &mut self,
        t: usize,
        partition: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers<'_>,
    ) {
        let partition = partition.unwrap_or_else(|| match key {
            Some(key) if !key.is_empty() => i64::from(partition_for(
                key,
                self.topics[t].2.expect("asked for above"),
            )),
            _ => 0,
        });
        let batch_size = self.batch_size;
        let batches = self
            .groups
            .entry((t, partition))
            .or_insert_with(|| vec![RecordBatch::new(batch_size)]);
        let last = batches.last_mut().expect("a group has a batch");
        if !last.append(self.timestamp_ms, key, value, headers) {
            let mut batch = RecordBatch::new(batch_size);
            let fits = batch.append(self.timestamp_ms, key, value, headers);
            debug_assert!(fits, "an empty batch takes any record");
            batches.push(batch);
        }
    }
}

/// `records`, a list of (topic, partition, key, value, headers) with partition None for
/// the key's murmur2 partition (partition 0 without a key, as rater/worker/sending.py
/// does), then `outputs`, (topic, key, value) each partitioned by key: a
/// `rater_native.BatchOutputs` (read without a Python object per output) or a sequence
/// of tuples; grouped per topic partition in the order first met, each group's records in
/// their order in batches below `batch_size` bytes (a record alone in its batch whatever
/// its size), every record stamped `timestamp_ms`. Key and value are bytes or None,
/// headers None or a list of (str, bytes or None). A topic with records to partition
/// and no entry in `counts` (its partitions) is returned in the second list, and then
/// nothing else: the caller asks the broker and calls again.
#[pyfunction]
#[pyo3(signature = (records, counts, batch_size, timestamp_ms, outputs=None))]
pub(crate) fn partition_batches<'py>(
    records: &Bound<'py, PyList>,
    counts: HashMap<String, u32>,
    batch_size: usize,
    timestamp_ms: i64,
    outputs: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Vec<Group<'py>>, Vec<String>)> {
    let py = records.py();
    let mut g = Grouping {
        topics: Vec::new(),
        missing: Vec::new(),
        groups: IndexMap::new(),
        batch_size,
        timestamp_ms,
    };
    let native = match outputs {
        Some(o) => o.downcast::<PyBatchOutputs>().ok().map(|o| o.borrow()),
        None => None,
    };
    let listed = match (outputs, &native) {
        (Some(o), None) => Some(o.downcast::<PySequence>().map_err(|_| {
            PyTypeError::new_err("outputs: a BatchOutputs or a sequence of (topic, key, value)")
        })?),
        _ => None,
    };
    // First pass: the topics, and which of them lack a partition count.
    for record in records.iter() {
        let record = record.downcast::<PyTuple>()?;
        if record.len() != 5 {
            return Err(PyTypeError::new_err(
                "a record is (topic, partition, key, value, headers)",
            ));
        }
        let keyed = record.get_item(1)?.is_none();
        g.topic(record.get_item(0)?.downcast::<PyString>()?, &counts, keyed)?;
    }
    // The native outputs' topic indexes -> the grouping's.
    let mut native_topics: Vec<usize> = Vec::new();
    if let Some(o) = &native {
        let used = used_topics(&o.inner);
        for (i, used) in used.into_iter().enumerate() {
            let t = if used {
                g.topic(o.name(py, i), &counts, true)?
            } else {
                usize::MAX
            };
            native_topics.push(t);
        }
    }
    if let Some(list) = listed {
        for output in list.try_iter()? {
            let output = output?;
            let output = output.downcast::<PyTuple>()?;
            if output.len() != 3 {
                return Err(PyTypeError::new_err("an output is (topic, key, value)"));
            }
            g.topic(output.get_item(0)?.downcast::<PyString>()?, &counts, true)?;
        }
    }
    if !g.missing.is_empty() {
        return Ok((Vec::new(), g.missing));
    }
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    for record in records.iter() {
        let record = record.downcast::<PyTuple>()?;
        let topic = record.get_item(0)?;
        let t = g.topic(topic.downcast::<PyString>()?, &counts, false)?;
        let (p, k, v, h) = (
            record.get_item(1)?,
            record.get_item(2)?,
            record.get_item(3)?,
            record.get_item(4)?,
        );
        let partition: Option<i64> = if p.is_none() {
            None
        } else {
            Some(p.extract()?)
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
        g.append(
            t,
            partition,
            opt_bytes(&k, "key")?,
            opt_bytes(&v, "value")?,
            &headers,
        );
    }
    if let Some(o) = &native {
        for (t, key, value) in o.inner.iter() {
            g.append(native_topics[t], None, key, Some(value), &[]);
        }
    }
    if let Some(list) = listed {
        for output in list.try_iter()? {
            let output = output?;
            let output = output.downcast::<PyTuple>()?;
            let t = g.topic(output.get_item(0)?.downcast::<PyString>()?, &counts, false)?;
            let (k, v) = (output.get_item(1)?, output.get_item(2)?);
            g.append(t, None, opt_bytes(&k, "key")?, opt_bytes(&v, "value")?, &[]);
        }
    }
    let Grouping { topics, groups, .. } = g;
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

/// Which of the outputs' topic indexes any output uses.
fn used_topics(outputs: &BatchOutputs) -> Vec<bool> {
    let mut used = vec![false; outputs.topics().len()];
    for (t, _, _) in outputs.iter() {
        used[t] = true;
    }
    used
}

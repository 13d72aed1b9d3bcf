//! `rater_native.BatchOutputs`: a batch's outputs held natively (`crate::outputs`), the native
//! step's `BatchResult.outputs`. `Held.feed` appends to it without a Python object per
//! output, `partition_batches` reads it the same way; to Python it is a sequence of
//! `(topic, key, value)` like the Python step's list (read, replaced, appended to one
//! at a time, off the hot path).

use crate::outputs::BatchOutputs;
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

#[pyclass(name = "BatchOutputs", module = "rater_native", sequence)]
pub(crate) struct PyBatchOutputs {
    pub(crate) inner: BatchOutputs,
    /// The topic names as Python strings, by index (the same objects on every read).
    names: Vec<Py<PyString>>,
}

/// An output as Python hands one in: (topic, key or None, value).
type Item<'py> = (
    Bound<'py, PyString>,
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
);

impl PyBatchOutputs {
    /// The Python string of topic index `t`.
    pub(crate) fn name<'py>(&self, py: Python<'py>, t: usize) -> &Bound<'py, PyString> {
        self.names[t].bind(py)
    }

    fn index(&self, i: isize) -> PyResult<usize> {
        let n = self.inner.len() as isize;
        let at = if i < 0 { i + n } else { i };
        if at < 0 || at >= n {
            return Err(PyIndexError::new_err("output index out of range"));
        }
        Ok(at as usize)
    }

    fn topic_of(&mut self, topic: &Bound<'_, PyString>) -> PyResult<usize> {
        let t = self.inner.topic_index(topic.to_str()?);
        if t == self.names.len() {
            self.names.push(topic.clone().unbind());
        }
        Ok(t)
    }

    fn item<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyTuple>> {
        let (t, key, value) = self.inner.get(i).expect("an index checked");
        PyTuple::new(
            py,
            [
                self.name(py, t).clone().into_any(),
                key.map_or_else(
                    || py.None().into_bound(py),
                    |k| PyBytes::new(py, k).into_any(),
                ),
                PyBytes::new(py, value).into_any(),
            ],
        )
    }
}

#[pymethods]
impl PyBatchOutputs {
    /// No outputs yet; `topics`: the topics of rated CDRs, balance events, recharge
    /// requests and rejects, in that order (what `Held.feed` writes to).
    #[new]
    fn new(topics: [Bound<'_, PyString>; 4]) -> PyResult<Self> {
        let mut out = PyBatchOutputs {
            inner: BatchOutputs::new(Vec::new()),
            names: Vec::new(),
        };
        for topic in &topics {
            let before = out.names.len();
            if out.topic_of(topic)? == before {
                continue;
            }
            return Err(PyValueError::new_err("topics: four different names"));
        }
        Ok(out)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyTuple>> {
        let at = self.index(i)?;
        self.item(py, at)
    }

    fn __setitem__(&mut self, i: isize, item: Item<'_>) -> PyResult<()> {
        let at = self.index(i)?;
        let t = self.topic_of(&item.0)?;
        let key = item.1.as_ref().map(|k| k.as_bytes());
        self.inner.set(at, t, key, item.2.as_bytes());
        Ok(())
    }

    fn append(&mut self, item: Item<'_>) -> PyResult<()> {
        let t = self.topic_of(&item.0)?;
        let key = item.1.as_ref().map(|k| k.as_bytes());
        self.inner.push(t, key, item.2.as_bytes());
        Ok(())
    }

    /// Every output, as a list of `(topic, key, value)` to iterate.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for i in 0..self.inner.len() {
            list.append(self.item(py, i)?)?;
        }
        list.as_any().try_iter().map(|it| it.into_any())
    }
}

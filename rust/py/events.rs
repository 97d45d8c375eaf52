//! `EventReader`: the Python face of a queue's events stream reader (events.rs).

use super::errors::to_py;
use crate::store::redis::events;
use crate::store::redis::keys::QueueKeys;
use crate::store::Settings;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::time::Duration;

#[pyclass(module = "fastjobs._core", frozen)]
pub struct EventReader {
    inner: events::EventReader,
}

impl EventReader {
    pub fn new(settings: &Settings, q: &QueueKeys) -> PyResult<EventReader> {
        Ok(EventReader { inner: events::EventReader::new(settings, q).map_err(to_py)? })
    }
}

#[pymethods]
impl EventReader {
    /// The id of the newest entry, "0-0" when there is none.
    fn last_id(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.inner.last_id()).map_err(to_py)
    }

    /// Up to `count` entries after stream id `after`, waiting up to `block` seconds for the
    /// first (0: not at all): a list of (id, {field: bytes}). The GIL is released meanwhile.
    #[pyo3(signature = (after, count = 100, block = 0.0))]
    fn read<'py>(&self, py: Python<'py>, after: &str, count: usize, block: f64) -> PyResult<Bound<'py, PyList>> {
        if !(block.is_finite() && block >= 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("block must be a number of seconds >= 0, got {block}")));
        }
        let got = py.detach(|| self.inner.read(after, count, Duration::from_secs_f64(block))).map_err(to_py)?;
        let out = PyList::empty(py);
        for (id, fields) in got {
            let d = PyDict::new(py);
            for (k, v) in fields {
                d.set_item(k, PyBytes::new(py, &v))?;
            }
            out.append(PyTuple::new(py, [id.into_pyobject(py)?.into_any(), d.into_any()])?)?;
        }
        Ok(out)
    }
}

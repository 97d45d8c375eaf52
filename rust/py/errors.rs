//! The one place where engine errors become Python exceptions. The classes live in
//! `fastjobs/errors.py` so they can also derive from the built-in ones users catch.

use crate::error::Error;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

fn class(py: Python<'_>, name: &str) -> PyResult<Py<PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || py.import("fastjobs.errors").map(Bound::unbind))?;
    Ok(m.bind(py).getattr(name)?.cast_into::<PyType>()?.unbind())
}

pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let msg = e.to_string();
        let name = match &e {
            Error::Invalid(_) => return PyValueError::new_err(msg),
            Error::Connection(_) => "ConnectionError",
            Error::Timeout(_) => "StoreTimeoutError",
            Error::Store(_) => "StoreError",
            Error::Closed(_) => "ClosedError",
            Error::Authentication(_) => "AuthenticationError",
            Error::UnknownQueue(_) => "UnknownQueueError",
            Error::Schema(_) => "SchemaError",
            Error::Tls(_) => "TLSError",
            Error::Redirect(_) => "StoreError",
        };
        match class(py, name) {
            Ok(cls) => PyErr::from_type(cls.into_bound(py), msg),
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

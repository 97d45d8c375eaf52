//! What only the PostgreSQL store has on the Python side: making its schema.

use crate::store::postgres::PgStore;
use pyo3::prelude::*;

/// Creates or upgrades the fastjobs schema in the database of `url` (`fastjobs db init`);
/// returns the schema versions it applied (empty when it was up to date). The GIL is
/// released meanwhile.
#[pyfunction]
pub fn init_schema(py: Python<'_>, url: &str) -> PyResult<Vec<i32>> {
    let url = url.to_string();
    py.detach(|| crate::runtime::runtime().block_on(PgStore::init_schema(&url))).map_err(super::errors::to_py)
}

//! fastjobs' engine: the stores, the worker engine and the scheduler, exposed to Python as
//! `fastjobs._core`. Everything outside `py/` is plain Rust, testable with `cargo test`.

pub mod cron;
pub mod engine;
pub mod error;
pub mod record;
pub mod runtime;
pub mod store;

mod py;

use pyo3::prelude::*;

/// Raises ValueError unless `name` is a valid queue name.
#[pyfunction]
fn validate_queue_name(name: &str) -> PyResult<()> {
    store::validate_queue_name(name).map_err(py::errors::to_py)
}

/// Raises ValueError unless `id` can be a caller-chosen job id.
#[pyfunction]
fn validate_job_id(id: &str) -> PyResult<()> {
    record::check_caller_id(id).map_err(py::errors::to_py)
}

/// Raises ValueError unless `url` can be a callback's: http or https, with a host.
#[pyfunction]
fn check_callback_url(url: &str) -> PyResult<()> {
    engine::callback::check_url(url).map_err(py::errors::to_py)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(validate_queue_name, m)?)?;
    m.add_function(wrap_pyfunction!(validate_job_id, m)?)?;
    m.add_function(wrap_pyfunction!(check_callback_url, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<py::client::Client>()?;
    m.add_class::<py::worker::WorkerEngine>()?;
    m.add_class::<py::bulk::BulkWriter>()?;
    m.add_class::<py::client::PreparedBatch>()?;
    m.add_class::<py::schedules::Schedules>()?;
    m.add_class::<py::events::EventReader>()?;
    m.add_function(wrap_pyfunction!(py::schedules::cron_next, m)?)?;
    m.add_function(wrap_pyfunction!(py::postgres::init_schema, m)?)?;
    // Internal helpers: set as attributes, so that they stay out of `__all__`.
    m.setattr("_serialize_payloads", wrap_pyfunction!(py::payloads::serialize_payloads, m)?)?;
    m.setattr("_surely_finite", wrap_pyfunction!(py::payloads::surely_finite, m)?)?;
    m.setattr("_dumps_plain", wrap_pyfunction!(py::payloads::dumps_plain, m)?)?;
    m.setattr("_loop_links", wrap_pyfunction!(py::inbox::loop_links, m)?)?;
    Ok(())
}

//! fastjobs' engine: Redis store, worker engine and scheduler, exposed to Python as
//! `fastjobs._core`. Everything outside `py/` is plain Rust, testable with `cargo test`.

pub mod codec;
pub mod conn;
pub mod error;
pub mod keys;
pub mod notify;
pub mod redis_store;
pub mod runtime;
pub mod scheduler;
pub mod scripts;
pub mod store;
pub mod worker;

mod py;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<py::client::Client>()?;
    m.add_class::<py::worker::WorkerEngine>()?;
    Ok(())
}

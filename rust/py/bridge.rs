//! One implementation, two faces: every engine operation is a Rust future; `call` either
//! blocks on it with the GIL released (sync face) or returns an asyncio future resolved from
//! the I/O runtime (async face).

use super::errors::to_py;
use crate::error::Result;
use crate::runtime::runtime;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::future::Future;
use std::time::Duration;

/// Converts an engine value to Python once the GIL is held again.
pub type Convert<T> = fn(Python<'_>, T) -> PyResult<Py<PyAny>>;

/// Blocks on `fut` without the GIL, in slices, checking for signals between them so that
/// Ctrl-C interrupts any wait.
pub fn block<T: Send>(py: Python<'_>, fut: impl Future<Output = Result<T>> + Send) -> PyResult<T> {
    let rt = runtime();
    let mut fut = Box::pin(fut);
    loop {
        let r = py.detach(|| rt.block_on(async { tokio::time::timeout(Duration::from_millis(250), &mut fut).await }));
        match r {
            Ok(v) => return v.map_err(to_py),
            Err(_) => py.check_signals()?,
        }
    }
}

fn resolver(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RESOLVE.get_or_try_init(py, || Ok(py.import("fastjobs._aio")?.getattr("resolve")?.unbind()))
}

/// Returns an asyncio future of the running loop, settled when `fut` finishes.
pub fn awaitable<T: Send + 'static>(
    py: Python<'_>,
    fut: impl Future<Output = Result<T>> + Send + 'static,
    convert: Convert<T>,
) -> PyResult<Py<PyAny>> {
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let py_fut = event_loop.call_method0("create_future")?;
    let resolve = resolver(py)?.clone_ref(py);
    let (lp, target) = (event_loop.unbind(), py_fut.clone().unbind());
    runtime().spawn(async move {
        let r = fut.await;
        Python::attach(|py| {
            let (ok, value) = match r {
                Ok(v) => match convert(py, v) {
                    Ok(obj) => (true, obj),
                    Err(e) => (false, e.into_value(py).into_any()),
                },
                Err(e) => (false, to_py(e).into_value(py).into_any()),
            };
            // The loop may be closed by now; then nobody is waiting.
            let _ = lp.call_method1(py, "call_soon_threadsafe", (resolve, target, ok, value));
        });
    });
    Ok(py_fut.unbind())
}

/// The sync or the async face of one operation.
pub fn call<T: Send + 'static>(
    py: Python<'_>,
    asynchronous: bool,
    fut: impl Future<Output = Result<T>> + Send + 'static,
    convert: Convert<T>,
) -> PyResult<Py<PyAny>> {
    if asynchronous {
        awaitable(py, fut, convert)
    } else {
        let v = block(py, fut)?;
        convert(py, v)
    }
}

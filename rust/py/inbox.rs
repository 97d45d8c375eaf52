//! The asyncio face of coalesced dispatches (coalesce.rs): each event loop gets one `Inbox`,
//! whose socket the loop watches (`add_reader`). The dispatch thread puts answers in it
//! without Python's lock and rings once per batch; the loop then settles every future of the
//! batch in one callback, on its own thread. (A settle per dispatch through
//! `call_soon_threadsafe` would take the GIL from the loop and wake it once per dispatch.)

use super::errors::to_py;
use crate::coalesce::{Answer, Inbox};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::cell::RefCell;
use std::sync::Arc;

/// What an asynchronous dispatch waits with: its future, and what its answer needs to be
/// read (the jobs' ids).
pub type Token = (Py<PyAny>, Vec<String>);

pub type LoopInbox = Inbox<Token>;

/// Turns an answer into the value the future gets: [(id, created, deduplicated)].
pub type Settle = fn(Python<'_>, Vec<String>, Answer) -> PyResult<Py<PyAny>>;

/// The callback the loop runs when the inbox's socket turns readable.
#[pyclass(module = "fastjobs._core", frozen)]
pub struct InboxReader {
    inbox: Arc<LoopInbox>,
    settle: Settle,
}

#[pymethods]
impl InboxReader {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        for ((fut, ids), answer) in self.inbox.take() {
            let fut = fut.bind(py);
            // Cancelled while its job was written: nobody waits for the answer.
            if fut.call_method0("done")?.is_truthy()? {
                continue;
            }
            match (self.settle)(py, ids, answer) {
                Ok(v) => fut.call_method1("set_result", (v,))?,
                Err(e) => fut.call_method1("set_exception", (e.into_value(py),))?,
            };
        }
        Ok(())
    }
}

thread_local! {
    /// The loop this thread ran last, and its inbox (a thread runs one loop at a time; the
    /// loop is held so that no other loop can have its address while it is here).
    static CURRENT: RefCell<Option<(Py<PyAny>, Arc<LoopInbox>)>> = const { RefCell::new(None) };
}

fn get_running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind()))?.bind(py).call0()
}

/// The running loop and its inbox, made (and watched by the loop) on first use.
pub fn running(py: Python<'_>, settle: Settle) -> PyResult<(Bound<'_, PyAny>, Arc<LoopInbox>)> {
    let lp = get_running_loop(py)?;
    let known = CURRENT.with_borrow(|cur| cur.as_ref().filter(|(l, _)| l.is(&lp)).map(|(_, i)| i.clone()));
    if let Some(inbox) = known {
        return Ok((lp, inbox));
    }
    let inbox = Arc::new(LoopInbox::new().map_err(|e| to_py(crate::error::Error::Store(format!("cannot make a wake-up socket: {e}"))))?);
    lp.call_method1("add_reader", (inbox.fd(), InboxReader { inbox: inbox.clone(), settle }))?;
    // The loop this thread ran before keeps watching its own inbox: it may run again with
    // dispatches in flight. Its reader, and with it the inbox, go when it is closed.
    CURRENT.with_borrow_mut(|cur| *cur = Some((lp.clone().unbind(), inbox.clone())));
    Ok((lp, inbox))
}

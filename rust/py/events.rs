//! `EventReader`: the Python face of a queue's events stream, on Redis and the in-process
//! store. Entries come out in the Redis stream's shape, `("<ms>-<seq>", {field: bytes})` with
//! the fields of common.lua's `emit` (`e` kind, `i` ids, `n` names, `a` attempts, `d` due or
//! delay ms, `x` results or errors, `w` worker), so python/fastjobs/events.py reads both alike.
//! In process an entry's `<seq>` alone orders it.
//!
//! PostgreSQL's events table is not read from here yet: its entries are numbered when written
//! but become visible when their transactions commit, in another order, so a reader resuming
//! after a number could miss an entry committed late; that needs a commit-ordered read.

use super::errors::to_py;
use crate::error::Result;
use crate::store::memory::{MemoryQueue, MemoryStore};
use crate::store::redis::events;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One entry: its id and its fields.
pub type Entry = events::Entry;

/// A store's events of one queue.
pub trait EventSource: Send + Sync {
    /// The id of the newest entry, "0-0" when there is none.
    fn last_id(&self) -> Result<String>;
    /// Up to `count` entries after id `after`, without waiting.
    fn read(&self, after: &str, count: usize) -> Result<Vec<Entry>>;
}

/// How often a store without a blocking read is asked again while a reader waits.
const POLL: Duration = Duration::from_millis(20);

#[pyclass(module = "fastjobs._core", frozen)]
pub struct EventReader {
    inner: Inner,
}

enum Inner {
    /// XREAD blocks in Redis itself.
    Redis(Box<events::EventReader>),
    Polled(Box<dyn EventSource>),
}

impl EventReader {
    pub fn redis(reader: events::EventReader) -> EventReader {
        EventReader { inner: Inner::Redis(Box::new(reader)) }
    }

    pub fn polled(source: impl EventSource + 'static) -> EventReader {
        EventReader { inner: Inner::Polled(Box::new(source)) }
    }

    fn read_blocking(&self, after: &str, count: usize, block: Duration) -> Result<Vec<Entry>> {
        match &self.inner {
            Inner::Redis(r) => r.read(after, count, block),
            Inner::Polled(s) => {
                let deadline = Instant::now() + block;
                loop {
                    let got = s.read(after, count)?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !got.is_empty() || left.is_zero() {
                        return Ok(got);
                    }
                    std::thread::sleep(left.min(POLL));
                }
            }
        }
    }
}

#[pymethods]
impl EventReader {
    /// The id of the newest entry, "0-0" when there is none.
    fn last_id(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| match &self.inner {
            Inner::Redis(r) => r.last_id(),
            Inner::Polled(s) => s.last_id(),
        })
        .map_err(to_py)
    }

    /// Up to `count` entries after stream id `after`, waiting up to `block` seconds for the
    /// first (0: not at all): a list of (id, {field: bytes}). The GIL is released meanwhile.
    #[pyo3(signature = (after, count = 100, block = 0.0))]
    fn read<'py>(&self, py: Python<'py>, after: &str, count: usize, block: f64) -> PyResult<Bound<'py, PyList>> {
        if !(block.is_finite() && block >= 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("block must be a number of seconds >= 0, got {block}")));
        }
        let got = py.detach(|| self.read_blocking(after, count.max(1), Duration::from_secs_f64(block))).map_err(to_py)?;
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

/// The sequence number of an entry id `<ms>-<seq>` ("0-0" and anything else: 0).
fn seq_of(id: &str) -> u64 {
    id.rsplit_once('-').and_then(|(_, s)| s.parse().ok()).unwrap_or(0)
}

/// The in-process store's ring of events.
pub struct MemoryEvents {
    pub store: Arc<MemoryStore>,
    pub queue: Arc<MemoryQueue>,
}

impl EventSource for MemoryEvents {
    fn last_id(&self) -> Result<String> {
        Ok(self.store.last_event(&self.queue).map_or_else(|| "0-0".into(), |(at_ms, seq)| format!("{at_ms}-{seq}")))
    }

    fn read(&self, after: &str, count: usize) -> Result<Vec<Entry>> {
        Ok(self
            .store
            .events_after(&self.queue, seq_of(after), count)
            .into_iter()
            .map(|e| {
                let mut fields = vec![("e".to_string(), e.kind.as_bytes().to_vec()), ("i".to_string(), e.ids.join("\n").into_bytes())];
                fields.extend(e.fields.into_iter().map(|(k, v)| (k.to_string(), v)));
                (format!("{}-{}", e.at_ms, e.seq), fields)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_resume_by_their_sequence_number() {
        assert_eq!(seq_of("1765000000000-42"), 42);
        assert_eq!(seq_of("0-0"), 0);
        assert_eq!(seq_of("nonsense"), 0);
    }
}

//! `EventReader`: the Python face of a queue's events stream, on every store. Entries come out
//! in the Redis stream's shape, `("<a>-<b>", {field: bytes})` with the fields of common.lua's
//! `emit` (`e` kind, `i` ids, `n` names, `a` attempts, `d` due or delay ms, `x` results,
//! errors or progress, `w` worker), so python/fastjobs/events.py reads them all alike.
//! In process and on SQLite an entry's `<b>` (its number) alone orders it; on PostgreSQL the
//! pair (horizon, seq) does (store/postgres/events.rs), and a field `t` tells the entry's time
//! (ms), which Redis's and the in-process ids carry as `<a>`.

use super::errors::to_py;
use crate::error::Result;
use crate::store::memory::{MemoryQueue, MemoryStore};
use crate::store::postgres::{EventEntry, PgQueue, PgStore};
use crate::store::redis::events;
use crate::store::sqlite::{SqliteQueue, SqliteStore};
use crate::store::told::json_list;
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
    /// How often it is asked again while a reader waits.
    fn poll(&self) -> Duration {
        Duration::from_millis(20)
    }
}

/// How often a database (SQLite, PostgreSQL) is asked again while a reader waits: a short
/// query per reader per tick, which finds an index's end when nothing is new.
pub const DB_POLL: Duration = Duration::from_millis(50);

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
                    std::thread::sleep(left.min(s.poll()));
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

/// Both numbers of an entry id `<a>-<b>` ("0-0" and anything else: (0, 0)); a number past
/// i64 (python/fastjobs/events.py steps back from `<a>-0` to `<a - 1>-<u64::MAX>`) is i64::MAX.
fn pair_of(id: &str) -> (i64, i64) {
    let num = |s: &str| s.parse::<u64>().map(|n| n.min(i64::MAX as u64) as i64);
    id.split_once('-').and_then(|(a, b)| Some((num(a).ok()?, num(b).ok()?))).unwrap_or((0, 0))
}

/// A PostgreSQL queue's events table.
pub struct PgEvents {
    pub store: Arc<PgStore>,
    pub queue: Arc<PgQueue>,
}

/// The fields of one of PostgreSQL's entries, as the other stores write them.
fn pg_fields(e: EventEntry) -> Vec<(String, Vec<u8>)> {
    let kind = e.kind.as_str();
    let mut f = vec![("e".to_string(), e.kind.as_bytes().to_vec()), ("t".to_string(), e.at_ms.to_string().into_bytes())];
    f.push(("i".into(), e.ids.join("\n").into_bytes()));
    if let Some(names) = e.names.as_ref().filter(|_| kind != "active") {
        f.push(("n".into(), serde_json::to_vec(names).unwrap_or_default()));
    }
    if let Some(a) = e.attempts.as_ref().filter(|_| matches!(kind, "active" | "retrying" | "failed" | "stalled")) {
        f.push(("a".into(), serde_json::to_vec(a).unwrap_or_default()));
    }
    let due = e.due_us.unwrap_or_default();
    match kind {
        "delayed" => {
            let dues: Vec<Option<i64>> = due.iter().map(|d| d.map(|us| us / 1000)).collect();
            f.push(("d".into(), serde_json::to_vec(&dues).unwrap_or_default()));
        }
        "retrying" => {
            let delays: Vec<i64> =
                (0..e.ids.len()).map(|k| due.get(k).copied().flatten().map_or(0, |us| (us / 1000 - e.at_ms).max(0))).collect();
            f.push(("d".into(), serde_json::to_vec(&delays).unwrap_or_default()));
        }
        _ => {}
    }
    if let Some(data) = &e.data {
        f.push(("x".into(), json_list(data.iter().map(|x| x.as_deref()))));
    }
    if let Some(w) = e.worker {
        f.push(("w".into(), w.into_bytes()));
    }
    f
}

impl EventSource for PgEvents {
    fn last_id(&self) -> Result<String> {
        let last = crate::runtime::runtime().block_on(self.store.events_last(&self.queue))?;
        Ok(last.map_or_else(|| "0-0".into(), |(h, seq)| format!("{h}-{seq}")))
    }

    fn read(&self, after: &str, count: usize) -> Result<Vec<Entry>> {
        let got = crate::runtime::runtime().block_on(self.store.events_read(&self.queue, pair_of(after), count))?;
        Ok(got.into_iter().map(|e| (format!("{}-{}", e.pos.0, e.pos.1), pg_fields(e))).collect())
    }

    fn poll(&self) -> Duration {
        DB_POLL
    }
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

/// A SQLite queue's events table (store/sqlite/events.rs): numbered in commit order.
pub struct SqliteEvents {
    pub store: Arc<SqliteStore>,
    pub queue: Arc<SqliteQueue>,
}

impl EventSource for SqliteEvents {
    fn last_id(&self) -> Result<String> {
        self.store.events_last(&self.queue)
    }

    fn read(&self, after: &str, count: usize) -> Result<Vec<Entry>> {
        self.store.events_read(&self.queue, after, count)
    }

    fn poll(&self) -> Duration {
        DB_POLL
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
        assert_eq!(pair_of("812-40"), (812, 40));
        assert_eq!(pair_of("811-18446744073709551615"), (811, i64::MAX));
        assert_eq!(pair_of("0-0"), (0, 0));
        assert_eq!(pair_of("nonsense"), (0, 0));
    }
}

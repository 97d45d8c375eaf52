//! `fastjobs._core.BulkWriter`: streams chunks of one bulk dispatch to Redis. Python stages a
//! chunk (a list of payloads, serialized here; its records are packed on the I/O runtime at
//! once), then sends: the write runs on the I/O runtime while the next chunk is serialized;
//! at most `window` chunks are on the wire at once, so memory stays flat whatever the number
//! of jobs.

use super::bridge::call;
use super::errors::to_py;
use super::payloads::serialize_list;
use crate::bulk::{prepare_payloads, BulkSpec, Chunk};
use crate::codec::{IdGen, IdRange};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::redis_store::{PackedChunk, RedisStore};
use crate::runtime::runtime;
use crate::store::Store;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Progress {
    in_flight: VecDeque<JoinHandle<(IdRange, Result<Vec<bool>>)>>,
    committed: Vec<IdRange>,
    count: u64,
    error: Option<Error>,
    /// Fires when the last chunk sent so far has been written.
    last_written: Option<oneshot::Receiver<()>>,
}

#[pyclass(module = "fastjobs._core", frozen)]
pub struct BulkWriter {
    store: Arc<RedisStore>,
    queue: Arc<QueueKeys>,
    spec: BulkSpec,
    ids: Arc<Mutex<IdGen>>,
    /// Chunks validated and being packed on the I/O runtime, not sent yet.
    staged: Mutex<VecDeque<Staged>>,
    progress: Arc<Mutex<Progress>>,
    window: usize,
    /// Bytes per payload of the last chunk: the next chunk's buffer is sized once.
    payload_hint: AtomicUsize,
}

struct Staged {
    range: IdRange,
    packing: JoinHandle<PackedChunk>,
}

impl BulkWriter {
    pub fn new(store: Arc<RedisStore>, queue: Arc<QueueKeys>, spec: BulkSpec, ids: Arc<Mutex<IdGen>>, window: usize) -> BulkWriter {
        BulkWriter {
            store,
            queue,
            spec,
            ids,
            staged: Mutex::default(),
            progress: Arc::default(),
            window: window.max(1),
            payload_hint: AtomicUsize::new(64),
        }
    }

    /// Packs a staged chunk on the I/O runtime while Python serializes the next one; it is
    /// written only by `send` (a list is staged whole first: all or nothing).
    fn start_packing(&self, chunk: Option<Chunk>) -> usize {
        let Some(c) = chunk else { return 0 };
        let n = c.len();
        let (store, q, range) = (self.store.clone(), self.queue.clone(), c.range.clone());
        let packing = runtime().spawn(async move { store.pack_chunk(&q, &c) });
        self.staged.lock().unwrap().push_back(Staged { range, packing });
        n
    }
}

/// Waits until at most `window` chunks are on the wire; after a failure, waits for all of
/// them (so the committed count is exact) and returns the failure.
async fn settle(progress: Arc<Mutex<Progress>>, window: usize) -> Result<u64> {
    loop {
        let next = {
            let mut p = progress.lock().unwrap();
            let limit = if p.error.is_some() { 0 } else { window };
            if p.in_flight.len() <= limit {
                return match &p.error {
                    Some(e) => Err(e.clone()),
                    None => Ok(p.count),
                };
            }
            p.in_flight.pop_front().expect("longer than the limit")
        };
        let outcome = next.await;
        let mut p = progress.lock().unwrap();
        match outcome {
            Ok((range, Ok(_))) => {
                p.count += range.count;
                p.committed.push(range);
            }
            Ok((_, Err(e))) => {
                p.error.get_or_insert(e);
            }
            Err(join) => {
                p.error.get_or_insert(Error::Store(format!("a bulk write task failed: {join}")));
            }
        }
    }
}

#[pymethods]
impl BulkWriter {
    /// Validates one chunk of payloads, gives it ids and starts packing it (written by
    /// `send`): payloads `start..stop` of the list are serialized here in one pass
    /// (`py::payloads`), a payload outside the plain JSON types by `fallback` (serde.dumps);
    /// `first_index` is the index of the first one in the whole dispatch. Returns the number
    /// of jobs staged.
    fn stage_payloads(
        &self,
        payloads: &Bound<'_, PyList>,
        start: usize,
        stop: usize,
        first_index: u64,
        fallback: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let spec = BulkSpec { enqueued_ms: super::client::now_ms(), ..self.spec.clone() };
        let stop = stop.min(payloads.len());
        let mut buf = Vec::with_capacity(self.payload_hint.load(Ordering::Relaxed) * stop.saturating_sub(start) + 64);
        let spans = serialize_list(payloads, start..stop, fallback, first_index, &mut buf)?;
        if let Some(&(_, end)) = spans.last() {
            self.payload_hint.store(end / spans.len() + 1, Ordering::Relaxed);
        }
        let chunk = prepare_payloads(&spec, &mut self.ids.lock().unwrap(), buf, spans, first_index);
        Ok(self.start_packing(chunk.map_err(to_py)?))
    }

    /// Starts writing every staged chunk, then waits until at most `window` chunks are in
    /// flight (none with `wait_all`). Returns the number of jobs Redis has taken so far;
    /// raises the first write error once every chunk in flight has finished.
    #[pyo3(signature = (*, wait_all = false, asynchronous = false))]
    fn send(&self, py: Python<'_>, wait_all: bool, asynchronous: bool) -> PyResult<Py<PyAny>> {
        let rt = runtime();
        let chunks: Vec<Staged> = self.staged.lock().unwrap().drain(..).collect();
        {
            let mut p = self.progress.lock().unwrap();
            for c in chunks {
                let (store, q) = (self.store.clone(), self.queue.clone());
                // Chunks are written in the order they were staged: each waits until the one
                // before it has been written (or has failed).
                let (written, next) = oneshot::channel::<()>();
                let before = p.last_written.replace(next);
                p.in_flight.push_back(rt.spawn(async move {
                    let packed = c.packing.await;
                    if let Some(before) = before {
                        let _ = before.await;
                    }
                    let r = match packed {
                        Ok(packed) => store.write_chunk(&q, packed).await.map(|_| vec![]),
                        Err(e) => Err(Error::Store(format!("packing a bulk chunk failed: {e}"))),
                    };
                    let _ = written.send(());
                    (c.range, r)
                }));
            }
        }
        let window = if wait_all { 0 } else { self.window };
        call(py, asynchronous, settle(self.progress.clone(), window), |py, n: u64| Ok(n.into_pyobject(py)?.into_any().unbind()))
    }

    /// Jobs Redis has taken, as runs of ids: [(producer, first sequence number, count)].
    fn committed_ranges(&self) -> Vec<(String, u64, u64)> {
        self.progress.lock().unwrap().committed.iter().map(|r| (r.producer.clone(), r.first, r.count)).collect()
    }

    /// Drops staged chunks that were never sent (a later chunk failed validation).
    fn discard_staged(&self) -> usize {
        let mut s = self.staged.lock().unwrap();
        let n = s.iter().map(|c| c.range.count as usize).sum();
        for c in s.drain(..) {
            c.packing.abort();
        }
        n
    }
}

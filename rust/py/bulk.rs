//! `fastjobs._core.BulkWriter`: streams chunks of one bulk dispatch to Redis. Python stages a
//! chunk (one JSON array from orjson; its records are packed on the I/O runtime at once), then
//! sends: the write runs on the I/O runtime while Python serializes the next chunk; at most
//! `window` chunks are on the wire at once, so memory stays flat whatever the number of jobs.

use super::bridge::call;
use super::errors::to_py;
use crate::bulk::{prepare_chunk, BulkSpec};
use crate::codec::{IdGen, IdRange};
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::redis_store::{PackedChunk, RedisStore};
use crate::runtime::runtime;
use crate::store::Store;
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Progress {
    in_flight: VecDeque<JoinHandle<(IdRange, Result<Vec<bool>>)>>,
    committed: Vec<IdRange>,
    count: u64,
    error: Option<Error>,
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
}

struct Staged {
    range: IdRange,
    len: usize,
    packing: JoinHandle<PackedChunk>,
}

impl BulkWriter {
    pub fn new(store: Arc<RedisStore>, queue: Arc<QueueKeys>, spec: BulkSpec, ids: Arc<Mutex<IdGen>>, window: usize) -> BulkWriter {
        BulkWriter { store, queue, spec, ids, staged: Mutex::default(), progress: Arc::default(), window: window.max(1) }
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
    /// Validates one chunk, gives it ids and starts packing it (written by `send`): `array` is
    /// a JSON array of payloads, `first_index` the index of its first payload in the whole
    /// dispatch. Returns the number of jobs staged.
    fn stage(&self, py: Python<'_>, array: &[u8], first_index: u64) -> PyResult<usize> {
        let spec = BulkSpec { enqueued_ms: super::client::now_ms(), ..self.spec.clone() };
        let chunk = py.detach(|| {
            let mut ids = self.ids.lock().unwrap();
            prepare_chunk(&spec, &mut ids, array, first_index)
        });
        match chunk.map_err(to_py)? {
            Some(c) => {
                // Packed on the I/O runtime while Python serializes the next chunk; written
                // only by `send` (a list is staged whole first: all or nothing).
                let (store, q, len, range) = (self.store.clone(), self.queue.clone(), c.len(), c.range.clone());
                let packing = runtime().spawn(async move { store.pack_chunk(&q, &c) });
                self.staged.lock().unwrap().push_back(Staged { range, len, packing });
                Ok(len)
            }
            None => Ok(0),
        }
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
                p.in_flight.push_back(rt.spawn(async move {
                    let r = match c.packing.await {
                        Ok(packed) => store.write_chunk(&q, packed).await.map(|_| vec![]),
                        Err(e) => Err(Error::Store(format!("packing a bulk chunk failed: {e}"))),
                    };
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
        let n = s.iter().map(|c| c.len).sum();
        for c in s.drain(..) {
            c.packing.abort();
        }
        n
    }
}

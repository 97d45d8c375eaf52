//! `fastjobs._core.BulkWriter`: streams chunks of one bulk dispatch to Redis. Python stages a
//! chunk (a list of payloads, serialized here; its records are packed on the I/O runtime at
//! once), then sends: the write runs on the I/O runtime while the next chunk is serialized;
//! at most `window` chunks are on the wire at once, so memory stays flat whatever the number
//! of jobs.

use super::backend::{map_store, on_store, store_enum, AnyTarget, Target};
use super::bridge::call;
use super::errors::to_py;
use super::payloads::serialize_list;
use crate::error::{Error, Result};
use crate::record::{IdGen, IdRange};
use crate::runtime::runtime;
use crate::store::chunk::{prepare_payloads, BulkSpec, Chunk};
use crate::store::Store;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A chunk handed to the store: its ids and its packed bytes, kept until it is known to have
/// landed (a write whose answer was lost is sent again as it is: the chunk's guard makes
/// that write nothing if the first one landed).
struct Sent<S: Store> {
    range: IdRange,
    packed: Arc<S::Packed>,
}

/// What became of one chunk sent: written, or failed with its bytes kept for `resend` (None
/// only if packing it panicked: a bug, reported as such).
type Outcome<S> = (IdRange, Option<Arc<<S as Store>::Packed>>, Result<()>);

struct Progress<S: Store> {
    in_flight: VecDeque<JoinHandle<Outcome<S>>>,
    committed: Vec<IdRange>,
    /// Chunks whose write failed after it may have reached the store, not seen to have landed.
    unknown: Vec<Sent<S>>,
    /// Chunks that could not be packed (a bug): never written, never resent.
    broken: Vec<IdRange>,
    count: u64,
    error: Option<Error>,
    /// Fires when the last chunk sent so far has been written.
    last_written: Option<oneshot::Receiver<()>>,
}

impl<S: Store> Default for Progress<S> {
    fn default() -> Self {
        Progress {
            in_flight: VecDeque::new(),
            committed: vec![],
            unknown: vec![],
            broken: vec![],
            count: 0,
            error: None,
            last_written: None,
        }
    }
}

/// A bulk dispatch's chunks on their way to one store.
pub struct Bulk<S: Store> {
    target: Target<S>,
    /// Chunks validated and being packed on the I/O runtime, not sent yet.
    staged: Arc<Mutex<VecDeque<Staged<S>>>>,
    progress: Arc<Mutex<Progress<S>>>,
}

store_enum!(enum AnyBulk of Bulk);

#[pyclass(module = "fastjobs._core", frozen)]
pub struct BulkWriter {
    bulk: AnyBulk,
    spec: BulkSpec,
    ids: Arc<Mutex<IdGen>>,
    window: usize,
    /// Bytes per payload of the last chunk: the next chunk's buffer is sized once.
    payload_hint: AtomicUsize,
}

struct Staged<S: Store> {
    range: IdRange,
    packing: JoinHandle<S::Packed>,
}

impl BulkWriter {
    pub fn new(target: AnyTarget, spec: BulkSpec, ids: Arc<Mutex<IdGen>>, window: usize) -> BulkWriter {
        let bulk = map_store!(target, AnyTarget => AnyBulk, t => Bulk { target: t, staged: Arc::default(), progress: Arc::default() });
        BulkWriter { bulk, spec, ids, window: window.max(1), payload_hint: AtomicUsize::new(64) }
    }

    /// Packs a staged chunk on the I/O runtime while Python serializes the next one; it is
    /// written only by `send` (a list is staged whole first: all or nothing).
    fn start_packing(&self, chunk: Option<Chunk>) -> usize {
        let Some(c) = chunk else { return 0 };
        let n = c.len();
        on_store!(&self.bulk, AnyBulk, b => {
            let (store, q, range) = (b.target.store.clone(), b.target.queue.clone(), c.range.clone());
            let packing = runtime().spawn(async move { store.pack_chunk(&q, &c) });
            b.staged.lock().unwrap().push_back(Staged { range, packing });
        });
        n
    }
}

/// Records what became of a chunk sent.
fn record<S: Store>(p: &mut Progress<S>, (range, packed, r): Outcome<S>) {
    match (r, packed) {
        (Ok(()), _) => {
            p.count += range.count;
            p.committed.push(range);
        }
        (Err(e), Some(packed)) => {
            p.unknown.push(Sent { range, packed });
            p.error.get_or_insert(e);
        }
        (Err(e), None) => {
            p.broken.push(range);
            p.error.get_or_insert(e);
        }
    }
}

/// Writes one chunk.
async fn write<S: Store>(store: &S, q: &S::Queue, sent: Sent<S>) -> Outcome<S> {
    let r = store.write_chunk(q, &sent.packed).await;
    (sent.range, Some(sent.packed), r)
}

/// Waits until at most `window` chunks are on the wire; after a failure, waits for all of
/// them, then asks the store which of the failed chunks landed after all (so the committed
/// count is exact), and returns the failure.
async fn settle<S: Store>(target: Target<S>, progress: Arc<Mutex<Progress<S>>>, window: usize) -> Result<u64> {
    loop {
        let next = {
            let mut p = progress.lock().unwrap();
            let limit = if p.error.is_some() { 0 } else { window };
            if p.in_flight.len() <= limit {
                break;
            }
            p.in_flight.pop_front().expect("longer than the limit")
        };
        let outcome = next.await.expect("a bulk write task does not panic: packing's panic is caught inside");
        record(&mut progress.lock().unwrap(), outcome);
    }
    let error = progress.lock().unwrap().error.clone();
    match error {
        None => Ok(progress.lock().unwrap().count),
        Some(e) => {
            resolve(&*target.store, &target.queue, &progress).await;
            Err(e)
        }
    }
}

/// Moves the unknown chunks that did land to the committed ones (one round trip; if Redis
/// cannot answer now, they stay unknown).
async fn resolve<S: Store>(store: &S, q: &S::Queue, progress: &Mutex<Progress<S>>) {
    let keys: Vec<(String, u64)> = progress.lock().unwrap().unknown.iter().map(|s| (s.range.producer.clone(), s.range.first)).collect();
    let Ok(landed) = store.chunks_written(q, &keys).await else { return };
    let mut p = progress.lock().unwrap();
    let unknown = std::mem::take(&mut p.unknown);
    for (sent, landed) in unknown.into_iter().zip(landed) {
        if landed {
            p.count += sent.range.count;
            p.committed.push(sent.range);
        } else {
            p.unknown.push(sent);
        }
    }
}

/// Writes again what a failed dispatch left: the unknown chunks (guarded: one that landed
/// writes nothing), then the staged chunks never sent, in order, one at a time. Stops at the
/// first failure (that chunk is unknown again, the rest stay unsent).
async fn resend<S: Store>(target: Target<S>, progress: Arc<Mutex<Progress<S>>>, staged: Arc<Mutex<VecDeque<Staged<S>>>>) -> Result<u64> {
    let (store, q) = (&*target.store, &*target.queue);
    let unknown = {
        let mut p = progress.lock().unwrap();
        p.error = None;
        std::mem::take(&mut p.unknown)
    };
    let mut todo: VecDeque<Sent<S>> = unknown.into();
    loop {
        let sent = match todo.pop_front() {
            Some(s) => s,
            None => {
                let Some(c) = staged.lock().unwrap().pop_front() else { break };
                match c.packing.await {
                    Ok(packed) => Sent { range: c.range, packed: Arc::new(packed) },
                    Err(e) => {
                        progress.lock().unwrap().broken.push(c.range);
                        return Err(Error::Store(format!("packing a bulk chunk failed: {e}")));
                    }
                }
            }
        };
        let outcome = write(store, q, sent).await;
        let failed = outcome.2.as_ref().err().cloned();
        {
            let mut p = progress.lock().unwrap();
            record(&mut p, outcome);
            if failed.is_some() {
                p.unknown.extend(std::mem::take(&mut todo));
            }
        }
        if let Some(e) = failed {
            resolve(store, q, &progress).await;
            return Err(e);
        }
    }
    let broken = progress.lock().unwrap().broken.iter().map(|r| r.count).sum::<u64>();
    if broken > 0 {
        return Err(Error::Store(format!("{broken} job(s) of this bulk dispatch could not be packed (a bug in fastjobs): not written")));
    }
    Ok(progress.lock().unwrap().count)
}

fn ranges<'a>(rs: impl Iterator<Item = &'a IdRange>) -> Vec<(String, u64, u64)> {
    rs.map(|r| (r.producer.clone(), r.first, r.count)).collect()
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
    /// raises the first write error once every chunk in flight has finished (then
    /// `committed_ranges`, `unknown_ranges` and `unsent_ranges` tell what happened to every
    /// job, and `resend` writes the rest). After a failure nothing more is sent.
    #[pyo3(signature = (*, wait_all = false, asynchronous = false))]
    fn send(&self, py: Python<'_>, wait_all: bool, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.bulk, AnyBulk, b => {
            let rt = runtime();
            {
                let mut p = b.progress.lock().unwrap();
                if p.error.is_none() {
                    for c in b.staged.lock().unwrap().drain(..) {
                        let (store, q) = (b.target.store.clone(), b.target.queue.clone());
                        // Chunks are written in the order they were staged: each waits until the
                        // one before it has been written (or has failed).
                        let (written, next) = oneshot::channel::<()>();
                        let before = p.last_written.replace(next);
                        p.in_flight.push_back(rt.spawn(async move {
                            let packed = c.packing.await;
                            if let Some(before) = before {
                                let _ = before.await;
                            }
                            let out = match packed {
                                Ok(packed) => write(&*store, &*q, Sent { range: c.range, packed: Arc::new(packed) }).await,
                                Err(e) => (c.range, None, Err(Error::Store(format!("packing a bulk chunk failed: {e}")))),
                            };
                            let _ = written.send(());
                            out
                        }));
                    }
                }
            }
            let window = if wait_all { 0 } else { self.window };
            let fut = settle(b.target.clone(), b.progress.clone(), window);
            call(py, asynchronous, fut, |py, n: u64| Ok(n.into_pyobject(py)?.into_any().unbind()))
        })
    }

    /// After a failed `send`: writes the unknown chunks again (a chunk that had landed writes
    /// nothing) and then the chunks never sent, in order. Returns the number of jobs Redis has
    /// taken in all; raises if a write fails again (the ranges then say where it stopped).
    #[pyo3(signature = (*, asynchronous = false))]
    fn resend(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.bulk, AnyBulk, b => {
            let fut = resend(b.target.clone(), b.progress.clone(), b.staged.clone());
            call(py, asynchronous, fut, |py, n: u64| Ok(n.into_pyobject(py)?.into_any().unbind()))
        })
    }

    /// Jobs Redis has taken, as runs of ids: [(producer, first sequence number, count)].
    fn committed_ranges(&self) -> Vec<(String, u64, u64)> {
        on_store!(&self.bulk, AnyBulk, b => ranges(b.progress.lock().unwrap().committed.iter()))
    }

    /// Jobs whose write failed after it may have reached Redis, and that were not seen to
    /// have landed: in Redis or not.
    fn unknown_ranges(&self) -> Vec<(String, u64, u64)> {
        on_store!(&self.bulk, AnyBulk, b => ranges(b.progress.lock().unwrap().unknown.iter().map(|s| &s.range)))
    }

    /// Jobs staged and never sent (a write before them failed).
    fn unsent_ranges(&self) -> Vec<(String, u64, u64)> {
        on_store!(&self.bulk, AnyBulk, b => {
            let p = b.progress.lock().unwrap();
            ranges(p.broken.iter().chain(b.staged.lock().unwrap().iter().map(|s| &s.range)))
        })
    }
}

//! `fastjobs._core.WorkerEngine`: the Rust half of a worker process. Python threads pull
//! jobs with `next_jobs` (GIL released while waiting) and report outcomes per job; the
//! fetcher, acknowledger, heartbeat and scheduler run as tasks on the I/O runtime.

use super::backend::{map_store, on_store, store_enum, Backend};
use super::bridge::block;
use super::client::Client;
use super::errors::to_py;
use crate::engine::callback::CallbackConfig;
use crate::engine::worker::{error_json, Engine, Outcome, WorkerConfig};
use crate::error::Error;
use crate::runtime::runtime;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

type Shared<S> = Arc<Engine<S>>;

store_enum!(enum AnyEngine of Shared);

#[pyclass(module = "fastjobs._core", frozen)]
pub struct WorkerEngine {
    engine: AnyEngine,
    /// The client it was made with: a running job's progress and log lines go through it.
    client: Py<Client>,
    queue_names: Vec<Py<PyAny>>,
    names: Mutex<HashMap<String, Py<PyAny>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Fetcher and acknowledger: stopped last, after the final flush.
    core_tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[pymethods]
impl WorkerEngine {
    #[new]
    /// `prefetch` None: adaptive, up to 8000 (or 4 x concurrency); a number: kept ready.
    /// `weights`: one per queue for the weighted order, None for the strict order.
    /// `worker_id`: names its leases (24 lowercase hex digits; None: random). `max_jobs`: hand
    /// out at most that many jobs (`exhausted` then says so). `callback_secret` signs the
    /// jobs' callbacks (None: unsigned); each is tried `callback_attempts` times, the first
    /// wait `callback_backoff` seconds, doubled after each failed try.
    #[pyo3(signature = (client, queues, *, prefetch = None, concurrency = 1, lease = 30.0, weights = None, worker_id = None, max_jobs = None,
                        callback_secret = None, callback_attempts = 5, callback_backoff = 4.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        client: Bound<'_, Client>,
        queues: Vec<String>,
        prefetch: Option<usize>,
        concurrency: usize,
        lease: f64,
        weights: Option<Vec<u32>>,
        worker_id: Option<String>,
        max_jobs: Option<u64>,
        callback_secret: Option<Vec<u8>>,
        callback_attempts: u32,
        callback_backoff: f64,
    ) -> PyResult<WorkerEngine> {
        if !(1..=100).contains(&callback_attempts) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("callback_attempts must be 1 to 100, got {callback_attempts}")));
        }
        if !(callback_backoff.is_finite() && (0.001..=3600.0).contains(&callback_backoff)) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "callback_backoff must be 0.001 to 3600 seconds, got {callback_backoff}"
            )));
        }
        if callback_secret.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(pyo3::exceptions::PyValueError::new_err("callback_secret must not be empty"));
        }
        if let Some(w) = &worker_id {
            if w.len() != 24 || !w.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
                return Err(pyo3::exceptions::PyValueError::new_err(format!("worker_id must be 24 lowercase hex digits, got {w:?}")));
            }
        }
        if max_jobs == Some(0) {
            return Err(pyo3::exceptions::PyValueError::new_err("max_jobs must be at least 1"));
        }
        if queues.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err("a worker needs at least one queue"));
        }
        if let Some(w) = &weights {
            if w.len() != queues.len() || w.contains(&0) {
                return Err(pyo3::exceptions::PyValueError::new_err("weights: one per queue, each at least 1"));
            }
        }
        if !(lease.is_finite() && (0.3..=crate::store::redis::conn::MAX_SECONDS).contains(&lease)) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "lease must be between 0.3 seconds and 100 years ({} seconds), got {lease} seconds",
                crate::store::redis::conn::MAX_SECONDS
            )));
        }
        if prefetch == Some(0) || concurrency < 1 {
            return Err(pyo3::exceptions::PyValueError::new_err("prefetch and concurrency must be at least 1"));
        }
        let adaptive = prefetch.is_none();
        let prefetch = prefetch.unwrap_or_else(|| 8000.max(4 * concurrency));
        let cfg = WorkerConfig {
            prefetch,
            adaptive,
            min_batch: concurrency.min(prefetch),
            lease: Duration::from_secs_f64(lease),
            weights,
            worker_id,
            max_jobs,
            callbacks: CallbackConfig {
                secret: callback_secret,
                attempts: callback_attempts,
                backoff: Duration::from_secs_f64(callback_backoff),
            },
        };
        let py = client.py();
        let queue_names = queues.iter().map(|q| PyString::intern(py, q).into_any().unbind()).collect();
        let engine = map_store!(&client.get().backend, Backend => AnyEngine, b => {
            let qs: Vec<Arc<_>> = queues.iter().map(|q| b.queue(q)).collect::<Result<_, Error>>().map_err(to_py)?;
            Engine::new(b.store.clone(), qs, cfg)
        });
        Ok(WorkerEngine {
            engine,
            client: client.clone().unbind(),
            queue_names,
            names: Mutex::default(),
            tasks: Mutex::default(),
            core_tasks: Mutex::default(),
        })
    }

    /// Starts fetching, acknowledging, heartbeats and (with `scheduler`) the scheduler and the
    /// schedule driver.
    #[pyo3(signature = (*, scheduler = true))]
    fn start(&self, scheduler: bool) {
        on_store!(&self.engine, AnyEngine, e => {
            let rt = runtime();
            self.core_tasks.lock().unwrap().extend([rt.spawn(e.clone().fetch_loop()), rt.spawn(e.clone().ack_loop())]);
            let mut tasks = self.tasks.lock().unwrap();
            tasks.push(rt.spawn(e.clone().heartbeat_loop()));
            tasks.push(rt.spawn(e.clone().control_loop()));
            if scheduler {
                for q in e.queues() {
                    let eng = e.clone();
                    tasks.push(rt.spawn(crate::engine::scheduler::run(e.store().clone(), q.clone(), move |err| eng.note_error(err))));
                }
                let eng = e.clone();
                tasks.push(rt.spawn(crate::engine::schedules::drive(e.store().clone(), move |err| eng.note_error(err))));
            }
        })
    }

    /// Up to `max` jobs, waiting up to `timeout` seconds for the first: a list of
    /// (handle, queue, id, name, attempt, max_attempts, enqueued_ms, payload, options,
    /// redelivered).
    fn next_jobs<'py>(&self, py: Python<'py>, max: usize, timeout: f64) -> PyResult<Bound<'py, PyList>> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            let t = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
            let jobs = py.detach(|| e.next_jobs(max.max(1), t));
            let out = PyList::empty(py);
            // Queue and job names repeat from job to job: one Python string each, shared.
            // Locked detached from Python while waiting: the thread holding it may have let the
            // GIL go (a garbage collection run by an allocation below calls finalizers), and
            // waiting for it with the GIL held deadlocked the worker's threads.
            let mut names = self.names.lock_py_attached(py).unwrap();
            for d in jobs {
                let r = d.record;
                let opts: Py<PyAny> = if r.options.is_empty() { py.None() } else { PyBytes::new(py, &r.options).into_any().unbind() };
                let queue = self.queue_names[d.queue].clone_ref(py);
                let name = match names.get(&r.name) {
                    Some(n) => n.clone_ref(py),
                    None => {
                        let n = PyString::intern(py, &r.name).into_any().unbind();
                        if names.len() < 10_000 {
                            names.insert(r.name.clone(), n.clone_ref(py));
                        }
                        n
                    }
                };
                let item = PyTuple::new(
                    py,
                    [
                        d.handle.into_pyobject(py)?.into_any().unbind(),
                        queue,
                        r.id.into_pyobject(py)?.into_any().unbind(),
                        name,
                        r.attempt.into_pyobject(py)?.into_any().unbind(),
                        r.max_attempts.into_pyobject(py)?.into_any().unbind(),
                        r.enqueued_ms.into_pyobject(py)?.into_any().unbind(),
                        PyBytes::new(py, &r.payload).into_any().unbind(),
                        opts,
                        pyo3::types::PyBool::new(py, d.redelivered).to_owned().into_any().unbind(),
                    ],
                )?;
                out.append(item)?;
            }
            Ok(out)
        })
    }

    /// The job completed; `result` is its return value as JSON, None for a `None` return.
    #[pyo3(signature = (handle, result = None))]
    fn complete(&self, handle: u64, result: Option<Vec<u8>>) -> bool {
        on_store!(&self.engine, AnyEngine, e => {
            e.settle(handle, Outcome::Completed(result))
        })
    }

    /// Many jobs completed with a `None` result; returns how many were known.
    fn complete_many(&self, handles: Vec<u64>) -> usize {
        on_store!(&self.engine, AnyEngine, e => {
            e.complete_many(&handles)
        })
    }

    /// The attempt failed with that error; the job runs again after `delay` seconds (the
    /// error is kept with it meanwhile).
    #[pyo3(signature = (handle, delay, kind, message, traceback = ""))]
    fn retry(&self, handle: u64, delay: f64, kind: &str, message: &str, traceback: &str) -> bool {
        on_store!(&self.engine, AnyEngine, e => {
            let delay_ms = (delay.max(0.0) * 1000.0).ceil() as u64;
            e.settle(handle, Outcome::Retry { delay_ms, error: error_json(kind, message, traceback) })
        })
    }

    /// The job failed for good.
    #[pyo3(signature = (handle, kind, message, traceback = ""))]
    fn fail(&self, handle: u64, kind: &str, message: &str, traceback: &str) -> bool {
        on_store!(&self.engine, AnyEngine, e => {
            e.settle(handle, Outcome::Failed { error: error_json(kind, message, traceback) })
        })
    }

    /// The job gave up after it was asked to cancel: it does not run again.
    fn cancel(&self, handle: u64) -> bool {
        on_store!(&self.engine, AnyEngine, e => {
            e.settle(handle, Outcome::Cancelled)
        })
    }

    /// Whether the running job was asked to cancel (`self.cancelled` in a handler).
    fn is_cancelled(&self, handle: u64) -> bool {
        on_store!(&self.engine, AnyEngine, e => {
            e.is_cancelled(handle)
        })
    }

    /// Handles of running jobs newly asked to cancel; waits up to `timeout` seconds for one
    /// (the GIL released).
    fn next_cancels(&self, py: Python<'_>, timeout: f64) -> Vec<u64> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            py.detach(move || e.next_cancels(Duration::from_secs_f64(timeout.clamp(0.0, 3600.0))))
        })
    }

    /// Stops fetching and hands unstarted jobs back to the head of their queues.
    fn stop_fetching(&self, py: Python<'_>) -> PyResult<u64> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            block(py, async move { e.stop_fetching().await })
        })
    }

    /// Waits until every reported outcome is acknowledged by Redis.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            block(py, async move {
                e.drain_acks().await;
                Ok(())
            })
        })
    }

    /// Waits up to `wait` seconds for the callbacks in flight; those still trying then stop
    /// and are recorded as not delivered. Returns how many were given up so.
    fn drain_callbacks(&self, py: Python<'_>, wait: f64) -> PyResult<usize> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            let wait = Duration::from_secs_f64(wait.clamp(0.0, 3600.0));
            block(py, async move { Ok(e.callbacks.drain(wait).await) })
        })
    }

    /// Callbacks not yet delivered or given up.
    fn callbacks_in_flight(&self) -> usize {
        on_store!(&self.engine, AnyEngine, e => {
            e.callbacks.in_flight()
        })
    }

    /// Messages about callbacks for the worker's log (given up, posted unsigned), oldest first.
    fn take_callback_notes(&self) -> Vec<String> {
        on_store!(&self.engine, AnyEngine, e => {
            e.callbacks.take_notes()
        })
    }

    /// Hands jobs still running back to their queues (the grace period ran out).
    fn release_running(&self, py: Python<'_>) -> PyResult<u64> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            block(py, async move { e.release_running().await })
        })
    }

    /// Hands back handed-out jobs that were not started, to the head of their queues.
    fn release_handles(&self, py: Python<'_>, handles: Vec<u64>) -> PyResult<u64> {
        on_store!(&self.engine, AnyEngine, e => {
            let e = e.clone();
            block(py, async move { e.release_handles(&handles).await })
        })
    }

    /// Stops every background task. Leases still held expire and are reaped elsewhere.
    fn close(&self) {
        for t in self.tasks.lock().unwrap().drain(..).chain(self.core_tasks.lock().unwrap().drain(..)) {
            t.abort();
        }
    }

    /// Every job of `max_jobs` was handed out: nothing more comes.
    fn exhausted(&self) -> bool {
        on_store!(&self.engine, AnyEngine, e => {
            e.exhausted()
        })
    }

    /// The client the engine was made with (`self.progress()` and `self.log()` in a handler
    /// write through it).
    #[getter]
    fn client(&self, py: Python<'_>) -> Py<Client> {
        self.client.clone_ref(py)
    }

    /// The id that names this worker's leases (`Client.expire_worker` ends them).
    #[getter]
    fn worker_id(&self) -> String {
        on_store!(&self.engine, AnyEngine, e => {
            e.worker_id().to_owned()
        })
    }

    fn running(&self) -> usize {
        on_store!(&self.engine, AnyEngine, e => {
            e.running_count()
        })
    }

    /// The last error a background task met while it kept retrying, once; else None.
    fn take_error(&self) -> Option<String> {
        on_store!(&self.engine, AnyEngine, e => {
            e.take_error()
        })
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        on_store!(&self.engine, AnyEngine, e => {
            let s = &e.stats;
            let d = PyDict::new(py);
            d.set_item("reserved", s.reserved.load(Ordering::Relaxed))?;
            d.set_item("handed", s.handed.load(Ordering::Relaxed))?;
            d.set_item("completed", s.completed.load(Ordering::Relaxed))?;
            d.set_item("retried", s.retried.load(Ordering::Relaxed))?;
            d.set_item("failed", s.failed.load(Ordering::Relaxed))?;
            d.set_item("stale", s.stale.load(Ordering::Relaxed))?;
            d.set_item("cancelled", s.cancelled.load(Ordering::Relaxed))?;
            d.set_item("orphans", s.orphans.load(Ordering::Relaxed))?;
            d.set_item("released", s.released.load(Ordering::Relaxed))?;
            d.set_item("store_errors", s.store_errors.load(Ordering::Relaxed))?;
            d.set_item("lost_leases", s.lost_leases.load(Ordering::Relaxed))?;
            d.set_item("reserve_calls", s.reserve_calls.load(Ordering::Relaxed))?;
            d.set_item("ack_flushes", s.ack_flushes.load(Ordering::Relaxed))?;
            d.set_item("callbacks_delivered", e.callbacks.delivered.load(Ordering::Relaxed))?;
            d.set_item("callbacks_failed", e.callbacks.failed.load(Ordering::Relaxed))?;
            Ok(d)
        })
    }
}

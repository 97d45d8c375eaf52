//! `fastjobs._core.Schedules`: the schedule book of one client (JobScheduler's engine), and
//! `cron_next` for validating patterns and showing upcoming runs.

use super::backend::{on_store, AnyStore};
use super::bridge::call;
use super::client::{now_ms, Client};
use super::errors::to_py;
use crate::cron::Cron;
use crate::engine::schedules::{Rule, ScheduleEntry, Timing};
use crate::store::redis::keys::validate_schedule_key;
use crate::store::{ScheduleWrite, Store};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

#[pyclass(module = "fastjobs._core", frozen)]
pub struct Schedules {
    store: AnyStore,
}

fn cron(pattern: &str, tz: &str) -> PyResult<Cron> {
    Cron::parse(pattern, tz).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn entries(py: Python<'_>, list: Vec<ScheduleEntry>) -> PyResult<Py<PyAny>> {
    let out = PyList::empty(py);
    for e in list {
        let fields = PyDict::new(py);
        for (k, v) in &e.fields {
            fields.set_item(k, PyBytes::new(py, v))?;
        }
        out.append((e.key, e.next_ms, fields))?;
    }
    Ok(out.into_any().unbind())
}

/// The canonical text of a timing: an upsert with the same text keeps its next run.
fn signature(
    pattern: Option<&str>,
    tz: &str,
    every_ms: Option<i64>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    limit: Option<u64>,
    immediately: bool,
) -> String {
    let o = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}|{}",
        pattern.map(|p| format!("cron {p} {tz}")).unwrap_or_default(),
        o(every_ms),
        o(start_ms),
        o(end_ms),
        limit.map(|l| l.to_string()).unwrap_or_default(),
        immediately as u8
    )
}

#[pymethods]
impl Schedules {
    #[new]
    fn new(client: &Client) -> Schedules {
        Schedules { store: client.backend.shared() }
    }

    /// Creates or updates the schedule `key`: returns (created, next run ms). `fields` are the
    /// definition (job, queue, payload, options, attempts, priority, origin).
    #[pyo3(signature = (key, fields, *, pattern = None, tz = "UTC", every_ms = None, start_ms = None, end_ms = None,
                        limit = None, immediately = false, asynchronous = false))]
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &self,
        py: Python<'_>,
        key: String,
        fields: Vec<(String, Vec<u8>)>,
        pattern: Option<String>,
        tz: &str,
        every_ms: Option<i64>,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        limit: Option<u64>,
        immediately: bool,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        validate_schedule_key(&key).map_err(to_py)?;
        let now = now_ms() as i64;
        let rule = match (&pattern, every_ms) {
            (Some(p), None) => Rule::Cron(cron(p, tz)?),
            (None, Some(ms)) if ms > 0 => Rule::Every { every_ms: ms, anchor_ms: start_ms.unwrap_or(now) },
            (None, Some(ms)) => return Err(PyValueError::new_err(format!("repeat 'every' must be a positive duration, got {ms} ms"))),
            _ => return Err(PyValueError::new_err("repeat needs exactly one of 'pattern' (cron) and 'every'")),
        };
        if limit == Some(0) {
            return Err(PyValueError::new_err("repeat 'limit' must be at least 1"));
        }
        let anchor_ms = match rule {
            Rule::Every { anchor_ms, .. } => anchor_ms,
            Rule::Cron(_) => now,
        };
        let timing = Timing { rule, start_ms, end_ms, limit, immediately };
        let next_ms = timing
            .first_run(now)
            .ok_or_else(|| PyValueError::new_err(format!("schedule {key:?} would never run: its end comes before its first run")))?;
        let sig = signature(pattern.as_deref(), tz, every_ms, start_ms, end_ms, limit, immediately);
        let mut fields = fields;
        let mut add = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                fields.push((name.to_string(), v.into_bytes()));
            }
        };
        add("pattern", pattern.clone());
        add("tz", pattern.as_ref().map(|_| tz.to_string()));
        add("every_ms", every_ms.map(|v| v.to_string()));
        add("start_ms", start_ms.map(|v| v.to_string()));
        add("end_ms", end_ms.map(|v| v.to_string()));
        add("limit", limit.map(|v| v.to_string()));
        add("immediately", immediately.then(|| "1".to_string()));
        let w = ScheduleWrite { key, timing: sig, next_ms, anchor_ms, fields };
        on_store!(&self.store, AnyStore, store => {
            let store = store.clone();
            call(py, asynchronous, async move { store.schedule_upsert(w).await }, |py, v: (bool, i64)| {
                Ok(v.into_pyobject(py)?.into_any().unbind())
            })
        })
    }

    /// [(key, next run ms, {field: bytes})] of the named schedules that exist, or of all.
    #[pyo3(signature = (keys = None, *, asynchronous = false))]
    fn read(&self, py: Python<'_>, keys: Option<Vec<String>>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.store, AnyStore, store => {
            let store = store.clone();
            call(py, asynchronous, async move { store.schedule_read(keys).await }, entries)
        })
    }

    /// Removes the named schedules, or every schedule; returns how many existed.
    #[pyo3(signature = (keys = None, *, asynchronous = false))]
    fn remove(&self, py: Python<'_>, keys: Option<Vec<String>>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        if keys.as_ref().is_some_and(|k| k.is_empty()) {
            return Ok(0u64.into_pyobject(py)?.into_any().unbind());
        }
        on_store!(&self.store, AnyStore, store => {
            let store = store.clone();
            call(py, asynchronous, async move { store.schedule_remove(keys).await }, |py, n: u64| Ok(n.into_pyobject(py)?.into_any().unbind()))
        })
    }
}

/// The next `count` run times (ms) of a cron pattern after `after_ms`; ValueError naming the
/// field and value of a bad pattern, or an unknown time zone.
#[pyfunction]
#[pyo3(signature = (pattern, tz = "UTC", after_ms = None, count = 1))]
pub fn cron_next(pattern: &str, tz: &str, after_ms: Option<i64>, count: usize) -> PyResult<Vec<i64>> {
    let c = cron(pattern, tz)?;
    let mut t = after_ms.unwrap_or(now_ms() as i64);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        match c.next_after(t) {
            Some(n) => {
                out.push(n);
                t = n;
            }
            None => break,
        }
    }
    Ok(out)
}

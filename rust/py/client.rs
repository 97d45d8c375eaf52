//! `fastjobs._core.Client`: one connection set per configured Redis, used by producers and
//! by everything that reads queue state.

use super::backend::{on_store, AnyTarget, Backend, PyStore, Stored};
use super::bridge::call;
use super::bulk::BulkWriter;
use crate::engine::coalesce::{Answer, Dispatch};
use crate::error::{Error, Result};
use crate::record::{check_caller_id, check_fields, options_group, pack_into, Header, IdGen, Record};
use crate::store::chunk::BulkSpec;
use crate::store::postgres::{PgStore, Timeouts};
use crate::store::redis::events::MAX_KEEP;
use crate::store::redis::RedisStore;
use crate::store::Settings;
use crate::store::{
    CancelReply, Counts, Dedup, DedupMode, FailedJob, Feedback, Limits, NewJob, QueueHandle, Status, Store, Watermark, Written, SMALL_BATCH,
};

/// Jobs cancelled per call of `Queue.empty` (one script call holds Redis a few ms).
const EMPTY_PAGE: usize = 5_000;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest payload accepted by default (bytes); configurable per client.
const DEFAULT_MAX_PAYLOAD: usize = 512 * 1024;

#[pyclass(module = "fastjobs._core", frozen)]
pub struct Client {
    /// The store, its queue handles and the group commit of small dispatches.
    pub(crate) backend: Backend,
    settings: Settings,
    ids: Arc<Mutex<IdGen>>,
    max_payload: usize,
}

/// The shortest life of a job's progress and log keys after their last write.
const FEEDBACK_MIN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A job as the Python layer hands it over: (name, payload, options JSON or None,
/// max attempts, priority, delay µs, caller-chosen id or None, due time µs or None).
type JobTuple = (String, Vec<u8>, Option<Vec<u8>>, u16, u8, u64, Option<String>, Option<u64>);

/// A job's deduplication as the Python layer hands it over: (mode, key, ttl ms), mode one of
/// "ttl" (ttl ms > 0), "until" (until the job settles) or "debounce" (the job's delay).
type DedupTuple = (String, String, u64);

/// The longest deduplication key, in bytes.
const MAX_DEDUP_KEY: usize = 255;

/// Checks one job's deduplication against the job it belongs to.
fn dedup_of(d: DedupTuple, custom: bool, delay_us: u64, at_us: Option<u64>) -> Result<Dedup> {
    let (mode, key, ttl_ms) = d;
    if key.is_empty() || key.len() > MAX_DEDUP_KEY || key.bytes().any(|b| b.is_ascii_control()) {
        return Err(Error::Invalid(format!(
            "deduplication key must be 1 to {MAX_DEDUP_KEY} bytes without control characters, got {key:?}"
        )));
    }
    if custom {
        return Err(Error::Invalid("a job with a caller-chosen id cannot also have a deduplication key".into()));
    }
    let mode = match mode.as_str() {
        "ttl" if ttl_ms > 0 => DedupMode::Ttl(ttl_ms),
        "ttl" => return Err(Error::Invalid("deduplication ttl must be more than 0".into())),
        "until" => DedupMode::UntilSettled,
        "debounce" if delay_us > 0 && at_us.is_none() => DedupMode::Debounce,
        "debounce" => return Err(Error::Invalid("a debounced job needs a delay (and no due time)".into())),
        other => return Err(Error::Invalid(format!("unknown deduplication mode {other:?}: use ttl, until or debounce"))),
    };
    Ok(Dedup { key, mode })
}

/// (id, created, deduplicated) per job, as the Python layer reads an enqueue's answer.
fn written_tuples(ids: Vec<String>, written: Vec<Written>) -> Vec<(String, bool, bool)> {
    ids.into_iter()
        .zip(written)
        .map(|(id, w)| match w {
            Written::New => (id, true, false),
            Written::Exists => (id, false, false),
            Written::Deduplicated(held) => (held, false, true),
        })
        .collect()
}

/// A small dispatch's answer as `enqueue` returns it.
pub(crate) fn settle(py: Python<'_>, ids: Vec<String>, answer: Answer) -> PyResult<Py<PyAny>> {
    let written = answer.map_err(super::errors::to_py)?;
    Ok(written_tuples(ids, written).into_pyobject(py)?.into_any().unbind())
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `PyStore::check_connection` of `stored`'s store.
fn check_with<S: PyStore>(_stored: &Stored<S>, settings: &Settings) -> Result<Option<String>> {
    Ok(S::check_connection(settings)?.map(|e| e.to_string()))
}

fn event_reader_of<S: PyStore>(stored: &Stored<S>, settings: &Settings, q: Arc<S::Queue>) -> PyResult<super::events::EventReader> {
    S::event_reader(stored, settings, q)
}

/// The prefix a PostgreSQL store takes: its database holds one application's jobs.
const PG_PREFIX: &str = "fj";

/// The store a URL names; a PostgreSQL store is connected to (and its schema checked) here,
/// on the I/O runtime, the GIL released.
fn open_store(py: Python<'_>, settings: &Settings) -> Result<Backend> {
    let url = settings.url.as_str();
    if crate::store::redis::conn::is_redis_url(url) {
        return Ok(Backend::Redis(Stored::new(Arc::new(RedisStore::new(settings)?))));
    }
    if url.starts_with("memory://") {
        return Ok(Backend::Memory(Stored::new(crate::store::memory::open_with(settings)?)));
    }
    if url.starts_with("sqlite://") {
        return Ok(Backend::Sqlite(Stored::new(Arc::new(crate::store::sqlite::SqliteStore::open_with(settings)?))));
    }
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        // One `fastjobs` schema per database: a prefix cannot keep two applications apart
        // there, so another one is refused rather than mixing their jobs.
        if settings.prefix != PG_PREFIX {
            return Err(Error::Invalid(format!(
                "the PostgreSQL store keeps one application's jobs per database (its fastjobs schema): prefix {:?} cannot \
                 apply there; leave the prefix at its default {PG_PREFIX:?} and give each application its own database",
                settings.prefix
            )));
        }
        // Redis's TLS files would be ignored here: the URL says PostgreSQL's (store/postgres/tls.rs).
        let t = &settings.tls;
        if t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some() {
            return Err(Error::Invalid(
                "tls_ca_file, tls_cert_file and tls_key_file are for rediss:// URLs: a PostgreSQL URL takes its CA and client \
                 certificate as parameters (?sslmode=verify-full&sslrootcert=/path/ca.pem&sslcert=...&sslkey=...)"
                    .into(),
            ));
        }
        let (url, ttl) = (url.to_string(), settings.result_ttl);
        let timeouts = Timeouts { connect: settings.connect_timeout, response: settings.response_timeout };
        let store = py.detach(|| crate::runtime::runtime().block_on(PgStore::connect_with(&url, ttl, timeouts)))?;
        return Ok(Backend::Postgres(Stored::new(Arc::new(store))));
    }
    Err(Error::Invalid(format!(
        "invalid store URL {}: use redis://, rediss:// or unix:// (Redis), postgresql:// (PostgreSQL), sqlite:///path/to/file.db \
         (SQLite) or memory:// (in process)",
        crate::store::settings::mask_url(url)
    )))
}

impl Client {
    /// Validates and packs jobs; nothing is sent when any of them is refused. `guarded`: a
    /// batch of a bulk dispatch, whose generated ids get a guard (`Watermark::guard`).
    fn prepare(
        &self,
        jobs: Vec<JobTuple>,
        dedup: Option<Vec<Option<DedupTuple>>>,
        guarded: bool,
    ) -> Result<(Vec<NewJob>, Option<Watermark>)> {
        let mut dedup = match dedup {
            Some(d) if d.len() != jobs.len() => {
                return Err(Error::Invalid(format!("{} deduplications given for {} jobs", d.len(), jobs.len())))
            }
            Some(d) => d.into_iter(),
            None => Vec::new().into_iter(),
        };
        let generated = jobs.iter().filter(|j| j.6.is_none()).count() as u64;
        for (i, (name, payload, options, max_attempts, priority, _, custom, _)) in jobs.iter().enumerate() {
            let at = if jobs.len() > 1 { format!(" (job at index {i})") } else { String::new() };
            if payload.len() > self.max_payload {
                return Err(Error::Invalid(format!(
                    "payload of {} bytes is over the limit of {} bytes{at}",
                    payload.len(),
                    self.max_payload
                )));
            }
            if *max_attempts < 1 {
                return Err(Error::Invalid(format!("attempts must be at least 1{at}")));
            }
            if *priority > 9 {
                return Err(Error::Invalid(format!("priority must be 0 to 9, got {priority}{at}")));
            }
            if let Some(id) = custom {
                check_caller_id(id).map_err(|e| Error::Invalid(format!("{e}{at}")))?;
            }
            check_fields(custom.as_deref().unwrap_or("x"), name, options.as_deref().unwrap_or(b""))
                .map_err(|e| Error::Invalid(format!("{e}{at}")))?;
        }
        // The group each job's options name (checked here, at the border, as the Python layer did).
        let groups: Vec<Option<String>> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let at = if jobs.len() > 1 { format!(" (job at index {i})") } else { String::new() };
                options_group(j.2.as_deref().unwrap_or(b"")).map_err(|e| Error::Invalid(format!("{e}{at}")))
            })
            .collect::<Result<_>>()?;
        let dedups: Vec<Option<Dedup>> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let at = if jobs.len() > 1 { format!(" (job at index {i})") } else { String::new() };
                dedup
                    .next()
                    .flatten()
                    .map(|d| dedup_of(d, j.6.is_some(), j.5, j.7).map_err(|e| Error::Invalid(format!("{e}{at}"))))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let range = (generated > 0).then(|| self.ids.lock().unwrap().take(generated));
        let enqueued = now_ms();
        let mut next = 0u64;
        let mut out = Vec::with_capacity(jobs.len());
        for (((name, payload, options, max_attempts, priority, delay_us, custom, at_us), dedup), group) in
            jobs.into_iter().zip(dedups).zip(groups)
        {
            let (id, custom_id) = match custom {
                Some(id) => (id, true),
                None => {
                    let id = range.as_ref().expect("taken above").id(next);
                    next += 1;
                    (id, false)
                }
            };
            let mut record = Vec::new();
            let h = Header { attempt: 0, max_attempts, priority };
            pack_into(&mut record, h, &id, &name, enqueued, options.as_deref().unwrap_or(b""), &payload);
            out.push(NewJob { id, custom_id, delay_us, at_us, record, dedup, group });
        }
        let mark = range.map(|r| Watermark { last_seq: r.last_seq(), guard: guarded.then_some(r.first), producer: r.producer });
        Ok((out, mark))
    }
}

/// (flow id, child node, parent node, 'c'|'f', child job id, JSON kept, policy)
type FlowSettleItem = (String, u32, u32, String, String, Vec<u8>, String);

fn bytes_or_none(py: Python<'_>, b: Option<Vec<u8>>) -> Py<PyAny> {
    match b {
        Some(b) => PyBytes::new(py, &b).into_any().unbind(),
        None => py.None(),
    }
}

/// (name, attempt, max_attempts, priority, enqueued_ms, options, payload) of a packed record.
fn record_tuple(py: Python<'_>, raw: Option<Vec<u8>>) -> PyResult<Py<PyAny>> {
    let Some(raw) = raw else { return Ok(py.None()) };
    match Record::unpack(&raw) {
        Ok(r) => {
            Ok((r.name, r.attempt, r.max_attempts, r.priority, r.enqueued_ms, PyBytes::new(py, &r.options), PyBytes::new(py, &r.payload))
                .into_pyobject(py)?
                .into_any()
                .unbind())
        }
        Err(_) => Ok(py.None()),
    }
}

/// A hash's fields as a dict of bytes; None when it has none.
fn fields_dict(py: Python<'_>, fields: Vec<(String, Vec<u8>)>) -> PyResult<Py<PyAny>> {
    if fields.is_empty() {
        return Ok(py.None());
    }
    let d = pyo3::types::PyDict::new(py);
    for (k, v) in fields {
        d.set_item(k, PyBytes::new(py, &v))?;
    }
    Ok(d.into_any().unbind())
}

fn status_tuple(py: Python<'_>, s: Status) -> PyResult<Py<PyAny>> {
    let rec = record_tuple(py, s.record)?;
    Ok((s.state.as_str(), rec, bytes_or_none(py, s.data)).into_pyobject(py)?.into_any().unbind())
}

fn counts_dict(py: Python<'_>, c: Counts) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("waiting", c.waiting)?;
    d.set_item("delayed", c.delayed)?;
    d.set_item("active", c.active)?;
    d.set_item("failed", c.failed)?;
    d.set_item("completed", c.completed)?;
    d.set_item("retried", c.retried)?;
    d.set_item("stalled", c.stalled)?;
    d.set_item("cancelled", c.cancelled)?;
    d.set_item("paused", c.paused)?;
    Ok(d.into_any().unbind())
}

fn failed_list(py: Python<'_>, jobs: Vec<FailedJob>) -> PyResult<Py<PyAny>> {
    let l = PyList::empty(py);
    for j in jobs {
        let rec = record_tuple(py, j.record)?;
        l.append(PyTuple::new(
            py,
            [
                j.id.into_pyobject(py)?.into_any().unbind(),
                rec,
                bytes_or_none(py, j.error),
                j.failed_at_ms.into_pyobject(py)?.into_any().unbind(),
            ],
        )?)?;
    }
    Ok(l.into_any().unbind())
}

/// The limits `Queue.set_limits` / `set_group_limits` checked: `rate` jobs per `per` seconds.
fn limits_of(rate: Option<u64>, per: Option<f64>, concurrency: Option<u64>) -> PyResult<Limits> {
    let period = per.map(|s| crate::store::redis::conn::seconds("per", s, 0.001)).transpose().map_err(super::errors::to_py)?;
    Ok(Limits { rate: rate.zip(period), concurrency })
}

/// (rate, per seconds, concurrency), None where there is no such limit.
fn limits_tuple(py: Python<'_>, l: Limits) -> PyResult<Py<PyAny>> {
    let (rate, per) = l.rate.map(|(n, d)| (n, d.as_secs_f64())).unzip();
    Ok((rate, per, l.concurrency).into_pyobject(py)?.into_any().unbind())
}

fn bool_obj(py: Python<'_>, b: bool) -> PyResult<Py<PyAny>> {
    Ok(pyo3::types::PyBool::new(py, b).to_owned().into_any().unbind())
}

fn int_obj(py: Python<'_>, n: u64) -> PyResult<Py<PyAny>> {
    Ok(n.into_pyobject(py)?.into_any().unbind())
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url, *, prefix = "fj", connect_timeout = 5.0, response_timeout = 30.0, result_ttl = 86400.0,
                        max_payload = DEFAULT_MAX_PAYLOAD, tls_ca_file = None, tls_cert_file = None, tls_key_file = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: &str,
        prefix: &str,
        connect_timeout: f64,
        response_timeout: f64,
        result_ttl: f64,
        max_payload: usize,
        tls_ca_file: Option<String>,
        tls_cert_file: Option<String>,
        tls_key_file: Option<String>,
    ) -> PyResult<Client> {
        let within = |name: &str, v: f64, min: f64| crate::store::redis::conn::seconds(name, v, min).map_err(super::errors::to_py);
        let mut settings = Settings::new(url, prefix).map_err(super::errors::to_py)?;
        settings.connect_timeout = within("connect_timeout", connect_timeout, 0.001)?;
        settings.response_timeout = within("response_timeout", response_timeout, 0.001)?;
        // At least 1 ms: it goes to Redis in ms, where 0 is refused.
        settings.result_ttl = within("result_ttl", result_ttl, 0.001)?.max(Duration::from_millis(1));
        settings.tls = crate::store::redis::conn::Tls { ca_file: tls_ca_file, cert_file: tls_cert_file, key_file: tls_key_file };
        let backend = open_store(py, &settings).map_err(super::errors::to_py)?;
        Ok(Client { backend, settings, ids: Arc::default(), max_payload })
    }

    #[getter]
    fn url(&self) -> String {
        self.settings.masked_url()
    }

    /// Opens a connection of its own and loads the scripts, as a worker does before it
    /// starts. Returns None when that worked, and the reason when Redis cannot be reached
    /// now (connection refused, timed out, a name lookup that failed for now), which may
    /// pass; raises when these settings can never work: `AuthenticationError` (credentials,
    /// permissions), `StoreError` (a database index the server does not have),
    /// `ConnectionError` (a host name that does not exist).
    fn check_connection(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let settings = &self.settings;
        let checked = on_store!(&self.backend, Backend, b => py.detach(|| check_with(b, settings)));
        checked.map_err(super::errors::to_py)
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Writes jobs to `queue` atomically; returns [(id, created, deduplicated)]: created is
    /// False when a job with that caller-chosen id already exists, or when the job's
    /// deduplication key is held (deduplicated True, and the id is the holder's). `dedup`: one
    /// (mode, key, ttl ms) or None per job.
    #[pyo3(signature = (queue, jobs, *, dedup = None, asynchronous = false))]
    fn enqueue(
        &self,
        py: Python<'_>,
        queue: &str,
        jobs: Vec<JobTuple>,
        dedup: Option<Vec<Option<DedupTuple>>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let (jobs, mark) = self.prepare(jobs, dedup, false).map_err(super::errors::to_py)?;
            let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            if !jobs.is_empty() && jobs.len() <= SMALL_BATCH {
                let dispatch = Dispatch { q, jobs, mark };
                if asynchronous {
                    let dispatch = match PyStore::on_loop(py, b, dispatch, ids.clone())? {
                        Ok(fut) => return Ok(fut),
                        Err(d) => d,
                    };
                    let store = b.store.clone();
                    let fut = async move {
                        let written = store.enqueue(&dispatch.q, &dispatch.jobs, dispatch.mark.as_ref()).await?;
                        Ok(written_tuples(ids, written))
                    };
                    return call(py, true, fut, |py, v: Vec<(String, bool, bool)>| Ok(v.into_pyobject(py)?.into_any().unbind()));
                }
                // One release of the GIL for the whole wait, unless it lasts: then signals are
                // checked every 250 ms (Ctrl-C leaves the dispatch to be written all the same).
                let tick = Duration::from_millis(250);
                let (mut pending, mut answer) = py.detach(|| {
                    let mut p = b.coalescer.send(dispatch);
                    let a = p.wait(tick);
                    (p, a)
                });
                loop {
                    if let Some(answer) = answer {
                        return settle(py, ids, answer);
                    }
                    py.check_signals()?;
                    answer = py.detach(|| pending.wait(tick));
                }
            }
            let store = b.store.clone();
            let fut = async move {
                let written = store.enqueue(&q, &jobs, mark.as_ref()).await?;
                Ok(written_tuples(ids, written))
            };
            call(py, asynchronous, fut, |py, v: Vec<(String, bool, bool)>| Ok(v.into_pyobject(py)?.into_any().unbind()))
        })
    }

    /// Validates and packs jobs for `queue` and gives them their ids now, without writing:
    /// a batch of a bulk dispatch that can be written again under the same ids after an
    /// answer was lost (its guard makes a second write of a batch that landed write nothing).
    #[pyo3(signature = (queue, jobs, *, dedup = None))]
    fn prepare_batch(&self, queue: &str, jobs: Vec<JobTuple>, dedup: Option<Vec<Option<DedupTuple>>>) -> PyResult<PreparedBatch> {
        let target = self.backend.target(queue).map_err(super::errors::to_py)?;
        let (jobs, mark) = self.prepare(jobs, dedup, true).map_err(super::errors::to_py)?;
        Ok(PreparedBatch { target, jobs: Arc::new(jobs), mark: mark.map(Arc::new) })
    }

    /// The statement and named arguments that write one job in the caller's own PostgreSQL
    /// transaction (`send(conn=...)`), the job validated and packed as `enqueue` does; the
    /// statement's one value is `n` (written), `e` (a job with that id exists) or `d<id>`
    /// (deduplicated by job `<id>`). Raises ValueError when this client's store is not
    /// PostgreSQL.
    #[pyo3(signature = (queue, job, *, dedup = None))]
    fn enqueue_statement<'py>(
        &self,
        py: Python<'py>,
        queue: &str,
        job: JobTuple,
        dedup: Option<DedupTuple>,
    ) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
        let Backend::Postgres(b) = &self.backend else {
            return Err(super::errors::to_py(Error::Invalid(format!(
                "conn= writes the job with a PostgreSQL connection, in its transaction: the job's fastjobs connection must be \
                 PostgreSQL too, and it is {}",
                self.settings.masked_url()
            ))));
        };
        let q = b.queue(queue).map_err(super::errors::to_py)?;
        let (jobs, _) = self.prepare(vec![job], Some(vec![dedup]), false).map_err(super::errors::to_py)?;
        let a = b.store.enqueue_args(&q, &jobs[0]);
        let d = PyDict::new(py);
        d.set_item("queue", a.queue)?;
        d.set_item("id", a.id)?;
        d.set_item("record", PyBytes::new(py, &a.record))?;
        d.set_item("custom", a.custom)?;
        d.set_item("delay_us", a.delay_us)?;
        d.set_item("at_us", a.at_us)?;
        d.set_item("dedup_keys", a.dedup_keys)?;
        d.set_item("dedup_modes", a.dedup_modes)?;
        d.set_item("ttl_ms", a.ttl_ms)?;
        d.set_item("group", a.group)?;
        Ok((crate::store::postgres::ENQUEUE_SQL, d))
    }

    /// (state, record tuple or None, result/error JSON or None); with `progress`, a fourth
    /// item: the job's last progress JSON or None (the same one script call).
    #[pyo3(signature = (queue, id, *, progress = false, asynchronous = false))]
    fn status(&self, py: Python<'_>, queue: &str, id: String, progress: bool, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            if progress {
                return call(py, asynchronous, async move { store.info(&q, &id).await }, |py, s: Status| {
                    let rec = record_tuple(py, s.record)?;
                    let cb = fields_dict(py, s.callback)?;
                    Ok((s.state.as_str(), rec, bytes_or_none(py, s.data), bytes_or_none(py, s.progress), cb)
                        .into_pyobject(py)?
                        .into_any()
                        .unbind())
                });
            }
            call(py, asynchronous, async move { store.status(&q, &id).await }, status_tuple)
        })
    }

    /// Records a running job's progress (`kind` "progress": replaces the last) or a log line
    /// ("log": appended, the newest 1,000 kept). `entry` is a JSON object without its time;
    /// the store adds `"at"` (ms, its clock), returned. The key lives max(result_ttl, 1 day)
    /// after each write.
    #[pyo3(signature = (queue, id, kind, entry, *, asynchronous = false))]
    fn feedback(&self, py: Python<'_>, queue: &str, id: String, kind: &str, entry: Vec<u8>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let kind = match kind {
                "progress" => Feedback::Progress,
                "log" => Feedback::Log,
                _ => return Err(pyo3::exceptions::PyValueError::new_err(format!("kind must be 'progress' or 'log', got {kind:?}"))),
            };
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            let ttl = self.settings.result_ttl.max(FEEDBACK_MIN_TTL);
            call(py, asynchronous, async move { store.feedback(&q, &id, kind, &entry, ttl).await }, |py, at: i64| {
                Ok(at.into_pyobject(py)?.into_any().unbind())
            })
        })
    }

    /// Switches the queue's events stream on (keeping about `keep` entries) or off (None).
    #[pyo3(signature = (queue, keep, *, asynchronous = false))]
    fn set_events(&self, py: Python<'_>, queue: &str, keep: Option<u64>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            if let Some(n) = keep.filter(|n| *n == 0 || *n > MAX_KEEP) {
                return Err(pyo3::exceptions::PyValueError::new_err(format!("keep must be 1 to {MAX_KEEP} entries, got {n}")));
            }
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.set_events(&q, keep).await }, |py, ()| Ok(py.None()))
        })
    }

    /// How many entries the queue's events stream keeps, or None when it is off.
    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn events_keep(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.events_keep(&q).await }, |py, n: Option<u64>| {
                Ok(n.into_pyobject(py)?.into_any().unbind())
            })
        })
    }

    /// A reader of the queue's events stream, on a connection of its own.
    fn event_reader(&self, queue: &str) -> PyResult<super::events::EventReader> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            event_reader_of(b, &self.settings, q)
        })
    }

    /// A job's last progress JSON (with `"at"`), or None.
    #[pyo3(signature = (queue, id, *, asynchronous = false))]
    fn progress(&self, py: Python<'_>, queue: &str, id: String, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.progress(&q, &id).await }, |py, b| Ok(bytes_or_none(py, b)))
        })
    }

    /// A job's log lines `start` to `start + limit - 1` (JSON each, with `"at"`), oldest first.
    #[pyo3(signature = (queue, id, start = 0, limit = 100, *, asynchronous = false))]
    fn logs(&self, py: Python<'_>, queue: &str, id: String, start: usize, limit: usize, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.logs(&q, &id, start, limit).await }, |py, lines: Vec<Vec<u8>>| {
                Ok(PyList::new(py, lines.iter().map(|l| PyBytes::new(py, l)))?.into_any().unbind())
            })
        })
    }

    /// How the job's callback went: {field: bytes} as the worker recorded it (state, event,
    /// url, attempts, code, error, at), None when it recorded nothing.
    #[pyo3(signature = (queue, id, *, asynchronous = false))]
    fn callback_status(&self, py: Python<'_>, queue: &str, id: String, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.callback_status(&q, &id).await }, fields_dict)
        })
    }

    /// Waits for the job to finish: (state, record, data), or None when `timeout` passed.
    #[pyo3(signature = (queue, id, timeout = None, *, asynchronous = false))]
    fn wait_result(&self, py: Python<'_>, queue: &str, id: String, timeout: Option<f64>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let timeout = timeout.map(|t| crate::store::redis::conn::seconds("timeout", t, 0.0)).transpose().map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.wait_result(q, id, timeout).await }, |py, s: Option<Status>| match s {
                Some(s) => status_tuple(py, s),
                None => Ok(py.None()),
            })
        })
    }

    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn counts(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.counts(&q).await }, counts_dict)
        })
    }

    /// [(id, record tuple or None, error JSON or None, failed_at_ms)], oldest first.
    #[pyo3(signature = (queue, limit = 100, *, asynchronous = false))]
    fn failed_list(&self, py: Python<'_>, queue: &str, limit: usize, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.failed_list(&q, limit).await }, failed_list)
        })
    }

    /// Workers stop taking jobs from the queue; True if it was running.
    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn pause(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.pause(&q).await }, bool_obj)
        })
    }

    /// The queue runs again; True if it was paused.
    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn resume(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.resume(&q).await }, bool_obj)
        })
    }

    /// Ends now the leases `worker` (a dead worker process) held in `queues`, and reaps them:
    /// a list of (queue, jobs held, some of their ids, ids whose run had started) for the
    /// queues where it held any. Pool supervisors call it when a child died.
    #[pyo3(signature = (queues, worker, *, most = 20))]
    fn expire_worker(&self, py: Python<'_>, queues: Vec<String>, worker: String, most: usize) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let qs: Vec<Arc<_>> = queues.iter().map(|q| b.queue(q)).collect::<Result<_>>().map_err(super::errors::to_py)?;
            let store = b.store.clone();
            let found = call(
                py,
                false,
                async move {
                    let mut out = Vec::new();
                    for q in qs {
                        let e = store.expire_worker(&q, &worker, most).await?;
                        if e.leases == 0 {
                            continue;
                        }
                        while store.tick(&q, 1000).await?.reaped >= 1000 {}
                        out.push((q.name().to_string(), e.held, e.ids, e.started));
                    }
                    Ok(out)
                },
                |py, out: Vec<(String, u64, Vec<String>, Vec<String>)>| Ok(out.into_pyobject(py)?.into_any().unbind()),
            )?;
            Ok(found)
        })
    }

    /// Cancels (or with `remove`, deletes) one job: (state it was in, record tuple or None,
    /// done). Not done: a finished job (cancel) or a running one (remove).
    #[pyo3(signature = (queue, id, *, remove = false, asynchronous = false))]
    fn cancel(&self, py: Python<'_>, queue: &str, id: String, remove: bool, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.cancel(&q, &id, remove).await }, |py, r: CancelReply| {
                let rec = record_tuple(py, r.record)?;
                Ok((r.state.as_str(), rec, r.done).into_pyobject(py)?.into_any().unbind())
            })
        })
    }

    /// Puts one failed job back in its queue, attempts reset; False if it is not failed.
    #[pyo3(signature = (queue, id, *, asynchronous = false))]
    fn retry_job(&self, py: Python<'_>, queue: &str, id: String, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.retry_job(&q, &id).await }, bool_obj)
        })
    }

    /// Cancels every waiting and delayed job of the queue, page by page: (how many, [(id,
    /// name, options JSON)] of those that carry options).
    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn empty(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(
                py,
                asynchronous,
                async move {
                    store.known_queue(&q).await?;
                    let (mut total, mut with_options) = (0, vec![]);
                    loop {
                        let (n, recs) = store.empty_page(&q, EMPTY_PAGE).await?;
                        total += n;
                        with_options.extend(recs);
                        if n < EMPTY_PAGE as u64 {
                            return Ok((total, with_options));
                        }
                    }
                },
                |py, (n, recs): (u64, Vec<Vec<u8>>)| {
                    let opts: Vec<(String, String, Py<PyBytes>)> = recs
                        .iter()
                        .filter_map(|raw| Record::unpack(raw).ok())
                        .map(|r| (r.id, r.name, PyBytes::new(py, &r.options).unbind()))
                        .collect();
                    Ok((n, opts).into_pyobject(py)?.into_any().unbind())
                },
            )
        })
    }

    /// Deletes every key of the queue; refuses while jobs run unless `force`.
    #[pyo3(signature = (queue, *, force = false, asynchronous = false))]
    fn obliterate(&self, py: Python<'_>, queue: &str, force: bool, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(
                py,
                asynchronous,
                async move {
                    store.known_queue(&q).await?;
                    let active = store.counts(&q).await?.active;
                    if active > 0 && !force {
                        return Err(crate::error::Error::Invalid(format!(
                            "queue '{}' has {active} running job(s): obliterating it would lose their outcomes; stop its workers, or pass force=True",
                            q.name()
                        )));
                    }
                    store.obliterate(&q).await
                },
                int_obj,
            )
        })
    }

    /// Replaces the queue's limits: `rate` jobs per `per` seconds and/or `concurrency` jobs
    /// leased at once (None: no such limit). Checked by the caller (Queue.set_limits).
    #[pyo3(signature = (queue, rate = None, per = None, concurrency = None, *, asynchronous = false))]
    fn set_limits(
        &self,
        py: Python<'_>,
        queue: &str,
        rate: Option<u64>,
        per: Option<f64>,
        concurrency: Option<u64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let limits = limits_of(rate, per, concurrency)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.set_limits(&q, &limits).await }, |py, ()| Ok(py.None()))
        })
    }

    /// (rate, per seconds, concurrency), None where there is no such limit.
    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn limits(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.limits(&q).await }, limits_tuple)
        })
    }

    /// Replaces the limits each group of the queue has: `rate` jobs per `per` seconds and/or
    /// `concurrency` jobs leased at once, per group (None: no such limit). Checked by the
    /// caller (Queue.set_group_limits).
    #[pyo3(signature = (queue, rate = None, per = None, concurrency = None, *, asynchronous = false))]
    fn set_group_limits(
        &self,
        py: Python<'_>,
        queue: &str,
        rate: Option<u64>,
        per: Option<f64>,
        concurrency: Option<u64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let limits = limits_of(rate, per, concurrency)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.set_group_limits(&q, &limits).await }, |py, ()| Ok(py.None()))
        })
    }

    /// (rate, per seconds, concurrency) of every group, None where there is no such limit.
    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn group_limits(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.group_limits(&q).await }, limits_tuple)
        })
    }

    /// Every queue's name (dispatched to or consumed at least once), sorted.
    #[pyo3(signature = (*, asynchronous = false))]
    fn queues(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let store = b.store.clone();
            call(py, asynchronous, async move { store.queues().await }, |py, v: Vec<String>| Ok(v.into_pyobject(py)?.into_any().unbind()))
        })
    }

    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn failed_retry(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.failed_retry(&q).await }, int_obj)
        })
    }

    #[pyo3(signature = (queue, *, asynchronous = false))]
    fn failed_purge(&self, py: Python<'_>, queue: &str, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let q = b.queue(queue).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.failed_purge(&q).await }, int_obj)
        })
    }

    /// A writer for one bulk dispatch of `name` jobs to `queue`, all with the same options.
    #[pyo3(signature = (queue, name, *, attempts, priority, options = None, delay_us = 0, at_us = None, window = 3))]
    #[allow(clippy::too_many_arguments)]
    fn bulk_writer(
        &self,
        queue: &str,
        name: String,
        attempts: u16,
        priority: u8,
        options: Option<Vec<u8>>,
        delay_us: u64,
        at_us: Option<u64>,
        window: usize,
    ) -> PyResult<BulkWriter> {
        let target = self.backend.target(queue).map_err(super::errors::to_py)?;
        let options = options.unwrap_or_default();
        check_fields("x", &name, &options).map_err(super::errors::to_py)?;
        // The raw bulk write goes to the ready list: grouped jobs take `prepare_batch`.
        if options_group(&options).map_err(super::errors::to_py)?.is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err("a bulk writer cannot write jobs of a group: use prepare_batch"));
        }
        if attempts < 1 || priority > 9 {
            return Err(pyo3::exceptions::PyValueError::new_err("attempts must be at least 1 and priority 0 to 9"));
        }
        let spec = BulkSpec {
            name,
            header: Header { attempt: 0, max_attempts: attempts, priority },
            options,
            delay_us,
            at_us,
            max_payload: self.max_payload,
            enqueued_ms: now_ms(),
        };
        Ok(BulkWriter::new(target, spec, self.ids.clone(), window))
    }

    /// Fields of a workflow's record (`chain:<id>` or `flow:<id>`): [bytes or None].
    #[pyo3(signature = (book, fields, *, asynchronous = false))]
    fn book_get(&self, py: Python<'_>, book: String, fields: Vec<String>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            crate::store::check_book(&book).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.book_get(&book, fields).await }, |py, v: Vec<Option<Vec<u8>>>| {
                let out = PyList::empty(py);
                for b in v {
                    out.append(bytes_or_none(py, b))?;
                }
                Ok(out.into_any().unbind())
            })
        })
    }

    /// Sets fields of a workflow's record; `ttl` (seconds) sets its expiry.
    #[pyo3(signature = (book, fields, ttl = None, *, asynchronous = false))]
    fn book_set(
        &self,
        py: Python<'_>,
        book: String,
        fields: Vec<(String, Vec<u8>)>,
        ttl: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            crate::store::check_book(&book).map_err(super::errors::to_py)?;
            let ttl = ttl.filter(|t| t.is_finite() && *t > 0.0).map(Duration::from_secs_f64);
            let store = b.store.clone();
            call(py, asynchronous, async move { store.book_set(&book, fields, ttl).await }, |py, _| Ok(py.None()))
        })
    }

    /// Flow children finished for good, settled together (`Store::flow_settle`): `items` are
    /// (flow id, child node, parent node, 'c'|'f', child job id, JSON kept, policy); returns
    /// per item [b"wait"], [b"release", spec] or [b"fail", error].
    #[pyo3(signature = (items, *, asynchronous = false))]
    fn flow_settle(&self, py: Python<'_>, items: Vec<FlowSettleItem>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let mut settles = Vec::with_capacity(items.len());
            for (flow_id, child, parent, outcome, job_id, data, policy) in items {
                crate::store::check_book(&format!("flow:{flow_id}")).map_err(super::errors::to_py)?;
                let policy = crate::store::ChildPolicy::parse(&policy).map_err(super::errors::to_py)?;
                settles.push(crate::store::FlowSettle { flow_id, child, parent, failed: outcome == "f", job_id, data, policy });
            }
            let store = b.store.clone();
            call(py, asynchronous, async move { store.flow_settle(settles).await }, |py, v: Vec<crate::store::FlowSettled>| {
                use crate::store::FlowSettled;
                let out = PyList::empty(py);
                for answer in v {
                    let (kind, data): (&[u8], Option<Vec<u8>>) = match answer {
                        FlowSettled::Wait => (b"wait", None),
                        FlowSettled::Release(d) => (b"release", d),
                        FlowSettled::Fail(d) => (b"fail", d),
                    };
                    let a = PyList::empty(py);
                    a.append(PyBytes::new(py, kind))?;
                    if let Some(d) = data {
                        a.append(PyBytes::new(py, &d))?;
                    }
                    out.append(a)?;
                }
                Ok(out.into_any().unbind())
            })
        })
    }

    /// What a flow node's children left for it: [(child job id, JSON)].
    #[pyo3(signature = (flow_id, node, *, asynchronous = false))]
    fn flow_results(&self, py: Python<'_>, flow_id: String, node: u32, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            crate::store::check_book(&format!("flow:{flow_id}")).map_err(super::errors::to_py)?;
            let store = b.store.clone();
            call(py, asynchronous, async move { store.flow_results(&flow_id, node).await }, pairs_list)
        })
    }

    /// Writes this worker's entry in the registry of workers.
    #[pyo3(signature = (worker, entry, *, asynchronous = false))]
    fn worker_put(&self, py: Python<'_>, worker: String, entry: Vec<u8>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let store = b.store.clone();
            call(py, asynchronous, async move { store.worker_put(worker, entry).await }, |py, _| Ok(py.None()))
        })
    }

    /// Every entry of the registry of workers: [(worker id, JSON bytes)].
    #[pyo3(signature = (*, asynchronous = false))]
    fn workers_read(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let store = b.store.clone();
            call(py, asynchronous, async move { store.workers_read().await }, pairs_list)
        })
    }

    /// Deletes entries of the registry of workers (a stopped worker's, gone ones); returns how many were there.
    #[pyo3(signature = (workers, *, asynchronous = false))]
    fn workers_remove(&self, py: Python<'_>, workers: Vec<String>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let store = b.store.clone();
            call(py, asynchronous, async move { store.workers_remove(workers).await }, int_obj)
        })
    }

    /// Seconds results are kept (the chains' bookkeeping lives as long).
    #[getter]
    fn result_ttl(&self) -> f64 {
        self.settings.result_ttl.as_secs_f64()
    }

    #[pyo3(signature = (*, asynchronous = false))]
    fn ping(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        on_store!(&self.backend, Backend, b => {
            let store = b.store.clone();
            call(py, asynchronous, async move { store.ping().await }, |py, _| Ok(py.None()))
        })
    }
}

/// Jobs of one queue packed and given their ids by `Client.prepare_batch`, written by `send`
/// (again after a failure, safely: see `Watermark::guard`).
#[pyclass(module = "fastjobs._core", frozen)]
pub struct PreparedBatch {
    target: AnyTarget,
    jobs: Arc<Vec<NewJob>>,
    mark: Option<Arc<Watermark>>,
}

#[pymethods]
impl PreparedBatch {
    /// The jobs' ids, in order.
    fn ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.id.clone()).collect()
    }

    /// Writes the batch atomically; returns [(id, created, deduplicated)] as `Client.enqueue`
    /// does (a batch written already by an earlier try answers created for every job).
    #[pyo3(signature = (*, asynchronous = false))]
    fn send(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        let (jobs, mark) = (self.jobs.clone(), self.mark.clone());
        on_store!(&self.target, AnyTarget, t => {
            let (store, q) = (t.store.clone(), t.queue.clone());
            let fut = async move {
                let written = store.enqueue(&q, &jobs, mark.as_deref()).await?;
                Ok(written_tuples(jobs.iter().map(|j| j.id.clone()).collect(), written))
            };
            call(py, asynchronous, fut, |py, v: Vec<(String, bool, bool)>| Ok(v.into_pyobject(py)?.into_any().unbind()))
        })
    }

    /// Whether the batch was written: True or False for a batch with generated ids (its
    /// guard), None for one whose ids were all chosen by the caller (they protect themselves).
    #[pyo3(signature = (*, asynchronous = false))]
    fn written(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        let guard = self.mark.as_ref().and_then(|m| m.guard.map(|g| (m.producer.clone(), g)));
        on_store!(&self.target, AnyTarget, t => {
            let (store, q) = (t.store.clone(), t.queue.clone());
            let fut = async move {
                match guard {
                    Some(g) => Ok(store.chunks_written(&q, &[g]).await?.first().copied()),
                    None => Ok(None),
                }
            };
            call(py, asynchronous, fut, |py, v: Option<bool>| Ok(v.into_pyobject(py)?.to_owned().into_any().unbind()))
        })
    }
}

/// A hash's fields as Python's [(field, bytes)].
fn pairs_list(py: Python<'_>, v: Vec<(String, Vec<u8>)>) -> PyResult<Py<PyAny>> {
    let out = PyList::empty(py);
    for (k, b) in v {
        out.append((k, PyBytes::new(py, &b)))?;
    }
    Ok(out.into_any().unbind())
}

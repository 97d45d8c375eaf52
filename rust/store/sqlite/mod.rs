//! The SQLite store (`sqlite:///path/to/file.db`): durable and embedded, for one machine. One
//! database file shared by several processes (producers and workers), each operation one
//! transaction (`BEGIN IMMEDIATE` for writes, so concurrent processes queue on the busy
//! timeout rather than fail), with the semantics of the Redis scripts (rust/store/redis/lua/).
//!
//! rusqlite is synchronous: every operation runs on tokio's blocking pool over the store's one
//! connection (behind a mutex), never on a runtime thread. Wake-ups within a process use a
//! condvar and `Notify`s as the memory store does; across processes SQLite has no notification,
//! so one thread per store reads `PRAGMA data_version` every `POLL` (the cross-process
//! latency) and wakes them all when another process committed: an unchanged database costs
//! one pragma per poll.

mod books;
mod control;
mod events;
mod feedback;
mod queue;
use crate::store::lenient as record;
mod reserve;

use crate::error::{Error, Result};
use crate::store::chunk::Chunk;
use crate::store::*;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The schema this build writes and reads (`fastjobs_meta.schema_version`).
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = include_str!("schema.sql");
/// How often a blocked worker or result waiter looks for changes made by other processes.
pub const POLL: Duration = Duration::from_millis(50);
/// How often a result waiter reads the job's status without being woken.
const RECHECK: Duration = Duration::from_secs(1);
/// How long a write waits for another process's transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long caller-chosen ids and deduplication marks outlive a job at least (as MemoryStore's).
const MARK_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// The time bounds an operation works with: the store's clock and its settings.
#[derive(Clone, Copy)]
pub struct Clock {
    pub now_us: i64,
    pub now_ms: i64,
    pub result_ttl_ms: i64,
    pub mark_ttl_ms: i64,
}

/// What one operation asks the store to wake once it committed.
#[derive(Default)]
pub struct Wake {
    /// Ready jobs may wait, or a worker was nudged (`wait_for_work`).
    pub work: bool,
    /// Queues paused, resumed, limited anew, or with a running job asked to cancel (`control_signal`).
    pub control: Vec<String>,
    /// Queues with a delayed job that may fall due earlier than their schedulers knew (`schedule_signal`).
    pub sched: Vec<String>,
    /// Another process wrote: every signal may concern it.
    pub all: bool,
}

impl Wake {
    pub fn control(&mut self, q: &str) {
        if !self.control.iter().any(|c| c == q) {
            self.control.push(q.to_string());
        }
    }

    pub fn sched(&mut self, q: &str) {
        if !self.sched.iter().any(|c| c == q) {
            self.sched.push(q.to_string());
        }
    }
}

/// A queue of the SQLite store: its name, the key of its rows.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    name: String,
    /// The key of its rows: the store's key prefix, a newline, the name.
    key: String,
}

impl QueueHandle for SqliteQueue {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The signals of one queue in this process.
#[derive(Default)]
struct Signals {
    control: Arc<tokio::sync::Notify>,
    sched: Arc<tokio::sync::Notify>,
}

/// What the blocking pool and the caller's threads share: the connection and the wake-ups.
struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Bumped on every commit of this process that may wake a blocked worker.
    generation: Mutex<u64>,
    work: Condvar,
    settled: tokio::sync::Notify,
    signals: Mutex<HashMap<String, Signals>>,
    schedules_changed: Arc<tokio::sync::Notify>,
    result_ttl: Duration,
}

pub struct SqliteStore {
    db: Arc<Db>,
    /// `<prefix>\n`, first in every key of its rows: two prefixes share a file apart, as on
    /// one Redis (a newline is in neither a prefix nor a name, so no two keys meet).
    prefix: String,
}

/// The file a `sqlite://` URL names (`sqlite:///abs/path.db`, `sqlite://relative.db`).
pub fn store_path(url: &str) -> Result<PathBuf> {
    match url.strip_prefix("sqlite://") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(Error::Invalid(format!("invalid SQLite store URL {url:?}: use sqlite:///path/to/file.db"))),
    }
}

fn now() -> (i64, i64) {
    let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    (us, us / 1000)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Db {
    fn fail(&self, e: rusqlite::Error) -> Error {
        match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                Error::Invalid(format!("{} is not a fastjobs database: {e}", self.path.display()))
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                Error::Timeout(format!("SQLite database {} stayed locked by another process: {e}", self.path.display()))
            }
            e => Error::Store(format!("SQLite database {}: {e}", self.path.display())),
        }
    }

    fn clock(&self) -> Clock {
        let (now_us, now_ms) = now();
        let result_ttl_ms = self.result_ttl.as_millis() as i64;
        Clock { now_us, now_ms, result_ttl_ms, mark_ttl_ms: result_ttl_ms.max(MARK_TTL_MS) }
    }

    /// One transaction: `BEGIN IMMEDIATE` when it writes, so it never fails half way on a lock.
    fn run<T>(&self, write: bool, f: impl FnOnce(&Transaction<'_>, Clock, &mut Wake) -> rusqlite::Result<T>) -> Result<T> {
        let mut wake = Wake::default();
        let out = {
            let mut conn = lock(&self.conn);
            let behavior = if write { TransactionBehavior::Immediate } else { TransactionBehavior::Deferred };
            let tx = conn.transaction_with_behavior(behavior).map_err(|e| self.fail(e))?;
            let out = f(&tx, self.clock(), &mut wake).map_err(|e| self.fail(e))?;
            tx.commit().map_err(|e| self.fail(e))?;
            out
        };
        if write {
            self.changed(wake);
        }
        Ok(out)
    }

    /// Wakes what a committed write may concern in this process.
    fn changed(&self, wake: Wake) {
        if wake.work {
            *lock(&self.generation) += 1;
            self.work.notify_all();
        }
        self.settled.notify_waiters();
        if wake.all || !wake.control.is_empty() || !wake.sched.is_empty() {
            let signals = lock(&self.signals);
            for (q, s) in signals.iter() {
                if wake.all || wake.control.contains(q) {
                    s.control.notify_waiters();
                }
                if wake.all || wake.sched.contains(q) {
                    s.sched.notify_waiters();
                }
            }
        }
        if wake.all {
            self.schedules_changed.notify_waiters();
        }
    }

    fn data_version(&self) -> Result<i64> {
        lock(&self.conn).query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(|e| self.fail(e))
    }
}

/// Wakes this process's waiters and signals when another process committed: SQLite tells no
/// one, so a thread reads `PRAGMA data_version` every `POLL` (it changes only on other
/// connections' commits). It ends with the store.
fn watch(db: &Arc<Db>) -> Result<()> {
    let weak = Arc::downgrade(db);
    let mut last = db.data_version()?;
    std::thread::Builder::new()
        .name("fastjobs-sqlite-watch".into())
        .spawn(move || loop {
            std::thread::sleep(POLL);
            let Some(db) = weak.upgrade() else { return };
            let Ok(now) = db.data_version() else { continue };
            if now != last {
                last = now;
                db.changed(Wake { work: true, all: true, ..Wake::default() });
            }
        })
        .map_err(|e| Error::Store(format!("SQLite store: cannot start its watch thread: {e}")))?;
    Ok(())
}

/// Opens (creating when missing) the database and its schema; refuses a file that is not one.
fn open_connection(path: &Path) -> Result<Connection> {
    let shown = path.display();
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| Error::Store(format!("cannot open SQLite database {shown}: {e}")))?;
    let not_ours = |e: rusqlite::Error| Error::Invalid(format!("{shown} is not a fastjobs database: {e}"));
    conn.busy_timeout(BUSY_TIMEOUT).map_err(not_ours)?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).map_err(not_ours)?;
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'fastjobs_meta'", [], |r| r.get::<_, i64>(0))
        .map_err(not_ours)?
        > 0;
    if tables > 0 && !has_meta {
        return Err(Error::Invalid(format!("{shown} is a SQLite database but not a fastjobs one (it has other tables)")));
    }
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(|e| Error::Store(format!("SQLite database {shown}: WAL mode: {e}")))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(|e| Error::Store(format!("SQLite database {shown}: {e}")))?;
    let schema = |e: rusqlite::Error| Error::Store(format!("SQLite database {shown}: creating the fastjobs schema: {e}"));
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO fastjobs_meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
    ))
    .map_err(schema)?;
    let version: String =
        conn.query_row("SELECT value FROM fastjobs_meta WHERE key = 'schema_version'", [], |r| r.get(0)).map_err(schema)?;
    if version != SCHEMA_VERSION.to_string() {
        return Err(Error::Invalid(format!(
            "{shown} holds fastjobs schema version {version}; this fastjobs reads version {SCHEMA_VERSION}"
        )));
    }
    Ok(conn)
}

impl SqliteStore {
    /// The store of the database file at `path`, made (with its schema) when missing, for
    /// key prefix `prefix`.
    pub fn open(path: impl AsRef<Path>, prefix: &str, result_ttl: Duration) -> Result<SqliteStore> {
        validate_prefix(prefix)?;
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path)?;
        let store = SqliteStore {
            db: Arc::new(Db {
                path,
                conn: Mutex::new(conn),
                generation: Mutex::new(0),
                work: Condvar::new(),
                settled: tokio::sync::Notify::new(),
                signals: Mutex::default(),
                schedules_changed: Arc::default(),
                result_ttl,
            }),
            prefix: format!("{prefix}\n"),
        };
        watch(&store.db)?;
        Ok(store)
    }

    /// The store a `sqlite://` URL names, with `settings.result_ttl`.
    pub fn open_with(settings: &Settings) -> Result<SqliteStore> {
        SqliteStore::open(store_path(&settings.url)?, &settings.prefix, settings.result_ttl)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `f` in one transaction on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&Transaction<'_>, Clock, &mut Wake) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.run(write, f))
            .await
            .map_err(|e| Error::Store(format!("SQLite store: an operation did not finish: {e}")))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, Clock, &mut Wake) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.call(true, f).await
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Transaction<'_>, Clock) -> rusqlite::Result<T> + Send + 'static) -> Result<T> {
        self.call(false, move |tx, c, _| f(tx, c)).await
    }

    /// Up to `limit` entries of the queue's events stream after entry id `after` (`<ms>-<seq>`:
    /// its number orders it), oldest first; blocking, for a reader's thread.
    pub fn events_read(&self, q: &SqliteQueue, after: &str, limit: usize) -> Result<Vec<events::Entry>> {
        let after = after.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok()).unwrap_or(0).min(i64::MAX as u64) as i64;
        self.db.run(false, |tx, _, _| events::read(tx, &q.key, after, limit))
    }

    /// The id of the newest entry of the queue's events stream, "0-0" when there is none.
    pub fn events_last(&self, q: &SqliteQueue) -> Result<String> {
        Ok(self.db.run(false, |tx, _, _| events::last(tx, &q.key))?.unwrap_or_else(|| "0-0".into()))
    }

    fn signals<T>(&self, q: &SqliteQueue, f: impl FnOnce(&Signals) -> T) -> T {
        f(lock(&self.db.signals).entry(q.key.clone()).or_default())
    }
}

fn check_feedback(entry: &[u8]) -> Result<()> {
    if entry.first() != Some(&b'{') || entry.len() < 3 {
        return Err(Error::Invalid("a progress or log entry is a JSON object".into()));
    }
    if entry.len() > MAX_FEEDBACK_BYTES + 256 {
        return Err(Error::Invalid(format!(
            "a progress or log entry takes at most {MAX_FEEDBACK_BYTES} bytes of JSON, got {}",
            entry.len()
        )));
    }
    Ok(())
}

impl Store for SqliteStore {
    type Queue = SqliteQueue;
    type Packed = (Vec<NewJob>, Watermark);

    fn queue(&self, name: &str) -> Result<Arc<SqliteQueue>> {
        validate_queue_name(name)?;
        Ok(Arc::new(SqliteQueue { name: name.to_string(), key: self.key(name) }))
    }

    async fn enqueue(&self, q: &SqliteQueue, jobs: &[NewJob], mark: Option<&Watermark>) -> Result<Vec<Written>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let (name, jobs, mark) = (q.key.clone(), jobs.to_vec(), mark.cloned());
        self.write(move |tx, c, w| queue::enqueue(tx, &name, &jobs, mark.as_ref(), c, w)).await
    }

    fn pack_chunk(&self, _q: &SqliteQueue, chunk: &Chunk) -> Self::Packed {
        chunk.pack()
    }

    async fn write_chunk(&self, q: &SqliteQueue, packed: &Self::Packed) -> Result<()> {
        let (name, jobs, mark) = (q.key.clone(), packed.0.clone(), packed.1.clone());
        self.write(move |tx, c, w| queue::enqueue(tx, &name, &jobs, Some(&mark), c, w).map(|_| ())).await
    }

    async fn chunks_written(&self, q: &SqliteQueue, chunks: &[(String, u64)]) -> Result<Vec<bool>> {
        let (name, chunks) = (q.key.clone(), chunks.to_vec());
        self.read(move |tx, _| queue::chunks_written(tx, &name, &chunks)).await
    }

    fn enqueue_parts_blocking(&self, parts: &[Part<'_, SqliteQueue>]) -> Result<Vec<Result<Vec<Written>>>> {
        // Every part in one transaction: one commit for all the dispatches gathered.
        self.db.run(true, |tx, c, w| {
            parts
                .iter()
                .map(|p| match p.mark {
                    Some(m) if m.guard.is_some() => {
                        Ok(Err(Error::Invalid("a guarded chunk is written on its own, not with other dispatches".into())))
                    }
                    _ if p.jobs.is_empty() => Ok(Ok(vec![])),
                    mark => queue::enqueue(tx, &p.q.key, p.jobs, mark, c, w).map(Ok),
                })
                .collect()
        })
    }

    async fn reserve(&self, q: &SqliteQueue, token: &str, max: usize, idle: &Idle<'_>) -> Result<Reserved> {
        let (name, token, lease_ms) = (q.key.clone(), token.to_string(), idle.lease.as_millis() as i64);
        self.write(move |tx, c, w| reserve::reserve(tx, &name, &token, max, lease_ms, c, w)).await
    }

    async fn ack(&self, acks: &[LeaseAck<SqliteQueue>]) -> Result<Vec<AckOutcome>> {
        let acks: Vec<(String, String, Vec<AckEntry>)> =
            acks.iter().map(|a| (a.queue.key.clone(), a.token.clone(), a.entries.clone())).collect();
        self.write(move |tx, c, w| acks.iter().map(|(name, token, entries)| queue::ack(tx, name, token, entries, c, w)).collect()).await
    }

    async fn start(&self, q: &SqliteQueue, token: &str, id: &[u8]) -> Result<bool> {
        let (name, token, id) = (q.key.clone(), token.to_string(), String::from_utf8_lossy(id).into_owned());
        self.write(move |tx, c, _| queue::start(tx, &name, &token, &id, c)).await
    }

    async fn release(&self, q: &SqliteQueue, token: &str, ids: &[Vec<u8>]) -> Result<u64> {
        let (name, token, ids) = (q.key.clone(), token.to_string(), ids.to_vec());
        self.write(move |tx, c, w| queue::release(tx, &name, &token, &ids, c, w)).await
    }

    async fn extend(&self, leases: &[(Arc<SqliteQueue>, Vec<String>)], lease: Duration) -> Result<Extended> {
        let leases: Vec<(String, Vec<String>)> = leases.iter().map(|(q, t)| (q.key.clone(), t.clone())).collect();
        let lease_ms = lease.as_millis() as i64;
        self.write(move |tx, c, _| {
            let mut out = Extended::default();
            for (i, (name, tokens)) in leases.iter().enumerate() {
                let (lost, cancel) = queue::extend(tx, name, tokens, c.now_ms + lease_ms)?;
                out.lost.extend(lost);
                out.cancel.extend(cancel.into_iter().map(|id| (i, id)));
            }
            Ok(out)
        })
        .await
    }

    async fn expire_worker(&self, q: &SqliteQueue, worker: &str, most: usize) -> Result<Expired> {
        let (name, worker) = (q.key.clone(), worker.to_string());
        self.write(move |tx, _, _| queue::expire_worker(tx, &name, &worker, most)).await
    }

    async fn tick(&self, q: &SqliteQueue, limit: usize) -> Result<Tick> {
        let name = q.key.clone();
        self.write(move |tx, c, w| queue::tick(tx, &name, limit.max(1), c, w)).await
    }

    fn wait_for_work(&self, queues: &[Arc<SqliteQueue>], worker: &str, timeout: Duration) -> Result<Option<Handed>> {
        let names: Vec<String> = queues.iter().map(|q| q.key.clone()).collect();
        let deadline = Instant::now() + timeout;
        let mut seen: Option<(u64, i64)> = None;
        loop {
            let now_seen = (*lock(&self.db.generation), self.db.data_version()?);
            if seen != Some(now_seen) {
                seen = Some(now_seen);
                if self.db.run(true, |tx, _, _| queue::has_work(tx, &names, worker))? {
                    return Ok(None);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let generation = lock(&self.db.generation);
            if *generation == now_seen.0 {
                drop(self.db.work.wait_timeout(generation, left.min(POLL)).unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    async fn nudge(&self, q: &SqliteQueue, worker: &str) -> Result<()> {
        let (name, worker) = (q.key.clone(), worker.to_string());
        self.write(move |tx, _, w| queue::nudge(tx, &name, &worker, w)).await
    }

    async fn leave(&self, q: &SqliteQueue, worker: &str, _slot: Option<&str>) -> Result<u64> {
        // Nothing is handed over here: only the stop marker, which ends the worker's wait.
        self.nudge(q, worker).await?;
        Ok(0)
    }

    async fn status(&self, q: &SqliteQueue, id: &str) -> Result<Status> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.read(move |tx, c| control::status(tx, &name, &id, false, c)).await
    }

    async fn info(&self, q: &SqliteQueue, id: &str) -> Result<Status> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.read(move |tx, c| control::status(tx, &name, &id, true, c)).await
    }

    async fn feedback(&self, q: &SqliteQueue, id: &str, kind: Feedback, entry: &[u8], ttl: Duration) -> Result<i64> {
        check_feedback(entry)?;
        let ttl_ms = ttl.as_millis().max(1000) as i64;
        let (name, id, entry) = (q.key.clone(), id.to_string(), entry.to_vec());
        self.write(move |tx, c, _| feedback::feedback(tx, &name, &id, kind, &entry, ttl_ms, c)).await
    }

    async fn set_events(&self, q: &SqliteQueue, keep: Option<u64>) -> Result<()> {
        let name = q.key.clone();
        self.write(move |tx, _, _| events::set_events(tx, &name, keep)).await
    }

    async fn events_keep(&self, q: &SqliteQueue) -> Result<Option<u64>> {
        let name = q.key.clone();
        self.read(move |tx, _| events::events_keep(tx, &name)).await
    }

    async fn progress(&self, q: &SqliteQueue, id: &str) -> Result<Option<Vec<u8>>> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.read(move |tx, c| feedback::progress(tx, &name, &id, c)).await
    }

    async fn logs(&self, q: &SqliteQueue, id: &str, start: usize, limit: usize) -> Result<Vec<Vec<u8>>> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.read(move |tx, c| feedback::logs(tx, &name, &id, start, limit, c)).await
    }

    async fn callback_record(&self, q: &SqliteQueue, id: &str, fields: Vec<(&'static str, Vec<u8>)>) -> Result<()> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.write(move |tx, c, _| feedback::callback_record(tx, &name, &id, fields, c)).await
    }

    async fn callback_status(&self, q: &SqliteQueue, id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.read(move |tx, c| feedback::callback_status(tx, &name, &id, c)).await
    }

    async fn wait_result(&self, q: Arc<SqliteQueue>, id: String, timeout: Option<Duration>) -> Result<Option<Status>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let settled = self.db.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let st = self.status(&q, &id).await?;
            if st.state.is_final() || st.state == State::Unknown {
                return Ok(Some(st));
            }
            // Notified by this process's writes and, through the watch thread, by other
            // processes'; the status is read again each second all the same.
            let poll = tokio::time::Instant::now() + RECHECK;
            let until = deadline.map_or(poll, |d| d.min(poll));
            let _ = tokio::time::timeout_at(until, settled).await;
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    async fn counts(&self, q: &SqliteQueue) -> Result<Counts> {
        let name = q.key.clone();
        self.read(move |tx, _| control::counts(tx, &name)).await
    }

    async fn pause(&self, q: &SqliteQueue) -> Result<bool> {
        self.known_queue(q).await?;
        let name = q.key.clone();
        Ok(!self.write(move |tx, _, w| control::set_paused(tx, &name, true, w)).await?)
    }

    async fn resume(&self, q: &SqliteQueue) -> Result<bool> {
        self.known_queue(q).await?;
        let name = q.key.clone();
        self.write(move |tx, _, w| control::set_paused(tx, &name, false, w)).await
    }

    async fn control_signal(&self, q: &SqliteQueue) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.signals(q, |s| s.control.clone()))
    }

    async fn register_queues(&self, names: &[&str]) -> Result<()> {
        let names: Vec<String> = names.iter().map(|n| self.key(n)).collect();
        self.write(move |tx, _, _| control::register(tx, &names)).await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let prefix = self.prefix.clone();
        self.read(move |tx, _| control::registered(tx, &prefix)).await
    }

    async fn cancel(&self, q: &SqliteQueue, id: &str, remove: bool) -> Result<CancelReply> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.write(move |tx, c, w| control::cancel(tx, &name, &id, remove, c, w)).await
    }

    async fn set_limits(&self, q: &SqliteQueue, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        let (name, limits) = (q.key.clone(), *limits);
        self.write(move |tx, _, w| reserve::set_limits(tx, &name, &limits, w)).await
    }

    async fn limits(&self, q: &SqliteQueue) -> Result<Limits> {
        let name = q.key.clone();
        self.read(move |tx, _| reserve::limits(tx, &name)).await
    }

    async fn set_group_limits(&self, q: &SqliteQueue, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        let (name, limits) = (q.key.clone(), *limits);
        self.write(move |tx, _, w| reserve::set_group_limits(tx, &name, &limits, w)).await
    }

    async fn group_limits(&self, q: &SqliteQueue) -> Result<Limits> {
        let name = q.key.clone();
        self.read(move |tx, _| reserve::group_limits(tx, &name)).await
    }

    async fn retry_job(&self, q: &SqliteQueue, id: &str) -> Result<bool> {
        let (name, id) = (q.key.clone(), id.to_string());
        self.write(move |tx, _, w| control::retry_job(tx, &name, &id, w)).await
    }

    async fn empty_page(&self, q: &SqliteQueue, max: usize) -> Result<(u64, Vec<Vec<u8>>)> {
        let name = q.key.clone();
        self.write(move |tx, c, _| control::empty_page(tx, &name, max, c)).await
    }

    async fn obliterate(&self, q: &SqliteQueue) -> Result<u64> {
        let name = q.key.clone();
        self.write(move |tx, _, w| control::obliterate(tx, &name, w)).await
    }

    async fn failed_list(&self, q: &SqliteQueue, limit: usize) -> Result<Vec<FailedJob>> {
        let name = q.key.clone();
        self.read(move |tx, _| control::failed_list(tx, &name, limit.max(1))).await
    }

    async fn failed_retry(&self, q: &SqliteQueue) -> Result<u64> {
        let name = q.key.clone();
        self.write(move |tx, _, w| control::failed_retry(tx, &name, w)).await
    }

    async fn failed_purge(&self, q: &SqliteQueue) -> Result<u64> {
        let name = q.key.clone();
        self.write(move |tx, _, _| control::failed_purge(tx, &name)).await
    }

    async fn schedule_signal(&self, q: &SqliteQueue) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.signals(q, |s| s.sched.clone()))
    }

    async fn schedule_upsert(&self, mut w: ScheduleWrite) -> Result<(bool, i64)> {
        w.key = self.key(&w.key);
        let (created, next, retimed) = self.write(move |tx, c, _| books::schedule_upsert(tx, w, c)).await?;
        if retimed {
            self.db.schedules_changed.notify_waiters();
        }
        Ok((created, next))
    }

    async fn schedule_read(&self, keys: Option<Vec<String>>) -> Result<Vec<ScheduleEntry>> {
        let (prefix, keys) = (self.prefix.clone(), keys.map(|k| k.iter().map(|k| self.key(k)).collect()));
        self.read(move |tx, _| books::schedule_read(tx, &prefix, keys)).await
    }

    async fn schedule_remove(&self, keys: Option<Vec<String>>) -> Result<u64> {
        let (prefix, keys) = (self.prefix.clone(), keys.map(|k| k.iter().map(|k| self.key(k)).collect()));
        self.write(move |tx, _, _| books::schedule_remove(tx, &prefix, keys)).await
    }

    async fn schedules_due(&self, limit: usize) -> Result<DueSchedules> {
        let prefix = self.prefix.clone();
        self.read(move |tx, c| books::schedules_due(tx, &prefix, limit, c)).await
    }

    async fn schedule_advance(&self, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> Result<bool> {
        let (key, job_id) = (self.key(key), job_id.to_string());
        self.write(move |tx, _, _| books::schedule_advance(tx, &key, tick_ms, next_ms, &job_id)).await
    }

    async fn schedules_signal(&self) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.db.schedules_changed.clone())
    }

    async fn book_get(&self, book: &str, fields: Vec<String>) -> Result<Vec<Option<Vec<u8>>>> {
        check_book(book)?;
        let book = self.key(book);
        self.read(move |tx, c| books::book_get(tx, &book, &fields, c)).await
    }

    async fn book_set(&self, book: &str, fields: Vec<(String, Vec<u8>)>, ttl: Option<Duration>) -> Result<()> {
        check_book(book)?;
        let book = self.key(book);
        self.write(move |tx, c, _| books::book_set(tx, &book, fields, ttl.map(|t| t.as_millis() as i64), c)).await
    }

    async fn flow_settle(&self, items: Vec<FlowSettle>) -> Result<Vec<FlowSettled>> {
        for i in &items {
            check_book(&format!("flow:{}", i.flow_id))?;
        }
        let books: Vec<String> = items.iter().map(|i| self.key(&format!("flow:{}", i.flow_id))).collect();
        self.write(move |tx, c, _| items.iter().zip(&books).map(|(i, book)| books::flow_settle(tx, book, i, c)).collect()).await
    }

    async fn flow_results(&self, flow_id: &str, node: u32) -> Result<Vec<(String, Vec<u8>)>> {
        check_book(&format!("flow:{flow_id}"))?;
        let book = self.key(&format!("flow:{flow_id}"));
        self.read(move |tx, _| books::flow_results(tx, &book, node)).await
    }

    async fn worker_put(&self, worker: String, entry: Vec<u8>) -> Result<()> {
        let worker = self.key(&worker);
        self.write(move |tx, _, _| books::worker_put(tx, &worker, &entry)).await
    }

    async fn workers_read(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = self.prefix.clone();
        self.read(move |tx, _| books::workers_read(tx, &prefix)).await
    }

    async fn workers_remove(&self, workers: Vec<String>) -> Result<u64> {
        let workers: Vec<String> = workers.iter().map(|w| self.key(w)).collect();
        self.write(move |tx, _, _| books::workers_remove(tx, &workers)).await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|tx, _| tx.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fastjobs-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn urls_name_files() {
        assert_eq!(store_path("sqlite:///tmp/a.db").unwrap(), PathBuf::from("/tmp/a.db"));
        assert_eq!(store_path("sqlite://a.db").unwrap(), PathBuf::from("a.db"));
        assert!(matches!(store_path("sqlite://"), Err(Error::Invalid(_))));
    }

    #[test]
    fn refuses_what_is_not_a_fastjobs_database() {
        let dir = temp("refuse");
        let junk = dir.join("junk.db");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        match SqliteStore::open(&junk, "fj", Duration::from_secs(60)) {
            Err(Error::Invalid(m)) => assert!(m.contains("junk.db") && m.contains("not a fastjobs database"), "{m}"),
            other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
        }
        let other = dir.join("other.db");
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        match SqliteStore::open(&other, "fj", Duration::from_secs(60)) {
            Err(Error::Invalid(m)) => assert!(m.contains("other.db") && m.contains("not a fastjobs one"), "{m}"),
            other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
        }
        match SqliteStore::open(dir.join("missing-dir").join("x.db"), "fj", Duration::from_secs(60)) {
            Err(Error::Store(m)) => assert!(m.contains("x.db"), "{m}"),
            other => panic!("expected Store, got {:?}", other.map(|_| ())),
        }
        let ours = dir.join("ours.db");
        drop(SqliteStore::open(&ours, "fj", Duration::from_secs(60)).unwrap());
        SqliteStore::open(&ours, "fj", Duration::from_secs(60)).expect("a fastjobs database opens again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a store wrote is there for the next one that opens the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_outlive_the_store() {
        let dir = temp("durable");
        let ttl = Duration::from_secs(60);
        let s = SqliteStore::open(dir.join("jobs.db"), "fj", ttl).unwrap();
        let q = s.queue("kept").unwrap();
        s.enqueue(&q, &[job("a"), job("b")], None).await.unwrap();
        let idle = Idle { worker: "w1", previous: None, register: false, lease: Duration::from_secs(30) };
        let Reserved::Jobs(recs) = s.reserve(&q, "w1.1", 1, &idle).await.unwrap() else { panic!("a job is ready") };
        assert_eq!(recs.len(), 1);
        drop(s);
        let s = SqliteStore::open(dir.join("jobs.db"), "fj", ttl).unwrap();
        let q = s.queue("kept").unwrap();
        let c = s.counts(&q).await.unwrap();
        assert_eq!((c.waiting, c.active), (1, 1));
        assert_eq!(s.status(&q, "a").await.unwrap().state, State::Active);
        assert_eq!(s.queues().await.unwrap(), vec!["kept".to_string()]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A worker held back by a limit waits for the next change: ready jobs it may not take do
    /// not end its wait again and again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limited_workers_do_not_spin() {
        let dir = temp("limited");
        let s = Arc::new(SqliteStore::open(dir.join("jobs.db"), "fj", Duration::from_secs(60)).unwrap());
        let q = s.queue("limited").unwrap();
        s.enqueue(&q, &[job("a"), job("b")], None).await.unwrap();
        s.set_limits(&q, &Limits { rate: None, concurrency: Some(1) }).await.unwrap();
        let idle = Idle { worker: "w1", previous: None, register: false, lease: Duration::from_secs(30) };
        assert!(matches!(s.reserve(&q, "w1.1", 10, &idle).await.unwrap(), Reserved::Jobs(_)));
        assert!(matches!(s.reserve(&q, "w1.2", 10, &idle).await.unwrap(), Reserved::Limited { retry_in: None }));
        let (store, queues) = (s.clone(), vec![q.clone()]);
        let waited = tokio::task::spawn_blocking(move || {
            // The first wait may take the wake-up the lease left; the second has nothing to take.
            store.wait_for_work(&queues, "w1", Duration::from_millis(300)).unwrap();
            let started = Instant::now();
            store.wait_for_work(&queues, "w1", Duration::from_millis(300)).unwrap();
            started.elapsed()
        })
        .await
        .unwrap();
        assert!(waited >= Duration::from_millis(250), "woken after {waited:?} with nothing it may take");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two key prefixes share a file apart, as on one Redis.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefixes_keep_apart() {
        let dir = temp("prefixes");
        let ttl = Duration::from_secs(60);
        let a = SqliteStore::open(dir.join("jobs.db"), "a", ttl).unwrap();
        let b = SqliteStore::open(dir.join("jobs.db"), "b", ttl).unwrap();
        let (qa, qb) = (a.queue("q").unwrap(), b.queue("q").unwrap());
        a.enqueue(&qa, &[job("x")], None).await.unwrap();
        a.worker_put("w1".into(), b"{}".to_vec()).await.unwrap();
        a.book_set("chain:c1", vec![("k".into(), b"v".to_vec())], None).await.unwrap();
        assert_eq!(a.queues().await.unwrap(), vec!["q".to_string()]);
        assert_eq!(a.workers_read().await.unwrap(), vec![("w1".to_string(), b"{}".to_vec())]);
        assert!(b.queues().await.unwrap().is_empty());
        assert!(b.workers_read().await.unwrap().is_empty());
        assert_eq!(b.counts(&qb).await.unwrap().waiting, 0);
        assert_eq!(b.status(&qb, "x").await.unwrap().state, State::Unknown);
        assert_eq!(b.book_get("chain:c1", vec!["k".into()]).await.unwrap(), vec![None]);
        assert_eq!(a.counts(&qa).await.unwrap().waiting, 1);
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn job(id: &str) -> NewJob {
        let mut record = Vec::new();
        let header = crate::record::Header { attempt: 0, max_attempts: 1, priority: 0 };
        crate::record::pack_into(&mut record, header, id, "task", 0, b"", b"null");
        NewJob { id: id.into(), custom_id: true, delay_us: 0, at_us: None, record, dedup: None, group: None }
    }

    /// Two stores on one file, as two processes share it: each hears of the other's writes
    /// within a few polls (a blocked worker, a result waiter, a control signal).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_share_one_file() {
        let dir = temp("shared");
        let ttl = Duration::from_secs(60);
        let producer = Arc::new(SqliteStore::open(dir.join("jobs.db"), "fj", ttl).unwrap());
        let worker = Arc::new(SqliteStore::open(dir.join("jobs.db"), "fj", ttl).unwrap());
        let (pq, wq) = (producer.queue("shared").unwrap(), worker.queue("shared").unwrap());
        producer.register_queues(&["shared"]).await.unwrap();

        let (w, queues) = (worker.clone(), vec![wq.clone()]);
        let waiter = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            w.wait_for_work(&queues, "w1", Duration::from_secs(20)).map(|h| (h.is_none(), started.elapsed()))
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(producer.enqueue(&pq, &[job("one")], None).await.unwrap(), vec![Written::New]);
        let (nothing_handed, waited) = waiter.await.unwrap().unwrap();
        assert!(nothing_handed && waited < Duration::from_secs(5), "woken by the other store's write after {waited:?}");

        let idle = Idle { worker: "w1", previous: None, register: false, lease: Duration::from_secs(30) };
        let Reserved::Jobs(recs) = worker.reserve(&wq, "w1.1", 10, &idle).await.unwrap() else { panic!("the job is ready") };
        assert_eq!(recs.len(), 1);
        let result = producer.wait_result(pq.clone(), "one".into(), Some(Duration::from_secs(20)));
        let entry = AckEntry {
            id: b"one".to_vec(),
            custom_id: true,
            retried: false,
            kind: AckKind::Completed { result: Some(b"42".to_vec()) },
            dedup: None,
            group: None,
        };
        let ack = LeaseAck { queue: wq.clone(), token: "w1.1".into(), entries: vec![entry] };
        let (st, acked) = tokio::join!(result, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            worker.ack(&[ack]).await
        });
        assert_eq!(acked.unwrap()[0].completed, 1);
        let st = st.unwrap().expect("the result within the timeout");
        assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"42"[..])));

        let control = worker.control_signal(&wq).await.unwrap();
        let notified = control.notified();
        assert!(producer.pause(&pq).await.unwrap());
        tokio::time::timeout(Duration::from_secs(5), notified).await.expect("the pause is heard by the other store");
        assert!(worker.counts(&wq).await.unwrap().paused);
        drop((producer, worker));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The events stream: nothing written while off; on, one entry per operation and kind,
    /// read by another store on the file in the order of the commits, resuming after an id.
    #[tokio::test]
    async fn the_events_stream_is_one_entry_per_operation_and_kind() {
        let dir = temp("events");
        let ttl = Duration::from_secs(60);
        let writer = SqliteStore::open(dir.join("jobs.db"), "fj", ttl).unwrap();
        let reader = SqliteStore::open(dir.join("jobs.db"), "fj", ttl).unwrap();
        let (wq, rq) = (writer.queue("ev").unwrap(), reader.queue("ev").unwrap());
        writer.enqueue(&wq, &[job("off")], None).await.unwrap();
        assert_eq!(reader.events_read(&rq, "0-0", 100).unwrap().len(), 0, "off: nothing written");
        writer.set_events(&wq, Some(100)).await.unwrap();
        let mut later = job("later");
        later.delay_us = 3_600_000_000;
        writer.enqueue(&wq, &[job("a"), job("b"), later], None).await.unwrap();
        let idle = Idle { worker: "w1", previous: None, register: false, lease: Duration::from_secs(30) };
        let Reserved::Jobs(recs) = writer.reserve(&wq, "w1.1", 10, &idle).await.unwrap() else { panic!("jobs are ready") };
        assert_eq!(recs.len(), 3);
        let done = |id: &str| AckEntry {
            id: id.as_bytes().to_vec(),
            custom_id: true,
            retried: false,
            kind: AckKind::Completed { result: Some(b"7".to_vec()) },
            dedup: None,
            group: None,
        };
        let ack = LeaseAck { queue: wq.clone(), token: "w1.1".into(), entries: vec![done("off"), done("a"), done("b")] };
        writer.ack(&[ack]).await.unwrap();
        let got = reader.events_read(&rq, "0-0", 100).unwrap();
        let kinds: Vec<(String, String)> = got
            .iter()
            .map(|(_, f)| (String::from_utf8_lossy(&f[0].1).into_owned(), String::from_utf8_lossy(&f[1].1).into_owned()))
            .collect();
        let want = [("waiting", "a\nb"), ("delayed", "later"), ("active", "off\na\nb"), ("completed", "off\na\nb")];
        assert_eq!(kinds, want.map(|(k, i)| (k.to_string(), i.to_string())));
        let field = |k: usize, name: &str| got[k].1.iter().find(|(f, _)| f == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(field(2, "w").as_deref(), Some("w1"));
        assert_eq!(field(2, "a").as_deref(), Some("[0,0,0]"));
        assert_eq!(field(3, "x").as_deref(), Some("[7,7,7]"));
        let name = record::name(&job("a").record).to_string();
        assert_eq!(field(3, "n"), Some(serde_json::to_string(&[&name, &name, &name]).unwrap()));
        assert_eq!(reader.events_last(&rq).unwrap(), got[3].0);
        assert_eq!(reader.events_read(&rq, &got[1].0, 100).unwrap().len(), 2, "resumes after an entry");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

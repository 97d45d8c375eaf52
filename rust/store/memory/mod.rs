//! The in-memory store (`memory://` and `memory://<name>`): the whole store contract in
//! process, with the semantics of the Redis scripts. One store per name per process, shared
//! by every client and worker of the process (`open`). Its state sits behind one mutex, held
//! only while an operation runs (never across an await); blocked workers wait on a condvar,
//! result waiters on a `Notify`. Its clock is the system clock.
//!
//! Hand-over to idle workers is a Redis latency trick: here a reserve with nothing ready
//! answers `Reserved::Empty`, and new work wakes `wait_for_work` instead.

mod books;
mod queue;
use crate::store::lenient as record;

pub use queue::Event;

use crate::error::{Error, Result};
use crate::store::chunk::Chunk;
use crate::store::*;
use books::{Books, Schedules};
use queue::{Clock, Queue};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long caller-chosen ids and deduplication marks outlive a job at least (as the Redis
/// store's completion marks, redis_store.rs MARK_TTL_SECS).
const MARK_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Default)]
struct Inner {
    queues: HashMap<String, Queue>,
    registry: BTreeSet<String>,
    schedules: Schedules,
    books: Books,
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Woken when a queue has work, or a worker was nudged (`wait_for_work`).
    work: Condvar,
    /// Notified when jobs settle (`wait_result`).
    settled: tokio::sync::Notify,
    schedules_changed: Arc<tokio::sync::Notify>,
    result_ttl: Duration,
}

/// The stores of this process, by name.
fn registry() -> &'static Mutex<HashMap<String, Arc<MemoryStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();
    STORES.get_or_init(Mutex::default)
}

/// The name a `memory://` URL gives its store ("" for `memory://`).
pub fn store_name(url: &str) -> Result<&str> {
    let name = url
        .strip_prefix("memory://")
        .ok_or_else(|| Error::Invalid(format!("invalid memory store URL {url:?}: use memory:// or memory://<name>")))?;
    if !name.is_empty() {
        validate_queue_name(name).map_err(|_| {
            Error::Invalid(format!("invalid memory store name {name:?}: use 1 to 100 letters, digits, '-', '_', '.' or ':'"))
        })?;
    }
    Ok(name)
}

/// The store a `memory://` URL names, made on first use: every client and worker of the
/// process that opens the same URL shares it.
pub fn open(url: &str) -> Result<Arc<MemoryStore>> {
    open_with(&Settings::new(url, "fj")?)
}

/// The store of `settings.url` and `settings.prefix` (as the Redis store keeps prefixes
/// apart), made on first use with `settings.result_ttl`.
pub fn open_with(settings: &Settings) -> Result<Arc<MemoryStore>> {
    let name = store_name(&settings.url)?;
    let mut stores = registry().lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{name}\n{}", settings.prefix);
    Ok(stores.entry(key).or_insert_with(|| Arc::new(MemoryStore::new().with_result_ttl(settings.result_ttl))).clone())
}

fn now() -> (i64, i64) {
    let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    (us, us / 1000)
}

/// A bulk chunk packed for the memory store (`Store::pack_chunk`).
pub enum Packed {
    /// Due now with generated ids (`Chunk::is_plain`): its records alone, each in a buffer of
    /// its own that the ready list keeps (no job list, no copy when written).
    Records(Mutex<Vec<Vec<u8>>>, Watermark),
    /// Delayed or prioritized: the jobs for `enqueue`.
    Jobs(Vec<NewJob>, Watermark),
}

/// A queue of the memory store: its name (the state lives in the store, by name).
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    name: String,
}

impl QueueHandle for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store of its own (not shared by name: see `open`).
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Mutex::default(),
            work: Condvar::new(),
            settled: tokio::sync::Notify::new(),
            schedules_changed: Arc::default(),
            result_ttl: Duration::from_secs(24 * 3600),
        }
    }

    /// How long return values, callback records and workflow bookkeeping are kept.
    pub fn with_result_ttl(mut self, ttl: Duration) -> MemoryStore {
        self.result_ttl = ttl;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clock(&self) -> Clock {
        let (now_us, now_ms) = now();
        let result_ttl_ms = self.result_ttl.as_millis() as i64;
        Clock { now_us, now_ms, result_ttl_ms, mark_ttl_ms: result_ttl_ms.max(MARK_TTL_MS) }
    }

    /// Runs `f` on queue `q`'s state (made on first use), then wakes whoever may have work
    /// or a result now.
    fn with_queue<T>(&self, q: &MemoryQueue, f: impl FnOnce(&mut Queue, Clock) -> T) -> T {
        let c = self.clock();
        let out = {
            let mut inner = self.lock();
            f(inner.queues.entry(q.name.clone()).or_default(), c)
        };
        self.changed();
        out
    }

    /// Reads queue `q`'s state (a queue never used reads as empty).
    fn read_queue<T>(&self, q: &MemoryQueue, f: impl FnOnce(&Queue, Clock) -> T) -> T {
        let c = self.clock();
        let inner = self.lock();
        match inner.queues.get(&q.name) {
            Some(queue) => f(queue, c),
            None => f(&Queue::default(), c),
        }
    }

    fn changed(&self) {
        self.work.notify_all();
        self.settled.notify_waiters();
    }

    fn register(&self, names: &[&str]) {
        let mut inner = self.lock();
        for n in names {
            if !inner.registry.contains(*n) {
                inner.registry.insert(n.to_string());
            }
        }
    }

    /// A chunk's records, due now with generated ids: to the ready lists as they are.
    fn enqueue_records(&self, q: &MemoryQueue, records: Vec<Vec<u8>>, mark: &Watermark) {
        self.register(&[&q.name]);
        self.with_queue(q, |queue, _| queue.enqueue_records(records, mark));
    }

    fn enqueue_now(&self, q: &MemoryQueue, jobs: &[NewJob], mark: Option<&Watermark>) -> Vec<Written> {
        if jobs.is_empty() {
            return vec![];
        }
        self.register(&[&q.name]);
        self.with_queue(q, |queue, c| queue.enqueue(jobs, mark, c))
    }

    /// The time (ms) and number of the newest event the queue's ring holds.
    pub fn last_event(&self, q: &MemoryQueue) -> Option<(i64, u64)> {
        self.read_queue(q, |queue, _| queue.events.back().map(|e| (e.at_ms, e.seq)))
    }

    /// Up to `limit` of the queue's events after number `after`, oldest first.
    pub fn events_after(&self, q: &MemoryQueue, after: u64, limit: usize) -> Vec<Event> {
        self.read_queue(q, |queue, _| {
            // Numbers grow along the ring: a reader polling its end skips the rest at once.
            let start = queue.events.partition_point(|e| e.seq <= after);
            queue.events.range(start..).take(limit).cloned().collect()
        })
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

impl Store for MemoryStore {
    type Queue = MemoryQueue;
    type Packed = Packed;

    fn queue(&self, name: &str) -> Result<Arc<MemoryQueue>> {
        validate_queue_name(name)?;
        Ok(Arc::new(MemoryQueue { name: name.to_string() }))
    }

    async fn enqueue(&self, q: &MemoryQueue, jobs: &[NewJob], mark: Option<&Watermark>) -> Result<Vec<Written>> {
        Ok(self.enqueue_now(q, jobs, mark))
    }

    fn pack_chunk(&self, _q: &MemoryQueue, chunk: &Chunk) -> Packed {
        if chunk.is_plain() {
            Packed::Records(Mutex::new(chunk.record_vecs()), chunk.watermark())
        } else {
            let (jobs, mark) = chunk.pack();
            Packed::Jobs(jobs, mark)
        }
    }

    async fn write_chunk(&self, q: &MemoryQueue, packed: &Packed) -> Result<()> {
        match packed {
            Packed::Records(records, mark) => {
                // Moved out, not copied: written again (never, a write here cannot fail), the
                // chunk's guard would write nothing anyway.
                let records = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
                self.enqueue_records(q, records, mark);
            }
            Packed::Jobs(jobs, mark) => {
                self.enqueue_now(q, jobs, Some(mark));
            }
        }
        Ok(())
    }

    async fn chunks_written(&self, q: &MemoryQueue, chunks: &[(String, u64)]) -> Result<Vec<bool>> {
        Ok(self.read_queue(q, |queue, _| chunks.iter().map(|(p, first)| queue.chunk_written(p, *first)).collect()))
    }

    fn enqueue_parts_blocking(&self, parts: &[Part<'_, MemoryQueue>]) -> Result<Vec<Result<Vec<Written>>>> {
        Ok(parts
            .iter()
            .map(|p| match p.mark {
                Some(m) if m.guard.is_some() => {
                    Err(Error::Invalid("a guarded chunk is written on its own, not with other dispatches".into()))
                }
                mark => Ok(self.enqueue_now(p.q, p.jobs, mark)),
            })
            .collect())
    }

    async fn reserve(&self, q: &MemoryQueue, token: &str, max: usize, idle: &Idle<'_>) -> Result<Reserved> {
        let lease_ms = idle.lease.as_millis() as i64;
        Ok(self.with_queue(q, |queue, c| queue.reserve(token, max, lease_ms, c.now_ms)))
    }

    async fn ack(&self, acks: &[LeaseAck<MemoryQueue>]) -> Result<Vec<AckOutcome>> {
        Ok(acks.iter().map(|a| self.with_queue(&a.queue, |queue, c| queue.ack(a, c))).collect())
    }

    async fn start(&self, q: &MemoryQueue, token: &str, id: &[u8]) -> Result<bool> {
        let id = String::from_utf8_lossy(id);
        Ok(self.with_queue(q, |queue, c| queue.start(token, &id, c.now_ms)))
    }

    async fn release(&self, q: &MemoryQueue, token: &str, ids: &[Vec<u8>]) -> Result<u64> {
        Ok(self.with_queue(q, |queue, _| queue.release(token, ids)))
    }

    async fn extend(&self, leases: &[(Arc<MemoryQueue>, Vec<String>)], lease: Duration) -> Result<Extended> {
        let mut out = Extended::default();
        for (i, (q, tokens)) in leases.iter().enumerate() {
            let (lost, cancel) = self.with_queue(q, |queue, c| queue.extend(tokens, c.now_ms + lease.as_millis() as i64));
            out.lost.extend(lost);
            out.cancel.extend(cancel.into_iter().map(|id| (i, id)));
        }
        Ok(out)
    }

    async fn expire_worker(&self, q: &MemoryQueue, worker: &str, most: usize) -> Result<Expired> {
        Ok(self.with_queue(q, |queue, _| queue.expire_worker(worker, most)))
    }

    async fn tick(&self, q: &MemoryQueue, limit: usize) -> Result<Tick> {
        Ok(self.with_queue(q, |queue, c| queue.tick(limit.max(1), c)))
    }

    fn wait_for_work(&self, queues: &[Arc<MemoryQueue>], worker: &str, timeout: Duration) -> Result<Option<Handed>> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            for q in queues {
                if let Some(queue) = inner.queues.get_mut(&q.name) {
                    if queue.nudged.remove(worker) || std::mem::take(&mut queue.wake) {
                        return Ok(None);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            inner = self.work.wait_timeout(inner, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    async fn nudge(&self, q: &MemoryQueue, worker: &str) -> Result<()> {
        self.with_queue(q, |queue, _| queue.nudged.insert(worker.to_string()));
        Ok(())
    }

    async fn leave(&self, q: &MemoryQueue, worker: &str, _slot: Option<&str>) -> Result<u64> {
        // Nothing is handed over here: only the stop marker, which ends the worker's wait.
        self.with_queue(q, |queue, _| queue.nudged.insert(worker.to_string()));
        Ok(0)
    }

    async fn status(&self, q: &MemoryQueue, id: &str) -> Result<Status> {
        Ok(self.read_queue(q, |queue, c| queue.status(id, false, c.now_ms)))
    }

    async fn info(&self, q: &MemoryQueue, id: &str) -> Result<Status> {
        Ok(self.read_queue(q, |queue, c| queue.status(id, true, c.now_ms)))
    }

    async fn feedback(&self, q: &MemoryQueue, id: &str, kind: Feedback, entry: &[u8], ttl: Duration) -> Result<i64> {
        check_feedback(entry)?;
        let ttl_ms = ttl.as_millis().max(1000) as i64;
        Ok(self.with_queue(q, |queue, c| queue.feedback(id, kind, entry, ttl_ms, c.now_ms)))
    }

    async fn set_events(&self, q: &MemoryQueue, keep: Option<u64>) -> Result<()> {
        self.with_queue(q, |queue, _| queue.set_events(keep));
        Ok(())
    }

    async fn events_keep(&self, q: &MemoryQueue) -> Result<Option<u64>> {
        Ok(self.read_queue(q, |queue, _| queue.events_keep))
    }

    async fn progress(&self, q: &MemoryQueue, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_queue(q, |queue, c| queue.progress(id, c.now_ms)))
    }

    async fn logs(&self, q: &MemoryQueue, id: &str, start: usize, limit: usize) -> Result<Vec<Vec<u8>>> {
        Ok(self.read_queue(q, |queue, c| queue.logs(id, start, limit, c.now_ms)))
    }

    async fn callback_record(&self, q: &MemoryQueue, id: &str, fields: Vec<(&'static str, Vec<u8>)>) -> Result<()> {
        self.with_queue(q, |queue, c| queue.callback_record(id, fields, c.now_ms + c.result_ttl_ms, c.now_ms));
        Ok(())
    }

    async fn callback_status(&self, q: &MemoryQueue, id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.read_queue(q, |queue, c| queue.callback_status(id, c.now_ms)))
    }

    async fn wait_result(&self, q: Arc<MemoryQueue>, id: String, timeout: Option<Duration>) -> Result<Option<Status>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let st = self.status(&q, &id).await?;
            if st.state.is_final() || st.state == State::Unknown {
                return Ok(Some(st));
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, settled).await.is_err() {
                        return Ok(None);
                    }
                }
                None => settled.await,
            }
        }
    }

    async fn counts(&self, q: &MemoryQueue) -> Result<Counts> {
        Ok(self.read_queue(q, |queue, _| queue.counts()))
    }

    async fn pause(&self, q: &MemoryQueue) -> Result<bool> {
        self.known_queue(q).await?;
        Ok(self.with_queue(q, |queue, _| {
            let was_running = !queue.paused;
            queue.paused = true;
            queue.wake = false;
            queue.control.notify_waiters();
            was_running
        }))
    }

    async fn resume(&self, q: &MemoryQueue) -> Result<bool> {
        self.known_queue(q).await?;
        Ok(self.with_queue(q, |queue, _| {
            let was_paused = queue.paused;
            queue.paused = false;
            queue.set_limits(&queue.limits.clone()); // wakes a worker when jobs wait
            queue.control.notify_waiters();
            was_paused
        }))
    }

    async fn control_signal(&self, q: &MemoryQueue) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.with_queue(q, |queue, _| queue.control.clone()))
    }

    async fn register_queues(&self, names: &[&str]) -> Result<()> {
        self.register(names);
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<String>> {
        Ok(self.lock().registry.iter().cloned().collect())
    }

    async fn cancel(&self, q: &MemoryQueue, id: &str, remove: bool) -> Result<CancelReply> {
        Ok(self.with_queue(q, |queue, _| queue.cancel(id, remove)))
    }

    async fn set_limits(&self, q: &MemoryQueue, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        self.with_queue(q, |queue, _| {
            queue.set_limits(limits);
            queue.control.notify_waiters();
        });
        Ok(())
    }

    async fn limits(&self, q: &MemoryQueue) -> Result<Limits> {
        Ok(self.read_queue(q, |queue, _| queue.limits))
    }

    async fn set_group_limits(&self, q: &MemoryQueue, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        self.with_queue(q, |queue, _| {
            queue.group_limits = *limits;
            queue.set_limits(&queue.limits.clone());
            queue.control.notify_waiters();
        });
        Ok(())
    }

    async fn group_limits(&self, q: &MemoryQueue) -> Result<Limits> {
        Ok(self.read_queue(q, |queue, _| queue.group_limits))
    }

    async fn retry_job(&self, q: &MemoryQueue, id: &str) -> Result<bool> {
        Ok(self.with_queue(q, |queue, _| queue.retry_job(id)))
    }

    async fn empty_page(&self, q: &MemoryQueue, max: usize) -> Result<(u64, Vec<Vec<u8>>)> {
        Ok(self.with_queue(q, |queue, _| queue.empty_page(max)))
    }

    async fn obliterate(&self, q: &MemoryQueue) -> Result<u64> {
        let gone = {
            let mut inner = self.lock();
            inner.registry.remove(&q.name);
            inner.queues.remove(&q.name)
        };
        self.changed();
        Ok(gone.map(|queue| queue.size()).unwrap_or(0))
    }

    async fn failed_list(&self, q: &MemoryQueue, limit: usize) -> Result<Vec<FailedJob>> {
        Ok(self.read_queue(q, |queue, _| queue.failed_list(limit.max(1))))
    }

    async fn failed_retry(&self, q: &MemoryQueue) -> Result<u64> {
        Ok(self.with_queue(q, |queue, _| queue.failed_retry()))
    }

    async fn failed_purge(&self, q: &MemoryQueue) -> Result<u64> {
        Ok(self.with_queue(q, |queue, _| queue.failed_purge()))
    }

    async fn schedule_signal(&self, q: &MemoryQueue) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.with_queue(q, |queue, _| queue.sched.clone()))
    }

    async fn schedule_upsert(&self, w: ScheduleWrite) -> Result<(bool, i64)> {
        let c = self.clock();
        let (created, next, retimed) = self.lock().schedules.upsert(w, c.now_ms);
        if retimed {
            self.schedules_changed.notify_waiters();
        }
        Ok((created, next))
    }

    async fn schedule_read(&self, keys: Option<Vec<String>>) -> Result<Vec<ScheduleEntry>> {
        Ok(self.lock().schedules.read(keys))
    }

    async fn schedule_remove(&self, keys: Option<Vec<String>>) -> Result<u64> {
        Ok(self.lock().schedules.remove(keys))
    }

    async fn schedules_due(&self, limit: usize) -> Result<DueSchedules> {
        let c = self.clock();
        Ok(self.lock().schedules.due(limit, c.now_ms))
    }

    async fn schedule_advance(&self, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> Result<bool> {
        Ok(self.lock().schedules.advance(key, tick_ms, next_ms, job_id))
    }

    async fn schedules_signal(&self) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.schedules_changed.clone())
    }

    async fn book_get(&self, book: &str, fields: Vec<String>) -> Result<Vec<Option<Vec<u8>>>> {
        check_book(book)?;
        let c = self.clock();
        Ok(self.lock().books.book_get(book, &fields, c.now_ms))
    }

    async fn book_set(&self, book: &str, fields: Vec<(String, Vec<u8>)>, ttl: Option<Duration>) -> Result<()> {
        check_book(book)?;
        let c = self.clock();
        self.lock().books.book_set(book, fields, ttl.map(|t| t.as_millis() as i64), c.now_ms);
        Ok(())
    }

    async fn flow_settle(&self, items: Vec<FlowSettle>) -> Result<Vec<FlowSettled>> {
        for i in &items {
            check_book(&format!("flow:{}", i.flow_id))?;
        }
        let c = self.clock();
        let mut inner = self.lock();
        Ok(items.iter().map(|i| inner.books.flow_settle(i, c.now_ms)).collect())
    }

    async fn flow_results(&self, flow_id: &str, node: u32) -> Result<Vec<(String, Vec<u8>)>> {
        check_book(&format!("flow:{flow_id}"))?;
        Ok(self.lock().books.flow_results(flow_id, node))
    }

    async fn worker_put(&self, worker: String, entry: Vec<u8>) -> Result<()> {
        self.lock().books.worker_put(worker, entry);
        Ok(())
    }

    async fn workers_read(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.lock().books.workers_read())
    }

    async fn workers_remove(&self, workers: Vec<String>) -> Result<u64> {
        Ok(self.lock().books.workers_remove(&workers))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_store_per_name_per_process() {
        let a = open("memory://shared-test").unwrap();
        let b = open("memory://shared-test").unwrap();
        let other = open("memory://other-test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
        assert!(Arc::ptr_eq(&open("memory://").unwrap(), &open("memory://").unwrap()));
    }

    #[test]
    fn bad_urls_are_refused_by_name() {
        for bad in ["redis://x", "memory://no spaces", "memory://{braces}"] {
            match open(bad) {
                Err(Error::Invalid(m)) => assert!(m.contains("memory"), "{m}"),
                other => panic!("{bad}: expected Invalid, got {:?}", other.map(|_| ())),
            }
        }
    }
}

//! The worker engine: keeps leased jobs ready for the Python handlers (bounded prefetch),
//! settles them in batches (group commit), renews leases (heartbeats), and on a graceful
//! stop hands unstarted jobs back to the head of their queue.
//!
//! Python threads take jobs with `next_jobs` and report each outcome with `settle`; both
//! are cheap, in-memory calls. All network work happens on the I/O runtime's tasks.

use crate::engine::callback::{CallbackConfig, Deliverer, Post, Targets};
use crate::error::{Error, Result};
use crate::record::{is_generated_id, Record};
use crate::runtime::runtime;
use crate::store::{AckEntry, AckKind, Handed, Idle, LeaseAck, QueueHandle, Reserved, Store};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs leased but not yet handed to a handler: the upper bound when `adaptive`, else
    /// the number kept ready.
    pub prefetch: usize,
    /// Size the prefetch to ~20 ms of work from the measured completion rate.
    pub adaptive: bool,
    /// Lower bound of one reserve call (at least the handler concurrency).
    pub min_batch: usize,
    pub lease: Duration,
    /// Weighted queue order (one weight per queue, each at least 1): each reserve round visits
    /// the queues in a random order drawn by weight. None: strict order, as given.
    pub weights: Option<Vec<u32>>,
    /// Names this process's leases, inboxes and idle slots; None: a random one. A pool's
    /// supervisor picks it, to end the leases of a child it saw die (`Store::expire_worker`).
    pub worker_id: Option<String>,
    /// Hand out at most this many jobs, then nothing more is reserved (a pool child that is
    /// recycled after that many): `exhausted` tells when they are all given.
    pub max_jobs: Option<u64>,
    /// How the jobs' callbacks are posted (callback.rs).
    pub callbacks: CallbackConfig,
}

/// A job handed to Python.
pub struct Delivery {
    pub handle: u64,
    pub queue: usize,
    pub record: Record,
    /// An orphan: its earlier worker died while it may have been running it.
    pub redelivered: bool,
}

struct Pending {
    lease: u64,
    queue: usize,
    raw: Vec<u8>,
    id: Vec<u8>,
    /// An orphan (record::ORPHAN): handed out alone, its start recorded first.
    orphan: bool,
    /// The deduplication key this job holds until it settles, read from its options when it
    /// is handed out (`settle_keys`); None for every job without one.
    dedup: Option<Vec<u8>>,
    /// The job's group, read with the key (its settlement frees a place of the group).
    group: Option<Vec<u8>>,
    /// The job's callbacks, read with the key; None for every job without one.
    callbacks: Option<Box<Targets>>,
    /// Its name, kept only for a job with callbacks (posted with its outcome).
    name: String,
}

impl Pending {
    /// A copy to buffer again (`orphan` as given); what `hand_out` reads from the options is
    /// read again when it is handed out.
    fn copy(&self, orphan: bool) -> Pending {
        Pending {
            lease: self.lease,
            queue: self.queue,
            raw: self.raw.clone(),
            id: self.id.clone(),
            orphan,
            dedup: None,
            group: None,
            callbacks: None,
            name: String::new(),
        }
    }

    /// An earlier attempt failed (its error is kept until this one settles).
    fn retried(&self) -> bool {
        self.raw.get(1..3).is_some_and(|a| a != [0, 0])
    }
}

struct Lease {
    queue: usize,
    token: String,
    /// Jobs of this lease not settled yet (buffered, running, or settled but unacknowledged).
    open: usize,
}

#[derive(Default)]
struct Buffer {
    ready: VecDeque<Pending>,
    closed: bool,
    /// The fetch loop found nothing and registered this worker as idle: the next handler
    /// thread with nothing to do blocks on Redis for work (`pop`).
    idle: bool,
    popping: bool,
    /// Pops that brought a job: the fetch loop registers a new idle slot after each.
    handed: u64,
    /// The orphan this worker runs alone (lease, job id): taken once nothing else ran, and
    /// nothing else is taken until its outcome has landed in the store (see `take_ready`).
    solo: Option<(u64, Vec<u8>)>,
    /// Jobs handed to handlers so far (counted against `WorkerConfig::max_jobs`).
    given: u64,
}

#[derive(Default)]
pub struct Stats {
    pub reserved: AtomicU64,
    /// Jobs handed straight to this worker's inbox (one round trip less to start).
    pub handed: AtomicU64,
    /// Outcomes the store took: what the worker's summary reports.
    pub completed: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    /// Outcomes the store refused: the job's lease had expired and been reaped while this
    /// worker ran it (it was frozen or cut off), so the job belongs to another worker, which
    /// runs it again: the run here was a duplicate.
    pub stale: AtomicU64,
    /// Orphans started (jobs whose earlier worker died while it may have been running them).
    pub orphans: AtomicU64,
    pub released: AtomicU64,
    /// Jobs settled as cancelled (asked to, then given up by their handler or never started).
    pub cancelled: AtomicU64,
    pub store_errors: AtomicU64,
    pub lost_leases: AtomicU64,
    /// Round trips: reserve calls and ack flushes (each flush is one pipeline).
    pub reserve_calls: AtomicU64,
    pub ack_flushes: AtomicU64,
}

pub struct Engine<S: Store> {
    store: Arc<S>,
    queues: Vec<Arc<S::Queue>>,
    cfg: WorkerConfig,
    buffer: Mutex<Buffer>,
    ready_cv: Condvar,
    want_more: Notify,
    stop: Notify,
    stopping: AtomicBool,
    leases: Mutex<HashMap<u64, Lease>>,
    /// Handed to Python, not settled yet: handle -> job.
    running: Mutex<HashMap<u64, Pending>>,
    /// Settled jobs to acknowledge: (lease, entry, the callback to post once it landed).
    acks: Mutex<Vec<Settled<S::Queue>>>,
    ack_ready: Notify,
    acks_idle: Notify,
    /// The acknowledger holds a batch it has not finished sending.
    flushing: AtomicBool,
    releasing: tokio::sync::Mutex<()>,
    next_handle: AtomicU64,
    next_lease: AtomicU64,
    /// Completions per second, smoothed; sizes the prefetch.
    rate: Mutex<(f64, Instant, u64)>,
    pub stats: Stats,
    last_error: Mutex<Option<String>>,
    /// Names this process's inboxes and idle slots (see common.lua wake()).
    worker_id: String,
    /// Per queue: the idle slot this worker holds there, if any.
    idle_slots: Mutex<Vec<Option<String>>>,
    /// The fetch loop runs; `fetch_done` tells when it ended.
    fetch_live: AtomicBool,
    fetch_done: Notify,
    /// `buffer.solo` is set: the acknowledger and the releases look for its job.
    solo_active: AtomicBool,
    /// A handler thread's blocking pop ended: the fetch loop reserves again.
    pop_done: Notify,
    /// A queue was paused, resumed or given new limits (`control_loop`): the fetch loop
    /// reserves again.
    control: Notify,
    /// A job may have been asked to cancel (`control_loop`): the heartbeat runs at once and
    /// brings the requests (`Store::extend`).
    cancel_check: Notify,
    /// Running jobs asked to cancel (by handle), for `is_cancelled`; `cancel_news` holds
    /// the ones not yet given to `next_cancels`.
    cancelled: Mutex<std::collections::HashSet<u64>>,
    cancel_news: Mutex<Vec<u64>>,
    cancel_cv: Condvar,
    /// Per queue: a rate limit allows nothing until then (`Reserved::Limited`); the fetch loop
    /// skips the queue and its idle wait ends at the earliest of these (a timer, no polling).
    limited_until: Mutex<Vec<Option<Instant>>>,
    left: AtomicBool,
    /// Posts the jobs' callbacks once their outcomes landed.
    pub callbacks: Arc<Deliverer<S>>,
}

type Settled<Q> = (u64, AckEntry, Option<Box<Post<Q>>>);

/// One blocking wait for work; an idle worker then reserves again (and renews its slot).
const WAIT: Duration = Duration::from_secs(1);

fn new_token() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:08x}", rng.random::<u64>(), rng.random::<u32>())
}

impl<S: Store> Engine<S> {
    pub fn new(store: Arc<S>, queues: Vec<Arc<S::Queue>>, cfg: WorkerConfig) -> Arc<Engine<S>> {
        let queues_len = queues.len();
        let worker_id = cfg.worker_id.clone().unwrap_or_else(new_token);
        let callbacks = Arc::new(Deliverer::new(store.clone(), cfg.callbacks.clone()));
        Arc::new(Engine {
            store,
            queues,
            cfg,
            buffer: Mutex::default(),
            ready_cv: Condvar::new(),
            want_more: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            leases: Mutex::default(),
            running: Mutex::default(),
            acks: Mutex::default(),
            ack_ready: Notify::new(),
            acks_idle: Notify::new(),
            flushing: AtomicBool::new(false),
            releasing: tokio::sync::Mutex::new(()),
            next_handle: AtomicU64::new(1),
            next_lease: AtomicU64::new(1),
            rate: Mutex::new((0.0, Instant::now(), 0)),
            stats: Stats::default(),
            last_error: Mutex::default(),
            worker_id,
            idle_slots: Mutex::new(vec![None; queues_len]),
            fetch_live: AtomicBool::new(false),
            fetch_done: Notify::new(),
            solo_active: AtomicBool::new(false),
            pop_done: Notify::new(),
            control: Notify::new(),
            cancel_check: Notify::new(),
            cancelled: Mutex::default(),
            limited_until: Mutex::new(vec![None; queues_len]),
            cancel_news: Mutex::default(),
            cancel_cv: Condvar::new(),
            left: AtomicBool::new(false),
            callbacks,
        })
    }

    pub fn queues(&self) -> &[Arc<S::Queue>] {
        &self.queues
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The last store error a background task met (it keeps retrying), once.
    pub fn take_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().take()
    }

    pub fn note_error(&self, e: &Error) {
        self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(e.to_string());
    }

    /// Jobs still to hand out under `max_jobs`, None without a quota.
    fn quota_left(&self, b: &Buffer) -> Option<u64> {
        self.cfg.max_jobs.map(|m| m.saturating_sub(b.given))
    }

    /// Every job of the `max_jobs` quota was handed out.
    pub fn exhausted(&self) -> bool {
        self.quota_left(&self.buffer.lock().unwrap()) == Some(0)
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn target_buffer(&self) -> usize {
        if !self.cfg.adaptive {
            return self.cfg.prefetch;
        }
        let (rate, _, _) = *self.rate.lock().unwrap();
        // Keep ~50 ms of work ready (refilled at half): enough to hide a round trip and a
        // reserve of a thousand records, little to hand back on a stop.
        ((rate * 0.05) as usize).clamp(self.cfg.min_batch, self.cfg.prefetch.max(self.cfg.min_batch))
    }

    // ---- the fetcher ----

    pub async fn fetch_loop(self: Arc<Self>) {
        self.fetch_live.store(true, Ordering::Release);
        let mut backoff = Duration::from_millis(50);
        // A queue was paused or resumed: reserve now, even with a full buffer, to hear which.
        let mut control = false;
        while !self.stopping.load(Ordering::Acquire) {
            let (buffered, left) = {
                let b = self.buffer.lock().unwrap();
                (b.ready.len(), self.quota_left(&b))
            };
            let target = left.map_or(self.target_buffer(), |l| self.target_buffer().min(l as usize));
            if target == 0 {
                // The quota is handed out: nothing more to reserve; the worker stops.
                tokio::select! {
                    _ = self.stop.notified() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            if buffered * 2 > target && !control {
                tokio::select! {
                    _ = self.want_more.notified() => {}
                    _ = self.stop.notified() => break,
                    _ = self.control.notified() => control = true,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            control = false;
            match self.fill(target.saturating_sub(buffered)).await {
                Ok(got) => {
                    backoff = Duration::from_millis(50);
                    match got {
                        Some(queue) => self.end_idle(queue).await,
                        None => self.idle_wait().await,
                    }
                }
                Err(e) => {
                    self.note_error(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.notified() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        self.fetch_live.store(false, Ordering::Release);
        self.fetch_done.notify_waiters();
    }

    /// Idle: a handler thread with nothing to do blocks on Redis itself (see next_jobs), so a
    /// job handed over reaches it with one thread wake-up. Returns when a pop brought a job
    /// (its slot is used up: register another), when a pop ended empty, after WAIT with no pop
    /// under way (the next reserve renews the slot), or on a stop.
    async fn idle_wait(&self) {
        let seen = {
            let mut b = self.buffer.lock().unwrap();
            b.idle = true;
            b.handed
        };
        self.ready_cv.notify_one();
        let ready: Vec<_> = self.queues.iter().filter_map(|q| self.store.ready_signal(q)).collect();
        loop {
            // Armed before the check, so a stop between the two is not missed.
            let stop = self.stop.notified();
            tokio::pin!(stop);
            stop.as_mut().enable();
            let mut control = false;
            // Every handler busy, none blocked on the store: a store with a ready signal says
            // itself when jobs come, so the prefetch goes on (Redis hands them to the slot).
            let popping = self.buffer.lock().unwrap().popping;
            let ready_now = async {
                if popping || ready.is_empty() {
                    return std::future::pending::<()>().await;
                }
                futures_util::future::select_all(ready.iter().map(|n| Box::pin(n.notified()))).await;
            };
            // A rate-limited queue opens its next window then: reserve again at that moment.
            let opens = self.limited_until.lock().unwrap().iter().flatten().min().copied();
            let wait = opens.map_or(WAIT, |t| t.saturating_duration_since(Instant::now()).min(WAIT));
            if !self.stopping.load(Ordering::Acquire) {
                tokio::select! {
                    _ = self.pop_done.notified() => {}
                    _ = tokio::time::sleep(wait) => control = opens.is_some_and(|t| t <= Instant::now()),
                    _ = self.control.notified() => control = true,
                    _ = ready_now => control = true,
                    _ = stop => {}
                }
            }
            let mut b = self.buffer.lock().unwrap();
            if control {
                return; // a queue was resumed (or paused), a limit's window opened, or jobs came: reserve now
            }
            let stopping = self.stopping.load(Ordering::Acquire);
            if b.handed != seen && !stopping {
                // Still idle: another free thread may block on Redis already while this loop
                // registers the next slot.
                return;
            }
            if stopping || !b.popping {
                b.idle = false;
                return;
            }
        }
    }

    /// Jobs came (leased in `queue`, among others): handler threads with nothing to do wait
    /// for the buffer now, not on Redis, and one already blocked there is woken.
    async fn end_idle(&self, queue: usize) {
        let popping = {
            let mut b = self.buffer.lock().unwrap();
            b.idle = false;
            b.popping
        };
        if popping {
            if let Err(e) = self.store.nudge(&self.queues[queue], &self.worker_id).await {
                self.note_error(&e); // the pop ends within WAIT anyway
            }
        }
    }

    /// Reserves up to `want` jobs, from the queues in priority order; the first queue that
    /// gave any, if one did. Queues past the one that filled `want` are visited only to take
    /// back jobs handed to a slot this worker holds there (its handed jobs must not wait for
    /// the queue to empty).
    async fn fill(&self, want: usize) -> Result<Option<usize>> {
        let mut got: Option<usize> = None;
        let mut want = want.max(1);
        let register = !self.stopping.load(Ordering::Acquire);
        for qi in self.queue_order() {
            let q = &self.queues[qi];
            {
                let mut limited = self.limited_until.lock().unwrap();
                match limited[qi] {
                    Some(t) if t > Instant::now() => continue, // its rate limit allows nothing before then
                    Some(_) => limited[qi] = None,
                    None => {}
                }
            }
            let previous = self.idle_slots.lock().unwrap()[qi].take();
            if want == 0 && previous.is_none() {
                continue;
            }
            // `<worker>.<n>`: a reaper that finds one of its leases expired also ends its
            // idle slots (tick.lua), so a dead worker is handed nothing more.
            let token = format!("{}.{}", self.worker_id, self.next_lease.fetch_add(1, Ordering::Relaxed));
            let idle = Idle { worker: &self.worker_id, previous: previous.as_deref(), register, lease: self.cfg.lease };
            let reserved = self.store.reserve(q, &token, want, &idle).await;
            self.stats.reserve_calls.fetch_add(1, Ordering::Relaxed);
            match reserved {
                Ok(Reserved::Jobs(recs)) => {
                    want = want.saturating_sub(recs.len());
                    self.deliver(qi, token, recs);
                    got = got.or(Some(qi));
                }
                Ok(Reserved::Idle { new_slot }) => {
                    self.idle_slots.lock().unwrap()[qi] = if new_slot { Some(idle.slot(&token)) } else { previous };
                }
                Ok(Reserved::Empty) => {}
                Ok(Reserved::Paused) => self.hand_back_queue(qi).await,
                Ok(Reserved::Limited { retry_in }) => {
                    self.limited_until.lock().unwrap()[qi] = retry_in.map(|d| Instant::now() + d);
                }
                Err(e) => {
                    // Whether the slot went is unknown: drop it next time.
                    self.idle_slots.lock().unwrap()[qi] = previous;
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    /// The order `fill` visits the queues in: as given (strict), or a weighted random order
    /// drawn afresh each round (Sidekiq's weighted mode): a queue of weight w comes first with
    /// probability w / (sum of weights), so no queue is starved by busier ones before it.
    fn queue_order(&self) -> Vec<usize> {
        let Some(weights) = &self.cfg.weights else { return (0..self.queues.len()).collect() };
        // Efraimidis-Spirakis: sort by u^(1/w), u uniform in (0, 1].
        let mut rng = rand::rng();
        let mut keyed: Vec<(f64, usize)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (rng.random_range(f64::MIN_POSITIVE..=1.0).powf(1.0 / f64::from((*w).max(1))), i))
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// A queue was paused: the jobs of it that this worker prefetched and did not start go back
    /// to the head of the queue at once (a paused queue runs nothing new). If Redis refuses,
    /// they stay buffered and the next reserve, paused again, tries again.
    async fn hand_back_queue(&self, qi: usize) {
        let back: Vec<Pending> = {
            let mut b = self.buffer.lock().unwrap();
            let (back, keep): (VecDeque<Pending>, VecDeque<Pending>) = b.ready.drain(..).partition(|p| p.queue == qi);
            b.ready = keep;
            back.into()
        };
        if back.is_empty() {
            return;
        }
        let _one_at_a_time = self.releasing.lock().await;
        let copy: Vec<Pending> = back.iter().map(|p| p.copy(p.orphan)).collect();
        if let Err(e) = self.release(back).await {
            self.note_error(&e);
            let mut b = self.buffer.lock().unwrap();
            for p in copy.into_iter().rev() {
                b.ready.push_front(p);
            }
        }
    }

    /// Registers the worker's queues (`Store::register_queues`), then forwards their control
    /// messages (pause, resume, limits, cancel) for as long as the worker runs: the fetch loop
    /// reserves again (`control`) and the heartbeat collects cancel requests (`cancel_check`).
    /// Subscribed again after a broken connection.
    pub async fn control_loop(self: Arc<Self>) {
        let names: Vec<&str> = self.queues.iter().map(|q| q.name()).collect();
        while let Err(e) = self.store.register_queues(&names).await {
            self.note_error(&e);
            tokio::time::sleep(WAIT).await;
        }
        loop {
            let mut signals = Vec::with_capacity(self.queues.len());
            for q in &self.queues {
                match self.store.control_signal(q).await {
                    Ok(n) => signals.push(n),
                    Err(e) => self.note_error(&e),
                }
            }
            if signals.len() < self.queues.len() {
                tokio::time::sleep(WAIT).await;
                continue;
            }
            let any = futures_util::future::select_all(signals.iter().map(|n| Box::pin(n.notified())));
            tokio::select! {
                (_, qi, _) = any => {
                    // Its limits may have changed: what the last reserve said no longer holds.
                    self.limited_until.lock().unwrap()[qi] = None;
                    self.control.notify_one();
                    self.cancel_check.notify_one();
                }
                _ = tokio::time::sleep(Duration::from_secs(30)) => {} // subscribe again, in case
            }
        }
    }

    /// The idle worker's blocking pop, on the calling (handler) thread: up to WAIT, ended
    /// early by a job handed over (returned, leased, for this thread to run), a wake-up
    /// marker, leave.lua's stop marker or a nudge.
    fn pop(&self) -> Option<Pending> {
        match self.store.wait_for_work(&self.queues, &self.worker_id, WAIT) {
            Ok(Some(Handed { queue, token, record })) => {
                self.stats.handed.fetch_add(1, Ordering::Relaxed);
                self.lease(queue, token, vec![record]).pop()
            }
            Ok(None) => None,
            // The fetch loop reserves next and backs off while Redis is away.
            Err(e) => {
                self.note_error(&e);
                None
            }
        }
    }

    /// Records one lease of records, to be buffered.
    fn lease(&self, queue: usize, token: String, recs: Vec<Vec<u8>>) -> Vec<Pending> {
        let lease = self.next_lease.fetch_add(1, Ordering::Relaxed);
        self.leases.lock().unwrap().insert(lease, Lease { queue, token, open: recs.len() });
        self.stats.reserved.fetch_add(recs.len() as u64, Ordering::Relaxed);
        recs.into_iter()
            .map(|raw| Pending {
                lease,
                queue,
                id: Record::peek_id(&raw).to_vec(),
                orphan: Record::is_orphan(&raw),
                raw,
                dedup: None,
                group: None,
                callbacks: None,
                name: String::new(),
            })
            .collect()
    }

    /// Makes leased records (one lease) ready for the handlers.
    fn deliver(&self, queue: usize, token: String, recs: Vec<Vec<u8>>) {
        let pending = self.lease(queue, token, recs);
        self.buffer.lock().unwrap().ready.extend(pending);
        self.ready_cv.notify_all();
    }

    /// Ends this worker's idle slots and hands back what was handed to them (once).
    /// Returns how many jobs went back.
    async fn leave_all(&self) -> u64 {
        if self.left.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let mut total = 0;
        for (qi, q) in self.queues.iter().enumerate() {
            let slot = self.idle_slots.lock().unwrap()[qi].take();
            match self.store.leave(q, &self.worker_id, slot.as_deref()).await {
                Ok(n) => total += n,
                // The slot expires and the handed jobs' leases are reaped: nothing is lost.
                Err(e) => self.note_error(&e),
            }
        }
        self.stats.released.fetch_add(total, Ordering::Relaxed);
        total
    }

    /// Takes up to `max` ready jobs, waiting up to `timeout` for the first (when the worker is
    /// idle, the calling thread may block on Redis for up to WAIT instead: a stop ends that at
    /// once). A zero `timeout` takes what is buffered and never blocks. Blocking otherwise:
    /// call it without the GIL. Records that cannot be decoded are failed here, never handed
    /// out. An orphan (its earlier worker died while it may have been running it) comes alone,
    /// after its start was recorded in the store (a blocking call: never with a zero timeout).
    pub fn next_jobs(&self, max: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let taken = self.take_ready(max, timeout, deadline);
            if let [p] = taken.as_slice() {
                if p.orphan && !self.record_start(p) {
                    if Instant::now() < deadline {
                        continue;
                    }
                    return vec![];
                }
            }
            return self.hand_out(taken);
        }
    }

    /// The buffered jobs `next_jobs` hands out: up to `max` of them, stopping before an
    /// orphan, or an orphan alone.
    ///
    /// An orphan runs alone on this worker: it is taken only once no other job handed out is
    /// still running, and no job is taken after it until its outcome has landed in the store.
    /// Its start is recorded (so the reaper counts this run if the worker dies now); a job
    /// running beside it that killed the worker would cost it an attempt it did not use, and
    /// so would the death of the worker, caused by a later job, before its acknowledgement
    /// landed (with attempts=1 it would fail with LeaseExpired after running well once).
    fn take_ready(&self, max: usize, timeout: Duration, deadline: Instant) -> Vec<Pending> {
        let mut b = self.buffer.lock().unwrap();
        let max = match self.quota_left(&b) {
            Some(0) => return vec![],
            Some(left) => max.min(left as usize),
            None => max,
        };
        loop {
            while (b.ready.is_empty() || b.solo.is_some()) && !b.closed {
                if b.ready.is_empty()
                    && b.solo.is_none()
                    && b.idle
                    && !b.popping
                    && !timeout.is_zero()
                    && !self.stopping.load(Ordering::Acquire)
                {
                    b.popping = true;
                    drop(b);
                    let got = self.pop();
                    b = self.buffer.lock().unwrap();
                    b.popping = false;
                    match got {
                        // This thread runs it (taken below, under this lock); one other
                        // free thread wakes to block on Redis for the next.
                        Some(p) => {
                            b.ready.push_back(p);
                            b.handed += 1;
                            self.ready_cv.notify_one();
                        }
                        None => b.idle = false,
                    }
                    self.pop_done.notify_one();
                    continue;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                b = self.ready_cv.wait_timeout(b, deadline - now).unwrap().0;
            }
            if b.solo.is_some() {
                return vec![]; // the deadline passed while an orphan runs alone
            }
            // An orphan first in line waits for the jobs still running to be settled (the
            // rare path, after a worker died: polled).
            let orphan_first = b.ready.front().is_some_and(|p| p.orphan);
            if orphan_first && !timeout.is_zero() && !b.closed && self.running_count() > 0 {
                let now = Instant::now();
                if now >= deadline {
                    return vec![];
                }
                b = self.ready_cv.wait_timeout(b, (deadline - now).min(Duration::from_millis(2))).unwrap().0;
                continue;
            }
            break;
        }
        let n = match b.ready.front() {
            // Recording its start blocks on Redis: not for a caller that must not wait.
            Some(p) if p.orphan => usize::from(!timeout.is_zero()),
            _ => b.ready.iter().take(max).position(|p| p.orphan).unwrap_or(max.min(b.ready.len())),
        };
        let out: Vec<Pending> = b.ready.drain(..n).collect();
        b.given += n as u64;
        if let [p] = out.as_slice() {
            if p.orphan {
                b.solo = Some((p.lease, p.id.clone()));
                self.solo_active.store(true, Ordering::Release);
            }
        }
        if b.ready.len() * 2 <= self.target_buffer() {
            self.want_more.notify_one();
        }
        out
    }

    /// The orphan running alone is done with (its outcome landed, it went back, or it is not
    /// this worker's any more): the other handler threads may take jobs again.
    fn end_solo(&self) {
        let mut b = self.buffer.lock().unwrap();
        b.solo = None;
        self.solo_active.store(false, Ordering::Release);
        drop(b);
        self.ready_cv.notify_all();
    }

    /// Whether `(lease, id)` names the orphan running alone.
    fn is_solo(&self, lease: u64, id: &[u8]) -> bool {
        self.solo_active.load(Ordering::Acquire)
            && self.buffer.lock().unwrap().solo.as_ref().is_some_and(|(l, i)| *l == lease && i.as_slice() == id)
    }

    /// Records that an orphan is about to start (see `record::ORPHAN`). False when it must not
    /// run: its lease was reaped (it is another worker's now: dropped), or the store could not
    /// be reached (it goes back to the front of the buffer, to be tried again).
    fn record_start(&self, p: &Pending) -> bool {
        let held = self.leases.lock().unwrap().get(&p.lease).map(|l| (self.queues[l.queue].clone(), l.token.clone()));
        let Some((q, token)) = held else {
            self.end_solo();
            return false;
        };
        match runtime().block_on(self.store.start(&q, &token, &p.id)) {
            Ok(true) => {
                self.stats.orphans.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(false) => {
                self.forget_leases(&[token]);
                self.end_solo();
                false
            }
            Err(e) => {
                self.note_error(&e);
                let again = p.copy(true);
                let mut b = self.buffer.lock().unwrap();
                b.ready.push_front(again);
                b.given -= 1; // not run: it does not count against the quota
                drop(b);
                self.end_solo();
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        }
    }

    /// Decodes taken jobs for Python; what cannot be decoded is failed (DecodeError) here.
    fn hand_out(&self, taken: Vec<Pending>) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(taken.len());
        let mut running = self.running.lock().unwrap();
        for mut p in taken {
            match Record::unpack(&p.raw) {
                Ok(record) => {
                    let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
                    // Most records carry no options: nothing to read.
                    if !record.options.is_empty() {
                        (p.dedup, p.group) = settle_keys(&record.options);
                        p.callbacks = crate::engine::callback::targets(&record.options);
                        if p.callbacks.is_some() {
                            p.name.clone_from(&record.name);
                        }
                    }
                    out.push(Delivery { handle, queue: p.queue, record, redelivered: p.orphan });
                    running.insert(handle, p);
                }
                Err(e) => {
                    let message = format!("a job record of queue {:?} could not be decoded: {e}", self.queues[p.queue].name());
                    let error = error_json("DecodeError", &message, "");
                    let entry = AckEntry {
                        id: p.id,
                        custom_id: true,
                        retried: false,
                        kind: AckKind::Failed { error, record: p.raw },
                        dedup: None,
                        group: None,
                    };
                    self.push_ack(p.lease, entry);
                }
            }
        }
        out
    }

    /// Reports a handed-out job's outcome. `attempt_counted` rebuilds the record for a retry
    /// or a final failure. Returns false for an unknown handle (settled twice).
    pub fn settle(&self, handle: u64, outcome: Outcome) -> bool {
        let Some(p) = self.running.lock().unwrap().remove(&handle) else { return false };
        if self.cancelled.lock().unwrap().remove(&handle) && !matches!(outcome, Outcome::Completed(_)) {
            // Asked to cancel, and it did not complete: cancelled, whatever it raised.
            let custom_id = !is_generated_id(&p.id);
            let retried = p.retried();
            self.push_ack(p.lease, AckEntry { id: p.id, custom_id, retried, kind: AckKind::Cancelled, dedup: p.dedup, group: p.group });
            return true;
        }
        let attempt = u16::from_be_bytes([p.raw[1], p.raw[2]]).saturating_add(1);
        let post = match (&p.callbacks, &outcome) {
            (None, _) => None,
            (Some(_), Outcome::Completed(result)) => self.post(&p, true, attempt, || result.clone()),
            (Some(_), Outcome::Failed { error }) => self.post(&p, false, attempt, || Some(error.clone())),
            (Some(_), _) => None,
        };
        let kind = match outcome {
            Outcome::Completed(result) => AckKind::Completed { result },
            Outcome::Retry { delay_ms, error } => AckKind::Retry { delay_ms, record: Record::with_attempt(&p.raw, attempt), error },
            Outcome::Failed { error } => AckKind::Failed { error, record: Record::with_attempt(&p.raw, attempt) },
            Outcome::Cancelled => AckKind::Cancelled,
        };
        let custom_id = !is_generated_id(&p.id);
        let retried = p.retried();
        self.push_ack_posting(p.lease, AckEntry { id: p.id, custom_id, retried, kind, dedup: p.dedup, group: p.group }, post);
        true
    }

    /// The callback a job's outcome is posted to (completed, else failed for good), if its
    /// options name one for it.
    fn post(&self, p: &Pending, completed: bool, attempts: u16, data: impl FnOnce() -> Option<Vec<u8>>) -> Option<Box<Post<S::Queue>>> {
        let t = p.callbacks.as_deref()?;
        let target = if completed { t.completed.clone() } else { t.failed.clone() }?;
        let data = data();
        Some(Box::new(Post {
            target,
            queue: self.queues[p.queue].clone(),
            job_id: String::from_utf8_lossy(&p.id).into_owned(),
            name: p.name.clone(),
            completed,
            attempts,
            data,
            meta: t.meta.clone(),
        }))
    }

    /// Reports many jobs completed with a `None` result, in one call (the worker's hot path).
    pub fn complete_many(&self, handles: &[u64]) -> usize {
        let taken: Vec<Pending> = {
            let mut running = self.running.lock().unwrap();
            handles.iter().filter_map(|h| running.remove(h)).collect()
        };
        {
            let mut c = self.cancelled.lock().unwrap();
            if !c.is_empty() {
                for h in handles {
                    c.remove(h);
                }
            }
        }
        let n = taken.len();
        let mut a = self.acks.lock().unwrap();
        let was_empty = a.is_empty();
        for p in taken {
            let custom_id = !is_generated_id(&p.id);
            let retried = p.retried();
            let post = match p.callbacks {
                None => None,
                Some(_) => self.post(&p, true, u16::from_be_bytes([p.raw[1], p.raw[2]]).saturating_add(1), || None),
            };
            a.push((
                p.lease,
                AckEntry { id: p.id, custom_id, retried, kind: AckKind::Completed { result: None }, dedup: p.dedup, group: p.group },
                post,
            ));
        }
        if was_empty && n > 0 {
            self.ack_ready.notify_one();
        }
        n
    }

    fn push_ack(&self, lease: u64, e: AckEntry) {
        self.push_ack_posting(lease, e, None);
    }

    /// An outcome to acknowledge, and the callback to post once it landed.
    fn push_ack_posting(&self, lease: u64, e: AckEntry, post: Option<Box<Post<S::Queue>>>) {
        let mut a = self.acks.lock().unwrap();
        a.push((lease, e, post));
        if a.len() == 1 {
            self.ack_ready.notify_one();
        }
    }

    // ---- acknowledgements: group commit ----

    pub async fn ack_loop(self: Arc<Self>) {
        loop {
            // Take the batch and mark it in flight under one lock, so drain_acks never sees
            // neither.
            let batch: Vec<Settled<S::Queue>> = {
                let mut a = self.acks.lock().unwrap();
                self.flushing.store(!a.is_empty(), Ordering::Release);
                std::mem::take(&mut *a)
            };
            if batch.is_empty() {
                self.acks_idle.notify_waiters();
                self.ack_ready.notified().await;
                continue;
            }
            self.flush(batch).await;
        }
    }

    async fn flush(&self, batch: Vec<Settled<S::Queue>>) {
        let n = batch.len() as u64;
        let mut by_lease: Vec<(u64, LeaseAck<S::Queue>)> = vec![];
        let mut posts: Vec<(u64, Box<Post<S::Queue>>)> = vec![];
        // The outcome of the orphan running alone: the others may run once it has landed.
        let solo = batch.iter().any(|(lease, e, _)| self.is_solo(*lease, &e.id));
        {
            let leases = self.leases.lock().unwrap();
            let mut index: HashMap<u64, usize> = HashMap::new();
            for (lease, e, post) in batch {
                let Some(l) = leases.get(&lease) else {
                    // The lease was lost (reaped) and forgotten: its job belongs to another
                    // worker now, so this outcome is refused without asking Redis.
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let i = *index.entry(lease).or_insert_with(|| {
                    by_lease.push((lease, LeaseAck { queue: self.queues[l.queue].clone(), token: l.token.clone(), entries: vec![] }));
                    by_lease.len() - 1
                });
                by_lease[i].1.entries.push(e);
                if let Some(post) = post {
                    posts.push((lease, post));
                }
            }
        }
        let acks: Vec<LeaseAck<S::Queue>> = by_lease.iter().map(|(_, a)| a.clone()).collect();
        let mut backoff = Duration::from_millis(50);
        // A settled job is never dropped: retry until the store takes it (or refuses it as
        // stale). Redis applies each lease's script whole or not at all.
        self.stats.ack_flushes.fetch_add(1, Ordering::Relaxed);
        let outcomes = loop {
            match self.store.ack(&acks).await {
                Ok(o) => break o,
                Err(e) => {
                    self.note_error(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        // The callbacks of jobs whose outcome landed: a lease with refused outcomes was reaped
        // (its jobs run again elsewhere, and that run posts), so none of it is posted.
        let refused: Vec<u64> = by_lease.iter().zip(&outcomes).filter(|(_, o)| o.refused > 0).map(|((l, _), _)| *l).collect();
        if !posts.is_empty() {
            let at = crate::engine::callback::now_ms();
            for (lease, post) in posts {
                if !refused.contains(&lease) {
                    self.callbacks.spawn(*post, at);
                }
            }
        }
        {
            let s = &self.stats;
            let mut leases = self.leases.lock().unwrap();
            for ((lease, a), o) in by_lease.iter().zip(outcomes) {
                s.completed.fetch_add(o.completed, Ordering::Relaxed);
                s.retried.fetch_add(o.retried, Ordering::Relaxed);
                s.failed.fetch_add(o.failed, Ordering::Relaxed);
                s.cancelled.fetch_add(o.cancelled, Ordering::Relaxed);
                s.stale.fetch_add(o.refused, Ordering::Relaxed);
                if let Some(l) = leases.get_mut(lease) {
                    l.open = l.open.saturating_sub(a.entries.len());
                    if l.open == 0 {
                        leases.remove(lease);
                    }
                }
            }
        }
        if solo {
            self.end_solo();
        }
        let mut r = self.rate.lock().unwrap();
        r.2 += n;
        let dt = r.1.elapsed().as_secs_f64();
        if dt >= 0.05 {
            let inst = r.2 as f64 / dt;
            r.0 = if r.0 == 0.0 { inst } else { 0.7 * r.0 + 0.3 * inst };
            r.1 = Instant::now();
            r.2 = 0;
        }
    }

    /// Waits until every outcome reported so far is acknowledged by the store.
    pub async fn drain_acks(&self) {
        loop {
            let idle = self.acks_idle.notified();
            {
                let a = self.acks.lock().unwrap();
                if a.is_empty() && !self.flushing.load(Ordering::Acquire) {
                    return;
                }
            }
            self.ack_ready.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(100), idle).await;
        }
    }

    // ---- heartbeats ----

    pub async fn heartbeat_loop(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop.notified() => {}
                _ = self.cancel_check.notified() => {}
            }
            let mut per_queue: Vec<(Arc<S::Queue>, Vec<String>)> = self.queues.iter().map(|q| (q.clone(), vec![])).collect();
            for l in self.leases.lock().unwrap().values() {
                per_queue[l.queue].1.push(l.token.clone());
            }
            match self.store.extend(&per_queue, self.cfg.lease).await {
                Ok(got) => {
                    if !got.lost.is_empty() {
                        self.forget_leases(&got.lost);
                    }
                    if !got.cancel.is_empty() {
                        self.cancel_asked(got.cancel); // per_queue is indexed as self.queues
                    }
                }
                Err(e) => self.note_error(&e),
            }
        }
    }

    /// Jobs somebody asked to cancel (`Store::cancel`): one still buffered is settled as
    /// cancelled without running; a running one is flagged for its handler (`is_cancelled`,
    /// `next_cancels`). Requests for jobs this worker no longer holds are ignored (asked again
    /// at every heartbeat until the lease ends).
    fn cancel_asked(&self, asked: Vec<(usize, Vec<u8>)>) {
        let unstarted: Vec<Pending> = {
            let mut b = self.buffer.lock().unwrap();
            let (gone, keep): (VecDeque<Pending>, VecDeque<Pending>) =
                b.ready.drain(..).partition(|p| asked.iter().any(|(q, id)| *q == p.queue && *id == p.id));
            b.ready = keep;
            gone.into()
        };
        for p in unstarted {
            let custom_id = !is_generated_id(&p.id);
            let retried = p.retried();
            self.push_ack(p.lease, AckEntry { id: p.id, custom_id, retried, kind: AckKind::Cancelled, dedup: p.dedup, group: p.group });
        }
        let running: Vec<u64> = {
            let r = self.running.lock().unwrap();
            r.iter().filter(|(_, p)| asked.iter().any(|(q, id)| *q == p.queue && *id == p.id)).map(|(h, _)| *h).collect()
        };
        let mut fresh = vec![];
        {
            let mut c = self.cancelled.lock().unwrap();
            for h in running {
                if c.insert(h) {
                    fresh.push(h);
                }
            }
        }
        if !fresh.is_empty() {
            self.cancel_news.lock().unwrap().extend(fresh);
            self.cancel_cv.notify_all();
        }
    }

    /// Whether the running job `handle` was asked to cancel.
    pub fn is_cancelled(&self, handle: u64) -> bool {
        let c = self.cancelled.lock().unwrap();
        !c.is_empty() && c.contains(&handle)
    }

    /// Running jobs newly asked to cancel, waiting up to `timeout` for the first (call it
    /// without the GIL): the worker cancels their async tasks.
    pub fn next_cancels(&self, timeout: Duration) -> Vec<u64> {
        let mut news = self.cancel_news.lock().unwrap();
        if news.is_empty() {
            news = self.cancel_cv.wait_timeout(news, timeout).unwrap().0;
        }
        std::mem::take(&mut *news)
    }

    /// Leases reaped while this process was frozen or cut off: their jobs belong to other
    /// workers now. Buffered ones are dropped unstarted; acks of running ones will be refused.
    fn forget_leases(&self, tokens: &[String]) {
        let lost: Vec<u64> = {
            let mut leases = self.leases.lock().unwrap();
            let ids: Vec<u64> = leases.iter().filter(|(_, l)| tokens.contains(&l.token)).map(|(n, _)| *n).collect();
            for n in &ids {
                leases.remove(n);
            }
            ids
        };
        if lost.is_empty() {
            return; // settled or handed back here meanwhile: nothing of this worker's was lost
        }
        self.buffer.lock().unwrap().ready.retain(|p| !lost.contains(&p.lease));
        self.stats.lost_leases.fetch_add(lost.len() as u64, Ordering::Relaxed);
        self.note_error(&Error::Store(format!(
            "{} lease(s) expired before this worker renewed them (was it frozen or cut off?); their jobs went to other workers",
            lost.len()
        )));
    }

    // ---- stopping ----

    /// Stops fetching and hands every buffered (unstarted) job back to the head of its
    /// queue, in order. Returns how many went back.
    pub async fn stop_fetching(&self) -> Result<u64> {
        let _one_at_a_time = self.releasing.lock().await;
        self.release_buffer().await
    }

    /// Hands jobs that are still running back to their queue (the grace period ran out).
    pub async fn release_running(&self) -> Result<u64> {
        let handles: Vec<u64> = self.running.lock().unwrap().keys().copied().collect();
        self.release_handles(&handles).await
    }

    /// Hands back jobs given to Python that it did not start (a stop arrived mid-batch); this
    /// stops fetching too. Releases push to the head of the queue and are serialized, so the
    /// buffer (later in the queue than anything handed out) goes back first.
    pub async fn release_handles(&self, handles: &[u64]) -> Result<u64> {
        let _one_at_a_time = self.releasing.lock().await;
        let mut total = self.release_buffer().await?;
        let mut jobs: Vec<(u64, Pending)> = {
            let mut running = self.running.lock().unwrap();
            handles.iter().filter_map(|h| running.remove(h).map(|p| (*h, p))).collect()
        };
        // Handles grow in delivery order, which is queue order.
        jobs.sort_by_key(|(h, _)| *h);
        total += self.release(jobs.into_iter().map(|(_, p)| p).collect()).await?;
        Ok(total)
    }

    async fn release_buffer(&self) -> Result<u64> {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
        // The fetch loop ends within a WAIT; then no slot can be registered any more, and
        // leave_all ends them all, takes the inbox back and stops a blocked pop with its
        // marker. Waiting for both means nothing they bring lands in the buffer after it
        // was handed back.
        let done = self.fetch_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.fetch_live.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(WAIT * 2, done).await;
        }
        let left = self.leave_all().await;
        let until = Instant::now() + WAIT * 2;
        while self.buffer.lock().unwrap().popping && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let unstarted: Vec<Pending> = {
            let mut b = self.buffer.lock().unwrap();
            b.closed = true;
            b.ready.drain(..).collect()
        };
        self.ready_cv.notify_all();
        Ok(left + self.release(unstarted).await?)
    }

    /// Pushes jobs back to the head of their queues, keeping their order. Callers hold
    /// `releasing`.
    async fn release(&self, jobs: Vec<Pending>) -> Result<u64> {
        let mut by_lease: Vec<(u64, Vec<Vec<u8>>)> = vec![];
        let mut solo = false;
        for p in jobs {
            solo |= self.is_solo(p.lease, &p.id);
            match by_lease.iter_mut().find(|(l, _)| *l == p.lease) {
                Some((_, ids)) => ids.push(p.id),
                None => by_lease.push((p.lease, vec![p.id])),
            }
        }
        let released = self.release_by_lease(by_lease).await;
        if solo {
            self.end_solo(); // whether it went back or not: the lease expires otherwise
        }
        let total = released?;
        self.stats.released.fetch_add(total, Ordering::Relaxed);
        Ok(total)
    }

    async fn release_by_lease(&self, by_lease: Vec<(u64, Vec<Vec<u8>>)>) -> Result<u64> {
        let mut total = 0;
        // Each release pushes to the head of the queue: the latest lease goes first so that
        // the earliest jobs end up in front, in their original order.
        for (lease, ids) in by_lease.into_iter().rev() {
            let (q, token) = {
                let leases = self.leases.lock().unwrap();
                let Some(l) = leases.get(&lease) else { continue };
                (self.queues[l.queue].clone(), l.token.clone())
            };
            total += self.store.release(&q, &token, &ids).await?;
            let mut leases = self.leases.lock().unwrap();
            if let Some(l) = leases.get_mut(&lease) {
                l.open = l.open.saturating_sub(ids.len());
                if l.open == 0 {
                    leases.remove(&lease);
                }
            }
        }
        Ok(total)
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}

pub enum Outcome {
    Completed(Option<Vec<u8>>),
    /// Failed this attempt; `error` (JSON) is kept with the job while it waits to run again.
    Retry {
        delay_ms: u64,
        error: Vec<u8>,
    },
    Failed {
        error: Vec<u8>,
    },
    /// The handler gave up after its job was asked to cancel (or raised `JobCancelled`).
    Cancelled,
}

/// What a job's settlement passes on from its options: the deduplication key it holds until
/// it settles (`"dedup"`, written only for `DedupMode::UntilSettled`) and its group
/// (`"group"`). Options are parsed only when they mention one of them, once for both.
fn settle_keys(options: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let dedup = memchr::memmem::find(options, b"\"dedup\"").is_some();
    let group = memchr::memmem::find(options, b"\"group\"").is_some();
    if !dedup && !group {
        return (None, None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(options) else { return (None, None) };
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty()).map(|x| x.as_bytes().to_vec());
    (if dedup { text("dedup") } else { None }, if group { text("group") } else { None })
}

/// The error JSON stored with a failed job: `{"type", "message", "traceback"}`.
pub fn error_json(kind: &str, message: &str, traceback: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"type": kind, "message": message, "traceback": traceback}))
        .expect("a map of strings always serializes")
}

#[cfg(test)]
mod tests {
    use super::{error_json, settle_keys};

    #[test]
    fn dedup_key_and_group_are_read_from_options_that_hold_them() {
        let dedup = |o: &[u8]| settle_keys(o).0;
        assert_eq!(dedup(br#"{"timeout":3,"dedup":"user-7"}"#), Some(b"user-7".to_vec()));
        assert_eq!(dedup(br#"{"meta":{"note":"\"dedup\""}}"#), None);
        assert_eq!(dedup(br#"{"timeout":3}"#), None);
        assert_eq!(dedup(b"not json \"dedup\""), None);
        assert_eq!(settle_keys(br#"{"group":"tenant-42"}"#), (None, Some(b"tenant-42".to_vec())));
        assert_eq!(settle_keys(br#"{"dedup":"k","group":"g"}"#), (Some(b"k".to_vec()), Some(b"g".to_vec())));
        assert_eq!(settle_keys(br#"{"meta":{"group":"g"}}"#), (None, None));
    }

    #[test]
    fn error_json_escapes_everything_json_needs() {
        let raw = error_json("E\"x", "line\nnext\ttab \u{1} \u{2028} é", "");
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["type"], "E\"x");
        assert_eq!(v["message"], "line\nnext\ttab \u{1} \u{2028} é");
        assert_eq!(v["traceback"], "");
    }
}

//! The store behind the engine. Callers (the Python layer, the worker, the scheduler) use
//! this trait only, so a second backend (an embedded in-process store, a SQL database) can be
//! added without touching them. `store/redis/mod.rs` is the Redis implementation.

pub mod chunk;
#[cfg(test)]
pub mod conformance;
pub mod lenient;
pub mod memory;
pub mod postgres;
pub mod redis;
pub mod settings;
pub mod sqlite;
pub mod told;

pub use settings::Settings;

pub use crate::engine::schedules::ScheduleEntry;
use crate::error::{Error, Result};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Queue names: 1 to 100 characters of letters, digits and `-_.:`. Every store keeps to it: braces
/// would break Redis's hash tags, spaces and control characters its key names.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let ok =
        !name.is_empty() && name.len() <= 100 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid queue name {name:?}: use 1 to 100 letters, digits, '-', '_', '.' or ':'")))
    }
}

/// What the engine knows of a queue handle (`Store::Queue`): its name.
pub trait QueueHandle: Send + Sync + 'static {
    fn name(&self) -> &str;
}

/// Key prefixes follow the same alphabet as queue names.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    validate_queue_name(prefix)
        .map_err(|_| Error::Invalid(format!("invalid key prefix {prefix:?}: use 1 to 100 letters, digits, '-', '_', '.' or ':'")))
}

/// Workflow records are named `chain:<id>` or `flow:<id>`, the id alphanumeric.
pub fn check_book(book: &str) -> Result<()> {
    let ok = book.len() <= 120
        && matches!(book.split_once(':'), Some(("chain" | "flow", id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid workflow id {book:?}")))
    }
}

/// What a flow's child does to its parent when it fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildPolicy {
    /// The parent fails without running.
    FailParent,
    /// The parent runs; the child's error is among its children's results.
    Ignore,
    /// The parent runs; the child leaves no result.
    ContinueParent,
}

impl ChildPolicy {
    pub fn parse(s: &str) -> Result<ChildPolicy> {
        match s {
            "fail_parent" => Ok(ChildPolicy::FailParent),
            "ignore" => Ok(ChildPolicy::Ignore),
            "continue_parent" => Ok(ChildPolicy::ContinueParent),
            _ => Err(Error::Invalid(format!("invalid child policy {s:?}: use fail_parent, ignore or continue_parent"))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            ChildPolicy::FailParent => "fail_parent",
            ChildPolicy::Ignore => "ignore",
            ChildPolicy::ContinueParent => "continue_parent",
        }
    }
}

/// A flow's child finished for good (`Store::flow_settle`): counted once into its parent's
/// pending children, its result kept for the parent unless its policy says otherwise.
#[derive(Debug, Clone)]
pub struct FlowSettle {
    pub flow_id: String,
    pub child: u32,
    pub parent: u32,
    /// Failed for good (else completed).
    pub failed: bool,
    pub job_id: String,
    /// JSON kept for the parent: {"name", "result"|"error"}.
    pub data: Vec<u8>,
    pub policy: ChildPolicy,
}

/// What the parent of a settled child must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowSettled {
    /// Children are still pending.
    Wait,
    /// Every child settled: enqueue the parent (its spec, JSON, as the flow's record holds it).
    Release(Option<Vec<u8>>),
    /// A child failed it (the error JSON): it fails without running.
    Fail(Option<Vec<u8>>),
}

/// A job to write. `record` is packed (record.rs) and carries the id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    /// The id was chosen by the caller: a second dispatch with it is refused as a duplicate.
    pub custom_id: bool,
    /// Runs no earlier than this many µs after the store wrote it.
    pub delay_us: u64,
    /// A due time (µs since the epoch, the producer's clock) instead of a delay: a job written
    /// late (the end of a large bulk) is still due when asked, not `delay_us` after its write.
    pub at_us: Option<u64>,
    pub record: Vec<u8>,
    /// A deduplication key (one mark per key and queue): see `DedupMode`.
    pub dedup: Option<Dedup>,
    /// The group the record's options name (`record::options_group`): the job waits in its
    /// group's list, so it goes through the general script, never the raw bulk write.
    pub group: Option<String>,
}

/// A job's deduplication key and how it holds it.
#[derive(Debug, Clone)]
pub struct Dedup {
    pub key: String,
    pub mode: DedupMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DedupMode {
    /// A dispatch with the key is dropped for this many ms after the job holding it was
    /// dispatched (throttle).
    Ttl(u64),
    /// Dropped until the job holding the key completes or fails for good (its settlement
    /// releases it; the record's options carry the key, `"dedup"`).
    UntilSettled,
    /// The job waits its delay; a dispatch with the key while it is still delayed (never
    /// started) replaces its record (payload and options, id kept) and restarts the delay.
    Debounce,
}

/// What an enqueue did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A new job.
    New,
    /// A job with that caller-chosen id exists already: nothing was written.
    Exists,
    /// The job's deduplication key is held by the job with this id: the dispatch was dropped
    /// or, debounced, replaced that waiting job's record.
    Deduplicated(String),
}

/// One dispatch's jobs for `Store::enqueue_parts_blocking`.
pub struct Part<'a, Q> {
    pub q: &'a Q,
    pub jobs: &'a [NewJob],
    pub mark: Option<&'a Watermark>,
}

/// Sequence numbers of generated ids that a write covers, so the store can tell waiting jobs
/// from ids it never saw.
#[derive(Debug, Clone)]
pub struct Watermark {
    pub producer: String,
    pub last_seq: u64,
    /// A chunk of a bulk dispatch: its first sequence number. The store marks the chunk
    /// written in the same atomic step as its jobs, so that writing it again after an answer
    /// was lost writes nothing (`chunks_written` tells whether it landed).
    pub guard: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum AckKind {
    /// Completed; `result` is the return value as JSON, None for a `None` return.
    Completed { result: Option<Vec<u8>> },
    /// Failed this attempt; runs again after `delay_ms`. `record` has the attempt counted;
    /// `error` (JSON) is kept with the job until it completes or fails for good.
    Retry { delay_ms: u64, record: Vec<u8>, error: Vec<u8> },
    /// Failed for good. `record` has the attempt counted; `error` is JSON.
    Failed { error: Vec<u8>, record: Vec<u8> },
    /// Cancelled: somebody asked (`Store::cancel`) and the handler gave up, or it had not
    /// started yet. It does not run again.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct AckEntry {
    /// Bytes, not text: a damaged record is settled under whatever id its lease holds.
    pub id: Vec<u8>,
    pub custom_id: bool,
    /// An earlier attempt failed: a completion drops the error kept since (`Retry`).
    pub retried: bool,
    pub kind: AckKind,
    /// The deduplication key the job holds until it settles (`DedupMode::UntilSettled`): a
    /// completion or a final failure releases it.
    pub dedup: Option<Vec<u8>>,
    /// The job's group: its settlement lowers the group's count of leased jobs (the
    /// per-group concurrency limit), and a retry goes back to the group's list.
    pub group: Option<Vec<u8>>,
}

/// One lease's settled jobs.
#[derive(Debug)]
pub struct LeaseAck<Q> {
    pub queue: Arc<Q>,
    pub token: String,
    pub entries: Vec<AckEntry>,
}

impl<Q> Clone for LeaseAck<Q> {
    fn clone(&self) -> Self {
        LeaseAck { queue: self.queue.clone(), token: self.token.clone(), entries: self.entries.clone() }
    }
}

/// What the store took of one lease's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckOutcome {
    pub completed: u64,
    pub retried: u64,
    pub failed: u64,
    /// Refused because the lease had expired and been reaped (stale token): the job belongs
    /// to another worker, whatever this one's run of it did.
    pub refused: u64,
    pub cancelled: u64,
}

impl AckOutcome {
    pub fn settled(&self) -> u64 {
        self.completed + self.retried + self.failed
    }
}

/// What `Store::expire_worker` ended: the leases of a dead worker in one queue.
#[derive(Debug, Default)]
pub struct Expired {
    pub leases: u64,
    /// Jobs those leases held (running or prefetched).
    pub held: u64,
    /// Some of their ids (at most the number asked for).
    pub ids: Vec<String>,
    /// Ids whose run had started: orphans, which run alone, so one of them killed the worker.
    pub started: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Tick {
    pub promoted: u64,
    pub reaped: u64,
    /// Store clock, ms since the epoch.
    pub now_ms: i64,
    /// The same clock in µs, for timers finer than a millisecond.
    pub now_us: i64,
    /// The earliest due time of a delayed job, in µs: due times are kept to the µs, so that
    /// no job runs before the moment it was asked for.
    pub next_due_us: Option<i64>,
    pub next_lease_deadline_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting,
    Delayed,
    Active,
    Completed,
    Failed,
    Cancelled,
    Unknown,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Delayed => "delayed",
            State::Active => "active",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> State {
        match s {
            "waiting" => State::Waiting,
            "delayed" => State::Delayed,
            "active" => State::Active,
            "completed" => State::Completed,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            _ => State::Unknown,
        }
    }
    pub fn is_final(&self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }
}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    /// The packed record while the store still holds it (delayed, active, failed).
    pub record: Option<Vec<u8>>,
    /// The return value (completed) or the error (failed), as JSON.
    pub data: Option<Vec<u8>>,
    /// The job's last progress (JSON), read only by `Store::info`.
    pub progress: Option<Vec<u8>>,
    /// Its callback's record (`Store::callback_status`), read only by `Store::info`.
    pub callback: Vec<(String, Vec<u8>)>,
}

/// What a running job reports about itself (feedback.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Its last progress: replaces the one before.
    Progress,
    /// A log line: appended, the newest `MAX_LOG_LINES` kept.
    Log,
}

/// Log lines kept per job: a line past them drops the oldest.
pub const MAX_LOG_LINES: u64 = 1000;
/// The longest log line or progress entry (its JSON), in bytes.
pub const MAX_FEEDBACK_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Workers take no job from the queue (`Store::pause`).
    pub paused: bool,
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub failed: u64,
    pub completed: u64,
    pub retried: u64,
    pub stalled: u64,
    pub cancelled: u64,
}

/// Limits of one queue, applied across every worker (`Store::set_limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// At most this many jobs leased per window of this length (a fixed window, opened by
    /// the first lease after the last one ended).
    pub rate: Option<(u64, Duration)>,
    /// At most this many jobs leased at once (running or prefetched), on all workers.
    pub concurrency: Option<u64>,
}

/// What `Store::cancel` found and did.
#[derive(Debug, Clone)]
pub struct CancelReply {
    /// Where the job was: waiting, delayed, active, failed, completed, cancelled or unknown.
    pub state: State,
    /// Its record, when the store held one (waiting, delayed, active, failed).
    pub record: Option<Vec<u8>>,
    /// It was cancelled (removed), or its worker was asked to cancel it (active); false when
    /// the state does not allow it (a finished job is not cancelled, a running one not removed).
    pub done: bool,
}

/// What a heartbeat (`Store::extend`) learned.
#[derive(Debug, Clone, Default)]
pub struct Extended {
    /// Leases that were reaped while this worker held them.
    pub lost: Vec<String>,
    /// (index into the leases passed, job id): jobs of live leases somebody asked to cancel.
    pub cancel: Vec<(usize, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct FailedJob {
    pub id: String,
    pub record: Option<Vec<u8>>,
    pub error: Option<Vec<u8>>,
    pub failed_at_ms: i64,
}

/// What a schedule driver reads on each round.
#[derive(Debug, Clone)]
pub struct DueSchedules {
    /// Store clock, ms since the epoch.
    pub now_ms: i64,
    /// The earliest next run of any schedule.
    pub head_ms: Option<i64>,
    /// (key, tick ms) of the schedules due now.
    pub due: Vec<(String, i64)>,
}

/// A schedule to write: its key, its timing signature (an upsert with the same signature
/// keeps the next run), the next run and anchor used when the timing changed, and the
/// fields of its definition.
#[derive(Debug, Clone)]
pub struct ScheduleWrite {
    pub key: String,
    pub timing: String,
    pub next_ms: i64,
    pub anchor_ms: i64,
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Up to this many jobs, a dispatch is one script call (and a sync one is sent from the
/// caller's thread); above it, the bulk path.
pub const SMALL_BATCH: usize = 32;

/// A worker's idle registration, passed with each reserve.
pub struct Idle<'a> {
    pub worker: &'a str,
    /// The slot it registered last in this queue, to drop.
    pub previous: Option<&'a str>,
    /// Register as idle when nothing is ready.
    pub register: bool,
    pub lease: Duration,
}

/// What a reserve brought.
#[derive(Debug)]
pub enum Reserved {
    Jobs(Vec<Vec<u8>>),
    /// Nothing ready; the worker is idle under a new slot (true) or its previous one.
    Idle {
        new_slot: bool,
    },
    Empty,
    /// The queue is paused: nothing was leased (`Store::pause`).
    Paused,
    /// A limit of the queue allows nothing now (`Store::set_limits`): try again after
    /// `retry_in` (the rate limit's window ends), or when the queue is woken (None: the
    /// concurrency limit, freed by a settled job).
    Limited {
        retry_in: Option<Duration>,
    },
}

impl Idle<'_> {
    /// The slot string stored in the idle zset and parsed by common.lua's hand_over.
    pub fn slot(&self, token: &str) -> String {
        format!("{}|{token}|{}", self.worker, self.lease.as_millis())
    }
}

/// A job handed straight to a blocked worker, leased under `token`.
#[derive(Debug)]
pub struct Handed {
    pub queue: usize,
    pub token: String,
    pub record: Vec<u8>,
}

pub trait Store: Send + Sync + 'static {
    /// A queue as this store addresses it (its key names, its row id...), made once per name
    /// by `queue` and passed back to every operation on the queue.
    type Queue: QueueHandle;
    /// The handle of the queue `name` (a valid queue name: `validate_queue_name`).
    fn queue(&self, name: &str) -> Result<Arc<Self::Queue>>;
    /// A bulk chunk packed for this store (`pack_chunk`).
    type Packed: Send + 'static;
    /// Writes jobs atomically. Returns, per job, what was done (`Written`).
    /// A guarded chunk (`Watermark::guard`) that was written already writes nothing and
    /// answers `New` for every job (they were written, by the earlier try).
    fn enqueue(&self, q: &Self::Queue, jobs: &[NewJob], mark: Option<&Watermark>) -> impl Future<Output = Result<Vec<Written>>> + Send;
    /// One chunk of a bulk dispatch made ready to write: its records packed into the
    /// commands (CPU only, so it can run while the caller stages the next chunks).
    fn pack_chunk(&self, q: &Self::Queue, chunk: &crate::store::chunk::Chunk) -> Self::Packed;
    /// Writes a packed chunk (`enqueue` of its jobs; a chunk is always guarded, so writing
    /// it again after a lost answer is safe).
    fn write_chunk(&self, q: &Self::Queue, packed: &Self::Packed) -> impl Future<Output = Result<()>> + Send;
    /// Whether guarded chunks, given as (producer, first sequence number), were written.
    fn chunks_written(&self, q: &Self::Queue, chunks: &[(String, u64)]) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Writes the dispatches a coalescer gathered (coalesce.rs) on the calling thread, in one
    /// round trip: each part's jobs in one atomic step (parts of one queue may share it), an
    /// answer per part. Err when the round trip failed (every part's answer is unknown then).
    /// A guarded part (`Watermark::guard`) is not accepted here.
    fn enqueue_parts_blocking(&self, parts: &[Part<'_, Self::Queue>]) -> Result<Vec<Result<Vec<Written>>>>;
    /// Leases up to `max` ready jobs under `token`, their packed records in order. Jobs
    /// handed to this worker and not yet taken come first; with none at all and
    /// `idle.register`, the worker is idle: a new slot under `token` (`idle.slot(token)`) or
    /// its previous one.
    fn reserve(&self, q: &Self::Queue, token: &str, max: usize, idle: &Idle<'_>) -> impl Future<Output = Result<Reserved>> + Send;
    /// Settles jobs of several leases in one round trip; one outcome per lease.
    fn ack(&self, acks: &[LeaseAck<Self::Queue>]) -> impl Future<Output = Result<Vec<AckOutcome>>> + Send;
    /// Records that a handler is about to start an orphaned job (`record::ORPHAN`) of the lease
    /// `token`, before it runs, so that the reaper counts this run if the worker dies too.
    /// False when the lease no longer holds the job (reaped: another worker's now).
    fn start(&self, q: &Self::Queue, token: &str, id: &[u8]) -> impl Future<Output = Result<bool>> + Send;
    /// Puts unstarted leased jobs back at the head of their queue, in order.
    fn release(&self, q: &Self::Queue, token: &str, ids: &[Vec<u8>]) -> impl Future<Output = Result<u64>> + Send;
    /// Extends leases; returns the tokens that were lost (reaped) and the jobs of the others
    /// somebody asked to cancel.
    fn extend(&self, leases: &[(Arc<Self::Queue>, Vec<String>)], lease: Duration) -> impl Future<Output = Result<Extended>> + Send;
    /// Ends now the leases of `worker`, a worker known to be dead (its supervisor saw its
    /// process exit): the next `tick` reaps them. Also drops its idle slots.
    fn expire_worker(&self, q: &Self::Queue, worker: &str, most: usize) -> impl Future<Output = Result<Expired>> + Send;
    /// Promotes due delayed jobs and reaps expired leases.
    fn tick(&self, q: &Self::Queue, limit: usize) -> impl Future<Output = Result<Tick>> + Send;
    /// Blocks the calling thread (not a runtime thread) until a job is handed to `worker`
    /// (returned), one of the queues may have ready jobs (a wake-up marker), an empty marker
    /// arrives on its inbox (leave.lua's stop, or a `nudge`), or `timeout` passes (None for
    /// the last three).
    fn wait_for_work(&self, queues: &[Arc<Self::Queue>], worker: &str, timeout: Duration) -> Result<Option<Handed>>;
    /// A signal notified when `q` may have new ready jobs (a hint), for a worker whose handler
    /// threads are all busy, so none blocks in `wait_for_work`: its prefetch goes on. None for
    /// a store that hands new jobs to a worker's registered slot itself (Redis).
    fn ready_signal(&self, _q: &Self::Queue) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
    /// Ends `worker`'s blocked pop at once with an empty marker on its inbox in `q` (the one
    /// leave.lua leaves); one that arrives after the pop ended only makes the next pop return
    /// early, and a reserve taking the inbox back drops it.
    fn nudge(&self, q: &Self::Queue, worker: &str) -> impl Future<Output = Result<()>> + Send;
    /// Ends a worker's idle slot in `q` (when it has one) and puts the jobs handed to it but
    /// not taken back at the head of the queue; then wakes the worker's blocked pop.
    fn leave(&self, q: &Self::Queue, worker: &str, slot: Option<&str>) -> impl Future<Output = Result<u64>> + Send;
    fn status(&self, q: &Self::Queue, id: &str) -> impl Future<Output = Result<Status>> + Send;
    /// `status` and the job's last progress.
    fn info(&self, q: &Self::Queue, id: &str) -> impl Future<Output = Result<Status>> + Send;
    /// Records a running job's progress or log line (`entry`: a JSON object, without its
    /// time); the key lives `ttl` after this write. Returns the time written (ms, the store's
    /// clock).
    fn feedback(&self, q: &Self::Queue, id: &str, kind: Feedback, entry: &[u8], ttl: Duration) -> impl Future<Output = Result<i64>> + Send;
    /// Switches the queue's events stream on, keeping about `keep` entries (each one batch of
    /// events), or off (None): the stream already written stays readable until it is trimmed
    /// or the queue obliterated.
    fn set_events(&self, q: &Self::Queue, keep: Option<u64>) -> impl Future<Output = Result<()>> + Send;
    /// How many entries the queue's events stream keeps, or None when it is off.
    fn events_keep(&self, q: &Self::Queue) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// A job's last progress (JSON with its time), or None.
    fn progress(&self, q: &Self::Queue, id: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// A job's log lines `start` to `start + limit - 1`, oldest first (JSON with their times).
    fn logs(&self, q: &Self::Queue, id: &str, start: usize, limit: usize) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// Records how a job's callback went (`keys::QueueKeys::callback`): replaces the fields
    /// given; the hash lives as long as results.
    fn callback_record(&self, q: &Self::Queue, id: &str, fields: Vec<(&'static str, Vec<u8>)>) -> impl Future<Output = Result<()>> + Send;
    /// The fields `callback_record` wrote for a job, none when it has no record.
    fn callback_status(&self, q: &Self::Queue, id: &str) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;
    /// Waits for a job to complete or fail for good; Ok(None) when `timeout` passed first.
    fn wait_result(
        &self,
        q: Arc<Self::Queue>,
        id: String,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Option<Status>>> + Send;
    fn counts(&self, q: &Self::Queue) -> impl Future<Output = Result<Counts>> + Send;
    /// Workers stop taking jobs from `q` (reserve answers `Reserved::Paused`; they hand back
    /// what they prefetched); running jobs finish; dispatch goes on. True if it was running.
    fn pause(&self, q: &Self::Queue) -> impl Future<Output = Result<bool>> + Send;
    /// `q` runs again; true if it was paused.
    fn resume(&self, q: &Self::Queue) -> impl Future<Output = Result<bool>> + Send;
    /// A signal notified when `q` was paused or resumed (a hint, as `schedule_signal`).
    fn control_signal(&self, q: &Self::Queue) -> impl Future<Output = Result<Arc<tokio::sync::Notify>>> + Send;
    /// Adds queues to the registry (`keys::queue_registry`); a no-op for those this process
    /// registered already.
    fn register_queues(&self, names: &[&str]) -> impl Future<Output = Result<()>> + Send;
    /// Every queue's name, sorted.
    fn queues(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// `UnknownQueue` unless the queue was dispatched to or consumed (it is in `queues`): a
    /// control naming a misspelt queue must not succeed in silence.
    fn known_queue(&self, q: &Self::Queue) -> impl Future<Output = Result<()>> + Send {
        async move {
            let names = self.queues().await?;
            if names.iter().any(|n| n == q.name()) {
                return Ok(());
            }
            let listed = if names.is_empty() { "none yet".to_string() } else { names.join(", ") };
            Err(Error::UnknownQueue(format!(
                "no job was ever dispatched to queue '{}' and no worker consumes it (queues: {listed})",
                q.name()
            )))
        }
    }
    /// Cancels one job (`remove` false: a waiting or delayed job goes and is marked
    /// cancelled; a running one's worker is asked to stop it) or removes it (`remove` true:
    /// every trace of a job that is not running; a caller-chosen id is free again).
    fn cancel(&self, q: &Self::Queue, id: &str, remove: bool) -> impl Future<Output = Result<CancelReply>> + Send;
    /// Replaces the queue's limits (none: no limit); its workers hear of it at once.
    fn set_limits(&self, q: &Self::Queue, limits: &Limits) -> impl Future<Output = Result<()>> + Send;
    fn limits(&self, q: &Self::Queue) -> impl Future<Output = Result<Limits>> + Send;
    /// Replaces the limits every group of the queue has (each group its own window and count
    /// of leased jobs); its workers hear of it at once.
    fn set_group_limits(&self, q: &Self::Queue, limits: &Limits) -> impl Future<Output = Result<()>> + Send;
    fn group_limits(&self, q: &Self::Queue) -> impl Future<Output = Result<Limits>> + Send;
    /// Puts one failed job back in its queue, attempts reset; false if it is not failed.
    fn retry_job(&self, q: &Self::Queue, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Cancels up to `max` waiting and delayed jobs (highest priority and earliest due first);
    /// returns how many. Called until it returns fewer than `max`: Redis is never held long.
    /// Also returns the records of those that carry options (chain and flow steps among them).
    fn empty_page(&self, q: &Self::Queue, max: usize) -> impl Future<Output = Result<(u64, Vec<Vec<u8>>)>> + Send;
    /// Deletes every key of the queue and drops it from the registry; returns how many keys.
    fn obliterate(&self, q: &Self::Queue) -> impl Future<Output = Result<u64>> + Send;
    fn failed_list(&self, q: &Self::Queue, limit: usize) -> impl Future<Output = Result<Vec<FailedJob>>> + Send;
    fn failed_retry(&self, q: &Self::Queue) -> impl Future<Output = Result<u64>> + Send;
    fn failed_purge(&self, q: &Self::Queue) -> impl Future<Output = Result<u64>> + Send;
    /// A signal notified when a job of `q` fell due earlier than its schedulers knew (a hint
    /// only: it may also fire spuriously). Call it before reading the schedule, and again on
    /// each round: it re-subscribes after a broken connection.
    fn schedule_signal(&self, q: &Self::Queue) -> impl Future<Output = Result<Arc<tokio::sync::Notify>>> + Send;
    /// Creates or updates a schedule; returns (created, next run ms).
    fn schedule_upsert(&self, w: ScheduleWrite) -> impl Future<Output = Result<(bool, i64)>> + Send;
    /// The named schedules that exist, or every schedule (None), in next-run order.
    fn schedule_read(&self, keys: Option<Vec<String>>) -> impl Future<Output = Result<Vec<ScheduleEntry>>> + Send;
    /// Removes the named schedules, or every schedule (None); returns how many there were.
    fn schedule_remove(&self, keys: Option<Vec<String>>) -> impl Future<Output = Result<u64>> + Send;
    fn schedules_due(&self, limit: usize) -> impl Future<Output = Result<DueSchedules>> + Send;
    /// Moves a schedule from `tick` to `next` (None: it is done and goes away), unless
    /// another driver did already; returns whether this call did. An empty `job_id` puts the
    /// schedule aside until `next` without counting a run (its definition cannot be read).
    fn schedule_advance(&self, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Notified when a schedule was added or retimed (a hint, as `schedule_signal`).
    fn schedules_signal(&self) -> impl Future<Output = Result<Arc<tokio::sync::Notify>>> + Send;
    /// Fields of a workflow's record (`book`: `chain:<id>` or `flow:<id>`, `check_book`); None
    /// for a field it does not have.
    fn book_get(&self, book: &str, fields: Vec<String>) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;
    /// Sets fields of a workflow's record; with `ttl`, the whole record goes that long after now.
    fn book_set(&self, book: &str, fields: Vec<(String, Vec<u8>)>, ttl: Option<Duration>) -> impl Future<Output = Result<()>> + Send;
    /// Flow children finished for good, each settled into its parent atomically (`FlowSettle`);
    /// one answer each, the same however often a child is reported.
    fn flow_settle(&self, items: Vec<FlowSettle>) -> impl Future<Output = Result<Vec<FlowSettled>>> + Send;
    /// What the children of a flow's node left for it: (child job id, JSON).
    fn flow_results(&self, flow_id: &str, node: u32) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;
    /// Writes a worker's entry (JSON) in the registry of workers, replacing its last one.
    fn worker_put(&self, worker: String, entry: Vec<u8>) -> impl Future<Output = Result<()>> + Send;
    /// Every entry of the registry of workers: (worker id, JSON).
    fn workers_read(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;
    /// Deletes entries of the registry of workers; returns how many were there.
    fn workers_remove(&self, workers: Vec<String>) -> impl Future<Output = Result<u64>> + Send;
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
}

//! The Redis store: every state change is one Lua script (lua/), hot paths batch many
//! jobs per call, and several calls share a round trip where they can.

pub mod cluster;
pub mod conn;
pub mod events;
pub mod keys;
pub mod loop_conn;
pub mod notify;
pub mod route;
pub mod scripts;
pub mod sentinel;

use crate::error::{Error, Result};
use crate::record::{is_generated_id, run_bounds, PRODUCER_LEN, RUN, RUN_BYTES};
use crate::store::chunk::Chunk;
use crate::store::{
    AckEntry, AckKind, AckOutcome, CancelReply, Counts, DedupMode, DueSchedules, Expired, Extended, FailedJob, Feedback, FlowSettle,
    FlowSettled, Handed, Idle, LeaseAck, Limits, NewJob, Part, QueueHandle, Reserved, ScheduleEntry, ScheduleWrite, State, Status, Store,
    Tick, Watermark, Written, MAX_FEEDBACK_BYTES, MAX_LOG_LINES, SMALL_BATCH,
};
use ::redis::Value;
use conn::Settings;
use keys::{QueueKeys, ScheduleKeys};
use notify::Notifier;
use route::{Link, SyncLink};
use scripts::scripts;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker waits on one slot's queues before the next, on a cluster.
const TURN: Duration = Duration::from_millis(20);

/// What one blocking pop of a worker got.
enum Popped {
    Nothing,
    /// A queue's wake marker or the stop marker: the worker looks again.
    Woken,
    Handed(Handed),
}

impl Popped {
    fn handed(self) -> Option<Handed> {
        match self {
            Popped::Handed(h) => Some(h),
            _ => None,
        }
    }
}

/// How long the producer high-water marks and completion bitmaps outlive their last use.
const MARK_TTL_SECS: u64 = 30 * 24 * 3600;

pub struct RedisStore {
    conn: Link,
    /// For the idle worker's blocking pop, run on the handler thread that will run the job
    /// (a blocking command must not hold up the shared connection either).
    popper: SyncLink,
    /// For single dispatches, written together by whichever thread leads (coalesce.rs).
    direct: SyncLink,
    /// For the bulk path's raw writes (`write_bulk`), one at a time, in order.
    bulk: SyncLink,
    notifier: Notifier,
    sched: ScheduleKeys,
    /// Queues this process added to the registry (`keys::queue_registry`): once each.
    registered: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn bad_reply(what: &str, v: &Value) -> Error {
    Error::Store(format!("unexpected reply from Redis for {what}: {v:?}"))
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A string reply's bytes (also the events reader's, events.rs).
pub(crate) fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Nil => Some(vec![]),
        _ => None,
    }
}

fn server_error(v: &Value) -> Option<Error> {
    match v {
        Value::ServerError(e) => Some(Error::Store(format!("Redis script failed: {e:?}"))),
        _ => None,
    }
}

/// List elements per RPUSH of the bulk path.
const PER_RPUSH: usize = 4000;

/// The bulk path of an enqueue, as the bytes of one MULTI/EXEC: RPUSHes of the list elements
/// that `bounds` cut the records into (`run_bounds`), `PER_RPUSH` per command, each framed in
/// place by `element(from, to, out)`, then mark.lua. It goes to Redis as it is
/// (`SyncConn::packed`): no command object and no copy per record between packing and the
/// socket.
pub struct BulkWire {
    /// A key of the queue: the slot it goes to on a cluster.
    key: String,
    bytes: Vec<u8>,
    /// Replies before EXEC's: MULTI's and one per queued command.
    queued: usize,
    jobs: usize,
}

fn bulk_wire(
    q: &QueueKeys,
    bounds: &[usize],
    mark: &Watermark,
    runs: &str,
    size_hint: usize,
    mut element: impl FnMut(usize, usize, &mut Vec<u8>),
) -> BulkWire {
    let elements = bounds.len() - 1;
    let jobs = bounds[elements];
    let mut out = Vec::with_capacity(size_hint + 256 + (elements / PER_RPUSH + 1) * (q.wait.len() + 32));
    out.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    let mut queued = 1;
    for from in (0..elements).step_by(PER_RPUSH) {
        let to = (from + PER_RPUSH).min(elements);
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(to - from + 2).as_bytes());
        out.extend_from_slice(b"\r\n$5\r\nRPUSH\r\n");
        frame(&mut out, q.wait.len());
        out.extend_from_slice(q.wait.as_bytes());
        out.extend_from_slice(b"\r\n");
        for w in bounds[from..=to].windows(2) {
            element(w[0], w[1], &mut out);
        }
        queued += 1;
    }
    let mut c = scripts().mark.eval(&[&q.hwm(&mark.producer), &q.wake, &q.runs, &q.wait, &q.sent(&mark.producer)]);
    c.arg(mark.last_seq).arg(MARK_TTL_SECS).arg(jobs - elements).arg(elements).arg(guard_arg(mark)).arg(runs);
    out.extend_from_slice(&c.get_packed_command());
    out.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    BulkWire { key: q.wait.clone(), bytes: out, queued: queued + 1, jobs }
}

/// Frames one list element of the bulk path: the record `pack` writes (given `frame`) when
/// it writes one, else a run of them (record.rs), built in `scratch` to learn its length.
fn frame_element(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    records: usize,
    pack: impl FnOnce(&mut Vec<u8>, &mut dyn FnMut(&mut Vec<u8>, usize)),
) {
    if records == 1 {
        pack(out, &mut frame);
    } else {
        scratch.clear();
        scratch.push(RUN);
        pack(scratch, &mut |o: &mut Vec<u8>, len: usize| o.extend_from_slice(&(len as u16).to_be_bytes()));
        frame(out, scratch.len());
        out.extend_from_slice(scratch);
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of a RESP bulk string of `len` bytes (its bytes and `\r\n` follow).
fn frame(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A bulk chunk ready to write: the bulk path's bytes, or jobs for `enqueue` (delays,
/// priorities, small chunks).
pub enum PackedChunk {
    Bulk(BulkWire),
    Jobs(Vec<NewJob>, Watermark),
}

/// The guard argument of the scripts: a chunk's first sequence number, or -1.
/// The jobs of a bulk write as runs of generated ids, for the events stream (mark.lua's
/// ARGV[6]): `[[producer, first seq, count, name], ...]`. Built per write, not per job when
/// the ids run on (a chunk is one run).
fn id_runs<'a>(jobs: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut runs: Vec<(&str, u64, u64, &[u8])> = Vec::new();
    for (id, name) in jobs {
        let Some((producer, seq)) = id.rsplit_once('-').and_then(|(p, s)| Some((p, s.parse::<u64>().ok()?))) else { continue };
        match runs.last_mut() {
            Some(r) if r.0 == producer && r.1 + r.2 == seq && r.3 == name => r.2 += 1,
            _ => runs.push((producer, seq, 1, name)),
        }
    }
    let mut out = String::from("[");
    for (i, (producer, first, count, name)) in runs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let name = serde_json::to_string(&String::from_utf8_lossy(name)).unwrap_or_else(|_| "null".into());
        out.push_str(&format!("[\"{producer}\",{first},{count},{name}]"));
    }
    out.push(']');
    out
}

/// The id and the name of a packed record (record.rs), for `id_runs`.
fn record_id_name(record: &[u8]) -> (&str, &[u8]) {
    let n = record.get(6).copied().unwrap_or(0) as usize;
    let id = record.get(7..7 + n).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
    let m = record.get(7 + n).copied().unwrap_or(0) as usize;
    (id, record.get(8 + n..8 + n + m).unwrap_or(b""))
}

fn guard_arg(mark: &Watermark) -> i64 {
    mark.guard.map(|g| g as i64).unwrap_or(-1)
}

/// How the replies to a batch of dispatches map back to its parts (`RedisStore::plan_parts`).
pub struct PartsPlan {
    /// Per script call, in order: whether it is push.lua, and the parts it writes.
    calls: Vec<(bool, Vec<usize>)>,
    /// Jobs per part.
    sizes: Vec<usize>,
    /// Queues registered by an `SADD` before the calls (its reply comes first).
    new_queues: Vec<String>,
}

/// Per job, what was done (see `enqueue_script`): enqueue.lua answers 1 (written), 0 (a job
/// with that caller-chosen id exists) or the id of the job holding the dedup key; -1 answers a
/// guarded chunk that was written already (by an earlier try: every job was written).
fn enqueue_reply(v: Value, n: usize, plain: bool) -> Result<Vec<Written>> {
    if let Some(e) = server_error(&v) {
        return Err(e);
    }
    if plain || int(&v) == Some(-1) {
        return Ok(vec![Written::New; n]);
    }
    let a = array(v.clone()).ok_or_else(|| bad_reply("enqueue", &v))?;
    Ok(a.into_iter()
        .map(|x| match x {
            Value::Int(1) => Written::New,
            Value::Int(_) => Written::Exists,
            other => Written::Deduplicated(bytes(other).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()),
        })
        .collect())
}

/// A job the general script must write (`enqueue.lua`): a delay, a caller-chosen id, a
/// deduplication key or a group (its list, not the ready list).
fn needs_script(j: &NewJob) -> bool {
    j.custom_id || j.delay_us != 0 || j.at_us.is_some() || j.dedup.is_some() || j.group.is_some()
}

/// A completion with nothing to store or drop, of a generated id: the ack's hot path.
fn is_plain(e: &AckEntry) -> bool {
    matches!(e.kind, AckKind::Completed { result: None }) && !e.custom_id && !e.retried && e.dedup.is_none() && e.group.is_none()
}

/// The kind of an ack entry (ack.lua), followed by the job's group when it has one: an entry
/// of a job without a group is sent as before, one letter.
fn ack_kind(kind: &str, group: Option<&[u8]>) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    if let Some(g) = group {
        k.extend_from_slice(g);
    }
    k
}

/// (producer, seq) of a generated id `<producer:10>-<seq>`.
fn split_generated(id: &[u8]) -> (&[u8], u64) {
    let seq = std::str::from_utf8(&id[PRODUCER_LEN + 1..]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (&id[..PRODUCER_LEN], seq)
}

/// Runs of consecutive sequence numbers per producer: (producer, first, count).
fn runs_of(mut seqs: Vec<(&[u8], u64)>) -> Vec<(&[u8], u64, u64)> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut runs: Vec<(&[u8], u64, u64)> = Vec::new();
    for (p, s) in seqs {
        match runs.last_mut() {
            Some((rp, first, count)) if *rp == p && *first + *count == s => *count += 1,
            _ => runs.push((p, s, 1)),
        }
    }
    runs
}

impl RedisStore {
    pub fn new(settings: &Settings) -> Result<RedisStore> {
        conn::check_url(&settings.url)?;
        let top = route::topology(settings)?;
        Ok(RedisStore {
            conn: Link::new(settings, top.as_ref())?,
            popper: SyncLink::new(settings, top.as_ref())?,
            direct: SyncLink::new(settings, top.as_ref())?,
            bulk: SyncLink::new(settings, top.as_ref())?,
            notifier: Notifier::new(settings, top),
            sched: ScheduleKeys::new(&settings.prefix),
            registered: std::sync::Mutex::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        self.conn.settings()
    }

    async fn status_of(&self, q: &QueueKeys, id: &str, register: bool) -> Result<Status> {
        self.status_with(q, id, register, false).await
    }

    async fn status_with(&self, q: &QueueKeys, id: &str, register: bool, progress: bool) -> Result<Status> {
        let s = &scripts().status;
        let mut c = s.evalsha(&[&q.jobs, &q.delayed, &q.failed, &q.active, &q.errors, &q.waiters]);
        let custom = if is_generated_id(id) { "0" } else { "1" };
        c.arg(&q.base).arg(id).arg(custom).arg(if register { "1" } else { "0" }).arg(if progress { "1" } else { "0" });
        let v: Value = self.conn.eval(c).await?;
        let mut a = array(v.clone()).ok_or_else(|| bad_reply("status", &v))?.into_iter();
        let state = a.next().and_then(bytes).map(|b| State::parse(&String::from_utf8_lossy(&b))).ok_or_else(|| bad_reply("status", &v))?;
        let (record, data, progress) = (a.next().and_then(bytes), a.next().and_then(bytes), a.next().and_then(bytes));
        let mut callback = vec![];
        let mut fields = a.next().and_then(array).unwrap_or_default().into_iter();
        while let (Some(k), Some(v)) = (fields.next().and_then(bytes), fields.next().and_then(bytes)) {
            callback.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        Ok(Status { state, record, data, progress, callback })
    }

    /// An enqueue as one script call: push.lua for jobs due now with generated ids (`true`:
    /// its answer is a count), else enqueue.lua (an answer per job).
    fn enqueue_script(&self, q: &QueueKeys, jobs: &[&NewJob], mark: Option<&Watermark>) -> (::redis::Cmd, bool) {
        let producer = mark.map(|m| m.producer.as_str()).unwrap_or("-");
        let hwm_key = q.hwm(producer);
        // A placeholder key of the queue when there is no guard (no call touches it then).
        let sent_key = if mark.is_some_and(|m| m.guard.is_some()) { q.sent(producer) } else { q.jobs.clone() };
        let guard = mark.map(guard_arg).unwrap_or(-1);
        if mark.is_some() && !jobs.iter().any(|j| needs_script(j)) {
            let mut c = scripts().push.evalsha(&[&q.wait, &q.wake, &hwm_key, &sent_key]);
            c.arg(&q.base).arg(mark.map(|m| m.last_seq).unwrap_or(0)).arg(MARK_TTL_SECS).arg(guard);
            for j in jobs {
                c.arg(&j.record);
            }
            return (c, true);
        }
        let mut keys: Vec<String> = vec![q.wait.clone(), q.wake.clone(), hwm_key, q.delayed.clone(), q.jobs.clone(), sent_key];
        for j in jobs {
            keys.push(if j.custom_id { q.id_key(&j.id) } else { q.jobs.clone() });
        }
        // Then the mark of each deduplication key, in job order.
        keys.extend(jobs.iter().filter_map(|j| j.dedup.as_ref()).map(|d| q.dedup_key(&d.key)));
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut c = scripts().enqueue.evalsha(&key_refs);
        let hwm: i64 = mark.map(|m| m.last_seq as i64).unwrap_or(-1);
        let id_ttl_ms = self.settings().result_ttl.as_millis().max(MARK_TTL_SECS as u128 * 1000) as u64;
        c.arg(&q.base).arg(hwm).arg(MARK_TTL_SECS).arg(id_ttl_ms).arg(&q.sched_channel).arg(guard);
        for j in jobs {
            let due = match j.at_us {
                Some(at) => format!("@{at}"),
                None => j.delay_us.to_string(),
            };
            let flags = match &j.dedup {
                None => (if j.custom_id { "1" } else { "0" }).to_string(),
                Some(d) => {
                    let id = if j.custom_id { '1' } else { '0' };
                    match d.mode {
                        DedupMode::Ttl(ms) => format!("{id}t{ms}"),
                        DedupMode::UntilSettled => format!("{id}u"),
                        DedupMode::Debounce => format!("{id}d"),
                    }
                }
            };
            c.arg(&j.id).arg(flags).arg(due).arg(&j.record);
        }
        (c, false)
    }

    /// A connection of its own for an event loop's dispatches (loop_conn.rs), or None
    /// where the URL needs redis-rs (TLS, RESP3).
    pub fn open_stream(&self) -> Result<Option<crate::store::redis::conn::Stream>> {
        self.direct.open_stream()
    }

    /// The script calls that write a batch of dispatches: one per queue and script,
    /// push.lua for the parts whose jobs are all plain (due now, generated ids), enqueue.lua
    /// for the others, after an `SADD` of the queues this process never registered.
    pub(crate) fn plan_parts(&self, parts: &[Part<'_, QueueKeys>]) -> (Vec<::redis::Cmd>, PartsPlan) {
        let mut calls: Vec<(&QueueKeys, bool, Vec<usize>)> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            debug_assert!(p.mark.is_none_or(|m| m.guard.is_none()), "a guarded chunk is written on its own");
            let plain = p.mark.is_some() && !p.jobs.iter().any(needs_script);
            match calls.iter_mut().find(|(q, pl, _)| q.name == p.q.name && *pl == plain) {
                Some((_, _, members)) => members.push(i),
                None => calls.push((p.q, plain, vec![i])),
            }
        }
        let mut new_queues: Vec<String> = Vec::new();
        {
            let done = self.registered.lock().unwrap();
            for (q, _, _) in &calls {
                if !done.contains(&q.name) && !new_queues.contains(&q.name) {
                    new_queues.push(q.name.clone());
                }
            }
        }
        let mut cmds = Vec::with_capacity(calls.len() + 1);
        if !new_queues.is_empty() {
            cmds.push(::redis::cmd("SADD").arg(keys::queue_registry(&self.settings().prefix)).arg(&new_queues).to_owned());
        }
        for (q, _, members) in &calls {
            let jobs: Vec<&NewJob> = members.iter().flat_map(|&i| parts[i].jobs).collect();
            // The parts share the producer (one id generator per client): its highest mark.
            let mark = members.iter().filter_map(|&i| parts[i].mark).max_by_key(|m| m.last_seq);
            cmds.push(self.enqueue_script(q, &jobs, mark).0);
        }
        let sizes = parts.iter().map(|p| p.jobs.len()).collect();
        (cmds, PartsPlan { calls: calls.into_iter().map(|(_, plain, m)| (plain, m)).collect(), sizes, new_queues })
    }

    /// Each part's answer from the replies to `plan_parts`'s calls, in order: a call's
    /// answer cut back into its parts', or its error (typed as on the shared connection:
    /// NOPERM is an `AuthenticationError`); None for the parts of a call answered NOSCRIPT,
    /// which did not run. Err when the registration failed (nothing else ran then).
    pub(crate) fn answer_parts(&self, plan: &PartsPlan, replies: Vec<Value>) -> Result<Vec<Option<Result<Vec<Written>>>>> {
        // (The masked URL is made on errors only: parsing it costs microseconds.)
        let typed = |v: Value| match v {
            Value::ServerError(e) => Err(Error::from_redis(e.into(), &self.settings().masked_url())),
            v => Ok(v),
        };
        let mut replies = replies.into_iter();
        if !plan.new_queues.is_empty() {
            if let Some(Err(e)) = replies.next().map(typed) {
                return Err(e);
            }
            self.registered.lock().unwrap().extend(plan.new_queues.iter().cloned());
        }
        let mut out: Vec<Option<Result<Vec<Written>>>> = plan.sizes.iter().map(|_| None).collect();
        for ((plain, members), v) in plan.calls.iter().zip(replies) {
            if matches!(&v, Value::ServerError(e) if e.code() == "NOSCRIPT") {
                continue;
            }
            let n: usize = members.iter().map(|&i| plan.sizes[i]).sum();
            match typed(v).and_then(|v| enqueue_reply(v, n, *plain)) {
                Ok(written) => {
                    let mut written = written.into_iter();
                    for &i in members {
                        out[i] = Some(Ok(written.by_ref().take(plan.sizes[i]).collect()));
                    }
                }
                Err(e) => members.iter().for_each(|&i| out[i] = Some(Err(e.clone()))),
            }
        }
        Ok(out)
    }

    async fn unwait(&self, q: &QueueKeys, id: &str) -> Result<()> {
        let mut c = scripts().unwait.evalsha(&[&q.waiters]);
        c.arg(id);
        self.conn.eval::<Value>(c).await.map(|_| ())
    }

    /// Sends the bytes of the bulk path on the bulk connection, from an I/O thread handed
    /// over to blocking meanwhile (`block_in_place`: the runtime's other tasks move on).
    fn write_bulk(&self, wire: &BulkWire) -> Result<()> {
        let replies =
            tokio::task::block_in_place(|| self.bulk.packed(&wire.key, &wire.bytes, wire.queued, 1, self.settings().response_timeout))?;
        let exec = replies.into_iter().next().ok_or_else(|| Error::Store("no EXEC reply to a bulk write".into()))?;
        match exec {
            Value::Array(a) if a.len() + 1 == wire.queued => match a.iter().find_map(server_error) {
                Some(e) => Err(e),
                None => Ok(()),
            },
            other => Err(bad_reply(&format!("a bulk write of {} jobs", wire.jobs), &other)),
        }
    }

    /// limit.lua: replaces the limits hash `hash` (the queue's, or its groups'), deletes the
    /// window count `window`, wakes the queue and tells its workers.
    async fn write_limits(&self, q: &QueueKeys, hash: &str, window: &str, limits: &Limits) -> Result<()> {
        let mut c = scripts().limit.evalsha(&[hash, &q.wake, window]);
        match limits.rate {
            Some((max, period)) => c.arg(max).arg(period.as_millis() as u64),
            None => c.arg("").arg(""),
        };
        match limits.concurrency {
            Some(n) => c.arg(n),
            None => c.arg(""),
        };
        c.arg(&q.control_channel);
        let _: Value = self.conn.eval(c).await?;
        Ok(())
    }

    async fn read_limits(&self, hash: &str) -> Result<Limits> {
        let v: Value = self.conn.query(::redis::cmd("HMGET").arg(hash).arg("max").arg("period").arg("concurrency")).await?;
        let a = array(v).unwrap_or_default();
        let n = |i: usize| a.get(i).cloned().and_then(bytes).and_then(|b| String::from_utf8_lossy(&b).parse::<u64>().ok());
        Ok(Limits { rate: n(0).zip(n(1)).map(|(max, ms)| (max, Duration::from_millis(ms))), concurrency: n(2) })
    }

    /// Every field of a hash, as (name, value).
    async fn hash_all(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut c = ::redis::cmd("HGETALL");
        c.arg(key);
        let v: Value = self.conn.query(&c).await?;
        let mut out = Vec::new();
        let mut it = array(v).unwrap_or_default().into_iter();
        while let (Some(k), Some(val)) = (it.next(), it.next()) {
            if let (Some(k), Some(val)) = (bytes(k), bytes(val)) {
                out.push((String::from_utf8_lossy(&k).into_owned(), val));
            }
        }
        Ok(out)
    }

    async fn failed_op(&self, q: &QueueKeys, op: &str, limit: usize) -> Result<Value> {
        let mut c = scripts().failed.evalsha(&[&q.failed, &q.jobs, &q.errors, &q.wake]);
        c.arg(op).arg(&q.base).arg(limit);
        self.conn.eval(c).await
    }

    /// One BLPOP on the inboxes and wake lists of `queues`: a job handed to this worker
    /// (`Handed.queue` indexes `queues`), a wake-up (a queue's marker, or the stop marker), or
    /// nothing before `timeout`.
    fn pop<'a>(&self, queues: impl Iterator<Item = &'a QueueKeys> + Clone, worker: &str, timeout: Duration) -> Result<Popped> {
        // Inboxes first: BLPOP takes from the first non-empty list it is given.
        let inboxes: Vec<String> = queues.clone().map(|q| q.inbox(worker)).collect();
        let mut c = ::redis::cmd("BLPOP");
        c.arg(&inboxes);
        for q in queues {
            c.arg(&q.wake);
        }
        c.arg(timeout.as_secs_f64());
        let v: Value = match self.popper.query(&c, timeout + self.settings().response_timeout) {
            Err(Error::Timeout(_)) => {
                return Err(Error::Timeout(format!("Redis at {} did not answer a blocking pop in time", self.settings().masked_url())))
            }
            r => r?,
        };
        let mut kv = match v {
            Value::Nil => return Ok(Popped::Nothing),
            v => array(v.clone()).ok_or_else(|| bad_reply("blpop", &v))?.into_iter(),
        };
        let (Some(key), Some(item)) = (kv.next().and_then(bytes), kv.next().and_then(bytes)) else {
            return Err(Error::Store("unexpected reply from Redis for blpop".into()));
        };
        let Some(queue) = inboxes.iter().position(|k| k.as_bytes() == key.as_slice()) else { return Ok(Popped::Woken) };
        let n = item.first().copied().unwrap_or(0) as usize;
        if n == 0 || item.len() <= 1 + n {
            return Ok(Popped::Woken); // the stop marker
        }
        let token = String::from_utf8_lossy(&item[1..1 + n]).into_owned();
        Ok(Popped::Handed(Handed { queue, token, record: item[1 + n..].to_vec() }))
    }
}

impl QueueHandle for QueueKeys {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Store for RedisStore {
    type Queue = QueueKeys;

    fn queue(&self, name: &str) -> Result<Arc<QueueKeys>> {
        QueueKeys::new(&self.settings().prefix, name).map(Arc::new)
    }

    async fn enqueue(&self, q: &QueueKeys, jobs: &[NewJob], mark: Option<&Watermark>) -> Result<Vec<Written>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        self.register_queues(&[&q.name]).await?;
        let fast = mark.is_some() && !jobs.iter().any(needs_script);
        let flat = jobs.iter().all(|j| j.record.get(5) == Some(&0));
        if let Some(mark) = mark.filter(|_| fast && flat && jobs.len() > SMALL_BATCH) {
            // The bulk path: no Lua string per record. (For a few jobs one EVALSHA costs Redis
            // less than MULTI/EXEC with the script's source.)
            let size = jobs.iter().map(|j| j.record.len() + 16).sum();
            let bounds = run_bounds(jobs.len(), |i| jobs[i].record.len());
            let mut scratch = Vec::with_capacity(RUN_BYTES);
            let runs = id_runs(jobs.iter().map(|j| record_id_name(&j.record)));
            let wire = bulk_wire(q, &bounds, mark, &runs, size, |from, to, out| {
                frame_element(out, &mut scratch, to - from, |o, frame| {
                    for j in &jobs[from..to] {
                        frame(o, j.record.len());
                        o.extend_from_slice(&j.record);
                    }
                })
            });
            self.write_bulk(&wire)?;
            return Ok(vec![Written::New; jobs.len()]);
        }
        let (c, plain) = self.enqueue_script(q, &jobs.iter().collect::<Vec<_>>(), mark);
        let v: Value = self.conn.eval(c).await?;
        enqueue_reply(v, jobs.len(), plain)
    }

    type Packed = PackedChunk;

    fn pack_chunk(&self, q: &QueueKeys, chunk: &Chunk) -> PackedChunk {
        if !chunk.is_plain() || chunk.len() <= SMALL_BATCH {
            let (jobs, mark) = chunk.pack();
            return PackedChunk::Jobs(jobs, mark);
        }
        // Each record packed straight into the bytes that go to Redis, a run's by way of one
        // reused 2 KB buffer (no record, id or job allocated per payload).
        let size = chunk.payload_bytes() + chunk.len() * 64;
        let bounds = chunk.run_bounds();
        let mut scratch = Vec::with_capacity(RUN_BYTES);
        let wire = bulk_wire(q, &bounds, &chunk.watermark(), &chunk.id_runs(), size, |from, to, out| {
            frame_element(out, &mut scratch, to - from, |o, frame| chunk.pack_records(from, to, o, frame, b""))
        });
        PackedChunk::Bulk(wire)
    }

    async fn write_chunk(&self, q: &QueueKeys, packed: &PackedChunk) -> Result<()> {
        self.register_queues(&[&q.name]).await?;
        match packed {
            PackedChunk::Bulk(wire) => self.write_bulk(wire),
            PackedChunk::Jobs(jobs, mark) => self.enqueue(q, jobs, Some(mark)).await.map(|_| ()),
        }
    }

    async fn chunks_written(&self, q: &QueueKeys, chunks: &[(String, u64)]) -> Result<Vec<bool>> {
        if chunks.is_empty() {
            return Ok(vec![]);
        }
        let mut p = ::redis::pipe();
        for (producer, first) in chunks {
            p.cmd("GETBIT").arg(q.sent(producer)).arg(*first);
        }
        let replies = self.conn.pipeline(&p).await?;
        replies.iter().map(|v| int(v).map(|b| b == 1).ok_or_else(|| bad_reply("chunks written", v))).collect()
    }

    fn enqueue_parts_blocking(&self, parts: &[Part<'_, QueueKeys>]) -> Result<Vec<Result<Vec<Written>>>> {
        let (cmds, plan) = self.plan_parts(parts);
        let replies = self.direct.pipeline(&cmds, self.settings().response_timeout)?;
        // The pipeline ran again what NOSCRIPT refused: every part has its answer.
        Ok(self
            .answer_parts(&plan, replies)?
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::Store("no answer from Redis for a dispatch".into()))))
            .collect())
    }

    async fn reserve(&self, q: &QueueKeys, token: &str, max: usize, idle: &Idle<'_>) -> Result<Reserved> {
        let lease_key = q.lease(token);
        let inbox = q.inbox(idle.worker);
        let mut c = scripts().reserve.evalsha(&[&q.wait, &q.active, &lease_key, &q.wake, &q.prios, &q.idle, &inbox]);
        c.arg(&q.base).arg(token).arg(max.min(2000)).arg(idle.lease.as_millis() as u64);
        c.arg(if idle.register { idle.worker } else { "" }).arg(idle.previous.unwrap_or(""));
        let v: Value = self.conn.eval(c).await?;
        match v {
            Value::Nil | Value::Boolean(false) => Ok(Reserved::Empty),
            Value::Int(-1) => Ok(Reserved::Paused),
            Value::Int(n) => Ok(Reserved::Idle { new_slot: n == 0 }),
            // {ms} or {-1}: a limit of the queue allows nothing now (records are strings).
            Value::Array(a) if matches!(a.first(), Some(Value::Int(_))) => {
                let ms = a.first().and_then(int).unwrap_or(-1);
                Ok(Reserved::Limited { retry_in: (ms >= 0).then(|| Duration::from_millis(ms as u64)) })
            }
            Value::Array(a) => Ok(Reserved::Jobs(
                a.into_iter()
                    .map(|x| bytes(x).ok_or_else(|| Error::Store("reserve returned a non-string record".into())))
                    .collect::<Result<_>>()?,
            )),
            other => Err(bad_reply("reserve", &other)),
        }
    }

    async fn leave(&self, q: &QueueKeys, worker: &str, slot: Option<&str>) -> Result<u64> {
        let mut c = scripts().leave.evalsha(&[&q.idle, &q.inbox(worker), &q.active, &q.wake]);
        c.arg(&q.base).arg(slot.unwrap_or(""));
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n as u64).ok_or_else(|| bad_reply("leave", &v))
    }

    async fn nudge(&self, q: &QueueKeys, worker: &str) -> Result<()> {
        // No ttl: the worker pops or takes back its inbox within a second, and the reaper
        // deletes a dead worker's inbox with its lease (a nudge follows a reserve that leased
        // jobs in `q`).
        self.conn.query::<()>(::redis::cmd("RPUSH").arg(q.inbox(worker)).arg(&[0u8][..])).await
    }

    async fn ack(&self, acks: &[LeaseAck<QueueKeys>]) -> Result<Vec<AckOutcome>> {
        if acks.is_empty() {
            return Ok(vec![]);
        }
        let s = &scripts().ack;
        let mut p = ::redis::pipe();
        let ttl_ms = self.settings().result_ttl.as_millis() as u64;
        for a in acks {
            let q = &a.queue;
            let (lease_key, started_key) = (q.lease(&a.token), q.started(&a.token));
            let mut c = s.evalsha(&[
                &lease_key,
                &q.active,
                &q.stats,
                &q.waiters,
                &q.wait,
                &q.delayed,
                &q.jobs,
                &q.failed,
                &q.errors,
                &q.wake,
                &started_key,
            ]);
            c.arg(&q.base).arg(&a.token).arg(ttl_ms).arg(MARK_TTL_SECS).arg(&q.results_channel).arg(&q.sched_channel);
            // Plain completions first (see ack.lua): their ids, then runs of their sequence
            // numbers per producer.
            let plain: Vec<&AckEntry> = a.entries.iter().filter(|e| is_plain(e)).collect();
            c.arg(plain.len());
            let mut seqs: Vec<(&[u8], u64)> = Vec::with_capacity(plain.len());
            for e in &plain {
                c.arg(&e.id);
                seqs.push(split_generated(&e.id));
            }
            let runs = runs_of(seqs);
            c.arg(runs.len());
            for (producer, first, count) in runs {
                c.arg(producer).arg(first).arg(count);
            }
            for e in a.entries.iter().filter(|e| !is_plain(e)) {
                let group = e.group.as_deref();
                match &e.kind {
                    AckKind::Completed { result } => {
                        let kind = if e.custom_id { "C" } else { "c" };
                        c.arg(ack_kind(kind, group)).arg(&e.id).arg(result.as_deref().unwrap_or(b"")).arg(if e.retried { "1" } else { "" });
                        c.arg(e.dedup.as_deref().unwrap_or(b""));
                    }
                    AckKind::Retry { delay_ms, record, error } => {
                        c.arg(ack_kind("r", group)).arg(&e.id).arg(*delay_ms).arg(record).arg(error);
                    }
                    AckKind::Failed { error, record } => {
                        c.arg(ack_kind("f", group)).arg(&e.id).arg(error).arg(record).arg(e.dedup.as_deref().unwrap_or(b""));
                    }
                    AckKind::Cancelled => {
                        let kind = if e.custom_id { "X" } else { "x" };
                        c.arg(ack_kind(kind, group)).arg(&e.id).arg("").arg(if e.retried { "1" } else { "" }).arg("");
                    }
                }
            }
            p.add_command(c);
        }
        let replies = self.conn.pipeline(&p).await?;
        replies
            .into_iter()
            .map(|v| {
                if let Some(e) = server_error(&v) {
                    return Err(e);
                }
                let a = array(v.clone()).ok_or_else(|| bad_reply("ack", &v))?;
                let n = |i: usize| a.get(i).and_then(int).map(|n| n as u64).ok_or_else(|| bad_reply("ack", &v));
                Ok(AckOutcome { completed: n(0)?, retried: n(1)?, failed: n(2)?, refused: n(3)?, cancelled: n(4)? })
            })
            .collect()
    }

    async fn start(&self, q: &QueueKeys, token: &str, id: &[u8]) -> Result<bool> {
        let mut c = scripts().start.evalsha(&[&q.lease(token), &q.started(token)]);
        c.arg(id);
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n == 1).ok_or_else(|| bad_reply("start", &v))
    }

    async fn release(&self, q: &QueueKeys, token: &str, ids: &[Vec<u8>]) -> Result<u64> {
        let (lease_key, started_key) = (q.lease(token), q.started(token));
        let mut c = scripts().release.evalsha(&[&lease_key, &q.active, &q.wake, &started_key]);
        c.arg(&q.base).arg(token).arg(ids);
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n as u64).ok_or_else(|| bad_reply("release", &v))
    }

    async fn extend(&self, leases: &[(Arc<QueueKeys>, Vec<String>)], lease: Duration) -> Result<Extended> {
        let mut p = ::redis::pipe();
        let mut sent = vec![];
        for (i, (q, tokens)) in leases.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let mut c = scripts().extend.evalsha(&[&q.active]);
            c.arg(lease.as_millis() as u64).arg(&q.base).arg(tokens);
            p.add_command(c);
            sent.push(i);
        }
        let mut out = Extended::default();
        if sent.is_empty() {
            return Ok(out);
        }
        for (v, i) in self.conn.pipeline(&p).await?.into_iter().zip(sent) {
            if let Some(e) = server_error(&v) {
                return Err(e);
            }
            let mut parts = array(v.clone()).ok_or_else(|| bad_reply("extend", &v))?.into_iter();
            for t in parts.next().and_then(array).unwrap_or_default() {
                if let Some(b) = bytes(t) {
                    out.lost.push(String::from_utf8_lossy(&b).into_owned());
                }
            }
            for id in parts.next().and_then(array).unwrap_or_default() {
                if let Some(b) = bytes(id) {
                    out.cancel.push((i, b));
                }
            }
        }
        Ok(out)
    }

    async fn expire_worker(&self, q: &QueueKeys, worker: &str, most: usize) -> Result<Expired> {
        let mut c = scripts().expire.evalsha(&[&q.active, &q.idle]);
        c.arg(&q.base).arg(worker).arg(most);
        let v: Value = self.conn.eval(c).await?;
        let bad = || bad_reply("expire", &v);
        let mut a = array(v.clone()).ok_or_else(bad)?.into_iter();
        let mut n = || a.next().ok_or_else(bad);
        let strings = |x: Value| -> Vec<String> {
            array(x).unwrap_or_default().into_iter().filter_map(bytes).map(|b| String::from_utf8_lossy(&b).into_owned()).collect()
        };
        let leases = int(&n()?).ok_or_else(bad)? as u64;
        let held = int(&n()?).ok_or_else(bad)? as u64;
        Ok(Expired { leases, held, ids: strings(n()?), started: strings(n()?) })
    }

    async fn tick(&self, q: &QueueKeys, limit: usize) -> Result<Tick> {
        let mut c = scripts().tick.evalsha(&[&q.delayed, &q.jobs, &q.active, &q.wake, &q.failed, &q.errors, &q.stats, &q.waiters]);
        c.arg(&q.base).arg(limit).arg(&q.results_channel);
        let v: Value = self.conn.eval(c).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("tick", &v))?;
        let n = |i: usize| a.get(i).and_then(int).ok_or_else(|| bad_reply("tick", &v));
        let opt = |x: i64| if x < 0 { None } else { Some(x) };
        Ok(Tick {
            promoted: n(0)? as u64,
            reaped: n(1)? as u64,
            next_due_us: opt(n(2)?),
            next_lease_deadline_ms: opt(n(3)?),
            now_ms: n(4)?,
            now_us: n(5)?,
        })
    }

    fn wait_for_work(&self, queues: &[Arc<QueueKeys>], worker: &str, timeout: Duration) -> Result<Option<Handed>> {
        if !self.popper.is_cluster() {
            return self.pop(queues.iter().map(|q| &**q), worker, timeout).map(Popped::handed);
        }
        // On a cluster one BLPOP can only wait on one slot's lists: queues of different
        // slots are waited on in turn, a short while each.
        let mut slots: Vec<(u16, Vec<usize>)> = vec![];
        for (i, q) in queues.iter().enumerate() {
            let s = cluster::slot(q.wait.as_bytes());
            match slots.iter_mut().find(|(t, _)| *t == s) {
                Some((_, v)) => v.push(i),
                None => slots.push((s, vec![i])),
            }
        }
        if slots.len() == 1 {
            return self.pop(queues.iter().map(|q| &**q), worker, timeout).map(Popped::handed);
        }
        let deadline = std::time::Instant::now() + timeout;
        for (_, idx) in slots.iter().cycle() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let t = left.min(TURN).max(Duration::from_millis(1));
            match self.pop(idx.iter().map(|&i| &*queues[i]), worker, t)? {
                Popped::Nothing => continue,
                Popped::Woken => return Ok(None), // back to the worker: it looks for work, or stops
                Popped::Handed(h) => return Ok(Some(Handed { queue: idx[h.queue], ..h })),
            }
        }
        Ok(None)
    }

    async fn status(&self, q: &QueueKeys, id: &str) -> Result<Status> {
        self.status_of(q, id, false).await
    }

    async fn info(&self, q: &QueueKeys, id: &str) -> Result<Status> {
        self.status_with(q, id, false, true).await
    }

    async fn feedback(&self, q: &QueueKeys, id: &str, kind: Feedback, entry: &[u8], ttl: Duration) -> Result<i64> {
        if entry.first() != Some(&b'{') || entry.len() < 3 {
            return Err(Error::Invalid("a progress or log entry is a JSON object".into()));
        }
        if entry.len() > MAX_FEEDBACK_BYTES + 256 {
            return Err(Error::Invalid(format!(
                "a progress or log entry takes at most {MAX_FEEDBACK_BYTES} bytes of JSON, got {}",
                entry.len()
            )));
        }
        let (key, tag) = match kind {
            Feedback::Progress => (q.progress(id), "p"),
            Feedback::Log => (q.logs(id), "l"),
        };
        let mut c = scripts().feedback.evalsha(&[&key]);
        c.arg(tag).arg(entry).arg(ttl.as_secs().max(1)).arg(MAX_LOG_LINES);
        let v: Value = self.conn.eval(c).await?;
        int(&v).ok_or_else(|| bad_reply("feedback", &v))
    }

    async fn set_events(&self, q: &QueueKeys, keep: Option<u64>) -> Result<()> {
        match keep {
            Some(n) => self.conn.query::<Value>(::redis::cmd("SET").arg(q.events_on()).arg(n)).await?,
            None => self.conn.query::<Value>(::redis::cmd("DEL").arg(q.events_on())).await?,
        };
        Ok(())
    }

    async fn events_keep(&self, q: &QueueKeys) -> Result<Option<u64>> {
        let v: Value = self.conn.query(::redis::cmd("GET").arg(q.events_on())).await?;
        Ok(bytes(v).and_then(|b| String::from_utf8_lossy(&b).parse().ok()))
    }

    async fn progress(&self, q: &QueueKeys, id: &str) -> Result<Option<Vec<u8>>> {
        let v: Value = self.conn.query(::redis::cmd("GET").arg(q.progress(id))).await?;
        Ok(bytes(v))
    }

    async fn logs(&self, q: &QueueKeys, id: &str, start: usize, limit: usize) -> Result<Vec<Vec<u8>>> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let stop = start.saturating_add(limit - 1).min(i64::MAX as usize);
        let v: Value = self.conn.query(::redis::cmd("LRANGE").arg(q.logs(id)).arg(start.min(i64::MAX as usize)).arg(stop)).await?;
        Ok(array(v).unwrap_or_default().into_iter().filter_map(bytes).collect())
    }

    async fn callback_record(&self, q: &QueueKeys, id: &str, fields: Vec<(&'static str, Vec<u8>)>) -> Result<()> {
        let key = q.callback(id);
        let mut p = ::redis::pipe();
        p.atomic();
        let c = p.cmd("HSET").arg(&key);
        for (f, v) in &fields {
            c.arg(*f).arg(v);
        }
        c.ignore();
        p.cmd("PEXPIRE").arg(&key).arg(self.settings().result_ttl.as_millis().max(1) as u64).ignore();
        self.conn.pipeline(&p).await.map(|_| ())
    }

    async fn callback_status(&self, q: &QueueKeys, id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.hash_all(&q.callback(id)).await
    }

    async fn wait_result(&self, q: Arc<QueueKeys>, id: String, timeout: Option<Duration>) -> Result<Option<Status>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let rx = self.notifier.waiter(&q.results_channel, &id).await?;
            let st = self.status_of(&q, &id, true).await?;
            if st.state.is_final() || st.state == State::Unknown {
                drop(rx);
                self.notifier.forget(&q.results_channel, &id);
                return Ok(Some(st));
            }
            let got = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.notifier.forget(&q.results_channel, &id);
                        self.unwait(&q, &id).await?;
                        return Ok(None);
                    }
                },
                None => rx.await,
            };
            match got {
                Ok((state, data)) => return Ok(Some(Status { state, record: None, data: Some(data), progress: None, callback: vec![] })),
                // The subscription broke: drop our registration and look again.
                Err(_) => self.unwait(&q, &id).await?,
            }
        }
    }

    async fn counts(&self, q: &QueueKeys) -> Result<Counts> {
        let mut c = scripts().counts.evalsha(&[&q.delayed, &q.active, &q.failed, &q.stats]);
        c.arg(&q.base);
        let v: Value = self.conn.eval(c).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("counts", &v))?;
        let n = |i: usize| a.get(i).and_then(int).unwrap_or(0) as u64;
        Ok(Counts {
            paused: n(7) == 1,
            waiting: n(0),
            delayed: n(1),
            active: n(2),
            failed: n(3),
            completed: n(4),
            retried: n(5),
            stalled: n(6),
            cancelled: n(8),
        })
    }

    async fn pause(&self, q: &QueueKeys) -> Result<bool> {
        self.known_queue(q).await?;
        let mut c = scripts().pause.evalsha(&[&q.paused, &q.idle, &q.wake]);
        c.arg(&q.control_channel);
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n == 1).ok_or_else(|| bad_reply("pause", &v))
    }

    async fn resume(&self, q: &QueueKeys) -> Result<bool> {
        self.known_queue(q).await?;
        let mut c = scripts().resume.evalsha(&[&q.paused, &q.wake]);
        c.arg(&q.control_channel);
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n == 1).ok_or_else(|| bad_reply("resume", &v))
    }

    async fn control_signal(&self, q: &QueueKeys) -> Result<Arc<tokio::sync::Notify>> {
        self.notifier.signal(&q.control_channel).await
    }

    async fn register_queues(&self, names: &[&str]) -> Result<()> {
        let new: Vec<&str> = {
            let done = self.registered.lock().unwrap();
            names.iter().copied().filter(|n| !done.contains(*n)).collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        self.conn.query::<Value>(::redis::cmd("SADD").arg(keys::queue_registry(&self.settings().prefix)).arg(&new)).await?;
        self.registered.lock().unwrap().extend(new.iter().map(|n| n.to_string()));
        Ok(())
    }

    /// `UnknownQueue` unless the queue is in the registry (something dispatched to it or
    /// consumed it): a control naming a misspelt queue must not succeed in silence.
    async fn known_queue(&self, q: &QueueKeys) -> Result<()> {
        if self.registered.lock().unwrap().contains(&q.name) {
            return Ok(());
        }
        let registry = keys::queue_registry(&self.settings().prefix);
        let known: Value = self.conn.query(::redis::cmd("SISMEMBER").arg(&registry).arg(&q.name)).await?;
        if int(&known) == Some(1) {
            return Ok(());
        }
        let names = self.queues().await?;
        let listed = if names.is_empty() { "none yet".to_string() } else { names.join(", ") };
        Err(Error::UnknownQueue(format!("no job was ever dispatched to queue '{}' and no worker consumes it (queues: {listed})", q.name)))
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let v: Value = self.conn.query(::redis::cmd("SMEMBERS").arg(keys::queue_registry(&self.settings().prefix))).await?;
        let mut out: Vec<String> =
            array(v).unwrap_or_default().into_iter().filter_map(bytes).map(|b| String::from_utf8_lossy(&b).into_owned()).collect();
        out.sort();
        Ok(out)
    }

    async fn failed_list(&self, q: &QueueKeys, limit: usize) -> Result<Vec<FailedJob>> {
        let v = self.failed_op(q, "list", limit.max(1)).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("failed list", &v))?;
        Ok(a.chunks(4)
            .map(|c| FailedJob {
                id: bytes(c[0].clone()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default(),
                record: bytes(c[1].clone()),
                error: bytes(c[2].clone()),
                failed_at_ms: int(&c[3]).unwrap_or(0),
            })
            .collect())
    }

    async fn failed_retry(&self, q: &QueueKeys) -> Result<u64> {
        let v = self.failed_op(q, "retry", 0).await?;
        int(&v).map(|n| n as u64).ok_or_else(|| bad_reply("failed retry", &v))
    }

    async fn retry_job(&self, q: &QueueKeys, id: &str) -> Result<bool> {
        let mut c = scripts().failed.evalsha(&[&q.failed, &q.jobs, &q.errors, &q.wake]);
        c.arg("retry_id").arg(&q.base).arg(id);
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n == 1).ok_or_else(|| bad_reply("retry", &v))
    }

    async fn cancel(&self, q: &QueueKeys, id: &str, remove: bool) -> Result<CancelReply> {
        let mut c = scripts().cancel.evalsha(&[&q.jobs, &q.delayed, &q.failed, &q.active, &q.errors, &q.waiters, &q.stats]);
        let custom = if is_generated_id(id) { "0" } else { "1" };
        c.arg(&q.base).arg(id).arg(custom).arg(if remove { "remove" } else { "cancel" });
        c.arg(MARK_TTL_SECS).arg(&q.results_channel).arg(&q.control_channel);
        let v: Value = self.conn.eval(c).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("cancel", &v))?;
        let state = a.first().cloned().and_then(bytes).map(|b| State::parse(&String::from_utf8_lossy(&b)));
        let done = a.get(2).and_then(int);
        match (state, done) {
            (Some(state), Some(done)) => Ok(CancelReply { state, record: a.get(1).cloned().and_then(bytes), done: done == 1 }),
            _ => Err(bad_reply("cancel", &v)),
        }
    }

    async fn empty_page(&self, q: &QueueKeys, max: usize) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut c = scripts().empty.evalsha(&[&q.delayed, &q.jobs, &q.errors, &q.waiters, &q.stats]);
        c.arg(&q.base).arg(max).arg(MARK_TTL_SECS).arg(&q.results_channel);
        let v: Value = self.conn.eval(c).await?;
        let mut a = array(v.clone()).ok_or_else(|| bad_reply("empty", &v))?.into_iter();
        let n = a.next().as_ref().and_then(int).ok_or_else(|| bad_reply("empty", &v))?;
        Ok((n as u64, a.filter_map(bytes).collect()))
    }

    async fn obliterate(&self, q: &QueueKeys) -> Result<u64> {
        // SCAN by the queue's key base (glob characters of the prefix escaped), then UNLINK
        // page by page: a queue of millions of keys never holds Redis for long.
        let pattern: String = q.base.chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let v: Value =
                self.conn.query(::redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{pattern}:*")).arg("COUNT").arg(1000)).await?;
            let mut a = array(v.clone()).ok_or_else(|| bad_reply("scan", &v))?.into_iter();
            let next = a.next().and_then(bytes).and_then(|b| String::from_utf8_lossy(&b).parse::<u64>().ok());
            let keys: Vec<Vec<u8>> = a.next().and_then(array).unwrap_or_default().into_iter().filter_map(bytes).collect();
            if !keys.is_empty() {
                let n: Value = self.conn.query(::redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += int(&n).unwrap_or(0) as u64;
            }
            match next {
                Some(0) => break,
                Some(c) => cursor = c,
                None => return Err(bad_reply("scan", &v)),
            }
        }
        self.conn.query::<Value>(::redis::cmd("SREM").arg(keys::queue_registry(&self.settings().prefix)).arg(&q.name)).await?;
        self.registered.lock().unwrap().remove(&q.name);
        Ok(deleted)
    }

    async fn set_limits(&self, q: &QueueKeys, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        self.write_limits(q, &q.limit, &q.limiter, limits).await
    }

    async fn limits(&self, q: &QueueKeys) -> Result<Limits> {
        self.read_limits(&q.limit).await
    }

    async fn set_group_limits(&self, q: &QueueKeys, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        // limit.lua, on the groups' hash; the groups' window counts are not deleted (one key
        // per group): reserve.lua opens a new window where a count outlives the limit now set.
        self.write_limits(q, &q.glimit, &q.glimit, limits).await
    }

    async fn group_limits(&self, q: &QueueKeys) -> Result<Limits> {
        self.read_limits(&q.glimit).await
    }

    async fn failed_purge(&self, q: &QueueKeys) -> Result<u64> {
        let v = self.failed_op(q, "purge", 0).await?;
        int(&v).map(|n| n as u64).ok_or_else(|| bad_reply("failed purge", &v))
    }

    async fn schedule_signal(&self, q: &QueueKeys) -> Result<Arc<tokio::sync::Notify>> {
        self.notifier.signal(&q.sched_channel).await
    }

    async fn schedule_upsert(&self, w: ScheduleWrite) -> Result<(bool, i64)> {
        let k = &self.sched;
        let def = k.def(&w.key);
        let mut c = scripts().sched_upsert.evalsha(&[&k.next, &def]);
        c.arg(&w.key).arg(&w.timing).arg(w.next_ms).arg(w.anchor_ms).arg(&k.channel);
        for (f, v) in &w.fields {
            c.arg(f).arg(v);
        }
        let v: Value = self.conn.eval(c).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("schedule upsert", &v))?;
        match (a.first().and_then(int), a.get(1).and_then(int)) {
            (Some(created), Some(next)) => Ok((created == 1, next)),
            _ => Err(bad_reply("schedule upsert", &v)),
        }
    }

    async fn schedule_read(&self, keys: Option<Vec<String>>) -> Result<Vec<ScheduleEntry>> {
        let k = &self.sched;
        let mut c = scripts().sched_read.evalsha(&[&k.next]);
        c.arg(k.def_base()).arg(keys.unwrap_or_default());
        let v: Value = self.conn.eval(c).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("schedule read", &v))?;
        let mut out = Vec::with_capacity(a.len() / 3);
        let mut it = a.into_iter();
        while let (Some(key), Some(next), Some(def)) = (it.next(), it.next(), it.next()) {
            let key = bytes(key).map(|b| String::from_utf8_lossy(&b).into_owned()).ok_or_else(|| bad_reply("schedule read", &v))?;
            let next_ms = int(&next).ok_or_else(|| bad_reply("schedule read", &v))?;
            let mut fields = std::collections::HashMap::new();
            let mut f = array(def).unwrap_or_default().into_iter();
            while let (Some(name), Some(value)) = (f.next(), f.next()) {
                if let (Some(name), Some(value)) = (bytes(name), bytes(value)) {
                    fields.insert(String::from_utf8_lossy(&name).into_owned(), value);
                }
            }
            out.push(ScheduleEntry { key, next_ms, fields });
        }
        Ok(out)
    }

    async fn schedule_remove(&self, keys: Option<Vec<String>>) -> Result<u64> {
        let k = &self.sched;
        let mut c = scripts().sched_remove.evalsha(&[&k.next]);
        c.arg(k.def_base()).arg(keys.unwrap_or_default());
        let v: Value = self.conn.eval(c).await?;
        int(&v).map(|n| n as u64).ok_or_else(|| bad_reply("schedule remove", &v))
    }

    async fn schedules_due(&self, limit: usize) -> Result<DueSchedules> {
        let mut c = scripts().sched_due.evalsha(&[&self.sched.next]);
        c.arg(limit.max(1));
        let v: Value = self.conn.eval(c).await?;
        let a = array(v.clone()).ok_or_else(|| bad_reply("schedules due", &v))?;
        let now_ms = a.first().and_then(int).ok_or_else(|| bad_reply("schedules due", &v))?;
        let head_ms = a.get(1).and_then(int).filter(|h| *h >= 0);
        let due =
            a[2..].chunks(2).filter_map(|p| Some((String::from_utf8_lossy(&bytes(p[0].clone())?).into_owned(), int(p.get(1)?)?))).collect();
        Ok(DueSchedules { now_ms, head_ms, due })
    }

    async fn schedule_advance(&self, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> Result<bool> {
        let k = &self.sched;
        let def = k.def(key);
        let mut c = scripts().sched_advance.evalsha(&[&k.next, &def]);
        c.arg(key).arg(tick_ms).arg(next_ms.unwrap_or(-1)).arg(job_id);
        let v: Value = self.conn.eval(c).await?;
        Ok(int(&v) == Some(1))
    }

    async fn schedules_signal(&self) -> Result<Arc<tokio::sync::Notify>> {
        self.notifier.signal(&self.sched.channel).await
    }

    async fn book_get(&self, book: &str, fields: Vec<String>) -> Result<Vec<Option<Vec<u8>>>> {
        let key = keys::book_key(&self.settings().prefix, book)?;
        if fields.is_empty() {
            return Ok(vec![]);
        }
        let mut c = ::redis::cmd("HMGET");
        c.arg(key).arg(&fields);
        let v: Value = self.conn.query(&c).await?;
        Ok(array(v).unwrap_or_default().into_iter().map(bytes).collect())
    }

    async fn book_set(&self, book: &str, fields: Vec<(String, Vec<u8>)>, ttl: Option<Duration>) -> Result<()> {
        let key = keys::book_key(&self.settings().prefix, book)?;
        let mut p = ::redis::pipe();
        p.atomic();
        if !fields.is_empty() {
            let c = p.cmd("HSET").arg(&key);
            for (f, v) in &fields {
                c.arg(f).arg(v);
            }
            c.ignore();
        }
        if let Some(ttl) = ttl {
            p.cmd("PEXPIRE").arg(&key).arg(ttl.as_millis().max(1) as u64).ignore();
        }
        self.conn.pipeline(&p).await.map(|_| ())
    }

    async fn flow_settle(&self, items: Vec<FlowSettle>) -> Result<Vec<FlowSettled>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let mut p = ::redis::pipe();
        for it in &items {
            let base = keys::book_key(&self.settings().prefix, &format!("flow:{}", it.flow_id))?;
            let results = format!("{base}:results:{}", it.parent);
            let mut c = scripts().flow_settle.evalsha(&[&base, &results]);
            c.arg(it.child).arg(it.parent).arg(if it.failed { "f" } else { "c" }).arg(&it.job_id).arg(&it.data).arg(it.policy.as_str());
            p.add_command(c);
        }
        let mut out = Vec::with_capacity(items.len());
        for v in self.conn.pipeline(&p).await? {
            if let Some(e) = server_error(&v) {
                return Err(e);
            }
            let mut answer = array(v).unwrap_or_default().into_iter().map(bytes);
            let kind = answer.next().flatten().unwrap_or_default();
            let data = answer.next().flatten();
            out.push(match &kind[..] {
                b"release" => FlowSettled::Release(data),
                b"fail" => FlowSettled::Fail(data),
                _ => FlowSettled::Wait,
            });
        }
        Ok(out)
    }

    async fn flow_results(&self, flow_id: &str, node: u32) -> Result<Vec<(String, Vec<u8>)>> {
        let base = keys::book_key(&self.settings().prefix, &format!("flow:{flow_id}"))?;
        self.hash_all(&format!("{base}:results:{node}")).await
    }

    async fn worker_put(&self, worker: String, entry: Vec<u8>) -> Result<()> {
        let mut c = ::redis::cmd("HSET");
        c.arg(keys::worker_registry(&self.settings().prefix)).arg(worker).arg(entry);
        self.conn.query::<()>(&c).await
    }

    async fn workers_read(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.hash_all(&keys::worker_registry(&self.settings().prefix)).await
    }

    async fn workers_remove(&self, workers: Vec<String>) -> Result<u64> {
        if workers.is_empty() {
            return Ok(0);
        }
        let mut c = ::redis::cmd("HDEL");
        c.arg(keys::worker_registry(&self.settings().prefix)).arg(&workers);
        let v: Value = self.conn.query(&c).await?;
        Ok(match v {
            Value::Int(n) => n.max(0) as u64,
            _ => 0,
        })
    }

    async fn ping(&self) -> Result<()> {
        self.conn.query::<Value>(&::redis::cmd("PING")).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_consecutive_sequence_numbers_per_producer() {
        let ids: Vec<Vec<u8>> = ["aaaaaaaaaa-5", "aaaaaaaaaa-3", "aaaaaaaaaa-4", "bbbbbbbbbb-4", "aaaaaaaaaa-9"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let seqs = ids.iter().map(|i| split_generated(i)).collect();
        let runs: Vec<(String, u64, u64)> =
            runs_of(seqs).into_iter().map(|(p, f, c)| (String::from_utf8_lossy(p).into_owned(), f, c)).collect();
        assert_eq!(runs, vec![("aaaaaaaaaa".into(), 3, 3), ("aaaaaaaaaa".into(), 9, 1), ("bbbbbbbbbb".into(), 4, 1)]);
    }
}

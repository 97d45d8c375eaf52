//! The store contract as tests: generic functions that take any `Store` and assert, through
//! the trait only, what every store must do. `run_all` runs each against a fresh store; the
//! tests at the end run the whole suite against RedisStore (the reference, on a real
//! redis-server) and MemoryStore.
//!
//! Each function gets a store of its own (a fresh key prefix for a shared server).

use crate::error::{Error, Result};
use crate::record::{pack_into, Header, IdGen, Record};
use crate::store::chunk::{prepare_payloads, BulkSpec};
use crate::store::*;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A lease long enough never to expire during a test.
const LEASE: Duration = Duration::from_secs(60);

/// The handle of queue `name`.
fn queue<S: Store>(s: &S, name: &str) -> Arc<S::Queue> {
    s.queue(name).expect("a valid queue name")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A packed record.
fn record(id: &str, name: &str, priority: u8, max_attempts: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pack_into(&mut out, Header { attempt: 0, max_attempts, priority }, id, name, now_ms() as u64, options, payload);
    out
}

/// Jobs under generated ids, as a client dispatches them: one producer, a watermark.
struct Producer {
    ids: IdGen,
}

/// What a job is made of besides its id.
#[derive(Clone, Copy)]
struct Spec<'a> {
    priority: u8,
    attempts: u16,
    delay_ms: u64,
    options: &'a [u8],
    payload: &'a [u8],
}

const PLAIN: Spec<'static> = Spec { priority: 0, attempts: 1, delay_ms: 0, options: b"", payload: b"null" };

impl Producer {
    fn new() -> Producer {
        Producer { ids: IdGen::default() }
    }

    fn jobs(&mut self, n: usize, spec: Spec<'_>) -> (Vec<NewJob>, Watermark) {
        let range = self.ids.take(n as u64);
        let jobs = (0..n as u64)
            .map(|i| {
                let id = range.id(i);
                let record = record(&id, "task", spec.priority, spec.attempts, spec.options, spec.payload);
                let group = crate::record::options_group(spec.options).expect("valid options");
                NewJob { id, custom_id: false, delay_us: spec.delay_ms * 1000, at_us: None, record, dedup: None, group }
            })
            .collect();
        (jobs, Watermark { producer: range.producer.clone(), last_seq: range.last_seq(), guard: None })
    }

    /// Writes `n` jobs; returns their ids.
    async fn send<S: Store>(&mut self, s: &S, q: &S::Queue, n: usize, spec: Spec<'_>) -> Vec<String> {
        let (jobs, mark) = self.jobs(n, spec);
        let written = s.enqueue(q, &jobs, Some(&mark)).await.expect("enqueue");
        assert_eq!(written, vec![Written::New; n]);
        jobs.into_iter().map(|j| j.id).collect()
    }
}

/// A job under a caller-chosen id.
fn custom(id: &str, spec: Spec<'_>) -> NewJob {
    let record = record(id, "task", spec.priority, spec.attempts, spec.options, spec.payload);
    let group = crate::record::options_group(spec.options).expect("valid options");
    NewJob { id: id.into(), custom_id: true, delay_us: spec.delay_ms * 1000, at_us: None, record, dedup: None, group }
}

fn not_idle(lease: Duration) -> Idle<'static> {
    Idle { worker: "w", previous: None, register: false, lease }
}

/// Leases up to `max` jobs under `token`; they must be there.
async fn take<S: Store>(s: &S, q: &S::Queue, token: &str, max: usize) -> Vec<Vec<u8>> {
    match s.reserve(q, token, max, &not_idle(LEASE)).await.expect("reserve") {
        Reserved::Jobs(j) => j,
        other => panic!("expected jobs, got {other:?}"),
    }
}

/// Reserves and expects nothing leased.
async fn none_ready<S: Store>(s: &S, q: &S::Queue, token: &str) {
    match s.reserve(q, token, 10, &not_idle(LEASE)).await.expect("reserve") {
        Reserved::Empty | Reserved::Idle { .. } => {}
        other => panic!("expected nothing ready, got {other:?}"),
    }
}

fn id_of(rec: &[u8]) -> String {
    String::from_utf8_lossy(Record::peek_id(rec)).into_owned()
}

fn ids_of(recs: &[Vec<u8>]) -> Vec<String> {
    recs.iter().map(|r| id_of(r)).collect()
}

fn entry(id: &str, kind: AckKind) -> AckEntry {
    let custom_id = !crate::record::is_generated_id(id);
    AckEntry { id: id.as_bytes().to_vec(), custom_id, retried: false, kind, dedup: None, group: None }
}

fn done(id: &str) -> AckEntry {
    entry(id, AckKind::Completed { result: None })
}

async fn ack<S: Store>(s: &S, q: &Arc<S::Queue>, token: &str, entries: Vec<AckEntry>) -> AckOutcome {
    let a: LeaseAck<S::Queue> = LeaseAck { queue: q.clone(), token: token.into(), entries };
    s.ack(&[a]).await.expect("ack").remove(0)
}

async fn state<S: Store>(s: &S, q: &S::Queue, id: &str) -> State {
    s.status(q, id).await.expect("status").state
}

fn error_json(message: &str) -> Vec<u8> {
    format!(r#"{{"type":"ValueError","message":"{message}","traceback":""}}"#).into_bytes()
}

/// Sleeps past a short deadline set by the store's clock (not an assertion on timing: the
/// test only needs the moment to have passed).
async fn pass(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---- The contract. ----

/// A job's life: waiting, active, completed; the counts follow it.
pub async fn enqueue_reserve_complete<S: Store>(s: &S) {
    let q = queue(s, "life");
    let mut p = Producer::new();
    let ids = p.send(s, &q, 3, PLAIN).await;
    assert_eq!(state(s, &q, &ids[0]).await, State::Waiting);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed), (3, 0, 0));
    let recs = take(s, &q, "w1.1", 10).await;
    assert_eq!(ids_of(&recs), ids, "jobs are leased in dispatch order");
    let st = s.status(&q, &ids[1]).await.unwrap();
    assert_eq!(st.state, State::Active);
    assert_eq!(st.record.as_deref(), Some(&recs[1][..]));
    assert_eq!(s.counts(&q).await.unwrap().active, 3);
    let with_result = entry(&ids[2], AckKind::Completed { result: Some(b"42".to_vec()) });
    let out = ack(s, &q, "w1.1", vec![done(&ids[0]), done(&ids[1]), with_result]).await;
    assert_eq!(out, AckOutcome { completed: 3, ..Default::default() });
    let st = s.status(&q, &ids[2]).await.unwrap();
    assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"42"[..])));
    let st = s.status(&q, &ids[0]).await.unwrap();
    assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"null"[..])));
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed), (0, 0, 3));
    assert_eq!(state(s, &q, "zzzzzzzzzz-7").await, State::Unknown);
}

/// A failed attempt runs again (after its delay, keeping its error), then fails for good.
pub async fn retry_then_fail<S: Store>(s: &S) {
    let q = queue(s, "retry");
    let mut p = Producer::new();
    let id = p.send(s, &q, 1, Spec { attempts: 3, ..PLAIN }).await.remove(0);
    let rec = take(s, &q, "w1.1", 1).await.remove(0);
    let err = error_json("first");
    let kind = AckKind::Retry { delay_ms: 3_600_000, record: Record::with_attempt(&rec, 1), error: err.clone() };
    assert_eq!(ack(s, &q, "w1.1", vec![entry(&id, kind)]).await, AckOutcome { retried: 1, ..Default::default() });
    let st = s.status(&q, &id).await.unwrap();
    assert_eq!((st.state, st.data), (State::Delayed, Some(err)));
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.delayed, c.retried, c.active), (1, 1, 0));
    none_ready(s, &q, "w1.2").await;
    // Retried at once this time: ready again, the attempt counted in its record.
    s.cancel(&q, &id, true).await.unwrap();
    let id = p.send(s, &q, 1, Spec { attempts: 2, ..PLAIN }).await.remove(0);
    let rec = take(s, &q, "w1.3", 1).await.remove(0);
    let kind = AckKind::Retry { delay_ms: 0, record: Record::with_attempt(&rec, 1), error: error_json("again") };
    ack(s, &q, "w1.3", vec![entry(&id, kind)]).await;
    assert_eq!(state(s, &q, &id).await, State::Waiting);
    let rec = take(s, &q, "w1.4", 1).await.remove(0);
    assert_eq!(Record::unpack(&rec).unwrap().attempt, 1);
    let err = error_json("for good");
    let mut e = entry(&id, AckKind::Failed { error: err.clone(), record: Record::with_attempt(&rec, 2) });
    e.retried = true;
    assert_eq!(ack(s, &q, "w1.4", vec![e]).await, AckOutcome { failed: 1, ..Default::default() });
    let st = s.status(&q, &id).await.unwrap();
    assert_eq!((st.state, st.data), (State::Failed, Some(err)));
    assert_eq!(Record::unpack(&st.record.unwrap()).unwrap().attempt, 2);
    assert_eq!(s.counts(&q).await.unwrap().failed, 1);
}

/// A handler that gave up after a cancel request: the job is cancelled, not run again.
pub async fn cancelled_ack<S: Store>(s: &S) {
    let q = queue(s, "cx");
    let id = Producer::new().send(s, &q, 1, PLAIN).await.remove(0);
    take(s, &q, "w1.1", 1).await;
    assert_eq!(ack(s, &q, "w1.1", vec![entry(&id, AckKind::Cancelled)]).await, AckOutcome { cancelled: 1, ..Default::default() });
    assert_eq!(state(s, &q, &id).await, State::Cancelled);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.cancelled, c.active, c.waiting), (1, 0, 0));
    none_ready(s, &q, "w1.2").await;
}

/// A lease that expired is reaped by `tick`: its job goes back (an orphan, attempts kept),
/// the late acknowledgement is refused, and the stall is counted.
pub async fn lease_refused_after_reap<S: Store>(s: &S) {
    let q = queue(s, "reap");
    let id = Producer::new().send(s, &q, 1, Spec { attempts: 3, ..PLAIN }).await.remove(0);
    let Reserved::Jobs(_) = s.reserve(&q, "w1.1", 1, &not_idle(Duration::from_millis(1))).await.unwrap() else { panic!("no job") };
    pass(30).await;
    let t = s.tick(&q, 100).await.unwrap();
    assert_eq!(t.reaped, 1);
    assert_eq!(state(s, &q, &id).await, State::Waiting);
    assert_eq!(ack(s, &q, "w1.1", vec![done(&id)]).await, AckOutcome { refused: 1, ..Default::default() });
    let rec = take(s, &q, "w2.1", 1).await.remove(0);
    assert!(Record::is_orphan(&rec), "a reaped job comes back as an orphan");
    assert_eq!(Record::unpack(&rec).unwrap().attempt, 0, "its run was never seen to start");
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.stalled, c.active, c.completed), (1, 1, 0));
    assert_eq!(ack(s, &q, "w2.1", vec![done(&id)]).await.completed, 1);
}

/// An orphan whose start was recorded counts its run when reaped; out of attempts it fails.
pub async fn reaped_started_orphan_fails<S: Store>(s: &S) {
    let q = queue(s, "orphan");
    let id = Producer::new().send(s, &q, 1, PLAIN).await.remove(0);
    let short = not_idle(Duration::from_millis(1));
    let Reserved::Jobs(_) = s.reserve(&q, "w1.1", 1, &short).await.unwrap() else { panic!("no job") };
    pass(30).await;
    s.tick(&q, 100).await.unwrap();
    let Reserved::Jobs(_) = s.reserve(&q, "w2.1", 1, &short).await.unwrap() else { panic!("no job") };
    assert!(s.start(&q, "w2.1", id.as_bytes()).await.unwrap());
    pass(30).await;
    assert_eq!(s.tick(&q, 100).await.unwrap().reaped, 1);
    let st = s.status(&q, &id).await.unwrap();
    assert_eq!(st.state, State::Failed);
    let err: serde_json::Value = serde_json::from_slice(&st.data.unwrap()).unwrap();
    assert_eq!(err["type"], "LeaseExpired");
}

/// `extend` keeps live leases, names the reaped ones, and passes on cancel requests.
pub async fn extend_keeps_and_reports_lost<S: Store>(s: &S) {
    let q = queue(s, "ext");
    let ids = Producer::new().send(s, &q, 2, PLAIN).await;
    let Reserved::Jobs(_) = s.reserve(&q, "w1.1", 1, &not_idle(Duration::from_millis(1))).await.unwrap() else { panic!("no job") };
    take(s, &q, "w2.1", 1).await;
    pass(30).await;
    assert_eq!(s.tick(&q, 100).await.unwrap().reaped, 1);
    let leases = vec![(q.clone(), vec!["w1.1".to_string(), "w2.1".to_string(), "w3.1".to_string()])];
    let x = s.extend(&leases, LEASE).await.unwrap();
    assert_eq!(x.lost, vec!["w1.1".to_string()], "a token never leased is not lost");
    assert!(x.cancel.is_empty());
    let r = s.cancel(&q, &ids[1], false).await.unwrap();
    assert_eq!((r.state, r.done), (State::Active, true));
    let x = s.extend(&leases, LEASE).await.unwrap();
    assert_eq!(x.cancel, vec![(0, ids[1].as_bytes().to_vec())]);
    // The live lease held: nothing to reap.
    assert_eq!(s.tick(&q, 100).await.unwrap().reaped, 0);
    assert_eq!(state(s, &q, &ids[1]).await, State::Active);
}

/// Released jobs go back to the head of the queue in order; `start` needs the lease.
pub async fn release_and_start<S: Store>(s: &S) {
    let q = queue(s, "rel");
    let ids = Producer::new().send(s, &q, 3, PLAIN).await;
    take(s, &q, "w1.1", 2).await;
    assert!(s.start(&q, "w1.1", ids[0].as_bytes()).await.unwrap());
    assert!(!s.start(&q, "w1.1", b"nope").await.unwrap());
    assert!(!s.start(&q, "w9.1", ids[0].as_bytes()).await.unwrap());
    let n = s.release(&q, "w1.1", &[ids[0].as_bytes().to_vec(), ids[1].as_bytes().to_vec()]).await.unwrap();
    assert_eq!(n, 2);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.active), (3, 0));
    assert_eq!(ids_of(&take(s, &q, "w2.1", 3).await), ids);
    assert_eq!(s.release(&q, "w1.1", &[ids[0].as_bytes().to_vec()]).await.unwrap(), 0, "not in that lease any more");
}

/// A delayed job is not leased before its time; `tick` promotes it once it is due.
pub async fn delayed_until_due<S: Store>(s: &S) {
    let q = queue(s, "later");
    let mut p = Producer::new();
    let far = p.send(s, &q, 1, Spec { delay_ms: 3_600_000, ..PLAIN }).await.remove(0);
    assert_eq!(state(s, &q, &far).await, State::Delayed);
    none_ready(s, &q, "w1.1").await;
    let t = s.tick(&q, 100).await.unwrap();
    assert_eq!(t.promoted, 0);
    let due = t.next_due_us.expect("a delayed job's due time");
    assert!(due > t.now_us + 3_000_000_000, "due in about an hour, got {due} at {}", t.now_us);
    let soon = p.send(s, &q, 1, Spec { delay_ms: 20, ..PLAIN }).await.remove(0);
    assert_eq!(s.counts(&q).await.unwrap().delayed, 2);
    pass(60).await;
    let t = s.tick(&q, 100).await.unwrap();
    assert_eq!(t.promoted, 1);
    assert_eq!(state(s, &q, &soon).await, State::Waiting);
    assert_eq!(ids_of(&take(s, &q, "w1.2", 10).await), vec![soon]);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.delayed, c.active), (1, 1));
}

/// Higher priorities are leased first, dispatch order within one.
pub async fn priorities_higher_first<S: Store>(s: &S) {
    let q = queue(s, "prio");
    let mut p = Producer::new();
    let a = p.send(s, &q, 1, PLAIN).await.remove(0);
    let b = p.send(s, &q, 1, Spec { priority: 5, ..PLAIN }).await.remove(0);
    let c = p.send(s, &q, 1, Spec { priority: 9, ..PLAIN }).await.remove(0);
    let d = p.send(s, &q, 1, Spec { priority: 5, ..PLAIN }).await.remove(0);
    assert_eq!(s.counts(&q).await.unwrap().waiting, 4);
    assert_eq!(ids_of(&take(s, &q, "w1.1", 10).await), vec![c, b, d, a]);
}

/// A caller-chosen id is taken once, while its job is known; removing the job frees it.
pub async fn caller_chosen_ids<S: Store>(s: &S) {
    let q = queue(s, "ids");
    let job = custom("order-1", PLAIN);
    assert_eq!(s.enqueue(&q, std::slice::from_ref(&job), None).await.unwrap(), vec![Written::New]);
    assert_eq!(s.enqueue(&q, std::slice::from_ref(&job), None).await.unwrap(), vec![Written::Exists]);
    assert_eq!(state(s, &q, "order-1").await, State::Waiting);
    assert_eq!(s.counts(&q).await.unwrap().waiting, 1);
    take(s, &q, "w1.1", 1).await;
    let out = ack(s, &q, "w1.1", vec![entry("order-1", AckKind::Completed { result: Some(b"\"ok\"".to_vec()) })]).await;
    assert_eq!(out.completed, 1);
    let st = s.status(&q, "order-1").await.unwrap();
    assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"\"ok\""[..])));
    assert_eq!(s.enqueue(&q, std::slice::from_ref(&job), None).await.unwrap(), vec![Written::Exists]);
    let r = s.cancel(&q, "order-1", true).await.unwrap();
    assert_eq!((r.state, r.done), (State::Completed, true));
    assert_eq!(state(s, &q, "order-1").await, State::Unknown);
    assert_eq!(s.enqueue(&q, &[job], None).await.unwrap(), vec![Written::New]);
    assert_eq!(state(s, &q, "never-sent").await, State::Unknown);
}

fn with_dedup(mut j: NewJob, key: &str, mode: DedupMode) -> NewJob {
    j.dedup = Some(Dedup { key: key.into(), mode });
    j
}

/// Deduplication: a key held for a time, until its job settles, or debounced.
pub async fn deduplication<S: Store>(s: &S) {
    let q = queue(s, "dedup");
    let mut p = Producer::new();
    let (jobs, mark) = p.jobs(2, PLAIN);
    let jobs: Vec<NewJob> = jobs.into_iter().map(|j| with_dedup(j, "k-ttl", DedupMode::Ttl(60_000))).collect();
    let w = s.enqueue(&q, &jobs, Some(&mark)).await.unwrap();
    assert_eq!(w, vec![Written::New, Written::Deduplicated(jobs[0].id.clone())]);
    // Until settled: dropped while the holder waits, free once it completed.
    let (jobs, mark) = p.jobs(3, PLAIN);
    let jobs: Vec<NewJob> = jobs.into_iter().map(|j| with_dedup(j, "k-u", DedupMode::UntilSettled)).collect();
    let w = s.enqueue(&q, &jobs[..2], Some(&mark)).await.unwrap();
    assert_eq!(w, vec![Written::New, Written::Deduplicated(jobs[0].id.clone())]);
    let ttl_holder = ids_of(&take(s, &q, "w1.1", 10).await);
    assert_eq!(ttl_holder.len(), 2, "the dropped dispatches wrote nothing");
    assert_eq!(ttl_holder[1], jobs[0].id);
    let mut e = done(&jobs[0].id);
    e.dedup = Some(b"k-u".to_vec());
    assert_eq!(ack(s, &q, "w1.1", vec![e]).await.completed, 1);
    assert_eq!(s.enqueue(&q, &jobs[2..], Some(&mark)).await.unwrap(), vec![Written::New]);
    // Debounce: a later dispatch replaces the waiting job's record and keeps its id.
    let (jobs, mark) = p.jobs(1, Spec { delay_ms: 3_600_000, payload: b"1", ..PLAIN });
    let first = with_dedup(jobs[0].clone(), "k-d", DedupMode::Debounce);
    assert_eq!(s.enqueue(&q, std::slice::from_ref(&first), Some(&mark)).await.unwrap(), vec![Written::New]);
    let (jobs, mark) = p.jobs(1, Spec { delay_ms: 3_600_000, payload: b"2", ..PLAIN });
    let second = with_dedup(jobs[0].clone(), "k-d", DedupMode::Debounce);
    assert_eq!(s.enqueue(&q, &[second], Some(&mark)).await.unwrap(), vec![Written::Deduplicated(first.id.clone())]);
    let st = s.status(&q, &first.id).await.unwrap();
    assert_eq!(st.state, State::Delayed);
    let rec = Record::unpack(&st.record.unwrap()).unwrap();
    assert_eq!((rec.id.as_str(), rec.payload.as_slice()), (first.id.as_str(), &b"2"[..]));
    assert_eq!(s.counts(&q).await.unwrap().delayed, 1);
}

fn bulk_spec(n: usize, delay_us: u64) -> (BulkSpec, Vec<u8>, Vec<(usize, usize)>) {
    let spec = BulkSpec {
        name: "bulk".into(),
        header: Header { attempt: 0, max_attempts: 1, priority: 0 },
        options: vec![],
        delay_us,
        at_us: None,
        max_payload: 1 << 20,
        enqueued_ms: now_ms() as u64,
    };
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    for i in 0..n {
        let s = buf.len();
        buf.extend_from_slice(format!("{{\"n\":{i}}}").as_bytes());
        spans.push((s, buf.len()));
    }
    (spec, buf, spans)
}

/// Bulk chunks: packed, written, known written; a chunk written twice writes once.
pub async fn bulk_chunks<S: Store>(s: &S) {
    let q = queue(s, "bulk");
    let mut ids = IdGen::default();
    for (n, delay_us) in [(SMALL_BATCH + 8, 0), (5, 0), (3, 3_600_000_000)] {
        let (spec, buf, spans) = bulk_spec(n, delay_us);
        let chunk = prepare_payloads(&spec, &mut ids, buf, spans, 0).unwrap().unwrap();
        let key = (chunk.range.producer.clone(), chunk.range.first);
        assert_eq!(s.chunks_written(&q, std::slice::from_ref(&key)).await.unwrap(), vec![false]);
        let packed = s.pack_chunk(&q, &chunk);
        s.write_chunk(&q, &packed).await.unwrap();
        s.write_chunk(&q, &packed).await.unwrap();
        assert_eq!(s.chunks_written(&q, &[key]).await.unwrap(), vec![true]);
    }
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.delayed), (SMALL_BATCH as u64 + 13, 3));
    let recs = take(s, &q, "w1.1", 100).await;
    assert_eq!(recs.len(), SMALL_BATCH + 13);
    let first = Record::unpack(&recs[0]).unwrap();
    assert_eq!((first.name.as_str(), first.payload.as_slice()), ("bulk", &b"{\"n\":0}"[..]));
    let seqs: Vec<u64> = ids_of(&recs).iter().map(|i| i[11..].parse().unwrap()).collect();
    assert_eq!(seqs, (0..recs.len() as u64).collect::<Vec<_>>(), "in dispatch order");
    assert_eq!(state(s, &q, &id_of(&recs[3])).await, State::Active);
}

/// A coalescer's parts: each written in one step, one answer per part.
pub async fn enqueue_parts<S: Store>(s: &Arc<S>) {
    let (a, b) = (queue(&**s, "parts-a"), queue(&**s, "parts-b"));
    let mut p = Producer::new();
    let (ja, ma) = p.jobs(2, PLAIN);
    let (jb, mb) = p.jobs(1, PLAIN);
    let jc = vec![custom("part-c", PLAIN)];
    let store = s.clone();
    let (qa, qb) = (a.clone(), b.clone());
    let answers = tokio::task::spawn_blocking(move || {
        let parts = [
            Part { q: &*qa, jobs: &ja, mark: Some(&ma) },
            Part { q: &*qb, jobs: &jb, mark: Some(&mb) },
            Part { q: &*qb, jobs: &jc, mark: None },
        ];
        store.enqueue_parts_blocking(&parts)
    })
    .await
    .unwrap()
    .unwrap();
    let answers: Vec<Vec<Written>> = answers.into_iter().map(|a| a.unwrap()).collect();
    assert_eq!(answers, vec![vec![Written::New; 2], vec![Written::New], vec![Written::New]]);
    assert_eq!(s.counts(&a).await.unwrap().waiting, 2);
    assert_eq!(s.counts(&b).await.unwrap().waiting, 2);
    let queues = s.queues().await.unwrap();
    assert!(queues.contains(&"parts-a".to_string()) && queues.contains(&"parts-b".to_string()), "{queues:?}");
}

/// Jobs that failed for good: listed oldest first, retried (attempts reset), purged.
pub async fn failed_list_retry_purge<S: Store>(s: &S) {
    let q = queue(s, "failed");
    let ids = Producer::new().send(s, &q, 3, PLAIN).await;
    let fail_all = |recs: Vec<Vec<u8>>| {
        recs.iter()
            .map(|r| entry(&id_of(r), AckKind::Failed { error: error_json("no"), record: Record::with_attempt(r, 1) }))
            .collect::<Vec<_>>()
    };
    let recs = take(s, &q, "w1.1", 3).await;
    assert_eq!(ack(s, &q, "w1.1", fail_all(recs)).await.failed, 3);
    let list = s.failed_list(&q, 10).await.unwrap();
    assert_eq!(list.iter().map(|f| f.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(list[0].error.as_deref(), Some(&error_json("no")[..]));
    assert!(list[0].failed_at_ms > 0 && list[0].record.is_some());
    assert_eq!(s.failed_list(&q, 1).await.unwrap().len(), 1);
    assert!(s.retry_job(&q, &ids[0]).await.unwrap());
    assert!(!s.retry_job(&q, &ids[0]).await.unwrap(), "not failed any more");
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.failed, c.waiting), (2, 1));
    assert_eq!(s.failed_retry(&q).await.unwrap(), 2);
    let recs = take(s, &q, "w1.2", 10).await;
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| Record::unpack(r).unwrap().attempt == 0), "attempts reset");
    assert_eq!(ack(s, &q, "w1.2", fail_all(recs)).await.failed, 3);
    assert_eq!(s.failed_purge(&q).await.unwrap(), 3);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.failed, c.waiting, c.active), (0, 0, 0));
    assert!(s.failed_list(&q, 10).await.unwrap().is_empty());
}

/// Cancel and remove, in every state a job can be in.
pub async fn cancel_and_remove<S: Store>(s: &S) {
    let q = queue(s, "cancel");
    let mut p = Producer::new();
    let ids = p.send(s, &q, 3, PLAIN).await;
    let late = p.send(s, &q, 1, Spec { delay_ms: 3_600_000, ..PLAIN }).await.remove(0);
    let r = s.cancel(&q, &ids[1], false).await.unwrap();
    assert_eq!((r.state.clone(), r.done, r.record.as_deref().map(id_of)), (State::Waiting, true, Some(ids[1].clone())));
    assert_eq!(state(s, &q, &ids[1]).await, State::Cancelled);
    let r = s.cancel(&q, &ids[1], false).await.unwrap();
    assert_eq!((r.state, r.done), (State::Cancelled, false));
    let r = s.cancel(&q, &late, false).await.unwrap();
    assert_eq!((r.state, r.done), (State::Delayed, true));
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.cancelled), (2, 0, 2));
    // Active: cancel asks its worker; remove refuses.
    let recs = take(s, &q, "w1.1", 1).await;
    assert_eq!(id_of(&recs[0]), ids[0]);
    let r = s.cancel(&q, &ids[0], true).await.unwrap();
    assert_eq!((r.state.clone(), r.done), (State::Active, false));
    let r = s.cancel(&q, &ids[0], false).await.unwrap();
    assert_eq!((r.state, r.done), (State::Active, true));
    // A job asked to cancel and handed back never runs.
    assert_eq!(s.release(&q, "w1.1", &[ids[0].as_bytes().to_vec()]).await.unwrap(), 0);
    assert_eq!(state(s, &q, &ids[0]).await, State::Cancelled);
    // Failed: cancel refuses, remove takes it.
    let recs = take(s, &q, "w1.2", 1).await;
    let e = entry(&ids[2], AckKind::Failed { error: error_json("x"), record: Record::with_attempt(&recs[0], 1) });
    ack(s, &q, "w1.2", vec![e]).await;
    let r = s.cancel(&q, &ids[2], false).await.unwrap();
    assert_eq!((r.state, r.done), (State::Failed, false));
    let r = s.cancel(&q, &ids[2], true).await.unwrap();
    assert_eq!((r.state, r.done), (State::Failed, true));
    assert_eq!(s.counts(&q).await.unwrap().failed, 0);
    let r = s.cancel(&q, "no-such-job", false).await.unwrap();
    assert_eq!((r.state, r.done), (State::Unknown, false));
}

/// Emptying a queue page by page cancels waiting and delayed jobs, and returns the records
/// of those with options.
pub async fn empty_pages<S: Store>(s: &S) {
    let q = queue(s, "empty");
    let mut p = Producer::new();
    let ids = p.send(s, &q, 2, PLAIN).await;
    p.send(s, &q, 1, Spec { options: br#"{"timeout":3}"#, ..PLAIN }).await;
    p.send(s, &q, 2, Spec { delay_ms: 3_600_000, ..PLAIN }).await;
    let (n, first) = s.empty_page(&q, 2).await.unwrap();
    assert_eq!((n, first.len()), (2, 0));
    let (n, rest) = s.empty_page(&q, 10).await.unwrap();
    assert_eq!((n, rest.len()), (3, 1));
    assert_eq!(Record::unpack(&rest[0]).unwrap().options, br#"{"timeout":3}"#);
    assert_eq!(s.empty_page(&q, 10).await.unwrap().0, 0);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.cancelled), (0, 0, 5));
    assert_eq!(state(s, &q, &ids[0]).await, State::Cancelled);
}

/// Obliterate: every trace of the queue goes, and its name leaves the registry.
pub async fn obliterate_queue<S: Store>(s: &S) {
    let q = queue(s, "gone");
    let mut p = Producer::new();
    p.send(s, &q, 3, PLAIN).await;
    p.send(s, &q, 1, Spec { delay_ms: 3_600_000, ..PLAIN }).await;
    take(s, &q, "w1.1", 1).await;
    assert!(s.queues().await.unwrap().contains(&"gone".to_string()));
    assert!(s.obliterate(&q).await.unwrap() > 0);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.active, c.completed), (0, 0, 0, 0));
    assert!(!s.queues().await.unwrap().contains(&"gone".to_string()));
}

/// Pause and resume: a paused queue leases nothing; dispatch goes on.
pub async fn pause_resume<S: Store>(s: &S) {
    let q = queue(s, "pause");
    match s.pause(&queue(s, "never-used")).await {
        Err(Error::UnknownQueue(m)) => assert!(m.contains("never-used"), "{m}"),
        other => panic!("expected UnknownQueue, got {other:?}"),
    }
    let mut p = Producer::new();
    p.send(s, &q, 1, PLAIN).await;
    assert!(s.pause(&q).await.unwrap());
    assert!(!s.pause(&q).await.unwrap());
    assert!(matches!(s.reserve(&q, "w1.1", 10, &not_idle(LEASE)).await.unwrap(), Reserved::Paused));
    p.send(s, &q, 1, PLAIN).await;
    let c = s.counts(&q).await.unwrap();
    assert!(c.paused);
    assert_eq!(c.waiting, 2);
    assert!(s.resume(&q).await.unwrap());
    assert!(!s.resume(&q).await.unwrap());
    assert!(!s.counts(&q).await.unwrap().paused);
    assert_eq!(take(s, &q, "w1.2", 10).await.len(), 2);
}

/// Queue limits: a rate per window and a concurrency, across workers.
pub async fn limits<S: Store>(s: &S) {
    let q = queue(s, "limits");
    let mut p = Producer::new();
    let ids = p.send(s, &q, 5, PLAIN).await;
    let rate = Limits { rate: Some((2, Duration::from_secs(60))), concurrency: None };
    s.set_limits(&q, &rate).await.unwrap();
    assert_eq!(s.limits(&q).await.unwrap(), rate);
    assert_eq!(take(s, &q, "w1.1", 10).await.len(), 2);
    match s.reserve(&q, "w1.2", 10, &not_idle(LEASE)).await.unwrap() {
        Reserved::Limited { retry_in: Some(d) } => assert!(d <= Duration::from_secs(60)),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    let conc = Limits { rate: None, concurrency: Some(3) };
    s.set_limits(&q, &conc).await.unwrap();
    assert_eq!(s.limits(&q).await.unwrap(), conc);
    assert_eq!(take(s, &q, "w1.3", 10).await.len(), 1, "two are leased already");
    assert!(matches!(s.reserve(&q, "w1.4", 10, &not_idle(LEASE)).await.unwrap(), Reserved::Limited { retry_in: None }));
    assert_eq!(ack(s, &q, "w1.1", vec![done(&ids[0])]).await.completed, 1);
    assert_eq!(take(s, &q, "w1.5", 10).await.len(), 1);
    s.set_limits(&q, &Limits::default()).await.unwrap();
    assert_eq!(s.limits(&q).await.unwrap(), Limits::default());
    assert_eq!(take(s, &q, "w1.6", 10).await.len(), 1);
}

/// Groups take turns and each has its own limits.
pub async fn groups<S: Store>(s: &S) {
    let q = queue(s, "groups");
    let mut p = Producer::new();
    let a = p.send(s, &q, 2, Spec { options: br#"{"group":"a"}"#, ..PLAIN }).await;
    let b = p.send(s, &q, 2, Spec { options: br#"{"group":"b"}"#, ..PLAIN }).await;
    let plain = p.send(s, &q, 1, PLAIN).await;
    assert_eq!(s.counts(&q).await.unwrap().waiting, 5);
    let one = Limits { rate: None, concurrency: Some(1) };
    s.set_group_limits(&q, &one).await.unwrap();
    assert_eq!(s.group_limits(&q).await.unwrap(), one);
    let mut got = ids_of(&take(s, &q, "w1.1", 10).await);
    got.sort();
    let mut want = vec![a[0].clone(), b[0].clone(), plain[0].clone()];
    want.sort();
    assert_eq!(got, want, "one per group, and the ungrouped job");
    assert!(matches!(s.reserve(&q, "w1.2", 10, &not_idle(LEASE)).await.unwrap(), Reserved::Limited { retry_in: None }));
    let mut e = done(&a[0]);
    e.group = Some(b"a".to_vec());
    assert_eq!(ack(s, &q, "w1.1", vec![e]).await.completed, 1);
    assert_eq!(ids_of(&take(s, &q, "w1.3", 10).await), vec![a[1].clone()]);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.active), (1, 3));
}

/// Schedules: written, read, due, advanced once per tick, removed.
pub async fn schedules<S: Store>(s: &S) {
    let now = now_ms();
    let fields = |job: &str| vec![("job".to_string(), job.as_bytes().to_vec()), ("queue".to_string(), b"sched".to_vec())];
    let w = ScheduleWrite { key: "s1".into(), timing: "every:1000".into(), next_ms: now - 10, anchor_ms: now, fields: fields("tick") };
    assert_eq!(s.schedule_upsert(w.clone()).await.unwrap(), (true, now - 10));
    let w2 = ScheduleWrite { next_ms: now + 50_000, fields: fields("tock"), ..w.clone() };
    assert_eq!(s.schedule_upsert(w2).await.unwrap(), (false, now - 10), "the same timing keeps its next run");
    let later = ScheduleWrite { key: "s2".into(), timing: "every:5000".into(), next_ms: now + 3_600_000, ..w.clone() };
    assert_eq!(s.schedule_upsert(later).await.unwrap(), (true, now + 3_600_000));
    let all = s.schedule_read(None).await.unwrap();
    assert_eq!(all.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["s1", "s2"]);
    assert_eq!(all[0].text("job"), Some("tock"));
    assert_eq!(all[0].next_ms, now - 10);
    let due = s.schedules_due(10).await.unwrap();
    assert_eq!(due.due, vec![("s1".to_string(), now - 10)]);
    assert_eq!(due.head_ms, Some(now - 10));
    assert!(due.now_ms >= now);
    assert!(s.schedule_advance("s1", now - 10, Some(now + 990), "s1@x").await.unwrap());
    assert!(!s.schedule_advance("s1", now - 10, Some(now + 990), "s1@x").await.unwrap(), "a tick counts once");
    let one = s.schedule_read(Some(vec!["s1".into(), "nope".into()])).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].next_ms, one[0].text("runs"), one[0].text("last_job_id")), (now + 990, Some("1"), Some("s1@x")));
    assert!(s.schedules_due(10).await.unwrap().due.is_empty());
    assert!(s.schedule_advance("s1", now + 990, None, "s1@y").await.unwrap());
    assert_eq!(s.schedule_read(None).await.unwrap().len(), 1, "a finished schedule goes");
    assert_eq!(s.schedule_remove(Some(vec!["s2".into()])).await.unwrap(), 1);
    assert_eq!(s.schedule_remove(None).await.unwrap(), 0);
    assert!(s.schedule_read(None).await.unwrap().is_empty());
}

/// Waiting for a result: it arrives when the job settles; a timeout answers None.
pub async fn wait_result<S: Store>(s: &Arc<S>) {
    let q = queue(&**s, "wait");
    let id = Producer::new().send(&**s, &q, 1, PLAIN).await.remove(0);
    assert!(s.wait_result(q.clone(), id.clone(), Some(Duration::from_millis(20))).await.unwrap().is_none());
    let store = s.clone();
    let (q2, id2) = (q.clone(), id.clone());
    let waiter = tokio::spawn(async move { store.wait_result(q2, id2, Some(Duration::from_secs(60))).await });
    pass(20).await;
    take(&**s, &q, "w1.1", 1).await;
    ack(&**s, &q, "w1.1", vec![entry(&id, AckKind::Completed { result: Some(b"[1]".to_vec()) })]).await;
    let st = waiter.await.unwrap().unwrap().expect("a result before the timeout");
    assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"[1]"[..])));
    let st = s.wait_result(q.clone(), "nobody-1".into(), Some(Duration::from_secs(60))).await.unwrap().unwrap();
    assert_eq!(st.state, State::Unknown);
}

fn fields(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs.iter().map(|(f, v)| (f.to_string(), v.to_vec())).collect()
}

fn names(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// A workflow's bookkeeping record and a flow node's settlement, counted once per child.
pub async fn workflow_records<S: Store>(s: &S) {
    s.book_set("chain:c1", fields(&[("next", b"2"), ("spec", b"{}")]), Some(Duration::from_secs(60))).await.unwrap();
    let got = s.book_get("chain:c1", names(&["next", "missing", "spec"])).await.unwrap();
    assert_eq!(got, vec![Some(b"2".to_vec()), None, Some(b"{}".to_vec())]);
    s.book_set("chain:c1", fields(&[("next", b"3")]), None).await.unwrap();
    assert_eq!(s.book_get("chain:c1", names(&["next"])).await.unwrap(), vec![Some(b"3".to_vec())]);
    assert_eq!(s.book_get("chain:c2", names(&["next"])).await.unwrap(), vec![None]);
    assert!(matches!(s.book_get("queue:x", names(&["next"])).await, Err(Error::Invalid(_))), "a book is a chain's or a flow's");
    // A node with two children: released by the second, whatever the repeats.
    s.book_set("flow:f1", fields(&[("pending:1", b"2"), ("spec:1", b"SPEC")]), None).await.unwrap();
    let child = |child: u32, failed: bool, policy: ChildPolicy| FlowSettle {
        flow_id: "f1".into(),
        child,
        parent: 1,
        failed,
        job_id: format!("job{child}"),
        data: format!("{{\"n\":{child}}}").into_bytes(),
        policy,
    };
    let c2 = child(2, false, ChildPolicy::FailParent);
    assert_eq!(s.flow_settle(vec![c2.clone(), c2]).await.unwrap(), vec![FlowSettled::Wait, FlowSettled::Wait]);
    let c3 = child(3, true, ChildPolicy::Ignore);
    assert_eq!(s.flow_settle(vec![c3]).await.unwrap(), vec![FlowSettled::Release(Some(b"SPEC".to_vec()))]);
    let mut results = s.flow_results("f1", 1).await.unwrap();
    results.sort();
    assert_eq!(results, vec![("job2".into(), b"{\"n\":2}".to_vec()), ("job3".into(), b"{\"n\":3}".to_vec())]);
    // A failure under fail_parent fails the parent, and says so on every repeat.
    s.book_set("flow:f2", fields(&[("pending:1", b"2"), ("spec:1", b"SPEC")]), None).await.unwrap();
    let bad = FlowSettle { flow_id: "f2".into(), ..child(4, true, ChildPolicy::FailParent) };
    let answers = s.flow_settle(vec![bad.clone(), bad]).await.unwrap();
    assert_eq!(answers, vec![FlowSettled::Fail(Some(b"{\"n\":4}".to_vec())); 2]);
    let skip = FlowSettle { flow_id: "f3".into(), parent: 7, ..child(5, true, ChildPolicy::ContinueParent) };
    s.book_set("flow:f3", fields(&[("pending:7", b"1"), ("spec:7", b"P7")]), None).await.unwrap();
    assert_eq!(s.flow_settle(vec![skip]).await.unwrap(), vec![FlowSettled::Release(Some(b"P7".to_vec()))]);
    assert!(s.flow_results("f3", 7).await.unwrap().is_empty(), "continue_parent leaves no result");
}

/// The worker registry: entries written, read and removed.
pub async fn worker_registry<S: Store>(s: &S) {
    s.worker_put("host-1".into(), b"{\"a\":1}".to_vec()).await.unwrap();
    s.worker_put("host-2".into(), b"{\"a\":2}".to_vec()).await.unwrap();
    s.worker_put("host-1".into(), b"{\"a\":3}".to_vec()).await.unwrap();
    let mut all = s.workers_read().await.unwrap();
    all.sort();
    assert_eq!(all, vec![("host-1".into(), b"{\"a\":3}".to_vec()), ("host-2".into(), b"{\"a\":2}".to_vec())]);
    assert_eq!(s.workers_remove(names(&["host-1", "nobody"])).await.unwrap(), 1);
    assert_eq!(s.workers_read().await.unwrap().len(), 1);
}

/// Progress replaces, log lines append; both carry the store's time.
pub async fn progress_and_logs<S: Store>(s: &S) {
    let q = queue(s, "feedback");
    let id = Producer::new().send(s, &q, 1, PLAIN).await.remove(0);
    let ttl = Duration::from_secs(60);
    assert_eq!(s.progress(&q, &id).await.unwrap(), None);
    let at = s.feedback(&q, &id, Feedback::Progress, br#"{"value":10}"#, ttl).await.unwrap();
    s.feedback(&q, &id, Feedback::Progress, br#"{"value":50}"#, ttl).await.unwrap();
    let p: serde_json::Value = serde_json::from_slice(&s.progress(&q, &id).await.unwrap().unwrap()).unwrap();
    assert_eq!(p["value"], 50);
    assert!(p["at"].as_i64().unwrap() >= at);
    for n in 0..3 {
        s.feedback(&q, &id, Feedback::Log, format!(r#"{{"message":"line {n}"}}"#).as_bytes(), ttl).await.unwrap();
    }
    let lines = s.logs(&q, &id, 0, 10).await.unwrap();
    assert_eq!(lines.len(), 3);
    let second: serde_json::Value = serde_json::from_slice(&s.logs(&q, &id, 1, 1).await.unwrap()[0]).unwrap();
    assert_eq!(second["message"], "line 1");
    assert!(s.logs(&q, &id, 5, 10).await.unwrap().is_empty());
    assert!(matches!(s.feedback(&q, &id, Feedback::Log, b"not json", ttl).await, Err(Error::Invalid(_))));
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(MAX_FEEDBACK_BYTES + 300));
    assert!(matches!(s.feedback(&q, &id, Feedback::Log, big.as_bytes(), ttl).await, Err(Error::Invalid(_))));
    let info = s.info(&q, &id).await.unwrap();
    assert_eq!(info.state, State::Waiting);
    assert!(info.progress.is_some());
}

/// A callback's record: fields replaced, read back, shown by `info`.
pub async fn callback_records<S: Store>(s: &S) {
    let q = queue(s, "callback");
    let id = Producer::new().send(s, &q, 1, PLAIN).await.remove(0);
    assert!(s.callback_status(&q, &id).await.unwrap().is_empty());
    s.callback_record(&q, &id, vec![("state", b"pending".to_vec()), ("attempts", b"0".to_vec())]).await.unwrap();
    s.callback_record(&q, &id, vec![("state", b"sent".to_vec())]).await.unwrap();
    let mut got = s.callback_status(&q, &id).await.unwrap();
    got.sort();
    assert_eq!(got, vec![("attempts".into(), b"0".to_vec()), ("state".into(), b"sent".to_vec())]);
    assert_eq!(s.info(&q, &id).await.unwrap().callback.len(), 2);
}

/// The queues registry: names added once, listed sorted.
pub async fn queues_registry<S: Store>(s: &S) {
    s.register_queues(&["zeta", "alpha"]).await.unwrap();
    s.register_queues(&["alpha"]).await.unwrap();
    Producer::new().send(s, &queue(s, "mid"), 1, PLAIN).await;
    assert_eq!(s.queues().await.unwrap(), vec!["alpha".to_string(), "mid".into(), "zeta".into()]);
    s.ping().await.unwrap();
}

/// The events switch: on with a length kept, off.
pub async fn events_switch<S: Store>(s: &S) {
    let q = queue(s, "events");
    assert_eq!(s.events_keep(&q).await.unwrap(), None);
    s.set_events(&q, Some(100)).await.unwrap();
    assert_eq!(s.events_keep(&q).await.unwrap(), Some(100));
    Producer::new().send(s, &q, 2, PLAIN).await;
    s.set_events(&q, None).await.unwrap();
    assert_eq!(s.events_keep(&q).await.unwrap(), None);
}

/// A dead worker's leases end at once; the next tick reaps them.
pub async fn expire_dead_worker<S: Store>(s: &S) {
    let q = queue(s, "expire");
    let ids = Producer::new().send(s, &q, 3, PLAIN).await;
    take(s, &q, "dead.1", 2).await;
    take(s, &q, "alive.1", 1).await;
    assert!(s.start(&q, "dead.1", ids[0].as_bytes()).await.unwrap());
    let x = s.expire_worker(&q, "dead", 1).await.unwrap();
    assert_eq!((x.leases, x.held, x.ids.len()), (1, 2, 1));
    assert_eq!(x.started, vec![ids[0].clone()]);
    assert_eq!(s.tick(&q, 100).await.unwrap().reaped, 2);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.active), (1, 1), "the started orphan failed for good; the other is back");
    assert_eq!(state(s, &q, &ids[0]).await, State::Failed);
}

/// What is not a job record is failed as undecodable when met, never leased.
pub async fn undecodable_failed<S: Store>(s: &S) {
    let q = queue(s, "garbage");
    let mut p = Producer::new();
    let (mut jobs, mark) = p.jobs(1, PLAIN);
    jobs[0].record = b"\x09not a record".to_vec();
    s.enqueue(&q, &jobs, Some(&mark)).await.unwrap();
    let good = p.send(s, &q, 1, PLAIN).await.remove(0);
    assert_eq!(ids_of(&take(s, &q, "w1.1", 10).await), vec![good]);
    let failed = s.failed_list(&q, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].id.starts_with(crate::record::UNDECODABLE_PREFIX), "{}", failed[0].id);
    assert_eq!(failed[0].record.as_deref(), Some(&b"\x09not a record"[..]));
    assert!(!s.retry_job(&q, &failed[0].id).await.unwrap(), "it would only fail again");
}

/// A blocked worker hears of new work: a job handed to it, or a wake-up after which a
/// reserve finds the job. A nudge or `leave` ends its wait.
pub async fn wait_for_work<S: Store>(s: &Arc<S>) {
    let q = queue(&**s, "wake");
    let idle = Idle { worker: "w7", previous: None, register: true, lease: LEASE };
    match s.reserve(&q, "w7.1", 10, &idle).await.unwrap() {
        Reserved::Idle { .. } | Reserved::Empty => {}
        other => panic!("expected nothing ready, got {other:?}"),
    }
    let store = s.clone();
    let queues = vec![q.clone()];
    let waiter = tokio::task::spawn_blocking(move || store.wait_for_work(&queues, "w7", Duration::from_secs(30)));
    pass(20).await;
    let id = Producer::new().send(&**s, &q, 1, PLAIN).await.remove(0);
    match waiter.await.unwrap().unwrap() {
        Some(h) => {
            assert_eq!((h.queue, id_of(&h.record)), (0, id.clone()));
            assert_eq!(state(&**s, &q, &id).await, State::Active);
            assert_eq!(h.token, "w7.1", "leased under the idle slot's token");
            assert_eq!(ack(&**s, &q, &h.token, vec![done(&id)]).await.completed, 1);
        }
        None => assert_eq!(ids_of(&take(&**s, &q, "w7.2", 10).await), vec![id]),
    }
    s.nudge(&q, "w7").await.unwrap();
    let store = s.clone();
    let queues = vec![q.clone()];
    let got = tokio::task::spawn_blocking(move || store.wait_for_work(&queues, "w7", Duration::from_secs(30))).await.unwrap();
    assert!(got.unwrap().is_none(), "a nudge ends the wait with nothing");
    assert_eq!(s.leave(&q, "w7", None).await.unwrap(), 0);
}

/// Runs one conformance function on a fresh store with its own prefix; returns its failure.
async fn run_one<S: Store, F, Fut>(name: &str, make: &dyn Fn(&str) -> Result<S>, f: F) -> Option<String>
where
    F: FnOnce(Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let prefix = format!("c{}{}", name.len(), &crate::record::IdGen::default().take(1).producer);
    let store = match make(&prefix) {
        Ok(s) => Arc::new(s),
        Err(e) => return Some(format!("{name}: the store could not be made: {e}")),
    };
    let task = tokio::spawn(f(store));
    match tokio::time::timeout(Duration::from_secs(120), task).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            let why = e
                .try_into_panic()
                .ok()
                .and_then(|p| p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())));
            Some(format!("{name}: {}", why.unwrap_or_else(|| "cancelled".into())))
        }
        Err(_) => Some(format!("{name}: did not finish in 120 s")),
    }
}

/// Runs the whole suite (or the functions whose names contain `FASTJOBS_CONFORMANCE`), each
/// on a fresh store from `make(prefix)`; returns the failures, one line each.
pub async fn run_all<S: Store>(make: &dyn Fn(&str) -> Result<S>) -> Vec<String> {
    let only = std::env::var("FASTJOBS_CONFORMANCE").unwrap_or_default();
    let mut failures = Vec::new();
    let mut ran = 0;
    macro_rules! run {
        ($($f:ident),* $(,)?) => {$(
            if stringify!($f).contains(only.as_str()) {
                ran += 1;
                if let Some(e) = run_one(stringify!($f), make, |s: Arc<S>| async move { $f(&*s).await }).await {
                    failures.push(e);
                }
            }
        )*};
    }
    macro_rules! run_shared {
        ($($f:ident),* $(,)?) => {$(
            if stringify!($f).contains(only.as_str()) {
                ran += 1;
                if let Some(e) = run_one(stringify!($f), make, |s: Arc<S>| async move { $f(&s).await }).await {
                    failures.push(e);
                }
            }
        )*};
    }
    run!(
        enqueue_reserve_complete,
        retry_then_fail,
        cancelled_ack,
        lease_refused_after_reap,
        reaped_started_orphan_fails,
        extend_keeps_and_reports_lost,
        release_and_start,
        delayed_until_due,
        priorities_higher_first,
        caller_chosen_ids,
        deduplication,
        bulk_chunks,
        failed_list_retry_purge,
        cancel_and_remove,
        empty_pages,
        obliterate_queue,
        pause_resume,
        limits,
        groups,
        schedules,
        workflow_records,
        worker_registry,
        progress_and_logs,
        callback_records,
        queues_registry,
        events_switch,
        expire_dead_worker,
        undecodable_failed,
    );
    run_shared!(enqueue_parts, wait_result, wait_for_work);
    eprintln!("store conformance: {ran} functions run, {} failed", failures.len());
    failures
}

#[cfg(test)]
mod tests {
    use super::run_all;
    use crate::store::memory::MemoryStore;
    use crate::store::redis::conn::Settings;
    use crate::store::redis::RedisStore;
    use crate::store::sqlite::SqliteStore;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// A throwaway redis-server on a free port in a temp dir (no persistence), killed on drop.
    struct RedisServer {
        child: Child,
        dir: PathBuf,
        port: u16,
    }

    impl RedisServer {
        /// None (the reason printed) when redis-server is not installed, unless CI=true.
        fn start() -> Option<RedisServer> {
            let found =
                std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("redis-server").is_file())).unwrap_or(false);
            if !found {
                let why = "redis-server is not on PATH (Debian package redis-server)";
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}: CI=true needs it to run the store conformance suite");
                eprintln!("skipping the RedisStore conformance run: {why}");
                return None;
            }
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = std::env::temp_dir().join(format!("fastjobs-conformance-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let server = RedisServer { child, dir, port };
            for _ in 0..500 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(server);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("redis-server did not start on port {port}");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn report(store: &str, failures: Vec<String>) {
        assert!(failures.is_empty(), "{store} breaks the store contract:\n{}", failures.join("\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_conforms() {
        let Some(server) = RedisServer::start() else { return };
        let url = format!("redis://127.0.0.1:{}/0", server.port);
        let failures = run_all(&|prefix: &str| RedisStore::new(&Settings::new(&url, prefix)?)).await;
        report("RedisStore", failures);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_conforms() {
        use crate::store::postgres::PgStore;
        // A fresh database per function (a PostgreSQL server from the store's own tests).
        if crate::store::postgres::testserver::database().await.is_none() {
            return;
        }
        let make = |_prefix: &str| {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let url = crate::store::postgres::testserver::database().await.expect("a PostgreSQL server");
                    PgStore::connect(&url, Duration::from_secs(3600)).await
                })
            })
        };
        report("PgStore", run_all(&make).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        report("MemoryStore", run_all(&|_prefix: &str| Ok(MemoryStore::new())).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_conforms() {
        // A fresh database file per conformance function, in a temp dir removed at the end.
        let dir = std::env::temp_dir().join(format!("fastjobs-conformance-sqlite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let failures =
            run_all(&|prefix: &str| SqliteStore::open(dir.join(format!("{prefix}.db")), prefix, Duration::from_secs(24 * 3600))).await;
        let _ = std::fs::remove_dir_all(&dir);
        report("SqliteStore", failures);
    }
}

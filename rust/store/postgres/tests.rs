//! PgStore against a real server (testserver.rs): `cargo test --lib postgres`.

use super::testserver::{database, store};
use super::*;
use crate::record::Record;

fn queue(name: &str) -> Arc<PgQueue> {
    Arc::new(PgQueue { name: name.into() })
}

fn record(id: &str, priority: u8, max_attempts: u16) -> Vec<u8> {
    Record {
        attempt: 0,
        max_attempts,
        priority,
        id: id.into(),
        name: "task".into(),
        enqueued_ms: 1,
        options: vec![],
        payload: b"[]".to_vec(),
    }
    .pack()
}

pub(super) fn job(id: &str, priority: u8) -> NewJob {
    NewJob { id: id.into(), custom_id: false, delay_us: 0, at_us: None, record: record(id, priority, 3), dedup: None, group: None }
}

fn idle(lease: Duration) -> Idle<'static> {
    Idle { worker: "w1", previous: None, register: true, lease }
}

async fn reserve(s: &PgStore, q: &PgQueue, token: &str, max: usize) -> Vec<String> {
    match s.reserve(q, token, max, &idle(Duration::from_secs(60))).await.unwrap() {
        Reserved::Jobs(recs) => recs.iter().map(|r| Record::unpack(r).unwrap().id).collect(),
        _ => vec![],
    }
}

fn entry(id: &str, kind: AckKind) -> AckEntry {
    AckEntry { id: id.as_bytes().to_vec(), custom_id: false, retried: false, kind, dedup: None, group: None }
}

async fn ack(s: &PgStore, q: &Arc<PgQueue>, token: &str, entries: Vec<AckEntry>) -> AckOutcome {
    s.ack(&[LeaseAck { queue: q.clone(), token: token.into(), entries }]).await.unwrap()[0]
}

#[tokio::test]
async fn a_database_without_the_schema_and_bad_urls_get_typed_errors() {
    let Some(url) = database().await else { return };
    let bare = url.rsplit_once('/').unwrap().0.to_string() + "/postgres";
    let e = PgStore::connect(&bare, Duration::from_secs(1)).await.err().unwrap();
    assert!(matches!(&e, Error::Schema(m) if m.contains("fastjobs db init")), "{e:?}");
    let e = PgStore::connect("redis://localhost/0", Duration::from_secs(1)).await.err().unwrap();
    assert!(matches!(&e, Error::Invalid(m) if m.contains("not a PostgreSQL URL")), "{e:?}");
    let e = PgStore::connect("postgresql://u:secret@127.0.0.1:1/x?sslmode=on", Duration::from_secs(1)).await.err().unwrap();
    assert!(matches!(&e, Error::Invalid(m) if m.contains("unknown sslmode") && !m.contains("secret")), "{e:?}");
    let e = PgStore::connect("postgresql://u:secret@127.0.0.1:1/x", Duration::from_secs(1)).await.err().unwrap();
    assert!(matches!(&e, Error::Connection(m) if m.contains("cannot reach") && !m.contains("secret")), "{e:?}");
    // Applying the schema again changes nothing.
    assert_eq!(PgStore::init_schema(&url).await.unwrap(), Vec::<i32>::new());
}

#[tokio::test]
async fn jobs_are_leased_by_priority_then_order_and_complete() {
    let Some(s) = store().await else { return };
    let q = queue("life");
    let jobs = [job("aaaaaaaaaa-1", 0), job("aaaaaaaaaa-2", 5), job("aaaaaaaaaa-3", 0), job("aaaaaaaaaa-4", 5)];
    assert_eq!(s.enqueue(&q, &jobs, None).await.unwrap(), vec![Written::New; 4]);
    assert_eq!(s.status(&q, "aaaaaaaaaa-1").await.unwrap().state, State::Waiting);
    assert_eq!(reserve(&s, &q, "w1.1", 3).await, ["aaaaaaaaaa-2", "aaaaaaaaaa-4", "aaaaaaaaaa-1"]);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.active), (1, 3));
    let done = AckKind::Completed { result: Some(b"{\"x\":1}".to_vec()) };
    let out = ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-2", done), entry("aaaaaaaaaa-4", AckKind::Completed { result: None })]).await;
    assert_eq!((out.completed, out.refused), (2, 0));
    let st = s.status(&q, "aaaaaaaaaa-2").await.unwrap();
    assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"{\"x\":1}"[..])));
    assert_eq!(s.status(&q, "aaaaaaaaaa-4").await.unwrap().data.as_deref(), Some(&b"null"[..]));
    assert_eq!(s.status(&q, "aaaaaaaaaa-9").await.unwrap().state, State::Unknown);
    // An acknowledgement sent again (its first answer lost) counts the same, doing nothing twice.
    let again = ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-2", AckKind::Completed { result: None })]).await;
    assert_eq!((again.completed, again.refused), (1, 0));
    assert_eq!(s.counts(&q).await.unwrap().completed, 2);
    assert_eq!(s.queues().await.unwrap(), ["life"]);
}

async fn rows(s: &PgStore, sql: &'static str) -> i64 {
    s.one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn completions_without_a_result_are_bits_that_read_as_rows_did() {
    let Some(s) = store().await else { return };
    let q = queue("bits");
    let ids: Vec<String> = (1020..1030).map(|i| format!("bbbbbbbbbb-{i}")).collect();
    let jobs: Vec<NewJob> = ids.iter().map(|id| job(id, 0)).collect();
    s.enqueue(&q, &jobs, None).await.unwrap();
    assert_eq!(reserve(&s, &q, "w1.1", 10).await.len(), 10);
    let mut entries: Vec<AckEntry> = ids[..9].iter().map(|id| entry(id, AckKind::Completed { result: None })).collect();
    entries.push(entry(&ids[9], AckKind::Completed { result: Some(b"7".to_vec()) }));
    assert_eq!(ack(&s, &q, "w1.1", entries).await.completed, 10);
    // Nine bits over two blocks (1020-1023, 1024-1028), one row for the job with a result.
    assert_eq!(rows(&s, "SELECT count(*) FROM fastjobs.done").await, 2);
    assert_eq!(rows(&s, "SELECT count(*) FROM fastjobs.results").await, 1);
    for id in &ids[..9] {
        let st = s.status(&q, id).await.unwrap();
        assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"null"[..])), "{id}");
    }
    assert_eq!(s.status(&q, &ids[9]).await.unwrap().data.as_deref(), Some(&b"7"[..]));
    for never in ["bbbbbbbbbb-1019", "bbbbbbbbbb-1030", "bbbbbbbbbb-01020", "cccccccccc-1020"] {
        assert_eq!(s.status(&q, never).await.unwrap().state, State::Unknown, "{never}");
    }
    // Removed, a completed job reads cancelled as before, and its bit is gone.
    let c = s.cancel(&q, &ids[0], true).await.unwrap();
    assert_eq!((c.state, c.done), (State::Completed, true));
    assert_eq!(s.status(&q, &ids[0]).await.unwrap().state, State::Cancelled);
    s.execute("DELETE FROM fastjobs.results", &[]).await.unwrap();
    assert_eq!(s.status(&q, &ids[0]).await.unwrap().state, State::Unknown);
    assert_eq!(s.status(&q, &ids[1]).await.unwrap().state, State::Completed);
    // With the queue's events on, completions keep their rows (the stream is written from them).
    s.set_events(&q, Some(100)).await.unwrap();
    s.enqueue(&q, &[job("bbbbbbbbbb-2000", 0)], None).await.unwrap();
    reserve(&s, &q, "w1.2", 1).await;
    ack(&s, &q, "w1.2", vec![entry("bbbbbbbbbb-2000", AckKind::Completed { result: None })]).await;
    assert_eq!(rows(&s, "SELECT count(*) FROM fastjobs.results").await, 1);
    // Its entries (waiting, active, completed) show once every older transaction has ended:
    // other tests run on the same server meanwhile.
    assert!(events_read_n(&s, &q, (0, 0), 3).await.iter().any(|e| e.kind == "completed"));
    assert_eq!(s.counts(&q).await.unwrap().completed, 11);
    assert!(s.obliterate(&q).await.unwrap() > 0);
    assert_eq!(rows(&s, "SELECT count(*) FROM fastjobs.done").await, 0);
}

#[tokio::test]
async fn a_version_missing_below_the_highest_is_applied_and_the_later_ones_again() {
    let Some(url) = database().await else { return };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // As a database of a line of work that had a version before a lower one landed.
    let missing = schema::MIGRATIONS[schema::MIGRATIONS.len() - 2].0;
    client.execute("DELETE FROM fastjobs.schema_version WHERE version = $1", &[&missing]).await.unwrap();
    let e = PgStore::connect(&url, Duration::from_secs(1)).await.err().unwrap();
    assert!(matches!(&e, Error::Schema(m) if m.contains(&format!("lacks version {missing} "))), "{e:?}");
    assert_eq!(PgStore::init_schema(&url).await.unwrap(), [missing]);
    // The newest definitions stand: a completion without a result is a bit (version 14).
    let s = PgStore::connect(&url, Duration::from_secs(1)).await.unwrap();
    let q = queue("again");
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0)], None).await.unwrap();
    reserve(&s, &q, "w1.1", 1).await;
    ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-1", AckKind::Completed { result: None })]).await;
    assert_eq!(rows(&s, "SELECT count(*) FROM fastjobs.done").await, 1);
}

#[tokio::test]
async fn a_caller_chosen_id_is_taken_once() {
    let Some(s) = store().await else { return };
    let q = queue("ids");
    let mut j = job("order-1", 0);
    j.custom_id = true;
    assert_eq!(s.enqueue(&q, &[j.clone()], None).await.unwrap(), [Written::New]);
    assert_eq!(s.enqueue(&q, &[j.clone()], None).await.unwrap(), [Written::Exists]);
    reserve(&s, &q, "w1.1", 1).await;
    ack(&s, &q, "w1.1", vec![entry("order-1", AckKind::Completed { result: None })]).await;
    // Completed, the id stays taken; removed, it is free again.
    assert_eq!(s.enqueue(&q, &[j.clone()], None).await.unwrap(), [Written::Exists]);
    assert!(s.cancel(&q, "order-1", true).await.unwrap().done);
    assert_eq!(s.enqueue(&q, &[j], None).await.unwrap(), [Written::New]);
}

#[tokio::test]
async fn delayed_jobs_wait_for_tick_and_retries_and_failures_settle() {
    let Some(s) = store().await else { return };
    let q = queue("later");
    let mut far = job("aaaaaaaaaa-1", 0);
    far.delay_us = 3_600_000_000;
    let mut soon = job("aaaaaaaaaa-2", 0);
    soon.delay_us = 1;
    s.enqueue(&q, &[far, soon], None).await.unwrap();
    assert_eq!(s.status(&q, "aaaaaaaaaa-1").await.unwrap().state, State::Delayed);
    let t = s.tick(&q, 100).await.unwrap();
    assert_eq!(t.promoted, 1);
    assert!(t.next_due_us.unwrap() > t.now_us);
    assert_eq!(reserve(&s, &q, "w1.1", 10).await, ["aaaaaaaaaa-2"]);
    let retry =
        AckKind::Retry { delay_ms: 0, record: Record::with_attempt(&record("aaaaaaaaaa-2", 0, 3), 1), error: b"{\"e\":1}".to_vec() };
    assert_eq!(ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-2", retry)]).await.retried, 1);
    assert_eq!(reserve(&s, &q, "w1.2", 10).await, ["aaaaaaaaaa-2"]);
    let fail = AckKind::Failed { error: b"{\"e\":2}".to_vec(), record: Record::with_attempt(&record("aaaaaaaaaa-2", 0, 3), 3) };
    assert_eq!(ack(&s, &q, "w1.2", vec![entry("aaaaaaaaaa-2", fail)]).await.failed, 1);
    let failed = s.failed_list(&q, 10).await.unwrap();
    assert_eq!((failed.len(), failed[0].error.as_deref()), (1, Some(&b"{\"e\":2}"[..])));
    assert!(s.retry_job(&q, "aaaaaaaaaa-2").await.unwrap());
    let back = reserve(&s, &q, "w1.3", 10).await;
    assert_eq!(back, ["aaaaaaaaaa-2"]);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.retried, c.failed, c.delayed, c.active), (1, 0, 1, 1));
}

#[tokio::test]
async fn an_expired_lease_is_reaped_and_its_late_acknowledgement_refused() {
    let Some(s) = store().await else { return };
    let q = queue("reap");
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0), job("aaaaaaaaaa-2", 0)], None).await.unwrap();
    let Reserved::Jobs(_) = s.reserve(&q, "w1.1", 2, &idle(Duration::ZERO)).await.unwrap() else { panic!() };
    assert!(s.start(&q, "w1.1", b"aaaaaaaaaa-1").await.unwrap());
    assert_eq!(s.tick(&q, 100).await.unwrap().reaped, 2);
    let ext = s.extend(&[(q.clone(), vec!["w1.1".into()])], Duration::from_secs(60)).await.unwrap();
    assert_eq!(ext.lost, ["w1.1"]);
    let out = ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-1", AckKind::Completed { result: None })]).await;
    assert_eq!((out.completed, out.refused), (0, 1));
    // Back at the head as orphans, the started one with its run counted.
    let Reserved::Jobs(recs) = s.reserve(&q, "w2.1", 2, &idle(Duration::from_secs(60))).await.unwrap() else { panic!() };
    let r: Vec<Record> = recs.iter().map(|r| Record::unpack(r).unwrap()).collect();
    assert!(recs.iter().all(|r| Record::is_orphan(r)));
    assert_eq!((r[0].id.as_str(), r[0].attempt, r[1].attempt), ("aaaaaaaaaa-1", 1, 0));
    assert_eq!(s.counts(&q).await.unwrap().stalled, 2);
}

#[tokio::test]
async fn released_jobs_go_back_to_the_head_in_order() {
    let Some(s) = store().await else { return };
    let q = queue("rel");
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0), job("aaaaaaaaaa-2", 0), job("aaaaaaaaaa-3", 0)], None).await.unwrap();
    assert_eq!(reserve(&s, &q, "w1.1", 2).await.len(), 2);
    assert_eq!(s.release(&q, "w1.1", &[b"aaaaaaaaaa-1".to_vec(), b"aaaaaaaaaa-2".to_vec()]).await.unwrap(), 2);
    assert_eq!(reserve(&s, &q, "w1.2", 3).await, ["aaaaaaaaaa-1", "aaaaaaaaaa-2", "aaaaaaaaaa-3"]);
}

#[tokio::test]
async fn a_waiter_hears_the_result_and_an_idle_worker_a_new_job() {
    let Some(s) = store().await else { return };
    let s = Arc::new(s);
    let q = queue("wake");
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0)], None).await.unwrap();
    // Leased first: a waiter locks the job's row while it registers, and a reserve passes
    // over a locked row.
    assert_eq!(reserve(&s, &q, "w1.1", 1).await.len(), 1);
    let waiter = tokio::spawn({
        let (s, q) = (s.clone(), q.clone());
        async move { s.wait_result(q, "aaaaaaaaaa-1".into(), None).await }
    });
    // The waiter is registered before the job ends (else its answer was final at once).
    while s.query("SELECT 1 FROM fastjobs.waiters", &[]).await.unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-1", AckKind::Completed { result: Some(b"7".to_vec()) })]).await;
    let st = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!((st.state, st.data.as_deref()), (State::Completed, Some(&b"7"[..])));
    // Nothing ready: the worker goes idle, and a dispatch wakes its wait.
    assert!(matches!(s.reserve(&q, "w1.2", 1, &idle(Duration::from_secs(60))).await.unwrap(), Reserved::Idle { new_slot: true }));
    let waiting = std::thread::spawn({
        let (s, q) = (s.clone(), q.clone());
        move || s.wait_for_work(&[q], "w1", Duration::from_secs(3600))
    });
    s.enqueue(&q, &[job("aaaaaaaaaa-2", 0)], None).await.unwrap();
    assert!(tokio::task::spawn_blocking(move || waiting.join().unwrap()).await.unwrap().unwrap().is_none());
    // Timed out: None.
    let none = s.wait_result(q.clone(), "aaaaaaaaaa-2".into(), Some(Duration::from_millis(1))).await.unwrap();
    assert!(none.is_none());
}

#[tokio::test]
async fn a_job_enqueued_in_a_callers_transaction_exists_once_it_commits() {
    let Some(url) = database().await else { return };
    let s = PgStore::connect(&url, Duration::from_secs(60)).await.unwrap();
    let q = queue("tx");
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let rec = record("order-7", 0, 1);
    let tx = client.transaction().await.unwrap();
    let ok: bool = tx.query_one("SELECT fastjobs.enqueue('tx', 'order-7', $1)", &[&rec]).await.unwrap().get(0);
    assert!(ok);
    tx.rollback().await.unwrap();
    assert_eq!(s.status(&q, "order-7").await.unwrap().state, State::Unknown);
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT fastjobs.enqueue('tx', 'order-7', $1)", &[&rec]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(reserve(&s, &q, "w1.1", 5).await, ["order-7"]);
    // A record built in SQL is the engine's record.
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT fastjobs.enqueue('tx', 'order-8', fastjobs.record('order-8', 'receipt', '[1]', '{\"k\":1}', 3, 2))", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let Reserved::Jobs(recs) = s.reserve(&q, "w1.2", 5, &idle(Duration::from_secs(60))).await.unwrap() else { panic!() };
    let r = Record::unpack(&recs[0]).unwrap();
    assert_eq!((r.id.as_str(), r.name.as_str(), r.max_attempts, r.priority), ("order-8", "receipt", 3, 2));
    assert_eq!((r.options.as_slice(), r.payload.as_slice(), r.attempt), (&b"{\"k\":1}"[..], &b"[1]"[..], 0));
    assert!(r.enqueued_ms > 0);
    let e = client.execute("SELECT fastjobs.record('', 'x', '[]')", &[]).await.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("1 to 255 bytes"), "{e:?}");
}

#[tokio::test]
async fn pause_cancel_and_remove() {
    let Some(s) = store().await else { return };
    let q = queue("ctl");
    assert!(matches!(s.pause(&queue("nope")).await, Err(Error::UnknownQueue(_))));
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0), job("aaaaaaaaaa-2", 0), job("aaaaaaaaaa-3", 0)], None).await.unwrap();
    assert!(s.pause(&q).await.unwrap());
    assert!(matches!(s.reserve(&q, "w1.1", 1, &idle(Duration::from_secs(60))).await.unwrap(), Reserved::Paused));
    assert!(s.counts(&q).await.unwrap().paused);
    assert!(s.resume(&q).await.unwrap());
    assert_eq!(reserve(&s, &q, "w1.1", 1).await, ["aaaaaaaaaa-1"]);
    let c = s.cancel(&q, "aaaaaaaaaa-2", false).await.unwrap();
    assert_eq!((c.state, c.done), (State::Waiting, true));
    assert_eq!(s.status(&q, "aaaaaaaaaa-2").await.unwrap().state, State::Cancelled);
    // A running job: its worker is asked, at its next heartbeat.
    let c = s.cancel(&q, "aaaaaaaaaa-1", false).await.unwrap();
    assert_eq!((c.state, c.done), (State::Active, true));
    assert!(!s.cancel(&q, "aaaaaaaaaa-1", true).await.unwrap().done);
    let ext = s.extend(&[(q.clone(), vec!["w1.1".into()])], Duration::from_secs(60)).await.unwrap();
    assert_eq!(ext.cancel, [(0, b"aaaaaaaaaa-1".to_vec())]);
    assert_eq!(ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-1", AckKind::Cancelled)]).await.cancelled, 1);
    assert_eq!(s.empty_page(&q, 10).await.unwrap().0, 1);
    let c = s.counts(&q).await.unwrap();
    assert_eq!((c.waiting, c.cancelled), (0, 3));
    assert!(s.obliterate(&q).await.unwrap() > 0);
    assert!(s.queues().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_guarded_chunk_written_again_writes_nothing() {
    let Some(s) = store().await else { return };
    let q = queue("bulk");
    let jobs: Vec<NewJob> = (0..100).map(|i| job(&format!("pppppppppp-{i}"), 0)).collect();
    let mark = Watermark { producer: "pppppppppp".into(), last_seq: 99, guard: Some(0) };
    let packed = (jobs, mark);
    s.write_chunk(&q, &packed).await.unwrap();
    s.write_chunk(&q, &packed).await.unwrap();
    assert_eq!(s.counts(&q).await.unwrap().waiting, 100);
    let asked = [("pppppppppp".to_string(), 0), ("pppppppppp".to_string(), 100)];
    assert_eq!(s.chunks_written(&q, &asked).await.unwrap(), [true, false]);
}

#[tokio::test]
async fn workflow_records_flows_and_the_worker_registry() {
    let Some(s) = store().await else { return };
    s.book_set("chain:abc", vec![("step".into(), b"1".to_vec())], Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(s.book_get("chain:abc", vec!["step".into(), "x".into()]).await.unwrap(), [Some(b"1".to_vec()), None]);
    s.book_set("flow:f1", vec![("pending:0".into(), b"2".to_vec()), ("spec:0".into(), b"S".to_vec())], None).await.unwrap();
    let settle = |child: u32| FlowSettle {
        flow_id: "f1".into(),
        child,
        parent: 0,
        failed: false,
        job_id: format!("j{child}"),
        data: b"{}".to_vec(),
        policy: ChildPolicy::FailParent,
    };
    assert_eq!(s.flow_settle(vec![settle(1), settle(1)]).await.unwrap(), [FlowSettled::Wait, FlowSettled::Wait]);
    assert_eq!(s.flow_settle(vec![settle(2)]).await.unwrap(), [FlowSettled::Release(Some(b"S".to_vec()))]);
    assert_eq!(s.flow_results("f1", 0).await.unwrap().len(), 2);
    s.worker_put("w1".into(), b"{}".to_vec()).await.unwrap();
    assert_eq!(s.workers_read().await.unwrap(), [("w1".to_string(), b"{}".to_vec())]);
    assert_eq!(s.workers_remove(vec!["w1".into(), "w2".into()]).await.unwrap(), 1);
}

#[tokio::test]
async fn schedules_fire_once_per_tick() {
    let Some(s) = store().await else { return };
    let w = ScheduleWrite {
        key: "k".into(),
        timing: "every 1s".into(),
        next_ms: 1,
        anchor_ms: 0,
        fields: vec![("name".into(), b"task".to_vec())],
    };
    assert_eq!(s.schedule_upsert(w.clone()).await.unwrap(), (true, 1));
    assert_eq!(s.schedule_upsert(w).await.unwrap(), (false, 1));
    let due = s.schedules_due(10).await.unwrap();
    assert_eq!((due.head_ms, due.due), (Some(1), vec![("k".to_string(), 1)]));
    assert!(s.schedule_advance("k", 1, Some(5), "k@1").await.unwrap());
    assert!(!s.schedule_advance("k", 1, Some(5), "k@1").await.unwrap());
    let read = s.schedule_read(None).await.unwrap();
    assert_eq!((read[0].next_ms, read[0].fields["runs"].as_slice(), read[0].fields["name"].as_slice()), (5, &b"1"[..], &b"task"[..]));
    assert_eq!(s.schedule_remove(Some(vec!["k".into()])).await.unwrap(), 1);
}

#[tokio::test]
async fn progress_logs_and_callback_records() {
    let Some(s) = store().await else { return };
    let q = queue("fb");
    let ttl = Duration::from_secs(60);
    let at = s.feedback(&q, "j1", Feedback::Progress, b"{\"value\":1}", ttl).await.unwrap();
    assert_eq!(s.progress(&q, "j1").await.unwrap().unwrap(), format!("{{\"at\":{at},\"value\":1}}").into_bytes());
    for i in 0..3 {
        s.feedback(&q, "j1", Feedback::Log, format!("{{\"message\":{i}}}").as_bytes(), ttl).await.unwrap();
    }
    assert_eq!(s.logs(&q, "j1", 1, 10).await.unwrap().len(), 2);
    s.callback_record(&q, "j1", vec![("status", b"200".to_vec())]).await.unwrap();
    assert_eq!(s.callback_status(&q, "j1").await.unwrap(), [("status".to_string(), b"200".to_vec())]);
}

#[tokio::test]
async fn a_lost_connection_is_typed_and_reopened() {
    let Some(s) = store().await else { return };
    // The server ends every connection of the store: an operation on one fails as a
    // connection error; the next reopens it.
    let conns: Vec<_> = futures_util::future::join_all((0..4).map(|_| s.pool.get())).await;
    s.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", &[])
        .await
        .unwrap();
    let mut lost = 0;
    for c in conns {
        if let Err(e) = c.unwrap().execute("SELECT 1", &[]).await {
            assert!(matches!(e, Error::Connection(_)), "{e:?}");
            lost += 1;
        }
    }
    assert!(lost >= 3);
    for _ in 0..8 {
        let _ = s.ping().await;
    }
    s.ping().await.unwrap();
}

/// Bulk chunks: the multi-row INSERT ... SELECT unnest that `write_chunk` sends, against a
/// binary COPY into a staging table and one INSERT ... SELECT from it (the guard row in the
/// same transaction). A measurement, not an assertion: `cargo test --lib bulk_write_paths --
/// --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn bulk_write_paths() {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let Some(url) = database().await else { return };
    let s = PgStore::connect(&url, Duration::from_secs(60)).await.unwrap();
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    const N: usize = 20_000;
    let jobs = |p: &str| -> Vec<NewJob> { (0..N).map(|i| job(&format!("{p}-{i}"), 0)).collect() };
    for round in 0..3 {
        let q = queue(&format!("unnest{round}"));
        let chunk = jobs(&format!("u{round}aaaaaaaa"));
        let t = std::time::Instant::now();
        let mark = Watermark { producer: format!("u{round}aaaaaaaa"), last_seq: N as u64, guard: Some(0) };
        s.write_chunk(&q, &(chunk, mark)).await.unwrap();
        let unnest = t.elapsed();

        let chunk = jobs(&format!("c{round}aaaaaaaa"));
        let t = std::time::Instant::now();
        let tx = client.transaction().await.unwrap();
        tx.batch_execute("CREATE TEMP TABLE staging (id text, record bytea) ON COMMIT DROP").await.unwrap();
        tx.execute("INSERT INTO fastjobs.chunks VALUES ($1, $2, 0, 0)", &[&format!("copy{round}"), &format!("c{round}aaaaaaaa")])
            .await
            .unwrap();
        let sink = tx.copy_in("COPY staging (id, record) FROM STDIN BINARY").await.unwrap();
        let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::BYTEA]);
        futures_util::pin_mut!(writer);
        for j in &chunk {
            writer.as_mut().write(&[&j.id, &j.record]).await.unwrap();
        }
        writer.finish().await.unwrap();
        tx.execute(
            "INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, record)
             SELECT $1, id, 'w', fastjobs.record_priority(record), nextval('fastjobs.job_seq'), record FROM staging",
            &[&format!("copy{round}")],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let copy = t.elapsed();
        eprintln!("{N} jobs: INSERT ... SELECT unnest {unnest:?}, binary COPY + INSERT ... SELECT {copy:?}");
    }
}

#[tokio::test]
async fn rows_past_their_time_go_after_a_tick() {
    let Some(s) = store().await else { return };
    let q = queue("sweep");
    s.feedback(&q, "j1", Feedback::Progress, b"{\"value\":1}", Duration::from_secs(60)).await.unwrap();
    s.execute("INSERT INTO fastjobs.progress VALUES ('sweep', 'old', '{}', 0)", &[]).await.unwrap();
    s.execute("INSERT INTO fastjobs.books VALUES ('chain:old', 0)", &[]).await.unwrap();
    s.tick(&q, 100).await.unwrap();
    let left: Vec<String> = s.query("SELECT id FROM fastjobs.progress", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left, ["j1"]);
    assert!(s.query("SELECT 1 FROM fastjobs.books", &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn groups_take_turns_under_their_rate_limit() {
    let Some(s) = store().await else { return };
    let q = queue("grp");
    let grouped = |id: &str, g: &str| NewJob { group: Some(g.into()), ..job(id, 0) };
    let jobs = [grouped("aaaaaaaaaa-1", "a"), grouped("aaaaaaaaaa-2", "a"), grouped("aaaaaaaaaa-3", "b")];
    s.enqueue(&q, &jobs, None).await.unwrap();
    let every = Limits { rate: Some((1, Duration::from_secs(60))), concurrency: None };
    s.set_group_limits(&q, &every).await.unwrap();
    assert_eq!(s.group_limits(&q).await.unwrap(), every);
    let mut got = reserve(&s, &q, "w1.1", 10).await;
    got.sort();
    assert_eq!(got, ["aaaaaaaaaa-1", "aaaaaaaaaa-3"]);
    match s.reserve(&q, "w1.2", 10, &idle(Duration::from_secs(60))).await.unwrap() {
        Reserved::Limited { retry_in: Some(d) } => assert!(d <= Duration::from_secs(60)),
        other => panic!("expected the groups' rate limit, got {other:?}"),
    }
    s.set_group_limits(&q, &Limits::default()).await.unwrap();
    assert_eq!(reserve(&s, &q, "w1.3", 10).await, ["aaaaaaaaaa-2"]);
}

#[tokio::test]
async fn the_turn_of_groups_carries_over_from_one_reserve_to_the_next() {
    let Some(s) = store().await else { return };
    let q = queue("turns");
    let grouped = |id: &str, g: &str| NewJob { group: Some(g.into()), ..job(id, 0) };
    let jobs = [grouped("aaaaaaaaaa-1", "a"), grouped("aaaaaaaaaa-2", "a"), grouped("aaaaaaaaaa-3", "b"), grouped("aaaaaaaaaa-4", "b")];
    s.enqueue(&q, &jobs, None).await.unwrap();
    assert_eq!(reserve(&s, &q, "w1.1", 1).await, ["aaaaaaaaaa-1"]);
    assert_eq!(reserve(&s, &q, "w1.2", 1).await, ["aaaaaaaaaa-3"], "b's turn after a's");
    assert_eq!(reserve(&s, &q, "w1.3", 1).await, ["aaaaaaaaaa-2"]);
}

/// The stream's entries after `after` once there are `n` (or after 10 s): an entry shows when
/// every older transaction on the server ended, other tests' too.
async fn events_read_n(s: &PgStore, q: &PgQueue, after: events::EventPos, n: usize) -> Vec<EventEntry> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = s.events_read(q, after, 100).await.unwrap();
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_events_stream_tells_every_change_once_switched_on() {
    let Some(s) = store().await else { return };
    let q = queue("ev");
    s.set_events(&q, Some(100)).await.unwrap();
    let mut later = job("aaaaaaaaaa-3", 0);
    later.delay_us = 3_600_000_000;
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0), job("aaaaaaaaaa-2", 0), later], None).await.unwrap();
    reserve(&s, &q, "w1.1", 2).await;
    let retry = AckKind::Retry { delay_ms: 0, record: Record::with_attempt(&record("aaaaaaaaaa-2", 0, 3), 1), error: b"{}".to_vec() };
    ack(&s, &q, "w1.1", vec![entry("aaaaaaaaaa-1", AckKind::Completed { result: Some(b"5".to_vec()) }), entry("aaaaaaaaaa-2", retry)])
        .await;
    s.cancel(&q, "aaaaaaaaaa-3", true).await.unwrap();
    let got = events_read_n(&s, &q, (0, 0), 6).await;
    let mut kinds: Vec<(&str, usize)> = got.iter().map(|e| (e.kind.as_str(), e.ids.len())).collect();
    // In the order of the statements; the kinds of one statement (the acknowledgement's) in any.
    kinds[3..5].sort();
    assert_eq!(kinds, [("waiting", 2), ("delayed", 1), ("active", 2), ("completed", 1), ("retrying", 1), ("removed", 1)]);
    assert_eq!(got[0].names.as_ref().unwrap()[0].as_deref(), Some("task"));
    let completed = got.iter().find(|e| e.kind == "completed").unwrap();
    assert_eq!(completed.data.as_ref().unwrap()[0].as_deref(), Some(&b"5"[..]));
    s.set_events(&q, None).await.unwrap();
    assert_eq!(s.events_keep(&q).await.unwrap(), None);
    s.enqueue(&q, &[job("aaaaaaaaaa-4", 0)], None).await.unwrap();
    assert_eq!(s.events_read(&q, got.last().unwrap().pos, 100).await.unwrap().len(), 0, "off: nothing more");
}

/// The stream's order (migration 013): a reader never passes an entry still to commit, and a
/// transaction that took its id before another's, then acted on that one's commit, is told after
/// it (ordered by transaction id alone, the job's `active` would come before its `waiting`).
#[tokio::test]
async fn the_events_stream_is_read_in_the_order_no_commit_goes_behind() {
    let Some(url) = database().await else { return };
    let s = PgStore::connect(&url, Duration::from_secs(60)).await.unwrap();
    let q = queue("evorder");
    s.set_events(&q, Some(100)).await.unwrap();
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let early = client.transaction().await.unwrap();
    early.execute("SELECT pg_current_xact_id()", &[]).await.unwrap(); // its id taken now
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0)], None).await.unwrap(); // a younger transaction, committed
    assert!(s.events_read(&q, (0, 0), 100).await.unwrap().is_empty(), "held back while the older one is open");
    early.execute("SELECT fastjobs.reserve('evorder', 'w1.1', 10, 30000)", &[]).await.unwrap();
    early.commit().await.unwrap();
    let got = events_read_n(&s, &q, (0, 0), 2).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["waiting", "active"]);
    assert_eq!(got[1].worker.as_deref(), Some("w1"));
    let rest: Vec<String> = s.events_read(&q, got[0].pos, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(rest, ["active"], "resumes after an entry");
    assert_eq!(s.events_last(&q).await.unwrap(), Some(got[1].pos));
    // Trimmed in the same order: the newest `keep` stay.
    s.set_events(&q, Some(1)).await.unwrap();
    let trimmed: i64 = s.query("SELECT fastjobs.events_trim('evorder')", &[]).await.unwrap()[0].get(0);
    assert_eq!(trimmed, 1);
    let kept: Vec<String> = s.events_read(&q, (0, 0), 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kept, ["active"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_go_on_after_the_listening_connection_is_cut() {
    let Some(s) = store().await else { return };
    let s = Arc::new(s);
    let q = queue("relisten");
    let listener = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND state = 'idle'";
    let old: i32 = s.one(listener, &[]).await.unwrap().get(0);
    s.execute("SELECT pg_terminate_backend($1)", &[&old]).await.unwrap();
    // Reopened by the store, listening again.
    loop {
        let pids: Vec<i32> = s.query(listener, &[]).await.map(|rows| rows.iter().map(|r| r.get(0)).collect()).unwrap_or_default();
        if !pids.is_empty() && !pids.contains(&old) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(s.reserve(&q, "w1.1", 1, &idle(Duration::from_secs(60))).await.unwrap(), Reserved::Idle { .. }));
    let waiting = std::thread::spawn({
        let (s, q) = (s.clone(), q.clone());
        move || s.wait_for_work(&[q], "w1", Duration::from_secs(3600))
    });
    s.enqueue(&q, &[job("aaaaaaaaaa-1", 0)], None).await.unwrap();
    assert!(tokio::task::spawn_blocking(move || waiting.join().unwrap()).await.unwrap().unwrap().is_none());
}

//! The PostgreSQL store: one table of jobs keyed by (queue, id) holding the packed record,
//! every state change one statement calling a function of the schema (migrations/*.sql, the
//! counterparts of rust/lua/*.lua), wake-ups over LISTEN/NOTIFY (listen.rs).
//!
//! The events stream is written by the schema's triggers (migrations/008_events.sql, 013) and
//! read in commit order by `events_read` (events.rs); connections and their time limits are
//! pool.rs, TLS tls.rs.

mod bulk;
mod columns;
mod events;
mod listen;
mod pool;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testserver;
mod tls;
#[cfg(test)]
mod tls_tests;
mod txn;

use crate::error::{Error, Result};
use crate::record::{options_group, Record};
use crate::store::chunk::Chunk;
use crate::store::*;
use columns::{dedup_columns, limit_columns, schedule_entry, AckColumns, Column};
pub use events::EventEntry;
use events::EVENTS_KEEP;
use listen::{Signals, CONTROL, RESULTS, SCHED, SCHEDULES, WAKE};
use pool::{parse_url, Pool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;
pub use txn::{EnqueueArgs, ENQUEUE_SQL};

/// How long connecting and a statement's answer may take (the client's `connect_timeout` and
/// `response_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Default for Timeouts {
    /// The client's defaults (`Settings::new`).
    fn default() -> Timeouts {
        Timeouts { connect: pool::DEFAULT_CONNECT_TIMEOUT, response: Duration::from_secs(30) }
    }
}

/// The settings of `url`, with the connect timeout given unless the URL has one.
fn parse_url_timed(url: &str, timeouts: Timeouts) -> Result<pool::Endpoint> {
    let mut endpoint = parse_url(url)?;
    if endpoint.config.get_connect_timeout().is_none() {
        endpoint.config.connect_timeout(timeouts.connect);
    }
    Ok(endpoint)
}

/// How long a job's end is remembered (its status, a caller-chosen id kept from reuse), as
/// the Redis store's completion marks.
const MARK_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

pub struct PgStore {
    pool: Pool,
    signals: Arc<Signals>,
    listener: tokio::task::JoinHandle<()>,
    result_ttl: Duration,
    /// When each queue's rows past their time were last deleted (`fastjobs.housekeep`).
    swept: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The bulk path's connection (binary COPY in a transaction of its own), one chunk at a time.
    bulk: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A queue of the PostgreSQL store: its name is its key in every table.
#[derive(Debug)]
pub struct PgQueue {
    name: String,
}

impl QueueHandle for PgQueue {
    fn name(&self) -> &str {
        &self.name
    }
}

impl PgStore {
    /// Connects to `url` (`postgresql://` or `postgres://`) and checks that the database has
    /// the schema (`init_schema`); results are kept `result_ttl`; the default timeouts.
    pub async fn connect(url: &str, result_ttl: Duration) -> Result<PgStore> {
        PgStore::connect_with(url, result_ttl, Timeouts::default()).await
    }

    /// `connect`, with the timeouts given (a `connect_timeout` in the URL wins).
    pub async fn connect_with(url: &str, result_ttl: Duration, timeouts: Timeouts) -> Result<PgStore> {
        let endpoint = parse_url_timed(url, timeouts)?;
        let pool = Pool::new(endpoint.clone(), pool::mask_url(url), timeouts.response);
        let conn = pool.get().await?;
        pool::within(timeouts.response, &pool.server, schema::check(&conn.client, &pool.server)).await?;
        pool.open_all().await?;
        let signals = Arc::new(Signals::default());
        let ready = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(listen::listen(endpoint, timeouts.response, signals.clone(), ready.clone()));
        // Listening before the first operation, so that no wake-up it causes is missed.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.notified()).await;
        Ok(PgStore { pool, signals, listener, result_ttl, swept: Default::default(), bulk: Default::default() })
    }

    /// Creates or upgrades the schema (`fastjobs db init`); returns the versions applied.
    pub async fn init_schema(url: &str) -> Result<Vec<i32>> {
        let endpoint = parse_url_timed(url, Timeouts::default())?;
        let server: Arc<str> = pool::mask_url(url).into();
        let mut client = listen::plain(&endpoint, &server).await?;
        schema::init(&mut client, &server).await
    }

    /// Ok when `url` reaches a database with the schema this build needs; one connection of
    /// its own, closed after (a worker's check before it starts).
    pub async fn check(url: &str) -> Result<()> {
        let endpoint = parse_url_timed(url, Timeouts::default())?;
        let server: Arc<str> = pool::mask_url(url).into();
        let client = listen::plain(&endpoint, &server).await?;
        schema::check(&client, &server).await
    }

    fn result_ttl_ms(&self) -> i64 {
        self.result_ttl.as_millis() as i64
    }

    async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>> {
        self.pool.get().await?.query(sql, params).await
    }

    async fn one(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<tokio_postgres::Row> {
        self.pool.get().await?.one(sql, params).await
    }

    async fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.pool.get().await?.execute(sql, params).await
    }

    /// Writes jobs of one queue in one statement (guarded: a chunk written already writes
    /// nothing and answers `New` for each).
    async fn write_jobs(&self, q: &str, jobs: &[NewJob], mark: Option<&Watermark>) -> Result<Vec<Written>> {
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let recs: Vec<&[u8]> = jobs.iter().map(|j| j.record.as_slice()).collect();
        let customs: Vec<bool> = jobs.iter().map(|j| j.custom_id).collect();
        let delays: Vec<i64> = jobs.iter().map(|j| j.delay_us as i64).collect();
        let ats: Vec<Option<i64>> = jobs.iter().map(|j| j.at_us.map(|a| a as i64)).collect();
        let guard = mark.and_then(|m| m.guard).map(|g| g as i64);
        let producer = mark.map(|m| m.producer.as_str());
        let (dkeys, dmodes) = dedup_columns(jobs);
        let grps: Column<&str> = jobs.iter().any(|j| j.group.is_some()).then(|| jobs.iter().map(|j| j.group.as_deref()).collect());
        let ttl = self.result_ttl_ms().max(MARK_TTL_MS);
        let row = self
            .one(
                "SELECT fastjobs.enqueue_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[&q, &ids, &recs, &customs, &delays, &ats, &producer, &guard, &dkeys, &dmodes, &ttl, &grps],
            )
            .await?;
        let written: Option<Vec<String>> = row.get(0);
        Ok(match written {
            None => vec![Written::New; jobs.len()],
            Some(w) => w
                .into_iter()
                .map(|a| match a.as_bytes().first() {
                    Some(b'n') => Written::New,
                    Some(b'd') => Written::Deduplicated(a[1..].to_string()),
                    _ => Written::Exists,
                })
                .collect(),
        })
    }

    /// Deletes a page of the queue's rows past their time, at most once a minute per queue.
    async fn housekeep(&self, q: &PgQueue, limit: usize) -> Result<()> {
        let due = {
            let mut swept = self.swept.lock().unwrap();
            let now = std::time::Instant::now();
            let due = swept.get(&q.name).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
            if due {
                swept.insert(q.name.clone(), now);
            }
            due
        };
        if due {
            self.execute("SELECT fastjobs.housekeep($1, $2), fastjobs.events_trim($1)", &[&q.name, &(limit.max(1) as i32)]).await?;
        }
        Ok(())
    }

    /// A queue's limits, or its groups', as `sql` selects them (jobs per window, window ms,
    /// concurrency).
    async fn read_limits(&self, sql: &'static str, q: &PgQueue) -> Result<Limits> {
        let rows = self.query(sql, &[&q.name]).await?;
        let Some(r) = rows.first() else { return Ok(Limits::default()) };
        let (rate_max, period, conc): (Option<i64>, Option<i64>, Option<i64>) = (r.get(0), r.get(1), r.get(2));
        let rate = rate_max.zip(period).map(|(n, p)| (n as u64, Duration::from_millis(p as u64)));
        Ok(Limits { rate, concurrency: conc.map(|c| c as u64) })
    }

    async fn status_row(&self, sql: &'static str, q: &str, id: &str) -> Result<Status> {
        let row = self.one(sql, &[&q, &id]).await?;
        let state: String = row.get(0);
        Ok(Status { state: State::parse(&state), record: row.get(1), data: row.get(2), progress: None, callback: vec![] })
    }

    async fn set_paused(&self, q: &PgQueue, paused: bool) -> Result<bool> {
        self.known_queue(q).await?;
        let row = self
            .one(
                "WITH old AS (SELECT paused FROM fastjobs.queues WHERE name = $1 FOR UPDATE),
                      upd AS (UPDATE fastjobs.queues SET paused = $2 WHERE name = $1)
                 SELECT (SELECT paused FROM old) IS DISTINCT FROM $2, pg_notify('fastjobs_control', $1)::text",
                &[&q.name, &paused],
            )
            .await?;
        Ok(row.get(0))
    }
}

impl Store for PgStore {
    type Queue = PgQueue;
    type Packed = (Vec<NewJob>, Watermark);

    fn queue(&self, name: &str) -> Result<Arc<PgQueue>> {
        validate_queue_name(name)?;
        Ok(Arc::new(PgQueue { name: name.to_string() }))
    }

    /// `UnknownQueue` unless something dispatched to or consumed the queue.
    async fn known_queue(&self, q: &PgQueue) -> Result<()> {
        let rows = self.query("SELECT 1 FROM fastjobs.queues WHERE name = $1", &[&q.name]).await?;
        if !rows.is_empty() {
            return Ok(());
        }
        let names = self.queues().await?;
        let listed = if names.is_empty() { "none yet".to_string() } else { names.join(", ") };
        Err(Error::UnknownQueue(format!("no job was ever dispatched to queue '{}' and no worker consumes it (queues: {listed})", q.name)))
    }

    async fn enqueue(&self, q: &PgQueue, jobs: &[NewJob], mark: Option<&Watermark>) -> Result<Vec<Written>> {
        self.write_jobs(&q.name, jobs, mark).await
    }

    fn pack_chunk(&self, _q: &PgQueue, chunk: &Chunk) -> Self::Packed {
        chunk.pack()
    }

    async fn write_chunk(&self, q: &PgQueue, packed: &Self::Packed) -> Result<()> {
        let (jobs, mark) = packed;
        // Jobs that are alike (a chunk's are) and plain go by COPY; anything else by `write_jobs`.
        let alike = jobs.first().is_some_and(|f| jobs.iter().all(|j| j.delay_us == f.delay_us && j.at_us == f.at_us));
        let plain = jobs.iter().all(|j| !j.custom_id && j.dedup.is_none() && j.group.is_none())
            && jobs
                .first()
                .and_then(|j| Record::unpack(&j.record).ok())
                .is_some_and(|r| options_group(&r.options).ok().flatten().is_none());
        match mark.guard {
            Some(guard) if alike && plain => self.copy_chunk(&q.name, jobs, mark, guard).await,
            _ => self.write_jobs(&q.name, jobs, Some(mark)).await.map(|_| ()),
        }
    }

    async fn chunks_written(&self, q: &PgQueue, chunks: &[(String, u64)]) -> Result<Vec<bool>> {
        let producers: Vec<&str> = chunks.iter().map(|c| c.0.as_str()).collect();
        let firsts: Vec<i64> = chunks.iter().map(|c| c.1 as i64).collect();
        let row = self
            .one(
                "SELECT coalesce(array_agg(c.first_seq IS NOT NULL ORDER BY e.ord), '{}') FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS e(producer, first_seq, ord)
                 LEFT JOIN fastjobs.chunks c ON c.queue = $1 AND c.producer = e.producer AND c.first_seq = e.first_seq",
                &[&q.name, &producers, &firsts],
            )
            .await?;
        Ok(row.get(0))
    }

    fn enqueue_parts_blocking(&self, parts: &[Part<'_, PgQueue>]) -> Result<Vec<Result<Vec<Written>>>> {
        let write = async {
            let calls = parts.iter().map(|p| self.write_jobs(&p.q.name, p.jobs, p.mark));
            futures_util::future::join_all(calls).await
        };
        Ok(crate::runtime::runtime().block_on(write))
    }

    async fn reserve(&self, q: &PgQueue, token: &str, max: usize, idle: &Idle<'_>) -> Result<Reserved> {
        self.signals.looking(idle.worker, &q.name);
        if max == 0 {
            return Ok(Reserved::Empty);
        }
        let lease_ms = idle.lease.as_millis() as i64;
        let row =
            self.one("SELECT recs, wait_ms FROM fastjobs.reserve($1, $2, $3, $4)", &[&q.name, &token, &(max as i32), &lease_ms]).await?;
        let (recs, wait_ms): (Option<Vec<Vec<u8>>>, Option<i64>) = (row.get(0), row.get(1));
        Ok(match (recs, wait_ms) {
            (None, _) => Reserved::Paused,
            (Some(_), Some(ms)) => Reserved::Limited { retry_in: (ms >= 0).then(|| Duration::from_millis(ms as u64)) },
            (Some(r), None) if !r.is_empty() => Reserved::Jobs(r),
            (Some(_), None) if idle.register && !idle.worker.is_empty() => Reserved::Idle { new_slot: idle.previous.is_none() },
            (Some(_), None) => Reserved::Empty,
        })
    }

    async fn ack(&self, acks: &[LeaseAck<PgQueue>]) -> Result<Vec<AckOutcome>> {
        let conn = self.pool.get().await?;
        let (ttl, mark) = (self.result_ttl_ms(), MARK_TTL_MS);
        let calls = acks.iter().map(|a| {
            let conn = conn.clone();
            async move {
                let c = AckColumns::of(&a.entries);
                let (kinds, ids, results, delays, recs, errors) = (&c.kinds, &c.ids, &c.results, &c.delays, &c.recs, &c.errors);
                let row = conn
                    .one(
                        "SELECT fastjobs.ack($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        &[&a.queue.name, &a.token, kinds, ids, results, delays, recs, errors, &ttl, &mark],
                    )
                    .await?;
                let v: Vec<i64> = row.get(0);
                let n = |i: usize| v.get(i).copied().unwrap_or(0) as u64;
                Ok::<_, Error>(AckOutcome { completed: n(0), retried: n(1), failed: n(2), refused: n(3), cancelled: n(4) })
            }
        });
        futures_util::future::try_join_all(calls).await
    }

    async fn start(&self, q: &PgQueue, token: &str, id: &[u8]) -> Result<bool> {
        let id = String::from_utf8_lossy(id);
        let n = self
            .execute(
                "UPDATE fastjobs.jobs SET started_ms = fastjobs.now_us() / 1000 WHERE queue = $1 AND id = $2 AND state = 'a' AND token = $3",
                &[&q.name, &id.as_ref(), &token],
            )
            .await?;
        Ok(n == 1)
    }

    async fn release(&self, q: &PgQueue, token: &str, ids: &[Vec<u8>]) -> Result<u64> {
        let ids: Vec<String> = ids.iter().map(|i| String::from_utf8_lossy(i).into_owned()).collect();
        let row = self.one("SELECT fastjobs.release($1, $2, $3, $4)", &[&q.name, &token, &ids, &MARK_TTL_MS]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn extend(&self, leases: &[(Arc<PgQueue>, Vec<String>)], lease: Duration) -> Result<Extended> {
        let mut out = Extended::default();
        let lease_ms = lease.as_millis() as i64;
        for (i, (q, tokens)) in leases.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let rows = self
                .query(
                    "WITH live AS (UPDATE fastjobs.leases SET deadline_ms = fastjobs.now_us() / 1000 + $3
                                   WHERE queue = $1 AND token = ANY($2) RETURNING token)
                     SELECT 'lost', t FROM unnest($2::text[]) AS t
                       WHERE t NOT IN (SELECT token FROM live) AND EXISTS (SELECT 1 FROM fastjobs.reaped r WHERE r.queue = $1 AND r.token = t)
                     UNION ALL
                     SELECT 'cancel', j.id FROM fastjobs.jobs j
                       WHERE j.queue = $1 AND j.state = 'a' AND j.cancel_asked AND j.token IN (SELECT token FROM live)",
                    &[&q.name, tokens, &lease_ms],
                )
                .await?;
            for r in rows {
                let (what, v): (&str, String) = (r.get(0), r.get(1));
                if what == "lost" {
                    out.lost.push(v);
                } else {
                    out.cancel.push((i, v.into_bytes()));
                }
            }
        }
        Ok(out)
    }

    async fn expire_worker(&self, q: &PgQueue, worker: &str, most: usize) -> Result<Expired> {
        let pattern = format!("{}.%", worker.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let row = self
            .one(
                "WITH l AS (UPDATE fastjobs.leases SET deadline_ms = 0 WHERE queue = $1 AND token LIKE $2 RETURNING token),
                      j AS (SELECT id, started_ms, seq FROM fastjobs.jobs WHERE queue = $1 AND state = 'a' AND token IN (SELECT token FROM l))
                 SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM j),
                        coalesce((SELECT array_agg(id) FROM (SELECT id FROM j ORDER BY seq LIMIT $3) s), '{}'),
                        coalesce((SELECT array_agg(id) FROM j WHERE started_ms IS NOT NULL), '{}')",
                &[&q.name, &pattern, &(most as i64)],
            )
            .await?;
        Ok(Expired { leases: row.get::<_, i64>(0) as u64, held: row.get::<_, i64>(1) as u64, ids: row.get(2), started: row.get(3) })
    }

    async fn tick(&self, q: &PgQueue, limit: usize) -> Result<Tick> {
        let row = self.one("SELECT fastjobs.tick($1, $2, $3)", &[&q.name, &(limit.max(1) as i32), &MARK_TTL_MS]).await?;
        self.housekeep(q, limit).await?;
        let v: Vec<i64> = row.get(0);
        let opt = |x: i64| if x < 0 { None } else { Some(x) };
        Ok(Tick {
            promoted: v[0] as u64,
            reaped: v[1] as u64,
            next_due_us: opt(v[2]),
            next_lease_deadline_ms: opt(v[3]),
            now_ms: v[4],
            now_us: v[5],
        })
    }

    fn wait_for_work(&self, queues: &[Arc<PgQueue>], worker: &str, timeout: Duration) -> Result<Option<Handed>> {
        let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        self.signals.wait(&names, worker, timeout);
        Ok(None)
    }

    fn ready_signal(&self, q: &PgQueue) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.signals.signal(WAKE, &q.name))
    }

    async fn nudge(&self, _q: &PgQueue, worker: &str) -> Result<()> {
        self.signals.nudge(worker);
        Ok(())
    }

    async fn leave(&self, _q: &PgQueue, worker: &str, _slot: Option<&str>) -> Result<u64> {
        // No job is ever handed to an idle worker here: nothing to put back.
        self.signals.nudge(worker);
        Ok(0)
    }

    async fn status(&self, q: &PgQueue, id: &str) -> Result<Status> {
        self.status_row("SELECT state, record, data FROM fastjobs.status($1, $2)", &q.name, id).await
    }

    async fn info(&self, q: &PgQueue, id: &str) -> Result<Status> {
        let mut s = self.status(q, id).await?;
        s.progress = self.progress(q, id).await?;
        s.callback = self.callback_status(q, id).await?;
        Ok(s)
    }

    async fn feedback(&self, q: &PgQueue, id: &str, kind: Feedback, entry: &[u8], ttl: Duration) -> Result<i64> {
        if entry.len() > MAX_FEEDBACK_BYTES || entry.first() != Some(&b'{') {
            return Err(Error::Invalid(format!("a progress or log entry is a JSON object of at most {MAX_FEEDBACK_BYTES} bytes")));
        }
        let ttl_ms = ttl.as_millis() as i64;
        let rest = &entry[1..];
        let sql = match kind {
            Feedback::Progress => {
                "WITH t AS (SELECT fastjobs.now_us() / 1000 AS now_ms)
                 INSERT INTO fastjobs.progress SELECT $1, $2, convert_to('{\"at\":' || now_ms || ',', 'UTF8') || $3, now_ms + $4 FROM t
                 ON CONFLICT (queue, id) DO UPDATE SET entry = excluded.entry, expires_ms = excluded.expires_ms
                 RETURNING expires_ms - $4"
            }
            Feedback::Log => {
                "WITH t AS (SELECT fastjobs.now_us() / 1000 AS now_ms),
                      kept AS (UPDATE fastjobs.logs SET expires_ms = (SELECT now_ms FROM t) + $4 WHERE queue = $1 AND id = $2),
                      trim AS (DELETE FROM fastjobs.logs WHERE queue = $1 AND id = $2 AND seq <= (
                        SELECT seq FROM fastjobs.logs WHERE queue = $1 AND id = $2 ORDER BY seq DESC OFFSET $5::bigint - 1 LIMIT 1))
                 INSERT INTO fastjobs.logs (queue, id, entry, expires_ms)
                 SELECT $1, $2, convert_to('{\"at\":' || now_ms || ',', 'UTF8') || $3, now_ms + $4 FROM t
                 RETURNING expires_ms - $4"
            }
        };
        let row = match kind {
            Feedback::Progress => self.one(sql, &[&q.name, &id, &rest, &ttl_ms]).await?,
            Feedback::Log => self.one(sql, &[&q.name, &id, &rest, &ttl_ms, &(MAX_LOG_LINES as i64)]).await?,
        };
        Ok(row.get(0))
    }

    async fn set_events(&self, q: &PgQueue, keep: Option<u64>) -> Result<()> {
        let keep = keep.map(|k| if k == 0 { EVENTS_KEEP } else { k } as i64);
        self.execute("SELECT fastjobs.set_events($1, $2)", &[&q.name, &keep]).await.map(|_| ())
    }

    async fn events_keep(&self, q: &PgQueue) -> Result<Option<u64>> {
        let rows = self.query("SELECT events_keep FROM fastjobs.queues WHERE name = $1", &[&q.name]).await?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)).map(|k| k as u64))
    }

    async fn progress(&self, q: &PgQueue, id: &str) -> Result<Option<Vec<u8>>> {
        let rows = self
            .query(
                "SELECT entry FROM fastjobs.progress WHERE queue = $1 AND id = $2 AND expires_ms > fastjobs.now_us() / 1000",
                &[&q.name, &id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn logs(&self, q: &PgQueue, id: &str, start: usize, limit: usize) -> Result<Vec<Vec<u8>>> {
        let rows = self
            .query(
                "SELECT entry FROM fastjobs.logs WHERE queue = $1 AND id = $2 AND expires_ms > fastjobs.now_us() / 1000
                 ORDER BY seq OFFSET $3 LIMIT $4",
                &[&q.name, &id, &(start as i64), &(limit as i64)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn callback_record(&self, q: &PgQueue, id: &str, fields: Vec<(&'static str, Vec<u8>)>) -> Result<()> {
        let (names, values): (Vec<&str>, Vec<Vec<u8>>) = fields.into_iter().unzip();
        let ttl = self.result_ttl_ms();
        self.execute(
            "INSERT INTO fastjobs.callbacks SELECT $1, $2, f.field, f.value, fastjobs.now_us() / 1000 + $5
             FROM unnest($3::text[], $4::bytea[]) AS f(field, value)
             ON CONFLICT (queue, id, field) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms",
            &[&q.name, &id, &names, &values, &ttl],
        )
        .await
        .map(|_| ())
    }

    async fn callback_status(&self, q: &PgQueue, id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .query(
                "SELECT field, value FROM fastjobs.callbacks WHERE queue = $1 AND id = $2 AND expires_ms > fastjobs.now_us() / 1000 ORDER BY field",
                &[&q.name, &id],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn wait_result(&self, q: Arc<PgQueue>, id: String, timeout: Option<Duration>) -> Result<Option<Status>> {
        let payload = format!("{}\n{id}", q.name);
        let signal = self.signals.signal(RESULTS, &payload);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let outcome = async {
            loop {
                let notified = signal.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let s = self.status_row("SELECT state, record, data FROM fastjobs.wait($1, $2)", &q.name, &id).await?;
                if s.state.is_final() || s.state == State::Unknown {
                    return Ok(Some(s));
                }
                let woke = match deadline {
                    Some(d) => tokio::time::timeout_at(d, notified).await.is_ok(),
                    None => {
                        notified.await;
                        true
                    }
                };
                if !woke {
                    self.execute("SELECT fastjobs.unwait($1, $2)", &[&q.name, &id]).await?;
                    return Ok(None);
                }
            }
        }
        .await;
        self.signals.drop_signal(RESULTS, &payload, signal);
        outcome
    }

    async fn counts(&self, q: &PgQueue) -> Result<Counts> {
        let row = self
            .one(
                "SELECT count(*) FILTER (WHERE j.state = 'w'), count(*) FILTER (WHERE j.state = 'd'),
                        count(*) FILTER (WHERE j.state = 'a'), count(*) FILTER (WHERE j.state = 'f'),
                        coalesce(max(qu.completed), 0), coalesce(max(qu.retried), 0), coalesce(max(qu.stalled), 0),
                        coalesce(bool_or(qu.paused), false), coalesce(max(qu.cancelled), 0)
                 FROM (SELECT $1::text AS name) n LEFT JOIN fastjobs.queues qu ON qu.name = n.name
                 LEFT JOIN fastjobs.jobs j ON j.queue = n.name",
                &[&q.name],
            )
            .await?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(Counts {
            paused: row.get(7),
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

    async fn pause(&self, q: &PgQueue) -> Result<bool> {
        self.set_paused(q, true).await
    }

    async fn resume(&self, q: &PgQueue) -> Result<bool> {
        self.set_paused(q, false).await
    }

    async fn control_signal(&self, q: &PgQueue) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.signals.signal(CONTROL, &q.name))
    }

    async fn register_queues(&self, names: &[&str]) -> Result<()> {
        let names: Vec<&str> = names.to_vec();
        self.execute("INSERT INTO fastjobs.queues (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", &[&names]).await.map(|_| ())
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let rows = self.query("SELECT name FROM fastjobs.queues ORDER BY name", &[]).await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn cancel(&self, q: &PgQueue, id: &str, remove: bool) -> Result<CancelReply> {
        let row =
            self.one("SELECT state, record, done FROM fastjobs.cancel($1, $2, $3, $4)", &[&q.name, &id, &remove, &MARK_TTL_MS]).await?;
        let state: String = row.get(0);
        Ok(CancelReply { state: State::parse(&state), record: row.get(1), done: row.get(2) })
    }

    async fn set_limits(&self, q: &PgQueue, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        let (rate_max, period, conc) = limit_columns(limits);
        self.execute("SELECT fastjobs.set_limits($1, $2, $3, $4)", &[&q.name, &rate_max, &period, &conc]).await.map(|_| ())
    }

    async fn limits(&self, q: &PgQueue) -> Result<Limits> {
        self.read_limits("SELECT rate_max, rate_period_ms, concurrency FROM fastjobs.queues WHERE name = $1", q).await
    }

    async fn set_group_limits(&self, q: &PgQueue, limits: &Limits) -> Result<()> {
        self.known_queue(q).await?;
        let (rate_max, period, conc) = limit_columns(limits);
        self.execute("SELECT fastjobs.set_group_limits($1, $2, $3, $4)", &[&q.name, &rate_max, &period, &conc]).await.map(|_| ())
    }

    async fn group_limits(&self, q: &PgQueue) -> Result<Limits> {
        self.read_limits("SELECT g_rate_max, g_rate_period_ms, g_concurrency FROM fastjobs.queues WHERE name = $1", q).await
    }

    async fn retry_job(&self, q: &PgQueue, id: &str) -> Result<bool> {
        let row = self.one("SELECT fastjobs.failed_retry($1, $2)", &[&q.name, &id]).await?;
        Ok(row.get::<_, i64>(0) == 1)
    }

    async fn empty_page(&self, q: &PgQueue, max: usize) -> Result<(u64, Vec<Vec<u8>>)> {
        let row = self.one("SELECT fastjobs.empty_page($1, $2, $3)", &[&q.name, &(max as i32), &MARK_TTL_MS]).await?;
        let recs: Vec<Vec<u8>> = row.get(0);
        let n = recs.len() as u64;
        // The records that carry options (chain and flow steps among them).
        let with_options = recs.into_iter().filter(|r| Record::unpack(r).map(|rec| !rec.options.is_empty()).unwrap_or(false)).collect();
        Ok((n, with_options))
    }

    async fn obliterate(&self, q: &PgQueue) -> Result<u64> {
        let row = self.one("SELECT fastjobs.obliterate($1)", &[&q.name]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn failed_list(&self, q: &PgQueue, limit: usize) -> Result<Vec<FailedJob>> {
        let rows = self
            .query(
                "SELECT id, record, error, failed_ms FROM fastjobs.jobs WHERE queue = $1 AND state = 'f' ORDER BY failed_ms, id LIMIT $2",
                &[&q.name, &(limit.max(1) as i64)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| FailedJob { id: r.get(0), record: r.get(1), error: r.get(2), failed_at_ms: r.get(3) }).collect())
    }

    async fn failed_retry(&self, q: &PgQueue) -> Result<u64> {
        let row = self.one("SELECT fastjobs.failed_retry($1)", &[&q.name]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn failed_purge(&self, q: &PgQueue) -> Result<u64> {
        self.execute("DELETE FROM fastjobs.jobs WHERE queue = $1 AND state = 'f'", &[&q.name]).await
    }

    async fn schedule_signal(&self, q: &PgQueue) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.signals.signal(SCHED, &q.name))
    }

    async fn schedule_upsert(&self, w: ScheduleWrite) -> Result<(bool, i64)> {
        let (names, values): (Vec<String>, Vec<Vec<u8>>) = w.fields.into_iter().unzip();
        let row = self
            .one(
                "SELECT created, next_ms FROM fastjobs.schedule_upsert($1, $2, $3, $4, $5, $6)",
                &[&w.key, &w.timing, &w.next_ms, &w.anchor_ms, &names, &values],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    async fn schedule_read(&self, keys: Option<Vec<String>>) -> Result<Vec<ScheduleEntry>> {
        let rows = self
            .query(
                "SELECT key, next_ms, timing, anchor_ms, created_ms, updated_ms, runs, last_run_ms, last_job_id, names, vals
                 FROM fastjobs.schedules WHERE $1::text[] IS NULL OR key = ANY($1) ORDER BY next_ms, key",
                &[&keys],
            )
            .await?;
        Ok(rows.into_iter().map(schedule_entry).collect())
    }

    async fn schedule_remove(&self, keys: Option<Vec<String>>) -> Result<u64> {
        self.execute("DELETE FROM fastjobs.schedules WHERE $1::text[] IS NULL OR key = ANY($1)", &[&keys]).await
    }

    async fn schedules_due(&self, limit: usize) -> Result<DueSchedules> {
        let row = self
            .one(
                "SELECT fastjobs.now_us() / 1000, (SELECT min(next_ms) FROM fastjobs.schedules),
                        coalesce((SELECT array_agg(key ORDER BY next_ms, key) FROM (SELECT key, next_ms FROM fastjobs.schedules
                          WHERE next_ms <= fastjobs.now_us() / 1000 ORDER BY next_ms, key LIMIT $1) d), '{}'),
                        coalesce((SELECT array_agg(next_ms ORDER BY next_ms, key) FROM (SELECT key, next_ms FROM fastjobs.schedules
                          WHERE next_ms <= fastjobs.now_us() / 1000 ORDER BY next_ms, key LIMIT $1) d), '{}')",
                &[&(limit.max(1) as i64)],
            )
            .await?;
        let (keys, ticks): (Vec<String>, Vec<i64>) = (row.get(2), row.get(3));
        Ok(DueSchedules { now_ms: row.get(0), head_ms: row.get(1), due: keys.into_iter().zip(ticks).collect() })
    }

    async fn schedule_advance(&self, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> Result<bool> {
        let row = self.one("SELECT fastjobs.schedule_advance($1, $2, $3, $4)", &[&key, &tick_ms, &next_ms.unwrap_or(-1), &job_id]).await?;
        Ok(row.get(0))
    }

    async fn schedules_signal(&self) -> Result<Arc<tokio::sync::Notify>> {
        Ok(self.signals.signal(SCHEDULES, ""))
    }

    /// Fields of a workflow's bookkeeping record ("chain:<id>" or "flow:<id>"); None for a
    /// missing field or record (or one past its time to live).
    async fn book_get(&self, book: &str, fields: Vec<String>) -> Result<Vec<Option<Vec<u8>>>> {
        check_book(book)?;
        let rows = self
            .query(
                "SELECT f.field, f.value FROM fastjobs.book_fields f JOIN fastjobs.books b USING (book)
                 WHERE f.book = $1 AND f.field = ANY($2) AND (b.expires_ms IS NULL OR b.expires_ms > fastjobs.now_us() / 1000)",
                &[&book, &fields],
            )
            .await?;
        let found: HashMap<String, Vec<u8>> = rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(fields.iter().map(|f| found.get(f).cloned()).collect())
    }

    /// Sets fields of a workflow's bookkeeping record, and its time to live when given.
    async fn book_set(&self, book: &str, fields: Vec<(String, Vec<u8>)>, ttl: Option<Duration>) -> Result<()> {
        check_book(book)?;
        let (names, values): (Vec<String>, Vec<Vec<u8>>) = fields.into_iter().unzip();
        let ttl_ms = ttl.map(|t| t.as_millis().max(1) as i64);
        self.execute(
            "WITH b AS (INSERT INTO fastjobs.books VALUES ($1, fastjobs.now_us() / 1000 + $4)
                        ON CONFLICT (book) DO UPDATE SET expires_ms = coalesce(fastjobs.now_us() / 1000 + $4, fastjobs.books.expires_ms)
                        RETURNING book)
             INSERT INTO fastjobs.book_fields SELECT b.book, f.field, f.value FROM b, unnest($2::text[], $3::bytea[]) AS f(field, value)
             ON CONFLICT (book, field) DO UPDATE SET value = excluded.value",
            &[&book, &names, &values, &ttl_ms],
        )
        .await
        .map(|_| ())
    }

    async fn flow_settle(&self, items: Vec<FlowSettle>) -> Result<Vec<FlowSettled>> {
        for i in &items {
            check_book(&format!("flow:{}", i.flow_id))?;
        }
        let conn = self.pool.get().await?;
        let calls = items.iter().map(|i| {
            let book = format!("flow:{}", i.flow_id);
            let conn = conn.clone();
            async move {
                let (child, parent) = (i64::from(i.child), i64::from(i.parent));
                let outcome = if i.failed { "f" } else { "c" };
                let row = conn
                    .one(
                        "SELECT fastjobs.flow_settle($1, $2, $3, $4, $5, $6, $7)",
                        &[&book, &child, &parent, &outcome, &i.job_id, &i.data, &i.policy.as_str()],
                    )
                    .await?;
                let answer: Vec<Option<Vec<u8>>> = row.get(0);
                let mut a = answer.into_iter();
                let what = a.next().flatten().unwrap_or_default();
                Ok::<_, Error>(match what.as_slice() {
                    b"release" => FlowSettled::Release(a.next().flatten()),
                    b"fail" => FlowSettled::Fail(a.next().flatten()),
                    _ => FlowSettled::Wait,
                })
            }
        });
        futures_util::future::try_join_all(calls).await
    }

    /// What a flow node's children left for it: (child job id, JSON).
    async fn flow_results(&self, flow_id: &str, node: u32) -> Result<Vec<(String, Vec<u8>)>> {
        let book = format!("flow:{flow_id}");
        let rows =
            self.query("SELECT job_id, data FROM fastjobs.flow_results WHERE flow = $1 AND node = $2", &[&book, &i64::from(node)]).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Writes a worker's entry in the worker registry.
    async fn worker_put(&self, worker: String, entry: Vec<u8>) -> Result<()> {
        self.execute(
            "INSERT INTO fastjobs.workers VALUES ($1, $2) ON CONFLICT (worker) DO UPDATE SET entry = excluded.entry",
            &[&worker, &entry],
        )
        .await
        .map(|_| ())
    }

    /// Every entry of the worker registry.
    async fn workers_read(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self.query("SELECT worker, entry FROM fastjobs.workers ORDER BY worker", &[]).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Deletes entries of the worker registry; returns how many were there.
    async fn workers_remove(&self, workers: Vec<String>) -> Result<u64> {
        self.execute("DELETE FROM fastjobs.workers WHERE worker = ANY($1)", &[&workers]).await
    }

    async fn ping(&self) -> Result<()> {
        self.execute("SELECT 1", &[]).await.map(|_| ())
    }
}

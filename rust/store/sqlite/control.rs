//! What callers other than workers ask of a queue in the SQLite store: status, counts, pause,
//! the registry, cancel and remove, the failed set, emptying and obliterating.

use super::events::Stream;
use super::feedback::callback_status;
use super::queue::*;
use super::record as rec;
use super::{Clock, Wake};
use crate::record::{is_generated_id, PRODUCER_LEN};
use crate::store::*;
use rusqlite::{params, OptionalExtension, Transaction};

/// status.lua (`info`: with its progress and callback record).
pub fn status(tx: &Transaction<'_>, q: &str, id: &str, info: bool, c: Clock) -> Sql<Status> {
    let held: Option<(String, Vec<u8>, Option<Vec<u8>>)> = tx
        .prepare_cached("SELECT state, record, error FROM jobs WHERE queue = ?1 AND id = ?2 ORDER BY rowid LIMIT 1")?
        .query_row(params![q, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (state, record, data) = match held {
        Some((s, r, e)) => match s.as_str() {
            "failed" => (State::Failed, Some(r), e),
            "delayed" => (State::Delayed, Some(r), e),
            "active" => (State::Active, Some(r), None),
            _ => (State::Waiting, None, None),
        },
        None => match finished(tx, q, id, c)? {
            State::Completed => (State::Completed, None, Some(timed(tx, "results", q, id, c.now_ms)?.unwrap_or_else(|| b"null".to_vec()))),
            s => (s, None, None),
        },
    };
    let (progress, callback) =
        if info { (timed(tx, "progress", q, id, c.now_ms)?, callback_status(tx, q, id, c)?) } else { (None, vec![]) };
    Ok(Status { state, record, data, progress, callback })
}

/// Where a job no longer held is: completed, cancelled, waiting (known, not finished) or unknown.
pub(super) fn finished(tx: &Transaction<'_>, q: &str, id: &str, c: Clock) -> Sql<State> {
    let mark: Option<String> = tx
        .prepare_cached("SELECT state FROM marks WHERE queue = ?1 AND id = ?2 AND expires_ms > ?3")?
        .query_row(params![q, id, c.now_ms], |r| r.get(0))
        .optional()?;
    match mark.as_deref() {
        Some("completed") => return Ok(State::Completed),
        Some("cancelled") => return Ok(State::Cancelled),
        Some(_) => return Ok(State::Waiting),
        None => {}
    }
    if !is_generated_id(id) {
        return Ok(State::Unknown);
    }
    let (producer, seq) = (&id[..PRODUCER_LEN], id[PRODUCER_LEN + 1..].parse::<i64>().unwrap_or(0));
    let hwm: Option<i64> = tx
        .prepare_cached("SELECT last_seq FROM watermarks WHERE queue = ?1 AND producer = ?2 AND expires_ms > ?3")?
        .query_row(params![q, producer, c.now_ms], |r| r.get(0))
        .optional()?;
    Ok(match hwm {
        Some(h) if seq <= h => State::Waiting,
        _ => State::Unknown,
    })
}

pub(super) fn timed(tx: &Transaction<'_>, table: &str, q: &str, id: &str, now_ms: i64) -> Sql<Option<Vec<u8>>> {
    tx.prepare_cached(&format!("SELECT value FROM {table} WHERE queue = ?1 AND id = ?2 AND expires_ms > ?3"))?
        .query_row(params![q, id, now_ms], |r| r.get(0))
        .optional()
}

pub fn counts(tx: &Transaction<'_>, q: &str) -> Sql<Counts> {
    let mut c = tx
        .prepare_cached("SELECT paused, completed, retried, stalled, cancelled FROM queues WHERE name = ?1")?
        .query_row([q], |r| {
            Ok(Counts {
                paused: r.get::<_, i64>(0)? != 0,
                completed: r.get::<_, i64>(1)? as u64,
                retried: r.get::<_, i64>(2)? as u64,
                stalled: r.get::<_, i64>(3)? as u64,
                cancelled: r.get::<_, i64>(4)? as u64,
                ..Counts::default()
            })
        })
        .optional()?
        .unwrap_or_default();
    let mut stmt = tx.prepare_cached("SELECT state, count(*) FROM jobs WHERE queue = ?1 GROUP BY state")?;
    let rows = stmt.query_map([q], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    for row in rows {
        let (state, n) = row?;
        match state.as_str() {
            "waiting" => c.waiting = n,
            "delayed" => c.delayed = n,
            "active" => c.active = n,
            "failed" => c.failed = n,
            _ => {}
        }
    }
    Ok(c)
}

/// Pauses or resumes; returns whether it was paused.
pub fn set_paused(tx: &Transaction<'_>, q: &str, pause: bool, w: &mut Wake) -> Sql<bool> {
    let was = paused(tx, q)?;
    ensure(tx, q)?;
    tx.prepare_cached("UPDATE queues SET paused = ?2 WHERE name = ?1")?.execute(params![q, pause as i64])?;
    w.control(q);
    if pause {
        tx.prepare_cached("UPDATE queues SET wake = 0 WHERE name = ?1")?.execute([q])?;
    } else {
        wake(tx, q, w)?;
    }
    Ok(was)
}

pub fn register(tx: &Transaction<'_>, names: &[String]) -> Sql<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO queues (name, registered) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET registered = 1")?;
    for n in names {
        stmt.execute([n])?;
    }
    Ok(())
}

/// The prefix's registered queues, by name.
pub fn registered(tx: &Transaction<'_>, prefix: &str) -> Sql<Vec<String>> {
    tx.prepare_cached("SELECT name FROM queues WHERE registered = 1 AND substr(name, 1, length(?1)) = ?1 ORDER BY name")?
        .query_map([prefix], |r| r.get::<_, String>(0))?
        .map(|k| k.map(|k| k[prefix.len()..].to_string()))
        .collect()
}

fn forget_traces(tx: &Transaction<'_>, q: &str, id: &str) -> Sql<()> {
    for table in ["results", "progress", "logs", "callbacks"] {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE queue = ?1 AND id = ?2"))?.execute(params![q, id])?;
    }
    Ok(())
}

/// A removed job's id: a caller-chosen one is free again, a generated one reads cancelled.
fn forget(tx: &Transaction<'_>, q: &str, id: &str, c: Clock) -> Sql<()> {
    if is_generated_id(id) {
        set_mark(tx, q, id, "cancelled", c)
    } else {
        tx.prepare_cached("DELETE FROM marks WHERE queue = ?1 AND id = ?2")?.execute(params![q, id])?;
        Ok(())
    }
}

/// cancel.lua's `gone`: a job that will not run any more.
fn gone(tx: &Transaction<'_>, q: &str, state: State, row: Row, remove: bool, c: Clock) -> Sql<CancelReply> {
    delete(tx, row.rowid)?;
    release_dedup_of(tx, q, &row.record, &row.id)?;
    if !remove {
        set_mark(tx, q, &row.id, "cancelled", c)?;
        bump(tx, q, "cancelled", 1)?;
    } else {
        forget(tx, q, &row.id, c)?;
        forget_traces(tx, q, &row.id)?;
    }
    Stream::new(q, c.now_ms).tell_one(tx, if remove { "removed" } else { "cancelled" }, &row.id)?;
    Ok(CancelReply { state, record: Some(row.record), done: true })
}

/// cancel.lua.
pub fn cancel(tx: &Transaction<'_>, q: &str, id: &str, remove: bool, c: Clock, w: &mut Wake) -> Sql<CancelReply> {
    if let Some(row) = find(tx, q, id, "delayed")? {
        return gone(tx, q, State::Delayed, row, remove, c);
    }
    if let Some(row) = find(tx, q, id, "failed")? {
        if !remove {
            return Ok(CancelReply { state: State::Failed, record: Some(row.record), done: false });
        }
        delete(tx, row.rowid)?;
        release_dedup_of(tx, q, &row.record, id)?;
        for table in ["progress", "logs", "callbacks"] {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE queue = ?1 AND id = ?2"))?.execute(params![q, id])?;
        }
        forget(tx, q, id, c)?;
        Stream::new(q, c.now_ms).tell_one(tx, "removed", id)?;
        return Ok(CancelReply { state: State::Failed, record: Some(row.record), done: true });
    }
    if let Some(row) = find(tx, q, id, "active")? {
        if !remove {
            tx.prepare_cached("UPDATE jobs SET cancel = 1 WHERE rowid = ?1")?.execute([row.rowid])?;
            w.control(q);
        }
        return Ok(CancelReply { state: State::Active, record: Some(row.record), done: !remove });
    }
    if let Some(row) = find(tx, q, id, "waiting")? {
        return gone(tx, q, State::Waiting, row, remove, c);
    }
    let state = match finished(tx, q, id, c)? {
        State::Waiting => State::Unknown,
        s => s,
    };
    if remove && state != State::Unknown {
        forget_traces(tx, q, id)?;
        if !is_generated_id(id) {
            tx.prepare_cached("DELETE FROM marks WHERE queue = ?1 AND id = ?2")?.execute(params![q, id])?;
        }
        Stream::new(q, c.now_ms).tell_one(tx, "removed", id)?;
        return Ok(CancelReply { state, record: None, done: true });
    }
    Ok(CancelReply { state, record: None, done: false })
}

/// failed.lua retry_id.
pub fn retry_job(tx: &Transaction<'_>, q: &str, id: &str, w: &mut Wake) -> Sql<bool> {
    match find(tx, q, id, "failed")? {
        Some(row) if rec::leasable(&row.record) => {
            make_ready(tx, q, row.rowid, &rec::fresh(&row.record), false)?;
            tx.prepare_cached("UPDATE jobs SET error = NULL WHERE rowid = ?1")?.execute([row.rowid])?;
            wake(tx, q, w)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// empty.lua: cancels up to `max` waiting, then delayed, jobs.
pub fn empty_page(tx: &Transaction<'_>, q: &str, max: usize, c: Clock) -> Sql<(u64, Vec<Vec<u8>>)> {
    let rows: Vec<Row> = tx
        .prepare_cached(
            "SELECT rowid, id, record FROM (
                 SELECT rowid, id, record, 0 AS k, -priority AS a, ord AS b FROM jobs WHERE queue = ?1 AND state = 'waiting'
                 UNION ALL
                 SELECT rowid, id, record, 1, due_us, rowid FROM jobs WHERE queue = ?1 AND state = 'delayed'
             ) ORDER BY k, a, b LIMIT ?2",
        )?
        .query_map(params![q, max as i64], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }))?
        .collect::<Sql<_>>()?;
    let n = rows.len() as u64;
    let mut with_options = Vec::new();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    Stream::new(q, c.now_ms).tell(tx, "cancelled", &ids, &[])?;
    for row in rows {
        delete(tx, row.rowid)?;
        set_mark(tx, q, &row.id, "cancelled", c)?;
        release_dedup_of(tx, q, &row.record, &row.id)?;
        if !rec::options(&row.record).is_empty() {
            with_options.push(row.record);
        }
    }
    bump(tx, q, "cancelled", n)?;
    Ok((n, with_options))
}

/// Every row of the queue goes, and the queue leaves the registry.
pub fn obliterate(tx: &Transaction<'_>, q: &str, w: &mut Wake) -> Sql<u64> {
    let exists: bool = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)")?.query_row([q], |r| r.get(0))?;
    let jobs: i64 = tx.prepare_cached("SELECT count(*) FROM jobs WHERE queue = ?1")?.query_row([q], |r| r.get(0))?;
    let tables = ["jobs", "leases", "reaped", "marks", "watermarks", "chunks", "results", "dedup", "nudges", "progress", "logs"];
    for table in tables.into_iter().chain(["callbacks", "events"]) {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE queue = ?1"))?.execute([q])?;
    }
    tx.prepare_cached("DELETE FROM queues WHERE name = ?1")?.execute([q])?;
    w.work = true;
    Ok(if exists || jobs > 0 { 1 + jobs as u64 } else { 0 })
}

pub fn failed_list(tx: &Transaction<'_>, q: &str, limit: usize) -> Sql<Vec<FailedJob>> {
    tx.prepare_cached(
        "SELECT id, record, error, failed_ms FROM jobs WHERE queue = ?1 AND state = 'failed' ORDER BY failed_ms, rowid LIMIT ?2",
    )?
    .query_map(params![q, limit as i64], |r| {
        Ok(FailedJob { id: r.get(0)?, record: r.get(1)?, error: r.get(2)?, failed_at_ms: r.get::<_, Option<i64>>(3)?.unwrap_or(0) })
    })?
    .collect()
}

/// failed.lua retry: every failed job that is a job record goes back, attempts reset.
pub fn failed_retry(tx: &Transaction<'_>, q: &str, w: &mut Wake) -> Sql<u64> {
    let rows: Vec<Row> = tx
        .prepare_cached("SELECT rowid, id, record FROM jobs WHERE queue = ?1 AND state = 'failed' ORDER BY failed_ms, rowid")?
        .query_map([q], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }))?
        .collect::<Sql<_>>()?;
    let mut n = 0;
    for row in rows.iter().filter(|r| rec::leasable(&r.record)) {
        make_ready(tx, q, row.rowid, &rec::fresh(&row.record), false)?;
        tx.prepare_cached("UPDATE jobs SET error = NULL WHERE rowid = ?1")?.execute([row.rowid])?;
        n += 1;
    }
    wake(tx, q, w)?;
    Ok(n)
}

pub fn failed_purge(tx: &Transaction<'_>, q: &str) -> Sql<u64> {
    tx.prepare_cached(
        "DELETE FROM marks WHERE queue = ?1 AND state = 'taken' AND id IN (SELECT id FROM jobs WHERE queue = ?1 AND state = 'failed')",
    )?
    .execute([q])?;
    Ok(tx.prepare_cached("DELETE FROM jobs WHERE queue = ?1 AND state = 'failed'")?.execute([q])? as u64)
}

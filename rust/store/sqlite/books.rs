//! What the SQLite store keeps beside queues: schedules (sched_*.lua), workflow records
//! (chains' and flows' bookkeeping, flow_settle.lua) and the worker registry.

use super::Clock;
use crate::store::{ChildPolicy, DueSchedules, FlowSettle, FlowSettled, ScheduleEntry, ScheduleWrite};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

type Sql<T> = rusqlite::Result<T>;

/// A key without the store's prefix.
fn bare(prefix: &str, key: String) -> String {
    key.strip_prefix(prefix).map(str::to_string).unwrap_or(key)
}

fn text(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn number(v: Option<&Vec<u8>>) -> Option<i64> {
    std::str::from_utf8(v?).ok()?.parse().ok()
}

fn schedule_fields(tx: &Transaction<'_>, key: &str) -> Sql<HashMap<String, Vec<u8>>> {
    tx.prepare_cached("SELECT field, value FROM schedule_fields WHERE key = ?1")?
        .query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

fn schedule_next(tx: &Transaction<'_>, key: &str) -> Sql<Option<i64>> {
    tx.prepare_cached("SELECT next_ms FROM schedules WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
}

fn set_next(tx: &Transaction<'_>, key: &str, next_ms: i64) -> Sql<()> {
    tx.prepare_cached("INSERT INTO schedules (key, next_ms) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET next_ms = ?2")?
        .execute(params![key, next_ms])?;
    Ok(())
}

fn put_field(tx: &Transaction<'_>, key: &str, field: &str, value: &[u8]) -> Sql<()> {
    tx.prepare_cached(
        "INSERT INTO schedule_fields (key, field, value) VALUES (?1, ?2, ?3) ON CONFLICT (key, field) DO UPDATE SET value = ?3",
    )?
    .execute(params![key, field, value])?;
    Ok(())
}

/// sched_upsert.lua: (created, next run ms, retimed).
pub fn schedule_upsert(tx: &Transaction<'_>, w: ScheduleWrite, c: Clock) -> Sql<(bool, i64, bool)> {
    let old = schedule_fields(tx, &w.key)?;
    let score = schedule_next(tx, &w.key)?;
    let created = !old.contains_key("created_ms");
    let same = score.is_some() && old.get("timing").map(Vec::as_slice) == Some(w.timing.as_bytes());
    let mut def: HashMap<String, Vec<u8>> = HashMap::new();
    def.insert("timing".into(), w.timing.into_bytes());
    def.insert("updated_ms".into(), text(c.now_ms));
    def.insert("created_ms".into(), old.get("created_ms").cloned().unwrap_or_else(|| text(c.now_ms)));
    let anchor = if same { old.get("anchor_ms").cloned() } else { None };
    def.insert("anchor_ms".into(), anchor.unwrap_or_else(|| text(w.anchor_ms)));
    def.insert("runs".into(), old.get("runs").cloned().unwrap_or_else(|| b"0".to_vec()));
    for f in ["last_run_ms", "last_job_id"] {
        if let Some(v) = old.get(f) {
            def.insert(f.into(), v.clone());
        }
    }
    def.extend(w.fields);
    tx.prepare_cached("DELETE FROM schedule_fields WHERE key = ?1")?.execute([&w.key])?;
    for (f, v) in &def {
        put_field(tx, &w.key, f, v)?;
    }
    match (same, score) {
        (true, Some(s)) => Ok((created, s, false)),
        _ => {
            set_next(tx, &w.key, w.next_ms)?;
            Ok((created, w.next_ms, true))
        }
    }
}

fn entry(tx: &Transaction<'_>, key: &str) -> Sql<Option<ScheduleEntry>> {
    let Some(next_ms) = schedule_next(tx, key)? else { return Ok(None) };
    let fields = schedule_fields(tx, key)?;
    Ok((!fields.is_empty()).then(|| ScheduleEntry { key: key.to_string(), next_ms, fields }))
}

/// The prefix's keys in next-run order (ties by key, as a Redis sorted set).
fn ordered(tx: &Transaction<'_>, prefix: &str, limit: Option<usize>) -> Sql<Vec<(String, i64)>> {
    tx.prepare_cached("SELECT key, next_ms FROM schedules WHERE substr(key, 1, length(?1)) = ?1 ORDER BY next_ms, key LIMIT ?2")?
        .query_map(params![prefix, limit.map_or(-1, |l| l as i64)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub fn schedule_read(tx: &Transaction<'_>, prefix: &str, keys: Option<Vec<String>>) -> Sql<Vec<ScheduleEntry>> {
    let keys = match keys {
        Some(keys) if !keys.is_empty() => keys,
        _ => ordered(tx, prefix, None)?.into_iter().map(|(k, _)| k).collect(),
    };
    let entries = keys.iter().map(|k| entry(tx, k)).collect::<Sql<Vec<_>>>()?;
    Ok(entries.into_iter().flatten().map(|e| ScheduleEntry { key: bare(prefix, e.key), ..e }).collect())
}

pub fn schedule_remove(tx: &Transaction<'_>, prefix: &str, keys: Option<Vec<String>>) -> Sql<u64> {
    let keys = match keys {
        Some(keys) if !keys.is_empty() => keys,
        _ => ordered(tx, prefix, None)?.into_iter().map(|(k, _)| k).collect(),
    };
    let mut removed = 0;
    for k in keys {
        removed += tx.prepare_cached("DELETE FROM schedules WHERE key = ?1")?.execute([&k])? as u64;
        tx.prepare_cached("DELETE FROM schedule_fields WHERE key = ?1")?.execute([&k])?;
    }
    Ok(removed)
}

pub fn schedules_due(tx: &Transaction<'_>, prefix: &str, limit: usize, c: Clock) -> Sql<DueSchedules> {
    let head_ms = ordered(tx, prefix, Some(1))?.first().map(|(_, at)| *at);
    let due = tx
        .prepare_cached(
            "SELECT key, next_ms FROM schedules WHERE substr(key, 1, length(?1)) = ?1 AND next_ms <= ?2 ORDER BY next_ms, key LIMIT ?3",
        )?
        .query_map(params![prefix, c.now_ms, limit.max(1) as i64], |r| Ok((bare(prefix, r.get(0)?), r.get(1)?)))?
        .collect::<Sql<_>>()?;
    Ok(DueSchedules { now_ms: c.now_ms, head_ms, due })
}

/// sched_advance.lua.
pub fn schedule_advance(tx: &Transaction<'_>, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> Sql<bool> {
    if schedule_next(tx, key)? != Some(tick_ms) {
        return Ok(false);
    }
    if job_id.is_empty() {
        set_next(tx, key, next_ms.unwrap_or(-1))?;
        return Ok(true);
    }
    let Some(next) = next_ms else {
        tx.prepare_cached("DELETE FROM schedules WHERE key = ?1")?.execute([key])?;
        tx.prepare_cached("DELETE FROM schedule_fields WHERE key = ?1")?.execute([key])?;
        return Ok(true);
    };
    let runs = number(schedule_fields(tx, key)?.get("runs")).unwrap_or(0);
    put_field(tx, key, "runs", &text(runs + 1))?;
    put_field(tx, key, "last_run_ms", &text(tick_ms))?;
    put_field(tx, key, "last_job_id", job_id.as_bytes())?;
    set_next(tx, key, next)?;
    Ok(true)
}

/// Drops a workflow record whose time is up (its fields, results and expiry).
fn expire_book(tx: &Transaction<'_>, book: &str, c: Clock) -> Sql<()> {
    let gone = tx.prepare_cached("DELETE FROM book_expiry WHERE book = ?1 AND expires_ms <= ?2")?.execute(params![book, c.now_ms])?;
    if gone > 0 {
        tx.prepare_cached("DELETE FROM books WHERE book = ?1")?.execute([book])?;
    }
    Ok(())
}

fn book_field(tx: &Transaction<'_>, book: &str, field: &str) -> Sql<Option<Vec<u8>>> {
    tx.prepare_cached("SELECT value FROM books WHERE book = ?1 AND field = ?2")?.query_row(params![book, field], |r| r.get(0)).optional()
}

fn put_book_field(tx: &Transaction<'_>, book: &str, field: &str, value: &[u8]) -> Sql<()> {
    tx.prepare_cached("INSERT INTO books (book, field, value) VALUES (?1, ?2, ?3) ON CONFLICT (book, field) DO UPDATE SET value = ?3")?
        .execute(params![book, field, value])?;
    Ok(())
}

pub fn book_get(tx: &Transaction<'_>, book: &str, fields: &[String], c: Clock) -> Sql<Vec<Option<Vec<u8>>>> {
    let live: bool = tx
        .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM book_expiry WHERE book = ?1 AND expires_ms <= ?2)")?
        .query_row(params![book, c.now_ms], |r| r.get(0))?;
    if !live {
        return Ok(vec![None; fields.len()]);
    }
    fields.iter().map(|f| book_field(tx, book, f)).collect()
}

pub fn book_set(tx: &Transaction<'_>, book: &str, fields: Vec<(String, Vec<u8>)>, ttl_ms: Option<i64>, c: Clock) -> Sql<()> {
    expire_book(tx, book, c)?;
    for (f, v) in &fields {
        put_book_field(tx, book, f, v)?;
    }
    if let Some(ttl) = ttl_ms {
        tx.prepare_cached("INSERT INTO book_expiry (book, expires_ms) VALUES (?1, ?2) ON CONFLICT (book) DO UPDATE SET expires_ms = ?2")?
            .execute(params![book, c.now_ms + ttl.max(1)])?;
    }
    Ok(())
}

/// flow_settle.lua: a child counted once however often it is reported.
pub fn flow_settle(tx: &Transaction<'_>, book: &str, i: &FlowSettle, c: Clock) -> Sql<FlowSettled> {
    expire_book(tx, book, c)?;
    let (state_f, error_f, pending_f) = (format!("state:{}", i.parent), format!("error:{}", i.parent), format!("pending:{}", i.parent));
    let settled = format!("settled:{}", i.child);
    if book_field(tx, book, &settled)?.is_none() {
        let failed = i.failed;
        put_book_field(tx, book, &settled, if failed { b"f" } else { b"c" })?;
        if failed && i.policy == ChildPolicy::FailParent {
            if book_field(tx, book, &state_f)?.as_deref() != Some(b"failed") {
                put_book_field(tx, book, &state_f, b"failed")?;
                put_book_field(tx, book, &error_f, &i.data)?;
            }
        } else {
            if !(failed && i.policy == ChildPolicy::ContinueParent) {
                tx.prepare_cached(
                    "INSERT INTO flow_results (book, node, job_id, data) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (book, node, job_id) DO UPDATE SET data = ?4",
                )?
                .execute(params![book, i.parent, i.job_id, i.data])?;
            }
            let pending = number(book_field(tx, book, &pending_f)?.as_ref()).unwrap_or(0);
            put_book_field(tx, book, &pending_f, &text(pending - 1))?;
        }
    }
    if book_field(tx, book, &state_f)?.as_deref() == Some(b"failed") {
        return Ok(FlowSettled::Fail(book_field(tx, book, &error_f)?));
    }
    if number(book_field(tx, book, &pending_f)?.as_ref()).unwrap_or(1) > 0 {
        return Ok(FlowSettled::Wait);
    }
    if book_field(tx, book, &state_f)?.as_deref() != Some(b"released") {
        put_book_field(tx, book, &state_f, b"released")?;
        put_book_field(tx, book, &format!("released_by:{}", i.parent), i.child.to_string().as_bytes())?;
    }
    Ok(FlowSettled::Release(book_field(tx, book, &format!("spec:{}", i.parent))?))
}

pub fn flow_results(tx: &Transaction<'_>, book: &str, node: u32) -> Sql<Vec<(String, Vec<u8>)>> {
    tx.prepare_cached("SELECT job_id, data FROM flow_results WHERE book = ?1 AND node = ?2 ORDER BY rowid")?
        .query_map(params![book, node], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub fn worker_put(tx: &Transaction<'_>, worker: &str, entry: &[u8]) -> Sql<()> {
    tx.prepare_cached("INSERT INTO workers (worker, entry) VALUES (?1, ?2) ON CONFLICT (worker) DO UPDATE SET entry = ?2")?
        .execute(params![worker, entry])?;
    Ok(())
}

pub fn workers_read(tx: &Transaction<'_>, prefix: &str) -> Sql<Vec<(String, Vec<u8>)>> {
    tx.prepare_cached("SELECT worker, entry FROM workers WHERE substr(worker, 1, length(?1)) = ?1 ORDER BY worker")?
        .query_map([prefix], |r| Ok((bare(prefix, r.get(0)?), r.get(1)?)))?
        .collect()
}

pub fn workers_remove(tx: &Transaction<'_>, workers: &[String]) -> Sql<u64> {
    let mut stmt = tx.prepare_cached("DELETE FROM workers WHERE worker = ?1")?;
    workers.iter().map(|w| stmt.execute([w]).map(|n| n as u64)).sum()
}

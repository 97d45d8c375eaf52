//! One queue's job lifecycle in the SQLite store: enqueue, leases (ack, start, release,
//! extend, expire) and tick, each the SQL equivalent of one Redis script (rust/store/redis/lua/)
//! and of the memory store's `Queue` method of the same name, run in the caller's
//! transaction. Its small functions on rows (find, delete, marks, wake-ups) serve the store's
//! other queue modules too.

use super::events::Stream;
use super::record as rec;
use super::reserve::{read_group_limits, read_limits};
use super::{Clock, Wake};
use crate::store::told::Told;
use crate::store::*;
use rusqlite::{params, OptionalExtension, Transaction};

pub(super) type Sql<T> = rusqlite::Result<T>;

/// A row of `jobs`: its rowid, id and record.
pub(super) struct Row {
    pub rowid: i64,
    pub id: String,
    pub record: Vec<u8>,
}

pub(super) fn ensure(tx: &Transaction<'_>, q: &str) -> Sql<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO queues (name) VALUES (?1)")?.execute([q])?;
    Ok(())
}

pub(super) fn bump(tx: &Transaction<'_>, q: &str, stat: &str, n: u64) -> Sql<()> {
    if n > 0 {
        ensure(tx, q)?;
        tx.prepare_cached(&format!("UPDATE queues SET {stat} = {stat} + ?2 WHERE name = ?1"))?.execute(params![q, n as i64])?;
    }
    Ok(())
}

/// The next place at the tail, or (counting down) at the head, of the queue's ready order.
pub(super) fn place(tx: &Transaction<'_>, q: &str, head: bool) -> Sql<i64> {
    ensure(tx, q)?;
    let sql = if head {
        "UPDATE queues SET head = head - 1 WHERE name = ?1 RETURNING head"
    } else {
        "UPDATE queues SET tail = tail + 1 WHERE name = ?1 RETURNING tail"
    };
    tx.prepare_cached(sql)?.query_row([q], |r| r.get(0))
}

pub(super) fn paused(tx: &Transaction<'_>, q: &str) -> Sql<bool> {
    Ok(tx.prepare_cached("SELECT paused FROM queues WHERE name = ?1")?.query_row([q], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0) != 0)
}

pub(super) fn any_ready(tx: &Transaction<'_>, q: &str) -> Sql<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'waiting')")?.query_row([q], |r| r.get(0))
}

/// common.lua wake: a paused queue wakes nobody.
/// The queue's wake flag stands for Redis's wake list: one blocked worker takes it, so workers
/// held back by a limit wait for the next change instead of spinning on ready jobs.
pub(super) fn wake(tx: &Transaction<'_>, q: &str, w: &mut Wake) -> Sql<()> {
    if !paused(tx, q)? && any_ready(tx, q)? {
        tx.prepare_cached("UPDATE queues SET wake = 1 WHERE name = ?1")?.execute([q])?;
        w.work = true;
    }
    Ok(())
}

/// Makes a row waiting at the tail or head of its priority's order.
pub(super) fn make_ready(tx: &Transaction<'_>, q: &str, rowid: i64, record: &[u8], head: bool) -> Sql<()> {
    let ord = place(tx, q, head)?;
    let grp = rec::group(record);
    if let Some(g) = &grp {
        join_ring(tx, q, g)?;
    }
    tx.prepare_cached(
        "UPDATE jobs SET state = 'waiting', priority = ?2, ord = ?3, record = ?4, grp = ?5, due_us = NULL, token = NULL,
         started_ms = NULL, cancel = 0, failed_ms = NULL WHERE rowid = ?1",
    )?
    .execute(params![rowid, rec::priority(record) as i64, ord, record, grp])?;
    Ok(())
}

/// A group with jobs waiting takes turns with the others (and with the ungrouped jobs, '').
fn join_ring(tx: &Transaction<'_>, q: &str, g: &str) -> Sql<()> {
    let mut join = tx.prepare_cached("INSERT OR IGNORE INTO groups (queue, grp, turn) VALUES (?1, ?2, ?3)")?;
    for member in ["", g] {
        let turn = place(tx, q, false)?;
        join.execute(params![q, member, turn])?;
    }
    Ok(())
}

fn insert(tx: &Transaction<'_>, q: &str, id: &str, state: &str, record: &[u8], due_us: Option<i64>) -> Sql<i64> {
    let ord = if state == "waiting" { place(tx, q, false)? } else { 0 };
    let grp = rec::group(record);
    if let Some(g) = grp.as_deref().filter(|_| state == "waiting") {
        join_ring(tx, q, g)?;
    }
    tx.prepare_cached("INSERT INTO jobs (queue, id, state, priority, ord, due_us, record, grp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
        .execute(params![q, id, state, rec::priority(record) as i64, ord, due_us, record, grp])?;
    Ok(tx.last_insert_rowid())
}

/// The job `id` the store holds, in any of `states`.
pub(super) fn find(tx: &Transaction<'_>, q: &str, id: &str, state: &str) -> Sql<Option<Row>> {
    tx.prepare_cached("SELECT rowid, id, record FROM jobs WHERE queue = ?1 AND id = ?2 AND state = ?3 LIMIT 1")?
        .query_row(params![q, id, state], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }))
        .optional()
}

pub(super) fn delete(tx: &Transaction<'_>, rowid: i64) -> Sql<()> {
    tx.prepare_cached("DELETE FROM jobs WHERE rowid = ?1")?.execute([rowid])?;
    Ok(())
}

/// What an id is known as once its job is gone, for the marks' lifetime (as Redis's marks).
pub(super) fn set_mark(tx: &Transaction<'_>, q: &str, id: &str, state: &str, c: Clock) -> Sql<()> {
    tx.prepare_cached(
        "INSERT INTO marks (queue, id, state, expires_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (queue, id) DO UPDATE SET state = ?3, expires_ms = ?4",
    )?
    .execute(params![q, id, state, c.now_ms + c.mark_ttl_ms])?;
    Ok(())
}

fn release_dedup(tx: &Transaction<'_>, q: &str, key: &str, id: &str) -> Sql<()> {
    tx.prepare_cached("DELETE FROM dedup WHERE queue = ?1 AND key = ?2 AND holder = ?3")?.execute(params![q, key, id])?;
    Ok(())
}

pub(super) fn release_dedup_of(tx: &Transaction<'_>, q: &str, r: &[u8], id: &str) -> Sql<()> {
    match rec::dedup(r) {
        Some(key) => release_dedup(tx, q, &key, id),
        None => Ok(()),
    }
}

/// common.lua cancel_unstarted: a job that had not started, settled as cancelled.
fn cancel_unstarted(tx: &Transaction<'_>, q: &str, row: &Row, c: Clock, told: &mut Stream<'_>) -> Sql<()> {
    delete(tx, row.rowid)?;
    set_mark(tx, q, &row.id, "cancelled", c)?;
    release_dedup_of(tx, q, &row.record, &row.id)?;
    told.tell_one(tx, "cancelled", &row.id)?;
    bump(tx, q, "cancelled", 1)
}

fn fail(tx: &Transaction<'_>, rowid: i64, id: &str, record: &[u8], error: &[u8], now_ms: i64) -> Sql<()> {
    tx.prepare_cached(
        "UPDATE jobs SET state = 'failed', id = ?2, record = ?3, error = ?4, failed_ms = ?5, token = NULL, started_ms = NULL,
         cancel = 0, due_us = NULL WHERE rowid = ?1",
    )?
    .execute(params![rowid, id, record, error, now_ms])?;
    Ok(())
}

/// common.lua fail_undecodable: what is not a job record is failed at once under a new id,
/// kept whole for inspection, never leased.
pub(super) fn fail_undecodable(tx: &Transaction<'_>, q: &str, row: &Row, now_ms: i64) -> Sql<()> {
    let n: i64 = tx
        .prepare_cached("UPDATE queues SET undecodable = undecodable + 1 WHERE name = ?1 RETURNING undecodable")?
        .query_row([q], |r| r.get(0))?;
    let id = format!("{}{n}", crate::record::UNDECODABLE_PREFIX);
    let error = serde_json::json!({
        "type": "DecodeError",
        "message": format!("an element of this queue is not a job record fastjobs can read ({} bytes)", row.record.len()),
        "traceback": "",
    });
    fail(tx, row.rowid, &id, &row.record, &serde_json::to_vec(&error).unwrap_or_default(), now_ms)?;
    bump(tx, q, "failed", 1)
}

/// enqueue.lua's deduplication: the id of the job holding the key, or None once this job took it.
fn deduplicate(tx: &Transaction<'_>, q: &str, d: &Dedup, id: &str, r: &[u8], due_us: i64, c: Clock) -> Sql<Option<String>> {
    let held: Option<String> = tx
        .prepare_cached("SELECT holder FROM dedup WHERE queue = ?1 AND key = ?2 AND expires_ms > ?3")?
        .query_row(params![q, d.key, c.now_ms], |r| r.get(0))
        .optional()?;
    let keep_ms = c.mark_ttl_ms + (due_us / 1000 - c.now_ms).max(0);
    let hold = |holder: &str, expires_ms: i64| -> Sql<()> {
        tx.prepare_cached(
            "INSERT INTO dedup (queue, key, holder, expires_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (queue, key) DO UPDATE SET holder = ?3, expires_ms = ?4",
        )?
        .execute(params![q, d.key, holder, expires_ms])?;
        Ok(())
    };
    match d.mode {
        DedupMode::Ttl(ms) => {
            if held.is_some() {
                return Ok(held);
            }
            hold(id, c.now_ms + ms as i64)?;
        }
        DedupMode::UntilSettled => {
            if held.is_some() {
                return Ok(held);
            }
            hold(id, c.now_ms + keep_ms)?;
        }
        _ => {
            if let Some(held) = held {
                if let Some(old) = find(tx, q, &held, "delayed")? {
                    if old.record.first() == Some(&crate::record::RECORD) && rec::attempt(&old.record) == 0 {
                        tx.prepare_cached("UPDATE jobs SET record = ?2, due_us = ?3, priority = ?4 WHERE rowid = ?1")?.execute(params![
                            old.rowid,
                            rec::with_id(r, &held),
                            due_us,
                            rec::priority(r) as i64
                        ])?;
                        hold(&held, c.now_ms + keep_ms)?;
                        return Ok(Some(held));
                    }
                }
            }
            hold(id, c.now_ms + keep_ms)?;
        }
    }
    Ok(None)
}

/// enqueue.lua and push.lua.
pub fn enqueue(tx: &Transaction<'_>, q: &str, jobs: &[NewJob], mark: Option<&Watermark>, c: Clock, w: &mut Wake) -> Sql<Vec<Written>> {
    // The queue's row, and with it whether its events are on: no look-up of its own.
    let keep: Option<i64> = tx
        .prepare_cached(
            "INSERT INTO queues (name, registered) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET registered = 1 RETURNING events_keep",
        )?
        .query_row([q], |r| r.get(0))?;
    let mut told = Stream::known(q, c.now_ms, keep.map(|k| k as u64));
    let (mut waiting, mut delayed) = (keep.map(|_| Told::new("waiting")), keep.map(|_| Told::new("delayed")));
    if let Some(m) = mark {
        if let Some(g) = m.guard {
            let fresh = tx
                .prepare_cached("INSERT OR IGNORE INTO chunks (queue, producer, first) VALUES (?1, ?2, ?3)")?
                .execute(params![q, m.producer, g as i64])?;
            if fresh == 0 {
                return Ok(vec![Written::New; jobs.len()]);
            }
        }
    }
    let mut out = Vec::with_capacity(jobs.len());
    let mut any_ready = false;
    for j in jobs {
        let due_us = j.at_us.map(|a| a as i64).unwrap_or(c.now_us + j.delay_us as i64);
        if let Some(d) = &j.dedup {
            if let Some(held) = deduplicate(tx, q, d, &j.id, &j.record, due_us, c)? {
                out.push(Written::Deduplicated(held));
                continue;
            }
        }
        if j.custom_id {
            // A mark whose time is up no longer holds the id.
            tx.prepare_cached("DELETE FROM marks WHERE queue = ?1 AND id = ?2 AND expires_ms <= ?3")?
                .execute(params![q, j.id, c.now_ms])?;
            let keep_ms = c.mark_ttl_ms + (due_us / 1000 - c.now_ms).max(0);
            let taken = tx
                .prepare_cached("INSERT OR IGNORE INTO marks (queue, id, state, expires_ms) VALUES (?1, ?2, 'taken', ?3)")?
                .execute(params![q, j.id, c.now_ms + keep_ms])?;
            if taken == 0 {
                out.push(Written::Exists);
                continue;
            }
        }
        if due_us > c.now_us {
            insert(tx, q, &j.id, "delayed", &j.record, Some(due_us))?;
            w.sched(q);
            if let Some(t) = &mut delayed {
                t.add(&j.id, &j.record, None, Some(due_us / 1000), None);
            }
        } else {
            insert(tx, q, &j.id, "waiting", &j.record, None)?;
            any_ready = true;
            if let Some(t) = &mut waiting {
                t.add(&j.id, &j.record, None, None, None);
            }
        }
        out.push(Written::New);
    }
    if let Some(m) = mark {
        tx.prepare_cached(
            "INSERT INTO watermarks (queue, producer, last_seq, expires_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (queue, producer) DO UPDATE SET last_seq = max(last_seq, ?3), expires_ms = ?4",
        )?
        .execute(params![q, m.producer, m.last_seq as i64, c.now_ms + c.mark_ttl_ms])?;
    }
    for t in waiting.iter().chain(&delayed) {
        told.tell(tx, t.kind, &t.ids, &t.fields())?;
    }
    if any_ready {
        wake(tx, q, w)?;
    }
    Ok(out)
}

pub fn chunks_written(tx: &Transaction<'_>, q: &str, chunks: &[(String, u64)]) -> Sql<Vec<bool>> {
    let mut stmt = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM chunks WHERE queue = ?1 AND producer = ?2 AND first = ?3)")?;
    chunks.iter().map(|(p, first)| stmt.query_row(params![q, p, *first as i64], |r| r.get(0))).collect()
}

fn drop_lease_if_empty(tx: &Transaction<'_>, q: &str, token: &str) -> Sql<()> {
    tx.prepare_cached(
        "DELETE FROM leases WHERE queue = ?1 AND token = ?2
         AND NOT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND token = ?2 AND state = 'active')",
    )?
    .execute(params![q, token])?;
    Ok(())
}

fn was_reaped(tx: &Transaction<'_>, q: &str, token: &str) -> Sql<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM reaped WHERE queue = ?1 AND token = ?2)")?.query_row(params![q, token], |r| r.get(0))
}

/// ack.lua: one lease's settled jobs.
pub fn ack(tx: &Transaction<'_>, q: &str, token: &str, entries: &[AckEntry], c: Clock, w: &mut Wake) -> Sql<AckOutcome> {
    let mut out = AckOutcome::default();
    let reaped = was_reaped(tx, q, token)?;
    let mut get =
        tx.prepare_cached("SELECT rowid, id, record FROM jobs WHERE queue = ?1 AND token = ?2 AND id = ?3 AND state = 'active' LIMIT 1")?;
    let (mut pushed, mut freed) = (false, false);
    let mut told = Stream::new(q, c.now_ms);
    let mut kinds = [Told::new("completed"), Told::new("retrying"), Told::new("failed"), Told::new("cancelled")];
    let telling = !entries.is_empty() && told.on(tx)?;
    for e in entries {
        let id = String::from_utf8_lossy(&e.id).into_owned();
        let held = get.query_row(params![q, token, id], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? })).optional()?;
        let Some(held) = held else {
            match (&e.kind, reaped) {
                (_, true) => out.refused += 1,
                (AckKind::Completed { .. }, _) => out.completed += 1,
                (AckKind::Retry { .. }, _) => out.retried += 1,
                (AckKind::Failed { .. }, _) => out.failed += 1,
                (AckKind::Cancelled, _) => out.cancelled += 1,
            }
            continue;
        };
        freed |= e.group.is_some() || rec::group(&held.record).is_some();
        match &e.kind {
            AckKind::Completed { result } => {
                delete(tx, held.rowid)?;
                set_mark(tx, q, &id, "completed", c)?;
                if let Some(key) = &e.dedup {
                    release_dedup(tx, q, &String::from_utf8_lossy(key), &id)?;
                }
                if let Some(r) = result {
                    tx.prepare_cached(
                        "INSERT INTO results (queue, id, value, expires_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (queue, id) DO UPDATE SET value = ?3, expires_ms = ?4",
                    )?
                    .execute(params![q, id, r, c.now_ms + c.result_ttl_ms])?;
                }
                bump(tx, q, "completed", 1)?;
                out.completed += 1;
                if telling {
                    kinds[0].add(&id, &held.record, None, None, result.as_deref());
                }
            }
            AckKind::Retry { delay_ms, record, error } => {
                if !error.is_empty() {
                    tx.prepare_cached("UPDATE jobs SET error = ?2 WHERE rowid = ?1")?.execute(params![held.rowid, error])?;
                }
                if *delay_ms > 0 {
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'delayed', record = ?2, priority = ?3, due_us = ?4, token = NULL, started_ms = NULL,
                         cancel = 0 WHERE rowid = ?1",
                    )?
                    .execute(params![
                        held.rowid,
                        record,
                        rec::priority(record) as i64,
                        (c.now_ms + *delay_ms as i64) * 1000
                    ])?;
                    w.sched(q);
                } else {
                    make_ready(tx, q, held.rowid, record, false)?;
                    pushed = true;
                }
                bump(tx, q, "retried", 1)?;
                out.retried += 1;
                if telling {
                    let attempt = rec::attempt(record).saturating_sub(1) as i64;
                    kinds[1].add(&id, record, Some(attempt), Some(*delay_ms as i64), Some(error));
                }
            }
            AckKind::Failed { error, record } => {
                if let Some(key) = &e.dedup {
                    release_dedup(tx, q, &String::from_utf8_lossy(key), &id)?;
                }
                fail(tx, held.rowid, &id, record, error, c.now_ms)?;
                bump(tx, q, "failed", 1)?;
                out.failed += 1;
                if telling {
                    kinds[2].add(&id, record, Some(rec::attempt(record).saturating_sub(1) as i64), None, Some(error));
                }
            }
            AckKind::Cancelled => {
                delete(tx, held.rowid)?;
                set_mark(tx, q, &id, "cancelled", c)?;
                release_dedup_of(tx, q, &held.record, &id)?;
                bump(tx, q, "cancelled", 1)?;
                out.cancelled += 1;
                if telling {
                    kinds[3].add(&id, &held.record, None, None, None);
                }
            }
        }
    }
    for t in &kinds {
        told.tell(tx, t.kind, &t.ids, &t.fields())?;
    }
    drop_lease_if_empty(tx, q, token)?;
    let settled = out.completed + out.retried + out.failed + out.cancelled > 0;
    if pushed || (settled && read_limits(tx, q)? != Limits::default()) || (freed && read_group_limits(tx, q)? != Limits::default()) {
        wake(tx, q, w)?;
    }
    Ok(out)
}

pub fn start(tx: &Transaction<'_>, q: &str, token: &str, id: &str, c: Clock) -> Sql<bool> {
    let n = tx
        .prepare_cached("UPDATE jobs SET started_ms = ?4 WHERE queue = ?1 AND token = ?2 AND id = ?3 AND state = 'active'")?
        .execute(params![q, token, id, c.now_ms])?;
    Ok(n > 0)
}

/// The jobs a lease holds, in the order it took them.
pub(super) fn lease_rows(tx: &Transaction<'_>, q: &str, token: &str) -> Sql<Vec<(Row, Option<i64>, bool)>> {
    tx.prepare_cached(
        "SELECT rowid, id, record, started_ms, cancel FROM jobs WHERE queue = ?1 AND token = ?2 AND state = 'active'
         ORDER BY priority DESC, ord",
    )?
    .query_map(params![q, token], |r| {
        Ok((Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }, r.get(3)?, r.get::<_, i64>(4)? != 0))
    })?
    .collect()
}

pub fn release(tx: &Transaction<'_>, q: &str, token: &str, ids: &[Vec<u8>], c: Clock, w: &mut Wake) -> Sql<u64> {
    let mut back = Vec::new();
    let mut told = Stream::new(q, c.now_ms);
    let mut get = tx.prepare_cached(
        "SELECT rowid, id, record, cancel FROM jobs WHERE queue = ?1 AND token = ?2 AND id = ?3 AND state = 'active' LIMIT 1",
    )?;
    for id in ids {
        let id = String::from_utf8_lossy(id).into_owned();
        let found = get
            .query_row(params![q, token, id], |r| {
                Ok((Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }, r.get::<_, i64>(3)? != 0))
            })
            .optional()?;
        match found {
            Some((row, true)) => cancel_unstarted(tx, q, &row, c, &mut told)?,
            Some((row, false)) => back.push(row),
            None => {}
        }
    }
    drop_lease_if_empty(tx, q, token)?;
    for row in back.iter().rev() {
        make_ready(tx, q, row.rowid, &row.record, true)?;
    }
    wake(tx, q, w)?;
    Ok(back.len() as u64)
}

pub fn extend(tx: &Transaction<'_>, q: &str, tokens: &[String], deadline_ms: i64) -> Sql<(Vec<String>, Vec<Vec<u8>>)> {
    let (mut lost, mut cancel) = (Vec::new(), Vec::new());
    for t in tokens {
        let n =
            tx.prepare_cached("UPDATE leases SET deadline_ms = ?3 WHERE queue = ?1 AND token = ?2")?.execute(params![q, t, deadline_ms])?;
        if n > 0 {
            let ids = tx
                .prepare_cached("SELECT id FROM jobs WHERE queue = ?1 AND token = ?2 AND state = 'active' AND cancel = 1")?
                .query_map(params![q, t], |r| r.get::<_, String>(0))?
                .collect::<Sql<Vec<String>>>()?;
            cancel.extend(ids.into_iter().map(String::into_bytes));
        } else if was_reaped(tx, q, t)? {
            lost.push(t.clone());
        }
    }
    Ok((lost, cancel))
}

pub fn expire_worker(tx: &Transaction<'_>, q: &str, worker: &str, most: usize) -> Sql<Expired> {
    let prefix = format!("{worker}.");
    let tokens: Vec<String> = tx
        .prepare_cached("SELECT token FROM leases WHERE queue = ?1 AND substr(token, 1, length(?2)) = ?2 ORDER BY token")?
        .query_map(params![q, prefix], |r| r.get(0))?
        .collect::<Sql<_>>()?;
    let mut x = Expired::default();
    for t in tokens {
        x.leases += 1;
        tx.prepare_cached("UPDATE leases SET deadline_ms = 0 WHERE queue = ?1 AND token = ?2")?.execute(params![q, t])?;
        for (row, started, _) in lease_rows(tx, q, &t)? {
            x.held += 1;
            if x.ids.len() < most {
                x.ids.push(row.id.clone());
            }
            if started.is_some() {
                x.started.push(row.id);
            }
        }
    }
    Ok(x)
}

/// tick.lua: promotes due delayed jobs, reaps expired leases.
pub fn tick(tx: &Transaction<'_>, q: &str, limit: usize, c: Clock, w: &mut Wake) -> Sql<Tick> {
    let due: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT rowid, record FROM jobs WHERE queue = ?1 AND state = 'delayed' AND due_us <= ?2 ORDER BY due_us, rowid LIMIT ?3",
        )?
        .query_map(params![q, c.now_us, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Sql<_>>()?;
    for (rowid, record) in &due {
        make_ready(tx, q, *rowid, record, false)?;
    }
    let mut told = Stream::new(q, c.now_ms);
    if !due.is_empty() && told.on(tx)? {
        told.tell(tx, "waiting", &due.iter().map(|(_, r)| rec::id(r)).collect::<Vec<_>>(), &[])?;
    }
    let expired: Vec<String> = tx
        .prepare_cached("SELECT token FROM leases WHERE queue = ?1 AND deadline_ms <= ?2 ORDER BY deadline_ms, token LIMIT ?3")?
        .query_map(params![q, c.now_ms, limit as i64], |r| r.get(0))?
        .collect::<Sql<_>>()?;
    let mut reaped = 0u64;
    for token in expired {
        let worker = token.split_once('.').map(|(w, _)| w.to_string()).unwrap_or_else(|| token.clone());
        tx.prepare_cached("DELETE FROM nudges WHERE queue = ?1 AND worker = ?2")?.execute(params![q, worker])?;
        let mut back = Vec::new();
        for (row, started, cancel) in lease_rows(tx, q, &token)? {
            reaped += 1;
            if cancel {
                cancel_unstarted(tx, q, &row, c, &mut told)?;
                continue;
            }
            let (mut attempt, max) = (rec::attempt(&row.record), rec::max_attempts(&row.record));
            if started.is_some() {
                attempt += 1;
            }
            match started {
                Some(since) if attempt >= max => {
                    let before: Option<Vec<u8>> =
                        tx.prepare_cached("SELECT error FROM jobs WHERE rowid = ?1")?.query_row([row.rowid], |r| r.get(0))?;
                    let err = lease_expired(&worker, attempt, max, since, before.as_deref());
                    let record = rec::with_attempt(&row.record, attempt, crate::record::RECORD);
                    fail(tx, row.rowid, &row.id, &record, &err, c.now_ms)?;
                    bump(tx, q, "failed", 1)?;
                    release_dedup_of(tx, q, &row.record, &row.id)?;
                    told.tell_one(tx, "failed", &row.id)?;
                }
                _ => back.push((row.rowid, row.id, rec::orphan(&row.record, attempt))),
            }
        }
        for (rowid, _, record) in back.iter().rev() {
            make_ready(tx, q, *rowid, record, true)?;
        }
        told.tell(tx, "stalled", &back.into_iter().map(|(_, id, _)| id).collect::<Vec<_>>(), &[])?;
        tx.prepare_cached("DELETE FROM leases WHERE queue = ?1 AND token = ?2")?.execute(params![q, token])?;
        tx.prepare_cached("INSERT OR IGNORE INTO reaped (queue, token) VALUES (?1, ?2)")?.execute(params![q, token])?;
    }
    bump(tx, q, "stalled", reaped)?;
    sweep(tx, q, limit, c)?;
    wake(tx, q, w)?;
    let next_due_us: Option<i64> =
        tx.prepare_cached("SELECT min(due_us) FROM jobs WHERE queue = ?1 AND state = 'delayed'")?.query_row([q], |r| r.get(0))?;
    let next_lease_deadline_ms: Option<i64> =
        tx.prepare_cached("SELECT min(deadline_ms) FROM leases WHERE queue = ?1")?.query_row([q], |r| r.get(0))?;
    Ok(Tick { promoted: due.len() as u64, reaped, now_ms: c.now_ms, now_us: c.now_us, next_due_us, next_lease_deadline_ms })
}

/// Deletes up to `limit` rows per table whose time is up (results, deduplication marks,
/// progress, log lines, callback records): reads skip them already, this keeps the file small.
fn sweep(tx: &Transaction<'_>, q: &str, limit: usize, c: Clock) -> Sql<()> {
    for (table, key) in [
        ("results", "id"),
        ("dedup", "key"),
        ("progress", "id"),
        ("logs", "rowid"),
        ("callbacks", "rowid"),
        ("marks", "id"),
        ("watermarks", "producer"),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE queue = ?1 AND ({key}) IN
             (SELECT {key} FROM {table} WHERE queue = ?1 AND expires_ms <= ?2 ORDER BY expires_ms LIMIT ?3)"
        );
        tx.prepare_cached(&sql)?.execute(params![q, c.now_ms, limit as i64])?;
    }
    Ok(())
}

/// tick.lua's error for a job whose worker died while it ran its last attempt.
fn lease_expired(worker: &str, attempt: u16, max: u16, since: i64, before: Option<&[u8]>) -> Vec<u8> {
    let mut err = serde_json::json!({
        "type": "LeaseExpired",
        "message": format!("worker {worker} stopped renewing its lease while it ran this job (it died or hung); its attempts are used up ({attempt} of {max} counted)"),
        "traceback": "",
        "worker": worker,
        "started_at_ms": since,
    });
    if let Some(prev) = before.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()).filter(|v| v.is_object()) {
        err["previous"] = prev;
    }
    serde_json::to_vec(&err).unwrap_or_default()
}

/// Whether a blocked worker should wake: it was nudged, or one of the queues has its wake flag
/// (either is taken).
pub fn has_work(tx: &Transaction<'_>, queues: &[String], worker: &str) -> Sql<bool> {
    for q in queues {
        if tx.prepare_cached("DELETE FROM nudges WHERE queue = ?1 AND worker = ?2")?.execute(params![q, worker])? > 0 {
            return Ok(true);
        }
    }
    let mut take = tx.prepare_cached("UPDATE queues SET wake = 0 WHERE name = ?1 AND wake = 1")?;
    for q in queues {
        if take.execute([q])? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn nudge(tx: &Transaction<'_>, q: &str, worker: &str, w: &mut Wake) -> Sql<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO nudges (queue, worker) VALUES (?1, ?2)")?.execute(params![q, worker])?;
    w.work = true;
    Ok(())
}

//! One queue's operations in the SQLite store, each the SQL equivalent of one Redis script
//! (rust/store/redis/lua/) and of the memory store's `Queue` method of the same name, run in
//! the caller's transaction.

use super::record as rec;
use super::{Clock, Wake};
use crate::record::{is_generated_id, PRODUCER_LEN};
use crate::store::*;
use rusqlite::{params, OptionalExtension, Transaction};

type Sql<T> = rusqlite::Result<T>;

/// The events kept when the stream is on and no length was given.
const EVENTS_DEFAULT: u64 = 10_000;

/// A row of `jobs`: its rowid, id and record.
struct Row {
    rowid: i64,
    id: String,
    record: Vec<u8>,
}

fn ensure(tx: &Transaction<'_>, q: &str) -> Sql<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO queues (name) VALUES (?1)")?.execute([q])?;
    Ok(())
}

fn bump(tx: &Transaction<'_>, q: &str, stat: &str, n: u64) -> Sql<()> {
    if n > 0 {
        ensure(tx, q)?;
        tx.prepare_cached(&format!("UPDATE queues SET {stat} = {stat} + ?2 WHERE name = ?1"))?.execute(params![q, n as i64])?;
    }
    Ok(())
}

/// The next place at the tail, or (counting down) at the head, of the queue's ready order.
fn place(tx: &Transaction<'_>, q: &str, head: bool) -> Sql<i64> {
    ensure(tx, q)?;
    let sql = if head {
        "UPDATE queues SET head = head - 1 WHERE name = ?1 RETURNING head"
    } else {
        "UPDATE queues SET tail = tail + 1 WHERE name = ?1 RETURNING tail"
    };
    tx.prepare_cached(sql)?.query_row([q], |r| r.get(0))
}

fn paused(tx: &Transaction<'_>, q: &str) -> Sql<bool> {
    Ok(tx.prepare_cached("SELECT paused FROM queues WHERE name = ?1")?.query_row([q], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0) != 0)
}

fn any_ready(tx: &Transaction<'_>, q: &str) -> Sql<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'waiting')")?.query_row([q], |r| r.get(0))
}

/// common.lua wake: a paused queue wakes nobody.
fn wake(tx: &Transaction<'_>, q: &str, w: &mut Wake) -> Sql<()> {
    if !paused(tx, q)? && any_ready(tx, q)? {
        w.work = true;
    }
    Ok(())
}

/// Makes a row waiting at the tail or head of its priority's order.
fn make_ready(tx: &Transaction<'_>, q: &str, rowid: i64, record: &[u8], head: bool) -> Sql<()> {
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
fn find(tx: &Transaction<'_>, q: &str, id: &str, state: &str) -> Sql<Option<Row>> {
    tx.prepare_cached("SELECT rowid, id, record FROM jobs WHERE queue = ?1 AND id = ?2 AND state = ?3 LIMIT 1")?
        .query_row(params![q, id, state], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }))
        .optional()
}

fn delete(tx: &Transaction<'_>, rowid: i64) -> Sql<()> {
    tx.prepare_cached("DELETE FROM jobs WHERE rowid = ?1")?.execute([rowid])?;
    Ok(())
}

/// What an id is known as once its job is gone, for the marks' lifetime (as Redis's marks).
fn set_mark(tx: &Transaction<'_>, q: &str, id: &str, state: &str, c: Clock) -> Sql<()> {
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

fn release_dedup_of(tx: &Transaction<'_>, q: &str, r: &[u8], id: &str) -> Sql<()> {
    match rec::dedup(r) {
        Some(key) => release_dedup(tx, q, &key, id),
        None => Ok(()),
    }
}

/// common.lua cancel_unstarted: a job that had not started, settled as cancelled.
fn cancel_unstarted(tx: &Transaction<'_>, q: &str, row: &Row, c: Clock) -> Sql<()> {
    delete(tx, row.rowid)?;
    set_mark(tx, q, &row.id, "cancelled", c)?;
    release_dedup_of(tx, q, &row.record, &row.id)?;
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
fn fail_undecodable(tx: &Transaction<'_>, q: &str, row: &Row, now_ms: i64) -> Sql<()> {
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
    tx.prepare_cached("INSERT INTO queues (name, registered) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET registered = 1")?
        .execute([q])?;
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
            w.sched = true;
        } else {
            insert(tx, q, &j.id, "waiting", &j.record, None)?;
            any_ready = true;
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
    if any_ready {
        wake(tx, q, w)?;
    }
    Ok(out)
}

pub fn chunks_written(tx: &Transaction<'_>, q: &str, chunks: &[(String, u64)]) -> Sql<Vec<bool>> {
    let mut stmt = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM chunks WHERE queue = ?1 AND producer = ?2 AND first = ?3)")?;
    chunks.iter().map(|(p, first)| stmt.query_row(params![q, p, *first as i64], |r| r.get(0))).collect()
}

/// The queue's limits.
fn read_limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    let text: Option<String> =
        tx.prepare_cached("SELECT limits FROM queues WHERE name = ?1")?.query_row([q], |r| r.get(0)).optional()?.flatten();
    Ok(text.as_deref().map(decode_limits).unwrap_or_default())
}

/// The limits each group of the queue has.
fn read_group_limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    let text: Option<String> =
        tx.prepare_cached("SELECT group_limits FROM queues WHERE name = ?1")?.query_row([q], |r| r.get(0)).optional()?.flatten();
    Ok(text.as_deref().map(decode_limits).unwrap_or_default())
}

pub fn set_group_limits(tx: &Transaction<'_>, q: &str, limits: &Limits, w: &mut Wake) -> Sql<()> {
    ensure(tx, q)?;
    let text = (*limits != Limits::default()).then(|| encode_limits(limits, (0, 0)));
    tx.prepare_cached("UPDATE queues SET group_limits = ?2 WHERE name = ?1")?.execute(params![q, text])?;
    // New limits start their windows afresh.
    tx.prepare_cached("UPDATE groups SET window_used = 0, window_end_ms = 0 WHERE queue = ?1")?.execute([q])?;
    w.control = true;
    wake(tx, q, w)
}

pub fn group_limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    read_group_limits(tx, q)
}

/// Limits as `rate_max rate_ms window_used window_end_ms concurrency` (-1: none).
fn encode_limits(l: &Limits, window: (i64, i64)) -> String {
    let (max, ms) = l.rate.map(|(m, p)| (m as i64, p.as_millis() as i64)).unwrap_or((-1, -1));
    format!("{max} {ms} {} {} {}", window.0, window.1, l.concurrency.map(|c| c as i64).unwrap_or(-1))
}

fn limit_fields(text: &str) -> [i64; 5] {
    let mut f = [-1i64; 5];
    for (slot, v) in f.iter_mut().zip(text.split(' ')) {
        *slot = v.parse().unwrap_or(-1);
    }
    f
}

fn decode_limits(text: &str) -> Limits {
    let f = limit_fields(text);
    Limits {
        rate: (f[0] >= 0).then(|| (f[0] as u64, std::time::Duration::from_millis(f[1].max(0) as u64))),
        concurrency: (f[4] >= 0).then_some(f[4] as u64),
    }
}

fn active_count(tx: &Transaction<'_>, q: &str) -> Sql<u64> {
    tx.prepare_cached("SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'active'")?
        .query_row([q], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// How many ring members one reserve looks at beyond the jobs it wants (reserve.lua).
const GROUP_SCAN: usize = 1000;

/// When a member passed over at its limit may be leased again: Some(ms until its window
/// ends), or None (a settled job frees it); the outer None: no member was at its limit.
type ComeBack = Option<Option<i64>>;
/// Records served from the ring, each with its group (None: ungrouped).
type Served = Vec<(Option<String>, Vec<u8>)>;

/// Takes up to `n` waiting jobs of one ring member (None: the ungrouped jobs, by priority;
/// a group: in its order) and leases them under `token`; what is not a job record is failed.
/// Returns how many left the list and the records leased.
fn pop(tx: &Transaction<'_>, q: &str, member: Option<&str>, n: usize, token: &str, c: Clock) -> Sql<(usize, Vec<Vec<u8>>)> {
    let rows: Vec<Row> = match member {
        None => tx
            .prepare_cached(
                "SELECT rowid, id, record FROM jobs WHERE queue = ?1 AND state = 'waiting' AND grp IS NULL ORDER BY priority DESC, ord LIMIT ?2",
            )?
            .query_map(params![q, n as i64], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }))?
            .collect::<Sql<_>>()?,
        Some(g) => tx
            .prepare_cached("SELECT rowid, id, record FROM jobs WHERE queue = ?1 AND state = 'waiting' AND grp = ?2 ORDER BY ord LIMIT ?3")?
            .query_map(params![q, g, n as i64], |r| Ok(Row { rowid: r.get(0)?, id: r.get(1)?, record: r.get(2)? }))?
            .collect::<Sql<_>>()?,
    };
    let popped = rows.len();
    let mut recs = Vec::with_capacity(popped);
    let mut lease = tx.prepare_cached("UPDATE jobs SET state = 'active', token = ?2, started_ms = NULL, cancel = 0 WHERE rowid = ?1")?;
    let mut held =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND token = ?2 AND id = ?3 AND state = 'active')")?;
    for row in rows {
        if !rec::leasable(&row.record) {
            fail_undecodable(tx, q, &row, c.now_ms)?;
            continue;
        }
        if held.query_row(params![q, token, row.id], |r| r.get::<_, bool>(0))? {
            // The lease holds a job of that id already: this copy goes.
            delete(tx, row.rowid)?;
            continue;
        }
        lease.execute(params![row.rowid, token])?;
        recs.push(row.record);
    }
    Ok((popped, recs))
}

/// What a group may be leased now, and when it may be again when that is nothing.
fn group_allowance(tx: &Transaction<'_>, q: &str, g: &str, gl: &Limits, now_ms: i64) -> Sql<(usize, ComeBack)> {
    let mut a = usize::MAX;
    if let Some(conc) = gl.concurrency {
        let held: i64 = tx
            .prepare_cached("SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'active' AND grp = ?2")?
            .query_row(params![q, g], |r| r.get(0))?;
        if held as u64 >= conc {
            return Ok((0, Some(None)));
        }
        a = (conc - held as u64) as usize;
    }
    if let Some((max, _)) = gl.rate {
        let (used, ends): (i64, i64) = tx
            .prepare_cached("SELECT window_used, window_end_ms FROM groups WHERE queue = ?1 AND grp = ?2")?
            .query_row(params![q, g], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((0, 0));
        let used = if ends > now_ms { used as u64 } else { 0 };
        if used >= max {
            return Ok((0, Some(Some(ends - now_ms))));
        }
        a = a.min((max - used) as usize);
    }
    Ok((a, None))
}

/// reserve.lua's turns: the members at the head of the ring share `want` jobs, each up to its
/// group's limits; those served go to the back. Returns (member, record) in turn order.
fn serve_groups(tx: &Transaction<'_>, q: &str, want: usize, token: &str, c: Clock) -> Sql<(Served, ComeBack)> {
    let gl = read_group_limits(tx, q)?;
    let heads: Vec<Option<String>> = tx
        .prepare_cached(
            "SELECT g.grp FROM groups g WHERE g.queue = ?1 AND EXISTS (SELECT 1 FROM jobs j WHERE j.queue = ?1 AND j.state = 'waiting'
             AND ((g.grp = '' AND j.grp IS NULL) OR j.grp = g.grp)) ORDER BY g.turn, g.grp LIMIT ?2",
        )?
        .query_map(params![q, (want + GROUP_SCAN) as i64], |r| r.get::<_, String>(0))?
        .map(|g| g.map(|g| (!g.is_empty()).then_some(g)))
        .collect::<Sql<_>>()?;
    let mut lists: Vec<Vec<Vec<u8>>> = vec![Vec::new(); heads.len()];
    let mut cap: Vec<Option<usize>> = vec![None; heads.len()];
    let mut limited: ComeBack = None;
    let mut active: Vec<usize> = (0..heads.len()).collect();
    let (mut left, mut last) = (want, 0);
    while left > 0 && !active.is_empty() {
        let share = (left / active.len()).max(1);
        let mut keep = Vec::new();
        for &i in &active {
            if left == 0 {
                break;
            }
            last = last.max(i + 1);
            if cap[i].is_none() {
                let (a, wait) = match &heads[i] {
                    None => (usize::MAX, None),
                    Some(g) => group_allowance(tx, q, g, &gl, c.now_ms)?,
                };
                cap[i] = Some(a);
                if let Some(w) = wait {
                    let replace = match (limited, w) {
                        (None | Some(None), _) => true,
                        (Some(Some(cur)), Some(new)) => new > 0 && new < cur,
                        (Some(Some(_)), None) => false,
                    };
                    if replace {
                        limited = Some(w);
                    }
                }
            }
            let take = share.min(cap[i].unwrap_or(0)).min(left);
            if take == 0 {
                continue;
            }
            let (n, got) = pop(tx, q, heads[i].as_deref(), take, token, c)?;
            lists[i].extend(got);
            cap[i] = cap[i].map(|c| c.saturating_sub(n));
            left -= n;
            if n == take && cap[i].unwrap_or(0) > 0 {
                keep.push(i);
            }
        }
        active = keep;
    }
    let mut back = tx.prepare_cached("UPDATE groups SET turn = ?3 WHERE queue = ?1 AND grp = ?2")?;
    for member in &heads[..last] {
        let turn = place(tx, q, false)?;
        back.execute(params![q, member.as_deref().unwrap_or(""), turn])?;
    }
    let mut out = Vec::new();
    let mut at = vec![0usize; lists.len()];
    loop {
        let mut any = false;
        for (i, list) in lists.iter_mut().enumerate() {
            if at[i] < list.len() {
                out.push((heads[i].clone(), std::mem::take(&mut list[at[i]])));
                at[i] += 1;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    Ok((out, limited))
}

/// reserve.lua: up to `max` ready jobs leased under `token`, highest priority first, groups
/// taking turns.
pub fn reserve(tx: &Transaction<'_>, q: &str, token: &str, max: usize, lease_ms: i64, c: Clock, w: &mut Wake) -> Sql<Reserved> {
    if paused(tx, q)? {
        return Ok(Reserved::Paused);
    }
    let mut want = max.min(2000);
    let limits_text: Option<String> =
        tx.prepare_cached("SELECT limits FROM queues WHERE name = ?1")?.query_row([q], |r| r.get(0)).optional()?.flatten();
    let limits = limits_text.as_deref().map(decode_limits).unwrap_or_default();
    let mut window = None;
    if let Some(conc) = limits.concurrency {
        let held = active_count(tx, q)?;
        if held >= conc {
            return Ok(Reserved::Limited { retry_in: None });
        }
        want = want.min((conc - held) as usize);
    }
    if let Some((most, _)) = limits.rate {
        let f = limit_fields(limits_text.as_deref().unwrap_or(""));
        let (used, ends) = if f[3] > c.now_ms { (f[2].max(0) as u64, f[3]) } else { (0, 0) };
        if used >= most {
            return Ok(Reserved::Limited { retry_in: Some(std::time::Duration::from_millis((ends - c.now_ms).max(1) as u64)) });
        }
        want = want.min((most - used) as usize);
        window = Some((used, ends));
    }
    let grouped: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'waiting' AND grp IS NOT NULL)")?
        .query_row([q], |r| r.get(0))?;
    let (popped, served, limited) = if want > 0 && grouped {
        let (served, limited) = serve_groups(tx, q, want, token, c)?;
        (served.len(), served, limited)
    } else {
        let (popped, recs) = pop(tx, q, None, want, token, c)?;
        (popped, recs.into_iter().map(|r| (None, r)).collect(), None)
    };
    if served.is_empty() {
        if let Some(retry) = limited {
            return Ok(Reserved::Limited { retry_in: retry.map(|ms| std::time::Duration::from_millis(ms.max(1) as u64)) });
        }
        if popped > 0 {
            wake(tx, q, w)?;
        }
        return Ok(Reserved::Empty);
    }
    tx.prepare_cached(
        "INSERT INTO leases (queue, token, deadline_ms) VALUES (?1, ?2, ?3) ON CONFLICT (queue, token) DO UPDATE SET deadline_ms = ?3",
    )?
    .execute(params![q, token, c.now_ms + lease_ms])?;
    let n = served.len() as i64;
    if let (Some((used, ends)), Some((_, period))) = (window, limits.rate) {
        let w = if ends > c.now_ms { (used as i64 + n, ends) } else { (n, c.now_ms + period.as_millis() as i64) };
        tx.prepare_cached("UPDATE queues SET limits = ?2 WHERE name = ?1")?.execute(params![q, encode_limits(&limits, w)])?;
    }
    if let Some((_, period)) = read_group_limits(tx, q)?.rate {
        let mut per_group: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for g in served.iter().filter_map(|(g, _)| g.as_deref()) {
            *per_group.entry(g).or_default() += 1;
        }
        let mut count = tx.prepare_cached(
            "UPDATE groups SET window_used = CASE WHEN window_end_ms > ?3 THEN window_used + ?4 ELSE ?4 END,
             window_end_ms = CASE WHEN window_end_ms > ?3 THEN window_end_ms ELSE ?3 + ?5 END WHERE queue = ?1 AND grp = ?2",
        )?;
        for (g, k) in per_group {
            count.execute(params![q, g, c.now_ms, k, period.as_millis() as i64])?;
        }
    }
    if popped >= want {
        wake(tx, q, w)?;
    }
    Ok(Reserved::Jobs(served.into_iter().map(|(_, r)| r).collect()))
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
                    w.sched = true;
                } else {
                    make_ready(tx, q, held.rowid, record, false)?;
                    pushed = true;
                }
                bump(tx, q, "retried", 1)?;
                out.retried += 1;
            }
            AckKind::Failed { error, record } => {
                if let Some(key) = &e.dedup {
                    release_dedup(tx, q, &String::from_utf8_lossy(key), &id)?;
                }
                fail(tx, held.rowid, &id, record, error, c.now_ms)?;
                bump(tx, q, "failed", 1)?;
                out.failed += 1;
            }
            AckKind::Cancelled => {
                delete(tx, held.rowid)?;
                set_mark(tx, q, &id, "cancelled", c)?;
                release_dedup_of(tx, q, &held.record, &id)?;
                bump(tx, q, "cancelled", 1)?;
                out.cancelled += 1;
            }
        }
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
fn lease_rows(tx: &Transaction<'_>, q: &str, token: &str) -> Sql<Vec<(Row, Option<i64>, bool)>> {
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
            Some((row, true)) => cancel_unstarted(tx, q, &row, c)?,
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
                cancel_unstarted(tx, q, &row, c)?;
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
                }
                _ => back.push((row.rowid, rec::orphan(&row.record, attempt))),
            }
        }
        for (rowid, record) in back.iter().rev() {
            make_ready(tx, q, *rowid, record, true)?;
        }
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

/// Whether a blocked worker should wake: it was nudged (the nudge is taken), or one of the
/// queues has ready jobs and runs.
pub fn has_work(tx: &Transaction<'_>, queues: &[String], worker: &str) -> Sql<bool> {
    for q in queues {
        if tx.prepare_cached("DELETE FROM nudges WHERE queue = ?1 AND worker = ?2")?.execute(params![q, worker])? > 0 {
            return Ok(true);
        }
    }
    for q in queues {
        if !paused(tx, q)? && any_ready(tx, q)? {
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

fn timed(tx: &Transaction<'_>, table: &str, q: &str, id: &str, now_ms: i64) -> Sql<Option<Vec<u8>>> {
    tx.prepare_cached(&format!("SELECT value FROM {table} WHERE queue = ?1 AND id = ?2 AND expires_ms > ?3"))?
        .query_row(params![q, id, now_ms], |r| r.get(0))
        .optional()
}

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
fn finished(tx: &Transaction<'_>, q: &str, id: &str, c: Clock) -> Sql<State> {
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
    w.control = true;
    if !pause {
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

pub fn registered(tx: &Transaction<'_>) -> Sql<Vec<String>> {
    tx.prepare_cached("SELECT name FROM queues WHERE registered = 1 ORDER BY name")?.query_map([], |r| r.get(0))?.collect()
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
        return Ok(CancelReply { state: State::Failed, record: Some(row.record), done: true });
    }
    if let Some(row) = find(tx, q, id, "active")? {
        if !remove {
            tx.prepare_cached("UPDATE jobs SET cancel = 1 WHERE rowid = ?1")?.execute([row.rowid])?;
            w.control = true;
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
        return Ok(CancelReply { state, record: None, done: true });
    }
    Ok(CancelReply { state, record: None, done: false })
}

pub fn set_limits(tx: &Transaction<'_>, q: &str, limits: &Limits, w: &mut Wake) -> Sql<()> {
    ensure(tx, q)?;
    let text = (*limits != Limits::default()).then(|| encode_limits(limits, (0, 0)));
    tx.prepare_cached("UPDATE queues SET limits = ?2 WHERE name = ?1")?.execute(params![q, text])?;
    w.control = true;
    wake(tx, q, w)
}

pub fn limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    read_limits(tx, q)
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
    for table in
        ["jobs", "leases", "reaped", "marks", "watermarks", "chunks", "results", "dedup", "nudges", "progress", "logs", "callbacks"]
    {
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

pub fn set_events(tx: &Transaction<'_>, q: &str, keep: Option<u64>) -> Sql<()> {
    ensure(tx, q)?;
    let keep = keep.map(|k| if k == 0 { EVENTS_DEFAULT } else { k } as i64);
    tx.prepare_cached("UPDATE queues SET events_keep = ?2 WHERE name = ?1")?.execute(params![q, keep])?;
    Ok(())
}

pub fn events_keep(tx: &Transaction<'_>, q: &str) -> Sql<Option<u64>> {
    let keep: Option<Option<i64>> =
        tx.prepare_cached("SELECT events_keep FROM queues WHERE name = ?1")?.query_row([q], |r| r.get(0)).optional()?;
    Ok(keep.flatten().map(|k| k as u64))
}

/// feedback.lua: the entry with its time put first; returns the time.
pub fn feedback(tx: &Transaction<'_>, q: &str, id: &str, kind: Feedback, entry: &[u8], ttl_ms: i64, c: Clock) -> Sql<i64> {
    let mut line = format!("{{\"at\":{},", c.now_ms).into_bytes();
    line.extend_from_slice(&entry[1..]);
    let expires_ms = c.now_ms + ttl_ms;
    match kind {
        Feedback::Progress => {
            tx.prepare_cached(
                "INSERT INTO progress (queue, id, value, expires_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (queue, id) DO UPDATE SET value = ?3, expires_ms = ?4",
            )?
            .execute(params![q, id, line, expires_ms])?;
        }
        Feedback::Log => {
            tx.prepare_cached("DELETE FROM logs WHERE queue = ?1 AND id = ?2 AND expires_ms <= ?3")?.execute(params![q, id, c.now_ms])?;
            tx.prepare_cached("INSERT INTO logs (queue, id, line, expires_ms) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![q, id, line, expires_ms])?;
            tx.prepare_cached(
                "DELETE FROM logs WHERE queue = ?1 AND id = ?2 AND rowid NOT IN
                 (SELECT rowid FROM logs WHERE queue = ?1 AND id = ?2 ORDER BY rowid DESC LIMIT ?3)",
            )?
            .execute(params![q, id, MAX_LOG_LINES as i64])?;
            tx.prepare_cached("UPDATE logs SET expires_ms = ?3 WHERE queue = ?1 AND id = ?2")?.execute(params![q, id, expires_ms])?;
        }
    }
    Ok(c.now_ms)
}

pub fn progress(tx: &Transaction<'_>, q: &str, id: &str, c: Clock) -> Sql<Option<Vec<u8>>> {
    timed(tx, "progress", q, id, c.now_ms)
}

pub fn logs(tx: &Transaction<'_>, q: &str, id: &str, start: usize, limit: usize, c: Clock) -> Sql<Vec<Vec<u8>>> {
    tx.prepare_cached("SELECT line FROM logs WHERE queue = ?1 AND id = ?2 AND expires_ms > ?3 ORDER BY rowid LIMIT ?4 OFFSET ?5")?
        .query_map(params![q, id, c.now_ms, limit.min(i64::MAX as usize) as i64, start as i64], |r| r.get(0))?
        .collect()
}

pub fn callback_record(tx: &Transaction<'_>, q: &str, id: &str, fields: Vec<(&'static str, Vec<u8>)>, c: Clock) -> Sql<()> {
    let expires_ms = c.now_ms + c.result_ttl_ms;
    tx.prepare_cached("DELETE FROM callbacks WHERE queue = ?1 AND id = ?2 AND expires_ms <= ?3")?.execute(params![q, id, c.now_ms])?;
    let mut put = tx.prepare_cached(
        "INSERT INTO callbacks (queue, id, field, value, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (queue, id, field) DO UPDATE SET value = ?4, expires_ms = ?5",
    )?;
    for (f, v) in fields {
        put.execute(params![q, id, f, v, expires_ms])?;
    }
    tx.prepare_cached("UPDATE callbacks SET expires_ms = ?3 WHERE queue = ?1 AND id = ?2")?.execute(params![q, id, expires_ms])?;
    Ok(())
}

pub fn callback_status(tx: &Transaction<'_>, q: &str, id: &str, c: Clock) -> Sql<Vec<(String, Vec<u8>)>> {
    tx.prepare_cached("SELECT field, value FROM callbacks WHERE queue = ?1 AND id = ?2 AND expires_ms > ?3 ORDER BY rowid")?
        .query_map(params![q, id, c.now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

//! Reserving in the SQLite store (reserve.lua): a queue's limits, groups taking turns in a
//! ring with limits of their own, and the lease of what they allow.

use super::events::Stream;
use super::queue::*;
use super::record as rec;
use super::{Clock, Wake};
use crate::store::told::numbers_field;
use crate::store::*;
use rusqlite::{params, OptionalExtension, Transaction};

/// The queue's limits.
pub(super) fn read_limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    let text: Option<String> =
        tx.prepare_cached("SELECT limits FROM queues WHERE name = ?1")?.query_row([q], |r| r.get(0)).optional()?.flatten();
    Ok(text.as_deref().map(decode_limits).unwrap_or_default())
}

/// The limits each group of the queue has.
pub(super) fn read_group_limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
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
    w.control(q);
    wake(tx, q, w)
}

pub fn group_limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    read_group_limits(tx, q)
}

pub fn set_limits(tx: &Transaction<'_>, q: &str, limits: &Limits, w: &mut Wake) -> Sql<()> {
    ensure(tx, q)?;
    let text = (*limits != Limits::default()).then(|| encode_limits(limits, (0, 0)));
    tx.prepare_cached("UPDATE queues SET limits = ?2 WHERE name = ?1")?.execute(params![q, text])?;
    w.control(q);
    wake(tx, q, w)
}

pub fn limits(tx: &Transaction<'_>, q: &str) -> Sql<Limits> {
    read_limits(tx, q)
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
pub(super) type ComeBack = Option<Option<i64>>;

/// Records served from the ring, each with its group (None: ungrouped).
pub(super) type Served = Vec<(Option<String>, Vec<u8>)>;

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
    let (limits_text, keep): (Option<String>, Option<i64>) = tx
        .prepare_cached("SELECT limits, events_keep FROM queues WHERE name = ?1")?
        .query_row([q], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
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
    if keep.is_some() {
        let ids: Vec<String> = served.iter().map(|(_, r)| rec::id(r)).collect();
        let worker = token.split_once('.').map_or(token, |(w, _)| w);
        let attempts = numbers_field("a", served.iter().map(|(_, r)| rec::attempt(r) as i64));
        Stream::known(q, c.now_ms, keep.map(|k| k as u64)).tell(tx, "active", &ids, &[("w", worker.as_bytes().to_vec()), attempts])?;
    }
    Ok(Reserved::Jobs(served.into_iter().map(|(_, r)| r).collect()))
}

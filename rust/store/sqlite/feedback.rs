//! What running jobs leave in the SQLite store (feedback.lua): progress, log lines, callback
//! records.

use super::control::timed;
use super::events::Stream;
use super::queue::*;
use super::Clock;
use crate::store::told::json_list;
use crate::store::*;
use rusqlite::{params, Transaction};

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
            Stream::new(q, c.now_ms).tell(tx, "progress", &[id.to_string()], &[("x", json_list([Some(line.as_slice())]))])?;
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

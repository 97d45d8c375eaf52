//! A queue's events stream in the SQLite store (docs/DESIGN.md "Events"). While the queue's
//! `events_keep` is set, an operation adds one row per kind of change it made, listing its
//! jobs with the fields common.lua's `emit` writes (store/told.rs), as the in-process store
//! does. Writes are serialized (`BEGIN IMMEDIATE`), so the rows' numbers are the order of the
//! commits: a reader resumes after a number and misses nothing.
//!
//! Off, an operation that changed jobs pays one look-up of its queue's row (`Stream::on`, made
//! once per operation and only when there is something to tell).

use super::queue::{ensure, Sql};
use rusqlite::{params, OptionalExtension, Transaction};

/// The events kept when the stream is on and no length was given.
const EVENTS_DEFAULT: u64 = 10_000;
/// One insert in this many (by row number) trims its queue's stream back to `keep` rows: the
/// trim walks `keep` index entries, so done at every insert it would cost more than the insert.
const TRIM_EVERY: i64 = 64;

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

/// One operation's telling of a queue's stream.
pub struct Stream<'q> {
    q: &'q str,
    now_ms: i64,
    /// The queue's `events_keep`, once looked up.
    keep: Option<Option<u64>>,
}

impl<'q> Stream<'q> {
    pub fn new(q: &'q str, now_ms: i64) -> Stream<'q> {
        Stream { q, now_ms, keep: None }
    }

    /// A stream whose `events_keep` the caller read already (with the queue's other settings).
    pub fn known(q: &'q str, now_ms: i64, keep: Option<u64>) -> Stream<'q> {
        Stream { q, now_ms, keep: Some(keep) }
    }

    /// Whether the queue's stream is on (looked up on the first call).
    pub fn on(&mut self, tx: &Transaction<'_>) -> Sql<bool> {
        if self.keep.is_none() {
            self.keep = Some(events_keep(tx, self.q)?);
        }
        Ok(self.keep.flatten().is_some())
    }

    /// Adds an entry: `kind` happened to the jobs `ids`; `fields` per common.lua's `emit`
    /// (`n`, `a`, `d`, `x`, `w`). Nothing while the stream is off or without jobs.
    pub fn tell(&mut self, tx: &Transaction<'_>, kind: &str, ids: &[String], fields: &[(&str, Vec<u8>)]) -> Sql<()> {
        if ids.is_empty() || !self.on(tx)? {
            return Ok(());
        }
        let field = |k: &str| fields.iter().find(|(f, _)| *f == k).map(|(_, v)| v.as_slice());
        let seq: i64 = tx
            .prepare_cached(
                "INSERT INTO events (queue, at_ms, kind, ids, names, attempts, delays, data, worker)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING seq",
            )?
            .query_row(
                params![
                    self.q,
                    self.now_ms,
                    kind,
                    ids.join("\n"),
                    field("n"),
                    field("a"),
                    field("d"),
                    field("x"),
                    field("w").map(String::from_utf8_lossy)
                ],
                |r| r.get(0),
            )?;
        if seq % TRIM_EVERY == 0 {
            let keep = self.keep.flatten().unwrap_or(EVENTS_DEFAULT);
            tx.prepare_cached(
                "DELETE FROM events WHERE queue = ?1 AND seq <= (SELECT seq FROM events WHERE queue = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![self.q, keep.min(i64::MAX as u64) as i64])?;
        }
        Ok(())
    }

    /// `tell` of one job.
    pub fn tell_one(&mut self, tx: &Transaction<'_>, kind: &str, id: &str) -> Sql<()> {
        self.tell(tx, kind, &[id.to_string()], &[])
    }
}

/// One entry as a reader gets it: its id `<ms>-<seq>` and its fields.
pub type Entry = (String, Vec<(String, Vec<u8>)>);

/// Up to `limit` entries of the queue's stream after number `after`, oldest first.
pub fn read(tx: &Transaction<'_>, q: &str, after: i64, limit: usize) -> Sql<Vec<Entry>> {
    tx.prepare_cached(
        "SELECT seq, at_ms, kind, ids, names, attempts, delays, data, worker FROM events WHERE queue = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?
    .query_map(params![q, after, limit.min(i64::MAX as usize) as i64], |r| {
        let (seq, at_ms): (i64, i64) = (r.get(0)?, r.get(1)?);
        let mut fields = vec![("e".to_string(), r.get::<_, String>(2)?.into_bytes()), ("i".to_string(), r.get::<_, String>(3)?.into_bytes())];
        for (k, name) in [(4, "n"), (5, "a"), (6, "d"), (7, "x")] {
            if let Some(v) = r.get::<_, Option<Vec<u8>>>(k)? {
                fields.push((name.to_string(), v));
            }
        }
        if let Some(w) = r.get::<_, Option<String>>(8)? {
            fields.push(("w".to_string(), w.into_bytes()));
        }
        Ok((format!("{at_ms}-{seq}"), fields))
    })?
    .collect()
}

/// The id of the queue's newest entry.
pub fn last(tx: &Transaction<'_>, q: &str) -> Sql<Option<String>> {
    tx.prepare_cached("SELECT at_ms, seq FROM events WHERE queue = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([q], |r| Ok(format!("{}-{}", r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()
}

//! The events stream: written by the schema's triggers (migrations/008_events.sql, 013), read
//! here in the order of (horizon, seq), only below the reader's snapshot xmin, where no
//! transaction can still add a row (013_events_read.sql says why that order holds).

use super::{PgQueue, PgStore};
use crate::error::Result;

/// Events kept when a queue's stream is switched on without a number (as the other stores).
pub(super) const EVENTS_KEEP: u64 = 10_000;

/// Where an entry sits in the stream: (horizon, seq). (0, 0) is before every entry.
pub type EventPos = (i64, i64);

/// One entry of a queue's events stream (`PgStore::events_read`): a kind of change and the
/// jobs it happened to, with per job (where known) its name, attempt, due time (µs) and the
/// result, error or progress JSON; and for `active`, the worker.
#[derive(Debug, Clone)]
pub struct EventEntry {
    pub pos: EventPos,
    pub at_ms: i64,
    pub kind: String,
    pub ids: Vec<String>,
    pub names: Option<Vec<Option<String>>>,
    pub attempts: Option<Vec<Option<i32>>>,
    pub due_us: Option<Vec<Option<i64>>>,
    pub data: Option<Vec<Option<Vec<u8>>>>,
    pub worker: Option<String>,
}

impl PgStore {
    /// Up to `limit` entries of a queue's events stream after `after` ((0, 0): from the oldest
    /// kept), in the stream's order: one per statement and kind of change, listing its jobs.
    pub async fn events_read(&self, q: &PgQueue, after: EventPos, limit: usize) -> Result<Vec<EventEntry>> {
        // Only rows below the reader's snapshot xmin: final.
        let sql = "SELECT horizon::text::bigint, seq, at_ms, kind, ids, names, attempts, due_us, data, worker FROM fastjobs.events
                   WHERE queue = $1 AND (horizon, seq) > ($2::bigint::text::xid8, $3) AND horizon < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY horizon, seq LIMIT $4";
        let rows = self.query(sql, &[&q.name, &after.0, &after.1, &(limit as i64)]).await?;
        Ok(rows
            .into_iter()
            .map(|r| EventEntry {
                pos: (r.get(0), r.get(1)),
                at_ms: r.get(2),
                kind: r.get(3),
                ids: r.get(4),
                names: r.get(5),
                attempts: r.get(6),
                due_us: r.get(7),
                data: r.get(8),
                worker: r.get(9),
            })
            .collect())
    }

    /// Where the newest entry sits, None when there is none: where a reader of only new events
    /// starts. Waited for (up to `LAST_WAIT`) until no transaction can still add a row before
    /// it, so that what commits afterwards all comes after it.
    pub async fn events_last(&self, q: &PgQueue) -> Result<Option<EventPos>> {
        let sql = "SELECT horizon::text::bigint, seq, horizon < pg_snapshot_xmin(pg_current_snapshot()) FROM fastjobs.events
                   WHERE queue = $1 ORDER BY horizon DESC, seq DESC LIMIT 1";
        let deadline = tokio::time::Instant::now() + LAST_WAIT;
        loop {
            let Some(r) = self.query(sql, &[&q.name]).await?.into_iter().next() else { return Ok(None) };
            if r.get::<_, bool>(2) || tokio::time::Instant::now() >= deadline {
                return Ok(Some((r.get(0), r.get(1))));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// How long `events_last` waits for transactions in flight to end.
const LAST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

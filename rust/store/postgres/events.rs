//! The events stream: written by the schema's triggers (migrations/008_events.sql), read here.

use super::{PgQueue, PgStore};
use crate::error::Result;

/// Events kept when a queue's stream is switched on without a number (as the other stores).
pub(super) const EVENTS_KEEP: u64 = 10_000;

/// One entry of a queue's events stream (`PgStore::events_read`): a kind of change and the
/// jobs it happened to, with per job (where known) its name, attempt, due time (µs) and the
/// result or error JSON.
#[derive(Debug, Clone)]
pub struct EventEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub ids: Vec<String>,
    pub names: Option<Vec<Option<String>>>,
    pub attempts: Option<Vec<Option<i32>>>,
    pub due_us: Option<Vec<Option<i64>>>,
    pub data: Option<Vec<Option<Vec<u8>>>>,
}

impl PgStore {
    /// Up to `limit` entries of a queue's events stream after `after` (0: from the oldest kept),
    /// oldest first: one per statement and kind of change, listing its jobs.
    pub async fn events_read(&self, q: &PgQueue, after: i64, limit: usize) -> Result<Vec<EventEntry>> {
        let rows = self
            .query(
                "SELECT seq, at_ms, kind, ids, names, attempts, due_us, data FROM fastjobs.events
                 WHERE queue = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&q.name, &after, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| EventEntry {
                seq: r.get(0),
                at_ms: r.get(1),
                kind: r.get(2),
                ids: r.get(3),
                names: r.get(4),
                attempts: r.get(5),
                due_us: r.get(6),
                data: r.get(7),
            })
            .collect())
    }
}

//! The engine's values as the schema's columns, and rows back as the engine's values.

use crate::store::*;
use std::collections::HashMap;

/// An array argument that may be NULL, of elements that may be NULL.
pub(super) type Column<T> = Option<Vec<Option<T>>>;

/// The deduplication keys of a write and their modes (`fastjobs.dedup_hold`), or NULLs when
/// no job has one (the set-based path).
pub(super) fn dedup_columns(jobs: &[NewJob]) -> (Column<&str>, Column<String>) {
    if jobs.iter().all(|j| j.dedup.is_none()) {
        return (None, None);
    }
    let keys = jobs.iter().map(|j| j.dedup.as_ref().map(|d| d.key.as_str())).collect();
    let modes = jobs
        .iter()
        .map(|j| {
            j.dedup.as_ref().map(|d| match d.mode {
                DedupMode::Ttl(ms) => format!("t{ms}"),
                DedupMode::UntilSettled => "u".to_string(),
                DedupMode::Debounce => "d".to_string(),
            })
        })
        .collect();
    (Some(keys), Some(modes))
}

/// Limits as the schema's columns: jobs per window, window ms, concurrency (NULL: none).
pub(super) fn limit_columns(limits: &Limits) -> (Option<i64>, Option<i64>, Option<i64>) {
    let rate_max = limits.rate.map(|(n, _)| n as i64);
    let period = limits.rate.map(|(_, p)| p.as_millis().max(1) as i64);
    (rate_max, period, limits.concurrency.map(|c| c as i64))
}

/// One lease's outcomes as the columns `fastjobs.ack` takes (kind 'c', 'r', 'f' or 'x').
pub(super) struct AckColumns<'a> {
    pub kinds: Vec<i8>,
    pub ids: Vec<String>,
    pub results: Vec<Option<&'a [u8]>>,
    pub delays: Vec<i64>,
    pub recs: Vec<Option<&'a [u8]>>,
    pub errors: Vec<Option<&'a [u8]>>,
}

impl<'a> AckColumns<'a> {
    pub fn of(entries: &'a [AckEntry]) -> AckColumns<'a> {
        let mut c = AckColumns { kinds: vec![], ids: vec![], results: vec![], delays: vec![], recs: vec![], errors: vec![] };
        for e in entries {
            c.ids.push(String::from_utf8_lossy(&e.id).into_owned());
            let (kind, result, delay, rec, err) = match &e.kind {
                AckKind::Completed { result } => (b'c', result.as_deref(), 0, None, None),
                AckKind::Retry { delay_ms, record, error } => {
                    (b'r', None, *delay_ms as i64, Some(record.as_slice()), Some(error.as_slice()))
                }
                AckKind::Failed { error, record } => (b'f', None, 0, Some(record.as_slice()), Some(error.as_slice())),
                AckKind::Cancelled => (b'x', None, 0, None, None),
            };
            c.kinds.push(kind as i8);
            c.results.push(result);
            c.delays.push(delay);
            c.recs.push(rec);
            c.errors.push(err);
        }
        c
    }
}

/// A schedule's row as the entry the engine reads: the caller's fields and its bookkeeping.
pub(super) fn schedule_entry(r: tokio_postgres::Row) -> ScheduleEntry {
    let mut fields: HashMap<String, Vec<u8>> = HashMap::new();
    let names: Vec<String> = r.get(9);
    let vals: Vec<Vec<u8>> = r.get(10);
    fields.extend(names.into_iter().zip(vals));
    fields.insert("timing".into(), r.get::<_, String>(2).into_bytes());
    for (i, name) in [(3, "anchor_ms"), (4, "created_ms"), (5, "updated_ms"), (6, "runs")] {
        fields.insert(name.into(), r.get::<_, i64>(i).to_string().into_bytes());
    }
    if let Some(last) = r.get::<_, Option<i64>>(7) {
        fields.insert("last_run_ms".into(), last.to_string().into_bytes());
    }
    if let Some(job) = r.get::<_, Option<String>>(8) {
        fields.insert("last_job_id".into(), job.into_bytes());
    }
    ScheduleEntry { key: r.get(0), next_ms: r.get(1), fields }
}

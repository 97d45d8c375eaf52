//! Schedules (`JobScheduler`): their timing rules, and the driver that turns each due tick
//! into exactly one job.
//!
//! A schedule is a hash of fields in Redis plus its next run in a zset (keys.rs,
//! `ScheduleKeys`). Every worker process runs one driver; any number of them may fire the
//! same tick at once, because firing is two idempotent steps: enqueue the job under the
//! deterministic id `<key>@<tick ms>` (a second enqueue is refused as a duplicate), then move
//! the schedule on only if the tick is still its next run (sched_advance.lua). A crash between
//! the steps leaves the tick pending; the next driver enqueues nothing new and moves it on.

use crate::cron::Cron;
use crate::error::{Error, Result};
use crate::record::{check_fields, pack_into, Header};
use crate::store::{NewJob, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How a schedule repeats.
pub enum Rule {
    Cron(Cron),
    /// Runs at `anchor + k * every` (k ≥ 1, or k ≥ 0 when the first run is the anchor).
    Every {
        every_ms: i64,
        anchor_ms: i64,
    },
}

pub struct Timing {
    pub rule: Rule,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Total number of runs, after which the schedule is removed.
    pub limit: Option<u64>,
    /// The first run happens at once (or at `start`) rather than on the first tick after it.
    pub immediately: bool,
}

fn every_next(every_ms: i64, anchor_ms: i64, after: i64) -> i64 {
    if after < anchor_ms {
        anchor_ms
    } else {
        anchor_ms + ((after - anchor_ms) / every_ms + 1) * every_ms
    }
}

impl Timing {
    /// The first run of a schedule created (or given a new timing) at `now`.
    pub fn first_run(&self, now: i64) -> Option<i64> {
        let from = self.start_ms.map_or(now, |s| s.max(now));
        let t = if self.immediately {
            Some(from)
        } else {
            match &self.rule {
                Rule::Cron(c) => c.next_after(from - 1),
                Rule::Every { every_ms, anchor_ms } if self.start_ms.is_some() => Some(every_next(*every_ms, *anchor_ms, from - 1)),
                Rule::Every { every_ms, anchor_ms } => Some(every_next(*every_ms, *anchor_ms, from)),
            }
        };
        t.filter(|t| self.end_ms.is_none_or(|end| *t <= end))
    }

    /// The run after the one due at `tick`, fired at `now`. Ticks missed while no worker ran
    /// are not replayed one by one: the overdue tick runs once and the schedule resumes at
    /// its first tick after `now`.
    pub fn next_after(&self, tick: i64, now: i64) -> Option<i64> {
        let after = tick.max(now);
        let t = match &self.rule {
            Rule::Cron(c) => c.next_after(after),
            Rule::Every { every_ms, anchor_ms } => Some(every_next(*every_ms, *anchor_ms, after)),
        };
        t.filter(|t| self.end_ms.is_none_or(|end| *t <= end))
    }
}

/// One stored schedule: its key, its next run and the fields of its hash.
#[derive(Debug, Clone)]
pub struct ScheduleEntry {
    pub key: String,
    pub next_ms: i64,
    pub fields: HashMap<String, Vec<u8>>,
}

impl ScheduleEntry {
    pub fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(|v| std::str::from_utf8(v).ok()).filter(|s| !s.is_empty())
    }

    fn number<T: std::str::FromStr>(&self, field: &str) -> Result<Option<T>> {
        match self.text(field) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| Error::Store(format!("schedule {:?} has a bad {field} value {s:?}", self.key))),
        }
    }

    fn required(&self, field: &str) -> Result<&str> {
        self.text(field).ok_or_else(|| Error::Store(format!("schedule {:?} lacks its {field} field", self.key)))
    }

    /// The timing rules as stored (validated when the schedule was written).
    pub fn timing(&self) -> Result<Timing> {
        let rule = match self.text("pattern") {
            Some(p) => Rule::Cron(Cron::parse(p, self.text("tz").unwrap_or("UTC")).map_err(|e| Error::Invalid(e.to_string()))?),
            None => {
                Rule::Every { every_ms: self.number("every_ms")?.unwrap_or(0).max(1), anchor_ms: self.number("anchor_ms")?.unwrap_or(0) }
            }
        };
        Ok(Timing {
            rule,
            start_ms: self.number("start_ms")?,
            end_ms: self.number("end_ms")?,
            limit: self.number("limit")?,
            immediately: self.text("immediately") == Some("1"),
        })
    }

    /// The job of the tick due at `tick_ms`, with its deterministic id.
    pub fn job(&self, tick_ms: i64, now_ms: i64) -> Result<(String, NewJob)> {
        let id = format!("{}@{tick_ms}", self.key);
        let name = self.required("job")?;
        let options = self.fields.get("options").map(Vec::as_slice).unwrap_or(b"");
        check_fields(&id, name, options)?;
        let header =
            Header { attempt: 0, max_attempts: self.number("attempts")?.unwrap_or(1), priority: self.number("priority")?.unwrap_or(0) };
        let payload = self.fields.get("payload").map(Vec::as_slice).unwrap_or(b"null");
        let mut record = Vec::new();
        pack_into(&mut record, header, &id, name, now_ms.max(0) as u64, options, payload);
        let group = crate::record::options_group(options)?;
        Ok((
            self.required("queue")?.to_string(),
            NewJob { id: id.clone(), custom_id: true, delay_us: 0, at_us: None, record, dedup: None, group },
        ))
    }
}

/// Upper bound of one sleep: a safety net for a wake-up lost with a broken subscription.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// How long a schedule whose definition cannot be read waits before it is tried again.
const PUT_ASIDE: Duration = Duration::from_secs(3600);
const BATCH: usize = 100;

/// Fires due ticks until the task is aborted. One per worker process.
pub async fn drive<S: Store>(store: Arc<S>, on_error: impl Fn(&Error)) {
    let mut queues: HashMap<String, Arc<S::Queue>> = HashMap::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Listen before reading, so a change published between the two is not missed.
        let signal = match store.schedules_signal().await {
            Ok(n) => Some(n),
            Err(e) => {
                on_error(&e);
                None
            }
        };
        let mut sleep = backoff;
        match store.schedules_due(BATCH).await {
            Ok(due) => {
                let mut failed = false;
                for (key, tick) in &due.due {
                    match fire(&*store, &mut queues, key, *tick, due.now_ms).await {
                        Ok(()) => {}
                        // Its stored definition cannot be read (written by something else):
                        // put aside for an hour rather than failing every round, and said.
                        Err(e) if !e.is_retryable() => {
                            let until = due.now_ms + PUT_ASIDE.as_millis() as i64;
                            let msg = format!("schedule {key:?} put aside for an hour: {e}");
                            on_error(&Error::Store(msg));
                            if let Err(e) = store.schedule_advance(key, *tick, Some(until), "").await {
                                on_error(&e);
                            }
                        }
                        Err(e) => {
                            on_error(&e);
                            failed = true;
                        }
                    }
                }
                if failed {
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                } else {
                    backoff = Duration::from_millis(50);
                    if !due.due.is_empty() {
                        continue;
                    }
                    sleep = match due.head_ms {
                        Some(at) => Duration::from_millis((at - due.now_ms).max(0) as u64).min(MAX_SLEEP),
                        None => MAX_SLEEP,
                    };
                }
            }
            Err(e) => {
                on_error(&e);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        match signal {
            Some(n) => tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = n.notified() => {}
            },
            None => tokio::time::sleep(sleep.min(backoff)).await,
        }
    }
}

async fn fire<S: Store>(store: &S, queues: &mut HashMap<String, Arc<S::Queue>>, key: &str, tick: i64, now: i64) -> Result<()> {
    let Some(entry) = store.schedule_read(Some(vec![key.to_string()])).await?.pop() else {
        return Ok(()); // removed meanwhile
    };
    if entry.next_ms != tick {
        return Ok(()); // moved on by another driver or retimed by an upsert
    }
    let timing = entry.timing()?;
    let runs: u64 = entry.number("runs")?.unwrap_or(0);
    let next = if timing.limit.is_some_and(|l| runs + 1 >= l) { None } else { timing.next_after(tick, now) };
    let (queue, job) = entry.job(tick, now)?;
    let q = match queues.get(&queue) {
        Some(q) => q.clone(),
        None => {
            let q = store.queue(&queue)?;
            queues.insert(queue, q.clone());
            q
        }
    };
    let id = job.id.clone();
    store.enqueue(&q, std::slice::from_ref(&job), None).await?;
    store.schedule_advance(key, tick, next, &id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(every_ms: i64, anchor_ms: i64) -> Timing {
        Timing { rule: Rule::Every { every_ms, anchor_ms }, start_ms: None, end_ms: None, limit: None, immediately: false }
    }

    #[test]
    fn interval_schedules_stay_on_their_grid() {
        let t = every(1000, 10_000);
        assert_eq!(t.first_run(10_000), Some(11_000));
        assert_eq!(t.next_after(11_000, 11_001), Some(12_000));
        // After downtime the overdue tick ran once; the next one is the first after now.
        assert_eq!(t.next_after(12_000, 15_500), Some(16_000));
    }

    #[test]
    fn start_end_and_immediately_bound_the_runs() {
        let mut t = every(1000, 20_000);
        t.start_ms = Some(20_000);
        assert_eq!(t.first_run(10_000), Some(20_000));
        t.end_ms = Some(21_000);
        assert_eq!(t.next_after(21_000, 21_000), None);
        let mut c = Timing {
            rule: Rule::Cron(Cron::parse("0 * * * *", "UTC").unwrap()),
            start_ms: None,
            end_ms: None,
            limit: None,
            immediately: true,
        };
        assert_eq!(c.first_run(1_000), Some(1_000));
        c.immediately = false;
        assert_eq!(c.first_run(1_000), Some(3_600_000));
        assert_eq!(c.next_after(3_600_000, 3_600_010), Some(7_200_000));
    }
}

//! Every Redis key and channel name, built in one place, and queue-name validation.
//!
//! All keys of one queue share the hash tag `{<queue>}`, so a queue lives in one Redis
//! Cluster slot and every script that touches it is single-slot.

use crate::error::{Error, Result};

/// The key names of one queue.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    pub name: String,
    /// `<prefix>:{<queue>}`: every key of the queue starts with it.
    pub base: String,
    pub wait: String,
    /// Priority levels that have a ready list of their own (`wait:<p>`).
    pub prios: String,
    /// Records held in runs beyond one per element of `wait` (see record.rs, common.lua).
    pub runs: String,
    pub wake: String,
    /// zset: idle workers' slots (`<worker>|<token>|<lease ms>`) -> when they registered.
    pub idle: String,
    pub active: String,
    pub delayed: String,
    pub jobs: String,
    pub failed: String,
    pub errors: String,
    pub stats: String,
    pub waiters: String,
    /// Pub/sub channel carrying results of jobs somebody waits for.
    pub results_channel: String,
    /// Pub/sub channel telling schedulers that a job fell due earlier than they knew.
    pub sched_channel: String,
    /// Set while the queue is paused (pause.lua, resume.lua).
    pub paused: String,
    /// Pub/sub channel telling the queue's workers that it was paused or resumed, a job was
    /// asked to cancel, or its limits changed.
    pub control_channel: String,
    /// The queue's limits (limit.lua), read by reserve.lua.
    pub limit: String,
    /// Jobs leased in the current rate-limit window (expires with the window).
    pub limiter: String,
    /// The limits each group of the queue has (limit.lua), read by reserve.lua; the groups'
    /// own keys (`group:<key>`, the ring `groups`, `gwaiting`, `gactive`, `glimiter:<key>`)
    /// are built by the scripts from the key base (common.lua).
    pub glimit: String,
}

impl QueueKeys {
    pub fn new(prefix: &str, queue: &str) -> Result<QueueKeys> {
        crate::store::validate_queue_name(queue)?;
        let base = format!("{prefix}:{{{queue}}}");
        let k = |s: &str| format!("{base}:{s}");
        Ok(QueueKeys {
            name: queue.to_string(),
            wait: k("wait"),
            prios: k("prios"),
            runs: k("runs"),
            wake: k("wake"),
            idle: k("idle"),
            active: k("active"),
            delayed: k("delayed"),
            jobs: k("jobs"),
            failed: k("failed"),
            errors: k("errors"),
            stats: k("stats"),
            waiters: k("waiters"),
            results_channel: k("results"),
            sched_channel: k("sched"),
            paused: k("paused"),
            control_channel: k("control"),
            limit: k("limit"),
            limiter: k("limiter"),
            glimit: k("glimit"),
            base,
        })
    }

    pub fn lease(&self, token: &str) -> String {
        format!("{}:lease:{token}", self.base)
    }

    /// Starts recorded under a lease (start.lua): job id -> started at ms.
    pub fn started(&self, token: &str) -> String {
        format!("{}:started:{token}", self.base)
    }

    /// The list a worker blocks on for jobs handed straight to it (see common.lua wake()).
    pub fn inbox(&self, worker: &str) -> String {
        format!("{}:inbox:{worker}", self.base)
    }

    /// The high-water mark of a producer's sequence numbers: ids up to it were dispatched.
    pub fn hwm(&self, producer: &str) -> String {
        format!("{}:hwm:{producer}", self.base)
    }

    /// Bitmap of a producer's bulk chunks that were written: bit `first seq` of each chunk.
    pub fn sent(&self, producer: &str) -> String {
        format!("{}:sent:{producer}", self.base)
    }

    /// Marker of a job dispatched with a caller-chosen id (dedup and status).
    pub fn id_key(&self, id: &str) -> String {
        format!("{}:id:{id}", self.base)
    }

    /// A deduplication key's mark: the id of the job holding the key (enqueue.lua).
    pub fn dedup_key(&self, key: &str) -> String {
        format!("{}:dedup:{key}", self.base)
    }

    /// The last progress a running job reported (`self.progress()`, feedback.lua): JSON.
    pub fn progress(&self, id: &str) -> String {
        format!("{}:progress:{id}", self.base)
    }

    /// The queue's events stream (common.lua emit), written while `events_on` holds its length.
    pub fn events(&self) -> String {
        format!("{}:events", self.base)
    }

    /// The length the events stream keeps (entries, approximately), or missing: no events.
    pub fn events_on(&self) -> String {
        format!("{}:events:on", self.base)
    }

    /// The log lines a job wrote (`self.log()`, feedback.lua): a list of JSON lines, the
    /// newest `MAX_LOG_LINES` kept.
    pub fn logs(&self, id: &str) -> String {
        format!("{}:logs:{id}", self.base)
    }

    /// How a job's callback went (callback.rs): a hash of state, event, url, attempts, code,
    /// error, at; kept as long as results.
    pub fn callback(&self, id: &str) -> String {
        format!("{}:callback:{id}", self.base)
    }
}

/// The set of every queue's name (`<prefix>:queues`): a queue joins it when a producer first
/// writes to it or a worker first consumes it (once per process), for listing queues and for
/// telling a known queue from a misspelt one.
pub fn queue_registry(prefix: &str) -> String {
    format!("{prefix}:queues")
}

/// The worker registry (`<prefix>:workers`): a hash of worker id -> JSON entry that each
/// running worker refreshes every few seconds and deletes on a clean stop (`fastjobs.workers()`).
pub fn worker_registry(prefix: &str) -> String {
    format!("{prefix}:workers")
}

/// The key names of the schedule book (JobScheduler). They share the hash tag `{schedules}`,
/// so every schedule script is single-slot; firing a tick writes to a queue in a second,
/// idempotent step (the tick's job id is deterministic).
#[derive(Debug, Clone)]
pub struct ScheduleKeys {
    pub prefix: String,
    /// zset: schedule key -> next run, ms since the epoch.
    pub next: String,
    /// Pub/sub channel telling drivers that a schedule was added or changed.
    pub channel: String,
    def_base: String,
}

impl ScheduleKeys {
    pub fn new(prefix: &str) -> ScheduleKeys {
        let base = format!("{prefix}:{{schedules}}");
        ScheduleKeys {
            prefix: prefix.to_string(),
            next: format!("{base}:next"),
            channel: format!("{base}:wake"),
            def_base: format!("{base}:def:"),
        }
    }

    /// The hash holding one schedule's definition and run counters.
    pub fn def(&self, key: &str) -> String {
        format!("{}{key}", self.def_base)
    }

    pub fn def_base(&self) -> &str {
        &self.def_base
    }
}

/// The bookkeeping hash of one workflow: `chain:<id>` (JobChain: steps, results, where it
/// stopped) or `flow:<id>` (JobFlow: the tree, pending counts, specs of waiting parents). Its
/// own hash tag, since a workflow's jobs may live on several queues; a flow's results hashes
/// (`…:results:<node>`) share it.
pub fn book_key(prefix: &str, book: &str) -> Result<String> {
    crate::store::check_book(book)?;
    Ok(format!("{prefix}:{{{book}}}"))
}

/// Schedule keys: 1 to 200 characters, no whitespace or control characters (they end up in
/// job ids, `<key>@<tick ms>`).
pub fn validate_schedule_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 200 || key.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(Error::Invalid(format!("invalid schedule key {key:?}: use 1 to 200 characters without spaces or control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let k = QueueKeys::new("fj", "emails").unwrap();
        assert_eq!(k.wait, "fj:{emails}:wait");
        assert_eq!(k.lease("t1"), "fj:{emails}:lease:t1");
        assert!(k.hwm("abc").starts_with("fj:{emails}:"));
    }

    #[test]
    fn bad_queue_names_are_refused() {
        for bad in ["", "a b", "x{y}", "é", &"q".repeat(101)] {
            assert!(QueueKeys::new("fj", bad).is_err(), "{bad:?}");
        }
        assert!(QueueKeys::new("fj", "high-priority.v2:eu_1").is_ok());
    }
}

//! A job written by the caller's own connection, inside its transaction (Python's
//! `send(conn=...)`): the same call of `fastjobs.enqueue_many` as `write_jobs` makes, with the
//! record packed by the engine, its arguments handed to the caller's driver. The job exists
//! once that transaction commits, never if it rolls back; the wake-up (`pg_notify`) is
//! delivered at the commit too.

use super::columns::dedup_columns;
use super::{PgQueue, PgStore, MARK_TTL_MS};
use crate::store::NewJob;

/// The statement, with named placeholders in the style psycopg (3) and psycopg2 both take.
/// Every argument is cast: a driver that sends untyped values still picks this function.
/// Its one value is the function's answer for the job: `n` written, `e` a job with that
/// caller-chosen id exists, `d<id>` deduplicated by job `<id>`.
pub const ENQUEUE_SQL: &str = "SELECT (fastjobs.enqueue_many(%(queue)s::text, ARRAY[%(id)s::text], ARRAY[%(record)s::bytea], \
     ARRAY[%(custom)s::boolean], ARRAY[%(delay_us)s::bigint], ARRAY[%(at_us)s::bigint], NULL, NULL, %(dedup_keys)s::text[], \
     %(dedup_modes)s::text[], %(ttl_ms)s::bigint, ARRAY[%(group)s::text]))[1]";

/// The arguments of `ENQUEUE_SQL` for one job.
pub struct EnqueueArgs {
    pub queue: String,
    pub id: String,
    pub record: Vec<u8>,
    pub custom: bool,
    pub delay_us: i64,
    pub at_us: Option<i64>,
    pub dedup_keys: Option<Vec<Option<String>>>,
    pub dedup_modes: Option<Vec<Option<String>>>,
    pub ttl_ms: i64,
    pub group: Option<String>,
}

impl PgStore {
    /// The arguments that write `job` (packed and checked by the engine) to `q` as
    /// `enqueue` would, for a statement the caller runs in its own transaction.
    pub fn enqueue_args(&self, q: &PgQueue, job: &NewJob) -> EnqueueArgs {
        let (keys, modes) = dedup_columns(std::slice::from_ref(job));
        EnqueueArgs {
            queue: q.name.clone(),
            id: job.id.clone(),
            record: job.record.clone(),
            custom: job.custom_id,
            delay_us: job.delay_us as i64,
            at_us: job.at_us.map(|a| a as i64),
            dedup_keys: keys.map(|k| k.into_iter().map(|k| k.map(str::to_string)).collect()),
            dedup_modes: modes,
            ttl_ms: self.result_ttl_ms().max(MARK_TTL_MS),
            group: job.group.clone(),
        }
    }
}

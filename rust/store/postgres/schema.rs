//! The schema: numbered migrations (migrations/NNN_*.sql), applied in order by
//! `PgStore::init_schema` (`fastjobs db init`), each in one transaction with its version row.

use super::pool::pg_error;
use crate::error::{Error, Result};
use tokio_postgres::Client;

/// (version, SQL), in order. A migration only adds: CREATE ... IF NOT EXISTS, CREATE OR
/// REPLACE FUNCTION, so applying one twice changes nothing.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/001_jobs.sql")),
    (2, include_str!("migrations/002_schedules.sql")),
    (3, include_str!("migrations/003_flows.sql")),
    (4, include_str!("migrations/004_limits_dedup.sql")),
    (5, include_str!("migrations/005_bulk_copy.sql")),
    (6, include_str!("migrations/006_housekeeping.sql")),
    (7, include_str!("migrations/007_groups.sql")),
    (8, include_str!("migrations/008_events.sql")),
    (9, include_str!("migrations/009_undecodable.sql")),
    (10, include_str!("migrations/010_record.sql")),
    (11, include_str!("migrations/011_parity.sql")),
    (12, include_str!("migrations/012_drain.sql")),
    (13, include_str!("migrations/013_events_read.sql")),
];

/// The version this build needs.
pub(crate) fn current() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Applies the migrations the database lacks; returns the versions applied. Concurrent calls
/// are serialized by an advisory lock.
pub(crate) async fn init(client: &mut Client, server: &str) -> Result<Vec<i32>> {
    let err = |e| pg_error(e, server);
    let tx = client.transaction().await.map_err(err)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7135022913); CREATE SCHEMA IF NOT EXISTS fastjobs;
         CREATE TABLE IF NOT EXISTS fastjobs.schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
    )
    .await
    .map_err(err)?;
    let have: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM fastjobs.schema_version", &[]).await.map_err(err)?.get(0);
    let mut applied = vec![];
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.batch_execute(sql).await.map_err(|e| match pg_error(e, server) {
            Error::Store(m) | Error::Schema(m) => Error::Store(format!("migration {version} of the fastjobs schema failed: {m}")),
            other => other,
        })?;
        tx.execute("INSERT INTO fastjobs.schema_version (version) VALUES ($1)", &[version]).await.map_err(err)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(err)?;
    Ok(applied)
}

/// Ok when the database has the schema this build needs; else a typed error that says what to run.
pub(crate) async fn check(client: &Client, server: &str) -> Result<()> {
    let row = client.query_one("SELECT to_regclass('fastjobs.schema_version') IS NOT NULL", &[]).await.map_err(|e| pg_error(e, server))?;
    let version: i32 = if row.get(0) {
        client
            .query_one("SELECT coalesce(max(version), 0) FROM fastjobs.schema_version", &[])
            .await
            .map_err(|e| pg_error(e, server))?
            .get(0)
    } else {
        0
    };
    if version >= current() {
        return Ok(());
    }
    let what = if version == 0 {
        "has no fastjobs schema".to_string()
    } else {
        format!("has fastjobs schema version {version}, this fastjobs needs {}", current())
    };
    Err(Error::Schema(format!("the PostgreSQL database at {server} {what}: run `fastjobs db init URL`")))
}

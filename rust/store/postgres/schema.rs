//! The schema: numbered migrations (migrations/NNN_*.sql), applied in order by
//! `PgStore::init_schema` (`fastjobs db init`), each in one transaction with its version row.
//! Versions may land out of order (lines of work numbered apart and merged later): a database
//! that lacks a version below its highest gets it and every later one again, in order, so the
//! newest definition of each function stands (a migration only adds or replaces: applying one
//! twice changes nothing).

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
    (14, include_str!("migrations/014_done_bits.sql")),
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
    let have = applied_versions(&tx, server).await?;
    let first = MIGRATIONS.iter().position(|m| !have.contains(&m.0)).unwrap_or(MIGRATIONS.len());
    let mut applied = vec![];
    for (version, sql) in &MIGRATIONS[first..] {
        tx.batch_execute(sql).await.map_err(|e| match pg_error(e, server) {
            Error::Store(m) | Error::Schema(m) => Error::Store(format!("migration {version} of the fastjobs schema failed: {m}")),
            other => other,
        })?;
        if !have.contains(version) {
            tx.execute("INSERT INTO fastjobs.schema_version (version) VALUES ($1)", &[version]).await.map_err(err)?;
            applied.push(*version);
        }
    }
    tx.commit().await.map_err(err)?;
    Ok(applied)
}

/// The versions of the schema applied to the database.
async fn applied_versions(client: &impl tokio_postgres::GenericClient, server: &str) -> Result<Vec<i32>> {
    let rows = client.query("SELECT version FROM fastjobs.schema_version", &[]).await.map_err(|e| pg_error(e, server))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Ok when the database has the schema this build needs; else a typed error that says what to run.
pub(crate) async fn check(client: &Client, server: &str) -> Result<()> {
    let row = client.query_one("SELECT to_regclass('fastjobs.schema_version') IS NOT NULL", &[]).await.map_err(|e| pg_error(e, server))?;
    let have = if row.get(0) { applied_versions(client, server).await? } else { vec![] };
    let missing: Vec<String> = MIGRATIONS.iter().filter(|m| !have.contains(&m.0)).map(|m| m.0.to_string()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let version = have.iter().max().copied().unwrap_or(0);
    let what = if version == 0 {
        "has no fastjobs schema".to_string()
    } else if version < current() {
        format!("has fastjobs schema version {version}, this fastjobs needs {}", current())
    } else {
        format!("lacks version {} of the fastjobs schema", missing.join(", "))
    };
    Err(Error::Schema(format!("the PostgreSQL database at {server} {what}: run `fastjobs db init URL`")))
}

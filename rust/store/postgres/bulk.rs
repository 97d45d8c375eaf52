//! The bulk path: a guarded chunk by binary COPY on a connection of its own.

use super::{pool, PgStore};
use crate::error::{Error, Result};
use crate::store::*;
use tokio_postgres::Client;

impl PgStore {
    /// Writes a guarded chunk of generated ids: the guard row, a binary COPY of its ids and
    /// records into the connection's staging table and `fastjobs.enqueue_staged`, in one
    /// transaction (faster than the multi-row INSERT of `write_jobs`: tests.rs bulk_write_paths),
    /// within the response timeout.
    pub(super) async fn copy_chunk(&self, q: &str, jobs: &[NewJob], mark: &Watermark, guard: u64) -> Result<()> {
        let mut slot = self.bulk.lock().await;
        let written = pool::within(self.pool.response, &self.pool.server, self.copy_on(&mut slot, q, jobs, mark, guard)).await;
        if matches!(written, Err(Error::Timeout(_))) {
            // Its next answer would be this chunk's: a chunk of its own gets a new connection.
            *slot = None;
        }
        written
    }

    async fn copy_on(&self, slot: &mut Option<Client>, q: &str, jobs: &[NewJob], mark: &Watermark, guard: u64) -> Result<()> {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::Type;
        let err = |e| pool::pg_error(e, &self.pool.server);
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let client = pool::connect(&self.pool.endpoint, &self.pool.server).await?;
            client
                .batch_execute("CREATE TEMP TABLE IF NOT EXISTS fastjobs_staging (ord bigint, id text, record bytea) ON COMMIT DELETE ROWS")
                .await
                .map_err(err)?;
            *slot = Some(client);
        }
        let client = slot.as_mut().expect("connected above");
        let tx = client.transaction().await.map_err(err)?;
        let fresh = tx
            .execute(
                "INSERT INTO fastjobs.chunks VALUES ($1, $2, $3, fastjobs.now_us() / 1000) ON CONFLICT DO NOTHING",
                &[&q, &mark.producer, &(guard as i64)],
            )
            .await
            .map_err(err)?;
        if fresh == 0 {
            // Written by an earlier try whose answer was lost.
            return Ok(());
        }
        let sink = tx.copy_in("COPY fastjobs_staging (ord, id, record) FROM STDIN BINARY").await.map_err(err)?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT, Type::BYTEA]);
        futures_util::pin_mut!(writer);
        for (i, j) in jobs.iter().enumerate() {
            writer.as_mut().write(&[&(i as i64), &j.id, &j.record]).await.map_err(err)?;
        }
        writer.finish().await.map_err(err)?;
        let (delay, at) = (jobs[0].delay_us as i64, jobs[0].at_us.map(|a| a as i64));
        tx.execute("SELECT fastjobs.enqueue_staged($1, $2, $3)", &[&q, &delay, &at]).await.map_err(err)?;
        tx.commit().await.map_err(err)
    }
}

//! Connections to PostgreSQL: a few clients shared by every task (tokio-postgres pipelines
//! the queries of concurrent tasks on one connection), each with its prepared statements,
//! reopened when one breaks. Every operation is one statement (a function of the schema), so
//! no task ever needs a connection to itself.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

/// Connections per store: enough to keep two cores busy, few enough for a server's limit.
const CONNECTIONS: usize = 4;

/// The URL with its password masked, for messages.
pub(crate) fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid URL>".into(),
    }
}

/// The connection settings of a `postgresql://` or `postgres://` URL.
pub(crate) fn parse_url(url: &str) -> Result<Config> {
    let scheme_ok = url.starts_with("postgresql://") || url.starts_with("postgres://");
    if !scheme_ok {
        return Err(Error::Invalid(format!("not a PostgreSQL URL: {} (use postgresql://user:password@host:port/database)", mask_url(url))));
    }
    let config = url.parse::<Config>().map_err(|e| Error::Invalid(format!("invalid PostgreSQL URL {}: {e}", mask_url(url))))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(Error::Invalid(format!("TLS (sslmode=require in {}) is not supported by the PostgreSQL store yet", mask_url(url))));
    }
    Ok(config)
}

/// A tokio-postgres error as the engine's: the schema missing, the server away, or an error
/// it answered with, naming the server.
pub(crate) fn pg_error(e: tokio_postgres::Error, server: &str) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if [SqlState::UNDEFINED_FUNCTION, SqlState::UNDEFINED_TABLE, SqlState::INVALID_SCHEMA_NAME].contains(code) {
            return Error::Schema(format!(
                "the PostgreSQL database at {server} has no fastjobs schema, or an older one ({}): run `fastjobs db init URL`",
                db.message()
            ));
        }
        if code.code().starts_with("28") {
            return Error::Authentication(format!("PostgreSQL at {server} refused the credentials of the URL: {}", db.message()));
        }
        // Class 57: the server is shutting down or the connection was ended by it.
        if code.code().starts_with("57") || code.code().starts_with("08") {
            return Error::Connection(format!("PostgreSQL at {server} ended the connection: {}", db.message()));
        }
        return Error::Store(format!("PostgreSQL at {server} answered with an error: {}", db.message()));
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return Error::Connection(format!("cannot reach PostgreSQL at {server}: {e}"));
    }
    Error::Store(format!("PostgreSQL at {server}: {e}"))
}

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    pub client: Client,
    prepared: Mutex<HashMap<&'static str, Statement>>,
    server: Arc<str>,
}

impl Conn {
    async fn statement(&self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.prepared.lock().unwrap().get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await.map_err(|e| pg_error(e, &self.server))?;
        self.prepared.lock().unwrap().insert(sql, s.clone());
        Ok(s)
    }

    pub async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let s = self.statement(sql).await?;
        self.client.query(&s, params).await.map_err(|e| pg_error(e, &self.server))
    }

    pub async fn one(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let s = self.statement(sql).await?;
        self.client.query_one(&s, params).await.map_err(|e| pg_error(e, &self.server))
    }

    pub async fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let s = self.statement(sql).await?;
        self.client.execute(&s, params).await.map_err(|e| pg_error(e, &self.server))
    }
}

/// Opens one connection, its I/O driven by a task of the current runtime.
pub(crate) async fn connect(config: &Config, server: &Arc<str>) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| pg_error(e, server))?;
    tokio::spawn(async move {
        // Its end (an error included) closes the client: the next use reopens it.
        let _ = connection.await;
    });
    Ok(client)
}

pub(crate) struct Pool {
    pub config: Config,
    pub server: Arc<str>,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(config: Config, server: String) -> Pool {
        Pool { config, server: server.into(), slots: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(), next: AtomicUsize::new(0) }
    }

    /// A live connection, in turn.
    pub async fn get(&self) -> Result<Arc<Conn>> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(c) = slot.lock().unwrap().as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(c.clone());
        }
        let client = connect(&self.config, &self.server).await?;
        let conn = Arc::new(Conn { client, prepared: Mutex::default(), server: self.server.clone() });
        *slot.lock().unwrap() = Some(conn.clone());
        Ok(conn)
    }
}

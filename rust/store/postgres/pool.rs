//! Connections to PostgreSQL: a few clients shared by every task (tokio-postgres pipelines
//! the queries of concurrent tasks on one connection), each with its prepared statements,
//! reopened when one breaks. Every operation is one statement (a function of the schema), so
//! no task ever needs a connection to itself. A statement unanswered within the response
//! timeout fails as `Error::Timeout` and retires its connection: the network may have gone
//! quiet (nothing tells TCP), and the connection's next answer would be that statement's.

use super::tls;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Connection, Row, Socket, Statement};

/// Connections per store: enough to keep two cores busy, few enough for a server's limit.
const CONNECTIONS: usize = 4;

/// The connect timeout of a configuration without one (the client's default, `Settings::new`).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Where and how to connect: tokio-postgres's settings and the TLS the URL asks for.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub config: Config,
    tls: tls::Connector,
}

/// A connection and the future that drives its I/O.
pub(crate) type Opened = (Client, Connection<Socket, tls::Stream<Socket>>);

impl Endpoint {
    /// Opens one connection within the connect timeout. tokio-postgres bounds only the TCP
    /// connect by it; the handshake after (TLS, startup, authentication) would wait for ever
    /// on a network gone quiet.
    pub async fn open(&self, server: &str) -> Result<Opened> {
        let limit = self.config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        match tokio::time::timeout(limit, self.config.connect(self.tls.clone())).await {
            Ok(opened) => opened.map_err(|e| pg_error(e, server)),
            Err(_) => {
                Err(Error::Connection(format!("cannot reach PostgreSQL at {server}: no connection within {limit:?} (connect_timeout)")))
            }
        }
    }
}

/// The connection settings of a `postgresql://` or `postgres://` URL, its TLS files read
/// (tls.rs: `sslmode`, `sslrootcert`, `sslcert`, `sslkey`).
pub(crate) fn parse_url(url: &str) -> Result<Endpoint> {
    let scheme_ok = url.starts_with("postgresql://") || url.starts_with("postgres://");
    if !scheme_ok {
        return Err(Error::Invalid(format!("not a PostgreSQL URL: {} (use postgresql://user:password@host:port/database)", mask_url(url))));
    }
    let (rest, tls) = tls::split(url)?;
    let mut config = rest.parse::<Config>().map_err(|e| Error::Invalid(format!("invalid PostgreSQL URL {}: {e}", mask_url(url))))?;
    tls.apply(&mut config);
    Ok(Endpoint { config, tls })
}

/// A tokio-postgres error as the engine's: the schema missing, the server away, or an error
/// it answered with, naming the server.
pub(crate) fn pg_error(e: tokio_postgres::Error, server: &str) -> Error {
    if let Some(tls) = tls::classify(&e, server) {
        return tls;
    }
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
    response: Duration,
    /// A statement on it timed out: the pool opens another in its place.
    retired: AtomicBool,
}

impl Conn {
    /// `step` within the response timeout; past it the connection is retired.
    async fn timed<T>(&self, step: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
        within(self.response, &self.server, async { step.await.map_err(|e| pg_error(e, &self.server)) }).await.inspect_err(|e| {
            if matches!(e, Error::Timeout(_)) {
                self.retired.store(true, Ordering::Relaxed);
            }
        })
    }

    async fn statement(&self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.prepared.lock().unwrap().get(sql) {
            return Ok(s.clone());
        }
        let s = self.timed(self.client.prepare(sql)).await?;
        self.prepared.lock().unwrap().insert(sql, s.clone());
        Ok(s)
    }

    pub async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let s = self.statement(sql).await?;
        self.timed(self.client.query(&s, params)).await
    }

    pub async fn one(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let s = self.statement(sql).await?;
        self.timed(self.client.query_one(&s, params)).await
    }

    pub async fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let s = self.statement(sql).await?;
        self.timed(self.client.execute(&s, params)).await
    }

    fn usable(&self) -> bool {
        !self.client.is_closed() && !self.retired.load(Ordering::Relaxed)
    }
}

/// `step`, answered within `limit`, or `Error::Timeout` naming the server.
pub(crate) async fn within<T>(limit: Duration, server: &str, step: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, step)
        .await
        .unwrap_or_else(|_| Err(Error::Timeout(format!("PostgreSQL at {server} did not answer within {limit:?} (response_timeout)"))))
}

/// Opens one connection, its I/O driven by a task of the current runtime.
pub(crate) async fn connect(endpoint: &Endpoint, server: &Arc<str>) -> Result<Client> {
    let (client, connection) = endpoint.open(server).await?;
    tokio::spawn(async move {
        // Its end (an error included) closes the client: the next use reopens it.
        let _ = connection.await;
    });
    Ok(client)
}

pub(crate) struct Pool {
    pub endpoint: Endpoint,
    pub server: Arc<str>,
    /// How long a statement may wait for its answer.
    pub response: Duration,
    /// Held while a slot's connection is (re)opened: a burst of first uses (a thousand
    /// dispatches from one event loop) opens one connection per slot, not one per task.
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(endpoint: Endpoint, server: String, response: Duration) -> Pool {
        let slots = (0..CONNECTIONS).map(|_| tokio::sync::Mutex::new(None)).collect();
        Pool { endpoint, server: server.into(), response, slots, next: AtomicUsize::new(0) }
    }

    /// A live connection, in turn.
    pub async fn get(&self) -> Result<Arc<Conn>> {
        self.slot(self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()).await
    }

    /// Opens every slot's connection at once, so that the first operations (a producer's
    /// first dispatches) do not each wait for a connection of their own.
    pub async fn open_all(&self) -> Result<()> {
        futures_util::future::try_join_all((0..self.slots.len()).map(|i| self.slot(i))).await.map(|_| ())
    }

    async fn slot(&self, i: usize) -> Result<Arc<Conn>> {
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.usable()) {
            return Ok(c.clone());
        }
        let client = connect(&self.endpoint, &self.server).await?;
        let conn = Arc::new(Conn {
            client,
            prepared: Mutex::default(),
            server: self.server.clone(),
            response: self.response,
            retired: AtomicBool::new(false),
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

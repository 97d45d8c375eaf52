//! Connections: settings from a URL, connect and answer timeouts, reconnection, and script
//! calls by SHA with the NOSCRIPT fallback.

use crate::error::{Error, Result};
use crate::scripts::{is_noscript, scripts};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, Value};
use std::time::Duration;
use tokio::sync::Mutex;

/// The longest duration the engine takes anywhere (timeouts, ttls, leases): 100 years, in
/// seconds. Python checks the same limit (`options.MAX_DURATION`) with friendlier messages.
pub const MAX_SECONDS: f64 = 3_155_760_000.0;

/// Seconds as a `Duration`, refused (not a panic) when NaN, infinite, under `min` or over
/// 100 years.
pub fn seconds(name: &str, v: f64, min: f64) -> Result<Duration> {
    if v.is_finite() && v >= min && v <= MAX_SECONDS {
        Ok(Duration::from_secs_f64(v))
    } else {
        let got = if v.is_finite() && v.abs() < 1e15 { format!("{v}") } else { format!("{v:e}") };
        Err(Error::Invalid(format!("{name} must be between {min} seconds and 100 years ({MAX_SECONDS} seconds), got {got} seconds")))
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// How long a stored return value lives.
    pub result_ttl: Duration,
    /// For `rediss://`: PEM files of a private CA and of a client certificate and key (mTLS).
    pub tls: Tls,
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

impl Settings {
    pub fn new(url: &str, prefix: &str) -> Result<Settings> {
        crate::keys::validate_prefix(prefix)?;
        redis::Client::open(url).map_err(|e| Error::Invalid(format!("invalid Redis URL {}: {e}", mask_url(url))))?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://") || url.starts_with("redis+unix://"))
        {
            return Err(Error::Invalid(format!("invalid Redis URL {}: use redis://, rediss:// or unix://", mask_url(url))));
        }
        Ok(Settings {
            url: url.to_string(),
            prefix: prefix.to_string(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            result_ttl: Duration::from_secs(24 * 3600),
            tls: Tls::default(),
        })
    }

    /// A redis-rs client for these settings, with their TLS files when any are set.
    pub fn client(&self) -> Result<redis::Client> {
        static CRYPTO: std::sync::Once = std::sync::Once::new();
        CRYPTO.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let bad = |e: redis::RedisError| Error::Invalid(format!("invalid Redis URL {}: {e}", self.masked_url()));
        let t = &self.tls;
        if t.ca_file.is_none() && t.cert_file.is_none() && t.key_file.is_none() {
            return redis::Client::open(self.url.as_str()).map_err(bad);
        }
        let read = |what: &str, path: &str| {
            std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read the TLS {what} file {path:?}: {e}")))
        };
        let client_tls = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read("certificate", c)?, client_key: read("key", k)? }),
            (None, None) => None,
            _ => return Err(Error::Invalid("a TLS client certificate needs both tls_cert_file and tls_key_file".into())),
        };
        let root_cert = t.ca_file.as_deref().map(|p| read("CA", p)).transpose()?;
        redis::Client::build_with_tls(self.url.as_str(), redis::TlsCertificates { client_tls, root_cert }).map_err(bad)
    }

    /// The URL with its password replaced by `***`, for messages.
    pub fn masked_url(&self) -> String {
        mask_url(&self.url)
    }
}

pub fn mask_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// One multiplexed connection, opened on first use and reopened after it broke.
/// Requests from many tasks share it (redis-rs pipelines them on the socket).
pub struct Conn {
    settings: Settings,
    client: redis::Client,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl Conn {
    pub fn new(settings: &Settings) -> Result<Conn> {
        Ok(Conn { settings: settings.clone(), client: settings.client()?, current: Mutex::new(None) })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn err(&self, e: redis::RedisError) -> Error {
        Error::from_redis(e, &self.settings.masked_url())
    }

    async fn get(&self) -> Result<MultiplexedConnection> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref() {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout));
        let connect = self.client.get_multiplexed_async_connection_with_config(&cfg);
        // The redis-rs timeout covers one address; bound the whole attempt too.
        let c = match tokio::time::timeout(self.settings.connect_timeout + Duration::from_millis(100), connect).await {
            Ok(r) => r.map_err(|e| match self.err(e) {
                Error::Store(m) => Error::Connection(m),
                other => other,
            })?,
            Err(_) => {
                return Err(Error::Connection(format!(
                    "cannot reach Redis at {}: no connection within {:?}",
                    self.settings.masked_url(),
                    self.settings.connect_timeout
                )))
            }
        };
        let mut c = c;
        // Load every script up front: later calls by SHA then only miss after SCRIPT FLUSH.
        self.load_scripts(&mut c).await?;
        *cur = Some(c.clone());
        Ok(c)
    }

    /// Forgets a broken connection so the next call opens a new one.
    async fn reset_on(&self, e: &Error) {
        if e.is_retryable() {
            *self.current.lock().await = None;
        }
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let mut c = self.get().await?;
        let r = cmd.query_async::<T>(&mut c).await.map_err(|e| self.err(e));
        if let Err(e) = &r {
            self.reset_on(e).await;
        }
        r
    }

    /// Runs a pipeline of EVALSHA calls (and plain commands); when Redis lost the scripts
    /// (restart, SCRIPT FLUSH), loads them all and runs the pipeline once more. Every script
    /// is idempotent or refused on the retry path by its own checks, and NOSCRIPT means the
    /// failing call did not run.
    pub async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let mut c = self.get().await?;
        let first = pipe.query_async::<Vec<Value>>(&mut c).await;
        let r = match first {
            Err(e) if is_noscript(&e) => {
                self.load_scripts(&mut c).await?;
                pipe.query_async::<Vec<Value>>(&mut c).await.map_err(|e| self.err(e))
            }
            other => other.map_err(|e| self.err(e)),
        };
        if let Err(e) = &r {
            self.reset_on(e).await;
        }
        r
    }

    /// One script call, with the NOSCRIPT fallback.
    pub async fn eval<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T> {
        let mut p = redis::pipe();
        p.add_command(cmd);
        let mut v = self.pipeline(&p).await?;
        let one = v.pop().ok_or_else(|| Error::Store("empty reply from Redis".into()))?;
        if let Value::ServerError(e) = &one {
            return Err(Error::Store(format!("Redis script failed: {e:?}")));
        }
        T::from_redis_value(one).map_err(|e| Error::Store(format!("unexpected reply from Redis: {e}")))
    }

    async fn load_scripts(&self, c: &mut MultiplexedConnection) -> Result<()> {
        let mut p = redis::pipe();
        for s in scripts().all() {
            p.cmd("SCRIPT").arg("LOAD").arg(s.source).ignore();
        }
        p.query_async::<()>(c).await.map_err(|e| self.err(e))
    }
}

/// One plain (blocking) connection for a caller's own thread: a reply wakes that thread
/// directly, with no hop through the I/O runtime. Used for the idle worker's pop, where a
/// thread wake-up is a large share of the start latency. Reopened after it broke.
pub struct SyncConn {
    settings: Settings,
    client: redis::Client,
    current: std::sync::Mutex<Option<Open>>,
}

/// An open plain connection and the read timeout its socket has (set only when it changes:
/// one system call less per call).
struct Open {
    conn: redis::Connection,
    read_timeout: Duration,
}

impl SyncConn {
    pub fn new(settings: &Settings) -> Result<SyncConn> {
        Ok(SyncConn { settings: settings.clone(), client: settings.client()?, current: std::sync::Mutex::new(None) })
    }

    /// Runs `cmd`, waiting at most `read_timeout` for its answer.
    pub fn query<T: FromRedisValue>(&self, cmd: &Cmd, read_timeout: Duration) -> Result<T> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.run(&mut cur, cmd, read_timeout)
    }

    /// Like `query`, but None when another thread is using the connection: the caller then
    /// takes the shared multiplexed path instead of waiting.
    pub fn try_query<T: FromRedisValue>(&self, cmd: &Cmd, read_timeout: Duration) -> Option<Result<T>> {
        let mut cur = match self.current.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.run(&mut cur, cmd, read_timeout))
    }

    /// Writes commands packed already (`bytes`: `skip + keep` of them) and returns the last
    /// `keep` answers; an error answer among the first `skip` is returned as the error.
    pub fn packed(&self, bytes: &[u8], skip: usize, keep: usize, read_timeout: Duration) -> Result<Vec<Value>> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.open(&mut cur, read_timeout)?;
        let r = redis::ConnectionLike::req_packed_commands(c, bytes, skip, keep);
        self.settle(&mut cur, r)
    }

    /// Runs `cmd` (an EVALSHA runs again once after loading the scripts on NOSCRIPT).
    fn run<T: FromRedisValue>(&self, cur: &mut Option<Open>, cmd: &Cmd, read_timeout: Duration) -> Result<T> {
        let c = self.open(cur, read_timeout)?;
        let mut r = cmd.query::<T>(c);
        if matches!(&r, Err(e) if is_noscript(e)) {
            r = scripts()
                .all()
                .into_iter()
                .try_for_each(|s| redis::cmd("SCRIPT").arg("LOAD").arg(s.source).exec(c))
                .and_then(|_| cmd.query::<T>(c));
        }
        self.settle(cur, r)
    }

    /// The open connection, connected first if need be, with `read_timeout` on its socket.
    fn open<'a>(&self, cur: &'a mut Option<Open>, read_timeout: Duration) -> Result<&'a mut redis::Connection> {
        if cur.is_none() {
            let c = self.client.get_connection_with_timeout(self.settings.connect_timeout).map_err(|e| match self.err(e) {
                Error::Store(m) => Error::Connection(m),
                other => other,
            })?;
            *cur = Some(Open { conn: c, read_timeout: Duration::ZERO });
        }
        let open = cur.as_mut().expect("connected above");
        if open.read_timeout != read_timeout {
            open.conn.set_read_timeout(Some(read_timeout)).map_err(|e| self.err(e))?;
            open.read_timeout = read_timeout;
        }
        Ok(&mut open.conn)
    }

    /// A failed call's connection may still owe an answer: it is never reused.
    fn settle<T>(&self, cur: &mut Option<Open>, r: redis::RedisResult<T>) -> Result<T> {
        r.map_err(|e| {
            *cur = None;
            self.err(e)
        })
    }

    /// The masked URL is made on errors only: parsing it on every call costs microseconds.
    fn err(&self, e: redis::RedisError) -> Error {
        Error::from_redis(e, &self.settings.masked_url())
    }
}

//! Connections: settings from a URL, connect and answer timeouts, reconnection, and script
//! calls by SHA with the NOSCRIPT fallback.

use crate::error::{Error, Result};
use crate::store::redis::scripts::{is_noscript, scripts};
pub use crate::store::settings::{mask_url, seconds, Settings, Tls, MAX_SECONDS};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, Pipeline, Value};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The Redis URL schemes: `redis://`, `rediss://` (TLS), `unix://`, `redis+unix://`, and
/// `redis+cluster://` and `rediss+cluster://` for a Redis Cluster.
pub fn is_redis_url(url: &str) -> bool {
    ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| url.starts_with(p))
        || crate::store::redis::cluster::is_routed_url(url)
}

/// Refuses a URL redis-rs cannot read.
pub fn check_url(url: &str) -> Result<()> {
    if crate::store::redis::cluster::is_routed_url(url) {
        return crate::store::redis::cluster::Topology::new(&Settings::new(url, "fj")?).map(|_| ());
    }
    redis::Client::open(url).map_err(|e| Error::Invalid(format!("invalid Redis URL {}: {e}", mask_url(url))))?;
    Ok(())
}

/// A redis-rs client for these settings, with their TLS files when any are set.
pub fn redis_client(settings: &Settings) -> Result<redis::Client> {
    let s = settings;
    static CRYPTO: std::sync::Once = std::sync::Once::new();
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let bad = |e: redis::RedisError| Error::Invalid(format!("invalid Redis URL {}: {e}", s.masked_url()));
    let t = &s.tls;
    if t.ca_file.is_none() && t.cert_file.is_none() && t.key_file.is_none() {
        return redis::Client::open(s.url.as_str()).map_err(bad);
    }
    let read =
        |what: &str, path: &str| std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read the TLS {what} file {path:?}: {e}")));
    let client_tls = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read("certificate", c)?, client_key: read("key", k)? }),
        (None, None) => None,
        _ => return Err(Error::Invalid("a TLS client certificate needs both tls_cert_file and tls_key_file".into())),
    };
    let root_cert = t.ca_file.as_deref().map(|p| read("CA", p)).transpose()?;
    redis::Client::build_with_tls(s.url.as_str(), redis::TlsCertificates { client_tls, root_cert }).map_err(bad)
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
        Ok(Conn { settings: settings.clone(), client: redis_client(settings)?, current: Mutex::new(None) })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn err(&self, e: redis::RedisError) -> Error {
        Error::from_redis(e, &self.settings.masked_url())
    }

    fn err_connecting(&self, e: redis::RedisError) -> Error {
        Error::from_redis_connecting(e, &self.settings.masked_url())
    }

    /// Connects, checks the credentials and loads the scripts: all of it is "connecting",
    /// bounded as a whole by the connect timeout (`get`).
    async fn open(&self) -> Result<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout));
        let mut c = self.client.get_multiplexed_async_connection_with_config(&cfg).await.map_err(|e| self.err_connecting(e))?;
        // A server that wants a password answers NOAUTH to a PING; sent a large command
        // first (SCRIPT LOAD), it closes the connection instead, which would read as a
        // network error and be retried forever.
        redis::cmd("PING").query_async::<()>(&mut c).await.map_err(|e| self.err_connecting(e))?;
        // Load every script up front: later calls by SHA then only miss after SCRIPT FLUSH.
        self.load_scripts(&mut c).await?;
        Ok(c)
    }

    async fn get(&self) -> Result<MultiplexedConnection> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref() {
            return Ok(c.clone());
        }
        // The redis-rs timeout covers one address; bound the whole attempt too.
        let c = match tokio::time::timeout(self.settings.connect_timeout + Duration::from_millis(100), self.open()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Connection(format!(
                    "cannot reach Redis at {}: no connection within {:?}",
                    self.settings.masked_url(),
                    self.settings.connect_timeout
                )))
            }
        };
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
        p.query_async::<()>(c).await.map_err(|e| self.err_connecting(e))
    }
}

/// One plain (blocking) connection for a caller's own thread: a reply wakes that thread
/// directly, with no hop through the I/O runtime. Used for the idle worker's pop, where a
/// thread wake-up is a large share of the start latency. Reopened after it broke.
///
/// Opening it is bounded as a whole by the connect timeout: name lookup, TCP connect (each
/// address with the time left), TLS, then the handshake (AUTH, SELECT, or a PING), one
/// command at a time, each waiting only for the time left. redis-rs's own handshake sends
/// its commands as one pipeline and, once a reply timed out, waits the full timeout again
/// for each reply after it (a dispatch to a server that accepted and never answered took
/// twice the connect timeout; with a password and a database, four times).
pub struct SyncConn {
    settings: Settings,
    /// Where to connect (with TLS settings), with no handshake of redis-rs's: ours follows.
    bare: ConnectionInfo,
    login: Login,
    current: std::sync::Mutex<Option<Open>>,
}

/// The handshake a new connection makes (from the URL).
struct Login {
    username: Option<String>,
    password: Option<String>,
    db: i64,
    resp3: bool,
}

/// An open plain connection and the read timeout its socket has (set only when it changes:
/// one system call less per call).
struct Open {
    conn: redis::Connection,
    read_timeout: Duration,
    /// When a call last went through it.
    used: Instant,
}

/// The time left before `deadline`, or a timeout error naming what was being done.
fn left(deadline: Instant, url: &str, doing: &str) -> Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::Timeout(format!("Redis at {url} did not answer in time: no connection within the connect timeout ({doing})"))),
    }
}

/// A failed name lookup: `true` when the name does not exist (as opposed to a resolver that
/// failed for now: "Temporary failure in name resolution").
fn unknown_host(e: &std::io::Error) -> bool {
    let m = e.to_string();
    !(m.contains("Temporary failure") || m.contains("try again"))
}

/// A socket to Redis that its owner reads and writes itself (an event loop's connection,
/// loop_conn.rs), without blocking once open.
pub enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    fn io(&self) -> &dyn StreamIo {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub fn fd(&self) -> std::os::unix::io::RawFd {
        use std::os::unix::io::AsRawFd;
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.io().read_some(buf)
    }

    pub fn write(&self, buf: &[u8]) -> std::io::Result<usize> {
        self.io().write_some(buf)
    }

    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.io().timeouts(t)
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        self.io().nonblocking()
    }

    /// One command and its answer, blocking (the handshake).
    fn ask(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        let bytes = cmd.get_packed_command();
        let mut at = 0;
        while at < bytes.len() {
            at += self.write(&bytes[at..])?;
        }
        let v = redis::Parser::new().parse_value(std::io::BufReader::new(StreamReader(self)))?;
        v.extract_error()
    }
}

struct StreamReader<'a>(&'a Stream);

impl std::io::Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// What `Stream` needs of its two socket kinds.
trait StreamIo {
    fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn write_some(&self, buf: &[u8]) -> std::io::Result<usize>;
    fn timeouts(&self, t: Option<Duration>) -> std::io::Result<()>;
    fn nonblocking(&self) -> std::io::Result<()>;
}

macro_rules! stream_io {
    ($t:ty) => {
        impl StreamIo for $t {
            fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::io::Read::read(&mut &*self, buf)
            }
            fn write_some(&self, buf: &[u8]) -> std::io::Result<usize> {
                std::io::Write::write(&mut &*self, buf)
            }
            fn timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
                self.set_read_timeout(t)?;
                self.set_write_timeout(t)
            }
            fn nonblocking(&self) -> std::io::Result<()> {
                self.set_nonblocking(true)
            }
        }
    };
}
stream_io!(std::net::TcpStream);
stream_io!(std::os::unix::net::UnixStream);

/// Writes `cmds` in one go and reads their answers, one per command. An error says whether
/// the connection was found closed (end of file, reset, broken pipe) before any answer.
fn send_all<'a>(
    c: &mut redis::Connection,
    cmds: impl Iterator<Item = &'a Cmd>,
) -> std::result::Result<Vec<Value>, (redis::RedisError, bool)> {
    let mut bytes = Vec::new();
    let mut n = 0;
    for cmd in cmds {
        cmd.write_packed_command(&mut bytes);
        n += 1;
    }
    let closed = |e: redis::RedisError, answered: bool| {
        let gone = !answered && e.is_connection_dropped(); // not a timeout: that one may have run
        (e, gone)
    };
    c.send_packed_command(&bytes).map_err(|e| closed(e, false))?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.recv_response().map_err(|e| closed(e, !out.is_empty()))?);
    }
    Ok(out)
}

/// Loads every script on a plain connection (calls by SHA then only miss after SCRIPT FLUSH).
fn load_scripts(c: &mut redis::Connection) -> redis::RedisResult<()> {
    scripts().all().into_iter().try_for_each(|s| redis::cmd("SCRIPT").arg("LOAD").arg(s.source).exec(c))
}

/// How long a plain connection sits unused before a failure that finds it closed is taken
/// for Redis having closed it while idle (`SyncConn::pipeline`).
const STALE_AFTER: Duration = Duration::from_secs(1);

impl SyncConn {
    pub fn new(settings: &Settings) -> Result<SyncConn> {
        let info = redis_client(settings)?.get_connection_info().clone();
        let r = info.redis_settings();
        let login = Login {
            username: r.username().map(str::to_string),
            password: r.password().map(str::to_string),
            db: r.db(),
            resp3: r.protocol().supports_resp3(),
        };
        let bare = info.set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
        Ok(SyncConn { settings: settings.clone(), bare, login, current: std::sync::Mutex::new(None) })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
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
    /// Replies are read one by one, and the first that fails ends the call (redis-rs's
    /// `req_packed_commands` would wait `read_timeout` once more for every reply left).
    pub fn packed(&self, bytes: &[u8], skip: usize, keep: usize, read_timeout: Duration) -> Result<Vec<Value>> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.open(&mut cur, read_timeout)?;
        let r = (|| {
            c.send_packed_command(bytes)?;
            let mut out = Vec::with_capacity(keep);
            let mut refused = None;
            for i in 0..skip + keep {
                let v = c.recv_response()?;
                if i >= skip {
                    out.push(v);
                } else if refused.is_none() {
                    refused = v.extract_error().err();
                }
            }
            refused.map_or(Ok(out), Err)
        })();
        self.settle(&mut cur, r)
    }

    /// Sends `cmds` in one write and returns an answer per command, error answers included
    /// (`Value::ServerError`). Commands answered NOSCRIPT did not run: they run once more
    /// after the scripts are loaded.
    ///
    /// A connection idle for `STALE_AFTER` or more may have been closed by Redis meanwhile
    /// (its `timeout`, a restart, `CLIENT KILL`): when it turns out closed before any answer
    /// came, the commands are sent once more on a new connection. Redis closes a connection
    /// between commands, so the first send did not run.
    pub fn pipeline(&self, cmds: &[Cmd], read_timeout: Duration) -> Result<Vec<Value>> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let idle = cur.as_ref().is_some_and(|o| o.used.elapsed() >= STALE_AFTER);
        match self.pipeline_once(&mut cur, cmds, read_timeout) {
            Err((_, true)) if idle => self.pipeline_once(&mut cur, cmds, read_timeout).map_err(|(e, _)| e),
            r => r.map_err(|(e, _)| e),
        }
    }

    /// `pipeline`'s one try; an error says whether the connection was found closed before
    /// any answer.
    fn pipeline_once(
        &self,
        cur: &mut Option<Open>,
        cmds: &[Cmd],
        read_timeout: Duration,
    ) -> std::result::Result<Vec<Value>, (Error, bool)> {
        let c = self.open(cur, read_timeout).map_err(|e| (e, false))?;
        let r = (|| {
            let mut out = send_all(c, cmds.iter())?;
            let missed: Vec<usize> =
                (0..out.len()).filter(|&i| matches!(&out[i], Value::ServerError(e) if e.code() == "NOSCRIPT")).collect();
            if !missed.is_empty() {
                load_scripts(c).map_err(|e| (e, false))?;
                for (i, v) in missed.iter().zip(send_all(c, missed.iter().map(|&i| &cmds[i])).map_err(|(e, _)| (e, false))?) {
                    out[*i] = v;
                }
            }
            Ok(out)
        })();
        match r {
            Ok(out) => {
                if let Some(o) = cur.as_mut() {
                    o.used = Instant::now();
                }
                Ok(out)
            }
            Err((e, closed)) => Err((self.settle::<()>(cur, Err(e)).unwrap_err(), closed)),
        }
    }

    /// Runs `cmd` (an EVALSHA runs again once after loading the scripts on NOSCRIPT).
    fn run<T: FromRedisValue>(&self, cur: &mut Option<Open>, cmd: &Cmd, read_timeout: Duration) -> Result<T> {
        let c = self.open(cur, read_timeout)?;
        let mut r = cmd.query::<T>(c);
        if matches!(&r, Err(e) if is_noscript(e)) {
            r = load_scripts(c).and_then(|_| cmd.query::<T>(c));
        }
        self.settle(cur, r)
    }

    /// The open connection, connected first if need be, with `read_timeout` on its socket.
    fn open<'a>(&self, cur: &'a mut Option<Open>, read_timeout: Duration) -> Result<&'a mut redis::Connection> {
        if cur.is_none() {
            let c = self.connect(Instant::now() + self.settings.connect_timeout)?;
            *cur = Some(Open { conn: c, read_timeout: Duration::ZERO, used: Instant::now() });
        }
        let open = cur.as_mut().expect("connected above");
        if open.read_timeout != read_timeout {
            open.conn.set_read_timeout(Some(read_timeout)).map_err(|e| self.err(e))?;
            open.read_timeout = read_timeout;
        }
        Ok(&mut open.conn)
    }

    /// The addresses of a TCP server (none for a Unix socket); an error says whether the
    /// name does not exist (`true`) or could not be looked up now.
    fn addresses(&self) -> std::result::Result<Vec<SocketAddr>, (Error, bool)> {
        let (host, port) = match self.bare.addr() {
            ConnectionAddr::Tcp(h, p) | ConnectionAddr::TcpTls { host: h, port: p, .. } => (h.as_str(), *p),
            _ => return Ok(vec![]),
        };
        (host, port).to_socket_addrs().map(|a| a.collect()).map_err(|e| {
            let unknown = unknown_host(&e);
            let what = if unknown { "unknown host" } else { "cannot look up the host" };
            (Error::Connection(format!("cannot reach Redis at {}: {what} {host:?} ({e})", self.settings.masked_url())), unknown)
        })
    }

    /// A new connection, handshake done, by `deadline`.
    fn connect(&self, deadline: Instant) -> Result<redis::Connection> {
        let url = self.settings.masked_url();
        let mut c = match self.bare.addr() {
            ConnectionAddr::Tcp(_, _) => self.first_address(deadline, &url, |a, t| {
                let info = self.bare.clone().set_addr(ConnectionAddr::Tcp(a.ip().to_string(), a.port()));
                redis::Client::open(info).and_then(|cl| cl.get_connection_with_timeout(t)).map_err(|e| self.err_connecting(e))
            })?,
            // TLS (the handshake runs with the first command below) and Unix sockets.
            _ => {
                let t = left(deadline, &url, "connect")?;
                redis::Client::open(self.bare.clone())
                    .and_then(|cl| cl.get_connection_with_timeout(t))
                    .map_err(|e| self.err_connecting(e))?
            }
        };
        self.handshake(deadline, &url, |cmd, t| {
            c.set_read_timeout(Some(t)).and_then(|_| c.set_write_timeout(Some(t)))?;
            cmd.query::<Value>(&mut c)
        })?;
        c.set_write_timeout(Some(self.settings.response_timeout)).map_err(|e| self.err_connecting(e))?;
        Ok(c)
    }

    /// The first address of a TCP server that `open` connects to, each address with the time
    /// left (redis-rs gives each the whole timeout).
    fn first_address<C>(&self, deadline: Instant, url: &str, mut open: impl FnMut(SocketAddr, Duration) -> Result<C>) -> Result<C> {
        let mut last = None;
        for a in self.addresses().map_err(|(e, _)| e)? {
            match open(a, left(deadline, url, "connect")?) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Connection(format!("cannot reach Redis at {url}: its host has no address"))))
    }

    /// The handshake of a new connection, one command at a time, each given the time left
    /// before `deadline` (`ask` runs a command with that timeout): HELLO (RESP3), AUTH,
    /// SELECT, or a PING.
    fn handshake(&self, deadline: Instant, url: &str, mut ask: impl FnMut(&Cmd, Duration) -> redis::RedisResult<Value>) -> Result<()> {
        let l = &self.login;
        let mut step = |cmd: &Cmd, doing: &str| -> Result<Value> {
            let t = left(deadline, url, doing)?;
            ask(cmd, t).map_err(|e| match self.err_connecting(e) {
                Error::Timeout(_) => Error::Timeout(format!(
                    "Redis at {url} did not answer {doing} within the connect timeout ({:?})",
                    self.settings.connect_timeout
                )),
                other => other,
            })
        };
        if l.resp3 {
            let mut hello = redis::cmd("HELLO");
            hello.arg(3);
            if let Some(p) = &l.password {
                hello.arg("AUTH").arg(l.username.as_deref().unwrap_or("default")).arg(p);
            }
            step(&hello, "HELLO")?;
        } else if let Some(p) = &l.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(u) = &l.username {
                auth.arg(u);
            }
            auth.arg(p);
            match step(&auth, "AUTH") {
                // A server older than ACLs (Redis < 6) takes the password alone.
                Err(Error::Store(m)) if l.username.is_some() && m.contains("wrong number of arguments") => {
                    step(redis::cmd("AUTH").arg(p), "AUTH")?;
                }
                Err(Error::Store(m)) => return Err(Error::Authentication(m)),
                other => {
                    other?;
                }
            }
        }
        if l.db != 0 {
            if let Err(e) = step(redis::cmd("SELECT").arg(l.db), "SELECT") {
                return Err(match e {
                    Error::Store(m) => Error::Store(format!("{m} (SELECT {}: the database index of the URL)", l.db)),
                    other => other,
                });
            }
        } else if l.password.is_none() && !l.resp3 {
            // Nothing sent yet: learn now whether the server wants a password (NOAUTH),
            // rather than from a large first command that it would answer by hanging up.
            step(&redis::cmd("PING"), "PING")?;
        }
        Ok(())
    }

    /// A socket of its own, handshake done, for an owner that then reads and writes it
    /// without blocking (an event loop: loop_conn.rs). None where the URL asks for TLS or
    /// RESP3, which only the connections of redis-rs speak.
    pub fn open_stream(&self) -> Result<Option<Stream>> {
        let url = self.settings.masked_url();
        let deadline = Instant::now() + self.settings.connect_timeout;
        let broke = |e: std::io::Error| Error::Connection(format!("cannot reach Redis at {url}: {e}"));
        let stream = match self.bare.addr() {
            _ if self.login.resp3 => return Ok(None),
            ConnectionAddr::Tcp(_, _) => {
                let s = self.first_address(deadline, &url, |a, t| std::net::TcpStream::connect_timeout(&a, t).map_err(broke))?;
                s.set_nodelay(true).map_err(broke)?;
                Stream::Tcp(s)
            }
            ConnectionAddr::Unix(path) => Stream::Unix(std::os::unix::net::UnixStream::connect(path).map_err(broke)?),
            _ => return Ok(None),
        };
        self.handshake(deadline, &url, |cmd, t| {
            stream.set_timeouts(Some(t))?;
            stream.ask(cmd)
        })?;
        stream.set_timeouts(None).and_then(|_| stream.set_nonblocking()).map_err(broke)?;
        Ok(Some(stream))
    }

    /// Opens a connection of its own and loads the scripts, as a worker does before it
    /// starts: Ok(None) when that worked; Ok(Some(error)) when Redis cannot be reached now
    /// (refused, timed out, a name lookup that failed for now), which may pass; Err when the
    /// settings can never work (credentials, permissions, a database index the server does
    /// not have, a host name that does not exist).
    pub fn check(&self) -> Result<Option<Error>> {
        if let Err((e, unknown)) = self.addresses() {
            return if unknown { Err(e) } else { Ok(Some(e)) };
        }
        let loaded = self.connect(Instant::now() + self.settings.connect_timeout).and_then(|mut c| {
            c.set_read_timeout(Some(self.settings.response_timeout)).map_err(|e| self.err_connecting(e))?;
            load_scripts(&mut c).map_err(|e| self.err_connecting(e))
        });
        match loaded {
            Ok(()) => Ok(None),
            Err(e) if e.is_retryable() => Ok(Some(e)),
            Err(e) => Err(e),
        }
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

    fn err_connecting(&self, e: redis::RedisError) -> Error {
        Error::from_redis_connecting(e, &self.settings.masked_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_urls_keep_the_user_and_hide_the_password() {
        assert_eq!(mask_url("redis://app:s3cret@h:6379/2"), "redis://app:***@h:6379/2");
        assert_eq!(mask_url("redis://:s3cret@h"), "redis://:***@h");
        assert_eq!(mask_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(mask_url("unix:///tmp/r.sock?db=1&user=u&pass=s3cret"), "unix:///tmp/r.sock?db=1&user=u&pass=***");
        assert_eq!(mask_url("redis+cluster://app:s3cret@h:1,h:2/?x=1"), "redis+cluster://app:***@h:1,h:2/?x=1");
        assert_eq!(mask_url("redis+cluster://h:1,h:2"), "redis+cluster://h:1,h:2");
        assert_eq!(
            mask_url("redis+sentinel://:s3cret@h:1,h:2/primary/0?sentinel_password=s3cret"),
            "redis+sentinel://:***@h:1,h:2/primary/0?sentinel_password=***"
        );
        let s = Settings::new("redis://app:s3cret@h:6379/2", "fj").unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn durations_out_of_range_are_refused_not_panics() {
        assert_eq!(seconds("t", 1.5, 0.0).unwrap(), Duration::from_millis(1500));
        assert!(seconds("t", MAX_SECONDS, 0.0).is_ok());
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e30, MAX_SECONDS * 1.01] {
            let e = seconds("connect_timeout", bad, 0.001).unwrap_err();
            assert!(e.to_string().starts_with("connect_timeout must be between 0.001 seconds and 100 years"), "{e}");
        }
    }

    #[test]
    fn only_a_temporary_lookup_failure_is_worth_retrying() {
        let io = |m: &str| std::io::Error::other(format!("failed to lookup address information: {m}"));
        assert!(unknown_host(&io("Name or service not known")));
        assert!(!unknown_host(&io("Temporary failure in name resolution")));
    }
}

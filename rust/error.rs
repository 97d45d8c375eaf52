//! The engine's one error type. `py/errors.rs` maps it to the Python hierarchy under
//! `fastjobs.FastJobsError`; retryable (connection, timeout) and fatal errors stay distinct.
//!
//! No message carries a password: errors about a server name it by its masked URL
//! (`conn::mask_url`), and redis-rs's own texts (kinds, server replies, OS errors) never
//! include the URL or the credentials it was given (a test checks every path).

use std::fmt;

#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached or the connection broke; retrying may succeed.
    Connection(String),
    /// Redis did not answer within the configured timeout; retrying may succeed.
    Timeout(String),
    /// The caller gave something invalid (a queue name, an id, a size over a limit).
    Invalid(String),
    /// Redis answered with an error, or with something the engine did not expect.
    Store(String),
    /// The engine was asked to work after it was closed.
    Closed(String),
    /// Redis refused the credentials (WRONGPASS), wants some (NOAUTH), or the user lacks a
    /// permission fastjobs needs (NOPERM: ACL rules that do not allow its commands, keys or
    /// channels): retrying with the same settings cannot succeed.
    Authentication(String),
    /// The caller named a queue nothing ever dispatched to or consumed (a misspelt name?).
    UnknownQueue(String),
    /// The database lacks the schema this build needs (none, or an older one): `fastjobs db
    /// init` makes it; retrying without that cannot succeed.
    Schema(String),
    /// TLS to the store cannot work with these settings: a certificate that does not verify
    /// against the given CA, a handshake the server refused, a server without TLS when the
    /// URL asks for it, a CA or key file that cannot be read. Retrying cannot succeed.
    Tls(String),
    /// A Redis Cluster node answered that a key lives elsewhere (MOVED, or ASK while its slot
    /// migrates). The cluster connection follows it; met on a `redis://` URL, the URL names
    /// one node of a cluster.
    Redirect(Redirect),
}

/// Where a Redis Cluster node sent a command (`Error::Redirect`).
#[derive(Debug, Clone)]
pub struct Redirect {
    /// ASK (this command only, while the slot migrates) rather than MOVED (the slot's owner).
    pub ask: bool,
    pub slot: u16,
    /// `host:port` of the node to ask.
    pub to: String,
    /// The node that answered (masked URL).
    pub server: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connection(m)
            | Error::Timeout(m)
            | Error::Invalid(m)
            | Error::Store(m)
            | Error::Closed(m)
            | Error::Authentication(m)
            | Error::UnknownQueue(m)
            | Error::Schema(m)
            | Error::Tls(m) => f.write_str(m),
            Error::Redirect(r) => write!(
                f,
                "Redis at {} is a node of a Redis Cluster, which serves slot {} from {}: connect with a redis+cluster:// URL",
                r.server, r.slot, r.to
            ),
        }
    }
}

impl std::error::Error for Error {}

/// The error codes of the server replies a redis-rs error carries (one, or one per failed
/// command of a pipeline).
fn server_codes(e: &redis::RedisError) -> Vec<String> {
    e.clone().into_server_errors().map(|errs| errs.iter().map(|(_, s)| s.code().to_string()).collect()).unwrap_or_default()
}

/// The first MOVED or ASK answer among a redis-rs error's server replies (a pipeline's
/// carry one per failed command): ASK or not, the slot, and the node to ask.
fn redirect_of(e: &redis::RedisError) -> Option<(bool, u16, String)> {
    let errs = e.clone().into_server_errors()?;
    errs.iter().find_map(|(_, s)| {
        let ask = match s.code() {
            "MOVED" => false,
            "ASK" => true,
            _ => return None,
        };
        let mut words = s.details()?.split_ascii_whitespace();
        let slot = words.next()?.parse().ok()?;
        Some((ask, slot, words.next()?.to_string()))
    })
}

/// Transient states a server answers with while it starts or fails over: a connection that
/// meets one is worth retrying.
const TRANSIENT_CODES: [&str; 5] = ["LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"];

impl Error {
    /// Classifies a redis-rs error, naming the server (password masked) when it is about
    /// reaching it.
    pub fn from_redis(e: redis::RedisError, server: &str) -> Error {
        let codes = server_codes(&e);
        let has = |code: &str| codes.iter().any(|c| c == code);
        if let Some((ask, slot, to)) = redirect_of(&e) {
            return Error::Redirect(Redirect { ask, slot, to, server: server.to_string() });
        }
        if e.kind() == redis::ErrorKind::AuthenticationFailed || has("WRONGPASS") {
            Error::Authentication(format!("Redis at {server} refused the user name or password of the URL: {e}"))
        } else if has("NOAUTH") {
            Error::Authentication(format!("Redis at {server} requires a password and the URL gives none: {e}"))
        } else if has("NOPERM") {
            Error::Authentication(format!(
                "Redis at {server} refused a command fastjobs needs: the user lacks a permission (it needs the scripting, \
                 list, sorted-set, hash, string and pub/sub commands on the keys ~<prefix>:* and channels &<prefix>:*, \
                 or +@all): {e}"
            ))
        } else if e.is_timeout() {
            Error::Timeout(format!("Redis at {server} did not answer in time: {e}"))
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Error::Connection(format!("cannot reach Redis at {server}: {e}"))
        } else if has("READONLY") {
            // A primary demoted by a failover (Sentinel) answers writes so: the new primary
            // is found on the next call.
            Error::Connection(format!("Redis at {server} is a replica now (failed over?); try again: {e}"))
        } else if has("CLUSTERDOWN") || has("TRYAGAIN") {
            // A cluster failing over (no primary for a slot yet) or migrating a slot: the
            // same command succeeds once that is over.
            Error::Connection(format!("Redis Cluster at {server} cannot serve the command now; try again: {e}"))
        } else if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) {
            // A restarted Redis answers LOADING until it has read its data back: it is not
            // there yet, as when it refuses connections (retryable, like redis-py's
            // BusyLoadingError, a ConnectionError).
            Error::Connection(format!("Redis at {server} is loading its data set (restarted?); try again: {e}"))
        } else {
            Error::Store(format!("Redis at {server} answered with an error: {e}"))
        }
    }

    /// Like `from_redis`, for an error met while opening a connection (handshake, first
    /// command, script loading): a server that is loading or failing over is worth retrying,
    /// any other refusal (a database index the server does not have) is not.
    pub fn from_redis_connecting(e: redis::RedisError, server: &str) -> Error {
        let codes = server_codes(&e);
        match Error::from_redis(e, server) {
            Error::Store(m) if codes.iter().any(|c| TRANSIENT_CODES.contains(&c.as_str())) => Error::Connection(m),
            other => other,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connection(_) | Error::Timeout(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_failures_are_typed_and_not_retryable() {
        let wrong: redis::RedisError = (redis::ErrorKind::AuthenticationFailed, "Password authentication failed").into();
        let e = Error::from_redis(wrong, "redis://u:***@h:1/0");
        assert!(matches!(e, Error::Authentication(_)) && !e.is_retryable(), "{e:?}");
        let noauth = redis::make_extension_error("NOAUTH".into(), Some("Authentication required.".into()));
        assert!(matches!(Error::from_redis(noauth, "x"), Error::Authentication(_)));
        let noperm = redis::make_extension_error("NOPERM".into(), Some("no permissions to run 'script|load'".into()));
        assert!(matches!(Error::from_redis(noperm, "x"), Error::Authentication(_)));
    }

    #[test]
    fn a_loading_server_is_retried_while_connecting_and_a_bad_database_is_not() {
        let loading = redis::make_extension_error("LOADING".into(), Some("Redis is loading the dataset in memory".into()));
        assert!(Error::from_redis_connecting(loading, "x").is_retryable());
        let db: redis::RedisError = (
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "Redis server refused to switch database",
            "DB index is out of range".to_string(),
        )
            .into();
        assert!(matches!(Error::from_redis_connecting(db, "x"), Error::Store(_)));
    }
}

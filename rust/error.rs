//! The engine's one error type. `py/errors.rs` maps it to the Python hierarchy under
//! `fastjobs.FastJobsError`; retryable (connection, timeout) and fatal errors stay distinct.

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
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connection(m) | Error::Timeout(m) | Error::Invalid(m) | Error::Store(m) | Error::Closed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Classifies a redis-rs error, naming the server (password masked) when it is about
    /// reaching it.
    pub fn from_redis(e: redis::RedisError, server: &str) -> Error {
        if e.is_timeout() {
            Error::Timeout(format!("Redis at {server} did not answer in time: {e}"))
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Error::Connection(format!("cannot reach Redis at {server}: {e}"))
        } else if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) {
            // A restarted Redis answers LOADING until it has read its data back: it is not
            // there yet, as when it refuses connections (retryable, like redis-py's
            // BusyLoadingError, a ConnectionError).
            Error::Connection(format!("Redis at {server} is loading its data set (restarted?); try again: {e}"))
        } else {
            Error::Store(format!("Redis at {server} answered with an error: {e}"))
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connection(_) | Error::Timeout(_))
    }
}

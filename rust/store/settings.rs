//! What every store is opened with: its URL, the key prefix (or table prefix) of this
//! application's data, timeouts, and how long results live.

use crate::error::{Error, Result};
use std::fmt;
use std::time::Duration;

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

#[derive(Clone)]
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
    /// Settings of `url` with the defaults; the URL is checked by the store it names.
    pub fn new(url: &str, prefix: &str) -> Result<Settings> {
        crate::store::validate_prefix(prefix)?;
        Ok(Settings {
            url: url.to_string(),
            prefix: prefix.to_string(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            result_ttl: Duration::from_secs(24 * 3600),
            tls: Tls::default(),
        })
    }

    /// The URL with its password replaced by `***`, for messages.
    pub fn masked_url(&self) -> String {
        mask_url(&self.url)
    }
}

/// Debug shows the masked URL: settings may end up in a log line.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.masked_url())
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("result_ttl", &self.result_ttl)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The URL with its password replaced by `***` (the user name stays): the password of
/// `redis://user:password@host`, and the `pass`/`password` parameter of
/// `unix:///path?user=u&pass=password`.
pub fn mask_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let secret = |k: &str| ["pass", "password", "sentinel_password"].iter().any(|s| k.eq_ignore_ascii_case(s));
            if u.query_pairs().any(|(k, _)| secret(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret(&k) { "***".to_string() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Several hosts (redis+cluster://, redis+sentinel://), which the url crate refuses.
        Err(_) => mask_hosts_url(raw).unwrap_or_else(|| "<unparsable URL>".to_string()),
    }
}

/// `mask_url` for `scheme://[user:password@]host:port,host:port[/path][?query]`.
fn mask_hosts_url(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hosts = match authority.rsplit_once('@') {
        Some((user, hosts)) if user.contains(':') => format!("{}:***@{hosts}", user.split(':').next().unwrap_or("")),
        Some((user, hosts)) => format!("{user}@{hosts}"),
        None => authority.to_string(),
    };
    // The query's secrets, through a URL of one host (the url crate reads the query).
    let one = format!("x://h{tail}");
    url::Url::parse(&one).ok()?;
    let masked_tail = mask_url(&one);
    let tail = masked_tail.strip_prefix("x://h")?;
    Some(format!("{scheme}://{hosts}{tail}"))
}

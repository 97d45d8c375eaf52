//! Signed HTTP callbacks. A job dispatched with `.callback(url)` or `.failure_callback(url)`
//! has its outcome posted to that URL by the worker that settled it: once the outcome was
//! acknowledged in the store, on a task of the I/O runtime (never on a handler thread).
//!
//! The body is JSON (`Post::body`); the request carries the user's headers,
//! `Content-Type: application/json`, `User-Agent: fastjobs/<version>`, `Fastjobs-Job-Id` and,
//! with a secret, `Fastjobs-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! (signed again at each try, so a receiver can refuse old ones). A 2xx is delivered; 408,
//! 429, 5xx, connection errors and timeouts are tried again with exponential backoff; any
//! other answer (redirects are not followed) fails at once. How it went is recorded on the
//! job (`Store::callback_record`).

use crate::runtime::runtime;
use crate::store::{QueueHandle, Store};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

pub const SIGNATURE_HEADER: &str = "fastjobs-signature";
pub const JOB_ID_HEADER: &str = "fastjobs-job-id";
pub const USER_AGENT: &str = concat!("fastjobs/", env!("CARGO_PKG_VERSION"));
/// The limit of each try: connecting, sending, and the answer's status line and headers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No wait between tries is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Notes kept for the worker to log; past it the oldest go.
const MAX_NOTES: usize = 100;
/// After the stop's wait, callbacks still in flight get this long to record that they were
/// not delivered.
const ABANDON_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Signs each request; None: posted unsigned (noted once).
    pub secret: Option<Vec<u8>>,
    /// Tries per callback, at least 1.
    pub attempts: u32,
    /// The wait after the first failed try, doubled after each next one (each wait drawn at
    /// random over its upper half).
    pub backoff: Duration,
}

impl Default for CallbackConfig {
    /// 5 tries over about a minute: waits of 4, 8, 16 and 32 s at most.
    fn default() -> Self {
        CallbackConfig { secret: None, attempts: 5, backoff: Duration::from_secs(4) }
    }
}

/// Checks a callback URL as the HTTP client will read it: http or https, with a host.
pub fn check_url(url: &str) -> crate::error::Result<()> {
    let bad = |why: String| Err(crate::error::Error::Invalid(format!("callback URL {url:?} {why}")));
    match url::Url::parse(url) {
        Err(e) => bad(format!("is not a valid URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => bad(format!("must be http:// or https://, not {}://", u.scheme())),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => bad("has no host".into()),
        Ok(_) => Ok(()),
    }
}

/// Where one outcome is posted, and the user's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// A job's callbacks, read from its options when it is handed out.
#[derive(Debug)]
pub struct Targets {
    pub completed: Option<Target>,
    pub failed: Option<Target>,
    /// The job's `meta` option, posted back with its outcome.
    pub meta: Option<serde_json::Value>,
}

/// The callbacks a job's options name (`"callback"`, `"failure_callback"`: `{"url",
/// "headers"}`). None for options that name none: they are parsed only when they mention one.
pub fn targets(options: &[u8]) -> Option<Box<Targets>> {
    memchr::memmem::find(options, b"callback\"")?;
    let v: serde_json::Value = serde_json::from_slice(options).ok()?;
    let target = |key: &str| -> Option<Target> {
        let t = v.get(key)?;
        let url = t.get("url")?.as_str()?.to_owned();
        let headers = match t.get("headers").and_then(|h| h.as_object()) {
            Some(h) => h.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect(),
            None => vec![],
        };
        Some(Target { url, headers })
    };
    let (completed, failed) = (target("callback"), target("failure_callback"));
    if completed.is_none() && failed.is_none() {
        return None;
    }
    Some(Box::new(Targets { completed, failed, meta: v.get("meta").cloned() }))
}

/// One outcome to post.
#[derive(Debug)]
pub struct Post<Q> {
    pub target: Target,
    pub queue: Arc<Q>,
    pub job_id: String,
    pub name: String,
    /// Completed (else failed for good).
    pub completed: bool,
    /// Attempts made, this one included.
    pub attempts: u16,
    /// The result JSON (None for a `None` return), or the error JSON (`worker::error_json`).
    pub data: Option<Vec<u8>>,
    pub meta: Option<serde_json::Value>,
}

impl<Q: QueueHandle> Post<Q> {
    /// What is posted: `{"job_id", "queue", "name", "state", "attempts", "result" or "error":
    /// {"type", "message"}, "meta", "at"}` (`at`: when the outcome was acknowledged, ms since
    /// the epoch).
    pub fn body(&self, at_ms: u64) -> Vec<u8> {
        use serde_json::{json, Value};
        let parsed = self.data.as_deref().map(|d| serde_json::from_slice::<Value>(d).unwrap_or_else(|_| String::from_utf8_lossy(d).into()));
        let mut body = json!({
            "job_id": self.job_id,
            "queue": self.queue.name(),
            "name": self.name,
            "state": if self.completed { "completed" } else { "failed" },
            "attempts": self.attempts,
            "meta": self.meta.clone().unwrap_or(Value::Null),
            "at": at_ms,
        });
        if self.completed {
            body["result"] = parsed.unwrap_or(Value::Null);
        } else {
            let e = parsed.unwrap_or(Value::Null);
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            body["error"] = json!({"type": field("type"), "message": field("message")});
        }
        serde_json::to_vec(&body).expect("a JSON value always serializes")
    }

    fn event(&self) -> &'static str {
        if self.completed {
            "completed"
        } else {
            "failed"
        }
    }
}

/// `t=<unix s>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &ring::hmac::Key, t: u64, body: &[u8]) -> String {
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    format!("t={t},v1={hex}")
}

/// What one try brought.
enum Try {
    Delivered(u16),
    /// Tried again (unless it was the last try): 408, 429, 5xx, a connection error or timeout.
    Again(Option<u16>, String),
    /// Not tried again: any other answer, or a request that cannot be made.
    Refused(Option<u16>, String),
}

/// Milliseconds since the epoch, this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Posts callbacks and records how they went; one per worker engine.
pub struct Deliverer<S: Store> {
    store: Arc<S>,
    cfg: CallbackConfig,
    key: Option<ring::hmac::Key>,
    /// Made at the first callback: a worker whose jobs have none builds no HTTP client.
    client: OnceLock<Result<reqwest::Client, String>>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Set when the worker stops and its wait for callbacks in flight ran out.
    abandon: watch::Sender<bool>,
    notes: Mutex<VecDeque<String>>,
    unsigned_noted: AtomicBool,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// Counts a callback in flight until dropped.
struct InFlight<'a, S: Store>(&'a Deliverer<S>);

impl<S: Store> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S: Store> Deliverer<S> {
    pub fn new(store: Arc<S>, cfg: CallbackConfig) -> Deliverer<S> {
        let key = cfg.secret.as_deref().map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s));
        Deliverer {
            store,
            cfg,
            key,
            client: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            abandon: watch::channel(false).0,
            notes: Mutex::default(),
            unsigned_noted: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Posts `post` on a task of the I/O runtime; `at_ms` is when its outcome was acknowledged.
    pub fn spawn(self: &Arc<Self>, post: Post<S::Queue>, at_ms: u64) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let me = self.clone();
        runtime().spawn(async move {
            let _counted = InFlight(&me);
            me.deliver(post, at_ms).await;
        });
    }

    /// Callbacks not yet delivered or given up.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Messages for the worker's log (a callback given up, an unsigned post), oldest first.
    pub fn take_notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().drain(..).collect()
    }

    fn note(&self, message: String) {
        let mut n = self.notes.lock().unwrap();
        if n.len() == MAX_NOTES {
            n.pop_front();
        }
        n.push_back(message);
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(USER_AGENT)
                    .build()
                    .map_err(|e| format!("the HTTP client could not be made: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Waits up to `wait` for the callbacks in flight; those still trying then stop and are
    /// recorded as not delivered. Returns how many were given up so.
    pub async fn drain(&self, wait: Duration) -> usize {
        if !self.wait_idle(wait).await {
            let left = self.in_flight();
            self.abandon.send_replace(true);
            self.wait_idle(ABANDON_WAIT).await;
            return left;
        }
        0
    }

    async fn wait_idle(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    async fn deliver(&self, post: Post<S::Queue>, at_ms: u64) {
        let body = post.body(at_ms);
        let mut abandon = self.abandon.subscribe();
        let mut last: (Option<u16>, String) = (None, String::new());
        let mut tries = 0;
        let attempts = self.cfg.attempts.max(1);
        while tries < attempts {
            if *abandon.borrow() {
                break;
            }
            tries += 1;
            let outcome = tokio::select! {
                t = self.try_once(&post, &body) => t,
                _ = abandon.wait_for(|a| *a) => break,
            };
            match outcome {
                Try::Delivered(code) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    self.record(&post, "delivered", tries, Some(code), "").await;
                    return;
                }
                Try::Refused(code, error) => {
                    self.give_up(&post, tries, code, error).await;
                    return;
                }
                Try::Again(code, error) => {
                    last = (code, error);
                    if tries == attempts {
                        break;
                    }
                    self.record(&post, "retrying", tries, last.0, &last.1).await;
                    let wait = self.backoff(tries);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = abandon.wait_for(|a| *a) => break,
                    }
                }
            }
        }
        if tries < attempts || *abandon.borrow() {
            let why = "the worker stopped before the callback was delivered";
            let error = if last.1.is_empty() { why.to_owned() } else { format!("{why} (last try: {})", last.1) };
            self.give_up(&post, tries, last.0, error).await;
        } else {
            self.give_up(&post, tries, last.0, last.1).await;
        }
    }

    async fn give_up(&self, post: &Post<S::Queue>, tries: u32, code: Option<u16>, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.note(format!(
            "the {} callback of job {} (queue {:?}) to {} was not delivered after {tries} tr{}: {error}",
            post.event(),
            post.job_id,
            post.queue.name(),
            post.target.url,
            if tries == 1 { "y" } else { "ies" }
        ));
        self.record(post, "failed", tries, code, &error).await;
    }

    /// The wait after `tries` failed tries.
    fn backoff(&self, tries: u32) -> Duration {
        let full = self.cfg.backoff.saturating_mul(1u32 << (tries - 1).min(20)).min(MAX_BACKOFF);
        full / 2 + full.mul_f64(rand::rng().random::<f64>() / 2.0)
    }

    async fn try_once(&self, post: &Post<S::Queue>, body: &[u8]) -> Try {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Try::Refused(None, e),
        };
        let mut req = client.post(&post.target.url);
        for (k, v) in &post.target.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header(reqwest::header::CONTENT_TYPE, "application/json").header(JOB_ID_HEADER, post.job_id.as_str());
        match &self.key {
            Some(key) => {
                let t = now_ms() / 1000;
                req = req.header(SIGNATURE_HEADER, signature(key, t, body));
            }
            None => {
                if !self.unsigned_noted.swap(true, Ordering::Relaxed) {
                    self.note(
                        "callbacks are posted unsigned: no callback secret is set (Worker(callback_secret=...), \
                         --callback-secret or FASTJOBS_CALLBACK_SECRET)"
                            .into(),
                    );
                }
            }
        }
        match req.body(body.to_vec()).send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                match code {
                    200..=299 => Try::Delivered(code),
                    408 | 429 | 500..=599 => Try::Again(Some(code), format!("HTTP {code}")),
                    300..=399 => Try::Refused(Some(code), format!("HTTP {code} (redirects are not followed)")),
                    _ => Try::Refused(Some(code), format!("HTTP {code}")),
                }
            }
            Err(e) if e.is_builder() => Try::Refused(None, format!("the request could not be made: {}", error_text(e))),
            Err(e) if e.is_timeout() => Try::Again(None, format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
            Err(e) => Try::Again(None, error_text(e)),
        }
    }

    async fn record(&self, post: &Post<S::Queue>, state: &str, tries: u32, code: Option<u16>, error: &str) {
        let fields: Vec<(&'static str, Vec<u8>)> = vec![
            ("state", state.into()),
            ("event", post.event().into()),
            ("url", post.target.url.clone().into_bytes()),
            ("attempts", tries.to_string().into_bytes()),
            ("code", code.map(|c| c.to_string()).unwrap_or_default().into_bytes()),
            ("error", error.into()),
            ("at", now_ms().to_string().into_bytes()),
        ];
        if let Err(e) = self.store.callback_record(&post.queue, &post.job_id, fields).await {
            self.note(format!("the outcome of job {}'s callback could not be recorded: {e}", post.job_id));
        }
    }
}

/// An HTTP error with its causes (reqwest's own text is only the outermost).
/// The URL is left out: it is recorded beside the error, and may carry a token.
fn error_text(e: reqwest::Error) -> String {
    let mut causes = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        causes.push_str(": ");
        causes.push_str(&s.to_string());
        source = s.source();
    }
    format!("{}{causes}", e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_only_from_options_that_name_them() {
        assert!(targets(br#"{"timeout":3}"#).is_none());
        assert!(targets(br#"{"meta":{"callback":"x"}}"#).is_none());
        let t = targets(br#"{"callback":{"url":"http://a/b","headers":{"X-A":"1"}},"meta":{"k":1}}"#).unwrap();
        assert_eq!(t.completed, Some(Target { url: "http://a/b".into(), headers: vec![("X-A".into(), "1".into())] }));
        assert!(t.failed.is_none());
        assert_eq!(t.meta, Some(serde_json::json!({"k": 1})));
        let t = targets(br#"{"failure_callback":{"url":"https://c"}}"#).unwrap();
        assert_eq!(t.failed.unwrap().url, "https://c");
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(check_url("https://example.com/hook?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        for bad in ["ftp://example.com", "example.com/hook", "http://", "https://:80/x", "http://[::1", "mailto:a@b"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // RFC 4231 test case 2 ("what do ya want for nothing?"), as "<t>.<body>".
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let s = signature(&key, 0, b"what do ya want for nothing?");
        assert!(s.starts_with("t=0,v1="));
        assert_eq!(s.len(), "t=0,v1=".len() + 64);
        let direct = ring::hmac::sign(&key, b"0.what do ya want for nothing?");
        let hex: String = direct.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(s, format!("t=0,v1={hex}"));
    }

    #[test]
    fn bodies_carry_the_outcome() {
        let q = Arc::new(crate::store::redis::keys::QueueKeys::new("fj", "q").unwrap());
        let target = Target { url: "http://x".into(), headers: vec![] };
        let mut p = Post {
            target,
            queue: q,
            job_id: "j1".into(),
            name: "Job".into(),
            completed: true,
            attempts: 2,
            data: Some(br#"{"n":12345678901234}"#.to_vec()),
            meta: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&p.body(7)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"job_id": "j1", "queue": "q", "name": "Job", "state": "completed", "attempts": 2,
                                         "result": {"n": 12345678901234u64}, "meta": null, "at": 7})
        );
        p.completed = false;
        p.data = Some(crate::engine::worker::error_json("ValueError", "bad", "Traceback..."));
        let v: serde_json::Value = serde_json::from_slice(&p.body(7)).unwrap();
        assert_eq!(v["error"], serde_json::json!({"type": "ValueError", "message": "bad"}));
        assert!(v.get("result").is_none());
    }
}

//! Wake-ups over LISTEN/NOTIFY, on one dedicated connection: the schema's functions notify
//! `fastjobs_wake` (a queue has ready jobs), `fastjobs_results` (`<queue>\n<id>`: a job
//! somebody waits for ended), `fastjobs_control` (a queue was paused or resumed, a job asked
//! to cancel), `fastjobs_sched` (a delayed job was written) and `fastjobs_schedules`; each is
//! delivered when its transaction commits. Nothing polls: a broken connection is reopened,
//! and then every signal fires once, so whoever waits looks again.

use super::pool::{connect, Endpoint};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

pub(crate) const WAKE: &str = "fastjobs_wake";
pub(crate) const RESULTS: &str = "fastjobs_results";
pub(crate) const CONTROL: &str = "fastjobs_control";
pub(crate) const SCHED: &str = "fastjobs_sched";
pub(crate) const SCHEDULES: &str = "fastjobs_schedules";
const CHANNELS: &str =
    "LISTEN fastjobs_wake; LISTEN fastjobs_results; LISTEN fastjobs_control; LISTEN fastjobs_sched; LISTEN fastjobs_schedules";

/// What idle workers wait on (`Store::wait_for_work`, a blocking call): a count of wake-ups
/// per queue, and the workers nudged.
#[derive(Default)]
struct Wakes {
    /// Queue -> wake-ups heard.
    heard: HashMap<String, u64>,
    /// Times the listening connection was (re)opened: wake-ups may have been lost before.
    epoch: u64,
    /// (worker, queue) -> the count and the epoch when that worker last looked at the queue
    /// (its reserve).
    seen: HashMap<(String, String), (u64, u64)>,
    nudged: HashSet<String>,
}

#[derive(Default)]
pub(crate) struct Signals {
    /// (channel, payload) -> its signal.
    async_signals: Mutex<HashMap<(&'static str, String), Arc<Notify>>>,
    wakes: Mutex<Wakes>,
    woken: Condvar,
}

impl Signals {
    /// The signal of one payload on one channel (a hint: it may also fire spuriously).
    pub fn signal(&self, channel: &'static str, payload: &str) -> Arc<Notify> {
        self.async_signals.lock().unwrap().entry((channel, payload.to_string())).or_default().clone()
    }

    /// Drops a signal nobody else holds (a waiter's, after its wait).
    pub fn drop_signal(&self, channel: &'static str, payload: &str, n: Arc<Notify>) {
        let mut m = self.async_signals.lock().unwrap();
        drop(n);
        if m.get(&(channel, payload.to_string())).is_some_and(|s| Arc::strong_count(s) == 1) {
            m.remove(&(channel, payload.to_string()));
        }
    }

    fn deliver(&self, channel: &str, payload: &str) {
        let channel = match channel {
            WAKE => {
                *self.wakes.lock().unwrap().heard.entry(payload.to_string()).or_default() += 1;
                self.woken.notify_all();
                WAKE // and the busy workers' prefetch (`Store::ready_signal`)
            }
            RESULTS => RESULTS,
            CONTROL => CONTROL,
            SCHED => SCHED,
            SCHEDULES => SCHEDULES,
            _ => return,
        };
        if let Some(n) = self.async_signals.lock().unwrap().get(&(channel, payload.to_string())) {
            n.notify_waiters();
            n.notify_one();
        }
    }

    /// The connection broke: whatever was notified meanwhile is lost, so everybody looks again.
    fn all(&self) {
        for n in self.async_signals.lock().unwrap().values() {
            n.notify_waiters();
            n.notify_one();
        }
        self.wakes.lock().unwrap().epoch += 1;
        self.woken.notify_all();
    }

    /// A reserve of `worker` in `queue` begins: wake-ups before it are not news to its wait.
    pub fn looking(&self, worker: &str, queue: &str) {
        let mut w = self.wakes.lock().unwrap();
        let now = (w.heard.get(queue).copied().unwrap_or(0), w.epoch);
        w.seen.insert((worker.to_string(), queue.to_string()), now);
    }

    pub fn nudge(&self, worker: &str) {
        self.wakes.lock().unwrap().nudged.insert(worker.to_string());
        self.woken.notify_all();
    }

    /// Blocks until one of `queues` was woken since `worker` last looked at it, the worker is
    /// nudged, or `timeout` passes.
    pub fn wait(&self, queues: &[&str], worker: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        let mut w = self.wakes.lock().unwrap();
        loop {
            if w.nudged.remove(worker) {
                return;
            }
            let news = queues.iter().any(|q| {
                let (count, epoch) = w.seen.get(&(worker.to_string(), q.to_string())).copied().unwrap_or((0, 0));
                w.heard.get(*q).copied().unwrap_or(0) > count || w.epoch > epoch
            });
            if news {
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            w = self.woken.wait_timeout(w, left).unwrap().0;
        }
    }
}

/// How often the listening connection is asked for an answer: a network gone quiet tells TCP
/// nothing, and a connection that only listens would wait on it for ever.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Runs the listening connection until the task is aborted (the store dropped), reopening it
/// after a break, or when a probe is not answered within `response`.
pub(crate) async fn listen(endpoint: Endpoint, response: Duration, signals: Arc<Signals>, ready: Arc<Notify>) {
    loop {
        if let Ok((client, mut connection)) = endpoint.open("").await {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let client = &client;
            let answered =
                |sql: &'static str| async move { matches!(tokio::time::timeout(response, client.batch_execute(sql)).await, Ok(Ok(()))) };
            let listening = async {
                if !answered(CHANNELS).await {
                    return;
                }
                signals.all();
                ready.notify_one();
                loop {
                    tokio::time::sleep(PROBE_EVERY).await;
                    if !answered("").await {
                        return;
                    }
                }
            };
            let reading = async {
                while let Some(Ok(m)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = m {
                        signals.deliver(n.channel(), n.payload());
                    }
                }
            };
            tokio::select! {
                () = listening => {}
                () = reading => {}
            }
        }
        signals.all();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Opens a plain connection (for `PgStore::init_schema`).
pub(crate) async fn plain(endpoint: &Endpoint, server: &Arc<str>) -> crate::error::Result<tokio_postgres::Client> {
    connect(endpoint, server).await
}

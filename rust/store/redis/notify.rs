//! Pub/sub routing for one process: results of jobs somebody waits for, and wake-ups for
//! schedulers. One subscriber connection carries every channel; messages are routed to
//! local waiters by job id. If that connection breaks, every waiter is told to look again
//! (it re-reads the job's state), so no result is missed.

use crate::error::{Error, Result};
use crate::store::redis::cluster::Topology;
use crate::store::redis::conn::Settings;
use crate::store::State;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify};

/// What a waiter receives: the job's final state and its result or error JSON.
pub type Delivered = (State, Vec<u8>);

#[derive(Default)]
struct Routes {
    waiters: HashMap<(String, String), Vec<oneshot::Sender<Delivered>>>,
    signals: HashMap<String, Arc<Notify>>,
    subscribed: HashSet<String>,
}

pub struct Notifier {
    settings: Settings,
    /// On a cluster, messages published on any node reach every node: one subscriber
    /// connection to any of them serves.
    top: Option<Arc<Topology>>,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    routes: Arc<Mutex<Routes>>,
}

impl Notifier {
    pub fn new(settings: &Settings, top: Option<Arc<Topology>>) -> Notifier {
        Notifier { settings: settings.clone(), top, sink: tokio::sync::Mutex::new(None), routes: Arc::default() }
    }

    async fn subscribe(&self, channel: &str) -> Result<()> {
        if self.routes.lock().unwrap().subscribed.contains(channel) {
            return Ok(());
        }
        let mut sink = self.sink.lock().await;
        if sink.is_none() {
            *sink = Some(self.connect().await?);
        }
        let s = sink.as_mut().expect("connected above");
        if let Err(e) = s.subscribe(channel).await {
            *sink = None;
            return Err(Error::from_redis(e, &self.settings.masked_url()));
        }
        self.routes.lock().unwrap().subscribed.insert(channel.to_string());
        Ok(())
    }

    async fn connect(&self) -> Result<PubSubSink> {
        let settings = match &self.top {
            None => self.settings.clone(),
            Some(top) => {
                let t = top.clone();
                let node = tokio::task::spawn_blocking(move || t.refresh().and_then(|_| t.node_for(None)))
                    .await
                    .map_err(|e| Error::Store(format!("cluster map refresh: {e}")))??;
                top.node_settings(&node)
            }
        };
        let url = settings.masked_url();
        let client = crate::store::redis::conn::redis_client(&settings)?;
        let ps = tokio::time::timeout(self.settings.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| {
                Error::Connection(format!("cannot reach Redis at {url}: no connection within {:?}", self.settings.connect_timeout))
            })
            .and_then(|r| r.map_err(|e| Error::from_redis(e, &url)));
        // A node that cannot be reached, or whose connection broke, may have failed over:
        // the next connection reads the map again.
        let top = self.top.clone();
        let ps = ps.inspect_err(|_| top.iter().for_each(|t| t.stale()))?;
        let (sink, mut stream) = ps.split();
        let routes = self.routes.clone();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name().to_string();
                let body: Vec<u8> = msg.get_payload_bytes().to_vec();
                route(&routes, channel, body);
            }
            // The connection is gone: every waiter looks again, every scheduler re-arms.
            top.iter().for_each(|t| t.stale());
            let mut r = routes.lock().unwrap();
            r.subscribed.clear();
            r.waiters.clear();
            for n in r.signals.values() {
                n.notify_one();
            }
        });
        Ok(sink)
    }

    /// Registers interest in one job's outcome on `channel`. Subscribe first, then read the
    /// job's state: a result published after that read cannot be missed.
    pub async fn waiter(&self, channel: &str, id: &str) -> Result<oneshot::Receiver<Delivered>> {
        self.subscribe(channel).await?;
        let (tx, rx) = oneshot::channel();
        self.routes.lock().unwrap().waiters.entry((channel.to_string(), id.to_string())).or_default().push(tx);
        Ok(rx)
    }

    /// Drops waiters whose receivers are gone (timed out or cancelled).
    pub fn forget(&self, channel: &str, id: &str) {
        let mut r = self.routes.lock().unwrap();
        let key = (channel.to_string(), id.to_string());
        if let Some(v) = r.waiters.get_mut(&key) {
            v.retain(|tx| !tx.is_closed());
            if v.is_empty() {
                r.waiters.remove(&key);
            }
        }
    }

    /// A signal fired on every message of `channel` (and when the subscription breaks).
    pub async fn signal(&self, channel: &str) -> Result<Arc<Notify>> {
        let n = self.routes.lock().unwrap().signals.entry(channel.to_string()).or_default().clone();
        self.subscribe(channel).await?;
        Ok(n)
    }
}

fn route(routes: &Mutex<Routes>, channel: String, body: Vec<u8>) {
    let mut r = routes.lock().unwrap();
    if let Some(n) = r.signals.get(&channel) {
        n.notify_one();
        return;
    }
    // results message: <kind><id>\n<data>, kind 'c' completed, 'f' failed, 'x' cancelled or
    // 'u' removed (unknown from now on)
    let Some(nl) = body.iter().position(|&b| b == b'\n') else { return };
    if nl < 1 {
        return;
    }
    let state = match body[0] {
        b'f' => State::Failed,
        b'x' => State::Cancelled,
        b'u' => State::Unknown,
        _ => State::Completed,
    };
    let id = String::from_utf8_lossy(&body[1..nl]).into_owned();
    if let Some(txs) = r.waiters.remove(&(channel, id)) {
        let data = body[nl + 1..].to_vec();
        for tx in txs {
            let _ = tx.send((state.clone(), data.clone()));
        }
    }
}

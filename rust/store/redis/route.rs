//! A Redis store's connections: to one server (conn.rs), or routed: to the nodes of a Redis
//! Cluster, each command sent to the node serving its key's slot (cluster.rs), redirects
//! followed, or to the primary Sentinel names (sentinel.rs). The store calls them the same way.

use crate::error::{Error, Result};
use crate::store::redis::cluster::{self, follow, key_of, slot, Topology, MAX_REDIRECTS};
use crate::store::redis::conn::{Conn, Settings, Stream, SyncConn};
use futures_util::future::join_all;
use redis::{Cmd, FromRedisValue, Pipeline, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The topology of a cluster or Sentinel URL, None for one server.
pub fn topology(settings: &Settings) -> Result<Option<Arc<Topology>>> {
    if cluster::is_routed_url(&settings.url) {
        Topology::new(settings).map(Some)
    } else {
        Ok(None)
    }
}

/// One connection per node, opened on first use.
pub struct PerNode<C> {
    top: Arc<Topology>,
    open: Mutex<HashMap<String, Arc<C>>>,
}

impl<C> PerNode<C> {
    fn new(top: Arc<Topology>) -> PerNode<C> {
        PerNode { top, open: Mutex::default() }
    }

    fn node(&self, addr: &str, new: impl FnOnce(&Settings) -> Result<C>) -> Result<Arc<C>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = open.get(addr) {
            return Ok(c.clone());
        }
        let c = Arc::new(new(&self.top.node_settings(addr))?);
        open.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

fn too_many(top: &Topology) -> Error {
    Error::Connection(format!("{} kept redirecting a command ({MAX_REDIRECTS} times): its slots are moving; try again", top.describe()))
}

/// Where a redirect says to go next: the ASK node (for those commands only), or None to
/// route again by the (updated) map.
fn asked(e: &Error) -> Option<String> {
    match e {
        Error::Redirect(r) if r.ask => Some(r.to.clone()),
        _ => None,
    }
}

/// The shared multiplexed connection (conn.rs `Conn`), or one per cluster node.
// A store holds four links: the one-server variant stays inline rather than boxed.
#[allow(clippy::large_enum_variant)]
pub enum Link {
    One(Conn),
    Routed(PerNodeConn),
}

pub struct PerNodeConn(PerNode<Conn>);

impl Link {
    pub fn new(settings: &Settings, top: Option<&Arc<Topology>>) -> Result<Link> {
        Ok(match top {
            Some(t) => Link::Routed(PerNodeConn(PerNode::new(t.clone()))),
            None => Link::One(Conn::new(settings)?),
        })
    }

    pub fn settings(&self) -> &Settings {
        match self {
            Link::One(c) => c.settings(),
            Link::Routed(c) => c.0.top.settings(),
        }
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        match self {
            Link::One(c) => c.query(cmd).await,
            Link::Routed(c) => {
                let mut p = redis::pipe();
                p.add_command(cmd.clone());
                let one = c.pipeline(&p).await?.pop().ok_or_else(|| Error::Store("empty reply from Redis".into()))?;
                T::from_redis_value(one).map_err(|e| Error::Store(format!("unexpected reply from Redis: {e}")))
            }
        }
    }

    /// Replies in command order; an error reply fails the whole call (as on one server).
    pub async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        match self {
            Link::One(c) => c.pipeline(pipe).await,
            Link::Routed(c) => c.pipeline(pipe).await,
        }
    }

    pub async fn eval<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T> {
        match self {
            Link::One(c) => c.eval(cmd).await,
            Link::Routed(_) => self.query(&cmd).await,
        }
    }
}

impl PerNodeConn {
    /// Reads the map again when it is stale, off the I/O threads.
    async fn refreshed(&self) -> Result<()> {
        if self.0.top.needs_refresh() {
            let t = self.0.top.clone();
            tokio::task::spawn_blocking(move || t.refresh()).await.map_err(|e| Error::Store(format!("cluster map refresh: {e}")))??;
        }
        Ok(())
    }

    /// Splits the pipeline by node and runs the parts at once. A MULTI/EXEC pipeline (one
    /// key's commands) goes whole. A part redirected (MOVED, ASK) did not run and is sent
    /// again where it was told.
    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let top = &self.0.top;
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        if pipe.is_transaction() {
            let key_slot = cmds.iter().find_map(|c| key_of(c)).map(slot);
            for _ in 0..MAX_REDIRECTS {
                self.refreshed().await?;
                let node = self.0.node(&top.node_for(key_slot)?, Conn::new)?;
                match node.pipeline(pipe).await {
                    Err(e) if follow(top, &e) => continue,
                    r => return r,
                }
            }
            return Err(too_many(top));
        }
        let mut out: Vec<Option<Value>> = vec![None; cmds.len()];
        let mut todo: Vec<(Vec<usize>, Option<String>)> = vec![((0..cmds.len()).collect(), None)];
        for _ in 0..MAX_REDIRECTS {
            if todo.is_empty() {
                break;
            }
            self.refreshed().await?;
            let mut parts: Vec<(String, bool, Vec<usize>)> = vec![];
            for (idx, ask) in todo.drain(..) {
                match ask {
                    Some(to) => parts.push((to, true, idx)),
                    None => {
                        let sub: Vec<&Cmd> = idx.iter().map(|&i| cmds[i]).collect();
                        for (node, within) in cluster::group(top, &sub)?.nodes {
                            parts.push((node, false, within.into_iter().map(|j| idx[j]).collect()));
                        }
                    }
                }
            }
            let cmds = &cmds;
            let sent = join_all(parts.iter().map(|(node, asking, idx)| async move {
                let mut p = redis::pipe();
                for &i in idx {
                    if *asking {
                        p.cmd("ASKING").ignore();
                    }
                    p.add_command(cmds[i].clone());
                }
                self.0.node(node, Conn::new)?.pipeline(&p).await
            }))
            .await;
            for ((_, _, idx), r) in parts.into_iter().zip(sent) {
                match r {
                    Ok(values) => idx.iter().zip(values).for_each(|(&i, v)| out[i] = Some(v)),
                    Err(e) if follow(top, &e) => todo.push((idx, asked(&e))),
                    Err(e) => return Err(e),
                }
            }
        }
        if !todo.is_empty() {
            return Err(too_many(top));
        }
        out.into_iter().map(|v| v.ok_or_else(|| Error::Store("a pipeline reply went missing".into()))).collect()
    }
}

/// A plain connection of a thread of its own (conn.rs `SyncConn`), or one per cluster node.
#[allow(clippy::large_enum_variant)]
pub enum SyncLink {
    One(SyncConn),
    Routed(PerNode<SyncConn>),
}

impl SyncLink {
    pub fn new(settings: &Settings, top: Option<&Arc<Topology>>) -> Result<SyncLink> {
        Ok(match top {
            Some(t) => SyncLink::Routed(PerNode::new(t.clone())),
            None => SyncLink::One(SyncConn::new(settings)?),
        })
    }

    /// One server's connection or, on a cluster, the connection to the node serving the
    /// slot of `key` (refreshing the map first when it is stale).
    fn at(nodes: &PerNode<SyncConn>, key: Option<&[u8]>, ask: Option<&str>) -> Result<Arc<SyncConn>> {
        let node = match ask {
            Some(to) => to.to_string(),
            None => {
                if nodes.top.needs_refresh() {
                    nodes.top.refresh()?;
                }
                nodes.top.node_for(key.map(slot))?
            }
        };
        nodes.node(&node, SyncConn::new)
    }

    /// Runs `cmd`, waiting at most `read_timeout` for its answer.
    pub fn query<T: FromRedisValue>(&self, cmd: &Cmd, read_timeout: Duration) -> Result<T> {
        let nodes = match self {
            SyncLink::One(c) => return c.query(cmd, read_timeout),
            SyncLink::Routed(n) => n,
        };
        let mut ask: Option<String> = None;
        for _ in 0..MAX_REDIRECTS {
            let c = Self::at(nodes, key_of(cmd), ask.as_deref())?;
            let r = match ask.take() {
                None => c.query(cmd, read_timeout),
                Some(_) => {
                    let asking = [redis::cmd("ASKING"), cmd.clone()];
                    let v = c.pipeline(&asking, read_timeout)?.pop().ok_or_else(|| Error::Store("empty reply from Redis".into()))?;
                    v.extract_error()
                        .map_err(|e| Error::from_redis(e, &c.settings().masked_url()))
                        .and_then(|v| T::from_redis_value(v).map_err(|e| Error::Store(format!("unexpected reply from Redis: {e}"))))
                }
            };
            match r {
                Err(e) if follow(&nodes.top, &e) => ask = asked(&e),
                r => return r,
            }
        }
        Err(too_many(&nodes.top))
    }

    /// Like `query`, but None when another thread is using the connection (one server).
    pub fn try_query<T: FromRedisValue>(&self, cmd: &Cmd, read_timeout: Duration) -> Option<Result<T>> {
        match self {
            SyncLink::One(c) => c.try_query(cmd, read_timeout),
            SyncLink::Routed(_) => Some(self.query(cmd, read_timeout)),
        }
    }

    /// Writes commands packed already (conn.rs `SyncConn::packed`); on a cluster, to the
    /// node serving `key`'s slot. They must be one MULTI/EXEC: a redirect means none ran.
    pub fn packed(&self, key: &str, bytes: &[u8], skip: usize, keep: usize, read_timeout: Duration) -> Result<Vec<Value>> {
        let nodes = match self {
            SyncLink::One(c) => return c.packed(bytes, skip, keep, read_timeout),
            SyncLink::Routed(n) => n,
        };
        for _ in 0..MAX_REDIRECTS {
            match Self::at(nodes, Some(key.as_bytes()), None)?.packed(bytes, skip, keep, read_timeout) {
                Err(e @ Error::Redirect(_)) if follow(&nodes.top, &e) => continue,
                Err(e) => {
                    follow(&nodes.top, &e);
                    return Err(e);
                }
                r => return r,
            }
        }
        Err(too_many(&nodes.top))
    }

    /// An answer per command, error answers included (conn.rs `SyncConn::pipeline`); on a
    /// cluster, commands redirected are sent again where they were told.
    pub fn pipeline(&self, cmds: &[Cmd], read_timeout: Duration) -> Result<Vec<Value>> {
        let nodes = match self {
            SyncLink::One(c) => return c.pipeline(cmds, read_timeout),
            SyncLink::Routed(n) => n,
        };
        let top = &nodes.top;
        let mut out: Vec<Option<Value>> = vec![None; cmds.len()];
        let mut todo: Vec<(usize, Option<String>)> = (0..cmds.len()).map(|i| (i, None)).collect();
        for _ in 0..MAX_REDIRECTS {
            if todo.is_empty() {
                break;
            }
            let (asked_ones, routed): (Vec<_>, Vec<_>) = std::mem::take(&mut todo).into_iter().partition(|(_, a)| a.is_some());
            let mut parts: Vec<(Arc<SyncConn>, bool, Vec<usize>)> = vec![];
            for (i, to) in asked_ones {
                parts.push((Self::at(nodes, None, to.as_deref())?, true, vec![i]));
            }
            if !routed.is_empty() {
                if top.needs_refresh() {
                    top.refresh()?;
                }
                let idx: Vec<usize> = routed.into_iter().map(|(i, _)| i).collect();
                let sub: Vec<&Cmd> = idx.iter().map(|&i| &cmds[i]).collect();
                for (node, within) in cluster::group(top, &sub)?.nodes {
                    parts.push((nodes.node(&node, SyncConn::new)?, false, within.into_iter().map(|j| idx[j]).collect()));
                }
            }
            for (c, asking, idx) in parts {
                let mut send: Vec<Cmd> = Vec::with_capacity(idx.len() * 2);
                for &i in &idx {
                    if asking {
                        send.push(redis::cmd("ASKING"));
                    }
                    send.push(cmds[i].clone());
                }
                let values = c.pipeline(&send, read_timeout).inspect_err(|e| {
                    follow(top, e);
                })?;
                let values = values.into_iter().skip(usize::from(asking)).step_by(1 + usize::from(asking));
                for (&i, v) in idx.iter().zip(values) {
                    let redirect = match &v {
                        Value::ServerError(s) if matches!(s.code(), "MOVED" | "ASK") => {
                            Some(Error::from_redis(redis::RedisError::from(s.clone()), &c.settings().masked_url()))
                        }
                        _ => None,
                    };
                    match redirect {
                        Some(e) if follow(top, &e) => todo.push((i, asked(&e))),
                        _ => out[i] = Some(v),
                    }
                }
            }
        }
        if !todo.is_empty() {
            return Err(too_many(top));
        }
        out.into_iter().map(|v| v.ok_or_else(|| Error::Store("a pipeline reply went missing".into()))).collect()
    }

    /// A socket for an event loop to drive (loop_conn.rs): one server only; a cluster's
    /// single dispatches take the dispatch thread.
    pub fn open_stream(&self) -> Result<Option<Stream>> {
        match self {
            SyncLink::One(c) => c.open_stream(),
            SyncLink::Routed(_) => Ok(None),
        }
    }

    /// As `SyncConn::check`, for every primary of a cluster: Ok(None) when all answered,
    /// Ok(Some(error)) when one cannot be reached now, Err when the settings cannot work
    /// (nodes that are no cluster, credentials).
    pub fn check(&self) -> Result<Option<Error>> {
        let nodes = match self {
            SyncLink::One(c) => return c.check(),
            SyncLink::Routed(n) => n,
        };
        match nodes.top.refresh() {
            Err(e) if e.is_retryable() => return Ok(Some(e)),
            r => r?,
        }
        for node in nodes.top.primaries() {
            if let Some(e) = SyncConn::new(&nodes.top.node_settings(&node))?.check()? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Whether keys of different slots can never be in one command here (a cluster).
    pub fn is_cluster(&self) -> bool {
        matches!(self, SyncLink::Routed(n) if n.top.is_cluster())
    }
}

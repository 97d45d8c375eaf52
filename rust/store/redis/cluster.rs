//! Redis Cluster: the slot map, and which node a command goes to.
//!
//! Every key of a queue carries the queue's hash tag (`<prefix>:{<queue>}:…`), so a queue
//! lives in one slot and every command and script of fastjobs talks to one node: nothing it
//! sends spans slots, so no CROSSSLOT answer can happen. The map is read with CLUSTER SLOTS
//! from any node that answers (those learnt first, then the URL's). A MOVED answer updates
//! the slot and marks the map stale; a node that cannot be reached marks it stale too, so
//! calls after a failover find the promoted replica.

use crate::error::{Error, Result};
use crate::store::settings::Settings;
use redis::{Cmd, Value};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub const SLOTS: usize = 16384;

/// A slot no node serves (in the map's `owner`).
const NOBODY: u16 = u16::MAX;

/// How often the map may be read again when calls keep finding it stale (a node that is
/// down until a failover ends fails every call quickly).
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// URLs of servers found by asking: `redis+cluster://` and `redis+sentinel://` (and their
/// `rediss+` forms for TLS).
pub fn is_routed_url(url: &str) -> bool {
    ["redis+cluster://", "rediss+cluster://", "redis+sentinel://", "rediss+sentinel://"].iter().any(|p| url.starts_with(p))
}

/// The slot of a key: CRC16 (XMODEM) of its hash tag, the part between the first `{` and
/// the next `}` when that is not empty, else of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let tag = memchr::memchr(b'{', key)
        .and_then(|open| {
            let rest = &key[open + 1..];
            memchr::memchr(b'}', rest).filter(|&len| len > 0).map(|len| &rest[..len])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % SLOTS as u16
}

/// The key a command is routed by: a script's first key, the first stream of XREAD, the
/// MATCH pattern of SCAN (its hash tag names the queue whose keys it lists), else the first
/// argument. None for commands about no key (PING, SCRIPT): any node answers those.
pub fn key_of(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()?;
    let is = |b: &[u8], s: &str| b.eq_ignore_ascii_case(s.as_bytes());
    if is(name, "EVALSHA") || is(name, "EVAL") {
        let _script = args.next()?;
        return if args.next()? == b"0" { None } else { args.next() };
    }
    if is(name, "XREAD") {
        return args.skip_while(|a| !is(a, "STREAMS")).nth(1);
    }
    if is(name, "SCAN") {
        return args.skip_while(|a| !is(a, "MATCH")).nth(1);
    }
    if ["PING", "SCRIPT", "INFO", "CLUSTER", "ASKING", "MULTI", "EXEC"].iter().any(|n| is(name, n)) {
        return None;
    }
    args.next()
}

/// The nodes a URL lists, and how to reach each: `redis+cluster://[user:password@]host:port,
/// host:port[/0][?query]`, or `redis+sentinel://[user:password@]host:port,host:port/service
/// [/db][?query]` (the Sentinels, and the name of the primary they watch). The credentials,
/// TLS, database and query apply to every data node, those learnt too; Sentinels are asked
/// without credentials unless the query gives `sentinel_username` and `sentinel_password`.
#[derive(Clone)]
pub(crate) struct Nodes {
    pub(crate) kind: Kind,
    scheme: &'static str,
    userinfo: String,
    db: u32,
    /// The query, with its `?` (Sentinel's own parameters taken out).
    query: String,
    pub(crate) listed: Vec<String>,
    /// `user:password@` for the Sentinels.
    sentinel_auth: String,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Cluster,
    /// The primary a Sentinel quorum names.
    Sentinel(String),
}

fn parse(url: &str) -> Result<Nodes> {
    let masked = crate::store::settings::mask_url(url);
    let sentinel = url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://");
    let what = if sentinel { "Redis Sentinel" } else { "Redis Cluster" };
    let bad = |why: &str| Error::Invalid(format!("invalid {what} URL {masked}: {why}"));
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster" | "redis+sentinel", r)) => ("redis", r),
        Some(("rediss+cluster" | "rediss+sentinel", r)) => ("rediss", r),
        _ => return Err(bad("it must start with redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://")),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (path, query) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (kind, db) = if sentinel {
        let Some(service) = parts.first() else { return Err(bad("name the primary after the Sentinels: .../mymaster")) };
        let db = match parts.get(1) {
            None => 0,
            Some(d) => d.parse().map_err(|_| bad(&format!("the database index {d:?} is not a number")))?,
        };
        if parts.len() > 2 {
            return Err(bad("the path is /<primary name>[/<database>]"));
        }
        (Kind::Sentinel(service.to_string()), db)
    } else {
        if !matches!(parts.as_slice(), [] | ["0"]) {
            return Err(bad("a cluster has database 0 only; leave the database index out"));
        }
        (Kind::Cluster, 0)
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let mut listed = vec![];
    for h in hosts.split(',') {
        let h = h.trim();
        if h.is_empty() {
            return Err(bad("list each node as host:port, separated by commas"));
        }
        let has_port = match h.rfind(']') {
            Some(close) => h[close..].contains(':'), // [::1]:7000
            None => h.contains(':'),
        };
        let port = if sentinel { 26379 } else { 6379 };
        listed.push(if has_port { h.to_string() } else { format!("{h}:{port}") });
    }
    // Sentinel's own parameters are not the data nodes'.
    let (mut kept, mut user, mut pass) = (vec![], String::new(), String::new());
    for pair in query.trim_start_matches('?').split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sentinel_username", v)) => user = v.to_string(),
            Some(("sentinel_password", v)) => pass = v.to_string(),
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    let sentinel_auth = if pass.is_empty() { String::new() } else { format!("{user}:{pass}@") };
    let nodes = Nodes { kind, scheme, userinfo: userinfo.to_string(), db, query, listed, sentinel_auth };
    for n in &nodes.listed {
        redis::Client::open(nodes.url(n)).map_err(|e| bad(&format!("node {n}: {e}")))?;
    }
    Ok(nodes)
}

impl Nodes {
    /// The `redis://` (or `rediss://`) URL of one data node.
    fn url(&self, addr: &str) -> String {
        format!("{}://{}{}/{}{}", self.scheme, self.userinfo, addr, self.db, self.query)
    }

    /// The URL of one Sentinel.
    pub(crate) fn sentinel_url(&self, addr: &str) -> String {
        format!("{}://{}{}/0{}", self.scheme, self.sentinel_auth, addr, self.query)
    }
}

/// Which node serves each slot.
#[derive(Default)]
pub(crate) struct SlotMap {
    /// Per slot, an index into `nodes`, or NOBODY.
    owner: Vec<u16>,
    nodes: Vec<String>,
    /// Replicas as well: after a failover one of them is the primary to ask.
    known: Vec<String>,
}

impl SlotMap {
    /// Every slot on one node (a primary found through Sentinel).
    pub(crate) fn one(node: String) -> SlotMap {
        SlotMap { owner: vec![0; SLOTS], nodes: vec![node.clone()], known: vec![node] }
    }

    fn node(&self, slot: u16) -> Option<&str> {
        match self.owner.get(slot as usize) {
            Some(&i) if i != NOBODY => Some(&self.nodes[i as usize]),
            _ => None,
        }
    }
}

/// A cluster's nodes and slot map, shared by every connection of a store.
pub struct Topology {
    settings: Settings,
    nodes: Nodes,
    map: RwLock<Arc<SlotMap>>,
    /// When the map was last read, and whether a call found it out of date since.
    state: Mutex<(Option<Instant>, bool)>,
}

impl Topology {
    /// Checks the URL; connects to nothing yet.
    pub fn new(settings: &Settings) -> Result<Arc<Topology>> {
        Ok(Arc::new(Topology {
            settings: settings.clone(),
            nodes: parse(&settings.url)?,
            map: RwLock::default(),
            state: Mutex::new((None, true)),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// "Redis Cluster at <url>" or "Redis Sentinel at <url>", for messages.
    pub fn describe(&self) -> String {
        let what = if self.is_cluster() { "Redis Cluster" } else { "Redis Sentinel" };
        format!("{what} at {}", self.settings.masked_url())
    }

    /// A cluster (slots on several nodes) rather than one primary found through Sentinel.
    pub fn is_cluster(&self) -> bool {
        self.nodes.kind == Kind::Cluster
    }

    pub(crate) fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The settings of one node: the cluster's, with that node's URL.
    pub fn node_settings(&self, addr: &str) -> Settings {
        Settings { url: self.nodes.url(addr), ..self.settings.clone() }
    }

    /// Marks the map out of date: the next call reads it again.
    pub fn stale(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
    }

    /// A MOVED answer: the slot's owner now, until the map is read again.
    pub fn moved(&self, slot: u16, to: &str) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut m = SlotMap { owner: map.owner.clone(), nodes: map.nodes.clone(), known: map.known.clone() };
        let i = m.nodes.iter().position(|n| n == to).unwrap_or_else(|| {
            m.nodes.push(to.to_string());
            m.nodes.len() - 1
        });
        if let Some(o) = m.owner.get_mut(slot as usize) {
            *o = i as u16;
        }
        *map = Arc::new(m);
        drop(map);
        self.stale();
    }

    /// The nodes serving slots now.
    pub fn primaries(&self) -> Vec<String> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).nodes.clone()
    }

    /// Whether the map should be read before routing (`refresh`, which blocks).
    pub fn needs_refresh(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.0 {
            None => true,
            Some(at) => st.1 && at.elapsed() >= REFRESH_EVERY,
        }
    }

    /// The node serving `slot` (any node for None), from the map as it is.
    pub fn node_for(&self, slot: Option<u16>) -> Result<String> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        let found = match slot {
            Some(s) => map.node(s),
            None => map.nodes.first().map(String::as_str),
        };
        found.map(str::to_string).ok_or_else(|| {
            self.stale();
            Error::Connection(format!("{} has no node serving slot {} now (failing over?)", self.describe(), slot.unwrap_or(0)))
        })
    }

    /// Reads the map again (CLUSTER SLOTS) from the first node that answers, unless another
    /// thread just did. Blocks for at most the connect timeout per node tried.
    pub fn refresh(&self) -> Result<()> {
        if !self.needs_refresh() {
            return Ok(());
        }
        let mut tried = match self.nodes.kind {
            Kind::Cluster => self.map.read().unwrap_or_else(|e| e.into_inner()).known.clone(),
            Kind::Sentinel(_) => vec![],
        };
        for n in &self.nodes.listed {
            if !tried.contains(n) {
                tried.push(n.clone());
            }
        }
        let mut last = None;
        for addr in &tried {
            let read = match &self.nodes.kind {
                Kind::Cluster => self.read_slots(addr),
                Kind::Sentinel(service) => super::sentinel::primary(self, addr, service),
            };
            match read {
                Ok(m) => {
                    *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(m);
                    *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), false);
                    return Ok(());
                }
                Err(e @ (Error::Invalid(_) | Error::Authentication(_) | Error::Tls(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        // Nobody answered: try again on the next call, not before REFRESH_EVERY.
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), true);
        Err(last.unwrap_or_else(|| Error::Connection(format!("{}: no node answered", self.describe()))))
    }

    fn read_slots(&self, addr: &str) -> Result<SlotMap> {
        let s = self.node_settings(addr);
        let url = s.masked_url();
        let err = |e: redis::RedisError| Error::from_redis_connecting(e, &url);
        let client = super::conn::redis_client(&s)?;
        let mut c = client.get_connection_with_timeout(s.connect_timeout).map_err(err)?;
        c.set_read_timeout(Some(s.connect_timeout)).map_err(err)?;
        let v: Value = match redis::cmd("CLUSTER").arg("SLOTS").query(&mut c) {
            Err(e) if e.to_string().contains("cluster support disabled") => {
                return Err(Error::Invalid(format!(
                    "Redis at {url} is not a node of a Redis Cluster (its cluster support is disabled): use a redis:// URL for a \
                     single server, or list the cluster's nodes"
                )))
            }
            r => r.map_err(err)?,
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        slot_map(v, host).ok_or_else(|| Error::Store(format!("unexpected answer to CLUSTER SLOTS from Redis at {url}")))
    }
}

/// A map from a CLUSTER SLOTS answer: `[[start, end, [host, port, id], replica…], …]`. An
/// empty host means the one asked (`asked`).
fn slot_map(v: Value, asked: &str) -> Option<SlotMap> {
    let Value::Array(ranges) = v else { return None };
    let mut m = SlotMap { owner: vec![NOBODY; SLOTS], ..SlotMap::default() };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let addr = |v: &Value| -> Option<String> {
        let Value::Array(a) = v else { return None };
        let host = match a.first()? {
            Value::BulkString(b) if !b.is_empty() && b != b"?" => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) if !s.is_empty() && s != "?" => s.clone(),
            _ => asked.to_string(),
        };
        let port = int(a.get(1)?)?;
        Some(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
    };
    for r in ranges {
        let Value::Array(r) = r else { return None };
        let (start, end) = (int(r.first()?)? as usize, int(r.get(1)?)? as usize);
        let primary = addr(r.get(2)?)?;
        let i = m.nodes.iter().position(|n| *n == primary).unwrap_or_else(|| {
            m.nodes.push(primary.clone());
            m.nodes.len() - 1
        });
        m.owner.get_mut(start..=end.min(SLOTS - 1))?.fill(i as u16);
        for n in std::iter::once(primary).chain(r[3..].iter().filter_map(addr)) {
            if !m.known.contains(&n) {
                m.known.push(n);
            }
        }
    }
    Some(m)
}

/// Commands of one call grouped by the node each goes to, in call order within a node.
pub struct Groups {
    pub nodes: Vec<(String, Vec<usize>)>,
}

/// Groups `cmds` by node, by the map as it is (callers read it again first when stale).
pub fn group(top: &Topology, cmds: &[&Cmd]) -> Result<Groups> {
    let mut nodes: Vec<(String, Vec<usize>)> = vec![];
    for (i, c) in cmds.iter().enumerate() {
        let node = top.node_for(key_of(c).map(slot))?;
        match nodes.iter_mut().find(|(n, _)| *n == node) {
            Some((_, idx)) => idx.push(i),
            None => nodes.push((node, vec![i])),
        }
    }
    Ok(Groups { nodes })
}

/// What to do after a node answered a group with `e`: follow a redirect (true), or give up.
/// A node that cannot be reached marks the map stale for the next call.
pub fn follow(top: &Topology, e: &Error) -> bool {
    match e {
        Error::Redirect(r) if !r.ask => {
            top.moved(r.slot, &r.to);
            true
        }
        Error::Redirect(_) => true,
        e if e.is_retryable() => {
            top.stale();
            false
        }
        _ => false,
    }
}

/// How many redirects one call follows before it gives up (a slot moving back and forth).
pub const MAX_REDIRECTS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from CLUSTER KEYSLOT on a real server.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"fj:{emails}:wait"), slot(b"emails"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}")); // an empty tag: the whole key
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"123456789"), 0x31C3); // the CRC16 (XMODEM) check value
    }

    #[test]
    fn commands_route_by_their_key() {
        let s = crate::store::redis::scripts::scripts();
        let mut c = s.ack.evalsha(&["fj:{q}:jobs", "fj:{q}:x"]);
        c.arg(1);
        assert_eq!(key_of(&c), Some(&b"fj:{q}:jobs"[..]));
        assert_eq!(
            key_of(redis::cmd("XREAD").arg("COUNT").arg(1).arg("STREAMS").arg("fj:{q}:events").arg("0")),
            Some(&b"fj:{q}:events"[..])
        );
        assert_eq!(key_of(redis::cmd("SCAN").arg(0).arg("MATCH").arg("fj:{q}:*")), Some(&b"fj:{q}:*"[..]));
        assert_eq!(key_of(redis::cmd("BLPOP").arg("a").arg("b").arg(1)), Some(&b"a"[..]));
        assert_eq!(key_of(&redis::cmd("PING")), None);
    }

    #[test]
    fn cluster_urls_list_nodes_and_refuse_a_database() {
        let n = parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2,[::1]:7002?protocol=resp3").unwrap();
        assert_eq!(n.listed, ["10.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002"]);
        assert_eq!(n.url("h:1"), "redis://u:p@h:1/0?protocol=resp3");
        assert_eq!(parse("rediss+cluster://h:1").unwrap().url("h:1"), "rediss://h:1/0");
        for bad in ["redis+cluster://h:1/2", "redis+cluster://h:1,,h:2", "redis+cluster://"] {
            assert!(matches!(parse(bad), Err(Error::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn slot_maps_read_cluster_slots() {
        let node = |h: &str, p: i64| Value::Array(vec![Value::BulkString(h.into()), Value::Int(p), Value::BulkString(b"id".to_vec())]);
        let v = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(8191), node("", 7000), node("127.0.0.1", 7003)]),
            Value::Array(vec![Value::Int(8192), Value::Int(16383), node("127.0.0.1", 7001)]),
        ]);
        let m = slot_map(v, "127.0.0.1").unwrap();
        assert_eq!(m.node(0), Some("127.0.0.1:7000"));
        assert_eq!(m.node(16383), Some("127.0.0.1:7001"));
        assert_eq!(m.known, ["127.0.0.1:7000", "127.0.0.1:7003", "127.0.0.1:7001"]);
    }
}

//! The events stream of a queue (`Queue.events`): switched on per queue, written by the
//! scripts (common.lua `emit`), read here on a connection of the reader's own, because a
//! blocking XREAD would hold up every command behind it on a shared connection.

use crate::error::{Error, Result};
use crate::store::redis::bytes;
use crate::store::redis::conn::Settings;
use crate::store::redis::keys::QueueKeys;
use crate::store::redis::route::{self, SyncLink};
use redis::Value;
use std::time::Duration;

/// The longest stream a queue may keep (entries, each a batch of events).
pub const MAX_KEEP: u64 = 10_000_000;

/// One entry: its stream id and its fields (kind `e`, jobs `j` or runs `r`, names `n`, ...).
pub type Entry = (String, Vec<(String, Vec<u8>)>);

/// Reads one queue's events stream.
pub struct EventReader {
    conn: SyncLink,
    key: String,
    response_timeout: Duration,
}

impl EventReader {
    pub fn new(settings: &Settings, q: &QueueKeys) -> Result<EventReader> {
        Ok(EventReader {
            conn: SyncLink::new(settings, route::topology(settings)?.as_ref())?,
            key: q.events(),
            response_timeout: settings.response_timeout,
        })
    }

    /// The id of the newest entry ("0-0" for an empty stream): where "only new events" starts.
    pub fn last_id(&self) -> Result<String> {
        let v: Value =
            self.conn.query(redis::cmd("XREVRANGE").arg(&self.key).arg("+").arg("-").arg("COUNT").arg(1), self.response_timeout)?;
        Ok(entries(v)?.into_iter().next().map(|e| e.0).unwrap_or_else(|| "0-0".into()))
    }

    /// Up to `count` entries after `after`, waiting up to `block` for the first (zero: not at all).
    pub fn read(&self, after: &str, count: usize, block: Duration) -> Result<Vec<Entry>> {
        let mut c = redis::cmd("XREAD");
        c.arg("COUNT").arg(count.max(1));
        if !block.is_zero() {
            c.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        c.arg("STREAMS").arg(&self.key).arg(after);
        let v: Value = self.conn.query(&c, block + self.response_timeout)?;
        // [[key, entries]] (RESP2) or {key: entries} (RESP3); nil when nothing came.
        let streams = match v {
            Value::Nil => return Ok(vec![]),
            Value::Array(a) => a.into_iter().filter_map(|s| if let Value::Array(mut kv) = s { kv.pop() } else { None }).collect(),
            Value::Map(m) => m.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
            v => return Err(bad(&v)),
        };
        let mut out = vec![];
        for s in streams {
            out.extend(entries(s)?);
        }
        Ok(out)
    }
}

fn bad(v: &Value) -> Error {
    Error::Store(format!("unexpected reply from Redis for the events stream: {v:?}"))
}

/// The entries of an XRANGE-shaped reply: [[id, [field, value, ...]], ...].
fn entries(v: Value) -> Result<Vec<Entry>> {
    let Value::Array(items) = v else { return if v == Value::Nil { Ok(vec![]) } else { Err(bad(&v)) } };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { return Err(bad(&item)) };
        let mut pair = pair.into_iter();
        let id = pair
            .next()
            .and_then(bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| Error::Store("an events entry without an id".into()))?;
        let flat: Vec<Vec<u8>> = match pair.next() {
            Some(Value::Array(f)) => f.into_iter().filter_map(bytes).collect(),
            Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [bytes(k), bytes(v)]).flatten().collect(),
            _ => vec![],
        };
        let fields = flat.chunks_exact(2).map(|kv| (String::from_utf8_lossy(&kv[0]).into_owned(), kv[1].clone())).collect();
        out.push((id, fields));
    }
    Ok(out)
}

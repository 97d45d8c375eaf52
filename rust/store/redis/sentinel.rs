//! Redis Sentinel: the primary a quorum of Sentinels names for a service, found again when it
//! stops answering or turns out to be a replica (a failover moved it). The connections of the
//! store are those of a cluster with one node serving every slot (cluster.rs, route.rs), so a
//! failed node, a stale answer and the rate of asking again are handled in one place.

use crate::error::{Error, Result};
use crate::store::redis::cluster::{SlotMap, Topology};
use redis::Value;

/// Asks the Sentinel at `addr` for the primary of `service`, and checks that node says it is
/// one (a Sentinel may still name the old primary for a moment after a failover).
pub(crate) fn primary(top: &Topology, addr: &str, service: &str) -> Result<SlotMap> {
    let s = top.settings();
    let url = crate::store::settings::mask_url(&top.nodes().sentinel_url(addr));
    let err = |e: redis::RedisError| Error::from_redis_connecting(e, &url);
    let client = redis::Client::open(top.nodes().sentinel_url(addr)).map_err(err)?;
    let mut c = client.get_connection_with_timeout(s.connect_timeout).map_err(err)?;
    c.set_read_timeout(Some(s.connect_timeout)).map_err(err)?;
    let v: Value = match redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(service).query(&mut c) {
        Err(e) if e.to_string().to_ascii_lowercase().contains("unknown command") => {
            return Err(Error::Invalid(format!(
                "Redis at {url} is not a Sentinel (it does not know the SENTINEL command): list the Sentinels in a \
                 redis+sentinel:// URL, or use redis:// for the server itself"
            )))
        }
        r => r.map_err(err)?,
    };
    let node = match v {
        Value::Array(a) if a.len() == 2 => {
            let text = |v: &Value| match v {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::SimpleString(s) => Some(s.clone()),
                Value::Int(i) => Some(i.to_string()),
                _ => None,
            };
            match (text(&a[0]), text(&a[1])) {
                (Some(h), Some(p)) if h.contains(':') => format!("[{h}]:{p}"),
                (Some(h), Some(p)) => format!("{h}:{p}"),
                _ => return Err(Error::Store(format!("unexpected answer from the Sentinel at {url}"))),
            }
        }
        Value::Nil => {
            return Err(Error::Invalid(format!("the Sentinel at {url} watches no primary named {service:?}: check the name in the URL")))
        }
        _ => return Err(Error::Store(format!("unexpected answer from the Sentinel at {url}"))),
    };
    let ns = top.node_settings(&node);
    let nurl = ns.masked_url();
    let nerr = |e: redis::RedisError| Error::from_redis_connecting(e, &nurl);
    let mut n = super::conn::redis_client(&ns)?.get_connection_with_timeout(s.connect_timeout).map_err(nerr)?;
    n.set_read_timeout(Some(s.connect_timeout)).map_err(nerr)?;
    let role: Value = redis::cmd("ROLE").query(&mut n).map_err(nerr)?;
    match role {
        Value::Array(r) if matches!(r.first(), Some(Value::BulkString(b)) if b == b"master") => Ok(SlotMap::one(node)),
        _ => Err(Error::Connection(format!("Redis at {nurl}, named primary of {service:?} by the Sentinel at {url}, is not one (yet)"))),
    }
}

//! The Lua registry: one file per atomic operation under `rust/store/redis/lua/`, embedded at build time
//! behind the shared helpers of `lua/includes/common.lua`, and called by SHA (conn.rs loads
//! them on connect and again after a NOSCRIPT answer).

use redis::Cmd;

pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
    pub sha: String,
}

impl Script {
    fn new(name: &'static str, source: &'static str) -> Script {
        Script { name, source, sha: sha1_smol::Sha1::from(source).digest().to_string() }
    }

    /// An EVAL command carrying the source: never NOSCRIPT, so safe inside MULTI/EXEC.
    pub fn eval(&self, keys: &[&str]) -> Cmd {
        let mut c = redis::cmd("EVAL");
        c.arg(self.source).arg(keys.len()).arg(keys);
        c
    }

    /// An EVALSHA command for this script; the caller adds KEYS and ARGV.
    pub fn evalsha(&self, keys: &[&str]) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.sha).arg(keys.len()).arg(keys);
        c
    }
}

macro_rules! scripts {
    ($($field:ident => $file:literal),* $(,)?) => {
        pub struct Scripts { $(pub $field: Script,)* }
        impl Scripts {
            fn load() -> Scripts {
                Scripts { $($field: Script::new($file, concat!(include_str!("lua/includes/common.lua"), include_str!(concat!("lua/", $file)))),)* }
            }
            pub fn all(&self) -> Vec<&Script> { vec![$(&self.$field),*] }
        }
    };
}

scripts! {
    push => "push.lua",
    mark => "mark.lua",
    enqueue => "enqueue.lua",
    reserve => "reserve.lua",
    leave => "leave.lua",
    ack => "ack.lua",
    release => "release.lua",
    start => "start.lua",
    pause => "pause.lua",
    resume => "resume.lua",
    cancel => "cancel.lua",
    empty => "empty.lua",
    limit => "limit.lua",
    extend => "extend.lua",
    tick => "tick.lua",
    expire => "expire.lua",
    status => "status.lua",
    unwait => "unwait.lua",
    counts => "counts.lua",
    failed => "failed.lua",
    sched_upsert => "sched_upsert.lua",
    sched_due => "sched_due.lua",
    sched_advance => "sched_advance.lua",
    sched_read => "sched_read.lua",
    sched_remove => "sched_remove.lua",
    flow_settle => "flow_settle.lua",
    feedback => "feedback.lua",
}

pub fn scripts() -> &'static Scripts {
    static S: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    S.get_or_init(Scripts::load)
}

pub fn is_noscript(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_script_has_a_header_and_a_distinct_sha() {
        let all = super::scripts().all();
        let mut shas: Vec<_> = all.iter().map(|s| s.sha.clone()).collect();
        shas.sort();
        shas.dedup();
        assert_eq!(shas.len(), all.len());
        for s in all {
            let own = s.source.split("\n-- ").nth(1).unwrap_or("");
            assert!(!own.is_empty(), "{} lacks its header", s.name);
            assert!(s.source.contains("KEYS[1]"), "{} documents no keys", s.name);
        }
    }
}

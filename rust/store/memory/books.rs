//! What the memory store keeps beside queues: schedules (sched_*.lua), workflow records
//! (chains' and flows' bookkeeping, flow_settle.lua) and the worker registry.

use crate::store::{ChildPolicy, DueSchedules, FlowSettle, FlowSettled, ScheduleEntry, ScheduleWrite};
use std::collections::HashMap;

#[derive(Default)]
pub struct Schedules {
    next: HashMap<String, i64>,
    defs: HashMap<String, HashMap<String, Vec<u8>>>,
}

fn text(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

impl Schedules {
    /// sched_upsert.lua: (created, next run ms).
    pub fn upsert(&mut self, w: ScheduleWrite, now_ms: i64) -> (bool, i64, bool) {
        let old = self.defs.remove(&w.key).unwrap_or_default();
        let score = self.next.get(&w.key).copied();
        let created = !old.contains_key("created_ms");
        let same = score.is_some() && old.get("timing").map(Vec::as_slice) == Some(w.timing.as_bytes());
        let mut def: HashMap<String, Vec<u8>> = HashMap::new();
        def.insert("timing".into(), w.timing.into_bytes());
        def.insert("updated_ms".into(), text(now_ms));
        def.insert("created_ms".into(), old.get("created_ms").cloned().unwrap_or_else(|| text(now_ms)));
        let anchor = if same { old.get("anchor_ms").cloned() } else { None };
        def.insert("anchor_ms".into(), anchor.unwrap_or_else(|| text(w.anchor_ms)));
        def.insert("runs".into(), old.get("runs").cloned().unwrap_or_else(|| b"0".to_vec()));
        for f in ["last_run_ms", "last_job_id"] {
            if let Some(v) = old.get(f) {
                def.insert(f.into(), v.clone());
            }
        }
        def.extend(w.fields);
        self.defs.insert(w.key.clone(), def);
        match (same, score) {
            (true, Some(s)) => (created, s, false),
            _ => {
                self.next.insert(w.key, w.next_ms);
                (created, w.next_ms, true)
            }
        }
    }

    fn entry(&self, key: &str) -> Option<ScheduleEntry> {
        let next_ms = *self.next.get(key)?;
        let fields = self.defs.get(key).filter(|d| !d.is_empty())?.clone();
        Some(ScheduleEntry { key: key.to_string(), next_ms, fields })
    }

    /// Keys in next-run order (ties by key, as a Redis sorted set).
    fn ordered(&self) -> Vec<(i64, &String)> {
        let mut all: Vec<(i64, &String)> = self.next.iter().map(|(k, v)| (*v, k)).collect();
        all.sort();
        all
    }

    pub fn read(&self, keys: Option<Vec<String>>) -> Vec<ScheduleEntry> {
        match keys {
            Some(keys) if !keys.is_empty() => keys.iter().filter_map(|k| self.entry(k)).collect(),
            _ => self.ordered().into_iter().filter_map(|(_, k)| self.entry(k)).collect(),
        }
    }

    pub fn remove(&mut self, keys: Option<Vec<String>>) -> u64 {
        let keys = match keys {
            Some(keys) if !keys.is_empty() => keys,
            _ => self.next.keys().cloned().collect(),
        };
        let mut removed = 0;
        for k in keys {
            removed += self.next.remove(&k).is_some() as u64;
            self.defs.remove(&k);
        }
        removed
    }

    pub fn due(&self, limit: usize, now_ms: i64) -> DueSchedules {
        let ordered = self.ordered();
        let head_ms = ordered.first().map(|(at, _)| *at);
        let due = ordered.into_iter().take_while(|(at, _)| *at <= now_ms).take(limit.max(1)).map(|(at, k)| (k.clone(), at)).collect();
        DueSchedules { now_ms, head_ms, due }
    }

    /// sched_advance.lua.
    pub fn advance(&mut self, key: &str, tick_ms: i64, next_ms: Option<i64>, job_id: &str) -> bool {
        if self.next.get(key) != Some(&tick_ms) {
            return false;
        }
        if job_id.is_empty() {
            self.next.insert(key.to_string(), next_ms.unwrap_or(-1));
            return true;
        }
        let Some(next) = next_ms else {
            self.next.remove(key);
            self.defs.remove(key);
            return true;
        };
        let def = self.defs.entry(key.to_string()).or_default();
        let runs = def.get("runs").and_then(|r| std::str::from_utf8(r).ok()?.parse::<i64>().ok()).unwrap_or(0);
        def.insert("runs".into(), text(runs + 1));
        def.insert("last_run_ms".into(), text(tick_ms));
        def.insert("last_job_id".into(), job_id.as_bytes().to_vec());
        self.next.insert(key.to_string(), next);
        true
    }
}

/// A workflow's bookkeeping record (`chain:<id>` or `flow:<id>`).
#[derive(Default)]
struct Book {
    fields: HashMap<String, Vec<u8>>,
    expires_ms: Option<i64>,
}

/// Field, value pairs (a flow node's results: child job id, what it left).
type Fields = Vec<(String, Vec<u8>)>;

#[derive(Default)]
pub struct Books {
    books: HashMap<String, Book>,
    /// (flow book, node) -> (child job id, what it left for the node).
    results: HashMap<(String, u32), Fields>,
    workers: HashMap<String, Vec<u8>>,
}

impl Books {
    fn live(&mut self, book: &str, now_ms: i64) -> Option<&mut Book> {
        if self.books.get(book).is_some_and(|b| b.expires_ms.is_some_and(|e| e <= now_ms)) {
            self.books.remove(book);
        }
        self.books.get_mut(book)
    }

    pub fn book_get(&mut self, book: &str, fields: &[String], now_ms: i64) -> Vec<Option<Vec<u8>>> {
        let b = self.live(book, now_ms);
        let b = b.as_deref();
        fields.iter().map(|f| b.and_then(|b| b.fields.get(f).cloned())).collect()
    }

    pub fn book_set(&mut self, book: &str, fields: Vec<(String, Vec<u8>)>, ttl_ms: Option<i64>, now_ms: i64) {
        self.live(book, now_ms);
        let b = self.books.entry(book.to_string()).or_default();
        b.fields.extend(fields);
        if let Some(ttl) = ttl_ms {
            b.expires_ms = Some(now_ms + ttl.max(1));
        }
    }

    /// flow_settle.lua: a child counted once however often it is reported.
    pub fn flow_settle(&mut self, i: &FlowSettle, now_ms: i64) -> FlowSettled {
        let book = format!("flow:{}", i.flow_id);
        self.live(&book, now_ms);
        let b = self.books.entry(book.clone()).or_default();
        let f = &mut b.fields;
        let (state_f, error_f, pending_f) = (format!("state:{}", i.parent), format!("error:{}", i.parent), format!("pending:{}", i.parent));
        let settled = format!("settled:{}", i.child);
        if !f.contains_key(&settled) {
            let failed = i.failed;
            f.insert(settled, if failed { b"f".to_vec() } else { b"c".to_vec() });
            if failed && i.policy == ChildPolicy::FailParent {
                if f.get(&state_f).map(Vec::as_slice) != Some(b"failed") {
                    f.insert(state_f.clone(), b"failed".to_vec());
                    f.insert(error_f.clone(), i.data.clone());
                }
            } else {
                if !(failed && i.policy == ChildPolicy::ContinueParent) {
                    let results = self.results.entry((book.clone(), i.parent)).or_default();
                    match results.iter_mut().find(|(k, _)| *k == i.job_id) {
                        Some(slot) => slot.1 = i.data.clone(),
                        None => results.push((i.job_id.clone(), i.data.clone())),
                    }
                }
                let pending = f.get(&pending_f).and_then(|p| std::str::from_utf8(p).ok()?.parse::<i64>().ok()).unwrap_or(0);
                f.insert(pending_f.clone(), text(pending - 1));
            }
        }
        if f.get(&state_f).map(Vec::as_slice) == Some(b"failed") {
            return FlowSettled::Fail(f.get(&error_f).cloned());
        }
        let pending = f.get(&pending_f).and_then(|p| std::str::from_utf8(p).ok()?.parse::<i64>().ok()).unwrap_or(1);
        if pending > 0 {
            return FlowSettled::Wait;
        }
        if f.get(&state_f).map(Vec::as_slice) != Some(b"released") {
            f.insert(state_f, b"released".to_vec());
            f.insert(format!("released_by:{}", i.parent), i.child.to_string().into_bytes());
        }
        FlowSettled::Release(f.get(&format!("spec:{}", i.parent)).cloned())
    }

    pub fn flow_results(&self, flow_id: &str, node: u32) -> Vec<(String, Vec<u8>)> {
        self.results.get(&(format!("flow:{flow_id}"), node)).cloned().unwrap_or_default()
    }

    pub fn worker_put(&mut self, worker: String, entry: Vec<u8>) {
        self.workers.insert(worker, entry);
    }

    pub fn workers_read(&self) -> Vec<(String, Vec<u8>)> {
        self.workers.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn workers_remove(&mut self, workers: &[String]) -> u64 {
        workers.iter().filter(|w| self.workers.remove(*w).is_some()).count() as u64
    }
}

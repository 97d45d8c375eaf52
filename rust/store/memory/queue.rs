//! One queue's state in the memory store and the operations on it, each the in-process
//! equivalent of one Redis script (rust/lua/), applied under the store's lock.

use super::record as rec;
use crate::record::{is_generated_id, PRODUCER_LEN};
use crate::store::told::{json_list, names_field, numbers_field, Told};
use crate::store::*;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// How many ring members one reserve looks at beyond the jobs it wants (reserve.lua).
const GROUP_SCAN: usize = 1000;
/// The events kept when the stream is on and no length was given.
const EVENTS_DEFAULT: u64 = 10_000;

/// Field, value pairs (a callback's record).
type Fields = Vec<(String, Vec<u8>)>;
/// Records served from the ring, each with its group (None: ungrouped).
type Served = Vec<(Vec<u8>, Option<String>)>;
/// When a member passed over at its limit may be leased again: Some(ms until its window
/// ends), or None (a settled job frees it); the outer None: no member was at its limit.
type ComeBack = Option<Option<i64>>;

/// A lease: its jobs in order, when it ends, the starts recorded and the cancels asked. A
/// lease holds up to a reserve's 2,000 jobs, each looked up by id when it is acknowledged:
/// `at` finds it without a scan, and a job taken leaves a hole in `jobs` (kept in order).
#[derive(Default)]
pub struct Lease {
    pub deadline_ms: i64,
    jobs: Vec<Option<Vec<u8>>>,
    at: HashMap<String, usize>,
    pub started: HashMap<String, i64>,
    pub cancel: HashSet<String>,
}

impl Lease {
    /// Adds a job under its id; false when the lease holds it already.
    fn push(&mut self, id: String, r: Vec<u8>) -> bool {
        if self.at.contains_key(&id) {
            return false;
        }
        self.at.insert(id, self.jobs.len());
        self.jobs.push(Some(r));
        true
    }

    fn take(&mut self, id: &str) -> Option<Vec<u8>> {
        let i = self.at.remove(id)?;
        let r = self.jobs.get_mut(i).and_then(Option::take);
        if self.at.is_empty() {
            self.jobs.clear();
        }
        r
    }

    fn get(&self, id: &str) -> Option<&Vec<u8>> {
        self.at.get(id).and_then(|i| self.jobs.get(*i)).and_then(Option::as_ref)
    }

    fn len(&self) -> usize {
        self.at.len()
    }

    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Its jobs' records, in order.
    fn records(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.jobs.iter().flatten()
    }

    /// Its jobs (id, record), in order.
    fn into_jobs(self) -> impl Iterator<Item = (String, Vec<u8>)> {
        self.jobs.into_iter().flatten().map(|r| (rec::id(&r), r))
    }
}

/// What a caller-chosen id is known as (status, and a second dispatch with it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Taken,
    Completed,
    Cancelled,
}

/// A value that lives until `expires_ms` (the store's clock).
struct Timed<T> {
    value: T,
    expires_ms: i64,
}

/// One entry of the events ring: a state change of some jobs.
#[derive(Debug, Clone)]
pub struct Event {
    /// Counts the queue's events from 1: where a reader resumes.
    pub seq: u64,
    pub at_ms: i64,
    pub kind: &'static str,
    pub ids: Vec<String>,
    /// What else the Redis scripts tell (common.lua `emit`): `n` names, `a` attempts, `d` due
    /// or delay ms, `x` results, errors or progress (JSON lists), `w` the worker.
    pub fields: Vec<(&'static str, Vec<u8>)>,
}

#[derive(Default)]
struct Stats {
    completed: u64,
    retried: u64,
    failed: u64,
    stalled: u64,
    cancelled: u64,
}

/// A bit per sequence number of one producer's generated ids.
#[derive(Default)]
struct Bits(HashMap<String, Vec<u64>>);

impl Bits {
    fn split(id: &str) -> Option<(&str, usize)> {
        is_generated_id(id).then(|| (&id[..PRODUCER_LEN], id[PRODUCER_LEN + 1..].parse().unwrap_or(0)))
    }
    fn set(&mut self, id: &str) {
        if let Some((p, seq)) = Bits::split(id) {
            let words = self.0.entry(p.to_string()).or_default();
            if words.len() <= seq / 64 {
                words.resize(seq / 64 + 1, 0);
            }
            words[seq / 64] |= 1 << (seq % 64);
        }
    }
    fn get(&self, id: &str) -> bool {
        Bits::split(id)
            .and_then(|(p, seq)| self.0.get(p).and_then(|w| w.get(seq / 64)).map(|w| w & (1 << (seq % 64)) != 0))
            .unwrap_or(false)
    }
}

#[derive(Default)]
pub struct Queue {
    ready: [VecDeque<Vec<u8>>; 10],
    groups: HashMap<String, VecDeque<Vec<u8>>>,
    /// The groups with jobs waiting, served in turn; None is the ungrouped ready lists.
    ring: VecDeque<Option<String>>,
    grouped: u64,
    delayed: BTreeSet<(u64, String)>,
    due: HashMap<String, u64>,
    /// Records of delayed and failed jobs.
    jobs: HashMap<String, Vec<u8>>,
    failed: BTreeSet<(i64, u64, String)>,
    failed_at: HashMap<String, (i64, u64)>,
    failed_seq: u64,
    undecodable: u64,
    errors: HashMap<String, Vec<u8>>,
    pub leases: HashMap<String, Lease>,
    reaped: HashSet<String>,
    stats: Stats,
    done: Bits,
    cancelled: Bits,
    hwm: HashMap<String, u64>,
    marks: HashMap<String, Mark>,
    results: HashMap<String, Timed<Vec<u8>>>,
    dedup: HashMap<String, Timed<String>>,
    sent: HashSet<(String, u64)>,
    pub paused: bool,
    pub limits: Limits,
    pub group_limits: Limits,
    window: Option<Timed<u64>>,
    group_windows: HashMap<String, Timed<u64>>,
    group_active: HashMap<String, u64>,
    pub events_keep: Option<u64>,
    pub events: VecDeque<Event>,
    events_seq: u64,
    progress: HashMap<String, Timed<Vec<u8>>>,
    logs: HashMap<String, Timed<VecDeque<Vec<u8>>>>,
    callbacks: HashMap<String, Timed<Fields>>,
    /// When the values past their time were last dropped (`sweep`).
    swept_ms: i64,
    /// Ready jobs may wait: one blocked worker wakes and takes it (the Redis wake list).
    pub wake: bool,
    /// Workers whose blocked wait ends at once (nudge, leave).
    pub nudged: HashSet<String>,
    pub control: Arc<tokio::sync::Notify>,
    pub sched: Arc<tokio::sync::Notify>,
}

fn live<T>(t: Option<&Timed<T>>, now_ms: i64) -> Option<&T> {
    t.filter(|t| t.expires_ms > now_ms).map(|t| &t.value)
}

/// The time bounds a call works with: the store's clock and its settings.
#[derive(Clone, Copy)]
pub struct Clock {
    pub now_us: i64,
    pub now_ms: i64,
    pub result_ttl_ms: i64,
    /// How long a caller-chosen id and a deduplication mark are kept past the job's due time.
    pub mark_ttl_ms: i64,
}

impl Queue {
    /// Drops the values whose time is up, at most once a minute: reads skip them already;
    /// this keeps a long-lived process's memory bounded (Redis expires such keys itself).
    fn sweep(&mut self, now_ms: i64) {
        if now_ms - self.swept_ms < 60_000 {
            return;
        }
        self.swept_ms = now_ms;
        self.results.retain(|_, t| t.expires_ms > now_ms);
        self.dedup.retain(|_, t| t.expires_ms > now_ms);
        self.group_windows.retain(|_, t| t.expires_ms > now_ms);
        self.progress.retain(|_, t| t.expires_ms > now_ms);
        self.logs.retain(|_, t| t.expires_ms > now_ms);
        self.callbacks.retain(|_, t| t.expires_ms > now_ms);
    }

    fn emit(&mut self, kind: &'static str, ids: Vec<String>) {
        self.emit_with(kind, ids, vec![]);
    }

    /// One entry of the ring, while it is on.
    fn emit_with(&mut self, kind: &'static str, ids: Vec<String>, fields: Vec<(&'static str, Vec<u8>)>) {
        let Some(keep) = self.events_keep else { return };
        if ids.is_empty() {
            return;
        }
        self.events_seq += 1;
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.events.push_back(Event { seq: self.events_seq, at_ms, kind, ids, fields });
        while self.events.len() as u64 > keep.max(1) {
            self.events.pop_front();
        }
    }

    pub fn set_events(&mut self, keep: Option<u64>) {
        self.events_keep = keep.map(|k| if k == 0 { EVENTS_DEFAULT } else { k });
    }

    fn ready_count(&self) -> u64 {
        self.ready.iter().map(|l| l.len() as u64).sum()
    }

    fn any_ready(&self) -> bool {
        self.ready.iter().any(|l| !l.is_empty()) || self.grouped > 0
    }

    pub fn active_count(&self) -> u64 {
        self.leases.values().map(|l| l.len() as u64).sum()
    }

    /// common.lua wake: a paused queue wakes nobody.
    fn wake(&mut self) {
        if !self.paused && self.any_ready() {
            self.wake = true;
        }
    }

    /// Adds a group's waiting records at its tail or head; a group that had none joins the ring.
    fn push_group(&mut self, g: String, r: Vec<u8>, head: bool) {
        let list = self.groups.entry(g.clone()).or_default();
        if list.is_empty() {
            if self.ring.is_empty() {
                self.ring.push_back(None);
            }
            self.ring.push_back(Some(g));
        }
        if head {
            list.push_front(r);
        } else {
            list.push_back(r);
        }
        self.grouped += 1;
    }

    /// Puts records back at the head (in order) or the tail, each in its group's list or its
    /// priority's ready list.
    fn push_ready(&mut self, recs: Vec<Vec<u8>>, head: bool) {
        let ordered: Box<dyn Iterator<Item = Vec<u8>>> = if head { Box::new(recs.into_iter().rev()) } else { Box::new(recs.into_iter()) };
        for r in ordered {
            match rec::group(&r) {
                Some(g) => self.push_group(g, r, head),
                None if head => self.ready[rec::priority(&r)].push_front(r),
                None => self.ready[rec::priority(&r)].push_back(r),
            }
        }
    }

    fn pop_ready(&mut self, want: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(want.min(64));
        for list in self.ready.iter_mut().rev() {
            while out.len() < want {
                match list.pop_front() {
                    Some(r) => out.push(r),
                    None => break,
                }
            }
        }
        out
    }

    /// A group emptied leaves the ring; the ring goes when only the ungrouped member is left.
    fn ring_tidy(&mut self) {
        let groups = &self.groups;
        self.ring.retain(|m| m.as_ref().is_none_or(|g| groups.get(g).is_some_and(|l| !l.is_empty())));
        self.groups.retain(|_, l| !l.is_empty());
        if self.ring.iter().all(Option::is_none) {
            self.ring.clear();
            self.grouped = 0;
        }
    }

    fn settle_mark(&mut self, id: &str, mark: Mark) {
        if is_generated_id(id) {
            match mark {
                Mark::Completed => self.done.set(id),
                _ => self.cancelled.set(id),
            }
        } else {
            self.marks.insert(id.to_string(), mark);
        }
    }

    fn release_dedup(&mut self, key: &str, id: &str) {
        if self.dedup.get(key).is_some_and(|m| m.value == id) {
            self.dedup.remove(key);
        }
    }

    fn release_dedup_of(&mut self, r: &[u8], id: &str) {
        if let Some(key) = rec::dedup(r) {
            self.release_dedup(&key, id);
        }
    }

    fn group_done(&mut self, g: &str) {
        if let Some(n) = self.group_active.get_mut(g) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.group_active.remove(g);
            }
        }
    }

    /// common.lua cancel_unstarted: a job that had not started, settled as cancelled.
    fn cancel_unstarted(&mut self, id: &str, r: &[u8]) {
        self.settle_mark(id, Mark::Cancelled);
        self.release_dedup_of(r, id);
        self.errors.remove(id);
        self.stats.cancelled += 1;
        self.emit("cancelled", vec![id.to_string()]);
    }

    fn fail(&mut self, id: &str, r: Vec<u8>, error: Vec<u8>, now_ms: i64) {
        self.jobs.insert(id.to_string(), r);
        self.errors.insert(id.to_string(), error);
        self.failed_seq += 1;
        if let Some(old) = self.failed_at.insert(id.to_string(), (now_ms, self.failed_seq)) {
            self.failed.remove(&(old.0, old.1, id.to_string()));
        }
        self.failed.insert((now_ms, self.failed_seq, id.to_string()));
        self.stats.failed += 1;
    }

    /// common.lua fail_undecodable: what is not a job record is failed at once under a new id,
    /// kept whole for inspection, never leased.
    fn fail_undecodable(&mut self, r: Vec<u8>, now_ms: i64) {
        self.undecodable += 1;
        let id = format!("{}{}", crate::record::UNDECODABLE_PREFIX, self.undecodable);
        let error = serde_json::json!({
            "type": "DecodeError",
            "message": format!("an element of this queue is not a job record fastjobs can read ({} bytes)", r.len()),
            "traceback": "",
        });
        self.fail(&id, r, serde_json::to_vec(&error).unwrap_or_default(), now_ms);
    }

    fn unfail(&mut self, id: &str) -> Option<Vec<u8>> {
        let (at, seq) = self.failed_at.remove(id)?;
        self.failed.remove(&(at, seq, id.to_string()));
        self.errors.remove(id);
        self.jobs.remove(id)
    }

    fn undelay(&mut self, id: &str) -> Option<Vec<u8>> {
        let due = self.due.remove(id)?;
        self.delayed.remove(&(due, id.to_string()));
        self.jobs.remove(id)
    }

    fn delay(&mut self, id: String, r: Vec<u8>, due_us: u64) {
        if let Some(old) = self.due.insert(id.clone(), due_us) {
            self.delayed.remove(&(old, id.clone()));
        }
        self.delayed.insert((due_us, id.clone()));
        self.jobs.insert(id, r);
    }

    /// enqueue.lua's deduplication: the id of the job holding the key, or None once this job took it.
    fn deduplicate(&mut self, d: &Dedup, id: &str, r: &[u8], due_us: u64, c: Clock) -> Option<String> {
        let held = live(self.dedup.get(&d.key), c.now_ms).cloned();
        let keep_ms = c.mark_ttl_ms + (due_us as i64 / 1000 - c.now_ms).max(0);
        match d.mode {
            DedupMode::Ttl(ms) => {
                if held.is_some() {
                    return held;
                }
                self.dedup.insert(d.key.clone(), Timed { value: id.to_string(), expires_ms: c.now_ms + ms as i64 });
            }
            DedupMode::UntilSettled => {
                if held.is_some() {
                    return held;
                }
                self.dedup.insert(d.key.clone(), Timed { value: id.to_string(), expires_ms: c.now_ms + keep_ms });
            }
            _ => {
                if let Some(held) = held {
                    let waiting =
                        self.jobs.get(&held).is_some_and(|old| old.first() == Some(&crate::record::RECORD) && rec::attempt(old) == 0);
                    if waiting && self.due.contains_key(&held) {
                        let replaced = rec::with_id(r, &held);
                        self.delay(held.clone(), replaced, due_us);
                        self.dedup.insert(d.key.clone(), Timed { value: held.clone(), expires_ms: c.now_ms + keep_ms });
                        return Some(held);
                    }
                }
                self.dedup.insert(d.key.clone(), Timed { value: id.to_string(), expires_ms: c.now_ms + keep_ms });
            }
        }
        None
    }

    /// enqueue.lua and push.lua.
    pub fn enqueue(&mut self, jobs: &[NewJob], mark: Option<&Watermark>, c: Clock) -> Vec<Written> {
        if let Some(m) = mark {
            if let Some(g) = m.guard {
                if !self.sent.insert((m.producer.clone(), g)) {
                    return vec![Written::New; jobs.len()];
                }
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        let mut ready = Vec::new();
        let mut earliest: Option<u64> = None;
        let mut told_delayed: Vec<(&NewJob, u64)> = Vec::new();
        for j in jobs {
            let due_us = j.at_us.unwrap_or(c.now_us as u64 + j.delay_us);
            if let Some(d) = &j.dedup {
                if let Some(held) = self.deduplicate(d, &j.id, &j.record, due_us, c) {
                    out.push(Written::Deduplicated(held));
                    continue;
                }
            }
            if j.custom_id {
                if self.marks.contains_key(&j.id) {
                    out.push(Written::Exists);
                    continue;
                }
                self.marks.insert(j.id.clone(), Mark::Taken);
            }
            if due_us > c.now_us as u64 {
                self.delay(j.id.clone(), j.record.clone(), due_us);
                earliest = Some(earliest.map_or(due_us, |e| e.min(due_us)));
                if self.events_keep.is_some() {
                    told_delayed.push((j, due_us));
                }
            } else {
                ready.push(j.record.clone());
            }
            out.push(Written::New);
        }
        if let Some(m) = mark {
            let h = self.hwm.entry(m.producer.clone()).or_insert(m.last_seq);
            *h = (*h).max(m.last_seq);
        }
        if self.events_keep.is_some() {
            let ids = ready.iter().map(|r| rec::id(r)).collect();
            let names = names_field(ready.iter().map(|r| r.as_slice()));
            self.emit_with("waiting", ids, vec![names]);
            if !told_delayed.is_empty() {
                let ids = told_delayed.iter().map(|(j, _)| j.id.clone()).collect();
                let names = names_field(told_delayed.iter().map(|(j, _)| j.record.as_slice()));
                let due = numbers_field("d", told_delayed.iter().map(|(_, d)| (*d / 1000) as i64));
                self.emit_with("delayed", ids, vec![names, due]);
            }
        }
        self.push_ready(ready, false);
        self.wake();
        if earliest.is_some() {
            self.sched.notify_waiters();
        }
        out
    }

    /// enqueue.lua for a bulk chunk due now with generated ids (`Chunk::is_plain`): what
    /// `enqueue` does with such jobs, the records taken as they are.
    pub fn enqueue_records(&mut self, records: Vec<Vec<u8>>, mark: &Watermark) {
        if let Some(g) = mark.guard {
            if !self.sent.insert((mark.producer.clone(), g)) {
                return;
            }
        }
        let h = self.hwm.entry(mark.producer.clone()).or_insert(mark.last_seq);
        *h = (*h).max(mark.last_seq);
        if self.events_keep.is_some() {
            let ids = records.iter().map(|r| rec::id(r)).collect();
            let names = names_field(records.iter().map(|r| r.as_slice()));
            self.emit_with("waiting", ids, vec![names]);
        }
        self.push_ready(records, false);
        self.wake();
    }

    pub fn chunk_written(&self, producer: &str, first: u64) -> bool {
        self.sent.contains(&(producer.to_string(), first))
    }

    /// What a group may be leased now, and when it may be again when that is nothing (ms until
    /// its window ends, or None: a settled job frees it).
    fn group_allowance(&mut self, g: &str, now_ms: i64) -> (usize, ComeBack) {
        let gl = self.group_limits;
        let mut a = usize::MAX;
        if let Some(conc) = gl.concurrency {
            let held = self.group_active.get(g).copied().unwrap_or(0);
            if held >= conc {
                return (0, Some(None));
            }
            a = (conc - held) as usize;
        }
        if let Some((max, _)) = gl.rate {
            let used = match self.group_windows.get(g) {
                Some(w) if w.expires_ms > now_ms => w.value,
                _ => 0,
            };
            if used >= max {
                let ends = self.group_windows.get(g).map(|w| w.expires_ms - now_ms).unwrap_or(0);
                return (0, Some(Some(ends)));
            }
            a = a.min((max - used) as usize);
        }
        (a, None)
    }

    /// reserve.lua serve_groups: the ring's members in turn, each an equal share; the members
    /// looked at go to the tail. Returns the records (interleaved) and, when a member was at
    /// its limit, when to come back.
    fn serve_groups(&mut self, want: usize, now_ms: i64) -> (Served, ComeBack) {
        let heads: Vec<Option<String>> = self.ring.iter().take(want + GROUP_SCAN).cloned().collect();
        let mut lists: Vec<Vec<Vec<u8>>> = vec![Vec::new(); heads.len()];
        let mut cap: Vec<Option<usize>> = vec![None; heads.len()];
        let mut limited: ComeBack = None;
        let mut active: Vec<usize> = (0..heads.len()).collect();
        let (mut left, mut last) = (want, 0);
        while left > 0 && !active.is_empty() {
            let share = (left / active.len()).max(1);
            let mut keep = Vec::new();
            for &i in &active {
                if left == 0 {
                    break;
                }
                last = last.max(i + 1);
                if cap[i].is_none() {
                    let (a, wait) = match &heads[i] {
                        None => (usize::MAX, None),
                        Some(g) => self.group_allowance(g, now_ms),
                    };
                    cap[i] = Some(a);
                    if let Some(w) = wait {
                        // The earliest window end wins over the concurrency's "when freed".
                        let replace = match (limited, w) {
                            (None | Some(None), _) => true,
                            (Some(Some(cur)), Some(new)) => new > 0 && new < cur,
                            (Some(Some(_)), None) => false,
                        };
                        if replace {
                            limited = Some(w);
                        }
                    }
                }
                let take = share.min(cap[i].unwrap_or(0)).min(left);
                if take == 0 {
                    continue;
                }
                let got = match &heads[i] {
                    None => self.pop_ready(take),
                    Some(g) => {
                        let list = self.groups.entry(g.clone()).or_default();
                        let got: Vec<Vec<u8>> = list.drain(..take.min(list.len())).collect();
                        self.grouped -= got.len() as u64;
                        got
                    }
                };
                let n = got.len();
                lists[i].extend(got);
                cap[i] = cap[i].map(|c| c.saturating_sub(n));
                left -= n;
                if n == take && cap[i].unwrap_or(0) > 0 {
                    keep.push(i);
                }
            }
            active = keep;
        }
        // The members looked at go to the tail, in order; emptied groups leave.
        for m in self.ring.drain(..last).collect::<Vec<_>>() {
            self.ring.push_back(m);
        }
        self.ring_tidy();
        let mut out = Vec::new();
        let mut at = vec![0usize; lists.len()];
        loop {
            let mut any = false;
            for (i, list) in lists.iter_mut().enumerate() {
                if at[i] < list.len() {
                    out.push((std::mem::take(&mut list[at[i]]), heads[i].clone()));
                    at[i] += 1;
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        (out, limited)
    }

    /// reserve.lua (without hand-over): limits, groups, then the ready lists.
    pub fn reserve(&mut self, token: &str, max: usize, lease_ms: i64, now_ms: i64) -> Reserved {
        if self.paused {
            return Reserved::Paused;
        }
        let mut want = max.min(2000);
        let mut window = None;
        if let Some(conc) = self.limits.concurrency {
            let held = self.active_count();
            if held >= conc {
                return Reserved::Limited { retry_in: None };
            }
            want = want.min((conc - held) as usize);
        }
        if let Some((max, period)) = self.limits.rate {
            let used = match &self.window {
                Some(w) if w.expires_ms > now_ms => w.value,
                _ => 0,
            };
            if used >= max {
                let ms = self.window.as_ref().map(|w| w.expires_ms - now_ms).unwrap_or(1).max(1);
                return Reserved::Limited { retry_in: Some(std::time::Duration::from_millis(ms as u64)) };
            }
            want = want.min((max - used) as usize);
            window = Some(period);
        }
        let (taken, limited): (Served, _) = if want > 0 && !self.ring.is_empty() {
            self.serve_groups(want, now_ms)
        } else {
            (self.pop_ready(want).into_iter().map(|r| (r, None)).collect(), None)
        };
        if taken.is_empty() {
            if let Some(retry) = limited {
                return Reserved::Limited { retry_in: retry.map(|ms| std::time::Duration::from_millis(ms.max(1) as u64)) };
            }
            return Reserved::Empty;
        }
        let popped = taken.len();
        let lease = self.leases.entry(token.to_string()).or_default();
        lease.deadline_ms = now_ms + lease_ms;
        let mut recs = Vec::with_capacity(popped);
        let mut per_group: HashMap<String, u64> = HashMap::new();
        let mut undecodable = Vec::new();
        for (r, g) in taken {
            if !rec::leasable(&r) {
                undecodable.push(r);
                continue;
            }
            let id = rec::id(&r);
            if !lease.push(id, r.clone()) {
                continue;
            }
            if let Some(g) = g {
                *per_group.entry(g).or_default() += 1;
            }
            recs.push(r);
        }
        if lease.is_empty() {
            self.leases.remove(token);
        }
        for r in undecodable {
            self.fail_undecodable(r, now_ms);
        }
        let n = recs.len() as u64;
        if let Some(period) = window.filter(|_| n > 0) {
            match &mut self.window {
                Some(w) if w.expires_ms > now_ms => w.value += n,
                w => *w = Some(Timed { value: n, expires_ms: now_ms + period.as_millis() as i64 }),
            }
        }
        for (g, k) in per_group {
            *self.group_active.entry(g.clone()).or_default() += k;
            if let Some((_, period)) = self.group_limits.rate {
                match self.group_windows.get_mut(&g) {
                    Some(w) if w.expires_ms > now_ms => w.value += k,
                    _ => {
                        self.group_windows.insert(g, Timed { value: k, expires_ms: now_ms + period.as_millis() as i64 });
                    }
                }
            }
        }
        if recs.is_empty() {
            self.wake();
            return Reserved::Empty;
        }
        if self.events_keep.is_some() {
            let ids = recs.iter().map(|r| rec::id(r)).collect();
            let attempts = numbers_field("a", recs.iter().map(|r| rec::attempt(r) as i64));
            let worker = token.split_once('.').map_or(token, |(w, _)| w);
            self.emit_with("active", ids, vec![("w", worker.as_bytes().to_vec()), attempts]);
        }
        // Pass the wake-up on: another worker should take what is left.
        if popped >= want {
            self.wake();
        }
        Reserved::Jobs(recs)
    }

    /// ack.lua for one lease.
    pub fn ack<Q>(&mut self, a: &LeaseAck<Q>, c: Clock) -> AckOutcome {
        let telling = self.events_keep.is_some();
        let mut told = [Told::new("completed"), Told::new("retrying"), Told::new("failed"), Told::new("cancelled")];
        let mut out = AckOutcome::default();
        let reaped = self.reaped.contains(&a.token);
        let mut pushed = false;
        let mut freed = 0;
        let mut earliest = false;
        for e in &a.entries {
            let id = String::from_utf8_lossy(&e.id).into_owned();
            let present = self.leases.get_mut(&a.token).and_then(|l| l.take(&id));
            let Some(held) = present else {
                match (&e.kind, reaped) {
                    (_, true) => out.refused += 1,
                    (AckKind::Completed { .. }, _) => out.completed += 1,
                    (AckKind::Retry { .. }, _) => out.retried += 1,
                    (AckKind::Failed { .. }, _) => out.failed += 1,
                    (AckKind::Cancelled, _) => out.cancelled += 1,
                }
                continue;
            };
            let group = e.group.as_ref().map(|g| String::from_utf8_lossy(g).into_owned());
            let group = match (&e.kind, group) {
                (AckKind::Cancelled, None) => rec::group(&held),
                (_, g) => g,
            };
            if let Some(g) = &group {
                self.group_done(g);
                freed += 1;
            }
            match &e.kind {
                AckKind::Completed { result } => {
                    if e.retried {
                        self.errors.remove(&id);
                    }
                    self.settle_mark(&id, Mark::Completed);
                    if let Some(key) = &e.dedup {
                        self.release_dedup(&String::from_utf8_lossy(key), &id);
                    }
                    if let Some(r) = result {
                        self.results.insert(id.clone(), Timed { value: r.clone(), expires_ms: c.now_ms + c.result_ttl_ms });
                    }
                    self.stats.completed += 1;
                    out.completed += 1;
                    if telling {
                        told[0].add(&id, &held, None, None, result.as_deref());
                    }
                }
                AckKind::Retry { delay_ms, record, error } => {
                    if !error.is_empty() {
                        self.errors.insert(id.clone(), error.clone());
                    }
                    if *delay_ms > 0 {
                        self.delay(id.clone(), record.clone(), (c.now_ms as u64 + delay_ms) * 1000);
                        earliest = true;
                    } else {
                        match group.or_else(|| rec::group(record)) {
                            Some(g) => self.push_group(g, record.clone(), false),
                            None => self.ready[rec::priority(record)].push_back(record.clone()),
                        }
                        pushed = true;
                    }
                    self.stats.retried += 1;
                    out.retried += 1;
                    if telling {
                        let attempt = rec::attempt(record).saturating_sub(1) as i64;
                        told[1].add(&id, record, Some(attempt), Some(*delay_ms as i64), Some(error));
                    }
                }
                AckKind::Failed { error, record } => {
                    if let Some(key) = &e.dedup {
                        self.release_dedup(&String::from_utf8_lossy(key), &id);
                    }
                    self.fail(&id, record.clone(), error.clone(), c.now_ms);
                    out.failed += 1;
                    if telling {
                        told[2].add(&id, record, Some(rec::attempt(record).saturating_sub(1) as i64), None, Some(error));
                    }
                }
                AckKind::Cancelled => {
                    if e.retried {
                        self.errors.remove(&id);
                    }
                    self.settle_mark(&id, Mark::Cancelled);
                    self.release_dedup_of(&held, &id);
                    if let Some(l) = self.leases.get_mut(&a.token) {
                        l.cancel.remove(&id);
                    }
                    self.stats.cancelled += 1;
                    out.cancelled += 1;
                    if telling {
                        told[3].add(&id, &held, None, None, None);
                    }
                }
            }
        }
        for t in told.into_iter().filter(|t| !t.ids.is_empty()) {
            let fields = t.fields();
            self.emit_with(t.kind, t.ids, fields);
        }
        if self.leases.get(&a.token).is_some_and(|l| l.is_empty()) {
            self.leases.remove(&a.token);
        }
        let settled = out.completed + out.retried + out.failed + out.cancelled > 0;
        if pushed || (settled && self.limits != Limits::default()) || (freed > 0 && self.group_limits != Limits::default()) {
            self.wake();
        }
        if earliest {
            self.sched.notify_waiters();
        }
        out
    }

    /// start.lua.
    pub fn start(&mut self, token: &str, id: &str, now_ms: i64) -> bool {
        match self.leases.get_mut(token) {
            Some(l) if l.get(id).is_some() => {
                l.started.insert(id.to_string(), now_ms);
                true
            }
            _ => false,
        }
    }

    /// release.lua.
    pub fn release(&mut self, token: &str, ids: &[Vec<u8>]) -> u64 {
        let mut back = Vec::new();
        for id in ids {
            let id = String::from_utf8_lossy(id).into_owned();
            let Some(l) = self.leases.get_mut(token) else { break };
            let Some(r) = l.take(&id) else { continue };
            let asked = l.cancel.remove(&id);
            if let Some(g) = rec::group(&r) {
                self.group_done(&g);
            }
            if asked {
                self.cancel_unstarted(&id, &r);
            } else {
                back.push(r);
            }
        }
        if self.leases.get(token).is_some_and(|l| l.is_empty()) {
            self.leases.remove(token);
        }
        let n = back.len() as u64;
        self.push_ready(back, true);
        self.wake();
        n
    }

    /// extend.lua: (tokens lost, ids asked to cancel).
    pub fn extend(&mut self, tokens: &[String], deadline_ms: i64) -> (Vec<String>, Vec<Vec<u8>>) {
        let (mut lost, mut cancel) = (Vec::new(), Vec::new());
        for t in tokens {
            match self.leases.get_mut(t) {
                Some(l) => {
                    l.deadline_ms = deadline_ms;
                    cancel.extend(l.cancel.iter().map(|id| id.as_bytes().to_vec()));
                }
                None if self.reaped.contains(t) => lost.push(t.clone()),
                None => {}
            }
        }
        (lost, cancel)
    }

    /// expire.lua.
    pub fn expire_worker(&mut self, worker: &str, most: usize) -> Expired {
        let prefix = format!("{worker}.");
        let mut x = Expired::default();
        for (token, l) in self.leases.iter_mut().filter(|(t, _)| t.starts_with(&prefix)) {
            let _ = token;
            x.leases += 1;
            l.deadline_ms = 0;
            x.held += l.len() as u64;
            x.ids.extend(l.records().map(|r| rec::id(r)).take(most.saturating_sub(x.ids.len())));
            x.started.extend(l.started.keys().cloned());
        }
        x
    }

    /// tick.lua: promotes due delayed jobs and reaps expired leases.
    pub fn tick(&mut self, limit: usize, c: Clock) -> Tick {
        let mut due = Vec::new();
        while due.len() < limit {
            match self.delayed.first() {
                Some((at, _)) if *at <= c.now_us as u64 => {
                    let (_, id) = self.delayed.pop_first().expect("a first entry");
                    self.due.remove(&id);
                    if let Some(r) = self.jobs.remove(&id) {
                        due.push(r);
                    }
                }
                _ => break,
            }
        }
        let promoted = due.len() as u64;
        if self.events_keep.is_some() {
            let ids = due.iter().map(|r| rec::id(r)).collect();
            self.emit("waiting", ids);
        }
        self.push_ready(due, false);
        let mut expired: Vec<(i64, String)> =
            self.leases.iter().filter(|(_, l)| l.deadline_ms <= c.now_ms).map(|(t, l)| (l.deadline_ms, t.clone())).collect();
        expired.sort();
        expired.truncate(limit);
        let mut reaped = 0;
        for (_, token) in expired {
            let worker = token.split_once('.').map(|(w, _)| w.to_string()).unwrap_or_else(|| token.clone());
            self.nudged.remove(&worker);
            let mut lease = self.leases.remove(&token).unwrap_or_default();
            let mut back = Vec::new();
            let (cancel, started) = (std::mem::take(&mut lease.cancel), std::mem::take(&mut lease.started));
            for (id, r) in lease.into_jobs() {
                if let Some(g) = rec::group(&r) {
                    self.group_done(&g);
                }
                reaped += 1;
                if cancel.contains(&id) {
                    self.cancel_unstarted(&id, &r);
                    continue;
                }
                let (mut attempt, max) = (rec::attempt(&r), rec::max_attempts(&r));
                let since = started.get(&id).copied();
                if since.is_some() {
                    attempt += 1;
                }
                match since {
                    Some(since) if attempt >= max => {
                        let err = lease_expired(&worker, attempt, max, since, self.errors.get(&id));
                        self.fail(&id, rec::with_attempt(&r, attempt, crate::record::RECORD), err, c.now_ms);
                        self.release_dedup_of(&r, &id);
                        self.emit("failed", vec![id]);
                    }
                    _ => back.push(rec::orphan(&r, attempt)),
                }
            }
            if self.events_keep.is_some() {
                let ids = back.iter().map(|r| rec::id(r)).collect();
                self.emit("stalled", ids);
            }
            self.push_ready(back, true);
            self.reaped.insert(token);
        }
        self.stats.stalled += reaped;
        self.sweep(c.now_ms);
        self.wake();
        Tick {
            promoted,
            reaped,
            now_ms: c.now_ms,
            now_us: c.now_us,
            next_due_us: self.delayed.first().map(|(at, _)| *at as i64),
            next_lease_deadline_ms: self.leases.values().map(|l| l.deadline_ms).min(),
        }
    }

    /// status.lua (`info`: with its progress and callback record).
    pub fn status(&self, id: &str, info: bool, now_ms: i64) -> Status {
        let (state, record, data) = self.locate(id, now_ms);
        let (progress, callback) = if info {
            (live(self.progress.get(id), now_ms).cloned(), live(self.callbacks.get(id), now_ms).cloned().unwrap_or_default())
        } else {
            (None, vec![])
        };
        Status { state, record, data, progress, callback }
    }

    fn locate(&self, id: &str, now_ms: i64) -> (State, Option<Vec<u8>>, Option<Vec<u8>>) {
        if let Some(r) = self.jobs.get(id) {
            if self.failed_at.contains_key(id) {
                return (State::Failed, Some(r.clone()), self.errors.get(id).cloned());
            }
            if self.due.contains_key(id) {
                return (State::Delayed, Some(r.clone()), self.errors.get(id).cloned());
            }
        }
        if let Some(r) = self.leases.values().find_map(|l| l.get(id)) {
            return (State::Active, Some(r.clone()), None);
        }
        match self.finished(id) {
            State::Completed => {
                (State::Completed, None, Some(live(self.results.get(id), now_ms).cloned().unwrap_or_else(|| b"null".to_vec())))
            }
            s => (s, None, None),
        }
    }

    /// Where a job no longer held is: completed, cancelled, waiting (known, not finished) or unknown.
    fn finished(&self, id: &str) -> State {
        if is_generated_id(id) {
            if self.done.get(id) {
                return State::Completed;
            }
            if self.cancelled.get(id) {
                return State::Cancelled;
            }
            let (p, seq) = Bits::split(id).unwrap_or(("", 0));
            return match self.hwm.get(p) {
                Some(h) if seq as u64 <= *h => State::Waiting,
                _ => State::Unknown,
            };
        }
        match self.marks.get(id) {
            Some(Mark::Completed) => State::Completed,
            Some(Mark::Cancelled) => State::Cancelled,
            Some(Mark::Taken) => State::Waiting,
            None => State::Unknown,
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            paused: self.paused,
            waiting: self.ready_count() + self.grouped,
            delayed: self.delayed.len() as u64,
            active: self.active_count(),
            failed: self.failed.len() as u64,
            completed: self.stats.completed,
            retried: self.stats.retried,
            stalled: self.stats.stalled,
            cancelled: self.stats.cancelled,
        }
    }

    /// Takes one waiting job out of the ready or group lists by id.
    fn remove_ready(&mut self, id: &str) -> Option<Vec<u8>> {
        for list in self.ready.iter_mut().rev() {
            if let Some(at) = list.iter().position(|r| crate::record::Record::peek_id(r) == id.as_bytes()) {
                return list.remove(at);
            }
        }
        for list in self.groups.values_mut() {
            if let Some(at) = list.iter().position(|r| crate::record::Record::peek_id(r) == id.as_bytes()) {
                let r = list.remove(at);
                self.grouped -= 1;
                self.ring_tidy();
                return r;
            }
        }
        None
    }

    fn forget_traces(&mut self, id: &str) {
        self.results.remove(id);
        self.progress.remove(id);
        self.logs.remove(id);
        self.callbacks.remove(id);
    }

    /// cancel.lua's `gone`: a job that will not run any more.
    fn gone(&mut self, state: State, id: &str, r: Option<Vec<u8>>, remove: bool) -> CancelReply {
        if let Some(r) = &r {
            self.release_dedup_of(r, id);
        }
        if !remove {
            self.settle_mark(id, Mark::Cancelled);
            self.stats.cancelled += 1;
            self.emit("cancelled", vec![id.to_string()]);
        } else {
            self.forget(id);
            self.forget_traces(id);
            self.emit("removed", vec![id.to_string()]);
        }
        CancelReply { state, record: r, done: true }
    }

    /// A removed job's id: a caller-chosen one is free again, a generated one reads cancelled.
    fn forget(&mut self, id: &str) {
        if is_generated_id(id) {
            self.cancelled.set(id);
        } else {
            self.marks.remove(id);
        }
    }

    /// cancel.lua.
    pub fn cancel(&mut self, id: &str, remove: bool) -> CancelReply {
        if self.due.contains_key(id) {
            let r = self.undelay(id);
            self.errors.remove(id);
            return self.gone(State::Delayed, id, r, remove);
        }
        if self.failed_at.contains_key(id) {
            let r = self.jobs.get(id).cloned();
            if !remove {
                return CancelReply { state: State::Failed, record: r, done: false };
            }
            self.unfail(id);
            if let Some(r) = &r {
                self.release_dedup_of(r, id);
            }
            self.progress.remove(id);
            self.logs.remove(id);
            self.callbacks.remove(id);
            self.forget(id);
            self.emit("removed", vec![id.to_string()]);
            return CancelReply { state: State::Failed, record: r, done: true };
        }
        if let Some(l) = self.leases.values_mut().find(|l| l.get(id).is_some()) {
            let r = l.get(id).cloned();
            if !remove {
                l.cancel.insert(id.to_string());
                self.control.notify_waiters();
            }
            return CancelReply { state: State::Active, record: r, done: !remove };
        }
        if let Some(r) = self.remove_ready(id) {
            return self.gone(State::Waiting, id, Some(r), remove);
        }
        let state = match self.finished(id) {
            State::Waiting => State::Unknown,
            s => s,
        };
        if remove && state != State::Unknown {
            self.forget_traces(id);
            if !is_generated_id(id) {
                self.marks.remove(id);
            }
            self.emit("removed", vec![id.to_string()]);
            return CancelReply { state, record: None, done: true };
        }
        CancelReply { state, record: None, done: false }
    }

    /// failed.lua retry_id.
    pub fn retry_job(&mut self, id: &str) -> bool {
        if !self.jobs.get(id).is_some_and(|r| rec::leasable(r)) || !self.failed_at.contains_key(id) {
            return false;
        }
        let r = self.unfail(id).expect("a failed job's record");
        self.push_ready(vec![rec::fresh(&r)], false);
        self.wake();
        true
    }

    /// empty.lua: cancels up to `max` waiting, then delayed, jobs.
    pub fn empty_page(&mut self, max: usize) -> (u64, Vec<Vec<u8>>) {
        let mut taken = self.pop_ready(max);
        while taken.len() < max && !self.ring.is_empty() {
            let Some(g) = self.ring.iter().flatten().next().cloned() else { break };
            let list = self.groups.entry(g).or_default();
            let got: Vec<Vec<u8>> = list.drain(..(max - taken.len()).min(list.len())).collect();
            self.grouped -= got.len() as u64;
            taken.extend(got);
            self.ring_tidy();
        }
        while taken.len() < max {
            let Some((_, id)) = self.delayed.first().cloned() else { break };
            if let Some(r) = self.undelay(&id) {
                taken.push(r);
            }
        }
        let mut with_options = Vec::new();
        let n = taken.len() as u64;
        let mut ids = Vec::with_capacity(taken.len());
        for r in taken {
            let id = rec::id(&r);
            self.settle_mark(&id, Mark::Cancelled);
            self.release_dedup_of(&r, &id);
            self.errors.remove(&id);
            if !rec::options(&r).is_empty() {
                with_options.push(r);
            }
            ids.push(id);
        }
        self.stats.cancelled += n;
        self.emit("cancelled", ids);
        (n, with_options)
    }

    pub fn failed_list(&self, limit: usize) -> Vec<FailedJob> {
        self.failed
            .iter()
            .take(limit)
            .map(|(at, _, id)| FailedJob {
                id: id.clone(),
                record: self.jobs.get(id).cloned(),
                error: self.errors.get(id).cloned(),
                failed_at_ms: *at,
            })
            .collect()
    }

    /// failed.lua retry: every failed job that is a job record goes back, attempts reset.
    pub fn failed_retry(&mut self) -> u64 {
        let ids: Vec<String> = self.failed.iter().map(|(_, _, id)| id.clone()).collect();
        let mut back = Vec::new();
        for id in ids {
            if self.jobs.get(&id).is_some_and(|r| rec::leasable(r)) {
                let r = self.unfail(&id).expect("a failed job's record");
                back.push(rec::fresh(&r));
            }
        }
        let n = back.len() as u64;
        self.push_ready(back, false);
        self.wake();
        n
    }

    pub fn failed_purge(&mut self) -> u64 {
        let ids: Vec<String> = self.failed.iter().map(|(_, _, id)| id.clone()).collect();
        for id in &ids {
            self.unfail(id);
            self.marks.remove(id);
        }
        ids.len() as u64
    }

    /// The number of things an obliterate drops: every job and record it held.
    pub fn size(&self) -> u64 {
        1 + self.ready_count() + self.grouped + self.jobs.len() as u64 + self.active_count()
    }

    pub fn set_limits(&mut self, limits: &Limits) {
        self.limits = *limits;
        self.window = None;
        self.wake();
    }

    /// feedback.lua: the entry with its time put first; returns the time.
    pub fn feedback(&mut self, id: &str, kind: Feedback, entry: &[u8], ttl_ms: i64, now_ms: i64) -> i64 {
        let mut line = format!("{{\"at\":{now_ms},").into_bytes();
        line.extend_from_slice(&entry[1..]);
        let expires_ms = now_ms + ttl_ms;
        match kind {
            Feedback::Progress => {
                let told = vec![("x", json_list([Some(line.as_slice())]))];
                self.progress.insert(id.to_string(), Timed { value: line, expires_ms });
                self.emit_with("progress", vec![id.to_string()], told);
            }
            Feedback::Log => {
                let logs = self.logs.entry(id.to_string()).or_insert(Timed { value: VecDeque::new(), expires_ms });
                if logs.expires_ms <= now_ms {
                    logs.value.clear();
                }
                logs.value.push_back(line);
                while logs.value.len() as u64 > MAX_LOG_LINES {
                    logs.value.pop_front();
                }
                logs.expires_ms = expires_ms;
            }
        }
        now_ms
    }

    pub fn progress(&self, id: &str, now_ms: i64) -> Option<Vec<u8>> {
        live(self.progress.get(id), now_ms).cloned()
    }

    pub fn logs(&self, id: &str, start: usize, limit: usize, now_ms: i64) -> Vec<Vec<u8>> {
        live(self.logs.get(id), now_ms).map(|l| l.iter().skip(start).take(limit).cloned().collect()).unwrap_or_default()
    }

    pub fn callback_record(&mut self, id: &str, fields: Vec<(&'static str, Vec<u8>)>, expires_ms: i64, now_ms: i64) {
        let cb = self.callbacks.entry(id.to_string()).or_insert(Timed { value: vec![], expires_ms });
        if cb.expires_ms <= now_ms {
            cb.value.clear();
        }
        for (f, v) in fields {
            match cb.value.iter_mut().find(|(k, _)| k == f) {
                Some(slot) => slot.1 = v,
                None => cb.value.push((f.to_string(), v)),
            }
        }
        cb.expires_ms = expires_ms;
    }

    pub fn callback_status(&self, id: &str, now_ms: i64) -> Vec<(String, Vec<u8>)> {
        live(self.callbacks.get(id), now_ms).cloned().unwrap_or_default()
    }
}

/// tick.lua's error for a job whose worker died while it ran its last attempt.
fn lease_expired(worker: &str, attempt: u16, max: u16, since: i64, before: Option<&Vec<u8>>) -> Vec<u8> {
    let mut err = serde_json::json!({
        "type": "LeaseExpired",
        "message": format!("worker {worker} stopped renewing its lease while it ran this job (it died or hung); its attempts are used up ({attempt} of {max} counted)"),
        "traceback": "",
        "worker": worker,
        "started_at_ms": since,
    });
    if let Some(prev) = before.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()).filter(|v| v.is_object()) {
        err["previous"] = prev;
    }
    serde_json::to_vec(&err).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(expires_ms: i64) -> Timed<Vec<u8>> {
        Timed { value: b"v".to_vec(), expires_ms }
    }

    #[test]
    fn sweep_drops_what_is_past_its_time_once_a_minute() {
        let mut q = Queue::default();
        q.results.insert("old".into(), timed(1_000));
        q.results.insert("live".into(), timed(1_000_000));
        q.progress.insert("old".into(), timed(1_000));
        q.sweep(61_000);
        assert_eq!(q.results.keys().collect::<Vec<_>>(), ["live"]);
        assert!(q.progress.is_empty());
        // Not again within the minute: what expired meanwhile stays until the next sweep.
        q.results.insert("later".into(), timed(61_500));
        q.sweep(62_000);
        assert!(q.results.contains_key("later"));
        q.sweep(121_000);
        assert!(!q.results.contains_key("later") && q.results.contains_key("live"));
    }
}

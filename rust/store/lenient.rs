//! Reading and rewriting packed records (record.rs) as the Redis scripts do (common.lua):
//! readers never fail on a damaged record, a missing byte reads as 0. Shared by the stores that
//! keep records themselves (memory, SQLite).

use crate::record::{Record, ORPHAN, RECORD};

pub fn id(rec: &[u8]) -> String {
    String::from_utf8_lossy(Record::peek_id(rec)).into_owned()
}

/// The job's name ("" when the record is damaged).
pub fn name(rec: &[u8]) -> &str {
    let n = rec.get(6).copied().unwrap_or(0) as usize;
    let m = rec.get(7 + n).copied().unwrap_or(0) as usize;
    rec.get(8 + n..8 + n + m).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

pub fn priority(rec: &[u8]) -> usize {
    let p = rec.get(5).copied().unwrap_or(0) as usize;
    if p > 9 {
        0
    } else {
        p
    }
}

pub fn attempt(rec: &[u8]) -> u16 {
    u16::from_be_bytes([rec.get(1).copied().unwrap_or(0), rec.get(2).copied().unwrap_or(0)])
}

pub fn max_attempts(rec: &[u8]) -> u16 {
    u16::from_be_bytes([rec.get(3).copied().unwrap_or(0), rec.get(4).copied().unwrap_or(0)])
}

/// The record with its attempt counter set and its kind byte replaced.
pub fn with_attempt(rec: &[u8], attempt: u16, kind: u8) -> Vec<u8> {
    let mut out = Record::with_attempt(rec, attempt);
    if let Some(k) = out.first_mut() {
        *k = kind;
    }
    out
}

pub fn orphan(rec: &[u8], attempt: u16) -> Vec<u8> {
    with_attempt(rec, attempt, ORPHAN)
}

pub fn fresh(rec: &[u8]) -> Vec<u8> {
    with_attempt(rec, 0, RECORD)
}

/// The options JSON ('' when none).
pub fn options(rec: &[u8]) -> &[u8] {
    let n = rec.get(6).copied().unwrap_or(0) as usize;
    let m = rec.get(7 + n).copied().unwrap_or(0) as usize;
    let at = 14 + n + m;
    let k = u16::from_be_bytes([rec.get(at).copied().unwrap_or(0), rec.get(at + 1).copied().unwrap_or(0)]) as usize;
    rec.get(at + 2..(at + 2 + k).min(rec.len())).unwrap_or(b"")
}

fn option_text(rec: &[u8], field: &str) -> Option<String> {
    let opts = options(rec);
    if opts.is_empty() || memchr::memmem::find(opts, format!("\"{field}\"").as_bytes()).is_none() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(opts).ok()?;
    v.get(field)?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// The group the record's options name.
pub fn group(rec: &[u8]) -> Option<String> {
    option_text(rec, "group")
}

/// The deduplication key the record's options say its job holds until it settles.
pub fn dedup(rec: &[u8]) -> Option<String> {
    option_text(rec, "dedup")
}

/// A job record with an id (what a store may lease): common.lua lease_id.
pub fn leasable(rec: &[u8]) -> bool {
    matches!(rec.first(), Some(&RECORD) | Some(&ORPHAN)) && rec.get(6).is_some_and(|n| *n > 0)
}

/// The record with another id in place of its own (a debounced dispatch keeps the holder's).
pub fn with_id(rec: &[u8], id: &str) -> Vec<u8> {
    let n = rec.get(6).copied().unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(rec.len() + id.len());
    out.extend_from_slice(&rec[..6.min(rec.len())]);
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(rec.get(7 + n..).unwrap_or(b""));
    out
}

//! The packed job record, and job ids.
//!
//! A waiting job is one list element: a small binary header followed by the payload bytes,
//! so millions of waiting jobs cost little more than their payloads (see docs/DATA.md).
//!
//! ```text
//! offset  size  field
//! 0       1     kind: RECORD (1), or ORPHAN (2) for a job whose worker died while it may have
//!               been running it (its next run goes alone, its start recorded first)
//! 1       2     attempts made so far (big-endian; the reaper and retries count them)
//! 3       2     max attempts
//! 5       1     priority (0-9, higher runs first)
//! 6       1     id length n          (the Lua scripts read these first fields by offset)
//! 7       n     id
//! ..      1     name length m, then the job name (m bytes)
//! ..      6     enqueued at, ms since the epoch (producer clock)
//! ..      2     options length k, then k bytes of options JSON (per-job overrides only)
//! ..      rest  payload (JSON by default)
//! ```
//!
//! A bulk dispatch writes several records per list element, a *run*: the byte `RUN`, then per
//! record its length (2 bytes, big-endian) and its bytes. Redis spends about as much on a list
//! element as on a few hundred bytes of it, so a run of 16 costs it a fraction of 16 elements
//! (docs/DESIGN.md, "Bulk dispatch"); reserve splits runs back into records (common.lua).

use crate::error::{Error, Result};
use rand::Rng;

/// First byte of a job record.
pub const RECORD: u8 = 1;
/// First byte of an orphaned job's record: the reaper found it in the lease of a worker that
/// died, and cannot know whether that worker had started it. Its next run goes alone, its
/// start recorded before it runs (start.lua), so that a job that kills its worker is counted
/// from then on while the jobs prefetched beside it lose no attempt (tick.lua).
pub const ORPHAN: u8 = 2;
/// First byte of a run of records (never a record's).
pub const RUN: u8 = 254;
/// A run closes at this many records, or before it would pass `RUN_BYTES`; a larger record
/// stands alone, so a run's lengths always fit in 2 bytes.
pub const RUN_RECORDS: usize = 16;
pub const RUN_BYTES: usize = 2048;

/// Where the list elements of `n` records start, plus `n` at the end: consecutive records
/// of at most `size(i)` bytes each grouped into runs (a group of one is a plain record).
pub fn run_bounds(n: usize, size: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(n / RUN_RECORDS + 2);
    let (mut count, mut bytes) = (0, 1);
    for i in 0..n {
        let s = size(i) + 2;
        if count == 0 || count == RUN_RECORDS || bytes + s > RUN_BYTES {
            bounds.push(i);
            (count, bytes) = (0, 1);
        }
        count += 1;
        bytes += s;
    }
    bounds.push(n);
    bounds
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub attempt: u16,
    pub max_attempts: u16,
    pub priority: u8,
    pub id: String,
    pub name: String,
    pub enqueued_ms: u64,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Checks the parts of a record that the format bounds; called before anything is sent.
pub fn check_fields(id: &str, name: &str, options: &[u8]) -> Result<()> {
    if id.is_empty() || id.len() > 255 {
        return Err(Error::Invalid(format!("job id {id:?} must be 1 to 255 bytes")));
    }
    if id.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(Error::Invalid(format!("job id {id:?} must not contain spaces or control characters")));
    }
    if name.is_empty() || name.len() > 255 {
        return Err(Error::Invalid(format!("job name {name:?} must be 1 to 255 bytes")));
    }
    if options.len() > u16::MAX as usize {
        return Err(Error::Invalid(format!("job options take {} bytes; the limit is 65535", options.len())));
    }
    Ok(())
}

/// The longest group key, in bytes.
pub const MAX_GROUP_KEY: usize = 255;

/// The group a job's options name (`"group"`, README "Groups"), checked: a str of 1 to 255
/// bytes without control characters. `Ok(None)` for options that name none (they are parsed
/// only when they mention it: most records have no options at all).
pub fn options_group(options: &[u8]) -> Result<Option<String>> {
    if options.is_empty() || memchr::memmem::find(options, b"\"group\"").is_none() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(options).map_err(|e| Error::Invalid(format!("job options are not a JSON object: {e}")))?;
    match v.get("group") {
        None => Ok(None),
        Some(serde_json::Value::String(g)) if !g.is_empty() && g.len() <= MAX_GROUP_KEY && !g.bytes().any(|b| b.is_ascii_control()) => {
            Ok(Some(g.clone()))
        }
        Some(other) => {
            Err(Error::Invalid(format!("group must be a str of 1 to {MAX_GROUP_KEY} bytes without control characters, got {other}")))
        }
    }
}

/// The header fields of a record that Redis scripts read or rewrite.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub attempt: u16,
    pub max_attempts: u16,
    pub priority: u8,
}

/// The length of a packed record (what `pack_into` appends).
pub fn packed_len(id: &str, name: &str, options: &[u8], payload: &[u8]) -> usize {
    16 + id.len() + name.len() + options.len() + payload.len()
}

/// Packs a record; the caller has run `check_fields`.
#[allow(clippy::too_many_arguments)]
pub fn pack_into(out: &mut Vec<u8>, h: Header, id: &str, name: &str, enqueued_ms: u64, options: &[u8], payload: &[u8]) {
    out.reserve(packed_len(id, name, options, payload));
    out.push(RECORD);
    out.extend_from_slice(&h.attempt.to_be_bytes());
    out.extend_from_slice(&h.max_attempts.to_be_bytes());
    out.push(h.priority);
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&enqueued_ms.to_be_bytes()[2..]);
    out.extend_from_slice(&(options.len() as u16).to_be_bytes());
    out.extend_from_slice(options);
    out.extend_from_slice(payload);
}

impl Record {
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let h = Header { attempt: self.attempt, max_attempts: self.max_attempts, priority: self.priority };
        pack_into(&mut out, h, &self.id, &self.name, self.enqueued_ms, &self.options, &self.payload);
        out
    }

    pub fn unpack(b: &[u8]) -> Result<Record> {
        let bad = |what: &str| Error::Store(format!("not a job record fastjobs can read ({what}, {} bytes)", b.len()));
        if !matches!(b.first(), Some(&RECORD) | Some(&ORPHAN)) {
            return Err(bad("not a job record"));
        }
        let mut r = Reader { b, at: 1 };
        let attempt = r.u16().ok_or_else(|| bad("attempt"))?;
        let max_attempts = r.u16().ok_or_else(|| bad("max attempts"))?;
        let priority = r.u8().filter(|p| *p <= 9).ok_or_else(|| bad("priority"))?;
        let n = r.u8().filter(|n| *n > 0).ok_or_else(|| bad("id"))? as usize;
        let id = r.str(n).ok_or_else(|| bad("id"))?;
        let m = r.u8().filter(|m| *m > 0).ok_or_else(|| bad("name"))? as usize;
        let name = r.str(m).ok_or_else(|| bad("name"))?;
        let t = r.take(6).ok_or_else(|| bad("timestamp"))?;
        let mut ts = [0u8; 8];
        ts[2..].copy_from_slice(t);
        let k = r.u16().ok_or_else(|| bad("options"))? as usize;
        let options = r.take(k).ok_or_else(|| bad("options"))?.to_vec();
        let payload = b[r.at..].to_vec();
        Ok(Record { attempt, max_attempts, priority, id, name, enqueued_ms: u64::from_be_bytes(ts), options, payload })
    }

    /// The id of a packed record without decoding the rest, read exactly as the Lua scripts
    /// read it (`string.sub` clamps to the end), so that even a damaged record can be found
    /// again by the id its lease holds it under.
    pub fn peek_id(b: &[u8]) -> &[u8] {
        let n = b.get(6).copied().unwrap_or(0) as usize;
        b.get(7..).map(|rest| &rest[..n.min(rest.len())]).unwrap_or(b"")
    }

    /// A copy of a packed record with its attempt counter set; an orphan becomes a plain
    /// record again (the run that follows was seen to start).
    pub fn with_attempt(b: &[u8], attempt: u16) -> Vec<u8> {
        let mut out = b.to_vec();
        if out.len() >= 3 {
            out[0] = RECORD;
            out[1..3].copy_from_slice(&attempt.to_be_bytes());
        }
        out
    }

    /// Whether a packed record is an orphan (see `ORPHAN`).
    pub fn is_orphan(b: &[u8]) -> bool {
        b.first() == Some(&ORPHAN)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn str(&mut self, n: usize) -> Option<String> {
        self.take(n).and_then(|s| String::from_utf8(s.to_vec()).ok())
    }
}

// ---- job ids ----
//
// A generated id is `<producer>-<seq>`: a 10-character random producer tag (one per process,
// renewed every 2^24 jobs) and a decimal sequence number. The scripts find a generated job's
// state from that shape alone: a bit per sequence number marks completion, and the producer's
// high-water mark tells a waiting job from one that never existed, so no per-job key is needed.

pub const PRODUCER_LEN: usize = 10;
const SEQ_LIMIT: u64 = 1 << 24;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The ids the scripts give elements of a queue that are not job records (common.lua
/// fail_undecodable): callers may not choose them.
pub const UNDECODABLE_PREFIX: &str = "undecodable:";

/// Checks an id a caller chose: the limits of `check_fields`, and none of the shapes fastjobs
/// gives ids itself (a generated id, or an undecodable element's).
pub fn check_caller_id(id: &str) -> Result<()> {
    if is_generated_id(id) {
        return Err(Error::Invalid(format!(
            "job id {id:?} has the shape of a generated id (10 letters or digits, '-', a number); choose another"
        )));
    }
    if id.starts_with(UNDECODABLE_PREFIX) {
        return Err(Error::Invalid(format!(
            "job id {id:?} starts with {UNDECODABLE_PREFIX:?}, which fastjobs keeps for itself; choose another"
        )));
    }
    check_fields(id, "x", b"")
}

/// True when `id` has the shape of a generated id (callers may not choose such ids).
pub fn is_generated_id(id: impl AsRef<[u8]>) -> bool {
    let b = id.as_ref();
    b.len() > PRODUCER_LEN + 1
        && b[..PRODUCER_LEN].iter().all(u8::is_ascii_alphanumeric)
        && b[PRODUCER_LEN] == b'-'
        && b[PRODUCER_LEN + 1..].iter().all(u8::is_ascii_digit)
        && b.len() <= PRODUCER_LEN + 1 + 8
}

/// Hands out ranges of sequence numbers under one producer tag.
#[derive(Debug)]
pub struct IdGen {
    producer: String,
    next: u64,
}

/// A run of consecutive ids under one producer tag.
#[derive(Debug, Clone)]
pub struct IdRange {
    pub producer: String,
    pub first: u64,
    pub count: u64,
}

impl IdRange {
    pub fn id(&self, i: u64) -> String {
        format!("{}-{}", self.producer, self.first + i)
    }
    pub fn last_seq(&self) -> u64 {
        self.first + self.count - 1
    }
}

fn random_producer() -> String {
    let mut rng = rand::rng();
    (0..PRODUCER_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen { producer: random_producer(), next: 0 }
    }
}

impl IdGen {
    /// Takes `count` consecutive sequence numbers (count < 2^24), renewing the producer tag
    /// when the current one would overflow.
    pub fn take(&mut self, count: u64) -> IdRange {
        if self.next + count > SEQ_LIMIT {
            self.producer = random_producer();
            self.next = 0;
        }
        let r = IdRange { producer: self.producer.clone(), first: self.next, count };
        self.next += count;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            attempt: 2,
            max_attempts: 5,
            priority: 7,
            id: "abcDEF1234-42".into(),
            name: "send_email".into(),
            enqueued_ms: 1_700_000_000_123,
            options: br#"{"timeout":3}"#.to_vec(),
            payload: br#"{"to":"a@b.c"}"#.to_vec(),
        };
        let b = r.pack();
        assert_eq!(Record::unpack(&b).unwrap(), r);
        assert_eq!(b.len(), packed_len(&r.id, &r.name, &r.options, &r.payload)); // the bulk path frames by it
        assert_eq!(Record::peek_id(&b), b"abcDEF1234-42");
        assert_eq!(Record::peek_id(b"\x09garbage"), b"e");
        assert_eq!(Record::unpack(&Record::with_attempt(&b, 3)).unwrap().attempt, 3);
    }

    #[test]
    fn the_group_of_options_is_read_and_checked() {
        assert_eq!(options_group(b"").unwrap(), None);
        assert_eq!(options_group(br#"{"timeout":3}"#).unwrap(), None);
        assert_eq!(options_group(br#"{"meta":{"group":"x"}}"#).unwrap(), None);
        assert_eq!(options_group(br#"{"group":"tenant-42"}"#).unwrap(), Some("tenant-42".to_string()));
        for bad in [&br#"{"group":""}"#[..], br#"{"group":7}"#, br#"{"group":"ab"}"#] {
            assert!(options_group(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"group":"{}"}}"#, "g".repeat(256));
        assert!(options_group(long.as_bytes()).is_err());
    }

    /// The records of one list element, read as common.lua's split_run reads them.
    fn split_element(e: &[u8]) -> Vec<&[u8]> {
        if e.first() != Some(&RUN) {
            return vec![e];
        }
        let mut out = vec![];
        let mut at = 1;
        while at + 2 <= e.len() {
            let len = u16::from_be_bytes([e[at], e[at + 1]]) as usize;
            let end = (at + 2 + len).min(e.len());
            out.push(&e[at + 2..end]);
            at = end;
        }
        out
    }

    #[test]
    fn runs_group_small_records_and_split_back() {
        // 40 records of 100 bytes: runs of RUN_RECORDS; then a record too large for any run.
        let mut sizes = vec![100; 40];
        sizes.push(RUN_BYTES);
        sizes.push(100);
        let b = run_bounds(sizes.len(), |i| sizes[i]);
        assert_eq!(b, vec![0, 16, 32, 40, 41, 42]);
        // Bytes close a run of larger records first: 10 of 200 (+2 each) fit in 2,048, 11 do not.
        assert_eq!(run_bounds(30, |_| 100)[..2], [0, 16]);
        assert_eq!(run_bounds(30, |_| 200)[..3], [0, 10, 20]);
        assert_eq!(run_bounds(0, |_| 1), vec![0]);
        let mut run = vec![RUN];
        for r in [&b"\x01ab"[..], b"\x01cde"] {
            run.extend_from_slice(&(r.len() as u16).to_be_bytes());
            run.extend_from_slice(r);
        }
        assert_eq!(split_element(&run), vec![&b"\x01ab"[..], b"\x01cde"]);
        assert_eq!(split_element(b"\x01plain"), vec![&b"\x01plain"[..]]);
        // cut short: clamped
        assert_eq!(split_element(&run[..run.len() - 1]), vec![&b"\x01ab"[..], b"\x01cd"]);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Record::unpack(b"").is_err());
        assert!(Record::unpack(b"\x01\x00").is_err());
        assert!(Record::unpack(b"\x09whatever").is_err());
    }

    #[test]
    fn generated_ids_are_recognised() {
        let mut g = IdGen::default();
        let r = g.take(3);
        assert!(is_generated_id(r.id(2)));
        assert_eq!(g.take(1).first, 3);
        assert!(!is_generated_id("order-123"));
        assert!(!is_generated_id("abcdefghij-"));
    }

    #[test]
    fn producer_tag_renews_before_overflow() {
        let mut g = IdGen::default();
        let a = g.take(SEQ_LIMIT - 1);
        let b = g.take(2);
        assert_ne!(a.producer, b.producer);
        assert_eq!(b.first, 0);
    }

    mod generated {
        //! The decoder of records against generated input: records it packed come back
        //! whole, and no byte string (damaged records, garbage, truncations) makes it panic;
        //! what it accepts is what the Lua scripts accept (common.lua record_ok).
        use super::super::*;
        use proptest::prelude::*;

        fn record() -> impl Strategy<Value = Record> {
            let id = "[A-Za-z0-9:@._-]{1,255}";
            let name = "[A-Za-z0-9._]{1,255}";
            (any::<u16>(), 1..=u16::MAX, 0u8..=9, id, name, 0u64..(1 << 48)).prop_flat_map(
                |(attempt, max_attempts, priority, id, name, enqueued_ms)| {
                    (proptest::collection::vec(any::<u8>(), 0..300), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(
                        move |(options, payload)| Record {
                            attempt,
                            max_attempts,
                            priority,
                            id: id.clone(),
                            name: name.clone(),
                            enqueued_ms,
                            options,
                            payload,
                        },
                    )
                },
            )
        }

        /// common.lua's record_ok, byte for byte (1-based offsets there, 0-based here).
        fn lua_record_ok(b: &[u8]) -> bool {
            let (kind, n) = (b.first().copied(), b.get(6).copied());
            let (Some(kind), Some(n)) = (kind, n) else { return false };
            if (kind != RECORD && kind != ORPHAN) || n == 0 || b[5] > 9 {
                return false;
            }
            let n = n as usize;
            let Some(&m) = b.get(7 + n) else { return false };
            if m == 0 {
                return false;
            }
            let m = m as usize;
            let (Some(&hi), Some(&lo)) = (b.get(14 + n + m), b.get(15 + n + m)) else { return false };
            b.len() >= 16 + n + m + ((hi as usize) << 8 | lo as usize)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

            #[test]
            fn packed_records_come_back_whole(r in record()) {
                let b = r.pack();
                prop_assert!(lua_record_ok(&b));
                prop_assert_eq!(Record::unpack(&b).unwrap(), r.clone());
                prop_assert_eq!(Record::peek_id(&b), r.id.as_bytes());
                let orphan = Record::with_attempt(&{ let mut o = b.clone(); o[0] = ORPHAN; o }, r.attempt);
                prop_assert_eq!(orphan, b);
            }

            #[test]
            fn no_byte_string_makes_the_decoder_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
                let decoded = Record::unpack(&b);
                // Whatever decodes is a record the scripts would have leased too.
                if decoded.is_ok() {
                    prop_assert!(lua_record_ok(&b));
                }
                let _ = Record::peek_id(&b);
                let _ = Record::is_orphan(&b);
            }

            #[test]
            fn damaged_records_are_refused_or_read_without_panic(r in record(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
                let mut b = r.pack();
                let at = flip.index(b.len());
                b[at] = byte;
                b.truncate(cut.index(b.len() + 1));
                if let Ok(d) = Record::unpack(&b) {
                    prop_assert!(lua_record_ok(&b));
                    prop_assert_eq!(Record::peek_id(&b), d.id.as_bytes());
                }
            }
        }
    }
}

//! An event loop's own connection to Redis, for its single dispatches: written and read on
//! the loop's thread, never blocking (the loop watches the socket). A dispatch made on the
//! loop goes out at once when nothing is in flight on this connection; those made while a
//! write is in flight go together when its answers are in (group commit, as coalesce.rs does
//! for threads). No thread is woken on the way: on a busy web server, whose cores are taken,
//! a hop to another thread and back cost ~100 µs of CPU per dispatch; this path costs a write
//! and a read per batch.
//!
//! What it does not do, it hands back to the caller (py/inbox.rs), which sends it through
//! the dispatch thread: the dispatches of a call Redis answered NOSCRIPT (they did not run;
//! that path loads the scripts), and those still waiting when the connection broke.

use crate::engine::coalesce::{Answer, Dispatch};
use crate::error::Error;
use crate::store::redis::conn::Stream;
use crate::store::redis::keys::QueueKeys;
use crate::store::redis::{PartsPlan, RedisStore};
use crate::store::Part;
use redis::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Flight<T> {
    requests: Vec<(Dispatch<QueueKeys>, T)>,
    plan: PartsPlan,
    expected: usize,
    replies: Vec<Value>,
    since: Instant,
}

/// What the connection gives back after an event.
pub struct Done<T> {
    /// Answers for their callers.
    pub answers: Vec<(T, Answer)>,
    /// Dispatches to send another way (see the module's comment).
    pub hand_back: Vec<(Dispatch<QueueKeys>, T)>,
    /// The connection is unusable: drop it (its in-flight dispatches are answered with the
    /// error, the waiting ones handed back).
    pub broken: bool,
}

impl<T> Default for Done<T> {
    fn default() -> Self {
        Done { answers: Vec::new(), hand_back: Vec::new(), broken: false }
    }
}

pub struct LoopConn<T> {
    stream: Stream,
    store: Arc<RedisStore>,
    /// Bytes of the batch in flight not written yet (the socket's buffer was full).
    out: Vec<u8>,
    input: Vec<u8>,
    flight: Option<Flight<T>>,
    waiting: Vec<(Dispatch<QueueKeys>, T)>,
}

impl<T> LoopConn<T> {
    pub fn new(stream: Stream, store: Arc<RedisStore>) -> LoopConn<T> {
        LoopConn { stream, store, out: Vec::new(), input: Vec::with_capacity(4096), flight: None, waiting: Vec::new() }
    }

    pub fn fd(&self) -> std::os::unix::io::RawFd {
        self.stream.fd()
    }

    /// Bytes are left to write: the caller watches the socket for writing and calls `flush`.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.flight.is_some()
    }

    /// A dispatch: written now when nothing is in flight, else with the next batch.
    pub fn send(&mut self, dispatch: Dispatch<QueueKeys>, token: T) -> Done<T> {
        if self.flight.is_some() {
            self.waiting.push((dispatch, token));
            return Done::default();
        }
        self.start(vec![(dispatch, token)])
    }

    fn start(&mut self, requests: Vec<(Dispatch<QueueKeys>, T)>) -> Done<T> {
        let parts: Vec<Part<'_, QueueKeys>> = requests.iter().map(|(d, _)| d.part()).collect();
        let (cmds, plan) = self.store.plan_parts(&parts);
        drop(parts);
        for c in &cmds {
            c.write_packed_command(&mut self.out);
        }
        self.flight = Some(Flight { requests, plan, expected: cmds.len(), replies: Vec::with_capacity(cmds.len()), since: Instant::now() });
        self.flush()
    }

    /// Writes what the socket takes now.
    pub fn flush(&mut self) -> Done<T> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return self.fail(Error::Connection("Redis closed the connection".into())),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(Error::Connection(format!("cannot reach Redis: {e}"))),
            }
        }
        Done::default()
    }

    /// The socket is readable: reads what is there; when the batch in flight has all its
    /// answers, answers its dispatches and writes the next batch.
    pub fn readable(&mut self) -> Done<T> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return self.fail(Error::Connection("Redis closed the connection".into())),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(Error::Connection(format!("cannot reach Redis: {e}"))),
            }
        }
        let mut at = 0;
        while let Some(f) = self.flight.as_mut().filter(|f| f.replies.len() < f.expected) {
            match frame_len(&self.input[at..]) {
                Ok(Some(n)) => match redis::parse_redis_value(&self.input[at..at + n]) {
                    Ok(v) => {
                        f.replies.push(v);
                        at += n;
                    }
                    Err(e) => return self.fail(Error::Store(format!("unreadable reply from Redis: {e}"))),
                },
                Ok(None) => break,
                Err(()) => return self.fail(Error::Store("unreadable reply from Redis (not RESP2)".into())),
            }
        }
        self.input.drain(..at);
        match &self.flight {
            Some(f) if f.replies.len() == f.expected => {}
            Some(_) => return Done::default(),
            // An answer with nothing in flight: the connection is out of step.
            None if !self.input.is_empty() => return self.fail(Error::Store("a reply from Redis that nothing asked for".into())),
            None => return Done::default(),
        }
        let f = self.flight.take().expect("checked above");
        let mut done = Done::default();
        match self.store.answer_parts(&f.plan, f.replies) {
            Ok(answers) => {
                for ((d, token), a) in f.requests.into_iter().zip(answers) {
                    match a {
                        Some(a) => done.answers.push((token, a)),
                        None => done.hand_back.push((d, token)), // NOSCRIPT: it did not run
                    }
                }
            }
            Err(e) => done.answers.extend(f.requests.into_iter().map(|(_, t)| (t, Err(e.clone())))),
        }
        if !self.waiting.is_empty() {
            let next = std::mem::take(&mut self.waiting);
            let more = self.start(next);
            done.answers.extend(more.answers);
            done.hand_back.extend(more.hand_back);
            done.broken = more.broken;
        }
        done
    }

    /// Breaks the connection when the batch in flight has waited longer than `timeout`.
    pub fn expire(&mut self, timeout: Duration) -> Option<Done<T>> {
        let f = self.flight.as_ref()?;
        (f.since.elapsed() > timeout)
            .then(|| self.fail(Error::Timeout(format!("Redis did not answer a dispatch within {:.1} s", timeout.as_secs_f64()))))
    }

    /// The connection is unusable: the dispatches in flight get `e` (written or not is
    /// unknown), the waiting ones are handed back.
    fn fail(&mut self, e: Error) -> Done<T> {
        let mut done = Done { broken: true, ..Done::default() };
        if let Some(f) = self.flight.take() {
            done.answers.extend(f.requests.into_iter().map(|(_, t)| (t, Err(e.clone()))));
        }
        done.hand_back = std::mem::take(&mut self.waiting);
        self.out.clear();
        done
    }
}

/// The length of the first RESP2 reply in `b`: None while it is incomplete, Err for bytes
/// that are not RESP2.
fn frame_len(b: &[u8]) -> std::result::Result<Option<usize>, ()> {
    let Some(cr) = memchr::memchr(b'\r', b) else { return Ok(None) };
    if b.len() < cr + 2 {
        return Ok(None);
    }
    let head = cr + 2;
    let count = || std::str::from_utf8(&b[1..cr]).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(());
    match b[0] {
        b'+' | b'-' | b':' => Ok(Some(head)),
        b'$' => match count()? {
            n if n < 0 => Ok(Some(head)),
            n => {
                let end = head + n as usize + 2;
                Ok((b.len() >= end).then_some(end))
            }
        },
        b'*' => {
            let n = count()?;
            let mut at = head;
            for _ in 0..n.max(0) {
                match frame_len(&b[at..])? {
                    Some(k) => at += k,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn resp2_frames_are_measured_whole_or_not_at_all() {
        assert_eq!(frame_len(b":12\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b":12\r"), Ok(None));
        assert_eq!(frame_len(b"$3\r\nabc\r\n:1\r\n"), Ok(Some(9)));
        assert_eq!(frame_len(b"$3\r\nab"), Ok(None));
        assert_eq!(frame_len(b"$-1\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b"*2\r\n:1\r\n$2\r\nid\r\n"), Ok(Some(16)));
        assert_eq!(frame_len(b"*2\r\n:1\r\n$2\r\ni"), Ok(None));
        assert_eq!(frame_len(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(frame_len(b"-NOSCRIPT No matching script\r\n"), Ok(Some(30)));
        assert_eq!(frame_len(b"%1\r\n"), Err(()));
    }
}

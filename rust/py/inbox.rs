//! The asyncio face of single dispatches. Each event loop has a `LoopState`:
//!
//! - per client, a connection of the loop's own (loop_conn.rs), opened in the background on
//!   the loop's first dispatch and watched by the loop (`add_reader`): dispatches are written
//!   and answered on the loop's thread, batched while one is in flight, with no thread hop;
//! - an `Inbox` (coalesce.rs) for the dispatches that go through the dispatch thread instead
//!   (while the loop's connection opens, for TLS or RESP3 URLs, after NOSCRIPT or a broken
//!   connection): the thread puts answers in it without the GIL and rings once per batch,
//!   and the loop settles the batch in one callback. (A settle per dispatch through
//!   `call_soon_threadsafe` would take the GIL from the loop and wake it once per dispatch.)

use super::errors::to_py;
use crate::engine::coalesce::{lock, Answer, Coalescer, Dispatch, Inbox};
use crate::error::{Error, Result};
use crate::store::redis::conn::Stream;
use crate::store::redis::keys::QueueKeys;
use crate::store::redis::loop_conn::{Done, LoopConn};
use crate::store::redis::RedisStore;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an asynchronous dispatch waits with: its future, and what its answer needs to be
/// read (the jobs' ids).
pub type Token = (Py<PyAny>, Vec<String>);

pub type LoopInbox = Inbox<Token>;

pub type ClientCoalescer = Coalescer<RedisStore, Token>;

/// Turns an answer into the value the future gets: [(id, created, deduplicated)].
pub type Settle = fn(Python<'_>, Vec<String>, Answer) -> PyResult<Py<PyAny>>;

/// A connection being opened on another thread: its outcome once known.
type Opening = Arc<Mutex<Option<Result<Option<Stream>>>>>;

enum Link {
    Opening(Opening),
    Open(Box<LoopConn<Token>>),
    /// TLS or RESP3: this client's dispatches take the dispatch thread.
    Never,
    /// Opening failed or the connection broke: try again after this moment.
    Retry(Instant),
}

/// One client's dispatches on this loop.
struct Slot {
    coalescer: Arc<ClientCoalescer>,
    store: Arc<RedisStore>,
    link: Link,
    /// The loop watches the connection for writing (bytes are left to write).
    watching_writes: bool,
}

/// A client's slot on a loop is found by its coalescer's address (a client has one).
fn client_key(coalescer: &Arc<ClientCoalescer>) -> usize {
    Arc::as_ptr(coalescer) as usize
}

impl Slot {
    fn key(&self) -> usize {
        client_key(&self.coalescer)
    }
}

#[pyclass(module = "fastjobs._core", frozen)]
pub struct LoopState {
    pid: u32,
    inbox: Arc<LoopInbox>,
    slots: Mutex<Vec<Slot>>,
    settle: Settle,
    timer_armed: AtomicBool,
    event_loop: Py<PyAny>,
}

/// What the loop calls back: the inbox's socket turned readable, a connection's socket
/// turned readable or writable, or the timer that bounds the wait for an answer.
#[pyclass(module = "fastjobs._core", frozen)]
pub struct LoopEvent {
    state: Py<LoopState>,
    kind: Event,
}

#[derive(Clone, Copy)]
enum Event {
    Inbox,
    Read(usize),
    Write(usize),
    Timer,
}

#[pymethods]
impl LoopEvent {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let state = self.state.bind(py);
        let s = state.get();
        match self.kind {
            Event::Inbox => {
                for (token, answer) in s.inbox.take() {
                    s.answer(py, token, answer)?;
                }
                Ok(())
            }
            Event::Read(key) => s.on_conn(py, state, key, |c| c.readable()),
            Event::Write(key) => s.on_conn(py, state, key, |c| c.flush()),
            Event::Timer => s.on_timer(py, state),
        }
    }
}

/// The interval of the timer that breaks connections whose answer is late.
const TIMER: Duration = Duration::from_millis(500);

impl LoopState {
    /// Settles a future (nobody waits for the answer of a cancelled one).
    fn answer(&self, py: Python<'_>, (fut, ids): Token, answer: Answer) -> PyResult<()> {
        let fut = fut.bind(py);
        if fut.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        match (self.settle)(py, ids, answer) {
            Ok(v) => fut.call_method1("set_result", (v,))?,
            Err(e) => fut.call_method1("set_exception", (e.into_value(py),))?,
        };
        Ok(())
    }

    /// A dispatch of `coalescer`'s client, made on this loop.
    pub fn send(
        &self,
        py: Python<'_>,
        me: &Bound<'_, LoopState>,
        coalescer: &Arc<ClientCoalescer>,
        store: &Arc<RedisStore>,
        dispatch: Dispatch<QueueKeys>,
        token: Token,
    ) -> PyResult<()> {
        let key = client_key(coalescer);
        let mut slots = lock(&self.slots);
        let i = match slots.iter().position(|s| s.key() == key) {
            Some(i) => i,
            None => {
                slots.push(Slot {
                    coalescer: coalescer.clone(),
                    store: store.clone(),
                    link: Link::Retry(Instant::now()),
                    watching_writes: false,
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[i];
        // Moves the link on: an opening finished, a retry is due.
        match &slot.link {
            Link::Opening(o) => {
                let outcome = lock(o).take();
                match outcome {
                    Some(Ok(Some(stream))) => {
                        let conn = LoopConn::new(stream, slot.store.clone());
                        let ev = LoopEvent { state: me.clone().unbind(), kind: Event::Read(key) };
                        self.event_loop.call_method1(py, "add_reader", (conn.fd(), ev))?;
                        slot.link = Link::Open(Box::new(conn));
                    }
                    Some(Ok(None)) => slot.link = Link::Never,
                    Some(Err(_)) => slot.link = Link::Retry(Instant::now() + Duration::from_secs(1)),
                    None => {}
                }
            }
            Link::Retry(at) if Instant::now() >= *at => {
                let opening: Opening = Arc::default();
                let (o, st) = (opening.clone(), slot.store.clone());
                std::thread::Builder::new()
                    .name("fastjobs-connect".into())
                    .spawn(move || *lock(&o) = Some(st.open_stream()))
                    .map_err(|e| to_py(Error::Store(format!("cannot start a thread: {e}"))))?;
                slot.link = Link::Opening(opening);
            }
            _ => {}
        }
        let Link::Open(conn) = &mut slot.link else {
            drop(slots);
            coalescer.send_async(dispatch, &self.inbox, token);
            return Ok(());
        };
        let done = conn.send(dispatch, token);
        let fd = conn.fd();
        self.watch_writes(py, me, slot, key)?;
        drop(slots);
        self.arm_timer(py, me)?;
        self.finish(py, key, fd, done)
    }

    /// Has the loop watch the connection for writing while bytes are left to write.
    fn watch_writes(&self, py: Python<'_>, me: &Bound<'_, LoopState>, slot: &mut Slot, key: usize) -> PyResult<()> {
        let Link::Open(conn) = &slot.link else { return Ok(()) };
        let want = conn.wants_write();
        if want != slot.watching_writes {
            if want {
                self.event_loop.call_method1(
                    py,
                    "add_writer",
                    (conn.fd(), LoopEvent { state: me.clone().unbind(), kind: Event::Write(key) }),
                )?;
            } else {
                self.event_loop.call_method1(py, "remove_writer", (conn.fd(),))?;
            }
            slot.watching_writes = want;
        }
        Ok(())
    }

    fn on_conn(
        &self,
        py: Python<'_>,
        me: &Bound<'_, LoopState>,
        key: usize,
        f: impl FnOnce(&mut LoopConn<Token>) -> Done<Token>,
    ) -> PyResult<()> {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.iter_mut().find(|s| s.key() == key) else { return Ok(()) };
        let Link::Open(conn) = &mut slot.link else { return Ok(()) };
        let done = f(conn);
        let fd = conn.fd();
        self.watch_writes(py, me, slot, key)?;
        drop(slots);
        self.finish(py, key, fd, done)
    }

    /// Answers what `done` answered, sends its hand-backs through the dispatch thread, and
    /// drops a broken connection (the next dispatch opens another).
    fn finish(&self, py: Python<'_>, key: usize, fd: i32, done: Done<Token>) -> PyResult<()> {
        if done.broken || !done.hand_back.is_empty() {
            let mut slots = lock(&self.slots);
            if let Some(slot) = slots.iter_mut().find(|s| s.key() == key) {
                if done.broken {
                    self.event_loop.call_method1(py, "remove_reader", (fd,))?;
                    if slot.watching_writes {
                        self.event_loop.call_method1(py, "remove_writer", (fd,))?;
                        slot.watching_writes = false;
                    }
                    slot.link = Link::Retry(Instant::now()); // the socket closes as the link goes
                }
                for (d, token) in done.hand_back {
                    slot.coalescer.send_async(d, &self.inbox, token);
                }
            }
        }
        for (token, answer) in done.answers {
            self.answer(py, token, answer)?;
        }
        Ok(())
    }

    fn arm_timer(&self, py: Python<'_>, me: &Bound<'_, LoopState>) -> PyResult<()> {
        if !self.timer_armed.swap(true, Ordering::Relaxed) {
            let ev = LoopEvent { state: me.clone().unbind(), kind: Event::Timer };
            self.event_loop.call_method1(py, "call_later", (TIMER.as_secs_f64(), ev))?;
        }
        Ok(())
    }

    /// Breaks the connections whose batch waits longer than their response timeout.
    fn on_timer(&self, py: Python<'_>, me: &Bound<'_, LoopState>) -> PyResult<()> {
        self.timer_armed.store(false, Ordering::Relaxed);
        let mut expired = Vec::new();
        let mut busy = false;
        for slot in lock(&self.slots).iter_mut() {
            let key = slot.key();
            if let Link::Open(conn) = &mut slot.link {
                if let Some(done) = conn.expire(slot.store.settings().response_timeout) {
                    expired.push((key, conn.fd(), done));
                } else {
                    busy |= conn.in_flight();
                }
            }
        }
        for (key, fd, done) in expired {
            self.finish(py, key, fd, done)?;
        }
        if busy {
            self.arm_timer(py, me)?;
        }
        Ok(())
    }
}

thread_local! {
    /// The loop this thread ran last, and its state (a thread runs one loop at a time; the
    /// loop is held so that no other loop can have its address while it is here).
    static CURRENT: RefCell<Option<(Py<PyAny>, Py<LoopState>)>> = const { RefCell::new(None) };
}

fn get_running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind()))?.bind(py).call0()
}

/// The running loop and its state, made (and its inbox watched by the loop) on first use.
/// A forked child gets a state of its own: the parent's sockets are not its to use.
pub fn running(py: Python<'_>, settle: Settle) -> PyResult<(Bound<'_, PyAny>, Bound<'_, LoopState>)> {
    let lp = get_running_loop(py)?;
    let pid = std::process::id();
    let known = CURRENT.with_borrow(|cur| cur.as_ref().filter(|(l, s)| l.is(&lp) && s.get().pid == pid).map(|(_, s)| s.clone_ref(py)));
    if let Some(state) = known {
        return Ok((lp, state.into_bound(py)));
    }
    let inbox = Arc::new(LoopInbox::new().map_err(|e| to_py(Error::Store(format!("cannot make a wake-up socket: {e}"))))?);
    let fd = inbox.fd();
    let state = Bound::new(
        py,
        LoopState {
            pid,
            inbox,
            slots: Mutex::new(Vec::new()),
            settle,
            timer_armed: AtomicBool::new(false),
            event_loop: lp.clone().unbind(),
        },
    )?;
    lp.call_method1("add_reader", (fd, LoopEvent { state: state.clone().unbind(), kind: Event::Inbox }))?;
    // The loop this thread ran before keeps its state: it may run again with dispatches in
    // flight. Its callbacks, and with them the state, go when it is closed.
    CURRENT.with_borrow_mut(|cur| *cur = Some((lp.clone().unbind(), state.clone().unbind())));
    Ok((lp, state))
}

/// The state of the running loop's own connection to each client's Redis, for tests and
/// diagnostics: "opening", "open", "never" (TLS, RESP3: the dispatch thread writes) or
/// "retry" (failed or broken: the next dispatch opens another).
#[pyfunction]
pub fn loop_links(py: Python<'_>) -> PyResult<Vec<&'static str>> {
    let lp = get_running_loop(py)?;
    let state = CURRENT.with_borrow(|cur| cur.as_ref().filter(|(l, _)| l.is(&lp)).map(|(_, s)| s.clone_ref(py)));
    let Some(state) = state else { return Ok(vec![]) };
    let slots = lock(&state.get().slots);
    Ok(slots
        .iter()
        .map(|s| match &s.link {
            Link::Opening(_) => "opening",
            Link::Open(_) => "open",
            Link::Never => "never",
            Link::Retry(_) => "retry",
        })
        .collect())
}

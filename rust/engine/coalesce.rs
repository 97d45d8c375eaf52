//! Group commit of single dispatches. A web app dispatches one job per request, with many
//! requests in flight; if each write paid its own round trip, script call and wake-up, the
//! process would top out at a few thousand dispatches a second while Redis idles. Here the
//! dispatches that arrive while a write is in flight, from any thread or event loop of the
//! process, wait for it to end and then go together: one round trip, one script call per
//! queue (`Store::enqueue_parts_blocking`). A dispatch that finds nothing in flight is
//! written at once: coalescing never adds a wait.
//!
//! Who writes: a thread that dispatches (the sync face) and finds nothing in flight writes its
//! own dispatch, and whatever joined meanwhile, on its own thread, so one dispatch at a time
//! costs what a plain client's command does. Everything else is written by the dispatch
//! thread, woken when needed, which writes batch after batch until none is left: the
//! asynchronous dispatches (an event loop must not block on Redis) and those that joined a
//! write in flight. Each dispatch gets its own answer: a thread waits on its `Waiter`; the
//! answers of an event loop go to its `Inbox`, which wakes the loop once per batch.

use crate::error::Result;
use crate::store::{NewJob, Part, Store, Watermark, Written};
use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What became of each job of a dispatch, or why none was written.
pub type Answer = Result<Vec<Written>>;

/// The jobs of one dispatch (prepared: ids given, records packed), written in one atomic step.
pub struct Dispatch<Q> {
    pub q: Arc<Q>,
    pub jobs: Vec<NewJob>,
    /// Never a guarded chunk: those are written on their own (bulk.rs).
    pub mark: Option<Watermark>,
}

impl<Q> Dispatch<Q> {
    /// As the store writes it.
    pub fn part(&self) -> Part<'_, Q> {
        Part { q: &self.q, jobs: &self.jobs, mark: self.mark.as_ref() }
    }
}

/// A lock that a panic elsewhere does not poison for good (the data stays consistent: each
/// holder only pushes or takes whole entries).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread waiting for its dispatch's answer.
pub struct Waiter {
    answer: Mutex<Option<Answer>>,
    given: Condvar,
}

impl Waiter {
    fn give(&self, a: Answer) {
        *lock(&self.answer) = Some(a);
        self.given.notify_one();
    }
}

/// A sync dispatch on its way: its answer, or where it will come.
pub enum Pending {
    Done(Option<Answer>),
    Waiting(Arc<Waiter>),
}

impl Pending {
    /// The answer, or None when `timeout` passed first (the caller checks for signals and
    /// waits again; a caller that gives up leaves the dispatch to be written all the same).
    pub fn wait(&mut self, timeout: Duration) -> Option<Answer> {
        match self {
            Pending::Done(a) => a.take(),
            Pending::Waiting(w) => {
                let g = lock(&w.answer);
                let (mut g, _) = w.given.wait_timeout_while(g, timeout, |a| a.is_none()).unwrap_or_else(|e| e.into_inner());
                g.take()
            }
        }
    }
}

/// The answers of one event loop's dispatches, and the socket pair that wakes the loop: the
/// loop watches `fd()` and calls `take` on its own thread when it turns readable. One byte
/// is written per batch of answers at most (none while an earlier byte is unread), so a
/// busy loop is woken once per batch, not once per dispatch, and the writer never needs the
/// loop's thread or lock (Python's GIL).
pub struct Inbox<T> {
    answers: Mutex<Vec<(T, Answer)>>,
    rung: AtomicBool,
    bell: UnixStream,
    ear: UnixStream,
}

impl<T> Inbox<T> {
    pub fn new() -> std::io::Result<Inbox<T>> {
        let (bell, ear) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        ear.set_nonblocking(true)?;
        Ok(Inbox { answers: Mutex::new(Vec::new()), rung: AtomicBool::new(false), bell, ear })
    }

    /// The descriptor the loop watches for reading.
    pub fn fd(&self) -> RawFd {
        self.ear.as_raw_fd()
    }

    fn put(&self, token: T, a: Answer) {
        lock(&self.answers).push((token, a));
    }

    fn ring(&self) {
        if !self.rung.swap(true, Ordering::SeqCst) {
            // Full socket buffer: a byte is unread already, which wakes the loop as well.
            let _ = (&self.bell).write(&[1]);
        }
    }

    /// The answers so far, on the loop's thread. The flag is lowered before they are taken:
    /// an answer put after that rings again (at worst a wake-up that finds nothing).
    pub fn take(&self) -> Vec<(T, Answer)> {
        let mut sink = [0u8; 64];
        while matches!((&self.ear).read(&mut sink), Ok(n) if n > 0) {}
        self.rung.store(false, Ordering::SeqCst);
        std::mem::take(&mut *lock(&self.answers))
    }
}

enum Reply<T> {
    Thread(Arc<Waiter>),
    Loop(Arc<Inbox<T>>, T),
}

struct Request<Q, T> {
    dispatch: Dispatch<Q>,
    reply: Reply<T>,
}

struct State<Q, T> {
    pending: Vec<Request<Q, T>>,
    /// A batch is being written (by a caller's thread or the dispatch thread); while it is,
    /// new dispatches only join `pending`.
    writing: bool,
    /// The dispatch thread is to write what is pending.
    thread_turn: bool,
    thread_started: bool,
    closed: bool,
}

struct Shared<S: Store, T> {
    store: Arc<S>,
    state: Mutex<State<S::Queue, T>>,
    turn: Condvar,
}

/// One per client (store): see the module's comment.
pub struct Coalescer<S: Store, T: Send + 'static> {
    shared: Arc<Shared<S, T>>,
}

impl<S: Store, T: Send + 'static> Coalescer<S, T> {
    pub fn new(store: Arc<S>) -> Coalescer<S, T> {
        let state = State { pending: Vec::new(), writing: false, thread_turn: false, thread_started: false, closed: false };
        Coalescer { shared: Arc::new(Shared { store, state: Mutex::new(state), turn: Condvar::new() }) }
    }

    /// A dispatch from a thread that may block: written now on this thread when nothing is
    /// in flight, else joins the next batch (`Pending::wait` for its answer).
    pub fn send(&self, dispatch: Dispatch<S::Queue>) -> Pending {
        let waiter = Arc::new(Waiter { answer: Mutex::new(None), given: Condvar::new() });
        let mut st = lock(&self.shared.state);
        st.pending.push(Request { dispatch, reply: Reply::Thread(waiter.clone()) });
        if st.writing {
            return Pending::Waiting(waiter);
        }
        st.writing = true;
        let batch = std::mem::take(&mut st.pending);
        drop(st);
        write_batch(&*self.shared.store, batch);
        // What joined meanwhile goes to the dispatch thread: this caller has its answer.
        let mut st = lock(&self.shared.state);
        if st.pending.is_empty() {
            st.writing = false;
        } else {
            self.wake_thread(&mut st);
        }
        drop(st);
        let answer = lock(&waiter.answer).take();
        Pending::Done(answer)
    }

    /// A dispatch from an event loop (must not block): written by the dispatch thread, its
    /// answer put in `inbox` with `token`.
    pub fn send_async(&self, dispatch: Dispatch<S::Queue>, inbox: &Arc<Inbox<T>>, token: T) {
        let mut st = lock(&self.shared.state);
        st.pending.push(Request { dispatch, reply: Reply::Loop(inbox.clone(), token) });
        if !st.writing {
            st.writing = true;
            self.wake_thread(&mut st);
        }
    }

    fn wake_thread(&self, st: &mut State<S::Queue, T>) {
        st.thread_turn = true;
        if !st.thread_started {
            st.thread_started = true;
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("fastjobs-dispatch".into())
                .spawn(move || dispatch_thread(shared))
                .expect("cannot start the fastjobs dispatch thread");
        }
        self.shared.turn.notify_one();
    }
}

impl<S: Store, T: Send + 'static> Drop for Coalescer<S, T> {
    /// The dispatch thread writes what it was given, then ends.
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.turn.notify_one();
    }
}

fn dispatch_thread<S: Store, T: Send + 'static>(shared: Arc<Shared<S, T>>) {
    loop {
        let mut st = lock(&shared.state);
        while !st.thread_turn && !st.closed {
            st = shared.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if !st.thread_turn {
            return; // closed, nothing left
        }
        st.thread_turn = false;
        loop {
            if st.pending.is_empty() {
                st.writing = false;
                break;
            }
            let batch = std::mem::take(&mut st.pending);
            drop(st);
            write_batch(&*shared.store, batch);
            st = lock(&shared.state);
        }
    }
}

/// Writes a batch in one round trip and gives each dispatch its answer; each event loop
/// with answers is woken once, after all of them are in its inbox.
fn write_batch<S: Store, T>(store: &S, batch: Vec<Request<S::Queue, T>>) {
    let answers = {
        let parts: Vec<Part<'_, S::Queue>> = batch.iter().map(|r| r.dispatch.part()).collect();
        match store.enqueue_parts_blocking(&parts) {
            Ok(a) => a,
            Err(e) => vec![Err(e); parts.len()],
        }
    };
    let mut woken: Vec<Arc<Inbox<T>>> = Vec::new();
    for (r, a) in batch.into_iter().zip(answers) {
        match r.reply {
            Reply::Thread(w) => w.give(a),
            Reply::Loop(inbox, token) => {
                inbox.put(token, a);
                if !woken.iter().any(|i| Arc::ptr_eq(i, &inbox)) {
                    woken.push(inbox);
                }
            }
        }
    }
    for inbox in woken {
        inbox.ring();
    }
}

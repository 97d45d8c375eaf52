//! The stores a Python object can stand on. Each holder of a store (a client, a worker engine,
//! a bulk writer) is generic over `Store` and wrapped in an enum with one variant per store,
//! so every store's code is compiled for it: a call pays one `match`, never a virtual call.
//! A new store is one variant in `store_enum!` and one arm in `on_store!` and `map_store!`.

use crate::engine::coalesce::{Coalescer, Dispatch};
use crate::error::{Error, Result};
use crate::store::memory::MemoryStore;
use crate::store::postgres::PgStore;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Settings, Store};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Declares `enum $name { Redis($holder<RedisStore>), ... }`: one variant per store.
macro_rules! store_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident of $holder:ident) => {
        $(#[$m])*
        $vis enum $name {
            Redis($holder<crate::store::redis::RedisStore>),
            Memory($holder<crate::store::memory::MemoryStore>),
            Sqlite($holder<crate::store::sqlite::SqliteStore>),
            Postgres($holder<crate::store::postgres::PgStore>),
        }
    };
}

/// Runs `$body` with `$x` bound to the holder inside `$e` (an enum of `store_enum!`),
/// whatever its store: the body is compiled once per store.
macro_rules! on_store {
    ($e:expr, $name:ident, $x:ident => $body:expr) => {
        match $e {
            $name::Redis($x) => $body,
            $name::Memory($x) => $body,
            $name::Sqlite($x) => $body,
            $name::Postgres($x) => $body,
        }
    };
}

/// As `on_store!`, with the body's value wrapped in the same store's variant of enum `$to`.
macro_rules! map_store {
    ($e:expr, $name:ident => $to:ident, $x:ident => $body:expr) => {
        match $e {
            $name::Redis($x) => $to::Redis($body),
            $name::Memory($x) => $to::Memory($body),
            $name::Sqlite($x) => $to::Sqlite($body),
            $name::Postgres($x) => $to::Postgres($body),
        }
    };
}

pub(crate) use {map_store, on_store, store_enum};

/// A client's store, with what it keeps per store: its queue handles (made once per name)
/// and the group commit of its small dispatches.
pub struct Stored<S: PyStore> {
    pub store: Arc<S>,
    pub coalescer: Arc<Coalescer<S, super::inbox::Token>>,
    queues: Mutex<HashMap<String, Arc<S::Queue>>>,
}

impl<S: PyStore> Stored<S> {
    pub fn new(store: Arc<S>) -> Stored<S> {
        Stored { coalescer: Arc::new(Coalescer::new(store.clone())), store, queues: Mutex::default() }
    }

    /// The handle of queue `name`, made on first use.
    pub fn queue(&self, name: &str) -> Result<Arc<S::Queue>> {
        let mut m = self.queues.lock().unwrap();
        if let Some(q) = m.get(name) {
            return Ok(q.clone());
        }
        let q = self.store.queue(name)?;
        m.insert(name.to_string(), q.clone());
        Ok(q)
    }
}

store_enum!(
    /// The store of a `Client`.
    pub enum Backend of Stored
);

/// A store and one of its queues: what a bulk writer or a prepared batch writes to.
pub struct Target<S: Store> {
    pub store: Arc<S>,
    pub queue: Arc<S::Queue>,
}

impl<S: Store> Clone for Target<S> {
    fn clone(&self) -> Self {
        Target { store: self.store.clone(), queue: self.queue.clone() }
    }
}

store_enum!(
    /// The store and queue of a bulk writer or a prepared batch.
    pub enum AnyTarget of Target
);

store_enum!(
    /// A store shared by its client and what reads through it (the schedule book).
    pub enum AnyStore of Arc
);

impl Backend {
    pub fn shared(&self) -> AnyStore {
        map_store!(self, Backend => AnyStore, b => b.store.clone())
    }

    /// The target of queue `name`.
    pub fn target(&self, name: &str) -> Result<AnyTarget> {
        Ok(map_store!(self, Backend => AnyTarget, b => Target { store: b.store.clone(), queue: b.queue(name)? }))
    }
}

/// What the Python layer does per store beyond the contract: paths that only one store has.
pub trait PyStore: Store + Sized {
    /// An asynchronous small dispatch written on the running event loop's own connection
    /// (`py::inbox`); the dispatch comes back when this store has no such path (it then
    /// goes through the I/O runtime).
    fn on_loop(
        _py: Python<'_>,
        _stored: &Stored<Self>,
        dispatch: Dispatch<Self::Queue>,
        _ids: Vec<String>,
    ) -> PyResult<std::result::Result<Py<PyAny>, Dispatch<Self::Queue>>> {
        Ok(Err(dispatch))
    }

    /// Opens a connection of its own, as a worker does before it starts: None when that
    /// worked, the reason when the store cannot be reached now; Err when it never will.
    fn check_connection(settings: &Settings) -> Result<Option<Error>>;

    /// A reader of a queue's events stream.
    fn event_reader(stored: &Stored<Self>, settings: &Settings, q: Arc<Self::Queue>) -> PyResult<super::events::EventReader>;
}

impl PyStore for RedisStore {
    fn on_loop(
        py: Python<'_>,
        stored: &Stored<Self>,
        dispatch: Dispatch<Self::Queue>,
        ids: Vec<String>,
    ) -> PyResult<std::result::Result<Py<PyAny>, Dispatch<Self::Queue>>> {
        // Handed to the engine now: a cancelled await does not stop the write.
        let (lp, state) = super::inbox::running(py, super::client::settle)?;
        let fut = lp.call_method0("create_future")?;
        state.get().send(py, &state, &stored.coalescer, &stored.store, dispatch, (fut.clone().unbind(), ids))?;
        Ok(Ok(fut.unbind()))
    }

    fn check_connection(settings: &Settings) -> Result<Option<Error>> {
        let top = crate::store::redis::route::topology(settings)?;
        crate::store::redis::route::SyncLink::new(settings, top.as_ref())?.check()
    }

    fn event_reader(_: &Stored<Self>, settings: &Settings, q: Arc<Self::Queue>) -> PyResult<super::events::EventReader> {
        let reader = crate::store::redis::events::EventReader::new(settings, &q).map_err(super::errors::to_py)?;
        Ok(super::events::EventReader::redis(reader))
    }
}

impl PyStore for MemoryStore {
    fn check_connection(_: &Settings) -> Result<Option<Error>> {
        Ok(None)
    }

    fn event_reader(stored: &Stored<Self>, _: &Settings, queue: Arc<Self::Queue>) -> PyResult<super::events::EventReader> {
        Ok(super::events::EventReader::polled(super::events::MemoryEvents { store: stored.store.clone(), queue }))
    }
}

impl PyStore for SqliteStore {
    /// Opening the file (its schema made or checked) is the whole check.
    fn check_connection(settings: &Settings) -> Result<Option<Error>> {
        SqliteStore::open_with(settings).map(|_| None)
    }

    /// Polled (py/events.rs DB_POLL): a query per reader per tick.
    fn event_reader(stored: &Stored<Self>, _: &Settings, queue: Arc<Self::Queue>) -> PyResult<super::events::EventReader> {
        Ok(super::events::EventReader::polled(super::events::SqliteEvents { store: stored.store.clone(), queue }))
    }
}

impl PyStore for PgStore {
    /// A connection of its own and the schema's version checked: a server away may come back
    /// (the reason); a missing schema or refused credentials never will (the error).
    fn check_connection(settings: &Settings) -> Result<Option<Error>> {
        match crate::runtime::runtime().block_on(PgStore::check(&settings.url)) {
            Ok(()) => Ok(None),
            Err(e) if e.is_retryable() => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    /// Polled (py/events.rs DB_POLL): a query per reader per tick, no connection held.
    fn event_reader(stored: &Stored<Self>, _: &Settings, queue: Arc<Self::Queue>) -> PyResult<super::events::EventReader> {
        Ok(super::events::EventReader::polled(super::events::PgEvents { store: stored.store.clone(), queue }))
    }
}

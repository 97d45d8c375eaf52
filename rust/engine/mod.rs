//! The store-agnostic machinery, generic over `store::Store`: the worker engine (leases, ack
//! batching), the delay and lease scheduler, schedule drivers, the dispatch coalescer and HTTP
//! callbacks.

pub mod callback;
pub mod coalesce;
pub mod scheduler;
pub mod schedules;
pub mod worker;

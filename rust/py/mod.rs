//! The only code that touches pyo3: Python classes over the engine, the sync/async bridge
//! and the error mapping.

pub mod backend;
pub mod bridge;
pub mod bulk;
pub mod client;
pub mod errors;
pub mod events;
pub mod inbox;
pub mod payloads;
pub mod postgres;
pub mod schedules;
pub mod worker;

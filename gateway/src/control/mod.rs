//! The contact-center control plane: call URIs, the event log that API clients resume from, the
//! transfer executor, agents and queues (ACD), and the control-actions API.
//!
//! The protocol parts are sans-IO ([`center`], [`transfer`], [`core`]): fed inputs with the
//! current time, they return what to do. [`api`] is the async shell: the HTTP/WebSocket API, the
//! executor task that carries out call-side commands through the [`api::CallControl`] trait, and
//! the timer task. [`fake`] is an in-process call side for tests and benchmarks.

pub mod access;
pub mod api;
pub mod center;
pub mod config;
pub mod core;
pub mod events;
pub mod fake;
pub mod openapi;
pub mod transfer;
pub mod uri;

pub use events::{Event, EventLog, Sequenced};
pub use transfer::{
    Command, Input, LegKind, Party, Tone, Transfer, TransferError, TransferKind, TransferState,
    TransferTable,
};
pub use uri::CallUri;

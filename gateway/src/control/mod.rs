//! The contact-center control plane: call URIs, the event log that API clients resume from, and
//! the transfer executor. Everything here is sans-IO: the HTTP/WebSocket API and the call model
//! feed it inputs with the current time and carry out the commands it returns.

pub mod events;
pub mod transfer;
pub mod uri;

pub use events::{Event, EventLog, Sequenced};
pub use transfer::{
    Command, Input, LegKind, Party, Tone, Transfer, TransferError, TransferKind, TransferState,
    TransferTable,
};
pub use uri::CallUri;

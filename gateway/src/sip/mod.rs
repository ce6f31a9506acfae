//! SIP for the gateway: a strict, sans-IO message parser and serializer, RFC 3261 transactions
//! on virtual time, SDP offer/answer, and a minimal UAS with a thin tokio UDP adapter.
//!
//! Why our own core and not `rsipstack`: see `docs/decisions/0001-sip-stack.md`.

pub mod auth;
pub mod dialog;
pub mod dtmf_info;
pub mod keepalive;
pub mod message;
pub mod offer_answer;
pub mod parse;
pub mod prack;
pub mod registrar;
pub mod registration;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod transport;
pub mod uas;
pub mod update;
pub mod validate;

//! Calls: a call is a URI plus legs plus state.
//!
//! - [`leg`]: the technology-neutral leg interface (events up, commands down) that SIP, WebRTC,
//!   TDM and the built-in services implement;
//! - [`sip_leg`]: SIP legs, a per-leg sans-IO user agent;
//! - [`engine`]: the call engine (routing, failover, CDRs, control events, DTMF, codec choice,
//!   the control plane's command interface);
//! - [`switch`]: the engine joined to its providers and a media backend, still sans-IO;
//! - [`server`]: the tokio shell;
//! - [`routing`], [`cdr`], [`q850`]: what they say.

pub mod cdr;
pub mod control_side;
pub mod engine;
pub mod leg;
pub mod plane_media;
pub mod q850;
pub mod routing;
pub mod server;
pub mod sip_leg;
pub mod switch;

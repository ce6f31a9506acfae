//! spanbridge gateway: a B2BUA media gateway between WebRTC, SIP and TDM (DAHDI) legs, with a
//! control-actions API for contact-center transfers keyed by call URI.
//!
//! The binary `gateway` wires these modules to sockets and device files; everything protocol- or
//! call-related is a sans-IO state machine fed with input and the current time.
#![warn(missing_docs)]

pub mod calls;
pub mod config;
pub mod control;
pub mod media;
pub mod rtc;
pub mod sip;
pub mod tdm;
pub mod telemetry;
pub mod web;

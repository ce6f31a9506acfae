//! A simulated DAHDI: the span/channel model that both `dahdi-sim` (serving it as a FUSE device
//! tree, for the real syscall path) and [`SimSpans`] (an in-process [`Backend`](crate::Backend),
//! for fast unit tests on virtual time) are built on. One model, two front-ends, so a unit test
//! over `SimSpans` and an hw-test over `dahdi-sim` see the same DAHDI semantics.
//!
//! The model: E1 (31 timeslots, D-channel at 16) and T1 (24, D at 24, or all CAS) spans, a 1 ms
//! master clock of 8-sample chunks, spans cross-connected in pairs like DAHDI's dynamic "local"
//! spans or a loopback cable, hook signalling across a pair, alarms (LOS, RED, YELLOW, BLUE) in
//! SPANSTAT and as channel events, slips, HDLC with a real FCS-16, pseudo channels and timers.
//! The internals (`model`, `wire`, `config`, `fcs`) are public for `dahdi-sim` but not a stable
//! API.

mod backend;
#[allow(missing_docs)]
pub mod config;
#[allow(missing_docs)]
pub mod fcs;
#[allow(missing_docs)]
pub mod model;
#[allow(missing_docs)]
pub mod wire;

pub use backend::{ClockMode, SimHandle, SimSpans};

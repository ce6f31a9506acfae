//! spanbridge's userspace driver for DAHDI-compatible TDM cards.
//!
//! `abi` holds DAHDI's ioctl request numbers, `#[repr(C)]` structures and constants exactly as
//! DAHDI's `user.h` defines them; it is the only module with `unsafe`. Everything above it is a
//! safe API over a [`Backend`]: device files ([`DeviceRoot`]: real `/dev/dahdi` or the
//! `dahdi-sim` FUSE simulator) or an in-process simulation for fast tests.
//!
//! - [`Ctl`]: span status, span/channel configuration, start-up, version, maintenance.
//! - [`Channel`]: one channel's block I/O, HDLC frames, hook, events, buffering, law, gains.
//! - [`Pseudo`], [`Timer`]: pseudo channels and DAHDI timers.
//! - [`AsyncChannel`]: a non-blocking channel on tokio for control paths.
//! - [`config`]: DAHDI's `system.conf`, parsed and applied as `dahdi_cfg` does.
//! - [`span`]: the per-span media thread, with per-channel signalling rings.
//! - [`cas`]: E&M and loop-start signalling as sans-IO state machines; [`pri`]: ISDN PRI.
//! - [`leg`]: the leg-level events both report.

#![warn(missing_docs)]

pub mod abi;
mod backend;
pub mod cas;
mod channel;
pub mod config;
mod ctl;
mod error;
pub mod hdlc;
pub mod leg;
pub mod pri;
pub mod sim;
pub mod span;
mod types;

pub use backend::{Backend, DEFAULT_DEVICE_ROOT, DeviceHandle, DeviceRoot, Node, Op};
pub use channel::{
    AsyncChannel, BufferConfig, Channel, Conference, DEFAULT_BLOCK_SIZE, FCS_LEN, GainTables,
    MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Pseudo, Timer,
};
pub use ctl::{
    ChannelConfig, ChannelParams, ChannelTiming, Ctl, SpanLineConfig, SpanStatus, Version,
};
pub use error::{Result, TdmError};
pub use types::{
    Alarms, BufferPolicy, DialOp, Event, Flush, Hook, IoMux, Law, MaintCommand, SigType,
};

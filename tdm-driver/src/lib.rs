//! spanbridge's userspace driver for DAHDI-compatible TDM cards.
//!
//! `abi` holds DAHDI's ioctl request numbers, `#[repr(C)]` structures and constants exactly as
//! DAHDI's `user.h` defines them; it is the only module with `unsafe`. Everything above it is a
//! safe API over file descriptors (real `/dev/dahdi` or the `dahdi-sim` FUSE simulator) and an
//! in-process simulated backend for fast tests.
#![warn(missing_docs)]

pub mod abi;

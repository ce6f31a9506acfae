//! Shared helpers for spanbridge's hardware and real-peer tests.
//!
//! The tests in `tests/` go through the real DAHDI syscall path: against `/dev/dahdi` when a
//! DAHDI kernel module is loaded, otherwise against `dahdi-sim` mounted in a private mount
//! namespace with its own tmpfs `/dev`, so the host's `/dev` is never touched.

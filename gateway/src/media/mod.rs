//! The media engine: RTP/RTCP, the adaptive jitter buffer, RFC 4733 DTMF and in-band
//! interworking, and the lock-free bridge that moves 20 ms linear frames between legs.
//!
//! Everything here is sans-IO: packets and the current [`std::time::Instant`] go in, frames,
//! packets and events come out. The steady-state per-packet path does not allocate.

pub mod bridge;
pub mod codec;
pub mod dtmf;
pub mod inband;
pub mod jitter;
pub mod leg;
pub mod plane;
pub mod rtcp;
pub mod rtp;

//! ISDN PRI D-channel signalling as sans-IO state machines: Q.921 (LAPD) links and Q.931
//! calls. Time is passed in; callers move frames between these machines and a D-channel
//! (an HDLCFCS channel's `read_frame`/`write_frame`, or [`crate::hdlc`] on a clear channel).

pub mod call;
pub mod dchannel;
pub mod q921;
pub mod q931;
pub mod span;
pub mod stack;
pub mod trace;

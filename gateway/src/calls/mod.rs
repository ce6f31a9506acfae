//! Calls: a call is a URI plus legs plus state. For now one path exists — SIP leg A (we are its
//! UAS) routed by Request-URI user to SIP leg B (we are its UAC) — with its media anchored on
//! gateway ports and relayed ([`rtp_relay`]) until the media engine takes over.

pub mod b2bua;
pub mod cdr;
pub mod engine;
pub mod leg;
pub mod q850;
pub mod routing;
pub mod rtp_relay;
pub mod server;
pub mod sip_leg;
pub mod switch;

//! Strict SIP message parser and stream framer (RFC 3261 §7, §18.3, §25).

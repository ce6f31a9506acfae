//! SIP message model: request/response start lines, raw headers with typed accessors, and body.

//! The error type shared by every fallible API of this crate.

use thiserror::Error;

/// What went wrong in a codec, converter or file parser call.
///
/// Every variant says what the caller can do about it; none is ever turned into a panic.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The output buffer cannot hold the result; pass one at least `needed` long.
    #[error("output buffer too small: need {needed} elements, got {got}")]
    OutputTooSmall {
        /// Elements required.
        needed: usize,
        /// Elements provided.
        got: usize,
    },
    /// A byte stream is not a valid file of the expected format (truncated, bad header, ...).
    #[error("malformed {format} data: {reason}")]
    Malformed {
        /// The format being parsed, e.g. "WAV".
        format: &'static str,
        /// What exactly is wrong, for the operator.
        reason: String,
    },
    /// The input is well-formed but uses a variant this crate does not handle.
    #[error("unsupported {what}: {detail}")]
    Unsupported {
        /// What kind of thing is unsupported (e.g. "sample rate").
        what: &'static str,
        /// The offending value and what is supported instead.
        detail: String,
    },
    /// A parameter is out of range (e.g. an unknown DTMF digit or a country code).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

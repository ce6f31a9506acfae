//! Tracing initialisation shared by every spanbridge binary (`gateway`, `gwctl`, `dahdi-sim`).
//!
//! One call at start-up installs a subscriber with an environment filter (`SPANBRIDGE_LOG`, then
//! `RUST_LOG`, default `info`) writing either human-readable lines or JSON lines to stderr.
//!
//! # A call's log lines carry its URI
//! Every line the gateway logs about a call runs inside a `call` span whose field `uri` is the
//! call's URI (`urn:uuid:...`, the key of its CDR and of `/api`): in JSON, `span.uri` (and in
//! `spans[]`); control-plane lines that name a call have it as the event field `uri`. The
//! engine opens the span when the call is created and tells each leg's provider the URI once
//! ([`LegCommand::CallUri`](crate::calls::leg::LegCommand::CallUri), before any other command
//! for the leg); SIP, TDM and WebRTC providers and the media backend log their lines for the
//! leg in that span. Lines written before a call exists cannot carry it: an INVITE refused by
//! the ACL or challenged for credentials, a request that fails to parse, a TDM provider's
//! "TDM call in" line for a call it is about to offer to the engine (the engine's
//! `incoming call` line that follows names the same `leg` with the `uri`). `gateway=debug`
//! adds per-leg lines (SIP commands, in-dialog requests and responses, RTP opened, configured
//! and released with its packet counts), all in the call's span.

use std::str::FromStr;

use thiserror::Error;
use tracing_subscriber::EnvFilter;

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, one event per line.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "human" | "text" | "pretty" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::UnknownFormat(other.to_owned())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The requested format is not `human` or `json`.
    #[error("unknown log format {0:?}: use `human` or `json`")]
    UnknownFormat(String),
    /// The filter directive in `SPANBRIDGE_LOG`/`RUST_LOG` does not parse.
    #[error("invalid log filter {directive:?}: {reason} (example: `info,gateway::sip=debug`)")]
    BadFilter {
        /// The directive as given.
        directive: String,
        /// The parser's explanation.
        reason: String,
    },
    /// A global subscriber was already installed (init called twice).
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// Installs the global tracing subscriber. `default_directive` applies when neither
/// `SPANBRIDGE_LOG` nor `RUST_LOG` is set.
pub fn init(format: LogFormat, default_directive: &str) -> Result<(), TelemetryError> {
    let directive = std::env::var("SPANBRIDGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_directive.to_owned());
    let filter = EnvFilter::try_new(&directive).map_err(|e| TelemetryError::BadFilter {
        directive: directive.clone(),
        reason: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_is_a_clear_error() {
        assert_eq!("JSON".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>().ok(), Some(LogFormat::Human));
        let err = "xml".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("human"), "{err}");
    }
}

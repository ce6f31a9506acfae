//! Tracing initialisation shared by every spanbridge binary (`gateway`, `gwctl`, `dahdi-sim`).
//!
//! One call at start-up installs a subscriber with an environment filter (`SPANBRIDGE_LOG`, then
//! `RUST_LOG`, default `info`) writing either human-readable lines or JSON lines to stderr.

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

//! Gateway configuration: one TOML file, with an embedded default that makes `gateway` useful
//! with no file at all (loopback listeners, a simulated E1 span pair, demo agents).

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The embedded default configuration, printed by `gateway --print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a value has the wrong type; the message names line and key.
    #[error("invalid configuration in {origin}: {message}")]
    Parse {
        /// The file path, or "embedded default".
        origin: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },
}

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listeners (health, metrics, API, pages).
    pub http: HttpConfig,
    /// The contact-center control plane: agents, queues, routes, tokens, the access listener.
    #[serde(default)]
    pub control: crate::control::config::ControlConfig,
}

/// HTTP listener configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the core HTTP listener (private side): health, metrics, API.
    pub listen: SocketAddr,
}

impl Config {
    /// Parses a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Loads a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::from_toml(DEFAULT_CONFIG, "embedded default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_listens_on_loopback() {
        let cfg = Config::embedded_default().unwrap();
        assert!(cfg.http.listen.ip().is_loopback());
    }

    #[test]
    fn embedded_default_has_demo_agents_a_queue_and_a_loopback_access_listener() {
        let cfg = Config::embedded_default().unwrap();
        let c = &cfg.control;
        c.validate().unwrap();
        assert_eq!(c.agents.len(), 2);
        assert_eq!(c.queues.len(), 1);
        assert!(c.access.listen.unwrap().ip().is_loopback());
        // A file without [control] gets no agents and no tokens.
        let bare = Config::from_toml("[http]\nlisten='127.0.0.1:1'\n", "t").unwrap();
        assert!(bare.control.agents.is_empty() && bare.control.access.admin_tokens.is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = Config::from_toml("[http]\nlisten = 12\n", "test.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml") && msg.contains("line 2"), "{msg}");
        let err = Config::from_toml("[http]\nlisten='127.0.0.1:1'\nbogus=1\n", "t").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}

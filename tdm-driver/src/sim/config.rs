//! The simulator's configuration: which spans exist, their D-channels and which spans are
//! cross-connected like a loopback cable. Read from a TOML file or built in (two E1 spans).

use serde::Deserialize;
use std::path::Path;

/// The most spans DAHDI numbers (DAHDI_MAX_SPANS is 128, span numbers 1..=127).
const MAX_SPANS: usize = 127;
/// The most channels DAHDI numbers (DAHDI_MAX_CHANNELS).
const MAX_CHANNELS: usize = 1024;

/// A configuration error, with what the user can change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("span {span}: {reason}")]
    Span { span: usize, reason: String },
    #[error("crossconnect {pair:?}: {reason}")]
    Crossconnect { pair: [usize; 2], reason: String },
    #[error("{0}")]
    Other(String),
}

/// Line type of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LineType {
    E1,
    T1,
}

impl LineType {
    pub fn name(self) -> &'static str {
        match self {
            LineType::E1 => "E1",
            LineType::T1 => "T1",
        }
    }
}

/// One span as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanFile {
    #[serde(rename = "type")]
    line: LineType,
    channels: Option<usize>,
    dchannels: Option<Vec<usize>>,
    name: Option<String>,
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    blocksize_on_open: Option<usize>,
    preconfigured: Option<bool>,
    crossconnect: Option<Vec<[usize; 2]>>,
    #[serde(default)]
    span: Vec<SpanFile>,
}

/// One span, validated.
#[derive(Debug, Clone)]
pub struct SpanConfig {
    pub line: LineType,
    pub channels: usize,
    /// Channel positions (1-based) of the D-channels.
    pub dchannels: Vec<usize>,
    pub name: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub spans: Vec<SpanConfig>,
    /// Pairs of span numbers (1-based) wired to each other.
    pub crossconnect: Vec<[usize; 2]>,
    /// Block size a channel gets when opened (DAHDI's default is 1024).
    pub blocksize_on_open: usize,
    /// Configure every channel at start (B = clear, D = HDLCFCS) as if `dahdi_cfg` had run.
    pub preconfigured: bool,
}

impl Default for SimConfig {
    /// Two E1 spans (channels 1–31 and 32–62, D-channel at position 16) wired to each other.
    fn default() -> Self {
        let e1 = |n: usize| SpanConfig {
            line: LineType::E1,
            channels: 31,
            dchannels: vec![16],
            name: format!("SIM/{n}"),
        };
        SimConfig {
            spans: vec![e1(1), e1(2)],
            crossconnect: vec![[1, 2]],
            blocksize_on_open: 1024,
            preconfigured: false,
        }
    }
}

impl SimConfig {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: shown,
                source,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: String::from("<text>"),
            source: Box::new(source),
        })?;
        if file.span.is_empty() {
            return Err(ConfigError::Other(
                "no [[span]] defined; add at least one, e.g. [[span]] type = \"E1\"".into(),
            ));
        }
        if file.span.len() > MAX_SPANS {
            return Err(ConfigError::Other(format!(
                "{} spans defined; DAHDI numbers at most {MAX_SPANS}",
                file.span.len()
            )));
        }
        let mut spans = Vec::with_capacity(file.span.len());
        let mut total = 0usize;
        for (i, s) in file.span.iter().enumerate() {
            let number = i + 1;
            let (def_chans, def_d) = match s.line {
                LineType::E1 => (31, vec![16]),
                LineType::T1 => (24, vec![24]),
            };
            let channels = s.channels.unwrap_or(def_chans);
            if channels == 0 || channels > 32 {
                return Err(ConfigError::Span {
                    span: number,
                    reason: format!("channels = {channels}; use 1..=32"),
                });
            }
            let dchannels = s.dchannels.clone().unwrap_or(def_d);
            for &d in &dchannels {
                if d == 0 || d > channels {
                    return Err(ConfigError::Span {
                        span: number,
                        reason: format!("D-channel position {d} is outside 1..={channels}"),
                    });
                }
            }
            total += channels;
            spans.push(SpanConfig {
                line: s.line,
                channels,
                dchannels,
                name: s.name.clone().unwrap_or_else(|| format!("SIM/{number}")),
            });
        }
        if total > MAX_CHANNELS {
            return Err(ConfigError::Other(format!(
                "{total} channels in all; DAHDI numbers at most {MAX_CHANNELS}"
            )));
        }
        let crossconnect = file.crossconnect.unwrap_or_default();
        let mut used = vec![false; spans.len() + 1];
        for pair in &crossconnect {
            let [a, b] = *pair;
            let bad = |reason: String| ConfigError::Crossconnect {
                pair: *pair,
                reason,
            };
            if a == b {
                return Err(bad(
                    "a span cannot be wired to itself; use MAINT local loopback".into(),
                ));
            }
            for s in [a, b] {
                if s == 0 || s > spans.len() {
                    return Err(bad(format!("span {s} is not defined")));
                }
                if used.get(s).copied().unwrap_or(true) {
                    return Err(bad(format!("span {s} is already wired")));
                }
                if let Some(u) = used.get_mut(s) {
                    *u = true;
                }
            }
            let ca = spans.get(a - 1).map(|s| s.channels);
            let cb = spans.get(b - 1).map(|s| s.channels);
            if ca != cb {
                return Err(bad(format!(
                    "spans have different channel counts ({ca:?} and {cb:?})"
                )));
            }
        }
        let blocksize_on_open = file.blocksize_on_open.unwrap_or(1024);
        if !(16..=8192).contains(&blocksize_on_open) {
            return Err(ConfigError::Other(format!(
                "blocksize_on_open = {blocksize_on_open}; use 16..=8192"
            )));
        }
        Ok(SimConfig {
            spans,
            crossconnect,
            blocksize_on_open,
            preconfigured: file.preconfigured.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_two_wired_e1_spans() {
        let c = SimConfig::default();
        assert_eq!(c.spans.len(), 2);
        assert_eq!(c.spans[0].channels, 31);
        assert_eq!(c.spans[1].dchannels, vec![16]);
        assert_eq!(c.crossconnect, vec![[1, 2]]);
    }

    #[test]
    fn parses_t1_and_e1_with_defaults() {
        let c = SimConfig::parse(
            "crossconnect = [[1, 3]]\n[[span]]\ntype = \"T1\"\n[[span]]\ntype = \"E1\"\n[[span]]\ntype = \"T1\"\n",
        )
        .unwrap();
        assert_eq!(c.spans[0].channels, 24);
        assert_eq!(c.spans[0].dchannels, vec![24]);
        assert_eq!(c.spans[1].channels, 31);
    }

    #[test]
    fn the_example_in_the_binary_docs_parses() {
        let c = SimConfig::parse(
            r#"
blocksize_on_open = 1024
preconfigured = false
crossconnect = [[1, 2]]

[[span]]
type = "T1"
channels = 24
dchannels = [24]
name = "SIM/1"

[[span]]
type = "T1"
"#,
        )
        .unwrap();
        assert_eq!(c.spans[0].name, "SIM/1");
        assert_eq!(c.crossconnect, vec![[1, 2]]);
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (text, needle) in [
            ("", "no [[span]]"),
            ("[[span]]\ntype = \"E1\"\ndchannels = [40]\n", "outside"),
            (
                "crossconnect = [[1, 2]]\n[[span]]\ntype = \"E1\"\n[[span]]\ntype = \"T1\"\n",
                "different",
            ),
            (
                "crossconnect = [[1, 1]]\n[[span]]\ntype = \"E1\"\n",
                "itself",
            ),
            (
                "crossconnect = [[1, 9]]\n[[span]]\ntype = \"E1\"\n",
                "not defined",
            ),
            ("[[span]]\ntype = \"X9\"\n", "not valid"),
        ] {
            let e = SimConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}

//! The control plane's configuration: the `[control]` table of the gateway's TOML file.
//!
//! Agents, queues, the routes that external transfer targets must match (the toll-fraud guard),
//! click-to-call destinations, tokens and the access listener. A file without `[control]` gets an
//! empty contact center with no tokens (nothing is published by accident); the embedded default
//! configuration carries two demo agents and one queue on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::transfer::Party;

/// The `[control]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The access listener that publishes the API and the pages to agent desktops.
    pub access: AccessConfig,
    /// Timers of the contact center and of transfers.
    pub timers: TimersConfig,
    /// Agents.
    pub agents: Vec<AgentConfig>,
    /// Queues.
    pub queues: Vec<QueueConfig>,
    /// External targets (SIP URIs, TDM numbers) that transfers may reach. Agents and queues
    /// need no route; anything else without a matching route is refused (403).
    pub routes: Vec<TransferRoute>,
    /// Destinations a web caller may choose on the click-to-call page (no token needed).
    pub click_to_call: Vec<ClickToCallDestination>,
}

/// The access listener and its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Where the access listener binds; absent: no access listener.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS. Required unless `listen` is a loopback address.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// Tokens that manage agents and queues and see everything.
    pub admin_tokens: Vec<String>,
    /// Tokens that see every call and agent (the supervisor view) but act on none.
    pub supervisor_tokens: Vec<String>,
    /// Whether the core (private) HTTP listener also serves `/api/v1` and the pages.
    pub api_on_core: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            listen: None,
            tls_cert: None,
            tls_key: None,
            admin_tokens: Vec::new(),
            supervisor_tokens: Vec::new(),
            api_on_core: true,
        }
    }
}

/// Timers, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    /// A transfer target must ring within this.
    pub transfer_setup_ms: u64,
    /// A ringing transfer target that does not answer within this fails the transfer.
    pub transfer_ring_ms: u64,
    /// The longest attended consultation.
    pub consult_ms: u64,
    /// Wrap-up after a call when the queue sets none.
    pub wrap_up_ms: u64,
    /// WebSocket heartbeat interval.
    pub heartbeat_ms: u64,
    /// Events kept for clients that resume.
    pub event_log_capacity: usize,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            transfer_setup_ms: 10_000,
            transfer_ring_ms: 30_000,
            consult_ms: 600_000,
            wrap_up_ms: 10_000,
            heartbeat_ms: 15_000,
            event_log_capacity: 10_000,
        }
    }
}

/// One way an agent can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Endpoint {
    /// The agent page's WebRTC softphone.
    Browser,
    /// A SIP URI the gateway calls.
    Sip {
        /// The URI.
        uri: String,
    },
    /// A phone registered to the gateway, by its user part.
    Phone {
        /// The registered user.
        user: String,
    },
    /// A number on a TDM span (an FXS phone or a PBX extension behind E1/T1), called through
    /// a `[[span_group]]`.
    Tdm {
        /// The number.
        number: String,
        /// The span group the call is placed on; absent: the only configured span group (see
        /// [`tdm_span_group`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
}

/// The span group a TDM endpoint's calls go out on: `group` when given (it must be one of
/// `configured`), else the only configured group. An error says what to write when the group
/// is unknown, or when there are none or several and the endpoint names none.
pub fn tdm_span_group<'a>(
    number: &str,
    group: Option<&'a str>,
    configured: &'a [String],
) -> Result<&'a str, String> {
    match (group, configured) {
        (Some(g), _) if configured.iter().any(|c| c == g) => Ok(g),
        (Some(g), _) => Err(format!(
            "TDM number {number:?}: span group {g:?} is not configured (configured: {configured:?})"
        )),
        (None, [only]) => Ok(only.as_str()),
        (None, []) => Err(format!(
            "TDM number {number:?}: no [[span_group]] is configured to call it through"
        )),
        (None, several) => Err(format!(
            "TDM number {number:?}: {} span groups are configured ({several:?}); say which with \
             group = \"NAME\"",
            several.len()
        )),
    }
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique id (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Skills; an agent takes calls from queues whose skill it has.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Where the agent can take calls; the first is used unless the login names another.
    pub endpoints: Vec<Endpoint>,
    /// The agent's bearer token.
    pub token: String,
}

/// What a queued caller hears.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Comfort {
    /// The gateway's comfort tone.
    Tone,
    /// A music file (WAV, 8 kHz mono PCM preferred), looped.
    Music {
        /// The file.
        file: PathBuf,
    },
}

/// A queue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Unique name.
    pub name: String,
    /// The skill an agent needs; absent: any agent.
    #[serde(default)]
    pub skill: Option<String>,
    /// How long an offer rings before the next agent gets it (ms).
    #[serde(default = "default_ring_ms")]
    pub ring_timeout_ms: u64,
    /// Longest wait before the overflow route takes the caller (ms).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Where a caller goes after `max_wait_ms`; absent: the caller keeps waiting.
    #[serde(default)]
    pub overflow: Option<Party>,
    /// Wrap-up after a call from this queue (ms); absent: `timers.wrap_up_ms`.
    #[serde(default)]
    pub wrap_up_ms: Option<u64>,
    /// What a waiting caller hears.
    #[serde(default = "default_comfort")]
    pub comfort: Comfort,
    /// An agent who lets an offer ring out is set away (so the next caller is not offered to
    /// an empty desk).
    #[serde(default = "default_true")]
    pub away_on_no_answer: bool,
}

fn default_ring_ms() -> u64 {
    15_000
}
fn default_max_wait_ms() -> u64 {
    300_000
}
fn default_comfort() -> Comfort {
    Comfort::Tone
}
fn default_true() -> bool {
    true
}

/// What kind of external target a route permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// SIP URIs.
    Sip,
    /// TDM numbers.
    Tdm,
}

/// An external transfer target pattern.
///
/// For TDM numbers the pattern is a dial-plan pattern: `X` any digit, `Z` 1-9, `N` 2-9, `.` one
/// or more of anything (last only), `[...]` unsupported; other characters match themselves.
/// For SIP the pattern is matched against the URI's host (`*.example.com` allowed) — the user
/// part is free.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRoute {
    /// SIP or TDM.
    pub kind: RouteKind,
    /// The pattern.
    pub pattern: String,
    /// Label shown in the agent page's transfer list.
    #[serde(default)]
    pub label: String,
}

/// A click-to-call destination.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClickToCallDestination {
    /// What the caller page sends (`destination=`).
    pub id: String,
    /// What the caller sees.
    pub label: String,
    /// Where the call goes (an agent or a queue).
    pub target: Party,
}

impl TransferRoute {
    /// True if `party` is an external target this route permits.
    pub fn permits(&self, party: &Party) -> bool {
        match (self.kind, party) {
            (RouteKind::Tdm, Party::TdmNumber(n)) => dialplan_match(&self.pattern, n),
            (RouteKind::Sip, Party::SipUri(u)) => {
                sip_host(u).is_some_and(|h| host_match(&self.pattern, &h))
            }
            _ => false,
        }
    }
}

/// Dial-plan pattern match (see [`TransferRoute`]).
pub fn dialplan_match(pattern: &str, number: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = number.chars().collect();
    let mut i = 0;
    for (k, pc) in p.iter().enumerate() {
        if *pc == '.' && k + 1 == p.len() {
            return i < n.len();
        }
        let Some(c) = n.get(i) else { return false };
        let ok = match pc {
            'X' | 'x' => c.is_ascii_digit(),
            'Z' | 'z' => ('1'..='9').contains(c),
            'N' | 'n' => ('2'..='9').contains(c),
            other => other == c,
        };
        if !ok {
            return false;
        }
        i += 1;
    }
    i == n.len()
}

/// The lower-case host of a `sip:`/`sips:` URI, if it is one.
pub fn sip_host(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let after_user = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = after_user.split([';', '?', '>']).next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        None
    } else {
        Some(host.to_ascii_lowercase())
    }
}

fn host_match(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

/// Why a control configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("control configuration: {0}")]
pub struct ControlConfigError(pub String);

/// True if `id` is a usable agent id or queue name.
pub fn valid_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl AgentConfig {
    /// Checks one agent on its own.
    pub fn validate(&self) -> Result<(), ControlConfigError> {
        if !valid_name(&self.id) {
            return Err(ControlConfigError(format!(
                "agent id {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                self.id
            )));
        }
        if self.endpoints.is_empty() {
            return Err(ControlConfigError(format!(
                "agent {:?} has no endpoint (add {{ kind = \"browser\" }})",
                self.id
            )));
        }
        if self.token.len() < 8 {
            return Err(ControlConfigError(format!(
                "agent {:?}: token must be at least 8 characters",
                self.id
            )));
        }
        Ok(())
    }
}

/// Longest queue music accepted, in seconds (it loops; a longer file only costs memory).
pub const MAX_MUSIC_SECONDS: usize = 600;
/// Largest music file read, in bytes (10 minutes of 48 kHz stereo 16-bit is 115 MB).
const MAX_MUSIC_BYTES: u64 = 128 << 20;

/// Reads a queue's music file: a WAV (16-bit or 8-bit PCM, G.711; mono or mixed down; at 8,
/// 16, 24, 32 or 48 kHz) decoded to 8 kHz linear samples for the media plane. Errors name the
/// file and what is wrong with it (missing, too big, not a WAV, unsupported encoding or rate,
/// shorter than one 20 ms frame, longer than [`MAX_MUSIC_SECONDS`]).
pub fn load_music(path: &Path) -> Result<Vec<i16>, ControlConfigError> {
    let bad = |why: String| ControlConfigError(format!("music file {}: {why}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_MUSIC_BYTES {
        return Err(bad(format!(
            "{len} bytes; at most {MAX_MUSIC_BYTES} are read"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let wav = codecs::wav::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let samples = codecs::resample::resample_all(wav.sample_rate, 8000, &wav.samples)
        .map_err(|e| bad(e.to_string()))?;
    if samples.len() < codecs::FRAME_SAMPLES {
        return Err(bad("shorter than one 20 ms frame".into()));
    }
    if samples.len() > MAX_MUSIC_SECONDS * 8000 {
        return Err(bad(format!(
            "{} s long; at most {MAX_MUSIC_SECONDS} s",
            samples.len() / 8000
        )));
    }
    Ok(samples)
}

impl QueueConfig {
    /// Checks one queue on its own (a music file is read and decoded).
    pub fn validate(&self) -> Result<(), ControlConfigError> {
        if !valid_name(&self.name) {
            return Err(ControlConfigError(format!(
                "queue name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        if self.ring_timeout_ms == 0 {
            return Err(ControlConfigError(format!(
                "queue {:?}: ring_timeout_ms must be > 0",
                self.name
            )));
        }
        if self.overflow == Some(Party::Queue(self.name.clone())) {
            return Err(ControlConfigError(format!(
                "queue {:?} overflows into itself",
                self.name
            )));
        }
        if let Comfort::Music { file } = &self.comfort {
            load_music(file)
                .map_err(|e| ControlConfigError(format!("queue {:?}: {}", self.name, e.0)))?;
        }
        Ok(())
    }
}

impl ControlConfig {
    /// Checks the whole table: unique ids, unique tokens, references that resolve.
    pub fn validate(&self) -> Result<(), ControlConfigError> {
        let mut tokens = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for a in &self.agents {
            a.validate()?;
            if !ids.insert(a.id.as_str()) {
                return Err(ControlConfigError(format!(
                    "agent id {:?} appears twice",
                    a.id
                )));
            }
            if !tokens.insert(a.token.as_str()) {
                return Err(ControlConfigError(format!(
                    "agent {:?} shares its token with another principal",
                    a.id
                )));
            }
        }
        for t in self
            .access
            .admin_tokens
            .iter()
            .chain(&self.access.supervisor_tokens)
        {
            if t.len() < 8 {
                return Err(ControlConfigError(
                    "admin and supervisor tokens must be at least 8 characters".into(),
                ));
            }
            if !tokens.insert(t.as_str()) {
                return Err(ControlConfigError(
                    "a token is used by two principals".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for q in &self.queues {
            q.validate()?;
            if !names.insert(q.name.as_str()) {
                return Err(ControlConfigError(format!(
                    "queue {:?} appears twice",
                    q.name
                )));
            }
        }
        let check_party = |p: &Party, what: &str| -> Result<(), ControlConfigError> {
            match p {
                Party::Agent(a) if !ids.contains(a.as_str()) => Err(ControlConfigError(format!(
                    "{what} names unknown agent {a:?}"
                ))),
                Party::Queue(q) if !names.contains(q.as_str()) => Err(ControlConfigError(format!(
                    "{what} names unknown queue {q:?}"
                ))),
                _ => Ok(()),
            }
        };
        for q in &self.queues {
            if let Some(o) = &q.overflow {
                check_party(o, &format!("queue {:?} overflow", q.name))?;
            }
        }
        for d in &self.click_to_call {
            match &d.target {
                Party::Agent(_) | Party::Queue(_) => {
                    check_party(&d.target, &format!("click_to_call {:?}", d.id))?
                }
                _ => {
                    return Err(ControlConfigError(format!(
                        "click_to_call {:?}: target must be an agent or a queue",
                        d.id
                    )));
                }
            }
        }
        if let Some(listen) = self.access.listen {
            let tls = self.access.tls_cert.is_some() && self.access.tls_key.is_some();
            if !tls && !listen.ip().is_loopback() {
                return Err(ControlConfigError(format!(
                    "access.listen {listen} is not loopback: set access.tls_cert and access.tls_key"
                )));
            }
            if self.access.tls_cert.is_some() != self.access.tls_key.is_some() {
                return Err(ControlConfigError(
                    "access.tls_cert and access.tls_key go together".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialplan_patterns() {
        assert!(dialplan_match("1800NXXXXXX", "18005551234"));
        assert!(!dialplan_match("1800NXXXXXX", "18001551234"));
        assert!(!dialplan_match("1800NXXXXXX", "180055512345"));
        assert!(!dialplan_match("1800NXXXXXX", "1800555123"));
        assert!(dialplan_match("2XXX", "2001"));
        assert!(!dialplan_match("2XXX", "9001"));
        assert!(dialplan_match("9.", "9011445"));
        assert!(!dialplan_match("9.", "9"));
        assert!(!dialplan_match("", "1"));
    }

    #[test]
    fn sip_routes_match_hosts_only() {
        let r = TransferRoute {
            kind: RouteKind::Sip,
            pattern: "*.pbx.example".into(),
            label: String::new(),
        };
        assert!(r.permits(&Party::SipUri("sip:100@a.pbx.example".into())));
        assert!(r.permits(&Party::SipUri(
            "sips:100@A.PBX.example:5061;transport=tls".into()
        )));
        assert!(!r.permits(&Party::SipUri("sip:100@pbx.example.evil".into())));
        assert!(!r.permits(&Party::SipUri("sip:100@evilpbx.example".into())));
        assert!(!r.permits(&Party::SipUri("tel:+15551234".into())));
        assert!(!r.permits(&Party::TdmNumber("100".into())));
        assert_eq!(sip_host("sip:[::1]:5060").as_deref(), Some("[::1]"));
        assert_eq!(sip_host("sip:"), None);
    }
}

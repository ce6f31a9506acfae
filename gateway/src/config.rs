//! Gateway configuration: one TOML file, with an embedded default that makes `gateway` useful
//! with no file at all (loopback listeners, a simulated E1 span pair, demo agents).
//!
//! Unknown keys are refused (`deny_unknown_fields`) and every error names the line: syntax and
//! type errors through the TOML parser, meaning errors (a route to a trunk that does not exist,
//! a bad number pattern or network) through the spans of the values that carry them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::Spanned;

use crate::calls::engine::{EngineConfig, TrunkSettings};
use crate::calls::leg::{AudioCodec, DtmfMode, LegKind, SipTransportKind};
use crate::calls::routing::{Destination, IpNet, NumberPattern, Route, RouteTable, SourceMatch};

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
    /// A value parses but makes no sense (unknown trunk, bad pattern, ...).
    #[error("invalid configuration in {origin}, line {line}: {message}")]
    Invalid {
        /// The file path, or "embedded default".
        origin: String,
        /// 1-based line of the offending value (0 if unknown).
        line: usize,
        /// What is wrong and what to write instead.
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
    /// SIP listeners and inbound policy (absent: no SIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipConfig>,
    /// The media plane.
    #[serde(default)]
    pub media: MediaSettings,
    /// Call detail records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdr: Option<CdrConfig>,
    /// SIP trunks (PBX, carriers).
    #[serde(default, rename = "trunk", skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<TrunkConfig>,
    /// Digest users (phones) that may call after authenticating.
    #[serde(default, rename = "user", skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// Named networks for route source matches.
    #[serde(default, rename = "acl", skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<AclConfig>,
    /// TDM span groups (channel hunting across spans).
    #[serde(default, rename = "span_group", skip_serializing_if = "Vec::is_empty")]
    pub span_groups: Vec<SpanGroupConfig>,
    /// Routes, first match wins.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// TDM spans and their signalling (absent: no TDM legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdm: Option<crate::tdm::TdmConfig>,
    /// WebRTC legs (absent: no WebRTC legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc: Option<crate::rtc::config::RtcSettings>,
}

/// HTTP listener configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the core HTTP listener (private side): health, metrics, API.
    pub listen: SocketAddr,
}

fn default_realm() -> String {
    "spanbridge".to_owned()
}

fn default_codecs() -> Vec<Spanned<String>> {
    vec![
        Spanned::new(0..0, "PCMU".to_owned()),
        Spanned::new(0..0, "PCMA".to_owned()),
    ]
}

fn default_no_answer() -> u64 {
    90
}

fn yes() -> bool {
    true
}

/// `[sip]`: listeners and inbound policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<SocketAddr>,
    /// TLS listen address (needs `tls_cert` and `tls_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// PEM private key of the TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// PEM certificates trusted for outbound TLS (trunks with `transport = "tls"`); without it
    /// outbound TLS is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// Digest realm for phones.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Networks whose calls need no authentication (`10.0.0.0/8`).
    #[serde(default)]
    pub trusted: Vec<Spanned<String>>,
    /// Codec preference for callers that come in on no trunk.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<Spanned<String>>,
    /// DTMF mode for such callers: `rfc4733`, `info` or `inband`.
    #[serde(default)]
    pub dtmf: DtmfMode,
    /// Seconds an outbound leg may ring before the call fails with "no answer".
    #[serde(default = "default_no_answer")]
    pub no_answer_timeout_s: u64,
    /// RFC 3261 timer T1 in ms (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t1_ms: Option<u64>,
}

fn default_media_ip() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_port_min() -> u16 {
    20000
}

fn default_port_max() -> u16 {
    29999
}

fn default_inactivity() -> u64 {
    30
}

/// `[media]`: the media plane.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    /// IP of the RTP sockets.
    #[serde(default = "default_media_ip")]
    pub ip: IpAddr,
    /// Lowest RTP port (even).
    #[serde(default = "default_port_min")]
    pub rtp_port_min: u16,
    /// Highest RTP port.
    #[serde(default = "default_port_max")]
    pub rtp_port_max: u16,
    /// Worker threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Seconds without RTP before a call is hung up.
    #[serde(default = "default_inactivity")]
    pub inactivity_timeout_s: u64,
    /// Tone plan of ringback and other progress tones: `us`, `etsi`, `uk`, `de`, `fr`.
    #[serde(default = "default_tones")]
    pub tones: String,
}

fn default_tones() -> String {
    "etsi".to_owned()
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            ip: default_media_ip(),
            rtp_port_min: default_port_min(),
            rtp_port_max: default_port_max(),
            workers: 0,
            inactivity_timeout_s: default_inactivity(),
            tones: default_tones(),
        }
    }
}

/// `[cdr]`: where call detail records go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CdrConfig {
    /// A file the JSON lines are appended to.
    pub path: String,
}

/// `[[trunk]]`: a SIP trunk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name (routes say `trunk:NAME`).
    pub name: String,
    /// Next-hop address (IP:port).
    pub address: SocketAddr,
    /// `udp`, `tcp` or `tls`.
    #[serde(default)]
    pub transport: SipTransportKind,
    /// Host part of request URIs sent to it (default: the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Our user name for its digest challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Our password for its digest challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Codec preference on this trunk.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<Spanned<String>>,
    /// How it takes DTMF: `rfc4733`, `info` or `inband`.
    #[serde(default)]
    pub dtmf: DtmfMode,
    /// Calls from its address are accepted without authentication.
    #[serde(default = "yes")]
    pub inbound: bool,
    /// OPTIONS keepalive interval in seconds (0: off).
    #[serde(default)]
    pub keepalive_s: u64,
    /// Register the gateway at this trunk (REGISTER as `username`, refreshed before expiry).
    #[serde(default)]
    pub register: bool,
    /// Lifetime asked for in REGISTER, in seconds.
    #[serde(default = "default_register_expires")]
    pub register_expires_s: u64,
    /// Pass the other party's hold/resume on to it by re-INVITE.
    #[serde(default = "yes")]
    pub propagate_hold: bool,
    /// Most simultaneous calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<usize>,
}

fn default_register_expires() -> u64 {
    3600
}

/// `[[user]]`: a phone's digest credentials. The same users authenticate calls from phones,
/// REGISTERs of phones to the `[sip]` listeners (an agent endpoint `{ kind = "phone", user =
/// NAME }` is reached where its phone registered) and browser softphones over SIP WebSocket
/// (`[rtc] sip_ws`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name: the user part of the phone's address-of-record and its digest user name
    /// (letters, digits and `-_.!~*+`).
    pub name: String,
    /// Password.
    pub password: String,
}

/// `[[acl]]`: a named set of networks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Name (routes say `source = "acl:NAME"`).
    pub name: String,
    /// Networks.
    pub networks: Vec<Spanned<String>>,
}

/// How a span group picks a free channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Hunt {
    /// Lowest free channel first.
    #[default]
    Ascending,
    /// Highest free channel first (the usual choice opposite an ascending PBX: less glare).
    Descending,
    /// The channel after the last one used.
    RoundRobin,
}

/// `[[span_group]]`: TDM spans that calls can be placed on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpanGroupConfig {
    /// Name (routes say `span_group:NAME`).
    pub name: String,
    /// Span numbers.
    pub spans: Vec<u32>,
    /// Channel hunting.
    #[serde(default)]
    pub hunt: Hunt,
}

fn default_source() -> Spanned<String> {
    Spanned::new(0..0, "any".to_owned())
}

/// `[[route]]`: a number pattern and where calls matching it go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name (logs, CDRs).
    pub name: String,
    /// Called-number pattern: `*`, a prefix `9*`, exact `echo`, or dial-plan `_9NXX.`.
    #[serde(rename = "match")]
    pub pattern: Spanned<String>,
    /// `any`, `trunk:NAME`, `acl:NAME` or `user:NAME`.
    #[serde(default = "default_source")]
    pub source: Spanned<String>,
    /// Leading characters to strip.
    #[serde(default)]
    pub strip: usize,
    /// What to put in front after stripping.
    #[serde(default)]
    pub prepend: String,
    /// Destinations in failover order: `trunk:NAME`, `uri:sip:...`, `span_group:NAME`,
    /// `service:echo|milliwatt`.
    pub to: Vec<Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    if offset == 0 && text.is_empty() {
        return 0;
    }
    text.get(..offset.min(text.len()))
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

impl Config {
    /// Parses a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate()
            .map_err(|(span, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                line: if span.is_empty() {
                    0
                } else {
                    line_of(text, span.start)
                },
                message,
            })?;
        if let Some(r) = &cfg.rtc {
            r.validate().map_err(|message| ConfigError::Invalid {
                origin: origin.to_owned(),
                line: line_of(text, text.find("[rtc]").unwrap_or(0)),
                message: format!("[rtc]: {message}"),
            })?;
        }
        if let Some(t) = &cfg.tdm {
            t.validate().map_err(|message| ConfigError::Invalid {
                origin: origin.to_owned(),
                line: 0,
                message: format!("[tdm]: {message}"),
            })?;
        }
        cfg.control.validate().map_err(|e| ConfigError::Invalid {
            origin: origin.to_owned(),
            line: line_of(text, text.find("[control").unwrap_or(0)),
            message: e.to_string(),
        })?;
        Ok(cfg)
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

    fn validate(&self) -> Result<(), (std::ops::Range<usize>, String)> {
        let none = 0..0;
        let mut names = std::collections::HashSet::new();
        for t in &self.trunks {
            if !names.insert(t.name.as_str()) {
                return Err((none, format!("two trunks are named {:?}", t.name)));
            }
            rtp_codecs(&t.codecs)?;
            if t.username.is_some() != t.password.is_some() {
                return Err((
                    none,
                    format!("trunk {:?}: give both username and password", t.name),
                ));
            }
        }
        let mut users = std::collections::HashSet::new();
        for u in &self.users {
            let ok = !u.name.is_empty()
                && u.name.len() <= 64
                && u.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.!~*+".contains(c));
            if !ok {
                return Err((
                    none,
                    format!(
                        "[[user]] name {:?}: use 1 to 64 letters, digits or -_.!~*+ (it is the user part of a SIP URI)",
                        u.name
                    ),
                ));
            }
            if u.password.is_empty() {
                return Err((
                    none,
                    format!("[[user]] {:?}: the password is empty", u.name),
                ));
            }
            if !users.insert(u.name.as_str()) {
                return Err((none, format!("two [[user]] entries are named {:?}", u.name)));
            }
        }
        for a in &self.control.agents {
            for e in &a.endpoints {
                if let crate::control::config::Endpoint::Phone { user } = e
                    && !users.contains(user.as_str())
                {
                    return Err((
                        none,
                        format!(
                            "agent {:?}: phone endpoint user {user:?} is not a [[user]] (add [[user]] name = {user:?} with a password: the phone registers with it)",
                            a.id
                        ),
                    ));
                }
            }
        }
        if let Some(sip) = &self.sip {
            rtp_codecs(&sip.codecs)?;
            for n in &sip.trusted {
                IpNet::parse(n.get_ref()).map_err(|e| (n.span(), e))?;
            }
            if sip.udp.is_none() && sip.tcp.is_none() {
                return Err((
                    none,
                    "[sip] needs udp or tcp (or remove the section)".into(),
                ));
            }
        }
        if self.media.rtp_port_min >= self.media.rtp_port_max || self.media.rtp_port_min < 1024 {
            return Err((
                none,
                format!(
                    "[media] rtp_port_min..rtp_port_max must be a range above 1023, got {}..{}",
                    self.media.rtp_port_min, self.media.rtp_port_max
                ),
            ));
        }
        if self.media.tones.parse::<codecs::tones::Country>().is_err() {
            return Err((
                none.clone(),
                format!(
                    "[media] tones = {:?}: use us, etsi, uk, de or fr",
                    self.media.tones
                ),
            ));
        }
        for a in &self.acls {
            for n in &a.networks {
                IpNet::parse(n.get_ref()).map_err(|e| (n.span(), e))?;
            }
        }
        self.route_table()?;
        let groups: Vec<String> = self.span_groups.iter().map(|g| g.name.clone()).collect();
        for a in &self.control.agents {
            for e in &a.endpoints {
                if let crate::control::config::Endpoint::Tdm { number, group } = e {
                    crate::control::config::tdm_span_group(number, group.as_deref(), &groups)
                        .map_err(|m| {
                            (none.clone(), format!("[[control.agents]] {:?}: {m}", a.id))
                        })?;
                }
            }
        }
        Ok(())
    }

    /// The routes and ACLs as the engine uses them.
    pub fn route_table(&self) -> Result<RouteTable, (std::ops::Range<usize>, String)> {
        let mut acls = Vec::new();
        for a in &self.acls {
            let nets = a
                .networks
                .iter()
                .map(|n| IpNet::parse(n.get_ref()).map_err(|e| (n.span(), e)))
                .collect::<Result<Vec<_>, _>>()?;
            acls.push((a.name.clone(), nets));
        }
        let mut routes = Vec::new();
        for r in &self.routes {
            let pattern = NumberPattern::parse(r.pattern.get_ref())
                .map_err(|e| (r.pattern.span(), format!("route {:?}: {e}", r.name)))?;
            let source = SourceMatch::parse(r.source.get_ref())
                .map_err(|e| (r.source.span(), format!("route {:?}: {e}", r.name)))?;
            let known = match &source {
                SourceMatch::Trunk(t) => self.trunks.iter().any(|x| &x.name == t),
                SourceMatch::Acl(a) => self.acls.iter().any(|x| &x.name == a),
                SourceMatch::User(u) => self.users.iter().any(|x| &x.name == u),
                SourceMatch::Any => true,
            };
            if !known {
                return Err((
                    r.source.span(),
                    format!(
                        "route {:?}: source {:?} names nothing configured",
                        r.name,
                        r.source.get_ref()
                    ),
                ));
            }
            if r.to.is_empty() {
                return Err((
                    r.pattern.span(),
                    format!("route {:?} has no destination (to = [...])", r.name),
                ));
            }
            let mut destinations = Vec::new();
            for d in &r.to {
                let dest = Destination::parse(d.get_ref())
                    .map_err(|e| (d.span(), format!("route {:?}: {e}", r.name)))?;
                let ok = match &dest {
                    Destination::Trunk(t) => self.trunks.iter().any(|x| &x.name == t),
                    Destination::SpanGroup(g) => self.span_groups.iter().any(|x| &x.name == g),
                    Destination::Uri(_) | Destination::Service(_) | Destination::WebRtc(_) => true,
                    Destination::Control(c) => match c.split_once(':') {
                        Some(("agent", id)) => self.control.agents.iter().any(|a| a.id == id),
                        Some(("queue", q)) => self.control.queues.iter().any(|x| x.name == q),
                        _ => false,
                    },
                };
                if !ok {
                    return Err((
                        d.span(),
                        format!("route {:?}: {} is not configured", r.name, d.get_ref()),
                    ));
                }
                destinations.push(dest);
            }
            routes.push(Route {
                name: r.name.clone(),
                pattern,
                source,
                strip: r.strip,
                prepend: r.prepend.clone(),
                destinations,
            });
        }
        Ok(RouteTable { routes, acls })
    }

    /// The engine's settings (valid after [`Config::from_toml`]).
    pub fn engine_config(&self) -> EngineConfig {
        let mut e = EngineConfig::new(self.media.ip);
        e.routes = self.route_table().unwrap_or_default();
        e.trunks = self
            .trunks
            .iter()
            .map(|t| TrunkSettings {
                name: t.name.clone(),
                address: t.address,
                transport: t.transport,
                host: t.host.clone(),
                credentials: t.username.clone().zip(t.password.clone()),
                codecs: codecs(&t.codecs).unwrap_or_default(),
                dtmf: t.dtmf,
                propagate_hold: t.propagate_hold,
                max_calls: t.max_calls,
            })
            .collect();
        if let Some(sip) = &self.sip {
            e.default_codecs = codecs(&sip.codecs).unwrap_or_default();
            e.default_dtmf = sip.dtmf;
            e.no_answer_timeout = Duration::from_secs(sip.no_answer_timeout_s.max(1));
        }
        e.providers = vec![LegKind::Sip, LegKind::Service];
        e
    }
}

/// Codecs of RTP legs: what SDP and the media plane both carry there (G.711).
fn rtp_codecs(
    list: &[Spanned<String>],
) -> Result<Vec<AudioCodec>, (std::ops::Range<usize>, String)> {
    let out = codecs(list)?;
    for (c, s) in out.iter().zip(list) {
        if !matches!(c, AudioCodec::Pcmu | AudioCodec::Pcma) {
            return Err((
                s.span(),
                format!(
                    "codec {:?} is not carried on SIP/RTP legs (PCMU, PCMA); Opus is for WebRTC legs",
                    s.get_ref()
                ),
            ));
        }
    }
    Ok(out)
}

fn codecs(list: &[Spanned<String>]) -> Result<Vec<AudioCodec>, (std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    for c in list {
        let codec = AudioCodec::from_name(c.get_ref()).ok_or_else(|| {
            (
                c.span(),
                format!("unknown codec {:?} (PCMU, PCMA, L16, opus)", c.get_ref()),
            )
        })?;
        out.push(codec);
    }
    if out.is_empty() {
        return Err((0..0, "a codec list is empty".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_listens_on_loopback() {
        let cfg = Config::embedded_default().unwrap();
        assert!(cfg.http.listen.ip().is_loopback());
        let sip = cfg.sip.as_ref().unwrap();
        assert!(sip.udp.unwrap().ip().is_loopback() && sip.tcp.unwrap().ip().is_loopback());
        assert_eq!(sip.udp.unwrap().port(), 5060);
        let routes = cfg.route_table().unwrap();
        let q = |n| crate::calls::routing::RouteQuery {
            number: n,
            trunk: None,
            source_ip: None,
            user: None,
        };
        assert_eq!(
            routes.lookup(&q("echo")).unwrap().destinations,
            [Destination::Service(crate::calls::leg::ServiceKind::Echo)]
        );
        assert_eq!(
            routes.lookup(&q("90123")).unwrap().destinations,
            [Destination::SpanGroup("e1".into())]
        );
        assert_eq!(
            routes.lookup(&q("2001")).unwrap().destinations,
            [Destination::Trunk("pbx".into())]
        );
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
    fn tdm_agent_endpoints_need_a_span_group_they_can_name_or_default_to() {
        let agent = |endpoint: &str| {
            format!(
                "[[control.agents]]\nid = \"b\"\nname = \"B\"\ntoken = \"b-token-1\"\n\
                 endpoints = [{endpoint}]\n"
            )
        };
        let group = |name: &str| format!("[[span_group]]\nname = \"{name}\"\nspans = [1]\n");
        let base = "[http]\nlisten = \"127.0.0.1:0\"\n";
        let tdm = "{ kind = \"tdm\", number = \"4023\" }";
        let named = "{ kind = \"tdm\", number = \"4023\", group = \"far\" }";
        let load = |text: String| Config::from_toml(&text, "t.toml").map_err(|e| e.to_string());
        // The only group is the default.
        let cfg = load(format!("{base}{}{}", group("out"), agent(tdm))).unwrap();
        assert_eq!(
            cfg.control.agents[0].endpoints[0],
            crate::control::config::Endpoint::Tdm {
                number: "4023".into(),
                group: None
            }
        );
        // None, or several, and no group named: refused, saying what to write.
        let err = load(format!("{base}{}", agent(tdm))).unwrap_err();
        assert!(
            err.contains("\"b\"") && err.contains("no [[span_group]]"),
            "{err}"
        );
        let err = load(format!(
            "{base}{}{}{}",
            group("out"),
            group("far"),
            agent(tdm)
        ))
        .unwrap_err();
        assert!(
            err.contains("2 span groups") && err.contains("group = \"NAME\""),
            "{err}"
        );
        // A named group must exist; among several it picks one.
        let err = load(format!("{base}{}{}", group("out"), agent(named))).unwrap_err();
        assert!(err.contains("\"far\" is not configured"), "{err}");
        load(format!(
            "{base}{}{}{}",
            group("out"),
            group("far"),
            agent(named)
        ))
        .unwrap();
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = Config::from_toml("[http]\nlisten = 12\n", "test.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml") && msg.contains("line 2"), "{msg}");
        let err = Config::from_toml("[http]\nlisten='127.0.0.1:1'\nbogus=1\n", "t").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bad_users_and_phone_endpoints_are_refused_with_what_to_write() {
        let base = "[http]\nlisten = \"127.0.0.1:0\"\n";
        let user = |name: &str, pw: &str| format!("[[user]]\nname = {name:?}\npassword = {pw:?}\n");
        let err = |text: String| Config::from_toml(&text, "t").unwrap_err().to_string();
        let e = err(format!("{base}{}", user("al ice", "pw")));
        assert!(e.contains("\"al ice\"") && e.contains("letters"), "{e}");
        let e = err(format!("{base}{}", user("alice", "")));
        assert!(e.contains("password is empty"), "{e}");
        let e = err(format!(
            "{base}{}{}",
            user("alice", "a"),
            user("alice", "b")
        ));
        assert!(e.contains("two [[user]]"), "{e}");
        let agent = "[[control.agents]]\nid = \"a\"\nname = \"A\"\ntoken = \"a-token-1\"\n\
                     endpoints = [{ kind = \"phone\", user = \"alice\" }]\n";
        let e = err(format!("{base}{agent}"));
        assert!(e.contains("\"alice\" is not a [[user]]"), "{e}");
        Config::from_toml(&format!("{base}{}{agent}", user("alice", "pw")), "t").unwrap();
    }

    #[test]
    fn meaning_errors_name_the_line_too() {
        let base = "[http]\nlisten = \"127.0.0.1:0\"\n";
        let err = Config::from_toml(
            &format!("{base}[[route]]\nname = \"r\"\nmatch = \"*\"\nto = [\"trunk:nope\"]\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 6") && err.contains("trunk:nope"),
            "{err}"
        );
        let err = Config::from_toml(
            &format!("{base}[[route]]\nname = \"r\"\nmatch = \"_9.X\"\nto = [\"service:echo\"]\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 5"), "{err}");
        let err = Config::from_toml(
            &format!(
                "{base}[[trunk]]\nname = \"t\"\naddress = \"127.0.0.1:5070\"\ncodecs = [\"G729\"]\n"
            ),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 6") && err.contains("G729"), "{err}");
        let err = Config::from_toml(
            &format!("{base}[[acl]]\nname = \"a\"\nnetworks = [\"10.0.0.0/40\"]\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 5"), "{err}");
    }
}

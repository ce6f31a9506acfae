//! `[rtc]`: the WebRTC leg provider's settings in the gateway TOML.
//!
//! ```toml
//! [rtc]
//! host_addresses = ["127.0.0.1"]       # ICE host candidates (one socket per leg on each)
//! public_address = "203.0.113.7"       # optional NAT 1:1 address of the rack
//! public_address_mode = "add"          # "add" (extra srflx candidate) or "replace"
//! port_min = 40000                     # optional ICE port range (both or neither)
//! port_max = 40999
//! codecs = ["opus", "pcmu", "pcma"]    # most preferred first
//! grace_s = 30                         # a leg survives its signalling's loss this long
//! connect_timeout_s = 20               # ICE + DTLS must be up this long after the SDP exchange
//! answer_timeout_s = 60                # an outbound leg's endpoint must answer within this
//! media_timeout_s = 10                 # no RTP from a connected peer this long: it is gone
//! sip_ws = "127.0.0.1:5066"            # optional SIP over WebSocket listener (JsSIP, SIP.js):
//!                                      # [[user]]s register and call; calls get WebRTC legs
//! sip_wss = "0.0.0.0:7443"             # optional SIP over secure WebSocket (wss://), the same
//! sip_wss_cert = "/etc/spanbridge/wss.pem"  # server; PEM certificate chain and PEM private key
//! sip_wss_key = "/etc/spanbridge/wss.key"   # (both needed with sip_wss)
//!
//! [[rtc.ice_servers]]                  # handed to clients; the gateway itself uses none
//! urls = ["stun:stun.example.net:3478"]
//! ```
//!
//! Every field has a default that works on loopback; [`RtcSettings::validate`] runs when the
//! configuration loads.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::media::RtcCodec;
use super::{IceServer, PublicAddressMode, RtcConfig};

fn default_hosts() -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 1])]
}

fn default_codecs() -> Vec<String> {
    vec!["opus".into(), "pcmu".into(), "pcma".into()]
}

const fn default_grace() -> u64 {
    30
}

const fn default_connect() -> u64 {
    20
}

const fn default_answer() -> u64 {
    60
}

const fn default_media_timeout() -> u64 {
    10
}

/// The `[rtc]` section (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtcSettings {
    /// Addresses to gather ICE host candidates on. Never a wildcard: name each interface.
    #[serde(default = "default_hosts")]
    pub host_addresses: Vec<IpAddr>,
    /// Public address of a 1:1 NAT in front of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<IpAddr>,
    /// How the public address is advertised.
    #[serde(default)]
    pub public_address_mode: PublicAddressMode,
    /// Lowest UDP port for ICE (with `port_max`; absent: ephemeral ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_min: Option<u16>,
    /// Highest UDP port for ICE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_max: Option<u16>,
    /// STUN/TURN servers handed to clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
    /// Codecs, most preferred first: `opus`, `pcmu`, `pcma`.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// Grace period after signalling loss, seconds.
    #[serde(default = "default_grace")]
    pub grace_s: u64,
    /// ICE + DTLS connect timeout after the SDP exchange, seconds.
    #[serde(default = "default_connect")]
    pub connect_timeout_s: u64,
    /// How long an outbound leg's endpoint has to answer the offer, seconds.
    #[serde(default = "default_answer")]
    pub answer_timeout_s: u64,
    /// A connected peer that sends no RTP this long is gone (a closed tab), seconds; 0: never.
    #[serde(default = "default_media_timeout")]
    pub media_timeout_s: u64,
    /// SIP over WebSocket (`ws://`) listener for browser softphones whose media are WebRTC legs
    /// ([`super::sipws`]); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_ws: Option<std::net::SocketAddr>,
    /// SIP over secure WebSocket (`wss://`) listener of the same server; needs `sip_wss_cert`
    /// and `sip_wss_key`; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_wss: Option<std::net::SocketAddr>,
    /// PEM certificate chain (leaf first) of the `wss://` listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_wss_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the `wss://` listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_wss_key: Option<String>,
}

impl Default for RtcSettings {
    fn default() -> Self {
        Self {
            host_addresses: default_hosts(),
            public_address: None,
            public_address_mode: PublicAddressMode::Add,
            port_min: None,
            port_max: None,
            ice_servers: Vec::new(),
            codecs: default_codecs(),
            grace_s: default_grace(),
            connect_timeout_s: default_connect(),
            answer_timeout_s: default_answer(),
            media_timeout_s: default_media_timeout(),
            sip_ws: None,
            sip_wss: None,
            sip_wss_cert: None,
            sip_wss_key: None,
        }
    }
}

fn codec(name: &str) -> Option<RtcCodec> {
    [RtcCodec::Opus, RtcCodec::Pcmu, RtcCodec::Pcma]
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name))
}

impl RtcSettings {
    /// Checks the section; the message says what to write instead.
    ///
    /// # Errors
    /// A wildcard or missing host address, a bad port range, an unknown codec, an ICE server
    /// URL that is not `stun:`/`turn:`/`turns:`, zero timeouts, `sip_wss` without a certificate
    /// and key that load (or a certificate/key without `sip_wss`).
    pub fn validate(&self) -> Result<(), String> {
        self.wss_tls()?;
        if self.host_addresses.is_empty() {
            return Err("host_addresses is empty: name at least one interface address".into());
        }
        for a in &self.host_addresses {
            if a.is_unspecified() {
                return Err(format!(
                    "host_addresses: {a} is a wildcard; name each interface address (webrtc-rs \
                     expands a wildcard per interface and skips loopback)"
                ));
            }
        }
        if let Some(p) = self.public_address
            && (p.is_unspecified() || p.is_loopback())
        {
            return Err(format!(
                "public_address {p} is not an address peers can reach; remove it or give the \
                 NAT's public address"
            ));
        }
        match (self.port_min, self.port_max) {
            (None, None) => {}
            (Some(lo), Some(hi)) if lo >= 1024 && lo <= hi => {}
            (Some(lo), Some(hi)) => {
                return Err(format!(
                    "port_min..port_max must be a range above 1023, got {lo}..{hi}"
                ));
            }
            _ => return Err("give both port_min and port_max, or neither".into()),
        }
        if self.codecs.is_empty() {
            return Err("codecs is empty: give at least one of opus, pcmu, pcma".into());
        }
        for c in &self.codecs {
            if codec(c).is_none() {
                return Err(format!("codec {c:?} is not one of opus, pcmu, pcma"));
            }
        }
        for s in &self.ice_servers {
            if s.urls.is_empty() {
                return Err("an ice_servers entry has no urls".into());
            }
            for u in &s.urls {
                let scheme = u.split(':').next().unwrap_or_default();
                if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
                    return Err(format!(
                        "ice_servers url {u:?} must start with stun:, stuns:, turn: or turns:"
                    ));
                }
                if scheme.starts_with("turn") && (s.username.is_empty() || s.credential.is_empty())
                {
                    return Err(format!("TURN server {u:?} needs username and credential"));
                }
            }
        }
        if self.connect_timeout_s == 0 || self.answer_timeout_s == 0 {
            return Err("connect_timeout_s and answer_timeout_s must be at least 1".into());
        }
        Ok(())
    }

    /// The `wss://` listener: its address and TLS configuration loaded from the PEM files, or
    /// `None` without `sip_wss`.
    ///
    /// # Errors
    /// `sip_wss` without `sip_wss_cert`/`sip_wss_key`, those without `sip_wss`, or files that do
    /// not load (the message names the file).
    pub fn wss_tls(
        &self,
    ) -> Result<
        Option<(
            std::net::SocketAddr,
            std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
        )>,
        String,
    > {
        match (self.sip_wss, &self.sip_wss_cert, &self.sip_wss_key) {
            (None, None, None) => Ok(None),
            (None, _, _) => Err(
                "sip_wss_cert/sip_wss_key given without sip_wss: add sip_wss = \"ADDR:PORT\" or \
                 remove them"
                    .into(),
            ),
            (Some(a), Some(cert), Some(key)) => super::sipws::wss_tls_config(cert, key)
                .map(|c| Some((a, c)))
                .map_err(|e| format!("sip_wss {a}: cannot load its TLS certificate/key: {e}")),
            (Some(a), _, _) => Err(format!(
                "sip_wss {a} needs sip_wss_cert and sip_wss_key (PEM certificate chain and \
                 private key files)"
            )),
        }
    }

    /// The ICE port range, if configured.
    pub fn port_range(&self) -> Option<RangeInclusive<u16>> {
        Some(self.port_min?..=self.port_max?)
    }

    /// How long an outbound leg waits for its endpoint's answer.
    pub fn answer_timeout(&self) -> Duration {
        Duration::from_secs(self.answer_timeout_s.max(1))
    }

    /// The leg-level configuration (call [`RtcSettings::validate`] first; unknown codecs are
    /// skipped).
    pub fn to_rtc_config(&self) -> RtcConfig {
        RtcConfig {
            host_addresses: self.host_addresses.clone(),
            public_address: self.public_address,
            public_address_mode: self.public_address_mode,
            ice_servers: self.ice_servers.clone(),
            codecs: self.codecs.iter().filter_map(|c| codec(c)).collect(),
            grace: Duration::from_secs(self.grace_s),
            connect_timeout: Duration::from_secs(self.connect_timeout_s.max(1)),
            media_timeout: Duration::from_secs(self.media_timeout_s),
            port_range: self.port_range(),
            ..RtcConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_loopback() {
        let s = RtcSettings::default();
        assert_eq!(s.validate(), Ok(()));
        let c = s.to_rtc_config();
        assert_eq!(c.host_addresses, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(c.codecs.len(), 3);
        assert_eq!(c.port_range, None);
    }

    #[test]
    fn the_gateway_toml_takes_an_rtc_section_and_refuses_a_bad_one_at_load() {
        let ok = crate::config::Config::from_toml(
            "[http]\nlisten = \"127.0.0.1:0\"\n[rtc]\nport_min = 40000\nport_max = 40099\n",
            "test",
        )
        .unwrap();
        let rtc = ok.rtc.unwrap();
        assert_eq!(rtc.port_range(), Some(40000..=40099));
        assert_eq!(rtc.grace_s, 30);
        let err = crate::config::Config::from_toml(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[rtc]\nhost_addresses = [\"0.0.0.0\"]\n",
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[rtc]") && err.contains("wildcard"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn bad_sections_are_refused_with_a_reason() {
        let bad = |f: &dyn Fn(&mut RtcSettings)| {
            let mut s = RtcSettings::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(&|s| s.host_addresses = vec![IpAddr::from([0, 0, 0, 0])]).contains("wildcard"));
        assert!(bad(&|s| s.port_min = Some(5000)).contains("both"));
        assert!(
            bad(&|s| {
                s.port_min = Some(6000);
                s.port_max = Some(5000)
            })
            .contains("range")
        );
        assert!(bad(&|s| s.codecs = vec!["g729".into()]).contains("g729"));
        assert!(
            bad(&|s| s.ice_servers = vec![IceServer {
                urls: vec!["http://x".into()],
                ..IceServer::default()
            }])
            .contains("stun:")
        );
        assert!(
            bad(&|s| s.ice_servers = vec![IceServer {
                urls: vec!["turn:t.example:3478".into()],
                ..IceServer::default()
            }])
            .contains("credential")
        );
    }
}

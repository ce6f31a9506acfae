//! `[tdm]`: where the spans are and how each one signals.
//!
//! ```toml
//! [tdm]
//! backend = "sim"          # "sim": the in-process simulated E1 pair; "dahdi": device files
//! root = "/dev/dahdi"      # device root for "dahdi" (a real card or dahdi-sim)
//!
//! [[tdm.span]]
//! span = 1
//! signalling = "pri_net"   # pri_net, pri_cpe, em_wink, em_immediate, fxs_ls, fxs_ks, fxo_ls, fxo_ks
//! switch = "euro"          # PRI: euro (E1), ni2, 5ess, dms100 (T1)
//! ```
//!
//! Span groups (channel hunting) and routes are in the main configuration (`[[span_group]]`).

use serde::{Deserialize, Serialize};

use tdm_driver::SigType;
use tdm_driver::cas::CasMode;
use tdm_driver::pri::call::SwitchType;
use tdm_driver::span::DigitKind;

/// Where the spans come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TdmBackend {
    /// The in-process simulator: two E1 spans wired to each other, real-time clock.
    #[default]
    Sim,
    /// DAHDI device files under `root`: a real card or `dahdi-sim`.
    Dahdi,
}

/// `[tdm]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TdmConfig {
    /// Where the spans come from.
    #[serde(default)]
    pub backend: TdmBackend,
    /// Device root for the `dahdi` backend.
    #[serde(default = "default_root")]
    pub root: String,
    /// Set each channel's signalling (DAHDI_CHANCONFIG) from this file at start. Default:
    /// yes for the simulator; for a device tree `dahdi_cfg` normally did it already.
    #[serde(default)]
    pub configure: Option<bool>,
    /// The spans used.
    #[serde(default, rename = "span")]
    pub spans: Vec<TdmSpanConfig>,
}

fn default_root() -> String {
    tdm_driver::DEFAULT_DEVICE_ROOT.to_owned()
}

/// A span's signalling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signalling {
    /// ISDN PRI, network side.
    PriNet,
    /// ISDN PRI, user (CPE) side.
    PriCpe,
    /// E&M wink start.
    EmWink,
    /// E&M immediate start.
    EmImmediate,
    /// Loop start, station end (DAHDI `fxsls`).
    FxsLs,
    /// Kewl start, station end (DAHDI `fxsks`).
    FxsKs,
    /// Loop start, office end (DAHDI `fxols`).
    FxoLs,
    /// Kewl start, office end (DAHDI `fxoks`).
    FxoKs,
}

impl Signalling {
    /// Whether this is PRI.
    pub fn is_pri(self) -> bool {
        matches!(self, Signalling::PriNet | Signalling::PriCpe)
    }

    /// The CAS protocol, for CAS signalling.
    pub fn cas_mode(self) -> Option<CasMode> {
        Some(match self {
            Signalling::EmWink => CasMode::EmWink,
            Signalling::EmImmediate => CasMode::EmImmediate,
            Signalling::FxsLs | Signalling::FxsKs => CasMode::FxsLoopStart,
            Signalling::FxoLs | Signalling::FxoKs => CasMode::FxoLoopStart,
            Signalling::PriNet | Signalling::PriCpe => return None,
        })
    }

    /// The DAHDI signalling of its B-channels on a span of this kind (`e1`: E1 framing).
    pub fn sigtype(self, e1: bool) -> SigType {
        match self {
            Signalling::PriNet | Signalling::PriCpe => SigType::Clear,
            Signalling::EmWink | Signalling::EmImmediate => {
                if e1 {
                    SigType::EmE1
                } else {
                    SigType::Em
                }
            }
            Signalling::FxsLs => SigType::FxsLs,
            Signalling::FxsKs => SigType::FxsKs,
            Signalling::FxoLs => SigType::FxoLs,
            Signalling::FxoKs => SigType::FxoKs,
        }
    }

    /// Name as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Signalling::PriNet => "pri_net",
            Signalling::PriCpe => "pri_cpe",
            Signalling::EmWink => "em_wink",
            Signalling::EmImmediate => "em_immediate",
            Signalling::FxsLs => "fxs_ls",
            Signalling::FxsKs => "fxs_ks",
            Signalling::FxoLs => "fxo_ls",
            Signalling::FxoKs => "fxo_ks",
        }
    }
}

/// PRI switch variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// ETSI EuroISDN on E1.
    #[default]
    Euro,
    /// National ISDN-2 (T1).
    Ni2,
    /// AT&T 5ESS (T1).
    #[serde(rename = "5ess")]
    Att5ess,
    /// Nortel DMS-100 (T1).
    Dms100,
}

impl Switch {
    /// The stack's switch type.
    pub fn switch_type(self) -> SwitchType {
        match self {
            Switch::Euro => SwitchType::EuroIsdnE1,
            Switch::Ni2 => SwitchType::Ni2,
            Switch::Att5ess => SwitchType::Att5ess,
            Switch::Dms100 => SwitchType::Dms100,
        }
    }
}

/// How the D-channel's frames are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DChannelMode {
    /// HDLC with FCS in the driver (`hardhdlc`/`dchan`).
    #[default]
    Hdlc,
    /// A clear channel with spanbridge's software HDLC.
    Soft,
}

/// In-band addressing of a CAS span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    /// DTMF.
    #[default]
    Dtmf,
    /// MF R1.
    Mf,
    /// None (loop start lines without dialling).
    None,
}

impl Addressing {
    /// The tone kind.
    pub fn kind(self) -> Option<DigitKind> {
        match self {
            Addressing::Dtmf => Some(DigitKind::Dtmf),
            Addressing::Mf => Some(DigitKind::MfR1),
            Addressing::None => None,
        }
    }
}

/// G.711 law of a span's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LawName {
    /// A-law (E1).
    Alaw,
    /// µ-law (T1).
    Ulaw,
}

/// `[[tdm.span]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TdmSpanConfig {
    /// Span number.
    pub span: u32,
    /// Signalling of its channels.
    pub signalling: Signalling,
    /// PRI switch variant.
    #[serde(default)]
    pub switch: Switch,
    /// PRI: D-channel position (default 16 on E1, 24 on T1).
    #[serde(default)]
    pub dchannel: Option<u32>,
    /// PRI: how the D-channel is framed.
    #[serde(default)]
    pub dchannel_mode: DChannelMode,
    /// Channel positions to use, e.g. `"1-15,17-31"` (default: every B-channel).
    #[serde(default)]
    pub channels: Option<String>,
    /// Audio law (default: A-law on E1, µ-law on T1).
    #[serde(default)]
    pub law: Option<LawName>,
    /// CAS: in-band addressing.
    #[serde(default)]
    pub addressing: Addressing,
    /// CAS E&M: this end keeps its call on glare.
    #[serde(default)]
    pub glare_priority: bool,
    /// Loop start: answer/disconnect supervision by battery reversal.
    #[serde(default)]
    pub polarity: bool,
    /// Loop start: the called number of incoming calls on a line without addressing.
    #[serde(default)]
    pub fixed_called: String,
    /// CAS: the far end's tone plan (`us`, `etsi`, `uk`, `de`, `fr`). Outgoing E&M and
    /// station-end calls listen for its busy and congestion tones until the answer and clear
    /// with cause 17 (SIP 486) or 34 (SIP 503). Default: `etsi` on E1, `us` on T1.
    #[serde(default)]
    pub tones: Option<String>,
}

/// Parses a channel list such as `1-15,17-31` or `1,2,5-7`.
pub fn parse_channels(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a
            .parse()
            .map_err(|_| format!("{part:?}: {a:?} is not a channel number"))?;
        let b: u32 = b
            .parse()
            .map_err(|_| format!("{part:?}: {b:?} is not a channel number"))?;
        if a == 0 || b < a || b > 31 {
            return Err(format!(
                "{part:?}: channels are 1..=31 and ranges go up (e.g. 1-15)"
            ));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(format!("{text:?} names no channel"));
    }
    Ok(out)
}

impl TdmConfig {
    /// Checks what serde cannot: unique spans, channel lists, D-channels.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.spans {
            if !seen.insert(s.span) {
                return Err(format!("[[tdm.span]] span {} appears twice", s.span));
            }
            if s.span == 0 {
                return Err("[[tdm.span]] span numbers start at 1".into());
            }
            if let Some(c) = &s.channels {
                let list =
                    parse_channels(c).map_err(|e| format!("span {}: channels {e}", s.span))?;
                if let Some(d) = s.dchannel
                    && list.contains(&d)
                {
                    return Err(format!(
                        "span {}: channel {d} is the D-channel and cannot also carry calls",
                        s.span
                    ));
                }
            }
            if let Some(t) = &s.tones
                && t.parse::<codecs::tones::Country>().is_err()
            {
                return Err(format!(
                    "span {}: tones = {t:?}: use us, etsi, uk, de or fr",
                    s.span
                ));
            }
            if !s.signalling.is_pri() && s.dchannel.is_some() {
                return Err(format!(
                    "span {}: dchannel is for PRI spans only ({} has none)",
                    s.span,
                    s.signalling.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The embedded default: the simulated pair as PRI, span 1 network side and span 2 user
    /// side, EuroISDN.
    pub fn sim_pri_pair() -> Self {
        let span = |span, signalling| TdmSpanConfig {
            span,
            signalling,
            switch: Switch::Euro,
            dchannel: None,
            dchannel_mode: DChannelMode::Hdlc,
            channels: None,
            law: None,
            addressing: Addressing::Dtmf,
            glare_priority: false,
            polarity: false,
            fixed_called: String::new(),
            tones: None,
        };
        Self {
            backend: TdmBackend::Sim,
            root: default_root(),
            configure: None,
            spans: vec![span(1, Signalling::PriNet), span(2, Signalling::PriCpe)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_parse_and_bad_ones_say_why() {
        assert_eq!(parse_channels("1-3, 5").unwrap(), vec![1, 2, 3, 5]);
        assert_eq!(parse_channels("17-31,1-15").unwrap().len(), 30);
        assert!(parse_channels("0-3").is_err());
        assert!(parse_channels("5-2").is_err());
        assert!(parse_channels("x").unwrap_err().contains("not a channel"));
        assert!(parse_channels("").is_err());
    }

    #[test]
    fn a_tdm_section_parses_and_is_checked() {
        let text = r#"
backend = "dahdi"
root = "/tmp/dahdi"
[[span]]
span = 1
signalling = "pri_net"
switch = "euro"
dchannel = 16
[[span]]
span = 2
signalling = "em_wink"
addressing = "mf"
channels = "1-4"
"#;
        let cfg: TdmConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.spans[1].addressing.kind(), Some(DigitKind::MfR1));
        assert_eq!(cfg.spans[1].signalling.sigtype(true), SigType::EmE1);
        let mut bad = cfg.clone();
        bad.spans[1].dchannel = Some(16);
        assert!(bad.validate().unwrap_err().contains("PRI spans only"));
        let mut bad = cfg;
        bad.spans[0].channels = Some("1-16".into());
        assert!(bad.validate().unwrap_err().contains("D-channel"));
        assert!(toml::from_str::<TdmConfig>("[[span]]\nspan=1\nsignalling=\"isdn\"\n").is_err());
    }
}

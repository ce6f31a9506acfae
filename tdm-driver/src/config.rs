//! DAHDI's `/etc/dahdi/system.conf`: parsed into typed structs with line-numbered errors, and
//! applied to a DAHDI tree through SPANCONFIG, CHANCONFIG and STARTUP in the order `dahdi_cfg`
//! issues them.
//!
//! The syntax is dahdi_cfg's: `keyword=value` lines, `#` comments, case-insensitive keywords,
//! channel lists such as `1-15,17-31`. Unlike dahdi_cfg, numbers must be whole (`12abc` is an
//! error, not 12), and every error is collected with its line number.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::abi;
use crate::backend::Backend;
use crate::channel::Channel;
use crate::ctl::{ChannelConfig, Ctl, SpanLineConfig};
use crate::error::TdmError;
use crate::types::{Law, SigType};

/// Highest channel number dahdi_cfg accepts.
pub const MAX_CHANNEL: i32 = abi::DAHDI_MAX_CHANNELS - 1;
/// Highest span number.
pub const MAX_SPAN: i32 = abi::DAHDI_MAX_SPANS - 1;
/// Highest timing priority dahdi_cfg accepts.
pub const MAX_TIMING: i32 = 255;

/// T1 framing or E1 signalling of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// T1 D4 superframe.
    D4,
    /// T1 extended superframe.
    Esf,
    /// E1 common-channel signalling (ISDN).
    Ccs,
    /// E1 channel-associated signalling.
    Cas,
}

/// Line coding of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// AMI.
    Ami,
    /// T1 B8ZS.
    B8zs,
    /// E1 HDB3.
    Hdb3,
}

/// One `span=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanLine {
    /// Line number in the file.
    pub line: usize,
    /// Span number.
    pub span: i32,
    /// Timing priority (0: never a timing source).
    pub timing: i32,
    /// Line build-out, 0..=7.
    pub lbo: i32,
    /// Framing.
    pub framing: Framing,
    /// Line coding.
    pub coding: Coding,
    /// CRC4 multiframe (E1).
    pub crc4: bool,
    /// `yellow`: dahdi_cfg sets DAHDI_CONFIG_NOTOPEN for it.
    pub yellow: bool,
    /// NT mode (BRI); `te` clears it.
    pub nt: bool,
    /// Line termination (BRI).
    pub term: bool,
}

impl SpanLine {
    /// The DAHDI_CONFIG_* bits dahdi_cfg computes for this line.
    pub fn line_config_bits(&self) -> i32 {
        let mut bits = match self.framing {
            Framing::D4 => abi::DAHDI_CONFIG_D4,
            Framing::Esf => abi::DAHDI_CONFIG_ESF,
            Framing::Ccs => abi::DAHDI_CONFIG_CCS,
            Framing::Cas => 0,
        };
        bits |= match self.coding {
            Coding::Ami => abi::DAHDI_CONFIG_AMI,
            Coding::B8zs => abi::DAHDI_CONFIG_B8ZS,
            Coding::Hdb3 => abi::DAHDI_CONFIG_HDB3,
        };
        for (on, bit) in [
            (self.crc4, abi::DAHDI_CONFIG_CRC4),
            (self.yellow, abi::DAHDI_CONFIG_NOTOPEN),
            (self.nt, abi::DAHDI_CONFIG_NTTE),
            (self.term, abi::DAHDI_CONFIG_TERM),
        ] {
            if on {
                bits |= bit;
            }
        }
        bits
    }

    /// The SPANCONFIG request for this line.
    pub fn to_line_config(&self) -> SpanLineConfig {
        SpanLineConfig {
            span: self.span,
            sync: self.timing,
            lbo: self.lbo,
            line_config: self.line_config_bits(),
        }
    }
}

/// One channel's signalling, from a signalling line (`bchan=`, `dchan=`, `fxsks=`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelLine {
    /// Line number in the file.
    pub line: usize,
    /// The keyword as written (lower case).
    pub keyword: String,
    /// Signalling type sent in CHANCONFIG.
    pub sigtype: SigType,
    /// Master channel: itself, or the first channel of a `clear`/`*hdlc` group.
    pub master: i32,
    /// Idle CAS bits (`cas=`), or the partner channel (`dacs=`).
    pub idlebits: i32,
    /// Network device name (`nethdlc=...:name`).
    pub netdev_name: String,
}

/// One `dynamic=` line (parsed; this library does not create dynamic spans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicSpanLine {
    /// Line number in the file.
    pub line: usize,
    /// Driver (`eth`, `loc`).
    pub driver: String,
    /// Driver address.
    pub address: String,
    /// Channel count.
    pub channels: i32,
    /// Timing priority.
    pub timing: i32,
}

/// A parsed `system.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemConf {
    /// `span=` lines in file order.
    pub spans: Vec<SpanLine>,
    /// Channel signalling by channel number.
    pub channels: BTreeMap<i32, ChannelLine>,
    /// Default law by channel (`alaw=`, `mulaw=`, `deflaw=`); absent means the span default.
    pub laws: BTreeMap<i32, Law>,
    /// Echo canceller name by channel (`echocanceller=`).
    pub echo_cancellers: BTreeMap<i32, String>,
    /// Channels whose HDLC runs at 56 kbit/s (`56k=`).
    pub hdlc_56k: BTreeSet<i32>,
    /// Tone zones to load (`loadzone=`), in file order.
    pub load_zones: Vec<String>,
    /// The default tone zone (`defaultzone=`).
    pub default_zone: Option<String>,
    /// `dynamic=` lines.
    pub dynamic_spans: Vec<DynamicSpanLine>,
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// Not `keyword=value`.
    #[error("expected keyword=value, got {0:?}")]
    Syntax(String),
    /// A keyword dahdi_cfg does not know.
    #[error("unknown keyword {0:?}")]
    UnknownKeyword(String),
    /// A dahdi_cfg keyword this library does not handle (radio settings).
    #[error("keyword {0:?} (radio interfaces) is not supported by spanbridge")]
    UnsupportedKeyword(String),
    /// `span=` with the wrong number of fields.
    #[error(
        "span needs <span>,<timing>,<lbo>,<framing>,<coding>[,crc4|yellow|nt|te|term...] (5 to 9 fields), got {0}"
    )]
    SpanFieldCount(usize),
    /// A field that should be a whole number.
    #[error("{what} must be a whole number, not {text:?}")]
    NotANumber {
        /// The field.
        what: &'static str,
        /// What was written.
        text: String,
    },
    /// A number out of its range.
    #[error("{what} must be {min}..={max}, not {value}")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value written.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// Unknown framing.
    #[error("span {span}: unknown framing {text:?} (d4, esf, ccs or cas)")]
    UnknownFraming {
        /// Span number.
        span: i32,
        /// What was written.
        text: String,
    },
    /// Unknown line code.
    #[error("span {span}: unknown line code {text:?} (ami, b8zs or hdb3)")]
    UnknownCoding {
        /// Span number.
        span: i32,
        /// What was written.
        text: String,
    },
    /// Unknown trailing span option.
    #[error("span {span}: unknown option {text:?} (crc4, yellow, nt, te or term)")]
    UnknownSpanOption {
        /// Span number.
        span: i32,
        /// What was written.
        text: String,
    },
    /// The same span twice.
    #[error("span {span} is already configured at line {first_line}")]
    DuplicateSpan {
        /// Span number.
        span: i32,
        /// Where it was first configured.
        first_line: usize,
    },
    /// A malformed channel list.
    #[error("bad channel list {text:?}: {reason}")]
    BadChannelList {
        /// What was written.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A channel given signalling twice.
    #[error("channel {chan} is already configured as {keyword} at line {first_line}")]
    ChannelAlreadyConfigured {
        /// Channel number.
        chan: i32,
        /// Its first keyword.
        keyword: String,
        /// Where.
        first_line: usize,
    },
    /// `cas=` without valid idle bits.
    #[error("cas needs the idle bits as :abcd after the channels, e.g. cas=1-15:1101; got {0:?}")]
    BadIdleBits(String),
    /// `dacs=` without a partner channel.
    #[error(
        "{keyword} needs the first partner channel as :N after the channels, e.g. {keyword}=1-5:33"
    )]
    MissingDacsPartner {
        /// The keyword.
        keyword: String,
    },
    /// `echocanceller=` without channels.
    #[error("echocanceller needs a name and channels, e.g. echocanceller=mg2,1-15,17-31")]
    EchoCancellerWithoutChannels,
    /// A name longer than DAHDI's field.
    #[error("{what} {text:?} is longer than {max} bytes")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// The name.
        text: String,
        /// Longest allowed.
        max: usize,
    },
    /// `dynamic=` with the wrong number of fields.
    #[error("dynamic needs <driver>,<address>,<channels>,<timing>, got {0} fields")]
    DynamicFieldCount(usize),
}

/// One error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind}")]
pub struct ConfigError {
    /// File name as given to the parser.
    pub file: String,
    /// Line number (1-based).
    pub line: usize,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

/// Every error found in a file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The errors, in line order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Error of [`SystemConf::load`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file has errors.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

impl SystemConf {
    /// Reads and parses a system.conf file.
    pub fn load(path: &Path) -> Result<SystemConf, LoadError> {
        let text = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        SystemConf::parse(&name, &String::from_utf8_lossy(&text)).map_err(LoadError::Invalid)
    }

    /// Parses system.conf text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<SystemConf, ConfigErrors> {
        let mut parser = Parser {
            conf: SystemConf::default(),
            errors: Vec::new(),
            file,
        };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if let Err(kind) = parser.line(line, content) {
                parser.errors.push(ConfigError {
                    file: file.to_owned(),
                    line,
                    kind,
                });
            }
        }
        if parser.errors.is_empty() {
            Ok(parser.conf)
        } else {
            Err(ConfigErrors {
                errors: parser.errors,
            })
        }
    }

    /// The law of `chan`: what `alaw=`/`mulaw=`/`deflaw=` set, else the span default.
    pub fn law_of(&self, chan: i32) -> Law {
        self.laws.get(&chan).copied().unwrap_or(Law::Default)
    }

    /// The CHANCONFIG request for `chan`, if it has signalling.
    pub fn channel_config(&self, chan: i32) -> Option<ChannelConfig> {
        self.channels.get(&chan).map(|c| ChannelConfig {
            chan,
            sigtype: c.sigtype,
            deflaw: self.law_of(chan),
            master: c.master,
            idlebits: c.idlebits,
            netdev_name: c.netdev_name.clone(),
        })
    }
}

struct Parser<'a> {
    conf: SystemConf,
    errors: Vec<ConfigError>,
    file: &'a str,
}

const RADIO_KEYWORDS: &[&str] = &[
    "ctcss",
    "dcsrx",
    "rxdcs",
    "tx",
    "debouncetime",
    "bursttime",
    "exttone",
    "invertcor",
    "corthresh",
    "rxgain",
    "txgain",
    "deemp",
    "preemp",
    "channel",
    "channels",
];

const SIGNALLING_KEYWORDS: &[&str] = &[
    "e&m", "e&me1", "fxsls", "fxsgs", "fxsks", "fxols", "fxogs", "fxoks", "rawhdlc", "nethdlc",
    "fcshdlc", "hardhdlc", "mtp2", "dchan", "bchan", "indclear", "clear", "unused", "cas", "dacs",
    "dacsrbs", "user",
];

fn number(what: &'static str, text: &str) -> Result<i32, ConfigErrorKind> {
    text.trim()
        .parse::<i32>()
        .map_err(|_| ConfigErrorKind::NotANumber {
            what,
            text: text.trim().to_owned(),
        })
}

fn in_range(what: &'static str, value: i32, min: i32, max: i32) -> Result<i32, ConfigErrorKind> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigErrorKind::OutOfRange {
            what,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        })
    }
}

/// Parses a channel list (`1-15,17-31`, `5`, `1-3, 7`) into ascending channel numbers.
pub fn parse_channel_list(text: &str) -> Result<BTreeSet<i32>, ConfigErrorKind> {
    let bad = |reason: String| ConfigErrorKind::BadChannelList {
        text: text.to_owned(),
        reason,
    };
    let mut chans = BTreeSet::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("empty item".to_owned()));
        }
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => {
                let a = a
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| bad(format!("{item:?} is not <first>-<last>")))?;
                let b = b
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| bad(format!("{item:?} is not <first>-<last>")))?;
                (a, b)
            }
            None => {
                let n = item
                    .parse::<i32>()
                    .map_err(|_| bad(format!("{item:?} is not a channel number")))?;
                (n, n)
            }
        };
        for n in [start, end] {
            if !(1..=MAX_CHANNEL).contains(&n) {
                return Err(bad(format!("channel {n} is outside 1..={MAX_CHANNEL}")));
            }
        }
        if start > end {
            return Err(bad(format!("range {item:?} ends before it starts")));
        }
        chans.extend(start..=end);
    }
    Ok(chans)
}

impl Parser<'_> {
    fn line(&mut self, line: usize, content: &str) -> Result<(), ConfigErrorKind> {
        let Some((key, value)) = content.split_once('=') else {
            return Err(ConfigErrorKind::Syntax(content.to_owned()));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if key.is_empty() || value.is_empty() {
            return Err(ConfigErrorKind::Syntax(content.to_owned()));
        }
        match key.as_str() {
            "span" => self.span(line, value),
            "dynamic" => self.dynamic(line, value),
            "loadzone" => {
                self.conf.load_zones.push(value.to_owned());
                Ok(())
            }
            "defaultzone" => {
                self.conf.default_zone = Some(value.to_owned());
                Ok(())
            }
            "alaw" | "mulaw" | "deflaw" => {
                let law = match key.as_str() {
                    "alaw" => Law::ALaw,
                    "mulaw" => Law::MuLaw,
                    _ => Law::Default,
                };
                for chan in parse_channel_list(value)? {
                    self.conf.laws.insert(chan, law);
                }
                Ok(())
            }
            "echocanceller" => self.echocanceller(value),
            "56k" => {
                self.conf.hdlc_56k.extend(parse_channel_list(value)?);
                Ok(())
            }
            k if SIGNALLING_KEYWORDS.contains(&k) => self.signalling(line, k, value),
            k if RADIO_KEYWORDS.contains(&k) => {
                Err(ConfigErrorKind::UnsupportedKeyword(k.to_owned()))
            }
            _ => Err(ConfigErrorKind::UnknownKeyword(key)),
        }
    }

    fn span(&mut self, line: usize, value: &str) -> Result<(), ConfigErrorKind> {
        let fields: Vec<&str> = value.split(',').map(str::trim).collect();
        if !(5..=9).contains(&fields.len()) {
            return Err(ConfigErrorKind::SpanFieldCount(fields.len()));
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let span = in_range("span number", number("span number", field(0))?, 1, MAX_SPAN)?;
        let timing = in_range("timing", number("timing", field(1))?, 0, MAX_TIMING)?;
        let lbo = in_range("line build-out", number("line build-out", field(2))?, 0, 7)?;
        let framing = match field(3).to_ascii_lowercase().as_str() {
            "d4" => Framing::D4,
            "esf" => Framing::Esf,
            "ccs" => Framing::Ccs,
            "cas" => Framing::Cas,
            _ => {
                return Err(ConfigErrorKind::UnknownFraming {
                    span,
                    text: field(3).to_owned(),
                });
            }
        };
        let coding = match field(4).to_ascii_lowercase().as_str() {
            "ami" => Coding::Ami,
            "b8zs" => Coding::B8zs,
            "hdb3" => Coding::Hdb3,
            _ => {
                return Err(ConfigErrorKind::UnknownCoding {
                    span,
                    text: field(4).to_owned(),
                });
            }
        };
        let mut s = SpanLine {
            line,
            span,
            timing,
            lbo,
            framing,
            coding,
            crc4: false,
            yellow: false,
            nt: false,
            term: false,
        };
        for option in fields.iter().skip(5) {
            match option.to_ascii_lowercase().as_str() {
                "crc4" => s.crc4 = true,
                "yellow" => s.yellow = true,
                "nt" => s.nt = true,
                "te" => s.nt = false,
                "term" => s.term = true,
                _ => {
                    return Err(ConfigErrorKind::UnknownSpanOption {
                        span,
                        text: (*option).to_owned(),
                    });
                }
            }
        }
        if let Some(first) = self.conf.spans.iter().find(|x| x.span == span) {
            return Err(ConfigErrorKind::DuplicateSpan {
                span,
                first_line: first.line,
            });
        }
        self.conf.spans.push(s);
        Ok(())
    }

    fn dynamic(&mut self, line: usize, value: &str) -> Result<(), ConfigErrorKind> {
        let fields: Vec<&str> = value.split(',').map(str::trim).collect();
        let [driver, address, channels, timing] = fields.as_slice() else {
            return Err(ConfigErrorKind::DynamicFieldCount(fields.len()));
        };
        let channels = in_range(
            "dynamic span channels",
            number("dynamic span channels", channels)?,
            1,
            MAX_CHANNEL,
        )?;
        let timing = in_range("timing", number("timing", timing)?, 0, MAX_TIMING)?;
        for (what, text, max) in [("driver", driver, 19), ("address", address, 39)] {
            if text.len() > max {
                return Err(ConfigErrorKind::NameTooLong {
                    what,
                    text: (*text).to_owned(),
                    max,
                });
            }
        }
        self.conf.dynamic_spans.push(DynamicSpanLine {
            line,
            driver: (*driver).to_owned(),
            address: (*address).to_owned(),
            channels,
            timing,
        });
        Ok(())
    }

    fn echocanceller(&mut self, value: &str) -> Result<(), ConfigErrorKind> {
        let (name, list) = value
            .split_once(',')
            .ok_or(ConfigErrorKind::EchoCancellerWithoutChannels)?;
        let name = name.trim();
        if name.len() > 15 {
            return Err(ConfigErrorKind::NameTooLong {
                what: "echo canceller name",
                text: name.to_owned(),
                max: 15,
            });
        }
        if list.trim().is_empty() {
            return Err(ConfigErrorKind::EchoCancellerWithoutChannels);
        }
        for chan in parse_channel_list(list)? {
            self.conf.echo_cancellers.insert(chan, name.to_owned());
        }
        Ok(())
    }

    fn signalling(
        &mut self,
        line: usize,
        keyword: &str,
        value: &str,
    ) -> Result<(), ConfigErrorKind> {
        let (list, extra) = match value.split_once(':') {
            Some((l, e)) => (l, Some(e.trim())),
            None => (value, None),
        };
        let chans = parse_channel_list(list)?;
        let idlebits = if matches!(keyword, "cas" | "user") {
            parse_idle_bits(extra)?
        } else {
            0
        };
        let mut dacs_partner = if matches!(keyword, "dacs" | "dacsrbs") {
            let partner = extra
                .and_then(|e| e.parse::<i32>().ok())
                .filter(|p| (1..=MAX_CHANNEL).contains(p))
                .ok_or_else(|| ConfigErrorKind::MissingDacsPartner {
                    keyword: keyword.to_owned(),
                })?;
            Some(partner)
        } else {
            None
        };
        let netdev_name = if keyword == "nethdlc" {
            let name = extra.unwrap_or("");
            if name.len() > 15 {
                return Err(ConfigErrorKind::NameTooLong {
                    what: "network device name",
                    text: name.to_owned(),
                    max: 15,
                });
            }
            name.to_owned()
        } else {
            String::new()
        };
        // Channels after the first of a clear/HDLC group are its slaves.
        let grouped = matches!(keyword, "clear" | "rawhdlc" | "nethdlc" | "fcshdlc");
        let mut master: Option<i32> = None;
        for chan in chans {
            if let Some(first) = self.conf.channels.get(&chan) {
                // Report and keep going, as dahdi_cfg does.
                let kind = ConfigErrorKind::ChannelAlreadyConfigured {
                    chan,
                    keyword: first.keyword.clone(),
                    first_line: first.line,
                };
                self.errors.push(ConfigError {
                    file: self.file.to_owned(),
                    line,
                    kind,
                });
                continue;
            }
            let mut entry = ChannelLine {
                line,
                keyword: keyword.to_owned(),
                sigtype: SigType::None,
                master: chan,
                idlebits,
                netdev_name: String::new(),
            };
            entry.sigtype = match keyword {
                "e&m" => SigType::Em,
                "e&me1" => SigType::EmE1,
                "fxsls" => SigType::FxsLs,
                "fxsgs" => SigType::FxsGs,
                "fxsks" => SigType::FxsKs,
                "fxols" => SigType::FxoLs,
                "fxogs" => SigType::FxoGs,
                "fxoks" => SigType::FxoKs,
                "cas" | "user" => SigType::Cas,
                "unused" => SigType::None,
                "bchan" | "indclear" => SigType::Clear,
                "dchan" => SigType::HdlcFcs,
                "hardhdlc" => SigType::HardHdlc,
                "mtp2" => SigType::Mtp2,
                "dacs" | "dacsrbs" => {
                    let sig = if keyword == "dacs" {
                        SigType::Dacs
                    } else {
                        SigType::DacsRbs
                    };
                    let partner = dacs_partner.unwrap_or(0);
                    entry.idlebits = partner;
                    self.dacs_partner(line, keyword, sig, partner, chan)?;
                    dacs_partner = Some(partner + 1);
                    sig
                }
                grouped_kw => {
                    let own = match grouped_kw {
                        "clear" => SigType::Clear,
                        "rawhdlc" => SigType::HdlcRaw,
                        "nethdlc" => SigType::HdlcNet,
                        _ => SigType::HdlcFcs,
                    };
                    match (grouped, master) {
                        (true, Some(m)) => {
                            entry.master = m;
                            SigType::Slave
                        }
                        _ => {
                            master = Some(chan);
                            entry.netdev_name = netdev_name.clone();
                            own
                        }
                    }
                }
            };
            self.conf.channels.insert(chan, entry);
        }
        Ok(())
    }

    fn dacs_partner(
        &mut self,
        line: usize,
        keyword: &str,
        sig: SigType,
        partner: i32,
        chan: i32,
    ) -> Result<(), ConfigErrorKind> {
        if !(1..=MAX_CHANNEL).contains(&partner) {
            return Err(ConfigErrorKind::MissingDacsPartner {
                keyword: keyword.to_owned(),
            });
        }
        if let Some(first) = self.conf.channels.get(&partner) {
            return Err(ConfigErrorKind::ChannelAlreadyConfigured {
                chan: partner,
                keyword: first.keyword.clone(),
                first_line: first.line,
            });
        }
        self.conf.channels.insert(
            partner,
            ChannelLine {
                line,
                keyword: keyword.to_owned(),
                sigtype: sig,
                master: partner,
                idlebits: chan,
                netdev_name: String::new(),
            },
        );
        Ok(())
    }
}

fn parse_idle_bits(extra: Option<&str>) -> Result<i32, ConfigErrorKind> {
    let text = extra.unwrap_or("");
    let bits: Vec<char> = text.chars().collect();
    if bits.len() != 4 || bits.iter().any(|c| *c != '0' && *c != '1') {
        return Err(ConfigErrorKind::BadIdleBits(text.to_owned()));
    }
    let mut value = 0;
    for (c, bit) in bits.iter().zip([
        abi::DAHDI_ABIT,
        abi::DAHDI_BBIT,
        abi::DAHDI_CBIT,
        abi::DAHDI_DBIT,
    ]) {
        if *c == '1' {
            value |= bit;
        }
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Applying a configuration.
// ---------------------------------------------------------------------------------------------

/// Options of [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOptions {
    /// Send CHANCONFIG even for channels already configured this way (dahdi_cfg `-f`).
    pub force: bool,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Spans given SPANCONFIG, in order.
    pub spans_configured: Vec<i32>,
    /// Channels given CHANCONFIG.
    pub channels_configured: Vec<i32>,
    /// Channels already configured this way (no CHANCONFIG sent).
    pub channels_unchanged: Vec<i32>,
    /// Spans started.
    pub spans_started: Vec<i32>,
    /// Channels whose HDLC rate was set (56 or 64 kbit/s).
    pub hdlc_rates_set: Vec<(i32, i32)>,
    /// Things dahdi_cfg would do that this library leaves out, for the operator.
    pub notes: Vec<String>,
}

/// A step of [`apply`] failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct ApplyError {
    /// The step (`DAHDI_CHANCONFIG for channel 16 (system.conf line 12)`).
    pub step: String,
    /// The driver's error.
    #[source]
    pub source: TdmError,
}

/// Applies `conf` in dahdi_cfg's order: SPANCONFIG for each span (file order); for each
/// configured channel in ascending order GET_PARAMS (with RETURN_MASTER), CHANCONFIG when
/// something differs (or `force`), and ATTACH_ECHOCAN; STARTUP for each span; then for each
/// configured channel open `channel`, SPECIFY and HDLC_RATE (56 for `56k=` channels, else 64).
///
/// Tone zones (`loadzone=`/`defaultzone=`) and `dynamic=` spans are not applied: tone zone
/// data comes from libtonezone, and spanbridge generates its tones itself. They are listed in
/// [`ApplyReport::notes`].
pub fn apply<B: Backend>(
    ctl: &Ctl<B>,
    conf: &SystemConf,
    options: ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let mut report = ApplyReport::default();
    let step = |what: String| move |source: TdmError| ApplyError { step: what, source };

    for span in &conf.spans {
        ctl.span_config(&span.to_line_config())
            .map_err(step(format!(
                "DAHDI_SPANCONFIG for span {} (line {})",
                span.span, span.line
            )))?;
        report.spans_configured.push(span.span);
    }

    for (&chan, line) in &conf.channels {
        if line.sigtype == SigType::None {
            continue;
        }
        let Some(wanted) = conf.channel_config(chan) else {
            continue;
        };
        let needs_update = options.force
            || match ctl.channel_state(chan) {
                Ok((current, master)) => {
                    current.sigtype != wanted.sigtype
                        || (wanted.deflaw != Law::Default && current.law != wanted.deflaw)
                        || master != wanted.master
                        || current.idlebits != wanted.idlebits
                }
                // dahdi_cfg configures the channel whenever GET_PARAMS fails.
                Err(_) => true,
            };
        if needs_update {
            ctl.chan_config(&wanted).map_err(step(format!(
                "DAHDI_CHANCONFIG for channel {chan} as {} (line {})",
                line.keyword, line.line
            )))?;
            report.channels_configured.push(chan);
        } else {
            report.channels_unchanged.push(chan);
        }
        let echocan = conf
            .echo_cancellers
            .get(&chan)
            .map(String::as_str)
            .unwrap_or("");
        ctl.attach_echocan(chan, echocan)
            .map_err(step(format!("DAHDI_ATTACH_ECHOCAN for channel {chan}")))?;
    }

    if !conf.load_zones.is_empty() || conf.default_zone.is_some() {
        report.notes.push(format!(
            "tone zones not loaded (loadzone={:?}, defaultzone={:?}): spanbridge generates call progress tones itself",
            conf.load_zones, conf.default_zone
        ));
    }
    if !conf.dynamic_spans.is_empty() {
        report.notes.push(format!(
            "{} dynamic span(s) not created: create them with dahdi_cfg",
            conf.dynamic_spans.len()
        ));
    }

    for span in &conf.spans {
        ctl.startup(span.span)
            .map_err(step(format!("DAHDI_STARTUP for span {}", span.span)))?;
        report.spans_started.push(span.span);
    }

    for (&chan, line) in &conf.channels {
        if line.sigtype == SigType::None {
            continue;
        }
        // dahdi_cfg skips channels it cannot open (in use, not configured).
        let Ok(channel) = Channel::open(ctl.backend().clone(), chan) else {
            continue;
        };
        let rate = if conf.hdlc_56k.contains(&chan) {
            56
        } else {
            64
        };
        channel
            .set_hdlc_rate(rate)
            .map_err(step(format!("DAHDI_HDLC_RATE {rate} for channel {chan}")))?;
        report.hdlc_rates_set.push((chan, rate));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1_PAIR: &str = "\
# Two E1 spans for a PRI loop
loadzone = us
defaultzone=us

span=1,1,0,ccs,hdb3,crc4
span=2,0,0,ccs,hdb3,crc4   # timing from span 1
bchan=1-15,17-31
dchan=16
bchan=32-46,48-62
dchan=47
alaw=1-62
echocanceller=mg2,1-15,17-31
";

    fn kind_of(text: &str) -> ConfigErrorKind {
        let errs = SystemConf::parse("system.conf", text).unwrap_err();
        errs.errors[0].kind.clone()
    }

    #[test]
    fn parses_an_e1_pri_pair() {
        let conf = SystemConf::parse("system.conf", E1_PAIR).unwrap();
        assert_eq!(conf.spans.len(), 2);
        let s1 = &conf.spans[0];
        assert_eq!((s1.span, s1.timing, s1.lbo), (1, 1, 0));
        assert_eq!(s1.line, 5);
        // Observed from dahdi_cfg: ccs,hdb3,crc4 is 0x700.
        assert_eq!(s1.line_config_bits(), 0x700);
        assert_eq!(conf.spans[1].timing, 0);
        assert_eq!(conf.channels.len(), 62);
        assert_eq!(conf.channels[&16].sigtype, SigType::HdlcFcs);
        assert_eq!(conf.channels[&16].sigtype.to_raw(), 0x380);
        assert_eq!(conf.channels[&1].sigtype.to_raw(), 0x80);
        assert_eq!(conf.channels[&47].sigtype, SigType::HdlcFcs);
        assert_eq!(conf.law_of(62), Law::ALaw);
        assert_eq!(conf.echo_cancellers.len(), 30);
        assert!(!conf.echo_cancellers.contains_key(&16));
        assert_eq!(conf.load_zones, vec!["us".to_owned()]);
        assert_eq!(conf.default_zone.as_deref(), Some("us"));
        let cc = conf.channel_config(16).unwrap();
        assert_eq!((cc.chan, cc.master, cc.deflaw), (16, 16, Law::ALaw));
    }

    #[test]
    fn analog_cas_em_hardhdlc_and_t1_lines() {
        let text = "\
SPAN=3,2,0,esf,b8zs
e&m=1-4
E&ME1=5
fxsls=6
fxsks=7
fxols=8
fxoks=9
cas=10-11:1101
hardhdlc=12
span=4,0,0,d4,ami,yellow
unused=13
mulaw=6-9
";
        let conf = SystemConf::parse("system.conf", text).unwrap();
        assert_eq!(
            conf.spans[0].line_config_bits(),
            abi::DAHDI_CONFIG_ESF | abi::DAHDI_CONFIG_B8ZS
        );
        assert_eq!(
            conf.spans[1].line_config_bits(),
            abi::DAHDI_CONFIG_D4 | abi::DAHDI_CONFIG_AMI | abi::DAHDI_CONFIG_NOTOPEN
        );
        let sig = |c: i32| conf.channels[&c].sigtype;
        assert_eq!(sig(1), SigType::Em);
        assert_eq!(sig(5), SigType::EmE1);
        assert_eq!(sig(6).to_raw(), abi::DAHDI_SIG_FXSLS);
        assert_eq!(sig(7).to_raw(), abi::DAHDI_SIG_FXSKS);
        assert_eq!(sig(8).to_raw(), abi::DAHDI_SIG_FXOLS);
        assert_eq!(sig(9).to_raw(), abi::DAHDI_SIG_FXOKS);
        assert_eq!(sig(10), SigType::Cas);
        assert_eq!(
            conf.channels[&11].idlebits,
            abi::DAHDI_ABIT | abi::DAHDI_BBIT | abi::DAHDI_DBIT
        );
        assert_eq!(sig(12).to_raw(), 0x80080);
        assert_eq!(sig(13), SigType::None);
        assert_eq!(conf.law_of(6), Law::MuLaw);
        assert_eq!(conf.law_of(1), Law::Default);
    }

    #[test]
    fn clear_groups_make_slaves_and_dacs_pairs_channels() {
        let text = "clear=1-3\nfcshdlc=4-5\nnethdlc=6-7:hdlc0\ndacs=10-11:20\n56k=4\n";
        let conf = SystemConf::parse("system.conf", text).unwrap();
        assert_eq!(conf.channels[&1].sigtype, SigType::Clear);
        assert_eq!(conf.channels[&2].sigtype, SigType::Slave);
        assert_eq!(conf.channels[&3].master, 1);
        assert_eq!(conf.channels[&4].sigtype, SigType::HdlcFcs);
        assert_eq!(conf.channels[&5].master, 4);
        assert_eq!(conf.channels[&6].netdev_name, "hdlc0");
        assert_eq!(conf.channels[&7].sigtype, SigType::Slave);
        assert_eq!(conf.channels[&10].idlebits, 20);
        assert_eq!(conf.channels[&20].idlebits, 10);
        assert_eq!(conf.channels[&21].idlebits, 11);
        assert_eq!(conf.channels[&21].sigtype, SigType::Dacs);
        assert!(conf.hdlc_56k.contains(&4));
    }

    #[test]
    fn channel_lists() {
        let l = parse_channel_list("1-15,17-31").unwrap();
        assert_eq!(l.len(), 30);
        assert!(!l.contains(&16));
        assert_eq!(
            parse_channel_list(" 3 , 1-2")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        for bad in ["", "1,,2", "0", "1024", "5-3", "a-b", "1-", "x", "1-2-3"] {
            assert!(
                matches!(
                    parse_channel_list(bad),
                    Err(ConfigErrorKind::BadChannelList { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_span() {
        let errs = SystemConf::parse("system.conf", "# x\n\nspan=3,1,0,ccs,xyz\n").unwrap_err();
        assert_eq!(
            errs.to_string(),
            "system.conf:3: span 3: unknown line code \"xyz\" (ami, b8zs or hdb3)"
        );
    }

    #[test]
    fn every_error_variant_is_reported() {
        assert!(matches!(kind_of("justtext"), ConfigErrorKind::Syntax(_)));
        assert!(matches!(kind_of("bchan="), ConfigErrorKind::Syntax(_)));
        assert!(matches!(kind_of("=1"), ConfigErrorKind::Syntax(_)));
        assert_eq!(
            kind_of("frobnicate=1"),
            ConfigErrorKind::UnknownKeyword("frobnicate".into())
        );
        assert_eq!(
            kind_of("ctcss=1,2,3"),
            ConfigErrorKind::UnsupportedKeyword("ctcss".into())
        );
        assert_eq!(
            kind_of("span=1,1,0,ccs"),
            ConfigErrorKind::SpanFieldCount(4)
        );
        assert_eq!(
            kind_of("span=1,1,0,ccs,hdb3,crc4,a,b,c,d"),
            ConfigErrorKind::SpanFieldCount(10)
        );
        assert!(matches!(
            kind_of("span=x,1,0,ccs,hdb3"),
            ConfigErrorKind::NotANumber {
                what: "span number",
                ..
            }
        ));
        assert!(matches!(
            kind_of("span=1,1,12abc,ccs,hdb3"),
            ConfigErrorKind::NotANumber {
                what: "line build-out",
                ..
            }
        ));
        assert!(matches!(
            kind_of("span=1,256,0,ccs,hdb3"),
            ConfigErrorKind::OutOfRange {
                what: "timing",
                value: 256,
                ..
            }
        ));
        assert!(matches!(
            kind_of("span=1,1,8,ccs,hdb3"),
            ConfigErrorKind::OutOfRange {
                what: "line build-out",
                ..
            }
        ));
        assert!(matches!(
            kind_of("span=0,1,0,ccs,hdb3"),
            ConfigErrorKind::OutOfRange {
                what: "span number",
                ..
            }
        ));
        assert!(matches!(
            kind_of("span=1,1,0,sf,hdb3"),
            ConfigErrorKind::UnknownFraming { span: 1, .. }
        ));
        assert!(matches!(
            kind_of("span=1,1,0,ccs,hdb3,crc5"),
            ConfigErrorKind::UnknownSpanOption { span: 1, .. }
        ));
        assert_eq!(
            kind_of("span=1,1,0,ccs,hdb3\nspan=1,0,0,ccs,hdb3"),
            ConfigErrorKind::DuplicateSpan {
                span: 1,
                first_line: 1
            }
        );
        assert!(matches!(
            kind_of("bchan=1-x"),
            ConfigErrorKind::BadChannelList { .. }
        ));
        assert_eq!(
            kind_of("bchan=1-15\ndchan=15"),
            ConfigErrorKind::ChannelAlreadyConfigured {
                chan: 15,
                keyword: "bchan".into(),
                first_line: 1
            }
        );
        assert_eq!(
            kind_of("cas=1"),
            ConfigErrorKind::BadIdleBits(String::new())
        );
        assert_eq!(
            kind_of("cas=1:1121"),
            ConfigErrorKind::BadIdleBits("1121".into())
        );
        assert!(matches!(
            kind_of("dacs=1-2"),
            ConfigErrorKind::MissingDacsPartner { .. }
        ));
        assert_eq!(
            kind_of("echocanceller=mg2"),
            ConfigErrorKind::EchoCancellerWithoutChannels
        );
        assert!(matches!(
            kind_of("echocanceller=averyveryverylongname,1"),
            ConfigErrorKind::NameTooLong { .. }
        ));
        assert_eq!(
            kind_of("dynamic=eth,x,5"),
            ConfigErrorKind::DynamicFieldCount(3)
        );
    }

    #[test]
    fn all_errors_are_collected_with_their_lines() {
        let errs = SystemConf::parse("f.conf", "x\nbchan=1\nspan=1\nbchan=1\n").unwrap_err();
        let lines: Vec<usize> = errs.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 3, 4]);
        assert!(errs.to_string().lines().all(|l| l.starts_with("f.conf:")));
    }

    #[test]
    fn load_reports_a_missing_file_and_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.conf");
        assert!(matches!(
            SystemConf::load(&missing),
            Err(LoadError::Read { .. })
        ));
        let path = dir.path().join("system.conf");
        std::fs::write(&path, "span=1,1,0,ccs,xyz\n").unwrap();
        let err = SystemConf::load(&path).unwrap_err();
        assert!(
            err.to_string().starts_with("system.conf:1: span 1"),
            "{err}"
        );
        std::fs::write(&path, E1_PAIR).unwrap();
        assert_eq!(SystemConf::load(&path).unwrap().spans.len(), 2);
    }

    /// A backend that records every request and answers like DAHDI for a few cases.
    mod recorded {
        use super::*;
        use crate::backend::{Node, Op};
        use std::io;
        use std::path::PathBuf;
        use std::sync::{Arc, Mutex};

        #[derive(Debug, Default)]
        pub(super) struct Recorder {
            pub log: Mutex<Vec<String>>,
            /// Channels that GET_PARAMS reports as already configured: (sigtype, master).
            pub configured: BTreeMap<i32, (i32, i32)>,
            /// Channels whose open fails with EBUSY.
            pub busy: BTreeSet<i32>,
        }

        impl Backend for Recorder {
            type Handle = Node;

            fn open(&self, node: Node, _nonblocking: bool) -> io::Result<Node> {
                if let Node::Channel(n) = node {
                    if self.busy.contains(&n) {
                        return Err(io::Error::from_raw_os_error(libc::EBUSY));
                    }
                    self.log.lock().unwrap().push(format!("SPECIFY {n}"));
                }
                Ok(node)
            }

            fn read(&self, _: &Node, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }

            fn write(&self, _: &Node, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }

            fn ioctl(&self, handle: &Node, op: Op<'_>) -> io::Result<()> {
                let entry = match op {
                    Op::SpanConfig(lc) => format!(
                        "SPANCONFIG {} sync={} lc=0x{:x}",
                        lc.span, lc.sync, lc.lineconfig
                    ),
                    Op::GetParams(p) => {
                        let chan = p.channo & 0xffff;
                        let Some(&(sig, master)) = self.configured.get(&chan) else {
                            self.log
                                .lock()
                                .unwrap()
                                .push(format!("GET_PARAMS {chan} EINVAL"));
                            return Err(io::Error::from_raw_os_error(libc::EINVAL));
                        };
                        p.sigtype = sig;
                        p.curlaw = abi::DAHDI_LAW_ALAW;
                        p.channo = (master << 16) | chan;
                        format!("GET_PARAMS {chan}")
                    }
                    Op::ChanConfig(cc) => format!(
                        "CHANCONFIG {} sig=0x{:x} law={}",
                        cc.chan, cc.sigtype, cc.deflaw
                    ),
                    Op::AttachEchoCan(ae) => format!(
                        "ATTACH_ECHOCAN {} {:?}",
                        ae.chan,
                        crate::abi::c_str_field(&ae.echocan)
                    ),
                    Op::Startup(span) => format!("STARTUP {span}"),
                    Op::HdlcRate(rate) => format!("HDLC_RATE {handle:?} {rate}"),
                    other => format!("{other:?}"),
                };
                self.log.lock().unwrap().push(entry);
                Ok(())
            }

            fn path_of(&self, node: Node) -> PathBuf {
                PathBuf::from("/sim").join(node.relative_path())
            }
        }

        #[test]
        fn apply_issues_dahdi_cfg_order() {
            let conf = SystemConf::parse(
                "system.conf",
                "span=2,0,0,ccs,hdb3,crc4\nspan=1,1,0,ccs,hdb3,crc4\nbchan=1-2\ndchan=3\n\
                 alaw=1-3\nechocanceller=mg2,1\n",
            )
            .unwrap();
            let backend = Arc::new(Recorder {
                // Channel 2 is already a clear channel mastered by itself: no CHANCONFIG.
                configured: [(2, (abi::DAHDI_SIG_CLEAR, 2))].into_iter().collect(),
                busy: [3].into_iter().collect(),
                ..Default::default()
            });
            let ctl = Ctl::open(backend.clone()).unwrap();
            let report = apply(&ctl, &conf, ApplyOptions::default()).unwrap();
            let log = backend.log.lock().unwrap().clone();
            assert_eq!(
                log,
                vec![
                    "SPANCONFIG 2 sync=0 lc=0x700",
                    "SPANCONFIG 1 sync=1 lc=0x700",
                    "GET_PARAMS 1 EINVAL",
                    "CHANCONFIG 1 sig=0x80 law=2",
                    "ATTACH_ECHOCAN 1 \"mg2\"",
                    "GET_PARAMS 2",
                    "ATTACH_ECHOCAN 2 \"\"",
                    "GET_PARAMS 3 EINVAL",
                    "CHANCONFIG 3 sig=0x380 law=2",
                    "ATTACH_ECHOCAN 3 \"\"",
                    "STARTUP 2",
                    "STARTUP 1",
                    "SPECIFY 1",
                    "HDLC_RATE Channel(1) 64",
                    "SPECIFY 2",
                    "HDLC_RATE Channel(2) 64",
                ],
                "channel 3 is busy, so its HDLC rate is skipped as dahdi_cfg does"
            );
            assert_eq!(report.spans_configured, vec![2, 1]);
            assert_eq!(report.channels_configured, vec![1, 3]);
            assert_eq!(report.channels_unchanged, vec![2]);
            assert_eq!(report.spans_started, vec![2, 1]);
            assert_eq!(report.hdlc_rates_set, vec![(1, 64), (2, 64)]);
            assert!(report.notes.is_empty());
        }

        #[test]
        fn force_configures_every_channel_and_zones_are_noted() {
            let conf = SystemConf::parse(
                "system.conf",
                "loadzone=de\nspan=1,1,0,ccs,hdb3\nbchan=1\n56k=1\n",
            )
            .unwrap();
            let backend = Arc::new(Recorder {
                configured: [(1, (abi::DAHDI_SIG_CLEAR, 1))].into_iter().collect(),
                ..Default::default()
            });
            let ctl = Ctl::open(backend.clone()).unwrap();
            let report = apply(&ctl, &conf, ApplyOptions { force: true }).unwrap();
            assert_eq!(report.channels_configured, vec![1]);
            assert_eq!(report.hdlc_rates_set, vec![(1, 56)]);
            assert_eq!(report.notes.len(), 1);
            assert!(report.notes[0].contains("de"), "{:?}", report.notes);
            let log = backend.log.lock().unwrap();
            assert!(!log.iter().any(|l| l.starts_with("GET_PARAMS")), "{log:?}");
        }
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        fn line() -> impl Strategy<Value = String> {
            let keyword = prop::sample::select(vec![
                "span",
                "bchan",
                "dchan",
                "hardhdlc",
                "e&m",
                "e&me1",
                "fxsls",
                "fxoks",
                "cas",
                "dacs",
                "clear",
                "nethdlc",
                "alaw",
                "echocanceller",
                "56k",
                "loadzone",
                "defaultzone",
                "dynamic",
                "ctcss",
                "",
                "#",
            ]);
            (keyword, "[-0-9a-z,:= #]{0,24}").prop_map(|(k, v)| format!("{k}={v}"))
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
                let _ = SystemConf::parse("system.conf", &text);
            }

            #[test]
            fn keyword_shaped_lines_never_panic(lines in prop::collection::vec(line(), 0..30)) {
                let text = lines.join("\n");
                match SystemConf::parse("system.conf", &text) {
                    Ok(conf) => {
                        for chan in conf.channels.keys() {
                            prop_assert!((1..=MAX_CHANNEL).contains(chan));
                        }
                    }
                    Err(errs) => prop_assert!(!errs.errors.is_empty()),
                }
            }
        }
    }
}

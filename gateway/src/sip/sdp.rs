//! SDP (RFC 8866) parsing/serialization and RFC 3264 offer/answer for the audio codecs the
//! gateway carries: PCMU, PCMA, telephone-event (RFC 4733) and Opus, with ptime, direction
//! attributes and rtcp-mux. Codec choice follows a preference list (e.g. a trunk's), so a call
//! whose legs share a codec is never transcoded.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use thiserror::Error;

/// Why an SDP body is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SdpError {
    /// A line is not `x=value` with a known single-letter type.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A mandatory line (v=, o=, s=, t=, or a connection address for a media stream) is missing.
    #[error("missing mandatory {0} line")]
    Missing(&'static str),
    /// No audio stream offers a codec we accept (answer 488 Not Acceptable Here).
    #[error("no offered audio codec is acceptable (offered: {0})")]
    NoCommonCodec(String),
    /// The answer does not match the offer (different number of m-lines, or a codec we did not
    /// offer).
    #[error("answer does not match the offer: {0}")]
    AnswerMismatch(&'static str),
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// a=sendrecv (the default).
    SendRecv,
    /// a=sendonly (e.g. putting the peer on hold).
    SendOnly,
    /// a=recvonly.
    RecvOnly,
    /// a=inactive.
    Inactive,
}

impl Direction {
    fn from_attr(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The answer's direction for an offered direction, given what we want locally
    /// (RFC 3264 §6.1): we may send only if the offerer receives, and receive only if it sends.
    pub fn answer_to(offered: Direction, local: Direction) -> Direction {
        Direction::from_flags(
            local.sends() && offered.receives(),
            local.receives() && offered.sends(),
        )
    }
}

/// An audio codec the gateway can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus (RFC 7587), dynamic payload type, `opus/48000/2`.
    Opus,
}

impl Codec {
    /// Encoding name in rtpmap.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    fn channels(self) -> Option<u8> {
        match self {
            Codec::Opus => Some(2),
            _ => None,
        }
    }

    /// The static payload type, if any.
    pub fn static_pt(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }

    fn default_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
        }
    }

    fn from_rtpmap(map: &RtpMap) -> Option<Codec> {
        let name = map.encoding.as_str();
        if name.eq_ignore_ascii_case("PCMU") && map.clock_rate == 8000 {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") && map.clock_rate == 8000 {
            Some(Codec::Pcma)
        } else if name.eq_ignore_ascii_case("opus") && map.clock_rate == 48000 {
            Some(Codec::Opus)
        } else {
            None
        }
    }
}

/// An `a=rtpmap:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written.
    pub encoding: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels, if given.
    pub channels: Option<u8>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Media type (`audio`, `video`, ...).
    pub kind: String,
    /// Port (0 = stream rejected/disabled).
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, `RTP/SAVPF`, ...).
    pub protocol: String,
    /// Format list (payload types for RTP, as written).
    pub formats: Vec<String>,
    /// Media-level connection address.
    pub connection: Option<IpAddr>,
    /// rtpmap attributes.
    pub rtpmaps: Vec<RtpMap>,
    /// fmtp attributes (payload type, parameters).
    pub fmtps: Vec<(u8, String)>,
    /// a=ptime in ms.
    pub ptime: Option<u32>,
    /// a=maxptime in ms.
    pub maxptime: Option<u32>,
    /// Direction attribute, if present at media level.
    pub direction: Option<Direction>,
    /// a=rtcp-mux present.
    pub rtcp_mux: bool,
    /// Other attributes (name, value), kept in order.
    pub other: Vec<(String, Option<String>)>,
}

impl Media {
    fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some(m.clone());
        }
        // Static payload types may omit rtpmap (RFC 3551).
        let (encoding, clock_rate) = match pt {
            0 => ("PCMU", 8000),
            8 => ("PCMA", 8000),
            _ => return None,
        };
        Some(RtpMap {
            pt,
            encoding: encoding.to_owned(),
            clock_rate,
            channels: None,
        })
    }

    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }

    /// Offered/answered codecs with their payload types, in the order of the m-line.
    pub fn codecs(&self) -> Vec<(Codec, u8)> {
        self.payload_types()
            .filter_map(|pt| {
                self.rtpmap(pt)
                    .and_then(|m| Codec::from_rtpmap(&m))
                    .map(|c| (c, pt))
            })
            .collect()
    }

    /// The telephone-event payload type at `clock_rate`, if offered.
    pub fn telephone_event(&self, clock_rate: u32) -> Option<u8> {
        self.payload_types().find(|pt| {
            self.rtpmap(*pt).is_some_and(|m| {
                m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == clock_rate
            })
        })
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// o= username.
    pub origin_user: String,
    /// o= sess-id.
    pub session_id: u64,
    /// o= sess-version (incremented on every change, RFC 3264 §8).
    pub session_version: u64,
    /// o= unicast address.
    pub origin_addr: IpAddr,
    /// s= line.
    pub session_name: String,
    /// Session-level c= address.
    pub connection: Option<IpAddr>,
    /// Session-level direction.
    pub direction: Option<Direction>,
    /// Other session-level attributes.
    pub attributes: Vec<(String, Option<String>)>,
    /// m= sections.
    pub media: Vec<Media>,
}

fn syntax(line: usize, reason: &'static str) -> SdpError {
    SdpError::Syntax { line, reason }
}

fn parse_conn(v: &str, line: usize) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1 (multicast TTL suffixes are not supported for audio calls)
    let mut it = v.split(' ');
    let (Some("IN"), Some(kind), Some(addr)) = (it.next(), it.next(), it.next()) else {
        return Err(syntax(line, "c= must be IN IP4|IP6 address"));
    };
    let addr = addr.split('/').next().unwrap_or_default();
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| syntax(line, "c= address is not an IP address"))?;
    match (kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(syntax(line, "c= address family does not match the address")),
    }
}

impl SessionDescription {
    /// Parses an SDP body (CRLF or LF line ends).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut sd = SessionDescription {
            origin_user: String::new(),
            session_id: 0,
            session_version: 0,
            origin_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            session_name: String::new(),
            connection: None,
            direction: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };
        let (mut seen_v, mut seen_o, mut seen_s, mut seen_t) = (false, false, false, false);
        for (idx, raw) in text.split('\n').enumerate() {
            let line_no = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .ok_or(syntax(line_no, "line is not type=value"))?;
            if kind.len() != 1 {
                return Err(syntax(line_no, "type must be one letter"));
            }
            match kind {
                "v" => {
                    if value != "0" {
                        return Err(syntax(line_no, "only v=0 is defined"));
                    }
                    seen_v = true;
                }
                "o" => {
                    let f: Vec<&str> = value.split(' ').collect();
                    let [user, id, ver, "IN", _, addr] = f.as_slice() else {
                        return Err(syntax(line_no, "o= needs 6 fields"));
                    };
                    sd.origin_user = (*user).to_owned();
                    sd.session_id = id.parse().map_err(|_| syntax(line_no, "o= sess-id"))?;
                    sd.session_version = ver
                        .parse()
                        .map_err(|_| syntax(line_no, "o= sess-version"))?;
                    // Hostnames are legal here; keep unspecified for those.
                    sd.origin_addr = addr.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    seen_o = true;
                }
                "s" => {
                    sd.session_name = value.to_owned();
                    seen_s = true;
                }
                "t" => seen_t = true,
                "c" => {
                    let ip = parse_conn(value, line_no)?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(ip),
                        None => sd.connection = Some(ip),
                    }
                }
                "m" => {
                    let mut f = value.split(' ');
                    let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next())
                    else {
                        return Err(syntax(line_no, "m= needs media port proto fmt..."));
                    };
                    let port = port.split('/').next().unwrap_or_default();
                    let port: u16 = port.parse().map_err(|_| syntax(line_no, "m= port"))?;
                    let formats: Vec<String> =
                        f.filter(|s| !s.is_empty()).map(str::to_owned).collect();
                    if formats.is_empty() {
                        return Err(syntax(line_no, "m= has no formats"));
                    }
                    sd.media.push(Media {
                        kind: kind.to_owned(),
                        port,
                        protocol: proto.to_owned(),
                        formats,
                        connection: None,
                        rtpmaps: Vec::new(),
                        fmtps: Vec::new(),
                        ptime: None,
                        maxptime: None,
                        direction: None,
                        rtcp_mux: false,
                        other: Vec::new(),
                    });
                }
                "a" => {
                    let (name, val) = match value.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (value, None),
                    };
                    let Some(m) = sd.media.last_mut() else {
                        if let Some(d) = Direction::from_attr(name) {
                            sd.direction = Some(d);
                        } else {
                            sd.attributes
                                .push((name.to_owned(), val.map(str::to_owned)));
                        }
                        continue;
                    };
                    if let Some(d) = Direction::from_attr(name) {
                        m.direction = Some(d);
                        continue;
                    }
                    match (name, val) {
                        ("rtpmap", Some(v)) => {
                            let (pt, rest) = v.split_once(' ').ok_or(syntax(line_no, "rtpmap"))?;
                            let pt: u8 = pt
                                .parse()
                                .map_err(|_| syntax(line_no, "rtpmap payload type"))?;
                            let mut parts = rest.split('/');
                            let encoding = parts.next().unwrap_or_default().to_owned();
                            let clock_rate: u32 = parts
                                .next()
                                .and_then(|c| c.parse().ok())
                                .ok_or(syntax(line_no, "rtpmap clock rate"))?;
                            let channels = match parts.next() {
                                Some(c) => Some(
                                    c.parse().map_err(|_| syntax(line_no, "rtpmap channels"))?,
                                ),
                                None => None,
                            };
                            m.rtpmaps.push(RtpMap {
                                pt,
                                encoding,
                                clock_rate,
                                channels,
                            });
                        }
                        ("fmtp", Some(v)) => {
                            let (pt, rest) = v.split_once(' ').ok_or(syntax(line_no, "fmtp"))?;
                            let pt: u8 = pt
                                .parse()
                                .map_err(|_| syntax(line_no, "fmtp payload type"))?;
                            m.fmtps.push((pt, rest.to_owned()));
                        }
                        ("ptime", Some(v)) => {
                            m.ptime = Some(v.trim().parse().map_err(|_| syntax(line_no, "ptime"))?);
                        }
                        ("maxptime", Some(v)) => {
                            m.maxptime =
                                Some(v.trim().parse().map_err(|_| syntax(line_no, "maxptime"))?);
                        }
                        ("rtcp-mux", None) => m.rtcp_mux = true,
                        _ => m.other.push((name.to_owned(), val.map(str::to_owned))),
                    }
                }
                // b=, z=, k=, r=, i=, u=, e=, p= carry nothing we act on.
                "b" | "z" | "k" | "r" | "i" | "u" | "e" | "p" => {}
                _ => return Err(syntax(line_no, "unknown line type")),
            }
        }
        for (seen, name) in [
            (seen_v, "v="),
            (seen_o, "o="),
            (seen_s, "s="),
            (seen_t, "t="),
        ] {
            if !seen {
                return Err(SdpError::Missing(name));
            }
        }
        if sd.connection.is_none()
            && sd
                .media
                .iter()
                .any(|m| m.port != 0 && m.connection.is_none())
        {
            return Err(SdpError::Missing("c="));
        }
        Ok(sd)
    }

    /// The effective direction of media stream `m` (media level, else session level, else
    /// sendrecv); a 0.0.0.0 connection address (RFC 2543 hold) means that side receives nothing.
    pub fn direction_of(&self, m: &Media) -> Direction {
        let d = m
            .direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv);
        if self.address_of(m).is_some_and(|a| a.is_unspecified()) {
            return Direction::from_flags(d.sends(), false);
        }
        d
    }

    /// The connection address of media stream `m`.
    pub fn address_of(&self, m: &Media) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }

    /// The first audio stream.
    pub fn audio(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.kind == "audio" && m.port != 0)
    }
}

fn ip_kind(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            self.origin_user,
            self.session_id,
            self.session_version,
            ip_kind(&self.origin_addr),
            self.origin_addr
        )?;
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {c}\r\n", ip_kind(c))?;
        }
        write!(f, "t=0 0\r\n")?;
        for (n, v) in &self.attributes {
            write_attr(f, n, v.as_deref())?;
        }
        if let Some(d) = self.direction {
            write!(f, "a={}\r\n", d.as_str())?;
        }
        for m in &self.media {
            write!(
                f,
                "m={} {} {} {}\r\n",
                m.kind,
                m.port,
                m.protocol,
                m.formats.join(" ")
            )?;
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {c}\r\n", ip_kind(c))?;
            }
            for r in &m.rtpmaps {
                write!(f, "a=rtpmap:{} {}/{}", r.pt, r.encoding, r.clock_rate)?;
                if let Some(ch) = r.channels {
                    write!(f, "/{ch}")?;
                }
                write!(f, "\r\n")?;
            }
            for (pt, p) in &m.fmtps {
                write!(f, "a=fmtp:{pt} {p}\r\n")?;
            }
            if let Some(p) = m.ptime {
                write!(f, "a=ptime:{p}\r\n")?;
            }
            if let Some(p) = m.maxptime {
                write!(f, "a=maxptime:{p}\r\n")?;
            }
            if m.rtcp_mux {
                write!(f, "a=rtcp-mux\r\n")?;
            }
            for (n, v) in &m.other {
                write_attr(f, n, v.as_deref())?;
            }
            if let Some(d) = m.direction {
                write!(f, "a={}\r\n", d.as_str())?;
            }
        }
        Ok(())
    }
}

fn write_attr(f: &mut fmt::Formatter<'_>, n: &str, v: Option<&str>) -> fmt::Result {
    match v {
        Some(v) => write!(f, "a={n}:{v}\r\n"),
        None => write!(f, "a={n}\r\n"),
    }
}

/// What one side of a call can do with audio, used to build offers and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Where we receive RTP.
    pub rtp_addr: SocketAddr,
    /// Codecs in order of preference (the trunk's list); only these are offered/accepted.
    pub codecs: Vec<Codec>,
    /// Offer/accept RFC 4733 telephone-event.
    pub telephone_event: bool,
    /// Packetization time in ms (20 unless a trunk says otherwise).
    pub ptime: u32,
    /// What we want: sendrecv normally, sendonly to hold the peer, inactive to stop media.
    pub direction: Direction,
    /// Offer (and accept) rtcp-mux.
    pub rtcp_mux: bool,
}

impl MediaConfig {
    /// PCMU, PCMA and telephone-event at 20 ms, sendrecv, rtcp-mux, on `rtp_addr`.
    pub fn g711(rtp_addr: SocketAddr) -> Self {
        MediaConfig {
            rtp_addr,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime: 20,
            direction: Direction::SendRecv,
            rtcp_mux: true,
        }
    }
}

/// The outcome of an offer/answer exchange for the audio stream: what to send and expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// The codec both sides use.
    pub codec: Codec,
    /// Its payload type (the answerer's choice is bound to the offer's number).
    pub pt: u8,
    /// telephone-event payload type, if both support it.
    pub telephone_event_pt: Option<u8>,
    /// Packetization time to send with.
    pub ptime: u32,
    /// Our direction.
    pub direction: Direction,
    /// Where the peer receives RTP.
    pub remote_rtp: SocketAddr,
    /// Whether RTCP is multiplexed on the RTP port.
    pub rtcp_mux: bool,
}

const TELEPHONE_EVENT_PT: u8 = 101;
const OPUS_TELEPHONE_EVENT_PT: u8 = 110;

fn audio_media(
    cfg: &MediaConfig,
    codecs: &[(Codec, u8)],
    te: Option<(u8, u32)>,
    direction: Direction,
) -> Media {
    let mut formats = Vec::new();
    let mut rtpmaps = Vec::new();
    let mut fmtps = Vec::new();
    for (codec, pt) in codecs {
        formats.push(pt.to_string());
        rtpmaps.push(RtpMap {
            pt: *pt,
            encoding: codec.encoding_name().to_owned(),
            clock_rate: codec.clock_rate(),
            channels: codec.channels(),
        });
        if *codec == Codec::Opus {
            fmtps.push((*pt, "minptime=10;useinbandfec=1".to_owned()));
        }
    }
    if let Some((pt, rate)) = te {
        formats.push(pt.to_string());
        rtpmaps.push(RtpMap {
            pt,
            encoding: "telephone-event".to_owned(),
            clock_rate: rate,
            channels: None,
        });
        fmtps.push((pt, "0-16".to_owned()));
    }
    Media {
        kind: "audio".to_owned(),
        port: cfg.rtp_addr.port(),
        protocol: "RTP/AVP".to_owned(),
        formats,
        connection: None,
        rtpmaps,
        fmtps,
        ptime: Some(cfg.ptime),
        maxptime: None,
        direction: Some(direction),
        rtcp_mux: cfg.rtcp_mux,
        other: Vec::new(),
    }
}

/// Builds an offer with every configured codec in preference order.
pub fn create_offer(
    cfg: &MediaConfig,
    session_id: u64,
    session_version: u64,
) -> SessionDescription {
    let codecs: Vec<(Codec, u8)> = cfg.codecs.iter().map(|c| (*c, c.default_pt())).collect();
    let te = if cfg.telephone_event {
        // telephone-event must share the clock of the codec it accompanies; offer 8 kHz when
        // any G.711 is offered, and a 48 kHz one when Opus is.
        let mut te = None;
        if cfg.codecs.iter().any(|c| c.clock_rate() == 8000) {
            te = Some((TELEPHONE_EVENT_PT, 8000));
        } else if cfg.codecs.contains(&Codec::Opus) {
            te = Some((OPUS_TELEPHONE_EVENT_PT, 48000));
        }
        te
    } else {
        None
    };
    let media = audio_media(cfg, &codecs, te, cfg.direction);
    SessionDescription {
        origin_user: "spanbridge".to_owned(),
        session_id,
        session_version,
        origin_addr: cfg.rtp_addr.ip(),
        session_name: "spanbridge".to_owned(),
        connection: Some(cfg.rtp_addr.ip()),
        direction: None,
        attributes: Vec::new(),
        media: vec![media],
    }
}

/// Answers `offer` (RFC 3264 §6): the first audio stream gets the first codec of *our*
/// preference list that the offer contains (so a trunk preference avoids transcoding), plus
/// telephone-event at that codec's clock if both sides do it; every other stream is rejected
/// with port 0. Errors with [`SdpError::NoCommonCodec`] (answer 488) if nothing fits.
pub fn create_answer(
    offer: &SessionDescription,
    cfg: &MediaConfig,
    session_id: u64,
    session_version: u64,
) -> Result<(SessionDescription, NegotiatedAudio), SdpError> {
    let mut media = Vec::new();
    let mut negotiated = None;
    for m in &offer.media {
        let usable =
            negotiated.is_none() && m.kind == "audio" && m.port != 0 && m.protocol == "RTP/AVP";
        let choice = usable
            .then(|| {
                let offered = m.codecs();
                cfg.codecs
                    .iter()
                    .find_map(|want| offered.iter().find(|(c, _)| c == want).copied())
            })
            .flatten();
        let (Some((codec, pt)), Some(addr)) = (choice, offer.address_of(m)) else {
            // Rejected stream: same formats, port 0 (RFC 3264 §6).
            media.push(Media {
                port: 0,
                connection: None,
                rtpmaps: Vec::new(),
                fmtps: Vec::new(),
                ptime: None,
                maxptime: None,
                direction: None,
                rtcp_mux: false,
                other: Vec::new(),
                ..m.clone()
            });
            continue;
        };
        let te_pt = if cfg.telephone_event {
            m.telephone_event(codec.clock_rate())
        } else {
            None
        };
        let offered_dir = offer.direction_of(m);
        let direction = Direction::answer_to(offered_dir, cfg.direction);
        let rtcp_mux = cfg.rtcp_mux && m.rtcp_mux;
        let ptime = m.ptime.unwrap_or(cfg.ptime);
        let mut am = audio_media(
            &MediaConfig {
                rtcp_mux,
                ptime,
                ..cfg.clone()
            },
            &[(codec, pt)],
            te_pt.map(|p| (p, codec.clock_rate())),
            direction,
        );
        // Keep the offerer's fmtp for the chosen codec (e.g. Opus parameters).
        if let Some((_, p)) = m.fmtps.iter().find(|(p, _)| *p == pt)
            && let Some(f) = am.fmtps.iter_mut().find(|(p, _)| *p == pt)
        {
            f.1 = p.clone();
        }
        media.push(am);
        negotiated = Some(NegotiatedAudio {
            codec,
            pt,
            telephone_event_pt: te_pt,
            ptime,
            direction,
            remote_rtp: SocketAddr::new(addr, m.port),
            rtcp_mux,
        });
    }
    let Some(negotiated) = negotiated else {
        let offered: Vec<String> = offer
            .media
            .iter()
            .flat_map(|m| {
                m.rtpmaps
                    .iter()
                    .map(|r| r.encoding.clone())
                    .chain(m.formats.iter().cloned())
            })
            .collect();
        return Err(SdpError::NoCommonCodec(offered.join(",")));
    };
    let answer = SessionDescription {
        origin_user: "spanbridge".to_owned(),
        session_id,
        session_version,
        origin_addr: cfg.rtp_addr.ip(),
        session_name: "spanbridge".to_owned(),
        connection: Some(cfg.rtp_addr.ip()),
        direction: None,
        attributes: Vec::new(),
        media,
    };
    Ok((answer, negotiated))
}

/// Reads the answer to our `offer`: the codec the answerer picked (it must be one we offered),
/// its address, direction and rtcp-mux.
pub fn accept_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<NegotiatedAudio, SdpError> {
    if offer.media.len() != answer.media.len() {
        return Err(SdpError::AnswerMismatch("m-line count differs"));
    }
    for (om, am) in offer.media.iter().zip(&answer.media) {
        if om.kind != "audio" || am.port == 0 {
            continue;
        }
        let offered = om.codecs();
        let (codec, pt) = am
            .codecs()
            .into_iter()
            .next()
            .ok_or(SdpError::AnswerMismatch("no known codec in the answer"))?;
        if !offered.iter().any(|(c, _)| *c == codec) {
            return Err(SdpError::AnswerMismatch(
                "answer picked a codec we did not offer",
            ));
        }
        let addr = answer.address_of(am).ok_or(SdpError::Missing("c="))?;
        let answered = answer.direction_of(am);
        let ours = Direction::from_flags(answered.receives(), answered.sends());
        return Ok(NegotiatedAudio {
            codec,
            pt,
            telephone_event_pt: am.telephone_event(codec.clock_rate()),
            ptime: am.ptime.or(om.ptime).unwrap_or(20),
            direction: ours,
            remote_rtp: SocketAddr::new(addr, am.port),
            rtcp_mux: om.rtcp_mux && am.rtcp_mux,
        });
    }
    Err(SdpError::NoCommonCodec(
        "answer accepted no audio stream".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINPHONE_OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=Talk\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 7078 RTP/AVP 111 8 0 101\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=rtcp-mux\r\n\
m=video 9078 RTP/AVP 96\r\n\
a=rtpmap:96 VP8/90000\r\n";

    fn local() -> MediaConfig {
        MediaConfig::g711("192.0.2.1:40000".parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn parses_codecs_static_without_rtpmap_and_attributes() {
        let sd = SessionDescription::parse(LINPHONE_OFFER).unwrap();
        let a = sd.audio().unwrap();
        assert_eq!(
            a.codecs(),
            vec![(Codec::Opus, 111), (Codec::Pcma, 8), (Codec::Pcmu, 0)]
        );
        assert_eq!(a.telephone_event(8000), Some(101));
        assert_eq!(a.telephone_event(48000), None);
        assert_eq!(a.ptime, Some(20));
        assert!(a.rtcp_mux);
        assert_eq!(sd.direction_of(a), Direction::SendRecv);
        assert_eq!(sd.media.len(), 2);
    }

    #[test]
    fn serialize_then_parse_is_identity() {
        let sd = SessionDescription::parse(LINPHONE_OFFER).unwrap();
        let again = SessionDescription::parse(&sd.to_string()).unwrap();
        assert_eq!(sd, again);
        let offer = create_offer(&local(), 1, 1);
        assert_eq!(
            SessionDescription::parse(&offer.to_string()).unwrap(),
            offer
        );
    }

    #[test]
    fn answer_follows_our_preference_and_rejects_video() {
        let offer = SessionDescription::parse(LINPHONE_OFFER).unwrap();
        // Our list prefers PCMU although the offer lists PCMA first among G.711.
        let (answer, neg) = create_answer(&offer, &local(), 7, 1).unwrap();
        assert_eq!(neg.codec, Codec::Pcmu);
        assert_eq!(neg.pt, 0);
        assert_eq!(neg.telephone_event_pt, Some(101));
        assert_eq!(
            neg.remote_rtp,
            "192.0.2.10:7078".parse::<SocketAddr>().unwrap()
        );
        assert!(neg.rtcp_mux);
        let text = answer.to_string();
        assert!(text.contains("m=audio 40000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
        assert!(text.contains("a=rtcp-mux\r\n"));
        // A trunk preferring Opus gets Opus with the offer's payload type and fmtp.
        let opus_first = MediaConfig {
            codecs: vec![Codec::Opus, Codec::Pcma],
            ..local()
        };
        let (answer, neg) = create_answer(&offer, &opus_first, 7, 1).unwrap();
        assert_eq!((neg.codec, neg.pt), (Codec::Opus, 111));
        assert_eq!(
            neg.telephone_event_pt, None,
            "the offer has no 48 kHz telephone-event"
        );
        assert!(answer.to_string().contains("a=fmtp:111 useinbandfec=1\r\n"));
    }

    #[test]
    fn no_common_codec_is_an_error_for_488() {
        let offer =
            SessionDescription::parse(&LINPHONE_OFFER.replace("111 8 0 101", "111 101")).unwrap();
        let cfg = MediaConfig {
            codecs: vec![Codec::Pcma],
            ..local()
        };
        assert!(matches!(
            create_answer(&offer, &cfg, 1, 1),
            Err(SdpError::NoCommonCodec(_))
        ));
    }

    #[test]
    fn hold_directions_are_answered_per_rfc3264() {
        for (offered, want) in [
            ("a=sendonly", Direction::RecvOnly),
            ("a=recvonly", Direction::SendOnly),
            ("a=inactive", Direction::Inactive),
            ("a=sendrecv", Direction::SendRecv),
        ] {
            let text =
                LINPHONE_OFFER.replace("a=rtcp-mux\r\n", &format!("a=rtcp-mux\r\n{offered}\r\n"));
            let offer = SessionDescription::parse(&text).unwrap();
            let (answer, neg) = create_answer(&offer, &local(), 1, 1).unwrap();
            assert_eq!(neg.direction, want, "{offered}");
            assert!(
                answer
                    .to_string()
                    .contains(&format!("a={}\r\n", want.as_str()))
            );
        }
        // RFC 2543 hold: c=0.0.0.0 means the peer does not want to receive.
        let old_hold = LINPHONE_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
        let offer = SessionDescription::parse(&old_hold).unwrap();
        let (_, neg) = create_answer(&offer, &local(), 1, 1).unwrap();
        assert_eq!(neg.direction, Direction::RecvOnly);
        // We put the peer on hold: offer sendonly.
        let hold = MediaConfig {
            direction: Direction::SendOnly,
            ..local()
        };
        assert!(
            create_offer(&hold, 1, 2)
                .to_string()
                .contains("a=sendonly\r\n")
        );
    }

    #[test]
    fn offer_answer_round_trip_between_two_configs() {
        let a_cfg = local();
        let b_cfg = MediaConfig {
            rtp_addr: "192.0.2.2:50000".parse::<SocketAddr>().unwrap(),
            codecs: vec![Codec::Pcma],
            ptime: 30,
            rtcp_mux: false,
            ..local()
        };
        let offer = create_offer(&a_cfg, 1, 1);
        let offer_wire = SessionDescription::parse(&offer.to_string()).unwrap();
        let (answer, b_neg) = create_answer(&offer_wire, &b_cfg, 2, 1).unwrap();
        let a_neg = accept_answer(
            &offer,
            &SessionDescription::parse(&answer.to_string()).unwrap(),
        )
        .unwrap();
        assert_eq!(a_neg.codec, Codec::Pcma);
        assert_eq!(b_neg.codec, Codec::Pcma);
        assert_eq!(
            a_neg.remote_rtp,
            "192.0.2.2:50000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            b_neg.remote_rtp,
            "192.0.2.1:40000".parse::<SocketAddr>().unwrap()
        );
        assert!(
            !a_neg.rtcp_mux && !b_neg.rtcp_mux,
            "rtcp-mux only when both do it"
        );
        assert_eq!(a_neg.telephone_event_pt, Some(101));
        assert_eq!(b_neg.ptime, 20, "the answerer uses the offer's ptime");
    }

    #[test]
    fn answer_with_a_codec_we_did_not_offer_is_refused() {
        let offer = create_offer(
            &MediaConfig {
                codecs: vec![Codec::Pcmu],
                ..local()
            },
            1,
            1,
        );
        let bad = "v=0\r\no=b 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\n";
        let bad = SessionDescription::parse(bad).unwrap();
        assert!(matches!(
            accept_answer(&offer, &bad),
            Err(SdpError::AnswerMismatch(_))
        ));
    }

    #[test]
    fn malformed_sdp_is_a_typed_error_with_the_line() {
        for (text, line) in [
            ("v=0\r\no=x\r\n", 2),
            (
                "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 nothost\r\n",
                4,
            ),
            ("v=0\r\nbogus\r\n", 2),
            ("v=1\r\n", 1),
        ] {
            match SessionDescription::parse(text) {
                Err(SdpError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            SessionDescription::parse(
                "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n"
            ),
            Err(SdpError::Missing("c="))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = SessionDescription::parse(&s);
        }
    }
}

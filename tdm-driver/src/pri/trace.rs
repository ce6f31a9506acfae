//! D-channel tracing: frames as an operator reads them (Q.921 frame type, sequence numbers and
//! C/R; the Q.931 message, call reference and every information element with numbers, plans,
//! presentation, causes by name), and captures in pcap form (`LINKTYPE_LINUX_LAPD`, which
//! Wireshark and tshark decode too) or as hex lines.
//!
//! [`describe`] never fails: what does not parse is shown as hex with the reason.

use std::fmt::Write as _;

use super::q921::{Frame, FrameKind, Role};
use super::q931::{ChannelSelection, Ie, Message, MessageType, PartyNumber};

/// Which way a frame went, seen from this stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the line.
    Rx,
    /// Sent to the line.
    Tx,
}

impl Direction {
    /// `<` for received, `>` for sent.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::Rx => "<",
            Direction::Tx => ">",
        }
    }
}

/// One traced D-channel frame (without FCS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    /// Wall-clock time, microseconds since the Unix epoch.
    pub unix_micros: u64,
    /// Span number.
    pub span: u32,
    /// Direction.
    pub dir: Direction,
    /// This stack's side (decides which frames are commands and which responses).
    pub role: Role,
    /// The frame.
    pub frame: Vec<u8>,
}

impl TraceRecord {
    /// A record stamped now.
    pub fn now(span: u32, dir: Direction, role: Role, frame: &[u8]) -> Self {
        let unix_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self {
            unix_micros,
            span,
            dir,
            role,
            frame: frame.to_vec(),
        }
    }

    /// The readable form: a header line (time, span, direction) then [`describe`].
    pub fn to_text(&self) -> String {
        let secs = self.unix_micros / 1_000_000;
        let micros = self.unix_micros % 1_000_000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let sender = match (self.dir, self.role) {
            (Direction::Tx, r) => r,
            (Direction::Rx, Role::Network) => Role::User,
            (Direction::Rx, Role::User) => Role::Network,
        };
        format!(
            "{h:02}:{m:02}:{s:02}.{micros:06} span {} {} {}\n{}",
            self.span,
            self.dir.arrow(),
            match self.dir {
                Direction::Tx => "sent",
                Direction::Rx => "received",
            },
            describe(&self.frame, Some(sender))
        )
    }
}

/// The Q.850 name of a cause value.
pub fn cause_name(value: u8) -> &'static str {
    match value {
        1 => "Unallocated (unassigned) number",
        2 => "No route to specified transit network",
        3 => "No route to destination",
        6 => "Channel unacceptable",
        7 => "Call awarded and being delivered in an established channel",
        16 => "Normal call clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "No answer from user (user alerted)",
        20 => "Subscriber absent",
        21 => "Call rejected",
        22 => "Number changed",
        26 => "Non-selected user clearing",
        27 => "Destination out of order",
        28 => "Invalid number format (address incomplete)",
        29 => "Facility rejected",
        30 => "Response to STATUS ENQUIRY",
        31 => "Normal, unspecified",
        34 => "No circuit/channel available",
        38 => "Network out of order",
        41 => "Temporary failure",
        42 => "Switching equipment congestion",
        43 => "Access information discarded",
        44 => "Requested circuit/channel not available",
        47 => "Resource unavailable, unspecified",
        49 => "Quality of service not available",
        50 => "Requested facility not subscribed",
        57 => "Bearer capability not authorized",
        58 => "Bearer capability not presently available",
        63 => "Service or option not available, unspecified",
        65 => "Bearer capability not implemented",
        66 => "Channel type not implemented",
        69 => "Requested facility not implemented",
        79 => "Service or option not implemented, unspecified",
        81 => "Invalid call reference value",
        82 => "Identified channel does not exist",
        88 => "Incompatible destination",
        95 => "Invalid message, unspecified",
        96 => "Mandatory information element is missing",
        97 => "Message type non-existent or not implemented",
        98 => "Message not compatible with call state or message type non-existent",
        99 => "Information element non-existent or not implemented",
        100 => "Invalid information element contents",
        101 => "Message not compatible with call state",
        102 => "Recovery on timer expiry",
        111 => "Protocol error, unspecified",
        127 => "Interworking, unspecified",
        _ => "(unknown cause)",
    }
}

fn message_name(kind: MessageType) -> String {
    match kind {
        MessageType::Alerting => "ALERTING".into(),
        MessageType::CallProceeding => "CALL PROCEEDING".into(),
        MessageType::Progress => "PROGRESS".into(),
        MessageType::Setup => "SETUP".into(),
        MessageType::Connect => "CONNECT".into(),
        MessageType::SetupAcknowledge => "SETUP ACKNOWLEDGE".into(),
        MessageType::ConnectAcknowledge => "CONNECT ACKNOWLEDGE".into(),
        MessageType::Disconnect => "DISCONNECT".into(),
        MessageType::Restart => "RESTART".into(),
        MessageType::Release => "RELEASE".into(),
        MessageType::RestartAcknowledge => "RESTART ACKNOWLEDGE".into(),
        MessageType::ReleaseComplete => "RELEASE COMPLETE".into(),
        MessageType::Notify => "NOTIFY".into(),
        MessageType::StatusEnquiry => "STATUS ENQUIRY".into(),
        MessageType::Information => "INFORMATION".into(),
        MessageType::Status => "STATUS".into(),
        MessageType::Other(code) => format!("message type 0x{code:02x}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn location_name(location: u8) -> &'static str {
    match location {
        0 => "user",
        1 => "private network serving the local user",
        2 => "public network serving the local user",
        3 => "transit network",
        4 => "public network serving the remote user",
        5 => "private network serving the remote user",
        7 => "international network",
        10 => "network beyond interworking point",
        _ => "unknown location",
    }
}

fn number(n: &PartyNumber) -> String {
    let ton = match n.number_type {
        0 => "unknown",
        1 => "international",
        2 => "national",
        3 => "network specific",
        4 => "subscriber",
        6 => "abbreviated",
        _ => "reserved type",
    };
    let plan = match n.plan {
        0 => "unknown plan",
        1 => "ISDN/E.164",
        3 => "data/X.121",
        4 => "telex/F.69",
        8 => "national plan",
        9 => "private plan",
        _ => "reserved plan",
    };
    let mut s = format!("'{}' ({ton}, {plan}", n.digits);
    if let Some((pres, screen)) = n.presentation {
        let p = match pres {
            0 => "presentation allowed",
            1 => "presentation restricted",
            2 => "number not available",
            _ => "reserved presentation",
        };
        let sc = match screen {
            0 => "user-provided, not screened",
            1 => "user-provided, verified and passed",
            2 => "user-provided, verified and failed",
            _ => "network provided",
        };
        let _ = write!(s, ", {p}, {sc}");
    }
    if let Some(r) = n.reason {
        let why = match r {
            1 => "call forwarding busy",
            2 => "call forwarding no reply",
            15 => "call forwarding unconditional",
            10 => "called DTE out of order",
            _ => "other reason",
        };
        let _ = write!(s, ", redirected: {why}");
    }
    s.push(')');
    s
}

fn describe_ie(ie: &Ie) -> String {
    match ie {
        Ie::BearerCapability(b) => {
            let cap = match b.transfer_capability {
                0 => "speech",
                8 => "unrestricted digital information",
                9 => "restricted digital information",
                16 => "3.1 kHz audio",
                17 => "7 kHz audio",
                24 => "video",
                _ => "other capability",
            };
            let rate = if b.transfer_rate == 0x10 {
                "circuit mode, 64 kbit/s".to_owned()
            } else {
                format!("mode/rate 0x{:02x}", b.transfer_rate)
            };
            let l1 = match b.layer1 {
                Some(2) => ", G.711 µ-law",
                Some(3) => ", G.711 A-law",
                Some(1) => ", V.110",
                Some(_) => ", other layer 1",
                None => "",
            };
            format!("Bearer capability: {cap}, {rate}{l1}")
        }
        Ie::Cause(c) => {
            let mut s = format!(
                "Cause: {} {} (location: {})",
                c.value,
                cause_name(c.value),
                location_name(c.location)
            );
            if !c.diagnostics.is_empty() {
                let _ = write!(s, ", diagnostics {}", hex(&c.diagnostics));
            }
            s
        }
        Ie::CallState(state) => format!("Call state: {state}"),
        Ie::ChannelId(c) => {
            let mut s = String::from("Channel ID: ");
            s.push_str(if c.exclusive {
                "exclusive"
            } else {
                "preferred"
            });
            if c.d_channel {
                s.push_str(", D-channel");
            }
            if let Some(i) = c.interface {
                let _ = write!(s, ", interface {i}");
            }
            match &c.selection {
                ChannelSelection::None => s.push_str(", no channel"),
                ChannelSelection::Any => s.push_str(", any channel"),
                ChannelSelection::Channels(list) => {
                    let chans: Vec<String> = list.iter().map(u8::to_string).collect();
                    let _ = write!(
                        s,
                        ", B-channel{} {}",
                        if list.len() == 1 { "" } else { "s" },
                        chans.join(",")
                    );
                }
            }
            s
        }
        Ie::Facility(data) => format!("Facility: {} octets ({})", data.len(), hex(data)),
        Ie::Progress(p) => {
            let what = match p.description {
                1 => "call is not end-to-end ISDN; further progress information may be in-band",
                2 => "destination address is non-ISDN",
                3 => "origination address is non-ISDN",
                4 => "call has returned to the ISDN",
                5 => "interworking has occurred",
                8 => "in-band information or an appropriate pattern is now available",
                _ => "other progress description",
            };
            format!(
                "Progress indicator: {} {what} (location: {})",
                p.description,
                location_name(p.location)
            )
        }
        Ie::Notification(n) => format!("Notification indicator: {n}"),
        Ie::Display(d) => format!("Display: '{}'", String::from_utf8_lossy(d)),
        Ie::CallingNumber(n) => format!("Calling party number: {}", number(n)),
        Ie::CalledNumber(n) => format!("Called party number: {}", number(n)),
        Ie::RedirectingNumber(n) => format!("Redirecting number: {}", number(n)),
        Ie::RestartIndicator(class) => format!(
            "Restart indicator: {}",
            match class {
                0 => "indicated channels",
                6 => "single interface",
                7 => "all interfaces",
                _ => "reserved class",
            }
        ),
        Ie::SendingComplete => "Sending complete".into(),
        Ie::Other {
            codeset,
            id,
            data,
            malformed,
        } => format!(
            "IE 0x{id:02x} (codeset {codeset}{}): {}",
            if *malformed { ", malformed" } else { "" },
            if data.is_empty() {
                "-".into()
            } else {
                hex(data)
            }
        ),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// Describes one Q.931 message (the payload of an I or UI frame), one element per line.
pub fn describe_message(payload: &[u8]) -> String {
    match Message::decode(payload) {
        Ok(m) => {
            let mut s = format!(
                "  Q.931 {}, call reference {} ({})",
                message_name(m.kind),
                m.call_ref.value,
                if m.call_ref.value == 0 {
                    "global"
                } else if m.call_ref.from_destination {
                    "to the originating side"
                } else {
                    "from the originating side"
                }
            );
            for ie in &m.ies {
                s.push_str("\n    ");
                s.push_str(&describe_ie(ie));
            }
            s
        }
        Err(e) => format!("  not Q.931 ({e}): {}", hex(payload)),
    }
}

/// Describes one LAPD frame (without FCS). `sender`, when known, tells commands from
/// responses (the network sends commands with C/R 1, the user with C/R 0).
pub fn describe(frame: &[u8], sender: Option<Role>) -> String {
    let f = match Frame::decode(frame) {
        Ok(f) => f,
        Err(e) => return format!("  bad LAPD frame ({e}): {}", hex(frame)),
    };
    let cr = match sender {
        Some(Role::Network) => Some(if f.cr { "command" } else { "response" }),
        Some(Role::User) => Some(if f.cr { "response" } else { "command" }),
        None => None,
    };
    let head = |name: &str, detail: String| {
        let mut s = format!("  Q.921 {name}");
        if !detail.is_empty() {
            s.push(' ');
            s.push_str(&detail);
        }
        let _ = write!(s, ", SAPI {} TEI {} C/R {}", f.sapi, f.tei, u8::from(f.cr));
        if let Some(c) = cr {
            let _ = write!(s, " ({c})");
        }
        s
    };
    match &f.kind {
        FrameKind::I { ns, nr, poll, info } => {
            let mut s = head("I", format!("N(S)={ns} N(R)={nr} P={}", u8::from(*poll)));
            s.push('\n');
            s.push_str(&describe_message(info));
            s
        }
        FrameKind::Rr { nr, pf } => head("RR", format!("N(R)={nr} P/F={}", u8::from(*pf))),
        FrameKind::Rnr { nr, pf } => head("RNR", format!("N(R)={nr} P/F={}", u8::from(*pf))),
        FrameKind::Rej { nr, pf } => head("REJ", format!("N(R)={nr} P/F={}", u8::from(*pf))),
        FrameKind::Sabme { poll } => head("SABME", format!("P={}", u8::from(*poll))),
        FrameKind::Dm { fin } => head("DM", format!("F={}", u8::from(*fin))),
        FrameKind::Disc { poll } => head("DISC", format!("P={}", u8::from(*poll))),
        FrameKind::Ua { fin } => head("UA", format!("F={}", u8::from(*fin))),
        FrameKind::Frmr { fin, info } => {
            head("FRMR", format!("F={} info {}", u8::from(*fin), hex(info)))
        }
        FrameKind::Ui { poll, info } => {
            let mut s = head("UI", format!("P={}", u8::from(*poll)));
            if f.sapi == 63 {
                let _ = write!(s, "\n  TEI management: {}", hex(info));
            } else {
                s.push('\n');
                s.push_str(&describe_message(info));
            }
            s
        }
        FrameKind::Xid { pf } => head("XID", format!("P/F={}", u8::from(*pf))),
        #[allow(unreachable_patterns)]
        other => head(&format!("{other:?}"), String::new()),
    }
}

/// pcap's link type for LAPD with a Linux "cooked" header (Wireshark: `lapd`).
pub const LINKTYPE_LINUX_LAPD: u32 = 177;
const SLL_LEN: usize = 16;
const PACKET_HOST: u16 = 0;
const PACKET_OUTGOING: u16 = 4;
const ARPHRD_LAPD: u16 = 8445;
const ETH_P_LAPD: u16 = 0x0030;

/// The pcap global header for a LAPD capture.
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&65535u32.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_LINUX_LAPD.to_le_bytes());
    h
}

/// One record in pcap form (append after [`pcap_header`]): the sll header says the
/// direction and (in its first address octet, as Wireshark reads it) whether this stack is
/// the network side.
pub fn pcap_record(r: &TraceRecord) -> Vec<u8> {
    let len = SLL_LEN + r.frame.len();
    let mut out = Vec::with_capacity(16 + len);
    out.extend_from_slice(&((r.unix_micros / 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&((r.unix_micros % 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let pkttype = match r.dir {
        Direction::Rx => PACKET_HOST,
        Direction::Tx => PACKET_OUTGOING,
    };
    out.extend_from_slice(&pkttype.to_be_bytes());
    out.extend_from_slice(&ARPHRD_LAPD.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    let mut addr = [0u8; 8];
    addr[0] = u8::from(r.role == Role::Network);
    out.extend_from_slice(&addr);
    out.extend_from_slice(&ETH_P_LAPD.to_be_bytes());
    out.extend_from_slice(&r.frame);
    out
}

/// Why a capture could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// Not a pcap file of a link type we read, nor hex lines.
    #[error("{0}")]
    Format(String),
}

/// Reads a capture: a pcap file of `LINKTYPE_LINUX_LAPD` (as [`pcap_record`] writes, or
/// Wireshark's), or text with one frame per line in hex, optionally prefixed `<` (received)
/// or `>` (sent). `span` and `role` fill what the file does not say.
pub fn read_capture(bytes: &[u8], span: u32, role: Role) -> Result<Vec<TraceRecord>, CaptureError> {
    let magic = bytes.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
    match magic {
        Some(m) if u32::from_le_bytes(m) == 0xa1b2_c3d4 || u32::from_be_bytes(m) == 0xa1b2_c3d4 => {
            read_pcap(bytes, span, role)
        }
        Some(m) if u32::from_le_bytes(m) == 0xa1b2_3c4d || u32::from_be_bytes(m) == 0xa1b2_3c4d => {
            read_pcap(bytes, span, role)
        }
        _ => read_hex_lines(bytes, span, role),
    }
}

fn read_pcap(bytes: &[u8], span: u32, role: Role) -> Result<Vec<TraceRecord>, CaptureError> {
    let bad = |what: &str| CaptureError::Format(format!("pcap: {what}"));
    let m = bytes.get(..4).ok_or_else(|| bad("short header"))?;
    let le = m == [0xd4, 0xc3, 0xb2, 0xa1] || m == [0x4d, 0x3c, 0xb2, 0xa1];
    let nanos = m == [0x4d, 0x3c, 0xb2, 0xa1] || m == [0xa1, 0xb2, 0x3c, 0x4d];
    let u32_at = |off: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(off..off + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let link = u32_at(20).ok_or_else(|| bad("short header"))?;
    if link != LINKTYPE_LINUX_LAPD {
        return Err(bad(&format!(
            "link type {link} is not LINKTYPE_LINUX_LAPD (177); capture the D-channel with gwctl pri trace --pcap"
        )));
    }
    let mut out = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        let (Some(sec), Some(frac), Some(incl)) = (u32_at(off), u32_at(off + 4), u32_at(off + 8))
        else {
            return Err(bad(&format!("truncated record header at offset {off}")));
        };
        let start = off + 16;
        let end = start + incl as usize;
        let data = bytes
            .get(start..end)
            .ok_or_else(|| bad(&format!("truncated record at offset {off}")))?;
        off = end;
        let (Some(sll), Some(frame)) = (data.get(..SLL_LEN), data.get(SLL_LEN..)) else {
            continue;
        };
        let pkttype = u16::from_be_bytes([sll[0], sll[1]]);
        let dir = if pkttype == PACKET_OUTGOING {
            Direction::Tx
        } else {
            Direction::Rx
        };
        let we_network = sll.get(6).copied().unwrap_or(0) != 0;
        let micros = if nanos {
            u64::from(frac) / 1000
        } else {
            u64::from(frac)
        };
        out.push(TraceRecord {
            unix_micros: u64::from(sec) * 1_000_000 + micros,
            span,
            dir,
            role: if we_network { Role::Network } else { role },
            frame: frame.to_vec(),
        });
    }
    Ok(out)
}

fn read_hex_lines(bytes: &[u8], span: u32, role: Role) -> Result<Vec<TraceRecord>, CaptureError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CaptureError::Format("neither a pcap file nor hex text".into()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (dir, rest) = match line.as_bytes().first() {
            Some(b'<') => (Direction::Rx, &line[1..]),
            Some(b'>') => (Direction::Tx, &line[1..]),
            _ => (Direction::Rx, line),
        };
        let digits: String = rest
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        if digits.len() % 2 != 0 {
            return Err(CaptureError::Format(format!(
                "line {}: an odd number of hex digits",
                n + 1
            )));
        }
        let mut frame = Vec::with_capacity(digits.len() / 2);
        for i in (0..digits.len()).step_by(2) {
            let b = digits
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    CaptureError::Format(format!("line {}: {:?} is not hex", n + 1, &digits))
                })?;
            frame.push(b);
        }
        out.push(TraceRecord {
            unix_micros: 0,
            span,
            dir,
            role,
            frame,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pri::q921::FrameKind;
    use crate::pri::q931::{BearerCapability, CallReference, Cause, ChannelId, Progress};

    fn i_frame(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        Frame {
            sapi: 0,
            cr: true,
            tei: 0,
            kind: FrameKind::I {
                ns: 3,
                nr: 2,
                poll: false,
                info: msg.to_bytes(),
            },
        }
        .encode(&mut out);
        out
    }

    #[test]
    fn a_setup_reads_like_a_trace_an_operator_knows() {
        let msg = Message::new(
            MessageType::Setup,
            CallReference {
                value: 5,
                from_destination: false,
            },
        )
        .with(Ie::BearerCapability(BearerCapability {
            transfer_capability: 0,
            transfer_rate: 0x10,
            layer1: Some(3),
        }))
        .with(Ie::ChannelId(ChannelId {
            exclusive: true,
            d_channel: false,
            interface: None,
            selection: ChannelSelection::Channels(vec![17]),
        }))
        .with(Ie::CallingNumber(PartyNumber {
            number_type: 2,
            plan: 1,
            presentation: Some((0, 0)),
            reason: None,
            digits: "5551234".into(),
        }))
        .with(Ie::CalledNumber(PartyNumber {
            number_type: 4,
            plan: 1,
            presentation: None,
            reason: None,
            digits: "9100".into(),
        }))
        .with(Ie::SendingComplete);
        let text = describe(&i_frame(&msg), Some(Role::Network));
        for want in [
            "Q.921 I N(S)=3 N(R)=2 P=0, SAPI 0 TEI 0 C/R 1 (command)",
            "Q.931 SETUP, call reference 5 (from the originating side)",
            "Bearer capability: speech, circuit mode, 64 kbit/s, G.711 A-law",
            "Channel ID: exclusive, B-channel 17",
            "Calling party number: '5551234' (national, ISDN/E.164, presentation allowed, user-provided, not screened)",
            "Called party number: '9100' (subscriber, ISDN/E.164)",
            "Sending complete",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let disc = Message::new(
            MessageType::Disconnect,
            CallReference {
                value: 5,
                from_destination: true,
            },
        )
        .with(Ie::Cause(Cause {
            location: 2,
            value: 17,
            diagnostics: vec![],
        }))
        .with(Ie::Progress(Progress {
            location: 2,
            description: 8,
        }));
        let text = describe(&i_frame(&disc), Some(Role::User));
        assert!(text.contains("(response)"), "{text}");
        assert!(
            text.contains("Cause: 17 User busy (location: public network serving the local user)"),
            "{text}"
        );
        assert!(text.contains("Progress indicator: 8 in-band"), "{text}");
        assert!(
            text.contains("call reference 5 (to the originating side)"),
            "{text}"
        );
    }

    #[test]
    fn garbage_is_shown_not_fatal() {
        assert!(describe(&[], None).contains("bad LAPD frame"));
        assert!(describe(&[0x00, 0x01, 0x00, 0x00, 0x09, 0x01], None).contains("not Q.931"));
        for n in 0..200u16 {
            let bytes: Vec<u8> = (0..(n % 40)).map(|i| (i * 37 + n) as u8).collect();
            let _ = describe(&bytes, Some(Role::User));
        }
    }

    #[test]
    fn captures_round_trip_through_pcap_and_hex() {
        let recs: Vec<TraceRecord> = [Direction::Tx, Direction::Rx]
            .into_iter()
            .map(|dir| TraceRecord {
                unix_micros: 1_700_000_000_123_456,
                span: 1,
                dir,
                role: Role::Network,
                frame: vec![0x02, 0x01, 0x7f],
            })
            .collect();
        let mut pcap = pcap_header().to_vec();
        for r in &recs {
            pcap.extend(pcap_record(r));
        }
        assert_eq!(read_capture(&pcap, 1, Role::User).unwrap(), recs);
        let text = "# comment\n> 02 01 7f\n<020173\n";
        let got = read_capture(text.as_bytes(), 2, Role::User).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].dir, Direction::Tx);
        assert_eq!(got[1].frame, vec![0x02, 0x01, 0x73]);
        assert!(read_capture(b"zz", 1, Role::User).is_err());
        assert!(read_capture(&pcap[..30], 1, Role::User).is_err());
    }
}

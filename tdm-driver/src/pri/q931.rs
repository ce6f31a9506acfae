//! Q.931 message codec for PRI: header (protocol discriminator, 2-octet call reference,
//! message type) and the information elements call control uses, with unknown and
//! other-codeset elements preserved (Q.931 §4.5, §5.8). Decoding never panics.

/// Q.931's protocol discriminator.
pub const PROTOCOL_DISCRIMINATOR: u8 = 0x08;

/// Q.931 message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageType {
    /// ALERTING.
    Alerting,
    /// CALL PROCEEDING.
    CallProceeding,
    /// PROGRESS.
    Progress,
    /// SETUP.
    Setup,
    /// CONNECT.
    Connect,
    /// SETUP ACKNOWLEDGE.
    SetupAcknowledge,
    /// CONNECT ACKNOWLEDGE.
    ConnectAcknowledge,
    /// DISCONNECT.
    Disconnect,
    /// RESTART.
    Restart,
    /// RELEASE.
    Release,
    /// RESTART ACKNOWLEDGE.
    RestartAcknowledge,
    /// RELEASE COMPLETE.
    ReleaseComplete,
    /// NOTIFY.
    Notify,
    /// STATUS ENQUIRY.
    StatusEnquiry,
    /// INFORMATION.
    Information,
    /// STATUS.
    Status,
    /// A type this codec does not name (answered with STATUS cause 97 by call control).
    Other(u8),
}

impl MessageType {
    /// The type's code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Alerting => 0x01,
            Self::CallProceeding => 0x02,
            Self::Progress => 0x03,
            Self::Setup => 0x05,
            Self::Connect => 0x07,
            Self::SetupAcknowledge => 0x0d,
            Self::ConnectAcknowledge => 0x0f,
            Self::Disconnect => 0x45,
            Self::Restart => 0x46,
            Self::Release => 0x4d,
            Self::RestartAcknowledge => 0x4e,
            Self::ReleaseComplete => 0x5a,
            Self::Notify => 0x6e,
            Self::StatusEnquiry => 0x75,
            Self::Information => 0x7b,
            Self::Status => 0x7d,
            Self::Other(code) => code,
        }
    }

    /// The type for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            0x01 => Self::Alerting,
            0x02 => Self::CallProceeding,
            0x03 => Self::Progress,
            0x05 => Self::Setup,
            0x07 => Self::Connect,
            0x0d => Self::SetupAcknowledge,
            0x0f => Self::ConnectAcknowledge,
            0x45 => Self::Disconnect,
            0x46 => Self::Restart,
            0x4d => Self::Release,
            0x4e => Self::RestartAcknowledge,
            0x5a => Self::ReleaseComplete,
            0x6e => Self::Notify,
            0x75 => Self::StatusEnquiry,
            0x7b => Self::Information,
            0x7d => Self::Status,
            other => Self::Other(other),
        }
    }
}

/// A call reference: value and the flag saying which side allocated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallReference {
    /// 15-bit value; 0 is the global call reference (RESTART).
    pub value: u16,
    /// Flag bit: set in messages sent by the side that did not originate the reference.
    pub from_destination: bool,
}

/// Bearer capability (Q.931 §4.5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerCapability {
    /// Information transfer capability: 0 speech, 8 unrestricted digital, 16 3.1 kHz audio.
    pub transfer_capability: u8,
    /// Transfer mode and rate octet 4 low bits: 0x10 = circuit mode 64 kbit/s.
    pub transfer_rate: u8,
    /// User information layer 1 protocol: 2 G.711 µ-law, 3 G.711 A-law.
    pub layer1: Option<u8>,
}

/// Which B-channels a channel identification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSelection {
    /// No channel.
    None,
    /// Any channel (the network chooses).
    Any,
    /// These channels (E1 timeslot numbers 1–31 excluding 16, T1 channel numbers 1–23).
    Channels(Vec<u8>),
}

/// Channel identification for a primary-rate interface (Q.931 §4.5.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelId {
    /// Exclusive (only this channel is acceptable) rather than preferred.
    pub exclusive: bool,
    /// The D-channel is indicated.
    pub d_channel: bool,
    /// Explicit interface identifier (NFAS), if present.
    pub interface: Option<u8>,
    /// The B-channels.
    pub selection: ChannelSelection,
}

/// A calling, called or redirecting party number (Q.931 §4.5.8–4.5.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyNumber {
    /// Type of number: 0 unknown, 1 international, 2 national, 4 subscriber.
    pub number_type: u8,
    /// Numbering plan: 0 unknown, 1 ISDN/E.164, 9 private.
    pub plan: u8,
    /// Presentation indicator (0 allowed, 1 restricted) and screening (0–3), if sent.
    pub presentation: Option<(u8, u8)>,
    /// Redirection reason (redirecting number only).
    pub reason: Option<u8>,
    /// The digits (IA5).
    pub digits: String,
}

/// Cause (Q.850).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Location: 0 user, 1 private network local user, 2 public network local user, ...
    pub location: u8,
    /// Cause value, e.g. 16 normal clearing, 17 user busy, 34 no circuit available.
    pub value: u8,
    /// Diagnostic octets, passed through.
    pub diagnostics: Vec<u8>,
}

/// Progress indicator (Q.931 §4.5.23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Location, as for cause.
    pub location: u8,
    /// Description: 1 not end-to-end ISDN, 2 destination non-ISDN, 8 in-band info available.
    pub description: u8,
}

/// One information element.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ie {
    /// Bearer capability (0x04).
    BearerCapability(BearerCapability),
    /// Cause (0x08).
    Cause(Cause),
    /// Call state (0x14): the sender's state number.
    CallState(u8),
    /// Channel identification (0x18).
    ChannelId(ChannelId),
    /// Facility (0x1c), passed through opaquely.
    Facility(Vec<u8>),
    /// Progress indicator (0x1e).
    Progress(Progress),
    /// Notification indicator (0x27).
    Notification(u8),
    /// Display (0x28), raw octets.
    Display(Vec<u8>),
    /// Calling party number (0x6c).
    CallingNumber(PartyNumber),
    /// Called party number (0x70).
    CalledNumber(PartyNumber),
    /// Redirecting number (0x74).
    RedirectingNumber(PartyNumber),
    /// Restart indicator (0x79): class 0 indicated channels, 6 single interface, 7 all.
    RestartIndicator(u8),
    /// Sending complete (single octet 0xa1).
    SendingComplete,
    /// An element of codeset 0 not known here, one of another codeset, or a known one whose
    /// contents did not parse: kept as received so it can be passed on or reported.
    Other {
        /// Codeset it was received in.
        codeset: u8,
        /// Identifier.
        id: u8,
        /// Contents (for single-octet elements, empty).
        data: Vec<u8>,
        /// True when a known identifier's contents were invalid (Q.931 §5.8.7.2).
        malformed: bool,
    },
}

/// A Q.931 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Call reference.
    pub call_ref: CallReference,
    /// Message type.
    pub kind: MessageType,
    /// Information elements in order.
    pub ies: Vec<Ie>,
}

/// Why octets are not a Q.931 message. Per Q.931 §5.8.1–5.8.3 such messages are ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Shorter than the header.
    #[error("Q.931 message of {len} octets is shorter than its header")]
    TooShort {
        /// Octets received.
        len: usize,
    },
    /// Not Q.931 (another protocol on the D-channel, e.g. X.25 or a vendor's maintenance).
    #[error("protocol discriminator {0:#04x} is not Q.931's 0x08")]
    ProtocolDiscriminator(u8),
    /// Call reference length other than 0 (dummy) or 2 (PRI).
    #[error("call reference length {0} is not 2 as PRI requires")]
    CallReferenceLength(u8),
    /// The message-type octet has its high bit set (no escape codes supported).
    #[error("message type octet {0:#04x} is invalid")]
    BadMessageType(u8),
    /// An element's length runs past the end of the message.
    #[error("information element {id:#04x} claims {len} octets but {available} remain")]
    TruncatedIe {
        /// Identifier.
        id: u8,
        /// Declared length.
        len: usize,
        /// Octets left in the message.
        available: usize,
    },
}

mod id {
    pub const BEARER: u8 = 0x04;
    pub const CAUSE: u8 = 0x08;
    pub const CALL_STATE: u8 = 0x14;
    pub const CHANNEL_ID: u8 = 0x18;
    pub const FACILITY: u8 = 0x1c;
    pub const PROGRESS: u8 = 0x1e;
    pub const NOTIFICATION: u8 = 0x27;
    pub const DISPLAY: u8 = 0x28;
    pub const CALLING: u8 = 0x6c;
    pub const CALLED: u8 = 0x70;
    pub const REDIRECTING: u8 = 0x74;
    pub const RESTART: u8 = 0x79;
    pub const SENDING_COMPLETE: u8 = 0xa1;
}

impl Message {
    /// A message with no elements.
    pub fn new(kind: MessageType, call_ref: CallReference) -> Self {
        Self {
            call_ref,
            kind,
            ies: Vec::new(),
        }
    }

    /// Adds an element (builder style).
    pub fn with(mut self, ie: Ie) -> Self {
        self.ies.push(ie);
        self
    }

    /// The first cause element.
    pub fn cause(&self) -> Option<&Cause> {
        self.ies.iter().find_map(|ie| match ie {
            Ie::Cause(c) => Some(c),
            _ => None,
        })
    }

    /// The channel identification element.
    pub fn channel_id(&self) -> Option<&ChannelId> {
        self.ies.iter().find_map(|ie| match ie {
            Ie::ChannelId(c) => Some(c),
            _ => None,
        })
    }

    /// The called party number.
    pub fn called(&self) -> Option<&PartyNumber> {
        self.ies.iter().find_map(|ie| match ie {
            Ie::CalledNumber(c) => Some(c),
            _ => None,
        })
    }

    /// The calling party number.
    pub fn calling(&self) -> Option<&PartyNumber> {
        self.ies.iter().find_map(|ie| match ie {
            Ie::CallingNumber(c) => Some(c),
            _ => None,
        })
    }

    /// True when any element is present but malformed.
    pub fn has_malformed_ie(&self) -> bool {
        self.ies.iter().any(|ie| {
            matches!(
                ie,
                Ie::Other {
                    malformed: true,
                    ..
                }
            )
        })
    }

    /// Decodes a message (the payload of one I frame).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let (&pd, rest) = bytes
            .split_first()
            .ok_or(MessageError::TooShort { len: bytes.len() })?;
        if pd != PROTOCOL_DISCRIMINATOR {
            return Err(MessageError::ProtocolDiscriminator(pd));
        }
        let (&cr_len, rest) = rest
            .split_first()
            .ok_or(MessageError::TooShort { len: bytes.len() })?;
        let (call_ref, rest) = match (cr_len & 0x0f, rest) {
            (2, [hi, lo, rest @ ..]) => (
                CallReference {
                    value: u16::from(hi & 0x7f) << 8 | u16::from(*lo),
                    from_destination: hi & 0x80 != 0,
                },
                rest,
            ),
            (0, rest) => (
                CallReference {
                    value: 0,
                    from_destination: false,
                },
                rest,
            ),
            (2, _) => return Err(MessageError::TooShort { len: bytes.len() }),
            (other, _) => return Err(MessageError::CallReferenceLength(other)),
        };
        let (&mt, mut rest) = rest
            .split_first()
            .ok_or(MessageError::TooShort { len: bytes.len() })?;
        if mt & 0x80 != 0 {
            return Err(MessageError::BadMessageType(mt));
        }
        let mut ies = Vec::new();
        let mut locked_codeset = 0u8;
        let mut next_codeset: Option<u8> = None;
        while let Some((&ie_id, after)) = rest.split_first() {
            let codeset = next_codeset.take().unwrap_or(locked_codeset);
            if ie_id & 0x80 != 0 {
                rest = after;
                if ie_id & 0xf0 == 0x90 {
                    let new = ie_id & 0x07;
                    if ie_id & 0x08 != 0 {
                        next_codeset = Some(new);
                    } else {
                        locked_codeset = new;
                    }
                } else if codeset == 0 && ie_id == id::SENDING_COMPLETE {
                    ies.push(Ie::SendingComplete);
                } else {
                    ies.push(Ie::Other {
                        codeset,
                        id: ie_id,
                        data: Vec::new(),
                        malformed: false,
                    });
                }
                continue;
            }
            let (&len, after) = after.split_first().ok_or(MessageError::TruncatedIe {
                id: ie_id,
                len: 1,
                available: 0,
            })?;
            let len = usize::from(len);
            let (data, after) = after
                .split_at_checked(len)
                .ok_or(MessageError::TruncatedIe {
                    id: ie_id,
                    len,
                    available: after.len(),
                })?;
            rest = after;
            let decoded = if codeset == 0 {
                decode_ie(ie_id, data)
            } else {
                None
            };
            ies.push(decoded.unwrap_or_else(|| Ie::Other {
                codeset,
                id: ie_id,
                data: data.to_vec(),
                malformed: codeset == 0 && is_known(ie_id),
            }));
        }
        Ok(Self {
            call_ref,
            kind: MessageType::from_code(mt),
            ies,
        })
    }

    /// Encodes the message; elements of other codesets get a non-locking shift before them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(PROTOCOL_DISCRIMINATOR);
        out.push(2);
        let hi = (self.call_ref.value >> 8) as u8 & 0x7f;
        out.push(
            hi | if self.call_ref.from_destination {
                0x80
            } else {
                0
            },
        );
        out.push(self.call_ref.value as u8);
        out.push(self.kind.code() & 0x7f);
        for ie in &self.ies {
            encode_ie(ie, out);
        }
    }

    /// The encoded message in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }
}

fn is_known(ie_id: u8) -> bool {
    matches!(
        ie_id,
        id::BEARER
            | id::CAUSE
            | id::CALL_STATE
            | id::CHANNEL_ID
            | id::PROGRESS
            | id::NOTIFICATION
            | id::CALLING
            | id::CALLED
            | id::REDIRECTING
            | id::RESTART
    )
}

/// Splits an octet group ending at the first octet with the extension bit set.
fn octet_group(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = data.iter().position(|o| o & 0x80 != 0)?;
    data.split_at_checked(end + 1)
}

fn decode_number(data: &[u8], calling: bool, redirecting: bool) -> Option<PartyNumber> {
    let (&o3, mut rest) = data.split_first()?;
    let mut presentation = None;
    let mut reason = None;
    if o3 & 0x80 == 0 {
        if !calling {
            return None;
        }
        let (&o3a, after) = rest.split_first()?;
        presentation = Some(((o3a >> 5) & 3, o3a & 3));
        rest = after;
        if o3a & 0x80 == 0 {
            let (&o3b, after) = rest.split_first()?;
            if !redirecting || o3b & 0x80 == 0 {
                return None;
            }
            reason = Some(o3b & 0x0f);
            rest = after;
        }
    }
    if rest.iter().any(|d| *d & 0x80 != 0) {
        return None;
    }
    Some(PartyNumber {
        number_type: (o3 >> 4) & 7,
        plan: o3 & 0x0f,
        presentation,
        reason,
        digits: rest.iter().map(|&d| char::from(d)).collect(),
    })
}

fn decode_channel_id(data: &[u8]) -> Option<ChannelId> {
    let (&o3, rest) = data.split_first()?;
    if o3 & 0x80 == 0 {
        return None;
    }
    let interface_present = o3 & 0x40 != 0;
    let primary = o3 & 0x20 != 0;
    let exclusive = o3 & 0x08 != 0;
    let d_channel = o3 & 0x04 != 0;
    let (interface, rest) = if interface_present {
        let (group, rest) = octet_group(rest)?;
        (group.last().map(|o| o & 0x7f), rest)
    } else {
        (None, rest)
    };
    let selection = match o3 & 3 {
        0 => ChannelSelection::None,
        3 => ChannelSelection::Any,
        1 if primary => {
            // Octet 3.2: coding standard, number (0) or map (1), channel type 3 = B-channel.
            let (&o32, rest) = rest.split_first()?;
            if o32 & 0x80 == 0 || o32 & 0x10 != 0 || o32 & 0x0f != 3 {
                return None;
            }
            let mut channels = Vec::new();
            for &o in rest {
                channels.push(o & 0x7f);
                if o & 0x80 != 0 {
                    break;
                }
            }
            if channels.is_empty() {
                return None;
            }
            ChannelSelection::Channels(channels)
        }
        1 | 2 => return None, // basic-rate B1/B2 on a primary-rate decoder
        _ => return None,
    };
    Some(ChannelId {
        exclusive,
        d_channel,
        interface,
        selection,
    })
}

fn decode_ie(ie_id: u8, data: &[u8]) -> Option<Ie> {
    Some(match ie_id {
        id::BEARER => {
            let (group3, rest) = octet_group(data)?;
            let (group4, rest) = octet_group(rest)?;
            let transfer_capability = group3.first()? & 0x1f;
            let transfer_rate = group4.first()? & 0x7f;
            let layer1 = rest
                .first()
                .filter(|o| (*o >> 5) & 3 == 1)
                .map(|o| o & 0x1f);
            Ie::BearerCapability(BearerCapability {
                transfer_capability,
                transfer_rate,
                layer1,
            })
        }
        id::CAUSE => {
            let (group3, rest) = octet_group(data)?;
            let (&value, diagnostics) = rest.split_first()?;
            if value & 0x80 == 0 {
                return None;
            }
            Ie::Cause(Cause {
                location: group3.first()? & 0x0f,
                value: value & 0x7f,
                diagnostics: diagnostics.to_vec(),
            })
        }
        id::CALL_STATE => match data {
            [state] => Ie::CallState(state & 0x3f),
            _ => return None,
        },
        id::CHANNEL_ID => Ie::ChannelId(decode_channel_id(data)?),
        id::FACILITY => Ie::Facility(data.to_vec()),
        id::PROGRESS => match data {
            [o3, o4] if o3 & 0x80 != 0 && o4 & 0x80 != 0 => Ie::Progress(Progress {
                location: o3 & 0x0f,
                description: o4 & 0x7f,
            }),
            _ => return None,
        },
        id::NOTIFICATION => match data {
            [o3, ..] => Ie::Notification(o3 & 0x7f),
            _ => return None,
        },
        id::DISPLAY => Ie::Display(data.to_vec()),
        id::CALLING => Ie::CallingNumber(decode_number(data, true, false)?),
        id::CALLED => Ie::CalledNumber(decode_number(data, false, false)?),
        id::REDIRECTING => Ie::RedirectingNumber(decode_number(data, true, true)?),
        id::RESTART => match data {
            [o3] if o3 & 0x80 != 0 => Ie::RestartIndicator(o3 & 7),
            _ => return None,
        },
        _ => return None,
    })
}

fn push_ie(out: &mut Vec<u8>, ie_id: u8, data: &[u8]) {
    // Q.931 lengths are one octet; longer contents are cut (never produced by this stack).
    let len = data.len().min(255);
    out.push(ie_id);
    out.push(len as u8);
    out.extend_from_slice(data.get(..len).unwrap_or(data));
}

fn encode_number(n: &PartyNumber, with_presentation: bool) -> Vec<u8> {
    let mut data = Vec::with_capacity(n.digits.len() + 3);
    let o3 = (n.number_type & 7) << 4 | (n.plan & 0x0f);
    match (with_presentation, n.presentation, n.reason) {
        (true, Some((p, s)), Some(reason)) => {
            data.push(o3);
            data.push((p & 3) << 5 | (s & 3));
            data.push(0x80 | (reason & 0x0f));
        }
        (true, Some((p, s)), None) => {
            data.push(o3);
            data.push(0x80 | (p & 3) << 5 | (s & 3));
        }
        _ => data.push(0x80 | o3),
    }
    data.extend(n.digits.bytes().map(|b| b & 0x7f));
    data
}

fn encode_ie(ie: &Ie, out: &mut Vec<u8>) {
    match ie {
        Ie::BearerCapability(b) => {
            let mut data = vec![
                0x80 | (b.transfer_capability & 0x1f),
                0x80 | b.transfer_rate,
            ];
            if let Some(l1) = b.layer1 {
                data.push(0xa0 | (l1 & 0x1f));
            }
            push_ie(out, id::BEARER, &data);
        }
        Ie::Cause(c) => {
            let mut data = vec![0x80 | (c.location & 0x0f), 0x80 | (c.value & 0x7f)];
            data.extend_from_slice(&c.diagnostics);
            push_ie(out, id::CAUSE, &data);
        }
        Ie::CallState(s) => push_ie(out, id::CALL_STATE, &[s & 0x3f]),
        Ie::ChannelId(c) => {
            let selection = match c.selection {
                ChannelSelection::None => 0,
                ChannelSelection::Channels(_) => 1,
                ChannelSelection::Any => 3,
            };
            let mut data = vec![
                0x80 | 0x20
                    | if c.interface.is_some() { 0x40 } else { 0 }
                    | if c.exclusive { 0x08 } else { 0 }
                    | if c.d_channel { 0x04 } else { 0 }
                    | selection,
            ];
            if let Some(interface) = c.interface {
                data.push(0x80 | (interface & 0x7f));
            }
            if let ChannelSelection::Channels(channels) = &c.selection {
                data.push(0x83);
                let last = channels.len().saturating_sub(1);
                for (i, ch) in channels.iter().enumerate() {
                    data.push(ch & 0x7f | if i == last { 0x80 } else { 0 });
                }
            }
            push_ie(out, id::CHANNEL_ID, &data);
        }
        Ie::Facility(data) => push_ie(out, id::FACILITY, data),
        Ie::Progress(p) => push_ie(
            out,
            id::PROGRESS,
            &[0x80 | (p.location & 0x0f), 0x80 | (p.description & 0x7f)],
        ),
        Ie::Notification(n) => push_ie(out, id::NOTIFICATION, &[0x80 | n]),
        Ie::Display(d) => push_ie(out, id::DISPLAY, d),
        Ie::CallingNumber(n) => push_ie(out, id::CALLING, &encode_number(n, true)),
        Ie::CalledNumber(n) => push_ie(out, id::CALLED, &encode_number(n, false)),
        Ie::RedirectingNumber(n) => push_ie(out, id::REDIRECTING, &encode_number(n, true)),
        Ie::RestartIndicator(class) => push_ie(out, id::RESTART, &[0x80 | (class & 7)]),
        Ie::SendingComplete => out.push(id::SENDING_COMPLETE),
        Ie::Other {
            codeset, id, data, ..
        } => {
            if *codeset != 0 {
                out.push(0x98 | (codeset & 7));
            }
            if id & 0x80 != 0 {
                out.push(*id);
            } else {
                push_ie(out, *id, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cr(value: u16, from_destination: bool) -> CallReference {
        CallReference {
            value,
            from_destination,
        }
    }

    #[test]
    fn setup_round_trips_with_every_element() {
        let setup = Message::new(MessageType::Setup, cr(0x1234, false))
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
            .with(Ie::Progress(Progress {
                location: 1,
                description: 8,
            }))
            .with(Ie::Display(b"Agent 7".to_vec()))
            .with(Ie::Facility(vec![0x91, 0xa1, 0x03]))
            .with(Ie::CallingNumber(PartyNumber {
                number_type: 2,
                plan: 1,
                presentation: Some((1, 3)),
                reason: None,
                digits: "215551000".into(),
            }))
            .with(Ie::RedirectingNumber(PartyNumber {
                number_type: 4,
                plan: 1,
                presentation: Some((0, 0)),
                reason: Some(15),
                digits: "2000".into(),
            }))
            .with(Ie::CalledNumber(PartyNumber {
                number_type: 4,
                plan: 1,
                presentation: None,
                reason: None,
                digits: "4000".into(),
            }))
            .with(Ie::SendingComplete)
            .with(Ie::Other {
                codeset: 6,
                id: 0x42,
                data: vec![1, 2],
                malformed: false,
            });
        let bytes = setup.to_bytes();
        assert_eq!(&bytes[..5], &[0x08, 0x02, 0x12, 0x34, 0x05]);
        // Channel id for exclusive B-channel 17 on a PRI: 18 03 a9 83 91.
        let ci = bytes
            .windows(5)
            .any(|w| w == [0x18, 0x03, 0xa9, 0x83, 0x91]);
        assert!(ci, "{bytes:02x?}");
        assert_eq!(Message::decode(&bytes).unwrap(), setup);
    }

    #[test]
    fn release_with_cause_and_header_errors() {
        let bytes = [0x08, 0x02, 0x80, 0x01, 0x4d, 0x08, 0x02, 0x82, 0x90];
        let msg = Message::decode(&bytes).unwrap();
        assert_eq!(msg.kind, MessageType::Release);
        assert_eq!(msg.call_ref, cr(1, true));
        assert_eq!(msg.cause().map(|c| (c.location, c.value)), Some((2, 16)));
        assert_eq!(
            Message::decode(&[0x09, 0x02, 0, 1, 5]),
            Err(MessageError::ProtocolDiscriminator(9))
        );
        assert_eq!(
            Message::decode(&[0x08, 0x01, 1, 5]),
            Err(MessageError::CallReferenceLength(1))
        );
        assert!(matches!(
            Message::decode(&[0x08, 0x02, 0, 1, 5, 0x70, 9, 0x81]),
            Err(MessageError::TruncatedIe { id: 0x70, .. })
        ));
    }

    #[test]
    fn locking_shift_moves_elements_to_another_codeset_and_unknown_ies_are_kept() {
        // Codeset 0 unknown IE 0x7c, locking shift to 5, then an IE 0x70 that is NOT a called
        // number because it is in codeset 5; a malformed cause is kept as malformed.
        let bytes = [
            0x08, 0x02, 0, 1, 0x05, 0x7c, 1, 0xaa, 0x08, 1, 0x80, 0x95, 0x70, 2, 0x81, 0x31,
        ];
        let msg = Message::decode(&bytes).unwrap();
        assert_eq!(
            msg.ies,
            vec![
                Ie::Other {
                    codeset: 0,
                    id: 0x7c,
                    data: vec![0xaa],
                    malformed: false
                },
                Ie::Other {
                    codeset: 0,
                    id: 0x08,
                    data: vec![0x80],
                    malformed: true
                },
                Ie::Other {
                    codeset: 5,
                    id: 0x70,
                    data: vec![0x81, 0x31],
                    malformed: false
                },
            ]
        );
        assert!(msg.called().is_none());
        assert!(msg.has_malformed_ie());
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_valid_headers_with_arbitrary_ies(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            mt in 0u8..0x80,
        ) {
            let mut bytes = vec![0x08, 0x02, 0x00, 0x05, mt];
            bytes.extend(body);
            if let Ok(msg) = Message::decode(&bytes) {
                // What decodes re-encodes to something that decodes to the same message type.
                let again = Message::decode(&msg.to_bytes());
                prop_assert_eq!(again.map(|m| m.kind), Ok(msg.kind));
            }
        }
    }
}

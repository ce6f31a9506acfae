//! RTCP (RFC 3550): sender and receiver reports, SDES CNAME and BYE, parsed from and written to
//! compound packets without allocating; the rtcp-mux demultiplexing rule (RFC 5761, RFC 7983);
//! report blocks generated from [`ReceiveStats`]; round-trip time from LSR/DLSR.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::rtp::ReceiveStats;

/// RTCP packet types.
pub mod packet_type {
    /// Sender report.
    pub const SR: u8 = 200;
    /// Receiver report.
    pub const RR: u8 = 201;
    /// Source description.
    pub const SDES: u8 = 202;
    /// Goodbye.
    pub const BYE: u8 = 203;
}

const SDES_CNAME: u8 = 1;
/// Bytes of one report block.
pub const REPORT_BLOCK_LEN: usize = 24;

/// Why a datagram is not valid RTCP (the peer's bytes: dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Shorter than a 4-byte common header or than its length field says.
    #[error("RTCP packet truncated: header says {declared} bytes, {available} available")]
    Truncated {
        /// Bytes the length field announces.
        declared: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// Version is not 2.
    #[error("RTCP version {0} (only 2 exists)")]
    BadVersion(u8),
    /// The report count, SDES chunks or BYE list does not fit the packet body.
    #[error("RTCP packet type {packet_type}: body of {len} bytes does not hold its {count} items")]
    BadBody {
        /// Packet type.
        packet_type: u8,
        /// Item count field.
        count: u8,
        /// Body length.
        len: usize,
    },
    /// The first packet of a compound is neither SR nor RR (RFC 3550 A.2).
    #[error("compound RTCP must start with SR or RR, starts with type {0}")]
    BadCompoundStart(u8),
    /// Padding bit set on a packet other than the last, or an invalid pad count.
    #[error("RTCP padding invalid")]
    BadPadding,
    /// Serialising: output buffer too small.
    #[error("output buffer too small for RTCP packet ({need} bytes needed, {have} available)")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Serialising: too many items or text too long for the wire fields.
    #[error("RTCP field out of range: {0}")]
    FieldOutOfRange(&'static str),
}

/// What a datagram on a multiplexed port is (RFC 7983 first byte, RFC 5761 second byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demux {
    /// RTP media.
    Rtp,
    /// RTCP (RTP payload types 64–95 with the marker set: RTCP types 192–223).
    Rtcp,
    /// STUN (ICE consent, keepalives).
    Stun,
    /// DTLS (DTLS-SRTP handshake).
    Dtls,
    /// None of these: drop.
    Unknown,
}

/// Classifies a datagram received on a media port with rtcp-mux.
pub fn demux(datagram: &[u8]) -> Demux {
    match datagram {
        [0..=3, ..] => Demux::Stun,
        [20..=63, ..] => Demux::Dtls,
        [128..=191, second, ..] if (192..=223).contains(second) => Demux::Rtcp,
        [128..=191, _, ..] => Demux::Rtp,
        _ => Demux::Unknown,
    }
}

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// Source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from that source (0: none).
    pub last_sr: u32,
    /// Delay since that SR, 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8; REPORT_BLOCK_LEN]) -> Self {
        let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost24 = u(4) & 0x00ff_ffff;
        let cumulative_lost = ((lost24 << 8) as i32) >> 8;
        Self {
            ssrc: u(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_sequence: u(8),
            jitter: u(12),
            last_sr: u(16),
            delay_since_last_sr: u(20),
        }
    }

    fn write(&self, out: &mut [u8; REPORT_BLOCK_LEN]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
        out[4..8].copy_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.highest_sequence.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }

    /// A block about the source of `stats`, closing its loss interval. `last_sr` is the middle
    /// 32 bits of that source's last SR and when it arrived, if one did.
    pub fn from_stats(
        stats: &mut ReceiveStats,
        last_sr: Option<(u32, Instant)>,
        now: Instant,
    ) -> Self {
        let (lsr, dlsr) = match last_sr {
            Some((lsr, at)) => (lsr, to_q16(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Self {
            ssrc: stats.ssrc(),
            fraction_lost: stats.take_fraction_lost(),
            cumulative_lost: stats.cumulative_lost(),
            highest_sequence: stats.extended_max() as u32,
            jitter: stats.jitter(),
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        }
    }
}

fn to_q16(d: Duration) -> u32 {
    ((d.as_micros() as u64).saturating_mul(65_536) / 1_000_000).min(u64::from(u32::MAX)) as u32
}

/// Report blocks of an SR or RR, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    /// The blocks.
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0
            .chunks_exact(REPORT_BLOCK_LEN)
            .filter_map(|c| <&[u8; REPORT_BLOCK_LEN]>::try_from(c).ok())
            .map(ReportBlock::parse)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len() / REPORT_BLOCK_LEN
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (seconds since 1900 in the upper 32 bits, fraction in the lower).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// SDES chunks, borrowed: (SSRC, CNAME if present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunks<'a> {
    body: &'a [u8],
    count: u8,
}

impl<'a> SdesChunks<'a> {
    /// Each chunk's source and CNAME text (validated at parse time).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Option<&'a [u8]>)> + 'a {
        let mut rest = self.body;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let (chunk, after) = sdes_chunk(rest).ok()?;
            rest = after;
            Some(chunk)
        })
    }
}

/// Parses one SDES chunk: (ssrc, cname), remaining bytes.
#[allow(clippy::type_complexity)]
fn sdes_chunk(buf: &[u8]) -> Result<((u32, Option<&[u8]>), &[u8]), ()> {
    let (ssrc, mut rest) = buf.split_first_chunk::<4>().ok_or(())?;
    let ssrc = u32::from_be_bytes(*ssrc);
    let mut cname = None;
    let mut used = 4;
    loop {
        let (&kind, after) = rest.split_first().ok_or(())?;
        used += 1;
        if kind == 0 {
            // Null item ends the chunk; pad to a 32-bit boundary.
            let pad = (4 - used % 4) % 4;
            let after = after.get(pad..).ok_or(())?;
            return Ok(((ssrc, cname), after));
        }
        let (&len, after) = after.split_first().ok_or(())?;
        let (text, after) = after.split_at_checked(usize::from(len)).ok_or(())?;
        used += 1 + usize::from(len);
        if kind == SDES_CNAME {
            cname = Some(text);
        }
        rest = after;
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report.
    SenderReport {
        /// Sender.
        ssrc: u32,
        /// Sender information.
        info: SenderInfo,
        /// Reception reports.
        reports: ReportBlocks<'a>,
    },
    /// Receiver report.
    ReceiverReport {
        /// Reporter.
        ssrc: u32,
        /// Reception reports.
        reports: ReportBlocks<'a>,
    },
    /// Source description.
    SourceDescription(SdesChunks<'a>),
    /// Goodbye.
    Bye {
        /// Sources leaving (4 bytes each).
        ssrcs: &'a [u8],
        /// Optional reason text.
        reason: Option<&'a [u8]>,
    },
    /// Any other type (APP, feedback, XR): kept opaque.
    Other {
        /// Packet type.
        packet_type: u8,
        /// Count/format field.
        count: u8,
        /// Body after the common header.
        body: &'a [u8],
    },
}

/// Iterates over the packets of a compound RTCP datagram after validating all of it.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

/// Validates a compound datagram (RFC 3550 A.2: version 2, first packet SR or RR, padding only
/// on the last, lengths adding up exactly) and returns an iterator over its packets.
pub fn parse_compound(datagram: &[u8]) -> Result<Compound<'_>, RtcpError> {
    let mut rest = datagram;
    let mut first = true;
    if datagram.is_empty() {
        return Err(RtcpError::Truncated {
            declared: 4,
            available: 0,
        });
    }
    while !rest.is_empty() {
        let (_, len, after) = split_packet(rest)?;
        let pt = rest[1];
        if first && pt != packet_type::SR && pt != packet_type::RR {
            return Err(RtcpError::BadCompoundStart(pt));
        }
        if rest[0] & 0x20 != 0 && len != rest.len() {
            return Err(RtcpError::BadPadding);
        }
        parse_one(&rest[..len])?;
        first = false;
        rest = after;
    }
    Ok(Compound { rest: datagram })
}

/// Splits the first packet: (header byte0, packet length, rest).
fn split_packet(buf: &[u8]) -> Result<(u8, usize, &[u8]), RtcpError> {
    let head: &[u8; 4] = buf.first_chunk().ok_or(RtcpError::Truncated {
        declared: 4,
        available: buf.len(),
    })?;
    if head[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion(head[0] >> 6));
    }
    let len = (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1) * 4;
    if len > buf.len() {
        return Err(RtcpError::Truncated {
            declared: len,
            available: buf.len(),
        });
    }
    Ok((head[0], len, &buf[len..]))
}

/// Parses a single RTCP packet (exactly one, as delimited by its length field).
pub fn parse_one(packet: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    let (b0, len, _) = split_packet(packet)?;
    let pt = packet[1];
    let count = b0 & 0x1f;
    let mut body = &packet[4..len];
    if b0 & 0x20 != 0 {
        let pad = usize::from(body.last().copied().unwrap_or(0));
        if pad == 0 || pad > body.len() {
            return Err(RtcpError::BadPadding);
        }
        body = &body[..body.len() - pad];
    }
    let bad = || RtcpError::BadBody {
        packet_type: pt,
        count,
        len: body.len(),
    };
    let u32_at = |b: &[u8], i: usize| -> Result<u32, RtcpError> {
        b.get(i..i + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(bad)
    };
    let blocks = |b: &'_ [u8]| -> Result<(), RtcpError> {
        if b.len() < usize::from(count) * REPORT_BLOCK_LEN {
            return Err(bad());
        }
        Ok(())
    };
    Ok(match pt {
        packet_type::SR => {
            let ssrc = u32_at(body, 0)?;
            let ntp = (u64::from(u32_at(body, 4)?) << 32) | u64::from(u32_at(body, 8)?);
            let info = SenderInfo {
                ntp,
                rtp_timestamp: u32_at(body, 12)?,
                packets: u32_at(body, 16)?,
                octets: u32_at(body, 20)?,
            };
            let rb = &body[24..];
            blocks(rb)?;
            RtcpPacket::SenderReport {
                ssrc,
                info,
                reports: ReportBlocks(&rb[..usize::from(count) * REPORT_BLOCK_LEN]),
            }
        }
        packet_type::RR => {
            let ssrc = u32_at(body, 0)?;
            let rb = &body[4..];
            blocks(rb)?;
            RtcpPacket::ReceiverReport {
                ssrc,
                reports: ReportBlocks(&rb[..usize::from(count) * REPORT_BLOCK_LEN]),
            }
        }
        packet_type::SDES => {
            let mut rest = body;
            for _ in 0..count {
                let (_, after) = sdes_chunk(rest).map_err(|_| bad())?;
                rest = after;
            }
            RtcpPacket::SourceDescription(SdesChunks { body, count })
        }
        packet_type::BYE => {
            let n = usize::from(count) * 4;
            let (ssrcs, rest) = body.split_at_checked(n).ok_or_else(bad)?;
            let reason = match rest.split_first() {
                Some((&l, text)) => Some(text.get(..usize::from(l)).ok_or_else(bad)?),
                None => None,
            };
            RtcpPacket::Bye { ssrcs, reason }
        }
        _ => RtcpPacket::Other {
            packet_type: pt,
            count,
            body,
        },
    })
}

impl<'a> Iterator for Compound<'a> {
    type Item = RtcpPacket<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let (_, len, after) = split_packet(self.rest).ok()?;
        let packet = parse_one(&self.rest[..len]).ok()?;
        self.rest = after;
        Some(packet)
    }
}

/// Writes RTCP packets one after another into a buffer (a compound datagram).
#[derive(Debug)]
pub struct RtcpWriter<'b> {
    out: &'b mut [u8],
    len: usize,
}

impl<'b> RtcpWriter<'b> {
    /// A writer at the start of `out`.
    pub fn new(out: &'b mut [u8]) -> Self {
        Self { out, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn reserve(&mut self, need: usize) -> Result<&mut [u8], RtcpError> {
        let have = self.out.len() - self.len;
        let start = self.len;
        let slot = self
            .out
            .get_mut(start..start + need)
            .ok_or(RtcpError::BufferTooSmall { need, have })?;
        slot.fill(0);
        self.len += need;
        Ok(slot)
    }

    fn header(slot: &mut [u8], count: u8, pt: u8) {
        let words = (slot.len() / 4 - 1) as u16;
        slot[0] = 0x80 | count;
        slot[1] = pt;
        slot[2..4].copy_from_slice(&words.to_be_bytes());
    }

    /// A sender report with up to 31 report blocks.
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        info: &SenderInfo,
        reports: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        if reports.len() > 31 {
            return Err(RtcpError::FieldOutOfRange("more than 31 report blocks"));
        }
        let slot = self.reserve(28 + reports.len() * REPORT_BLOCK_LEN)?;
        Self::header(slot, reports.len() as u8, packet_type::SR);
        slot[4..8].copy_from_slice(&ssrc.to_be_bytes());
        slot[8..16].copy_from_slice(&info.ntp.to_be_bytes());
        slot[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
        slot[20..24].copy_from_slice(&info.packets.to_be_bytes());
        slot[24..28].copy_from_slice(&info.octets.to_be_bytes());
        Self::blocks(&mut slot[28..], reports);
        Ok(())
    }

    /// A receiver report with up to 31 report blocks.
    pub fn receiver_report(&mut self, ssrc: u32, reports: &[ReportBlock]) -> Result<(), RtcpError> {
        if reports.len() > 31 {
            return Err(RtcpError::FieldOutOfRange("more than 31 report blocks"));
        }
        let slot = self.reserve(8 + reports.len() * REPORT_BLOCK_LEN)?;
        Self::header(slot, reports.len() as u8, packet_type::RR);
        slot[4..8].copy_from_slice(&ssrc.to_be_bytes());
        Self::blocks(&mut slot[8..], reports);
        Ok(())
    }

    fn blocks(out: &mut [u8], reports: &[ReportBlock]) {
        for (chunk, r) in out.chunks_exact_mut(REPORT_BLOCK_LEN).zip(reports) {
            if let Ok(b) = <&mut [u8; REPORT_BLOCK_LEN]>::try_from(chunk) {
                r.write(b);
            }
        }
    }

    /// An SDES packet with one chunk carrying our CNAME.
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &[u8]) -> Result<(), RtcpError> {
        let len = u8::try_from(cname.len())
            .map_err(|_| RtcpError::FieldOutOfRange("CNAME longer than 255 bytes"))?;
        // ssrc + type + len + text + null, padded to 4.
        let chunk = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
        let slot = self.reserve(4 + chunk)?;
        Self::header(slot, 1, packet_type::SDES);
        slot[4..8].copy_from_slice(&ssrc.to_be_bytes());
        slot[8] = SDES_CNAME;
        slot[9] = len;
        slot[10..10 + cname.len()].copy_from_slice(cname);
        Ok(())
    }

    /// A BYE for `ssrcs` (up to 31) with an optional reason.
    pub fn bye(&mut self, ssrcs: &[u32], reason: Option<&[u8]>) -> Result<(), RtcpError> {
        if ssrcs.len() > 31 {
            return Err(RtcpError::FieldOutOfRange("more than 31 sources in BYE"));
        }
        let reason_len =
            match reason {
                Some(r) => {
                    1 + usize::from(u8::try_from(r.len()).map_err(|_| {
                        RtcpError::FieldOutOfRange("BYE reason longer than 255 bytes")
                    })?)
                }
                None => 0,
            };
        let slot = self.reserve(4 + (ssrcs.len() * 4 + reason_len).div_ceil(4) * 4)?;
        Self::header(slot, ssrcs.len() as u8, packet_type::BYE);
        for (i, s) in ssrcs.iter().enumerate() {
            slot[4 + i * 4..8 + i * 4].copy_from_slice(&s.to_be_bytes());
        }
        if let Some(r) = reason {
            let at = 4 + ssrcs.len() * 4;
            slot[at] = r.len() as u8;
            slot[at + 1..at + 1 + r.len()].copy_from_slice(r);
        }
        Ok(())
    }
}

/// Maps the monotonic clock to NTP time, from one wall-clock reading taken by the IO shell.
#[derive(Debug, Clone, Copy)]
pub struct NtpClock {
    base: Instant,
    base_ntp: u64,
}

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

impl NtpClock {
    /// `base` corresponds to `unix` (time since 1970).
    pub fn new(base: Instant, unix: Duration) -> Self {
        Self {
            base,
            base_ntp: duration_to_ntp(unix + Duration::from_secs(NTP_UNIX_OFFSET)),
        }
    }

    /// NTP timestamp of `now`.
    pub fn ntp(&self, now: Instant) -> u64 {
        self.base_ntp
            .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.base)))
    }

    /// Round-trip time from a report block about our stream received at `now` (RFC 3550
    /// 6.4.1: arrival − LSR − DLSR). `None` when the peer has not seen an SR of ours yet or the
    /// figures are inconsistent.
    pub fn round_trip(&self, now: Instant, block: &ReportBlock) -> Option<Duration> {
        if block.last_sr == 0 {
            return None;
        }
        let arrival = (self.ntp(now) >> 16) as u32;
        let rtt = arrival
            .wrapping_sub(block.last_sr)
            .wrapping_sub(block.delay_since_last_sr);
        if (rtt as i32) < 0 {
            return None;
        }
        Some(Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536))
    }
}

/// Middle 32 bits of an NTP timestamp (the LSR field).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

fn duration_to_ntp(d: Duration) -> u64 {
    (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_follows_rfc5761_and_rfc7983() {
        assert_eq!(demux(&[0x80, 0x00]), Demux::Rtp);
        assert_eq!(demux(&[0x80, 0x80 | 8]), Demux::Rtp);
        assert_eq!(demux(&[0x80, 200]), Demux::Rtcp);
        assert_eq!(demux(&[0x81, 201]), Demux::Rtcp);
        // RTP PT 64..=95 with marker is indistinguishable from RTCP: it is RTCP.
        assert_eq!(demux(&[0x80, 0x80 | 64]), Demux::Rtcp);
        assert_eq!(demux(&[0x80, 0x80 | 95]), Demux::Rtcp);
        assert_eq!(demux(&[0x80, 0x80 | 96]), Demux::Rtp);
        assert_eq!(demux(&[0x00, 0x01]), Demux::Stun);
        assert_eq!(demux(&[22, 0xfe]), Demux::Dtls);
        assert_eq!(demux(&[0x80]), Demux::Unknown);
        assert_eq!(demux(&[]), Demux::Unknown);
    }

    #[test]
    fn compound_round_trip() {
        let block = ReportBlock {
            ssrc: 9,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_sequence: 70_000,
            jitter: 42,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65_536,
        };
        let info = SenderInfo {
            ntp: 0xdead_beef_0000_0001,
            rtp_timestamp: 160,
            packets: 5,
            octets: 800,
        };
        let mut buf = [0u8; 256];
        let mut w = RtcpWriter::new(&mut buf);
        w.sender_report(1, &info, &[block]).unwrap();
        w.sdes_cname(1, b"leg-1@gw").unwrap();
        w.bye(&[1], Some(b"call ended")).unwrap();
        let n = w.len();
        let packets: Vec<_> = parse_compound(&buf[..n]).unwrap().collect();
        assert_eq!(packets.len(), 3);
        match packets[0] {
            RtcpPacket::SenderReport {
                ssrc,
                info: i,
                reports,
            } => {
                assert_eq!((ssrc, i), (1, info));
                assert_eq!(reports.iter().collect::<Vec<_>>(), vec![block]);
            }
            ref p => panic!("{p:?}"),
        }
        match packets[1] {
            RtcpPacket::SourceDescription(c) => {
                assert_eq!(
                    c.iter().collect::<Vec<_>>(),
                    vec![(1, Some(&b"leg-1@gw"[..]))]
                );
            }
            ref p => panic!("{p:?}"),
        }
        assert_eq!(
            packets[2],
            RtcpPacket::Bye {
                ssrcs: &[0, 0, 0, 1],
                reason: Some(b"call ended")
            }
        );
        // A compound must start with a report.
        let mut buf2 = [0u8; 64];
        let mut w = RtcpWriter::new(&mut buf2);
        w.bye(&[1], None).unwrap();
        let n = w.len();
        assert_eq!(
            parse_compound(&buf2[..n]).unwrap_err(),
            RtcpError::BadCompoundStart(203)
        );
        // Truncation is caught.
        assert!(matches!(
            parse_compound(&buf[..27]),
            Err(RtcpError::Truncated { .. })
        ));
    }

    #[test]
    fn reports_from_stats_and_rtt() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(77, 8000);
        for i in 0u16..100 {
            if i % 4 != 0 {
                stats.update(
                    i,
                    u32::from(i) * 160,
                    t0 + Duration::from_millis(u64::from(i) * 20),
                );
            }
        }
        let clock = NtpClock::new(t0, Duration::from_secs(1_700_000_000));
        // The peer's SR arrived at t0 + 1 s, we report at t0 + 1.5 s.
        let their_sr = ntp_middle(0x0001_0002_0003_0004);
        let b = ReportBlock::from_stats(
            &mut stats,
            Some((their_sr, t0 + Duration::from_secs(1))),
            t0 + Duration::from_millis(1500),
        );
        assert_eq!(b.ssrc, 77);
        assert_eq!(b.highest_sequence, 99);
        assert_eq!(b.cumulative_lost, 24); // 1 is the first; 4, 8, ..., 96 lost
        assert_eq!(b.fraction_lost, (24 * 256 / 99) as u8);
        assert_eq!(b.last_sr, their_sr);
        assert_eq!(b.delay_since_last_sr, 32_768);

        // RTT: we sent an SR at t0 + 2 s; the peer held it 100 ms; its RR reaches us at 2.3 s.
        let our_sr = ntp_middle(clock.ntp(t0 + Duration::from_secs(2)));
        let rr = ReportBlock {
            last_sr: our_sr,
            delay_since_last_sr: 6_554, // 100 ms
            ..b
        };
        let rtt = clock
            .round_trip(t0 + Duration::from_millis(2300), &rr)
            .unwrap();
        assert!((rtt.as_secs_f64() - 0.2).abs() < 0.001, "{rtt:?}");
        assert_eq!(
            clock.round_trip(t0, &ReportBlock { last_sr: 0, ..rr }),
            None
        );
    }
}

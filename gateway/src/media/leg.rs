//! The media half of one RTP leg, sans-IO: datagrams in (RTP, telephone-events, comfort noise,
//! RTCP on the rtcp-mux port or its own), 20 ms linear frames out through the jitter buffer,
//! decoder and PLC; frames in, packets out through one outbound RTP context kept for the leg's
//! life (re-configuration keeps it); any packetisation time from 10 to 60 ms on the wire while
//! the bridge side stays at 20 ms; SDP direction honoured; symmetric RTP latching; RFC 4733 both
//! ways, or in-band tones toward a peer without telephone-event; RFC 3389 comfort noise; an
//! inactivity timeout that tells the call layer to hang up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use codecs::plc::Plc;

use codecs::FRAME_SAMPLES;
use codecs::dtmf::DtmfParams;

use super::bridge::Frame;
use super::codec::{AudioFormat, LegCodec};
use super::dtmf::{DtmfReceiver, DtmfSendError, DtmfSender, DtmfSenderConfig, ReceivedDigit};
use super::inband::InbandDtmfPlayer;
use super::jitter::{InsertOutcome, JitterBuffer, JitterConfig, Playout, PulledAudio};
use super::rtcp::{
    Demux, NtpClock, ReportBlock, RtcpPacket, RtcpWriter, SenderInfo, demux, ntp_middle,
    parse_compound,
};
use super::rtp::{HEADER_LEN, ReceiveStats, RtpPacket, RtpSender};

/// How long the latched address must have been silent before another address may take over
/// (a NAT rebinding, a re-homed peer) — and no sooner, so a stray or forged packet cannot.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

/// Shortest packetisation time accepted on the wire.
pub const MIN_PTIME_MS: u16 = 10;
/// Longest packetisation time accepted on the wire.
pub const MAX_PTIME_MS: u16 = 60;
/// Largest 8 kHz sample count of one packet (60 ms).
const MAX_PACKET_SAMPLES: usize = MAX_PTIME_MS as usize * 8;
/// Sample FIFOs between packets and 20 ms frames.
const FIFO: usize = MAX_PACKET_SAMPLES + FRAME_SAMPLES;
/// While held with comfort noise, one RFC 3389 update this often (in 20 ms ticks: 200 ms).
const CN_REFRESH_TICKS: u32 = 10;
/// Level of the comfort noise we send toward a held party (−dBov).
pub const HOLD_NOISE_DBOV: u8 = 60;

/// SDP media direction, from our side (RFC 3264): what *we* do on this leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Direction {
    /// Send and receive.
    #[default]
    SendRecv,
    /// We send, and ignore what arrives (the peer put us on hold with `recvonly`).
    SendOnly,
    /// We receive and send nothing (the peer holds with `sendonly`); timestamps keep advancing.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// True when we send media.
    pub const fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// True when we play out what arrives.
    pub const fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

/// Settings of one RTP leg (from the SDP offer/answer).
#[derive(Debug, Clone, Copy)]
pub struct RtpLegConfig {
    /// Negotiated audio format.
    pub format: AudioFormat,
    /// Its payload type.
    pub payload_type: u8,
    /// Negotiated telephone-event payload type, if any.
    pub telephone_event: Option<u8>,
    /// Our SSRC.
    pub ssrc: u32,
    /// First sequence number (random).
    pub initial_sequence: u16,
    /// First timestamp (random).
    pub initial_timestamp: u32,
    /// Where the SDP says to send; replaced by the source of the peer's media (symmetric RTP).
    pub remote: Option<SocketAddr>,
    /// No RTP or RTCP for this long ends the call.
    pub inactivity_timeout: Duration,
    /// Jitter buffer settings.
    pub jitter: JitterConfig,
    /// Wall-clock mapping for RTCP (SR timestamps, round-trip time). Without it the leg sends
    /// receiver reports only and measures no RTT.
    pub ntp_clock: Option<NtpClock>,
    /// Interval between our RTCP reports.
    pub rtcp_interval: Duration,
    /// Packetisation time we send with, 10..=60 ms (the peer's `a=ptime`). What arrives is
    /// framed by its own size, whatever this says.
    pub ptime_ms: u16,
    /// SDP direction from our side.
    pub direction: Direction,
    /// Negotiated comfort-noise payload type (RFC 3389, usually 13), if any.
    pub comfort_noise: Option<u8>,
    /// RTCP multiplexed on the RTP port (RFC 5761). When false, RTCP goes to `remote_rtcp` (or
    /// the RTP port + 1) and arrives through [`RtpLeg::handle_rtcp_datagram`].
    pub rtcp_mux: bool,
    /// Where the SDP says RTCP goes (`a=rtcp`), when not multiplexed.
    pub remote_rtcp: Option<SocketAddr>,
}

impl RtpLegConfig {
    /// PCMU with telephone-event 101, 30 s inactivity timeout, default jitter buffer.
    pub fn new(ssrc: u32, remote: Option<SocketAddr>) -> Self {
        Self {
            format: AudioFormat::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            ssrc,
            initial_sequence: (ssrc >> 16) as u16,
            initial_timestamp: ssrc.rotate_left(7),
            remote,
            inactivity_timeout: Duration::from_secs(30),
            jitter: JitterConfig::default(),
            ntp_clock: None,
            rtcp_interval: Duration::from_secs(5),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            comfort_noise: None,
            rtcp_mux: true,
            remote_rtcp: None,
        }
    }
}

/// Something the call layer must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    /// A telephone-event digit began or ended (each exactly once).
    Digit(ReceivedDigit),
    /// Media is now sent to this address (first packet, or re-latched).
    Latched(SocketAddr),
    /// Nothing received for the inactivity timeout: end the call (SIP BYE).
    Inactive,
}

/// Counters of one leg.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegCounters {
    /// Datagrams that were not RTP/RTCP or failed to parse.
    pub malformed: u64,
    /// RTP with a payload type not negotiated.
    pub unknown_payload_type: u64,
    /// Media from an address other than the latched one (dropped).
    pub foreign_source: u64,
    /// RTCP compound packets received.
    pub rtcp_received: u64,
    /// Packets sent (audio, events and comfort noise).
    pub sent: u64,
    /// Media that arrived while our direction does not receive (dropped after latching).
    pub not_receiving: u64,
    /// RFC 3389 comfort-noise packets received.
    pub comfort_noise_received: u64,
    /// Times the inbound packetisation changed (the jitter buffer re-framed).
    pub reframed: u64,
}

const EVENTS: usize = 8;

/// One RTP leg's media state. See the module docs.
pub struct RtpLeg {
    cfg: RtpLegConfig,
    remote: Option<SocketAddr>,
    latched: bool,
    last_from_remote: Option<Instant>,
    last_activity: Instant,
    inactive_reported: bool,
    sender: RtpSender,
    stats: Option<ReceiveStats>,
    buffer: JitterBuffer,
    plc: Plc,
    dtmf_tx: DtmfSender,
    dtmf_rx: DtmfReceiver,
    events: [Option<LegEvent>; EVENTS],
    ev_head: usize,
    ev_len: usize,
    counters: LegCounters,
    /// Middle 32 bits of the peer's last SR and when it arrived.
    last_sr: Option<(u32, Instant)>,
    next_rtcp: Instant,
    round_trip: Option<Duration>,
    peer_report: Option<ReportBlock>,
    codec: LegCodec,
    /// Decoded samples not yet handed out as frames.
    in_pcm: [i16; FIFO],
    in_len: usize,
    /// Samples not yet packetised.
    out_pcm: [i16; FIFO],
    out_len: usize,
    /// Inbound packets of a size other than the jitter buffer's framing, in a row.
    odd_size: (usize, u32),
    /// Noise level (−dBov) of the peer's last comfort-noise packet, while it is silent.
    rx_noise: Option<u8>,
    noise: NoiseGen,
    cn_ticks: u32,
    /// In-band tones toward a peer that negotiated no telephone-event.
    inband: InbandDtmfPlayer,
    /// Where the peer's RTCP comes from on the RTCP port (symmetric RTCP).
    rtcp_from: Option<SocketAddr>,
}

/// Writes one RTP packet of `pcm` (8 kHz samples) into `out`: the payload is encoded straight
/// behind the 12-byte header, no intermediate copy. Returns its length (`None`: `out` too
/// small).
fn packetise(
    sender: &mut RtpSender,
    codec: &mut LegCodec,
    payload_type: u8,
    pcm: &[i16],
    out: &mut [u8],
) -> Option<usize> {
    let body = out.get_mut(HEADER_LEN..)?;
    let n = codec.encode(pcm, body);
    if n == 0 {
        return None;
    }
    let h = sender.next_packet(payload_type, codec.units_for(pcm.len()), n);
    let head = out.first_chunk_mut::<HEADER_LEN>()?;
    head[0] = 0x80;
    head[1] = (u8::from(h.marker) << 7) | (h.payload_type & 0x7f);
    head[2..4].copy_from_slice(&h.sequence.to_be_bytes());
    head[4..8].copy_from_slice(&h.timestamp.to_be_bytes());
    head[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    Some(HEADER_LEN + n)
}

/// A cheap white-noise source at a given level (comfort noise).
#[derive(Debug, Clone, Copy)]
pub struct NoiseGen {
    state: u32,
}

impl NoiseGen {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u32) -> Self {
        Self { state: seed | 1 }
    }

    /// Fills `out` with uniform white noise of `level` −dBov (0 dBov: the RMS of a full-scale
    /// square wave; RFC 3389 §3.1), 127 = digital silence.
    pub fn fill(&mut self, level_dbov: u8, out: &mut [i16]) {
        if level_dbov >= 127 {
            out.fill(0);
            return;
        }
        let rms = 32767.0 * 10f32.powf(-f32::from(level_dbov) / 20.0);
        // Uniform in [-a, a] has an RMS of a/√3.
        let a = (rms * 1.732_050_8).min(32767.0);
        for s in out {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.state = x;
            let u = (x as f32 / u32::MAX as f32) * 2.0 - 1.0;
            *s = (u * a) as i16;
        }
    }
}

impl std::fmt::Debug for RtpLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpLeg")
            .field("remote", &self.remote)
            .field("latched", &self.latched)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl RtpLeg {
    /// A leg set up at `now`.
    pub fn new(cfg: RtpLegConfig, now: Instant) -> Self {
        let cfg = Self::sanitise(cfg);
        let dtmf_cfg = DtmfSenderConfig {
            payload_type: cfg.telephone_event.unwrap_or(101),
            clock_rate: cfg.format.clock_rate(),
            ..DtmfSenderConfig::default()
        };
        let codec = LegCodec::new(cfg.format);
        let jitter = JitterConfig {
            clock_rate: cfg.format.clock_rate(),
            frame_units: codec.units_for(usize::from(cfg.ptime_ms) * 8),
            ..cfg.jitter
        };
        Self {
            remote: cfg.remote,
            latched: false,
            last_from_remote: None,
            last_activity: now,
            inactive_reported: false,
            sender: RtpSender::new(cfg.ssrc, cfg.initial_sequence, cfg.initial_timestamp),
            stats: None,
            buffer: JitterBuffer::new(jitter, now),
            plc: Plc::new(),
            dtmf_tx: DtmfSender::new(dtmf_cfg),
            dtmf_rx: DtmfReceiver::new(Duration::from_millis(250)),
            events: [None; EVENTS],
            ev_head: 0,
            ev_len: 0,
            counters: LegCounters::default(),
            last_sr: None,
            next_rtcp: now + cfg.rtcp_interval,
            round_trip: None,
            peer_report: None,
            codec,
            in_pcm: [0; FIFO],
            in_len: 0,
            out_pcm: [0; FIFO],
            out_len: 0,
            odd_size: (0, 0),
            rx_noise: None,
            noise: NoiseGen::new(cfg.ssrc),
            cn_ticks: 0,
            inband: InbandDtmfPlayer::new(DtmfParams::default()),
            rtcp_from: None,
            cfg,
        }
    }

    fn sanitise(mut cfg: RtpLegConfig) -> RtpLegConfig {
        cfg.ptime_ms = cfg.ptime_ms.clamp(MIN_PTIME_MS, MAX_PTIME_MS);
        cfg.payload_type &= 0x7f;
        cfg
    }

    /// The settings in use.
    pub fn config(&self) -> &RtpLegConfig {
        &self.cfg
    }

    /// New negotiated parameters (a re-INVITE or UPDATE: codec, payload types, ptime, remote
    /// address, direction). The outbound RTP context is kept — same SSRC, sequence numbers and
    /// timestamps continuing — so the peer sees one stream for the leg's whole life; `ssrc` and
    /// the initial sequence/timestamp of `cfg` are ignored. A new SDP address is used at once
    /// and the next source of media may latch immediately. The next packet carries the marker.
    pub fn reconfigure(&mut self, now: Instant, cfg: RtpLegConfig) {
        let cfg = Self::sanitise(RtpLegConfig {
            ssrc: self.cfg.ssrc,
            initial_sequence: self.cfg.initial_sequence,
            initial_timestamp: self.cfg.initial_timestamp,
            ..cfg
        });
        if cfg.format != self.cfg.format {
            self.codec = LegCodec::new(cfg.format);
            self.plc.reset();
            self.in_len = 0;
            self.out_len = 0;
        }
        let units = self.codec.units_for(usize::from(cfg.ptime_ms) * 8);
        if cfg.format != self.cfg.format || cfg.payload_type != self.cfg.payload_type {
            self.buffer.set_framing(cfg.format.clock_rate(), units);
        }
        if let Some(pt) = cfg.telephone_event {
            self.dtmf_tx.set_payload_type(pt);
        }
        if cfg.remote != self.cfg.remote {
            self.remote = cfg.remote;
            self.latched = false;
            self.last_from_remote = None;
            self.rtcp_from = None;
        }
        if cfg.direction.receives() && !self.cfg.direction.receives() {
            self.buffer.restart();
            self.in_len = 0;
        }
        if cfg.inactivity_timeout != self.cfg.inactivity_timeout {
            self.last_activity = now;
            self.inactive_reported = false;
        }
        self.sender.source_changed();
        self.cfg = cfg;
    }
    /// Round-trip time from the peer's last report about our stream (needs an NTP clock).
    pub fn round_trip(&self) -> Option<Duration> {
        self.round_trip
    }

    /// What the peer last reported about our stream (its loss and jitter figures).
    pub fn peer_report(&self) -> Option<ReportBlock> {
        self.peer_report
    }

    fn handle_rtcp(&mut self, now: Instant, bytes: &[u8]) -> bool {
        let Ok(compound) = parse_compound(bytes) else {
            return false;
        };
        let source = self.stats.as_ref().map(|s| s.ssrc());
        for packet in compound {
            let (blocks, sender) = match packet {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => (Some(reports), Some((ssrc, info))),
                RtcpPacket::ReceiverReport { reports, .. } => (Some(reports), None),
                _ => (None, None),
            };
            if let Some((ssrc, info)) = sender
                && source.is_none_or(|s| s == ssrc)
            {
                self.last_sr = Some((ntp_middle(info.ntp), now));
            }
            for block in blocks.iter().flat_map(|b| b.iter()) {
                if block.ssrc == self.sender.ssrc() {
                    self.peer_report = Some(block);
                    if let Some(clock) = self.cfg.ntp_clock {
                        self.round_trip = clock.round_trip(now, &block).or(self.round_trip);
                    }
                }
            }
        }
        true
    }

    /// One datagram received on the leg's separate RTCP port (no rtcp-mux). Accepted from the
    /// latched peer's address (any port); its source becomes where our RTCP goes.
    pub fn handle_rtcp_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let peer_ok = !self.latched || self.remote.is_none_or(|r| r.ip() == from.ip());
        if demux(bytes) == Demux::Rtcp && peer_ok && self.handle_rtcp(now, bytes) {
            self.counters.rtcp_received += 1;
            self.last_activity = now;
            self.rtcp_from = Some(from);
        } else {
            self.counters.malformed += 1;
        }
    }

    /// Where our RTCP goes: the RTP address with rtcp-mux; else where the peer's RTCP comes from,
    /// the SDP's `a=rtcp`, or the RTP port + 1.
    pub fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.cfg.rtcp_mux {
            return self.remote;
        }
        self.rtcp_from.or(self.cfg.remote_rtcp).or_else(|| {
            self.remote
                .map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1)))
        })
    }

    /// Our RTCP compound (SR when we have sent media and know the wall clock, else RR; a
    /// report block about the peer's stream; SDES CNAME) if one is due at `now`, and where it
    /// goes (see [`RtpLeg::rtcp_destination`]).
    pub fn poll_rtcp(&mut self, now: Instant, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if now < self.next_rtcp {
            return None;
        }
        let to = self.rtcp_destination()?;
        self.next_rtcp = now + self.cfg.rtcp_interval;
        let block = self
            .stats
            .as_mut()
            .map(|st| ReportBlock::from_stats(st, self.last_sr, now));
        let blocks = block.as_slice();
        let ssrc = self.sender.ssrc();
        let mut w = RtcpWriter::new(out);
        match self.cfg.ntp_clock {
            Some(clock) if self.sender.packets_sent() > 0 => {
                // RTP timestamp of "now": the next packet's, as the media clock runs with it.
                let info = SenderInfo {
                    ntp: clock.ntp(now),
                    rtp_timestamp: self.sender.next_timestamp(),
                    packets: self.sender.packets_sent() as u32,
                    octets: self.sender.octets_sent() as u32,
                };
                w.sender_report(ssrc, &info, blocks).ok()?;
            }
            _ => w.receiver_report(ssrc, blocks).ok()?,
        }
        let mut cname = *b"spanbridge-00000000";
        let hex = b"0123456789abcdef";
        for (i, c) in cname[11..].iter_mut().enumerate() {
            *c = hex[((ssrc >> (28 - 4 * i)) & 0xf) as usize];
        }
        w.sdes_cname(ssrc, &cname).ok()?;
        Some((w.len(), to))
    }

    /// Where media goes now.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Counters.
    pub fn counters(&self) -> LegCounters {
        self.counters
    }

    /// Receive statistics of the current source (for RTCP and `gwctl calls`).
    pub fn receive_stats(&self) -> Option<&ReceiveStats> {
        self.stats.as_ref()
    }

    /// The jitter buffer (its statistics and target delay).
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.buffer
    }

    /// The outbound context (SR sender info).
    pub fn sender(&self) -> &RtpSender {
        &self.sender
    }

    fn emit(&mut self, e: LegEvent) {
        if self.ev_len == EVENTS {
            self.ev_head = (self.ev_head + 1) % EVENTS;
            self.ev_len -= 1;
        }
        self.events[(self.ev_head + self.ev_len) % EVENTS] = Some(e);
        self.ev_len += 1;
    }

    /// The next event for the call layer.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        if self.ev_len == 0 {
            return None;
        }
        let e = self.events[self.ev_head].take();
        self.ev_head = (self.ev_head + 1) % EVENTS;
        self.ev_len -= 1;
        e
    }

    /// Symmetric RTP: may media from `from` be accepted (and become where we send)?
    fn latch(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.latched && self.remote == Some(from) {
            self.last_from_remote = Some(now);
            return true;
        }
        let may = !self.latched
            || self
                .last_from_remote
                .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_AFTER);
        if !may {
            self.counters.foreign_source += 1;
            return false;
        }
        self.latched = true;
        self.last_from_remote = Some(now);
        if self.remote != Some(from) {
            self.remote = Some(from);
        }
        self.emit(LegEvent::Latched(from));
        true
    }

    /// One datagram received on the leg's media port.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match demux(bytes) {
            Demux::Rtp => {}
            Demux::Rtcp => {
                if (!self.latched || self.remote == Some(from)) && self.handle_rtcp(now, bytes) {
                    self.counters.rtcp_received += 1;
                    self.last_activity = now;
                } else {
                    self.counters.malformed += 1;
                }
                return;
            }
            // STUN/DTLS belong to WebRTC legs; on a plain RTP leg they are noise.
            _ => {
                self.counters.malformed += 1;
                return;
            }
        }
        let Ok(packet) = RtpPacket::parse(bytes) else {
            self.counters.malformed += 1;
            return;
        };
        let is_audio = packet.payload_type == self.cfg.payload_type;
        let is_event = self.cfg.telephone_event == Some(packet.payload_type);
        let is_noise = self.cfg.comfort_noise == Some(packet.payload_type);
        if !is_audio && !is_event && !is_noise {
            self.counters.unknown_payload_type += 1;
            return;
        }
        if !self.latch(now, from) {
            return;
        }
        self.last_activity = now;
        self.inactive_reported = false;
        if !self.cfg.direction.receives() {
            self.counters.not_receiving += 1;
            return;
        }
        if is_noise {
            // RFC 3389: the first byte is the noise level in −dBov; the peer is silent now.
            self.counters.comfort_noise_received += 1;
            self.rx_noise = Some(packet.payload.first().map_or(127, |l| l & 0x7f));
            return;
        }
        if is_audio {
            self.check_framing(packet.payload.len());
        }
        let stats = match &mut self.stats {
            Some(s) if s.ssrc() == packet.ssrc => s,
            slot => slot.insert(ReceiveStats::new(packet.ssrc, 8000)),
        };
        stats.update(packet.sequence, packet.timestamp, now);
        if is_event {
            self.dtmf_rx
                .handle_packet(now, packet.ssrc, packet.timestamp, packet.payload);
            while let Some(d) = self.dtmf_rx.poll_event() {
                self.emit(LegEvent::Digit(d));
            }
        } else if self.buffer.insert(&packet, now) == InsertOutcome::TooLarge {
            self.counters.malformed += 1;
        }
    }

    /// The peer packetises with another ptime than the buffer is framed for: after two such
    /// packets in a row, re-frame (in place, no allocation).
    fn check_framing(&mut self, payload_len: usize) {
        let samples = self.codec.samples_in(payload_len);
        let units = self.codec.units_for(samples);
        let framed = self.buffer.config().frame_units;
        let plausible = (usize::from(MIN_PTIME_MS) * 8..=MAX_PACKET_SAMPLES).contains(&samples)
            && samples % 8 == 0;
        if units == framed || !plausible {
            self.odd_size = (0, 0);
            return;
        }
        if self.odd_size.0 == samples {
            self.odd_size.1 += 1;
        } else {
            self.odd_size = (samples, 1);
        }
        if self.odd_size.1 >= 2 {
            self.buffer.set_framing(self.cfg.format.clock_rate(), units);
            self.counters.reframed += 1;
            self.odd_size = (0, 0);
        }
    }

    /// 8 kHz samples in one frame of the jitter buffer's framing.
    fn packet_samples(&self) -> usize {
        let units = self.buffer.config().frame_units as usize;
        let rate = self.cfg.format.clock_rate() as usize;
        (units * 8000 / rate.max(1)).clamp(1, MAX_PACKET_SAMPLES)
    }

    /// The 20 ms frame of received audio due at `now` (call once per 20 ms). Packets of other
    /// lengths are decoded into a sample FIFO and cut into 20 ms frames.
    pub fn pull(&mut self, now: Instant, out: &mut Frame) -> PulledAudio {
        if self.in_len == 0 && self.packet_samples() == FRAME_SAMPLES {
            // 20 ms packets (the common case): straight into the frame, no FIFO.
            return match self.buffer.pop(now) {
                Playout::Frame(f) => {
                    let got = self.codec.decode(f.payload, out);
                    if let Some(rest) = out.get_mut(got..) {
                        rest.fill(0);
                    }
                    self.plc.good_frame(out);
                    self.rx_noise = None;
                    PulledAudio::Voice
                }
                Playout::Lost | Playout::Stretch => {
                    self.plc.conceal(out);
                    PulledAudio::Concealed
                }
                Playout::Empty => {
                    match self.rx_noise {
                        Some(level) => self.noise.fill(level, out),
                        None => out.fill(0),
                    }
                    if self.plc.in_gap() {
                        self.plc.reset();
                    }
                    PulledAudio::Silence
                }
            };
        }
        let mut kind = PulledAudio::Silence;
        let mut voiced = false;
        while self.in_len < FRAME_SAMPLES {
            let n = self.packet_samples();
            let at = self.in_len;
            let Some(slot) = self.in_pcm.get_mut(at..at + n) else {
                break;
            };
            match self.buffer.pop(now) {
                Playout::Frame(f) => {
                    let got = self.codec.decode(f.payload, slot);
                    if let Some(rest) = slot.get_mut(got..) {
                        rest.fill(0);
                    }
                    self.plc.good_frame(slot);
                    self.rx_noise = None;
                    voiced = true;
                    self.in_len += n;
                }
                Playout::Lost | Playout::Stretch => {
                    self.plc.conceal(slot);
                    if !voiced {
                        kind = PulledAudio::Concealed;
                    }
                    self.in_len += n;
                }
                Playout::Empty => {
                    let rest = &mut self.in_pcm[at..FRAME_SAMPLES];
                    match self.rx_noise {
                        Some(level) => self.noise.fill(level, rest),
                        None => rest.fill(0),
                    }
                    if self.plc.in_gap() {
                        self.plc.reset();
                    }
                    self.in_len = FRAME_SAMPLES;
                }
            }
        }
        if voiced {
            kind = PulledAudio::Voice;
        }
        out.copy_from_slice(&self.in_pcm[..FRAME_SAMPLES]);
        self.in_pcm.copy_within(FRAME_SAMPLES..self.in_len, 0);
        self.in_len -= FRAME_SAMPLES;
        kind
    }

    /// Drops samples waiting to be packetised, advancing the media clock over them.
    fn discard_pending(&mut self) {
        if self.out_len > 0 {
            self.sender.skip(self.codec.units_for(self.out_len));
            self.out_len = 0;
        }
    }

    /// Takes the next 20 ms frame to send and packetises it into `out`; returns the packet's
    /// length and destination, or `None` when nothing is sent now (no remote yet, our direction
    /// does not send, a telephone-event is being sent instead, or a ptime above 20 ms is still
    /// collecting). With ptime 10 a second packet is ready at once: [`RtpLeg::send_pending`]
    /// (the plane sends it 10 ms later). Whenever nothing is sent the media clock still
    /// advances, so timestamps keep pace with real time through hold and silence.
    pub fn send(&mut self, frame: &Frame, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.cn_ticks = 0;
        let frame_units = self.codec.units_for(FRAME_SAMPLES);
        if self.remote.is_none() || !self.cfg.direction.sends() || self.dtmf_tx.is_active() {
            self.discard_pending();
            self.sender.skip(frame_units);
            return None;
        }
        let ptime20 = usize::from(self.cfg.ptime_ms) * 8 == FRAME_SAMPLES;
        if self.out_len == 0 && ptime20 && !self.inband.is_playing() {
            // 20 ms out (the common case): encoded straight from the frame, no FIFO.
            let to = self.remote?;
            let len = packetise(
                &mut self.sender,
                &mut self.codec,
                self.cfg.payload_type,
                frame,
                out,
            )?;
            self.counters.sent += 1;
            return Some((len, to));
        }
        let at = self.out_len;
        let Some(slot) = self.out_pcm.get_mut(at..at + FRAME_SAMPLES) else {
            // Cannot happen (the FIFO holds a full packet plus a frame); keep the clock right.
            self.discard_pending();
            self.sender.skip(frame_units);
            return None;
        };
        slot.copy_from_slice(frame);
        if self.inband.is_playing() {
            let mut tone = [0i16; FRAME_SAMPLES];
            tone.copy_from_slice(slot);
            self.inband.fill(&mut tone);
            slot.copy_from_slice(&tone);
        }
        self.out_len += FRAME_SAMPLES;
        self.send_pending(out)
    }

    /// True when a collected packet waits for [`RtpLeg::send_pending`] (ptime below 20 ms).
    pub fn has_pending(&self) -> bool {
        self.out_len >= usize::from(self.cfg.ptime_ms) * 8 && self.cfg.direction.sends()
    }

    /// The next packet already collected (ptime 10: the second half of the last frame).
    pub fn send_pending(&mut self, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let to = self.remote?;
        let p = usize::from(self.cfg.ptime_ms) * 8;
        if self.out_len < p || !self.cfg.direction.sends() {
            return None;
        }
        let len = packetise(
            &mut self.sender,
            &mut self.codec,
            self.cfg.payload_type,
            &self.out_pcm[..p],
            out,
        )?;
        self.out_pcm.copy_within(p..self.out_len, 0);
        self.out_len -= p;
        self.counters.sent += 1;
        Some((len, to))
    }

    /// Instead of a frame of audio: 20 ms of comfort noise toward the peer (a held party). With
    /// a negotiated CN payload type, an RFC 3389 update now and every 200 ms and nothing in
    /// between (the clock advances); without one, a frame of digital silence.
    pub fn send_comfort_noise(&mut self, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let Some(pt) = self.cfg.comfort_noise else {
            return self.send(&[0; FRAME_SAMPLES], out);
        };
        let tick = self.cn_ticks;
        self.cn_ticks = self.cn_ticks.wrapping_add(1);
        let frame_units = self.codec.units_for(FRAME_SAMPLES);
        self.discard_pending();
        let to = match self.remote {
            Some(to) if self.cfg.direction.sends() && !self.dtmf_tx.is_active() => to,
            _ => {
                self.sender.skip(frame_units);
                return None;
            }
        };
        if tick % CN_REFRESH_TICKS != 0 {
            self.sender.skip(frame_units);
            return None;
        }
        let payload = [HOLD_NOISE_DBOV];
        let header = self.sender.next_packet(pt, frame_units, payload.len());
        let len = header.packet(&payload).write(out).ok()?;
        self.counters.sent += 1;
        // The timestamp advanced with the packet; the next audio starts a talkspurt.
        self.sender.skip(0);
        Some((len, to))
    }

    /// The audio source behind this leg changed (transfer): same stream, marker on next packet.
    pub fn source_changed(&mut self) {
        self.sender.source_changed();
    }

    /// Queues a digit to send as RFC 4733 events.
    pub fn send_digit(&mut self, digit: char) -> Result<(), DtmfSendError> {
        self.dtmf_tx.send_digit(digit)
    }

    /// Queues a digit lasting `length`, as the peer negotiated it: RFC 4733 events with
    /// telephone-event, else in-band tones mixed over (replacing) the outgoing audio.
    pub fn send_digit_for(&mut self, digit: char, length: Duration) -> Result<(), DtmfSendError> {
        if self.cfg.telephone_event.is_some() {
            self.dtmf_tx.send_digit_for(digit, length)
        } else if codecs::dtmf::digit_frequencies(digit).is_none() {
            Err(DtmfSendError::NotADigit(digit))
        } else if self.inband.play_for(digit, length) {
            Ok(())
        } else {
            Err(DtmfSendError::QueueFull(16))
        }
    }

    /// True while a digit is being sent (events or tones).
    pub fn sending_digit(&self) -> bool {
        self.dtmf_tx.is_active() || self.inband.is_playing()
    }

    /// The next telephone-event packet due at `now` (call until `None`).
    pub fn poll_dtmf(&mut self, now: Instant, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.cfg.telephone_event?;
        if !self.dtmf_tx.is_active() && !self.dtmf_tx.has_queued() {
            return None;
        }
        if !self.cfg.direction.sends() {
            return None;
        }
        let to = self.remote?;
        let p = self.dtmf_tx.poll(now, &mut self.sender)?;
        let len = p.header.packet(&p.payload).write(out).ok()?;
        self.counters.sent += 1;
        Some((len, to))
    }

    /// When [`RtpLeg::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inactivity = if self.inactive_reported || self.cfg.inactivity_timeout.is_zero() {
            None
        } else {
            self.last_activity.checked_add(self.cfg.inactivity_timeout)
        };
        [
            inactivity,
            self.dtmf_rx.poll_timeout(),
            self.dtmf_tx.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs timers: digit timeouts, the inactivity timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dtmf_rx.handle_timeout(now);
        while let Some(d) = self.dtmf_rx.poll_event() {
            self.emit(LegEvent::Digit(d));
        }
        if !self.inactive_reported
            && !self.cfg.inactivity_timeout.is_zero()
            && now.saturating_duration_since(self.last_activity) >= self.cfg.inactivity_timeout
        {
            self.inactive_reported = true;
            self.emit(LegEvent::Inactive);
        }
    }
}

//! The media half of one RTP leg, sans-IO: datagrams in (RTP, telephone-events, RTCP on one
//! rtcp-mux port), 20 ms linear frames out through the jitter buffer, decoder and PLC; frames in,
//! packets out through one outbound RTP context kept for the leg's life; symmetric RTP latching;
//! RFC 4733 both ways; an inactivity timeout that tells the call layer to hang up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use codecs::plc::Plc;

use super::bridge::Frame;
use super::codec::AudioFormat;
use super::dtmf::{DtmfReceiver, DtmfSendError, DtmfSender, DtmfSenderConfig, ReceivedDigit};
use super::jitter::{InsertOutcome, JitterBuffer, JitterConfig, Playout, PulledAudio};
use super::rtcp::{
    Demux, NtpClock, ReportBlock, RtcpPacket, RtcpWriter, SenderInfo, demux, ntp_middle,
    parse_compound,
};
use super::rtp::{ReceiveStats, RtpPacket, RtpSender};

/// How long the latched address must have been silent before another address may take over
/// (a NAT rebinding, a re-homed peer) — and no sooner, so a stray or forged packet cannot.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

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
    /// Packets sent (audio and events).
    pub sent: u64,
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
        let dtmf_cfg = DtmfSenderConfig {
            payload_type: cfg.telephone_event.unwrap_or(101),
            ..DtmfSenderConfig::default()
        };
        Self {
            cfg,
            remote: cfg.remote,
            latched: false,
            last_from_remote: None,
            last_activity: now,
            inactive_reported: false,
            sender: RtpSender::new(cfg.ssrc, cfg.initial_sequence, cfg.initial_timestamp),
            stats: None,
            buffer: JitterBuffer::new(cfg.jitter, now),
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
        }
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

    /// Our RTCP compound (SR when we have sent media and know the wall clock, else RR; a
    /// report block about the peer's stream; SDES CNAME) if one is due at `now`.
    pub fn poll_rtcp(&mut self, now: Instant, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if now < self.next_rtcp {
            return None;
        }
        let to = self.remote?;
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
        if !is_audio && !is_event {
            self.counters.unknown_payload_type += 1;
            return;
        }
        if !self.latch(now, from) {
            return;
        }
        self.last_activity = now;
        self.inactive_reported = false;
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

    /// The 20 ms frame of received audio due at `now` (for the bridge's inbound ring).
    pub fn pull(&mut self, now: Instant, out: &mut Frame) -> PulledAudio {
        let format = self.cfg.format;
        match self.buffer.pop(now) {
            Playout::Frame(f) => {
                format.decode(f.payload, out);
                self.plc.good_frame(out);
                PulledAudio::Voice
            }
            Playout::Lost | Playout::Stretch => {
                self.plc.conceal(out);
                PulledAudio::Concealed
            }
            Playout::Empty => {
                out.fill(0);
                self.plc.reset();
                PulledAudio::Silence
            }
        }
    }

    /// Packetises one 20 ms frame to send into `out`; returns its length and destination, or
    /// `None` when nothing is sent (no remote yet, or a DTMF event is being sent instead).
    pub fn send(&mut self, frame: &Frame, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let to = self.remote?;
        if self.dtmf_tx.is_active() {
            self.sender.skip(codecs::FRAME_SAMPLES as u32);
            return None;
        }
        let mut payload = [0u8; 2 * codecs::FRAME_SAMPLES];
        let n = self.cfg.format.encode(frame, &mut payload);
        let header =
            self.sender
                .next_packet(self.cfg.payload_type, codecs::FRAME_SAMPLES as u32, n);
        let len = header.packet(&payload[..n]).write(out).ok()?;
        self.counters.sent += 1;
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

    /// The next telephone-event packet due at `now` (call until `None`).
    pub fn poll_dtmf(&mut self, now: Instant, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.cfg.telephone_event?;
        let to = self.remote?;
        let p = self.dtmf_tx.poll(now, &mut self.sender)?;
        let len = p.header.packet(&p.payload).write(out).ok()?;
        self.counters.sent += 1;
        Some((len, to))
    }

    /// When [`RtpLeg::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inactivity = if self.inactive_reported {
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
            && now.saturating_duration_since(self.last_activity) >= self.cfg.inactivity_timeout
        {
            self.inactive_reported = true;
            self.emit(LegEvent::Inactive);
        }
    }
}

//! The switch: the call engine joined to its SIP leg provider and to a media backend, still
//! sans-IO. It shuttles leg events up and leg commands down, executes media commands through
//! the [`MediaBackend`] (answering the engine's `OpenRtp`/`AttachPort` at once), queues commands
//! for leg technologies that run elsewhere (WebRTC, TDM: see [`Switch::poll_external`]), keeps
//! CDRs, control-plane notices and a bounded trace of SIP messages for `gwctl sip trace`.
//!
//! The tokio shell ([`super::server`]) feeds it sockets and time; the virtual-time tests feed it
//! bytes and instants, with a fake backend.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::cdr::{Cdr, LegMediaStats, rfc3339};
use super::engine::{CallKey, Engine, EngineOutput, LegNotice, MediaCommand, MediaNotice};
use super::leg::{LegCommand, LegEvent, LegId, LegKind, LegProvider, PortSlot};
use super::sip_leg::{SipLegs, SipTransmit};
use crate::control::CallUri;
use crate::sip::transport::Transport;

/// What the switch needs from the media plane.
pub trait MediaBackend {
    /// Opens an RTP socket for `leg` on `ip`; returns its local address.
    fn open_rtp(&mut self, leg: LegId, call: CallKey, ip: IpAddr) -> Result<SocketAddr, String>;
    /// Attaches an external leg's frame port.
    fn attach_port(&mut self, leg: LegId, call: CallKey, port: PortSlot) -> Result<(), String>;
    /// Executes any other media command (configure, connect, play, digit, release); an error
    /// says why the plane refused (the engine ends the leg's call).
    fn execute(&mut self, command: &MediaCommand) -> Result<(), String>;
    /// The leg's media figures (asked just before it is released, for its CDR).
    fn leg_stats(&self, leg: LegId) -> Option<LegMediaStats>;
    /// Places the leg's media with call `call`'s (the leg moves between calls, see
    /// [`Engine::move_leg`]), so that it can be connected to that call's legs. A backend that
    /// does not place media by call has nothing to do.
    fn move_leg(&mut self, leg: LegId, call: CallKey) -> Result<(), String> {
        let _ = (leg, call);
        Ok(())
    }
    /// Live media legs, open sockets and bridges (tests assert zero after calls).
    fn counts(&self) -> MediaCounts {
        MediaCounts::default()
    }
    /// The plane's notices (digits, inactivity), taken once by the shell.
    fn take_notices(
        &mut self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(LegId, MediaNotice)>> {
        None
    }
}

/// Live media resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaCounts {
    /// Media legs.
    pub legs: usize,
    /// Open RTP/RTCP sockets.
    pub sockets: usize,
    /// Bridges.
    pub bridges: usize,
}

impl<T: MediaBackend + ?Sized> MediaBackend for Box<T> {
    fn open_rtp(&mut self, leg: LegId, call: CallKey, ip: IpAddr) -> Result<SocketAddr, String> {
        (**self).open_rtp(leg, call, ip)
    }
    fn attach_port(&mut self, leg: LegId, call: CallKey, port: PortSlot) -> Result<(), String> {
        (**self).attach_port(leg, call, port)
    }
    fn execute(&mut self, command: &MediaCommand) -> Result<(), String> {
        (**self).execute(command)
    }
    fn leg_stats(&self, leg: LegId) -> Option<LegMediaStats> {
        (**self).leg_stats(leg)
    }
    fn move_leg(&mut self, leg: LegId, call: CallKey) -> Result<(), String> {
        (**self).move_leg(leg, call)
    }
    fn counts(&self) -> MediaCounts {
        (**self).counts()
    }
    fn take_notices(
        &mut self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(LegId, MediaNotice)>> {
        (**self).take_notices()
    }
}

/// The dialog a REFER's Replaces named, taken over by [`Switch::take_over_replaced`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplacedDialog {
    /// A leg of the referrer's own call (a consultation leg the control plane set up).
    InCall(LegId),
    /// The transferor's leg `released` of its call `from`, whose partner `target` is now a
    /// leg of the referrer's call.
    Moved {
        /// The party the transferor consulted, now in the referrer's call.
        target: LegId,
        /// The transferor's leg in the consultation call (to be released).
        released: LegId,
        /// The consultation call.
        from: CallUri,
    },
}

/// One SIP message seen by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceEntry {
    /// Sequence number (for `since=`).
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// Milliseconds since the switch started (for ladder spacing).
    pub ms: u64,
    /// `in` or `out`.
    pub direction: &'static str,
    /// The other end.
    pub peer: SocketAddr,
    /// `UDP`, `TCP`, `TLS`.
    pub transport: &'static str,
    /// The start line (`INVITE sip:..`, `SIP/2.0 200 OK`).
    pub first_line: String,
    /// Call-ID.
    pub call_id: Option<String>,
    /// CSeq.
    pub cseq: Option<String>,
    /// The call this message belongs to, when known.
    pub call_uri: Option<CallUri>,
    /// The whole message.
    pub text: String,
}

/// Live counts (tests assert they drop to zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwitchCounts {
    /// Calls.
    pub calls: usize,
    /// Legs the engine knows.
    pub legs: usize,
    /// SIP legs still finishing their signalling or live.
    pub sip_legs: usize,
    /// SIP transactions.
    pub transactions: usize,
}

/// The switch. See the module docs.
#[derive(Debug)]
pub struct Switch<M> {
    /// The SIP leg provider.
    pub sip: SipLegs,
    /// The call engine.
    pub engine: Engine,
    /// The media backend.
    pub media: M,
    external: VecDeque<(LegId, LegKind, LegCommand)>,
    cdrs: VecDeque<Cdr>,
    notices: VecDeque<LegNotice>,
    released: HashMap<LegId, LegMediaStats>,
    media_totals: LegMediaStats,
    trace: VecDeque<TraceEntry>,
    trace_capacity: usize,
    trace_seq: u64,
    started: (Instant, SystemTime),
}

fn header_value(text: &str, names: &[&str]) -> Option<String> {
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if names.iter().any(|x| n.trim().eq_ignore_ascii_case(x)) {
            return Some(v.trim().to_owned());
        }
    }
    None
}

impl<M: MediaBackend> Switch<M> {
    /// A switch with a SIP provider, an engine and a media backend.
    pub fn new(sip: SipLegs, engine: Engine, media: M) -> Self {
        Switch {
            sip,
            engine,
            media,
            external: VecDeque::new(),
            cdrs: VecDeque::new(),
            notices: VecDeque::new(),
            released: HashMap::new(),
            media_totals: LegMediaStats::default(),
            trace: VecDeque::new(),
            trace_capacity: 4096,
            trace_seq: 0,
            started: (Instant::now(), SystemTime::now()),
        }
    }

    /// Live counts.
    pub fn counts(&self) -> SwitchCounts {
        SwitchCounts {
            calls: self.engine.call_count(),
            legs: self.engine.leg_count(),
            sip_legs: self.sip.live_legs(),
            transactions: self.sip.transactions(),
        }
    }

    fn record(
        &mut self,
        now: Instant,
        direction: &'static str,
        peer: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        if self.trace_capacity == 0 {
            return;
        }
        let text = String::from_utf8_lossy(bytes).into_owned();
        let first_line = text.split("\r\n").next().unwrap_or_default().to_owned();
        if first_line.is_empty() {
            return; // keepalive CRLFs
        }
        let call_id = header_value(&text, &["Call-ID", "i"]);
        let call_uri = call_id
            .as_deref()
            .and_then(|c| self.sip.leg_of_call_id(c))
            .and_then(|l| self.engine.call_of_leg(l))
            .cloned()
            .or_else(|| {
                // A message of a leg that has finished: look the Call-ID up in earlier entries.
                let c = call_id.as_deref()?;
                self.trace
                    .iter()
                    .rev()
                    .find(|e| e.call_id.as_deref() == Some(c) && e.call_uri.is_some())
                    .and_then(|e| e.call_uri.clone())
            });
        let elapsed = now.saturating_duration_since(self.started.0);
        self.trace_seq += 1;
        let entry = TraceEntry {
            seq: self.trace_seq,
            time: rfc3339(self.started.1 + elapsed),
            ms: elapsed.as_millis() as u64,
            direction,
            peer,
            transport: transport.via_token(),
            first_line,
            cseq: header_value(&text, &["CSeq"]),
            call_id,
            call_uri,
            text,
        };
        if self.trace.len() >= self.trace_capacity {
            self.trace.pop_front();
        }
        self.trace.push_back(entry);
    }

    /// Media figures summed over every released leg.
    pub fn media_totals(&self) -> &LegMediaStats {
        &self.media_totals
    }

    /// SIP messages after sequence number `since` (optionally of one call).
    pub fn trace_since(&self, since: u64, call: Option<&CallUri>) -> Vec<TraceEntry> {
        self.trace
            .iter()
            .filter(|e| e.seq > since)
            .filter(|e| call.is_none_or(|c| e.call_uri.as_ref() == Some(c)))
            .cloned()
            .collect()
    }

    /// Feeds a SIP message received from `source`.
    pub fn handle_sip(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: SocketAddr,
        transport: Transport,
    ) {
        self.sip.handle_received(now, bytes, source, transport);
        self.pump(now);
        self.record(now, "in", source, transport, bytes);
    }

    /// As [`Switch::handle_sip`], for a message that came on stream connection `connection`.
    pub fn handle_sip_on(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: SocketAddr,
        transport: Transport,
        connection: Option<crate::sip::transport::ConnectionId>,
    ) {
        self.sip
            .handle_received_on(now, bytes, source, transport, connection);
        self.pump(now);
        self.record(now, "in", source, transport, bytes);
    }

    /// The next SIP message to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<SipTransmit> {
        let t = self.sip.poll_transmit()?;
        self.record(now, "out", t.dest, t.transport, &t.bytes);
        Some(t)
    }

    /// Feeds a media-plane notice (digit, inactivity, failure) for a leg.
    pub fn media_event(&mut self, now: Instant, leg: LegId, notice: MediaNotice) {
        self.engine.media_event(now, leg, notice);
        self.pump(now);
    }

    /// Feeds an event from an external leg provider (WebRTC, TDM).
    pub fn external_event(&mut self, now: Instant, kind: LegKind, leg: LegId, ev: LegEvent) {
        self.engine.handle_leg_event(now, kind, leg, ev);
        self.pump(now);
    }

    /// The next command for an external leg provider.
    pub fn poll_external(&mut self) -> Option<(LegId, LegKind, LegCommand)> {
        self.external.pop_front()
    }

    /// The next finished call's record.
    pub fn poll_cdr(&mut self) -> Option<Cdr> {
        self.cdrs.pop_front()
    }

    /// The next control-plane notice.
    pub fn poll_notice(&mut self) -> Option<LegNotice> {
        self.notices.pop_front()
    }

    /// When [`Switch::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.sip.poll_timeout(), self.engine.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sip.handle_timeout(now);
        self.engine.handle_timeout(now);
        self.pump(now);
    }

    /// Moves the answered leg `leg` (media first, then the engine's call) into call `to`; see
    /// [`Engine::move_leg`].
    pub fn move_leg(&mut self, now: Instant, leg: LegId, to: &CallUri) -> Result<(), String> {
        let key = self
            .engine
            .call_key(to)
            .ok_or_else(|| format!("no call {to}"))?;
        let back = self
            .engine
            .call_of_leg(leg)
            .and_then(|u| self.engine.call_key(u))
            .ok_or_else(|| format!("no leg {leg}"))?;
        self.media.move_leg(leg, key)?;
        let moved = self
            .engine
            .move_leg(now, leg, to)
            .map_err(|e| e.to_string());
        if moved.is_err() {
            // The leg stays where it was: so does its media.
            let _ = self.media.move_leg(leg, back);
        }
        self.pump(now);
        moved
    }

    /// Finds the dialog a REFER's Replaces names (RFC 3891) for an attended transfer asked by
    /// `referrer` (a leg of the caller's call), and takes it over: a leg of the referrer's own
    /// call (a consultation the control plane set up) is only named; a leg of another call
    /// (the transferor's own call to the target through the gateway) is the transferor's leg
    /// there, and the party it talks to is moved into the referrer's call to be bridged to
    /// the caller. `Err` carries the SIP status for the NOTIFY (481 no such dialog, 486, 603,
    /// 488 when the consultation cannot be taken over) and why.
    pub fn take_over_replaced(
        &mut self,
        now: Instant,
        referrer: LegId,
        replaces: &crate::sip::refer::Replaces,
    ) -> Result<ReplacedDialog, (u16, String)> {
        let named = self.sip.leg_of_replaces(replaces).map_err(|s| {
            (
                s,
                format!("Replaces {replaces} names no dialog that can be taken over"),
            )
        })?;
        if named == referrer {
            return Err((481, "Replaces names the REFER's own dialog".into()));
        }
        let (Some(call), Some(named_call)) = (
            self.engine.call_of_leg(referrer).cloned(),
            self.engine.call_of_leg(named).cloned(),
        ) else {
            return Err((481, "the dialog's call is gone".into()));
        };
        if call == named_call {
            return Ok(ReplacedDialog::InCall(named));
        }
        if self.engine.is_controlled(named) {
            return Err((
                488,
                format!("{named_call} is managed by the control plane: transfer it with the API"),
            ));
        }
        let target = self
            .engine
            .other_leg(named)
            .ok_or_else(|| (481, format!("{named_call} has no other party to hand over")))?;
        self.move_leg(now, target, &call).map_err(|e| (488, e))?;
        Ok(ReplacedDialog::Moved {
            target,
            released: named,
            from: named_call,
        })
    }

    /// Lets `f` drive the engine (a control-plane command), then carries out what it asked.
    pub fn with_engine<R>(&mut self, now: Instant, f: impl FnOnce(&mut Engine) -> R) -> R {
        let r = f(&mut self.engine);
        self.pump(now);
        r
    }

    /// Moves events and commands until everything is quiet.
    pub fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(s) = self.sip.poll_peer_status() {
                self.engine.set_trunk_status(&s.name, s.up);
            }
            while let Some((leg, ev)) = self.sip.poll_event() {
                progressed = true;
                self.engine.handle_leg_event(now, LegKind::Sip, leg, ev);
            }
            while let Some(out) = self.engine.poll_output() {
                progressed = true;
                self.execute(now, out);
            }
            if !progressed {
                break;
            }
        }
    }

    fn execute(&mut self, now: Instant, out: EngineOutput) {
        match out {
            EngineOutput::Leg {
                leg,
                kind: LegKind::Sip,
                command,
            } => self.sip.handle_command(now, leg, command),
            EngineOutput::Leg { leg, kind, command } => {
                self.external.push_back((leg, kind, command))
            }
            EngineOutput::Media(MediaCommand::OpenRtp { leg, call, ip }) => {
                // In the call's span: the backend keeps it for the leg's media log lines.
                let span = self
                    .engine
                    .span_of_leg(leg)
                    .unwrap_or_else(tracing::Span::none);
                let r = span.in_scope(|| self.media.open_rtp(leg, call, ip));
                self.engine.media_opened(now, leg, r.map(Some));
            }
            EngineOutput::Media(MediaCommand::AttachPort { leg, call, port }) => {
                let span = self
                    .engine
                    .span_of_leg(leg)
                    .unwrap_or_else(tracing::Span::none);
                let r = span.in_scope(|| self.media.attach_port(leg, call, port));
                self.engine.media_opened(now, leg, r.map(|()| None));
            }
            EngineOutput::Media(c) => {
                if let MediaCommand::Release { leg } = &c
                    && let Some(s) = self.media.leg_stats(*leg)
                {
                    self.media_totals.packets_received += s.packets_received;
                    self.media_totals.packets_sent += s.packets_sent;
                    self.media_totals.packets_lost += s.packets_lost;
                    if self.released.len() > 10_000 {
                        self.released.clear();
                    }
                    self.released.insert(*leg, s);
                }
                if let Err(e) = self.media.execute(&c) {
                    let leg = match &c {
                        MediaCommand::ConfigureRtp { leg, .. }
                        | MediaCommand::Play { leg, .. }
                        | MediaCommand::Mute { leg, .. }
                        | MediaCommand::SendDigit { leg, .. } => Some(*leg),
                        MediaCommand::Connect { a, .. } => Some(*a),
                        _ => None,
                    };
                    if let Some(leg) = leg {
                        let span = self.engine.span_of_leg(leg);
                        let _e = span.as_ref().map(tracing::Span::enter);
                        tracing::warn!(%leg, "media plane refused {c:?}: {e}");
                        // A refused digit is not worth a call; anything else is.
                        if !matches!(c, MediaCommand::SendDigit { .. }) {
                            self.engine.media_event(now, leg, MediaNotice::Failed(e));
                        }
                    }
                }
            }
            EngineOutput::Cdr(mut cdr) => {
                for l in &mut cdr.legs {
                    if let Some(s) = self.released.remove(&l.leg) {
                        l.media = Some(s);
                    }
                }
                self.cdrs.push_back(*cdr);
            }
            EngineOutput::Notice(n) => self.notices.push_back(n),
        }
    }
}

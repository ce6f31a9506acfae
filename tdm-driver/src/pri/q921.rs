//! Q.921 (LAPD) data link for a PRI D-channel: frame codec and a sans-IO link state machine.
//!
//! One point-to-point link, fixed TEI 0, SAPI 0, modulo-128 sequence numbers, window k,
//! timers T200/T203 and retry count N200 per Q.921 §5. Feed it frames ([`Link::receive`]) and
//! the time ([`Link::handle_timeout`]); take frames to send ([`Link::poll_transmit`]), events
//! ([`Link::poll_event`]) and the next deadline ([`Link::poll_timeout`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Which end of the link this is; decides the C/R bit of commands and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The network (switch) side: sends commands with C/R = 1.
    Network,
    /// The user (CPE) side: sends commands with C/R = 0.
    User,
}

/// The kind and fields of one LAPD frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// Information frame.
    I {
        /// Send sequence number N(S).
        ns: u8,
        /// Receive sequence number N(R).
        nr: u8,
        /// Poll bit.
        poll: bool,
        /// Layer 3 payload.
        info: Vec<u8>,
    },
    /// Receive ready.
    Rr {
        /// N(R).
        nr: u8,
        /// Poll/final bit.
        pf: bool,
    },
    /// Receive not ready.
    Rnr {
        /// N(R).
        nr: u8,
        /// Poll/final bit.
        pf: bool,
    },
    /// Reject.
    Rej {
        /// N(R).
        nr: u8,
        /// Poll/final bit.
        pf: bool,
    },
    /// Set asynchronous balanced mode extended.
    Sabme {
        /// Poll bit.
        poll: bool,
    },
    /// Disconnected mode.
    Dm {
        /// Final bit.
        fin: bool,
    },
    /// Disconnect.
    Disc {
        /// Poll bit.
        poll: bool,
    },
    /// Unnumbered acknowledgement.
    Ua {
        /// Final bit.
        fin: bool,
    },
    /// Frame reject, with its diagnostic octets.
    Frmr {
        /// Final bit.
        fin: bool,
        /// The rejected frame's control field and reasons.
        info: Vec<u8>,
    },
    /// Unnumbered information.
    Ui {
        /// Poll bit.
        poll: bool,
        /// Payload.
        info: Vec<u8>,
    },
    /// Exchange identification (parsed, not acted on).
    Xid {
        /// Poll/final bit.
        pf: bool,
    },
}

/// One LAPD frame: address and control (FCS handled by HDLC or the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Service access point identifier (0 = call control).
    pub sapi: u8,
    /// The C/R bit as on the line.
    pub cr: bool,
    /// Terminal endpoint identifier (0 on PRI).
    pub tei: u8,
    /// What the frame is.
    pub kind: FrameKind,
}

/// Why a received octet string is not a LAPD frame. Such frames are dropped; many of them
/// mean the far end is not speaking Q.921 (wrong channel, or not a D-channel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer octets than address and control need.
    #[error("LAPD frame of {len} octets is shorter than its address and control fields")]
    TooShort {
        /// Octets received.
        len: usize,
    },
    /// The address field's extension bits are not 0 then 1 (not a 2-octet LAPD address).
    #[error("LAPD address field has wrong extension bits ({0:#04x} {1:#04x})")]
    BadAddress(u8, u8),
    /// A control field Q.921 does not define.
    #[error("undefined LAPD control field {0:#04x}")]
    UnknownControl(u8),
    /// A frame type that carries no information field had one.
    #[error("LAPD {kind} frame carries {len} unexpected information octets")]
    UnexpectedInfo {
        /// Frame type.
        kind: &'static str,
        /// Extra octets.
        len: usize,
    },
}

impl Frame {
    /// Decodes a frame (without FCS).
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (&a0, &a1, &c0) = match bytes {
            [a0, a1, c0, ..] => (a0, a1, c0),
            _ => return Err(FrameError::TooShort { len: bytes.len() }),
        };
        if a0 & 1 != 0 || a1 & 1 != 1 {
            return Err(FrameError::BadAddress(a0, a1));
        }
        let sapi = a0 >> 2;
        let cr = a0 & 2 != 0;
        let tei = a1 >> 1;
        let rest = bytes.get(3..).unwrap_or(&[]);
        let two_octet = |rest: &[u8]| -> Result<(u8, bool, Vec<u8>), FrameError> {
            match rest {
                [c1, info @ ..] => Ok((c1 >> 1, c1 & 1 != 0, info.to_vec())),
                [] => Err(FrameError::TooShort { len: bytes.len() }),
            }
        };
        let no_info = |kind: &'static str, info: &[u8]| {
            if info.is_empty() {
                Ok(())
            } else {
                Err(FrameError::UnexpectedInfo {
                    kind,
                    len: info.len(),
                })
            }
        };
        let kind = if c0 & 1 == 0 {
            let (nr, poll, info) = two_octet(rest)?;
            FrameKind::I {
                ns: c0 >> 1,
                nr,
                poll,
                info,
            }
        } else if c0 & 3 == 1 {
            let (nr, pf, info) = two_octet(rest)?;
            match c0 {
                0x01 => {
                    no_info("RR", &info)?;
                    FrameKind::Rr { nr, pf }
                }
                0x05 => {
                    no_info("RNR", &info)?;
                    FrameKind::Rnr { nr, pf }
                }
                0x09 => {
                    no_info("REJ", &info)?;
                    FrameKind::Rej { nr, pf }
                }
                other => return Err(FrameError::UnknownControl(other)),
            }
        } else {
            let pf = c0 & 0x10 != 0;
            let info = rest;
            match c0 & !0x10 {
                0x6f => no_info("SABME", info).map(|()| FrameKind::Sabme { poll: pf })?,
                0x0f => no_info("DM", info).map(|()| FrameKind::Dm { fin: pf })?,
                0x43 => no_info("DISC", info).map(|()| FrameKind::Disc { poll: pf })?,
                0x63 => no_info("UA", info).map(|()| FrameKind::Ua { fin: pf })?,
                0x87 => FrameKind::Frmr {
                    fin: pf,
                    info: info.to_vec(),
                },
                0x03 => FrameKind::Ui {
                    poll: pf,
                    info: info.to_vec(),
                },
                0xaf => FrameKind::Xid { pf },
                other => return Err(FrameError::UnknownControl(other)),
            }
        };
        Ok(Self {
            sapi,
            cr,
            tei,
            kind,
        })
    }

    /// Appends the encoded frame (without FCS) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((self.sapi & 0x3f) << 2 | u8::from(self.cr) << 1);
        out.push((self.tei & 0x7f) << 1 | 1);
        let u = |c: u8, pf: bool| c | u8::from(pf) << 4;
        match &self.kind {
            FrameKind::I { ns, nr, poll, info } => {
                out.push((ns & 0x7f) << 1);
                out.push((nr & 0x7f) << 1 | u8::from(*poll));
                out.extend_from_slice(info);
            }
            FrameKind::Rr { nr, pf } => out.extend([0x01, (nr & 0x7f) << 1 | u8::from(*pf)]),
            FrameKind::Rnr { nr, pf } => out.extend([0x05, (nr & 0x7f) << 1 | u8::from(*pf)]),
            FrameKind::Rej { nr, pf } => out.extend([0x09, (nr & 0x7f) << 1 | u8::from(*pf)]),
            FrameKind::Sabme { poll } => out.push(u(0x6f, *poll)),
            FrameKind::Dm { fin } => out.push(u(0x0f, *fin)),
            FrameKind::Disc { poll } => out.push(u(0x43, *poll)),
            FrameKind::Ua { fin } => out.push(u(0x63, *fin)),
            FrameKind::Frmr { fin, info } => {
                out.push(u(0x87, *fin));
                out.extend_from_slice(info);
            }
            FrameKind::Ui { poll, info } => {
                out.push(u(0x03, *poll));
                out.extend_from_slice(info);
            }
            FrameKind::Xid { pf } => out.push(u(0xaf, *pf)),
        }
    }
}

/// Link parameters (Q.921 §5.9 defaults).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Network or user side.
    pub role: Role,
    /// Retransmission timer T200 (default 1 s).
    pub t200: Duration,
    /// Idle keep-alive timer T203 (default 10 s).
    pub t203: Duration,
    /// Maximum retransmissions N200 (default 3).
    pub n200: u8,
    /// Maximum outstanding I frames k (default 7 for SAPI 0 on PRI).
    pub k: u8,
    /// Re-establish by itself after a failure or a peer's release (PRI links stay up).
    pub persistent: bool,
}

impl LinkConfig {
    /// Q.921 defaults for a PRI link on `role`'s side.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            t200: Duration::from_secs(1),
            t203: Duration::from_secs(10),
            n200: 3,
            k: 7,
            persistent: true,
        }
    }
}

/// The link's state (Q.921 Annex B state numbers in the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// 4: TEI assigned, no multiple-frame operation.
    Released,
    /// 5: SABME sent, waiting for UA.
    AwaitingEstablishment,
    /// 6: DISC sent, waiting for UA.
    AwaitingRelease,
    /// 7: multiple-frame operation established.
    Established,
    /// 8: T200 expired, polling the peer.
    TimerRecovery,
}

/// What the link reports to layer 3 and management.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// Multiple-frame operation is up (DL-ESTABLISH indication/confirm).
    Established,
    /// Multiple-frame operation ended (DL-RELEASE indication/confirm).
    Released,
    /// The peer did not answer N200 retries; the link is being re-established.
    Failure,
    /// A layer 3 message arrived in an I frame (DL-DATA indication).
    Data(Vec<u8>),
    /// A layer 3 message arrived in a UI frame (DL-UNIT-DATA indication).
    UnitData(Vec<u8>),
    /// A received octet string was not a valid LAPD frame.
    BadFrame(FrameError),
    /// The peer violated the procedure (Q.921 MDL-ERROR code letter); recovered locally.
    ProtocolError(char),
}

/// A Q.921 data link, sans IO.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    state: LinkState,
    vs: u8,
    va: u8,
    vr: u8,
    rc: u8,
    peer_busy: bool,
    reject_exception: bool,
    ack_pending: bool,
    t200: Option<Instant>,
    t203: Option<Instant>,
    /// Frames with N(S) from V(A) onward, sent at least once, oldest first.
    window: VecDeque<Vec<u8>>,
    /// Messages from layer 3 not yet given a sequence number.
    queue: VecDeque<Vec<u8>>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
}

fn seq_diff(a: u8, b: u8) -> u8 {
    a.wrapping_sub(b) & 0x7f
}

impl Link {
    /// A released link; call [`Link::establish`] (or let the peer's SABME) bring it up.
    pub fn new(config: LinkConfig) -> Self {
        Self {
            config,
            state: LinkState::Released,
            vs: 0,
            va: 0,
            vr: 0,
            rc: 0,
            peer_busy: false,
            reject_exception: false,
            ack_pending: false,
            t200: None,
            t203: None,
            window: VecDeque::new(),
            queue: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// True in multiple-frame operation (states 7 and 8).
    pub fn is_established(&self) -> bool {
        matches!(
            self.state,
            LinkState::Established | LinkState::TimerRecovery
        )
    }

    /// Messages queued or sent but not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.window.len() + self.queue.len()
    }

    /// DL-ESTABLISH request: sends SABME.
    pub fn establish(&mut self, now: Instant) {
        if matches!(self.state, LinkState::Released | LinkState::AwaitingRelease) {
            self.start_establishment(now);
        }
    }

    /// DL-RELEASE request: sends DISC.
    pub fn release(&mut self, now: Instant) {
        if self.is_established() {
            self.window.clear();
            self.queue.clear();
            self.rc = 0;
            self.send_u(true, FrameKind::Disc { poll: true });
            self.t203 = None;
            self.t200 = Some(now + self.config.t200);
            self.state = LinkState::AwaitingRelease;
        }
    }

    /// DL-DATA request: queues a layer 3 message; sent when the window allows. While the link
    /// is down this starts establishment and the message waits for it.
    pub fn send(&mut self, now: Instant, message: Vec<u8>) {
        self.queue.push_back(message);
        if self.state == LinkState::Released {
            self.start_establishment(now);
        }
        self.push_i_frames(now);
    }

    /// The next frame to put on the D-channel (without FCS).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event for layer 3.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`Link::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.t200, self.t203) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn frame(&self, command: bool, kind: FrameKind) -> Vec<u8> {
        let cr = match self.config.role {
            Role::Network => command,
            Role::User => !command,
        };
        let mut out = Vec::with_capacity(8);
        Frame {
            sapi: 0,
            cr,
            tei: 0,
            kind,
        }
        .encode(&mut out);
        out
    }

    fn send_u(&mut self, command: bool, kind: FrameKind) {
        let frame = self.frame(command, kind);
        self.transmit.push_back(frame);
    }

    fn start_establishment(&mut self, now: Instant) {
        self.rc = 0;
        self.window.clear();
        self.peer_busy = false;
        self.reject_exception = false;
        self.send_u(true, FrameKind::Sabme { poll: true });
        self.t203 = None;
        self.t200 = Some(now + self.config.t200);
        self.state = LinkState::AwaitingEstablishment;
    }

    fn reset_variables(&mut self) {
        self.vs = 0;
        self.va = 0;
        self.vr = 0;
        self.rc = 0;
        self.peer_busy = false;
        self.reject_exception = false;
        self.ack_pending = false;
        self.window.clear();
    }

    fn enter_established(&mut self, now: Instant) {
        self.reset_variables();
        self.t200 = None;
        self.t203 = Some(now + self.config.t203);
        self.state = LinkState::Established;
        self.events.push_back(LinkEvent::Established);
        self.push_i_frames(now);
    }

    fn enter_released(&mut self, now: Instant, event: LinkEvent) {
        self.t200 = None;
        self.t203 = None;
        self.window.clear();
        self.state = LinkState::Released;
        self.events.push_back(event);
        if self.config.persistent {
            self.start_establishment(now);
        }
    }

    /// Sends queued I frames while the window is open.
    fn push_i_frames(&mut self, now: Instant) {
        if self.state != LinkState::Established || self.peer_busy {
            return;
        }
        while seq_diff(self.vs, self.va) < self.config.k {
            let index = usize::from(seq_diff(self.vs, self.va));
            if index == self.window.len() {
                match self.queue.pop_front() {
                    Some(message) => self.window.push_back(message),
                    None => break,
                }
            }
            let Some(info) = self.window.get(index).cloned() else {
                break;
            };
            let frame = self.frame(
                true,
                FrameKind::I {
                    ns: self.vs,
                    nr: self.vr,
                    poll: false,
                    info,
                },
            );
            self.transmit.push_back(frame);
            self.vs = (self.vs + 1) & 0x7f;
            self.ack_pending = false;
            if self.t200.is_none() {
                self.t203 = None;
                self.t200 = Some(now + self.config.t200);
            }
        }
    }

    fn nr_valid(&self, nr: u8) -> bool {
        seq_diff(nr, self.va) <= seq_diff(self.vs, self.va)
    }

    /// Acknowledges frames up to `nr` (V(A) := N(R)).
    fn acknowledge(&mut self, nr: u8) {
        let acked = usize::from(seq_diff(nr, self.va));
        for _ in 0..acked {
            self.window.pop_front();
        }
        if acked > 0 {
            self.rc = 0;
        }
        self.va = nr;
    }

    /// N(R) processing in state 7 (Q.921 §5.6.3.2).
    fn check_iframe_ack(&mut self, now: Instant, nr: u8) {
        if nr == self.vs {
            self.acknowledge(nr);
            self.t200 = None;
            self.t203 = Some(now + self.config.t203);
        } else if nr != self.va {
            self.acknowledge(nr);
            self.t200 = Some(now + self.config.t200);
        }
    }

    fn sequence_error(&mut self, now: Instant) {
        self.events.push_back(LinkEvent::ProtocolError('J'));
        self.start_establishment(now);
    }

    /// Feeds one received frame (without FCS).
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) {
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(error) => {
                self.events.push_back(LinkEvent::BadFrame(error));
                return;
            }
        };
        if frame.sapi != 0 || frame.tei != 0 {
            return;
        }
        let command = match self.config.role {
            Role::Network => !frame.cr,
            Role::User => frame.cr,
        };
        match frame.kind {
            FrameKind::Sabme { poll } => self.on_sabme(now, poll),
            FrameKind::Disc { poll } => self.on_disc(poll),
            FrameKind::Ua { fin } => self.on_ua(now, fin),
            FrameKind::Dm { fin } => self.on_dm(now, fin),
            FrameKind::Frmr { .. } => {
                self.events.push_back(LinkEvent::ProtocolError('K'));
                if self.is_established() {
                    self.start_establishment(now);
                }
            }
            FrameKind::Ui { info, .. } => self.events.push_back(LinkEvent::UnitData(info)),
            FrameKind::Xid { .. } => {}
            FrameKind::I { ns, nr, poll, info } => {
                self.on_i(now, command, ns, nr, poll, info);
            }
            FrameKind::Rr { nr, pf } => self.on_supervisory(now, command, nr, pf, false, false),
            FrameKind::Rnr { nr, pf } => self.on_supervisory(now, command, nr, pf, true, false),
            FrameKind::Rej { nr, pf } => self.on_supervisory(now, command, nr, pf, false, true),
        }
        self.push_i_frames(now);
        if self.ack_pending && self.is_established() {
            self.ack_pending = false;
            let rr = self.frame(
                false,
                FrameKind::Rr {
                    nr: self.vr,
                    pf: false,
                },
            );
            self.transmit.push_back(rr);
        }
    }

    fn on_sabme(&mut self, now: Instant, poll: bool) {
        match self.state {
            LinkState::Released => {
                self.send_u(false, FrameKind::Ua { fin: poll });
                self.enter_established(now);
            }
            LinkState::AwaitingEstablishment => {
                // Collision of SABMEs: answer and wait for our UA (Q.921 §5.5.1.5).
                self.send_u(false, FrameKind::Ua { fin: poll });
            }
            LinkState::AwaitingRelease => self.send_u(false, FrameKind::Dm { fin: poll }),
            LinkState::Established | LinkState::TimerRecovery => {
                // Peer re-established: unacknowledged frames are lost (MDL-ERROR F).
                self.send_u(false, FrameKind::Ua { fin: poll });
                self.events.push_back(LinkEvent::ProtocolError('F'));
                self.enter_established(now);
            }
        }
    }

    fn on_disc(&mut self, poll: bool) {
        match self.state {
            LinkState::Released | LinkState::AwaitingEstablishment => {
                self.send_u(false, FrameKind::Dm { fin: poll });
            }
            LinkState::AwaitingRelease => {
                self.send_u(false, FrameKind::Ua { fin: poll });
            }
            LinkState::Established | LinkState::TimerRecovery => {
                self.send_u(false, FrameKind::Ua { fin: poll });
                self.queue.clear();
                self.t200 = None;
                self.t203 = None;
                self.window.clear();
                self.state = LinkState::Released;
                self.events.push_back(LinkEvent::Released);
            }
        }
    }

    fn on_ua(&mut self, now: Instant, fin: bool) {
        match self.state {
            LinkState::AwaitingEstablishment if fin => self.enter_established(now),
            LinkState::AwaitingRelease if fin => {
                self.t200 = None;
                self.state = LinkState::Released;
                self.events.push_back(LinkEvent::Released);
            }
            _ => self.events.push_back(LinkEvent::ProtocolError('C')),
        }
    }

    fn on_dm(&mut self, now: Instant, fin: bool) {
        match self.state {
            LinkState::AwaitingEstablishment if fin => {
                self.t200 = None;
                self.state = LinkState::Released;
                self.events.push_back(LinkEvent::Released);
            }
            LinkState::AwaitingRelease if fin => {
                self.t200 = None;
                self.state = LinkState::Released;
                self.events.push_back(LinkEvent::Released);
            }
            LinkState::Established | LinkState::TimerRecovery if !fin => {
                self.events.push_back(LinkEvent::ProtocolError('E'));
                self.start_establishment(now);
            }
            LinkState::Released if !fin && self.config.persistent => {
                self.start_establishment(now);
            }
            _ => self.events.push_back(LinkEvent::ProtocolError('B')),
        }
    }

    fn on_i(&mut self, now: Instant, command: bool, ns: u8, nr: u8, poll: bool, info: Vec<u8>) {
        if !command {
            self.events.push_back(LinkEvent::ProtocolError('L'));
            return;
        }
        if !self.is_established() {
            if poll && self.state == LinkState::Released {
                self.send_u(false, FrameKind::Dm { fin: true });
            }
            return;
        }
        if ns == self.vr {
            self.vr = (self.vr + 1) & 0x7f;
            self.reject_exception = false;
            self.events.push_back(LinkEvent::Data(info));
            if poll {
                let rr = self.frame(
                    false,
                    FrameKind::Rr {
                        nr: self.vr,
                        pf: true,
                    },
                );
                self.transmit.push_back(rr);
                self.ack_pending = false;
            } else {
                self.ack_pending = true;
            }
        } else if self.reject_exception {
            if poll {
                let rr = self.frame(
                    false,
                    FrameKind::Rr {
                        nr: self.vr,
                        pf: true,
                    },
                );
                self.transmit.push_back(rr);
            }
        } else {
            self.reject_exception = true;
            let rej = self.frame(
                false,
                FrameKind::Rej {
                    nr: self.vr,
                    pf: poll,
                },
            );
            self.transmit.push_back(rej);
            self.ack_pending = false;
        }
        if !self.nr_valid(nr) {
            self.sequence_error(now);
        } else if self.state == LinkState::TimerRecovery {
            self.acknowledge(nr);
        } else {
            self.check_iframe_ack(now, nr);
        }
    }

    fn on_supervisory(
        &mut self,
        now: Instant,
        command: bool,
        nr: u8,
        pf: bool,
        busy: bool,
        reject: bool,
    ) {
        if !self.is_established() {
            if command && pf && self.state == LinkState::Released {
                self.send_u(false, FrameKind::Dm { fin: true });
            }
            return;
        }
        self.peer_busy = busy;
        if command && pf {
            let rr = self.frame(
                false,
                FrameKind::Rr {
                    nr: self.vr,
                    pf: true,
                },
            );
            self.transmit.push_back(rr);
            self.ack_pending = false;
        }
        if !self.nr_valid(nr) {
            self.sequence_error(now);
            return;
        }
        if self.state == LinkState::TimerRecovery {
            self.acknowledge(nr);
            if !command && pf {
                // The answer to our enquiry: resume, resending what the peer lacks.
                if self.va == self.vs {
                    self.t200 = None;
                    self.t203 = Some(now + self.config.t203);
                } else {
                    self.t200 = Some(now + self.config.t200);
                }
                self.vs = self.va;
                self.state = LinkState::Established;
            }
            return;
        }
        if !command && pf {
            self.events.push_back(LinkEvent::ProtocolError('A'));
        }
        if reject {
            self.acknowledge(nr);
            self.vs = self.va;
            self.t200 = None;
            self.t203 = Some(now + self.config.t203);
        } else if busy {
            self.acknowledge(nr);
            self.t203 = None;
            self.t200 = Some(now + self.config.t200);
        } else {
            self.check_iframe_ack(now, nr);
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.t200.is_some_and(|t| t <= now) {
            self.t200 = None;
            self.on_t200(now);
        }
        if self.t203.is_some_and(|t| t <= now) {
            self.t203 = None;
            if self.state == LinkState::Established {
                self.enquire(now);
                self.rc = 0;
            }
        }
        self.push_i_frames(now);
    }

    fn enquire(&mut self, now: Instant) {
        let rr = self.frame(
            true,
            FrameKind::Rr {
                nr: self.vr,
                pf: true,
            },
        );
        self.transmit.push_back(rr);
        self.ack_pending = false;
        self.state = LinkState::TimerRecovery;
        self.t200 = Some(now + self.config.t200);
    }

    fn on_t200(&mut self, now: Instant) {
        match self.state {
            LinkState::AwaitingEstablishment => {
                if self.rc >= self.config.n200 {
                    self.events.push_back(LinkEvent::ProtocolError('G'));
                    self.enter_released(now, LinkEvent::Failure);
                } else {
                    self.rc += 1;
                    self.send_u(true, FrameKind::Sabme { poll: true });
                    self.t200 = Some(now + self.config.t200);
                }
            }
            LinkState::AwaitingRelease => {
                if self.rc >= self.config.n200 {
                    self.events.push_back(LinkEvent::ProtocolError('H'));
                    self.state = LinkState::Released;
                    self.events.push_back(LinkEvent::Released);
                } else {
                    self.rc += 1;
                    self.send_u(true, FrameKind::Disc { poll: true });
                    self.t200 = Some(now + self.config.t200);
                }
            }
            LinkState::Established => {
                self.rc = 1;
                self.enquire(now);
            }
            LinkState::TimerRecovery => {
                if self.rc >= self.config.n200 {
                    self.events.push_back(LinkEvent::ProtocolError('I'));
                    self.events.push_back(LinkEvent::Failure);
                    // Keep unsent messages; frames in flight are lost with the old link.
                    self.start_establishment(now);
                } else {
                    self.rc += 1;
                    self.enquire(now);
                }
            }
            LinkState::Released => {}
        }
    }
}

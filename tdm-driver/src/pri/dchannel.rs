//! The IO side of a PRI span: moves frames between a D-channel and a [`PriSpan`], and turns
//! the channel's DAHDI events (alarms, bad FCS, aborts) into what the span needs.
//!
//! Two kinds of D-channel:
//! - **HDLC in the driver** (`hardhdlc`/`dchan`, DAHDI_SIG_HDLCFCS): one read is one frame
//!   with its (checked) FCS, one write one frame plus 2 placeholder octets the driver fills.
//! - **Software HDLC** on a clear channel: the channel carries raw 64 kbit/s octets; spanbridge
//!   does flags, bit stuffing and FCS-16 ([`crate::hdlc`]), sending one block for every block
//!   it receives so transmit stays paced by the span clock.
//!
//! The channel is opened non-blocking; [`DChannel::step`] does everything that can be done
//! now and returns. A tokio task calls it when the fd is ready ([`crate::AsyncChannel`] on a
//! device) or on a short interval (the in-process simulator).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::span::PriSpan;
use crate::backend::Op;
use crate::hdlc::{HdlcDecoder, HdlcEncoder, HdlcEvent};
use crate::{Backend, Channel, Event, FCS_LEN, TdmError, abi};

/// Largest D-channel frame (Q.921 N201 = 260 octets) plus margin.
const MAX_FRAME: usize = 512;
/// Octets per block of a software-HDLC clear channel (2 ms).
const SOFT_BLOCK: usize = 16;

/// Counters of a D-channel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DChannelCounters {
    /// Frames received and given to the stack.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Frames the driver dropped for a bad FCS (or software HDLC errors).
    pub bad_fcs: u64,
    /// HDLC aborts.
    pub aborts: u64,
    /// Frames longer than the receive buffer.
    pub overruns: u64,
    /// Read/write errors other than "would block" and pending events.
    pub errors: u64,
}

enum Kind<B: Backend> {
    Hdlc {
        channel: Channel<B>,
        scratch: Vec<u8>,
    },
    Soft {
        channel: Channel<B>,
        encoder: HdlcEncoder,
        decoder: HdlcDecoder,
        decoded: Vec<HdlcEvent>,
    },
}

/// A D-channel being served (see the module docs).
pub struct DChannel<B: Backend> {
    kind: Kind<B>,
    pending: VecDeque<Vec<u8>>,
    counters: DChannelCounters,
    alarm: bool,
}

impl<B: Backend> std::fmt::Debug for DChannel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DChannel")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> DChannel<B> {
    /// Opens span `span`'s channel `position` as an HDLCFCS D-channel (non-blocking, 1 KiB
    /// receive buffer).
    pub fn open_hdlc(backend: Arc<B>, span: u32, position: u32) -> Result<Self, TdmError> {
        let mut channel = Channel::open_span_channel_with(backend, span, position, true)?;
        channel.set_block_size(1024)?;
        Ok(Self::new(Kind::Hdlc {
            channel,
            scratch: vec![0; MAX_FRAME + 1024],
        }))
    }

    /// Opens span `span`'s clear channel `position` for software HDLC.
    pub fn open_soft(backend: Arc<B>, span: u32, position: u32) -> Result<Self, TdmError> {
        let mut channel = Channel::open_span_channel_with(backend, span, position, true)?;
        channel.set_block_size(SOFT_BLOCK)?;
        Ok(Self::new(Kind::Soft {
            channel,
            encoder: HdlcEncoder::new(),
            decoder: HdlcDecoder::new(MAX_FRAME),
            decoded: Vec::new(),
        }))
    }

    fn new(kind: Kind<B>) -> Self {
        Self {
            kind,
            pending: VecDeque::new(),
            counters: DChannelCounters::default(),
            alarm: false,
        }
    }

    /// The channel (for its number and path).
    pub fn channel(&self) -> &Channel<B> {
        match &self.kind {
            Kind::Hdlc { channel, .. } | Kind::Soft { channel, .. } => channel,
        }
    }

    /// The counters.
    pub fn counters(&self) -> DChannelCounters {
        self.counters
    }

    /// Fetches pending events; alarms go to the span.
    fn events(&mut self, now: Instant, span: &mut PriSpan) {
        for _ in 0..32 {
            let mut raw = 0;
            if self.channel().op_io(Op::GetEvent(&mut raw)).is_err() {
                return;
            }
            match Event::from_raw(raw) {
                None => return,
                Some(Event::Alarm) => {
                    self.alarm = true;
                    span.alarm(now, true);
                }
                Some(Event::NoAlarm) => {
                    self.alarm = false;
                    span.alarm(now, false);
                }
                Some(Event::BadFcs) => self.counters.bad_fcs += 1,
                Some(Event::Abort) => self.counters.aborts += 1,
                Some(Event::Overrun) => self.counters.overruns += 1,
                Some(_) => {}
            }
        }
    }

    /// Reads what is there, runs the span's timers, writes what it has to send.
    pub fn step(&mut self, now: Instant, span: &mut PriSpan) {
        self.receive(now, span);
        span.handle_timeout(now);
        while let Some(f) = span.poll_frame() {
            if self.pending.len() < 256 {
                self.pending.push_back(f);
            }
        }
        self.transmit(now, span);
    }

    fn receive(&mut self, now: Instant, span: &mut PriSpan) {
        for _ in 0..64 {
            let result = match &mut self.kind {
                Kind::Hdlc { channel, scratch } => match channel.read_io(scratch) {
                    Ok(n) if n >= FCS_LEN => {
                        self.counters.frames_in += 1;
                        let frame = scratch.get(..n - FCS_LEN).unwrap_or(&[]);
                        span.receive_frame(now, frame);
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                Kind::Soft {
                    channel,
                    encoder,
                    decoder,
                    decoded,
                } => {
                    let mut block = [0u8; SOFT_BLOCK];
                    match channel.read_io(&mut block) {
                        Ok(n) => {
                            decoder.push(block.get(..n).unwrap_or(&[]), decoded);
                            // Keep the line paced: one block out per block in.
                            let mut out = [0u8; SOFT_BLOCK];
                            encoder.fill(&mut out);
                            let _ = channel.write_io(&out);
                            for e in decoded.drain(..) {
                                match e {
                                    HdlcEvent::Frame(f) => {
                                        self.counters.frames_in += 1;
                                        span.receive_frame(now, &f);
                                    }
                                    _ => self.counters.bad_fcs += 1,
                                }
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(abi::ELAST) => self.events(now, span),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Events can be queued without blocking reads (an alarm on an idle link).
                    self.events(now, span);
                    return;
                }
                Err(_) => {
                    self.counters.errors += 1;
                    return;
                }
            }
        }
    }

    fn transmit(&mut self, now: Instant, span: &mut PriSpan) {
        while let Some(frame) = self.pending.front() {
            match &mut self.kind {
                Kind::Hdlc { channel, .. } => {
                    let mut buf = Vec::with_capacity(frame.len() + FCS_LEN);
                    buf.extend_from_slice(frame);
                    buf.extend_from_slice(&[0; FCS_LEN]);
                    match channel.write_io(&buf) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(abi::ELAST) => {
                            self.events(now, span);
                            return;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(_) => self.counters.errors += 1,
                    }
                }
                Kind::Soft { encoder, .. } => encoder.queue_frame(frame),
            }
            self.counters.frames_out += 1;
            self.pending.pop_front();
        }
    }

    /// Whether the channel last reported an alarm.
    pub fn in_alarm(&self) -> bool {
        self.alarm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pri::call::SwitchType;
    use crate::pri::q921::Role;
    use crate::pri::span::{PriSpanConfig, PriSpanEvent};
    use crate::sim::{ClockMode, SimSpans};
    use std::time::Duration;

    #[test]
    fn two_spans_bring_layer_2_up_over_simulated_d_channels_and_restart() {
        let sim = Arc::new(SimSpans::preconfigured(ClockMode::Manual));
        let t0 = Instant::now();
        let mut d1 = DChannel::open_hdlc(sim.clone(), 1, 16).unwrap();
        let mut d2 = DChannel::open_hdlc(sim.clone(), 2, 16).unwrap();
        let mut s1 = PriSpan::new(
            t0,
            PriSpanConfig::new(1, Role::Network, SwitchType::EuroIsdnE1),
        );
        let mut s2 = PriSpan::new(
            t0,
            PriSpanConfig::new(2, Role::User, SwitchType::EuroIsdnE1),
        );
        let mut now = t0;
        for _ in 0..200 {
            sim.advance(5);
            now += Duration::from_millis(5);
            d1.step(now, &mut s1);
            d2.step(now, &mut s2);
            if s1.is_ready() && s2.is_ready() {
                break;
            }
        }
        assert!(
            s1.is_ready() && s2.is_ready(),
            "{:?} {:?}",
            s1.link_state(),
            s2.link_state()
        );
        let mut ev = Vec::new();
        while let Some(e) = s2.poll_event() {
            ev.push(e);
        }
        assert!(ev.contains(&PriSpanEvent::LinkUp));
        assert!(
            ev.iter().any(|e| matches!(e, PriSpanEvent::Restarted(_))),
            "{ev:?}"
        );
        assert!(d1.counters().frames_in > 0 && d1.counters().frames_out > 0);
    }
}

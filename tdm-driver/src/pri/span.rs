//! One PRI span's signalling as the gateway uses it, sans IO: the D-channel's [`PriStack`]
//! plus what a span adds — which B-channels are in service, span alarms (every call cleared
//! with cause 38 and new calls refused until the alarm clears and layer 2 is back), RESTART
//! of the whole interface when the link comes up so both ends start from idle channels,
//! overlap receiving, the mapping of Q.931 call events to [`LegEvent`]s, per-channel use, and
//! a trace of every frame.
//!
//! An IO adapter moves frames ([`PriSpan::receive_frame`], [`PriSpan::poll_frame`]) and the
//! time; the gateway calls [`PriSpan::setup`], [`PriSpan::answer`], [`PriSpan::hangup`], ...
//! and drains [`PriSpan::poll_event`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::call::{CallEvent, CallId, CallState, SetupInfo, SwitchType, Timers, notification};
use super::q921::{LinkState, Role};
use super::q931::PartyNumber;
use super::stack::{PriStack, StackEvent};
use super::trace::{Direction, TraceRecord};
use crate::leg::{LegEvent, cause};

/// How a PRI span is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriSpanConfig {
    /// Span number (traces, logs).
    pub span: u32,
    /// Network or user side.
    pub role: Role,
    /// Switch variant.
    pub switch: SwitchType,
    /// B-channels in service (channel numbers as Q.931 names them); others are never used.
    pub b_channels: Vec<u8>,
    /// Send RESTART for the whole interface whenever layer 2 comes up.
    pub restart_on_link_up: bool,
    /// Overlap receiving: how long to wait for more digits after the last one (Q.931 T302,
    /// 15 s by default). When it runs out a call with digits is presented as it is; one with
    /// none is cleared with cause 28.
    pub overlap_timeout: Duration,
    /// Keep trace records (drained with [`PriSpan::poll_trace`]).
    pub trace: bool,
}

impl PriSpanConfig {
    /// Every B-channel of `switch`, RESTART on link up, T302 15 s, no trace.
    pub fn new(span: u32, role: Role, switch: SwitchType) -> Self {
        Self {
            span,
            role,
            switch,
            b_channels: switch.b_channels(),
            restart_on_link_up: true,
            overlap_timeout: Timers::default().t302,
            trace: false,
        }
    }
}

/// What a span reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PriSpanEvent {
    /// An event of the call `call` on B-channel `channel`.
    Leg {
        /// The call.
        call: CallId,
        /// Its B-channel (known from SETUP on, possibly changed by the first answer).
        channel: Option<u8>,
        /// What happened.
        event: LegEvent,
    },
    /// Layer 2 is up (and, after the RESTART if one was sent, the span takes calls).
    LinkUp,
    /// Layer 2 went down.
    LinkDown,
    /// The span went into alarm (`true`) or out of it.
    Alarm(bool),
    /// These channels (empty: all) were restarted and are idle.
    Restarted(Vec<u8>),
}

/// The use of one B-channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelUse {
    /// Free.
    Idle,
    /// A call holds it.
    Busy,
    /// Out of service: not configured, span alarm, link down, or being restarted.
    Blocked,
}

#[derive(Debug)]
struct Call {
    /// The leg has been reported released (further call events are not passed on).
    ended: bool,
    /// Incoming, not yet presented: digits so far (overlap receiving) and the calling number.
    overlap: Option<(String, Option<String>)>,
    /// What the SETUP carried besides the numbers (incoming calls).
    info: SetupInfo,
}

/// One PRI span (see the module docs).
#[derive(Debug)]
pub struct PriSpan {
    config: PriSpanConfig,
    stack: PriStack,
    calls: BTreeMap<CallId, Call>,
    alarm: bool,
    link_up: bool,
    restarting: bool,
    events: VecDeque<PriSpanEvent>,
    trace: VecDeque<TraceRecord>,
    trace_dropped: u64,
}

/// Trace records kept before the oldest are dropped.
const TRACE_KEEP: usize = 4096;

impl PriSpan {
    /// A span whose layer 2 starts coming up now.
    pub fn new(now: Instant, config: PriSpanConfig) -> Self {
        let mut stack = PriStack::new(now, config.role, config.switch);
        stack.calls.timers_mut().t302 = config.overlap_timeout;
        for ch in config.switch.b_channels() {
            if !config.b_channels.contains(&ch) {
                stack.calls.set_channel_available(ch, false);
            }
        }
        Self {
            config,
            stack,
            calls: BTreeMap::new(),
            alarm: false,
            link_up: false,
            restarting: false,
            events: VecDeque::new(),
            trace: VecDeque::new(),
            trace_dropped: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PriSpanConfig {
        &self.config
    }

    /// Layer 2 state.
    pub fn link_state(&self) -> LinkState {
        self.stack.link.state()
    }

    /// Layer 2 is in multiple-frame operation.
    pub fn is_link_up(&self) -> bool {
        self.link_up
    }

    /// The TEI (fixed 0 on PRI).
    pub fn tei(&self) -> u8 {
        0
    }

    /// The span is in alarm.
    pub fn in_alarm(&self) -> bool {
        self.alarm
    }

    /// New calls can be placed: no alarm, layer 2 up, no RESTART outstanding.
    pub fn is_ready(&self) -> bool {
        !self.alarm && self.link_up && self.stack.link.is_established() && !self.restarting
    }

    /// Calls not yet released by Q.931 (their channels are busy).
    pub fn live_calls(&self) -> usize {
        self.stack.calls.live_calls()
    }

    /// A call's B-channel.
    pub fn channel_of(&self, call: CallId) -> Option<u8> {
        self.stack.calls.channel(call)
    }

    /// A call's Q.931 state.
    pub fn call_state(&self, call: CallId) -> CallState {
        self.stack.calls.state(call)
    }

    /// The use of every B-channel of the switch type.
    pub fn channels(&self) -> Vec<(u8, ChannelUse)> {
        self.config
            .switch
            .b_channels()
            .into_iter()
            .map(|ch| {
                let u = if self.stack.calls.call_on(ch).is_some() {
                    ChannelUse::Busy
                } else if !self.stack.calls.channel_available(ch) || !self.is_ready() {
                    ChannelUse::Blocked
                } else {
                    ChannelUse::Idle
                };
                (ch, u)
            })
            .collect()
    }

    /// Takes a B-channel out of service or back (e.g. its audio channel failed to open).
    pub fn set_channel_available(&mut self, channel: u8, available: bool) {
        self.stack.calls.set_channel_available(channel, available);
    }

    fn record(&mut self, dir: Direction, frame: &[u8]) {
        if !self.config.trace {
            return;
        }
        if self.trace.len() >= TRACE_KEEP {
            self.trace.pop_front();
            self.trace_dropped += 1;
        }
        self.trace.push_back(TraceRecord::now(
            self.config.span,
            dir,
            self.config.role,
            frame,
        ));
    }

    /// The next trace record.
    pub fn poll_trace(&mut self) -> Option<TraceRecord> {
        self.trace.pop_front()
    }

    /// Trace records dropped because nobody drained them.
    pub fn trace_dropped(&self) -> u64 {
        self.trace_dropped
    }

    /// Switches tracing on or off.
    pub fn set_trace(&mut self, on: bool) {
        self.config.trace = on;
        if !on {
            self.trace.clear();
        }
    }

    /// Feeds a frame read from the D-channel (FCS removed).
    pub fn receive_frame(&mut self, now: Instant, frame: &[u8]) {
        self.record(Direction::Rx, frame);
        if self.alarm {
            return;
        }
        self.stack.receive_frame(now, frame);
        self.pump(now);
    }

    /// The next frame to write to the D-channel.
    pub fn poll_frame(&mut self) -> Option<Vec<u8>> {
        let f = self.stack.poll_frame()?;
        self.record(Direction::Tx, &f);
        Some(f)
    }

    /// When [`PriSpan::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.stack.poll_timeout()
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.stack.handle_timeout(now);
        self.pump(now);
    }

    /// What an incoming call's SETUP carried besides its numbers: redirecting number,
    /// display, facility (read it when its [`LegEvent::Incoming`] arrives).
    pub fn setup_info(&self, call: CallId) -> Option<&SetupInfo> {
        self.calls.get(&call).map(|c| &c.info)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PriSpanEvent> {
        self.events.pop_front()
    }

    /// A span alarm was raised (`true`) or cleared, as the D-channel's events say. Raised:
    /// every call is cleared with cause 38 at once (nothing can be signalled), new calls are
    /// refused. Cleared: calls are taken again once layer 2 is back (after a RESTART).
    pub fn alarm(&mut self, now: Instant, raised: bool) {
        if raised == self.alarm {
            return;
        }
        self.alarm = raised;
        self.events.push_back(PriSpanEvent::Alarm(raised));
        if raised {
            if self.link_up {
                self.events.push_back(PriSpanEvent::LinkDown);
            }
            self.link_up = false;
            self.restarting = false;
            self.stack.calls.clear_all(cause::NETWORK_OUT_OF_ORDER);
            // Layer 2 cannot survive layer 1 loss: restart it cleanly when the span returns.
            self.stack.link.release(now);
            while self.stack.poll_frame().is_some() {}
            self.pump(now);
        } else {
            self.stack.link.establish(now);
        }
    }

    fn emit(&mut self, call: CallId, event: LegEvent) {
        let channel = self.stack.calls.channel(call);
        self.events.push_back(PriSpanEvent::Leg {
            call,
            channel,
            event,
        });
    }

    fn present(&mut self, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some((called, calling)) = c.overlap.take() else {
            return;
        };
        if self.stack.calls.proceeding(call).is_ok() {
            self.emit(call, LegEvent::Incoming { called, calling });
        }
    }

    fn pump(&mut self, now: Instant) {
        self.stack.run(now);
        if self.restarting && !self.stack.calls.restart_pending() {
            // T316 ran out twice: take calls anyway (the far end may not do RESTART).
            self.restarting = false;
        }
        while let Some(e) = self.stack.poll_event() {
            match e {
                StackEvent::LinkUp => {
                    self.link_up = true;
                    if self.config.restart_on_link_up && !self.alarm {
                        self.stack.calls.restart(now, &[]);
                        self.restarting = true;
                        self.stack.run(now);
                    }
                    self.events.push_back(PriSpanEvent::LinkUp);
                }
                StackEvent::LinkDown => {
                    if self.link_up {
                        self.events.push_back(PriSpanEvent::LinkDown);
                    }
                    self.link_up = false;
                    self.restarting = false;
                }
                StackEvent::Call(ev) => self.call_event(now, ev),
                _ => {}
            }
        }
    }

    fn call_event(&mut self, now: Instant, ev: CallEvent) {
        match ev {
            CallEvent::Incoming {
                call,
                called,
                calling,
                complete,
                info,
                ..
            } => {
                if self.alarm || self.restarting {
                    let _ = self
                        .stack
                        .calls
                        .disconnect(now, call, cause::NETWORK_OUT_OF_ORDER);
                    return;
                }
                let digits = called.map(|n| n.digits).unwrap_or_default();
                let calling = calling.map(|n| n.digits).filter(|d| !d.is_empty());
                if complete || !digits.is_empty() {
                    self.calls.insert(
                        call,
                        Call {
                            ended: false,
                            overlap: Some((digits, calling)),
                            info,
                        },
                    );
                    self.present(call);
                } else {
                    // Overlap receiving: SETUP ACKNOWLEDGE, digits in INFORMATION under T302.
                    let _ = self.stack.calls.setup_acknowledge(now, call);
                    self.calls.insert(
                        call,
                        Call {
                            ended: false,
                            overlap: Some((digits, calling)),
                            info,
                        },
                    );
                }
            }
            CallEvent::Digits { call, digits } => {
                if let Some((d, _)) = self.calls.get_mut(&call).and_then(|c| c.overlap.as_mut()) {
                    d.push_str(&digits);
                }
            }
            CallEvent::OverlapTimeout { call } => {
                // T302: no more digits. Whatever came is the number; none at all is an
                // incomplete address (cause 28).
                let empty = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.overlap.as_ref())
                    .is_none_or(|(d, _)| d.is_empty());
                if empty {
                    self.hangup(now, call, cause::ADDRESS_INCOMPLETE);
                } else {
                    self.present(call);
                }
            }
            CallEvent::Notify { call, indicator } => {
                let event = match indicator {
                    notification::USER_SUSPENDED => LegEvent::Held,
                    notification::USER_RESUMED => LegEvent::Resumed,
                    other => LegEvent::Notified { indicator: other },
                };
                self.leg(call, event);
            }
            CallEvent::Elements {
                call,
                display,
                facility,
                ..
            } => self.leg(call, LegEvent::Elements { display, facility }),
            CallEvent::Proceeding { call, .. } => self.leg(call, LegEvent::Proceeding),
            CallEvent::Alerting { call } => self.leg(call, LegEvent::Alerting { inband: false }),
            CallEvent::Progress { call, inband } => self.leg(call, LegEvent::Progress { inband }),
            CallEvent::Answered { call } => self.leg(call, LegEvent::Answered),
            CallEvent::Disconnecting { call, cause: value } => {
                // The far end clears: finish Q.931 at once; the leg is over for the gateway.
                let _ = self.stack.calls.release(now, call, value);
                self.end(call, value);
            }
            CallEvent::Released { call, cause: value } => {
                self.end(call, value);
                self.calls.remove(&call);
            }
            CallEvent::Restarted { channels } => {
                self.events.push_back(PriSpanEvent::Restarted(channels));
            }
            CallEvent::RestartAcknowledged => {
                self.restarting = false;
                self.events.push_back(PriSpanEvent::Restarted(Vec::new()));
            }
            _ => {}
        }
    }

    fn leg(&mut self, call: CallId, event: LegEvent) {
        if self.calls.get(&call).is_some_and(|c| !c.ended) {
            self.emit(call, event);
        }
    }

    fn end(&mut self, call: CallId, value: u8) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.ended {
            return;
        }
        c.ended = true;
        // An incoming call never presented ends silently.
        if c.overlap.is_none() {
            self.emit(call, LegEvent::Released { cause: value });
        }
    }

    /// Places a call on `channel` (exclusive), or on one the stack picks. Refused with a
    /// Q.850 cause: 38 when the span is in alarm or layer 2 is down, 34 when no B-channel is
    /// free (or all are being restarted), 44 when `channel` is busy or out of service.
    pub fn setup(
        &mut self,
        now: Instant,
        called: &str,
        calling: Option<&str>,
        channel: Option<u8>,
    ) -> Result<(CallId, u8), u8> {
        let calling = calling.filter(|c| !c.is_empty()).map(|c| PartyNumber {
            number_type: 0,
            plan: 1,
            presentation: Some((0, 0)),
            reason: None,
            digits: c.to_owned(),
        });
        let info = SetupInfo {
            calling,
            ..SetupInfo::default()
        };
        self.setup_with(now, called, info, channel)
    }

    /// As [`PriSpan::setup`], the SETUP carrying `info`: calling number (with its
    /// presentation), redirecting number, display, facility.
    pub fn setup_with(
        &mut self,
        now: Instant,
        called: &str,
        info: SetupInfo,
        channel: Option<u8>,
    ) -> Result<(CallId, u8), u8> {
        if self.alarm || !self.link_up {
            return Err(cause::NETWORK_OUT_OF_ORDER);
        }
        if self.restarting {
            return Err(cause::NO_CIRCUIT);
        }
        let called = PartyNumber {
            number_type: 0,
            plan: 1,
            presentation: None,
            reason: None,
            digits: called.to_owned(),
        };
        let call = self
            .stack
            .calls
            .setup_with(now, called, info, channel, true)
            .map_err(|_| {
                if channel.is_some() {
                    cause::CHANNEL_UNAVAILABLE
                } else {
                    cause::NO_CIRCUIT
                }
            })?;
        self.calls.insert(
            call,
            Call {
                ended: false,
                overlap: None,
                info: SetupInfo::default(),
            },
        );
        self.pump(now);
        let ch = self.stack.calls.channel(call).unwrap_or(0);
        Ok((call, ch))
    }

    /// Incoming call: ALERTING (with in-band ringback or announcements when `inband`).
    pub fn alerting(&mut self, now: Instant, call: CallId, inband: bool) {
        let _ = self.stack.calls.alerting(call, inband);
        self.pump(now);
    }

    /// Incoming call: PROGRESS with in-band information (early media).
    pub fn progress(&mut self, now: Instant, call: CallId) {
        let _ = self.stack.calls.progress(call);
        self.pump(now);
    }

    /// Incoming call: CONNECT.
    pub fn answer(&mut self, now: Instant, call: CallId) -> bool {
        let ok = self.stack.calls.connect(now, call).is_ok();
        self.pump(now);
        ok
    }

    /// Ends a call in any state with `cause` (DISCONNECT, or RELEASE COMPLETE before an
    /// answer to a SETUP). The leg counts as ended at once; the channel stays busy until
    /// Q.931 has released it.
    pub fn hangup(&mut self, now: Instant, call: CallId, cause_value: u8) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.ended = true;
            c.overlap = None;
        }
        let _ = self.stack.calls.disconnect(now, call, cause_value);
        self.pump(now);
    }

    /// Sends NOTIFY on an active call: [`notification::USER_SUSPENDED`] when our side holds
    /// it, [`notification::USER_RESUMED`] when it resumes. False if the call is not active.
    pub fn notify(&mut self, now: Instant, call: CallId, indicator: u8) -> bool {
        let ok = self.stack.calls.notify(call, indicator).is_ok();
        self.pump(now);
        ok
    }

    /// Restarts `channels` (empty: the whole interface) now.
    pub fn restart(&mut self, now: Instant, channels: &[u8]) {
        self.stack.calls.restart(now, channels);
        if channels.is_empty() {
            self.restarting = true;
        }
        self.pump(now);
    }
}

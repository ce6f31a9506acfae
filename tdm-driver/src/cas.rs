//! Channel-associated signalling as sans-IO state machines, one per channel, on top of the
//! span thread's signalling rings: E&M immediate start and wink start with DTMF or MF R1
//! addressing, and loop start from either end (FXS signalling: spanbridge is the station on a
//! PBX or CO line; FXO signalling: spanbridge is the office end ringing a station).
//!
//! A [`CasChannel`] takes the channel's [`SignalEvent`]s ([`CasChannel::on_event`]), the
//! gateway's requests ([`CasChannel::originate`], [`CasChannel::answer`],
//! [`CasChannel::hangup`]) and the time ([`CasChannel::handle_timeout`]); it gives back
//! [`SignalCommand`]s for the span thread ([`CasChannel::poll_command`]) and [`LegEvent`]s for
//! the call engine ([`CasChannel::poll_event`]). The DAHDI driver does the bit-level timing
//! (debounce, the 250 ms wink window, ring cadence, the 1250 ms flash window); these machines
//! do the call-level timing: guard after release, waiting for a wink, the delay before
//! immediate-start addressing, first-digit and inter-digit timeouts, answer timeout, and glare.
//!
//! Supervision, as DAHDI reports it:
//! - **E&M**: the far end going off hook is a seizure (incoming) or the answer (outgoing,
//!   after the address); a short off-hook pulse is a wink; going on hook clears.
//! - **FXS signalling** (station end): incoming calls ring ([`Event::RingBegin`]); the office
//!   answers an outgoing call and clears it by reversing the battery ([`Event::Polarity`],
//!   with [`CasConfig::polarity`]) or by dropping the loop ([`Event::OnHook`], kewl start).
//! - **FXO signalling** (office end): the station seizes and answers by closing the loop
//!   ([`Event::RingOffHook`]) and clears by opening it ([`Event::OnHook`], after DAHDI's
//!   flash window); spanbridge answers and clears towards the station by battery reversal
//!   (with [`CasConfig::polarity`]) and, on kewl start, by the loop drop DAHDI sends on hang-up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ctl::ChannelTiming;
use crate::leg::{LegEvent, cause};
use crate::span::{DialString, DigitKind, SignalCommand, SignalEvent};
use crate::types::{Event, Hook};

/// The CAS protocol of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CasMode {
    /// E&M immediate start: seize, wait a fixed delay, send the address.
    EmImmediate,
    /// E&M wink start: seize, wait for the far end's wink, send the address.
    EmWink,
    /// Loop start, station end (DAHDI `fxsls`/`fxsks`): rings come in, spanbridge seizes the
    /// line and dials out.
    FxsLoopStart,
    /// Loop start, office end (DAHDI `fxols`/`fxoks`): spanbridge rings a station; the
    /// station seizes and dials in.
    FxoLoopStart,
}

impl CasMode {
    fn is_em(self) -> bool {
        matches!(self, CasMode::EmImmediate | CasMode::EmWink)
    }
}

/// Timers of a CAS channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasTimers {
    /// After a call is cleared, the channel stays unused this long (release guard).
    pub guard: Duration,
    /// Wink start: the longest wait for the wink after seizing.
    pub wink_wait: Duration,
    /// The wink spanbridge sends.
    pub wink: Duration,
    /// Wink start: pause between the end of the wink and the first digit.
    pub post_wink: Duration,
    /// Immediate start (and loop start, in place of dial-tone detection): pause between
    /// seizing and the first digit. Must exceed DAHDI's 250 ms receive-wink window.
    pub start_delay: Duration,
    /// Incoming: the longest wait for the first digit.
    pub first_digit: Duration,
    /// Incoming: the longest pause between digits (DTMF; MF addresses end with ST).
    pub inter_digit: Duration,
    /// Outgoing: the longest wait for the answer once the address is sent (or ringing starts).
    pub answer: Duration,
    /// Clearing: the longest wait for the far end to go on hook too.
    pub release: Duration,
    /// Loop start, station end: ringing that stopped this long ago without an answer means
    /// the caller gave up.
    pub ring_gone: Duration,
}

impl Default for CasTimers {
    fn default() -> Self {
        Self {
            guard: Duration::from_millis(800),
            wink_wait: Duration::from_secs(5),
            wink: Duration::from_millis(150),
            post_wink: Duration::from_millis(100),
            start_delay: Duration::from_millis(500),
            first_digit: Duration::from_secs(10),
            inter_digit: Duration::from_secs(3),
            answer: Duration::from_secs(180),
            release: Duration::from_secs(10),
            ring_gone: Duration::from_secs(8),
        }
    }
}

/// How one CAS channel behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasConfig {
    /// The protocol.
    pub mode: CasMode,
    /// In-band addressing: E&M DTMF or MF R1; loop start DTMF (incoming on the office end:
    /// the station dials; outgoing on the station end: spanbridge dials). `None`: no address
    /// (a hotline, or a line whose called number is [`CasConfig::fixed_called`]).
    pub addressing: Option<DigitKind>,
    /// Called number of incoming calls without addressing (loop start), e.g. the line's own
    /// number; empty if none.
    pub fixed_called: String,
    /// Most digits collected before the address counts as complete.
    pub max_digits: usize,
    /// Answer and disconnect supervision by battery reversal (loop start).
    pub polarity: bool,
    /// E&M glare: this end keeps its outgoing call (the other end must back off).
    pub glare_priority: bool,
    /// Ring cadence (on, off) for the office end, ms.
    pub cadence: (u16, u16),
    /// Outgoing E&M and station-end calls: listen for this tone plan's busy and congestion
    /// tones between the address and the answer, and clear the call with cause 17 (busy) or
    /// 34 (congestion) when one is heard. `None`: no tone detection.
    pub progress_tones: Option<codecs::tones::Country>,
    /// Timers.
    pub timers: CasTimers,
}

impl CasConfig {
    /// Defaults for `mode` with `addressing`.
    pub fn new(mode: CasMode, addressing: Option<DigitKind>) -> Self {
        Self {
            mode,
            addressing,
            fixed_called: String::new(),
            max_digits: 20,
            polarity: false,
            glare_priority: false,
            cadence: (2000, 4000),
            progress_tones: None,
            timers: CasTimers::default(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CasError {
    /// The channel is not idle (a call, the release guard, or an alarm).
    #[error("channel is {0:?}, not idle")]
    NotIdle(CasState),
    /// No call to act on.
    #[error("no call on this channel")]
    NoCall,
    /// The request does not fit the call's state.
    #[error("cannot {0} in state {1:?}")]
    WrongState(&'static str, CasState),
    /// The number cannot be sent with the channel's addressing.
    #[error("cannot send {0:?} with this channel's addressing")]
    BadNumber(String),
}

/// Where a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CasState {
    /// Free.
    Idle,
    /// Just cleared: unused until the guard time is over.
    Guard,
    /// The span is in alarm: no calls.
    Blocked,
    /// Outgoing: seized, waiting for the wink (wink start) or the start delay.
    Seizing,
    /// Outgoing: the wink came; waiting the post-wink pause.
    WinkReceived,
    /// Outgoing: sending the address.
    Dialling,
    /// Outgoing: address sent (or ringing the station), waiting for the answer.
    AwaitingAnswer,
    /// Incoming: seized; sending the wink (wink start).
    Winking,
    /// Incoming: collecting the address.
    Collecting,
    /// Incoming: presented to the gateway, waiting for answer or rejection.
    Presented,
    /// Answered, both ways.
    Active,
    /// Cleared by spanbridge: waiting for the far end to go on hook.
    Releasing,
    /// E&M wink start, after losing a glare: on hook briefly before winking for the far
    /// end's call.
    GlareBackoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

/// One channel's CAS state machine (see the module docs).
#[derive(Debug)]
pub struct CasChannel {
    config: CasConfig,
    state: CasState,
    dir: Option<Dir>,
    deadline: Option<Instant>,
    /// Outgoing address.
    called: String,
    /// Incoming address collected so far.
    digits: String,
    /// MF: KP seen.
    kp: bool,
    /// E&M glare seen while waiting for the wink (priority end).
    glare: bool,
    /// The span is in alarm.
    alarm: bool,
    /// The far end is off hook (E&M / office end) or ringing (station end).
    far_offhook: bool,
    polarity_reversed: bool,
    /// A leg the gateway knows of exists (originated, or presented).
    live: bool,
    commands: VecDeque<SignalCommand>,
    events: VecDeque<LegEvent>,
    glares: u64,
    /// Tone detection is on in the span thread.
    tones_on: bool,
    tones_heard: u64,
    /// Station end: an incoming (ringing) call was refused; the rings that go on belong to
    /// it and must not present it again.
    ring_refused: bool,
}

impl CasChannel {
    /// An idle channel.
    pub fn new(config: CasConfig) -> Self {
        let mut ch = Self {
            config,
            state: CasState::Idle,
            dir: None,
            deadline: None,
            called: String::new(),
            digits: String::new(),
            kp: false,
            glare: false,
            alarm: false,
            far_offhook: false,
            polarity_reversed: false,
            live: false,
            commands: VecDeque::new(),
            events: VecDeque::new(),
            glares: 0,
            tones_on: false,
            tones_heard: 0,
            ring_refused: false,
        };
        if ch.config.mode.is_em() {
            // DAHDI re-arms its receive-flash timer when an off-hook's debounce ends with the
            // far end on hook, and on E&M that timer's expiry reads as RINGOFFHOOK: an outgoing
            // seizure would "see" a seizure or an answer 1.85 s later. A receive-flash time of
            // at most 2 ms disables that (E&M has no other use for it).
            ch.commands.push_back(SignalCommand::Timing(ChannelTiming {
                rxflash: 0,
                wink: i32::try_from(ch.config.timers.wink.as_millis()).unwrap_or(150),
                ..ChannelTiming::dahdi_defaults()
            }));
        }
        if ch.config.mode == CasMode::FxoLoopStart {
            let (on, off) = ch.config.cadence;
            ch.commands.push_back(SignalCommand::Cadence {
                on_ms: on,
                off_ms: off,
            });
        }
        ch
    }

    /// The configuration.
    pub fn config(&self) -> &CasConfig {
        &self.config
    }

    /// The state.
    pub fn state(&self) -> CasState {
        self.state
    }

    /// Whether a new call can start here now.
    pub fn is_idle(&self) -> bool {
        self.state == CasState::Idle
    }

    /// Glares seen (outgoing calls this end gave up to an incoming one).
    pub fn glares(&self) -> u64 {
        self.glares
    }

    /// The next command for the span thread.
    pub fn poll_command(&mut self) -> Option<SignalCommand> {
        self.commands.pop_front()
    }

    /// The next leg event for the gateway.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// When [`CasChannel::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Reports the end of the gateway's leg, once.
    fn release_leg(&mut self, cause_value: u8) {
        if std::mem::take(&mut self.live) {
            self.events
                .push_back(LegEvent::Released { cause: cause_value });
        }
    }

    /// Whether the gateway has a leg on this channel.
    pub fn has_leg(&self) -> bool {
        self.live
    }

    fn cmd(&mut self, c: SignalCommand) {
        self.commands.push_back(c);
    }

    fn set(&mut self, state: CasState, deadline: Option<Instant>) {
        self.state = state;
        self.deadline = deadline;
    }

    fn dial_string(&self, number: &str) -> Result<Option<DialString>, CasError> {
        let Some(kind) = self.config.addressing else {
            return Ok(None);
        };
        let text = match kind {
            DigitKind::MfR1 => format!("*{number}#"),
            DigitKind::Dtmf => number.to_owned(),
        };
        let mut s = DialString::new(kind, &text).map_err(|_| CasError::BadNumber(number.into()))?;
        if kind == DigitKind::MfR1 && number.contains(['*', '#']) {
            return Err(CasError::BadNumber(number.into()));
        }
        s.pre_ms = 0;
        Ok(Some(s))
    }

    /// Places a call to `called` (ignored without addressing, e.g. ringing a station).
    pub fn originate(&mut self, now: Instant, called: &str) -> Result<(), CasError> {
        if self.state != CasState::Idle {
            return Err(CasError::NotIdle(self.state));
        }
        // Validate the number now, not when it is due.
        self.dial_string(called)?;
        self.called = called.to_owned();
        self.dir = Some(Dir::Out);
        self.glare = false;
        self.live = true;
        let t = self.config.timers;
        match self.config.mode {
            CasMode::EmWink => {
                self.cmd(SignalCommand::Hook(Hook::OffHook));
                self.set(CasState::Seizing, Some(now + t.wink_wait));
            }
            CasMode::EmImmediate | CasMode::FxsLoopStart => {
                self.cmd(SignalCommand::Hook(Hook::OffHook));
                self.set(CasState::Seizing, Some(now + t.start_delay));
            }
            CasMode::FxoLoopStart => {
                if self.far_offhook {
                    // The station is already off hook (it is about to call, or was left
                    // off hook): a ring cannot reach it.
                    self.dir = None;
                    self.live = false;
                    return Err(CasError::NotIdle(CasState::Presented));
                }
                self.cmd(SignalCommand::Hook(Hook::Ring));
                self.events.push_back(LegEvent::Alerting { inband: false });
                self.set(CasState::AwaitingAnswer, Some(now + t.answer));
            }
        }
        Ok(())
    }

    /// Answers the incoming call presented.
    pub fn answer(&mut self, now: Instant) -> Result<(), CasError> {
        let _ = now;
        if self.dir != Some(Dir::In) {
            return Err(CasError::NoCall);
        }
        match self.state {
            CasState::Presented => {
                match self.config.mode {
                    CasMode::EmImmediate | CasMode::EmWink | CasMode::FxsLoopStart => {
                        self.cmd(SignalCommand::Hook(Hook::OffHook));
                    }
                    CasMode::FxoLoopStart => {
                        if self.config.polarity {
                            self.cmd(SignalCommand::Polarity(true));
                            self.polarity_reversed = true;
                        }
                    }
                }
                self.set(CasState::Active, None);
                Ok(())
            }
            CasState::Active => Ok(()),
            s => Err(CasError::WrongState("answer", s)),
        }
    }

    /// Clears the call (before or after answer) with `cause` (for the record; CAS carries
    /// no cause).
    pub fn hangup(&mut self, now: Instant, cause_value: u8) -> Result<(), CasError> {
        let _ = cause_value;
        match self.state {
            CasState::Idle | CasState::Guard | CasState::Blocked | CasState::Releasing => {
                Err(CasError::NoCall)
            }
            _ if !self.live => Err(CasError::NoCall),
            _ => {
                if self.config.mode == CasMode::FxsLoopStart && self.state == CasState::Presented {
                    // Refused while ringing: the line keeps ringing until the caller gives
                    // up; stay in guard until the rings stop.
                    self.ring_refused = true;
                }
                self.clear_locally(now);
                if self.ring_refused {
                    let t = self.config.timers;
                    self.set(CasState::Guard, Some(now + t.ring_gone.max(t.guard)));
                }
                self.release_leg(cause_value);
                Ok(())
            }
        }
    }

    /// Goes on hook (stops ringing or dialling); then waits for the far end unless it already
    /// is on hook.
    fn clear_locally(&mut self, now: Instant) {
        self.cmd(SignalCommand::CancelDial);
        self.cmd(SignalCommand::Detect(None));
        self.stop_tones();
        if self.config.mode == CasMode::FxoLoopStart
            && self.config.polarity
            && self.state == CasState::Active
        {
            // Disconnect supervision towards the station: a battery reversal either way (back
            // to normal after the guard time if this one reversed it).
            let reverse = !self.polarity_reversed;
            self.cmd(SignalCommand::Polarity(reverse));
            self.polarity_reversed = reverse;
        } else if self.polarity_reversed && self.config.mode != CasMode::FxoLoopStart {
            self.polarity_reversed = false;
        }
        match (self.config.mode, self.state) {
            (CasMode::FxoLoopStart, CasState::AwaitingAnswer) => {
                self.cmd(SignalCommand::Hook(Hook::RingOff));
            }
            _ => self.cmd(SignalCommand::Hook(Hook::OnHook)),
        }
        self.dir = None;
        let far_gone = match self.config.mode {
            // A station end cannot see the office end's on-hook; an office end that was only
            // ringing has nothing to wait for.
            CasMode::FxsLoopStart => true,
            _ => !self.far_offhook,
        };
        if far_gone {
            self.set(CasState::Guard, Some(now + self.config.timers.guard));
        } else {
            self.set(CasState::Releasing, Some(now + self.config.timers.release));
        }
    }

    /// The far end cleared: report it, go on hook, guard.
    fn far_cleared(&mut self, now: Instant, cause_value: u8) {
        self.release_leg(cause_value);
        self.far_offhook = false;
        self.clear_locally(now);
    }

    fn start_collecting(&mut self, now: Instant) {
        self.digits.clear();
        self.kp = false;
        match self.config.addressing {
            Some(kind) => {
                self.cmd(SignalCommand::Detect(Some(kind)));
                self.set(
                    CasState::Collecting,
                    Some(now + self.config.timers.first_digit),
                );
            }
            None => self.present(),
        }
    }

    fn present(&mut self) {
        self.cmd(SignalCommand::Detect(None));
        let called = if self.digits.is_empty() {
            self.config.fixed_called.clone()
        } else {
            std::mem::take(&mut self.digits)
        };
        self.events.push_back(LegEvent::Incoming {
            called,
            calling: None,
        });
        self.live = true;
        self.set(CasState::Presented, None);
    }

    fn incoming_seizure(&mut self, now: Instant) {
        self.dir = Some(Dir::In);
        match self.config.mode {
            CasMode::EmWink => {
                self.cmd(SignalCommand::Detect(self.config.addressing));
                self.cmd(SignalCommand::Wink {
                    ms: u16::try_from(self.config.timers.wink.as_millis()).unwrap_or(150),
                });
                self.set(CasState::Winking, Some(now + Duration::from_secs(2)));
            }
            _ => self.start_collecting(now),
        }
    }

    fn send_address(&mut self, now: Instant) {
        match self.dial_string(&self.called.clone()) {
            Ok(Some(s)) => {
                self.cmd(SignalCommand::Dial(s));
                self.set(CasState::Dialling, Some(now + Duration::from_secs(30)));
            }
            _ => self.address_sent(now),
        }
    }

    fn address_sent(&mut self, now: Instant) {
        // E&M and a CO line give ringback in-band.
        self.events.push_back(LegEvent::Progress { inband: true });
        if self.config.mode == CasMode::FxsLoopStart && !self.config.polarity {
            // No answer supervision on this line: the call counts as answered once dialled.
            self.events.push_back(LegEvent::Answered);
            self.set(CasState::Active, None);
        } else {
            if let Some(country) = self.config.progress_tones {
                // The far end's tones are in the audio from now until the answer.
                self.cmd(SignalCommand::DetectTones(Some(country)));
                self.tones_on = true;
            }
            self.set(
                CasState::AwaitingAnswer,
                Some(now + self.config.timers.answer),
            );
        }
    }

    fn stop_tones(&mut self) {
        if std::mem::take(&mut self.tones_on) {
            self.cmd(SignalCommand::DetectTones(None));
        }
    }

    /// A busy or congestion tone heard while waiting for the answer: the far end will not
    /// answer; clear with the cause the tone stands for.
    fn tone_heard(&mut self, now: Instant, kind: codecs::tones::ToneKind) {
        if self.state != CasState::AwaitingAnswer || self.dir != Some(Dir::Out) {
            return;
        }
        let value = match kind {
            codecs::tones::ToneKind::Busy => cause::USER_BUSY,
            codecs::tones::ToneKind::Congestion => cause::NO_CIRCUIT,
            _ => return,
        };
        self.tones_heard += 1;
        self.release_leg(value);
        self.clear_locally(now);
    }

    /// Busy or congestion tones that cleared an outgoing call.
    pub fn tones_heard(&self) -> u64 {
        self.tones_heard
    }

    /// This end lost a glare: give the outgoing call up and take the incoming one.
    fn lose_glare(&mut self, now: Instant) {
        self.glares += 1;
        self.cmd(SignalCommand::CancelDial);
        self.release_leg(cause::CHANNEL_UNAVAILABLE);
        match self.config.mode {
            CasMode::FxsLoopStart => {
                // Our off-hook answered the ringing line.
                self.dir = Some(Dir::In);
                self.digits.clear();
                self.present();
            }
            CasMode::EmWink => {
                // Back on hook long enough for the far end to see it, then wink for its call.
                self.cmd(SignalCommand::Hook(Hook::OnHook));
                self.dir = Some(Dir::In);
                self.set(
                    CasState::GlareBackoff,
                    Some(now + Duration::from_millis(200)),
                );
            }
            _ => {
                // Back on hook, then collect the far end's address.
                self.cmd(SignalCommand::Hook(Hook::OnHook));
                self.incoming_seizure(now);
            }
        }
    }

    fn digit(&mut self, now: Instant, kind: DigitKind, digit: u8, duration_ms: u16) {
        if self.state == CasState::Winking {
            // A far end that did not wait for the end of our wink.
            self.set(CasState::Collecting, None);
        }
        if self.state != CasState::Collecting {
            return;
        }
        let c = char::from(digit);
        match kind {
            DigitKind::MfR1 => match c {
                // KP must last at least 55 ms (Q.322).
                '*' if duration_ms >= 55 => {
                    self.kp = true;
                    self.digits.clear();
                }
                '#' | 'A' | 'B' | 'C' if self.kp => {
                    self.present();
                    return;
                }
                '0'..='9' if self.kp => self.digits.push(c),
                _ => {}
            },
            DigitKind::Dtmf => match c {
                '#' if !self.digits.is_empty() => {
                    self.present();
                    return;
                }
                '0'..='9' | '*' | 'A'..='D' => self.digits.push(c),
                _ => {}
            },
        }
        if self.digits.len() >= self.config.max_digits {
            self.present();
            return;
        }
        let t = self.config.timers;
        let next = if self.digits.is_empty() {
            t.first_digit
        } else {
            t.inter_digit
        };
        self.deadline = Some(now + next);
    }

    /// Feeds one event from the channel's span thread.
    pub fn on_event(&mut self, now: Instant, event: SignalEvent) {
        match event {
            SignalEvent::Line(Event::Alarm) => self.on_alarm(now, true),
            SignalEvent::Line(Event::NoAlarm) => self.on_alarm(now, false),
            _ if self.alarm => {}
            SignalEvent::Line(e) => self.on_line(now, e),
            SignalEvent::Digit {
                kind,
                digit,
                duration_ms,
            } => self.digit(now, kind, digit, duration_ms),
            SignalEvent::DialDone if self.state == CasState::Dialling => self.address_sent(now),
            SignalEvent::Tone(kind) => self.tone_heard(now, kind),
            SignalEvent::HookDone if self.state == CasState::Winking => {
                self.digits.clear();
                self.kp = false;
                match self.config.addressing {
                    Some(_) => self.set(
                        CasState::Collecting,
                        Some(now + self.config.timers.first_digit),
                    ),
                    None => self.present(),
                }
            }
            _ => {}
        }
    }

    fn on_alarm(&mut self, now: Instant, raised: bool) {
        if raised {
            if self.alarm {
                return;
            }
            self.alarm = true;
            self.release_leg(cause::NETWORK_OUT_OF_ORDER);
            if !matches!(self.state, CasState::Idle | CasState::Guard) {
                self.cmd(SignalCommand::CancelDial);
                self.cmd(SignalCommand::Detect(None));
                self.stop_tones();
                self.cmd(SignalCommand::Hook(Hook::OnHook));
            }
            if self.polarity_reversed {
                self.cmd(SignalCommand::Polarity(false));
                self.polarity_reversed = false;
            }
            self.dir = None;
            self.far_offhook = false;
            self.set(CasState::Blocked, None);
        } else if self.alarm {
            self.alarm = false;
            self.set(CasState::Guard, Some(now + self.config.timers.guard));
        }
    }

    fn on_line(&mut self, now: Instant, e: Event) {
        let mode = self.config.mode;
        match e {
            // E&M: far end off hook (seizure or answer); office end: the station's loop
            // closed (seizure or answer); station end: a ring has ended (DAHDI's way of
            // saying "ring detected").
            Event::RingOffHook => {
                if mode == CasMode::FxsLoopStart {
                    self.station_ring(now);
                    return;
                }
                self.far_offhook = true;
                match self.state {
                    CasState::Idle | CasState::Guard => self.incoming_seizure(now),
                    CasState::Seizing | CasState::WinkReceived if mode.is_em() => {
                        // Both ends seized.
                        if self.config.glare_priority {
                            self.glare = true;
                        } else {
                            self.lose_glare(now);
                        }
                    }
                    CasState::Dialling if mode.is_em() => {
                        // An off-hook before the address is complete is a seizure, not an
                        // answer.
                        if self.config.glare_priority {
                            self.glare = true;
                        } else {
                            self.lose_glare(now);
                        }
                    }
                    CasState::AwaitingAnswer => {
                        if mode == CasMode::FxoLoopStart {
                            // Stop ringing: the station answered. (An office reverses the
                            // battery when the *called* party answers a call the station made,
                            // not when the station answers a ring.)
                            self.cmd(SignalCommand::Hook(Hook::OffHook));
                        }
                        self.stop_tones();
                        self.events.push_back(LegEvent::Answered);
                        self.set(CasState::Active, None);
                    }
                    _ => {}
                }
            }
            Event::WinkFlash => match self.state {
                CasState::Seizing if mode == CasMode::EmWink => {
                    self.set(
                        CasState::WinkReceived,
                        Some(now + self.config.timers.post_wink),
                    );
                }
                _ => {}
            },
            Event::OnHook => {
                let was = self.far_offhook;
                self.far_offhook = false;
                match self.state {
                    CasState::Releasing => {
                        self.set(CasState::Guard, Some(now + self.config.timers.guard));
                    }
                    CasState::Seizing | CasState::WinkReceived | CasState::Dialling
                        if self.glare =>
                    {
                        // The other end backed off the glare; carry on.
                        self.glare = false;
                    }
                    CasState::Idle | CasState::Guard | CasState::Blocked => {}
                    CasState::Seizing if mode == CasMode::EmWink && !was => {}
                    _ => {
                        if mode != CasMode::FxsLoopStart || self.state != CasState::Idle {
                            self.far_cleared(now, cause::NORMAL_CLEARING);
                        }
                    }
                }
            }
            Event::RingBegin if mode == CasMode::FxsLoopStart => self.station_ring(now),
            Event::Polarity if mode == CasMode::FxsLoopStart && self.config.polarity => {
                match self.state {
                    CasState::AwaitingAnswer | CasState::Dialling => {
                        self.stop_tones();
                        self.events.push_back(LegEvent::Answered);
                        self.set(CasState::Active, None);
                    }
                    CasState::Active | CasState::Presented => {
                        self.far_cleared(now, cause::NORMAL_CLEARING);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Station end: ringing seen.
    fn station_ring(&mut self, now: Instant) {
        if self.ring_refused && matches!(self.state, CasState::Idle | CasState::Guard) {
            // Still the refused call ringing: not a new call.
            let t = self.config.timers;
            self.set(CasState::Guard, Some(now + t.ring_gone.max(t.guard)));
            return;
        }
        match self.state {
            CasState::Idle => {
                self.dir = Some(Dir::In);
                self.far_offhook = true;
                self.digits.clear();
                self.present();
                self.deadline = Some(now + self.config.timers.ring_gone);
            }
            CasState::Presented => {
                self.deadline = Some(now + self.config.timers.ring_gone);
            }
            CasState::Seizing => self.lose_glare(now),
            _ => {}
        }
    }

    /// Runs the timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.deadline else {
            return;
        };
        if now < due {
            return;
        }
        self.deadline = None;
        match self.state {
            CasState::Guard => {
                self.ring_refused = false;
                if self.polarity_reversed {
                    self.cmd(SignalCommand::Polarity(false));
                    self.polarity_reversed = false;
                }
                self.set(CasState::Idle, None);
            }
            CasState::Seizing => match self.config.mode {
                CasMode::EmWink => {
                    // No wink: the far end is not there or not ready.
                    self.release_leg(cause::TEMPORARY_FAILURE);
                    self.clear_locally(now);
                }
                _ => self.send_address(now),
            },
            CasState::GlareBackoff => self.incoming_seizure(now),
            CasState::WinkReceived => self.send_address(now),
            CasState::Dialling => {
                self.release_leg(cause::TEMPORARY_FAILURE);
                self.clear_locally(now);
            }
            CasState::AwaitingAnswer => {
                self.release_leg(cause::NO_ANSWER);
                self.clear_locally(now);
            }
            CasState::Winking => {
                // The span thread never confirmed the wink: collect anyway.
                self.set(
                    CasState::Collecting,
                    Some(now + self.config.timers.first_digit),
                );
            }
            CasState::Collecting => {
                if self.digits.is_empty() {
                    // Nothing dialled: the seizure is dropped (nobody to tell but the line).
                    self.clear_locally(now);
                } else {
                    self.present();
                }
            }
            CasState::Presented if self.config.mode == CasMode::FxsLoopStart => {
                // The caller stopped ringing before anyone answered.
                self.release_leg(cause::NORMAL_CLEARING);
                self.dir = None;
                self.far_offhook = false;
                self.set(CasState::Guard, Some(now + self.config.timers.guard));
            }
            CasState::Releasing => {
                // The far end stays off hook; the channel is released anyway.
                self.far_offhook = false;
                self.set(CasState::Guard, Some(now + self.config.timers.guard));
            }
            _ => {}
        }
    }
}

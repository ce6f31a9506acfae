//! Q.931 call control for one PRI D-channel, sans IO: a state machine per call (U0–U19 /
//! N0–N19 with overlap states 2/25), B-channel selection and glare, RESTART, STATUS, NOTIFY,
//! and the Q.931 timers on time passed in. Messages in and out are [`Message`]s; a
//! [`super::q921::Link`] carries them.
//!
//! # Timers (Q.931 §9, Tables 9-1 and 9-2)
//!
//! Run here (values in [`Timers`]):
//! - T301 — ALERTING received, waiting for CONNECT; expiry clears with cause 19.
//! - T302 — overlap receiving (state 25): SETUP ACKNOWLEDGE sent, restarted by each
//!   INFORMATION. Expiry reports [`CallEvent::OverlapTimeout`]: the application proceeds if
//!   the number is complete enough, else clears with cause 28; if it does neither within
//!   another T302, call control clears the call with cause 28 itself.
//! - T303 — SETUP sent; one retransmission, then RELEASE COMPLETE and cause 18.
//! - T304 — overlap sending (state 2): SETUP ACKNOWLEDGE received, restarted by each
//!   INFORMATION sent, waiting for CALL PROCEEDING/ALERTING/CONNECT; expiry clears with
//!   cause 102.
//! - T305 — DISCONNECT sent; expiry sends RELEASE.
//! - T308 — RELEASE sent; one retransmission, then the call reference is freed.
//! - T309 — the data link failed with the call active; expiry clears with cause 41.
//! - T310 — CALL PROCEEDING received; expiry clears with cause 102.
//! - T313 — user side, CONNECT sent; expiry clears with cause 102.
//! - T316 — RESTART sent; one retransmission, then given up.
//! - T322 — STATUS ENQUIRY sent; expiry clears with cause 102.
//!
//! Not run, because the procedure they supervise is not used on a PRI here:
//! - T306 — network DISCONNECT with in-band tones (progress indicator 8): our DISCONNECT never
//!   carries one, so T305 supervises every DISCONNECT.
//! - T307 — a suspended call (SUSPEND/RESUME): terminal portability is a basic-rate service;
//!   SUSPEND and RESUME are not implemented.
//! - T312 — a SETUP sent on a broadcast (point-to-multipoint) data link: a PRI is
//!   point-to-point with a fixed TEI.
//! - T314 — reassembly of segmented messages: segmentation is not implemented (every message
//!   here fits one I frame).
//! - T317 — internal clearing of call references after RESTART received: done at once
//!   (synchronously) when the RESTART arrives, so there is nothing to time.
//! - T318, T319 — RESUME and SUSPEND sent (user side): not implemented, as for T307.
//! - T320, T321 — on-demand data-link establishment and D-channel backup (Q.931 Annex F,
//!   NFAS): one D-channel per span here, established permanently by Q.921.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::q921::Role;
use super::q931::{
    BearerCapability, CallReference, Cause, ChannelId, ChannelSelection, Ie, Message, MessageType,
    PartyNumber, Progress,
};

/// Q.850 cause values used by call control.
pub mod cause {
    /// Normal call clearing.
    pub const NORMAL_CLEARING: u8 = 16;
    /// Invalid number format (address incomplete): T302 ran out on too few digits.
    pub const INVALID_NUMBER_FORMAT: u8 = 28;
    /// User busy.
    pub const USER_BUSY: u8 = 17;
    /// No user responding.
    pub const NO_USER_RESPONDING: u8 = 18;
    /// No answer from user (user alerted).
    pub const NO_ANSWER: u8 = 19;
    /// Network out of order.
    pub const NETWORK_OUT_OF_ORDER: u8 = 38;
    /// Temporary failure.
    pub const TEMPORARY_FAILURE: u8 = 41;
    /// No circuit/channel available.
    pub const NO_CIRCUIT: u8 = 34;
    /// Requested circuit/channel not available.
    pub const CHANNEL_UNAVAILABLE: u8 = 44;
    /// Invalid call reference value.
    pub const INVALID_CALL_REFERENCE: u8 = 81;
    /// Mandatory information element is missing.
    pub const MANDATORY_IE_MISSING: u8 = 96;
    /// Message type not compatible with call state.
    pub const WRONG_STATE: u8 = 101;
    /// Recovery on timer expiry.
    pub const TIMER_EXPIRY: u8 = 102;
    /// Response to STATUS ENQUIRY.
    pub const STATUS_ENQUIRY_RESPONSE: u8 = 30;
}

/// Notification descriptions of the notification indicator element (Q.931 §4.5.22, octet 3
/// without its extension bit: on the wire 0x80, 0x81, 0x82).
pub mod notification {
    /// The user suspended the call (put it on hold).
    pub const USER_SUSPENDED: u8 = 0x00;
    /// The user resumed the call.
    pub const USER_RESUMED: u8 = 0x01;
    /// The bearer service changed.
    pub const BEARER_SERVICE_CHANGE: u8 = 0x02;
}

/// What a SETUP carries besides bearer, channel and called number, in either direction:
/// given to [`CallControl::setup_with`], reported in [`CallEvent::Incoming`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupInfo {
    /// Calling party number (with presentation and screening).
    pub calling: Option<PartyNumber>,
    /// Redirecting number (with its redirection reason), for a diverted call.
    pub redirecting: Option<PartyNumber>,
    /// Display contents (the calling name on most switches), as octets.
    pub display: Option<Vec<u8>>,
    /// Facility elements' contents (supplementary services), passed through opaquely.
    pub facility: Vec<Vec<u8>>,
}

/// The switch the span talks to: decides B-channel numbering and bearer defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchType {
    /// ETSI EuroISDN on E1: B-channels are timeslots 1–15 and 17–31, A-law.
    EuroIsdnE1,
    /// National ISDN-2 on T1: B-channels 1–23, µ-law.
    Ni2,
    /// AT&T 5ESS on T1.
    Att5ess,
    /// Nortel DMS-100 on T1.
    Dms100,
}

impl SwitchType {
    /// The B-channel numbers carried in channel identification.
    pub fn b_channels(self) -> Vec<u8> {
        match self {
            Self::EuroIsdnE1 => (1..=31).filter(|c| *c != 16).collect(),
            Self::Ni2 | Self::Att5ess | Self::Dms100 => (1..=23).collect(),
        }
    }

    /// The bearer capability of a speech call on this switch.
    pub fn speech_bearer(self) -> BearerCapability {
        BearerCapability {
            transfer_capability: 0,
            transfer_rate: 0x10,
            layer1: Some(if self == Self::EuroIsdnE1 { 3 } else { 2 }),
        }
    }
}

/// Timer values (Q.931 Table 9-1/9-2 defaults).
#[derive(Debug, Clone)]
pub struct Timers {
    /// T301: alerting received, waiting for CONNECT (≥ 3 min).
    pub t301: Duration,
    /// T302: SETUP ACKNOWLEDGE sent (overlap receiving), waiting for more digits (15 s).
    pub t302: Duration,
    /// T303: SETUP sent, waiting for a response (4 s, one retry).
    pub t303: Duration,
    /// T304: SETUP ACKNOWLEDGE received (overlap sending), waiting for CALL PROCEEDING,
    /// ALERTING or CONNECT after the last INFORMATION (20 s).
    pub t304: Duration,
    /// T305: DISCONNECT sent, waiting for RELEASE/DISCONNECT (30 s).
    pub t305: Duration,
    /// T308: RELEASE sent, waiting for RELEASE COMPLETE (4 s, one retry).
    pub t308: Duration,
    /// T309: data link lost with active calls (6 s).
    pub t309: Duration,
    /// T310: CALL PROCEEDING received, waiting for ALERTING/CONNECT (10 s).
    pub t310: Duration,
    /// T313: CONNECT sent by the user, waiting for CONNECT ACK (4 s).
    pub t313: Duration,
    /// T316: RESTART sent, waiting for RESTART ACK (2 min).
    pub t316: Duration,
    /// T322: STATUS ENQUIRY sent, waiting for STATUS (4 s).
    pub t322: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t301: Duration::from_secs(180),
            t302: Duration::from_secs(15),
            t303: Duration::from_secs(4),
            t304: Duration::from_secs(20),
            t305: Duration::from_secs(30),
            t308: Duration::from_secs(4),
            t309: Duration::from_secs(6),
            t310: Duration::from_secs(10),
            t313: Duration::from_secs(4),
            t316: Duration::from_secs(120),
            t322: Duration::from_secs(4),
        }
    }
}

/// Call states (the numbers are Q.931's U/N state numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// 0.
    Null,
    /// 1: SETUP sent.
    CallInitiated,
    /// 2: SETUP ACK received, sending digits.
    OverlapSending,
    /// 3: CALL PROCEEDING received.
    OutgoingCallProceeding,
    /// 4: ALERTING received.
    CallDelivered,
    /// 6: SETUP received.
    CallPresent,
    /// 7: ALERTING sent.
    CallReceived,
    /// 8: CONNECT sent, waiting for CONNECT ACK.
    ConnectRequest,
    /// 9: CALL PROCEEDING sent.
    IncomingCallProceeding,
    /// 10: active.
    Active,
    /// 11: DISCONNECT sent.
    DisconnectRequest,
    /// 12: DISCONNECT received.
    DisconnectIndication,
    /// 19: RELEASE sent.
    ReleaseRequest,
    /// 25: SETUP ACK sent, receiving digits.
    OverlapReceiving,
}

impl CallState {
    /// The Q.931 state number (as sent in the call state element).
    pub fn number(self) -> u8 {
        match self {
            Self::Null => 0,
            Self::CallInitiated => 1,
            Self::OverlapSending => 2,
            Self::OutgoingCallProceeding => 3,
            Self::CallDelivered => 4,
            Self::CallPresent => 6,
            Self::CallReceived => 7,
            Self::ConnectRequest => 8,
            Self::IncomingCallProceeding => 9,
            Self::Active => 10,
            Self::DisconnectRequest => 11,
            Self::DisconnectIndication => 12,
            Self::ReleaseRequest => 19,
            Self::OverlapReceiving => 25,
        }
    }
}

/// A call on this D-channel: its call reference and who allocated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId {
    /// Call reference value.
    pub value: u16,
    /// True when this side sent the SETUP.
    pub outgoing: bool,
}

/// What call control reports to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEvent {
    /// A SETUP arrived and a B-channel was reserved.
    Incoming {
        /// The call.
        call: CallId,
        /// Reserved B-channel.
        channel: u8,
        /// Called number, if sent.
        called: Option<PartyNumber>,
        /// Calling number, if sent.
        calling: Option<PartyNumber>,
        /// Sending complete was indicated (no more digits follow).
        complete: bool,
        /// Redirecting number, display and facility elements of the SETUP.
        info: SetupInfo,
    },
    /// T302 ran out in overlap receiving: no more digits came. Proceed
    /// ([`CallControl::proceeding`], ...) if the number is complete enough, else clear with
    /// [`cause::INVALID_NUMBER_FORMAT`]; after another T302 call control clears it with 28.
    OverlapTimeout {
        /// The call.
        call: CallId,
    },
    /// A message of an existing call carried display or facility elements (reported before
    /// the event of the message itself).
    Elements {
        /// The call.
        call: CallId,
        /// The message that carried them.
        message: MessageType,
        /// Display contents.
        display: Option<Vec<u8>>,
        /// Facility elements' contents.
        facility: Vec<Vec<u8>>,
    },
    /// NOTIFY received: e.g. [`notification::USER_SUSPENDED`] (the far user holds the call),
    /// [`notification::USER_RESUMED`].
    Notify {
        /// The call.
        call: CallId,
        /// Notification description (see [`notification`]).
        indicator: u8,
    },
    /// More called-number digits (INFORMATION in overlap receiving).
    Digits {
        /// The call.
        call: CallId,
        /// The digits.
        digits: String,
    },
    /// SETUP ACKNOWLEDGE: send the rest of the number with [`CallControl::send_digits`].
    MoreDigitsWanted {
        /// The call.
        call: CallId,
        /// The B-channel the far end confirmed.
        channel: Option<u8>,
    },
    /// CALL PROCEEDING received.
    Proceeding {
        /// The call.
        call: CallId,
        /// The B-channel the far end confirmed.
        channel: Option<u8>,
    },
    /// ALERTING received.
    Alerting {
        /// The call.
        call: CallId,
    },
    /// PROGRESS (or a progress indicator) received.
    Progress {
        /// The call.
        call: CallId,
        /// In-band information (tones, announcements) is now available.
        inband: bool,
    },
    /// CONNECT received: the far end answered.
    Answered {
        /// The call.
        call: CallId,
    },
    /// CONNECT ACKNOWLEDGE received: the call is active.
    Active {
        /// The call.
        call: CallId,
    },
    /// The far end is clearing (DISCONNECT); call [`CallControl::release`] or hang up.
    Disconnecting {
        /// The call.
        call: CallId,
        /// Cause value sent.
        cause: u8,
    },
    /// The call is gone and its B-channel free.
    Released {
        /// The call.
        call: CallId,
        /// Cause value (received, or the local reason).
        cause: u8,
    },
    /// The far end restarted channels (none = the whole interface); their calls were cleared.
    Restarted {
        /// Channels restarted.
        channels: Vec<u8>,
    },
    /// Our RESTART was acknowledged.
    RestartAcknowledged,
    /// A STATUS arrived.
    Status {
        /// The call (or global).
        call: CallId,
        /// The far end's state number.
        state: u8,
        /// Its cause value.
        cause: u8,
    },
}

/// Why a request to call control was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// All B-channels are in use (or the requested one is).
    #[error("no B-channel free (requested {requested:?}); wait for a call to end")]
    NoChannel {
        /// The channel that was asked for.
        requested: Option<u8>,
    },
    /// The call does not exist (already released?).
    #[error("no call {0:?} on this D-channel")]
    UnknownCall(CallId),
    /// The request does not fit the call's state.
    #[error("cannot {action} a call in state {state:?}")]
    WrongState {
        /// What was asked.
        action: &'static str,
        /// Where the call is.
        state: CallState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    T301,
    T302,
    T303,
    T304,
    T305,
    T308,
    T309,
    T310,
    T313,
    T322,
}

#[derive(Debug)]
struct Call {
    state: CallState,
    channel: Option<u8>,
    timer: Option<(TimerKind, Instant)>,
    retried: bool,
    setup: Option<Message>,
    cause: u8,
}

/// Call control for one D-channel.
#[derive(Debug)]
pub struct CallControl {
    role: Role,
    switch: SwitchType,
    timers: Timers,
    calls: BTreeMap<CallId, Call>,
    channels: BTreeMap<u8, CallId>,
    next_ref: u16,
    restart: Option<(Instant, Vec<u8>, bool)>,
    out: VecDeque<Message>,
    events: VecDeque<CallEvent>,
    /// B-channels out of service here (not configured, or their channel could not be opened):
    /// never chosen, and a SETUP asking for one exclusively is refused with cause 44.
    unavailable: std::collections::BTreeSet<u8>,
}

impl CallControl {
    /// Call control for `role`'s side of a span speaking `switch`.
    pub fn new(role: Role, switch: SwitchType) -> Self {
        Self::with_timers(role, switch, Timers::default())
    }

    /// As [`CallControl::new`] with other timer values.
    pub fn with_timers(role: Role, switch: SwitchType, timers: Timers) -> Self {
        Self {
            role,
            switch,
            timers,
            calls: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_ref: 1,
            restart: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            unavailable: std::collections::BTreeSet::new(),
        }
    }

    /// The timer values, to change them (a change applies to timers started afterwards).
    pub fn timers_mut(&mut self) -> &mut Timers {
        &mut self.timers
    }

    /// Takes `channel` out of service (`false`) or back (`true`). A call on it is not affected.
    pub fn set_channel_available(&mut self, channel: u8, available: bool) {
        if available {
            self.unavailable.remove(&channel);
        } else {
            self.unavailable.insert(channel);
        }
    }

    /// Whether `channel` is one of this switch type's B-channels and in service.
    pub fn channel_available(&self, channel: u8) -> bool {
        self.switch.b_channels().contains(&channel) && !self.unavailable.contains(&channel)
    }

    /// Whether a RESTART of ours awaits its acknowledgement (T316 running).
    pub fn restart_pending(&self) -> bool {
        self.restart.is_some()
    }

    /// The call holding `channel`, if any.
    pub fn call_on(&self, channel: u8) -> Option<CallId> {
        self.channels.get(&channel).copied()
    }

    /// Ids of every call not yet released.
    pub fn calls(&self) -> Vec<CallId> {
        self.calls.keys().copied().collect()
    }

    /// Forgets every call at once with `cause` (a span alarm: layer 1 is gone, nothing can be
    /// sent), reporting each as released; queued messages are dropped.
    pub fn clear_all(&mut self, cause_value: u8) {
        for call in self.calls() {
            self.remove(call, cause_value);
        }
        self.out.clear();
        self.restart = None;
    }

    /// The next message to give to the data link.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Number of calls not yet released.
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// A call's state (Null once released).
    pub fn state(&self, call: CallId) -> CallState {
        self.calls.get(&call).map_or(CallState::Null, |c| c.state)
    }

    /// The B-channel a call holds.
    pub fn channel(&self, call: CallId) -> Option<u8> {
        self.calls.get(&call).and_then(|c| c.channel)
    }

    /// When [`CallControl::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().filter_map(|c| c.timer.map(|(_, t)| t));
        calls.chain(self.restart.as_ref().map(|r| r.0)).min()
    }

    fn free_channel(&self, wanted: Option<u8>) -> Option<u8> {
        match wanted {
            Some(ch) if self.channel_available(ch) => {
                (!self.channels.contains_key(&ch)).then_some(ch)
            }
            Some(_) => None,
            // The network hunts from the top, the user from the bottom, to make glare rare.
            None => {
                let all = self.switch.b_channels();
                let free =
                    |c: &&u8| !self.channels.contains_key(*c) && !self.unavailable.contains(*c);
                match self.role {
                    Role::Network => all.iter().rev().find(free).copied(),
                    Role::User => all.iter().find(free).copied(),
                }
            }
        }
    }

    fn call_ref(call: CallId) -> CallReference {
        CallReference {
            value: call.value,
            from_destination: !call.outgoing,
        }
    }

    fn send(&mut self, call: CallId, kind: MessageType, ies: Vec<Ie>) {
        let mut msg = Message::new(kind, Self::call_ref(call));
        msg.ies = ies;
        self.out.push_back(msg);
    }

    fn channel_ie(&self, channel: u8) -> Ie {
        Ie::ChannelId(ChannelId {
            exclusive: true,
            d_channel: false,
            interface: None,
            selection: ChannelSelection::Channels(vec![channel]),
        })
    }

    fn cause_ie(&self, value: u8) -> Ie {
        Ie::Cause(Cause {
            location: match self.role {
                Role::Network => 2,
                Role::User => 0,
            },
            value,
            diagnostics: Vec::new(),
        })
    }

    fn set_timer(&mut self, call: CallId, kind: TimerKind, now: Instant) {
        let after = match kind {
            TimerKind::T301 => self.timers.t301,
            TimerKind::T302 => self.timers.t302,
            TimerKind::T303 => self.timers.t303,
            TimerKind::T304 => self.timers.t304,
            TimerKind::T309 => self.timers.t309,
            TimerKind::T305 => self.timers.t305,
            TimerKind::T308 => self.timers.t308,
            TimerKind::T310 => self.timers.t310,
            TimerKind::T313 => self.timers.t313,
            TimerKind::T322 => self.timers.t322,
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.timer = Some((kind, now + after));
        }
    }

    fn set_state(&mut self, call: CallId, state: CallState) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.state = state;
            c.timer = None;
        }
    }

    fn remove(&mut self, call: CallId, cause: u8) {
        if let Some(c) = self.calls.remove(&call) {
            if let Some(ch) = c.channel {
                self.channels.remove(&ch);
            }
            self.events.push_back(CallEvent::Released { call, cause });
        }
    }

    /// Places a call: SETUP with `called` (and `calling`), on `channel` or any free one.
    /// `complete` false starts overlap sending (more digits with [`CallControl::send_digits`]).
    pub fn setup(
        &mut self,
        now: Instant,
        called: PartyNumber,
        calling: Option<PartyNumber>,
        channel: Option<u8>,
        complete: bool,
    ) -> Result<CallId, CallError> {
        let info = SetupInfo {
            calling,
            ..SetupInfo::default()
        };
        self.setup_with(now, called, info, channel, complete)
    }

    /// As [`CallControl::setup`], the SETUP also carrying `info`'s redirecting number,
    /// display and facility elements.
    pub fn setup_with(
        &mut self,
        now: Instant,
        called: PartyNumber,
        info: SetupInfo,
        channel: Option<u8>,
        complete: bool,
    ) -> Result<CallId, CallError> {
        let ch = self
            .free_channel(channel)
            .ok_or(CallError::NoChannel { requested: channel })?;
        let mut value = self.next_ref;
        while self.calls.contains_key(&CallId {
            value,
            outgoing: true,
        }) {
            value = value % 0x7fff + 1;
        }
        self.next_ref = value % 0x7fff + 1;
        let call = CallId {
            value,
            outgoing: true,
        };
        let mut msg = Message::new(MessageType::Setup, Self::call_ref(call))
            .with(Ie::BearerCapability(self.switch.speech_bearer()))
            .with(self.channel_ie(ch));
        // Codeset 0 elements in ascending identifier order (Q.931 §4.5.1).
        for f in info.facility {
            msg = msg.with(Ie::Facility(f));
        }
        if let Some(d) = info.display {
            msg = msg.with(Ie::Display(d));
        }
        if let Some(calling) = info.calling {
            msg = msg.with(Ie::CallingNumber(calling));
        }
        msg = msg.with(Ie::CalledNumber(called));
        if let Some(r) = info.redirecting {
            msg = msg.with(Ie::RedirectingNumber(r));
        }
        if complete {
            msg = msg.with(Ie::SendingComplete);
        }
        self.out.push_back(msg.clone());
        self.channels.insert(ch, call);
        self.calls.insert(
            call,
            Call {
                state: CallState::CallInitiated,
                channel: Some(ch),
                timer: None,
                retried: false,
                setup: Some(msg),
                cause: 0,
            },
        );
        self.set_timer(call, TimerKind::T303, now);
        Ok(call)
    }

    fn expect_state(
        &self,
        call: CallId,
        action: &'static str,
        ok: &[CallState],
    ) -> Result<(), CallError> {
        let state = self
            .calls
            .get(&call)
            .map(|c| c.state)
            .ok_or(CallError::UnknownCall(call))?;
        if ok.contains(&state) {
            Ok(())
        } else {
            Err(CallError::WrongState { action, state })
        }
    }

    /// Overlap receiving: answers an incomplete SETUP with SETUP ACKNOWLEDGE and starts T302
    /// (restarted by each INFORMATION; see [`CallEvent::OverlapTimeout`]).
    pub fn setup_acknowledge(&mut self, now: Instant, call: CallId) -> Result<(), CallError> {
        self.expect_state(call, "acknowledge", &[CallState::CallPresent])?;
        let ch = self.channel(call).map(|c| self.channel_ie(c));
        self.send(
            call,
            MessageType::SetupAcknowledge,
            ch.into_iter().collect(),
        );
        self.set_state(call, CallState::OverlapReceiving);
        if let Some(c) = self.calls.get_mut(&call) {
            c.retried = false;
        }
        self.set_timer(call, TimerKind::T302, now);
        Ok(())
    }

    /// Overlap sending: sends more called-number digits in INFORMATION (T304 restarts).
    pub fn send_digits(
        &mut self,
        now: Instant,
        call: CallId,
        digits: &str,
        complete: bool,
    ) -> Result<(), CallError> {
        self.expect_state(call, "send digits for", &[CallState::OverlapSending])?;
        let mut ies = vec![Ie::CalledNumber(PartyNumber {
            number_type: 0,
            plan: 1,
            presentation: None,
            reason: None,
            digits: digits.into(),
        })];
        if complete {
            ies.push(Ie::SendingComplete);
        }
        self.send(call, MessageType::Information, ies);
        self.set_timer(call, TimerKind::T304, now);
        Ok(())
    }

    /// Sends NOTIFY with `indicator` (see [`notification`]) on an active call: e.g. our user
    /// put the call on hold ([`notification::USER_SUSPENDED`]) or took it off.
    pub fn notify(&mut self, call: CallId, indicator: u8) -> Result<(), CallError> {
        self.expect_state(call, "notify", &[CallState::Active])?;
        self.send(
            call,
            MessageType::Notify,
            vec![Ie::Notification(indicator & 0x7f)],
        );
        Ok(())
    }

    /// Answers an incoming SETUP with CALL PROCEEDING.
    pub fn proceeding(&mut self, call: CallId) -> Result<(), CallError> {
        self.expect_state(
            call,
            "proceed with",
            &[CallState::CallPresent, CallState::OverlapReceiving],
        )?;
        let ch = self.channel(call).map(|c| self.channel_ie(c));
        self.send(call, MessageType::CallProceeding, ch.into_iter().collect());
        self.set_state(call, CallState::IncomingCallProceeding);
        Ok(())
    }

    /// Sends ALERTING (with "in-band information available" when `inband`).
    pub fn alerting(&mut self, call: CallId, inband: bool) -> Result<(), CallError> {
        self.expect_state(
            call,
            "alert",
            &[
                CallState::CallPresent,
                CallState::OverlapReceiving,
                CallState::IncomingCallProceeding,
            ],
        )?;
        let mut ies = Vec::new();
        if self.state(call) == CallState::CallPresent
            && let Some(ch) = self.channel(call)
        {
            ies.push(self.channel_ie(ch));
        }
        if inband {
            ies.push(Ie::Progress(Progress {
                location: 2,
                description: 8,
            }));
        }
        self.send(call, MessageType::Alerting, ies);
        self.set_state(call, CallState::CallReceived);
        Ok(())
    }

    /// Sends PROGRESS with in-band information available (early media).
    pub fn progress(&mut self, call: CallId) -> Result<(), CallError> {
        self.expect_state(
            call,
            "send progress for",
            &[
                CallState::IncomingCallProceeding,
                CallState::CallReceived,
                CallState::OverlapReceiving,
            ],
        )?;
        let ie = Ie::Progress(Progress {
            location: 2,
            description: 8,
        });
        self.send(call, MessageType::Progress, vec![ie]);
        Ok(())
    }

    /// Answers: CONNECT. On the network side the call is active at once (CONNECT ACK is sent
    /// by the user, optional here); the user side waits for CONNECT ACK under T313.
    pub fn connect(&mut self, now: Instant, call: CallId) -> Result<(), CallError> {
        self.expect_state(
            call,
            "answer",
            &[
                CallState::CallPresent,
                CallState::OverlapReceiving,
                CallState::IncomingCallProceeding,
                CallState::CallReceived,
            ],
        )?;
        let mut ies = Vec::new();
        if self.state(call) == CallState::CallPresent
            && let Some(ch) = self.channel(call)
        {
            ies.push(self.channel_ie(ch));
        }
        self.send(call, MessageType::Connect, ies);
        self.set_state(call, CallState::ConnectRequest);
        if self.role == Role::User {
            self.set_timer(call, TimerKind::T313, now);
        }
        Ok(())
    }

    /// Hangs up: DISCONNECT with `cause` (or RELEASE COMPLETE before any answer to a SETUP).
    pub fn disconnect(&mut self, now: Instant, call: CallId, cause: u8) -> Result<(), CallError> {
        let state = self.state(call);
        match state {
            CallState::Null => Err(CallError::UnknownCall(call)),
            CallState::CallPresent => {
                let ie = self.cause_ie(cause);
                self.send(call, MessageType::ReleaseComplete, vec![ie]);
                self.remove(call, cause);
                Ok(())
            }
            CallState::DisconnectIndication => self.release(now, call, cause),
            CallState::DisconnectRequest | CallState::ReleaseRequest => Ok(()),
            _ => {
                let ie = self.cause_ie(cause);
                self.send(call, MessageType::Disconnect, vec![ie]);
                self.set_state(call, CallState::DisconnectRequest);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.cause = cause;
                }
                self.set_timer(call, TimerKind::T305, now);
                Ok(())
            }
        }
    }

    /// Sends RELEASE (after a DISCONNECT was received).
    pub fn release(&mut self, now: Instant, call: CallId, cause: u8) -> Result<(), CallError> {
        if !self.calls.contains_key(&call) {
            return Err(CallError::UnknownCall(call));
        }
        let ie = self.cause_ie(cause);
        self.send(call, MessageType::Release, vec![ie]);
        self.set_state(call, CallState::ReleaseRequest);
        if let Some(c) = self.calls.get_mut(&call) {
            c.cause = cause;
            c.retried = false;
        }
        self.set_timer(call, TimerKind::T308, now);
        Ok(())
    }

    /// Asks the far end for a call's state (STATUS ENQUIRY, T322).
    pub fn status_enquiry(&mut self, now: Instant, call: CallId) -> Result<(), CallError> {
        if !self.calls.contains_key(&call) {
            return Err(CallError::UnknownCall(call));
        }
        self.send(call, MessageType::StatusEnquiry, Vec::new());
        self.set_timer(call, TimerKind::T322, now);
        Ok(())
    }

    /// Restarts `channels` (empty = the whole interface): their calls are cleared locally and
    /// RESTART is sent on the global call reference, T316 running.
    pub fn restart(&mut self, now: Instant, channels: &[u8]) {
        let victims: Vec<CallId> = if channels.is_empty() {
            self.calls.keys().copied().collect()
        } else {
            channels
                .iter()
                .filter_map(|ch| self.channels.get(ch).copied())
                .collect()
        };
        for call in victims {
            self.remove(call, cause::TEMPORARY_FAILURE);
        }
        let mut msg = Message::new(
            MessageType::Restart,
            CallReference {
                value: 0,
                from_destination: false,
            },
        );
        if channels.is_empty() {
            msg = msg.with(Ie::RestartIndicator(7));
        } else {
            msg = msg
                .with(Ie::ChannelId(ChannelId {
                    exclusive: true,
                    d_channel: false,
                    interface: None,
                    selection: ChannelSelection::Channels(channels.to_vec()),
                }))
                .with(Ie::RestartIndicator(0));
        }
        self.out.push_back(msg);
        self.restart = Some((now + self.timers.t316, channels.to_vec(), false));
    }

    /// The data link went down (`up` false) or came back (`up` true). Calls not yet active
    /// are cleared at once; active ones are kept (Q.931 §5.8.9 T309) and cleared with cause 41
    /// unless the link returns.
    pub fn link_changed(&mut self, now: Instant, up: bool) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for call in ids {
            let state = self.state(call);
            if up {
                if let Some(c) = self.calls.get_mut(&call)
                    && c.timer.is_some_and(|(k, _)| k == TimerKind::T309)
                {
                    c.timer = None;
                }
                continue;
            }
            if state == CallState::Active {
                // T309 (an active call runs no other timer).
                self.set_timer(call, TimerKind::T309, now);
            } else {
                self.remove(call, cause::TEMPORARY_FAILURE);
            }
        }
        if up {
            // Any message queued for the lost link is stale.
            self.out.retain(|m| m.kind == MessageType::Restart);
        }
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((at, channels, retried)) = self.restart.clone()
            && at <= now
        {
            if retried {
                self.restart = None;
            } else {
                self.restart(now, &channels);
                if let Some(r) = self.restart.as_mut() {
                    r.2 = true;
                }
            }
        }
        let due: Vec<(CallId, TimerKind)> = self
            .calls
            .iter()
            .filter_map(|(id, c)| c.timer.filter(|(_, t)| *t <= now).map(|(k, _)| (*id, k)))
            .collect();
        for (call, kind) in due {
            if let Some(c) = self.calls.get_mut(&call) {
                c.timer = None;
            }
            self.on_timer(now, call, kind);
        }
    }

    fn on_timer(&mut self, now: Instant, call: CallId, kind: TimerKind) {
        let (retried, setup, cause_sent, state) = match self.calls.get(&call) {
            Some(c) => (c.retried, c.setup.clone(), c.cause, c.state),
            None => return,
        };
        match kind {
            TimerKind::T303 => {
                if let (false, Some(setup)) = (retried, setup) {
                    self.out.push_back(setup);
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.retried = true;
                    }
                    self.set_timer(call, TimerKind::T303, now);
                } else {
                    let ie = self.cause_ie(cause::NO_USER_RESPONDING);
                    self.send(call, MessageType::ReleaseComplete, vec![ie]);
                    self.remove(call, cause::NO_USER_RESPONDING);
                }
            }
            TimerKind::T309 => {
                // The link did not come back.
                self.remove(call, cause::TEMPORARY_FAILURE);
            }
            TimerKind::T302 if state == CallState::OverlapReceiving => {
                if retried {
                    // The application neither proceeded nor cleared: the number is incomplete.
                    let value = cause::INVALID_NUMBER_FORMAT;
                    let _ = self.disconnect(now, call, value);
                    self.events
                        .push_back(CallEvent::Disconnecting { call, cause: value });
                } else {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.retried = true;
                    }
                    self.set_timer(call, TimerKind::T302, now);
                    self.events.push_back(CallEvent::OverlapTimeout { call });
                }
            }
            TimerKind::T302 => {}
            TimerKind::T301 | TimerKind::T304 | TimerKind::T310 | TimerKind::T313 => {
                let value = match kind {
                    TimerKind::T301 => cause::NO_ANSWER,
                    _ => cause::TIMER_EXPIRY,
                };
                let _ = self.disconnect(now, call, value);
                self.events
                    .push_back(CallEvent::Disconnecting { call, cause: value });
            }
            TimerKind::T305 => {
                let _ = self.release(now, call, cause_sent);
            }
            TimerKind::T308 => {
                if retried {
                    self.remove(call, cause_sent);
                } else {
                    let ie = self.cause_ie(cause_sent);
                    self.send(call, MessageType::Release, vec![ie]);
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.retried = true;
                    }
                    self.set_timer(call, TimerKind::T308, now);
                }
            }
            TimerKind::T322 => {
                // No STATUS: ask once more is optional; clear the call as Q.931 §5.8.10 allows.
                let _ = self.disconnect(now, call, cause::TIMER_EXPIRY);
            }
        }
    }

    fn channel_from(msg: &Message) -> Option<u8> {
        match msg.channel_id().map(|c| &c.selection) {
            Some(ChannelSelection::Channels(chs)) => chs.first().copied(),
            _ => None,
        }
    }

    /// Feeds one received message.
    pub fn receive(&mut self, now: Instant, msg: &Message) {
        if msg.call_ref.value == 0 {
            self.receive_global(msg);
            return;
        }
        // The flag is set by the side that did not allocate the reference.
        let call = CallId {
            value: msg.call_ref.value,
            outgoing: msg.call_ref.from_destination,
        };
        if !self.calls.contains_key(&call) {
            self.receive_unknown_call(now, call, msg);
            return;
        }
        let state = self.state(call);
        let (display, facility) = Self::display_and_facility(msg);
        if display.is_some() || !facility.is_empty() {
            self.events.push_back(CallEvent::Elements {
                call,
                message: msg.kind,
                display,
                facility,
            });
        }
        match msg.kind {
            MessageType::SetupAcknowledge if state == CallState::CallInitiated => {
                self.confirm_channel(call, msg);
                self.set_state(call, CallState::OverlapSending);
                self.set_timer(call, TimerKind::T304, now);
                let channel = self.channel(call);
                self.events
                    .push_back(CallEvent::MoreDigitsWanted { call, channel });
            }
            MessageType::CallProceeding
                if matches!(state, CallState::CallInitiated | CallState::OverlapSending) =>
            {
                self.confirm_channel(call, msg);
                self.set_state(call, CallState::OutgoingCallProceeding);
                self.set_timer(call, TimerKind::T310, now);
                let channel = self.channel(call);
                self.events
                    .push_back(CallEvent::Proceeding { call, channel });
            }
            MessageType::Alerting
                if matches!(
                    state,
                    CallState::CallInitiated
                        | CallState::OverlapSending
                        | CallState::OutgoingCallProceeding
                ) =>
            {
                self.confirm_channel(call, msg);
                self.set_state(call, CallState::CallDelivered);
                self.set_timer(call, TimerKind::T301, now);
                self.report_progress(call, msg);
                self.events.push_back(CallEvent::Alerting { call });
            }
            MessageType::Progress => {
                let inband = Self::inband(msg);
                self.events.push_back(CallEvent::Progress { call, inband });
            }
            MessageType::Connect
                if matches!(
                    state,
                    CallState::CallInitiated
                        | CallState::OverlapSending
                        | CallState::OutgoingCallProceeding
                        | CallState::CallDelivered
                ) =>
            {
                self.confirm_channel(call, msg);
                self.set_state(call, CallState::Active);
                self.send(call, MessageType::ConnectAcknowledge, Vec::new());
                self.events.push_back(CallEvent::Answered { call });
            }
            MessageType::ConnectAcknowledge if state == CallState::ConnectRequest => {
                self.set_state(call, CallState::Active);
                self.events.push_back(CallEvent::Active { call });
            }
            MessageType::ConnectAcknowledge => {}
            MessageType::Information => {
                if state == CallState::OverlapReceiving {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.retried = false;
                    }
                    self.set_timer(call, TimerKind::T302, now);
                }
                if let Some(called) = msg.called() {
                    self.events.push_back(CallEvent::Digits {
                        call,
                        digits: called.digits.clone(),
                    });
                }
            }
            MessageType::Notify => {
                let indicator = msg.ies.iter().find_map(|ie| match ie {
                    Ie::Notification(n) => Some(*n),
                    _ => None,
                });
                match indicator {
                    Some(indicator) => {
                        self.events.push_back(CallEvent::Notify { call, indicator });
                    }
                    None => {
                        // Q.931 §5.8.6.1: mandatory element missing.
                        let ies = vec![
                            self.cause_ie(cause::MANDATORY_IE_MISSING),
                            Ie::CallState(state.number()),
                        ];
                        self.send(call, MessageType::Status, ies);
                    }
                }
            }
            MessageType::Disconnect => {
                let value = msg.cause().map_or(cause::NORMAL_CLEARING, |c| c.value);
                if matches!(state, CallState::DisconnectRequest) {
                    // Both sides hung up: release.
                    let _ = self.release(now, call, value);
                } else if state != CallState::ReleaseRequest {
                    self.set_state(call, CallState::DisconnectIndication);
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.cause = value;
                    }
                    self.events
                        .push_back(CallEvent::Disconnecting { call, cause: value });
                }
            }
            MessageType::Release => {
                let value = msg.cause().map_or(cause::NORMAL_CLEARING, |c| c.value);
                if state == CallState::ReleaseRequest {
                    // RELEASE collision: the call is released (Q.931 §5.3.5).
                    let sent = self.calls.get(&call).map_or(value, |c| c.cause);
                    self.remove(call, sent);
                } else {
                    self.send(call, MessageType::ReleaseComplete, Vec::new());
                    self.remove(call, value);
                }
            }
            MessageType::ReleaseComplete => {
                let value = msg
                    .cause()
                    .map_or_else(|| self.calls.get(&call).map_or(0, |c| c.cause), |c| c.value);
                self.remove(call, value);
            }
            MessageType::StatusEnquiry => {
                let ies = vec![
                    self.cause_ie(cause::STATUS_ENQUIRY_RESPONSE),
                    Ie::CallState(state.number()),
                ];
                self.send(call, MessageType::Status, ies);
            }
            MessageType::Status => {
                if let Some(c) = self.calls.get_mut(&call)
                    && c.timer.is_some_and(|(k, _)| k == TimerKind::T322)
                {
                    c.timer = None;
                }
                let far = msg
                    .ies
                    .iter()
                    .find_map(|ie| match ie {
                        Ie::CallState(s) => Some(*s),
                        _ => None,
                    })
                    .unwrap_or(0);
                let value = msg.cause().map_or(0, |c| c.value);
                self.events.push_back(CallEvent::Status {
                    call,
                    state: far,
                    cause: value,
                });
                if far == 0 {
                    // The far end has no such call: release it here (Q.931 §5.8.11).
                    self.remove(call, value);
                }
            }
            _ => {
                // Message not compatible with the call state (Q.931 §5.8.4): answer STATUS.
                let ies = vec![
                    self.cause_ie(cause::WRONG_STATE),
                    Ie::CallState(state.number()),
                ];
                self.send(call, MessageType::Status, ies);
            }
        }
    }

    fn display_and_facility(msg: &Message) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
        let display = msg.ies.iter().find_map(|ie| match ie {
            Ie::Display(d) => Some(d.clone()),
            _ => None,
        });
        let facility = msg
            .ies
            .iter()
            .filter_map(|ie| match ie {
                Ie::Facility(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        (display, facility)
    }

    fn inband(msg: &Message) -> bool {
        msg.ies
            .iter()
            .any(|ie| matches!(ie, Ie::Progress(p) if p.description == 8 || p.description == 1))
    }

    fn report_progress(&mut self, call: CallId, msg: &Message) {
        if Self::inband(msg) {
            self.events
                .push_back(CallEvent::Progress { call, inband: true });
        }
    }

    /// The far end named a (possibly different) channel in its first response.
    fn confirm_channel(&mut self, call: CallId, msg: &Message) {
        let Some(ch) = Self::channel_from(msg) else {
            return;
        };
        let current = self.channel(call);
        if current == Some(ch) {
            return;
        }
        if self.channels.contains_key(&ch) {
            return;
        }
        if let Some(old) = current {
            self.channels.remove(&old);
        }
        self.channels.insert(ch, call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.channel = Some(ch);
        }
    }

    fn receive_unknown_call(&mut self, now: Instant, call: CallId, msg: &Message) {
        match msg.kind {
            MessageType::Setup if !call.outgoing => self.receive_setup(now, call, msg),
            // Q.931 §5.8.3.2: answers for unknown call references.
            MessageType::ReleaseComplete => {}
            MessageType::Release => {
                self.send(call, MessageType::ReleaseComplete, Vec::new());
            }
            MessageType::StatusEnquiry | MessageType::Status => {
                if msg.kind == MessageType::StatusEnquiry {
                    let ies = vec![
                        self.cause_ie(cause::STATUS_ENQUIRY_RESPONSE),
                        Ie::CallState(0),
                    ];
                    self.send(call, MessageType::Status, ies);
                }
            }
            _ => {
                let ie = self.cause_ie(cause::INVALID_CALL_REFERENCE);
                self.send(call, MessageType::ReleaseComplete, vec![ie]);
            }
        }
    }

    fn receive_setup(&mut self, _now: Instant, call: CallId, msg: &Message) {
        // The called number may be absent or partial when overlap receiving starts.
        self.accept_setup(call, msg, msg.called().cloned());
    }

    fn accept_setup(&mut self, call: CallId, msg: &Message, called: Option<PartyNumber>) {
        if !msg
            .ies
            .iter()
            .any(|ie| matches!(ie, Ie::BearerCapability(_)))
        {
            let ie = self.cause_ie(cause::MANDATORY_IE_MISSING);
            self.send(call, MessageType::ReleaseComplete, vec![ie]);
            return;
        }
        let requested = msg.channel_id().cloned();
        let (wanted, exclusive) = match &requested {
            Some(ChannelId {
                selection: ChannelSelection::Channels(chs),
                exclusive,
                ..
            }) => (chs.first().copied(), *exclusive),
            _ => (None, false),
        };
        // Glare: the channel asked for may have just been taken by our own SETUP. An exclusive
        // request for a busy channel is refused with cause 44; a preferred one gets another.
        let channel = match self.free_channel(wanted) {
            Some(ch) => Some(ch),
            None if wanted.is_some() && !exclusive => self.free_channel(None),
            None => None,
        };
        let Some(channel) = channel else {
            let value = if wanted.is_some() {
                cause::CHANNEL_UNAVAILABLE
            } else {
                cause::NO_CIRCUIT
            };
            let ie = self.cause_ie(value);
            self.send(call, MessageType::ReleaseComplete, vec![ie]);
            return;
        };
        self.channels.insert(channel, call);
        self.calls.insert(
            call,
            Call {
                state: CallState::CallPresent,
                channel: Some(channel),
                timer: None,
                retried: false,
                setup: None,
                cause: 0,
            },
        );
        let complete = msg.ies.iter().any(|ie| matches!(ie, Ie::SendingComplete));
        let (display, facility) = Self::display_and_facility(msg);
        let redirecting = msg.ies.iter().find_map(|ie| match ie {
            Ie::RedirectingNumber(n) => Some(n.clone()),
            _ => None,
        });
        let calling = msg.calling().cloned();
        self.events.push_back(CallEvent::Incoming {
            call,
            channel,
            called,
            calling: calling.clone(),
            complete,
            info: SetupInfo {
                calling,
                redirecting,
                display,
                facility,
            },
        });
    }

    fn receive_global(&mut self, msg: &Message) {
        match msg.kind {
            MessageType::Restart => {
                let channels = match msg.channel_id().map(|c| &c.selection) {
                    Some(ChannelSelection::Channels(chs)) => chs.clone(),
                    _ => Vec::new(),
                };
                let victims: Vec<CallId> = if channels.is_empty() {
                    self.calls.keys().copied().collect()
                } else {
                    channels
                        .iter()
                        .filter_map(|ch| self.channels.get(ch).copied())
                        .collect()
                };
                for call in victims {
                    self.remove(call, cause::TEMPORARY_FAILURE);
                }
                let mut ack = msg.clone();
                ack.kind = MessageType::RestartAcknowledge;
                ack.call_ref.from_destination = true;
                self.out.push_back(ack);
                self.events.push_back(CallEvent::Restarted { channels });
            }
            MessageType::RestartAcknowledge => {
                self.restart = None;
                self.events.push_back(CallEvent::RestartAcknowledged);
            }
            _ => {}
        }
    }
}

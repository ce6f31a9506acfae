//! Signalling through the span thread: per channel, an SPSC ring of [`SignalCommand`]s in (hook
//! changes, winks, CAS bits, polarity, dial strings, digit detection) and an SPSC ring of
//! [`SignalEvent`]s out (the driver's hook/ring/wink/bits/alarm/DTMF events, digits our
//! detector heard, dial completion). The thread owns every channel fd (DAHDI allows one open
//! per channel), so every signalling request goes through it; both types are `Copy` with no
//! heap data, and the thread executes and reports them without allocating.

use ringbuf::traits::{Consumer, Producer};
use ringbuf::{HeapCons, HeapProd};

use super::ChannelSpec;
use crate::ctl::ChannelTiming;
use crate::types::{Event, Hook};

/// Longest dial string a command carries.
pub const MAX_DIAL: usize = 32;

/// In-band addressing tones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigitKind {
    /// DTMF (Q.23): `0-9 * # A-D`.
    Dtmf,
    /// MF R1 (Q.320): `0-9`, KP `*`, ST `#`, ST'/ST''/ST''' `A B C`.
    MfR1,
}

impl DigitKind {
    /// Whether `c` is a signal of this kind (letters in either case).
    pub fn accepts(self, c: char) -> bool {
        match self {
            DigitKind::Dtmf => codecs::dtmf::digit_frequencies(c).is_some(),
            DigitKind::MfR1 => codecs::mf::digit_frequencies(c).is_some(),
        }
    }
}

/// A dial string with its tone kind and timing, in a fixed-size buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DialString {
    digits: [u8; MAX_DIAL],
    len: u8,
    /// DTMF or MF.
    pub kind: DigitKind,
    /// Tone per digit, ms (MF: KP is sent for `kp_ms`).
    pub on_ms: u16,
    /// Silence after each digit, ms.
    pub off_ms: u16,
    /// Silence before the first digit, ms.
    pub pre_ms: u16,
    /// MF: KP duration, ms.
    pub kp_ms: u16,
    /// Level per tone, dBm0 (rounded).
    pub level_dbm0: i8,
}

impl std::fmt::Debug for DialString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialString")
            .field("digits", &self.digits())
            .field("kind", &self.kind)
            .field("on_ms", &self.on_ms)
            .field("off_ms", &self.off_ms)
            .finish()
    }
}

/// Why a dial string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Longer than [`MAX_DIAL`].
    #[error("a dial string has at most {MAX_DIAL} digits, got {0}")]
    TooLong(usize),
    /// A character the tone kind cannot send.
    #[error("{0:?} cannot be sent as {1:?}")]
    BadDigit(char, DigitKind),
}

impl DialString {
    /// `digits` as `kind` with the usual timing: DTMF 80 ms on / 80 ms off at −10 dBm0, MF 68/68
    /// (KP 100) at −7 dBm0; no leading pause.
    pub fn new(kind: DigitKind, digits: &str) -> Result<Self, DialError> {
        if digits.len() > MAX_DIAL {
            return Err(DialError::TooLong(digits.len()));
        }
        let mut buf = [0u8; MAX_DIAL];
        for (slot, c) in buf.iter_mut().zip(digits.chars()) {
            if !c.is_ascii() || !kind.accepts(c) {
                return Err(DialError::BadDigit(c, kind));
            }
            *slot = c.to_ascii_uppercase() as u8;
        }
        let (on, off, level) = match kind {
            DigitKind::Dtmf => (80, 80, -10),
            DigitKind::MfR1 => (68, 68, -7),
        };
        Ok(Self {
            digits: buf,
            len: digits.len() as u8,
            kind,
            on_ms: on,
            off_ms: off,
            pre_ms: 0,
            kp_ms: 100,
            level_dbm0: level,
        })
    }

    /// The digits.
    pub fn digits(&self) -> &str {
        let n = usize::from(self.len).min(MAX_DIAL);
        std::str::from_utf8(self.digits.get(..n).unwrap_or(&[])).unwrap_or("")
    }

    /// Digit `i` (ASCII).
    pub(crate) fn digit(&self, i: usize) -> Option<u8> {
        (i < usize::from(self.len)).then(|| self.digits.get(i).copied())?
    }
}

/// A signalling request for one channel, executed by the span thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalCommand {
    /// DAHDI_HOOK as given (on/off hook, ring, ring off, start, and DAHDI's own wink/flash —
    /// which block a blocking fd for their length: prefer [`SignalCommand::Wink`]).
    Hook(Hook),
    /// A wink timed by the thread: off hook for `ms`, then on hook; [`SignalEvent::HookDone`].
    Wink {
        /// Off-hook time.
        ms: u16,
    },
    /// A flash timed by the thread: on hook for `ms`, then off hook; [`SignalEvent::HookDone`].
    Flash {
        /// On-hook time.
        ms: u16,
    },
    /// DAHDI_SETTXBITS (CAS signalling).
    TxBits(u8),
    /// DAHDI_SETPOLARITY: battery reversed or normal (FXO signalling).
    Polarity(bool),
    /// DAHDI_SETCADENCE with one on/off pair (ms), for the next rings.
    Cadence {
        /// Ringing time.
        on_ms: u16,
        /// Silence.
        off_ms: u16,
    },
    /// Sends the digits in-band with spanbridge's generator, in place of the gateway's audio,
    /// then [`SignalEvent::DialDone`].
    Dial(DialString),
    /// Sends the digits with DAHDI_DIAL (the driver's generator); DIALCOMPLETE follows.
    DriverDial(DialString),
    /// Stops either kind of dialling.
    CancelDial,
    /// Runs a digit detector on the received audio (`None`: off). Detected digits arrive as
    /// [`SignalEvent::Digit`].
    Detect(Option<DigitKind>),
    /// Listens for the busy and congestion tones of a tone plan in the received audio
    /// (`None`: off). A tone recognised arrives once as [`SignalEvent::Tone`].
    DetectTones(Option<codecs::tones::Country>),
    /// DAHDI_SET_PARAMS: the driver's hook timings for this channel.
    Timing(ChannelTiming),
}

/// Which command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// [`SignalCommand::Hook`] (and the hook changes of a wink or flash).
    Hook,
    /// [`SignalCommand::TxBits`].
    TxBits,
    /// [`SignalCommand::Polarity`].
    Polarity,
    /// [`SignalCommand::Cadence`].
    Cadence,
    /// [`SignalCommand::DriverDial`] or the cancel of it.
    Dial,
    /// [`SignalCommand::Timing`].
    Timing,
}

/// What the span thread reports for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalEvent {
    /// An event from the driver (DAHDI_GETEVENT): hook, ring, wink, polarity, alarm, DTMF
    /// from the driver's detector, dial complete, ...
    Line(Event),
    /// The CAS bits received after a change (DAHDI_GETRXBITS).
    Bits(u8),
    /// A digit our detector heard (reported at its end, once).
    Digit {
        /// DTMF or MF.
        kind: DigitKind,
        /// ASCII digit (MF: `*` KP, `#` ST, `A`–`C` ST'…).
        digit: u8,
        /// How long its tone lasted, ms.
        duration_ms: u16,
    },
    /// A call-progress tone (busy or congestion) heard after [`SignalCommand::DetectTones`].
    Tone(codecs::tones::ToneKind),
    /// A [`SignalCommand::Dial`] finished (or was cancelled).
    DialDone,
    /// A [`SignalCommand::Wink`] or [`SignalCommand::Flash`] finished.
    HookDone,
    /// A command failed with this errno.
    Failed {
        /// Which.
        command: CommandKind,
        /// The OS error number.
        errno: i32,
    },
}

/// Capacity of a channel's command ring.
pub const COMMAND_RING: usize = 16;
/// Capacity of a channel's event ring.
pub const EVENT_RING: usize = 64;

/// The gateway's signalling side of one channel.
pub struct ChannelSignals {
    /// The channel.
    pub spec: ChannelSpec,
    pub(super) commands: HeapProd<SignalCommand>,
    pub(super) events: HeapCons<SignalEvent>,
}

impl std::fmt::Debug for ChannelSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSignals")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl ChannelSignals {
    /// Queues a command for the span thread (executed within one cycle); gives it back when
    /// the ring is full.
    pub fn send(&mut self, command: SignalCommand) -> Result<(), SignalCommand> {
        self.commands.try_push(command)
    }

    /// The next event, if any.
    pub fn poll(&mut self) -> Option<SignalEvent> {
        self.events.try_pop()
    }
}

//! Typed views of DAHDI's integer codes: events, hook states, laws, signalling types, alarm
//! and line-configuration bits. Every conversion from a kernel value is total: a code we do
//! not know becomes `Unknown(value)`, never a panic.

use std::fmt;

use crate::abi;

/// An event fetched with `DAHDI_GETEVENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// Went on hook.
    OnHook,
    /// Went off hook (or answered).
    RingOffHook,
    /// Wink or flash.
    WinkFlash,
    /// Alarm raised on the span.
    Alarm,
    /// Alarm cleared.
    NoAlarm,
    /// HDLC abort received.
    Abort,
    /// HDLC frame longer than the block size.
    Overrun,
    /// HDLC frame with a bad FCS (the frame was dropped).
    BadFcs,
    /// A DIAL string finished.
    DialComplete,
    /// Ringer on.
    RingerOn,
    /// Ringer off.
    RingerOff,
    /// A hook state change completed.
    HookComplete,
    /// CAS bits changed.
    BitsChanged,
    /// Pulse dialling started.
    PulseStart,
    /// Timer expired.
    TimerExpired,
    /// Timer ping.
    TimerPing,
    /// Polarity reversal.
    Polarity,
    /// Ring begins.
    RingBegin,
    /// Echo canceller disabled.
    EcDisabled,
    /// Hardware removed.
    Removed,
    /// Neon MWI active.
    NeonMwiActive,
    /// Neon MWI inactive.
    NeonMwiInactive,
    /// CED detected on transmit.
    TxCedDetected,
    /// CED detected on receive.
    RxCedDetected,
    /// CNG detected on transmit.
    TxCngDetected,
    /// CNG detected on receive.
    RxCngDetected,
    /// Echo canceller NLP disabled.
    EcNlpDisabled,
    /// Echo canceller NLP enabled.
    EcNlpEnabled,
    /// Receive overrun (with buffer events on).
    ReadOverrun,
    /// Transmit underrun (with buffer events on).
    WriteUnderrun,
    /// A pulse-dialled digit (ASCII).
    PulseDigit(u8),
    /// DTMF key down (ASCII digit).
    DtmfDown(u8),
    /// DTMF key up (ASCII digit).
    DtmfUp(u8),
    /// A code this library does not know.
    Unknown(u32),
}

impl Event {
    /// Decodes a GETEVENT value; 0 ("no event") is `None`.
    pub fn from_raw(raw: i32) -> Option<Event> {
        use Event::*;
        let digit = (raw & 0xff) as u8;
        let event = match raw {
            abi::DAHDI_EVENT_NONE => return None,
            abi::DAHDI_EVENT_ONHOOK => OnHook,
            abi::DAHDI_EVENT_RINGOFFHOOK => RingOffHook,
            abi::DAHDI_EVENT_WINKFLASH => WinkFlash,
            abi::DAHDI_EVENT_ALARM => Alarm,
            abi::DAHDI_EVENT_NOALARM => NoAlarm,
            abi::DAHDI_EVENT_ABORT => Abort,
            abi::DAHDI_EVENT_OVERRUN => Overrun,
            abi::DAHDI_EVENT_BADFCS => BadFcs,
            abi::DAHDI_EVENT_DIALCOMPLETE => DialComplete,
            abi::DAHDI_EVENT_RINGERON => RingerOn,
            abi::DAHDI_EVENT_RINGEROFF => RingerOff,
            abi::DAHDI_EVENT_HOOKCOMPLETE => HookComplete,
            abi::DAHDI_EVENT_BITSCHANGED => BitsChanged,
            abi::DAHDI_EVENT_PULSE_START => PulseStart,
            abi::DAHDI_EVENT_TIMER_EXPIRED => TimerExpired,
            abi::DAHDI_EVENT_TIMER_PING => TimerPing,
            abi::DAHDI_EVENT_POLARITY => Polarity,
            abi::DAHDI_EVENT_RINGBEGIN => RingBegin,
            abi::DAHDI_EVENT_EC_DISABLED => EcDisabled,
            abi::DAHDI_EVENT_REMOVED => Removed,
            abi::DAHDI_EVENT_NEONMWI_ACTIVE => NeonMwiActive,
            abi::DAHDI_EVENT_NEONMWI_INACTIVE => NeonMwiInactive,
            abi::DAHDI_EVENT_TX_CED_DETECTED => TxCedDetected,
            abi::DAHDI_EVENT_RX_CED_DETECTED => RxCedDetected,
            abi::DAHDI_EVENT_TX_CNG_DETECTED => TxCngDetected,
            abi::DAHDI_EVENT_RX_CNG_DETECTED => RxCngDetected,
            abi::DAHDI_EVENT_EC_NLP_DISABLED => EcNlpDisabled,
            abi::DAHDI_EVENT_EC_NLP_ENABLED => EcNlpEnabled,
            abi::DAHDI_EVENT_READ_OVERRUN => ReadOverrun,
            abi::DAHDI_EVENT_WRITE_UNDERRUN => WriteUnderrun,
            _ if raw & !0xff == abi::DAHDI_EVENT_PULSEDIGIT => PulseDigit(digit),
            _ if raw & !0xff == abi::DAHDI_EVENT_DTMFDOWN => DtmfDown(digit),
            _ if raw & !0xff == abi::DAHDI_EVENT_DTMFUP => DtmfUp(digit),
            _ => Unknown(raw as u32),
        };
        Some(event)
    }

    /// The GETEVENT value of this event (what a simulator queues).
    pub fn to_raw(self) -> i32 {
        use Event::*;
        match self {
            OnHook => abi::DAHDI_EVENT_ONHOOK,
            RingOffHook => abi::DAHDI_EVENT_RINGOFFHOOK,
            WinkFlash => abi::DAHDI_EVENT_WINKFLASH,
            Alarm => abi::DAHDI_EVENT_ALARM,
            NoAlarm => abi::DAHDI_EVENT_NOALARM,
            Abort => abi::DAHDI_EVENT_ABORT,
            Overrun => abi::DAHDI_EVENT_OVERRUN,
            BadFcs => abi::DAHDI_EVENT_BADFCS,
            DialComplete => abi::DAHDI_EVENT_DIALCOMPLETE,
            RingerOn => abi::DAHDI_EVENT_RINGERON,
            RingerOff => abi::DAHDI_EVENT_RINGEROFF,
            HookComplete => abi::DAHDI_EVENT_HOOKCOMPLETE,
            BitsChanged => abi::DAHDI_EVENT_BITSCHANGED,
            PulseStart => abi::DAHDI_EVENT_PULSE_START,
            TimerExpired => abi::DAHDI_EVENT_TIMER_EXPIRED,
            TimerPing => abi::DAHDI_EVENT_TIMER_PING,
            Polarity => abi::DAHDI_EVENT_POLARITY,
            RingBegin => abi::DAHDI_EVENT_RINGBEGIN,
            EcDisabled => abi::DAHDI_EVENT_EC_DISABLED,
            Removed => abi::DAHDI_EVENT_REMOVED,
            NeonMwiActive => abi::DAHDI_EVENT_NEONMWI_ACTIVE,
            NeonMwiInactive => abi::DAHDI_EVENT_NEONMWI_INACTIVE,
            TxCedDetected => abi::DAHDI_EVENT_TX_CED_DETECTED,
            RxCedDetected => abi::DAHDI_EVENT_RX_CED_DETECTED,
            TxCngDetected => abi::DAHDI_EVENT_TX_CNG_DETECTED,
            RxCngDetected => abi::DAHDI_EVENT_RX_CNG_DETECTED,
            EcNlpDisabled => abi::DAHDI_EVENT_EC_NLP_DISABLED,
            EcNlpEnabled => abi::DAHDI_EVENT_EC_NLP_ENABLED,
            ReadOverrun => abi::DAHDI_EVENT_READ_OVERRUN,
            WriteUnderrun => abi::DAHDI_EVENT_WRITE_UNDERRUN,
            PulseDigit(d) => abi::DAHDI_EVENT_PULSEDIGIT | i32::from(d),
            DtmfDown(d) => abi::DAHDI_EVENT_DTMFDOWN | i32::from(d),
            DtmfUp(d) => abi::DAHDI_EVENT_DTMFUP | i32::from(d),
            Unknown(raw) => raw as i32,
        }
    }
}

/// A hook state to set with `DAHDI_HOOK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Go on hook.
    OnHook,
    /// Go off hook.
    OffHook,
    /// Send a wink.
    Wink,
    /// Send a flash.
    Flash,
    /// Start.
    Start,
    /// Ring (FXS).
    Ring,
    /// Stop ringing (FXS).
    RingOff,
}

impl Hook {
    /// The DAHDI_HOOK argument.
    pub fn to_raw(self) -> i32 {
        match self {
            Hook::OnHook => abi::DAHDI_ONHOOK,
            Hook::OffHook => abi::DAHDI_OFFHOOK,
            Hook::Wink => abi::DAHDI_WINK,
            Hook::Flash => abi::DAHDI_FLASH,
            Hook::Start => abi::DAHDI_START,
            Hook::Ring => abi::DAHDI_RING,
            Hook::RingOff => abi::DAHDI_RINGOFF,
        }
    }
}

impl TryFrom<i32> for Hook {
    type Error = i32;

    fn try_from(raw: i32) -> Result<Self, i32> {
        Ok(match raw {
            abi::DAHDI_ONHOOK => Hook::OnHook,
            abi::DAHDI_OFFHOOK => Hook::OffHook,
            abi::DAHDI_WINK => Hook::Wink,
            abi::DAHDI_FLASH => Hook::Flash,
            abi::DAHDI_START => Hook::Start,
            abi::DAHDI_RING => Hook::Ring,
            abi::DAHDI_RINGOFF => Hook::RingOff,
            other => return Err(other),
        })
    }
}

/// A companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// The span's default (μ-law on T1, A-law on E1).
    Default,
    /// μ-law (G.711 PCMU).
    MuLaw,
    /// A-law (G.711 PCMA).
    ALaw,
    /// A value this library does not know.
    Unknown(i32),
}

impl Law {
    /// The DAHDI_LAW_* value.
    pub fn to_raw(self) -> i32 {
        match self {
            Law::Default => abi::DAHDI_LAW_DEFAULT,
            Law::MuLaw => abi::DAHDI_LAW_MULAW,
            Law::ALaw => abi::DAHDI_LAW_ALAW,
            Law::Unknown(raw) => raw,
        }
    }
}

impl From<i32> for Law {
    fn from(raw: i32) -> Self {
        match raw {
            abi::DAHDI_LAW_DEFAULT => Law::Default,
            abi::DAHDI_LAW_MULAW => Law::MuLaw,
            abi::DAHDI_LAW_ALAW => Law::ALaw,
            other => Law::Unknown(other),
        }
    }
}

/// A channel's signalling type (`DAHDI_SIG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigType {
    /// Not configured.
    None,
    /// FXS loop start.
    FxsLs,
    /// FXS ground start.
    FxsGs,
    /// FXS kewl start.
    FxsKs,
    /// FXO loop start.
    FxoLs,
    /// FXO ground start.
    FxoGs,
    /// FXO kewl start.
    FxoKs,
    /// E&M.
    Em,
    /// E1 E&M.
    EmE1,
    /// Clear channel (a bearer, `bchan`).
    Clear,
    /// Raw HDLC.
    HdlcRaw,
    /// HDLC with FCS (a D-channel, `dchan`).
    HdlcFcs,
    /// HDLC network device.
    HdlcNet,
    /// Hardware HDLC (`hardhdlc`).
    HardHdlc,
    /// MTP2.
    Mtp2,
    /// Slave of another channel.
    Slave,
    /// Single-frequency signalling.
    Sf,
    /// Raw CAS bits (`cas`).
    Cas,
    /// Cross connect.
    Dacs,
    /// Cross connect with robbed bits.
    DacsRbs,
    /// The port is broken.
    Broken,
    /// A value this library does not know.
    Unknown(u32),
}

impl SigType {
    /// The DAHDI_SIG_* value.
    pub fn to_raw(self) -> i32 {
        use SigType::*;
        match self {
            None => abi::DAHDI_SIG_NONE,
            FxsLs => abi::DAHDI_SIG_FXSLS,
            FxsGs => abi::DAHDI_SIG_FXSGS,
            FxsKs => abi::DAHDI_SIG_FXSKS,
            FxoLs => abi::DAHDI_SIG_FXOLS,
            FxoGs => abi::DAHDI_SIG_FXOGS,
            FxoKs => abi::DAHDI_SIG_FXOKS,
            Em => abi::DAHDI_SIG_EM,
            EmE1 => abi::DAHDI_SIG_EM_E1,
            Clear => abi::DAHDI_SIG_CLEAR,
            HdlcRaw => abi::DAHDI_SIG_HDLCRAW,
            HdlcFcs => abi::DAHDI_SIG_HDLCFCS,
            HdlcNet => abi::DAHDI_SIG_HDLCNET,
            HardHdlc => abi::DAHDI_SIG_HARDHDLC,
            Mtp2 => abi::DAHDI_SIG_MTP2,
            Slave => abi::DAHDI_SIG_SLAVE,
            Sf => abi::DAHDI_SIG_SF,
            Cas => abi::DAHDI_SIG_CAS,
            Dacs => abi::DAHDI_SIG_DACS,
            DacsRbs => abi::DAHDI_SIG_DACS_RBS,
            Broken => abi::DAHDI_SIG_BROKEN,
            Unknown(raw) => raw as i32,
        }
    }

    /// True for audio signalling (FXS/FXO/E&M/CAS), where linear mode and hook states apply.
    pub fn is_audio(self) -> bool {
        use SigType::*;
        matches!(
            self,
            FxsLs | FxsGs | FxsKs | FxoLs | FxoGs | FxoKs | Em | EmE1 | Sf | Cas
        )
    }

    /// True for HDLC signalling, where read and write move whole frames.
    pub fn is_hdlc(self) -> bool {
        use SigType::*;
        matches!(self, HdlcRaw | HdlcFcs | HdlcNet | HardHdlc | Mtp2)
    }
}

impl From<i32> for SigType {
    fn from(raw: i32) -> Self {
        use SigType::*;
        match raw {
            abi::DAHDI_SIG_NONE => None,
            abi::DAHDI_SIG_FXSLS => FxsLs,
            abi::DAHDI_SIG_FXSGS => FxsGs,
            abi::DAHDI_SIG_FXSKS => FxsKs,
            abi::DAHDI_SIG_FXOLS => FxoLs,
            abi::DAHDI_SIG_FXOGS => FxoGs,
            abi::DAHDI_SIG_FXOKS => FxoKs,
            abi::DAHDI_SIG_EM => Em,
            abi::DAHDI_SIG_EM_E1 => EmE1,
            abi::DAHDI_SIG_CLEAR => Clear,
            abi::DAHDI_SIG_HDLCRAW => HdlcRaw,
            abi::DAHDI_SIG_HDLCFCS => HdlcFcs,
            abi::DAHDI_SIG_HDLCNET => HdlcNet,
            abi::DAHDI_SIG_HARDHDLC => HardHdlc,
            abi::DAHDI_SIG_MTP2 => Mtp2,
            abi::DAHDI_SIG_SLAVE => Slave,
            abi::DAHDI_SIG_SF => Sf,
            abi::DAHDI_SIG_CAS => Cas,
            abi::DAHDI_SIG_DACS => Dacs,
            abi::DAHDI_SIG_DACS_RBS => DacsRbs,
            abi::DAHDI_SIG_BROKEN => Broken,
            other => Unknown(other as u32),
        }
    }
}

/// Alarm bits of a span or channel (`DAHDI_ALARM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Alarms(pub u32);

impl Alarms {
    const NAMES: [(i32, &'static str); 9] = [
        (abi::DAHDI_ALARM_RECOVER, "RECOVER"),
        (abi::DAHDI_ALARM_LOOPBACK, "LOOPBACK"),
        (abi::DAHDI_ALARM_YELLOW, "YELLOW"),
        (abi::DAHDI_ALARM_RED, "RED"),
        (abi::DAHDI_ALARM_BLUE, "BLUE"),
        (abi::DAHDI_ALARM_NOTOPEN, "NOTOPEN"),
        (abi::DAHDI_ALARM_LOS, "LOS"),
        (abi::DAHDI_ALARM_LFA, "LFA"),
        (abi::DAHDI_ALARM_LMFA, "LMFA"),
    ];

    /// No alarm at all.
    pub fn is_clear(self) -> bool {
        self.0 == 0
    }

    /// True if every bit of `bits` (a `DAHDI_ALARM_*` value) is set.
    pub fn contains(self, bits: i32) -> bool {
        self.0 & (bits as u32) == bits as u32
    }
}

impl fmt::Display for Alarms {
    /// `OK`, or the alarm names joined with `+` (`RED+LOS`), with unknown bits in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("OK");
        }
        let mut rest = self.0;
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit as u32 != 0 {
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !(bit as u32);
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("+")?;
            }
            write!(f, "0x{rest:x}")?;
        }
        Ok(())
    }
}

/// Transmit start policy of a channel's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferPolicy {
    /// Start transmitting as soon as one buffer is written.
    Immediate,
    /// Start once all buffers are full.
    WhenFull,
    /// Start once half the buffers are full.
    HalfFull,
    /// A value this library does not know.
    Unknown(i32),
}

impl BufferPolicy {
    /// The DAHDI_POLICY_* value.
    pub fn to_raw(self) -> i32 {
        match self {
            BufferPolicy::Immediate => abi::DAHDI_POLICY_IMMEDIATE,
            BufferPolicy::WhenFull => abi::DAHDI_POLICY_WHEN_FULL,
            BufferPolicy::HalfFull => abi::DAHDI_POLICY_HALF_FULL,
            BufferPolicy::Unknown(raw) => raw,
        }
    }
}

impl From<i32> for BufferPolicy {
    fn from(raw: i32) -> Self {
        match raw {
            abi::DAHDI_POLICY_IMMEDIATE => BufferPolicy::Immediate,
            abi::DAHDI_POLICY_WHEN_FULL => BufferPolicy::WhenFull,
            abi::DAHDI_POLICY_HALF_FULL => BufferPolicy::HalfFull,
            other => BufferPolicy::Unknown(other),
        }
    }
}

/// A maintenance command for a span (`DAHDI_MAINT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaintCommand {
    /// Normal operation.
    None,
    /// Local loopback.
    LocalLoop,
    /// Remote (network line) loopback.
    RemoteLoop,
    /// Send the loop-up code.
    LoopUp,
    /// Send the loop-down code.
    LoopDown,
    /// Network payload loopback.
    NetworkPayloadLoop,
    /// Clear the error counters.
    ResetCounters,
    /// Simulate alarms.
    AlarmSim,
}

impl MaintCommand {
    /// The DAHDI_MAINT_* value.
    pub fn to_raw(self) -> i32 {
        match self {
            MaintCommand::None => abi::DAHDI_MAINT_NONE,
            MaintCommand::LocalLoop => abi::DAHDI_MAINT_LOCALLOOP,
            MaintCommand::RemoteLoop => abi::DAHDI_MAINT_REMOTELOOP,
            MaintCommand::LoopUp => abi::DAHDI_MAINT_LOOPUP,
            MaintCommand::LoopDown => abi::DAHDI_MAINT_LOOPDOWN,
            MaintCommand::NetworkPayloadLoop => abi::DAHDI_MAINT_NETWORKPAYLOADLOOP,
            MaintCommand::ResetCounters => abi::DAHDI_RESET_COUNTERS,
            MaintCommand::AlarmSim => abi::DAHDI_MAINT_ALARM_SIM,
        }
    }
}

/// What DAHDI_FLUSH discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flush {
    /// Receive buffers.
    Read,
    /// Transmit buffers.
    Write,
    /// Both directions.
    Both,
    /// The event queue.
    Events,
    /// Everything.
    All,
}

impl Flush {
    /// The DAHDI_FLUSH_* value.
    pub fn to_raw(self) -> i32 {
        match self {
            Flush::Read => abi::DAHDI_FLUSH_READ,
            Flush::Write => abi::DAHDI_FLUSH_WRITE,
            Flush::Both => abi::DAHDI_FLUSH_BOTH,
            Flush::Events => abi::DAHDI_FLUSH_EVENT,
            Flush::All => abi::DAHDI_FLUSH_ALL,
        }
    }
}

/// A DAHDI_DIAL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialOp {
    /// Append to what is being dialled.
    Append,
    /// Replace what is being dialled.
    Replace,
    /// Cancel dialling.
    Cancel,
}

impl DialOp {
    /// The DAHDI_DIAL_OP_* value.
    pub fn to_raw(self) -> i32 {
        match self {
            DialOp::Append => abi::DAHDI_DIAL_OP_APPEND,
            DialOp::Replace => abi::DAHDI_DIAL_OP_REPLACE,
            DialOp::Cancel => abi::DAHDI_DIAL_OP_CANCEL,
        }
    }
}

/// A DAHDI_IOMUX wait mask, and the satisfied mask it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IoMux(pub i32);

impl IoMux {
    /// A receive buffer is complete.
    pub const READ: IoMux = IoMux(abi::DAHDI_IOMUX_READ);
    /// A transmit buffer is free.
    pub const WRITE: IoMux = IoMux(abi::DAHDI_IOMUX_WRITE);
    /// The transmit buffers are empty.
    pub const WRITE_EMPTY: IoMux = IoMux(abi::DAHDI_IOMUX_WRITEEMPTY);
    /// A signalling event is queued.
    pub const SIG_EVENT: IoMux = IoMux(abi::DAHDI_IOMUX_SIGEVENT);
    /// Poll once without waiting.
    pub const NO_WAIT: IoMux = IoMux(abi::DAHDI_IOMUX_NOWAIT);

    /// True if any bit of `other` is set in `self`.
    pub fn intersects(self, other: IoMux) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for IoMux {
    type Output = IoMux;

    fn bitor(self, rhs: IoMux) -> IoMux {
        IoMux(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_and_unknown_codes_do_not_panic() {
        for raw in (1..=30).chain([
            abi::DAHDI_EVENT_DTMFDOWN | i32::from(b'5'),
            abi::DAHDI_EVENT_DTMFUP | i32::from(b'#'),
            abi::DAHDI_EVENT_PULSEDIGIT | i32::from(b'9'),
            31,
            0x7fff_ffff,
            -1,
            i32::MIN,
        ]) {
            let event = Event::from_raw(raw).unwrap();
            assert_eq!(event.to_raw(), raw, "{event:?}");
        }
        assert_eq!(Event::from_raw(0), None);
        assert_eq!(Event::from_raw(0x20035), Some(Event::DtmfDown(b'5')));
        assert_eq!(Event::from_raw(31), Some(Event::Unknown(31)));
    }

    #[test]
    fn sigtypes_round_trip_and_classify() {
        for raw in [
            0x80, 0x380, 0x2001, 0x1020, 0x80080, 0x8000, 0x40, 0x20000, 0x1234,
        ] {
            assert_eq!(SigType::from(raw).to_raw(), raw);
        }
        assert_eq!(SigType::from(0x380), SigType::HdlcFcs);
        assert!(SigType::HdlcFcs.is_hdlc() && !SigType::HdlcFcs.is_audio());
        assert!(SigType::FxsKs.is_audio());
        assert_eq!(SigType::from(0x1234), SigType::Unknown(0x1234));
    }

    #[test]
    fn alarms_print_their_names() {
        assert_eq!(Alarms(0).to_string(), "OK");
        let a = Alarms((abi::DAHDI_ALARM_RED | abi::DAHDI_ALARM_LOS) as u32);
        assert_eq!(a.to_string(), "RED+LOS");
        assert!(a.contains(abi::DAHDI_ALARM_RED) && !a.contains(abi::DAHDI_ALARM_BLUE));
        assert_eq!(Alarms(0x8000_0004).to_string(), "YELLOW+0x80000000");
    }

    #[test]
    fn hook_and_law_conversions() {
        for h in 0..=6 {
            assert_eq!(Hook::try_from(h).unwrap().to_raw(), h);
        }
        assert_eq!(Hook::try_from(7), Err(7));
        assert_eq!(Law::from(2), Law::ALaw);
        assert_eq!(Law::from(9), Law::Unknown(9));
    }
}

//! The DAHDI ioctl ABI as the simulator sees it over FUSE: request numbers, struct sizes, field
//! offsets and constants, all taken from `crate::abi` (the driver's own, probe-checked
//! description of `dahdi/user.h`), so the simulator decodes exactly what the driver encodes.
//!
//! FUSE hands the daemon an ioctl's argument as exactly `_IOC_SIZE` bytes, so structs are read
//! and written field by field at their C offsets; nothing here can panic on short input.

use crate::abi;
use std::mem::{offset_of, size_of};

/// The ioctls the simulator understands, decoded from the full 32-bit request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ioctl {
    GetBlocksize,
    SetBlocksize,
    Flush,
    Sync,
    GetParams,
    GetParamsV1,
    SetParams,
    Hook,
    GetEvent,
    IoMux,
    SpanStat,
    Maint,
    GetConf,
    SetConf,
    GetGains,
    SetGains,
    SpanConfig,
    ChanConfig,
    ConfMute,
    GetConfMute,
    SendTone,
    GetToneZone,
    SetToneZone,
    DefaultZone,
    LoadZone,
    FreeZone,
    GetBufInfo,
    SetBufInfo,
    GetDialParams,
    SetDialParams,
    Dial,
    AudioMode,
    EchoCancel,
    EchoCancelParams,
    ChanNo,
    Dialing,
    HdlcRawMode,
    HdlcFcsMode,
    Specify,
    SetLaw,
    SetLinear,
    SetCadence,
    GetRxBits,
    SetTxBits,
    TimerConfig,
    TimerAck,
    EchoTrain,
    TimerPing,
    TimerPong,
    Indirect,
    GetVersion,
    Loopback,
    AttachEchocan,
    ToneDetect,
    SetPolarity,
    VmwiConfig,
    Vmwi,
    Startup,
    Shutdown,
    HdlcRate,
    EchoCancelFaxMode,
    BufferEvents,
}

/// Request number → ioctl, from the driver's ABI module (which the hw-tests ABI probe checks
/// against DAHDI's own header).
const TABLE: &[(u64, Ioctl)] = &[
    (abi::DAHDI_GET_BLOCKSIZE, Ioctl::GetBlocksize),
    (abi::DAHDI_SET_BLOCKSIZE, Ioctl::SetBlocksize),
    (abi::DAHDI_FLUSH, Ioctl::Flush),
    (abi::DAHDI_SYNC, Ioctl::Sync),
    (abi::DAHDI_GET_PARAMS, Ioctl::GetParams),
    (abi::DAHDI_GET_PARAMS_V1, Ioctl::GetParamsV1),
    (abi::DAHDI_SET_PARAMS, Ioctl::SetParams),
    (abi::DAHDI_HOOK, Ioctl::Hook),
    (abi::DAHDI_GETEVENT, Ioctl::GetEvent),
    (abi::DAHDI_IOMUX, Ioctl::IoMux),
    (abi::DAHDI_SPANSTAT, Ioctl::SpanStat),
    (abi::DAHDI_MAINT, Ioctl::Maint),
    (abi::DAHDI_GETCONF, Ioctl::GetConf),
    (abi::DAHDI_SETCONF, Ioctl::SetConf),
    (abi::DAHDI_GETGAINS, Ioctl::GetGains),
    (abi::DAHDI_SETGAINS, Ioctl::SetGains),
    (abi::DAHDI_SPANCONFIG, Ioctl::SpanConfig),
    (abi::DAHDI_CHANCONFIG, Ioctl::ChanConfig),
    (abi::DAHDI_CONFMUTE, Ioctl::ConfMute),
    (abi::DAHDI_GETCONFMUTE, Ioctl::GetConfMute),
    (abi::DAHDI_SENDTONE, Ioctl::SendTone),
    (abi::DAHDI_GETTONEZONE, Ioctl::GetToneZone),
    (abi::DAHDI_SETTONEZONE, Ioctl::SetToneZone),
    (abi::DAHDI_DEFAULTZONE, Ioctl::DefaultZone),
    (abi::DAHDI_LOADZONE, Ioctl::LoadZone),
    (abi::DAHDI_FREEZONE, Ioctl::FreeZone),
    (abi::DAHDI_GET_BUFINFO, Ioctl::GetBufInfo),
    (abi::DAHDI_SET_BUFINFO, Ioctl::SetBufInfo),
    (abi::DAHDI_GET_DIALPARAMS, Ioctl::GetDialParams),
    (abi::DAHDI_SET_DIALPARAMS, Ioctl::SetDialParams),
    (abi::DAHDI_DIAL, Ioctl::Dial),
    (abi::DAHDI_AUDIOMODE, Ioctl::AudioMode),
    (abi::DAHDI_ECHOCANCEL, Ioctl::EchoCancel),
    (abi::DAHDI_ECHOCANCEL_PARAMS, Ioctl::EchoCancelParams),
    (abi::DAHDI_CHANNO, Ioctl::ChanNo),
    (abi::DAHDI_DIALING, Ioctl::Dialing),
    (abi::DAHDI_HDLCRAWMODE, Ioctl::HdlcRawMode),
    (abi::DAHDI_HDLCFCSMODE, Ioctl::HdlcFcsMode),
    (abi::DAHDI_SPECIFY, Ioctl::Specify),
    (abi::DAHDI_SETLAW, Ioctl::SetLaw),
    (abi::DAHDI_SETLINEAR, Ioctl::SetLinear),
    (abi::DAHDI_SETCADENCE, Ioctl::SetCadence),
    (abi::DAHDI_GETRXBITS, Ioctl::GetRxBits),
    (abi::DAHDI_SETTXBITS, Ioctl::SetTxBits),
    (abi::DAHDI_TIMERCONFIG, Ioctl::TimerConfig),
    (abi::DAHDI_TIMERACK, Ioctl::TimerAck),
    (abi::DAHDI_ECHOTRAIN, Ioctl::EchoTrain),
    (abi::DAHDI_TIMERPING, Ioctl::TimerPing),
    (abi::DAHDI_TIMERPONG, Ioctl::TimerPong),
    (abi::DAHDI_INDIRECT, Ioctl::Indirect),
    (abi::DAHDI_GETVERSION, Ioctl::GetVersion),
    (abi::DAHDI_LOOPBACK, Ioctl::Loopback),
    (abi::DAHDI_ATTACH_ECHOCAN, Ioctl::AttachEchocan),
    (abi::DAHDI_TONEDETECT, Ioctl::ToneDetect),
    (abi::DAHDI_SETPOLARITY, Ioctl::SetPolarity),
    (abi::DAHDI_VMWI_CONFIG, Ioctl::VmwiConfig),
    (abi::DAHDI_VMWI, Ioctl::Vmwi),
    (abi::DAHDI_STARTUP, Ioctl::Startup),
    (abi::DAHDI_SHUTDOWN, Ioctl::Shutdown),
    (abi::DAHDI_HDLC_RATE, Ioctl::HdlcRate),
    (abi::DAHDI_ECHOCANCEL_FAX_MODE, Ioctl::EchoCancelFaxMode),
    (abi::DAHDI_BUFFER_EVENTS, Ioctl::BufferEvents),
];

/// Decodes a request number (on all 32 bits: some DAHDI ioctls share `nr`).
pub fn decode(cmd: u32) -> Option<Ioctl> {
    TABLE
        .iter()
        .find(|(n, _)| *n == u64::from(cmd))
        .map(|(_, i)| *i)
}

/// The request number of an ioctl (for tests and the control status).
#[cfg(test)]
pub fn number(ioctl: Ioctl) -> Option<u32> {
    TABLE
        .iter()
        .find(|(_, i)| *i == ioctl)
        .and_then(|(n, _)| u32::try_from(*n).ok())
}

/// Every request number in the table (for tests).
#[cfg(test)]
pub fn tests_all_numbers() -> Vec<u32> {
    TABLE
        .iter()
        .filter_map(|(n, _)| u32::try_from(*n).ok())
        .collect()
}

/// The `_IOC_SIZE` field of a request number.
pub fn size_of_request(cmd: u32) -> usize {
    ((cmd >> 16) & 0x3fff) as usize
}

// Struct sizes.
pub const PARAMS_SIZE: usize = size_of::<abi::Params>();
pub const SPANINFO_SIZE: usize = size_of::<abi::SpanInfo>();
pub const GAINS_SIZE: usize = size_of::<abi::Gains>();
pub const BUFINFO_SIZE: usize = size_of::<abi::BufferInfo>();
pub const VERSION_SIZE: usize = size_of::<abi::VersionInfo>();
pub const CONFINFO_SIZE: usize = size_of::<abi::ConfInfo>();
pub const DIALPARAMS_SIZE: usize = size_of::<abi::DialParams>();

/// Reads a native-endian `int` at `off`; missing bytes read as 0.
pub fn get_i32(buf: &[u8], off: usize) -> i32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(off..off + 4) {
        b.copy_from_slice(src);
    }
    i32::from_ne_bytes(b)
}

/// Writes a native-endian `int` at `off` if it fits.
pub fn put_i32(buf: &mut [u8], off: usize, v: i32) {
    if let Some(dst) = buf.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
}

/// Writes a NUL-terminated C string into a `char[len]` field at `off`, truncating.
pub fn put_str(buf: &mut [u8], off: usize, len: usize, s: &str) {
    if let Some(dst) = buf.get_mut(off..off + len) {
        dst.fill(0);
        let n = s.len().min(len.saturating_sub(1));
        if let (Some(d), Some(src)) = (dst.get_mut(..n), s.as_bytes().get(..n)) {
            d.copy_from_slice(src);
        }
    }
}

/// Reads a `char[len]` field at `off` up to its first NUL (lossy UTF-8).
pub fn get_str(buf: &[u8], off: usize, len: usize) -> String {
    let field = buf.get(off..off + len).unwrap_or(&[]);
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or(&[])).into_owned()
}

/// Field offsets of `struct dahdi_params`.
pub mod params {
    use super::{abi::Params, offset_of};
    pub const CHANNO: usize = offset_of!(Params, channo);
    pub const SPANNO: usize = offset_of!(Params, spanno);
    pub const CHANPOS: usize = offset_of!(Params, chanpos);
    pub const SIGTYPE: usize = offset_of!(Params, sigtype);
    pub const SIGCAP: usize = offset_of!(Params, sigcap);
    pub const RXISOFFHOOK: usize = offset_of!(Params, rxisoffhook);
    pub const RXBITS: usize = offset_of!(Params, rxbits);
    pub const TXBITS: usize = offset_of!(Params, txbits);
    pub const TXHOOKSIG: usize = offset_of!(Params, txhooksig);
    pub const RXHOOKSIG: usize = offset_of!(Params, rxhooksig);
    pub const CURLAW: usize = offset_of!(Params, curlaw);
    pub const IDLEBITS: usize = offset_of!(Params, idlebits);
    pub const NAME: usize = offset_of!(Params, name);
    pub const NAME_LEN: usize = 40;
    /// prewinktime .. pulseaftertime: eleven consecutive ints.
    pub const TIMING_FIRST: usize = offset_of!(Params, prewinktime);
    pub const TIMING_COUNT: usize = (offset_of!(Params, pulseaftertime) - TIMING_FIRST) / 4 + 1;
    pub const CHAN_ALARMS: usize = offset_of!(Params, chan_alarms);
}

/// Field offsets of the packed `struct dahdi_spaninfo`.
pub mod spaninfo {
    use super::{abi::SpanInfo, offset_of};
    pub const SPANNO: usize = offset_of!(SpanInfo, spanno);
    pub const NAME: usize = offset_of!(SpanInfo, name);
    pub const DESC: usize = offset_of!(SpanInfo, desc);
    pub const ALARMS: usize = offset_of!(SpanInfo, alarms);
    pub const TXLEVEL: usize = offset_of!(SpanInfo, txlevel);
    pub const RXLEVEL: usize = offset_of!(SpanInfo, rxlevel);
    pub const BPVCOUNT: usize = offset_of!(SpanInfo, bpvcount);
    pub const CRC4COUNT: usize = offset_of!(SpanInfo, crc4count);
    pub const EBITCOUNT: usize = offset_of!(SpanInfo, ebitcount);
    pub const FASCOUNT: usize = offset_of!(SpanInfo, fascount);
    pub const FECOUNT: usize = offset_of!(SpanInfo, fecount);
    pub const CVCOUNT: usize = offset_of!(SpanInfo, cvcount);
    pub const BECOUNT: usize = offset_of!(SpanInfo, becount);
    pub const PRBS: usize = offset_of!(SpanInfo, prbs);
    pub const ERRSEC: usize = offset_of!(SpanInfo, errsec);
    pub const IRQMISSES: usize = offset_of!(SpanInfo, irqmisses);
    pub const SYNCSRC: usize = offset_of!(SpanInfo, syncsrc);
    pub const NUMCHANS: usize = offset_of!(SpanInfo, numchans);
    pub const TOTALCHANS: usize = offset_of!(SpanInfo, totalchans);
    pub const TOTALSPANS: usize = offset_of!(SpanInfo, totalspans);
    pub const LBO: usize = offset_of!(SpanInfo, lbo);
    pub const LINECONFIG: usize = offset_of!(SpanInfo, lineconfig);
    pub const LBONAME: usize = offset_of!(SpanInfo, lboname);
    pub const LOCATION: usize = offset_of!(SpanInfo, location);
    pub const MANUFACTURER: usize = offset_of!(SpanInfo, manufacturer);
    pub const DEVICETYPE: usize = offset_of!(SpanInfo, devicetype);
    pub const IRQ: usize = offset_of!(SpanInfo, irq);
    pub const LINECOMPAT: usize = offset_of!(SpanInfo, linecompat);
    pub const SPANTYPE: usize = offset_of!(SpanInfo, spantype);
}

/// Field offsets of `struct dahdi_lineconfig` (SPANCONFIG).
pub mod lineconfig {
    use super::{abi::LineConfig, offset_of};
    pub const SPAN: usize = offset_of!(LineConfig, span);
    pub const NAME: usize = offset_of!(LineConfig, name);
    pub const LBO: usize = offset_of!(LineConfig, lbo);
    pub const LINECONFIG: usize = offset_of!(LineConfig, lineconfig);
    pub const SYNC: usize = offset_of!(LineConfig, sync);
}

/// Field offsets of `struct dahdi_chanconfig` (CHANCONFIG).
pub mod chanconfig {
    use super::{abi::ChanConfig, offset_of};
    pub const CHAN: usize = offset_of!(ChanConfig, chan);
    pub const NAME: usize = offset_of!(ChanConfig, name);
    pub const SIGTYPE: usize = offset_of!(ChanConfig, sigtype);
    pub const DEFLAW: usize = offset_of!(ChanConfig, deflaw);
    pub const MASTER: usize = offset_of!(ChanConfig, master);
    pub const IDLEBITS: usize = offset_of!(ChanConfig, idlebits);
}

/// Field offsets of `struct dahdi_bufferinfo`.
pub mod bufinfo {
    use super::{abi::BufferInfo, offset_of};
    pub const TXBUFPOLICY: usize = offset_of!(BufferInfo, txbufpolicy);
    pub const RXBUFPOLICY: usize = offset_of!(BufferInfo, rxbufpolicy);
    pub const NUMBUFS: usize = offset_of!(BufferInfo, numbufs);
    pub const BUFSIZE: usize = offset_of!(BufferInfo, bufsize);
    pub const READBUFS: usize = offset_of!(BufferInfo, readbufs);
    pub const WRITEBUFS: usize = offset_of!(BufferInfo, writebufs);
}

/// Field offsets of the small structs (maintinfo, confinfo, gains, dialoperation, ...).
pub mod small {
    use super::{abi, offset_of};
    pub const MAINT_SPANNO: usize = offset_of!(abi::MaintInfo, spanno);
    pub const MAINT_COMMAND: usize = offset_of!(abi::MaintInfo, command);
    pub const CONF_CHAN: usize = offset_of!(abi::ConfInfo, chan);
    pub const CONF_CONFNO: usize = offset_of!(abi::ConfInfo, confno);
    pub const CONF_CONFMODE: usize = offset_of!(abi::ConfInfo, confmode);
    pub const GAINS_CHAN: usize = offset_of!(abi::Gains, chan);
    pub const GAINS_RX: usize = offset_of!(abi::Gains, rxgain);
    pub const DIAL_OP: usize = offset_of!(abi::DialOperation, op);
    pub const DIAL_STR: usize = offset_of!(abi::DialOperation, dialstr);
    pub const DIAL_STR_LEN: usize = 256;
    pub const ZONE_ZONE: usize = offset_of!(abi::ToneDefHeader, zone);
    pub const ECHOCAN_CHAN: usize = offset_of!(abi::AttachEchoCan, chan);
    pub const VERSION_VERSION: usize = offset_of!(abi::VersionInfo, version);
    pub const VERSION_ECHO: usize = offset_of!(abi::VersionInfo, echo_canceller);
}

/// DAHDI constants the model uses, from the driver's ABI module.
pub mod consts {
    use crate::abi as a;

    pub const ELAST: i32 = a::ELAST;

    pub const EVENT_ONHOOK: i32 = a::DAHDI_EVENT_ONHOOK;
    pub const EVENT_RINGOFFHOOK: i32 = a::DAHDI_EVENT_RINGOFFHOOK;
    pub const EVENT_WINKFLASH: i32 = a::DAHDI_EVENT_WINKFLASH;
    pub const EVENT_ALARM: i32 = a::DAHDI_EVENT_ALARM;
    pub const EVENT_NOALARM: i32 = a::DAHDI_EVENT_NOALARM;
    pub const EVENT_OVERRUN: i32 = a::DAHDI_EVENT_OVERRUN;
    pub const EVENT_BADFCS: i32 = a::DAHDI_EVENT_BADFCS;
    pub const EVENT_DIALCOMPLETE: i32 = a::DAHDI_EVENT_DIALCOMPLETE;
    pub const EVENT_RINGERON: i32 = a::DAHDI_EVENT_RINGERON;
    pub const EVENT_RINGEROFF: i32 = a::DAHDI_EVENT_RINGEROFF;
    pub const EVENT_HOOKCOMPLETE: i32 = a::DAHDI_EVENT_HOOKCOMPLETE;
    pub const EVENT_BITSCHANGED: i32 = a::DAHDI_EVENT_BITSCHANGED;
    pub const EVENT_TIMER_EXPIRED: i32 = a::DAHDI_EVENT_TIMER_EXPIRED;
    pub const EVENT_TIMER_PING: i32 = a::DAHDI_EVENT_TIMER_PING;
    pub const EVENT_POLARITY: i32 = a::DAHDI_EVENT_POLARITY;
    pub const EVENT_PULSE_START: i32 = a::DAHDI_EVENT_PULSE_START;
    pub const EVENT_PULSEDIGIT: i32 = a::DAHDI_EVENT_PULSEDIGIT;
    pub const EVENT_RINGBEGIN: i32 = a::DAHDI_EVENT_RINGBEGIN;
    pub const EVENT_READ_OVERRUN: i32 = a::DAHDI_EVENT_READ_OVERRUN;
    pub const EVENT_WRITE_UNDERRUN: i32 = a::DAHDI_EVENT_WRITE_UNDERRUN;
    pub const MAX_EVENTS: usize = a::DAHDI_MAX_EVENTSIZE as usize;

    pub const ONHOOK: i32 = a::DAHDI_ONHOOK;
    pub const OFFHOOK: i32 = a::DAHDI_OFFHOOK;
    pub const WINK: i32 = a::DAHDI_WINK;
    pub const FLASH: i32 = a::DAHDI_FLASH;
    pub const START: i32 = a::DAHDI_START;
    pub const RING: i32 = a::DAHDI_RING;
    pub const RINGOFF: i32 = a::DAHDI_RINGOFF;

    pub const SIG_CLEAR: u32 = a::DAHDI_SIG_CLEAR as u32;
    pub const SIG_HDLCRAW: u32 = a::DAHDI_SIG_HDLCRAW as u32;
    pub const SIG_HDLCFCS: u32 = a::DAHDI_SIG_HDLCFCS as u32;
    pub const SIG_HDLCNET: u32 = a::DAHDI_SIG_HDLCNET as u32;
    pub const SIG_HARDHDLC: u32 = a::DAHDI_SIG_HARDHDLC as u32;
    pub const SIG_MTP2: u32 = a::DAHDI_SIG_MTP2 as u32;
    pub const SIG_SLAVE: u32 = a::DAHDI_SIG_SLAVE as u32;
    pub const SIG_DACS: u32 = a::DAHDI_SIG_DACS as u32;
    pub const SIG_DACS_RBS: u32 = a::DAHDI_SIG_DACS_RBS as u32;
    pub const SIG_FXSLS: u32 = a::DAHDI_SIG_FXSLS as u32;
    pub const SIG_FXSGS: u32 = a::DAHDI_SIG_FXSGS as u32;
    pub const SIG_FXSKS: u32 = a::DAHDI_SIG_FXSKS as u32;
    pub const SIG_FXOLS: u32 = a::DAHDI_SIG_FXOLS as u32;
    pub const SIG_FXOGS: u32 = a::DAHDI_SIG_FXOGS as u32;
    pub const SIG_FXOKS: u32 = a::DAHDI_SIG_FXOKS as u32;
    pub const SIG_EM: u32 = a::DAHDI_SIG_EM as u32;
    pub const SIG_EM_E1: u32 = a::DAHDI_SIG_EM_E1 as u32;
    pub const SIG_SF: u32 = a::DAHDI_SIG_SF as u32;
    pub const SIG_CAS: u32 = a::DAHDI_SIG_CAS as u32;
    /// Every signalling type a simulated span channel accepts.
    pub const SIGCAP_SPAN: u32 = SIG_FXSLS
        | SIG_FXSGS
        | SIG_FXSKS
        | SIG_FXOLS
        | SIG_FXOGS
        | SIG_FXOKS
        | SIG_EM
        | SIG_CLEAR
        | SIG_HDLCRAW
        | SIG_HDLCFCS
        | SIG_HDLCNET
        | SIG_SLAVE
        | SIG_SF
        | SIG_CAS
        | SIG_DACS
        | SIG_EM_E1
        | SIG_DACS_RBS
        | SIG_HARDHDLC
        | SIG_MTP2;

    pub const LAW_DEFAULT: i32 = a::DAHDI_LAW_DEFAULT;
    pub const LAW_MULAW: i32 = a::DAHDI_LAW_MULAW;
    pub const LAW_ALAW: i32 = a::DAHDI_LAW_ALAW;

    pub const ALARM_RECOVER: i32 = a::DAHDI_ALARM_RECOVER;
    pub const ALARM_LOOPBACK: i32 = a::DAHDI_ALARM_LOOPBACK;
    pub const ALARM_YELLOW: i32 = a::DAHDI_ALARM_YELLOW;
    pub const ALARM_RED: i32 = a::DAHDI_ALARM_RED;
    pub const ALARM_BLUE: i32 = a::DAHDI_ALARM_BLUE;
    pub const ALARM_NOTOPEN: i32 = a::DAHDI_ALARM_NOTOPEN;
    pub const ALARM_LOS: i32 = a::DAHDI_ALARM_LOS;
    pub const ALARM_LFA: i32 = a::DAHDI_ALARM_LFA;
    pub const ALARM_LMFA: i32 = a::DAHDI_ALARM_LMFA;

    pub const CONFIG_D4: i32 = a::DAHDI_CONFIG_D4;
    pub const CONFIG_ESF: i32 = a::DAHDI_CONFIG_ESF;
    pub const CONFIG_AMI: i32 = a::DAHDI_CONFIG_AMI;
    pub const CONFIG_B8ZS: i32 = a::DAHDI_CONFIG_B8ZS;
    pub const CONFIG_CCS: i32 = a::DAHDI_CONFIG_CCS;
    pub const CONFIG_HDB3: i32 = a::DAHDI_CONFIG_HDB3;
    pub const CONFIG_CRC4: i32 = a::DAHDI_CONFIG_CRC4;
    pub const CONFIG_NTTE: i32 = a::DAHDI_CONFIG_NTTE;
    pub const CONFIG_TERM: i32 = a::DAHDI_CONFIG_TERM;

    pub const POLICY_IMMEDIATE: i32 = a::DAHDI_POLICY_IMMEDIATE;
    pub const POLICY_WHEN_FULL: i32 = a::DAHDI_POLICY_WHEN_FULL;
    pub const POLICY_HALF_FULL: i32 = a::DAHDI_POLICY_HALF_FULL;

    pub const FLUSH_READ: i32 = a::DAHDI_FLUSH_READ;
    pub const FLUSH_WRITE: i32 = a::DAHDI_FLUSH_WRITE;
    pub const FLUSH_EVENT: i32 = a::DAHDI_FLUSH_EVENT;

    pub const IOMUX_READ: i32 = a::DAHDI_IOMUX_READ;
    pub const IOMUX_WRITE: i32 = a::DAHDI_IOMUX_WRITE;
    pub const IOMUX_WRITEEMPTY: i32 = a::DAHDI_IOMUX_WRITEEMPTY;
    pub const IOMUX_SIGEVENT: i32 = a::DAHDI_IOMUX_SIGEVENT;
    pub const IOMUX_NOWAIT: i32 = a::DAHDI_IOMUX_NOWAIT;

    pub const DIAL_OP_APPEND: i32 = a::DAHDI_DIAL_OP_APPEND;
    pub const DIAL_OP_REPLACE: i32 = a::DAHDI_DIAL_OP_REPLACE;
    pub const DIAL_OP_CANCEL: i32 = a::DAHDI_DIAL_OP_CANCEL;

    pub const MAINT_NONE: i32 = a::DAHDI_MAINT_NONE;
    pub const MAINT_LOCALLOOP: i32 = a::DAHDI_MAINT_LOCALLOOP;
    pub const MAINT_REMOTELOOP: i32 = a::DAHDI_MAINT_REMOTELOOP;
    pub const MAINT_LOOPUP: i32 = a::DAHDI_MAINT_LOOPUP;
    pub const MAINT_LOOPDOWN: i32 = a::DAHDI_MAINT_LOOPDOWN;
    pub const MAINT_RESET_COUNTERS: i32 = a::DAHDI_RESET_COUNTERS;

    pub const CONF_MODE_MASK: i32 = a::DAHDI_CONF_MODE_MASK;
    pub const CONF_MONITOR: i32 = a::DAHDI_CONF_MONITOR;
    pub const CONF_MONITORTX: i32 = a::DAHDI_CONF_MONITORTX;
    pub const CONF_MONITORBOTH: i32 = a::DAHDI_CONF_MONITORBOTH;

    pub const GET_PARAMS_RETURN_MASTER: i32 = a::DAHDI_GET_PARAMS_RETURN_MASTER;
    pub const DEFAULT_NUM_BUFS: usize = a::DAHDI_DEFAULT_NUM_BUFS as usize;
    pub const MAX_NUM_BUFS: usize = a::DAHDI_MAX_NUM_BUFS as usize;
    pub const MAX_BUF_SPACE: usize = a::DAHDI_MAX_BUF_SPACE as usize;
    pub const MIN_BLOCKSIZE: usize = 16;
    pub const MAX_BLOCKSIZE: usize = a::DAHDI_MAX_BLOCKSIZE as usize;
    pub const DEFAULT_BLOCKSIZE: usize = a::DAHDI_DEFAULT_BLOCKSIZE as usize;
    pub const TONE_ZONE_MAX: i32 = a::DAHDI_TONE_ZONE_MAX;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_decodes_to_itself_and_sizes_match_structs() {
        for (n, i) in TABLE {
            let n = u32::try_from(*n).unwrap();
            assert_eq!(decode(n), Some(*i));
            assert_eq!(number(*i), Some(n));
        }
        assert_eq!(size_of_request(0xc13a_da0a), SPANINFO_SIZE);
        assert_eq!(size_of_request(0xc088_da05), PARAMS_SIZE);
        assert_eq!(size_of_request(0xc204_da10), GAINS_SIZE);
        assert_eq!(size_of_request(0x8018_da1b), BUFINFO_SIZE);
        assert_eq!(size_of_request(0x80a0_da39), VERSION_SIZE);
        assert_eq!(size_of_request(0xc00c_da0d), CONFINFO_SIZE);
        assert_eq!(size_of_request(0x8018_da1d), DIALPARAMS_SIZE);
    }

    #[test]
    fn numbers_match_the_fact_sheet() {
        // A few values measured on this machine from DAHDI's header (../shared/dahdi-facts.md).
        for (ioctl, want) in [
            (Ioctl::Specify, 0x4004_da26u32),
            (Ioctl::SpanStat, 0xc13a_da0a),
            (Ioctl::GetParams, 0xc088_da05),
            (Ioctl::ChanConfig, 0x404c_da13),
            (Ioctl::SpanConfig, 0x4024_da12),
            (Ioctl::GetVersion, 0x80a0_da39),
            (Ioctl::IoMux, 0xc004_da09),
            (Ioctl::TimerPing, 0x0000_da34),
        ] {
            assert_eq!(number(ioctl), Some(want), "{ioctl:?}");
        }
        assert_eq!(SPANINFO_SIZE, 314);
        assert_eq!(spaninfo::SPANTYPE, 308);
        assert_eq!(params::CHAN_ALARMS, 132);
        assert_eq!(params::TIMING_COUNT, 11);
    }

    #[test]
    fn shared_nr_is_decoded_on_all_bits() {
        // RADIO_GETSTAT shares nr 57 with GETVERSION; RADIO_SETPARAM shares nr 58 with LOOPBACK.
        assert_eq!(decode(0x8008_da39), None);
        assert_eq!(decode(0x408c_da3a), None);
        assert_eq!(decode(0x80a0_da39), Some(Ioctl::GetVersion));
    }

    #[test]
    fn field_helpers_never_panic_on_short_buffers() {
        let mut short = [0u8; 3];
        put_i32(&mut short, 0, 7);
        assert_eq!(get_i32(&short, 0), 0);
        put_str(&mut short, 2, 40, "x");
        assert_eq!(get_str(&short, 1, 40), "");
        let mut buf = [0xffu8; 8];
        put_str(&mut buf, 0, 4, "abcdef");
        assert_eq!(&buf[..4], b"abc\0");
        assert_eq!(get_str(&buf, 0, 4), "abc");
    }
}

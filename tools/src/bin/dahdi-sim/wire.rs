//! The DAHDI ioctl ABI as the simulator sees it over FUSE: request numbers, the byte layouts of
//! the structs they carry (x86_64, from DAHDI's `user.h`) and the constants the model uses.
//!
//! FUSE hands the daemon an ioctl's argument as exactly `_IOC_SIZE` bytes, so structs are read
//! and written field by field at their C offsets; nothing here can panic on short input.

/// The ioctls the simulator understands, decoded from the full 32-bit request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ioctl {
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

/// Request number → ioctl. The numbers are the ones in `../shared/dahdi-facts.md`; the
/// hw-tests ABI probe checks them against DAHDI's own header.
const TABLE: &[(u32, Ioctl)] = &[
    (0x8004_da01, Ioctl::GetBlocksize),
    (0x4004_da01, Ioctl::SetBlocksize),
    (0x4004_da03, Ioctl::Flush),
    (0x0000_da04, Ioctl::Sync),
    (0xc088_da05, Ioctl::GetParams),
    (0x8088_da05, Ioctl::GetParamsV1),
    (0x4088_da05, Ioctl::SetParams),
    (0x4004_da07, Ioctl::Hook),
    (0x8004_da08, Ioctl::GetEvent),
    (0xc004_da09, Ioctl::IoMux),
    (0xc13a_da0a, Ioctl::SpanStat),
    (0x4008_da0b, Ioctl::Maint),
    (0xc00c_da0c, Ioctl::GetConf),
    (0xc00c_da0d, Ioctl::SetConf),
    (0xc204_da10, Ioctl::GetGains),
    (0x4204_da10, Ioctl::SetGains),
    (0x4024_da12, Ioctl::SpanConfig),
    (0x404c_da13, Ioctl::ChanConfig),
    (0x4004_da14, Ioctl::ConfMute),
    (0x8004_da31, Ioctl::GetConfMute),
    (0x4004_da15, Ioctl::SendTone),
    (0x8004_da16, Ioctl::GetToneZone),
    (0x4004_da16, Ioctl::SetToneZone),
    (0x4004_da18, Ioctl::DefaultZone),
    (0x4070_da19, Ioctl::LoadZone),
    (0x4004_da1a, Ioctl::FreeZone),
    (0x8018_da1b, Ioctl::GetBufInfo),
    (0x4018_da1b, Ioctl::SetBufInfo),
    (0x8018_da1d, Ioctl::GetDialParams),
    (0x4018_da1d, Ioctl::SetDialParams),
    (0x4104_da1f, Ioctl::Dial),
    (0x4004_da20, Ioctl::AudioMode),
    (0x4004_da21, Ioctl::EchoCancel),
    (0x4008_da21, Ioctl::EchoCancelParams),
    (0x8004_da22, Ioctl::ChanNo),
    (0x8004_da23, Ioctl::Dialing),
    (0x4004_da24, Ioctl::HdlcRawMode),
    (0x4004_da25, Ioctl::HdlcFcsMode),
    (0x4004_da26, Ioctl::Specify),
    (0x4004_da27, Ioctl::SetLaw),
    (0x4004_da28, Ioctl::SetLinear),
    (0x4040_da2a, Ioctl::SetCadence),
    (0x8004_da2b, Ioctl::GetRxBits),
    (0x4004_da2b, Ioctl::SetTxBits),
    (0x4004_da2f, Ioctl::TimerConfig),
    (0x4004_da30, Ioctl::TimerAck),
    (0x4004_da32, Ioctl::EchoTrain),
    (0x0000_da34, Ioctl::TimerPing),
    (0x0000_da35, Ioctl::TimerPong),
    (0xc010_da38, Ioctl::Indirect),
    (0x80a0_da39, Ioctl::GetVersion),
    (0x4004_da3a, Ioctl::Loopback),
    (0x4014_da3b, Ioctl::AttachEchocan),
    (0x4004_da5b, Ioctl::ToneDetect),
    (0x4004_da5c, Ioctl::SetPolarity),
    (0x4004_da5f, Ioctl::VmwiConfig),
    (0xc004_da5e, Ioctl::Vmwi),
    (0x4004_da63, Ioctl::Startup),
    (0x4004_da64, Ioctl::Shutdown),
    (0x4004_da65, Ioctl::HdlcRate),
    (0x4004_da66, Ioctl::EchoCancelFaxMode),
    (0x4004_da69, Ioctl::BufferEvents),
];

/// Decodes a request number (on all 32 bits: some DAHDI ioctls share `nr`).
pub(crate) fn decode(cmd: u32) -> Option<Ioctl> {
    TABLE.iter().find(|(n, _)| *n == cmd).map(|(_, i)| *i)
}

/// The request number of an ioctl (for tests and the control status).
#[cfg(test)]
pub(crate) fn number(ioctl: Ioctl) -> Option<u32> {
    TABLE.iter().find(|(_, i)| *i == ioctl).map(|(n, _)| *n)
}

/// Every request number in the table (for tests).
#[cfg(test)]
pub(crate) fn tests_all_numbers() -> Vec<u32> {
    TABLE.iter().map(|(n, _)| *n).collect()
}

/// The `_IOC_SIZE` field of a request number.
pub(crate) fn size_of_request(cmd: u32) -> usize {
    ((cmd >> 16) & 0x3fff) as usize
}

// Struct sizes.
pub(crate) const PARAMS_SIZE: usize = 136;
pub(crate) const SPANINFO_SIZE: usize = 314;
pub(crate) const GAINS_SIZE: usize = 516;
pub(crate) const BUFINFO_SIZE: usize = 24;
pub(crate) const VERSION_SIZE: usize = 160;
pub(crate) const CONFINFO_SIZE: usize = 12;
pub(crate) const DIALPARAMS_SIZE: usize = 24;

/// Reads a native-endian `int` at `off`; missing bytes read as 0.
pub(crate) fn get_i32(buf: &[u8], off: usize) -> i32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(off..off + 4) {
        b.copy_from_slice(src);
    }
    i32::from_ne_bytes(b)
}

/// Writes a native-endian `int` at `off` if it fits.
pub(crate) fn put_i32(buf: &mut [u8], off: usize, v: i32) {
    if let Some(dst) = buf.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
}

/// Writes a NUL-terminated C string into a `char[len]` field at `off`, truncating.
pub(crate) fn put_str(buf: &mut [u8], off: usize, len: usize, s: &str) {
    if let Some(dst) = buf.get_mut(off..off + len) {
        dst.fill(0);
        let n = s.len().min(len.saturating_sub(1));
        if let (Some(d), Some(src)) = (dst.get_mut(..n), s.as_bytes().get(..n)) {
            d.copy_from_slice(src);
        }
    }
}

/// Reads a `char[len]` field at `off` up to its first NUL (lossy UTF-8).
pub(crate) fn get_str(buf: &[u8], off: usize, len: usize) -> String {
    let field = buf.get(off..off + len).unwrap_or(&[]);
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or(&[])).into_owned()
}

/// Field offsets of `struct dahdi_params`.
pub(crate) mod params {
    pub(crate) const CHANNO: usize = 0;
    pub(crate) const SPANNO: usize = 4;
    pub(crate) const CHANPOS: usize = 8;
    pub(crate) const SIGTYPE: usize = 12;
    pub(crate) const SIGCAP: usize = 16;
    pub(crate) const RXISOFFHOOK: usize = 20;
    pub(crate) const RXBITS: usize = 24;
    pub(crate) const TXBITS: usize = 28;
    pub(crate) const TXHOOKSIG: usize = 32;
    pub(crate) const RXHOOKSIG: usize = 36;
    pub(crate) const CURLAW: usize = 40;
    pub(crate) const IDLEBITS: usize = 44;
    pub(crate) const NAME: usize = 48;
    pub(crate) const NAME_LEN: usize = 40;
    /// prewinktime .. pulseaftertime: eleven ints.
    pub(crate) const TIMING_FIRST: usize = 88;
    pub(crate) const TIMING_COUNT: usize = 11;
    pub(crate) const CHAN_ALARMS: usize = 132;
}

/// Field offsets of the packed `struct dahdi_spaninfo` (314 bytes).
pub(crate) mod spaninfo {
    pub(crate) const SPANNO: usize = 0;
    pub(crate) const NAME: usize = 4;
    pub(crate) const DESC: usize = 24;
    pub(crate) const ALARMS: usize = 64;
    pub(crate) const TXLEVEL: usize = 68;
    pub(crate) const RXLEVEL: usize = 72;
    pub(crate) const BPVCOUNT: usize = 76;
    pub(crate) const CRC4COUNT: usize = 80;
    pub(crate) const EBITCOUNT: usize = 84;
    pub(crate) const FASCOUNT: usize = 88;
    pub(crate) const FECOUNT: usize = 92;
    pub(crate) const CVCOUNT: usize = 96;
    pub(crate) const BECOUNT: usize = 100;
    pub(crate) const PRBS: usize = 104;
    pub(crate) const ERRSEC: usize = 108;
    pub(crate) const IRQMISSES: usize = 112;
    pub(crate) const SYNCSRC: usize = 116;
    pub(crate) const NUMCHANS: usize = 120;
    pub(crate) const TOTALCHANS: usize = 124;
    pub(crate) const TOTALSPANS: usize = 128;
    pub(crate) const LBO: usize = 132;
    pub(crate) const LINECONFIG: usize = 136;
    pub(crate) const LBONAME: usize = 140;
    pub(crate) const LOCATION: usize = 180;
    pub(crate) const MANUFACTURER: usize = 220;
    pub(crate) const DEVICETYPE: usize = 260;
    pub(crate) const IRQ: usize = 300;
    pub(crate) const LINECOMPAT: usize = 304;
    pub(crate) const SPANTYPE: usize = 308;
}

/// Field offsets of `struct dahdi_lineconfig` (SPANCONFIG).
pub(crate) mod lineconfig {
    pub(crate) const SPAN: usize = 0;
    pub(crate) const NAME: usize = 4;
    pub(crate) const LBO: usize = 24;
    pub(crate) const LINECONFIG: usize = 28;
    pub(crate) const SYNC: usize = 32;
}

/// Field offsets of `struct dahdi_chanconfig` (CHANCONFIG).
pub(crate) mod chanconfig {
    pub(crate) const CHAN: usize = 0;
    pub(crate) const NAME: usize = 4;
    pub(crate) const SIGTYPE: usize = 44;
    pub(crate) const DEFLAW: usize = 48;
    pub(crate) const MASTER: usize = 52;
    pub(crate) const IDLEBITS: usize = 56;
}

/// Field offsets of `struct dahdi_bufferinfo`.
pub(crate) mod bufinfo {
    pub(crate) const TXBUFPOLICY: usize = 0;
    pub(crate) const RXBUFPOLICY: usize = 4;
    pub(crate) const NUMBUFS: usize = 8;
    pub(crate) const BUFSIZE: usize = 12;
    pub(crate) const READBUFS: usize = 16;
    pub(crate) const WRITEBUFS: usize = 20;
}

/// DAHDI constants the model uses (values from `user.h`).
pub(crate) mod consts {
    pub(crate) const ELAST: i32 = 500;

    pub(crate) const EVENT_ONHOOK: i32 = 1;
    pub(crate) const EVENT_RINGOFFHOOK: i32 = 2;
    pub(crate) const EVENT_WINKFLASH: i32 = 3;
    pub(crate) const EVENT_ALARM: i32 = 4;
    pub(crate) const EVENT_NOALARM: i32 = 5;
    pub(crate) const EVENT_OVERRUN: i32 = 7;
    pub(crate) const EVENT_BADFCS: i32 = 8;
    pub(crate) const EVENT_DIALCOMPLETE: i32 = 9;
    pub(crate) const EVENT_RINGERON: i32 = 10;
    pub(crate) const EVENT_RINGEROFF: i32 = 11;
    pub(crate) const EVENT_HOOKCOMPLETE: i32 = 12;
    pub(crate) const EVENT_BITSCHANGED: i32 = 13;
    pub(crate) const EVENT_TIMER_EXPIRED: i32 = 15;
    pub(crate) const EVENT_TIMER_PING: i32 = 16;
    pub(crate) const EVENT_POLARITY: i32 = 17;
    pub(crate) const EVENT_RINGBEGIN: i32 = 18;
    pub(crate) const EVENT_READ_OVERRUN: i32 = 29;
    pub(crate) const EVENT_WRITE_UNDERRUN: i32 = 30;
    pub(crate) const MAX_EVENTS: usize = 64;

    pub(crate) const ONHOOK: i32 = 0;
    pub(crate) const OFFHOOK: i32 = 1;
    pub(crate) const WINK: i32 = 2;
    pub(crate) const FLASH: i32 = 3;
    pub(crate) const START: i32 = 4;
    pub(crate) const RING: i32 = 5;
    pub(crate) const RINGOFF: i32 = 6;

    pub(crate) const SIG_CLEAR: u32 = 0x80;
    pub(crate) const SIG_HDLCRAW: u32 = 0x180;
    pub(crate) const SIG_HDLCFCS: u32 = 0x380;
    pub(crate) const SIG_HDLCNET: u32 = 0x780;
    pub(crate) const SIG_HARDHDLC: u32 = 0x80080;
    pub(crate) const SIG_MTP2: u32 = 0x100380;
    pub(crate) const SIG_SLAVE: u32 = 0x800;
    /// Every signalling type a simulated span channel accepts.
    pub(crate) const SIGCAP_SPAN: u32 = 0x2001
        | 0x2002
        | 0x2004
        | 0x1008
        | 0x1010
        | 0x1020
        | 0x40
        | SIG_CLEAR
        | SIG_HDLCRAW
        | SIG_HDLCFCS
        | SIG_HDLCNET
        | SIG_SLAVE
        | 0x4000
        | 0x8000
        | 0x10080
        | 0x20000
        | 0x50000
        | SIG_HARDHDLC
        | SIG_MTP2;

    pub(crate) const LAW_DEFAULT: i32 = 0;
    pub(crate) const LAW_MULAW: i32 = 1;
    pub(crate) const LAW_ALAW: i32 = 2;

    pub(crate) const ALARM_RECOVER: i32 = 1;
    pub(crate) const ALARM_LOOPBACK: i32 = 2;
    pub(crate) const ALARM_YELLOW: i32 = 4;
    pub(crate) const ALARM_RED: i32 = 8;
    pub(crate) const ALARM_BLUE: i32 = 16;
    pub(crate) const ALARM_NOTOPEN: i32 = 32;
    pub(crate) const ALARM_LOS: i32 = 256;
    pub(crate) const ALARM_LFA: i32 = 512;
    pub(crate) const ALARM_LMFA: i32 = 1024;

    pub(crate) const CONFIG_D4: i32 = 0x10;
    pub(crate) const CONFIG_ESF: i32 = 0x20;
    pub(crate) const CONFIG_AMI: i32 = 0x40;
    pub(crate) const CONFIG_B8ZS: i32 = 0x80;
    pub(crate) const CONFIG_CCS: i32 = 0x100;
    pub(crate) const CONFIG_HDB3: i32 = 0x200;
    pub(crate) const CONFIG_CRC4: i32 = 0x400;

    pub(crate) const POLICY_IMMEDIATE: i32 = 0;
    pub(crate) const POLICY_WHEN_FULL: i32 = 1;
    pub(crate) const POLICY_HALF_FULL: i32 = 2;

    pub(crate) const FLUSH_READ: i32 = 1;
    pub(crate) const FLUSH_WRITE: i32 = 2;
    pub(crate) const FLUSH_EVENT: i32 = 4;

    pub(crate) const IOMUX_READ: i32 = 1;
    pub(crate) const IOMUX_WRITE: i32 = 2;
    pub(crate) const IOMUX_WRITEEMPTY: i32 = 4;
    pub(crate) const IOMUX_SIGEVENT: i32 = 8;
    pub(crate) const IOMUX_NOWAIT: i32 = 0x100;

    pub(crate) const DIAL_OP_APPEND: i32 = 1;
    pub(crate) const DIAL_OP_REPLACE: i32 = 2;
    pub(crate) const DIAL_OP_CANCEL: i32 = 3;

    pub(crate) const MAINT_NONE: i32 = 0;
    pub(crate) const MAINT_LOCALLOOP: i32 = 1;
    pub(crate) const MAINT_REMOTELOOP: i32 = 2;
    pub(crate) const MAINT_LOOPUP: i32 = 3;
    pub(crate) const MAINT_LOOPDOWN: i32 = 4;
    pub(crate) const MAINT_RESET_COUNTERS: i32 = 14;

    pub(crate) const CONF_MONITOR: i32 = 1;
    pub(crate) const CONF_MONITORTX: i32 = 2;
    pub(crate) const CONF_MONITORBOTH: i32 = 3;

    pub(crate) const GET_PARAMS_RETURN_MASTER: i32 = 0x4000_0000;
    pub(crate) const DEFAULT_NUM_BUFS: usize = 2;
    pub(crate) const MAX_NUM_BUFS: usize = 32;
    pub(crate) const MAX_BUF_SPACE: usize = 32768;
    pub(crate) const MIN_BLOCKSIZE: usize = 16;
    pub(crate) const MAX_BLOCKSIZE: usize = 8192;
    pub(crate) const TONE_ZONE_MAX: i32 = 128;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_decodes_to_itself_and_sizes_match_structs() {
        for (n, i) in TABLE {
            assert_eq!(decode(*n), Some(*i));
            assert_eq!(number(*i), Some(*n));
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

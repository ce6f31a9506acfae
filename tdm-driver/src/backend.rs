//! The seam between the safe API and what serves DAHDI's semantics: the [`Backend`] trait, and
//! [`DeviceRoot`], its implementation over device files (real `/dev/dahdi` or `dahdi-sim`).
//!
//! A backend answers with `io::Error`s carrying the errno DAHDI would return (EBUSY, ENXIO,
//! 500...), so one error mapping in the safe API serves every backend.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::abi;

/// A device node of the DAHDI tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// `ctl`: span and channel configuration.
    Ctl,
    /// `channel`, bound to a channel number with DAHDI_SPECIFY right after open.
    Channel(i32),
    /// `chan/SSS/CCC`: the channel at position `chan` of span `span`.
    SpanChannel {
        /// Span number (1-based).
        span: u32,
        /// Channel position within the span (1-based).
        chan: u32,
    },
    /// `pseudo`: every open allocates a new pseudo channel.
    Pseudo,
    /// `timer`: a private timer per open.
    Timer,
}

impl Node {
    /// The node's path relative to the device root (`chan/001/005`).
    pub fn relative_path(&self) -> PathBuf {
        match self {
            Node::Ctl => PathBuf::from("ctl"),
            Node::Channel(_) => PathBuf::from("channel"),
            Node::SpanChannel { span, chan } => PathBuf::from(format!("chan/{span:03}/{chan:03}")),
            Node::Pseudo => PathBuf::from("pseudo"),
            Node::Timer => PathBuf::from("timer"),
        }
    }

    /// What the node is, for messages (`channel 5`, `span 1 channel 16`).
    pub fn describe(&self) -> String {
        match self {
            Node::Ctl => "the control device".to_owned(),
            Node::Channel(n) => format!("channel {n}"),
            Node::SpanChannel { span, chan } => format!("span {span} channel {chan}"),
            Node::Pseudo => "a pseudo channel".to_owned(),
            Node::Timer => "a timer".to_owned(),
        }
    }
}

/// One typed ioctl-level operation, with its argument (and where the reply goes).
///
/// Each variant is exactly one DAHDI request; [`Op::request`] gives its number.
#[derive(Debug)]
#[non_exhaustive]
pub enum Op<'a> {
    /// DAHDI_CHANNO: the channel number of this fd.
    ChanNo(&'a mut i32),
    /// DAHDI_GET_BLOCKSIZE.
    GetBlockSize(&'a mut i32),
    /// DAHDI_SET_BLOCKSIZE.
    SetBlockSize(i32),
    /// DAHDI_GET_BUFINFO.
    GetBufInfo(&'a mut abi::BufferInfo),
    /// DAHDI_SET_BUFINFO.
    SetBufInfo(&'a abi::BufferInfo),
    /// DAHDI_SETLAW.
    SetLaw(i32),
    /// DAHDI_SETLINEAR.
    SetLinear(i32),
    /// DAHDI_AUDIOMODE.
    AudioMode(i32),
    /// DAHDI_HDLCFCSMODE.
    HdlcFcsMode(i32),
    /// DAHDI_HDLC_RATE.
    HdlcRate(i32),
    /// DAHDI_HOOK.
    Hook(i32),
    /// DAHDI_GETEVENT.
    GetEvent(&'a mut i32),
    /// DAHDI_IOMUX.
    IoMux(&'a mut i32),
    /// DAHDI_DIAL.
    Dial(&'a abi::DialOperation),
    /// DAHDI_GETGAINS.
    GetGains(&'a mut abi::Gains),
    /// DAHDI_SETGAINS.
    SetGains(&'a abi::Gains),
    /// DAHDI_FLUSH.
    Flush(i32),
    /// DAHDI_GET_PARAMS.
    GetParams(&'a mut abi::Params),
    /// DAHDI_SET_PARAMS.
    SetParams(&'a abi::Params),
    /// DAHDI_GETCONF.
    GetConf(&'a mut abi::ConfInfo),
    /// DAHDI_SETCONF.
    SetConf(&'a mut abi::ConfInfo),
    /// DAHDI_BUFFER_EVENTS.
    BufferEvents(i32),
    /// DAHDI_SPANSTAT.
    SpanStat(&'a mut abi::SpanInfo),
    /// DAHDI_SPANCONFIG.
    SpanConfig(&'a abi::LineConfig),
    /// DAHDI_CHANCONFIG.
    ChanConfig(&'a abi::ChanConfig),
    /// DAHDI_STARTUP.
    Startup(i32),
    /// DAHDI_SHUTDOWN.
    Shutdown(i32),
    /// DAHDI_GETVERSION.
    GetVersion(&'a mut abi::VersionInfo),
    /// DAHDI_MAINT.
    Maint(&'a abi::MaintInfo),
    /// DAHDI_ATTACH_ECHOCAN.
    AttachEchoCan(&'a abi::AttachEchoCan),
    /// DAHDI_DEFAULTZONE.
    DefaultZone(i32),
    /// DAHDI_TIMERCONFIG.
    TimerConfig(i32),
    /// DAHDI_TIMERACK.
    TimerAck(i32),
    /// DAHDI_TIMERPING.
    TimerPing,
    /// DAHDI_TIMERPONG.
    TimerPong,
    /// DAHDI_GETRXBITS: the CAS bits received (ABCD in the low 4 bits).
    GetRxBits(&'a mut i32),
    /// DAHDI_SETTXBITS: the CAS bits to send (CAS signalling).
    SetTxBits(i32),
    /// DAHDI_SETPOLARITY: 1 reverses the battery (FXO-signalled channels).
    SetPolarity(i32),
    /// DAHDI_SETCADENCE: the ring cadence (ms on/off pairs) of an FXO-signalled channel.
    SetCadence(&'a abi::RingCadence),
}

impl Op<'_> {
    /// The request number this operation issues.
    pub fn request(&self) -> u64 {
        match self {
            Op::ChanNo(_) => abi::DAHDI_CHANNO,
            Op::GetBlockSize(_) => abi::DAHDI_GET_BLOCKSIZE,
            Op::SetBlockSize(_) => abi::DAHDI_SET_BLOCKSIZE,
            Op::GetBufInfo(_) => abi::DAHDI_GET_BUFINFO,
            Op::SetBufInfo(_) => abi::DAHDI_SET_BUFINFO,
            Op::SetLaw(_) => abi::DAHDI_SETLAW,
            Op::SetLinear(_) => abi::DAHDI_SETLINEAR,
            Op::AudioMode(_) => abi::DAHDI_AUDIOMODE,
            Op::HdlcFcsMode(_) => abi::DAHDI_HDLCFCSMODE,
            Op::HdlcRate(_) => abi::DAHDI_HDLC_RATE,
            Op::Hook(_) => abi::DAHDI_HOOK,
            Op::GetEvent(_) => abi::DAHDI_GETEVENT,
            Op::IoMux(_) => abi::DAHDI_IOMUX,
            Op::Dial(_) => abi::DAHDI_DIAL,
            Op::GetGains(_) => abi::DAHDI_GETGAINS,
            Op::SetGains(_) => abi::DAHDI_SETGAINS,
            Op::Flush(_) => abi::DAHDI_FLUSH,
            Op::GetParams(_) => abi::DAHDI_GET_PARAMS,
            Op::SetParams(_) => abi::DAHDI_SET_PARAMS,
            Op::GetConf(_) => abi::DAHDI_GETCONF,
            Op::SetConf(_) => abi::DAHDI_SETCONF,
            Op::BufferEvents(_) => abi::DAHDI_BUFFER_EVENTS,
            Op::SpanStat(_) => abi::DAHDI_SPANSTAT,
            Op::SpanConfig(_) => abi::DAHDI_SPANCONFIG,
            Op::ChanConfig(_) => abi::DAHDI_CHANCONFIG,
            Op::Startup(_) => abi::DAHDI_STARTUP,
            Op::Shutdown(_) => abi::DAHDI_SHUTDOWN,
            Op::GetVersion(_) => abi::DAHDI_GETVERSION,
            Op::Maint(_) => abi::DAHDI_MAINT,
            Op::AttachEchoCan(_) => abi::DAHDI_ATTACH_ECHOCAN,
            Op::DefaultZone(_) => abi::DAHDI_DEFAULTZONE,
            Op::TimerConfig(_) => abi::DAHDI_TIMERCONFIG,
            Op::TimerAck(_) => abi::DAHDI_TIMERACK,
            Op::TimerPing => abi::DAHDI_TIMERPING,
            Op::TimerPong => abi::DAHDI_TIMERPONG,
            Op::GetRxBits(_) => abi::DAHDI_GETRXBITS,
            Op::SetTxBits(_) => abi::DAHDI_SETTXBITS,
            Op::SetPolarity(_) => abi::DAHDI_SETPOLARITY,
            Op::SetCadence(_) => abi::DAHDI_SETCADENCE,
        }
    }

    /// The request's C name (`DAHDI_SPECIFY`), for messages.
    pub fn name(&self) -> &'static str {
        abi::request_name(self.request()).unwrap_or("DAHDI ioctl")
    }
}

/// What serves DAHDI's device semantics: device files, or an in-process simulation.
///
/// Errors are `io::Error`s with the errno DAHDI returns (`raw_os_error()`); errno 500 is
/// DAHDI's "event pending".
pub trait Backend: Send + Sync + fmt::Debug {
    /// An open node (an fd, or a simulated handle). Dropping it closes the node.
    type Handle: Send + Sync + fmt::Debug;

    /// Opens `node` (for [`Node::Channel`], open `channel` and bind it with DAHDI_SPECIFY).
    /// `nonblocking` makes read/write return `WouldBlock` instead of waiting.
    fn open(&self, node: Node, nonblocking: bool) -> io::Result<Self::Handle>;

    /// Reads one block (or one HDLC frame) into `buf`; returns its length.
    fn read(&self, handle: &Self::Handle, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes one block (or one HDLC frame); returns how many bytes were taken.
    fn write(&self, handle: &Self::Handle, buf: &[u8]) -> io::Result<usize>;

    /// Issues one ioctl-level operation.
    fn ioctl(&self, handle: &Self::Handle, op: Op<'_>) -> io::Result<()>;

    /// Where `node` lives, for error messages.
    fn path_of(&self, node: Node) -> PathBuf;
}

/// Device files under a root directory: `/dev/dahdi` by default, or wherever `dahdi-sim`
/// is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRoot {
    root: PathBuf,
}

/// The default device root.
pub const DEFAULT_DEVICE_ROOT: &str = "/dev/dahdi";

impl Default for DeviceRoot {
    fn default() -> Self {
        DeviceRoot::new(DEFAULT_DEVICE_ROOT)
    }
}

impl DeviceRoot {
    /// Device files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DeviceRoot { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// An open DAHDI device file.
#[derive(Debug)]
pub struct DeviceHandle {
    file: File,
}

impl AsFd for DeviceHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Backend for DeviceRoot {
    type Handle = DeviceHandle;

    fn open(&self, node: Node, nonblocking: bool) -> io::Result<DeviceHandle> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if nonblocking {
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options.open(self.path_of(node))?;
        if let Node::Channel(channo) = node {
            abi::specify(file.as_fd(), &channo).map_err(errno)?;
        }
        Ok(DeviceHandle { file })
    }

    fn read(&self, handle: &DeviceHandle, buf: &mut [u8]) -> io::Result<usize> {
        (&handle.file).read(buf)
    }

    fn write(&self, handle: &DeviceHandle, buf: &[u8]) -> io::Result<usize> {
        (&handle.file).write(buf)
    }

    fn ioctl(&self, handle: &DeviceHandle, op: Op<'_>) -> io::Result<()> {
        let fd = handle.file.as_fd();
        let result = match op {
            Op::ChanNo(v) => abi::channo(fd, v),
            Op::GetBlockSize(v) => abi::get_blocksize(fd, v),
            Op::SetBlockSize(v) => abi::set_blocksize(fd, &v),
            Op::GetBufInfo(v) => abi::get_bufinfo(fd, v),
            Op::SetBufInfo(v) => abi::set_bufinfo(fd, v),
            Op::SetLaw(v) => abi::setlaw(fd, &v),
            Op::SetLinear(v) => abi::setlinear(fd, &v),
            Op::AudioMode(v) => abi::audiomode(fd, &v),
            Op::HdlcFcsMode(v) => abi::hdlcfcsmode(fd, &v),
            Op::HdlcRate(v) => abi::hdlc_rate(fd, &v),
            Op::Hook(v) => abi::hook(fd, &v),
            Op::GetEvent(v) => abi::getevent(fd, v),
            Op::IoMux(v) => abi::iomux(fd, v),
            Op::Dial(v) => abi::dial(fd, v),
            Op::GetGains(v) => abi::getgains(fd, v),
            Op::SetGains(v) => abi::setgains(fd, v),
            Op::Flush(v) => abi::flush(fd, &v),
            Op::GetParams(v) => abi::get_params(fd, v),
            Op::SetParams(v) => abi::set_params(fd, v),
            Op::GetConf(v) => abi::getconf(fd, v),
            Op::SetConf(v) => abi::setconf(fd, v),
            Op::BufferEvents(v) => abi::buffer_events(fd, &v),
            Op::SpanStat(v) => abi::spanstat(fd, v),
            Op::SpanConfig(v) => abi::spanconfig(fd, v),
            Op::ChanConfig(v) => abi::chanconfig(fd, v),
            Op::Startup(v) => abi::startup(fd, &v),
            Op::Shutdown(v) => abi::shutdown(fd, &v),
            Op::GetVersion(v) => abi::getversion(fd, v),
            Op::Maint(v) => abi::maint(fd, v),
            Op::AttachEchoCan(v) => abi::attach_echocan(fd, v),
            Op::DefaultZone(v) => abi::defaultzone(fd, &v),
            Op::TimerConfig(v) => abi::timerconfig(fd, &v),
            Op::TimerAck(v) => abi::timerack(fd, &v),
            Op::TimerPing => abi::timerping(fd),
            Op::TimerPong => abi::timerpong(fd),
            Op::GetRxBits(v) => abi::getrxbits(fd, v),
            Op::SetTxBits(v) => abi::settxbits(fd, &v),
            Op::SetPolarity(v) => abi::setpolarity(fd, &v),
            Op::SetCadence(v) => abi::setcadence(fd, v),
        };
        result.map(drop).map_err(errno)
    }

    fn path_of(&self, node: Node) -> PathBuf {
        self.root.join(node.relative_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_map_to_dahdi_paths() {
        let root = DeviceRoot::new("/x");
        assert_eq!(root.path_of(Node::Ctl), Path::new("/x/ctl"));
        assert_eq!(root.path_of(Node::Channel(7)), Path::new("/x/channel"));
        assert_eq!(
            root.path_of(Node::SpanChannel { span: 2, chan: 16 }),
            Path::new("/x/chan/002/016")
        );
        assert_eq!(root.path_of(Node::Pseudo), Path::new("/x/pseudo"));
        assert_eq!(root.path_of(Node::Timer), Path::new("/x/timer"));
        assert_eq!(DeviceRoot::default().root(), Path::new("/dev/dahdi"));
    }

    #[test]
    fn every_op_names_its_request() {
        let mut i = 0;
        let mut info = abi::SpanInfo::default();
        assert_eq!(Op::SpanStat(&mut info).name(), "DAHDI_SPANSTAT");
        assert_eq!(Op::GetEvent(&mut i).name(), "DAHDI_GETEVENT");
        assert_eq!(Op::TimerPing.name(), "DAHDI_TIMERPING");
        assert_eq!(Op::HdlcRate(56).request(), 0x4004_da65);
    }
}

//! Raw DAHDI syscalls for the tests: open a device node, issue fixed-size ioctls through
//! `tdm_driver::abi`'s safe wrappers, read and write. Struct replies are returned as the bytes of
//! their C layout so a test asserts on exactly what the kernel interface carries, at offsets
//! written out here independently of the driver's structs.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libc::c_int;
use tdm_driver::abi;

/// `struct dahdi_params` is 136 bytes.
pub const PARAMS_SIZE: usize = 136;
/// `struct dahdi_spaninfo` is packed, 314 bytes.
pub const SPANINFO_SIZE: usize = 314;

/// Offsets of the fields of `struct dahdi_spaninfo` the tests read.
pub mod spaninfo {
    /// `int spanno`
    pub const SPANNO: usize = 0;
    /// `char name[20]`
    pub const NAME: usize = 4;
    /// `int alarms`
    pub const ALARMS: usize = 64;
    /// `int numchans`
    pub const NUMCHANS: usize = 120;
    /// `int totalchans`
    pub const TOTALCHANS: usize = 124;
    /// `int lineconfig`
    pub const LINECONFIG: usize = 136;
    /// `int syncsrc`
    pub const SYNCSRC: usize = 116;
    /// `char spantype[6]`
    pub const SPANTYPE: usize = 308;
}

/// Offsets of the fields of `struct dahdi_params` the tests read.
pub mod params {
    /// `int channo`
    pub const CHANNO: usize = 0;
    /// `int spanno`
    pub const SPANNO: usize = 4;
    /// `int chanpos`
    pub const CHANPOS: usize = 8;
    /// `int sigtype`
    pub const SIGTYPE: usize = 12;
    /// `int rxisoffhook`
    pub const RXISOFFHOOK: usize = 20;
    /// `int curlaw`
    pub const CURLAW: usize = 40;
    /// `char name[40]`
    pub const NAME: usize = 48;
    /// `__u32 chan_alarms`
    pub const CHAN_ALARMS: usize = 132;
}

/// Reads a native-endian `int` field.
pub fn field_i32(buf: &[u8], off: usize) -> i32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(off..off + 4) {
        b.copy_from_slice(src);
    }
    i32::from_ne_bytes(b)
}

/// Reads a NUL-terminated `char[len]` field.
pub fn field_str(buf: &[u8], off: usize, len: usize) -> String {
    let field = buf.get(off..off + len).unwrap_or(&[]);
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn put_i32(buf: &mut [u8], off: usize, v: i32) {
    if let Some(dst) = buf.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
}

fn put_bytes(buf: &mut [u8], off: usize, src: &[u8]) {
    if let Some(dst) = buf.get_mut(off..off + src.len()) {
        dst.copy_from_slice(src);
    }
}

/// The C bytes of a `dahdi_spaninfo`, laid out at the offsets of `spaninfo` (only the fields
/// the tests read; the rest stay zero).
fn as_bytes_spaninfo(info: &abi::SpanInfo) -> [u8; SPANINFO_SIZE] {
    // Packed: copy every field out before use.
    let (spanno, name, alarms, syncsrc) = (info.spanno, info.name, info.alarms, info.syncsrc);
    let (numchans, totalchans, lineconfig, spantype) = (
        info.numchans,
        info.totalchans,
        info.lineconfig,
        info.spantype,
    );
    let mut b = [0u8; SPANINFO_SIZE];
    put_i32(&mut b, spaninfo::SPANNO, spanno);
    put_bytes(&mut b, spaninfo::NAME, &name);
    put_i32(&mut b, spaninfo::ALARMS, alarms);
    put_i32(&mut b, spaninfo::SYNCSRC, syncsrc);
    put_i32(&mut b, spaninfo::NUMCHANS, numchans);
    put_i32(&mut b, spaninfo::TOTALCHANS, totalchans);
    put_i32(&mut b, spaninfo::LINECONFIG, lineconfig);
    put_bytes(&mut b, spaninfo::SPANTYPE, &spantype);
    b
}

/// The C bytes of a `dahdi_params` (fields the tests read).
fn as_bytes_params(p: &abi::Params) -> [u8; PARAMS_SIZE] {
    let mut b = [0u8; PARAMS_SIZE];
    put_i32(&mut b, params::CHANNO, p.channo);
    put_i32(&mut b, params::SPANNO, p.spanno);
    put_i32(&mut b, params::CHANPOS, p.chanpos);
    put_i32(&mut b, params::SIGTYPE, p.sigtype);
    put_i32(&mut b, params::RXISOFFHOOK, p.rxisoffhook);
    put_i32(&mut b, params::CURLAW, p.curlaw);
    put_bytes(&mut b, params::NAME, &p.name);
    put_i32(&mut b, params::CHAN_ALARMS, p.chan_alarms as i32);
    b
}

fn check(r: nix::Result<c_int>) -> io::Result<()> {
    r.map(|_| ()).map_err(io::Error::from)
}

/// An open DAHDI device file (ctl, channel, pseudo, timer or chan/SSS/CCC).
#[derive(Debug)]
pub struct Dev {
    file: File,
}

impl AsFd for Dev {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Dev {
    /// Opens `path` read-write (optionally non-blocking).
    pub fn open(path: &Path, nonblocking: bool) -> io::Result<Dev> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if nonblocking {
            o.custom_flags(libc::O_NONBLOCK);
        }
        Ok(Dev {
            file: o.open(path)?,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn int_w(&self, f: fn(BorrowedFd<'_>, &c_int) -> nix::Result<c_int>, v: i32) -> io::Result<()> {
        check(f(self.fd(), &v))
    }

    /// DAHDI_SPECIFY: binds a `channel` fd to a channel number.
    pub fn specify(&self, channo: i32) -> io::Result<()> {
        self.int_w(abi::specify, channo)
    }
    /// DAHDI_SET_BLOCKSIZE.
    pub fn set_blocksize(&self, size: i32) -> io::Result<()> {
        self.int_w(abi::set_blocksize, size)
    }
    /// DAHDI_FLUSH.
    pub fn flush(&self, what: i32) -> io::Result<()> {
        self.int_w(abi::flush, what)
    }
    /// DAHDI_HOOK.
    pub fn hook(&self, hook: i32) -> io::Result<()> {
        self.int_w(abi::hook, hook)
    }
    /// DAHDI_HDLCRAWMODE.
    pub fn hdlc_raw_mode(&self, on: bool) -> io::Result<()> {
        self.int_w(abi::hdlcrawmode, i32::from(on))
    }
    /// DAHDI_HDLCFCSMODE.
    pub fn hdlc_fcs_mode(&self, on: bool) -> io::Result<()> {
        self.int_w(abi::hdlcfcsmode, i32::from(on))
    }
    /// DAHDI_AUDIOMODE.
    pub fn audio_mode(&self, on: bool) -> io::Result<()> {
        self.int_w(abi::audiomode, i32::from(on))
    }
    /// DAHDI_SETLINEAR.
    pub fn set_linear(&self, on: bool) -> io::Result<()> {
        self.int_w(abi::setlinear, i32::from(on))
    }
    /// DAHDI_TIMERCONFIG (period in samples).
    pub fn timer_config(&self, samples: i32) -> io::Result<()> {
        self.int_w(abi::timerconfig, samples)
    }
    /// DAHDI_TIMERACK.
    pub fn timer_ack(&self, n: i32) -> io::Result<()> {
        self.int_w(abi::timerack, n)
    }
    /// DAHDI_STARTUP.
    pub fn startup(&self, span: i32) -> io::Result<()> {
        self.int_w(abi::startup, span)
    }

    fn int_r(&self, f: fn(BorrowedFd<'_>, &mut c_int) -> nix::Result<c_int>) -> io::Result<i32> {
        let mut v: c_int = 0;
        check(f(self.fd(), &mut v))?;
        Ok(v)
    }

    /// DAHDI_GETEVENT: the next event, 0 when none.
    pub fn get_event(&self) -> io::Result<i32> {
        self.int_r(abi::getevent)
    }
    /// DAHDI_GET_BLOCKSIZE.
    pub fn blocksize(&self) -> io::Result<i32> {
        self.int_r(abi::get_blocksize)
    }
    /// DAHDI_CHANNO.
    pub fn channo(&self) -> io::Result<i32> {
        self.int_r(abi::channo)
    }
    /// DAHDI_RADIO_GETSTAT: shares nr 57 with GETVERSION but not its size, so a device that
    /// decodes on all 32 bits (as DAHDI does) must not take it for GETVERSION. The simulator
    /// knows no radio ioctls: expected ENOTTY.
    pub fn unknown_ioctl(&self) -> io::Result<i32> {
        let mut stat = abi::RadioStat::default();
        check(abi::radio_getstat(self.fd(), &mut stat))?;
        Ok(0)
    }

    /// DAHDI_IOMUX: waits for one of `mask`; returns the satisfied mask.
    pub fn iomux(&self, mask: i32) -> io::Result<i32> {
        let mut v: c_int = mask;
        check(abi::iomux(self.fd(), &mut v))?;
        Ok(v)
    }

    /// DAHDI_SPANSTAT for `spanno` (0 = this fd's span), as the 314 bytes of the packed struct.
    pub fn spanstat(&self, spanno: i32) -> io::Result<[u8; SPANINFO_SIZE]> {
        let mut info = abi::SpanInfo {
            spanno,
            ..Default::default()
        };
        check(abi::spanstat(self.fd(), &mut info))?;
        Ok(as_bytes_spaninfo(&info))
    }

    /// DAHDI_GET_PARAMS for `channo` (0 = this fd's channel), as the 136 bytes of the struct.
    pub fn params(&self, channo: i32) -> io::Result<[u8; PARAMS_SIZE]> {
        let mut p = abi::Params {
            channo,
            ..Default::default()
        };
        check(abi::get_params(self.fd(), &mut p))?;
        Ok(as_bytes_params(&p))
    }

    /// DAHDI_CHANCONFIG with the given signalling (deflaw default).
    pub fn chanconfig(&self, channo: i32, sigtype: i32) -> io::Result<()> {
        let cc = abi::ChanConfig {
            chan: channo,
            sigtype,
            ..Default::default()
        };
        check(abi::chanconfig(self.fd(), &cc))
    }

    /// DAHDI_SPANCONFIG.
    pub fn spanconfig(&self, span: i32, lineconfig: i32, sync: i32) -> io::Result<()> {
        let lc = abi::LineConfig {
            span,
            lineconfig,
            sync,
            ..Default::default()
        };
        check(abi::spanconfig(self.fd(), &lc))
    }

    /// DAHDI_SET_BUFINFO: tx policy, number of buffers, buffer size.
    pub fn set_bufinfo(&self, txpolicy: i32, numbufs: i32, bufsize: i32) -> io::Result<()> {
        let bi = abi::BufferInfo {
            txbufpolicy: txpolicy,
            numbufs,
            bufsize,
            ..Default::default()
        };
        check(abi::set_bufinfo(self.fd(), &bi))
    }

    /// DAHDI_GET_BUFINFO: (txpolicy, numbufs, bufsize).
    pub fn bufinfo(&self) -> io::Result<(i32, i32, i32)> {
        let mut bi = abi::BufferInfo::default();
        check(abi::get_bufinfo(self.fd(), &mut bi))?;
        Ok((bi.txbufpolicy, bi.numbufs, bi.bufsize))
    }

    /// DAHDI_DIAL (`op` APPEND/REPLACE/CANCEL, ASCII digits).
    pub fn dial(&self, op: i32, digits: &str) -> io::Result<()> {
        let mut d = abi::DialOperation {
            op,
            ..Default::default()
        };
        for (dst, src) in d.dialstr.iter_mut().zip(digits.bytes().take(255)) {
            *dst = src;
        }
        check(abi::dial(self.fd(), &d))
    }
    /// DAHDI_DIALING: whether digits are still being sent.
    pub fn dialing(&self) -> io::Result<bool> {
        Ok(self.int_r(abi::dialing)? != 0)
    }
    /// DAHDI_SETCONF for this fd's channel.
    pub fn set_conf(&self, confno: i32, mode: i32) -> io::Result<()> {
        let mut c = abi::ConfInfo {
            chan: 0,
            confno,
            confmode: mode,
        };
        check(abi::setconf(self.fd(), &mut c))
    }
    /// DAHDI_MAINT on span `span`.
    pub fn maint(&self, span: i32, command: i32) -> io::Result<()> {
        check(abi::maint(
            self.fd(),
            &abi::MaintInfo {
                spanno: span,
                command,
            },
        ))
    }

    /// read(): one block or one frame.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// write(): at most one block, or one frame.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// poll() for `events` with a timeout; returns the revents.
    pub fn poll(&self, events: i16, timeout_ms: i32) -> io::Result<i16> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(
            self.file.as_fd(),
            PollFlags::from_bits_truncate(events),
        )];
        let t = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX);
        poll(&mut fds, t).map_err(io::Error::from)?;
        Ok(fds[0].revents().map(|r| r.bits()).unwrap_or(0))
    }
}

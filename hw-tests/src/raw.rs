//! Raw DAHDI syscalls for the tests: open a device node, issue fixed-size ioctls, read and
//! write. Structs travel as byte arrays of their C size with fields at their C offsets (x86_64,
//! from `dahdi/user.h`), so a test asserts on exactly the bytes the kernel interface carries.
//!
//! Temporary home of `unsafe` in hw-tests: until tdm-driver's ABI module (with its safe
//! wrappers) is on main, the nix `ioctl_*!` calls live here, each with a SAFETY note.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libc::c_int;

mod sys {
    use libc::c_int;
    nix::ioctl_write_ptr!(specify, 0xDA, 38, c_int);
    nix::ioctl_write_ptr!(set_blocksize, 0xDA, 1, c_int);
    nix::ioctl_read!(get_blocksize, 0xDA, 1, c_int);
    nix::ioctl_write_ptr!(flush, 0xDA, 3, c_int);
    nix::ioctl_readwrite!(get_params, 0xDA, 5, [u8; 136]);
    nix::ioctl_write_ptr!(hook, 0xDA, 7, c_int);
    nix::ioctl_read!(getevent, 0xDA, 8, c_int);
    nix::ioctl_readwrite!(iomux, 0xDA, 9, c_int);
    nix::ioctl_readwrite!(spanstat, 0xDA, 10, [u8; 314]);
    nix::ioctl_write_ptr!(spanconfig, 0xDA, 18, [u8; 36]);
    nix::ioctl_write_ptr!(chanconfig, 0xDA, 19, [u8; 76]);
    nix::ioctl_write_ptr!(set_bufinfo, 0xDA, 27, [u8; 24]);
    nix::ioctl_read!(get_bufinfo, 0xDA, 27, [u8; 24]);
    nix::ioctl_read!(channo, 0xDA, 34, c_int);
    nix::ioctl_write_ptr!(hdlcrawmode, 0xDA, 36, c_int);
    nix::ioctl_write_ptr!(hdlcfcsmode, 0xDA, 37, c_int);
    nix::ioctl_write_ptr!(setlinear, 0xDA, 40, c_int);
    nix::ioctl_write_ptr!(timerconfig, 0xDA, 47, c_int);
    nix::ioctl_write_ptr!(timerack, 0xDA, 48, c_int);
    nix::ioctl_write_ptr!(audiomode, 0xDA, 32, c_int);
    nix::ioctl_write_ptr!(startup, 0xDA, 99, c_int);
    // No DAHDI request has nr 200: the "unknown ioctl" probe.
    nix::ioctl_read!(unknown, 0xDA, 200, c_int);
}

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

fn check(r: nix::Result<c_int>) -> io::Result<()> {
    r.map(|_| ()).map_err(io::Error::from)
}

/// An open DAHDI device file (ctl, channel, pseudo, timer or chan/SSS/CCC).
#[derive(Debug)]
pub struct Dev {
    file: File,
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

    fn fd(&self) -> c_int {
        self.file.as_raw_fd()
    }

    fn int_w(
        &self,
        f: unsafe fn(c_int, *const c_int) -> nix::Result<c_int>,
        v: i32,
    ) -> io::Result<()> {
        // SAFETY: `f` is a nix `ioctl_write_ptr!` function for an `_IOW(.., int)` request; it
        // reads one int through the pointer, which points to a live local for the whole call.
        check(unsafe { f(self.fd(), &v) })
    }

    /// DAHDI_SPECIFY: binds a `channel` fd to a channel number.
    pub fn specify(&self, channo: i32) -> io::Result<()> {
        self.int_w(sys::specify, channo)
    }
    /// DAHDI_SET_BLOCKSIZE.
    pub fn set_blocksize(&self, size: i32) -> io::Result<()> {
        self.int_w(sys::set_blocksize, size)
    }
    /// DAHDI_FLUSH.
    pub fn flush(&self, what: i32) -> io::Result<()> {
        self.int_w(sys::flush, what)
    }
    /// DAHDI_HOOK.
    pub fn hook(&self, hook: i32) -> io::Result<()> {
        self.int_w(sys::hook, hook)
    }
    /// DAHDI_HDLCRAWMODE.
    pub fn hdlc_raw_mode(&self, on: bool) -> io::Result<()> {
        self.int_w(sys::hdlcrawmode, i32::from(on))
    }
    /// DAHDI_HDLCFCSMODE.
    pub fn hdlc_fcs_mode(&self, on: bool) -> io::Result<()> {
        self.int_w(sys::hdlcfcsmode, i32::from(on))
    }
    /// DAHDI_AUDIOMODE.
    pub fn audio_mode(&self, on: bool) -> io::Result<()> {
        self.int_w(sys::audiomode, i32::from(on))
    }
    /// DAHDI_SETLINEAR.
    pub fn set_linear(&self, on: bool) -> io::Result<()> {
        self.int_w(sys::setlinear, i32::from(on))
    }
    /// DAHDI_TIMERCONFIG (period in samples).
    pub fn timer_config(&self, samples: i32) -> io::Result<()> {
        self.int_w(sys::timerconfig, samples)
    }
    /// DAHDI_TIMERACK.
    pub fn timer_ack(&self, n: i32) -> io::Result<()> {
        self.int_w(sys::timerack, n)
    }
    /// DAHDI_STARTUP.
    pub fn startup(&self, span: i32) -> io::Result<()> {
        self.int_w(sys::startup, span)
    }

    fn int_r(&self, f: unsafe fn(c_int, *mut c_int) -> nix::Result<c_int>) -> io::Result<i32> {
        let mut v: c_int = 0;
        // SAFETY: `f` is a nix `ioctl_read!` function for an `_IOR(.., int)` request; the
        // kernel writes one int into `v`, a live local.
        check(unsafe { f(self.fd(), &mut v) })?;
        Ok(v)
    }

    /// DAHDI_GETEVENT: the next event, 0 when none.
    pub fn get_event(&self) -> io::Result<i32> {
        self.int_r(sys::getevent)
    }
    /// DAHDI_GET_BLOCKSIZE.
    pub fn blocksize(&self) -> io::Result<i32> {
        self.int_r(sys::get_blocksize)
    }
    /// DAHDI_CHANNO.
    pub fn channo(&self) -> io::Result<i32> {
        self.int_r(sys::channo)
    }
    /// An ioctl no DAHDI version defines (expected: ENOTTY).
    pub fn unknown_ioctl(&self) -> io::Result<i32> {
        self.int_r(sys::unknown)
    }

    /// DAHDI_IOMUX: waits for one of `mask`; returns the satisfied mask.
    pub fn iomux(&self, mask: i32) -> io::Result<i32> {
        let mut v: c_int = mask;
        // SAFETY: `_IOWR(.., int)`: the kernel reads and writes one int in `v`, a live local.
        check(unsafe { sys::iomux(self.fd(), &mut v) })?;
        Ok(v)
    }

    /// DAHDI_SPANSTAT for `spanno` (0 = this fd's span).
    pub fn spanstat(&self, spanno: i32) -> io::Result<[u8; SPANINFO_SIZE]> {
        let mut b = [0u8; SPANINFO_SIZE];
        put_i32(&mut b, spaninfo::SPANNO, spanno);
        // SAFETY: the request encodes 314 bytes, exactly the size of `b`, a live local.
        check(unsafe { sys::spanstat(self.fd(), &mut b) })?;
        Ok(b)
    }

    /// DAHDI_GET_PARAMS for `channo` (0 = this fd's channel).
    pub fn params(&self, channo: i32) -> io::Result<[u8; PARAMS_SIZE]> {
        let mut b = [0u8; PARAMS_SIZE];
        put_i32(&mut b, params::CHANNO, channo);
        // SAFETY: the request encodes 136 bytes, exactly the size of `b`, a live local.
        check(unsafe { sys::get_params(self.fd(), &mut b) })?;
        Ok(b)
    }

    /// DAHDI_CHANCONFIG with the given signalling (deflaw default).
    pub fn chanconfig(&self, channo: i32, sigtype: i32) -> io::Result<()> {
        let mut b = [0u8; 76];
        put_i32(&mut b, 0, channo);
        put_i32(&mut b, 44, sigtype);
        // SAFETY: the request encodes 76 bytes, exactly the size of `b`, a live local.
        check(unsafe { sys::chanconfig(self.fd(), &b) })
    }

    /// DAHDI_SPANCONFIG.
    pub fn spanconfig(&self, span: i32, lineconfig: i32, sync: i32) -> io::Result<()> {
        let mut b = [0u8; 36];
        put_i32(&mut b, 0, span);
        put_i32(&mut b, 28, lineconfig);
        put_i32(&mut b, 32, sync);
        // SAFETY: the request encodes 36 bytes, exactly the size of `b`, a live local.
        check(unsafe { sys::spanconfig(self.fd(), &b) })
    }

    /// DAHDI_SET_BUFINFO: tx policy, number of buffers, buffer size.
    pub fn set_bufinfo(&self, txpolicy: i32, numbufs: i32, bufsize: i32) -> io::Result<()> {
        let mut b = [0u8; 24];
        put_i32(&mut b, 0, txpolicy);
        put_i32(&mut b, 8, numbufs);
        put_i32(&mut b, 12, bufsize);
        // SAFETY: the request encodes 24 bytes, exactly the size of `b`, a live local.
        check(unsafe { sys::set_bufinfo(self.fd(), &b) })
    }

    /// DAHDI_GET_BUFINFO: (txpolicy, numbufs, bufsize).
    pub fn bufinfo(&self) -> io::Result<(i32, i32, i32)> {
        let mut b = [0u8; 24];
        // SAFETY: the request encodes 24 bytes, exactly the size of `b`, a live local.
        check(unsafe { sys::get_bufinfo(self.fd(), &mut b) })?;
        Ok((field_i32(&b, 0), field_i32(&b, 8), field_i32(&b, 12)))
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

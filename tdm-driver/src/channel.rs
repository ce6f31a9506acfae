//! Channels (B-channels, D-channels, analog ports), pseudo channels and timers: one open
//! device node each, with DAHDI's per-channel operations.
//!
//! [`Channel`] reads and writes blocking, one block per call, for the per-span media thread;
//! [`AsyncChannel`] wraps a non-blocking one in tokio's `AsyncFd` for control paths (D-channel
//! frames, events).

use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::abi;
use crate::backend::{Backend, DeviceRoot, Node, Op};
use crate::ctl::{ChannelParams, ChannelTiming, issue};
use crate::error::{Result, TdmError};
use crate::types::{BufferPolicy, DialOp, Event, Flush, Hook, IoMux, Law};

/// Smallest block size DAHDI accepts.
pub const MIN_BLOCK_SIZE: usize = 16;
/// Largest block size DAHDI accepts.
pub const MAX_BLOCK_SIZE: usize = abi::DAHDI_MAX_BLOCKSIZE as usize;
/// Block size of a freshly opened channel (128 ms of audio).
pub const DEFAULT_BLOCK_SIZE: usize = abi::DAHDI_DEFAULT_BLOCKSIZE as usize;
/// Bytes of FCS at the end of every HDLCFCS frame read, and of placeholder on every write.
pub const FCS_LEN: usize = 2;

/// Buffering of a channel (DAHDI_GET_BUFINFO / DAHDI_SET_BUFINFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// Transmit start policy.
    pub tx_policy: BufferPolicy,
    /// Buffers per direction (2..=32).
    pub num_bufs: usize,
    /// Bytes per buffer (16..=8192); numbufs * bufsize at most 32768.
    pub buf_size: usize,
}

impl BufferConfig {
    fn validate(&self) -> Result<()> {
        let reason = if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.buf_size) {
            format!(
                "buffer size {} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}",
                self.buf_size
            )
        } else if !(2..=abi::DAHDI_MAX_NUM_BUFS as usize).contains(&self.num_bufs) {
            format!("{} buffers is outside 2..=32", self.num_bufs)
        } else if self.num_bufs * self.buf_size > abi::DAHDI_MAX_BUF_SPACE as usize {
            format!(
                "{} buffers of {} bytes exceed DAHDI's 32768 bytes per direction",
                self.num_bufs, self.buf_size
            )
        } else {
            return Ok(());
        };
        Err(TdmError::InvalidArgument {
            op: "DAHDI_SET_BUFINFO",
            reason,
        })
    }
}

/// Receive and transmit gain tables, indexed by the companded byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GainTables {
    /// Receive table.
    pub rx: [u8; 256],
    /// Transmit table.
    pub tx: [u8; 256],
}

impl GainTables {
    /// Tables that change nothing (every byte maps to itself).
    pub fn unity() -> Self {
        let mut t = [0u8; 256];
        for (i, b) in t.iter_mut().enumerate() {
            *b = i as u8;
        }
        GainTables { rx: t, tx: t }
    }
}

/// Conference or monitor membership (DAHDI_GETCONF / DAHDI_SETCONF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conference {
    /// Conference number, or the monitored channel in monitor modes.
    pub confno: i32,
    /// `DAHDI_CONF_*` mode and flags.
    pub mode: i32,
}

/// An open DAHDI channel.
#[derive(Debug)]
pub struct Channel<B: Backend = DeviceRoot> {
    backend: Arc<B>,
    handle: B::Handle,
    path: PathBuf,
    node: Node,
    block_size: usize,
    linear: bool,
    /// Frame plus FCS placeholder for HDLC writes; grows once, then reused.
    frame_scratch: Vec<u8>,
}

impl<B: Backend> Channel<B> {
    fn open_node(backend: Arc<B>, node: Node, nonblocking: bool) -> Result<Self> {
        let path = backend.path_of(node);
        let channel = match node {
            Node::Channel(n) => Some(n),
            _ => None,
        };
        let op = match node {
            Node::Channel(_) => "DAHDI_SPECIFY",
            _ => "open",
        };
        let handle = backend
            .open(node, nonblocking)
            .map_err(|e| TdmError::from_open(op, &node.describe(), channel, &path, e))?;
        Ok(Channel {
            backend,
            handle,
            path,
            node,
            block_size: DEFAULT_BLOCK_SIZE,
            linear: false,
            frame_scratch: Vec::new(),
        })
    }

    /// Opens channel `channo` through `channel` + DAHDI_SPECIFY. Errors: [`TdmError::Busy`]
    /// if it is open elsewhere, [`TdmError::Unconfigured`], [`TdmError::NoSuchChannel`].
    pub fn open(backend: Arc<B>, channo: i32) -> Result<Self> {
        Self::open_with(backend, channo, false)
    }

    /// Like [`Channel::open`]; `nonblocking` makes read/write fail with `WouldBlock`
    /// instead of waiting.
    pub fn open_with(backend: Arc<B>, channo: i32, nonblocking: bool) -> Result<Self> {
        if !(1..=abi::DAHDI_MAX_CHANNELS).contains(&channo) {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_SPECIFY",
                reason: format!(
                    "channel numbers are 1..={}, got {channo}",
                    abi::DAHDI_MAX_CHANNELS
                ),
            });
        }
        Self::open_node(backend, Node::Channel(channo), nonblocking)
    }

    /// Opens the channel at position `chan` of span `span` through `chan/SSS/CCC`.
    pub fn open_span_channel(backend: Arc<B>, span: u32, chan: u32) -> Result<Self> {
        Self::open_span_channel_with(backend, span, chan, false)
    }

    /// Like [`Channel::open_span_channel`]; `nonblocking` as in [`Channel::open_with`].
    pub fn open_span_channel_with(
        backend: Arc<B>,
        span: u32,
        chan: u32,
        nonblocking: bool,
    ) -> Result<Self> {
        if span == 0 || chan == 0 || span > 999 || chan > 999 {
            return Err(TdmError::InvalidArgument {
                op: "open",
                reason: format!(
                    "span and channel positions are 1..=999, got span {span} channel {chan}"
                ),
            });
        }
        Self::open_node(backend, Node::SpanChannel { span, chan }, nonblocking)
    }

    /// The device node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node this channel was opened through.
    pub fn node(&self) -> Node {
        self.node
    }

    fn op(&self, op: Op<'_>) -> Result<()> {
        issue(&*self.backend, &self.handle, &self.path, op)
    }

    /// The channel number (DAHDI_CHANNO).
    pub fn channo(&self) -> Result<i32> {
        let mut n = 0;
        self.op(Op::ChanNo(&mut n))?;
        Ok(n)
    }

    /// The block size this handle last set (1024 after open).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Asks the driver for the block size (DAHDI_GET_BLOCKSIZE).
    pub fn query_block_size(&self) -> Result<usize> {
        let mut n = 0;
        self.op(Op::GetBlockSize(&mut n))?;
        usize::try_from(n).map_err(|_| TdmError::BadReply {
            op: "DAHDI_GET_BLOCKSIZE",
            path: self.path.clone(),
            detail: format!("negative block size {n}"),
        })
    }

    /// Sets the block size (DAHDI_SET_BLOCKSIZE): bytes per read/write, 16..=8192
    /// (160 = 20 ms of 8-bit audio). Drops buffered data.
    pub fn set_block_size(&mut self, bytes: usize) -> Result<()> {
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bytes) {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_SET_BLOCKSIZE",
                reason: format!(
                    "block size {bytes} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
                ),
            });
        }
        self.op(Op::SetBlockSize(bytes as i32))?;
        self.block_size = bytes;
        Ok(())
    }

    /// DAHDI_GET_BUFINFO.
    pub fn buffer_config(&self) -> Result<BufferConfig> {
        let mut bi = abi::BufferInfo::default();
        self.op(Op::GetBufInfo(&mut bi))?;
        let bad = |what: &str, v: i32| TdmError::BadReply {
            op: "DAHDI_GET_BUFINFO",
            path: self.path.clone(),
            detail: format!("{what} {v}"),
        };
        Ok(BufferConfig {
            tx_policy: BufferPolicy::from(bi.txbufpolicy),
            num_bufs: usize::try_from(bi.numbufs).map_err(|_| bad("numbufs", bi.numbufs))?,
            buf_size: usize::try_from(bi.bufsize).map_err(|_| bad("bufsize", bi.bufsize))?,
        })
    }

    /// DAHDI_SET_BUFINFO: buffer count, size and transmit policy. Also sets the block size.
    pub fn set_buffer_config(&mut self, config: &BufferConfig) -> Result<()> {
        config.validate()?;
        let bi = abi::BufferInfo {
            txbufpolicy: config.tx_policy.to_raw(),
            rxbufpolicy: abi::DAHDI_POLICY_IMMEDIATE,
            numbufs: config.num_bufs as i32,
            bufsize: config.buf_size as i32,
            ..Default::default()
        };
        self.op(Op::SetBufInfo(&bi))?;
        self.block_size = config.buf_size;
        Ok(())
    }

    /// DAHDI_SETLAW: the law of this channel until it is closed.
    pub fn set_law(&self, law: Law) -> Result<()> {
        self.op(Op::SetLaw(law.to_raw()))
    }

    /// DAHDI_SETLINEAR: with `true`, read and write signed 16-bit native-endian samples
    /// (a block of N samples is 2N bytes). Audio channels only.
    pub fn set_linear(&mut self, linear: bool) -> Result<()> {
        self.op(Op::SetLinear(i32::from(linear)))?;
        self.linear = linear;
        Ok(())
    }

    /// DAHDI_AUDIOMODE: switch a clear channel between audio (`true`) and raw data.
    pub fn set_audio_mode(&self, audio: bool) -> Result<()> {
        self.op(Op::AudioMode(i32::from(audio)))
    }

    /// DAHDI_HDLCFCSMODE: make a clear channel an HDLC channel with FCS.
    pub fn set_hdlc_fcs_mode(&self, on: bool) -> Result<()> {
        self.op(Op::HdlcFcsMode(i32::from(on)))
    }

    /// DAHDI_HDLC_RATE: 56 for 56 kbit/s HDLC, anything else 64 kbit/s.
    pub fn set_hdlc_rate(&self, kbps: i32) -> Result<()> {
        self.op(Op::HdlcRate(kbps))
    }

    /// DAHDI_BUFFER_EVENTS: queue READ_OVERRUN/WRITE_UNDERRUN events.
    pub fn set_buffer_events(&self, on: bool) -> Result<()> {
        self.op(Op::BufferEvents(i32::from(on)))
    }

    /// DAHDI_HOOK. On a non-blocking handle DAHDI answers RING, START, WINK and FLASH with
    /// EINPROGRESS (the state change runs on; HOOKCOMPLETE follows): that is success here.
    pub fn hook(&self, hook: Hook) -> Result<()> {
        match self.op_io(Op::Hook(hook.to_raw())) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
            other => other.map_err(|e| TdmError::from_io("DAHDI_HOOK", &self.path, e)),
        }
    }

    /// DAHDI_GETRXBITS: the CAS bits received (A = 8, B = 4, C = 2, D = 1).
    pub fn rx_bits(&self) -> Result<u8> {
        let mut raw = 0;
        self.op(Op::GetRxBits(&mut raw))?;
        Ok((raw & 0xf) as u8)
    }

    /// DAHDI_SETTXBITS: the CAS bits to send (channels with `cas` signalling).
    pub fn set_tx_bits(&self, bits: u8) -> Result<()> {
        self.op(Op::SetTxBits(i32::from(bits & 0xf)))
    }

    /// DAHDI_SETPOLARITY: reverse (`true`) or restore the battery polarity (FXO signalling:
    /// answer and disconnect supervision towards a station).
    pub fn set_polarity(&self, reversed: bool) -> Result<()> {
        self.op(Op::SetPolarity(i32::from(reversed)))
    }

    /// DAHDI_SETCADENCE: the ring cadence of an FXO-signalled channel, in ms, on/off pairs
    /// (at most 16 values; a negative "on" value marks where the cadence loops back to).
    pub fn set_cadence(&self, cadence: &[i32]) -> Result<()> {
        if cadence.is_empty() || cadence.len() > 16 {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_SETCADENCE",
                reason: format!("a cadence has 1..=16 values, got {}", cadence.len()),
            });
        }
        let mut c = abi::RingCadence::default();
        for (slot, v) in c.ringcadence.iter_mut().zip(cadence) {
            *slot = *v;
        }
        self.op(Op::SetCadence(&c))
    }

    /// One ioctl whose failure is returned as the bare OS error: no allocation on any path
    /// (for the span thread, which must not allocate even when a request fails).
    pub(crate) fn op_io(&self, op: Op<'_>) -> std::io::Result<()> {
        self.backend.ioctl(&self.handle, op)
    }

    /// One read() (retried on EINTR) with the bare OS error; see [`Channel::op_io`].
    pub(crate) fn read_io(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.backend.read(&self.handle, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// One write() (retried on EINTR) with the bare OS error; see [`Channel::op_io`].
    pub(crate) fn write_io(&self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.backend.write(&self.handle, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// DAHDI_GETEVENT: pops one event, `None` if the queue is empty.
    pub fn get_event(&self) -> Result<Option<Event>> {
        let mut raw = 0;
        self.op(Op::GetEvent(&mut raw))?;
        Ok(Event::from_raw(raw))
    }

    /// DAHDI_IOMUX: waits (unless `NO_WAIT` is set) until one condition of `mask` holds and
    /// returns the satisfied conditions.
    pub fn iomux(&self, mask: IoMux) -> Result<IoMux> {
        let mut raw = mask.0;
        self.op(Op::IoMux(&mut raw))?;
        Ok(IoMux(raw))
    }

    /// DAHDI_DIAL: play a dial string (`T123` DTMF, `M...` MF, `P...` pulse, `w` waits);
    /// DIALCOMPLETE is queued at the end.
    pub fn dial(&self, op: DialOp, digits: &str) -> Result<()> {
        let mut d = abi::DialOperation {
            op: op.to_raw(),
            ..Default::default()
        };
        abi::set_c_str_field(&mut d.dialstr, digits).map_err(|e| TdmError::InvalidArgument {
            op: "DAHDI_DIAL",
            reason: e.to_string(),
        })?;
        self.op(Op::Dial(&d))
    }

    /// DAHDI_GETGAINS for this channel.
    pub fn gains(&self) -> Result<GainTables> {
        let mut g = abi::Gains::default();
        self.op(Op::GetGains(&mut g))?;
        Ok(GainTables {
            rx: g.rxgain,
            tx: g.txgain,
        })
    }

    /// DAHDI_SETGAINS for this channel.
    pub fn set_gains(&self, gains: &GainTables) -> Result<()> {
        let g = abi::Gains {
            chan: 0,
            rxgain: gains.rx,
            txgain: gains.tx,
        };
        self.op(Op::SetGains(&g))
    }

    /// DAHDI_FLUSH.
    pub fn flush(&self, what: Flush) -> Result<()> {
        self.op(Op::Flush(what.to_raw()))
    }

    /// DAHDI_GET_PARAMS for this channel.
    pub fn params(&self) -> Result<ChannelParams> {
        let mut p = abi::Params::default();
        self.op(Op::GetParams(&mut p))?;
        Ok(ChannelParams::from(&p))
    }

    /// DAHDI_SET_PARAMS: the hook timings of this channel.
    pub fn set_timing(&self, timing: &ChannelTiming) -> Result<()> {
        let mut p = abi::Params::default();
        timing.write_into(&mut p);
        self.op(Op::SetParams(&p))
    }

    /// DAHDI_GETCONF for this channel.
    pub fn conference(&self) -> Result<Conference> {
        let mut c = abi::ConfInfo::default();
        self.op(Op::GetConf(&mut c))?;
        Ok(Conference {
            confno: c.confno,
            mode: c.confmode,
        })
    }

    /// DAHDI_SETCONF for this channel (e.g. `DAHDI_CONF_MONITORBOTH` of another channel).
    pub fn set_conference(&self, conf: Conference) -> Result<()> {
        let mut c = abi::ConfInfo {
            chan: 0,
            confno: conf.confno,
            confmode: conf.mode,
        };
        self.op(Op::SetConf(&mut c))
    }

    /// Bytes one block takes: the block size, doubled in linear mode.
    pub fn block_bytes(&self) -> usize {
        if self.linear {
            self.block_size * 2
        } else {
            self.block_size
        }
    }

    /// Reads one block, blocking until it is complete. `buf` must hold a whole block
    /// ([`Channel::block_bytes`]): DAHDI discards what does not fit. Returns the byte count.
    /// While an event is queued this fails with [`TdmError::EventPending`].
    /// Allocates nothing unless it fails.
    pub fn read_block(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() < self.block_bytes() {
            return Err(TdmError::InvalidArgument {
                op: "read",
                reason: format!(
                    "a {}-byte buffer would lose the end of a {}-byte block",
                    buf.len(),
                    self.block_bytes()
                ),
            });
        }
        self.read_raw(buf)
    }

    /// One read(), retried when a signal interrupts it.
    fn read_raw(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.backend.read(&self.handle, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other.map_err(|e| TdmError::from_io("read", &self.path, e)),
            }
        }
    }

    /// One write(), retried when a signal interrupts it.
    fn write_raw(&self, buf: &[u8]) -> Result<usize> {
        loop {
            match self.backend.write(&self.handle, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other.map_err(|e| TdmError::from_io("write", &self.path, e)),
            }
        }
    }

    /// Writes one block (at most [`Channel::block_bytes`] bytes), blocking while every transmit
    /// buffer is full. Returns how many bytes the driver took.
    pub fn write_block(&self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() || buf.len() > self.block_bytes() {
            return Err(TdmError::InvalidArgument {
                op: "write",
                reason: format!(
                    "a block is 1..={} bytes, got {}",
                    self.block_bytes(),
                    buf.len()
                ),
            });
        }
        self.write_raw(buf)
    }

    /// Reads one HDLC frame (HDLCFCS channel) into `buf`, which must hold the largest frame
    /// plus its 2 FCS bytes. Returns the payload length: `buf[..n]` is the frame, the 2 bytes
    /// after it the (already checked) FCS. Frames with a bad FCS never arrive: they queue
    /// [`Event::BadFcs`], reported as [`TdmError::EventPending`].
    pub fn read_frame(&self, buf: &mut [u8]) -> Result<usize> {
        let n = self.read_raw(buf)?;
        self.frame_payload_len(n)
    }

    fn frame_payload_len(&self, n: usize) -> Result<usize> {
        n.checked_sub(FCS_LEN).ok_or_else(|| TdmError::BadReply {
            op: "read",
            path: self.path.clone(),
            detail: format!("an HDLC frame of {n} bytes is shorter than its 2-byte FCS"),
        })
    }

    fn prepare_frame(&mut self, frame: &[u8]) -> Result<()> {
        if frame.is_empty() || frame.len() + FCS_LEN > self.block_size {
            return Err(TdmError::InvalidArgument {
                op: "write",
                reason: format!(
                    "an HDLC frame is 1..={} bytes with this block size, got {}",
                    self.block_size.saturating_sub(FCS_LEN),
                    frame.len()
                ),
            });
        }
        self.frame_scratch.clear();
        self.frame_scratch.extend_from_slice(frame);
        self.frame_scratch.extend_from_slice(&[0; FCS_LEN]);
        Ok(())
    }

    fn check_frame_written(&self, n: usize) -> Result<()> {
        if n != self.frame_scratch.len() {
            return Err(TdmError::BadReply {
                op: "write",
                path: self.path.clone(),
                detail: format!(
                    "the driver took {n} of {} frame bytes",
                    self.frame_scratch.len()
                ),
            });
        }
        Ok(())
    }

    /// Writes one HDLC frame (HDLCFCS channel): appends the 2 placeholder bytes the driver
    /// overwrites with the FCS, and checks the whole frame was taken.
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        self.prepare_frame(frame)?;
        let n = self.write_raw(&self.frame_scratch)?;
        self.check_frame_written(n)
    }
}

impl AsFd for Channel<DeviceRoot> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }
}

impl AsRawFd for Channel<DeviceRoot> {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.as_fd().as_raw_fd()
    }
}

/// A pseudo channel (`pseudo`): an audio channel with no line, paced by DAHDI's master
/// timing; a timing source, and the way to monitor or conference other channels.
#[derive(Debug)]
pub struct Pseudo<B: Backend = DeviceRoot> {
    channel: Channel<B>,
}

impl<B: Backend> Pseudo<B> {
    /// Opens a new pseudo channel.
    pub fn open(backend: Arc<B>) -> Result<Self> {
        Ok(Pseudo {
            channel: Channel::open_node(backend, Node::Pseudo, false)?,
        })
    }

    /// The underlying channel.
    pub fn into_channel(self) -> Channel<B> {
        self.channel
    }
}

impl<B: Backend> Deref for Pseudo<B> {
    type Target = Channel<B>;

    fn deref(&self) -> &Channel<B> {
        &self.channel
    }
}

impl<B: Backend> DerefMut for Pseudo<B> {
    fn deref_mut(&mut self) -> &mut Channel<B> {
        &mut self.channel
    }
}

/// A DAHDI timer (`timer`): fires every `period` samples (8 per ms) of the master clock.
/// It becomes ready (POLLPRI) while expirations are unacknowledged or a ping is pending.
#[derive(Debug)]
pub struct Timer<B: Backend = DeviceRoot> {
    backend: Arc<B>,
    handle: B::Handle,
    path: PathBuf,
}

impl<B: Backend> Timer<B> {
    /// Opens a private timer.
    pub fn open(backend: Arc<B>) -> Result<Self> {
        let path = backend.path_of(Node::Timer);
        let handle = backend
            .open(Node::Timer, false)
            .map_err(|e| TdmError::from_open("open", "a timer", None, &path, e))?;
        Ok(Timer {
            backend,
            handle,
            path,
        })
    }

    fn op(&self, op: Op<'_>) -> Result<()> {
        issue(&*self.backend, &self.handle, &self.path, op)
    }

    /// DAHDI_TIMERCONFIG: fire every `samples` samples (8 = 1 ms); 0 stops the timer.
    pub fn configure(&self, samples: i32) -> Result<()> {
        if samples < 0 {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_TIMERCONFIG",
                reason: format!("a period is 0 (off) or positive, got {samples}"),
            });
        }
        self.op(Op::TimerConfig(samples))
    }

    /// DAHDI_TIMERACK: acknowledge `count` expirations.
    pub fn ack(&self, count: i32) -> Result<()> {
        if count < 1 {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_TIMERACK",
                reason: format!("acknowledge at least 1 expiration (or use ack_all), got {count}"),
            });
        }
        self.op(Op::TimerAck(count))
    }

    /// DAHDI_TIMERACK with -1: acknowledge every expiration.
    pub fn ack_all(&self) -> Result<()> {
        self.op(Op::TimerAck(-1))
    }

    /// DAHDI_TIMERPING: make the timer ready with a TIMER_PING event.
    pub fn ping(&self) -> Result<()> {
        self.op(Op::TimerPing)
    }

    /// DAHDI_TIMERPONG: clear a pending ping.
    pub fn pong(&self) -> Result<()> {
        self.op(Op::TimerPong)
    }

    /// DAHDI_GETEVENT: `TimerPing` if a ping is pending, else `TimerExpired` if it fired,
    /// else `None`.
    pub fn get_event(&self) -> Result<Option<Event>> {
        let mut raw = 0;
        self.op(Op::GetEvent(&mut raw))?;
        Ok(Event::from_raw(raw))
    }
}

impl Timer<DeviceRoot> {
    /// Waits up to `timeout` for the timer to become ready (POLLPRI); true if it did.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.handle.as_fd(), PollFlags::POLLPRI)];
        let n = poll(&mut fds, PollTimeout::from(ms)).map_err(|e| {
            TdmError::from_io(
                "poll",
                &self.path,
                std::io::Error::from_raw_os_error(e as i32),
            )
        })?;
        Ok(n > 0)
    }
}

impl AsFd for Timer<DeviceRoot> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }
}

/// A non-blocking device channel registered with tokio, for control paths: D-channel frames
/// and events. Readiness comes from the device's poll(): readable when a block or frame is
/// complete, writable when a buffer is free, priority when an event is queued.
#[derive(Debug)]
pub struct AsyncChannel {
    inner: AsyncFd<Channel<DeviceRoot>>,
}

impl AsyncChannel {
    /// Opens channel `channo` non-blocking and registers it with the current tokio runtime.
    pub fn open(backend: Arc<DeviceRoot>, channo: i32) -> Result<Self> {
        let channel = Channel::open_with(backend, channo, true)?;
        Self::new(channel)
    }

    /// Registers an already opened channel; it must have been opened non-blocking.
    pub fn new(channel: Channel<DeviceRoot>) -> Result<Self> {
        let path = channel.path.clone();
        let inner = abi::register_device_channel(
            channel,
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        )
        .map_err(|e| TdmError::from_io("register with tokio", &path, e))?;
        Ok(AsyncChannel { inner })
    }

    /// The channel, for its control operations.
    pub fn get_ref(&self) -> &Channel<DeviceRoot> {
        self.inner.get_ref()
    }

    /// Sets the block size (see [`Channel::set_block_size`]).
    pub fn set_block_size(&mut self, bytes: usize) -> Result<()> {
        self.inner.get_mut().set_block_size(bytes)
    }

    /// Sets buffering (see [`Channel::set_buffer_config`]).
    pub fn set_buffer_config(&mut self, config: &BufferConfig) -> Result<()> {
        self.inner.get_mut().set_buffer_config(config)
    }

    /// Sets linear mode (see [`Channel::set_linear`]).
    pub fn set_linear(&mut self, linear: bool) -> Result<()> {
        self.inner.get_mut().set_linear(linear)
    }

    /// Reads one block or frame (raw, FCS included for HDLC) once one is ready.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            let mut guard = self
                .inner
                .readable()
                .await
                .map_err(|e| TdmError::from_io("poll", self.get_ref().path(), e))?;
            let ch = guard.get_inner();
            match guard.try_io(|_| ch.backend.read(&ch.handle, buf)) {
                Ok(result) => return result.map_err(|e| TdmError::from_io("read", ch.path(), e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads one HDLC frame; returns the payload length (see [`Channel::read_frame`]).
    pub async fn read_frame(&self, buf: &mut [u8]) -> Result<usize> {
        let n = self.read(buf).await?;
        self.get_ref().frame_payload_len(n)
    }

    /// Writes one block or raw frame once a buffer is free.
    pub async fn write(&self, buf: &[u8]) -> Result<usize> {
        loop {
            let mut guard = self
                .inner
                .writable()
                .await
                .map_err(|e| TdmError::from_io("poll", self.get_ref().path(), e))?;
            let ch = guard.get_inner();
            match guard.try_io(|_| ch.backend.write(&ch.handle, buf)) {
                Ok(result) => {
                    return result.map_err(|e| TdmError::from_io("write", ch.path(), e));
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one HDLC frame, appending the FCS placeholder (see [`Channel::write_frame`]).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        self.inner.get_mut().prepare_frame(frame)?;
        let scratch = std::mem::take(&mut self.inner.get_mut().frame_scratch);
        let written = self.write(&scratch).await;
        self.inner.get_mut().frame_scratch = scratch;
        let n = written?;
        self.get_ref().check_frame_written(n)
    }

    /// Waits for the next event and returns it.
    pub async fn next_event(&self) -> Result<Event> {
        loop {
            if let Some(event) = self.get_ref().get_event()? {
                return Ok(event);
            }
            let mut guard = self
                .inner
                .ready(Interest::PRIORITY)
                .await
                .map_err(|e| TdmError::from_io("poll", self.get_ref().path(), e))?;
            guard.clear_ready_matching(tokio::io::Ready::PRIORITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A device root of regular files: opening works, every ioctl fails with ENOTTY.
    fn file_root() -> (tempfile::TempDir, Arc<DeviceRoot>) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ctl", "channel", "pseudo", "timer"] {
            fs::write(dir.path().join(f), b"").unwrap();
        }
        fs::create_dir_all(dir.path().join("chan/001")).unwrap();
        fs::write(dir.path().join("chan/001/005"), vec![0xd5u8; 400]).unwrap();
        let root = Arc::new(DeviceRoot::new(dir.path()));
        (dir, root)
    }

    #[test]
    fn span_channel_path_is_zero_padded_and_reads_a_block() {
        let (dir, root) = file_root();
        let mut ch = Channel::open_span_channel(root, 1, 5).unwrap();
        assert_eq!(ch.path(), dir.path().join("chan/001/005"));
        // set_block_size issues an ioctl, which a regular file refuses.
        let err = ch.set_block_size(160).unwrap_err();
        assert!(
            matches!(
                err,
                TdmError::NotSupported {
                    op: "DAHDI_SET_BLOCKSIZE",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            ch.block_size(),
            DEFAULT_BLOCK_SIZE,
            "a failed set changes nothing"
        );
        let mut buf = vec![0u8; DEFAULT_BLOCK_SIZE];
        assert_eq!(ch.read_block(&mut buf).unwrap(), 400);
        assert!(buf[..400].iter().all(|&b| b == 0xd5));
    }

    #[test]
    fn open_by_number_issues_specify_and_reports_its_failure() {
        let (dir, root) = file_root();
        let err = Channel::open(root, 5).unwrap_err();
        match &err {
            TdmError::NotSupported { op, path } => {
                assert_eq!(*op, "DAHDI_SPECIFY");
                assert_eq!(path, &dir.path().join("channel"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_nodes_say_which_path_and_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let root = Arc::new(DeviceRoot::new(dir.path().join("nothing")));
        let err = Channel::open_span_channel(root.clone(), 2, 16).unwrap_err();
        assert!(matches!(err, TdmError::NoDevice { .. }), "{err:?}");
        assert!(err.to_string().contains("chan/002/016"), "{err}");
        let err = crate::Ctl::open(root.clone()).unwrap_err();
        assert!(err.to_string().contains("dahdi-sim"), "{err}");
        assert!(matches!(
            Timer::open(root).unwrap_err(),
            TdmError::NoDevice { .. }
        ));
    }

    #[test]
    fn arguments_are_checked_before_the_driver_sees_them() {
        let (_dir, root) = file_root();
        for bad in [0, -1, 1025] {
            let err = Channel::open(root.clone(), bad).unwrap_err();
            assert!(
                matches!(err, TdmError::InvalidArgument { .. }),
                "{bad}: {err:?}"
            );
        }
        assert!(Channel::open_span_channel(root.clone(), 0, 1).is_err());
        let mut ch = Channel::open_span_channel(root.clone(), 1, 5).unwrap();
        for bad in [0, 15, 8193] {
            assert!(matches!(
                ch.set_block_size(bad),
                Err(TdmError::InvalidArgument { .. })
            ));
        }
        let too_much = BufferConfig {
            tx_policy: BufferPolicy::Immediate,
            num_bufs: 32,
            buf_size: 2048,
        };
        let err = ch.set_buffer_config(&too_much).unwrap_err();
        assert!(err.to_string().contains("32768"), "{err}");
        let mut small = [0u8; 100];
        assert!(matches!(
            ch.read_block(&mut small),
            Err(TdmError::InvalidArgument { .. })
        ));
        assert!(ch.write_block(&[]).is_err());
        assert!(ch.write_block(&[0; 1025]).is_err());
        let long = "1".repeat(256);
        assert!(matches!(
            ch.dial(DialOp::Append, &long),
            Err(TdmError::InvalidArgument { .. })
        ));
        assert!(ch.write_frame(&[0u8; 1023]).is_err(), "frame + FCS > block");
        let timer = Timer::open(root).unwrap();
        assert!(timer.configure(-8).is_err());
        assert!(timer.ack(0).is_err());
        assert!(matches!(
            timer.configure(160),
            Err(TdmError::NotSupported {
                op: "DAHDI_TIMERCONFIG",
                ..
            })
        ));
    }

    #[test]
    fn hdlc_frames_get_a_placeholder_fcs_and_short_reads_are_rejected() {
        let (dir, root) = file_root();
        let mut ch = Channel::open_span_channel(root.clone(), 1, 5).unwrap();
        // A regular file takes the whole write: the frame plus 2 placeholder bytes.
        let path = dir.path().join("chan/001/005");
        fs::write(&path, b"").unwrap();
        ch.write_frame(&[0x00, 0x01, 0x7f]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), vec![0x00, 0x01, 0x7f, 0, 0]);
        // Reading a 1-byte "frame" is an odd reply, not a panic.
        fs::write(&path, [0x42u8]).unwrap();
        let ch = Channel::open_span_channel(root, 1, 5).unwrap();
        let mut buf = [0u8; 64];
        let err = ch.read_frame(&mut buf).unwrap_err();
        assert!(matches!(err, TdmError::BadReply { .. }), "{err:?}");
    }

    #[test]
    fn async_channel_outside_a_runtime_is_an_error_not_a_panic() {
        let (_dir, root) = file_root();
        let ch = Channel::open_span_channel(root, 1, 5).unwrap();
        let err = AsyncChannel::new(ch).unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn async_channel_on_a_file_without_poll_support_is_an_error() {
        let (_dir, root) = file_root();
        let ch = Channel::open_span_channel(root, 1, 5).unwrap();
        // epoll refuses regular files (EPERM); a device node or dahdi-sim file registers.
        let err = AsyncChannel::new(ch).unwrap_err();
        assert!(matches!(err, TdmError::Io { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn async_channel_waits_for_readiness_and_moves_whole_frames() {
        // A FIFO is pollable like a device node: what is written on the fd is read back.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("chan/001")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("chan/001/016"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let root = Arc::new(DeviceRoot::new(dir.path()));
        let ch = Channel::open_span_channel_with(root, 1, 16, true).unwrap();
        let mut d = AsyncChannel::new(ch).unwrap();
        d.set_block_size(260).unwrap_err(); // a FIFO has no DAHDI ioctls
        let mut buf = [0u8; 64];
        // Nothing written yet: read waits instead of failing or spinning.
        let waited = tokio::time::timeout(Duration::from_millis(50), d.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "read returned {waited:?} with nothing to read"
        );
        d.write_frame(&[0x02, 0x01, 0x7f]).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), d.read_frame(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(&buf[..n + FCS_LEN], &[0x02, 0x01, 0x7f, 0, 0]);
        // GETEVENT is an ioctl the FIFO refuses: a typed error, not a hang or a panic.
        let err = tokio::time::timeout(Duration::from_secs(5), d.next_event())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                err,
                TdmError::NotSupported {
                    op: "DAHDI_GETEVENT",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn pseudo_timer_and_ctl_open_their_nodes_and_report_unsupported_requests() {
        let (dir, root) = file_root();
        let mut pseudo = Pseudo::open(root.clone()).unwrap();
        assert_eq!(pseudo.path(), dir.path().join("pseudo"));
        assert!(matches!(
            pseudo.set_linear(true),
            Err(TdmError::NotSupported {
                op: "DAHDI_SETLINEAR",
                ..
            })
        ));
        assert_eq!(
            pseudo.block_bytes(),
            DEFAULT_BLOCK_SIZE,
            "linear stays off after a failure"
        );
        let ctl = crate::Ctl::open(root.clone()).unwrap();
        assert_eq!(ctl.path(), dir.path().join("ctl"));
        assert!(matches!(
            ctl.span_stat(0),
            Err(TdmError::InvalidArgument { .. })
        ));
        assert!(matches!(
            ctl.spans(),
            Err(TdmError::NotSupported {
                op: "DAHDI_SPANSTAT",
                ..
            })
        ));
        assert!(matches!(
            ctl.version(),
            Err(TdmError::NotSupported {
                op: "DAHDI_GETVERSION",
                ..
            })
        ));
        assert!(matches!(
            ctl.channel_state(1024),
            Err(TdmError::InvalidArgument { .. })
        ));
        let timer = Timer::open(root).unwrap();
        assert!(matches!(
            timer.ping(),
            Err(TdmError::NotSupported {
                op: "DAHDI_TIMERPING",
                ..
            })
        ));
        // A regular file is always "ready" for poll, but never has POLLPRI: wait times out.
        assert!(!timer.wait(Duration::from_millis(10)).unwrap());
    }

    #[test]
    fn gain_tables_unity_maps_each_byte_to_itself() {
        let g = GainTables::unity();
        assert_eq!(g.rx[0], 0);
        assert_eq!(g.tx[255], 255);
        assert_eq!(g.rx[0xd5], 0xd5);
    }
}

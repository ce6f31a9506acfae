//! The simulated DAHDI core: spans, channels, pseudo channels and timers, advanced in 1 ms ticks
//! of 8 samples like DAHDI's master clock. It knows nothing of FUSE: open/read/write/ioctl/poll
//! return results or "would block" (EAGAIN), and the FUSE layer parks blocking calls and retries
//! them after each tick.

use crate::sim::config::{LineType, SimConfig};
use crate::sim::fcs;
use crate::sim::wire::{self, consts as c};
use codecs::g711;
use std::collections::{BTreeMap, VecDeque};

/// A file handle, as handed to the kernel.
pub type Fh = u64;

/// Samples moved per tick (DAHDI_CHUNKSIZE): 1 ms at 8 kHz.
pub const CHUNK: usize = 8;
/// `__DAHDI_SIG_FXO`: the bit every FXO-style signalling type carries.
const SIG_FXO_BIT: u32 = 1 << 12;
/// First channel number given to pseudo channels (DAHDI's FIRST_PSEUDO_CHANNEL).
const FIRST_PSEUDO: i32 = 0x8000;

/// errno values the model returns.
pub mod errno {
    pub const EINTR: i32 = libc::EINTR;
    pub const ENXIO: i32 = libc::ENXIO;
    pub const EBADF: i32 = libc::EBADF;
    pub const EAGAIN: i32 = libc::EAGAIN;
    pub const EBUSY: i32 = libc::EBUSY;
    pub const EINVAL: i32 = libc::EINVAL;
    pub const ENOTTY: i32 = libc::ENOTTY;
    pub const ENOSYS: i32 = libc::ENOSYS;
    pub const ELAST: i32 = crate::sim::wire::consts::ELAST;
}

/// Which device file an open refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Ctl,
    Channel,
    Pseudo,
    Timer,
    /// `chan/SSS/CCC`, by channel number.
    Chan(usize),
}

/// Result of an ioctl.
#[derive(Debug, PartialEq, Eq)]
pub enum IoctlResult {
    /// Success: the return value and the bytes copied back to the caller.
    Done(i32, Vec<u8>),
    /// Failure with an errno.
    Err(i32),
    /// The call blocks (IOMUX); retry after the next tick.
    Block,
}

/// How a channel carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Audio,
    HdlcFcs,
    HdlcRaw,
}

/// A frame being sent on an HDLC channel.
#[derive(Debug)]
struct TxFrame {
    data: Vec<u8>,
    /// Bytes still to clock out (8 per tick, 64 kbit/s).
    remaining: usize,
}

/// A channel: a span timeslot or a pseudo channel.
#[derive(Debug)]
struct Channel {
    channo: i32,
    /// Span index (0-based); `None` for a pseudo channel.
    span: Option<usize>,
    chanpos: i32,
    name: String,
    sigcap: u32,
    sig: u32,
    deflaw: i32,
    idlebits: i32,
    master: i32,
    /// Whether an open file is bound to this channel.
    open: bool,
    // State reset on open (DAHDI's initialize_channel).
    blocksize: usize,
    numbufs: usize,
    txpolicy: i32,
    law: i32,
    linear: bool,
    fcs_mode: bool,
    raw_mode: bool,
    buffer_events: bool,
    loopback: bool,
    tx_started: bool,
    rx_blocks: VecDeque<Vec<u8>>,
    rx_partial: Vec<u8>,
    rx_overrun: bool,
    tx_blocks: VecDeque<Vec<u8>>,
    tx_pos: usize,
    rx_frames: VecDeque<Vec<u8>>,
    tx_frames: VecDeque<TxFrame>,
    events: VecDeque<i32>,
    dialing: Option<u32>,
    conf: [i32; 3],
    confmute: i32,
    echocancel: i32,
    tonezone: i32,
    // Signalling state (survives close, except the hook goes on-hook).
    rbs: rbs::Rbs,
    timing: [i32; wire::params::TIMING_COUNT],
    /// `rxgain[256]` then `txgain[256]`, as in `struct dahdi_gains`.
    gains: Vec<u8>,
    /// Whether the gain tables are the identity (nothing to apply).
    unity_gains: bool,
    /// DAHDI_FLAG_AUDIO: audio processing (gains, linear mode) on. Set for voice signalling;
    /// off for clear-type signalling (CLEAR, HDLC*, DACS), which carries data untouched until
    /// DAHDI_AUDIOMODE(1) on a literal CLEAR channel.
    audio_processing: bool,
    /// Flip one bit of the next HDLC frame sent (control command `corrupt`).
    corrupt_next: bool,
    /// Counts readiness events (a block or frame received, a buffer freed, an event queued), so
    /// a poll can be woken for a new arrival even when the ready mask looks the same.
    activity: u64,
}

impl Channel {
    fn new(channo: i32, span: Option<usize>, chanpos: i32, name: String, sigcap: u32) -> Self {
        let mut gains = vec![0u8; 512];
        for (i, g) in gains.iter_mut().enumerate() {
            *g = (i % 256) as u8;
        }
        Channel {
            channo,
            span,
            chanpos,
            name,
            sigcap,
            sig: 0,
            deflaw: c::LAW_MULAW,
            idlebits: 0,
            master: channo,
            open: false,
            blocksize: c::DEFAULT_BLOCKSIZE,
            numbufs: c::DEFAULT_NUM_BUFS,
            txpolicy: c::POLICY_IMMEDIATE,
            law: c::LAW_MULAW,
            linear: false,
            fcs_mode: false,
            raw_mode: false,
            buffer_events: false,
            loopback: false,
            tx_started: false,
            rx_blocks: VecDeque::new(),
            rx_partial: Vec::new(),
            rx_overrun: false,
            tx_blocks: VecDeque::new(),
            tx_pos: 0,
            rx_frames: VecDeque::new(),
            tx_frames: VecDeque::new(),
            events: VecDeque::new(),
            dialing: None,
            conf: [0; 3],
            confmute: 0,
            echocancel: 0,
            tonezone: 0,
            rbs: rbs::Rbs::default(),
            timing: [0; wire::params::TIMING_COUNT],
            gains,
            unity_gains: true,
            audio_processing: false,
            corrupt_next: false,
            activity: 0,
        }
    }

    /// DAHDI's initialize_channel(), run on open.
    fn initialize(&mut self, blocksize: usize) {
        self.blocksize = blocksize;
        self.numbufs = c::DEFAULT_NUM_BUFS;
        self.txpolicy = c::POLICY_IMMEDIATE;
        self.law = self.deflaw;
        self.linear = false;
        self.audio_processing = self.span.is_none() || self.sig & c::SIG_CLEAR != c::SIG_CLEAR;
        // DAHDI's default RBS timings (ms), in dahdi_params order: prewink, preflash, wink,
        // flash, start (ring time on FXO signalling), rxwink, rxflash, debounce, pulsebreak,
        // pulsemake, pulseafter.
        let start = if self.sig & SIG_FXO_BIT != 0 {
            2000
        } else {
            1500
        };
        self.timing = [50, 50, 150, 750, start, 250, 1250, 600, 50, 50, 750];
        self.fcs_mode = false;
        self.raw_mode = false;
        self.buffer_events = false;
        self.loopback = false;
        self.conf = [0; 3];
        self.confmute = 0;
        self.echocancel = 0;
        self.dialing = None;
        self.events.clear();
        self.flush_buffers(true, true);
    }

    fn flush_buffers(&mut self, read: bool, write: bool) {
        if read {
            self.rx_blocks.clear();
            self.rx_partial.clear();
            self.rx_frames.clear();
            self.rx_overrun = false;
        }
        if write {
            self.tx_blocks.clear();
            self.tx_pos = 0;
            self.tx_frames.clear();
            self.tx_started = false;
        }
    }

    fn mode(&self) -> Mode {
        match self.sig {
            c::SIG_HDLCFCS | c::SIG_HARDHDLC | c::SIG_HDLCNET | c::SIG_MTP2 => Mode::HdlcFcs,
            c::SIG_HDLCRAW => Mode::HdlcRaw,
            _ if self.fcs_mode => Mode::HdlcFcs,
            _ if self.raw_mode => Mode::HdlcRaw,
            _ => Mode::Audio,
        }
    }

    fn idle_byte(&self) -> u8 {
        if self.law == c::LAW_ALAW { 0xd5 } else { 0xff }
    }

    fn push_event(&mut self, ev: i32) {
        self.activity = self.activity.wrapping_add(1);
        if self.events.len() < c::MAX_EVENTS {
            self.events.push_back(ev);
        }
    }

    /// Takes the next 8 bytes this channel transmits (idle when nothing is queued).
    fn take_tx_chunk(&mut self) -> [u8; CHUNK] {
        let mut out = [self.idle_byte(); CHUNK];
        if !self.tx_started {
            let queued = self.tx_blocks.len();
            self.tx_started = match self.txpolicy {
                c::POLICY_WHEN_FULL => queued >= self.numbufs,
                c::POLICY_HALF_FULL => queued >= self.numbufs.div_ceil(2).max(1),
                _ => queued > 0,
            };
        }
        if !self.tx_started {
            return out;
        }
        let mut filled = 0;
        while filled < CHUNK {
            let Some(front) = self.tx_blocks.front() else {
                self.tx_started = false;
                if self.buffer_events {
                    self.push_event(c::EVENT_WRITE_UNDERRUN);
                }
                break;
            };
            let avail = front.get(self.tx_pos..).unwrap_or(&[]);
            let n = avail.len().min(CHUNK - filled);
            if let (Some(dst), Some(src)) = (out.get_mut(filled..filled + n), avail.get(..n)) {
                dst.copy_from_slice(src);
            }
            filled += n;
            self.tx_pos += n;
            if self.tx_pos >= front.len() {
                self.tx_blocks.pop_front();
                self.activity = self.activity.wrapping_add(1);
                self.tx_pos = 0;
            }
        }
        if self.audio_processing && !self.unity_gains {
            for b in &mut out {
                *b = self.gains.get(256 + usize::from(*b)).copied().unwrap_or(*b);
            }
        }
        out
    }

    /// Sets both gain tables (`rx` then `tx`, 256 bytes each).
    fn set_gains(&mut self, tables: &[u8]) {
        if tables.len() == self.gains.len() {
            self.gains.copy_from_slice(tables);
        }
        self.unity_gains = self
            .gains
            .iter()
            .enumerate()
            .all(|(i, &g)| g == (i % 256) as u8);
    }

    /// Accepts 8 received bytes into the current receive block.
    fn put_rx_chunk(&mut self, chunk: &[u8]) {
        if self.rx_blocks.len() >= self.numbufs {
            if !self.rx_overrun && self.buffer_events {
                self.push_event(c::EVENT_READ_OVERRUN);
            }
            self.rx_overrun = true;
            return;
        }
        self.rx_overrun = false;
        if self.audio_processing && !self.unity_gains {
            let gains = &self.gains;
            self.rx_partial.extend(
                chunk
                    .iter()
                    .map(|&b| gains.get(usize::from(b)).copied().unwrap_or(b)),
            );
        } else {
            self.rx_partial.extend_from_slice(chunk);
        }
        if self.rx_partial.len() >= self.blocksize {
            let rest = self.rx_partial.split_off(self.blocksize);
            let block = std::mem::replace(&mut self.rx_partial, rest);
            self.rx_blocks.push_back(block);
            self.activity = self.activity.wrapping_add(1);
        }
    }

    /// Advances HDLC transmission by one tick; returns a frame that finished sending.
    fn take_tx_frame(&mut self) -> Option<Vec<u8>> {
        let front = self.tx_frames.front_mut()?;
        front.remaining = front.remaining.saturating_sub(CHUNK);
        if front.remaining == 0 {
            self.activity = self.activity.wrapping_add(1);
            self.tx_frames.pop_front().map(|f| f.data)
        } else {
            None
        }
    }

    /// Receives a whole HDLC frame, checking its FCS in FCS mode.
    fn put_rx_frame(&mut self, frame: Vec<u8>) {
        if !self.open {
            return;
        }
        match self.mode() {
            Mode::Audio => {}
            mode => {
                if mode == Mode::HdlcFcs && !fcs::is_good(&frame) {
                    self.push_event(c::EVENT_BADFCS);
                } else if frame.len() > self.blocksize {
                    self.push_event(c::EVENT_OVERRUN);
                } else if self.rx_frames.len() < self.numbufs {
                    self.rx_frames.push_back(frame);
                    self.activity = self.activity.wrapping_add(1);
                }
            }
        }
    }

    fn poll_mask(&self) -> u32 {
        let mut m = 0;
        let (readable, writable) = match self.mode() {
            Mode::Audio => (
                !self.rx_blocks.is_empty(),
                self.tx_blocks.len() < self.numbufs,
            ),
            _ => (
                !self.rx_frames.is_empty(),
                self.tx_frames.len() < self.numbufs,
            ),
        };
        if readable {
            m |= (libc::POLLIN | libc::POLLRDNORM) as u32;
        }
        if writable {
            m |= (libc::POLLOUT | libc::POLLWRNORM) as u32;
        }
        if !self.events.is_empty() {
            m |= libc::POLLPRI as u32;
        }
        m
    }

    fn iomux_ready(&self, mask: i32) -> i32 {
        let mut ret = 0;
        let p = self.poll_mask();
        if mask & c::IOMUX_READ != 0 && p & libc::POLLIN as u32 != 0 {
            ret |= c::IOMUX_READ;
        }
        if mask & c::IOMUX_WRITE != 0 && p & libc::POLLOUT as u32 != 0 {
            ret |= c::IOMUX_WRITE;
        }
        if mask & c::IOMUX_WRITEEMPTY != 0 && self.tx_blocks.is_empty() && self.tx_frames.is_empty()
        {
            ret |= c::IOMUX_WRITEEMPTY;
        }
        if mask & c::IOMUX_SIGEVENT != 0 && !self.events.is_empty() {
            ret |= c::IOMUX_SIGEVENT;
        }
        ret
    }
}

/// A span.
#[derive(Debug)]
struct Span {
    line: LineType,
    name: String,
    desc: String,
    /// Index of its first channel in `Model::chans`.
    first: usize,
    count: usize,
    dchannels: Vec<usize>,
    /// Index of the span it is wired to.
    peer: Option<usize>,
    running: bool,
    lineconfig: i32,
    lbo: i32,
    sync: i32,
    /// Alarms injected on this span (its own receive side).
    alarms: i32,
    /// The far end signals a remote alarm (RAI): it has lost our signal.
    rai: bool,
    maint: i32,
    bpv: u32,
    crc4: u32,
    ebit: u32,
    fas: u32,
    slips: u32,
    pending_slips: u32,
}

impl Span {
    fn linecompat(&self) -> i32 {
        match self.line {
            LineType::E1 => c::CONFIG_AMI | c::CONFIG_HDB3 | c::CONFIG_CCS | c::CONFIG_CRC4,
            LineType::T1 => c::CONFIG_AMI | c::CONFIG_B8ZS | c::CONFIG_D4 | c::CONFIG_ESF,
        }
    }

    fn default_law(&self) -> i32 {
        match self.line {
            LineType::E1 => c::LAW_ALAW,
            LineType::T1 => c::LAW_MULAW,
        }
    }

    /// The alarms DAHDI reports: the span's own, plus YELLOW while the far end signals RAI.
    fn reported_alarms(&self) -> i32 {
        if self.rai {
            self.alarms | c::ALARM_YELLOW
        } else {
            self.alarms
        }
    }

    /// Whether the receive side sees no signal (AIS all-ones instead of the far end's data).
    fn rx_dead(&self) -> bool {
        self.alarms & (c::ALARM_RED | c::ALARM_BLUE | c::ALARM_LOS) != 0
    }
}

/// A timer fd's state.
#[derive(Debug, Default)]
struct Timer {
    /// Counts expiries and pings (see [`Channel::activity`]).
    activity: u64,
    period: i32,
    pos: i32,
    tripped: i32,
    ping: bool,
}

/// What an open file is bound to.
#[derive(Debug)]
enum Binding {
    Ctl,
    /// `channel` before DAHDI_SPECIFY.
    Unbound,
    /// A span channel, by index into `Model::chans`.
    Chan(usize),
    /// A pseudo channel owned by this file.
    Pseudo(Box<Channel>),
    Timer(Timer),
    /// A file outside the device model (control, proc text).
    Other,
}

/// The whole simulated DAHDI core.
#[derive(Debug)]
pub struct Model {
    spans: Vec<Span>,
    chans: Vec<Channel>,
    files: BTreeMap<Fh, Binding>,
    next_fh: Fh,
    next_pseudo: i32,
    blocksize_on_open: usize,
    dialparams: [i32; 6],
    default_zone: i32,
    /// Whether a tone zone was loaded (DIAL needs one, as in DAHDI).
    zone_loaded: bool,
    /// Ticks run since start.
    ticks: u64,
    /// Ticks the clock could not run on time (reported as irqmisses).
    late_ticks: u64,
    /// Scratch: this tick's transmitted chunk per span channel.
    tx_scratch: Vec<[u8; CHUNK]>,
    rx_scratch: Vec<[u8; CHUNK]>,
}

impl Model {
    /// Builds the spans and channels of `cfg`.
    pub fn new(cfg: &SimConfig) -> Self {
        let mut spans = Vec::with_capacity(cfg.spans.len());
        let mut chans = Vec::new();
        for (i, s) in cfg.spans.iter().enumerate() {
            let spanno = i + 1;
            let first = chans.len();
            for pos in 1..=s.channels {
                let channo = (first + pos) as i32;
                chans.push(Channel::new(
                    channo,
                    Some(i),
                    pos as i32,
                    format!("{}/{pos}", s.name),
                    c::SIGCAP_SPAN,
                ));
            }
            spans.push(Span {
                line: s.line,
                name: s.name.clone(),
                desc: format!("dahdi-sim {} span {spanno}", s.line.name()),
                first,
                count: s.channels,
                dchannels: s.dchannels.clone(),
                peer: None,
                running: false,
                lineconfig: 0,
                lbo: 0,
                sync: 0,
                alarms: 0,
                rai: false,
                maint: c::MAINT_NONE,
                bpv: 0,
                crc4: 0,
                ebit: 0,
                fas: 0,
                slips: 0,
                pending_slips: 0,
            });
        }
        for [a, b] in &cfg.crossconnect {
            let (a, b) = (a.saturating_sub(1), b.saturating_sub(1));
            if let Some(s) = spans.get_mut(a) {
                s.peer = Some(b);
            }
            if let Some(s) = spans.get_mut(b) {
                s.peer = Some(a);
            }
        }
        for s in &mut spans {
            if let Some(p) = s.peer {
                s.desc = format!("{} (wired to span {})", s.desc, p + 1);
            }
        }
        let n = chans.len();
        let mut model = Model {
            spans,
            chans,
            files: BTreeMap::new(),
            next_fh: 1,
            next_pseudo: FIRST_PSEUDO,
            blocksize_on_open: cfg.blocksize_on_open,
            dialparams: [0; 6],
            default_zone: 0,
            zone_loaded: false,
            ticks: 0,
            late_ticks: 0,
            tx_scratch: vec![[0xff; CHUNK]; n],
            rx_scratch: vec![[0xff; CHUNK]; n],
        };
        for ch in &mut model.chans {
            if let Some(span) = ch.span.and_then(|s| model.spans.get(s)) {
                ch.deflaw = span.default_law();
                ch.law = ch.deflaw;
            }
        }
        if cfg.preconfigured {
            model.preconfigure();
        }
        model
    }

    /// Configures every channel (B = clear, D = HDLCFCS) and starts every span.
    fn preconfigure(&mut self) {
        self.zone_loaded = true;
        for s in &mut self.spans {
            s.running = true;
            s.lineconfig = match s.line {
                LineType::E1 => c::CONFIG_CCS | c::CONFIG_HDB3 | c::CONFIG_CRC4,
                LineType::T1 => c::CONFIG_ESF | c::CONFIG_B8ZS,
            };
            for pos in 1..=s.count {
                if let Some(ch) = self.chans.get_mut(s.first + pos - 1) {
                    ch.sig = if s.dchannels.contains(&pos) {
                        c::SIG_HDLCFCS
                    } else {
                        c::SIG_CLEAR
                    };
                }
            }
        }
    }

    /// (span number, channel positions) of every span, for the `chan/SSS/CCC` tree.
    pub fn span_layout(&self) -> Vec<(usize, usize, usize)> {
        self.spans
            .iter()
            .enumerate()
            .map(|(i, s)| (i + 1, s.first + 1, s.count))
            .collect()
    }

    fn alloc_fh(&mut self, binding: Binding) -> Fh {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, binding);
        fh
    }

    /// Opens a file that is not a device (control or proc text).
    pub fn open_other(&mut self) -> Fh {
        self.alloc_fh(Binding::Other)
    }

    /// Checks that span channel `idx` can be bound to a new open and binds it.
    fn bind_channel(&mut self, idx: usize) -> Result<(), i32> {
        let blocksize = self.blocksize_on_open;
        let ch = self.chans.get_mut(idx).ok_or(errno::ENXIO)?;
        if ch.open {
            return Err(errno::EBUSY);
        }
        if ch.sig == 0 {
            return Err(errno::ENXIO);
        }
        if matches!(
            ch.sig,
            c::SIG_SLAVE | c::SIG_HDLCNET | c::SIG_DACS | c::SIG_DACS_RBS
        ) {
            return Err(errno::EBUSY);
        }
        ch.open = true;
        ch.initialize(blocksize);
        Ok(())
    }

    /// open() of a device node.
    pub fn open(&mut self, node: Node) -> Result<Fh, i32> {
        match node {
            Node::Ctl => Ok(self.alloc_fh(Binding::Ctl)),
            Node::Channel => Ok(self.alloc_fh(Binding::Unbound)),
            Node::Timer => Ok(self.alloc_fh(Binding::Timer(Timer::default()))),
            Node::Pseudo => {
                let channo = self.next_pseudo;
                self.next_pseudo = self.next_pseudo.wrapping_add(1).max(FIRST_PSEUDO);
                let mut ch = Channel::new(
                    channo,
                    None,
                    0,
                    format!("Pseudo/{}", channo - FIRST_PSEUDO + 1),
                    c::SIG_CLEAR,
                );
                ch.sig = c::SIG_CLEAR;
                ch.deflaw = c::LAW_MULAW;
                ch.open = true;
                ch.initialize(self.blocksize_on_open);
                Ok(self.alloc_fh(Binding::Pseudo(Box::new(ch))))
            }
            Node::Chan(channo) => {
                let idx = channo.checked_sub(1).ok_or(errno::ENXIO)?;
                self.bind_channel(idx)?;
                Ok(self.alloc_fh(Binding::Chan(idx)))
            }
        }
    }

    /// release() of a file.
    pub fn release(&mut self, fh: Fh) {
        if let Some(Binding::Chan(idx)) = self.files.remove(&fh) {
            if let Some(ch) = self.chans.get_mut(idx) {
                ch.open = false;
                ch.flush_buffers(true, true);
                // As DAHDI's close: a channel with hook signalling hangs up.
                if rbs::has_hook(ch.sig) {
                    ch.rbs_hangup();
                }
                ch.events.clear();
            }
        }
    }

    fn peer_of(&self, idx: usize) -> Option<usize> {
        let ch = self.chans.get(idx)?;
        let span = self.spans.get(ch.span?)?;
        let peer = self.spans.get(span.peer?)?;
        let pos = usize::try_from(ch.chanpos).ok()?;
        (pos >= 1 && pos <= peer.count).then(|| peer.first + pos - 1)
    }

    fn chan_mut(&mut self, fh: Fh) -> Result<&mut Channel, i32> {
        match self.files.get_mut(&fh) {
            Some(Binding::Chan(idx)) => {
                let idx = *idx;
                self.chans.get_mut(idx).ok_or(errno::EBADF)
            }
            Some(Binding::Pseudo(ch)) => Ok(ch.as_mut()),
            Some(_) => Err(errno::EINVAL),
            None => Err(errno::EBADF),
        }
    }

    fn chan_ref(&self, fh: Fh) -> Option<&Channel> {
        match self.files.get(&fh)? {
            Binding::Chan(idx) => self.chans.get(*idx),
            Binding::Pseudo(ch) => Some(ch.as_ref()),
            _ => None,
        }
    }

    /// read(): one block (audio) or one frame (HDLC). EAGAIN means "would block".
    pub fn read(&mut self, fh: Fh, size: u32) -> Result<Vec<u8>, i32> {
        let size = (size & 0xffff) as usize;
        let ch = self.chan_mut(fh)?;
        if size == 0 {
            return Err(errno::EINVAL);
        }
        if !ch.events.is_empty() {
            return Err(errno::ELAST);
        }
        match ch.mode() {
            Mode::Audio => {
                let block = ch.rx_blocks.pop_front().ok_or(errno::EAGAIN)?;
                if ch.linear {
                    let law = ch.law;
                    let mut out = Vec::with_capacity(block.len() * 2);
                    for &b in &block {
                        let s = to_linear(b, law);
                        out.extend_from_slice(&s.to_ne_bytes());
                    }
                    out.truncate(size);
                    Ok(out)
                } else {
                    let mut block = block;
                    block.truncate(size);
                    Ok(block)
                }
            }
            Mode::HdlcFcs | Mode::HdlcRaw => {
                let mut frame = ch.rx_frames.pop_front().ok_or(errno::EAGAIN)?;
                frame.truncate(size);
                Ok(frame)
            }
        }
    }

    /// write(): at most one block (audio) or one frame (HDLC). EAGAIN means "would block".
    pub fn write(&mut self, fh: Fh, data: &[u8]) -> Result<usize, i32> {
        let n = data.len() & 0xffff;
        let data = data.get(..n).unwrap_or(&[]);
        let ch = self.chan_mut(fh)?;
        if n == 0 {
            return Err(errno::EINVAL);
        }
        // As DAHDI: a write on a real channel cancels dialing, even when it then fails.
        if ch.span.is_some() {
            ch.dialing = None;
        }
        if !ch.events.is_empty() {
            return Err(errno::ELAST);
        }
        match ch.mode() {
            Mode::Audio => {
                if ch.tx_blocks.len() >= ch.numbufs {
                    return Err(errno::EAGAIN);
                }
                if ch.linear {
                    let take = n.min(ch.blocksize * 2) & !1;
                    if take == 0 {
                        return Err(errno::EINVAL);
                    }
                    let law = ch.law;
                    let block: Vec<u8> = data
                        .get(..take)
                        .unwrap_or(&[])
                        .chunks_exact(2)
                        .map(|p| {
                            let s = i16::from_ne_bytes([p[0], p[1]]);
                            from_linear(s, law)
                        })
                        .collect();
                    ch.tx_blocks.push_back(block);
                    Ok(take)
                } else {
                    let take = n.min(ch.blocksize);
                    ch.tx_blocks
                        .push_back(data.get(..take).unwrap_or(&[]).to_vec());
                    Ok(take)
                }
            }
            mode => {
                if ch.tx_frames.len() >= ch.numbufs {
                    return Err(errno::EAGAIN);
                }
                let take = n.min(ch.blocksize);
                let mut frame = data.get(..take).unwrap_or(&[]).to_vec();
                if mode == Mode::HdlcFcs {
                    fcs::fill(&mut frame);
                }
                if ch.corrupt_next {
                    ch.corrupt_next = false;
                    if let Some(b) = frame.first_mut() {
                        *b ^= 0x01;
                    }
                }
                ch.tx_frames.push_back(TxFrame {
                    remaining: frame.len().max(1),
                    data: frame,
                });
                Ok(take)
            }
        }
    }

    /// poll(): the ready mask of `fh`.
    pub fn poll(&self, fh: Fh) -> u32 {
        match self.files.get(&fh) {
            Some(Binding::Timer(t)) => {
                if t.tripped > 0 || t.ping {
                    libc::POLLPRI as u32
                } else {
                    0
                }
            }
            Some(Binding::Chan(_)) | Some(Binding::Pseudo(_)) => {
                self.chan_ref(fh).map(Channel::poll_mask).unwrap_or(0)
            }
            Some(Binding::Other) => (libc::POLLIN | libc::POLLOUT) as u32,
            Some(Binding::Ctl) | Some(Binding::Unbound) => 0,
            None => libc::POLLNVAL as u32,
        }
    }

    /// A counter that moves whenever any file may have become ready again (the sum of every
    /// channel's, pseudo channel's and timer's activity), so a driver of the clock can wake
    /// waiters only when something changed.
    pub fn total_activity(&self) -> u64 {
        let chans = self
            .chans
            .iter()
            .fold(0u64, |acc, ch| acc.wrapping_add(ch.activity));
        self.files.values().fold(chans, |acc, b| match b {
            Binding::Timer(t) => acc.wrapping_add(t.activity),
            Binding::Pseudo(ch) => acc.wrapping_add(ch.activity),
            _ => acc,
        })
    }

    /// A counter that moves whenever `fh` may have become ready again (see `Channel::activity`).
    pub fn activity(&self, fh: Fh) -> u64 {
        match self.files.get(&fh) {
            Some(Binding::Timer(t)) => t.activity,
            _ => self.chan_ref(fh).map(|ch| ch.activity).unwrap_or(0),
        }
    }

    fn find_chan_by_number(&self, channo: i32) -> Option<&Channel> {
        if channo >= 1 {
            if let Some(ch) = self.chans.get((channo - 1) as usize) {
                return Some(ch);
            }
        }
        self.files.values().find_map(|b| match b {
            Binding::Pseudo(ch) if ch.channo == channo => Some(ch.as_ref()),
            _ => None,
        })
    }

    fn span_of_fh(&self, fh: Fh) -> Option<usize> {
        self.chan_ref(fh).and_then(|ch| ch.span)
    }

    /// The span providing timing: the running span with the best (lowest non-zero) sync
    /// priority, as DAHDI picks its master; 0 when none.
    fn sync_source(&self) -> i32 {
        self.spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.running && s.sync > 0 && !s.rx_dead())
            .min_by_key(|(_, s)| s.sync)
            .map(|(i, _)| i as i32 + 1)
            .unwrap_or(0)
    }

    /// Queues `ev` on every channel of span `idx` (open or not; open clears the queue).
    fn span_event(&mut self, idx: usize, ev: i32) {
        let Some(span) = self.spans.get(idx) else {
            return;
        };
        let range = span.first..span.first + span.count;
        if let Some(chs) = self.chans.get_mut(range) {
            for ch in chs.iter_mut().filter(|ch| ch.open) {
                ch.push_event(ev);
            }
        }
    }

    /// Sets a span's alarm bits, queuing ALARM/NOALARM on its channels when the state changes.
    /// A span that loses the far end's signal (RED, LOS, BLUE) sends it a remote alarm
    /// indication, so the far end of the cable goes YELLOW, as on a real E1/T1.
    pub fn set_alarms(&mut self, idx: usize, alarms: i32) -> Result<(), String> {
        let span = self
            .spans
            .get(idx)
            .ok_or_else(|| format!("no span {}", idx + 1))?;
        let peer = span.peer;
        let before =
            [Some(idx), peer].map(|i| i.and_then(|i| self.spans.get(i)).map(Span::reported_alarms));
        if let Some(span) = self.spans.get_mut(idx) {
            span.alarms = alarms;
        }
        let dead = self.spans.get(idx).is_some_and(Span::rx_dead);
        if let Some(p) = peer.and_then(|p| self.spans.get_mut(p)) {
            p.rai = dead;
        }
        for (i, was) in [Some(idx), peer].into_iter().zip(before) {
            let (Some(i), Some(was)) = (i, was) else {
                continue;
            };
            let now = self.spans.get(i).map(Span::reported_alarms).unwrap_or(0);
            if (was == 0) != (now == 0) {
                let ev = if now == 0 {
                    c::EVENT_NOALARM
                } else {
                    c::EVENT_ALARM
                };
                self.span_event(i, ev);
            }
        }
        Ok(())
    }

    /// Advances the simulated hardware by one 1 ms tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let n = self.chans.len();
        // 1. What every span channel transmits this tick.
        let mut frames: Vec<(usize, Vec<u8>)> = Vec::new();
        for i in 0..n {
            let Some(ch) = self.chans.get_mut(i) else {
                continue;
            };
            let chunk = if ch.open && ch.mode() == Mode::Audio {
                ch.take_tx_chunk()
            } else {
                if let Some(f) = ch.take_tx_frame() {
                    frames.push((i, f));
                }
                [ch.idle_byte(); CHUNK]
            };
            ch.rbs_tx_tick();
            if let Some(dialing) = ch.dialing.as_mut() {
                *dialing = dialing.saturating_sub(1);
                if *dialing == 0 {
                    ch.dialing = None;
                    ch.push_event(c::EVENT_DIALCOMPLETE);
                }
            }
            if let Some(slot) = self.tx_scratch.get_mut(i) {
                *slot = chunk;
            }
        }
        // 2. What every span channel receives: its own tx when looped, the far end's when
        //    wired, all-ones (AIS) when the span has lost its signal.
        for i in 0..n {
            let src = self.rx_source(i);
            let Some(ch) = self.chans.get(i) else {
                continue;
            };
            let span = ch.span.and_then(|s| self.spans.get(s));
            let dead = span.is_some_and(Span::rx_dead);
            let chunk = match (dead, src) {
                (true, _) => [0xff; CHUNK],
                (false, Some(s)) => self.tx_scratch.get(s).copied().unwrap_or([0xff; CHUNK]),
                (false, None) => [ch.idle_byte(); CHUNK],
            };
            if let Some(slot) = self.rx_scratch.get_mut(i) {
                *slot = chunk;
            }
        }
        // 2b. Robbed-bit signalling: every channel reads the ABCD bits its far end sends (a
        //     span that lost its signal delivers no new bits) and runs its receive timers.
        for i in 0..n {
            let bits = match self.chans.get(i) {
                Some(ch)
                    if ch
                        .span
                        .is_some_and(|s| self.spans.get(s).is_some_and(Span::rx_dead)) =>
                {
                    None
                }
                Some(_) => self
                    .rx_source(i)
                    .and_then(|s| self.chans.get(s))
                    .map(|src| src.rbs.txsig),
                None => None,
            };
            if let Some(ch) = self.chans.get_mut(i) {
                if let Some(bits) = bits {
                    ch.rbs_receive_bits(bits);
                }
                ch.rbs_rx_tick();
            }
        }
        for i in 0..n {
            let slip = self
                .chans
                .get(i)
                .and_then(|ch| ch.span)
                .and_then(|s| self.spans.get(s))
                .is_some_and(|s| s.pending_slips > 0);
            let chunk = self.rx_scratch.get(i).copied().unwrap_or([0xff; CHUNK]);
            if let Some(ch) = self.chans.get_mut(i) {
                if ch.open && ch.mode() == Mode::Audio {
                    // A controlled slip deletes one frame: one byte of every timeslot.
                    let from = usize::from(slip);
                    ch.put_rx_chunk(chunk.get(from..).unwrap_or(&[]));
                }
            }
        }
        for s in &mut self.spans {
            if s.pending_slips > 0 {
                s.pending_slips -= 1;
                s.slips = s.slips.saturating_add(1);
            }
        }
        // 3. HDLC frames that finished sending arrive at the far end.
        for (i, frame) in frames {
            let Some(dst) = self.rx_source_of_far_end(i) else {
                continue;
            };
            let dead = self
                .chans
                .get(dst)
                .and_then(|ch| ch.span)
                .and_then(|s| self.spans.get(s))
                .is_some_and(Span::rx_dead);
            if !dead {
                if let Some(ch) = self.chans.get_mut(dst) {
                    ch.put_rx_frame(frame);
                }
            }
        }
        // 4. Pseudo channels and timers.
        let Model {
            chans,
            files,
            rx_scratch,
            tx_scratch,
            ..
        } = self;
        for b in files.values_mut() {
            match b {
                Binding::Pseudo(ch) => {
                    let _ = ch.take_tx_chunk();
                    // A monitor hears the watched channel in linear, re-encoded in its own law.
                    let target = ioctl::index_of(ch.conf[1]).and_then(|t| {
                        Some((chans.get(t)?.law, rx_scratch.get(t)?, tx_scratch.get(t)?))
                    });
                    let mode = ch.conf[2] & c::CONF_MODE_MASK;
                    let chunk = match (mode, target) {
                        (c::CONF_MONITOR, Some((law, rx, _))) => mix(Some(rx), None, law, ch.law),
                        (c::CONF_MONITORTX, Some((law, _, tx))) => mix(None, Some(tx), law, ch.law),
                        (c::CONF_MONITORBOTH, Some((law, rx, tx))) => {
                            mix(Some(rx), Some(tx), law, ch.law)
                        }
                        _ => [ch.idle_byte(); CHUNK],
                    };
                    ch.put_rx_chunk(&chunk);
                }
                Binding::Timer(t) if t.period > 0 => {
                    t.pos -= CHUNK as i32;
                    while t.pos <= 0 {
                        t.tripped = t.tripped.saturating_add(1);
                        t.activity = t.activity.wrapping_add(1);
                        t.pos += t.period;
                    }
                }
                _ => {}
            }
        }
    }

    /// Records that the clock ran `n` ticks late (shown as irqmisses).
    pub fn note_late(&mut self, n: u64) {
        self.late_ticks = self.late_ticks.saturating_add(n);
    }

    /// Index of the channel whose transmit this channel receives.
    fn rx_source(&self, idx: usize) -> Option<usize> {
        let ch = self.chans.get(idx)?;
        let span = self.spans.get(ch.span?)?;
        if ch.loopback || span.maint == c::MAINT_LOCALLOOP {
            return Some(idx);
        }
        self.peer_of(idx)
    }

    /// Index of the channel that receives what channel `idx` transmits.
    fn rx_source_of_far_end(&self, idx: usize) -> Option<usize> {
        let ch = self.chans.get(idx)?;
        let span = self.spans.get(ch.span?)?;
        if ch.loopback || span.maint == c::MAINT_LOCALLOOP {
            return Some(idx);
        }
        let peer = self.peer_of(idx)?;
        // The far end may itself be looped locally, in which case nothing arrives from us.
        let far = self.chans.get(peer)?;
        let far_span = self.spans.get(far.span?)?;
        (!far.loopback && far_span.maint != c::MAINT_LOCALLOOP).then_some(peer)
    }
}

/// Mixes two G.711 chunks through linear.
fn to_linear(byte: u8, law: i32) -> i16 {
    if law == c::LAW_ALAW {
        g711::alaw_decode(byte)
    } else {
        g711::ulaw_decode(byte)
    }
}

fn from_linear(sample: i16, law: i32) -> u8 {
    if law == c::LAW_ALAW {
        g711::alaw_encode(sample)
    } else {
        g711::ulaw_encode(sample)
    }
}

/// Sums up to two chunks of law `from` in linear and encodes the result in law `to`.
fn mix(a: Option<&[u8; CHUNK]>, b: Option<&[u8; CHUNK]>, from: i32, to: i32) -> [u8; CHUNK] {
    let mut out = [0u8; CHUNK];
    for (i, o) in out.iter_mut().enumerate() {
        let x = a.and_then(|a| a.get(i)).map_or(0, |&v| to_linear(v, from));
        let y = b.and_then(|b| b.get(i)).map_or(0, |&v| to_linear(v, from));
        *o = from_linear(x.saturating_add(y), to);
    }
    out
}

mod ioctl;
mod rbs;
mod text;

#[cfg(test)]
mod tests;

//! [`SimSpans`]: the simulated DAHDI as an in-process [`Backend`], so the safe API (`Ctl`,
//! `Channel`, `Pseudo`, `Timer`) and the span thread run unchanged on it.
//!
//! Two clock modes:
//! - [`ClockMode::Manual`] (virtual time): nothing moves until the test calls
//!   [`SimSpans::advance`]; a read with no block ready fails with `WouldBlock` on a
//!   non-blocking handle and waits (up to 2 s, then `WouldBlock`) for another thread's
//!   `advance` on a blocking one. Deterministic.
//! - [`ClockMode::Thread`]: a thread ticks the 1 ms master clock in real time (catching up after
//!   a late wake-up), and blocking reads wait for it, like DAHDI.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::config::SimConfig;
use super::model::{self, Fh, IoctlResult, Model};
use crate::abi;
use crate::backend::{Backend, Node, Op};

/// How the simulated master clock advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Only when [`SimSpans::advance`] is called (virtual time).
    Manual,
    /// A thread ticks every millisecond in real time.
    Thread,
}

#[derive(Debug)]
struct Shared {
    model: Mutex<Model>,
    tick: Condvar,
    stop: AtomicBool,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Model> {
    // A panic while holding the lock cannot leave the model half-updated in a way that matters
    // to a test; keep serving.
    shared.model.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-process simulated DAHDI (see the module docs).
#[derive(Debug)]
pub struct SimSpans {
    shared: Arc<Shared>,
    clock: Option<std::thread::JoinHandle<()>>,
    layout: Vec<(usize, usize, usize)>,
}

/// An open simulated node. Dropping it closes the node (a channel can then be opened again).
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    fh: Fh,
    nonblocking: bool,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        lock(&self.shared).release(self.fh);
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl SimSpans {
    /// The default span set: two E1 spans wired to each other, channels unconfigured (configure
    /// them with `Ctl` and `config::apply`, or use [`SimSpans::preconfigured`]).
    pub fn new(mode: ClockMode) -> Self {
        Self::with_config(&SimConfig::default(), mode)
    }

    /// The default E1 pair with every B-channel clear and every D-channel HDLCFCS, as if
    /// `dahdi_cfg` had run.
    pub fn preconfigured(mode: ClockMode) -> Self {
        let cfg = SimConfig {
            preconfigured: true,
            ..SimConfig::default()
        };
        Self::with_config(&cfg, mode)
    }

    /// A span set from a configuration (E1/T1 spans, D-channels, cross-connects), as
    /// `dahdi-sim --config` reads it.
    pub fn with_config(cfg: &SimConfig, mode: ClockMode) -> Self {
        let model = Model::new(cfg);
        let layout = model.span_layout();
        let shared = Arc::new(Shared {
            model: Mutex::new(model),
            tick: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let clock = match mode {
            ClockMode::Manual => None,
            ClockMode::Thread => {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name("sim-clock".into())
                    .spawn(move || clock_thread(&s))
                    .ok()
            }
        };
        SimSpans {
            shared,
            clock,
            layout,
        }
    }

    /// A span set from TOML text (the `dahdi-sim --config` format).
    pub fn from_toml(text: &str, mode: ClockMode) -> Result<Self, String> {
        let cfg = SimConfig::parse(text).map_err(|e| e.to_string())?;
        Ok(Self::with_config(&cfg, mode))
    }

    /// Advances the master clock by `ms` milliseconds (manual mode; in thread mode it adds
    /// ticks on top of real time).
    pub fn advance(&self, ms: u64) {
        {
            let mut m = lock(&self.shared);
            for _ in 0..ms {
                m.tick();
            }
        }
        self.shared.tick.notify_all();
    }

    /// Runs a control command, as written to `dahdi-sim`'s `sim/control`: `alarm SPAN RED`,
    /// `clear SPAN`, `slip SPAN [N]`, `bpv SPAN N`, `corrupt CHANNO`, ...
    pub fn control(&self, command: &str) -> Result<(), String> {
        let r = lock(&self.shared).control(command);
        self.shared.tick.notify_all();
        r
    }

    /// The simulator's status text (clock, spans, alarms, slips).
    pub fn status(&self) -> String {
        lock(&self.shared).status_text()
    }

    /// (span number, first channel number, channel count) of every span.
    pub fn layout(&self) -> &[(usize, usize, usize)] {
        &self.layout
    }

    fn channo_of(&self, span: u32, chan: u32) -> Option<usize> {
        self.layout
            .iter()
            .find(|(s, _, _)| *s == span as usize)
            .filter(|(_, _, count)| chan >= 1 && chan as usize <= *count)
            .map(|(_, first, _)| first + chan as usize - 1)
    }
}

impl Drop for SimSpans {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.tick.notify_all();
        if let Some(c) = self.clock.take() {
            let _ = c.join();
        }
    }
}

fn clock_thread(shared: &Shared) {
    let start = Instant::now();
    let mut ticks: u64 = 0;
    let mut seen_activity = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = start.elapsed().as_millis() as u64;
        if due > ticks {
            let changed = {
                let mut m = lock(shared);
                // Catch up, but never more than 100 ms at once.
                let n = (due - ticks).min(100);
                for _ in 0..n {
                    m.tick();
                }
                ticks += n;
                if due > ticks {
                    m.note_late(due - ticks);
                    ticks = due;
                }
                // Wake blocked readers only when a block, frame, event or timer changed
                // something (at 20 ms blocks: ~50 times a second instead of 1,000).
                let now = m.total_activity();
                let changed = now != seen_activity;
                seen_activity = now;
                changed
            };
            if changed {
                shared.tick.notify_all();
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Input bytes and expected output size of an [`Op`], in the layout DAHDI's ioctl copies.
fn encode_op(op: &Op<'_>) -> Vec<u8> {
    fn int(v: i32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }
    match op {
        Op::SetBlockSize(v)
        | Op::SetLaw(v)
        | Op::SetLinear(v)
        | Op::AudioMode(v)
        | Op::HdlcFcsMode(v)
        | Op::HdlcRate(v)
        | Op::Hook(v)
        | Op::Flush(v)
        | Op::BufferEvents(v)
        | Op::Startup(v)
        | Op::Shutdown(v)
        | Op::DefaultZone(v)
        | Op::TimerConfig(v)
        | Op::TimerAck(v)
        | Op::SetTxBits(v)
        | Op::SetPolarity(v) => int(*v),
        Op::IoMux(v) => int(**v),
        Op::ChanNo(_)
        | Op::GetBlockSize(_)
        | Op::GetEvent(_)
        | Op::GetRxBits(_)
        | Op::TimerPing
        | Op::TimerPong => Vec::new(),
        Op::GetBufInfo(_) | Op::GetGains(_) | Op::SpanStat(_) | Op::GetVersion(_) => {
            // _IOR/_IOWR structs: the caller's struct goes in (span number, channel number).
            match op {
                Op::GetGains(g) => g.as_bytes().to_vec(),
                Op::SpanStat(s) => s.as_bytes().to_vec(),
                _ => Vec::new(),
            }
        }
        Op::SetBufInfo(b) => b.as_bytes().to_vec(),
        Op::Dial(d) => d.as_bytes().to_vec(),
        Op::SetGains(g) => g.as_bytes().to_vec(),
        Op::GetParams(p) => p.as_bytes().to_vec(),
        Op::SetParams(p) => p.as_bytes().to_vec(),
        Op::GetConf(c) => c.as_bytes().to_vec(),
        Op::SetConf(c) => c.as_bytes().to_vec(),
        Op::SpanConfig(l) => l.as_bytes().to_vec(),
        Op::ChanConfig(c) => c.as_bytes().to_vec(),
        Op::Maint(m) => m.as_bytes().to_vec(),
        Op::AttachEchoCan(a) => a.as_bytes().to_vec(),
        Op::SetCadence(c) => c.as_bytes().to_vec(),
    }
}

/// Copies the model's reply into the [`Op`]'s output.
fn decode_reply(op: Op<'_>, out: &[u8]) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "simulator reply of the wrong size",
        )
    };
    fn int(out: &[u8]) -> Option<i32> {
        Some(i32::from_ne_bytes(out.get(..4)?.try_into().ok()?))
    }
    match op {
        Op::ChanNo(v) | Op::GetBlockSize(v) | Op::GetEvent(v) | Op::IoMux(v) | Op::GetRxBits(v) => {
            *v = int(out).ok_or_else(bad)?;
        }
        Op::GetBufInfo(b) => *b = abi::BufferInfo::from_bytes(out).ok_or_else(bad)?,
        Op::GetGains(g) => *g = abi::Gains::from_bytes(out).ok_or_else(bad)?,
        Op::GetParams(p) => *p = abi::Params::from_bytes(out).ok_or_else(bad)?,
        Op::GetConf(c) | Op::SetConf(c) if !out.is_empty() => {
            *c = abi::ConfInfo::from_bytes(out).ok_or_else(bad)?;
        }
        Op::SpanStat(s) => *s = abi::SpanInfo::from_bytes(out).ok_or_else(bad)?,
        Op::GetVersion(v) => *v = abi::VersionInfo::from_bytes(out).ok_or_else(bad)?,
        _ => {}
    }
    Ok(())
}

impl Backend for SimSpans {
    type Handle = SimHandle;

    fn open(&self, node: Node, nonblocking: bool) -> io::Result<SimHandle> {
        let mut m = lock(&self.shared);
        let fh = match node {
            Node::Ctl => m.open(model::Node::Ctl),
            Node::Pseudo => m.open(model::Node::Pseudo),
            Node::Timer => m.open(model::Node::Timer),
            Node::SpanChannel { span, chan } => match self.channo_of(span, chan) {
                Some(channo) => m.open(model::Node::Chan(channo)),
                None => Err(libc::ENOENT),
            },
            Node::Channel(channo) => m.open(model::Node::Channel).and_then(|fh| {
                match m.ioctl(fh, abi::DAHDI_SPECIFY as u32, &channo.to_ne_bytes()) {
                    IoctlResult::Done(..) => Ok(fh),
                    IoctlResult::Err(e) => {
                        m.release(fh);
                        Err(e)
                    }
                    IoctlResult::Block => {
                        m.release(fh);
                        Err(libc::EAGAIN)
                    }
                }
            }),
        }
        .map_err(errno)?;
        Ok(SimHandle {
            shared: self.shared.clone(),
            fh,
            nonblocking,
        })
    }

    fn read(&self, handle: &SimHandle, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut m = lock(&self.shared);
        loop {
            match m.read(handle.fh, buf.len().min(u32::MAX as usize) as u32) {
                Ok(data) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    return Ok(n);
                }
                Err(e) if e == libc::EAGAIN && !handle.nonblocking => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || self.shared.stop.load(Ordering::Relaxed) {
                        return Err(errno(libc::EAGAIN));
                    }
                    m = self
                        .shared
                        .tick
                        .wait_timeout(m, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                Err(e) => return Err(errno(e)),
            }
        }
    }

    fn write(&self, handle: &SimHandle, buf: &[u8]) -> io::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut m = lock(&self.shared);
        loop {
            match m.write(handle.fh, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e == libc::EAGAIN && !handle.nonblocking => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || self.shared.stop.load(Ordering::Relaxed) {
                        return Err(errno(libc::EAGAIN));
                    }
                    m = self
                        .shared
                        .tick
                        .wait_timeout(m, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                Err(e) => return Err(errno(e)),
            }
        }
    }

    fn ioctl(&self, handle: &SimHandle, op: Op<'_>) -> io::Result<()> {
        let request = op.request() as u32;
        let input = encode_op(&op);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut m = lock(&self.shared);
        loop {
            match m.ioctl(handle.fh, request, &input) {
                IoctlResult::Done(_, out) => {
                    drop(m);
                    return decode_reply(op, &out);
                }
                IoctlResult::Err(e) => return Err(errno(e)),
                IoctlResult::Block => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if handle.nonblocking || left.is_zero() {
                        return Err(errno(libc::EAGAIN));
                    }
                    m = self
                        .shared
                        .tick
                        .wait_timeout(m, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }

    fn path_of(&self, node: Node) -> PathBuf {
        PathBuf::from("sim:").join(node.relative_path())
    }
}

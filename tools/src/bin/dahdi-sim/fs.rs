//! The FUSE face of the simulator: the file tree (`ctl`, `channel`, `pseudo`, `timer`,
//! `chan/SSS/CCC`, `sim/control`, `sim/proc/dahdi/N`), and the parking of blocking reads,
//! writes and IOMUX calls until a clock tick can answer them — each with a deadline, because
//! fuser does not handle FUSE_INTERRUPT and a client blocked on an unanswered request could not
//! even be killed.

use crate::model::{Fh, IoctlResult, Model, Node, errno};
use crate::wire::Ioctl;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Default for how long a blocking call may stay parked before it is answered with EINTR (the
/// caller retries, as after a signal). Real DAHDI waits forever; the limit exists because a
/// client killed while parked cannot exit before its request is answered.
pub(crate) const DEFAULT_PARK_LIMIT: Duration = Duration::from_secs(30);
/// How long an open or SPECIFY that finds its channel busy waits for a release before it is
/// answered EBUSY. close() of a FUSE file returns before the daemon hears RELEASE (the kernel
/// sends it in the background), so "close, then open again" would otherwise race; with real
/// DAHDI close is synchronous and the re-open succeeds.
const BUSY_GRACE: Duration = Duration::from_millis(50);
/// Attribute and entry cache lifetime.
const TTL: Duration = Duration::from_secs(1);

const INO_ROOT: u64 = 1;
const INO_CTL: u64 = 2;
const INO_CHANNEL: u64 = 3;
const INO_PSEUDO: u64 = 4;
const INO_TIMER: u64 = 5;
const INO_CHAN_DIR: u64 = 6;
const INO_SIM_DIR: u64 = 7;
const INO_CONTROL: u64 = 8;
const INO_PROC_DIR: u64 = 9;
const INO_PROC_DAHDI_DIR: u64 = 10;
/// `chan/SSS` directories: base + span number.
const INO_SPAN_DIR_BASE: u64 = 1_000;
/// `sim/proc/dahdi/N` files: base + span number.
const INO_PROC_FILE_BASE: u64 = 2_000;
/// `chan/SSS/CCC` files: base + channel number.
const INO_CHAN_FILE_BASE: u64 = 100_000;

/// A blocking call waiting for the clock.
enum Parked {
    /// An open of a busy channel, waiting out [`BUSY_GRACE`].
    Open(Node, ReplyOpen),
    Read(u32, ReplyData),
    Write(Vec<u8>, ReplyWrite),
    Ioctl(u32, Vec<u8>, u32, ReplyIoctl),
    /// A DAHDI_SPECIFY that found its channel busy, waiting out [`BUSY_GRACE`].
    Specify(u32, Vec<u8>, u32, ReplyIoctl),
}

struct ParkedCall {
    fh: Fh,
    call: Parked,
    deadline: Instant,
}

/// An answer to send once the lock is released.
enum Answer {
    Open(ReplyOpen, Result<Fh, i32>),
    Read(ReplyData, Result<Vec<u8>, i32>),
    Write(ReplyWrite, Result<usize, i32>),
    Ioctl(ReplyIoctl, u32, IoctlResult),
    Poll(PollNotifier),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Open(r, Ok(fh)) => r.opened(FileHandle(fh), device_open_flags()),
            Answer::Open(r, Err(e)) => r.error(Errno::from_i32(e)),
            Answer::Read(r, Ok(data)) => r.data(&data),
            Answer::Read(r, Err(e)) => r.error(Errno::from_i32(e)),
            Answer::Write(r, Ok(n)) => r.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Answer::Write(r, Err(e)) => r.error(Errno::from_i32(e)),
            Answer::Ioctl(r, out_size, res) => send_ioctl(r, out_size, res),
            Answer::Poll(n) => {
                // The kernel drops notifications for files already closed; nothing to do.
                let _ = n.notify();
            }
        }
    }
}

fn send_ioctl(reply: ReplyIoctl, out_size: u32, res: IoctlResult) {
    match res {
        IoctlResult::Done(ret, out) => {
            let n = out.len().min(out_size as usize);
            reply.ioctl(ret, out.get(..n).unwrap_or(&[]));
        }
        IoctlResult::Err(e) => reply.error(Errno::from_i32(e)),
        IoctlResult::Block => reply.error(Errno::EINTR),
    }
}

/// A poll waiting for a readiness edge.
struct Poller {
    notifier: PollNotifier,
    wanted: u32,
    reported: u32,
    /// The file's activity counter when the kernel polled: a new block or frame that replaces
    /// one consumed within the same tick leaves the mask unchanged but is a new edge.
    activity: u64,
}

/// Non-device files' contents per open.
enum Extra {
    /// `sim/control`: status text snapshot taken at open.
    Control(Vec<u8>),
    /// `sim/proc/dahdi/N` snapshot taken at open.
    Text(Vec<u8>),
}

/// Everything the FUSE threads and the clock share.
pub(crate) struct Shared {
    model: Model,
    parked: VecDeque<ParkedCall>,
    /// Files a poll is waiting on: the kernel's handle, the events it asked for and the ready
    /// mask it was last told. Notified when a wanted event becomes ready that was not ready
    /// then — which must include edges of an event *other* than one already ready (epoll, as
    /// tokio uses it, asks for IN|OUT|PRI at once and a channel is nearly always writable).
    pollers: BTreeMap<Fh, Poller>,
    extras: BTreeMap<Fh, Extra>,
}

impl Shared {
    pub(crate) fn new(model: Model) -> Self {
        Shared {
            model,
            parked: VecDeque::new(),
            pollers: BTreeMap::new(),
            extras: BTreeMap::new(),
        }
    }
}

/// Locks the shared state, recovering it if a thread panicked while holding it.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `ticks` clock ticks (more than one when the clock thread woke late), then answers every
/// parked call that can now complete or has waited too long, and wakes pollers.
pub(crate) fn run_ticks(shared: &Mutex<Shared>, ticks: u64, now: Instant) {
    let mut answers = Vec::new();
    {
        let mut s = lock(shared);
        for _ in 0..ticks {
            s.model.tick();
        }
        retry_parked(&mut s, now, &mut answers);
        let Shared { model, pollers, .. } = &mut *s;
        let mut edges = Vec::new();
        for (fh, p) in pollers.iter_mut() {
            let now = model.poll(*fh) & p.wanted;
            let moved = model.activity(*fh) != p.activity;
            if now & !p.reported != 0 || (moved && now != 0) {
                edges.push(*fh);
            } else {
                // Events that went away are forgotten, so their return is an edge again.
                p.reported = now;
            }
        }
        for fh in edges {
            if let Some(p) = pollers.remove(&fh) {
                answers.push(Answer::Poll(p.notifier));
            }
        }
    }
    for a in answers {
        a.send();
    }
}

/// Records ticks the clock had to drop.
pub(crate) fn note_late(shared: &Mutex<Shared>, ticks: u64) {
    lock(shared).model.note_late(ticks);
}

/// Answers every parked call with EINTR (used at shutdown).
pub(crate) fn release_all_parked(shared: &Mutex<Shared>) {
    let parked: Vec<ParkedCall> = lock(shared).parked.drain(..).collect();
    for p in parked {
        interrupt(p.call);
    }
}

fn interrupt(call: Parked) {
    match call {
        Parked::Read(_, r) => r.error(Errno::EINTR),
        Parked::Write(_, r) => r.error(Errno::EINTR),
        Parked::Ioctl(_, _, _, r) => r.error(Errno::EINTR),
        Parked::Open(_, r) => r.error(Errno::EBUSY),
        Parked::Specify(_, _, _, r) => r.error(Errno::EBUSY),
    }
}

fn retry_parked(s: &mut Shared, now: Instant, answers: &mut Vec<Answer>) {
    let mut still = VecDeque::with_capacity(s.parked.len());
    while let Some(p) = s.parked.pop_front() {
        let expired = now >= p.deadline;
        match p.call {
            Parked::Read(size, reply) => match s.model.read(p.fh, size) {
                Err(errno::EAGAIN) if !expired => still.push_back(ParkedCall {
                    call: Parked::Read(size, reply),
                    ..p
                }),
                Err(errno::EAGAIN) => answers.push(Answer::Read(reply, Err(errno::EINTR))),
                r => answers.push(Answer::Read(reply, r)),
            },
            Parked::Write(data, reply) => match s.model.write(p.fh, &data) {
                Err(errno::EAGAIN) if !expired => still.push_back(ParkedCall {
                    call: Parked::Write(data, reply),
                    ..p
                }),
                Err(errno::EAGAIN) => answers.push(Answer::Write(reply, Err(errno::EINTR))),
                r => answers.push(Answer::Write(reply, r)),
            },
            Parked::Ioctl(cmd, input, out_size, reply) => match s.model.ioctl(p.fh, cmd, &input) {
                IoctlResult::Block if !expired => still.push_back(ParkedCall {
                    call: Parked::Ioctl(cmd, input, out_size, reply),
                    ..p
                }),
                r => answers.push(Answer::Ioctl(reply, out_size, r)),
            },
            Parked::Open(node, reply) => match s.model.open(node) {
                Err(errno::EBUSY) if !expired => still.push_back(ParkedCall {
                    call: Parked::Open(node, reply),
                    ..p
                }),
                r => answers.push(Answer::Open(reply, r)),
            },
            Parked::Specify(cmd, input, out_size, reply) => {
                match s.model.ioctl(p.fh, cmd, &input) {
                    IoctlResult::Err(errno::EBUSY) if !expired => still.push_back(ParkedCall {
                        call: Parked::Specify(cmd, input, out_size, reply),
                        ..p
                    }),
                    r => answers.push(Answer::Ioctl(reply, out_size, r)),
                }
            }
        }
    }
    s.parked = still;
}

/// The FUSE filesystem.
pub(crate) struct DahdiFs {
    shared: Arc<Mutex<Shared>>,
    /// (span number, first channel number, channel count) per span.
    layout: Vec<(usize, usize, usize)>,
    started: SystemTime,
    park_limit: Duration,
}

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    Device(Node),
    Control,
    ProcFile(usize),
}

impl DahdiFs {
    pub(crate) fn new(shared: Arc<Mutex<Shared>>, park_limit: Duration) -> Self {
        let layout = lock(&shared).model.span_layout();
        DahdiFs {
            shared,
            layout,
            started: SystemTime::now(),
            park_limit,
        }
    }

    fn span_exists(&self, spanno: u64) -> bool {
        self.layout.iter().any(|(s, _, _)| *s as u64 == spanno)
    }

    fn total_channels(&self) -> u64 {
        self.layout.iter().map(|(_, _, n)| *n as u64).sum()
    }

    fn entry(&self, ino: u64) -> Option<Entry> {
        Some(match ino {
            INO_ROOT | INO_CHAN_DIR | INO_SIM_DIR | INO_PROC_DIR | INO_PROC_DAHDI_DIR => Entry::Dir,
            INO_CTL => Entry::Device(Node::Ctl),
            INO_CHANNEL => Entry::Device(Node::Channel),
            INO_PSEUDO => Entry::Device(Node::Pseudo),
            INO_TIMER => Entry::Device(Node::Timer),
            INO_CONTROL => Entry::Control,
            n if n > INO_CHAN_FILE_BASE && n <= INO_CHAN_FILE_BASE + self.total_channels() => {
                Entry::Device(Node::Chan((n - INO_CHAN_FILE_BASE) as usize))
            }
            n if n > INO_PROC_FILE_BASE && self.span_exists(n - INO_PROC_FILE_BASE) => {
                Entry::ProcFile((n - INO_PROC_FILE_BASE) as usize)
            }
            n if n > INO_SPAN_DIR_BASE && self.span_exists(n - INO_SPAN_DIR_BASE) => Entry::Dir,
            _ => return None,
        })
    }

    /// The entries of directory `ino`: (inode, kind, name).
    fn children(&self, ino: u64) -> Option<Vec<(u64, FileType, String)>> {
        let file = FileType::RegularFile;
        let dir = FileType::Directory;
        Some(match ino {
            INO_ROOT => vec![
                (INO_CTL, file, "ctl".into()),
                (INO_CHANNEL, file, "channel".into()),
                (INO_PSEUDO, file, "pseudo".into()),
                (INO_TIMER, file, "timer".into()),
                (INO_CHAN_DIR, dir, "chan".into()),
                (INO_SIM_DIR, dir, "sim".into()),
            ],
            INO_CHAN_DIR => self
                .layout
                .iter()
                .map(|(s, _, _)| (INO_SPAN_DIR_BASE + *s as u64, dir, format!("{s:03}")))
                .collect(),
            INO_SIM_DIR => vec![
                (INO_CONTROL, file, "control".into()),
                (INO_PROC_DIR, dir, "proc".into()),
            ],
            INO_PROC_DIR => vec![(INO_PROC_DAHDI_DIR, dir, "dahdi".into())],
            INO_PROC_DAHDI_DIR => self
                .layout
                .iter()
                .map(|(s, _, _)| (INO_PROC_FILE_BASE + *s as u64, file, s.to_string()))
                .collect(),
            n if n > INO_SPAN_DIR_BASE && n < INO_PROC_FILE_BASE => {
                let spanno = (n - INO_SPAN_DIR_BASE) as usize;
                let (_, first, count) = *self.layout.iter().find(|(s, _, _)| *s == spanno)?;
                (1..=count)
                    .map(|pos| {
                        let channo = first + pos - 1;
                        (
                            INO_CHAN_FILE_BASE + channo as u64,
                            file,
                            format!("{pos:03}"),
                        )
                    })
                    .collect()
            }
            _ => return None,
        })
    }

    fn parent_of(&self, ino: u64) -> u64 {
        match ino {
            INO_PROC_DAHDI_DIR => INO_PROC_DIR,
            INO_PROC_DIR => INO_SIM_DIR,
            n if n > INO_SPAN_DIR_BASE && n < INO_PROC_FILE_BASE => INO_CHAN_DIR,
            _ => INO_ROOT,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let entry = self.entry(ino)?;
        let (kind, perm, nlink) = match entry {
            Entry::Dir => (FileType::Directory, 0o755, 2),
            Entry::Device(_) | Entry::Control => (FileType::RegularFile, 0o666, 1),
            Entry::ProcFile(_) => (FileType::RegularFile, 0o444, 1),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

/// Open flags for device files: see the FUSE limits in `../shared/peers.md` (without STREAM a
/// write queues behind a blocked read; without PARALLEL_DIRECT_WRITES one channel's blocked
/// write stalls another's).
fn device_open_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
        | FopenFlags::FOPEN_NONSEEKABLE
        | FopenFlags::FOPEN_STREAM
        | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
}

fn nonblocking(flags: OpenFlags) -> bool {
    flags.0 & libc::O_NONBLOCK != 0
}

impl Filesystem for DahdiFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.children(parent.0).and_then(|kids| {
            kids.into_iter()
                .find(|(_, _, n)| OsStr::new(n) == name)
                .map(|(ino, _, _)| ino)
        });
        match found.and_then(|ino| self.attr(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Truncation (`echo cmd > control`) and the like are accepted and ignored.
        match self.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(kids) = self.children(ino.0) else {
            reply.error(Errno::ENOTDIR);
            return;
        };
        let mut all = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (self.parent_of(ino.0), FileType::Directory, "..".to_string()),
        ];
        all.extend(kids);
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(entry) = self.entry(ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let mut s = self.lock();
        match entry {
            Entry::Dir => {
                drop(s);
                reply.error(Errno::EISDIR);
            }
            Entry::Device(node) => match s.model.open(node) {
                Err(errno::EBUSY) => s.parked.push_back(ParkedCall {
                    fh: 0,
                    call: Parked::Open(node, reply),
                    deadline: Instant::now() + BUSY_GRACE,
                }),
                res => {
                    drop(s);
                    Answer::Open(reply, res).send();
                }
            },
            Entry::Control | Entry::ProcFile(_) => {
                let text = match entry {
                    Entry::ProcFile(n) => s.model.proc_text(n).unwrap_or_default(),
                    _ => s.model.status_text(),
                };
                let fh = s.model.open_other();
                let extra = if entry == Entry::Control {
                    Extra::Control(text.into_bytes())
                } else {
                    Extra::Text(text.into_bytes())
                };
                s.extras.insert(fh, extra);
                drop(s);
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
                );
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.lock();
        if let Some(Extra::Control(t) | Extra::Text(t)) = s.extras.get(&fh.0) {
            let start = (offset as usize).min(t.len());
            let end = start.saturating_add(size as usize).min(t.len());
            let chunk = t.get(start..end).unwrap_or(&[]).to_vec();
            drop(s);
            reply.data(&chunk);
            return;
        }
        match s.model.read(fh.0, size) {
            Err(errno::EAGAIN) if !nonblocking(flags) => {
                s.parked.push_back(ParkedCall {
                    fh: fh.0,
                    call: Parked::Read(size, reply),
                    deadline: Instant::now() + self.park_limit,
                });
            }
            res => {
                drop(s);
                Answer::Read(reply, res).send();
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        match s.extras.get(&fh.0) {
            Some(Extra::Control(_)) => {
                let text = String::from_utf8_lossy(data).into_owned();
                let mut result = Ok(());
                for line in text.lines() {
                    if let Err(e) = s.model.control(line) {
                        result = Err(e);
                        break;
                    }
                }
                drop(s);
                match result {
                    Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
                    Err(e) => {
                        tracing::warn!("control: {e}");
                        reply.error(Errno::EINVAL);
                    }
                }
                return;
            }
            Some(Extra::Text(_)) => {
                drop(s);
                reply.error(Errno::EBADF);
                return;
            }
            None => {}
        }
        match s.model.write(fh.0, data) {
            Err(errno::EAGAIN) if !nonblocking(flags) => {
                s.parked.push_back(ParkedCall {
                    fh: fh.0,
                    call: Parked::Write(data.to_vec(), reply),
                    deadline: Instant::now() + self.park_limit,
                });
            }
            res => {
                drop(s);
                Answer::Write(reply, res).send();
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let orphans: Vec<ParkedCall> = {
            let mut s = self.lock();
            s.model.release(fh.0);
            s.pollers.remove(&fh.0);
            s.extras.remove(&fh.0);
            let (orphans, keep): (VecDeque<_>, VecDeque<_>) =
                s.parked.drain(..).partition(|p| p.fh == fh.0);
            s.parked = keep;
            orphans.into_iter().collect()
        };
        for p in orphans {
            interrupt(p.call);
        }
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let mut s = self.lock();
        match s.model.ioctl(fh.0, cmd, in_data) {
            IoctlResult::Err(errno::EBUSY) if crate::wire::decode(cmd) == Some(Ioctl::Specify) => {
                s.parked.push_back(ParkedCall {
                    fh: fh.0,
                    call: Parked::Specify(cmd, in_data.to_vec(), out_size, reply),
                    deadline: Instant::now() + BUSY_GRACE,
                });
            }
            IoctlResult::Block => {
                s.parked.push_back(ParkedCall {
                    fh: fh.0,
                    call: Parked::Ioctl(cmd, in_data.to_vec(), out_size, reply),
                    deadline: Instant::now() + self.park_limit,
                });
            }
            res => {
                drop(s);
                send_ioctl(reply, out_size, res);
            }
        }
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let mut s = self.lock();
        let ready = s.model.poll(fh.0);
        let activity = s.model.activity(fh.0);
        let wanted = events.bits() | (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u32;
        if flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY) {
            s.pollers.insert(
                fh.0,
                Poller {
                    notifier: ph,
                    wanted,
                    reported: ready & wanted,
                    activity,
                },
            );
        }
        drop(s);
        reply.poll(PollEvents::from_bits_truncate(ready & wanted));
    }
}

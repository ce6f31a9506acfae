//! Concurrent calls with media through the media plane, side by side with `rtpengine` relaying
//! the same streams in the same run (issue 4, benchmarks). Prints a table.
//!
//! For each call count N, one relay at a time runs as its own process on this machine:
//! - **spanbridge**: this binary re-executed with `--serve`, a `MediaPlane` (2 workers) with N
//!   calls, each two legs (PCMU on A, PCMA on B) bridged: every packet is decoded, jitter
//!   buffered, bridged and re-encoded in the other law (transcoded);
//! - **rtpengine** in userspace (`--table=-1`, no kernel module), N calls set up over its ng
//!   control protocol (bencode over UDP, offer/answer), relaying the same streams unchanged;
//!   optionally also **rtpengine transcoding** PCMU ↔ PCMA (`--rtpengine-transcode`).
//!
//! The load generator is this process, one thread: every call is two RTP streams at 50
//! packets/s (A → relay → B and B → relay → A), spread evenly over each 20 ms, sent with
//! `sendmmsg` and received with `recvmmsg` on a few sockets. Per run: warm-up, then a measured
//! window in which it reads the relay's `utime + stime` from `/proc/<pid>/stat` (CPU per packet
//! = that CPU ÷ packets sent to the relay in the window; each is relayed once), the relay's RSS
//! before and after setting the calls up (memory per call), and for every output stream
//! packets lost (sequence gaps) and late (arriving more than 40 ms behind the stream's own best
//! arrival schedule). The spanbridge server also reports its processing latency histograms.
//!
//! `cargo bench -p gateway --bench media_load -- --calls 500,1000,2000 --seconds 10`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::media::codec::AudioFormat;
use gateway::media::plane::{MediaId, MediaPlane, PlaneConfig, RtpParams};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

static RT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A command for a relay process, under `chrt -f 10` with `--rt`.
fn relay_command(program: &std::path::Path) -> Command {
    if RT.load(std::sync::atomic::Ordering::Relaxed) {
        let mut c = Command::new("chrt");
        c.args(["-f", "10"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Generator sockets (streams are spread over them).
const GEN_SOCKETS: usize = 8;
const BATCH: usize = 128;
/// A packet arriving this much later than its stream's best schedule counts as late.
const LATE_AFTER_US: i64 = 40_000;

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let (u, s) = proc_user_sys(pid);
    u + s
}

/// (utime, stime) of a process in clock ticks, from `/proc/<pid>/stat`.
fn proc_user_sys(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (get(11), get(12))
}

fn ticks_per_sec() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on Linux.
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |v| v as f64)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------- server side

/// `--serve`: a media plane driven over stdin/stdout lines.
fn serve(workers: usize, phases: u16) {
    raise_fd_limit();
    let plane = MediaPlane::start(PlaneConfig {
        workers,
        phases,
        rtp_ports: 20000..=29999,
        measure_latency: true,
        socket_buffer: Some(256 * 1024),
        ..PlaneConfig::default()
    })
    .expect("plane");
    let mut legs: Vec<MediaId> = vec![];
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["open", n] => {
                let n: usize = n.parse().unwrap();
                let mut ports = vec![];
                for call in 0..n {
                    let (a, pa) = plane.open_rtp(call as u64, LOCAL).unwrap();
                    let (b, pb) = plane.open_rtp(call as u64, LOCAL).unwrap();
                    for (id, f) in [(a, AudioFormat::Pcmu), (b, AudioFormat::Pcma)] {
                        plane
                            .configure_rtp(
                                id,
                                RtpParams {
                                    rtcp_mux: true,
                                    ..RtpParams::new(f, None)
                                },
                            )
                            .unwrap();
                    }
                    plane.connect(a, b).unwrap();
                    legs.extend([a, b]);
                    ports.push(format!("{} {}", pa.port(), pb.port()));
                }
                plane.flush(Duration::from_secs(10));
                writeln!(out, "ports {}", ports.join(" ")).unwrap();
            }
            ["reset"] => {
                plane.reset_latency();
                let (late, concealed, played) = jb_totals(&plane, &legs);
                writeln!(out, "ok {late} {concealed} {played}").unwrap();
            }
            ["stats"] => {
                let l = plane.latency();
                let (late, concealed, played) = jb_totals(&plane, &legs);
                let us = |d: Duration| d.as_micros();
                writeln!(
                    out,
                    "stats {late} {concealed} {played} {} {} {} {} {} {} {} {:.6} {}",
                    l.receive.count(),
                    us(l.receive.percentile(0.5)),
                    us(l.receive.percentile(0.99)),
                    us(l.receive.percentile(0.999)),
                    us(l.send.percentile(0.5)),
                    us(l.send.percentile(0.99)),
                    us(l.send.percentile(0.999)),
                    l.send.fraction_above(Duration::from_millis(1)),
                    l.overloaded_phases,
                )
                .unwrap();
            }
            ["quit"] | [] => break,
            _ => writeln!(out, "error {line}").unwrap(),
        }
        out.flush().unwrap();
    }
    for id in legs {
        plane.release(id);
    }
    plane.shutdown();
}

fn jb_totals(plane: &MediaPlane, legs: &[MediaId]) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for &id in legs {
        if let Some(s) = plane.stats(id) {
            t.0 += s.packets_late;
            t.1 += s.frames_concealed;
            t.2 += s.packets_sent;
        }
    }
    t
}

// ------------------------------------------------------------------------------- IO models

/// `--serve-io MODEL`: a bare relay with no media processing (packet in on one leg's socket,
/// out of its partner's to wherever the partner's peer sends from), to compare IO models on
/// the same load: `epoll-lt` (level-triggered, one `recvfrom` per readiness report — the
/// plane's model), `epoll-et` (edge-triggered, drained to `EAGAIN` — mio's and tokio's
/// semantics), `recvmmsg` (level-triggered, `recvmmsg` of up to 8 per report) and `tokio` (a
/// current-thread runtime per worker, one task per socket).
fn serve_io(model: &str, workers: usize) {
    raise_fd_limit();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut lines = stdin.lock().lines();
    let Some(Ok(l)) = lines.next() else { return };
    let n: usize = l
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut socks = vec![];
    let mut ports = vec![];
    for _ in 0..2 * n {
        let s = UdpSocket::bind((LOCAL, 0)).unwrap();
        s.set_nonblocking(true).unwrap();
        ports.push(s.local_addr().unwrap().port().to_string());
        socks.push(s);
    }
    let pairs: Vec<Vec<(UdpSocket, UdpSocket)>> = {
        let mut per: Vec<Vec<(UdpSocket, UdpSocket)>> = (0..workers).map(|_| vec![]).collect();
        let mut it = socks.into_iter();
        let mut k = 0;
        while let (Some(a), Some(b)) = (it.next(), it.next()) {
            per[k % workers].push((a, b));
            k += 1;
        }
        per
    };
    writeln!(out, "ports {}", ports.join(" ")).unwrap();
    out.flush().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = pairs
        .into_iter()
        .map(|p| {
            let model = model.to_string();
            let stop = stop.clone();
            std::thread::spawn(move || match model.as_str() {
                "tokio" => io_tokio(p, stop),
                m => io_epoll(p, m, stop),
            })
        })
        .collect();
    for l in lines {
        if l.map_or(true, |l| l.trim() == "quit") {
            break;
        }
        writeln!(out, "ok").unwrap();
        out.flush().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
}

fn io_epoll(
    pairs: Vec<(UdpSocket, UdpSocket)>,
    model: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    let edge = model == "epoll-et";
    let flags = if edge {
        EpollFlags::EPOLLIN | EpollFlags::EPOLLET
    } else {
        EpollFlags::EPOLLIN
    };
    let socks: Vec<&UdpSocket> = pairs.iter().flat_map(|(a, b)| [a, b]).collect();
    for (i, s) in socks.iter().enumerate() {
        epoll.add(*s, EpollEvent::new(flags, i as u64)).unwrap();
    }
    let mut latched: Vec<Option<SocketAddr>> = vec![None; socks.len()];
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = [0u8; 2048];
    let mut mbufs = vec![[0u8; 256]; 8];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(8, None);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let n = epoll.wait(&mut events, 100u16).unwrap_or(0);
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let partner = i ^ 1;
            match model {
                "recvmmsg" => {
                    let mut got = [(0usize, None::<SocketAddr>); 8];
                    let mut k = 0;
                    {
                        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = mbufs
                            .iter_mut()
                            .map(|b| [IoSliceMut::new(&mut b[..])])
                            .collect();
                        if let Ok(res) = recvmmsg(
                            socks[i].as_raw_fd(),
                            &mut headers,
                            iovs.iter_mut(),
                            MsgFlags::MSG_DONTWAIT,
                            None,
                        ) {
                            for r in res {
                                got[k] = (r.bytes, r.address.map(|a| SocketAddr::V4(a.into())));
                                k += 1;
                            }
                        }
                    }
                    for (j, &(len, from)) in got[..k].iter().enumerate() {
                        latched[i] = from;
                        if let Some(to) = latched[partner] {
                            let _ = socks[partner].send_to(&mbufs[j][..len], to);
                        }
                    }
                }
                _ => {
                    while let Ok((len, from)) = socks[i].recv_from(&mut buf) {
                        latched[i] = Some(from);
                        if let Some(to) = latched[partner] {
                            let _ = socks[partner].send_to(&buf[..len], to);
                        }
                        if !edge {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn io_tokio(
    pairs: Vec<(UdpSocket, UdpSocket)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::{Arc, Mutex};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = vec![];
        for (a, b) in pairs {
            let a = Arc::new(tokio::net::UdpSocket::from_std(a).unwrap());
            let b = Arc::new(tokio::net::UdpSocket::from_std(b).unwrap());
            let la = Arc::new(Mutex::new(None::<SocketAddr>));
            let lb = Arc::new(Mutex::new(None::<SocketAddr>));
            for (rx, tx, mine, theirs) in [
                (a.clone(), b.clone(), la.clone(), lb.clone()),
                (b, a, lb, la),
            ] {
                tasks.push(tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while let Ok((n, from)) = rx.recv_from(&mut buf).await {
                        *mine.lock().unwrap() = Some(from);
                        let to = *theirs.lock().unwrap();
                        if let Some(to) = to {
                            let _ = tx.try_send_to(&buf[..n], to);
                        }
                    }
                }));
            }
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for t in tasks {
            t.abort();
        }
    });
}

fn run_io_model(model: &str, calls: usize, seconds: u64, workers: usize) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let mut child: Child = relay_command(&exe)
        .args(["--serve-io", model, "--workers", &workers.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut cin: ChildStdin = child.stdin.take().unwrap();
    let mut cout = BufReader::new(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = rss_kib(pid);
    writeln!(cin, "open {calls}").unwrap();
    let reply = line(&mut cout);
    let ports: Vec<u16> = reply
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    let mut g = Generator::new();
    for c in 0..calls {
        let (pa, pb) = (ports[2 * c], ports[2 * c + 1]);
        g.add_stream((2 * c) % GEN_SOCKETS, pa, AudioFormat::Pcmu, pb);
        g.add_stream((2 * c + 1) % GEN_SOCKETS, pb, AudioFormat::Pcma, pa);
    }
    let o = run_load(calls, seconds, pid, rss_before, &mut g, |_| String::new());
    writeln!(cin, "quit").unwrap();
    let _ = child.wait();
    o
}

// ------------------------------------------------------------------------------- bencode (ng)

#[derive(Debug, Clone)]
enum B {
    S(Vec<u8>),
    I(i64),
    L(Vec<B>),
    D(BTreeMap<Vec<u8>, B>),
}

fn s(v: &str) -> B {
    B::S(v.as_bytes().to_vec())
}

fn encode(b: &B, out: &mut Vec<u8>) {
    match b {
        B::S(v) => {
            out.extend_from_slice(format!("{}:", v.len()).as_bytes());
            out.extend_from_slice(v);
        }
        B::I(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::L(l) => {
            out.push(b'l');
            l.iter().for_each(|x| encode(x, out));
            out.push(b'e');
        }
        B::D(d) => {
            out.push(b'd');
            for (k, v) in d {
                encode(&B::S(k.clone()), out);
                encode(v, out);
            }
            out.push(b'e');
        }
    }
}

fn decode(b: &[u8]) -> Option<(B, &[u8])> {
    match *b.first()? {
        b'i' => {
            let end = b.iter().position(|&c| c == b'e')?;
            let i = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
            Some((B::I(i), &b[end + 1..]))
        }
        b'l' => {
            let mut rest = &b[1..];
            let mut l = vec![];
            while *rest.first()? != b'e' {
                let (x, r) = decode(rest)?;
                l.push(x);
                rest = r;
            }
            Some((B::L(l), &rest[1..]))
        }
        b'd' => {
            let mut rest = &b[1..];
            let mut d = BTreeMap::new();
            while *rest.first()? != b'e' {
                let (B::S(k), r) = decode(rest)? else {
                    return None;
                };
                let (v, r) = decode(r)?;
                d.insert(k, v);
                rest = r;
            }
            Some((B::D(d), &rest[1..]))
        }
        _ => {
            let colon = b.iter().position(|&c| c == b':')?;
            let n: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
            let v = b.get(colon + 1..colon + 1 + n)?.to_vec();
            Some((B::S(v), &b[colon + 1 + n..]))
        }
    }
}

fn dict(items: &[(&str, B)]) -> B {
    B::D(
        items
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect(),
    )
}

fn field<'a>(d: &'a B, k: &str) -> Option<&'a [u8]> {
    match d {
        B::D(m) => match m.get(k.as_bytes())? {
            B::S(v) => Some(v),
            _ => None,
        },
        _ => None,
    }
}

struct Ng {
    sock: UdpSocket,
    to: SocketAddr,
    cookie: u64,
}

impl Ng {
    fn call(&mut self, msg: &B) -> Result<B, String> {
        self.cookie += 1;
        let mut out = format!("{} ", self.cookie).into_bytes();
        encode(msg, &mut out);
        let mut buf = vec![0u8; 65536];
        for _attempt in 0..5 {
            self.sock
                .send_to(&out, self.to)
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let Ok(n) = self.sock.recv(&mut buf) else {
                    continue;
                };
                let text = &buf[..n];
                let Some(sp) = text.iter().position(|&c| c == b' ') else {
                    continue;
                };
                if text[..sp] != *self.cookie.to_string().as_bytes() {
                    continue;
                }
                let (reply, _) = decode(&text[sp + 1..]).ok_or("undecodable ng reply")?;
                if !matches!(field(&reply, "result"), Some(b"ok") | Some(b"pong")) {
                    return Err(format!(
                        "ng error: {}",
                        String::from_utf8_lossy(field(&reply, "error-reason").unwrap_or(b"?"))
                    ));
                }
                return Ok(reply);
            }
        }
        Err("rtpengine did not answer".into())
    }
}

fn sdp(port: u16, pts: &str) -> String {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pts} 101\r\n"
    );
    for pt in pts.split_whitespace() {
        let name = if pt == "0" { "PCMU" } else { "PCMA" };
        s.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
    }
    s.push_str("a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\na=rtcp-mux\r\n");
    s
}

fn sdp_port(sdp: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(sdp).ok()?;
    let m = text.lines().find(|l| l.starts_with("m=audio "))?;
    m.split_whitespace().nth(1)?.parse().ok()
}

// ------------------------------------------------------------------------------- generator

struct Stream {
    dest: SockaddrIn,
    packet: [u8; 172],
    seq: u16,
    ts: u32,
}

#[derive(Default, Clone)]
struct OutStream {
    first_seq: Option<u16>,
    ext_max: i64,
    received: u64,
    late: u64,
    min_offset_us: Option<i64>,
    ts0: u32,
    /// Snapshot at the start of the measured window.
    mark: (i64, u64, u64),
}

struct Generator {
    socks: Vec<UdpSocket>,
    streams: Vec<Stream>,
    /// Stream indices by (slot within 20 ms, socket).
    schedule: Vec<Vec<Vec<usize>>>,
    /// Output stream by the relay's source port.
    out_by_port: Vec<u32>,
    outs: Vec<OutStream>,
    sent: u64,
    send_errors: u64,
    t0: Instant,
    bufs: Vec<[u8; 256]>,
    send_headers: MultiHeaders<SockaddrIn>,
}

impl Generator {
    fn new() -> Self {
        let socks = (0..GEN_SOCKETS)
            .map(|_| {
                let s = UdpSocket::bind((LOCAL, 0)).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ =
                    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
                let _ =
                    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBuf, &(4 << 20));
                s
            })
            .collect();
        Self {
            socks,
            streams: vec![],
            schedule: vec![vec![vec![]; GEN_SOCKETS]; 20],
            out_by_port: vec![u32::MAX; 65536],
            outs: vec![],
            sent: 0,
            send_errors: 0,
            t0: Instant::now(),
            bufs: vec![[0; 256]; BATCH],
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    fn sock_port(&self, k: usize) -> u16 {
        self.socks[k].local_addr().unwrap().port()
    }

    /// A stream sent from socket `sock` to `dest`, whose relayed copy comes from `out_port`.
    fn add_stream(&mut self, sock: usize, dest: u16, law: AudioFormat, out_port: u16) {
        let i = self.streams.len();
        let pt = law.static_payload_type().unwrap_or(0);
        let mut packet = [0u8; 172];
        packet[0] = 0x80;
        packet[1] = pt;
        packet[8..12].copy_from_slice(&(0x1000_0000 + i as u32).to_be_bytes());
        let pcm: Vec<i16> = (0..160)
            .map(|n| ((n as f32 * 0.71 + i as f32).sin() * 8000.0) as i16)
            .collect();
        law.encode_from(&pcm, &mut packet[12..]);
        self.streams.push(Stream {
            dest: SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, dest)),
            packet,
            seq: (i * 7) as u16,
            ts: (i * 1000) as u32,
        });
        self.schedule[i % 20][sock].push(i);
        self.out_by_port[usize::from(out_port)] = self.outs.len() as u32;
        self.outs.push(OutStream::default());
    }

    fn send_slot(&mut self, slot: usize) {
        for k in 0..GEN_SOCKETS {
            let list = std::mem::take(&mut self.schedule[slot][k]);
            for chunk in list.chunks(BATCH) {
                for &i in chunk {
                    let st = &mut self.streams[i];
                    st.packet[2..4].copy_from_slice(&st.seq.to_be_bytes());
                    st.packet[4..8].copy_from_slice(&st.ts.to_be_bytes());
                    st.seq = st.seq.wrapping_add(1);
                    st.ts = st.ts.wrapping_add(160);
                }
                let iovs: Vec<[IoSlice<'_>; 1]> = chunk
                    .iter()
                    .map(|&i| [IoSlice::new(&self.streams[i].packet)])
                    .collect();
                let addrs: Vec<Option<SockaddrIn>> =
                    chunk.iter().map(|&i| Some(self.streams[i].dest)).collect();
                let fd = self.socks[k].as_raw_fd();
                match sendmmsg(
                    fd,
                    &mut self.send_headers,
                    &iovs,
                    &addrs,
                    [],
                    MsgFlags::empty(),
                ) {
                    Ok(r) => {
                        let n = r.count();
                        self.sent += n as u64;
                        self.send_errors += (chunk.len() - n) as u64;
                    }
                    Err(_) => self.send_errors += chunk.len() as u64,
                }
            }
            self.schedule[slot][k] = list;
        }
    }

    fn receive(&mut self, headers: &mut MultiHeaders<SockaddrIn>) {
        let now_us = self.t0.elapsed().as_micros() as i64;
        for k in 0..GEN_SOCKETS {
            loop {
                let mut meta = [(0usize, 0u16); BATCH];
                let mut n = 0;
                {
                    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                        .bufs
                        .iter_mut()
                        .map(|b| [IoSliceMut::new(&mut b[..])])
                        .collect();
                    let fd = self.socks[k].as_raw_fd();
                    let Ok(res) =
                        recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                    else {
                        break;
                    };
                    for r in res {
                        meta[n] = (r.bytes, r.address.map_or(0, |a| a.port()));
                        n += 1;
                    }
                }
                for (j, &(len, port)) in meta[..n].iter().enumerate() {
                    self.account(j, len, port, now_us);
                }
                if n < BATCH {
                    break;
                }
            }
        }
    }

    fn account(&mut self, j: usize, len: usize, port: u16, now_us: i64) {
        let b = &self.bufs[j];
        if len < 12 || (200..=206).contains(&b[1]) {
            return;
        }
        let Some(o) = self
            .out_by_port
            .get(usize::from(port))
            .and_then(|&i| self.outs.get_mut(i as usize))
        else {
            return;
        };
        let seq = u16::from_be_bytes([b[2], b[3]]);
        let ts = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let first = *o.first_seq.get_or_insert(seq);
        if o.received == 0 {
            o.ts0 = ts;
        }
        // Extend the sequence number around the highest seen.
        let delta = seq.wrapping_sub(first.wrapping_add(o.ext_max as u16)) as i16;
        let ext = o.ext_max + i64::from(delta);
        o.ext_max = o.ext_max.max(ext);
        o.received += 1;
        let media_us = i64::from(ts.wrapping_sub(o.ts0) as i32) * 125;
        let offset = now_us - media_us;
        let best = *o.min_offset_us.get_or_insert(offset);
        if offset < best {
            o.min_offset_us = Some(offset);
        } else if offset - best > LATE_AFTER_US {
            o.late += 1;
        }
    }

    fn mark(&mut self) {
        for o in &mut self.outs {
            o.mark = (o.ext_max, o.received, o.late);
        }
    }

    /// (expected, received, lost, late) over the window since `mark`.
    fn window(&self) -> (u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0);
        for o in &self.outs {
            let expected = (o.ext_max - o.mark.0).max(0) as u64;
            let received = o.received - o.mark.1;
            t.0 += expected;
            t.1 += received;
            t.2 += expected.saturating_sub(received);
            t.3 += o.late - o.mark.2;
        }
        t
    }

    /// Sends every stream's packets on time for `d`, receiving as it goes.
    fn run_for(&mut self, d: Duration, tick: &mut u64, headers: &mut MultiHeaders<SockaddrIn>) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            let due = self.t0 + Duration::from_millis(*tick);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            self.send_slot((*tick % 20) as usize);
            self.receive(headers);
            *tick += 1;
        }
    }
}

struct Outcome {
    calls: usize,
    send_errors: u64,
    pps_in: f64,
    cpu_us_per_packet: f64,
    cpu_share: f64,
    /// Share of the relay's CPU spent in user space (the rest is the kernel: syscalls, UDP).
    user_share: f64,
    rss_per_call_kib: f64,
    lost_pct: f64,
    late_pct: f64,
    gen_share: f64,
    extra: String,
}

fn run_load(
    calls: usize,
    seconds: u64,
    pid: u32,
    rss_before: u64,
    generator: &mut Generator,
    mut on_window: impl FnMut(bool) -> String,
) -> Outcome {
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut tick = generator.t0.elapsed().as_millis() as u64 + 1;
    generator.run_for(Duration::from_secs(3), &mut tick, &mut headers);
    let rss_after = rss_kib(pid);
    let _ = on_window(false);
    generator.mark();
    let user0 = proc_user_sys(pid).0;
    let (cpu0, gen0, sent0, t0) = (
        proc_cpu_ticks(pid),
        proc_cpu_ticks(std::process::id()),
        generator.sent,
        Instant::now(),
    );
    generator.run_for(Duration::from_secs(seconds), &mut tick, &mut headers);
    let (cpu1, gen1, sent1, el) = (
        proc_cpu_ticks(pid),
        proc_cpu_ticks(std::process::id()),
        generator.sent,
        t0.elapsed().as_secs_f64(),
    );
    let user1 = proc_user_sys(pid).0;
    // The relay's own figures, while the streams still run.
    let extra = on_window(true);
    generator.run_for(Duration::from_millis(60), &mut tick, &mut headers);
    let (expected, _received, lost, late) = generator.window();
    let hz = ticks_per_sec();
    let packets = (sent1 - sent0) as f64;
    let cpu_s = (cpu1 - cpu0) as f64 / hz;
    Outcome {
        calls,
        send_errors: generator.send_errors,
        pps_in: packets / el,
        cpu_us_per_packet: cpu_s * 1e6 / packets.max(1.0),
        cpu_share: cpu_s / el,
        user_share: (user1 - user0) as f64 / (cpu1 - cpu0).max(1) as f64,
        rss_per_call_kib: rss_after.saturating_sub(rss_before) as f64 / calls as f64,
        lost_pct: 100.0 * lost as f64 / expected.max(1) as f64,
        late_pct: 100.0 * late as f64 / expected.max(1) as f64,
        gen_share: (gen1 - gen0) as f64 / hz / el,
        extra,
    }
}

fn line(child_out: &mut BufReader<ChildStdout>) -> String {
    let mut l = String::new();
    child_out.read_line(&mut l).unwrap();
    l
}

fn run_spanbridge(calls: usize, seconds: u64, workers: usize, phases: u16) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let mut child: Child = relay_command(&exe)
        .args([
            "--serve",
            "--workers",
            &workers.to_string(),
            "--phases",
            &phases.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut cin: ChildStdin = child.stdin.take().unwrap();
    let mut cout = BufReader::new(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid);
    writeln!(cin, "open {calls}").unwrap();
    let reply = line(&mut cout);
    let ports: Vec<u16> = reply
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2 * calls, "{reply}");
    let mut g = Generator::new();
    for c in 0..calls {
        let (pa, pb) = (ports[2 * c], ports[2 * c + 1]);
        // A stream: PCMU to leg A, relayed (as PCMA) out of leg B; and the reverse.
        g.add_stream((2 * c) % GEN_SOCKETS, pa, AudioFormat::Pcmu, pb);
        g.add_stream((2 * c + 1) % GEN_SOCKETS, pb, AudioFormat::Pcma, pa);
    }
    let mut jb0 = (0u64, 0u64, 0u64);
    let outcome = run_load(calls, seconds, pid, rss_before, &mut g, |end| {
        if !end {
            writeln!(cin, "reset").unwrap();
            let r = line(&mut cout);
            let v: Vec<u64> = r
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            jb0 = (v[0], v[1], v[2]);
            return String::new();
        }
        writeln!(cin, "stats").unwrap();
        let r = line(&mut cout);
        let v: Vec<&str> = r.split_whitespace().skip(1).collect();
        let n = |i: usize| v[i].parse::<f64>().unwrap_or(0.0);
        let frames = (n(2) - jb0.2 as f64).max(1.0);
        format!(
            "plane: jitter-buffer late {:.4} %, concealed {:.4} % of {} frames sent; receive p50/p99/p99.9 {}/{}/{} µs; send (from phase deadline) p50/p99/p99.9 {}/{}/{} µs, {:.4} % over 1 ms; overloaded phases {}",
            100.0 * (n(0) - jb0.0 as f64) / frames,
            100.0 * (n(1) - jb0.1 as f64) / frames,
            frames,
            v[4],
            v[5],
            v[6],
            v[7],
            v[8],
            v[9],
            100.0 * n(10),
            v[11]
        )
    });
    writeln!(cin, "quit").unwrap();
    let _ = child.wait();
    outcome
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((LOCAL, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_rtpengine(calls: usize, seconds: u64, transcode: bool) -> Result<Outcome, String> {
    let ng_port = free_udp_port();
    let log = std::fs::File::create(std::env::temp_dir().join("media_load_rtpengine.log"))
        .map_err(|e| e.to_string())?;
    let mut child = relay_command(std::path::Path::new("rtpengine"))
        .args([
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            &format!("--listen-ng=127.0.0.1:{ng_port}"),
            "--port-min=10000",
            "--port-max=19999",
            "--foreground",
            "--log-stderr",
            "--log-level=3",
            "--num-threads=2",
            "--delete-delay=0",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start rtpengine (Debian package rtpengine-daemon): {e}"))?;
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(700));
    let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut ng = Ng {
        sock,
        to: SocketAddr::new(LOCAL, ng_port),
        cookie: 0,
    };
    let result = (|| {
        ng.call(&dict(&[("command", s("ping"))]))?;
        let rss_before = rss_kib(pid);
        let mut g = Generator::new();
        for c in 0..calls {
            let (ka, kb) = ((2 * c) % GEN_SOCKETS, (2 * c + 1) % GEN_SOCKETS);
            let (ga, gb) = (g.sock_port(ka), g.sock_port(kb));
            let call_id = format!("bench-{c}");
            let mut offer = vec![
                ("command", s("offer")),
                ("call-id", s(&call_id)),
                ("from-tag", s(&format!("a{c}"))),
                ("sdp", s(&sdp(ga, if transcode { "0" } else { "0 8" }))),
                ("replace", B::L(vec![s("origin"), s("session-connection")])),
            ];
            if transcode {
                offer.push((
                    "codec",
                    dict(&[
                        ("transcode", B::L(vec![s("PCMA")])),
                        ("strip", B::L(vec![s("PCMU")])),
                    ]),
                ));
            }
            let r = ng.call(&dict(&offer))?;
            let to_b =
                sdp_port(field(&r, "sdp").ok_or("offer: no SDP")?).ok_or("offer: no port")?;
            let answer = dict(&[
                ("command", s("answer")),
                ("call-id", s(&call_id)),
                ("from-tag", s(&format!("a{c}"))),
                ("to-tag", s(&format!("b{c}"))),
                ("sdp", s(&sdp(gb, if transcode { "8" } else { "0 8" }))),
                ("replace", B::L(vec![s("origin"), s("session-connection")])),
            ]);
            let r = ng.call(&answer)?;
            let to_a =
                sdp_port(field(&r, "sdp").ok_or("answer: no SDP")?).ok_or("answer: no port")?;
            // A sends to rtpengine's A-facing port; its copy leaves from the B-facing port.
            g.add_stream(ka, to_a, AudioFormat::Pcmu, to_b);
            g.add_stream(kb, to_b, AudioFormat::Pcma, to_a);
        }
        let _ = B::I(0);
        Ok(run_load(calls, seconds, pid, rss_before, &mut g, |_| {
            String::new()
        }))
    })();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    result
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let workers: usize = arg("--workers").and_then(|w| w.parse().ok()).unwrap_or(2);
    let phases: u16 = arg("--phases").and_then(|w| w.parse().ok()).unwrap_or(20);
    if args.iter().any(|a| a == "--serve") {
        serve(workers, phases);
        return;
    }
    if let Some(model) = arg("--serve-io") {
        serve_io(&model, workers);
        return;
    }
    raise_fd_limit();
    let rt = args.iter().any(|a| a == "--rt");
    if rt {
        // SCHED_FIFO for the generator (and, below, for every relay process), so that a
        // machine loaded by other jobs does not turn scheduling delay into "late" packets.
        let _ = Command::new("chrt")
            .args(["-f", "-a", "-p", "10", &std::process::id().to_string()])
            .status();
    }
    RT.store(rt, std::sync::atomic::Ordering::Relaxed);
    let calls: Vec<usize> = arg("--calls")
        .unwrap_or_else(|| "500,1000,2000".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    let with_rtpengine = !args.iter().any(|a| a == "--no-rtpengine");
    let transcode = args.iter().any(|a| a == "--rtpengine-transcode");
    println!(
        "| relay | calls | packets/s in | CPU per packet | of which user | relay CPU (of 2 cores) | RSS per call | lost | late (> 40 ms) | generator CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, o: &Outcome| {
        if o.send_errors > 0 {
            eprintln!("{name}: generator send errors {}", o.send_errors);
        }
        println!(
            "| {name} | {} | {:.0} | {:.2} µs | {:.0} % | {:.1} % | {:.1} KiB | {:.4} % | {:.4} % | {:.1} % |",
            o.calls,
            o.pps_in,
            o.cpu_us_per_packet,
            100.0 * o.user_share,
            100.0 * o.cpu_share / 2.0,
            o.rss_per_call_kib,
            o.lost_pct,
            o.late_pct,
            100.0 * o.gen_share / 2.0,
        );
    };
    if let Some(n) = arg("--io-models").and_then(|n| n.parse::<usize>().ok()) {
        for model in ["epoll-lt", "epoll-et", "recvmmsg", "tokio"] {
            let o = run_io_model(model, n, seconds, workers);
            row(&format!("bare relay, IO model {model}"), &o);
        }
    }
    let mut notes = vec![];
    for &n in &calls {
        let o = run_spanbridge(n, seconds, workers, phases);
        row("spanbridge (PCMU ↔ PCMA transcoded)", &o);
        notes.push(format!("{n} calls: {}", o.extra));
        if with_rtpengine {
            match run_rtpengine(n, seconds, false) {
                Ok(o) => row("rtpengine userspace (relay)", &o),
                Err(e) => println!("| rtpengine userspace (relay) | {n} | failed: {e} |"),
            }
            if transcode {
                match run_rtpengine(n, seconds, true) {
                    Ok(o) => row("rtpengine userspace (transcoding)", &o),
                    Err(e) => println!("| rtpengine userspace (transcoding) | {n} | failed: {e} |"),
                }
            }
        }
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
}

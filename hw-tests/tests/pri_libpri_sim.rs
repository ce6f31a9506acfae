//! ISDN PRI over dahdi-sim's cross-connected E1 D-channels: our Q.921/Q.931 stack (network
//! side) on span 1's hardhdlc channel, libpri (user side, the C harness from
//! tdm-driver/tests/c) on span 2's dchan. Frames go through the real DAHDI read/write path, the
//! simulator fills in and checks the FCS. Layer 2 comes up and calls complete both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use hw_tests::raw::Dev;
use hw_tests::{chan_node, configure_spans};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use tdm_driver::pri::call::{CallEvent, SwitchType, cause};
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::q931::PartyNumber;
use tdm_driver::pri::stack::{PriStack, StackEvent};

fn harness() -> PathBuf {
    assert!(
        std::path::Path::new("/usr/include/libpri.h").exists(),
        "libpri's header is missing: install the Debian package libpri-dev"
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("libpri_peer_sim.{}", std::process::id()));
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tdm-driver/tests/c/libpri_peer.c"
    );
    let ok = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-lpri")
        .status()
        .expect("run cc")
        .success();
    assert!(
        ok,
        "compiling the libpri harness failed (is libpri-dev installed?)"
    );
    out
}

struct SimPri {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    log: Vec<String>,
    dchan: Dev,
    stack: PriStack,
    events: Vec<CallEvent>,
    up: bool,
}

impl SimPri {
    fn start() -> Self {
        configure_spans().expect("dahdi_cfg must succeed");
        let dchan = Dev::open(&chan_node(1, 16), true).unwrap();
        dchan.set_bufinfo(0, 16, 1024).unwrap();
        let theirs = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(chan_node(2, 16))
            .unwrap();
        // Let the harness inherit the far D-channel.
        fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        let mut child = Command::new(harness())
            .arg(theirs.as_raw_fd().to_string())
            .args(["user", "euro"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start libpri harness");
        drop(theirs);
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            log: Vec::new(),
            dchan,
            stack: PriStack::new(Instant::now(), Role::Network, SwitchType::EuroIsdnE1),
            events: Vec::new(),
            up: false,
        }
    }

    fn step(&mut self) {
        let now = Instant::now();
        let mut buf = [0u8; 1100];
        // A read error is a DAHDI event (errno 500) or EAGAIN: nothing to feed.
        while let Ok(n) = self.dchan.read(&mut buf) {
            if n < 2 {
                break;
            }
            self.stack.receive_frame(now, &buf[..n - 2]);
        }
        self.stack.handle_timeout(now);
        while let Some(mut frame) = self.stack.poll_frame() {
            frame.extend([0, 0]);
            self.dchan.write(&frame).unwrap();
        }
        while let Some(e) = self.stack.poll_event() {
            match e {
                StackEvent::Call(e) => self.events.push(e),
                StackEvent::LinkUp => self.up = true,
                StackEvent::LinkDown => self.up = false,
                other => panic!("unexpected {other:?}"),
            }
        }
        self.log.extend(self.lines.try_iter());
    }

    fn expect(&mut self, prefix: &str, within: Duration) -> Vec<String> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            self.step();
            if let Some(i) = self.log.iter().position(|l| l.starts_with(prefix)) {
                let line = self.log.remove(i);
                return line.split_whitespace().map(str::to_string).collect();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "libpri never printed {prefix:?}; printed {:?}; ours {:?}",
            self.log, self.events
        );
    }

    fn until(&mut self, within: Duration, pred: impl Fn(&CallEvent) -> bool) -> CallEvent {
        let end = Instant::now() + within;
        while Instant::now() < end {
            self.step();
            if let Some(i) = self.events.iter().position(&pred) {
                return self.events.remove(i);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "our stack never reported it; events {:?}; libpri {:?}",
            self.events, self.log
        );
    }

    fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }
}

impl Drop for SimPri {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num(d: &str) -> PartyNumber {
    PartyNumber {
        number_type: 0,
        plan: 1,
        presentation: Some((0, 0)),
        reason: None,
        digits: d.into(),
    }
}

/// Both tests use the simulator's spans 1 and 2: one at a time.
static SPANS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn up() -> (std::sync::MutexGuard<'static, ()>, SimPri) {
    let guard = SPANS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut t = SimPri::start();
    t.expect("READY", Duration::from_secs(5));
    t.expect("UP", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(5);
    while !t.up && Instant::now() < end {
        t.step();
    }
    assert!(t.up, "our layer 2 never came up over the simulator");
    (guard, t)
}

/// 30 simultaneous calls fill the E1 over the simulator's D-channels (every B-channel once,
/// the 31st refused), all clear; then RESTART both ways.
#[test]
fn thirty_calls_fill_the_e1_and_restart_works_both_ways_over_dahdi_sim() {
    let (_guard, mut t) = up();
    let mut ours = Vec::new();
    for i in 0..30 {
        let c = t
            .stack
            .calls
            .setup(
                Instant::now(),
                num(&format!("{}", 7000 + i)),
                Some(num("100")),
                None,
                true,
            )
            .unwrap();
        ours.push(c);
    }
    let mut chans = Vec::new();
    for _ in 0..30 {
        let ring = t.expect("RING", Duration::from_secs(5));
        chans.push(ring[2].parse::<u8>().unwrap());
        t.cmd(&format!("answer {}", ring[1]));
    }
    chans.sort();
    let want: Vec<u8> = (1..=15).chain(17..=31).collect();
    assert_eq!(chans, want, "every B-channel used once");
    for _ in 0..30 {
        t.until(Duration::from_secs(5), |e| {
            matches!(e, CallEvent::Answered { .. })
        });
    }
    assert!(
        t.stack
            .calls
            .setup(Instant::now(), num("1"), None, None, true)
            .is_err(),
        "the E1 is full"
    );
    for c in ours {
        t.stack
            .calls
            .disconnect(Instant::now(), c, cause::NORMAL_CLEARING)
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    while t.stack.calls.live_calls() > 0 && Instant::now() < end {
        t.step();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(t.stack.calls.live_calls(), 0, "all 30 calls released");

    t.stack.calls.restart(Instant::now(), &[5]);
    t.expect("RESTART 5", Duration::from_secs(3));
    t.until(Duration::from_secs(3), |e| {
        *e == CallEvent::RestartAcknowledged
    });
    t.cmd("restart 9");
    t.until(Duration::from_secs(3), |e| {
        *e == CallEvent::Restarted { channels: vec![9] }
    });
    t.expect("RESTART_ACK 9", Duration::from_secs(3));
}

#[test]
fn pri_calls_both_ways_over_dahdi_sim_d_channels() {
    let _guard = SPANS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut t = SimPri::start();
    t.expect("READY", Duration::from_secs(5));
    t.expect("UP", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(5);
    while !t.up && Instant::now() < end {
        t.step();
    }
    assert!(t.up, "our layer 2 never came up over the simulator");

    // Network (us) → user (libpri).
    let call = t
        .stack
        .calls
        .setup(
            Instant::now(),
            num("3001"),
            Some(num("5550100")),
            Some(12),
            true,
        )
        .unwrap();
    let ring = t.expect("RING", Duration::from_secs(3));
    assert_eq!(&ring[2..5], ["12", "3001", "5550100"], "{ring:?}");
    t.cmd(&format!("answer {}", ring[1]));
    t.until(Duration::from_secs(3), |e| {
        *e == CallEvent::Answered { call }
    });
    t.stack
        .calls
        .disconnect(Instant::now(), call, cause::NORMAL_CLEARING)
        .unwrap();
    let hup = t.expect("HANGUP", Duration::from_secs(3));
    assert_eq!(hup[2], "16");
    t.until(Duration::from_secs(3), |e| {
        matches!(e, CallEvent::Released { .. })
    });

    // User (libpri) → network (us).
    t.cmd("call 20 4002 5550199 1");
    let placed = t.expect("CALL ", Duration::from_secs(3));
    let ev = t.until(Duration::from_secs(3), |e| {
        matches!(e, CallEvent::Incoming { .. })
    });
    let CallEvent::Incoming {
        call,
        channel,
        called,
        calling,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(channel, 20);
    assert_eq!(called.unwrap().digits, "4002");
    assert_eq!(calling.unwrap().digits, "5550199");
    t.stack.calls.connect(Instant::now(), call).unwrap();
    t.expect("ANSWER", Duration::from_secs(3));
    t.cmd(&format!("hangup {} 16", placed[1]));
    let ev = t.until(Duration::from_secs(3), |e| {
        matches!(e, CallEvent::Disconnecting { .. })
    });
    assert_eq!(
        ev,
        CallEvent::Disconnecting {
            call,
            cause: cause::NORMAL_CLEARING
        }
    );
    t.stack
        .calls
        .release(Instant::now(), call, cause::NORMAL_CLEARING)
        .unwrap();
    t.until(Duration::from_secs(3), |e| {
        matches!(e, CallEvent::Released { .. })
    });
    assert_eq!(t.stack.calls.live_calls(), 0);
}

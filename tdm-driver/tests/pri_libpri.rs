//! Interop with libpri (Asterisk's Q.921/Q.931 stack) over a SOCK_SEQPACKET socketpair: our
//! network side against libpri's user side and the reverse, layer 2, calls both ways, 30
//! simultaneous calls, clearing from each side, RESTART, overlap dialling and link loss.
//! libpri writes 2 FCS placeholder octets after every frame and drops 2 from every frame it
//! reads, so we append 2 on send and strip 2 on receive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use tdm_driver::pri::call::{CallEvent, CallId, SwitchType, cause};
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::q931::PartyNumber;
use tdm_driver::pri::stack::{PriStack, StackEvent};

/// Compiles the C harness once per test process (nextest runs processes in parallel, so the
/// binary's name carries the process id).
fn harness() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_harness).clone()
}

fn build_harness() -> PathBuf {
    assert!(
        std::path::Path::new("/usr/include/libpri.h").exists(),
        "libpri's header is missing: install the Debian package libpri-dev"
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("libpri_peer.{}", std::process::id()));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/libpri_peer.c");
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-lpri")
        .status()
        .expect("run cc");
    assert!(
        status.success(),
        "compiling the libpri harness failed (is libpri-dev installed?)"
    );
    out
}

struct Interop {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    log: Vec<String>,
    fd: OwnedFd,
    stack: PriStack,
    events: Vec<CallEvent>,
    link_up: bool,
    /// While set, frames are dropped in both directions (a cut D-channel).
    cut: bool,
}

impl Interop {
    fn start(ours: Role, switch: SwitchType) -> Self {
        let bin = harness();
        let (mine, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        fcntl(&mine, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        fcntl(&mine, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        let their_role = match ours {
            Role::Network => "user",
            Role::User => "network",
        };
        let sw = match switch {
            SwitchType::EuroIsdnE1 => "euro",
            SwitchType::Ni2 => "ni2",
            SwitchType::Att5ess => "5ess",
            SwitchType::Dms100 => "dms100",
        };
        let mut child = Command::new(bin)
            .arg(theirs.as_raw_fd().to_string())
            .args([their_role, sw])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start libpri harness");
        drop(theirs);
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self {
            child,
            stdin,
            lines,
            log: Vec::new(),
            fd: mine,
            stack: PriStack::new(Instant::now(), ours, switch),
            events: Vec::new(),
            link_up: false,
            cut: false,
        };
        me.expect("READY", Duration::from_secs(5));
        me
    }

    fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Moves frames and runs timers once; returns new harness lines.
    fn step(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut buf = [0u8; 1024];
        while let Ok(n) = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            if n == 0 {
                break;
            }
            if !self.cut {
                self.stack.receive_frame(now, &buf[..n.saturating_sub(2)]);
            }
        }
        self.stack.handle_timeout(now);
        self.stack.run(now);
        while let Some(mut frame) = self.stack.poll_frame() {
            if self.cut {
                continue;
            }
            frame.extend([0, 0]);
            send(self.fd.as_raw_fd(), &frame, MsgFlags::empty()).unwrap();
        }
        while let Some(event) = self.stack.poll_event() {
            match event {
                StackEvent::Call(e) => self.events.push(e),
                StackEvent::LinkUp => self.link_up = true,
                StackEvent::LinkDown => self.link_up = false,
                StackEvent::BadMessage(e) => {
                    panic!("libpri sent an undecodable Q.931 message: {e}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let new: Vec<String> = self.lines.try_iter().collect();
        self.log.extend(new.iter().cloned());
        new
    }

    /// Runs until the harness prints a line starting with `prefix`; returns it.
    fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        // The log holds lines not yet consumed by an earlier expect.
        let mut seen = 0;
        while Instant::now() < end {
            self.step();
            while seen < self.log.len() {
                let line = self.log[seen].clone();
                seen += 1;
                if line.starts_with(prefix) {
                    self.log.remove(seen - 1);
                    return line;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "libpri never printed {prefix:?}; it printed {:?}; our events {:?}",
            self.log, self.events
        );
    }

    /// Runs until one of our call events matches.
    fn until(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&CallEvent) -> bool,
    ) -> CallEvent {
        let end = Instant::now() + within;
        while Instant::now() < end {
            self.step();
            if let Some(i) = self.events.iter().position(&pred) {
                return self.events.remove(i);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "no {what} from our stack; events {:?}; libpri printed {:?}",
            self.events, self.log
        );
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wait_up(&mut self) {
        self.expect("UP", Duration::from_secs(5));
        let end = Instant::now() + Duration::from_secs(5);
        while !self.link_up && Instant::now() < end {
            self.step();
        }
        assert!(self.link_up, "our side never saw layer 2 come up");
    }
}

impl Drop for Interop {
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

fn fields(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn incoming(ev: &CallEvent) -> Option<(CallId, u8, String, String)> {
    match ev {
        CallEvent::Incoming {
            call,
            channel,
            called,
            calling,
            ..
        } => Some((
            *call,
            *channel,
            called
                .as_ref()
                .map(|n| n.digits.clone())
                .unwrap_or_default(),
            calling
                .as_ref()
                .map(|n| n.digits.clone())
                .unwrap_or_default(),
        )),
        _ => None,
    }
}

#[test]
fn our_network_calls_libpri_user_and_clears_with_cause() {
    let mut t = Interop::start(Role::Network, SwitchType::EuroIsdnE1);
    t.wait_up();
    let now = Instant::now();
    let call = t
        .stack
        .calls
        .setup(now, num("4001"), Some(num("2125550100")), Some(7), true)
        .unwrap();
    let ring = fields(&t.expect("RING", Duration::from_secs(2)));
    assert_eq!(&ring[2..5], ["7", "4001", "2125550100"], "{ring:?}");
    let idx = ring[1].clone();
    t.cmd(&format!("proceed {idx}"));
    t.until("proceeding", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Proceeding { .. })
    });
    t.cmd(&format!("alert {idx}"));
    t.until("alerting", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Alerting { .. })
    });
    t.cmd(&format!("answer {idx}"));
    t.until("answer", Duration::from_secs(2), |e| {
        *e == CallEvent::Answered { call }
    });
    t.run_for(Duration::from_millis(50));
    t.stack
        .calls
        .disconnect(Instant::now(), call, cause::USER_BUSY)
        .unwrap();
    let hup = fields(&t.expect("HANGUP", Duration::from_secs(2)));
    assert_eq!(hup[2], "17", "libpri must see our cause: {hup:?}");
    t.until("released", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Released { .. })
    });
    assert_eq!(t.stack.calls.live_calls(), 0);
}

#[test]
fn libpri_network_calls_our_user_and_clears_from_its_side() {
    let mut t = Interop::start(Role::User, SwitchType::EuroIsdnE1);
    t.wait_up();
    t.cmd("call 3 5551234 2125550199 1");
    let ev = t.until("incoming", Duration::from_secs(2), |e| {
        incoming(e).is_some()
    });
    let (call, ch, called, calling) = incoming(&ev).unwrap();
    assert_eq!(
        (ch, called.as_str(), calling.as_str()),
        (3, "5551234", "2125550199")
    );
    t.stack.calls.proceeding(call).unwrap();
    t.expect("PROCEEDING", Duration::from_secs(2));
    t.stack.calls.alerting(call, false).unwrap();
    t.expect("RINGING", Duration::from_secs(2));
    t.stack.calls.connect(Instant::now(), call).unwrap();
    let ans = fields(&t.expect("ANSWER", Duration::from_secs(2)));
    t.until("active", Duration::from_secs(2), |e| {
        *e == CallEvent::Active { call }
    });
    t.cmd(&format!("hangup {} 16", ans[1]));
    let ev = t.until("disconnect", Duration::from_secs(2), |e| {
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
    t.until("released", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Released { .. })
    });
    t.run_for(Duration::from_millis(50));
    assert_eq!(t.stack.calls.live_calls(), 0);
}

fn fill_span(ours: Role, switch: SwitchType, n: usize) {
    let mut t = Interop::start(ours, switch);
    t.wait_up();
    let mut ours_calls = Vec::new();
    for i in 0..n {
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
        ours_calls.push(c);
    }
    let mut rings = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while rings.len() < n && Instant::now() < end {
        for line in t.step() {
            if line.starts_with("RING ") {
                rings.push(fields(&line));
            }
        }
    }
    assert_eq!(rings.len(), n, "libpri saw {} of {n} SETUPs", rings.len());
    let mut chans: Vec<u8> = rings.iter().map(|r| r[2].parse().unwrap()).collect();
    chans.sort();
    assert_eq!(chans, switch.b_channels(), "every B-channel used once");
    for r in &rings {
        t.cmd(&format!("answer {}", r[1]));
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    while answered < n && Instant::now() < end {
        t.step();
        answered += t
            .events
            .iter()
            .filter(|e| matches!(e, CallEvent::Answered { .. }))
            .count();
        t.events
            .retain(|e| !matches!(e, CallEvent::Answered { .. }));
    }
    assert_eq!(answered, n);
    assert!(
        t.stack
            .calls
            .setup(Instant::now(), num("1"), None, None, true)
            .is_err(),
        "span is full"
    );
    for c in ours_calls {
        t.stack
            .calls
            .disconnect(Instant::now(), c, cause::NORMAL_CLEARING)
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    while t.stack.calls.live_calls() > 0 && Instant::now() < end {
        t.step();
    }
    assert_eq!(t.stack.calls.live_calls(), 0);
}

#[test]
fn thirty_simultaneous_calls_on_an_e1() {
    fill_span(Role::Network, SwitchType::EuroIsdnE1, 30);
}

#[test]
fn twenty_three_simultaneous_calls_on_a_t1_ni2() {
    fill_span(Role::User, SwitchType::Ni2, 23);
}

/// libpri's own 5ESS (PRI_SWITCH_LUCENT5E) as the user side of our network side.
#[test]
fn twenty_three_simultaneous_calls_on_a_t1_5ess() {
    fill_span(Role::Network, SwitchType::Att5ess, 23);
}

/// libpri's own DMS-100 as the network side of our user side.
#[test]
fn twenty_three_simultaneous_calls_on_a_t1_dms100() {
    fill_span(Role::User, SwitchType::Dms100, 23);
}

/// The user side fills an E1 too.
#[test]
fn thirty_simultaneous_calls_on_an_e1_user_side() {
    fill_span(Role::User, SwitchType::EuroIsdnE1, 30);
}

#[test]
fn restart_both_ways() {
    let mut t = Interop::start(Role::Network, SwitchType::EuroIsdnE1);
    t.wait_up();
    t.stack.calls.restart(Instant::now(), &[5]);
    t.expect("RESTART 5", Duration::from_secs(2));
    t.until("restart ack", Duration::from_secs(2), |e| {
        *e == CallEvent::RestartAcknowledged
    });
    t.cmd("restart 9");
    t.until("restart", Duration::from_secs(2), |e| {
        *e == CallEvent::Restarted { channels: vec![9] }
    });
    t.expect("RESTART_ACK 9", Duration::from_secs(2));
}

#[test]
fn overlap_dialling_from_libpri() {
    let mut t = Interop::start(Role::Network, SwitchType::EuroIsdnE1);
    t.wait_up();
    t.cmd("call 4 55 100 0");
    let ev = t.until("incoming", Duration::from_secs(2), |e| {
        incoming(e).is_some()
    });
    let (call, _, called, _) = incoming(&ev).unwrap();
    assert_eq!(called, "55");
    t.stack
        .calls
        .setup_acknowledge(Instant::now(), call)
        .unwrap();
    let ack = fields(&t.expect("SETUP_ACK", Duration::from_secs(2)));
    t.cmd(&format!("info {} 678", ack[1]));
    let mut digits = String::new();
    let end = Instant::now() + Duration::from_secs(2);
    while digits.len() < 3 && Instant::now() < end {
        t.step();
        for e in t.events.drain(..) {
            if let CallEvent::Digits { digits: d, .. } = e {
                digits.push_str(&d);
            }
        }
    }
    assert_eq!(digits, "678");
    t.stack.calls.proceeding(call).unwrap();
    t.expect("PROCEEDING", Duration::from_secs(2));
}

#[test]
fn link_loss_and_recovery() {
    let mut t = Interop::start(Role::User, SwitchType::EuroIsdnE1);
    t.wait_up();
    t.cut = true;
    t.expect("DOWN", Duration::from_secs(20));
    // Our side detects the loss too (T203 poll, then N200 retries of T200).
    let end = Instant::now() + Duration::from_secs(20);
    while t.link_up && Instant::now() < end {
        t.step();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!t.link_up, "our link never noticed the cut");
    t.cut = false;
    t.wait_up();
    t.cmd("call 2 999 100 1");
    let ev = t.until("incoming after recovery", Duration::from_secs(3), |e| {
        incoming(e).is_some()
    });
    assert_eq!(incoming(&ev).unwrap().2, "999");
}

#[test]
fn glare_on_one_b_channel_network_wins() {
    let mut t = Interop::start(Role::Network, SwitchType::EuroIsdnE1);
    t.wait_up();
    // Both ends seize B-channel 5 at once, each with an exclusive SETUP.
    let ours = t
        .stack
        .calls
        .setup(Instant::now(), num("800"), None, Some(5), true)
        .unwrap();
    t.cmd("call 5 900 100 1");
    let their = fields(&t.expect("CALL ", Duration::from_secs(2)));
    // The network side keeps the channel: libpri's call is refused with cause 44 ...
    let hup = fields(&t.expect(&format!("HANGUP {} ", their[1]), Duration::from_secs(3)));
    assert_eq!(hup[2], "44", "{hup:?}");
    // ... and ours is offered to libpri on channel 5.
    let ring = fields(&t.expect("RING", Duration::from_secs(3)));
    assert_eq!(ring[2], "5");
    t.cmd(&format!("answer {}", ring[1]));
    t.until("answer", Duration::from_secs(2), |e| {
        *e == CallEvent::Answered { call: ours }
    });
    assert_eq!(t.stack.calls.channel(ours), Some(5));
    assert_eq!(t.stack.calls.live_calls(), 1);
}

#[test]
fn notify_hold_and_resume_both_ways_with_libpri() {
    use tdm_driver::pri::call::notification;
    let mut t = Interop::start(Role::Network, SwitchType::EuroIsdnE1);
    t.wait_up();
    let call = t
        .stack
        .calls
        .setup(Instant::now(), num("4001"), None, Some(5), true)
        .unwrap();
    let ring = fields(&t.expect("RING", Duration::from_secs(2)));
    let idx = ring[1].clone();
    t.cmd(&format!("answer {idx}"));
    t.until("answer", Duration::from_secs(2), |e| {
        *e == CallEvent::Answered { call }
    });
    t.run_for(Duration::from_millis(50));
    // Ours → libpri: user suspended, then resumed.
    t.stack
        .calls
        .notify(call, notification::USER_SUSPENDED)
        .unwrap();
    let n = fields(&t.expect("NOTIFY", Duration::from_secs(2)));
    assert_eq!(n, ["NOTIFY", idx.as_str(), "0"], "libpri saw {n:?}");
    t.stack
        .calls
        .notify(call, notification::USER_RESUMED)
        .unwrap();
    let n = fields(&t.expect("NOTIFY", Duration::from_secs(2)));
    assert_eq!(n, ["NOTIFY", idx.as_str(), "1"], "libpri saw {n:?}");
    // libpri → ours.
    t.cmd(&format!("notify {idx} 0"));
    t.until("notify suspended", Duration::from_secs(2), |e| {
        *e == CallEvent::Notify {
            call,
            indicator: notification::USER_SUSPENDED,
        }
    });
    t.cmd(&format!("notify {idx} 1"));
    t.until("notify resumed", Duration::from_secs(2), |e| {
        *e == CallEvent::Notify {
            call,
            indicator: notification::USER_RESUMED,
        }
    });
    // Nothing about NOTIFY upset either side: the call is still up and clears normally.
    t.stack
        .calls
        .disconnect(Instant::now(), call, cause::NORMAL_CLEARING)
        .unwrap();
    t.expect("HANGUP", Duration::from_secs(2));
    t.until("released", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Released { .. })
    });
    assert_eq!(t.stack.calls.live_calls(), 0);
}

#[test]
fn redirecting_number_and_name_from_libpri_network() {
    let mut t = Interop::start(Role::User, SwitchType::EuroIsdnE1);
    t.wait_up();
    // Forwarded on busy (reason 1) by 3001.
    t.cmd("callx 4 5551234 2125550199 Alice 3001 1");
    let ev = t.until("incoming", Duration::from_secs(2), |e| {
        incoming(e).is_some()
    });
    let CallEvent::Incoming { call, info, .. } = ev else {
        unreachable!()
    };
    let redirecting = info.redirecting.expect("redirecting number");
    assert_eq!(
        (redirecting.digits.as_str(), redirecting.reason),
        ("3001", Some(1))
    );
    assert_eq!(info.display.as_deref(), Some(&b"Alice"[..]));
    t.stack
        .calls
        .disconnect(Instant::now(), call, cause::USER_BUSY)
        .unwrap();
    t.until("released", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Released { .. })
    });
}

#[test]
fn redirecting_number_and_display_to_libpri_user() {
    use tdm_driver::pri::call::SetupInfo;
    let mut t = Interop::start(Role::Network, SwitchType::EuroIsdnE1);
    t.wait_up();
    let info = SetupInfo {
        calling: Some(num("2125550100")),
        redirecting: Some(PartyNumber {
            reason: Some(15), // unconditional
            ..num("3002")
        }),
        display: Some(b"Bob".to_vec()),
        facility: Vec::new(),
    };
    let call = t
        .stack
        .calls
        .setup_with(Instant::now(), num("4001"), info, Some(6), true)
        .unwrap();
    let ring = fields(&t.expect("RING", Duration::from_secs(2)));
    assert_eq!(&ring[2..5], ["6", "4001", "2125550100"], "{ring:?}");
    let redir = fields(&t.expect("REDIR", Duration::from_secs(2)));
    assert_eq!(&redir[2..], ["3002", "15"], "{redir:?}");
    let name = t.expect("NAME", Duration::from_secs(2));
    assert!(name.ends_with(" Bob"), "{name:?}");
    t.stack
        .calls
        .disconnect(Instant::now(), call, cause::NORMAL_CLEARING)
        .unwrap();
    t.until("released", Duration::from_secs(2), |e| {
        matches!(e, CallEvent::Released { .. })
    });
}

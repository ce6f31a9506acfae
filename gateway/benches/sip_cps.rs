//! Calls per second through the signalling path, side by side with Kamailio in the same run
//! (issue 4, benchmarks). Prints a table.
//!
//! The same SIPp pair on this machine — `sipp -sn uac` → relay → `sipp -sn uas`, UDP, no RTP
//! (SDP is offered and answered, nothing is sent) — with two relays, one at a time:
//! - **spanbridge**: the release `gateway` binary on a minimal config (one SIP UDP listener, one
//!   trunk to the uas, one route): a B2BUA, so every call is two dialogs, two INVITE
//!   transactions, two BYE transactions, SDP rewritten and media ports allocated on the media
//!   plane;
//! - **Kamailio 5.6** as a stateful proxy (`tm`, `record_route`, one UDP worker by default:
//!   `children=1`) forwarding everything to the uas.
//!
//! Each relay gets the same ladder of offered rates (`--rates`, calls per second, each held for
//! `--seconds`); a step counts calls that SIPp reports successful and failed, the relay's CPU
//! (`utime + stime` of its whole process tree from `/proc`) and the wall time. The ladder stops
//! at the first step with a failed call. "Max CPS" is the highest rate completed with 0 failed
//! calls and an achieved rate within 5 % of the offered one. Both relays log warnings only
//! (`RUST_LOG=warn`; Kamailio `debug=0`), as a production relay under load would.
//!
//! `cargo bench -p gateway --bench sip_cps -- --rates 500,1000,2000,3000,4000,6000,8000 --seconds 4`
//! (`--kamailio-children N`, `--only spanbridge|kamailio`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A UDP port on 127.0.0.1 that is free right now.
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn free_tcp_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second for
/// user space whatever the kernel's own HZ.
const USER_HZ: f64 = 100.0;

/// `(ppid, utime + stime in ticks)` of one process.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, ut + st))
}

/// CPU seconds used so far by `root` and every descendant process.
fn tree_cpu_s(root: u32) -> f64 {
    let mut procs = vec![];
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ppid, t)) = stat_of(pid) {
                    procs.push((pid, ppid, t));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for &(pid, ppid, _) in &procs {
            if ppid == p && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    let ticks: u64 = procs
        .iter()
        .filter(|(pid, _, _)| tree.contains(pid))
        .map(|(_, _, t)| t)
        .sum();
    ticks as f64 / USER_HZ
}

fn rss_tree_kib(root: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{root}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Relay {
    name: &'static str,
    child: Child,
    /// Where SIPp's uac sends.
    port: u16,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_udp_listening(port: u16) {
    // A bound UDP port makes our own bind fail: poll until it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on udp 127.0.0.1:{port}");
}

fn start_spanbridge(dir: &Path, uas: u16) -> Relay {
    let port = free_udp_port();
    let http = free_tcp_port();
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[http]
listen = "127.0.0.1:{http}"
[sip]
udp = "127.0.0.1:{port}"
realm = "bench"
trusted = ["127.0.0.0/8"]
codecs = ["PCMU", "PCMA"]
[media]
ip = "127.0.0.1"
rtp_port_min = 20000
rtp_port_max = 59999
inactivity_timeout_s = 300
[[trunk]]
name = "uas"
address = "127.0.0.1:{uas}"
transport = "udp"
codecs = ["PCMU", "PCMA"]
inbound = true
[[route]]
name = "all"
match = "*"
to = ["trunk:uas"]
"#
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("gateway.log")).unwrap())
        .spawn()
        .expect("start the gateway binary");
    wait_udp_listening(port);
    Relay {
        name: "spanbridge (B2BUA)",
        child,
        port,
    }
}

fn start_kamailio(dir: &Path, uas: u16, children: u32) -> Relay {
    let port = free_udp_port();
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(
        &cfg,
        format!(
            r#"#!KAMAILIO
debug=0
log_stderror=yes
children={children}
listen=udp:127.0.0.1:{port}
auto_aliases=no
dns=no
rev_dns=no
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "pv.so"
loadmodule "textops.so"
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483","Too Many Hops"); exit; }}
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
    exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
  record_route();
  $du = "sip:127.0.0.1:{uas}";
  t_relay();
}}
"#
        ),
    )
    .unwrap();
    let child = Command::new("kamailio")
        .arg("-f")
        .arg(&cfg)
        .args(["-DD", "-E", "-m", "512", "-M", "32", "-w"])
        .arg(dir)
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap())
        .spawn()
        .expect("start kamailio (apt-get install kamailio)");
    wait_udp_listening(port);
    Relay {
        name: "Kamailio 5.6 (stateful proxy)",
        child,
        port,
    }
}

fn start_uas(dir: &Path) -> (Child, u16) {
    let port = free_udp_port();
    let child = Command::new("sipp")
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-nostdin", "-max_socket", "60000"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp (apt-get install sip-tester)");
    wait_udp_listening(port);
    (child, port)
}

struct Step {
    rate: u32,
    offered: u32,
    ok: u64,
    failed: u64,
    retrans: u64,
    wall_s: f64,
    cpu_s: f64,
}

fn csv_field(header: &str, last: &str, name: &str) -> u64 {
    let idx = header.split(';').position(|h| h == name);
    idx.and_then(|i| last.split(';').nth(i))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn run_step(dir: &Path, relay: &Relay, rate: u32, seconds: u32) -> Step {
    let offered = rate * seconds;
    let stf = dir.join(format!("uac-{}-{rate}.csv", relay.port));
    let _ = std::fs::remove_file(&stf);
    let cpu0 = tree_cpu_s(relay.child.id());
    let t0 = Instant::now();
    let status = Command::new("sipp")
        .arg("-sn")
        .arg("uac")
        .arg(format!("127.0.0.1:{}", relay.port))
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-r", &rate.to_string(), "-rp", "1000"])
        .args(["-m", &offered.to_string(), "-l", "30000"])
        .args([
            "-max_socket",
            "60000",
            "-nostdin",
            "-trace_stat",
            "-fd",
            "1",
        ])
        .arg("-stf")
        .arg(&stf)
        .arg("-timeout")
        .arg(format!("{}s", seconds * 4 + 20))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run sipp uac");
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = tree_cpu_s(relay.child.id()) - cpu0;
    let text = std::fs::read_to_string(&stf).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or("");
    let last = lines.next_back().unwrap_or("");
    let ok = csv_field(header, last, "SuccessfulCall(C)");
    let mut failed = csv_field(header, last, "FailedCall(C)");
    if !status.success() && failed == 0 && ok < offered as u64 {
        failed = offered as u64 - ok;
    }
    Step {
        rate,
        offered,
        ok,
        failed,
        retrans: csv_field(header, last, "Retransmissions(C)"),
        wall_s,
        cpu_s,
    }
}

fn ladder(dir: &Path, relay: &Relay, rates: &[u32], seconds: u32) -> (Vec<Step>, Option<u32>) {
    let mut steps = vec![];
    let mut best = None;
    for &rate in rates {
        std::thread::sleep(Duration::from_secs(1));
        let s = run_step(dir, relay, rate, seconds);
        let achieved = s.ok as f64 / s.wall_s;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.1} |",
            relay.name,
            s.rate,
            s.offered,
            s.ok,
            s.failed,
            s.retrans,
            achieved,
            s.cpu_s / s.wall_s,
            if s.ok > 0 {
                s.cpu_s * 1e6 / s.ok as f64
            } else {
                0.0
            },
        );
        let clean = s.failed == 0 && s.ok == s.offered as u64 && achieved >= 0.95 * rate as f64;
        if clean {
            best = Some(rate);
        }
        let stop = s.failed > 0;
        steps.push(s);
        if stop {
            break;
        }
    }
    (steps, best)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "--list") {
        // `cargo bench -- --list`: nothing for criterion to enumerate.
        return;
    }
    let rates: Vec<u32> = arg("--rates")
        .unwrap_or_else(|| "500,1000,2000,3000,4000,6000,8000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let seconds: u32 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(4);
    let children: u32 = arg("--kamailio-children")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let only = arg("--only");
    let dir: PathBuf = std::env::temp_dir().join(format!("sip-cps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    println!(
        "CPS, SIPp uac -> relay -> SIPp uas on 127.0.0.1 (UDP, SDP, no RTP), {seconds} s per rate"
    );
    println!();
    println!(
        "| relay | offered CPS | calls offered | completed | failed | retransmissions | achieved CPS | relay CPU (cores) | relay CPU per call (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = vec![];
    for which in ["spanbridge", "kamailio"] {
        if only.as_deref().is_some_and(|o| o != which) {
            continue;
        }
        let (mut uas, uas_port) = start_uas(&dir);
        let relay = if which == "spanbridge" {
            start_spanbridge(&dir, uas_port)
        } else {
            start_kamailio(&dir, uas_port, children)
        };
        let rss0 = rss_tree_kib(relay.child.id());
        let (steps, best) = ladder(&dir, &relay, &rates, seconds);
        let rss1 = rss_tree_kib(relay.child.id());
        results.push((relay.name, best, steps, rss0, rss1));
        drop(relay);
        let _ = uas.kill();
        let _ = uas.wait();
    }
    println!();
    for (name, best, steps, rss0, rss1) in &results {
        let last_clean = steps.iter().rev().find(|s| Some(s.rate) == *best);
        println!(
            "{name}: max CPS with 0 failed calls = {}{}; RSS {} → {} KiB (main process)",
            best.map(|b| b.to_string()).unwrap_or_else(|| "none".into()),
            last_clean
                .map(|s| format!(
                    " (at that rate {:.1} µs of relay CPU per call)",
                    s.cpu_s * 1e6 / s.ok.max(1) as f64
                ))
                .unwrap_or_default(),
            rss0,
            rss1
        );
    }
    if let [(_, Some(ours), ..), (_, Some(theirs), ..)] = results.as_slice() {
        println!(
            "spanbridge / Kamailio = {:.0} % (target ≥ 50 %), the ladder's resolution is its rate steps",
            *ours as f64 * 100.0 / *theirs as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

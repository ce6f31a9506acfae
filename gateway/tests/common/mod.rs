//! Shared harness of the SIP real-peer tests: a UDP user agent built from the sans-IO pieces
//! (transaction layer on a tokio socket) and a SIPp runner.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::sip::message::{HeaderName, Method, Request, Uri};
use gateway::sip::transaction::{Reliability, TimerConfig, TransactionLayer, TuEvent};

/// A UDP SIP endpoint: our transaction layer on a loopback socket.
pub struct Ua {
    pub sock: tokio::net::UdpSocket,
    pub layer: TransactionLayer,
    pub local: SocketAddr,
    counter: u64,
    buf: Vec<u8>,
}

impl Ua {
    pub async fn bind() -> Ua {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        Ua {
            sock,
            layer: TransactionLayer::new(TimerConfig::default()),
            local,
            counter: 0,
            buf: vec![0; 65_535],
        }
    }

    /// A fresh RFC 3261 branch (or tag, or Call-ID part).
    pub fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}x{}", std::process::id(), self.counter)
    }

    pub fn branch(&mut self) -> String {
        self.unique("z9hG4bKt")
    }

    /// Sends what the layer queued.
    pub async fn flush(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            // A refused send (ICMP from a peer that went away) is a lost datagram, as on a
            // real network.
            let _ = self.sock.send_to(&t.bytes, t.dest).await;
        }
    }

    /// Sends bytes outside any transaction (ACK for a 2xx).
    pub async fn send_raw(&self, dest: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, dest).await.unwrap();
    }

    /// Waits for one datagram, the layer's next timer or `wake` (whichever first, but no later
    /// than `limit`), feeds it, flushes, and returns the TU events.
    pub async fn step(&mut self, wake: Option<Instant>, limit: Instant) -> Vec<TuEvent> {
        self.flush().await;
        let at = [self.layer.poll_timeout(), wake, Some(limit)]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        tokio::select! {
            r = self.sock.recv_from(&mut self.buf) => {
                match r {
                    Ok((n, from)) => {
                        let bytes = self.buf[..n].to_vec();
                        self.layer.handle_datagram(Instant::now(), &bytes, from, Reliability::Unreliable);
                    }
                    // ICMP port unreachable from an earlier send (a peer that went away).
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => panic!("recv: {e}"),
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                self.layer.handle_timeout(Instant::now());
            }
        }
        self.flush().await;
        let mut out = Vec::new();
        while let Some(e) = self.layer.poll_event() {
            out.push(e);
        }
        out
    }

    /// An out-of-dialog INVITE (or other request) from us to `target`.
    pub fn new_request(&mut self, method: Method, target: SocketAddr, user: &str) -> Request {
        let mut req = Request::new(
            method.clone(),
            Uri::parse(&format!("sip:{user}@{target}")).unwrap(),
        );
        let branch = self.branch();
        let tag = self.unique("tag");
        let call_id = self.unique("call");
        let local = self.local;
        let h = &mut req.headers;
        h.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP {local};branch={branch};rport"),
        );
        h.push(HeaderName::MaxForwards, "70");
        h.push(
            HeaderName::From,
            format!("<sip:spanbridge@{local}>;tag={tag}"),
        );
        h.push(HeaderName::To, format!("<sip:{user}@{target}>"));
        h.push(HeaderName::CallId, call_id);
        h.push(HeaderName::CSeq, format!("1 {method}"));
        h.push(HeaderName::Contact, format!("<sip:spanbridge@{local}>"));
        req
    }
}

pub const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(name)
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIPp's cumulative (C) counter `name` from the last row of its `-trace_stat` CSV.
pub fn stat(csv: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap().split(';').collect();
    let idx = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    last[idx].trim().parse().unwrap()
}

/// A running SIPp; [`Sipp::finish`] waits for it (bounded by its own `-timeout`).
pub struct Sipp {
    child: Option<Child>,
    pub csv: PathBuf,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Sipp {
    /// Starts SIPp with `scenario_file` on a free loopback port; `target` is the remote for a
    /// UAC scenario. The test fails (not skips) when sipp is missing.
    pub fn start(
        scenario_file: &str,
        target: Option<SocketAddr>,
        calls: u32,
        extra: &[&str],
    ) -> Sipp {
        Self::start_on(free_udp_port(), scenario_file, target, calls, extra)
    }

    /// As [`Sipp::start`] on a given local port (to restart a peer where it was).
    pub fn start_on(
        port: u16,
        scenario_file: &str,
        target: Option<SocketAddr>,
        calls: u32,
        extra: &[&str],
    ) -> Sipp {
        assert!(
            Command::new("sipp").arg("-v").output().is_ok(),
            "sipp not found: install the Debian package `sip-tester`"
        );
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("stats.csv");
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path());
        // For debugging a scenario: keep SIPp's message and error traces in this directory.
        if let Ok(d) = std::env::var("SIPP_TRACE_DIR") {
            cmd.current_dir(d).args(["-trace_msg", "-trace_err"]);
        }
        if let Some(t) = target {
            cmd.arg(t.to_string());
        }
        cmd.args(["-sf", scenario(scenario_file).to_str().unwrap()])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &calls.to_string(), "-l", "10"])
            .args(["-timeout", "30", "-timeout_error", "-nostdin"])
            .args(["-trace_stat", "-stf", csv.to_str().unwrap(), "-fd", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("run sipp");
        Sipp {
            child: Some(child),
            csv,
            _dir: dir,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }

    /// Waits for SIPp to exit; returns (exit code, successful, failed, stderr).
    pub async fn finish(mut self) -> (Option<i32>, u64, u64, String) {
        let child = self.child.take().unwrap();
        let csv = self.csv.clone();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            csv.exists(),
            "sipp wrote no statistics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.code(),
            stat(&csv, "SuccessfulCall(C)"),
            stat(&csv, "FailedCall(C)"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

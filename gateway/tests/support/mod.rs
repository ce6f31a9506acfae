//! Shared helpers for tests with real peers: a baresip SIP agent ([`baresip`]), Kamailio as
//! registrar and trunk ([`kamailio`]), the speech reference, a 48 kHz fake-capture WAV, WebRTC
//! peer processes driven by JSON lines (headless Chromium through
//! `gateway/tests/browser/peer.mjs`, aiortc through `gateway/tests/peers/aiortc_peer.py`), an
//! echo bridge, and alignment by normalised cross-correlation.
//!
//! Use from a test file with `mod support;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod baresip;
pub mod kamailio;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use gateway::media::bridge::{Bridge, BridgePort, Silence, leg_rings};
use serde_json::{Value, json};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 6.8 s of synthesised speech at 8 kHz (codecs/tests/data/speech-8k.wav).
pub fn speech_8k() -> Vec<i16> {
    let bytes = std::fs::read(root().join("codecs/tests/data/speech-8k.wav")).unwrap();
    codecs::wav::parse(&bytes).unwrap().samples
}

/// Writes `samples_8k` as a 48 kHz mono 16-bit WAV (Chromium's fake capture) into `dir`.
pub fn write_capture_wav(dir: &Path, samples_8k: &[i16]) -> PathBuf {
    let wide = codecs::resample::resample_all(8000, 48000, samples_8k).unwrap();
    let path = dir.join("capture-48k.wav");
    std::fs::write(&path, codecs::wav::write_pcm16(48000, &wide)).unwrap();
    path
}

/// Writes `samples_8k` as an 8 kHz mono 16-bit WAV (aiortc's player).
pub fn write_wav_8k(dir: &Path, samples_8k: &[i16]) -> PathBuf {
    let path = dir.join("capture-8k.wav");
    std::fs::write(&path, codecs::wav::write_pcm16(8000, samples_8k)).unwrap();
    path
}

/// Best normalised cross-correlation of `segment` against the looped `reference`, over every
/// offset (a fake capture loops its file and starts anywhere). Returns (correlation, offset).
pub fn best_correlation(reference: &[i16], segment: &[i16]) -> (f64, usize) {
    let n = reference.len();
    let seg: Vec<f64> = segment.iter().map(|&s| f64::from(s)).collect();
    let seg_energy: f64 = seg.iter().map(|x| x * x).sum();
    let refd: Vec<f64> = reference
        .iter()
        .chain(reference.iter())
        .chain(reference.iter())
        .map(|&s| f64::from(s))
        .collect();
    assert!(
        segment.len() <= 2 * n,
        "segment longer than twice the reference"
    );
    // Sliding energy of the reference window.
    let mut win_energy: f64 = refd[..seg.len()].iter().map(|x| x * x).sum();
    let mut best = (f64::MIN, 0);
    for off in 0..n {
        if off > 0 {
            let old = refd[off - 1];
            let new = refd[off + seg.len() - 1];
            win_energy += new * new - old * old;
        }
        let w = &refd[off..off + seg.len()];
        let dot: f64 = w.iter().zip(&seg).map(|(a, b)| a * b).sum();
        let c = dot / (win_energy.max(1.0).sqrt() * seg_energy.max(1.0).sqrt());
        if c > best.0 {
            best = (c, off);
        }
    }
    best
}

/// How many 20 ms frames (160 samples) of `x` are a tone at `freq`: audible (RMS > 200) with
/// more than 80 % of their energy at `freq` (Goertzel).
pub fn tone_frames(x: &[i16], freq: f64) -> usize {
    let w = std::f64::consts::TAU * freq / 8000.0;
    x.chunks_exact(160)
        .filter(|f| {
            let (mut s1, mut s2) = (0.0, 0.0);
            let mut energy = 0.0;
            for &v in *f {
                let v = f64::from(v);
                energy += v * v;
                let s = v + 2.0 * w.cos() * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
            (energy / 160.0).sqrt() > 200.0 && 2.0 * power / (160.0 * energy) > 0.8
        })
        .count()
}

/// The loudest `len`-sample stretch of `x` (skips leading silence before media started).
pub fn loudest_window(x: &[i16], len: usize) -> &[i16] {
    if x.len() <= len {
        return x;
    }
    let step = 400;
    let mut best = (0f64, 0usize);
    let mut start = 0;
    while start + len <= x.len() {
        let e: f64 = x[start..start + len]
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum();
        if e > best.0 {
            best = (e, start);
        }
        start += step;
    }
    &x[best.1..best.1 + len]
}

/// Frames the echo bridge captured from the leg (what the peer sent, after decoding).
pub type Captured = Arc<Mutex<Vec<i16>>>;

/// Bridges `port` to an echo: everything the leg receives is captured and sent back. The
/// thread ticks every 20 ms until `stop` is set; returns the capture.
pub fn echo_bridge(
    port: BridgePort,
) -> (
    Captured,
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let captured: Captured = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, s) = (Arc::clone(&captured), Arc::clone(&stop));
    let h = std::thread::spawn(move || {
        let (mut echo, echo_port) = leg_rings(8);
        let mut bridge = Bridge::new(port, echo_port, Box::new(Silence));
        let start = std::time::Instant::now();
        let mut k = 0u32;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            k += 1;
            let due = start + Duration::from_millis(20) * k;
            if let Some(d) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(d);
            }
            bridge.tick();
            while let Some(f) = echo.pop_to_send() {
                c.lock().unwrap().extend_from_slice(&f);
                echo.push_received(&f);
            }
        }
    });
    (captured, stop, h)
}

/// A peer process speaking JSON lines on stdin/stdout.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Peer {
    /// Spawns `program args`, waits for its `{"type":"ready"}`.
    pub fn spawn(name: &'static str, program: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {program}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Peer {
            child,
            stdin,
            lines: rx,
            name,
        };
        let r = p.recv(Duration::from_secs(30));
        assert_eq!(r["type"], "ready", "{name}: {r}");
        p
    }

    /// Headless Chromium with `wav` as its microphone (installs the harness if needed).
    pub fn chromium(wav: &Path) -> Peer {
        let dir = browser_harness();
        let script = dir.join("peer.mjs");
        Peer::spawn(
            "chromium",
            "node",
            &[script.to_str().unwrap(), "--wav", wav.to_str().unwrap()],
        )
    }

    /// Headless Chromium like [`Peer::chromium`] that also accepts TLS certificates whose
    /// SubjectPublicKeyInfo has SHA-256 `spki_b64` (base64): a test's self-signed certificate.
    pub fn chromium_trusting(wav: &Path, spki_b64: &str) -> Peer {
        let dir = browser_harness();
        let script = dir.join("peer.mjs");
        Peer::spawn(
            "chromium",
            "node",
            &[
                script.to_str().unwrap(),
                "--wav",
                wav.to_str().unwrap(),
                "--trust-spki",
                spki_b64,
            ],
        )
    }

    /// aiortc (Debian's python3-aiortc) with `wav` as its microphone.
    pub fn aiortc(wav: &Path) -> Peer {
        let script = root().join("gateway/tests/peers/aiortc_peer.py");
        Peer::spawn(
            "aiortc",
            "/usr/bin/python3",
            &[script.to_str().unwrap(), "--wav", wav.to_str().unwrap()],
        )
    }

    /// Next JSON line (panics after `timeout`).
    pub fn recv(&mut self, timeout: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("{}: no reply within {timeout:?}: {e}", self.name));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: bad line {line}: {e}", self.name))
    }

    /// Sends a command and returns the reply; an error reply panics.
    pub fn request(&mut self, cmd: Value, timeout: Duration) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let r = self.recv(timeout);
        assert_ne!(r["type"], "error", "{}: {cmd} -> {r}", self.name);
        r
    }

    /// Records `seconds` of what the peer receives; returns 8 kHz samples.
    pub fn record(&mut self, seconds: f64) -> Vec<i16> {
        let r = self.request(
            json!({"cmd": "record", "seconds": seconds}),
            Duration::from_secs_f64(seconds + 10.0),
        );
        let rate = r["rate"].as_u64().unwrap() as u32;
        let b64 = r["pcm"].as_str().unwrap();
        let bytes = base64_decode(b64);
        let pcm: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        if rate == 8000 {
            pcm
        } else {
            codecs::resample::resample_all(rate, 8000, &pcm).unwrap()
        }
    }

    /// Closes the peer and waits for the process (kills it after 10 s).
    pub fn close(mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "close"}));
        let _ = self.stdin.flush();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Installs (if needed) and returns the browser harness directory (target/browser-harness).
pub fn browser_harness() -> PathBuf {
    let out = Command::new(root().join("gateway/tests/browser/setup.sh"))
        .output()
        .expect("run gateway/tests/browser/setup.sh");
    assert!(
        out.status.success(),
        "browser harness set-up failed (npm install of pinned playwright-core): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    PathBuf::from(dir)
}

fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s.as_bytes() {
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

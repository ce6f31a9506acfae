//! A baresip user agent as a real SIP peer (Debian's `baresip`), driven over its `ctrl_tcp`
//! interface (netstring-framed JSON: commands in, responses and call events out).
//!
//! Each agent runs with its own temporary config dir (`baresip -f DIR`), SIP and the control
//! socket on 127.0.0.1, no audio hardware: the microphone is `aufile` playing a WAV, the
//! speaker is an `aubridge` device nobody reads, and the `sndfile` filter dumps what the agent
//! decoded (and what it encoded) as WAVs in its dir. Only G.711 (PCMU, PCMA) and
//! telephone-event are loaded, so calls are G.711 with RFC 4733 digits.
//!
//! ```ignore
//! let mut a = Baresip::start(BaresipOptions::new("alice", &wav));
//! a.command("dial", "sip:bob@127.0.0.1:5060");
//! a.wait_event("CALL_ESTABLISHED", Duration::from_secs(5));
//! a.command("sndcode", "5");
//! a.command("hangup", "");
//! let heard = a.decoded_audio();
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How to start a [`Baresip`].
#[derive(Debug, Clone)]
pub struct BaresipOptions {
    /// The account's user part (`sip:USER@127.0.0.1`).
    pub user: String,
    /// The microphone: an 8 kHz mono 16-bit WAV.
    pub wav: PathBuf,
    /// Answer incoming calls at once.
    pub auto_answer: bool,
    /// Codecs offered, in order (`PCMU`, `PCMA`).
    pub codecs: Vec<&'static str>,
    /// Offer (and accept) RTP/RTCP multiplexing on one port (`a=rtcp-mux`, RFC 5761).
    pub rtcp_mux: bool,
    /// `call_max_calls`: baresip answers an INVITE beyond it with 486 (0: always busy).
    pub max_calls: Option<u32>,
    /// Register at this registrar (the account is `sip:USER@ADDR`, REGISTER every 60 s with
    /// digest password `.1`); `None`: no registration.
    pub register: Option<(SocketAddr, String)>,
    /// Register (and take calls) over TCP instead of UDP.
    pub register_tcp: bool,
}

impl BaresipOptions {
    /// An agent `user` that speaks `wav`, answers nothing by itself, offers PCMU then PCMA.
    pub fn new(user: &str, wav: &Path) -> Self {
        BaresipOptions {
            user: user.to_owned(),
            wav: wav.to_owned(),
            auto_answer: false,
            codecs: vec!["PCMU", "PCMA"],
            rtcp_mux: false,
            max_calls: None,
            register: None,
            register_tcp: false,
        }
    }
}

/// A running baresip process with its control connection.
pub struct Baresip {
    child: Child,
    dir: tempfile::TempDir,
    ctrl: TcpStream,
    rx: mpsc::Receiver<Value>,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
    waited: std::collections::HashMap<String, usize>,
    sip: SocketAddr,
    name: String,
    token: u64,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port")
}

/// Reads netstrings (`LEN:JSON,`) from `s` and sends each JSON value to `tx`.
fn read_netstrings(mut s: TcpStream, tx: mpsc::Sender<Value>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(colon) = buf.iter().position(|&b| b == b':') {
            let Some(len) = std::str::from_utf8(&buf[..colon])
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
            else {
                return; // not a netstring: give up on this connection
            };
            if buf.len() < colon + 1 + len + 1 {
                break;
            }
            let body = buf[colon + 1..colon + 1 + len].to_vec();
            buf.drain(..colon + 1 + len + 1);
            if let Ok(v) = serde_json::from_slice::<Value>(&body)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    }
}

impl Baresip {
    /// Writes the config dir and starts baresip; returns once its control socket answers.
    /// Panics (the test fails) when baresip is not installed.
    pub fn start(opts: BaresipOptions) -> Baresip {
        let dir = tempfile::Builder::new()
            .prefix(&format!("baresip-{}-", opts.user))
            .tempdir()
            .unwrap();
        let sip_port = free_udp_port();
        let ctrl_port = free_tcp_port();
        let d = dir.path();
        let snd = d.join("snd");
        std::fs::create_dir_all(&snd).unwrap();
        let config = format!(
            "poll_method\tepoll\n\
             sip_listen\t127.0.0.1:{sip_port}\n\
             net_interface\t127.0.0.1\n\
             audio_player\taubridge,{user}\n\
             audio_alert\taubridge,{user}-alert\n\
             audio_source\taufile,{wav}\n\
             audio_buffer\t20-160\n\
             rtcp_mux\t{mux}\n\
             jitter_buffer_delay\t1-10\n\
             call_local_timeout\t30\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\n\
             module\taufile.so\n\
             module\taubridge.so\n\
             module\tsndfile.so\n\
             module_tmp\tuuid.so\n\
             module_tmp\taccount.so\n\
             module_app\tmenu.so\n\
             module_app\tctrl_tcp.so\n\
             ctrl_tcp_listen\t127.0.0.1:{ctrl_port}\n\
             snd_path\t{snd}\n",
            user = opts.user,
            wav = opts.wav.display(),
            snd = snd.display(),
            mux = if opts.rtcp_mux { "yes" } else { "no" },
        );
        let config = match opts.max_calls {
            Some(n) => format!("{config}call_max_calls\t{n}\n"),
            None => config,
        };
        std::fs::write(d.join("config"), config).unwrap();
        let mut account = match &opts.register {
            None => format!(
                "<sip:{}@127.0.0.1>;regint=0;audio_codecs={}",
                opts.user,
                opts.codecs.join(",")
            ),
            Some((registrar, password)) => format!(
                "<sip:{}@{registrar}{}>;auth_pass={password};regint=60;audio_codecs={}",
                opts.user,
                if opts.register_tcp {
                    ";transport=tcp"
                } else {
                    ""
                },
                opts.codecs.join(",")
            ),
        };
        if opts.auto_answer {
            account.push_str(";answermode=auto");
        }
        std::fs::write(d.join("accounts"), account + "\n").unwrap();
        std::fs::write(d.join("contacts"), "").unwrap();
        let log = std::fs::File::create(d.join("baresip.log")).unwrap();
        let err = log.try_clone().unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(d)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("baresip not found ({e}): apt-get install -y baresip baresip-core")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)) {
                Ok(s) => break s,
                Err(e) => {
                    let exited = child.try_wait().ok().flatten();
                    assert!(
                        Instant::now() < deadline && exited.is_none(),
                        "baresip {}: no ctrl_tcp on port {ctrl_port} ({e}; exited: {exited:?}); log:\n{}",
                        opts.user,
                        std::fs::read_to_string(d.join("baresip.log")).unwrap_or_default()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let (tx, rx) = mpsc::channel();
        let reader = ctrl.try_clone().unwrap();
        std::thread::spawn(move || read_netstrings(reader, tx));
        let mut b = Baresip {
            child,
            dir,
            ctrl,
            rx,
            events: Vec::new(),
            waited: std::collections::HashMap::new(),
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            name: opts.user,
            token: 0,
        };
        // Proves the UA is up (and its SIP socket bound) before anyone calls it.
        b.command("reginfo", "");
        b
    }

    /// Where its SIP listens (UDP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// Its temporary config dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The baresip log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    fn next(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.rx.recv_timeout(left).ok()
    }

    /// Sends a command (`dial`, `accept`, `hangup`, `sndcode`, ...) and waits for its response
    /// (10 s); panics if baresip refuses it. Events that arrive meanwhile are kept.
    pub fn command(&mut self, cmd: &str, params: &str) -> Value {
        self.token += 1;
        let token = format!("t{}", self.token);
        let body = json!({"command": cmd, "params": params, "token": token}).to_string();
        let frame = format!("{}:{},", body.len(), body);
        self.ctrl.write_all(frame.as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Some(v) = self.next(deadline) else {
                panic!(
                    "baresip {}: no response to {cmd} {params:?} within 10 s; log:\n{}",
                    self.name,
                    self.log()
                );
            };
            if v["response"] == true && v["token"] == token.as_str() {
                assert_eq!(
                    v["ok"], true,
                    "baresip {}: {cmd} {params:?} -> {v}",
                    self.name
                );
                return v;
            }
            if v["event"] == true {
                self.events.push(v);
            }
        }
    }

    /// Waits for the next event of `kind` not yet returned by an earlier `wait_event` (it may
    /// have arrived already); panics after `timeout`.
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let done = self.waited.get(kind).copied().unwrap_or(0);
        loop {
            if let Some(e) = self.events.iter().filter(|e| e["type"] == kind).nth(done) {
                let e = e.clone();
                self.waited.insert(kind.to_owned(), done + 1);
                return e;
            }
            let Some(v) = self.next(deadline) else {
                panic!(
                    "baresip {}: no {kind} event within {timeout:?}; events: {:?}; log:\n{}",
                    self.name,
                    self.event_types(),
                    self.log()
                );
            };
            if v["event"] == true {
                self.events.push(v);
            }
        }
    }

    /// Collects the events that arrive within `d`.
    pub fn drain_events(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(v) = self.next(deadline) {
            if v["event"] == true {
                self.events.push(v);
            }
        }
    }

    /// The types of the events received so far.
    pub fn event_types(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// The digits of the `CALL_DTMF_START` events received so far, in order.
    pub fn digits_received(&self) -> String {
        self.events
            .iter()
            .filter(|e| e["type"] == "CALL_DTMF_START")
            .filter_map(|e| e["param"].as_str())
            .collect()
    }

    fn dump(&self, suffix: &str) -> Vec<i16> {
        let snd = self.dir.path().join("snd");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&snd)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        let f = files.last().unwrap_or_else(|| {
            panic!(
                "baresip {}: no *{suffix} dump in {}; log:\n{}",
                self.name,
                snd.display(),
                self.log()
            )
        });
        let bytes = std::fs::read(f).unwrap();
        let wav = codecs::wav::parse(&bytes)
            .unwrap_or_else(|e| panic!("baresip {}: {}: {e}", self.name, f.display()));
        assert_eq!(wav.sample_rate, 8000, "{}", f.display());
        wav.samples
    }

    /// What the agent received and decoded in its last call (8 kHz), as `sndfile` dumped it.
    /// Read it after the call closed (the file is complete then).
    pub fn decoded_audio(&self) -> Vec<i16> {
        self.dump("-dec.wav")
    }

    /// What the agent encoded and sent in its last call (8 kHz).
    pub fn encoded_audio(&self) -> Vec<i16> {
        self.dump("-enc.wav")
    }

    /// Quits baresip (`quit`, then kill after 3 s).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let body = json!({"command": "quit", "params": "", "token": "quit"}).to_string();
        let _ = self
            .ctrl
            .write_all(format!("{}:{},", body.len(), body).as_bytes());
        for _ in 0..30 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Kamailio (Debian's `kamailio`, 5.6) as a real registrar and trunk: one UDP listener on
//! 127.0.0.1, a config written to a temp dir, no database (usrloc in memory, `pv_auth_check`
//! against one configured password). It answers OPTIONS 200, challenges REGISTER (qop=auth)
//! and saves the binding, answers INVITE with a configurable status, and logs one line per
//! request it handled (`KAM <what> ...`) on stderr, which the test reads.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the Kamailio instance does.
#[derive(Debug, Clone)]
pub struct KamailioOptions {
    /// UDP port on 127.0.0.1.
    pub port: u16,
    /// The password of every REGISTERing user.
    pub password: String,
    /// Shortest binding it grants (registrar `min_expires`).
    pub min_expires: u32,
    /// The status it answers INVITEs with.
    pub invite_status: u16,
}

/// A running Kamailio (its own process group, ended with SIGTERM).
pub struct Kamailio {
    child: Child,
    _dir: tempfile::TempDir,
    lines: Arc<Mutex<Vec<String>>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

fn config(o: &KamailioOptions) -> String {
    format!(
        r#"#!KAMAILIO
debug=1
log_stderror=yes
log_prefix=""
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {min})
modparam("registrar", "default_expires", 60)
modparam("auth", "nonce_expire", 300)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("ACK")) {{
        exit;
    }}
    if (is_method("OPTIONS")) {{
        xlog("L_ALERT", "KAM OPTIONS from=$si:$sp ci=$ci\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        if (!pv_auth_check("$td", "{password}", "0", "1")) {{
            xlog("L_ALERT", "KAM CHALLENGE ci=$ci cseq=$cs authorized=$hdr(Authorization)\n");
            auth_challenge("$td", "1");
            exit;
        }}
        if (!save("location")) {{
            xlog("L_ALERT", "KAM SAVEFAIL ci=$ci\n");
            sl_reply_error();
            exit;
        }}
        xlog("L_ALERT", "KAM REGISTERED user=$au ci=$ci cseq=$cs expires=$hdr(Expires) contact=$ct\n");
        exit;
    }}
    if (is_method("INVITE")) {{
        xlog("L_ALERT", "KAM INVITE ru=$ru ci=$ci\n");
        sl_send_reply("{status}", "Kamailio says so");
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"#,
        port = o.port,
        min = o.min_expires,
        password = o.password,
        status = o.invite_status,
    )
}

impl Kamailio {
    /// Starts Kamailio and waits until it answers an OPTIONS (10 s). Panics (the test fails)
    /// when kamailio is not installed.
    pub fn start(o: &KamailioOptions) -> Kamailio {
        let dir = tempfile::Builder::new()
            .prefix("kamailio-")
            .tempdir()
            .unwrap();
        let cfg: PathBuf = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, config(o)).unwrap();
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "8"])
            .arg("-w")
            .arg(dir.path())
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("kamailio not found ({e}): apt-get install -y kamailio"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], o.port));
        let k = Kamailio {
            child,
            _dir: dir,
            lines,
            addr,
        };
        k.wait_ready();
        k
    }

    fn wait_ready(&self) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let me = sock.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        while Instant::now() < deadline {
            n += 1;
            let msg = format!(
                "OPTIONS sip:{a} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKready{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=p{n}\r\nTo: <sip:{a}>\r\n\
                 Call-ID: ready-{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                a = self.addr
            );
            let _ = sock.send_to(msg.as_bytes(), self.addr);
            let mut buf = [0u8; 2048];
            if let Ok((len, _)) = sock.recv_from(&mut buf)
                && buf[..len].starts_with(b"SIP/2.0 200")
            {
                return;
            }
        }
        panic!(
            "kamailio on {} did not answer OPTIONS within 10 s; stderr:\n{}",
            self.addr,
            self.log().join("\n")
        );
    }

    /// Everything it wrote on stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Its `KAM <what> ...` lines, without the prefix up to `KAM `, for requests `what`
    /// (`OPTIONS`, `CHALLENGE`, `REGISTERED`, `INVITE`) — not counting the readiness probes.
    pub fn handled(&self, what: &str) -> Vec<String> {
        let tag = format!("KAM {what} ");
        self.log()
            .iter()
            .filter_map(|l| l.find(&tag).map(|i| l[i + 4..].to_owned()))
            .filter(|l| !l.contains("ci=ready-"))
            .collect()
    }

    /// Ends it (SIGTERM to its process group, then SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        for _ in 0..30 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

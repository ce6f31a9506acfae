//! Shared helpers for spanbridge's hardware and real-peer tests.
//!
//! The tests in `tests/` go through the real DAHDI syscall path: against `/dev/dahdi` when a
//! DAHDI kernel module is loaded, otherwise against `dahdi-sim` mounted in a private mount
//! namespace with its own tmpfs `/dev`, so the host's `/dev` is never touched. `hw-tests/run`
//! sets that up; these helpers find it through the environment it exports.
#![warn(missing_docs)]
// A test harness: failing the calling test with instructions is the intended behaviour.
#![allow(clippy::panic)]

pub mod raw;

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable naming the DAHDI device root (set by `hw-tests/run`).
pub const ENV_ROOT: &str = "DAHDI_ROOT";
/// Environment variable naming dahdi-sim's control file (set by `hw-tests/run`).
pub const ENV_SIM_CONTROL: &str = "DAHDI_SIM_CONTROL";
/// Environment variable naming dahdi-sim's `DAHDI_VIRT_TOP` directory (set by `hw-tests/run`).
pub const ENV_SIM_VIRT_TOP: &str = "DAHDI_VIRT_TOP_SIM";

/// The DAHDI device root. Fails the test with instructions when the suite was not started by
/// `hw-tests/run` (these tests need real DAHDI or dahdi-sim in a private namespace).
pub fn dahdi_root() -> PathBuf {
    match std::env::var_os(ENV_ROOT) {
        Some(root) => PathBuf::from(root),
        None => panic!(
            "{ENV_ROOT} is not set: hw-tests talk to DAHDI device nodes and must run under \
             hw-tests/run (as root), which starts dahdi-sim in a private mount namespace \
             or uses a real /dev/dahdi"
        ),
    }
}

/// dahdi-sim's control file, or `None` (with a note on stderr) on real hardware, where alarm
/// and error injection is impossible. Panics like [`dahdi_root`] outside the harness.
pub fn sim_control() -> Option<PathBuf> {
    let _ = dahdi_root();
    match std::env::var_os(ENV_SIM_CONTROL) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipped: needs dahdi-sim's control interface (real hardware in use)");
            None
        }
    }
}

/// Sends one command to dahdi-sim's control file.
pub fn sim_command(control: &std::path::Path, command: &str) -> io::Result<()> {
    std::fs::write(control, format!("{command}\n"))
}

/// dahdi-sim's status text (read from its control file).
pub fn sim_status(control: &std::path::Path) -> io::Result<String> {
    std::fs::read_to_string(control)
}

/// Path of a device node under the root (`ctl`, `pseudo`, `chan/001/016`, ...).
pub fn node(rel: &str) -> PathBuf {
    dahdi_root().join(rel)
}

/// Path of `chan/SSS/CCC` for span `span`, position `pos`.
pub fn chan_node(span: u32, pos: u32) -> PathBuf {
    node(&format!("chan/{span:03}/{pos:03}"))
}

/// The `system.conf` the suite configures the default dahdi-sim span pair with: two E1 spans,
/// span 1 the timing source, B-channels clear, D-channels on 16 and 47 (hardhdlc on span 1,
/// dchan = HDLCFCS on span 2).
pub const SYSTEM_CONF: &str = "\
# written by hw-tests for dahdi-sim's default E1 pair
span=1,1,0,ccs,hdb3,crc4
span=2,0,0,ccs,hdb3,crc4
bchan=1-15,17-31
hardhdlc=16
bchan=32-46,48-62
dchan=47
loadzone=us
defaultzone=us
";

/// Runs `dahdi_cfg -vv -c SYSTEM_CONF` once per test process and returns its result:
/// Ok(stdout+stderr) on exit status 0, Err(explanation) otherwise. Every test that needs
/// configured channels calls this first, before opening any channel.
pub fn configure_spans() -> Result<String, String> {
    static DONE: OnceLock<Result<String, String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let _ = dahdi_root();
        if std::env::var_os("DAHDI_HW").is_some()
            && std::env::var_os("HW_TESTS_ALLOW_RECONFIGURE").is_none()
        {
            return Err(
                "real DAHDI hardware: refusing to load the simulator's system.conf \
                        (two E1 spans, span 1 wired to span 2). On a lab machine whose first two \
                        E1 ports are joined by a loopback cable, set HW_TESTS_ALLOW_RECONFIGURE=1."
                    .into(),
            );
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let conf = dir.path().join("system.conf");
        std::fs::write(&conf, SYSTEM_CONF).map_err(|e| format!("write system.conf: {e}"))?;
        let out = run_bounded(
            Command::new("dahdi_cfg").arg("-vv").arg("-c").arg(&conf),
            std::time::Duration::from_secs(30),
        )?;
        if out.0 == Some(0) {
            Ok(out.1)
        } else {
            Err(format!("dahdi_cfg exited with {:?}:\n{}", out.0, out.1))
        }
    })
    .clone()
}

/// Runs a command with a time limit; returns (exit code, stdout followed by stderr). A command
/// still running at the limit is killed and reported as an error. Output goes through temporary
/// files, so a chatty command can never block on a full pipe.
pub fn run_bounded(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> Result<(Option<i32>, String), String> {
    use std::process::Stdio;
    let shown = format!("{cmd:?}");
    let out = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let err = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let (out2, err2) = match (out.try_clone(), err.try_clone()) {
        (Ok(o), Ok(e)) => (o, e),
        _ => return Err("cannot duplicate a temporary file".into()),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out2))
        .stderr(Stdio::from(err2))
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} still running after {limit:?}; killed"));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    let mut text = String::new();
    for mut f in [out, err] {
        use std::io::{Read, Seek};
        let _ = f.rewind();
        let _ = f.read_to_string(&mut text);
    }
    Ok((status.code(), text))
}

/// The dahdi-sim binary the harness built (`DAHDI_SIM_BIN`), or `None` (with a note) on real
/// hardware. Panics like [`dahdi_root`] outside the harness.
pub fn sim_bin() -> Option<PathBuf> {
    let _ = dahdi_root();
    match std::env::var_os("DAHDI_SIM_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipped: DAHDI_SIM_BIN not set (real hardware in use)");
            None
        }
    }
}

/// A private dahdi-sim process on its own mount point (inside the harness's namespace). On
/// drop it is stopped first (SIGTERM, then SIGKILL after 5 s) and its mount point then
/// detached, in that order, so no client can be left waiting on a dead mount.
#[derive(Debug)]
pub struct SimInstance {
    child: Child,
    mnt: PathBuf,
}

impl SimInstance {
    /// Starts `bin ARGS... MNT` and waits (at most 10 s) until `MNT/ctl` exists.
    pub fn start(bin: &Path, args: &[&OsStr], mnt: &Path) -> SimInstance {
        let child = match Command::new(bin)
            .args(args)
            .arg(mnt)
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start {}: {e}", bin.display()),
        };
        let sim = SimInstance {
            child,
            mnt: mnt.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mnt.join("ctl").exists() {
            assert!(
                Instant::now() < deadline,
                "dahdi-sim did not come up in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sim
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SimInstance {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// CPU time (user + system) the shared dahdi-sim has used so far, when the harness exported its
/// pid (`DAHDI_SIM_PID`); for reporting the simulator's own cost next to a test's figures.
pub fn sim_cpu_time() -> Option<Duration> {
    let pid = std::env::var("DAHDI_SIM_PID").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_millis((utime + stime) * 1000 / hz))
}

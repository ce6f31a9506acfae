//! `dahdi-sim`: a FUSE daemon that serves a simulated DAHDI device tree (`ctl`, `channel`,
//! `pseudo`, `timer`, `chan/SSS/CCC`) so the real DAHDI syscall path — our driver and the Debian
//! DAHDI tools — can run without hardware or a kernel module.
//!
//! Usage: `dahdi-sim [--config FILE] [--preconfigured] [--park-limit-ms N] MOUNTPOINT` (root,
//! or a user allowed to mount FUSE). SIGTERM/SIGINT answer every parked call, unmount and exit. `hw-tests/run` shows
//! how to put it on `/dev/dahdi` inside a private mount namespace without touching the host.
//!
//! With no config it serves two E1 spans (channels 1–31 and 32–62, D-channel at position 16)
//! wired to each other like a loopback cable: what channel N of one span sends, the same
//! position of the other receives, hook changes included. Channels start unconfigured (open
//! gives ENXIO) until `dahdi_cfg` or CHANCONFIG configures them; `--preconfigured` starts with
//! B = clear and D = HDLCFCS on every span. A config file:
//!
//! ```toml
//! blocksize_on_open = 1024      # DAHDI's default; a gateway sets its own with SET_BLOCKSIZE
//! preconfigured = false
//! crossconnect = [[1, 2]]       # pairs of span numbers wired together
//!
//! [[span]]
//! type = "T1"                   # E1 (31 channels, D at 16) or T1 (24 channels, D at 24)
//! channels = 24                 # optional
//! dchannels = [24]              # optional, positions
//! name = "SIM/1"                # optional
//! ```
//!
//! `MOUNTPOINT/sim/control` takes one command per line (a bad one fails the write with EINVAL
//! and the reason on stderr); reading it gives the clock and span status:
//!
//! * `alarm SPAN NAME...` — set the span's alarms: LOS, LFA, LMFA (each with RED), RED,
//!   YELLOW (RAI), BLUE (AIS), RECOVER, NONE. Open channels get DAHDI_EVENT_ALARM; RED, BLUE and
//!   LOS replace the received signal by all-ones and stop D-channel frames.
//! * `clear SPAN` — no alarms (DAHDI_EVENT_NOALARM).
//! * `slip SPAN [N]` — N controlled slips: one frame (one byte per timeslot) deleted.
//! * `bpv|crc4|fas|ebit SPAN [N]` — add to the span's error counters (SPANSTAT, /proc).
//! * `corrupt CHANNO` — flip a bit of the next HDLC frame sent on that channel (the far end
//!   gets DAHDI_EVENT_BADFCS).
//!
//! `MOUNTPOINT/sim/proc/dahdi/N` holds `/proc/dahdi/N` text in DAHDI's format, so
//! `DAHDI_VIRT_TOP=MOUNTPOINT/sim lsdahdi` lists the spans.

mod clock;
mod fs;

// The simulated DAHDI itself lives in tdm-driver, shared with the in-process `SimSpans`.
use tdm_driver::sim::{config, model, wire};

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "dahdi-sim",
    about = "FUSE simulator of a DAHDI device tree (/dev/dahdi)"
)]
struct Args {
    /// TOML file describing spans and cross-connects (default: two E1 spans wired together).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Configure every channel at start (B = clear, D = HDLCFCS) as if dahdi_cfg had run.
    #[arg(long)]
    preconfigured: bool,
    /// Log format on stderr: human or json (filter with SPANBRIDGE_LOG, default "info").
    #[arg(long, default_value = "human")]
    log_format: gateway::telemetry::LogFormat,
    /// Answer a blocking read, write or IOMUX with EINTR after this many milliseconds without
    /// progress (real DAHDI waits forever; a client killed while blocked exits only once
    /// answered).
    #[arg(long, default_value_t = fs::DEFAULT_PARK_LIMIT.as_millis() as u64)]
    park_limit_ms: u64,
    /// Directory to mount the device tree on (e.g. /dev/dahdi).
    mountpoint: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = gateway::telemetry::init(args.log_format, "info") {
        eprintln!("dahdi-sim: {e}");
        return ExitCode::from(2);
    }
    let mut cfg = match &args.config {
        Some(path) => match config::SimConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        },
        None => config::SimConfig::default(),
    };
    cfg.preconfigured |= args.preconfigured;
    let park_limit = std::time::Duration::from_millis(args.park_limit_ms.max(1));
    match serve(&cfg, &args.mountpoint, park_limit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn serve(
    cfg: &config::SimConfig,
    mountpoint: &std::path::Path,
    park_limit: std::time::Duration,
) -> Result<(), String> {
    // Block the stop signals before any thread starts so that only the signal thread sees them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;

    let shared = Arc::new(Mutex::new(fs::Shared::new(model::Model::new(cfg))));
    let filesystem = fs::DahdiFs::new(shared.clone(), park_limit);
    let mut options = fuser::Config::default();
    options.mount_options = vec![
        fuser::MountOption::FSName("dahdi-sim".into()),
        fuser::MountOption::Subtype("dahdi-sim".into()),
        fuser::MountOption::RW,
    ];
    if nix::unistd::geteuid().is_root() {
        options.acl = fuser::SessionACL::All;
    }
    options.n_threads = Some(2);
    let mut session = fuser::Session::new(filesystem, mountpoint, &options).map_err(|e| {
        format!(
            "cannot mount on {}: {e} (is it an existing directory, and is /dev/fuse there?)",
            mountpoint.display()
        )
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let clock = clock::spawn(shared.clone(), stop.clone())
        .map_err(|e| format!("cannot start the clock thread: {e}"))?;

    let mut unmounter = session.unmount_callable();
    let stop_sig = stop.clone();
    let shared_sig = shared.clone();
    std::thread::Builder::new()
        .name("dahdi-sim-signals".into())
        .spawn(move || {
            let sig = signals.wait();
            tracing::info!(signal = ?sig, "stopping");
            stop_sig.store(true, Ordering::Relaxed);
            fs::release_all_parked(&shared_sig);
            if let Err(e) = unmounter.unmount() {
                // Files still open: exiting closes /dev/fuse, which aborts the connection and
                // fails every outstanding request; the mount point needs `umount -l` then.
                tracing::warn!("unmount failed ({e}); exiting anyway");
                std::process::exit(0);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    tracing::info!(
        spans = cfg.spans.len(),
        cross_connects = cfg.crossconnect.len(),
        mountpoint = %mountpoint.display(),
        "serving the DAHDI device tree"
    );
    let result = session.run();
    stop.store(true, Ordering::Relaxed);
    let _ = clock.join();
    result.map_err(|e| format!("FUSE session ended: {e}"))
}

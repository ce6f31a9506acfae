//! `dahdi-sim`: a FUSE daemon that serves a simulated DAHDI device tree (`ctl`, `channel`,
//! `pseudo`, `timer`, `chan/SSS/CCC`) so the real DAHDI syscall path — our driver and the Debian
//! DAHDI tools — can run without hardware or a kernel module.
//!
//! Usage: `dahdi-sim [--config FILE] MOUNTPOINT`. With no config it serves two E1 spans wired to
//! each other like a loopback cable. `MOUNTPOINT/sim/control` takes text commands (alarms, slips)
//! and `MOUNTPOINT/sim/proc/dahdi/N` holds `/proc/dahdi/N`-style text for `lsdahdi`
//! (`DAHDI_VIRT_TOP=MOUNTPOINT/sim`).

// Skeleton: the model and FUSE layers that use these land next.
#![allow(dead_code)]

mod config;
mod fcs;
mod g711;
mod model;
mod wire;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Directory to mount the device tree on (e.g. /dev/dahdi).
    mountpoint: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(path) => match config::SimConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dahdi-sim: {e}");
                return ExitCode::from(2);
            }
        },
        None => config::SimConfig::default(),
    };
    cfg.preconfigured |= args.preconfigured;
    eprintln!(
        "dahdi-sim: {} spans; mounting on {} is not built yet",
        cfg.spans.len(),
        args.mountpoint.display()
    );
    ExitCode::from(2)
}

//! The master clock: a thread that runs the model one tick per millisecond against absolute
//! deadlines, catching up when it wakes late so that long-run timing stays exact (what
//! `dahdi_test` measures).

use crate::fs::{self, Shared};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most ticks run back to back after a late wake-up; beyond that, ticks are dropped and
/// counted as irqmisses (the machine stalled for longer than any real card would tolerate).
const MAX_CATCH_UP: u64 = 100;
const TICK: Duration = Duration::from_millis(1);

/// Starts the clock thread; it stops when `stop` is set.
pub(crate) fn spawn(
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dahdi-sim-clock".into())
        .spawn(move || run(&shared, &stop))
}

/// Real-time priority asked for the clock thread (SCHED_FIFO), as a card's interrupt would have.
const CLOCK_PRIORITY: &str = "20";

/// Puts the calling thread under SCHED_FIFO through `chrt` (util-linux), so a loaded machine
/// does not delay ticks; without the privilege the clock still runs, just less precisely.
fn raise_priority() {
    let tid = nix::unistd::gettid().to_string();
    let result = std::process::Command::new("chrt")
        .args(["-f", "-p", CLOCK_PRIORITY, &tid])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match result {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!("clock stays at normal priority (chrt exited with {s})"),
        Err(e) => tracing::warn!("clock stays at normal priority (chrt: {e})"),
    }
}

fn run(shared: &Mutex<Shared>, stop: &AtomicBool) {
    raise_priority();
    let start = Instant::now();
    let mut done: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due = (now.duration_since(start).as_micros() / 1000) as u64;
        let behind = due.saturating_sub(done);
        if behind > 0 {
            let run = behind.min(MAX_CATCH_UP);
            if behind > run {
                fs::note_late(shared, behind - run);
                done += behind - run;
            }
            fs::run_ticks(shared, run, now);
            done += run;
        }
        let next = start + TICK * u32::try_from(done + 1).unwrap_or(u32::MAX);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

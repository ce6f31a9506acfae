//! CPU of the per-span media threads for 8 E1 spans (240 B-channels) in steady state, side by
//! side with a naive implementation in the same run (a Vec per block and a Mutex<VecDeque>
//! queue per channel, as a straightforward port of a C driver loop would do).
//!
//! Two backends in one run: the in-process simulated DAHDI (`tdm_driver::sim::SimSpans`, 8 E1
//! spans wired in pairs, real-time 1 ms clock) — `cargo bench -p hw-tests --bench span_cpu` — and,
//! inside the hw-tests harness (`hw-tests/run --bench span_cpu`), a private dahdi-sim with the
//! same spans, so device syscalls go through FUSE. The table also shows the cost of our
//! per-block work alone (decode, ring, encode), which is what the thread adds on top of the
//! driver's read/write on real hardware.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codecs::g711::{self, Law};
use hw_tests::SimInstance;
use ringbuf::traits::{Consumer, Producer, Split};
use tdm_driver::sim::{ClockMode, SimSpans};
use tdm_driver::span::{ChannelSpec, Frame, SpanMedia};
use tdm_driver::{Backend, Channel, DeviceRoot};

/// A naive per-channel frame queue.
type Queue = Arc<Mutex<VecDeque<Vec<i16>>>>;

const SPANS: u32 = 8;
const RUN: Duration = Duration::from_secs(8);

fn config() -> String {
    let mut c =
        String::from("crossconnect = [[1, 2], [3, 4], [5, 6], [7, 8]]\npreconfigured = true\n");
    for _ in 0..SPANS {
        c.push_str("\n[[span]]\ntype = \"E1\"\nchannels = 31\ndchannels = [16]\n");
    }
    c
}

fn b_positions() -> impl Iterator<Item = u32> {
    (1..=31).filter(|&p| p != 16)
}

fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Ours: 8 span threads, a feeder that keeps every to-line ring topped up and drains every
/// from-line ring. Returns (CPU of the span threads, wall time, underruns).
fn ours<B: Backend + 'static>(backend: Arc<B>) -> (Duration, Duration, u64) {
    let mut threads = Vec::new();
    let mut ports = Vec::new();
    for span in 1..=SPANS {
        let specs: Vec<ChannelSpec> = b_positions()
            .map(|position| ChannelSpec {
                span,
                position,
                law: Law::Alaw,
            })
            .collect();
        let (media, p) = SpanMedia::open(backend.clone(), span, &specs).unwrap();
        threads.push(media.spawn().unwrap());
        ports.extend(p);
    }
    let frame: Frame = core::array::from_fn(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16);
    let until = Instant::now() + RUN;
    while Instant::now() < until {
        for p in ports.iter_mut() {
            while p.to_line.try_push(frame).is_ok() {}
            while p.from_line.try_pop().is_some() {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let underruns: u64 = ports
        .iter()
        .map(|p| p.counters.underruns.load(Ordering::Relaxed))
        .sum();
    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    for t in threads {
        let r = t.stop().unwrap();
        cpu += r.cpu_time;
        wall = wall.max(r.wall_time);
    }
    (cpu, wall, underruns)
}

/// The naive loop: one thread per span, allocating per block, queues behind mutexes.
fn naive<B: Backend + 'static>(backend: Arc<B>) -> (Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let mut queues: Vec<(Queue, Queue)> = Vec::new();
    for span in 1..=SPANS {
        let mut chans = Vec::new();
        for pos in b_positions() {
            let mut c = Channel::open_span_channel(backend.clone(), span, pos).unwrap();
            c.set_block_size(160).unwrap();
            let inq = Arc::new(Mutex::new(VecDeque::new()));
            let outq = Arc::new(Mutex::new(VecDeque::new()));
            queues.push((inq.clone(), outq.clone()));
            chans.push((c, inq, outq));
        }
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let start = thread_cpu();
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for (c, inq, outq) in chans.iter() {
                    let mut buf = vec![0u8; 160];
                    if c.read_block(&mut buf).is_ok() {
                        let mut pcm = vec![0i16; 160];
                        let _ = g711::decode(Law::Alaw, &buf, &mut pcm);
                        let mut q = inq.lock().unwrap();
                        if q.len() < 8 {
                            q.push_back(pcm);
                        }
                    }
                    let frame = outq
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(|| vec![0i16; 160]);
                    let mut codes = vec![0u8; 160];
                    let _ = g711::encode(Law::Alaw, &frame, &mut codes);
                    let _ = c.write_block(&codes);
                }
            }
            (thread_cpu() - start, t0.elapsed())
        }));
    }
    let frame: Vec<i16> = (0..160)
        .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
        .collect();
    let until = Instant::now() + RUN;
    while Instant::now() < until {
        for (inq, outq) in &queues {
            inq.lock().unwrap().clear();
            let mut q = outq.lock().unwrap();
            while q.len() < 8 {
                q.push_back(frame.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    for h in handles {
        let (c, w) = h.join().unwrap();
        cpu += c;
        wall = wall.max(w);
    }
    (cpu, wall)
}

/// Our per-block work without the device: decode, ring push/pop, encode, for 240 channels.
fn ours_in_process() -> Duration {
    let mut rings: Vec<_> = (0..240)
        .map(|_| ringbuf::HeapRb::<Frame>::new(8).split())
        .collect();
    let block = [0x55u8; 160];
    let blocks = 50 * 60; // one minute of audio per channel
    let start = thread_cpu();
    for _ in 0..blocks {
        for (prod, cons) in rings.iter_mut() {
            let mut frame: Frame = [0; 160];
            g711::decode_frame(Law::Alaw, &block, &mut frame);
            let _ = prod.try_push(frame);
            let out = cons.try_pop().unwrap_or([0; 160]);
            let mut codes = [0u8; 160];
            g711::encode_frame(Law::Alaw, &out, &mut codes);
            std::hint::black_box(&codes);
        }
    }
    (thread_cpu() - start) / 60 // per second of audio
}

fn table(title: &str, ours: (Duration, Duration, u64), naive: (Duration, Duration)) {
    let pct =
        |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    println!(
        "| {title}: spanbridge span threads | {:.2} % | underruns {} |",
        pct(ours.0, ours.1),
        ours.2
    );
    println!(
        "| {title}: naive threads (Vec per block, Mutex<VecDeque>) | {:.2} % | |",
        pct(naive.0, naive.1)
    );
}

fn main() {
    println!(
        "\nspan media threads, {SPANS} E1 spans = {} B-channels, {} s per row, same run:",
        SPANS * 30,
        RUN.as_secs()
    );
    println!("| implementation | CPU, % of one core | notes |");
    println!("|---|---:|---|");
    {
        let sim = Arc::new(SimSpans::from_toml(&config(), ClockMode::Thread).unwrap());
        let o = ours(sim.clone());
        let n = naive(sim);
        table("in-process simulated spans (SimSpans)", o, n);
    }
    if std::env::var_os("DAHDI_SIM_BIN").is_some() {
        let bin = std::path::PathBuf::from(std::env::var_os("DAHDI_SIM_BIN").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sim.toml");
        std::fs::write(&conf, config()).unwrap();
        let mnt = dir.path().join("dahdi");
        std::fs::create_dir(&mnt).unwrap();
        let _sim = SimInstance::start(&bin, &["--config".as_ref(), conf.as_os_str()], &mnt);
        let o = ours(Arc::new(DeviceRoot::new(&mnt)));
        let n = naive(Arc::new(DeviceRoot::new(&mnt)));
        table("dahdi-sim over FUSE (syscalls included)", o, n);
    } else {
        println!(
            "| dahdi-sim over FUSE | not run | needs the harness: hw-tests/run --bench span_cpu |"
        );
    }
    let in_process = ours_in_process();
    println!(
        "| spanbridge per-block work alone (decode + rings + encode) | {:.3} % | what the thread adds to the driver's read/write |",
        100.0 * in_process.as_secs_f64()
    );
}

//! Loopback across the cable through our driver (`tdm_driver::Channel`): a PRBS written on every
//! B-channel of one span arrives bit-exact on the same channel of the other span, in both
//! directions at once, for at least 10 s, with zero slips; the first-sample delay is reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::Dev;
use hw_tests::{chan_node, configure_spans, dahdi_root, sim_command, sim_control, sim_status};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tdm_driver::{BufferConfig, BufferPolicy, Channel, DeviceRoot};

/// Bytes per block: 20 ms at 8 kHz, what a gateway uses.
const BLOCK: usize = 160;
/// Seconds of PRBS per channel.
const SECONDS: usize = 10;
const BLOCKS: usize = SECONDS * 50;
/// A-law idle byte: what an E1 timeslot carries before the writer starts.
const ALAW_IDLE: u8 = 0xd5;
/// Buffers per direction: 8 × 20 ms of slack for a loaded machine.
const NUMBUFS: usize = 8;

/// Both tests use position 31: run them one at a time (a second open would be EBUSY).
static CHANNELS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// PRBS-15 (x^15 + x^14 + 1, ITU-T O.150), eight bits per byte, MSB first.
#[derive(Clone)]
struct Prbs15(u16);

impl Prbs15 {
    fn new(seed: u16) -> Self {
        Prbs15(seed & 0x7fff | 1)
    }
    fn next_byte(&mut self) -> u8 {
        let mut byte = 0u8;
        for _ in 0..8 {
            let bit = ((self.0 >> 14) ^ (self.0 >> 13)) & 1;
            self.0 = ((self.0 << 1) | bit) & 0x7fff;
            byte = (byte << 1) | bit as u8;
        }
        byte
    }
}

/// A seed whose sequence does not start with the idle byte, so the start is unambiguous.
fn seed_for(direction: u16, pos: u16) -> u16 {
    let mut seed = direction * 1000 + pos * 37 + 1;
    while Prbs15::new(seed).next_byte() == ALAW_IDLE {
        seed += 1;
    }
    seed
}

struct RxReport {
    pos: u32,
    errors: usize,
    received: usize,
    idle_prefix: usize,
    first_at: Option<Instant>,
}

fn writer(dev: Arc<Channel>, seed: u16) -> Instant {
    let mut prbs = Prbs15::new(seed);
    let mut block = [0u8; BLOCK];
    let start = Instant::now();
    for _ in 0..BLOCKS {
        for b in &mut block {
            *b = prbs.next_byte();
        }
        let n = dev.write_block(&block).expect("write");
        assert_eq!(n, BLOCK, "a write takes one whole block");
    }
    start
}

fn reader(dev: Arc<Channel>, seed: u16, pos: u32) -> RxReport {
    let mut expect = Prbs15::new(seed);
    let mut buf = [0u8; 4096];
    let mut report = RxReport {
        pos,
        errors: 0,
        received: 0,
        idle_prefix: 0,
        first_at: None,
    };
    let deadline = Instant::now() + Duration::from_secs(SECONDS as u64 + 20);
    while report.received < BLOCKS * BLOCK {
        assert!(
            Instant::now() < deadline,
            "channel {pos}: PRBS incomplete at deadline"
        );
        let n = dev.read_block(&mut buf).expect("read");
        assert_eq!(n, BLOCK, "a read returns exactly one block");
        for &b in &buf[..n] {
            if report.first_at.is_none() {
                if b == ALAW_IDLE {
                    report.idle_prefix += 1;
                    continue;
                }
                report.first_at = Some(Instant::now());
            }
            if report.received < BLOCKS * BLOCK {
                if b != expect.next_byte() {
                    report.errors += 1;
                }
                report.received += 1;
            }
        }
    }
    report
}

fn b_positions() -> Vec<u32> {
    (1..=31).filter(|&p| p != 16).collect()
}

#[test]
fn prbs_on_every_b_channel_both_ways_arrives_bit_exact_with_zero_slips() {
    let _serial = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let control = sim_control();
    let slips_before = control.as_ref().map(|c| sim_status(c).unwrap());

    // Open all channels first (readers before writers start, so the idle prefix is seen).
    let root = Arc::new(DeviceRoot::new(dahdi_root()));
    let buffers = BufferConfig {
        tx_policy: BufferPolicy::Immediate,
        num_bufs: NUMBUFS,
        buf_size: BLOCK,
    };
    let mut pairs = Vec::new();
    for pos in b_positions() {
        let mut a = Channel::open_span_channel(root.clone(), 1, pos).unwrap();
        let mut b = Channel::open_span_channel(root.clone(), 2, pos).unwrap();
        for d in [&mut a, &mut b] {
            d.set_buffer_config(&buffers).unwrap();
            assert_eq!(d.buffer_config().unwrap(), buffers);
        }
        pairs.push((pos, Arc::new(a), Arc::new(b)));
    }
    let cpu_before = hw_tests::sim_cpu_time();
    let wall = Instant::now();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (pos, a, b) in &pairs {
        let p = *pos as u16;
        // span 1 -> span 2 uses direction 1, span 2 -> span 1 direction 2.
        let (s12, s21) = (seed_for(1, p), seed_for(2, p));
        let (ra, rb) = (a.clone(), b.clone());
        let pos = *pos;
        readers.push(thread::spawn(move || (1, reader(rb, s12, pos))));
        readers.push(thread::spawn(move || (2, reader(ra, s21, pos))));
        let (wa, wb) = (a.clone(), b.clone());
        writers.push(thread::spawn(move || (1, pos, writer(wa, s12))));
        writers.push(thread::spawn(move || (2, pos, writer(wb, s21))));
    }
    let starts: Vec<(i32, u32, Instant)> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    let reports: Vec<(i32, RxReport)> = readers.into_iter().map(|h| h.join().unwrap()).collect();

    let mut delays = Vec::new();
    for (dir, r) in &reports {
        assert_eq!(r.received, BLOCKS * BLOCK, "dir {dir} chan {}", r.pos);
        assert_eq!(
            r.errors, 0,
            "dir {dir} chan {}: bit errors (slips or underruns)",
            r.pos
        );
        let start = starts
            .iter()
            .find(|(d, p, _)| d == dir && *p == r.pos)
            .map(|(_, _, t)| *t)
            .unwrap();
        let first = r.first_at.unwrap();
        delays.push(first.duration_since(start));
        let _ = r.idle_prefix;
    }
    if let (Some(before), Some(after)) = (cpu_before, hw_tests::sim_cpu_time()) {
        let cpu = after.saturating_sub(before);
        println!(
            "dahdi-sim CPU during the run: {cpu:?} over {:?} ({:.1} % of one core) for {} channel \
             fds moving 2 × 8 kB/s each",
            wall.elapsed(),
            100.0 * cpu.as_secs_f64() / wall.elapsed().as_secs_f64(),
            2 * pairs.len()
        );
    }
    delays.sort();
    let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
    println!(
        "PRBS-15 on {} B-channels each way for {SECONDS} s ({} bytes per channel and direction): \
         0 bit errors; first-sample delay write()->read() min {:?} mean {:?} max {:?} \
         (block {BLOCK} B = 20 ms)",
        pairs.len(),
        BLOCKS * BLOCK,
        delays[0],
        mean,
        delays[delays.len() - 1]
    );
    assert!(
        delays[delays.len() - 1] < Duration::from_millis(200),
        "delay bounded"
    );

    if let (Some(c), Some(before)) = (control, slips_before) {
        let after = sim_status(&c).unwrap();
        println!("dahdi-sim status after:\n{after}");
        assert_eq!(
            slip_counts(&after),
            slip_counts(&before),
            "no slips during the run"
        );
    }
}

/// `slips=N` of every span line of dahdi-sim's status.
fn slip_counts(status: &str) -> Vec<u64> {
    status
        .lines()
        .filter(|l| l.starts_with("span "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("slips=")))
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn an_injected_slip_deletes_exactly_one_frame_of_the_stream() {
    let Some(control) = sim_control() else {
        return;
    };
    let _serial = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let root = Arc::new(DeviceRoot::new(dahdi_root()));
    let buffers = BufferConfig {
        tx_policy: BufferPolicy::Immediate,
        num_bufs: NUMBUFS,
        buf_size: BLOCK,
    };
    let mut tx = Channel::open_span_channel(root.clone(), 1, 31).unwrap();
    let mut rx = Channel::open_span_channel(root, 2, 31).unwrap();
    tx.set_buffer_config(&buffers).unwrap();
    rx.set_buffer_config(&buffers).unwrap();
    let seed = seed_for(3, 31);
    let blocks = 100; // 2 s
    let writer = thread::spawn(move || {
        let mut prbs = Prbs15::new(seed);
        let mut block = [0u8; BLOCK];
        for _ in 0..blocks {
            block.iter_mut().for_each(|b| *b = prbs.next_byte());
            tx.write_block(&block).unwrap();
        }
        tx
    });
    let before = slip_counts(&sim_status(&control).unwrap());
    let mut got = Vec::new();
    let mut buf = [0u8; BLOCK];
    let mut slipped = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < blocks * BLOCK + BLOCK {
        assert!(Instant::now() < deadline, "stream incomplete");
        let n = rx.read_block(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        if !slipped && got.len() > 50 * BLOCK {
            sim_command(&control, "slip 2").unwrap();
            slipped = true;
        }
    }
    let _tx = writer.join().unwrap();
    let after = slip_counts(&sim_status(&control).unwrap());
    assert_eq!(after[1], before[1] + 1, "span 2 counted one slip");
    let start = got.iter().position(|&b| b != ALAW_IDLE).unwrap();
    let got = &got[start..];
    let mut prbs = Prbs15::new(seed);
    let want: Vec<u8> = (0..blocks * BLOCK).map(|_| prbs.next_byte()).collect();
    let k = got
        .iter()
        .zip(&want)
        .position(|(g, w)| g != w)
        .expect("the slip shows in the stream");
    let rest = blocks * BLOCK - k - 1;
    assert_eq!(
        &got[k..k + rest],
        &want[k + 1..k + 1 + rest],
        "exactly one byte deleted at {k}"
    );
    println!("slip at byte {k} of the stream: one frame deleted, the rest bit-exact");
}

#[test]
fn a_block_written_on_span_2_arrives_bit_exact_on_span_1() {
    let _serial = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let a = Dev::open(&chan_node(1, 31), false).unwrap();
    let b = Dev::open(&chan_node(2, 31), false).unwrap();
    for d in [&a, &b] {
        d.set_blocksize(BLOCK as i32).unwrap();
        assert_eq!(d.blocksize().unwrap(), BLOCK as i32);
    }
    let pattern: Vec<u8> = (0..BLOCK).map(|i| (i as u8).wrapping_mul(3) | 1).collect();
    b.write(&pattern).unwrap();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    while got.len() < BLOCK * 3 && Instant::now() < deadline {
        let n = a.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let start = got
        .iter()
        .position(|&x| x != ALAW_IDLE)
        .expect("pattern arrived");
    assert_eq!(
        &got[start..start + BLOCK],
        &pattern[..],
        "span 2 -> span 1 bit-exact"
    );
}

#[test]
fn maint_local_loopback_returns_a_span_its_own_signal() {
    let _serial = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    const MAINT_NONE: i32 = 0;
    const MAINT_LOCALLOOP: i32 = 1;
    const ALARM_LOOPBACK: i32 = 2;
    let ctl = Dev::open(&hw_tests::node("ctl"), false).unwrap();
    struct Unloop<'a>(&'a Dev);
    impl Drop for Unloop<'_> {
        fn drop(&mut self) {
            let _ = self.0.maint(2, 0);
        }
    }
    ctl.maint(2, MAINT_LOCALLOOP).unwrap();
    let _guard = Unloop(&ctl);
    let info = ctl.spanstat(2).unwrap();
    assert_eq!(
        hw_tests::raw::field_i32(&info, hw_tests::raw::spaninfo::ALARMS) & ALARM_LOOPBACK,
        ALARM_LOOPBACK
    );
    let d = Dev::open(&chan_node(2, 30), false).unwrap();
    d.set_blocksize(BLOCK as i32).unwrap();
    let pattern: Vec<u8> = (0..BLOCK).map(|i| (i as u8) | 0x80).collect();
    d.write(&pattern).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.len() < 3 * BLOCK {
        assert!(Instant::now() < deadline);
        let n = d.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let start = got
        .iter()
        .position(|&b| b != ALAW_IDLE)
        .expect("own signal returned");
    assert_eq!(&got[start..start + BLOCK], &pattern[..]);
    ctl.maint(2, MAINT_NONE).unwrap();
    assert_eq!(
        hw_tests::raw::field_i32(&ctl.spanstat(2).unwrap(), hw_tests::raw::spaninfo::ALARMS),
        0
    );
}

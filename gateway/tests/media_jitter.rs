//! Jitter buffer on virtual time: a seeded network emulator (loss, bursts, jitter, reordering,
//! sender clock drift) feeds 10 simulated minutes of 20 ms G.711 packets; the receiver pops one
//! frame per 20 ms of its own clock. Prints the delay the buffer adds per scenario
//! (`cargo test -p gateway --test media_jitter -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gateway::media::jitter::{JitterBuffer, JitterConfig, Playout};
use gateway::media::rtp::RtpPacket;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Loss {
    None,
    Random(f64),
    /// Gilbert model: P(good→bad), P(bad→good); every packet in the bad state is lost.
    Bursts(f64, f64),
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    loss: Loss,
    /// Uniform extra delay 0..jitter_ms on top of a 30 ms base.
    jitter_ms: f64,
    /// Sender clock error.
    drift_ppm: f64,
    /// Sender is silent (no packets) 400 ms after each 1.6 s of speech, as with VAD/DTX.
    dtx: bool,
    minutes: u64,
}

struct Outcome {
    played: u64,
    lost_on_network: u64,
    stats: gateway::media::jitter::JitterStats,
    mean: Duration,
    p95: Duration,
    /// Arrived but never played (dropped or late): (sequence, was it a quiet frame).
    unplayed: Vec<(u16, bool)>,
}

const FRAME: Duration = Duration::from_millis(20);

fn run(s: Scenario, seed: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    let t0 = Instant::now();
    let frames = s.minutes * 60 * 50;
    let mut bad = false;
    let mut lost_on_network = 0;
    // (arrival, seq, ts, marker, quiet)
    let mut arrivals: Vec<(Duration, u16, u32, bool, bool)> = Vec::new();
    let mut talk_start = true;
    for i in 0..frames {
        let in_cycle = i % 100;
        let silent = s.dtx && in_cycle >= 80;
        if silent {
            talk_start = true;
            continue;
        }
        let send_ns = (i as f64 * 20e6 / (1.0 + s.drift_ppm * 1e-6)) as u64;
        let dropped = match s.loss {
            Loss::None => false,
            Loss::Random(p) => rng.unit() < p,
            Loss::Bursts(g2b, b2g) => {
                bad = if bad {
                    rng.unit() >= b2g
                } else {
                    rng.unit() < g2b
                };
                bad
            }
        };
        let seq = 65000u16.wrapping_add(i as u16);
        let ts = 4_294_960_000u32.wrapping_add((i * 160) as u32);
        let quiet = in_cycle % 25 >= 20; // pauses inside speech, where drops are inaudible
        let marker = std::mem::take(&mut talk_start);
        if dropped {
            lost_on_network += 1;
            continue;
        }
        let delay_ns = 30e6 + rng.unit() * s.jitter_ms * 1e6;
        arrivals.push((
            Duration::from_nanos(send_ns + delay_ns as u64),
            seq,
            ts,
            marker,
            quiet,
        ));
    }
    arrivals.sort_by_key(|a| a.0);

    let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
    let loud = [0x80u8; 160];
    let quiet = [0xffu8; 160];
    let mut next = 0;
    let mut last_seq = None;
    let mut played = 0;
    let mut played_seqs = std::collections::HashSet::new();
    let ticks = frames + 100;
    for k in 0..ticks {
        let now = FRAME * k as u32 + Duration::from_millis(7);
        while next < arrivals.len() && arrivals[next].0 <= now {
            let (at, seq, ts, marker, q) = arrivals[next];
            let payload = if q { &quiet } else { &loud };
            let p = RtpPacket::new(0, marker, seq, ts, 0xabcd, payload);
            jb.insert(&p, t0 + at);
            next += 1;
        }
        if let Playout::Frame(f) = jb.pop(t0 + now) {
            if let Some(prev) = last_seq {
                assert!(
                    f.sequence > prev,
                    "{}: frame {} played after {}",
                    s.name,
                    f.sequence,
                    prev
                );
            }
            last_seq = Some(f.sequence);
            played_seqs.insert(f.sequence as u16);
            played += 1;
        }
    }
    let stats = jb.stats().clone();
    let unplayed = arrivals
        .iter()
        .filter(|a| !played_seqs.contains(&a.1))
        .map(|a| (a.1, a.4))
        .collect();
    Outcome {
        unplayed,
        played,
        lost_on_network,
        mean: stats.mean_delay(),
        p95: stats.delay_percentile(0.95),
        stats,
    }
}

fn report(s: &Scenario, o: &Outcome) {
    let st = &o.stats;
    println!(
        "| {:<40} | {:>6} | {:>5} | {:>5} | {:>5} | {:>5} | {:>5} | {:>5} | {:>5} | {:>6.1} | {:>5} |",
        s.name,
        o.played,
        o.lost_on_network,
        st.concealed,
        st.late,
        st.stretched,
        st.dropped + st.skipped,
        st.idle_lost,
        st.resyncs,
        o.mean.as_secs_f64() * 1e3,
        o.p95.as_millis(),
    );
}

fn scenario(name: &'static str) -> Scenario {
    Scenario {
        name,
        loss: Loss::None,
        jitter_ms: 0.0,
        drift_ppm: 0.0,
        dtx: false,
        minutes: 10,
    }
}

fn sent(s: &Scenario) -> u64 {
    let frames = s.minutes * 60 * 50;
    if s.dtx { frames / 100 * 80 } else { frames }
}

/// Frames in order, no duplicate, every sent frame accounted for.
fn check_common(s: &Scenario, o: &Outcome) {
    let st = &o.stats;
    assert_eq!(st.duplicates, 0, "{}", s.name);
    assert_eq!(st.resyncs, 0, "{}", s.name);
    // Every packet that arrived was played, dropped for drift, or late.
    assert_eq!(
        o.played + st.late + st.dropped,
        sent(s) - o.lost_on_network,
        "{}",
        s.name
    );
}

#[test]
fn jitter_buffer_scenarios() {
    println!(
        "| scenario (10 simulated minutes)          | played | netlost | concealed | late | stretch | drop+skip | idle lost | resync | mean ms | p95 ms |"
    );
    let mut all = vec![];

    let s = scenario("clean network");
    let o = run(s, 1);
    report(&s, &o);
    check_common(&s, &o);
    // Only the end of the stream: 3 frames of concealment before the buffer goes idle.
    assert!(o.stats.concealed <= 3, "{}", o.stats.concealed);
    assert!(o.mean <= Duration::from_millis(40), "{:?}", o.mean);
    all.push((s, o));

    let s = Scenario {
        loss: Loss::Random(0.05),
        ..scenario("5 % random loss")
    };
    let o = run(s, 2);
    report(&s, &o);
    check_common(&s, &o);
    let lost = o.lost_on_network as f64;
    assert!(
        (o.stats.concealed as f64) >= 0.9 * lost,
        "concealed {}",
        o.stats.concealed
    );
    assert!((o.stats.concealed as f64) <= 1.1 * lost);
    all.push((s, o));

    let s = Scenario {
        loss: Loss::Bursts(0.015, 0.3),
        ..scenario("bursty loss (Gilbert, ~5 %)")
    };
    let o = run(s, 3);
    report(&s, &o);
    check_common(&s, &o);
    // Long bursts end up partly as idle silence (PLC is silent after 60 ms anyway).
    assert_eq!(
        o.stats.concealed + o.stats.idle_lost,
        o.lost_on_network + 3,
        "every lost frame is concealed or counted lost"
    );
    all.push((s, o));

    let s = Scenario {
        jitter_ms: 100.0,
        ..scenario("jitter 0-100 ms (reordering)")
    };
    let o = run(s, 4);
    report(&s, &o);
    check_common(&s, &o);
    assert!(
        o.stats.late as f64 <= 0.02 * sent(&s) as f64,
        "late {}",
        o.stats.late
    );
    assert!(o.p95 <= Duration::from_millis(160), "{:?}", o.p95);
    all.push((s, o));

    for ppm in [500.0, -500.0] {
        let s = Scenario {
            drift_ppm: ppm,
            jitter_ms: 20.0,
            loss: Loss::Random(0.01),
            ..scenario(if ppm > 0.0 {
                "drift +500 ppm, jitter 20 ms, 1 % loss"
            } else {
                "drift -500 ppm, jitter 20 ms, 1 % loss"
            })
        };
        let o = run(s, 5);
        report(&s, &o);
        check_common(&s, &o);
        // 600 s at 500 ppm = 300 ms = 15 frames of drift must be absorbed, delay stays bounded.
        if ppm > 0.0 {
            let shrunk = o.stats.dropped + o.stats.skipped;
            assert!((8..=40).contains(&shrunk), "dropped {shrunk}");
            // Frames were dropped in pauses of the speech, never out of a word.
            assert_eq!(o.unplayed.len() as u64, o.stats.dropped + o.stats.late);
            assert!(
                o.unplayed.iter().all(|&(_, quiet)| quiet),
                "{:?}",
                o.unplayed
            );
        } else {
            assert!(
                (8..=60).contains(&o.stats.stretched),
                "stretched {}",
                o.stats.stretched
            );
        }
        assert!(o.p95 <= Duration::from_millis(80), "{:?}", o.p95);
        assert!(
            o.stats.late as f64 <= 0.005 * sent(&s) as f64,
            "late {}",
            o.stats.late
        );
        all.push((s, o));
    }

    let s = Scenario {
        loss: Loss::Random(0.05),
        jitter_ms: 60.0,
        drift_ppm: 100.0,
        dtx: true,
        ..scenario("5 % loss, jitter 60, +100 ppm, DTX")
    };
    let o = run(s, 6);
    report(&s, &o);
    check_common(&s, &o);
    assert!(o.p95 <= Duration::from_millis(120), "{:?}", o.p95);
    all.push((s, o));
}

fn pkt(seq: u16, ts: u32, ssrc: u32, marker: bool) -> RtpPacket<'static> {
    RtpPacket::new(0, marker, seq, ts, ssrc, &[0x80; 160])
}

/// Plays ticks from `from` ms, returning what came out (sequence or -1 for concealed).
fn drain(jb: &mut JitterBuffer, t0: Instant, from_ms: u64, ticks: u64) -> Vec<i64> {
    (0..ticks)
        .filter_map(
            |k| match jb.pop(t0 + Duration::from_millis(from_ms + 20 * k)) {
                Playout::Frame(f) => Some(f.sequence as i64 & 0xffff),
                Playout::Lost | Playout::Stretch => Some(-1),
                Playout::Empty => None,
            },
        )
        .collect()
}

#[test]
fn reordered_and_duplicated_packets_play_once_in_order() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
    let at = |ms| t0 + Duration::from_millis(ms);
    for (i, seq) in [0u16, 2, 1, 1, 3, 2, 4].iter().enumerate() {
        jb.insert(
            &pkt(*seq, u32::from(*seq) * 160, 9, *seq == 0),
            at(i as u64),
        );
    }
    assert_eq!(jb.stats().duplicates, 2);
    assert_eq!(drain(&mut jb, t0, 30, 5), vec![0, 1, 2, 3, 4]);
    // A packet older than the play position is late, never played twice.
    jb.insert(&pkt(2, 320, 9, false), at(200));
    assert_eq!(jb.stats().late, 1);
}

#[test]
fn new_ssrc_and_timestamp_jump_restart_playout() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
    for i in 0..5u16 {
        jb.insert(
            &pkt(i, u32::from(i) * 160, 1, i == 0),
            t0 + Duration::from_millis(20 * u64::from(i)),
        );
    }
    let out = drain(&mut jb, t0, 25, 2);
    assert_eq!(out, vec![0, 1]);
    // Another source takes over mid-stream (a re-INVITE without our knowledge, an SBC).
    jb.insert(&pkt(5000, 77_000, 2, true), t0 + Duration::from_millis(70));
    assert_eq!(jb.stats().ssrc_changes, 1);
    assert_eq!(jb.len(), 1, "the old source's packets are gone");
    let out = drain(&mut jb, t0, 100, 3);
    assert_eq!(out.first(), Some(&5000));
    // Same source, timestamp leaps 10 minutes ahead: resync rather than wait.
    jb.insert(
        &pkt(5001, 77_000 + 160 + 4_800_000, 2, false),
        t0 + Duration::from_millis(160),
    );
    assert_eq!(jb.stats().resyncs, 1);
    let out = drain(&mut jb, t0, 180, 3);
    assert!(out.contains(&5001), "{out:?}");
}

/// A generic payload type with 30 ms frames (e.g. a dynamic-PT codec at ptime 30): no G.711
/// silence detection, so drift is absorbed by dropping only when far over target — the delay
/// stays bounded and order holds.
#[test]
fn generic_payload_30ms_frames_with_drift_and_reordering() {
    let t0 = Instant::now();
    let cfg = JitterConfig {
        frame_units: 240,
        ..JitterConfig::default()
    };
    let mut jb = JitterBuffer::new(cfg, t0);
    let mut rng = Rng(99);
    let frames = 20_000u64; // 10 minutes at 30 ms
    let mut arrivals: Vec<(Duration, u16, u32)> = vec![];
    for i in 0..frames {
        if rng.unit() < 0.02 {
            continue;
        }
        let send_ns = (i as f64 * 30e6 / (1.0 + 300e-6)) as u64;
        let at = send_ns + 20_000_000 + (rng.unit() * 50e6) as u64;
        arrivals.push((Duration::from_nanos(at), i as u16, (i * 240) as u32));
    }
    arrivals.sort_by_key(|a| a.0);
    let mut next = 0;
    let mut last = None;
    let mut played = 0u64;
    for k in 0..frames + 50 {
        let now = Duration::from_millis(30 * k);
        while next < arrivals.len() && arrivals[next].0 <= now {
            let (at, seq, ts) = arrivals[next];
            jb.insert(&RtpPacket::new(96, false, seq, ts, 5, &[7; 90]), t0 + at);
            next += 1;
        }
        if let Playout::Frame(f) = jb.pop(t0 + now) {
            assert_eq!(f.payload_type, 96);
            assert_eq!(f.payload.len(), 90);
            assert!(last.is_none_or(|l| f.sequence > l));
            last = Some(f.sequence);
            played += 1;
        }
    }
    let st = jb.stats();
    println!(
        "generic PT, 30 ms, +300 ppm, jitter 50 ms, 2 % loss: played {played}, concealed {}, late {}, dropped {}, skipped {}, mean {:?}, p95 {:?}",
        st.concealed,
        st.late,
        st.dropped,
        st.skipped,
        st.mean_delay(),
        st.delay_percentile(0.95)
    );
    assert_eq!(played + st.late + st.dropped, arrivals.len() as u64);
    assert!(st.late as f64 <= 0.01 * frames as f64, "late {}", st.late);
    // 600 s × 300 ppm = 180 ms = 6 frames of 30 ms to shed.
    assert!(st.dropped + st.skipped >= 4, "{st:?}");
    assert!(st.delay_percentile(0.95) <= Duration::from_millis(150));
}

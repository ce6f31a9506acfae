//! Media engine costs, each beside a baseline in the same run, printed as a table:
//!
//! 1. RTP parse: ours (zero-copy view) vs webrtc-rs `rtp` 0.17 (`Packet::unmarshal` on `Bytes`).
//! 2. Receive path per packet: RTP parse + jitter-buffer insert + pop + G.711 decode (+ PLC
//!    bookkeeping), steady state on virtual time.
//! 3. Bridge per frame, one thread: push into leg A's inbound ring, bridge tick, pop from leg B's
//!    outbound ring — vs the same moves through two `Mutex<VecDeque<Frame>>`.
//! 4. Ring throughput across two threads (producer, consumer): one `ringbuf` SPSC pair vs a
//!    `Mutex<VecDeque<Frame>>` of the same capacity.
//!
//! `cargo bench -p gateway --bench media_path`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codecs::g711::Law;
use gateway::media::bridge::{Bridge, Frame, Silence, leg_rings};
use gateway::media::jitter::{G711Playout, JitterConfig};
use gateway::media::rtp::RtpPacket;
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Producer, Split};
use rtp::packet::Packet as WebrtcPacket;
use webrtc_util::marshal::Unmarshal;

/// Median of `runs` timings of `iters` calls of `f`, in ns per call.
fn time_ns(runs: usize, iters: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for i in 0..iters {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[runs / 2]
}

fn packet_bytes(seq: u16, ts: u32) -> Vec<u8> {
    let payload = [0xd5u8; 160];
    let p = RtpPacket::new(8, false, seq, ts, 0x1234_5678, &payload);
    let mut buf = vec![0u8; p.wire_len()];
    p.write(&mut buf).unwrap();
    buf
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters: u64 = if quick { 20_000 } else { 1_000_000 };
    let runs = if quick { 3 } else { 7 };
    println!("| measurement | spanbridge | baseline | baseline is |");
    println!("|---|---|---|---|");

    // 1. RTP parse.
    let raw = packet_bytes(1000, 160_000);
    let raw_bytes = Bytes::from(raw.clone());
    let ours = time_ns(runs, iters, |_| {
        let p = RtpPacket::parse(black_box(&raw)).unwrap();
        black_box(p.payload.len());
    });
    let theirs = time_ns(runs, iters, |_| {
        let mut b = black_box(raw_bytes.clone());
        let p = WebrtcPacket::unmarshal(&mut b).unwrap();
        black_box(p.payload.len());
    });
    println!(
        "| RTP parse (172-byte PCMA packet) | {ours:.1} ns | {theirs:.1} ns | webrtc-rs `rtp` 0.17 `Packet::unmarshal` |"
    );

    // 2. Receive path: parse + jitter insert + pop + G.711 decode, steady state.
    let t0 = Instant::now();
    let mut playout = G711Playout::new(JitterConfig::default(), t0);
    let mut buf = raw.clone();
    let mut frame = [0i16; 160];
    let mut seq = 1000u16;
    let mut ts = 160_000u32;
    let mut tick = 0u64;
    let path = time_ns(runs, iters, |_| {
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        tick += 1;
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[4..8].copy_from_slice(&ts.to_be_bytes());
        let now = t0 + Duration::from_millis(20 * tick);
        let p = RtpPacket::parse(black_box(&buf)).unwrap();
        playout.insert(&p, now);
        black_box(playout.pull(now, &mut frame));
        black_box(&frame);
    });
    let played = playout.buffer().stats().played;
    assert!(played > 0, "the steady state plays frames");
    // Baseline for the decode share: G.711 decode alone.
    let codes = [0xd5u8; 160];
    let decode = time_ns(runs, iters, |_| {
        codecs::g711::decode_frame(Law::Alaw, black_box(&codes), &mut frame);
        black_box(&frame);
    });
    println!(
        "| receive path per packet: parse + jitter insert/pop + G.711 decode + PLC | {path:.1} ns | {decode:.1} ns | G.711 decode of the frame alone (share of the path) |"
    );

    // 3. Bridge per frame, single thread.
    let (mut a, pa) = leg_rings(8);
    let (mut b, pb) = leg_rings(8);
    let mut bridge = Bridge::new(pa, pb, Box::new(Silence));
    let f: Frame = [3; 160];
    let ring = time_ns(runs, iters, |_| {
        a.push_received(black_box(&f));
        bridge.tick();
        black_box(b.pop_to_send());
        black_box(a.pop_to_send());
    });
    let q_in = Mutex::new(VecDeque::<Frame>::with_capacity(8));
    let q_out = Mutex::new(VecDeque::<Frame>::with_capacity(8));
    let q_back = Mutex::new(VecDeque::<Frame>::with_capacity(8));
    let mutex = time_ns(runs, iters, |_| {
        q_in.lock().unwrap().push_back(*black_box(&f));
        // The same work as a bridge tick: one frame each way (silence back towards A).
        let moved = q_in.lock().unwrap().pop_front().unwrap_or([0; 160]);
        q_out.lock().unwrap().push_back(moved);
        q_back.lock().unwrap().push_back([0; 160]);
        black_box(q_out.lock().unwrap().pop_front());
        black_box(q_back.lock().unwrap().pop_front());
    });
    println!(
        "| bridge, one frame each way per tick (1 thread) | {ring:.1} ns ({:.1} M frames/s) | {mutex:.1} ns ({:.1} M frames/s) | same moves through `Mutex<VecDeque<[i16; 160]>>` |",
        1e3 / ring,
        1e3 / mutex
    );

    // 4. Two threads through one ring.
    let n: u64 = if quick { 200_000 } else { 5_000_000 };
    let spsc = {
        let (mut prod, mut cons) = HeapRb::<Frame>::new(64).split();
        let start = Instant::now();
        let producer = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < n {
                if prod.try_push([sent as i16; 160]).is_ok() {
                    sent += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut got = 0;
        while got < n {
            if let Some(f) = cons.try_pop() {
                black_box(f);
                got += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        producer.join().unwrap();
        n as f64 / start.elapsed().as_secs_f64()
    };
    let locked = {
        let q = Arc::new(Mutex::new(VecDeque::<Frame>::with_capacity(64)));
        let start = Instant::now();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                while sent < n {
                    let mut g = q.lock().unwrap();
                    if g.len() < 64 {
                        g.push_back([sent as i16; 160]);
                        sent += 1;
                    } else {
                        drop(g);
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut got = 0;
        while got < n {
            let f = q.lock().unwrap().pop_front();
            if let Some(f) = f {
                black_box(f);
                got += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        producer.join().unwrap();
        n as f64 / start.elapsed().as_secs_f64()
    };
    println!(
        "| ring throughput, producer and consumer threads, 64-frame ring | {:.2} M frames/s | {:.2} M frames/s | `Arc<Mutex<VecDeque<[i16; 160]>>>` |",
        spsc / 1e6,
        locked / 1e6
    );
    // 5. Relay path of one packet, PCMU in on leg A → PCMA out on leg B (transcoded), jitter
    //    buffer included but in steady state: A.handle_datagram + A.pull + ring push + bridge
    //    tick + ring pop + B.send. Mean, and p99 of single-packet timings.
    {
        use gateway::media::codec::AudioFormat;
        use gateway::media::leg::{RtpLeg, RtpLegConfig};
        let t0 = Instant::now();
        let peer: std::net::SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut leg_a = RtpLeg::new(RtpLegConfig::new(1, Some(peer)), t0);
        let mut leg_b = RtpLeg::new(
            RtpLegConfig {
                format: AudioFormat::Pcma,
                payload_type: 8,
                ..RtpLegConfig::new(2, Some("192.0.2.2:4000".parse().unwrap()))
            },
            t0,
        );
        let (mut end_a, pa) = leg_rings(8);
        let (mut end_b, pb) = leg_rings(8);
        let mut bridge = Bridge::new(pa, pb, Box::new(Silence));
        let speech: Frame = std::array::from_fn(|n| ((n as f64 * 0.37).sin() * 5000.0) as i16);
        let mut pcmu = [0u8; 160];
        codecs::g711::encode_frame(Law::Ulaw, &speech, &mut pcmu);
        let mut inbound = vec![0u8; 172];
        let mut out = [0u8; 1500];
        let mut frame = [0i16; 160];
        let count = if quick { 20_000u64 } else { 500_000 };
        let mut samples = Vec::with_capacity(count as usize);
        for k in 0..count {
            let p = RtpPacket::new(0, k == 0, k as u16, (k * 160) as u32, 0x77, &pcmu);
            p.write(&mut inbound).unwrap();
            let now = t0 + Duration::from_millis(20 * k);
            let start = Instant::now();
            leg_a.handle_datagram(now, peer, black_box(&inbound));
            leg_a.pull(now, &mut frame);
            end_a.push_received(&frame);
            bridge.tick();
            let _ = end_a.pop_to_send();
            if let Some(f) = end_b.pop_to_send() {
                black_box(leg_b.send(&f, &mut out));
            }
            samples.push(start.elapsed().as_nanos() as u64);
        }
        let steady = &mut samples[100..];
        let mean = steady.iter().sum::<u64>() as f64 / steady.len() as f64;
        steady.sort_unstable();
        let p99 = steady[steady.len() * 99 / 100];
        let p999 = steady[steady.len() * 999 / 1000];
        println!(
            "| relay one packet PCMU in → PCMA out (leg A receive + jitter + decode, bridge, leg B encode + send) | mean {mean:.0} ns, p99 {p99} ns, p99.9 {p999} ns | ≈ 3,300 ns | rtpengine userspace relay CPU per packet (issue 4, measured separately, not this run) |"
        );
        let per_leg = std::mem::size_of::<RtpLeg>()
            + gateway::media::jitter::SLOTS * (gateway::media::jitter::MAX_PAYLOAD + 40)
            + 2 * 512 * 8;
        let rings = 2 * 2 * 8 * std::mem::size_of::<Frame>();
        println!(
            "\n(memory per two-leg call ≈ {} KiB: 2 × RtpLeg {} B inline + jitter slots and transit windows on the heap, plus 4 rings of 8 frames = {} B)",
            (2 * per_leg + rings) / 1024,
            std::mem::size_of::<RtpLeg>(),
            rings
        );
    }

    // 6. The same work for 2000 calls (4000 legs) in turn, as a plane worker does it: every
    //    leg's state is cold when its packet comes, the working set (≈ 120 MB) far beyond the
    //    caches. Per packet: receive + jitter + decode + PLC on one leg, encode + send on the
    //    partner (no sockets, no bridge rings: the plane hands frames across directly).
    {
        use gateway::media::codec::AudioFormat;
        use gateway::media::leg::{RtpLeg, RtpLegConfig};
        let calls = if quick { 500 } else { 2000 };
        let t0 = Instant::now();
        let peer: std::net::SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut legs: Vec<(RtpLeg, RtpLeg)> = (0..calls)
            .map(|c| {
                let a = RtpLeg::new(RtpLegConfig::new(2 * c as u32, Some(peer)), t0);
                let b = RtpLeg::new(
                    RtpLegConfig {
                        format: AudioFormat::Pcma,
                        payload_type: 8,
                        ..RtpLegConfig::new(2 * c as u32 + 1, Some(peer))
                    },
                    t0,
                );
                (a, b)
            })
            .collect();
        let speech: Frame = std::array::from_fn(|n| ((n as f64 * 0.37).sin() * 5000.0) as i16);
        let mut pcmu = [0u8; 160];
        codecs::g711::encode_frame(Law::Ulaw, &speech, &mut pcmu);
        let mut pcma = [0u8; 160];
        codecs::g711::encode_frame(Law::Alaw, &speech, &mut pcma);
        let (mut in_a, mut in_b) = (vec![0u8; 172], vec![0u8; 172]);
        let mut out = [0u8; 1500];
        let (mut fa, mut fb) = ([0i16; 160], [0i16; 160]);
        let ticks = if quick { 50u64 } else { 150 };
        let mut elapsed = Duration::ZERO;
        for k in 0..ticks {
            let now = t0 + Duration::from_millis(20 * k);
            RtpPacket::new(0, k == 0, k as u16, (k * 160) as u32, 0x77, &pcmu)
                .write(&mut in_a)
                .unwrap();
            RtpPacket::new(8, k == 0, k as u16, (k * 160) as u32, 0x78, &pcma)
                .write(&mut in_b)
                .unwrap();
            let start = Instant::now();
            for (a, b) in legs.iter_mut() {
                a.handle_datagram(now, peer, black_box(&in_a));
                b.handle_datagram(now, peer, black_box(&in_b));
                a.pull(now, &mut fa);
                b.pull(now, &mut fb);
                black_box(b.send(&fa, &mut out));
                black_box(a.send(&fb, &mut out));
            }
            if k >= 10 {
                elapsed += start.elapsed();
            }
        }
        let per_packet = elapsed.as_nanos() as f64 / ((ticks - 10) * 2 * calls as u64) as f64;
        println!(
            "| the same for {calls} calls in turn (cold state per leg) | {per_packet:.0} ns per packet | – | the hot-cache figure of the row above |"
        );
    }

    // Context: a 20 ms frame per direction per call is 50 frames/s.
    println!(
        "\n(one call direction needs 50 frames/s: the 1-thread bridge figure is {:.0} call-directions per core)",
        1e9 / ring / 50.0
    );
}

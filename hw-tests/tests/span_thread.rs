//! The per-span media thread over real DAHDI syscalls (dahdi-sim's E1 pair): all 30 B-channels
//! of span 1 send a different tone through the thread, span 2's thread receives them, and what
//! arrives is bit-exact what G.711 makes of what was sent. A counting allocator proves the
//! threads (and this test's feeding loop) allocate nothing in steady state; after stopping,
//! every channel can be opened again (nothing leaked). One test per binary: the allocator counts
//! the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::{self, Law};
use hw_tests::{configure_spans, dahdi_root};
use ringbuf::traits::{Consumer, Producer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tdm_driver::span::{ChannelSpec, Frame, SpanMedia};
use tdm_driver::{Channel, DeviceRoot};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// B-channel positions of an E1 span (16 is the D-channel).
fn b_positions() -> Vec<u32> {
    (1..=31).filter(|&p| p != 16).collect()
}

/// A tone plus low-level pseudo-random noise, so that no 20 ms stretch repeats and every
/// received frame has exactly one place in what was sent.
fn tone_frames(freq: f64, frames: usize) -> Vec<Frame> {
    let mut phase = 0.0f64;
    let mut seed = (freq as u32).wrapping_mul(2_654_435_761);
    (0..frames)
        .map(|_| {
            core::array::from_fn(|_| {
                phase = (phase + freq / 8000.0).fract();
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((seed >> 20) as i32 - 2048) as f64 / 4.0;
                (9000.0 * (phase * std::f64::consts::TAU).sin() + noise) as i16
            })
        })
        .collect()
}

#[test]
fn thirty_channels_cross_the_span_pair_bit_exact_without_allocating() {
    configure_spans().expect("dahdi_cfg");
    let backend = Arc::new(DeviceRoot::new(dahdi_root()));
    let specs = |span| -> Vec<ChannelSpec> {
        b_positions()
            .into_iter()
            .map(|position| ChannelSpec {
                span,
                position,
                law: Law::Alaw,
            })
            .collect()
    };
    let (tx_media, mut tx_ports) = SpanMedia::open(backend.clone(), 1, &specs(1)).unwrap();
    let (rx_media, mut rx_ports) = SpanMedia::open(backend.clone(), 2, &specs(2)).unwrap();
    let tx_thread = tx_media.spawn().unwrap();
    let rx_thread = rx_media.spawn().unwrap();

    // Everything the steady state needs is allocated now.
    const FRAMES: usize = 150; // 3 s
    let sent: Vec<Vec<Frame>> = (0..30)
        .map(|i| tone_frames(300.0 + 97.0 * i as f64, FRAMES))
        .collect();
    let mut received: Vec<Vec<Frame>> = (0..30).map(|_| Vec::with_capacity(FRAMES + 64)).collect();
    let mut next = vec![0usize; 30];

    let run_for = |until: Instant,
                   tx_ports: &mut Vec<tdm_driver::span::ChannelPorts>,
                   rx_ports: &mut Vec<tdm_driver::span::ChannelPorts>,
                   next: &mut Vec<usize>,
                   received: &mut Vec<Vec<Frame>>| {
        while Instant::now() < until {
            for (i, port) in tx_ports.iter_mut().enumerate() {
                while next[i] < FRAMES && port.to_line.try_push(sent[i][next[i]]).is_ok() {
                    next[i] += 1;
                }
            }
            for (i, port) in rx_ports.iter_mut().enumerate() {
                while let Some(f) = port.from_line.try_pop() {
                    if received[i].len() < received[i].capacity() {
                        received[i].push(f);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Warm-up (first blocks, lazy initialisation in the threads), then the measured window.
    run_for(
        Instant::now() + Duration::from_millis(400),
        &mut tx_ports,
        &mut rx_ports,
        &mut next,
        &mut received,
    );
    let region = Region::new(GLOBAL);
    run_for(
        Instant::now() + Duration::from_millis(2500),
        &mut tx_ports,
        &mut rx_ports,
        &mut next,
        &mut received,
    );
    let change = region.change();
    run_for(
        Instant::now() + Duration::from_millis(600),
        &mut tx_ports,
        &mut rx_ports,
        &mut next,
        &mut received,
    );

    let tx_cycles = tx_thread
        .counters()
        .cycles
        .load(std::sync::atomic::Ordering::Relaxed);
    let max_delay = rx_thread
        .counters()
        .max_read_to_ring_ns
        .load(std::sync::atomic::Ordering::Relaxed);
    let total = rx_thread
        .counters()
        .total_read_to_ring_ns
        .load(std::sync::atomic::Ordering::Relaxed);
    let frames = rx_thread
        .counters()
        .measured_frames
        .load(std::sync::atomic::Ordering::Relaxed);
    let tx_report = tx_thread.stop().unwrap();
    let rx_report = rx_thread.stop().unwrap();
    println!(
        "span threads: {tx_cycles} cycles; read->ring mean {:.1} µs, max {:.1} µs; CPU tx {:?} rx {:?} over {:?}",
        total as f64 / frames.max(1) as f64 / 1000.0,
        max_delay as f64 / 1000.0,
        tx_report.cpu_time,
        rx_report.cpu_time,
        rx_report.wall_time
    );
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "allocations in steady state: {change:?}"
    );

    // Audio: what span 2 channel k received is decode(encode(what span 1 channel k sent)),
    // bit-exact, starting at some sample offset (the line delay), for at least 2 s.
    for k in 0..30 {
        let expected: Vec<i16> = sent[k]
            .iter()
            .flat_map(|f| {
                let mut codes = [0u8; 160];
                g711::encode_frame(Law::Alaw, f, &mut codes);
                let mut back = [0i16; 160];
                g711::decode_frame(Law::Alaw, &codes, &mut back);
                back
            })
            .collect();
        let got: Vec<i16> = received[k].iter().flatten().copied().collect();
        // Walk the received stream frame by frame along the expected one. A scheduling hiccup
        // on this shared machine shows as a silence frame (the sender's ring ran dry: the
        // span thread counts an underrun) or as a skip ahead (the receiver's ring overflowed:
        // an overrun); either is tolerated within what the thread counted. Anything else is
        // corruption (a frame that is not in what was sent) or disorder (a frame from the past).
        let find = |frame: &[i16]| expected.windows(frame.len()).position(|w| w == frame);
        let silence = |frame: &[i16]| frame.iter().all(|&x| x.abs() <= 8);
        let mut pos: Option<usize> = None;
        let (mut exact, mut padded, mut skipped, mut corrupt, mut disorder) =
            (0usize, 0u64, 0u64, 0usize, 0usize);
        let mut junctions = 0u64;
        for frame in got.chunks_exact(160) {
            match pos {
                Some(p) if expected.get(p..p + 160) == Some(frame) => {
                    exact += 160;
                    pos = Some(p + 160);
                }
                _ if silence(frame) => {
                    if pos.is_some_and(|p| expected.len() - p >= 160) {
                        padded += 1;
                    }
                }
                _ => match (find(frame), pos) {
                    (Some(p), Some(old)) if p < old => disorder += 1,
                    (Some(p), old) => {
                        if let Some(old) = old {
                            skipped += ((p - old) / 160) as u64;
                        }
                        exact += 160;
                        pos = Some(p + 160);
                    }
                    (None, _) => {
                        // Where silence meets the tone (start, end, an underrun of the span
                        // thread or of the device's 1 ms chunks) a frame is part silence, part
                        // tone: every stretch of tone in it must be something that was sent.
                        let mut parts = Vec::new();
                        let (mut run_start, mut quiet) = (None::<usize>, 0usize);
                        for (n, &x) in frame.iter().enumerate() {
                            if x.abs() <= 8 {
                                quiet += 1;
                                if quiet == 4
                                    && let Some(a) = run_start.take()
                                {
                                    parts.push(&frame[a..n + 1 - quiet]);
                                }
                            } else {
                                quiet = 0;
                                run_start.get_or_insert(n);
                            }
                        }
                        if let Some(a) = run_start {
                            parts.push(&frame[a..]);
                        }
                        let places: Option<Vec<usize>> = parts.iter().map(|p| find(p)).collect();
                        match places {
                            Some(at) if !at.is_empty() && at.windows(2).all(|w| w[0] < w[1]) => {
                                if pos.is_some() {
                                    junctions += 1;
                                }
                                let last = at.len() - 1;
                                pos = Some(at[last] + parts[last].len());
                            }
                            _ => corrupt += 1,
                        }
                    }
                },
            }
        }
        let underruns = tx_ports[k]
            .counters
            .underruns
            .load(std::sync::atomic::Ordering::Relaxed);
        let overruns = rx_ports[k]
            .counters
            .overruns
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            exact >= 16000
                && corrupt == 0
                && disorder == 0
                && padded <= underruns
                && skipped <= overruns + padded
                && padded + skipped + junctions <= 20,
            "channel {}: {exact} samples bit-exact, {corrupt} corrupt and {disorder} out-of-order \
             frames, {padded} silence frames mid-stream ({underruns} underruns), {skipped} frames \
             skipped ({overruns} overruns), {junctions} part-silence frames",
            k + 1
        );
    }

    // Stopped threads closed their channels: every one opens again.
    for span in 1..=2 {
        for pos in b_positions() {
            Channel::open_span_channel(backend.clone(), span, pos)
                .unwrap_or_else(|e| panic!("{span}/{pos} not released: {e}"));
        }
    }
}

//! Opus cost per 20 ms frame, as the media path pays it: our 8 kHz frame → 48 kHz (our FIR) →
//! libopus, and back; side by side with libopus doing its own rate conversion at 8 kHz (the
//! `opus` crate's encoder/decoder built at 8000 Hz), and G.711 for scale.
//!
//! `cargo bench -p codecs --bench opus`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::hint::black_box;

use codecs::opus::{MAX_DURATION_8K, MAX_PACKET, OpusDecoder, OpusEncoder, OpusSettings};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let signal = common::speechlike(160 * 50, 5);
    let frames: Vec<[i16; 160]> = signal
        .chunks_exact(160)
        .map(|f| f.try_into().unwrap())
        .collect();
    let settings = OpusSettings::default();

    // Packets to decode, made once.
    let mut enc = OpusEncoder::new(settings).unwrap();
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut p = [0u8; MAX_PACKET];
            let n = enc.encode(f, &mut p).unwrap();
            p[..n].to_vec()
        })
        .collect();

    let mut g = c.benchmark_group("opus_encode_per_20ms");
    let mut ours = OpusEncoder::new(settings).unwrap();
    let mut pkt = [0u8; MAX_PACKET];
    let mut k = 0usize;
    g.bench_function(
        "spanbridge default (8k -> FIR -> 48k libopus, NB, cx 1, FEC)",
        |b| {
            b.iter(|| {
                k = (k + 1) % frames.len();
                black_box(ours.encode(black_box(&frames[k]), &mut pkt).unwrap())
            })
        },
    );
    let mut rich = OpusEncoder::new(OpusSettings {
        complexity: 5,
        max_bandwidth: codecs::opus::OpusBandwidth::Fullband,
        ..settings
    })
    .unwrap();
    g.bench_function("spanbridge fullband, cx 5 (FEC)", |b| {
        b.iter(|| {
            k = (k + 1) % frames.len();
            black_box(rich.encode(black_box(&frames[k]), &mut pkt).unwrap())
        })
    });
    let mut native =
        opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    native
        .set_bitrate(opus::Bitrate::Bits(settings.bitrate))
        .unwrap();
    native.set_inband_fec(true).unwrap();
    native
        .set_packet_loss_perc(settings.expected_loss_percent)
        .unwrap();
    native.set_complexity(settings.complexity).unwrap();
    g.bench_function("libopus fed 8 kHz directly (cx 1, FEC)", |b| {
        b.iter(|| {
            k = (k + 1) % frames.len();
            black_box(native.encode(black_box(&frames[k]), &mut pkt).unwrap())
        })
    });
    let mut codes = [0u8; 160];
    g.bench_function("G.711 mu-law (scale)", |b| {
        b.iter(|| {
            k = (k + 1) % frames.len();
            codecs::g711::encode_frame(codecs::g711::Law::Ulaw, black_box(&frames[k]), &mut codes);
            black_box(&codes);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("opus_decode_per_20ms");
    let mut ours = OpusDecoder::new().unwrap();
    let mut out = [0i16; MAX_DURATION_8K];
    g.bench_function("spanbridge (48k libopus -> FIR -> 8k)", |b| {
        b.iter(|| {
            k = (k + 1) % packets.len();
            black_box(ours.decode(black_box(&packets[k]), &mut out).unwrap())
        })
    });
    let mut native = opus::Decoder::new(8000, opus::Channels::Mono).unwrap();
    g.bench_function("libopus at 8 kHz", |b| {
        b.iter(|| {
            k = (k + 1) % packets.len();
            black_box(
                native
                    .decode(black_box(&packets[k]), &mut out, false)
                    .unwrap(),
            )
        })
    });
    g.bench_function("spanbridge PLC (lost packet)", |b| {
        b.iter(|| black_box(ours.conceal(&mut out).unwrap()))
    });
    g.bench_function("spanbridge FEC recovery (lost packet)", |b| {
        b.iter(|| {
            k = (k + 1) % packets.len();
            black_box(ours.recover(black_box(&packets[k]), &mut out).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

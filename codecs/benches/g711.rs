//! G.711 per-frame speed: ours side by side with ezk-g711, audio-codec-algorithms and spandsp (C,
//! timed by a small program compiled and run at the start of this bench).
//!
//! `cargo bench -p codecs --bench g711`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::hint::black_box;

use codecs::g711::{self, Law};
use criterion::{Criterion, criterion_group, criterion_main};

const FRAME: usize = 160;

fn frames() -> Vec<[i16; FRAME]> {
    let s = common::speechlike(FRAME * 64, 7);
    s.chunks_exact(FRAME)
        .map(|c| core::array::from_fn(|i| c[i]))
        .collect()
}

fn spandsp_table() {
    match common::run_c_reference("g711_bench") {
        Ok(rows) => {
            println!("\nspandsp (C, gcc -O2), ns per 160-sample frame, same run:");
            for (k, v) in rows {
                println!("  spandsp/{k:<14} {v:>8.1} ns");
            }
            println!();
        }
        Err(e) => println!("spandsp reference not run: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    spandsp_table();
    let frames = frames();
    let codes: Vec<[u8; FRAME]> = frames
        .iter()
        .map(|f| {
            let mut o = [0u8; FRAME];
            g711::encode_frame(Law::Ulaw, f, &mut o);
            o
        })
        .collect();
    let acodes: Vec<[u8; FRAME]> = frames
        .iter()
        .map(|f| {
            let mut o = [0u8; FRAME];
            g711::encode_frame(Law::Alaw, f, &mut o);
            o
        })
        .collect();

    let mut g = c.benchmark_group("g711_ulaw_encode_frame");
    let mut out = [0u8; FRAME];
    let mut n = 0usize;
    g.bench_function("spanbridge", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            g711::encode_frame(Law::Ulaw, black_box(&frames[n]), &mut out);
            black_box(&out);
        })
    });
    g.bench_function("ezk-g711", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in out.iter_mut().zip(black_box(&frames[n])) {
                *d = ezk_g711::mulaw::encode(s);
            }
            black_box(&out);
        })
    });
    g.bench_function("audio-codec-algorithms", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in out.iter_mut().zip(black_box(&frames[n])) {
                *d = audio_codec_algorithms::encode_ulaw(s);
            }
            black_box(&out);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("g711_alaw_encode_frame");
    g.bench_function("spanbridge", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            g711::encode_frame(Law::Alaw, black_box(&frames[n]), &mut out);
            black_box(&out);
        })
    });
    g.bench_function("ezk-g711", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in out.iter_mut().zip(black_box(&frames[n])) {
                *d = ezk_g711::alaw::encode(s);
            }
            black_box(&out);
        })
    });
    g.bench_function("audio-codec-algorithms", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in out.iter_mut().zip(black_box(&frames[n])) {
                *d = audio_codec_algorithms::encode_alaw(s);
            }
            black_box(&out);
        })
    });
    g.finish();

    let mut pcm = [0i16; FRAME];
    let mut g = c.benchmark_group("g711_ulaw_decode_frame");
    g.bench_function("spanbridge", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            g711::decode_frame(Law::Ulaw, black_box(&codes[n]), &mut pcm);
            black_box(&pcm);
        })
    });
    g.bench_function("ezk-g711", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in pcm.iter_mut().zip(black_box(&codes[n])) {
                *d = ezk_g711::mulaw::decode(s);
            }
            black_box(&pcm);
        })
    });
    g.bench_function("audio-codec-algorithms", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in pcm.iter_mut().zip(black_box(&codes[n])) {
                *d = audio_codec_algorithms::decode_ulaw(s);
            }
            black_box(&pcm);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("g711_alaw_decode_frame");
    g.bench_function("spanbridge", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            g711::decode_frame(Law::Alaw, black_box(&acodes[n]), &mut pcm);
            black_box(&pcm);
        })
    });
    g.bench_function("ezk-g711", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in pcm.iter_mut().zip(black_box(&acodes[n])) {
                *d = ezk_g711::alaw::decode(s);
            }
            black_box(&pcm);
        })
    });
    g.bench_function("audio-codec-algorithms", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in pcm.iter_mut().zip(black_box(&acodes[n])) {
                *d = audio_codec_algorithms::decode_alaw(s);
            }
            black_box(&pcm);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("g711_alaw_to_ulaw_frame");
    g.bench_function("spanbridge", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            g711::transcode(Law::Alaw, Law::Ulaw, black_box(&acodes[n]), &mut out).unwrap();
            black_box(&out);
        })
    });
    g.bench_function("audio-codec-algorithms", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in out.iter_mut().zip(black_box(&acodes[n])) {
                *d = audio_codec_algorithms::convert_alaw_to_ulaw(s);
            }
            black_box(&out);
        })
    });
    g.bench_function("ezk-g711 (decode+encode)", |b| {
        b.iter(|| {
            n = (n + 1) & 63;
            for (d, &s) in out.iter_mut().zip(black_box(&acodes[n])) {
                *d = ezk_g711::mulaw::encode(ezk_g711::alaw::decode(s));
            }
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);

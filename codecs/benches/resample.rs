//! Resampling speed per 20 ms frame, ours (polyphase FIR, 75 dB stopband) side by side with
//! rubato's synchronous FFT resampler on the same frames.
//!
//! `cargo bench -p codecs --bench resample`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::hint::black_box;

use codecs::resample::Resampler;
use criterion::{Criterion, criterion_group, criterion_main};
use rubato::Resampler as _;

fn bench_pair(c: &mut Criterion, from: u32, to: u32) {
    let frame_in = from as usize / 50;
    let signal = common::speechlike(frame_in * 50, 3);
    let mut group = c.benchmark_group(format!(
        "resample_{}k_to_{}k_per_20ms",
        from / 1000,
        to / 1000
    ));
    let mut ours = Resampler::new(from, to).unwrap();
    let mut out = vec![0i16; to as usize / 50 + 8];
    let mut n = 0usize;
    group.bench_function("spanbridge", |b| {
        b.iter(|| {
            n = (n + 1) % 50;
            let frame = &signal[n * frame_in..(n + 1) * frame_in];
            let k = ours.process(black_box(frame), &mut out).unwrap();
            black_box(&out[..k]);
        })
    });
    let mut rub =
        rubato::FftFixedIn::<f32>::new(from as usize, to as usize, frame_in, 1, 1).unwrap();
    let mut input = vec![vec![0f32; frame_in]];
    let mut output = rub.output_buffer_allocate(true);
    group.bench_function("rubato FftFixedIn (f32, incl. i16 conversion)", |b| {
        b.iter(|| {
            n = (n + 1) % 50;
            let frame = &signal[n * frame_in..(n + 1) * frame_in];
            for (d, &s) in input[0].iter_mut().zip(frame) {
                *d = f32::from(s);
            }
            let (_, produced) = rub.process_into_buffer(&input, &mut output, None).unwrap();
            for (o, &v) in out.iter_mut().zip(&output[0][..produced]) {
                *o = v.round().clamp(-32768.0, 32767.0) as i16;
            }
            black_box(&out);
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    bench_pair(c, 8000, 48000);
    bench_pair(c, 48000, 8000);
    bench_pair(c, 8000, 16000);
    bench_pair(c, 16000, 8000);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);

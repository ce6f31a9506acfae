//! The Opus per-frame path (encode, decode, FEC recovery, PLC, loss updates) does not allocate
//! after construction. One test in this binary, so no other test thread allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;

use codecs::opus::{MAX_DURATION_8K, MAX_PACKET, OpusDecoder, OpusEncoder, OpusSettings};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn no_allocation_per_frame() {
    let signal: Vec<i16> = (0..16000)
        .map(|n| (((n as f64) * 0.07).sin() * 6000.0 + ((n * 7919) % 2000) as f64 - 1000.0) as i16)
        .collect();
    let mut enc = OpusEncoder::new(OpusSettings::default()).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let mut pkt = [0u8; MAX_PACKET];
    let mut buf = [0i16; MAX_DURATION_8K];
    let first: &[i16; 160] = signal[..160].try_into().unwrap();
    let n = enc.encode(first, &mut pkt).unwrap();
    dec.decode(&pkt[..n], &mut buf).unwrap();
    let region = Region::new(GLOBAL);
    for (k, f) in signal.chunks_exact(160).enumerate() {
        let f: &[i16; 160] = f.try_into().unwrap();
        let n = enc.encode(f, &mut pkt).unwrap();
        match k % 10 {
            3 => {
                dec.conceal(&mut buf).unwrap();
            }
            7 => {
                dec.recover(&pkt[..n], &mut buf).unwrap();
                dec.decode(&pkt[..n], &mut buf).unwrap();
            }
            _ => {
                dec.decode(&pkt[..n], &mut buf).unwrap();
            }
        }
        enc.set_expected_loss((k % 30) as i32);
    }
    let stats = region.change();
    assert_eq!(
        (stats.allocations, stats.reallocations),
        (0, 0),
        "allocations on the per-frame path: {stats:?}"
    );
}

//! Signalling through the span threads over real DAHDI syscalls (dahdi-sim's E1 pair, four
//! positions switched to E&M for the test): seizure, wink, in-band DTMF addressing heard by the
//! far thread's detector, and clearing, on four channels at once, repeated while a counting
//! allocator watches the whole process. The threads — commands executed, events fetched (every
//! hook change makes DAHDI refuse read/write with errno 500 until GETEVENT), tones generated
//! and detected — and this test's own loop allocate nothing. One test per binary: the
//! allocator counts the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::Law;
use hw_tests::raw::Dev;
use hw_tests::{configure_spans, dahdi_root, node};
use ringbuf::traits::Consumer;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tdm_driver::span::{
    ChannelPorts, ChannelSignals, ChannelSpec, DialString, DigitKind, SignalCommand, SignalEvent,
    SpanMedia,
};
use tdm_driver::{DeviceRoot, Event, Hook};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SIG_CLEAR: i32 = 0x80;
const SIG_EM_E1: i32 = 0x20000;
const POSITIONS: [u32; 4] = [20, 21, 22, 23];

/// Puts the test's channels back to clear channels, whatever happens.
struct Restore(Dev);
impl Drop for Restore {
    fn drop(&mut self) {
        for pos in POSITIONS {
            let _ = self.0.chanconfig(pos as i32, SIG_CLEAR);
            let _ = self.0.chanconfig(31 + pos as i32, SIG_CLEAR);
        }
    }
}

/// Waits (at most 3 s) until every channel's ring has delivered an event matching `want`,
/// draining the media rings meanwhile; returns how many digits were seen on the way.
fn wait_all(
    signals: &mut [ChannelSignals],
    ports: &mut [&mut [ChannelPorts]],
    want: impl Fn(&SignalEvent) -> bool,
    count: usize,
) -> [usize; 4] {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut hits = [0usize; 4];
    let mut digits = [0usize; 4];
    while hits.iter().any(|&h| h < count) {
        assert!(Instant::now() < deadline, "timed out: hits {hits:?}");
        for (i, s) in signals.iter_mut().enumerate() {
            while let Some(e) = s.poll() {
                if want(&e) {
                    hits[i] += 1;
                }
                if matches!(e, SignalEvent::Digit { .. }) {
                    digits[i] += 1;
                }
            }
        }
        for side in ports.iter_mut() {
            for p in side.iter_mut() {
                while p.from_line.try_pop().is_some() {}
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    digits
}

fn call_cycle(
    a: &mut [ChannelSignals],
    b: &mut [ChannelSignals],
    pa: &mut [ChannelPorts],
    pb: &mut [ChannelPorts],
    dial: DialString,
) {
    for s in a.iter_mut() {
        s.send(SignalCommand::Hook(Hook::OffHook)).unwrap();
    }
    wait_all(
        b,
        &mut [&mut *pa, &mut *pb],
        |e| *e == SignalEvent::Line(Event::RingOffHook),
        1,
    );
    for s in b.iter_mut() {
        s.send(SignalCommand::Detect(Some(DigitKind::Dtmf)))
            .unwrap();
        s.send(SignalCommand::Wink { ms: 150 }).unwrap();
    }
    wait_all(
        a,
        &mut [&mut *pa, &mut *pb],
        |e| *e == SignalEvent::Line(Event::WinkFlash),
        1,
    );
    for s in a.iter_mut() {
        s.send(SignalCommand::Dial(dial)).unwrap();
    }
    let digits = wait_all(
        b,
        &mut [&mut *pa, &mut *pb],
        |e| matches!(e, SignalEvent::Digit { .. }),
        3,
    );
    assert_eq!(digits, [3; 4], "each digit heard exactly once");
    wait_all(
        a,
        &mut [&mut *pa, &mut *pb],
        |e| *e == SignalEvent::DialDone,
        1,
    );
    for s in a.iter_mut() {
        s.send(SignalCommand::Hook(Hook::OnHook)).unwrap();
    }
    wait_all(
        b,
        &mut [&mut *pa, &mut *pb],
        |e| *e == SignalEvent::Line(Event::OnHook),
        1,
    );
    for s in b.iter_mut() {
        s.send(SignalCommand::Detect(None)).unwrap();
    }
}

#[test]
fn signalling_through_the_span_threads_allocates_nothing() {
    configure_spans().expect("dahdi_cfg");
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    for pos in POSITIONS {
        ctl.chanconfig(pos as i32, SIG_EM_E1).unwrap();
        ctl.chanconfig(31 + pos as i32, SIG_EM_E1).unwrap();
    }
    let _restore = Restore(ctl);
    let backend = Arc::new(DeviceRoot::new(dahdi_root()));
    let specs = |span| -> Vec<ChannelSpec> {
        POSITIONS
            .iter()
            .map(|&position| ChannelSpec {
                span,
                position,
                law: Law::Alaw,
            })
            .collect()
    };
    let (mut ma, mut pa) = SpanMedia::open(backend.clone(), 1, &specs(1)).unwrap();
    let (mut mb, mut pb) = SpanMedia::open(backend.clone(), 2, &specs(2)).unwrap();
    let mut sa = ma.take_signals();
    let mut sb = mb.take_signals();
    let ta = ma.spawn().unwrap();
    let tb = mb.spawn().unwrap();
    let dial = DialString::new(DigitKind::Dtmf, "159").unwrap();

    // Warm-up: one whole call on every channel (first events, lazy initialisation).
    call_cycle(&mut sa, &mut sb, &mut pa, &mut pb, dial);
    let region = Region::new(GLOBAL);
    for _ in 0..2 {
        call_cycle(&mut sa, &mut sb, &mut pa, &mut pb, dial);
    }
    let change = region.change();
    let commands: u64 = pa
        .iter()
        .chain(pb.iter())
        .map(|p| {
            p.counters
                .commands
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    let events: u64 = pa
        .iter()
        .chain(pb.iter())
        .map(|p| p.counters.events.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let dropped: u64 = pa
        .iter()
        .chain(pb.iter())
        .map(|p| {
            p.counters
                .events_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    ta.stop().unwrap();
    tb.stop().unwrap();
    eprintln!(
        "3 calls x 4 channels: {commands} commands, {events} driver events, \
         allocations in the measured 2 calls: {} ({} bytes), reallocations {}",
        change.allocations, change.bytes_allocated, change.reallocations
    );
    // Six per call and channel pair; the last call's final detector-off may still be queued.
    assert!(commands >= 3 * 4 * 6 - 4, "commands executed: {commands}");
    assert!(events >= 3 * 4 * 3, "driver events fetched: {events}");
    assert_eq!(dropped, 0);
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "the span threads allocated while signalling"
    );
}

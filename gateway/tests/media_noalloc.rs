//! The steady-state media path does not allocate: counted with an instrumented global allocator
//! over thousands of packets (receive: parse, stats, jitter buffer, decode + PLC; send: RTP
//! context, serialise; bridge ticks; RFC 4733 both ways; RTCP report writing).
//! One test per binary, so no other test thread allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::time::{Duration, Instant};

use gateway::media::bridge::{Bridge, Silence, leg_rings};
use gateway::media::dtmf::{DtmfReceiver, DtmfSender, DtmfSenderConfig};
use gateway::media::jitter::{G711Playout, JitterConfig};
use gateway::media::rtcp::{ReportBlock, RtcpWriter, parse_compound};
use gateway::media::rtp::{ReceiveStats, RtpPacket, RtpSender};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `window(k)` for k = 0, 1, 2 until one window allocates nothing, else fails with what
/// each window counted. The counter is process-wide: on a loaded machine libtest's main thread
/// can still be allocating (its channel, the result's formatting) after the test thread has
/// begun to measure. Such a burst lands in one window; an allocation on the measured path
/// shows in every window.
fn no_allocation_in_some_window(what: &str, mut window: impl FnMut(u64)) {
    let mut seen = Vec::new();
    for k in 0..3 {
        let region = Region::new(GLOBAL);
        window(k);
        let c = region.change();
        if c.allocations == 0 && c.reallocations == 0 {
            return;
        }
        seen.push(c);
    }
    panic!("{what}: allocations in every window: {seen:?}");
}

#[test]
fn steady_state_media_path_does_not_allocate() {
    let t0 = Instant::now();
    let mut playout = G711Playout::new(JitterConfig::default(), t0);
    let mut stats = ReceiveStats::new(0x1234, 8000);
    let mut tx = RtpSender::new(0x9999, 100, 1000);
    let (mut a, pa) = leg_rings(8);
    let (mut b, pb) = leg_rings(8);
    let mut bridge = Bridge::new(pa, pb, Box::new(Silence));
    let mut dtmf_tx = DtmfSender::new(DtmfSenderConfig::default());
    let mut dtmf_rx = DtmfReceiver::new(Duration::from_millis(250));
    let mut wire = [0u8; 1500];
    let mut out = [0u8; 1500];
    let mut rtcp = [0u8; 512];
    let mut frame = [0i16; 160];
    let payload = [0xd5u8; 160];
    let mut encoded = [0u8; 160];

    let mut run = |from: u64, to: u64| {
        for i in from..to {
            let now = t0 + Duration::from_millis(20 * i);
            // Receive.
            let p = RtpPacket::new(8, false, i as u16, (i * 160) as u32, 0x1234, &payload);
            let n = p.write(&mut wire).unwrap();
            let parsed = RtpPacket::parse(&wire[..n]).unwrap();
            stats.update(parsed.sequence, parsed.timestamp, now);
            playout.insert(&parsed, now);
            playout.pull(now, &mut frame);
            // Through the bridge.
            a.push_received(&frame);
            bridge.tick();
            let to_send = b.pop_to_send().unwrap_or([0; 160]);
            let _ = a.pop_to_send();
            // Send.
            codecs::g711::encode_frame(codecs::g711::Law::Ulaw, &to_send, &mut encoded);
            if dtmf_tx.is_active() {
                tx.skip(160);
            } else {
                let h = tx.next_packet(0, 160, 160);
                h.packet(&encoded).write(&mut out).unwrap();
            }
            if i % 100 == 0 {
                dtmf_tx.send_digit('5').unwrap();
            }
            while let Some(ev) = dtmf_tx.poll(now, &mut tx) {
                dtmf_rx.handle_packet(now, 0x9999, ev.header.timestamp, &ev.payload);
            }
            dtmf_rx.handle_timeout(now);
            while dtmf_rx.poll_event().is_some() {}
            // RTCP every 5 s.
            if i % 250 == 0 {
                let block = ReportBlock::from_stats(&mut stats, None, now);
                let mut w = RtcpWriter::new(&mut rtcp);
                w.receiver_report(0x9999, &[block]).unwrap();
                w.sdes_cname(0x9999, b"leg@gw").unwrap();
                let n = w.len();
                assert_eq!(parse_compound(&rtcp[..n]).unwrap().count(), 2);
            }
        }
    };
    // Warm-up (first packets prime the buffer), then count.
    run(0, 200);
    no_allocation_in_some_window("steady-state media path", |k| {
        run(200 + k * 20_000, 200 + (k + 1) * 20_000)
    });
    assert!(playout.buffer().stats().played > 19_000);
    rtp_leg_steady_state_does_not_allocate();
    inband_dtmf_per_frame_does_not_allocate();
}

/// The TDM span thread's per-frame DTMF work (gate with detector, tone player).
fn inband_dtmf_per_frame_does_not_allocate() {
    use codecs::dtmf::{DtmfParams, generate};
    use gateway::media::inband::{InbandDtmfGate, InbandDtmfPlayer};
    let mut audio = Vec::new();
    generate("0123456789*#ABCD", &DtmfParams::default(), &mut audio).unwrap();
    audio.resize(audio.len().div_ceil(160) * 160, 0);
    let frames: Vec<[i16; 160]> = audio
        .chunks_exact(160)
        .map(|c| c.try_into().unwrap())
        .collect();
    let mut gate = InbandDtmfGate::new(2);
    let mut player = InbandDtmfPlayer::new(DtmfParams::default());
    let mut out = [0i16; 160];
    let mut digits = 0;
    let region = Region::new(GLOBAL);
    for _ in 0..5 {
        for f in &frames {
            gate.push(f, &mut out);
            while let Some(e) = gate.poll_event() {
                if let gateway::media::inband::InbandDigit::Began { digit, .. } = e {
                    player.play(digit);
                    digits += 1;
                }
            }
            player.fill(&mut out);
        }
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
    assert_eq!(digits, 80);
}

/// Called from the one test of this binary (a second test thread would pollute the counts).
fn rtp_leg_steady_state_does_not_allocate() {
    use gateway::media::leg::{RtpLeg, RtpLegConfig};
    use gateway::media::rtcp::NtpClock;
    let t0 = Instant::now();
    let a_addr: std::net::SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let b_addr: std::net::SocketAddr = "192.0.2.2:4000".parse().unwrap();
    let clock = NtpClock::new(t0, Duration::from_secs(1_750_000_000));
    let cfg = |ssrc, remote| RtpLegConfig {
        ntp_clock: Some(clock),
        ..RtpLegConfig::new(ssrc, Some(remote))
    };
    let mut a = RtpLeg::new(cfg(1, b_addr), t0);
    let mut b = RtpLeg::new(cfg(2, a_addr), t0);
    let mut buf = [0u8; 1500];
    let mut frame = [0i16; 160];
    let mut run = |from: u64, to: u64| {
        for k in from..to {
            let now = t0 + Duration::from_millis(20 * k);
            if k % 50 == 0 {
                a.send_digit('7').unwrap();
            }
            while let Some((n, _)) = a.poll_dtmf(now, &mut buf) {
                b.handle_datagram(now, a_addr, &buf[..n]);
            }
            if let Some((n, _)) = a.send(&[300; 160], &mut buf) {
                b.handle_datagram(now, a_addr, &buf[..n]);
            }
            if let Some((n, _)) = b.send(&frame, &mut buf) {
                a.handle_datagram(now, b_addr, &buf[..n]);
            }
            for leg in [&mut a, &mut b] {
                if let Some((n, _)) = leg.poll_rtcp(now, &mut buf) {
                    let _ = n;
                }
                leg.handle_timeout(now);
                while leg.poll_event().is_some() {}
            }
            b.pull(now, &mut frame);
            a.pull(now, &mut frame);
        }
    };
    run(0, 300);
    no_allocation_in_some_window("RTP leg steady state", |k| {
        run(300 + k * 10_000, 300 + (k + 1) * 10_000)
    });
}

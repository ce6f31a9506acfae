//! RTP legs back to back on virtual time: audio crosses with transcoding, symmetric RTP
//! latching (and no hijack by a foreign source), RFC 4733 digits once, the inactivity timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::media::bridge::Frame;
use gateway::media::codec::AudioFormat;
use gateway::media::dtmf::ReceivedDigit;
use gateway::media::jitter::PulledAudio;
use gateway::media::leg::{LegEvent, RtpLeg, RtpLegConfig};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tone(k: usize) -> Frame {
    std::array::from_fn(|n| {
        let t = (k * 160 + n) as f64 / 8000.0;
        (6000.0 * (t * 1004.0 * std::f64::consts::TAU).sin()) as i16
    })
}

fn events(leg: &mut RtpLeg) -> Vec<LegEvent> {
    std::iter::from_fn(|| leg.poll_event()).collect()
}

#[test]
fn audio_crosses_pcmu_to_l16_with_symmetric_latching() {
    let t0 = Instant::now();
    // The peer's SDP says 10.0.0.1:4000, but it sits behind NAT and sends from 192.0.2.7:5555.
    let peer_sdp = addr("10.0.0.1:4000");
    let peer_real = addr("192.0.2.7:5555");
    let mut ours = RtpLeg::new(RtpLegConfig::new(0xaaaa, Some(peer_sdp)), t0);
    let mut peer = RtpLeg::new(
        RtpLegConfig {
            format: AudioFormat::L16,
            payload_type: 96,
            ..RtpLegConfig::new(0xbbbb, Some(addr("203.0.113.1:30000")))
        },
        t0,
    );
    // Our side expects L16 on PT 96 from this peer as well (as negotiated).
    let mut ours_l16 = RtpLeg::new(
        RtpLegConfig {
            format: AudioFormat::L16,
            payload_type: 96,
            ..RtpLegConfig::new(0xaaaa, Some(peer_sdp))
        },
        t0,
    );
    let mut buf = [0u8; 1500];
    let mut voiced = 0;
    let mut max_err = 0i32;
    for k in 0..100 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        let (n, to) = peer.send(&tone(k), &mut buf).unwrap();
        assert_eq!(to, addr("203.0.113.1:30000"));
        ours_l16.handle_datagram(now, peer_real, &buf[..n]);
        let mut f = [0i16; 160];
        if ours_l16.pull(now, &mut f) == PulledAudio::Voice {
            voiced += 1;
            // L16 is lossless; the frame is one of the sent ones (delayed by the buffer).
            let best = (0..=k)
                .map(|j| {
                    f.iter()
                        .zip(tone(j).iter())
                        .map(|(a, b)| (a - b).abs() as i32)
                        .max()
                        .unwrap()
                })
                .min()
                .unwrap();
            max_err = max_err.max(best);
        }
    }
    assert!(voiced >= 95, "{voiced}");
    assert!(
        max_err <= 1,
        "L16 frames arrive intact, max error {max_err}"
    );
    // We latched to where the media really comes from, and send there.
    assert_eq!(events(&mut ours_l16), vec![LegEvent::Latched(peer_real)]);
    let (_, to) = ours_l16.send(&tone(0), &mut buf).unwrap();
    assert_eq!(to, peer_real);
    // A PCMU leg given L16 on PT 96 drops it as an unknown payload type.
    ours.handle_datagram(t0, peer_real, &buf[..12 + 320]);
    assert_eq!(ours.counters().unknown_payload_type, 1);
}

#[test]
fn latched_source_cannot_be_hijacked_but_relatches_after_silence() {
    let t0 = Instant::now();
    let a = addr("192.0.2.1:4000");
    let intruder = addr("198.51.100.9:6666");
    let mut sender = RtpLeg::new(RtpLegConfig::new(1, Some(addr("192.0.2.2:4000"))), t0);
    let mut leg = RtpLeg::new(RtpLegConfig::new(2, None), t0);
    let mut buf = [0u8; 1500];
    let mut send = |leg: &mut RtpLeg, now, from| {
        let (n, _) = sender.send(&[100; 160], &mut buf).unwrap();
        leg.handle_datagram(now, from, &buf[..n]);
    };
    assert_eq!(leg.remote(), None, "no SDP address: wait for media");
    send(&mut leg, t0, a);
    assert_eq!(leg.remote(), Some(a));
    send(&mut leg, t0 + Duration::from_millis(500), intruder);
    assert_eq!(
        leg.remote(),
        Some(a),
        "a foreign packet while A is active is dropped"
    );
    assert_eq!(leg.counters().foreign_source, 1);
    // A goes quiet (NAT rebinding): after 1 s the new address takes over.
    let b = addr("192.0.2.1:4001");
    send(&mut leg, t0 + Duration::from_millis(1600), b);
    assert_eq!(leg.remote(), Some(b));
    assert_eq!(
        events(&mut leg),
        vec![LegEvent::Latched(a), LegEvent::Latched(b)]
    );
}

#[test]
fn digits_arrive_once_and_silence_ends_the_call_once() {
    let t0 = Instant::now();
    let b_addr = addr("192.0.2.2:4000");
    let mut a = RtpLeg::new(RtpLegConfig::new(1, Some(b_addr)), t0);
    let mut b = RtpLeg::new(RtpLegConfig::new(2, Some(addr("192.0.2.1:4000"))), t0);
    let mut buf = [0u8; 1500];
    for d in "12#".chars() {
        a.send_digit(d).unwrap();
    }
    let mut digits = String::new();
    let mut sent_audio = 0;
    for ms in 0..2000u64 {
        let now = t0 + Duration::from_millis(ms);
        while let Some((n, _)) = a.poll_dtmf(now, &mut buf) {
            b.handle_datagram(now, addr("192.0.2.1:4000"), &buf[..n]);
            // The end packets are sent 3 times; a duplicate on the network on top.
            b.handle_datagram(now, addr("192.0.2.1:4000"), &buf[..n]);
        }
        if ms % 20 == 0 {
            if let Some((n, _)) = a.send(&[0; 160], &mut buf) {
                sent_audio += 1;
                b.handle_datagram(now, addr("192.0.2.1:4000"), &buf[..n]);
            }
        }
        b.handle_timeout(now);
        for e in events(&mut b) {
            if let LegEvent::Digit(ReceivedDigit::Began { event, .. }) = e {
                digits.push(gateway::media::dtmf::event_to_digit(event).unwrap());
            }
        }
    }
    assert_eq!(digits, "12#");
    assert!(sent_audio < 100, "no audio while events were sent");
    // Now A stops sending altogether: 30 s later B reports inactivity, exactly once.
    // The last packet B received was A's audio at 1980 ms.
    let deadline = b.poll_timeout().unwrap();
    assert_eq!(
        deadline,
        t0 + Duration::from_millis(1980) + Duration::from_secs(30)
    );
    b.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut b).is_empty());
    b.handle_timeout(deadline);
    assert_eq!(events(&mut b), vec![LegEvent::Inactive]);
    b.handle_timeout(deadline + Duration::from_secs(60));
    assert!(events(&mut b).is_empty());
}

#[test]
fn rtcp_reports_loss_and_measures_round_trip() {
    use gateway::media::rtcp::NtpClock;
    let t0 = Instant::now();
    let (a_addr, b_addr) = (addr("192.0.2.1:4000"), addr("192.0.2.2:4000"));
    // Both ends know the wall clock (their NTP clocks agree here; RTT does not need that).
    let clock = NtpClock::new(t0, Duration::from_secs(1_750_000_000));
    let cfg = |ssrc, remote| RtpLegConfig {
        ntp_clock: Some(clock),
        ..RtpLegConfig::new(ssrc, Some(remote))
    };
    let mut a = RtpLeg::new(cfg(1, b_addr), t0);
    let mut b = RtpLeg::new(cfg(2, a_addr), t0);
    // One-way delay 30 ms each way; every 10th packet from A to B is lost.
    let delay = Duration::from_millis(30);
    let mut in_flight: Vec<(Instant, bool, Vec<u8>)> = vec![];
    let mut buf = [0u8; 1500];
    for ms in (0..12_000u64).step_by(10) {
        let now = t0 + Duration::from_millis(ms);
        in_flight.sort_by_key(|p| p.0);
        while in_flight.first().is_some_and(|p| p.0 <= now) {
            let (_, to_b, d) = in_flight.remove(0);
            if to_b {
                b.handle_datagram(now, a_addr, &d);
            } else {
                a.handle_datagram(now, b_addr, &d);
            }
        }
        if ms % 20 == 0 {
            let k = ms / 20;
            if let Some((n, _)) = a.send(&[500; 160], &mut buf) {
                if k % 10 != 3 {
                    in_flight.push((now + delay, true, buf[..n].to_vec()));
                }
            }
            if let Some((n, _)) = b.send(&[500; 160], &mut buf) {
                in_flight.push((now + delay, false, buf[..n].to_vec()));
            }
        }
        if let Some((n, _)) = a.poll_rtcp(now, &mut buf) {
            in_flight.push((now + delay, true, buf[..n].to_vec()));
        }
        if let Some((n, _)) = b.poll_rtcp(now, &mut buf) {
            in_flight.push((now + delay, false, buf[..n].to_vec()));
        }
    }
    // B told A about A's stream: 10 % lost.
    let report = a
        .peer_report()
        .expect("B's report about A's stream reached A");
    assert_eq!(report.ssrc, 1);
    assert!(
        (20..=30).contains(&report.fraction_lost),
        "fraction {}",
        report.fraction_lost
    );
    assert!(report.cumulative_lost >= 20, "{}", report.cumulative_lost);
    let rtt = a.round_trip().expect("A measured the round trip");
    assert!(
        (rtt.as_secs_f64() - 0.060).abs() < 0.002,
        "RTT {rtt:?} for 2 × 30 ms"
    );
    assert!(b.round_trip().is_some());
    assert!(b.counters().rtcp_received >= 2);
}

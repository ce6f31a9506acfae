//! Property tests: every media parser takes arbitrary bytes without panicking, and what it
//! accepts round-trips through the serialiser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway::media::rtp::{RtpExtension, RtpPacket};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn rtp_parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = RtpPacket::parse(&bytes) {
            let mut out = vec![0u8; p.wire_len()];
            let n = p.write(&mut out).unwrap();
            prop_assert_eq!(n, p.wire_len());
            let q = RtpPacket::parse(&out[..n]).unwrap();
            prop_assert_eq!(p, q);
            prop_assert!(p.wire_len() <= bytes.len());
        }
    }

    #[test]
    fn rtp_write_then_parse_is_identity(
        pt in 0u8..128, marker: bool, seq: u16, ts: u32, ssrc: u32,
        ncsrc in 0usize..16, ext_words in proptest::option::of(0usize..4),
        payload in proptest::collection::vec(any::<u8>(), 0..200), padding in 0u8..8,
    ) {
        let csrc: Vec<u8> = (0..ncsrc * 4).map(|i| i as u8).collect();
        let ext: Vec<u8> = vec![0x5a; ext_words.unwrap_or(0) * 4];
        let p = RtpPacket {
            csrc_bytes: &csrc,
            extension: ext_words.map(|_| RtpExtension { profile: 0xbede, data: &ext }),
            padding,
            ..RtpPacket::new(pt, marker, seq, ts, ssrc, &payload)
        };
        let mut out = vec![0u8; 512];
        let n = p.write(&mut out).unwrap();
        prop_assert_eq!(RtpPacket::parse(&out[..n]).unwrap(), p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary packet streams (any sequence, timestamp, source, size, arrival order) never
    /// panic the jitter buffer, and within one source frames never come out twice.
    #[test]
    fn jitter_buffer_takes_any_stream(
        ops in proptest::collection::vec(
            (any::<u16>(), any::<u32>(), 0u32..2, any::<bool>(), 0u64..50, 0usize..400, any::<bool>()),
            0..300,
        )
    ) {
        use gateway::media::jitter::{JitterBuffer, JitterConfig, Playout};
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default(), t0);
        let mut now = t0;
        let payload = [0u8; 400];
        let mut seen = std::collections::HashSet::new();
        for (seq, ts, ssrc, marker, dt, len, pop) in ops {
            now += Duration::from_millis(dt);
            let p = RtpPacket::new(0, marker, seq, ts, ssrc, &payload[..len]);
            jb.insert(&p, now);
            if pop {
                let epoch = (jb.stats().ssrc_changes, jb.stats().resyncs);
                if let Playout::Frame(f) = jb.pop(now) {
                    prop_assert!(f.payload.len() <= 320);
                    let key = (epoch, f.sequence);
                    prop_assert!(seen.insert(key), "frame {:?} played twice", key);
                }
            }
        }
    }
}

proptest! {
    /// Any telephone-event packets (any source, timestamp, bytes, timing) never panic the
    /// receiver, and every digit that begins ends exactly once.
    #[test]
    fn dtmf_receiver_takes_any_packets(
        ops in proptest::collection::vec(
            (0u32..2, 0u32..6, proptest::collection::vec(any::<u8>(), 0..8), 0u64..300),
            0..200,
        )
    ) {
        use gateway::media::dtmf::{DtmfReceiver, ReceivedDigit};
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(Duration::from_millis(250));
        let mut now = t0;
        let (mut began, mut ended) = (0usize, 0usize);
        let drain = |rx: &mut DtmfReceiver, began: &mut usize, ended: &mut usize| {
            while let Some(d) = rx.poll_event() {
                match d {
                    ReceivedDigit::Began { .. } => *began += 1,
                    ReceivedDigit::Ended { .. } => *ended += 1,
                }
                prop_assert!(*ended <= *began && *began <= *ended + 1);
            }
            Ok(())
        };
        for (ssrc, ts, payload, dt) in ops {
            now += Duration::from_millis(dt);
            rx.handle_timeout(now);
            rx.handle_packet(now, ssrc, ts * 800, &payload);
            drain(&mut rx, &mut began, &mut ended)?;
        }
        rx.handle_timeout(now + Duration::from_secs(1));
        drain(&mut rx, &mut began, &mut ended)?;
        prop_assert_eq!(began, ended);
    }

    /// Telephone-event payloads: any bytes parse or fail cleanly; parsed ones round-trip.
    #[test]
    fn telephone_event_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
        use gateway::media::dtmf::TelephoneEvent;
        if let Ok(e) = TelephoneEvent::parse(&bytes) {
            prop_assert_eq!(&e.to_bytes().unwrap()[..], &[bytes[0], bytes[1] & 0xbf, bytes[2], bytes[3]][..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any datagram: RTCP validation either refuses it or yields packets whose iteration and
    /// accessors never panic; demux always answers.
    #[test]
    fn rtcp_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        use gateway::media::rtcp::{RtcpPacket, demux, parse_compound, parse_one};
        let _ = demux(&bytes);
        let _ = parse_one(&bytes);
        if let Ok(c) = parse_compound(&bytes) {
            for p in c {
                match p {
                    RtcpPacket::SenderReport { reports, .. } | RtcpPacket::ReceiverReport { reports, .. } => {
                        prop_assert_eq!(reports.iter().count(), reports.len());
                    }
                    RtcpPacket::SourceDescription(chunks) => { let _ = chunks.iter().count(); }
                    _ => {}
                }
            }
        }
    }

    /// Structured RTCP with arbitrary field values survives write → parse.
    #[test]
    fn rtcp_write_parse_round_trip(
        ssrc: u32, lost in -0x80_0000i32..0x80_0000, fraction: u8, hi: u32, jitter: u32,
        nblocks in 0usize..5, cname in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        use gateway::media::rtcp::{ReportBlock, RtcpPacket, RtcpWriter, parse_compound};
        let block = ReportBlock { ssrc, fraction_lost: fraction, cumulative_lost: lost,
            highest_sequence: hi, jitter, last_sr: 1, delay_since_last_sr: 2 };
        let blocks = vec![block; nblocks];
        let mut buf = [0u8; 512];
        let mut w = RtcpWriter::new(&mut buf);
        w.receiver_report(ssrc, &blocks).unwrap();
        w.sdes_cname(ssrc, &cname).unwrap();
        let n = w.len();
        let ps: Vec<_> = parse_compound(&buf[..n]).unwrap().collect();
        prop_assert_eq!(ps.len(), 2);
        match ps[0] {
            RtcpPacket::ReceiverReport { reports, .. } => prop_assert_eq!(reports.iter().collect::<Vec<_>>(), blocks),
            _ => prop_assert!(false),
        }
        match ps[1] {
            RtcpPacket::SourceDescription(c) => prop_assert_eq!(c.iter().collect::<Vec<_>>(), vec![(ssrc, Some(&cname[..]))]),
            _ => prop_assert!(false),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// An RTP leg takes any datagrams from any of a few addresses, interleaved with playout
    /// and timers, without panicking. Datagrams start like RTP/RTCP often enough to get deep.
    #[test]
    fn rtp_leg_takes_any_datagrams(
        ops in proptest::collection::vec(
            (0u8..3, prop_oneof![Just(0x80u8), Just(0x90), Just(0xa0), Just(0x81), any::<u8>()],
             prop_oneof![Just(0u8), Just(101), Just(200), Just(201), Just(0x80), any::<u8>()],
             proptest::collection::vec(any::<u8>(), 0..200), 0u64..100),
            0..100,
        )
    ) {
        use gateway::media::leg::{RtpLeg, RtpLegConfig};
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut leg = RtpLeg::new(RtpLegConfig::new(5, None), t0);
        let mut now = t0;
        let mut frame = [0i16; 160];
        let mut out = [0u8; 1500];
        for (who, b0, b1, rest, dt) in ops {
            now += Duration::from_millis(dt);
            let mut d = vec![b0, b1];
            d.extend_from_slice(&rest);
            let from = std::net::SocketAddr::from(([192, 0, 2, who], 4000));
            leg.handle_datagram(now, from, &d);
            leg.pull(now, &mut frame);
            let _ = leg.send(&frame, &mut out);
            leg.handle_timeout(now);
            while leg.poll_event().is_some() {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The in-band gate takes any audio (and any hold depth) without panicking, releases exactly
    /// one frame per frame once full, and only ever zeroes samples (never invents any); its
    /// begun/ended digit events pair up.
    #[test]
    fn inband_gate_takes_any_audio(
        hold in 0usize..8,
        frames in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 160), 0..40),
        digits in "[0-9*#A-Da-d]{0,6}",
    ) {
        use gateway::media::inband::{InbandDigit, InbandDtmfGate, InbandDtmfPlayer, MAX_HOLD_FRAMES};
        let mut gate = InbandDtmfGate::new(hold);
        let held = hold.clamp(1, MAX_HOLD_FRAMES);
        let mut out = [0i16; 160];
        let mut released = 0;
        let (mut began, mut ended) = (0, 0);
        for (k, f) in frames.iter().enumerate() {
            let frame: [i16; 160] = f.as_slice().try_into().unwrap();
            if gate.push(&frame, &mut out) {
                let src = &frames[released];
                prop_assert!(out.iter().zip(src).all(|(&o, &s)| o == s || o == 0));
                released += 1;
            }
            prop_assert_eq!(released, (k + 1).saturating_sub(held));
            while let Some(e) = gate.poll_event() {
                match e {
                    InbandDigit::Began { .. } => began += 1,
                    InbandDigit::Ended { .. } => ended += 1,
                }
            }
            prop_assert!(ended <= began && began <= ended + 1);
        }
        let mut player = InbandDtmfPlayer::new(codecs::dtmf::DtmfParams::default());
        for d in digits.chars().chain(['x', 'é']) {
            player.play(d);
        }
        let mut f = [1i16; 160];
        for _ in 0..200 {
            player.fill(&mut f);
        }
        prop_assert!(!player.is_playing());
        prop_assert_eq!(player.dropped(), 2);
    }
}

/// One step of [`rtp_leg_survives_any_datagrams_and_renegotiation`].
#[derive(Debug, Clone)]
enum LegOp {
    /// A datagram on the RTP (or rtcp-mux) port.
    Media(u8, u8, u8, Vec<u8>),
    /// A datagram on the separate RTCP port.
    Rtcp(u8, Vec<u8>),
    /// A re-negotiation.
    Reconfigure(u8, u8, u16, u8, bool, bool),
    /// 20 ms of playout and sending (comfort noise instead of audio when true), timers.
    Tick(bool),
    /// A digit to send.
    Digit(char, u16),
}

fn leg_op() -> impl Strategy<Value = LegOp> {
    prop_oneof![
        4 => (0u8..3,
              prop_oneof![Just(0x80u8), Just(0x90), Just(0xa0), any::<u8>()],
              prop_oneof![Just(0u8), Just(8), Just(13), Just(101), Just(96), Just(200), Just(201), any::<u8>()],
              proptest::collection::vec(any::<u8>(), 0..600))
            .prop_map(|(w, a, b, rest)| LegOp::Media(w, a, b, rest)),
        1 => (0u8..3, proptest::collection::vec(any::<u8>(), 0..120)).prop_map(|(w, d)| LegOp::Rtcp(w, d)),
        1 => (0u8..3, prop_oneof![Just(0u8), Just(8), Just(96), any::<u8>()], 0u16..80, 0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(f, pt, ptime, dir, cn, mux)| LegOp::Reconfigure(f, pt, ptime, dir, cn, mux)),
        6 => any::<bool>().prop_map(LegOp::Tick),
        1 => (prop_oneof![Just('5'), Just('#'), Just('x')], 0u16..10_000).prop_map(|(d, ms)| LegOp::Digit(d, ms)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The datagram path of an RTP leg, with everything the plane does to it between packets
    /// (re-negotiation of format, payload type, ptime, direction, CN and rtcp-mux; playout;
    /// comfort noise; ptime-10 second halves; digits; timers), never panics, and what it sends
    /// is always one stream: one SSRC, sequence numbers +1.
    #[test]
    fn rtp_leg_survives_any_datagrams_and_renegotiation(ops in proptest::collection::vec(leg_op(), 0..150)) {
        use gateway::media::codec::AudioFormat;
        use gateway::media::leg::{Direction, RtpLeg, RtpLegConfig};
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let peer = std::net::SocketAddr::from(([192, 0, 2, 1], 4000));
        let mut leg = RtpLeg::new(RtpLegConfig { comfort_noise: Some(13), ..RtpLegConfig::new(5, Some(peer)) }, t0);
        let mut now = t0;
        let mut frame = [0i16; 160];
        let mut out = [0u8; 1500];
        let mut sent: Vec<(u32, u16)> = vec![];
        let mut record = |r: Option<(usize, std::net::SocketAddr)>, out: &[u8]| {
            if let Some((n, _)) = r {
                let p = RtpPacket::parse(&out[..n]).unwrap();
                sent.push((p.ssrc, p.sequence));
            }
        };
        for op in ops {
            match op {
                LegOp::Media(who, b0, b1, rest) => {
                    let mut d = vec![b0, b1];
                    d.extend_from_slice(&rest);
                    leg.handle_datagram(now, std::net::SocketAddr::from(([192, 0, 2, 1 + who], 4000)), &d);
                }
                LegOp::Rtcp(who, d) => {
                    leg.handle_rtcp_datagram(now, std::net::SocketAddr::from(([192, 0, 2, 1 + who], 4001)), &d);
                }
                LegOp::Reconfigure(f, pt, ptime, dir, cn, mux) => {
                    let format = [AudioFormat::Pcmu, AudioFormat::Pcma, AudioFormat::L16][usize::from(f)];
                    let direction = [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive][usize::from(dir)];
                    leg.reconfigure(now, RtpLegConfig {
                        format,
                        payload_type: pt,
                        ptime_ms: ptime,
                        direction,
                        comfort_noise: cn.then_some(13),
                        rtcp_mux: mux,
                        ..RtpLegConfig::new(99, Some(peer))
                    });
                }
                LegOp::Tick(cn) => {
                    now += Duration::from_millis(20);
                    leg.pull(now, &mut frame);
                    let r = if cn { leg.send_comfort_noise(&mut out) } else { leg.send(&frame, &mut out) };
                    record(r, &out);
                    while leg.has_pending() {
                        let r = leg.send_pending(&mut out);
                        prop_assert!(r.is_some());
                        record(r, &out);
                    }
                    loop {
                        let r = leg.poll_dtmf(now, &mut out);
                        if r.is_none() { break; }
                        record(r, &out);
                    }
                    let _ = leg.poll_rtcp(now, &mut out);
                    leg.handle_timeout(now);
                    while leg.poll_event().is_some() {}
                }
                LegOp::Digit(d, ms) => {
                    let _ = leg.send_digit_for(d, Duration::from_millis(u64::from(ms)));
                }
            }
        }
        for w in sent.windows(2) {
            prop_assert_eq!(w[0].0, w[1].0, "one SSRC");
            prop_assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence +1");
        }
    }
}

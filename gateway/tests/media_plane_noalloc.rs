//! A running media worker's steady state does not allocate: a plane with calls in every mode
//! (PCMU ↔ PCMA transcoding, ptime 10 and 40, an external `FramePort` leg with in-band
//! detection, milliwatt, a looped prompt, echo, comfort noise on hold, RFC 4733 digits in
//! both directions, RTCP every 200 ms, a foreign source and malformed datagrams) runs over real
//! sockets while an instrumented global allocator counts every allocation of every thread of
//! the process — the workers' and this peer loop's — for five seconds. One test per binary, so
//! no other test thread allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::media::bridge::leg_rings;
use gateway::media::codec::AudioFormat;
use gateway::media::plane::{MediaEvent, MediaPlane, PlaneConfig, RtpParams, Source};
use gateway::media::rtp::RtpPacket;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Peer {
    sock: UdpSocket,
    to: SocketAddr,
    format: AudioFormat,
    pt: u8,
    samples: usize,
    seq: u16,
    ts: u32,
    received: u64,
}

#[test]
fn running_worker_steady_state_does_not_allocate() {
    let base = 16000 + (std::process::id() % 400) as u16 * 10;
    let plane = MediaPlane::start(PlaneConfig {
        workers: 1,
        rtp_ports: base..=base + 2000,
        rtcp_interval: Duration::from_millis(200),
        ..PlaneConfig::default()
    })
    .unwrap();
    let mut ev = plane.take_events().unwrap();
    // (format, our ptime, the peer's ptime, comfort noise)
    let legs = [
        (AudioFormat::Pcmu, 20, 20, None),
        (AudioFormat::Pcma, 20, 20, Some(13)),
        (AudioFormat::Pcmu, 10, 30, None),
        (AudioFormat::Pcma, 40, 10, None),
        (AudioFormat::L16, 20, 20, None),
        (AudioFormat::Pcmu, 20, 20, None),
        (AudioFormat::Pcmu, 20, 20, Some(13)),
        (AudioFormat::Pcma, 20, 40, None),
    ];
    let mut ids = vec![];
    let mut peers = vec![];
    for (k, &(format, ptime, peer_ptime, cn)) in legs.iter().enumerate() {
        let (id, addr) = plane.open_rtp(k as u64 / 2, LOCAL).unwrap();
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        sock.set_nonblocking(true).unwrap();
        let pt = format.static_payload_type().unwrap_or(96);
        plane
            .configure_rtp(
                id,
                RtpParams {
                    payload_type: pt,
                    ptime_ms: ptime,
                    comfort_noise: cn,
                    rtcp_mux: k % 2 == 0,
                    ..RtpParams::new(format, Some(sock.local_addr().unwrap()))
                },
            )
            .unwrap();
        ids.push(id);
        peers.push(Peer {
            sock,
            to: addr,
            format,
            pt,
            samples: peer_ptime * 8,
            seq: 1,
            ts: 1000,
            received: 0,
        });
    }
    // Calls 0, 1: bridged (transcoding, ptime changes). Call 2: milliwatt and a looped prompt.
    // Call 3: echo, and comfort noise on hold. Plus an external leg bridged to a ninth RTP leg.
    plane.connect(ids[0], ids[1]).unwrap();
    plane.connect(ids[2], ids[3]).unwrap();
    plane.play(ids[4], Source::Milliwatt).unwrap();
    let prompt: Arc<[i16]> = (0..1234).map(|n| (n * 7 % 2000) as i16).collect();
    plane.play(ids[5], Source::Wav(prompt, true)).unwrap();
    plane.play(ids[6], Source::Echo).unwrap();
    plane.play(ids[7], Source::ComfortNoise).unwrap();
    let (mut endpoint, port) = leg_rings(8);
    let ext = plane.attach_port(9, Box::new(port)).unwrap();
    let (rtp9, addr9) = plane.open_rtp(9, LOCAL).unwrap();
    let sock9 = UdpSocket::bind((LOCAL, 0)).unwrap();
    sock9.set_nonblocking(true).unwrap();
    plane
        .configure_rtp(
            rtp9,
            RtpParams::new(AudioFormat::Pcmu, Some(sock9.local_addr().unwrap())),
        )
        .unwrap();
    plane.connect(ext, rtp9).unwrap();
    peers.push(Peer {
        sock: sock9,
        to: addr9,
        format: AudioFormat::Pcmu,
        pt: 0,
        samples: 160,
        seq: 1,
        ts: 1000,
        received: 0,
    });
    let intruder = UdpSocket::bind((LOCAL, 0)).unwrap();
    assert!(plane.flush(Duration::from_secs(2)));

    let mut pcm = [0i16; 480];
    for (n, s) in pcm.iter_mut().enumerate() {
        *s = ((n as f32 * 0.37).sin() * 6000.0) as i16;
    }
    let mut buf = [0u8; 2048];
    let mut wire = [0u8; 1200];
    let mut run = |from: u64, to: u64, peers: &mut Vec<Peer>| -> u64 {
        let mut digits = 0;
        let t0 = Instant::now();
        for step in from..to {
            // 10 ms steps; each peer sends on its own ptime.
            let due = t0 + Duration::from_millis(10 * (step - from));
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            for (k, p) in peers.iter_mut().enumerate() {
                if (step * 10) % (p.samples as u64 / 8) == 0 {
                    let mut payload = [0u8; 960];
                    let n = p.format.encode_from(&pcm[..p.samples], &mut payload);
                    let packet =
                        RtpPacket::new(p.pt, false, p.seq, p.ts, 0x5000 + k as u32, &payload[..n]);
                    let len = packet.write(&mut wire).unwrap();
                    p.sock.send_to(&wire[..len], p.to).unwrap();
                    p.seq = p.seq.wrapping_add(1);
                    p.ts = p.ts.wrapping_add(p.samples as u32);
                }
                // Every 2 s: an RFC 4733 digit from peer 0 (start, 3 ends).
                if k == 0 && step % 200 == 50 {
                    for (i, end) in [false, true, true, true].into_iter().enumerate() {
                        let e = [3, if end { 0x8a } else { 0x0a }, 3, 0x20];
                        let packet = RtpPacket::new(101, i == 0, p.seq, p.ts, 0x5000, &e);
                        let len = packet.write(&mut wire).unwrap();
                        p.sock.send_to(&wire[..len], p.to).unwrap();
                        p.seq = p.seq.wrapping_add(1);
                    }
                }
                if k == 1 && step % 10 == 5 {
                    p.sock.send_to(&[0x80, 0x00, 1], p.to).unwrap();
                    let packet = RtpPacket::new(8, false, 1, 1, 0xbad, &[0xd5; 160]);
                    let len = packet.write(&mut wire).unwrap();
                    intruder.send_to(&wire[..len], p.to).unwrap();
                }
                while let Ok((_, _)) = p.sock.recv_from(&mut buf) {
                    p.received += 1;
                }
            }
            if step % 2 == 0 {
                let mut f = [0i16; 160];
                f.copy_from_slice(&pcm[..160]);
                endpoint.push_received(&f);
                while endpoint.pop_to_send().is_some() {}
            }
            while let Ok(e) = ev.try_recv() {
                if matches!(e, MediaEvent::Digit { .. }) {
                    digits += 1;
                }
            }
        }
        digits
    };
    run(0, 200, &mut peers);
    let before: Vec<u64> = peers.iter().map(|p| p.received).collect();
    let region = Region::new(GLOBAL);
    let digits = run(200, 700, &mut peers);
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "allocations while the worker ran: {change:?}"
    );
    // It really ran: every peer kept receiving (the held one ~5 CN packets/s), digits arrived.
    for (k, p) in peers.iter().enumerate() {
        let got = p.received - before[k];
        assert!(got >= 20, "peer {k} received {got} in 5 s");
    }
    assert!(digits >= 2, "digits {digits}");
    let st = plane.stats(ids[1]).unwrap();
    assert!(st.malformed > 0 && st.foreign > 0, "{st:?}");
    for id in ids.into_iter().chain([ext, rtp9]) {
        plane.release(id);
    }
    assert!(plane.counts().is_idle());
}

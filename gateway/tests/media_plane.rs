//! The running media plane over real sockets on 127.0.0.1: two RTP peers (PCMU and PCMA)
//! through the plane with audio correlated end to end, DTMF once, hold with comfort noise or
//! silence, re-configuration keeping SSRC/sequence/timestamp continuity, ptime 10/30/40 on the
//! wire, release to zero, inactivity, echo and milliwatt measured at the peer, an external
//! `FramePort` leg with in-band DTMF, and malformed/foreign datagrams counted. Every test is
//! bounded in time (a few seconds of media).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::media::bridge::leg_rings;
use gateway::media::codec::AudioFormat;
use gateway::media::plane::{
    Direction, MediaEvent, MediaId, MediaPlane, PlaneConfig, RtpParams, Source,
};
use gateway::media::rtp::RtpPacket;
use tokio::sync::mpsc::UnboundedReceiver;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A plane on its own stretch of ports (per process and test), 2 workers.
fn plane(test: u16) -> MediaPlane {
    let base = 12000 + (std::process::id() % 300) as u16 * 60 + test * 6;
    MediaPlane::start(PlaneConfig {
        workers: 2,
        rtp_ports: base..=base + 5 + 400,
        ..PlaneConfig::default()
    })
    .unwrap()
}

#[derive(Debug, Clone)]
struct Rx {
    at: Instant,
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

/// An RTP endpoint: sends one stream, records everything it receives.
struct Peer {
    sock: UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts: u32,
    pt: u8,
    format: AudioFormat,
    got: Vec<Rx>,
}

impl Peer {
    fn new(to: SocketAddr, format: AudioFormat, pt: u8, ssrc: u32) -> Self {
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        sock.set_nonblocking(true).unwrap();
        Self {
            sock,
            to,
            ssrc,
            seq: 1000,
            ts: 50_000,
            pt,
            format,
            got: vec![],
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send_packet(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let p = RtpPacket::new(pt, marker, self.seq, ts, self.ssrc, payload);
        let mut buf = [0u8; 1500];
        let n = p.write(&mut buf).unwrap();
        self.sock.send_to(&buf[..n], self.to).unwrap();
        self.seq = self.seq.wrapping_add(1);
    }

    /// Sends `samples` (any count: ptime = len / 8 ms) as one packet.
    fn send_audio(&mut self, samples: &[i16]) {
        let mut payload = vec![0u8; samples.len() * 2];
        let n = self.format.encode_from(samples, &mut payload);
        let ts = self.ts;
        self.send_packet(self.pt, false, ts, &payload[..n]);
        self.ts = self.ts.wrapping_add(samples.len() as u32);
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            // RTCP (payload types 200..=206 in the second byte) is not media.
            if let Ok(p) = RtpPacket::parse(&buf[..n])
                && !(200..=206).contains(&buf[1])
            {
                self.got.push(Rx {
                    at: Instant::now(),
                    pt: p.payload_type,
                    marker: p.marker,
                    seq: p.sequence,
                    ts: p.timestamp,
                    ssrc: p.ssrc,
                    payload: p.payload.to_vec(),
                });
            }
        }
    }

    /// Decoded audio of the packets of payload type `pt` received, in sequence order.
    fn audio(&self, pt: u8, format: AudioFormat) -> Vec<i16> {
        let mut v: Vec<&Rx> = self.got.iter().filter(|r| r.pt == pt).collect();
        v.sort_by_key(|r| r.seq);
        let mut out = vec![];
        for r in v {
            let mut pcm = vec![0i16; format.payload_samples(r.payload.len())];
            format.decode_into(&r.payload, &mut pcm);
            out.extend_from_slice(&pcm);
        }
        out
    }
}

/// Runs `ticks` of 20 ms (paced to the wall clock), calling `each(k)` then draining `peers`.
fn run(ticks: u32, peers: &mut [&mut Peer], mut each: impl FnMut(u32, &mut [&mut Peer])) {
    let t0 = Instant::now();
    for k in 0..ticks {
        let due = t0 + Duration::from_millis(20 * u64::from(k));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        each(k, peers);
        for p in peers.iter_mut() {
            p.drain();
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    for p in peers.iter_mut() {
        p.drain();
    }
}

/// Band-limited pseudo-random audio (a unique correlation peak), about −12 dBm0.
fn noise(n: usize, seed: u32) -> Vec<i16> {
    let mut x = seed | 1;
    let mut prev = 0.0f32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let w = (x as f32 / u32::MAX as f32) * 2.0 - 1.0;
            prev = 0.6 * prev + 0.4 * w;
            (prev * 14000.0) as i16
        })
        .collect()
}

/// Best normalised cross-correlation of `got` against `sent` over lags 0..max_lag (samples of
/// `got` later than `sent`), on a window of `len` samples starting at `from` in `sent`.
fn best_ncc(sent: &[i16], got: &[i16], from: usize, len: usize, max_lag: usize) -> (f64, usize) {
    let x = &sent[from..from + len];
    let ex: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    let mut best = (0.0, 0);
    for lag in 0..max_lag {
        let Some(y) = got.get(from + lag..from + lag + len) else {
            break;
        };
        let ey: f64 = y.iter().map(|&v| f64::from(v).powi(2)).sum();
        let xy: f64 = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        let ncc = xy / (ex * ey).sqrt().max(1.0);
        if ncc > best.0 {
            best = (ncc, lag);
        }
    }
    best
}

fn events(rx: &mut UnboundedReceiver<MediaEvent>) -> Vec<MediaEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn params(format: AudioFormat, remote: SocketAddr) -> RtpParams {
    RtpParams {
        rtcp_mux: true,
        ..RtpParams::new(format, Some(remote))
    }
}

/// Two RTP legs of one call, each with its peer.
struct Call {
    plane: MediaPlane,
    ev: UnboundedReceiver<MediaEvent>,
    a: MediaId,
    b: MediaId,
    pa: Peer,
    pb: Peer,
}

fn call(test: u16, fa: AudioFormat, fb: AudioFormat) -> Call {
    let plane = plane(test);
    let ev = plane.take_events().unwrap();
    let (a, addr_a) = plane.open_rtp(7, LOCAL).unwrap();
    let (b, addr_b) = plane.open_rtp(7, LOCAL).unwrap();
    assert_eq!(addr_a.port() % 2, 0, "RTP on an even port");
    let pa = Peer::new(addr_a, fa, fa.static_payload_type().unwrap_or(96), 0xa11ce);
    let pb = Peer::new(addr_b, fb, fb.static_payload_type().unwrap_or(96), 0xb0b);
    plane.configure_rtp(a, params(fa, pa.addr())).unwrap();
    plane.configure_rtp(b, params(fb, pb.addr())).unwrap();
    plane.connect(a, b).unwrap();
    Call {
        plane,
        ev,
        a,
        b,
        pa,
        pb,
    }
}

/// Sequence numbers +1 per packet, one SSRC: one continuous stream.
fn assert_one_stream(got: &[Rx]) {
    assert!(!got.is_empty());
    let ssrc = got[0].ssrc;
    assert!(
        got.iter().all(|r| r.ssrc == ssrc),
        "one SSRC for the leg's life"
    );
    let mut seqs: Vec<u16> = got.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), got.len(), "no repeated sequence numbers");
    let span = seqs.last().unwrap().wrapping_sub(seqs[0]) as usize + 1;
    assert_eq!(span, got.len(), "no gap in sequence numbers");
}

#[test]
fn pcmu_in_pcma_out_correlates_both_ways_and_digits_arrive_once() {
    let mut c = call(0, AudioFormat::Pcmu, AudioFormat::Pcma);
    let sent_a = noise(160 * 150, 1);
    let sent_b = noise(160 * 150, 2);
    let (plane, b) = (c.plane.clone(), c.b);
    let mut forwarded = vec![];
    run(190, &mut [&mut c.pa, &mut c.pb], |k, peers| {
        let k = k as usize;
        if k < 150 {
            peers[0].send_audio(&sent_a[k * 160..(k + 1) * 160]);
            peers[1].send_audio(&sent_b[k * 160..(k + 1) * 160]);
        } else if k == 160 {
            // RFC 4733 digit '5' from A: start, continuation, three ends, plus a duplicated end.
            let ts = peers[0].ts;
            for (i, (dur, end)) in [(400u16, false), (800, false), (1200, true), (1200, true)]
                .into_iter()
                .enumerate()
            {
                let payload = [
                    5,
                    if end { 0x8a } else { 0x0a },
                    (dur >> 8) as u8,
                    dur as u8,
                ];
                peers[0].send_packet(101, i == 0, ts, &payload);
                if end {
                    peers[0].send_packet(101, false, ts, &payload);
                }
            }
        }
        // The engine's job: a digit from A goes to B.
        for e in events(&mut c.ev) {
            if let MediaEvent::Digit {
                digit, duration, ..
            } = e
            {
                forwarded.push((digit, duration));
                plane.send_digit(b, digit, duration).unwrap();
            }
        }
    });
    assert_eq!(
        forwarded,
        vec![('5', Duration::from_millis(150))],
        "digit once"
    );

    // Audio A → B: PCMU in, PCMA out, correlated.
    assert!(c.pb.got.iter().all(|r| r.pt == 8 || r.pt == 101));
    let at_b = c.pb.audio(8, AudioFormat::Pcma);
    let (ncc, lag) = best_ncc(&sent_a, &at_b, 160 * 20, 160 * 100, 160 * 30);
    assert!(ncc >= 0.95, "A→B correlation {ncc:.3} (lag {lag})");
    // B → A: PCMA in, PCMU out.
    let at_a = c.pa.audio(0, AudioFormat::Pcmu);
    let (ncc, lag) = best_ncc(&sent_b, &at_a, 160 * 20, 160 * 100, 160 * 30);
    assert!(ncc >= 0.95, "B→A correlation {ncc:.3} (lag {lag})");
    // Processing plus jitter buffer: under 100 ms of audio lag.
    assert!(lag < 800, "lag {lag} samples");

    // B got the digit as RFC 4733 events: one event (one timestamp), code 5, ended.
    let ev: Vec<&Rx> = c.pb.got.iter().filter(|r| r.pt == 101).collect();
    let stamps: BTreeSet<u32> = ev.iter().map(|r| r.ts).collect();
    assert_eq!(stamps.len(), 1, "one event toward B: {ev:?}");
    assert!(ev.iter().all(|r| r.payload[0] == 5));
    assert!(ev.iter().any(|r| r.payload[1] & 0x80 != 0), "end bit sent");
    assert!(ev[0].marker, "the event's first packet carries the marker");
    // Everything B got is one stream: audio and events share SSRC and sequence space.
    assert_one_stream(&c.pb.got);
    assert_one_stream(&c.pa.got);
    let st = c.plane.stats(c.a).unwrap();
    assert_eq!(st.format, Some(AudioFormat::Pcmu));
    assert!(st.packets_received >= 150, "{st:?}");
    assert_eq!(st.remote, Some(c.pa.addr()));
    assert_eq!(st.digits, 1);

    c.plane.release(c.a);
    c.plane.release(c.b);
    assert!(c.plane.counts().is_idle(), "{:?}", c.plane.counts());
}

#[test]
fn hold_reconfigure_and_ptime_keep_one_continuous_stream() {
    let mut c = call(1, AudioFormat::Pcmu, AudioFormat::Pcma);
    let mut pb_params = RtpParams {
        comfort_noise: Some(13),
        ..params(AudioFormat::Pcma, c.pb.addr())
    };
    c.plane.configure_rtp(c.b, pb_params).unwrap();
    let (plane, a, b) = (c.plane.clone(), c.a, c.b);
    let tone = noise(160, 3);
    let mut marks = vec![];
    run(300, &mut [&mut c.pa, &mut c.pb], |k, peers| {
        peers[0].send_audio(&tone);
        peers[1].send_audio(&tone);
        let now = Instant::now();
        match k {
            // B's party is held: it gets comfort noise (it negotiated CN), A gets silence
            // (no CN negotiated).
            50 => {
                plane.play(b, Source::ComfortNoise).unwrap();
                plane.play(a, Source::ComfortNoise).unwrap();
            }
            // Re-INVITE: B switches to PCMU at 40 ms, and is connected again.
            100 => {
                pb_params.format = AudioFormat::Pcmu;
                pb_params.payload_type = 0;
                pb_params.ptime_ms = 40;
                plane.configure_rtp(b, pb_params).unwrap();
                plane.connect(a, b).unwrap();
            }
            // B's phone holds with sendonly: we answer recvonly and send nothing.
            150 => {
                pb_params.direction = Direction::RecvOnly;
                plane.configure_rtp(b, pb_params).unwrap();
            }
            // Resumed, at ptime 10.
            200 => {
                pb_params.direction = Direction::SendRecv;
                pb_params.ptime_ms = 10;
                plane.configure_rtp(b, pb_params).unwrap();
            }
            _ => {}
        }
        marks.push(now);
    });
    let got = &c.pb.got;
    assert_one_stream(got);
    let in_window = |from: u32, to: u32| -> Vec<&Rx> {
        got.iter()
            .filter(|r| r.at > marks[from as usize] + Duration::from_millis(60))
            .filter(|r| r.at < marks[to as usize])
            .collect()
    };
    // Connected at 20 ms PCMA.
    let first = in_window(10, 50);
    assert!(first.len() >= 30 && first.iter().all(|r| r.pt == 8 && r.payload.len() == 160));
    // Held: RFC 3389 packets, about 5 per second, 1-byte level.
    let cn = in_window(50, 100);
    assert!(
        cn.iter().all(|r| r.pt == 13 && r.payload.len() == 1),
        "{cn:?}"
    );
    assert!(
        (3..=7).contains(&cn.len()),
        "{} CN packets in ~0.9 s",
        cn.len()
    );
    // A, without CN, got packets of µ-law silence meanwhile.
    let a_held: Vec<&Rx> =
        c.pa.got
            .iter()
            .filter(|r| r.at > marks[60] && r.at < marks[100])
            .collect();
    assert!(a_held.len() >= 30, "{}", a_held.len());
    assert!(a_held.iter().all(|r| r.payload.iter().all(|&b| b == 0xff)));
    // Re-configured: PCMU at 40 ms (320 bytes, 25 per second).
    let pcmu40 = in_window(100, 150);
    assert!(pcmu40.iter().all(|r| r.pt == 0 && r.payload.len() == 320));
    assert!((18..=26).contains(&pcmu40.len()), "{}", pcmu40.len());
    // recvonly: nothing sent.
    assert!(
        in_window(150, 200).is_empty(),
        "nothing sent while recvonly"
    );
    // Resumed at 10 ms: 80-byte packets, 100 per second.
    let pcmu10 = in_window(200, 290);
    assert!(pcmu10.iter().all(|r| r.pt == 0 && r.payload.len() == 80));
    assert!(pcmu10.len() >= 150, "{}", pcmu10.len());
    // Timestamps follow the wall clock across all of it (silence, hold, ptime changes): the
    // timestamp difference between any two packets matches their arrival difference.
    let (f, l) = (got.first().unwrap(), got.last().unwrap());
    let ts_ms = f64::from(l.ts.wrapping_sub(f.ts)) / 8.0;
    let wall_ms = (l.at - f.at).as_secs_f64() * 1000.0;
    assert!(
        (ts_ms - wall_ms).abs() < 80.0,
        "timestamps {ts_ms:.0} ms vs wall {wall_ms:.0} ms"
    );
    // Timestamps never go backwards; each packet of 20 ms PCMA advanced by 160.
    for w in got.windows(2) {
        let d = w[1].ts.wrapping_sub(w[0].ts);
        assert!(d > 0 && d < 8000 * 2, "timestamp step {d}");
    }
    // The marker starts a talkspurt after the hold.
    let resumed = got.iter().find(|r| r.at > marks[200]).unwrap();
    assert!(resumed.marker);
    c.plane.release(a);
    c.plane.release(b);
    assert!(c.plane.counts().is_idle());
}

#[test]
fn inbound_ptime_30_and_10_are_reframed() {
    for (test, ptime) in [(2u16, 30usize), (3, 10)] {
        let mut c = call(test, AudioFormat::Pcma, AudioFormat::Pcmu);
        let per = ptime * 8;
        let packets = 3000 / ptime;
        let sent = noise(per * packets, 4);
        let ticks = (packets * ptime / 20) as u32;
        // Send on the 10 ms grid: a 30 ms packet every third 10 ms step, 10 ms packets each.
        let mut sent_packets = 0;
        let t0 = Instant::now();
        for step in 0..(ticks * 2 + 10) {
            let due = t0 + Duration::from_millis(10 * u64::from(step));
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            if (step as usize * 10) % ptime == 0 && sent_packets < packets {
                let s = &sent[sent_packets * per..(sent_packets + 1) * per];
                c.pa.send_audio(s);
                sent_packets += 1;
            }
            c.pb.drain();
        }
        std::thread::sleep(Duration::from_millis(150));
        c.pb.drain();
        let got = c.pb.audio(0, AudioFormat::Pcmu);
        let (ncc, lag) = best_ncc(&sent, &got, 1600, 8000 * 2, 1600);
        assert!(ncc >= 0.95, "ptime {ptime}: correlation {ncc:.3} lag {lag}");
        c.plane.release(c.a);
        c.plane.release(c.b);
        assert!(c.plane.counts().is_idle());
    }
}

#[test]
fn release_frees_sockets_and_inactivity_is_reported_once() {
    let plane = plane(4);
    let mut ev = plane.take_events().unwrap();
    assert!(plane.take_events().is_none(), "events are taken once");
    let (a, addr) = plane.open_rtp(9, LOCAL).unwrap();
    let mut peer = Peer::new(addr, AudioFormat::Pcmu, 0, 77);
    plane
        .configure_rtp(
            a,
            RtpParams {
                inactivity_timeout: Duration::from_millis(300),
                ..params(AudioFormat::Pcmu, peer.addr())
            },
        )
        .unwrap();
    let counts = plane.counts();
    assert_eq!((counts.legs, counts.sockets), (1, 2));
    let frame = [0i16; 160];
    for _ in 0..10 {
        peer.send_audio(&frame);
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    let mut inactive_at = None;
    while stopped.elapsed() < Duration::from_secs(2) {
        for e in events(&mut ev) {
            if e == (MediaEvent::Inactive { id: a }) {
                assert!(inactive_at.is_none(), "inactivity reported once");
                inactive_at = Some(stopped.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let at = inactive_at.expect("inactivity event");
    assert!(
        at >= Duration::from_millis(250) && at < Duration::from_millis(900),
        "{at:?}"
    );
    plane.release(a);
    assert!(plane.counts().is_idle(), "{:?}", plane.counts());
    assert!(plane.stats(a).is_none());
    // The port pair is really closed: we can bind both ourselves.
    let _rtp = UdpSocket::bind(addr).unwrap();
    let _rtcp = UdpSocket::bind(SocketAddr::new(LOCAL, addr.port() + 1)).unwrap();
    assert!(matches!(
        plane.configure_rtp(a, params(AudioFormat::Pcmu, peer.addr())),
        Err(gateway::media::plane::MediaError::UnknownId(_))
    ));
    plane.shutdown();
    assert!(plane.open_rtp(9, LOCAL).is_err());
}

/// Frequency by zero crossings (linear interpolation) and RMS level in dBm0.
fn measure_tone(x: &[i16]) -> (f64, f64) {
    let mut crossings = vec![];
    for i in 1..x.len() {
        let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(i as f64 - 1.0 + a / (a - b));
        }
    }
    let periods = (crossings.len() - 1) as f64;
    let freq = 8000.0 * periods / (crossings.last().unwrap() - crossings[0]);
    let rms = (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
    let zero_dbm0_rms = f64::from(codecs::tones::dbm0_to_peak(0.0)) / 2f64.sqrt();
    (freq, 20.0 * (rms / zero_dbm0_rms).log10())
}

#[test]
fn milliwatt_and_echo_measured_at_the_peer() {
    let plane = plane(5);
    let (mw, addr_mw) = plane.open_rtp(1, LOCAL).unwrap();
    let (echo, addr_echo) = plane.open_rtp(2, LOCAL).unwrap();
    let mut p_mw = Peer::new(addr_mw, AudioFormat::Pcmu, 0, 1);
    let mut p_echo = Peer::new(addr_echo, AudioFormat::Pcma, 8, 2);
    plane
        .configure_rtp(mw, params(AudioFormat::Pcmu, p_mw.addr()))
        .unwrap();
    plane
        .configure_rtp(echo, params(AudioFormat::Pcma, p_echo.addr()))
        .unwrap();
    plane.play(mw, Source::Milliwatt).unwrap();
    plane.play(echo, Source::Echo).unwrap();
    assert_eq!(plane.counts().sources, 2);
    let tone: Vec<i16> = (0..160 * 100)
        .map(|n| (8000.0 * (n as f64 * 700.0 / 8000.0 * std::f64::consts::TAU).sin()) as i16)
        .collect();
    run(110, &mut [&mut p_mw, &mut p_echo], |k, peers| {
        let k = k as usize;
        if k < 100 {
            peers[1].send_audio(&tone[k * 160..(k + 1) * 160]);
        }
    });
    let mw_audio = p_mw.audio(0, AudioFormat::Pcmu);
    assert!(mw_audio.len() >= 160 * 90);
    let (f, level) = measure_tone(&mw_audio[800..]);
    assert!((f - 1004.0).abs() < 1.0, "milliwatt at {f:.2} Hz");
    assert!(level.abs() < 0.3, "milliwatt at {level:.2} dBm0");
    let echoed = p_echo.audio(8, AudioFormat::Pcma);
    let voiced: Vec<i16> = echoed
        .iter()
        .copied()
        .skip_while(|&s| s.unsigned_abs() < 1000)
        .take(160 * 60)
        .collect();
    assert_eq!(voiced.len(), 160 * 60, "the echo came back");
    let (f, level) = measure_tone(&voiced);
    assert!((f - 700.0).abs() < 1.0, "echo at {f:.2} Hz");
    let sent_level = 20.0 * (8000.0 / f64::from(codecs::tones::dbm0_to_peak(0.0))).log10();
    assert!(
        (level - sent_level).abs() < 0.5,
        "echo {level:.2} vs sent {sent_level:.2} dBm0"
    );
    plane.release(mw);
    plane.release(echo);
    assert!(plane.counts().is_idle());
}

#[test]
fn frame_port_leg_bridges_to_rtp_with_inband_dtmf_muted_and_generated() {
    let plane = plane(6);
    let mut ev = plane.take_events().unwrap();
    let (mut endpoint, port) = leg_rings(8);
    let tdm = plane.attach_port(3, Box::new(port)).unwrap();
    let (rtp, addr) = plane.open_rtp(3, LOCAL).unwrap();
    let mut peer = Peer::new(addr, AudioFormat::Pcma, 8, 5);
    plane
        .configure_rtp(rtp, params(AudioFormat::Pcma, peer.addr()))
        .unwrap();
    plane.connect(tdm, rtp).unwrap();
    assert_eq!(plane.counts().bridges, 1);

    // The "span thread": a frame every 20 ms: noise, then digit 7 (in-band), then noise.
    let sent = noise(160 * 150, 9);
    let mut tdm_audio = sent.clone();
    let mut tone = vec![];
    codecs::dtmf::generate(
        "7",
        &codecs::dtmf::DtmfParams {
            on_ms: 120,
            off_ms: 0,
            ..Default::default()
        },
        &mut tone,
    )
    .unwrap();
    let digit_at = 160 * 110;
    for (i, s) in tone.iter().enumerate() {
        tdm_audio[digit_at + i] = *s;
    }
    let rtp_sent = noise(160 * 150, 10);
    let mut from_plane: Vec<i16> = vec![];
    let mut digits = vec![];
    let plane2 = plane.clone();
    run(170, &mut [&mut peer], |k, peers| {
        let k = k as usize;
        if k < 150 {
            let f: [i16; 160] = tdm_audio[k * 160..(k + 1) * 160].try_into().unwrap();
            assert!(endpoint.push_received(&f));
            peers[0].send_audio(&rtp_sent[k * 160..(k + 1) * 160]);
        }
        if k == 20 {
            plane2
                .send_digit(tdm, '3', Duration::from_millis(100))
                .unwrap();
        }
        while let Some(f) = endpoint.pop_to_send() {
            from_plane.extend_from_slice(&f);
        }
        for e in events(&mut ev) {
            if let MediaEvent::Digit { id, digit, .. } = e {
                digits.push((id, digit));
            }
        }
    });
    assert_eq!(digits, vec![(tdm, '7')], "in-band digit once");
    // TDM → RTP audio correlates (before the digit).
    let at_peer = peer.audio(8, AudioFormat::Pcma);
    let (ncc, lag) = best_ncc(&sent, &at_peer, 1600, 160 * 60, 160 * 30);
    assert!(ncc >= 0.95, "TDM→RTP {ncc:.3}");
    // The tone was cut out of the audio passed on (run-in muting): the span of the digit is
    // silent at the peer.
    let muted = &at_peer[digit_at + lag + 80..digit_at + lag + 800];
    let peak = muted.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak < 100, "digit tone leaked, peak {peak}");
    // RTP → TDM audio correlates, and digit 3 was played in-band toward the TDM side once.
    let (ncc, _) = best_ncc(&rtp_sent, &from_plane, 160 * 60, 160 * 60, 160 * 30);
    assert!(ncc >= 0.95, "RTP→TDM {ncc:.3}");
    let mut det = codecs::dtmf::DtmfDetector::new();
    let mut heard = String::new();
    det.process(&from_plane, |e| {
        if let codecs::dtmf::DtmfEvent::KeyDown { digit, .. } = e {
            heard.push(digit);
        }
    });
    assert_eq!(heard, "3");
    let st = plane.stats(tdm).unwrap();
    assert!(
        !st.rtp && st.packets_received >= 150 && st.digits == 1,
        "{st:?}"
    );
    let watch = endpoint.watch();
    plane.release(tdm);
    plane.release(rtp);
    assert!(plane.counts().is_idle());
    // The plane dropped its halves of the rings: once the span side drops its own, they are gone.
    drop(endpoint);
    assert_eq!(watch.live(), 0, "rings freed");
}

#[test]
fn malformed_and_foreign_datagrams_are_counted_and_audio_still_flows() {
    let mut c = call(7, AudioFormat::Pcmu, AudioFormat::Pcmu);
    let intruder = UdpSocket::bind((LOCAL, 0)).unwrap();
    let to = c.pa.to;
    let sent = noise(160 * 100, 11);
    let mut junk = 0u64;
    run(110, &mut [&mut c.pa, &mut c.pb], |k, peers| {
        let k = k as usize;
        if k < 100 {
            peers[0].send_audio(&sent[k * 160..(k + 1) * 160]);
        }
        if (10..90).contains(&k) {
            let mut x = (k as u32).wrapping_mul(2_654_435_761);
            let len = (x % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            // Garbage, short, wrong version, unknown payload type, all from A's address.
            for d in [&bytes[..], &[0x80][..], &[0x40; 20][..]] {
                peers[0].sock.send_to(d, to).unwrap();
                junk += 1;
            }
            let ts = peers[0].ts;
            peers[0].send_packet(99, false, ts, &[0xff; 160]);
            junk += 1;
            // A valid packet from another address while A is active: foreign.
            let p = RtpPacket::new(0, false, k as u16, 0, 0xbad, &[0xff; 160]);
            let mut buf = [0u8; 200];
            let n = p.write(&mut buf).unwrap();
            intruder.send_to(&buf[..n], to).unwrap();
        }
    });
    let st = c.plane.stats(c.a).unwrap();
    assert!(
        st.malformed >= junk - 5,
        "{} of {junk} counted: {st:?}",
        st.malformed
    );
    assert!(st.foreign >= 75, "{st:?}");
    assert_eq!(st.remote, Some(c.pa.addr()), "not hijacked");
    let got = c.pb.audio(0, AudioFormat::Pcmu);
    let (ncc, _) = best_ncc(&sent, &got, 1600, 160 * 60, 160 * 30);
    assert!(ncc >= 0.95, "audio still flows: {ncc:.3}");
    c.plane.release(c.a);
    c.plane.release(c.b);
    assert!(c.plane.counts().is_idle());
}

#[test]
fn bad_requests_get_clear_errors() {
    use gateway::media::plane::MediaError;
    let plane = plane(8);
    let (a, addr) = plane.open_rtp(1, LOCAL).unwrap();
    let remote = SocketAddr::new(LOCAL, 4000);
    let bad = [
        RtpParams {
            ptime_ms: 5,
            ..params(AudioFormat::Pcmu, remote)
        },
        RtpParams {
            ptime_ms: 60,
            ..params(AudioFormat::L16, remote)
        },
        RtpParams {
            telephone_event: Some(0),
            ..params(AudioFormat::Pcmu, remote)
        },
        params(AudioFormat::Pcmu, "[::1]:4000".parse().unwrap()),
    ];
    for p in bad {
        let e = plane.configure_rtp(a, p).unwrap_err();
        assert!(matches!(e, MediaError::InvalidParams(_)), "{e}");
    }
    assert!(matches!(
        plane.connect(a, a),
        Err(MediaError::SelfConnect(_))
    ));
    assert!(matches!(
        plane.send_digit(a, 'x', Duration::from_millis(100)),
        Err(MediaError::NotADigit('x'))
    ));
    assert!(matches!(
        plane.play(MediaId(999_999), Source::Silence),
        Err(MediaError::UnknownId(_))
    ));
    let (mut _e, port) = leg_rings(4);
    let ext = plane.attach_port(1, Box::new(port)).unwrap();
    assert!(matches!(
        plane.configure_rtp(ext, params(AudioFormat::Pcmu, remote)),
        Err(MediaError::NotRtp(_))
    ));
    // A prompt played once ends with an event, then silence.
    let mut ev = plane.take_events().unwrap();
    plane
        .play(ext, Source::Wav(Arc::from(vec![1000i16; 400]), false))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(events(&mut ev).contains(&MediaEvent::PlayFinished { id: ext }));
    let _ = addr;
    plane.release(a);
    plane.release(ext);
    assert!(plane.counts().is_idle());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Random datagrams (often RTP/RTCP-shaped) on a live leg's RTP and RTCP ports, from the
        /// peer's address and others, never stop the worker: it keeps sending media to both
        /// peers and the plane still answers and releases cleanly.
        #[test]
        fn random_datagrams_never_stop_a_running_plane(
            datagrams in proptest::collection::vec(
                (any::<bool>(), any::<bool>(),
                 prop_oneof![Just(0x80u8), Just(0x90), Just(0xa0), any::<u8>()],
                 prop_oneof![Just(0u8), Just(8), Just(101), Just(200), Just(201), any::<u8>()],
                 proptest::collection::vec(any::<u8>(), 0..1400)),
                1..60)
        ) {
            let mut c = call(9, AudioFormat::Pcmu, AudioFormat::Pcma);
            let stranger = UdpSocket::bind((LOCAL, 0)).unwrap();
            let rtcp = SocketAddr::new(LOCAL, c.pa.to.port() + 1);
            for (to_rtcp, from_peer, b0, b1, rest) in &datagrams {
                let mut d = vec![*b0, *b1];
                d.extend_from_slice(rest);
                let to = if *to_rtcp { rtcp } else { c.pa.to };
                let sock = if *from_peer { &c.pa.sock } else { &stranger };
                sock.send_to(&d, to).unwrap();
            }
            let frame = noise(160, 5);
            run(15, &mut [&mut c.pa, &mut c.pb], |_, peers| peers[0].send_audio(&frame));
            prop_assert!(c.pb.got.len() >= 8, "still forwarding: {}", c.pb.got.len());
            prop_assert_eq!(c.plane.counts().legs, 2);
            prop_assert!(c.plane.stats(c.a).is_some());
            c.plane.release(c.a);
            c.plane.release(c.b);
            prop_assert!(c.plane.counts().is_idle());
        }
    }
}

#[test]
fn a_muted_leg_reaches_no_one_keeps_hearing_and_is_heard_again_after_unmute() {
    let mut c = call(10, AudioFormat::Pcmu, AudioFormat::Pcmu);
    let ticks = 240usize;
    let sent_a = noise(160 * ticks, 11);
    let sent_b = noise(160 * ticks, 12);
    let (plane, a) = (c.plane.clone(), c.a);
    let mut rx_at = vec![];
    run(ticks as u32, &mut [&mut c.pa, &mut c.pb], |k, peers| {
        let k = k as usize;
        peers[0].send_audio(&sent_a[k * 160..(k + 1) * 160]);
        peers[1].send_audio(&sent_b[k * 160..(k + 1) * 160]);
        match k {
            60 => plane.mute(a, true).unwrap(),
            120 => {
                rx_at.push(plane.stats(a).unwrap().packets_received);
                plane.mute(a, false).unwrap();
            }
            _ => {}
        }
        if k == 61 {
            rx_at.push(plane.stats(a).unwrap().packets_received);
        }
    });
    // B's stream from the plane is continuous (silence packets while A is muted), so its
    // decoded audio lines up with what A sent, up to the bridge's delay.
    assert_one_stream(&c.pb.got);
    let at_b = c.pb.audio(0, AudioFormat::Pcmu);
    let (before, lag) = best_ncc(&sent_a, &at_b, 160 * 15, 160 * 40, 160 * 30);
    assert!(
        before >= 0.95,
        "A→B before mute: correlation {before:.3} (lag {lag})"
    );
    // Muted (ticks 60..120, with margin for the bridge's delay): nothing of A at B.
    let muted = at_b
        .get(160 * 70 + lag..160 * 115 + lag)
        .expect("B kept receiving packets while A was muted");
    let peak = muted.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
    assert!(peak < 64, "B hears A while A is muted: peak {peak}");
    let (during, _) = best_ncc(&sent_a, &at_b, 160 * 70, 160 * 45, 160 * 30);
    assert!(during < 0.2, "A→B while muted: correlation {during:.3}");
    // Unmuted at tick 120: A is heard again.
    let (after, lag_after) = best_ncc(&sent_a, &at_b, 160 * 140, 160 * 60, 160 * 30);
    assert!(
        after >= 0.95,
        "A→B after unmute: correlation {after:.3} (lag {lag_after})"
    );
    // The muted leg kept receiving (its party's packets) and hearing B the whole time.
    assert!(
        rx_at[1] >= rx_at[0] + 50,
        "A's leg received while muted: {rx_at:?}"
    );
    let at_a = c.pa.audio(0, AudioFormat::Pcmu);
    let (heard, lag_a) = best_ncc(&sent_b, &at_a, 160 * 70, 160 * 45, 160 * 30);
    assert!(
        heard >= 0.95,
        "B→A while A is muted: correlation {heard:.3} (lag {lag_a})"
    );
    let events = events(&mut c.ev);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, MediaEvent::Inactive { .. })),
        "{events:?}"
    );
}

/// A leg moving to another call (an attended transfer's target joining the caller's call) is
/// re-placed when both calls share a worker, then connects to that call's legs; a call on
/// another worker is refused with a reason, and nothing is left either way.
#[test]
fn a_leg_joins_another_call_on_its_worker_and_is_refused_across_workers() {
    let plane = plane(9);
    let (a, _) = plane.open_rtp(1, LOCAL).unwrap();
    let (b, _) = plane.open_rtp(2, LOCAL).unwrap(); // the other, less loaded worker
    let (c, _) = plane.open_rtp(3, LOCAL).unwrap(); // back on a's worker
    let err = plane.move_leg(b, 1).unwrap_err();
    assert!(
        matches!(
            err,
            gateway::media::plane::MediaError::MoveAcrossWorkers { .. }
        ),
        "{err}"
    );
    assert!(plane.connect(a, b).is_err(), "still on different workers");
    plane.move_leg(c, 1).unwrap();
    plane.connect(a, c).unwrap();
    assert!(plane.flush(Duration::from_secs(2)));
    assert_eq!(plane.counts().bridges, 1);
    for id in [a, b, c] {
        plane.release(id);
    }
    assert!(plane.flush(Duration::from_secs(2)));
    assert!(plane.counts().is_idle(), "{:?}", plane.counts());
}

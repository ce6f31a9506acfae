//! In-band DTMF interworking on TDM legs with the real detector and generator of `codecs::dtmf`:
//! run-in muting cuts every tone out of the audio (the far side hears no half tone), each digit
//! is reported once, and digits go TDM → RFC 4733 → TDM exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use codecs::dtmf::{DtmfDetector, DtmfEvent, DtmfParams, generate};
use gateway::media::bridge::Frame;
use gateway::media::dtmf::{
    DtmfReceiver, DtmfSender, DtmfSenderConfig, ReceivedDigit, event_to_digit,
};
use gateway::media::inband::{DEFAULT_HOLD_FRAMES, InbandDigit, InbandDtmfGate, InbandDtmfPlayer};
use gateway::media::rtp::RtpSender;

/// Audio of a TDM channel: `lead` samples of a 440 Hz "voice" tone, then the digits.
fn channel_audio(lead: usize, digits: &str, params: &DtmfParams) -> Vec<i16> {
    let mut v: Vec<i16> = (0..lead)
        .map(|n| (3000.0 * (n as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin()) as i16)
        .collect();
    generate(digits, params, &mut v).unwrap();
    v.resize(v.len().div_ceil(160) * 160 + 1600, 0);
    v
}

fn detect(samples: &[i16]) -> String {
    let mut d = DtmfDetector::new();
    let mut s = String::new();
    d.process(samples, |e| {
        if let DtmfEvent::KeyDown { digit, .. } = e {
            s.push(digit);
        }
    });
    d.finish(|_| {});
    s
}

fn gate_all(gate: &mut InbandDtmfGate, audio: &[i16]) -> (Vec<i16>, Vec<InbandDigit>) {
    let mut out = vec![];
    let mut events = vec![];
    let mut f: Frame = [0; 160];
    for chunk in audio.chunks_exact(160) {
        if gate.push(chunk.try_into().unwrap(), &mut f) {
            out.extend_from_slice(&f);
        }
        while let Some(e) = gate.poll_event() {
            events.push(e);
        }
    }
    (out, events)
}

#[test]
fn run_in_muting_cuts_the_whole_tone_at_any_phase() {
    let params = DtmfParams {
        on_ms: 60,
        off_ms: 60,
        ..DtmfParams::default()
    };
    let digits = "123A456B789C*0#D";
    // Every alignment of the tone start against the 20 ms frames (in 9-sample steps).
    for lead in (800..960).step_by(9) {
        let audio = channel_audio(lead, digits, &params);
        assert_eq!(
            detect(&audio),
            digits,
            "the unmuted audio carries the digits"
        );
        let mut gate = InbandDtmfGate::new(DEFAULT_HOLD_FRAMES);
        let (out, events) = gate_all(&mut gate, &audio);
        let began: String = events
            .iter()
            .filter_map(|e| match e {
                InbandDigit::Began { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(began, digits, "each digit reported once (lead {lead})");
        // The gate delays by exactly its hold, and no sample of any tone gets through.
        let delay = DEFAULT_HOLD_FRAMES * 160;
        assert_eq!(out.len(), audio.len() - delay);
        for (i, &o) in out.iter().enumerate() {
            if i >= lead {
                let in_tone = ((i - lead) % 960) < 480;
                if in_tone {
                    assert_eq!(o, 0, "tone sample {i} leaked (lead {lead})");
                }
            }
        }
        assert_eq!(
            detect(&out),
            "",
            "nothing of any digit is left for a far-end detector"
        );
        // The voice before the first digit passes untouched (up to the muting margin).
        assert_eq!(out[..lead - 100], audio[..lead - 100]);
    }
}

#[test]
fn digits_cross_tdm_to_rfc4733_to_tdm_exactly_once() {
    let digits = "5551#";
    let audio = channel_audio(1600, digits, &DtmfParams::default());
    let t0 = Instant::now();
    let mut gate = InbandDtmfGate::new(DEFAULT_HOLD_FRAMES);
    let mut rtp = RtpSender::new(7, 1, 1);
    let mut tx = DtmfSender::new(DtmfSenderConfig::default());
    let mut rx = DtmfReceiver::new(Duration::from_millis(250));
    let mut player = InbandDtmfPlayer::new(DtmfParams::default());
    let mut far_tdm = vec![];
    let mut durations = vec![];
    let mut muted_audio = vec![];
    let mut f: Frame = [0; 160];
    let frames = audio.len() / 160 + 200;
    for k in 0..frames {
        let now = t0 + Duration::from_millis(20 * k as u64);
        let input: Frame = audio
            .get(k * 160..(k + 1) * 160)
            .map(|c| c.try_into().unwrap())
            .unwrap_or([0; 160]);
        // Near TDM leg: gate, report digits to the RTP side.
        if gate.push(&input, &mut f) {
            muted_audio.extend_from_slice(&f);
        }
        while let Some(e) = gate.poll_event() {
            match e {
                InbandDigit::Began { digit, .. } => tx.begin_digit(digit).unwrap(),
                InbandDigit::Ended {
                    at_sample,
                    started_at,
                    ..
                } => tx.end_digit(
                    now,
                    Some(Duration::from_micros((at_sample - started_at) * 125)),
                ),
            }
        }
        // RTP side: events cross the network (every end packet duplicated for good measure).
        if tx.is_active() {
            rtp.skip(160);
        } else {
            rtp.next_packet(0, 160, 160);
        }
        while let Some(p) = tx.poll(now, &mut rtp) {
            rx.handle_packet(now, 7, p.header.timestamp, &p.payload);
            rx.handle_packet(now, 7, p.header.timestamp, &p.payload);
        }
        rx.handle_timeout(now);
        // Far TDM leg: play received digits into its (silent) outgoing audio.
        while let Some(e) = rx.poll_event() {
            match e {
                ReceivedDigit::Began { event, .. } => player.play(event_to_digit(event).unwrap()),
                ReceivedDigit::Ended {
                    duration, inferred, ..
                } => {
                    assert!(!inferred);
                    durations.push(duration);
                }
            }
        }
        let mut out: Frame = [0; 160];
        player.fill(&mut out);
        far_tdm.extend_from_slice(&out);
    }
    assert_eq!(
        detect(&muted_audio),
        "",
        "the tone never leaks into the RTP audio"
    );
    assert_eq!(
        detect(&far_tdm),
        digits,
        "the far TDM side hears each digit once"
    );
    assert_eq!(player.dropped(), 0);
    // The events carry the tones' length (80 ms = 640 units) as the detector measured it.
    assert_eq!(durations.len(), digits.len());
    assert!(
        durations.iter().all(|d| (600..=680).contains(d)),
        "{durations:?}"
    );
}

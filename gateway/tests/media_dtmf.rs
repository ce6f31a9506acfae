//! RFC 4733 end to end on virtual time: our sender's packets pass a lossy, reordering network
//! into our receiver, and every digit comes out exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use gateway::media::dtmf::{
    DtmfReceiver, DtmfSender, DtmfSenderConfig, ReceivedDigit, TelephoneEvent, event_to_digit,
};
use gateway::media::rtp::RtpSender;

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Duration,
    seq: u16,
    ts: u32,
    marker: bool,
    ev: TelephoneEvent,
    payload: [u8; 4],
}

/// Runs a leg for `ms` milliseconds sending `digits`: 20 ms audio ticks, events in between.
fn send(digits: &str, ms: u64) -> (Vec<Sent>, u64) {
    let t0 = Instant::now();
    let mut rtp = RtpSender::new(0x1111, 65530, 4_294_967_000);
    let mut tx = DtmfSender::new(DtmfSenderConfig::default());
    for d in digits.chars() {
        tx.send_digit(d).unwrap();
    }
    let mut out = vec![];
    let mut audio = 0;
    for t in 0..ms {
        let now = t0 + Duration::from_millis(t);
        while let Some(p) = tx.poll(now, &mut rtp) {
            out.push(Sent {
                at: Duration::from_millis(t),
                seq: p.header.sequence,
                ts: p.header.timestamp,
                marker: p.header.marker,
                ev: TelephoneEvent::parse(&p.payload).unwrap(),
                payload: p.payload,
            });
        }
        if t % 20 == 0 {
            if tx.is_active() {
                rtp.skip(160);
            } else {
                rtp.next_packet(0, 160, 160);
                audio += 1;
            }
        }
    }
    (out, audio)
}

fn receive(packets: &[Sent], end_ms: u64) -> Vec<ReceivedDigit> {
    let t0 = Instant::now();
    let mut rx = DtmfReceiver::new(Duration::from_millis(250));
    let mut got = vec![];
    let mut i = 0;
    for t in 0..end_ms {
        let now = t0 + Duration::from_millis(t);
        while i < packets.len() && packets[i].at <= Duration::from_millis(t) {
            let p = &packets[i];
            rx.handle_packet(now, 0x1111, p.ts, &p.payload);
            i += 1;
        }
        rx.handle_timeout(now);
        while let Some(d) = rx.poll_event() {
            got.push(d);
        }
    }
    got
}

fn digits_of(events: &[ReceivedDigit]) -> String {
    let began: String = events
        .iter()
        .filter_map(|e| match e {
            ReceivedDigit::Began { event, .. } => event_to_digit(*event),
            _ => None,
        })
        .collect();
    let ended: String = events
        .iter()
        .filter_map(|e| match e {
            ReceivedDigit::Ended { event, .. } => event_to_digit(*event),
            _ => None,
        })
        .collect();
    assert_eq!(began, ended, "every digit that began ended, once");
    began
}

#[test]
fn sender_follows_rfc4733_packet_pattern() {
    let (sent, _) = send("1", 400);
    // start (marker, duration 0), continuation at 50 ms, end at 100 ms repeated 3 times.
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert!(sent[0].marker && !sent[1].marker);
    assert!(
        sent.iter().all(|p| p.ts == sent[0].ts),
        "one timestamp per event"
    );
    let seqs: Vec<u16> = sent.iter().map(|p| p.seq).collect();
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "sequence continues the audio stream"
        );
    }
    assert_eq!(
        sent.iter()
            .map(|p| (p.ev.end, p.ev.duration))
            .collect::<Vec<_>>(),
        vec![
            (false, 0),
            (false, 400),
            (true, 800),
            (true, 800),
            (true, 800)
        ]
    );
    assert_eq!(
        sent.iter().map(|p| p.at.as_millis()).collect::<Vec<_>>(),
        vec![0, 50, 100, 120, 140]
    );
}

#[test]
fn identical_consecutive_digits_have_distinct_timestamps_and_both_arrive() {
    let (sent, _) = send("55", 800);
    let mut ts: Vec<u32> = sent.iter().map(|p| p.ts).collect();
    ts.dedup();
    assert_eq!(ts.len(), 2);
    assert_eq!(digits_of(&receive(&sent, 1000)), "55");
}

#[test]
fn each_digit_once_under_loss_duplication_and_reordering() {
    let digits = "1234567890*#ABCD5";
    let (sent, _) = send(digits, 4000);
    // Lossless.
    assert_eq!(digits_of(&receive(&sent, 4500)), digits);

    // Every start packet (marker) lost: the digit begins on its first continuation.
    let no_start: Vec<Sent> = sent.iter().copied().filter(|p| !p.marker).collect();
    assert_eq!(digits_of(&receive(&no_start, 4500)), digits);

    // Only end packets arrive, each of them 3 times plus a late 4th copy: once per digit.
    let mut only_ends: Vec<Sent> = sent.iter().copied().filter(|p| p.ev.end).collect();
    let extra: Vec<Sent> = only_ends
        .iter()
        .map(|p| Sent {
            at: p.at + Duration::from_millis(35),
            ..*p
        })
        .collect();
    only_ends.extend(extra);
    only_ends.sort_by_key(|p| p.at);
    assert_eq!(digits_of(&receive(&only_ends, 4500)), digits);

    // All end packets lost: each digit ends by the next one or by the timeout, still once.
    let no_end: Vec<Sent> = sent.iter().copied().filter(|p| !p.ev.end).collect();
    let got = receive(&no_end, 4500);
    assert_eq!(digits_of(&got), digits);
    assert!(got.iter().all(|e| !matches!(
        e,
        ReceivedDigit::Ended {
            inferred: false,
            ..
        }
    )));

    // Reordering: swap every packet with its neighbour in arrival time (by 30 ms).
    let mut shuffled = sent.clone();
    for (i, p) in shuffled.iter_mut().enumerate() {
        if i % 2 == 0 {
            p.at += Duration::from_millis(30);
        }
    }
    shuffled.sort_by_key(|p| p.at);
    assert_eq!(digits_of(&receive(&shuffled, 4500)), digits);

    // End packets so late that they arrive after the next digit began.
    let mut late_ends = sent.clone();
    for p in late_ends.iter_mut().filter(|p| p.ev.end) {
        p.at += Duration::from_millis(150);
    }
    late_ends.sort_by_key(|p| p.at);
    assert_eq!(digits_of(&receive(&late_ends, 4500)), digits);
}

#[test]
fn an_event_without_end_times_out_once() {
    let (sent, _) = send("9", 400);
    let start_only: Vec<Sent> = sent.iter().copied().take(2).collect();
    let got = receive(&start_only, 1000);
    assert_eq!(
        got,
        vec![
            ReceivedDigit::Began {
                event: 9,
                timestamp: sent[0].ts
            },
            ReceivedDigit::Ended {
                event: 9,
                timestamp: sent[0].ts,
                duration: 400,
                inferred: true
            }
        ]
    );
}

#[test]
fn live_digit_lasts_until_ended() {
    let t0 = Instant::now();
    let mut rtp = RtpSender::new(1, 1, 1000);
    let mut tx = DtmfSender::new(DtmfSenderConfig::default());
    tx.begin_digit('#').unwrap();
    let mut sent = vec![];
    for ms in 0..400u64 {
        let now = t0 + Duration::from_millis(ms);
        if ms == 230 {
            tx.end_digit(now, None);
        }
        while let Some(p) = tx.poll(now, &mut rtp) {
            let ev = TelephoneEvent::parse(&p.payload).unwrap();
            sent.push((ms, ev.end, ev.duration, p.header.timestamp));
        }
    }
    assert_eq!(
        sent,
        vec![
            (0, false, 0, 1000),
            (50, false, 400, 1000),
            (100, false, 800, 1000),
            (150, false, 1200, 1000),
            (200, false, 1600, 1000),
            (230, true, 1840, 1000),
            (250, true, 1840, 1000),
            (270, true, 1840, 1000),
        ]
    );
}

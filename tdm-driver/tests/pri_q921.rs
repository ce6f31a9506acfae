//! Q.921 link pairs on virtual time: establishment, data, loss, duplication, keep-alive,
//! link failure and re-establishment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tdm_driver::pri::q921::{Frame, FrameKind, Link, LinkConfig, LinkEvent, LinkState, Role};

/// Two links joined by a lossy wire; `drop` decides per frame (direction, index) whether it
/// is lost, `dup` whether it is delivered twice.
struct Pair {
    now: Instant,
    net: Link,
    user: Link,
    net_events: Vec<LinkEvent>,
    user_events: Vec<LinkEvent>,
    sent: usize,
    wire: Vec<(bool, Vec<u8>)>,
}

impl Pair {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            net: Link::new(LinkConfig::new(Role::Network)),
            user: Link::new(LinkConfig::new(Role::User)),
            net_events: Vec::new(),
            user_events: Vec::new(),
            sent: 0,
            wire: Vec::new(),
        }
    }

    /// Moves frames until both sides are quiet; `fault(from_net, frame_index, bytes)` returns
    /// how many copies to deliver (0 = lost).
    fn pump(&mut self, fault: &mut dyn FnMut(bool, usize, &[u8]) -> usize) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(f) = self.net.poll_transmit() {
                let copies = fault(true, self.sent, &f);
                self.sent += 1;
                self.wire.push((true, f.clone()));
                for _ in 0..copies {
                    self.user.receive(self.now, &f);
                }
                moved = true;
            }
            while let Some(f) = self.user.poll_transmit() {
                let copies = fault(false, self.sent, &f);
                self.sent += 1;
                self.wire.push((false, f.clone()));
                for _ in 0..copies {
                    self.net.receive(self.now, &f);
                }
                moved = true;
            }
            while let Some(e) = self.net.poll_event() {
                self.net_events.push(e);
            }
            while let Some(e) = self.user.poll_event() {
                self.user_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("links never went quiet");
    }

    /// Advances virtual time to the next deadline (at most `limit` from now), runs timers.
    fn advance(&mut self, limit: Duration, fault: &mut dyn FnMut(bool, usize, &[u8]) -> usize) {
        let end = self.now + limit;
        loop {
            self.pump(fault);
            let next = [self.net.poll_timeout(), self.user.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.net.handle_timeout(self.now);
                    self.user.handle_timeout(self.now);
                }
                _ => {
                    self.now = end;
                    self.pump(fault);
                    return;
                }
            }
        }
    }

    fn data(events: &[LinkEvent]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Data(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }
}

fn clean(_: bool, _: usize, _: &[u8]) -> usize {
    1
}

fn kind(bytes: &[u8]) -> FrameKind {
    Frame::decode(bytes).unwrap().kind
}

#[test]
fn frame_codec_round_trips_and_rejects_garbage() {
    let frames = [
        FrameKind::I {
            ns: 127,
            nr: 5,
            poll: true,
            info: vec![8, 2, 0, 1, 5],
        },
        FrameKind::Rr { nr: 64, pf: false },
        FrameKind::Rnr { nr: 1, pf: true },
        FrameKind::Rej { nr: 0, pf: true },
        FrameKind::Sabme { poll: true },
        FrameKind::Dm { fin: false },
        FrameKind::Disc { poll: true },
        FrameKind::Ua { fin: true },
        FrameKind::Frmr {
            fin: false,
            info: vec![1, 2, 3, 4, 5],
        },
    ];
    for kind in frames {
        let frame = Frame {
            sapi: 0,
            cr: true,
            tei: 0,
            kind,
        };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        assert_eq!(Frame::decode(&bytes).unwrap(), frame);
    }
    // SABME with P from the network: 02 01 7f (as libpri and every PRI trace show).
    let mut bytes = Vec::new();
    Frame {
        sapi: 0,
        cr: true,
        tei: 0,
        kind: FrameKind::Sabme { poll: true },
    }
    .encode(&mut bytes);
    assert_eq!(bytes, [0x02, 0x01, 0x7f]);
    assert!(Frame::decode(&[0x02]).is_err());
    assert!(Frame::decode(&[0x03, 0x01, 0x7f]).is_err()); // EA bit wrong
    assert!(Frame::decode(&[0x02, 0x01, 0x0d, 0x00]).is_err()); // undefined S frame
    assert!(Frame::decode(&[0x02, 0x01, 0x7f, 0x00]).is_err()); // SABME with info
    assert!(Frame::decode(&[0x02, 0x01, 0x01]).is_err()); // RR missing N(R)
}

#[test]
fn user_establishes_and_both_sides_exchange_data() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    assert_eq!(p.user.state(), LinkState::Established);
    assert_eq!(p.net.state(), LinkState::Established);
    assert!(p.user_events.contains(&LinkEvent::Established));
    assert!(p.net_events.contains(&LinkEvent::Established));
    for i in 0..20u8 {
        p.net.send(p.now, vec![i]);
        p.user.send(p.now, vec![100 + i]);
    }
    p.advance(Duration::from_millis(10), &mut clean);
    assert_eq!(
        Pair::data(&p.user_events),
        (0..20u8).map(|i| vec![i]).collect::<Vec<_>>()
    );
    assert_eq!(
        Pair::data(&p.net_events),
        (0..20u8).map(|i| vec![100 + i]).collect::<Vec<_>>()
    );
    assert_eq!(p.net.unacknowledged(), 0);
    assert_eq!(p.user.unacknowledged(), 0);
}

#[test]
fn window_of_seven_limits_outstanding_frames() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    for i in 0..12u8 {
        p.net.send(p.now, vec![i]);
    }
    let mut i_frames = 0;
    while let Some(f) = p.net.poll_transmit() {
        if matches!(kind(&f), FrameKind::I { .. }) {
            i_frames += 1;
        }
    }
    assert_eq!(i_frames, 7);
}

#[test]
fn lost_i_frames_are_recovered_by_rej_and_timer_recovery() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    let mut lost = 0;
    // Lose the 2nd and 5th I frames from the network the first time they are sent.
    let mut seen_i = 0;
    let mut fault = |from_net: bool, _: usize, f: &[u8]| {
        if from_net && matches!(kind(f), FrameKind::I { .. }) {
            seen_i += 1;
            if seen_i == 2 || seen_i == 5 {
                lost += 1;
                return 0;
            }
        }
        1
    };
    for i in 0..10u8 {
        p.net.send(p.now, vec![i]);
    }
    p.advance(Duration::from_secs(5), &mut fault);
    assert_eq!(lost, 2);
    assert_eq!(
        Pair::data(&p.user_events),
        (0..10u8).map(|i| vec![i]).collect::<Vec<_>>()
    );
    assert!(
        p.wire
            .iter()
            .any(|(from_net, f)| !from_net && matches!(kind(f), FrameKind::Rej { .. }))
    );
    assert_eq!(p.net.unacknowledged(), 0);
}

#[test]
fn lost_last_frame_is_resent_after_t200_enquiry() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    let start = p.now;
    let mut first = true;
    let mut fault = |from_net: bool, _: usize, f: &[u8]| {
        if from_net && first && matches!(kind(f), FrameKind::I { .. }) {
            first = false;
            return 0;
        }
        1
    };
    p.net.send(p.now, b"only".to_vec());
    p.advance(Duration::from_millis(999), &mut fault);
    assert!(Pair::data(&p.user_events).is_empty());
    p.advance(Duration::from_millis(10), &mut fault);
    assert_eq!(Pair::data(&p.user_events), vec![b"only".to_vec()]);
    let enquiry = p
        .wire
        .iter()
        .any(|(from_net, f)| *from_net && matches!(kind(f), FrameKind::Rr { pf: true, .. }));
    assert!(enquiry, "T200 expiry must poll with RR P=1");
    assert!(p.now - start >= Duration::from_secs(1));
}

#[test]
fn duplicated_frames_are_delivered_once() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    let mut dup = |_: bool, _: usize, _: &[u8]| 2;
    for i in 0..9u8 {
        p.user.send(p.now, vec![i]);
    }
    p.advance(Duration::from_secs(3), &mut dup);
    assert_eq!(
        Pair::data(&p.net_events),
        (0..9u8).map(|i| vec![i]).collect::<Vec<_>>()
    );
    assert!(p.user.is_established() && p.net.is_established());
}

#[test]
fn idle_link_polls_with_rr_every_t203() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    let before = p.wire.len();
    p.advance(Duration::from_millis(9_990), &mut clean);
    assert_eq!(p.wire.len(), before, "nothing before T203");
    p.advance(Duration::from_millis(20), &mut clean);
    let polls: Vec<_> = p.wire[before..].iter().map(|(_, f)| kind(f)).collect();
    assert!(
        polls.contains(&FrameKind::Rr { nr: 0, pf: true }),
        "{polls:?}"
    );
    assert_eq!(p.net.state(), LinkState::Established);
    assert_eq!(p.user.state(), LinkState::Established);
}

#[test]
fn link_fails_after_n200_and_re_establishes_when_the_peer_returns() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    p.net.send(p.now, b"lost".to_vec());
    let mut cut = |_: bool, _: usize, _: &[u8]| 0;
    // Poll at 1 s, then N200 = 3 retries at 2, 3, 4 s: failure after 4 s.
    p.advance(Duration::from_millis(3_990), &mut cut);
    assert!(!p.net_events.contains(&LinkEvent::Failure));
    p.advance(Duration::from_millis(20), &mut cut);
    assert!(p.net_events.contains(&LinkEvent::Failure));
    assert_eq!(p.net.state(), LinkState::AwaitingEstablishment);
    p.advance(Duration::from_secs(30), &mut cut);
    // The wire heals: the persistent side's next SABME brings the link back.
    p.net_events.clear();
    p.advance(Duration::from_secs(5), &mut clean);
    assert!(p.net_events.contains(&LinkEvent::Established));
    assert!(p.net.is_established() && p.user.is_established());
    p.net.send(p.now, b"after".to_vec());
    p.advance(Duration::from_millis(10), &mut clean);
    assert_eq!(Pair::data(&p.user_events).last().unwrap(), b"after");
}

#[test]
fn release_and_peer_busy() {
    let mut p = Pair::new();
    p.user.establish(p.now);
    p.pump(&mut clean);
    // Peer busy: an RNR from the user stops the network sending I frames.
    let rnr = {
        let mut b = Vec::new();
        Frame {
            sapi: 0,
            cr: true,
            tei: 0,
            kind: FrameKind::Rnr { nr: 0, pf: false },
        }
        .encode(&mut b);
        b
    };
    p.net.receive(p.now, &rnr);
    p.net.send(p.now, vec![1]);
    let sent: Vec<_> = std::iter::from_fn(|| p.net.poll_transmit()).collect();
    assert!(
        sent.iter().all(|f| !matches!(kind(f), FrameKind::I { .. })),
        "{sent:?}"
    );
    // RR clears the busy condition.
    let rr = {
        let mut b = Vec::new();
        Frame {
            sapi: 0,
            cr: true,
            tei: 0,
            kind: FrameKind::Rr { nr: 0, pf: false },
        }
        .encode(&mut b);
        b
    };
    p.net.receive(p.now, &rr);
    let sent: Vec<_> = std::iter::from_fn(|| p.net.poll_transmit()).collect();
    assert!(
        sent.iter().any(|f| matches!(kind(f), FrameKind::I { .. })),
        "{sent:?}"
    );
    p.pump(&mut clean);
    p.user.release(p.now);
    p.pump(&mut clean);
    assert_eq!(p.user.state(), LinkState::Released);
    assert_eq!(p.net.state(), LinkState::Released);
    assert!(p.user_events.contains(&LinkEvent::Released));
}

proptest::proptest! {
    #[test]
    fn frame_decoder_and_link_never_panic_on_arbitrary_bytes(
        frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0..50)
    ) {
        let now = Instant::now();
        let mut link = Link::new(LinkConfig::new(Role::Network));
        link.establish(now);
        for (i, f) in frames.iter().enumerate() {
            let _ = Frame::decode(f);
            link.receive(now + Duration::from_millis(i as u64 * 300), f);
            link.handle_timeout(now + Duration::from_millis(i as u64 * 300));
        }
        while link.poll_transmit().is_some() {}
    }
}

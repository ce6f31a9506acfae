//! PRI spans as the gateway runs them, on virtual time over `SimSpans`: span 1 network side,
//! span 2 user side, each a `PriSpan` on its D-channel (`DChannel`, the driver's HDLC) with its
//! B-channels served by `SpanMedia::run_once`. Calls both ways with audio through the
//! B-channels the calls were given, in-band progress as early media, hang-up from each side,
//! a span alarm clearing calls with cause 38 on both ends (RED here, YELLOW there) and blocking
//! new ones until recovery, RESTART returning channels to idle, and every channel idle after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::Law;
use ringbuf::traits::{Consumer, Producer};
use tdm_driver::leg::{LegEvent, cause};
use tdm_driver::pri::call::{CallId, SwitchType};
use tdm_driver::pri::dchannel::DChannel;
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::span::{ChannelUse, PriSpan, PriSpanConfig, PriSpanEvent};
use tdm_driver::sim::{ClockMode, SimSpans};
use tdm_driver::span::{ChannelPorts, ChannelSpec, Frame, SpanMedia, SpanOptions};

struct Side {
    pri: PriSpan,
    d: DChannel<SimSpans>,
    media: SpanMedia<SimSpans>,
    /// Ports by B-channel position (index = position - 1; 16 unused).
    ports: Vec<Option<ChannelPorts>>,
    legs: Vec<(CallId, Option<u8>, LegEvent)>,
    other: Vec<PriSpanEvent>,
}

struct Rig {
    sim: Arc<SimSpans>,
    now: Instant,
    net: Side,
    usr: Side,
}

fn side(sim: &Arc<SimSpans>, now: Instant, span: u32, role: Role) -> Side {
    let positions: Vec<u32> = (1..=31).filter(|&p| p != 16).collect();
    let specs: Vec<ChannelSpec> = positions
        .iter()
        .map(|&position| ChannelSpec {
            span,
            position,
            law: Law::Alaw,
        })
        .collect();
    let (media, ports) =
        SpanMedia::open_with(sim.clone(), span, &specs, SpanOptions { nonblocking: true }).unwrap();
    let mut by_pos: Vec<Option<ChannelPorts>> = (0..31).map(|_| None).collect();
    for p in ports {
        let i = p.spec.position as usize - 1;
        by_pos[i] = Some(p);
    }
    let mut cfg = PriSpanConfig::new(span, role, SwitchType::EuroIsdnE1);
    cfg.trace = true;
    Side {
        pri: PriSpan::new(now, cfg),
        d: DChannel::open_hdlc(sim.clone(), span, 16).unwrap(),
        media,
        ports: by_pos,
        legs: Vec::new(),
        other: Vec::new(),
    }
}

fn rig() -> Rig {
    let sim = Arc::new(SimSpans::preconfigured(ClockMode::Manual));
    let now = Instant::now();
    let mut r = Rig {
        net: side(&sim, now, 1, Role::Network),
        usr: side(&sim, now, 2, Role::User),
        sim,
        now,
    };
    r.run_until(5_000, "both spans ready", |r| {
        r.net.pri.is_ready() && r.usr.pri.is_ready()
    });
    r
}

impl Side {
    fn drain(&mut self) {
        while let Some(e) = self.pri.poll_event() {
            match e {
                PriSpanEvent::Leg {
                    call,
                    channel,
                    event,
                } => self.legs.push((call, channel, event)),
                other => self.other.push(other),
            }
        }
        while self.pri.poll_trace().is_some() {}
    }

    fn incoming(&self) -> Option<(CallId, u8, String, Option<String>)> {
        self.legs.iter().find_map(|(c, ch, e)| match e {
            LegEvent::Incoming { called, calling } => {
                Some((*c, ch.unwrap_or(0), called.clone(), calling.clone()))
            }
            _ => None,
        })
    }

    fn has(&self, call: CallId, e: &LegEvent) -> bool {
        self.legs.iter().any(|(c, _, x)| *c == call && x == e)
    }

    fn released(&self, call: CallId) -> Vec<u8> {
        self.legs
            .iter()
            .filter_map(|(c, _, e)| match e {
                LegEvent::Released { cause } if *c == call => Some(*cause),
                _ => None,
            })
            .collect()
    }

    fn all_idle(&self) -> bool {
        self.pri.live_calls() == 0
            && self
                .pri
                .channels()
                .iter()
                .all(|(_, u)| *u == ChannelUse::Idle)
    }
}

impl Rig {
    /// 5 ms steps: D-channels every step, B-channels every 20 ms.
    fn run(&mut self, ms: u64) {
        for i in 0..ms / 5 {
            self.sim.advance(5);
            self.now += Duration::from_millis(5);
            for s in [&mut self.net, &mut self.usr] {
                s.d.step(self.now, &mut s.pri);
                if i % 4 == 3 {
                    s.media.run_once(self.now);
                }
                s.drain();
            }
        }
    }

    fn run_until(&mut self, limit_ms: u64, what: &str, done: impl Fn(&Rig) -> bool) -> u64 {
        let mut t = 0;
        while !done(self) {
            assert!(t <= limit_ms, "{what}: not within {limit_ms} ms");
            self.run(20);
            t += 20;
        }
        t
    }
}

fn tone(freq: f64, n: usize) -> Vec<Frame> {
    let mut phase = 0.0f64;
    (0..n)
        .map(|_| {
            core::array::from_fn(|_| {
                phase = (phase + freq / 8000.0).fract();
                (8000.0 * (phase * std::f64::consts::TAU).sin()) as i16
            })
        })
        .collect()
}

/// Power of `freq` in `samples` relative to their total power (0..1).
fn share_at(samples: &[i16], freq: f64) -> f64 {
    let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
    for (n, &s) in samples.iter().enumerate() {
        let a = std::f64::consts::TAU * freq * n as f64 / 8000.0;
        let x = f64::from(s);
        re += x * a.cos();
        im -= x * a.sin();
        total += x * x;
    }
    if total == 0.0 {
        return 0.0;
    }
    2.0 * (re * re + im * im) / samples.len() as f64 / total
}

/// Sends `freq` into `from`'s channel `ch` for 400 ms and checks it arrives on `to`'s channel
/// `ch` (the cross-connect keeps positions), and nowhere near as strong anywhere else.
fn audio_crosses(r: &mut Rig, forward: bool, ch: u8, freq: f64) {
    let frames = tone(freq, 20);
    let pos = ch as usize - 1;
    for s in [&mut r.net, &mut r.usr] {
        for p in s.ports.iter_mut().flatten() {
            while p.from_line.try_pop().is_some() {}
        }
    }
    let mut got: Vec<i16> = Vec::new();
    for f in &frames {
        let (tx, rx) = if forward {
            (&mut r.net, &mut r.usr)
        } else {
            (&mut r.usr, &mut r.net)
        };
        let _ = tx.ports[pos].as_mut().unwrap().to_line.try_push(*f);
        let _ = rx;
        r.run(20);
        let rx = if forward { &mut r.usr } else { &mut r.net };
        while let Some(f) = rx.ports[pos].as_mut().unwrap().from_line.try_pop() {
            got.extend_from_slice(&f);
        }
    }
    assert!(
        got.len() >= 160 * 10,
        "frames received: {}",
        got.len() / 160
    );
    let share = share_at(&got, freq);
    assert!(
        share > 0.5,
        "{freq} Hz on B-channel {ch}: {share:.2} of the power"
    );
}

#[test]
fn calls_both_ways_with_audio_early_media_and_clearing_from_each_side() {
    let mut r = rig();
    assert!(r.net.all_idle() && r.usr.all_idle());
    // Network -> user, channel picked by the stack (the network hunts from the top).
    let (call, ch) = r
        .net
        .pri
        .setup(r.now, "2001", Some("5551000"), None)
        .unwrap();
    assert_eq!(ch, 31);
    r.run_until(500, "SETUP arrives", |r| r.usr.incoming().is_some());
    let (ucall, uch, called, calling) = r.usr.incoming().unwrap();
    assert_eq!(
        (uch, called.as_str(), calling.as_deref()),
        (31, "2001", Some("5551000"))
    );
    // In-band ringback: ALERTING with progress indicator 8 = early media on the calling side.
    r.usr.pri.alerting(r.now, ucall, true);
    r.run_until(500, "alerting", |r| {
        r.net.has(call, &LegEvent::Alerting { inband: false })
    });
    assert!(
        r.net.has(call, &LegEvent::Progress { inband: true }),
        "{:?}",
        r.net.legs
    );
    assert!(r.net.has(call, &LegEvent::Proceeding));
    audio_crosses(&mut r, false, ch, 425.0); // the ringback reaches the caller before answer
    assert!(r.usr.pri.answer(r.now, ucall));
    r.run_until(500, "answer", |r| r.net.has(call, &LegEvent::Answered));
    audio_crosses(&mut r, true, ch, 1004.0);
    audio_crosses(&mut r, false, ch, 697.0);
    assert_eq!(
        r.net.pri.channels().iter().find(|c| c.0 == 31).unwrap().1,
        ChannelUse::Busy
    );
    r.net.pri.hangup(r.now, call, cause::NORMAL_CLEARING);
    r.run_until(500, "clear reaches the user side", |r| {
        r.usr.released(ucall) == vec![cause::NORMAL_CLEARING]
    });
    r.run_until(500, "both idle", |r| r.net.all_idle() && r.usr.all_idle());
    assert!(
        r.net.released(call).is_empty(),
        "our own hang-up is not reported back"
    );

    // User -> network, cleared by the called side with user busy... after answer.
    r.usr.legs.clear();
    r.net.legs.clear();
    let (call, ch) = r.usr.pri.setup(r.now, "9100", None, None).unwrap();
    assert_eq!(ch, 1, "the user side hunts from the bottom");
    r.run_until(500, "SETUP arrives", |r| r.net.incoming().is_some());
    let (ncall, nch, called, calling) = r.net.incoming().unwrap();
    assert_eq!((nch, called.as_str(), calling), (1, "9100", None));
    // PROGRESS with in-band information before answer.
    r.net.pri.progress(r.now, ncall);
    r.run_until(500, "progress", |r| {
        r.usr.has(call, &LegEvent::Progress { inband: true })
    });
    assert!(r.net.pri.answer(r.now, ncall));
    r.run_until(500, "answer", |r| r.usr.has(call, &LegEvent::Answered));
    audio_crosses(&mut r, false, 1, 1500.0);
    r.net.pri.hangup(r.now, ncall, cause::USER_BUSY);
    r.run_until(500, "cleared", |r| {
        r.usr.released(call) == vec![cause::USER_BUSY]
    });
    r.run_until(500, "both idle", |r| r.net.all_idle() && r.usr.all_idle());
}

#[test]
fn thirty_calls_fill_the_e1_and_the_thirty_first_is_refused_with_34() {
    let mut r = rig();
    let mut calls = Vec::new();
    for i in 0..30 {
        calls.push(r.net.pri.setup(r.now, &format!("{i}"), None, None).unwrap());
    }
    assert_eq!(
        r.net.pri.setup(r.now, "x", None, None),
        Err(cause::NO_CIRCUIT)
    );
    r.run_until(2_000, "thirty SETUPs", |r| {
        r.usr
            .legs
            .iter()
            .filter(|l| matches!(l.2, LegEvent::Incoming { .. }))
            .count()
            == 30
    });
    let chans: std::collections::BTreeSet<u8> = calls.iter().map(|c| c.1).collect();
    assert_eq!(chans.len(), 30);
    for (c, _) in &calls {
        r.net.pri.hangup(r.now, *c, cause::NORMAL_CLEARING);
    }
    r.run_until(2_000, "all idle", |r| r.net.all_idle() && r.usr.all_idle());
}

#[test]
fn an_alarm_clears_calls_with_cause_38_on_both_ends_blocks_and_recovers_after_restart() {
    let mut r = rig();
    let (call, _) = r.net.pri.setup(r.now, "1", None, Some(5)).unwrap();
    r.run_until(500, "incoming", |r| r.usr.incoming().is_some());
    let (ucall, uch, ..) = r.usr.incoming().unwrap();
    assert_eq!(uch, 5, "exclusive channel honoured");
    r.usr.pri.answer(r.now, ucall);
    r.run_until(500, "answered", |r| r.net.has(call, &LegEvent::Answered));
    // Span 2 loses its signal (RED); span 1 gets the remote alarm (YELLOW).
    r.sim.control("alarm 2 RED").unwrap();
    r.run_until(200, "cleared on both ends", |r| {
        r.usr.released(ucall) == vec![cause::NETWORK_OUT_OF_ORDER]
            && r.net.released(call) == vec![cause::NETWORK_OUT_OF_ORDER]
    });
    assert!(r.usr.other.contains(&PriSpanEvent::Alarm(true)));
    assert!(r.net.other.contains(&PriSpanEvent::Alarm(true)));
    for s in [&r.net, &r.usr] {
        assert_eq!(s.pri.live_calls(), 0);
        assert!(s.pri.channels().iter().all(|c| c.1 == ChannelUse::Blocked));
    }
    // New calls are refused while the alarm lasts, also after a long while.
    r.run(5_000);
    assert_eq!(
        r.net.pri.setup(r.now, "2", None, None),
        Err(cause::NETWORK_OUT_OF_ORDER)
    );
    assert_eq!(
        r.usr.pri.setup(r.now, "2", None, None),
        Err(cause::NETWORK_OUT_OF_ORDER)
    );
    // Recovery: alarms clear, layer 2 returns, RESTART puts every channel back to idle.
    r.net.other.clear();
    r.usr.other.clear();
    r.sim.control("clear 2").unwrap();
    r.run(5);
    assert!(r.net.other.contains(&PriSpanEvent::Alarm(false)));
    assert!(
        !r.net.pri.is_ready() && !r.usr.pri.is_ready(),
        "not ready before layer 2 is re-established"
    );
    assert_eq!(
        r.net.pri.setup(r.now, "early", None, None),
        Err(cause::NETWORK_OUT_OF_ORDER)
    );
    let t = r.run_until(5_000, "ready again", |r| {
        r.net.pri.is_ready() && r.usr.pri.is_ready()
    });
    eprintln!("ready {t} ms after the alarm cleared");
    assert!(r.net.other.contains(&PriSpanEvent::Alarm(false)));
    assert!(
        r.net
            .other
            .iter()
            .any(|e| matches!(e, PriSpanEvent::Restarted(_)))
    );
    assert!(r.net.all_idle() && r.usr.all_idle());
    let (call, _) = r.net.pri.setup(r.now, "3", None, None).unwrap();
    r.run_until(500, "calls again", |r| {
        r.usr
            .legs
            .iter()
            .filter(|l| matches!(l.2, LegEvent::Incoming { .. }))
            .count()
            == 2
    });
    r.net.pri.hangup(r.now, call, cause::NORMAL_CLEARING);
    r.run_until(500, "idle", |r| r.net.all_idle() && r.usr.all_idle());
}

#[test]
fn a_restart_from_the_far_end_releases_its_calls_and_leaves_the_channels_idle() {
    let mut r = rig();
    let (call, ch) = r.net.pri.setup(r.now, "77", None, None).unwrap();
    r.run_until(500, "incoming", |r| r.usr.incoming().is_some());
    let (ucall, ..) = r.usr.incoming().unwrap();
    r.usr.pri.answer(r.now, ucall);
    r.run_until(500, "answered", |r| r.net.has(call, &LegEvent::Answered));
    r.usr.pri.restart(r.now, &[ch]);
    r.run_until(500, "restarted", |r| !r.net.released(call).is_empty());
    assert_eq!(r.net.released(call), vec![cause::TEMPORARY_FAILURE]);
    assert_eq!(r.usr.released(ucall), vec![cause::TEMPORARY_FAILURE]);
    assert!(r.net.other.contains(&PriSpanEvent::Restarted(vec![ch])));
    r.run_until(500, "idle", |r| r.net.all_idle() && r.usr.all_idle());
}

#[test]
fn an_out_of_service_channel_is_never_used_and_an_exclusive_request_for_it_fails_with_44() {
    let mut r = rig();
    r.net.pri.set_channel_available(31, false);
    let (call, ch) = r.net.pri.setup(r.now, "1", None, None).unwrap();
    assert_eq!(ch, 30);
    assert_eq!(
        r.net.pri.setup(r.now, "1", None, Some(31)),
        Err(cause::CHANNEL_UNAVAILABLE)
    );
    // The far end asking for it exclusively is refused too.
    r.usr.pri.set_channel_available(2, false);
    r.run_until(500, "incoming", |r| r.usr.incoming().is_some());
    r.net.pri.set_channel_available(2, true);
    let (c2, _) = r.net.pri.setup(r.now, "2", None, Some(2)).unwrap();
    r.run_until(500, "refused", |r| !r.net.released(c2).is_empty());
    assert_eq!(r.net.released(c2), vec![cause::CHANNEL_UNAVAILABLE]);
    r.net.pri.hangup(r.now, call, cause::NORMAL_CLEARING);
    r.run_until(500, "idle", |r| {
        r.net.pri.live_calls() == 0 && r.usr.pri.live_calls() == 0
    });
    assert_eq!(
        r.net.pri.channels().iter().find(|c| c.0 == 31).unwrap().1,
        ChannelUse::Blocked
    );
}

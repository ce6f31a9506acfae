//! Signalling through the span thread's rings, on virtual time over `SimSpans`: hook changes
//! and winks reach the far end as DAHDI events, DTMF and MF dial strings from spanbridge's
//! generator are heard once each by the far end's detector, CAS bits cross, alarms arrive, and
//! a failed command is reported rather than lost. Both spans are served by `run_once` with the
//! clock advanced 20 ms per cycle, exactly as the thread does in real time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::Law;
use ringbuf::traits::{Consumer, Producer};
use tdm_driver::sim::{ClockMode, SimSpans};
use tdm_driver::span::{
    ChannelPorts, ChannelSignals, ChannelSpec, CommandKind, DialString, DigitKind, SignalCommand,
    SignalEvent, SpanMedia, SpanOptions,
};
use tdm_driver::{ChannelConfig, Ctl, Event, Hook, Law as DahdiLaw, SigType};

struct Pair {
    sim: Arc<SimSpans>,
    a: SpanMedia<SimSpans>,
    b: SpanMedia<SimSpans>,
    sa: Vec<ChannelSignals>,
    sb: Vec<ChannelSignals>,
    pa: Vec<ChannelPorts>,
    pb: Vec<ChannelPorts>,
    now: Instant,
    /// Events seen so far on each side, per channel, with the cycle they arrived in.
    ea: Vec<Vec<(u32, SignalEvent)>>,
    eb: Vec<Vec<(u32, SignalEvent)>>,
    cycle: u32,
}

/// Positions 1..=n of both spans configured with `sig`, opened non-blocking.
fn pair(sig: SigType, n: u32) -> Pair {
    let sim = Arc::new(SimSpans::preconfigured(ClockMode::Manual));
    let ctl = Ctl::open(sim.clone()).unwrap();
    for pos in 1..=n {
        for chan in [pos as i32, 31 + pos as i32] {
            ctl.chan_config(&ChannelConfig {
                chan,
                sigtype: sig,
                deflaw: DahdiLaw::Default,
                master: chan,
                idlebits: 0,
                netdev_name: String::new(),
            })
            .unwrap();
        }
    }
    let specs = |span| -> Vec<ChannelSpec> {
        (1..=n)
            .map(|position| ChannelSpec {
                span,
                position,
                law: Law::Alaw,
            })
            .collect()
    };
    let opts = SpanOptions { nonblocking: true };
    let (mut a, pa) = SpanMedia::open_with(sim.clone(), 1, &specs(1), opts).unwrap();
    let (mut b, pb) = SpanMedia::open_with(sim.clone(), 2, &specs(2), opts).unwrap();
    let (sa, sb) = (a.take_signals(), b.take_signals());
    assert!(a.take_signals().is_empty(), "signals are taken once");
    Pair {
        sim,
        a,
        b,
        sa,
        sb,
        pa,
        pb,
        now: Instant::now(),
        ea: vec![Vec::new(); n as usize],
        eb: vec![Vec::new(); n as usize],
        cycle: 0,
    }
}

impl Pair {
    /// `cycles` cycles of 20 ms.
    fn run(&mut self, cycles: u32) {
        for _ in 0..cycles {
            self.sim.advance(20);
            self.now += Duration::from_millis(20);
            self.cycle += 1;
            self.a.run_once(self.now);
            self.b.run_once(self.now);
            for (s, seen) in self.sa.iter_mut().zip(self.ea.iter_mut()) {
                while let Some(e) = s.poll() {
                    seen.push((self.cycle, e));
                }
            }
            for (s, seen) in self.sb.iter_mut().zip(self.eb.iter_mut()) {
                while let Some(e) = s.poll() {
                    seen.push((self.cycle, e));
                }
            }
            // The gateway side drains what the line delivers.
            for p in self.pa.iter_mut().chain(self.pb.iter_mut()) {
                while p.from_line.try_pop().is_some() {}
            }
        }
    }

    fn take_a(&mut self, ch: usize) -> Vec<SignalEvent> {
        std::mem::take(&mut self.ea[ch])
            .into_iter()
            .map(|e| e.1)
            .collect()
    }

    fn take_b(&mut self, ch: usize) -> Vec<SignalEvent> {
        std::mem::take(&mut self.eb[ch])
            .into_iter()
            .map(|e| e.1)
            .collect()
    }
}

fn digits(events: &[SignalEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            SignalEvent::Digit { digit, .. } => Some(char::from(*digit)),
            _ => None,
        })
        .collect()
}

#[test]
fn seizure_wink_and_clear_cross_the_pair_as_dahdi_events() {
    let mut p = pair(SigType::EmE1, 2);
    p.sa[0].send(SignalCommand::Hook(Hook::OffHook)).unwrap();
    p.run(16);
    let t = p.eb[0].clone();
    assert_eq!(
        t.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![SignalEvent::Line(Event::RingOffHook)],
        "seizure at the far end after DAHDI's 250 ms wink window: {t:?}"
    );
    assert!((13..=14).contains(&t[0].0), "{t:?}");
    assert!(
        p.ea[1].is_empty() && p.eb[1].is_empty(),
        "other channel untouched"
    );
    p.eb[0].clear();
    // The far end winks with the thread's timer: 150 ms off hook.
    p.sb[0].send(SignalCommand::Wink { ms: 150 }).unwrap();
    p.run(20);
    assert_eq!(p.take_a(0), vec![SignalEvent::Line(Event::WinkFlash)]);
    assert_eq!(p.take_b(0), vec![SignalEvent::HookDone]);
    // Clear forward: the far end sees on hook at once.
    p.sa[0].send(SignalCommand::Hook(Hook::OnHook)).unwrap();
    p.run(2);
    assert_eq!(p.take_b(0), vec![SignalEvent::Line(Event::OnHook)]);
}

#[test]
fn dtmf_and_mf_dial_strings_are_heard_once_each_by_the_far_detector() {
    let mut p = pair(SigType::EmE1, 2);
    p.sb[0]
        .send(SignalCommand::Detect(Some(DigitKind::Dtmf)))
        .unwrap();
    p.sb[1]
        .send(SignalCommand::Detect(Some(DigitKind::MfR1)))
        .unwrap();
    // Audio queued by the gateway meanwhile is replaced by the tones, not mixed in.
    for _ in 0..8 {
        let _ = p.pa[0].to_line.try_push([12000; 160]);
    }
    p.sa[0]
        .send(SignalCommand::Dial(
            DialString::new(DigitKind::Dtmf, "0123456789*#ABCD").unwrap(),
        ))
        .unwrap();
    p.sa[1]
        .send(SignalCommand::Dial(
            DialString::new(DigitKind::MfR1, "*5551234#").unwrap(),
        ))
        .unwrap();
    p.run(150);
    let b0 = p.take_b(0);
    assert_eq!(digits(&b0), "0123456789*#ABCD", "{b0:?}");
    for e in &b0 {
        if let SignalEvent::Digit {
            kind, duration_ms, ..
        } = e
        {
            assert_eq!(*kind, DigitKind::Dtmf);
            assert!((70..=90).contains(duration_ms), "{e:?}");
        }
    }
    let b1 = p.take_b(1);
    assert_eq!(digits(&b1), "*5551234#", "{b1:?}");
    assert!(
        b1.iter()
            .all(|e| !matches!(e, SignalEvent::Digit { kind, .. } if *kind != DigitKind::MfR1))
    );
    // KP is the long one.
    match b1.first() {
        Some(SignalEvent::Digit {
            digit: b'*',
            duration_ms,
            ..
        }) => assert!((90..=110).contains(duration_ms), "{b1:?}"),
        other => panic!("first MF signal {other:?}"),
    }
    assert_eq!(p.take_a(0), vec![SignalEvent::DialDone]);
    assert_eq!(p.take_a(1), vec![SignalEvent::DialDone]);
    // Detection off: nothing more is reported.
    p.sb[0].send(SignalCommand::Detect(None)).unwrap();
    p.sa[0]
        .send(SignalCommand::Dial(
            DialString::new(DigitKind::Dtmf, "55").unwrap(),
        ))
        .unwrap();
    p.run(20);
    assert_eq!(digits(&p.take_b(0)), "");
    // A dial can be cancelled.
    p.sa[0]
        .send(SignalCommand::Dial(
            DialString::new(DigitKind::Dtmf, "1234567890").unwrap(),
        ))
        .unwrap();
    p.run(3);
    p.sa[0].send(SignalCommand::CancelDial).unwrap();
    p.run(2);
    assert!(p.take_a(0).contains(&SignalEvent::DialDone));
}

#[test]
fn cas_bits_and_alarms_are_reported_and_failures_are_not_lost() {
    let mut p = pair(SigType::Cas, 1);
    p.run(2);
    p.take_b(0);
    p.sa[0].send(SignalCommand::TxBits(0b1101)).unwrap();
    p.run(2);
    assert_eq!(
        p.take_b(0),
        vec![
            SignalEvent::Line(Event::BitsChanged),
            SignalEvent::Bits(0b1101)
        ]
    );
    // DAHDI refuses DAHDI_HOOK on CAS signalling: the failure comes back as an event.
    p.sa[0].send(SignalCommand::Hook(Hook::OffHook)).unwrap();
    p.run(1);
    assert_eq!(
        p.take_a(0),
        vec![SignalEvent::Failed {
            command: CommandKind::Hook,
            errno: libc::EINVAL
        }]
    );
    p.sim.control("alarm 2 RED").unwrap();
    p.run(2);
    assert!(p.take_b(0).contains(&SignalEvent::Line(Event::Alarm)));
    p.sim.control("clear 2").unwrap();
    p.run(2);
    assert!(p.take_b(0).contains(&SignalEvent::Line(Event::NoAlarm)));
}

#[test]
fn dial_strings_are_validated_before_they_reach_the_thread() {
    assert!(DialString::new(DigitKind::MfR1, "D").is_err(), "no D in MF");
    assert!(DialString::new(DigitKind::Dtmf, "12x").is_err());
    assert!(DialString::new(DigitKind::Dtmf, &"1".repeat(33)).is_err());
    assert_eq!(
        DialString::new(DigitKind::Dtmf, "12ab").unwrap().digits(),
        "12AB"
    );
}

//! CAS on simulated spans, on virtual time: `CasChannel` state machines on both ends of the
//! `SimSpans` E1 pair, talking through the span threads' signalling rings (`run_once` every
//! 20 ms of simulated time), so every hook change, wink, ring and digit goes through DAHDI's
//! robbed-bit semantics as the simulator models them. E&M immediate and wink start with DTMF
//! and MF addressing both ways, glare, FXO ringing an FXS port and an FXS port dialling an FXO
//! port with battery-reversal supervision, timeouts, and alarms. Every test ends with every
//! channel idle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::Law;
use ringbuf::traits::Consumer;
use tdm_driver::cas::{CasChannel, CasConfig, CasError, CasMode, CasState};
use tdm_driver::leg::{LegEvent, cause};
use tdm_driver::sim::{ClockMode, SimSpans};
use tdm_driver::span::{
    ChannelPorts, ChannelSignals, ChannelSpec, DigitKind, SpanMedia, SpanOptions,
};
use tdm_driver::{ChannelConfig, Ctl, Law as DahdiLaw, SigType};

struct Side {
    media: SpanMedia<SimSpans>,
    signals: Vec<ChannelSignals>,
    ports: Vec<ChannelPorts>,
    cas: Vec<CasChannel>,
    /// (ms since start, event) per channel.
    log: Vec<Vec<(u64, LegEvent)>>,
}

struct Rig {
    sim: Arc<SimSpans>,
    start: Instant,
    now: Instant,
    a: Side,
    b: Side,
}

/// Channel positions 1..=n on span 1 (side a) and span 2 (side b), with signalling and CAS
/// configuration per side.
fn rig(n: u32, a: (SigType, CasConfig), b: (SigType, CasConfig)) -> Rig {
    let sim = Arc::new(SimSpans::preconfigured(ClockMode::Manual));
    let ctl = Ctl::open(sim.clone()).unwrap();
    for pos in 1..=n {
        for (chan, sig) in [(pos as i32, a.0), (31 + pos as i32, b.0)] {
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
    let side = |span: u32, cfg: &CasConfig| {
        let specs: Vec<ChannelSpec> = (1..=n)
            .map(|position| ChannelSpec {
                span,
                position,
                law: Law::Alaw,
            })
            .collect();
        let (mut media, ports) =
            SpanMedia::open_with(sim.clone(), span, &specs, SpanOptions { nonblocking: true })
                .unwrap();
        Side {
            signals: media.take_signals(),
            media,
            ports,
            cas: (0..n).map(|_| CasChannel::new(cfg.clone())).collect(),
            log: vec![Vec::new(); n as usize],
        }
    };
    let start = Instant::now();
    Rig {
        a: side(1, &a.1),
        b: side(2, &b.1),
        sim,
        start,
        now: start,
    }
}

fn em(mode: CasMode, kind: DigitKind) -> (SigType, CasConfig) {
    (SigType::EmE1, CasConfig::new(mode, Some(kind)))
}

impl Side {
    fn step(&mut self, now: Instant, ms: u64) {
        for ((cas, sig), log) in self
            .cas
            .iter_mut()
            .zip(self.signals.iter_mut())
            .zip(self.log.iter_mut())
        {
            cas.handle_timeout(now);
            while let Some(c) = cas.poll_command() {
                if std::env::var_os("CAS_DEBUG").is_some() {
                    eprintln!(
                        "{ms} span {} ch {}: <- {c:?} in {:?}",
                        sig.spec.span,
                        sig.spec.position,
                        cas.state()
                    );
                }
                sig.send(c).expect("command ring full");
            }
            let _ = log;
        }
        self.media.run_once(now);
        for ((cas, sig), log) in self
            .cas
            .iter_mut()
            .zip(self.signals.iter_mut())
            .zip(self.log.iter_mut())
        {
            while let Some(e) = sig.poll() {
                if std::env::var_os("CAS_DEBUG").is_some() {
                    eprintln!(
                        "{ms} span {} ch {}: {e:?} in {:?}",
                        sig.spec.span,
                        sig.spec.position,
                        cas.state()
                    );
                }
                cas.on_event(now, e);
            }
            while let Some(e) = cas.poll_event() {
                log.push((ms, e));
            }
        }
        for p in &mut self.ports {
            while p.from_line.try_pop().is_some() {}
        }
    }
}

impl Rig {
    fn ms(&self) -> u64 {
        self.now.duration_since(self.start).as_millis() as u64
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 20 {
            self.sim.advance(20);
            self.now += Duration::from_millis(20);
            let t = self.ms();
            if std::env::var_os("CAS_DEBUG").is_some() {
                let ctl = Ctl::open(self.sim.clone()).unwrap();
                let p1 = ctl.channel_params(1).unwrap();
                let p2 = ctl.channel_params(32).unwrap();
                eprintln!(
                    "{t} bits: a tx {:04b} rx {:04b} hook {}/{}  b tx {:04b} rx {:04b} hook {}/{}",
                    p1.txbits,
                    p1.rxbits,
                    p1.txhooksig,
                    p1.rxhooksig,
                    p2.txbits,
                    p2.rxbits,
                    p2.txhooksig,
                    p2.rxhooksig
                );
            }
            self.a.step(self.now, t);
            self.b.step(self.now, t);
        }
    }

    /// Runs until `done` holds (at most `limit_ms`); returns the time it took.
    fn run_until(&mut self, limit_ms: u64, what: &str, done: impl Fn(&Rig) -> bool) -> u64 {
        let t0 = self.ms();
        while !done(self) {
            assert!(
                self.ms() - t0 <= limit_ms,
                "{what}: not within {limit_ms} ms; a {:?} b {:?}",
                self.a.log,
                self.b.log
            );
            self.run(20);
        }
        self.ms() - t0
    }

    fn all_idle(&mut self) {
        let t = self.run_until(15_000, "every channel idle", |r| {
            r.a.cas.iter().chain(r.b.cas.iter()).all(|c| c.is_idle())
        });
        assert!(t < 15_000);
        for c in self.a.cas.iter().chain(self.b.cas.iter()) {
            assert!(!c.has_leg());
        }
    }
}

fn has(log: &[(u64, LegEvent)], e: &LegEvent) -> bool {
    log.iter().any(|(_, x)| x == e)
}

fn incoming(log: &[(u64, LegEvent)]) -> Option<String> {
    log.iter().find_map(|(_, e)| match e {
        LegEvent::Incoming { called, .. } => Some(called.clone()),
        _ => None,
    })
}

fn released(log: &[(u64, LegEvent)]) -> Vec<u8> {
    log.iter()
        .filter_map(|(_, e)| match e {
            LegEvent::Released { cause } => Some(*cause),
            _ => None,
        })
        .collect()
}

/// One call from `from` channel 0 to the other side's channel 0: address, answer, clear from
/// the caller's side (or the callee's).
fn em_call(r: &mut Rig, forward: bool, number: &str, caller_clears: bool) {
    // A DTMF '#' ends the address and is not part of it.
    let expected = number.strip_suffix('#').unwrap_or(number).to_owned();
    let now = r.now;
    {
        let (from, _) = if forward {
            (&mut r.a, &mut r.b)
        } else {
            (&mut r.b, &mut r.a)
        };
        from.cas[0].originate(now, number).unwrap();
        assert_eq!(
            from.cas[0].originate(now, number),
            Err(CasError::NotIdle(CasState::Seizing))
        );
    }
    let to_log = |r: &Rig| {
        if forward {
            r.b.log[0].clone()
        } else {
            r.a.log[0].clone()
        }
    };
    let from_log = |r: &Rig| {
        if forward {
            r.a.log[0].clone()
        } else {
            r.b.log[0].clone()
        }
    };
    // DTMF without '#' ends with the 3 s inter-digit timeout; MF with ST at once.
    let took = r.run_until(8_000, "address delivered", |r| {
        incoming(&to_log(r)).is_some()
    });
    assert_eq!(incoming(&to_log(r)), Some(expected));
    r.run_until(500, "early media after the address", |r| {
        has(&from_log(r), &LegEvent::Progress { inband: true })
    });
    eprintln!("{number}: address complete after {took} ms");
    let now = r.now;
    if forward {
        r.b.cas[0].answer(now).unwrap()
    } else {
        r.a.cas[0].answer(now).unwrap()
    }
    r.run_until(1_000, "answer supervision", |r| {
        has(&from_log(r), &LegEvent::Answered)
    });
    r.run(500);
    let now = r.now;
    let clearing_side_is_a = forward == caller_clears;
    if clearing_side_is_a {
        r.a.cas[0].hangup(now, cause::NORMAL_CLEARING).unwrap();
    } else {
        r.b.cas[0].hangup(now, cause::NORMAL_CLEARING).unwrap();
    }
    let other_log = |r: &Rig| {
        if clearing_side_is_a {
            r.b.log[0].clone()
        } else {
            r.a.log[0].clone()
        }
    };
    r.run_until(1_000, "clear reaches the far end", |r| {
        released(&other_log(r)) == vec![cause::NORMAL_CLEARING]
    });
    assert_eq!(released(&r.a.log[0]), vec![cause::NORMAL_CLEARING]);
    assert_eq!(released(&r.b.log[0]), vec![cause::NORMAL_CLEARING]);
    r.all_idle();
    r.a.log[0].clear();
    r.b.log[0].clear();
}

#[test]
fn em_wink_start_with_dtmf_both_ways() {
    let mut r = rig(
        1,
        em(CasMode::EmWink, DigitKind::Dtmf),
        em(CasMode::EmWink, DigitKind::Dtmf),
    );
    em_call(&mut r, true, "5551234", true);
    em_call(&mut r, false, "2001", false);
    em_call(&mut r, true, "*79#", false);
}

#[test]
fn em_wink_start_with_mf_both_ways() {
    let mut r = rig(
        1,
        em(CasMode::EmWink, DigitKind::MfR1),
        em(CasMode::EmWink, DigitKind::MfR1),
    );
    em_call(&mut r, true, "4085551212", true);
    em_call(&mut r, false, "911", false);
    assert!(
        r.a.cas[0].originate(r.now, "12#").is_err(),
        "ST is added by the machine"
    );
}

#[test]
fn em_immediate_start_with_dtmf_and_mf_both_ways() {
    let mut r = rig(
        1,
        em(CasMode::EmImmediate, DigitKind::Dtmf),
        em(CasMode::EmImmediate, DigitKind::Dtmf),
    );
    em_call(&mut r, true, "300", true);
    em_call(&mut r, false, "0123456789", false);
    let mut r = rig(
        1,
        em(CasMode::EmImmediate, DigitKind::MfR1),
        em(CasMode::EmImmediate, DigitKind::MfR1),
    );
    em_call(&mut r, true, "5550000", false);
    em_call(&mut r, false, "411", true);
}

#[test]
fn four_em_calls_at_once_each_get_their_own_number() {
    let mut r = rig(
        4,
        em(CasMode::EmWink, DigitKind::MfR1),
        em(CasMode::EmWink, DigitKind::MfR1),
    );
    let now = r.now;
    for i in 0..4 {
        r.a.cas[i].originate(now, &format!("100{i}")).unwrap();
    }
    r.run_until(5_000, "four addresses", |r| {
        r.b.log.iter().all(|l| incoming(l).is_some())
    });
    for i in 0..4 {
        assert_eq!(incoming(&r.b.log[i]), Some(format!("100{i}")));
        r.b.cas[i].answer(r.now).unwrap();
    }
    r.run_until(1_000, "four answers", |r| {
        r.a.log.iter().all(|l| has(l, &LegEvent::Answered))
    });
    for i in 0..4 {
        r.b.cas[i].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    }
    r.run_until(1_000, "four clears", |r| {
        r.a.log.iter().all(|l| !released(l).is_empty())
    });
    r.all_idle();
}

#[test]
fn em_wink_glare_the_priority_end_keeps_its_call_and_the_other_takes_it() {
    let mut prio = CasConfig::new(CasMode::EmWink, Some(DigitKind::MfR1));
    prio.glare_priority = true;
    let other = CasConfig::new(CasMode::EmWink, Some(DigitKind::MfR1));
    for offset_ms in [0u64, 20, 100, 200] {
        let mut r = rig(
            1,
            (SigType::EmE1, prio.clone()),
            (SigType::EmE1, other.clone()),
        );
        let now = r.now;
        r.a.cas[0].originate(now, "5550100").unwrap();
        r.run(offset_ms);
        let now = r.now;
        r.b.cas[0].originate(now, "5550199").unwrap();
        r.run_until(6_000, "the priority end's call arrives", |r| {
            incoming(&r.b.log[0]).is_some()
        });
        assert_eq!(
            incoming(&r.b.log[0]).as_deref(),
            Some("5550100"),
            "offset {offset_ms}"
        );
        assert_eq!(
            released(&r.b.log[0]),
            vec![cause::CHANNEL_UNAVAILABLE],
            "b's own call gave way"
        );
        assert_eq!(r.b.cas[0].glares(), 1);
        assert!(
            released(&r.a.log[0]).is_empty(),
            "a's call survives: {:?}",
            r.a.log[0]
        );
        r.b.cas[0].answer(r.now).unwrap();
        r.run_until(1_000, "answer", |r| has(&r.a.log[0], &LegEvent::Answered));
        r.a.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
        r.run_until(1_000, "clear", |r| released(&r.b.log[0]).len() == 2);
        r.all_idle();
    }
}

#[test]
fn em_wink_start_without_a_wink_fails_with_cause_41_and_an_unanswered_call_with_19() {
    let mut cfg = CasConfig::new(CasMode::EmWink, Some(DigitKind::Dtmf));
    cfg.timers.answer = Duration::from_secs(20);
    let mut r = rig(1, (SigType::EmE1, cfg.clone()), (SigType::EmE1, cfg));
    // Nobody serves span 2's channel: no wink.
    r.b.cas.clear();
    r.b.signals.clear();
    let now = r.now;
    r.a.cas[0].originate(now, "1").unwrap();
    let t = r.run_until(7_000, "wink timeout", |r| !released(&r.a.log[0]).is_empty());
    assert_eq!(released(&r.a.log[0]), vec![cause::TEMPORARY_FAILURE]);
    assert!(
        (4_900..=5_200).contains(&t),
        "after the 5 s wink wait: {t} ms"
    );
    r.run(2_000);
    assert!(r.a.cas[0].is_idle());
    // A far end that takes the call but never answers: the answer timer (20 s) clears it.
    let mut cfg = CasConfig::new(CasMode::EmWink, Some(DigitKind::Dtmf));
    cfg.timers.answer = Duration::from_secs(20);
    let mut r = rig(1, (SigType::EmE1, cfg.clone()), (SigType::EmE1, cfg));
    r.a.cas[0].originate(r.now, "22#").unwrap();
    r.run_until(3_000, "presented", |r| incoming(&r.b.log[0]).is_some());
    let t = r.run_until(25_000, "answer timeout", |r| {
        !released(&r.a.log[0]).is_empty()
    });
    assert_eq!(released(&r.a.log[0]), vec![cause::NO_ANSWER]);
    assert!(t >= 19_000, "{t}");
    r.run_until(1_000, "callee told", |r| {
        released(&r.b.log[0]) == vec![cause::NORMAL_CLEARING]
    });
    r.all_idle();
}

#[test]
fn an_incoming_seizure_without_digits_is_dropped_after_the_first_digit_timeout() {
    let cfg = CasConfig::new(CasMode::EmImmediate, Some(DigitKind::Dtmf));
    let mut r = rig(1, (SigType::EmE1, cfg.clone()), (SigType::EmE1, cfg));
    // Seize span 1's channel by hand, dial nothing.
    r.a.cas.clear();
    r.a.signals[0]
        .send(tdm_driver::span::SignalCommand::Hook(
            tdm_driver::Hook::OffHook,
        ))
        .unwrap();
    r.run(12_000);
    assert!(
        r.b.log[0].is_empty(),
        "no call was presented: {:?}",
        r.b.log[0]
    );
    assert_eq!(
        r.b.cas[0].state(),
        CasState::Releasing,
        "on hook, waiting for the far end"
    );
    r.a.signals[0]
        .send(tdm_driver::span::SignalCommand::Hook(
            tdm_driver::Hook::OnHook,
        ))
        .unwrap();
    r.all_idle();
}

fn fxo_fxs(polarity: bool) -> Rig {
    let mut office = CasConfig::new(CasMode::FxoLoopStart, Some(DigitKind::Dtmf));
    office.polarity = polarity;
    office.cadence = (1000, 2000);
    let mut station = CasConfig::new(CasMode::FxsLoopStart, Some(DigitKind::Dtmf));
    station.polarity = polarity;
    station.fixed_called = "line-2".into();
    rig(1, (SigType::FxoKs, office), (SigType::FxsKs, station))
}

#[test]
fn an_fxo_port_rings_an_fxs_port_which_answers_then_either_end_clears() {
    for (polarity, station_clears) in [(false, true), (true, true), (true, false), (false, false)] {
        let mut r = fxo_fxs(polarity);
        r.a.cas[0].originate(r.now, "").unwrap();
        r.run(20);
        assert!(has(&r.a.log[0], &LegEvent::Alerting { inband: false }));
        r.run_until(500, "ringing reaches the station", |r| {
            incoming(&r.b.log[0]).is_some()
        });
        assert_eq!(incoming(&r.b.log[0]).as_deref(), Some("line-2"));
        // Answer in the first ring pause.
        r.run(1_500);
        assert!(
            released(&r.b.log[0]).is_empty(),
            "still ringing (cadence 1 s on, 2 s off)"
        );
        r.b.cas[0].answer(r.now).unwrap();
        let t = r.run_until(500, "answer supervision", |r| {
            has(&r.a.log[0], &LegEvent::Answered)
        });
        eprintln!("answered after {t} ms");
        // Past the station's 600 ms off-hook debounce.
        r.run(1_000);
        if station_clears {
            r.b.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
            // DAHDI reports the open loop after its 1250 ms flash window.
            let t = r.run_until(2_000, "station on hook", |r| {
                !released(&r.a.log[0]).is_empty()
            });
            assert!((1_200..=1_400).contains(&t), "{t}");
        } else {
            r.a.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
            // Kewl start: the loop drop (500 ms battery denial) or the battery reversal.
            r.run_until(1_000, "loop drop or reversal seen", |r| {
                !released(&r.b.log[0]).is_empty()
            });
        }
        assert_eq!(released(&r.a.log[0]), vec![cause::NORMAL_CLEARING]);
        assert_eq!(released(&r.b.log[0]), vec![cause::NORMAL_CLEARING]);
        r.all_idle();
    }
}

#[test]
fn an_fxs_port_dials_an_fxo_port_with_battery_reversal_supervision() {
    let mut r = fxo_fxs(true);
    r.b.cas[0].originate(r.now, "2045#").unwrap();
    r.run_until(3_000, "digits collected at the office end", |r| {
        incoming(&r.a.log[0]).is_some()
    });
    assert_eq!(incoming(&r.a.log[0]).as_deref(), Some("2045"));
    r.run_until(500, "dialled", |r| {
        has(&r.b.log[0], &LegEvent::Progress { inband: true })
    });
    assert!(
        !has(&r.b.log[0], &LegEvent::Answered),
        "no answer before the reversal"
    );
    r.a.cas[0].answer(r.now).unwrap();
    r.run_until(200, "battery reversal = answer", |r| {
        has(&r.b.log[0], &LegEvent::Answered)
    });
    r.run(1_000);
    r.a.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    r.run_until(200, "reversal back = far end cleared", |r| {
        !released(&r.b.log[0]).is_empty()
    });
    assert_eq!(released(&r.a.log[0]), vec![cause::NORMAL_CLEARING]);
    r.all_idle();
    // Without reversal supervision the line counts as answered once dialled, and the
    // station clearing reaches the office end.
    let mut r = fxo_fxs(false);
    r.b.cas[0].originate(r.now, "7#").unwrap();
    r.run_until(3_000, "digits", |r| incoming(&r.a.log[0]).is_some());
    r.run_until(500, "answered when dialled", |r| {
        has(&r.b.log[0], &LegEvent::Answered)
    });
    r.a.cas[0].answer(r.now).unwrap();
    r.run(1_000);
    r.b.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    r.run_until(2_000, "office sees the open loop", |r| {
        !released(&r.a.log[0]).is_empty()
    });
    r.all_idle();
}

#[test]
fn a_ringing_call_the_station_refused_is_not_presented_again_by_its_next_rings() {
    let mut r = fxo_fxs(false);
    r.a.cas[0].originate(r.now, "").unwrap();
    r.run_until(500, "ring", |r| incoming(&r.b.log[0]).is_some());
    // The gateway refuses it (e.g. the SIP callee was busy); the office end rings on.
    r.b.cas[0].hangup(r.now, cause::USER_BUSY).unwrap();
    r.run(10_000);
    let presented = r.b.log[0]
        .iter()
        .filter(|(_, e)| matches!(e, LegEvent::Incoming { .. }))
        .count();
    assert_eq!(
        presented, 1,
        "re-presented by later rings: {:?}",
        r.b.log[0]
    );
    assert!(!r.b.cas[0].is_idle(), "guarding while it rings");
    // The caller gives up: the station end is free again once the rings have stopped.
    r.a.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    r.all_idle();
    assert!(has(
        &r.a.log[0],
        &LegEvent::Released {
            cause: cause::NORMAL_CLEARING
        }
    ));
}

#[test]
fn a_station_left_ringing_gives_up_when_the_rings_stop() {
    let mut r = fxo_fxs(false);
    r.a.cas[0].originate(r.now, "").unwrap();
    r.run_until(500, "ring", |r| incoming(&r.b.log[0]).is_some());
    r.run(4_000);
    r.a.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    let t = r.run_until(10_000, "station gives up", |r| {
        !released(&r.b.log[0]).is_empty()
    });
    assert!(t > 4_000, "not before the ring-gone time: {t}");
    r.all_idle();
}

#[test]
fn a_span_alarm_clears_calls_with_cause_38_blocks_the_span_and_recovers() {
    let cfg = CasConfig::new(CasMode::EmWink, Some(DigitKind::MfR1));
    let mut r = rig(2, (SigType::EmE1, cfg.clone()), (SigType::EmE1, cfg));
    r.a.cas[0].originate(r.now, "100").unwrap();
    r.run_until(3_000, "presented", |r| incoming(&r.b.log[0]).is_some());
    r.b.cas[0].answer(r.now).unwrap();
    r.run_until(1_000, "answered", |r| has(&r.a.log[0], &LegEvent::Answered));
    r.sim.control("alarm 2 RED").unwrap();
    r.run_until(200, "cleared by the alarm", |r| {
        !released(&r.b.log[0]).is_empty()
    });
    assert_eq!(released(&r.b.log[0]), vec![cause::NETWORK_OUT_OF_ORDER]);
    assert!(r.b.cas.iter().all(|c| c.state() == CasState::Blocked));
    assert_eq!(
        r.b.cas[1].originate(r.now, "1"),
        Err(CasError::NotIdle(CasState::Blocked))
    );
    // The far end of the call sees it go.
    r.run_until(500, "far end released", |r| {
        !released(&r.a.log[0]).is_empty()
    });
    r.run(3_000);
    assert!(
        r.b.cas.iter().all(|c| c.state() == CasState::Blocked),
        "blocked until recovery"
    );
    r.sim.control("clear 2").unwrap();
    r.all_idle();
    // And calls work again.
    r.b.cas[1].originate(r.now, "200").unwrap();
    r.run_until(3_000, "new call after recovery", |r| {
        incoming(&r.a.log[1]).is_some()
    });
    r.b.cas[1].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    r.all_idle();
}

/// Plays `country`'s `kind` tone from side b's channel 0 (instead of answering) until `done`.
fn play_tone_until(
    r: &mut Rig,
    tone: codecs::tones::ToneKind,
    country: codecs::tones::Country,
    limit_ms: u64,
    done: impl Fn(&Rig) -> bool,
) -> u64 {
    use ringbuf::traits::Producer;
    let mut g = codecs::tones::ToneGenerator::new(country, tone);
    let t0 = r.ms();
    while !done(r) {
        assert!(
            r.ms() - t0 <= limit_ms,
            "{tone}: not within {limit_ms} ms; a {:?} b {:?}",
            r.a.log,
            r.b.log
        );
        let mut frame = [0i16; codecs::FRAME_SAMPLES];
        g.fill(&mut frame);
        let _ = r.b.ports[0].to_line.try_push(frame);
        r.run(20);
    }
    r.ms() - t0
}

/// An outgoing E&M call whose far end plays busy (or reorder) tone instead of answering is
/// cleared with cause 17 (or 34) once the cadence is recognised; both channels end idle. A
/// call answered after ringback is not touched by the detector.
#[test]
fn em_busy_and_congestion_tones_clear_an_outgoing_call_with_17_and_34() {
    use codecs::tones::{Country, ToneKind};
    for (country, tone, want) in [
        (Country::Us, ToneKind::Busy, cause::USER_BUSY),
        (Country::Us, ToneKind::Congestion, cause::NO_CIRCUIT),
        (Country::Etsi, ToneKind::Busy, cause::USER_BUSY),
    ] {
        let mut cfg = CasConfig::new(CasMode::EmWink, Some(DigitKind::Dtmf));
        cfg.progress_tones = Some(country);
        let mut r = rig(1, (SigType::EmE1, cfg.clone()), (SigType::EmE1, cfg));
        r.a.cas[0].originate(r.now, "4711#").unwrap();
        r.run_until(3_000, "presented", |r| incoming(&r.b.log[0]).is_some());
        let t = play_tone_until(&mut r, tone, country, 6_000, |r| {
            !released(&r.a.log[0]).is_empty()
        });
        assert_eq!(released(&r.a.log[0]), vec![want], "{country} {tone}");
        assert_eq!(r.a.cas[0].tones_heard(), 1);
        assert!(t <= 3_000, "{country} {tone} recognised after {t} ms");
        // The far end sees the seizure go away, as for any caller hanging up.
        r.run_until(2_000, "callee told", |r| {
            released(&r.b.log[0]) == vec![cause::NORMAL_CLEARING]
        });
        r.all_idle();
    }
    // Ringback, then an answer: the call survives.
    let mut cfg = CasConfig::new(CasMode::EmWink, Some(DigitKind::Dtmf));
    cfg.progress_tones = Some(Country::Us);
    let mut r = rig(1, (SigType::EmE1, cfg.clone()), (SigType::EmE1, cfg));
    r.a.cas[0].originate(r.now, "4711#").unwrap();
    r.run_until(3_000, "presented", |r| incoming(&r.b.log[0]).is_some());
    let start = r.ms();
    play_tone_until(&mut r, ToneKind::Ringback, Country::Us, 13_000, |r| {
        r.ms() - start >= 12_000
    });
    assert!(released(&r.a.log[0]).is_empty(), "{:?}", r.a.log[0]);
    r.b.cas[0].answer(r.now).unwrap();
    r.run_until(1_000, "answer", |r| has(&r.a.log[0], &LegEvent::Answered));
    assert_eq!(r.a.cas[0].tones_heard(), 0);
    r.a.cas[0].hangup(r.now, cause::NORMAL_CLEARING).unwrap();
    r.run_until(2_000, "clear", |r| !released(&r.b.log[0]).is_empty());
    r.all_idle();
}

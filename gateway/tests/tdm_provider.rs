//! The TDM leg provider on the in-process simulated E1 pair (real-time clock), driven through
//! the engine's leg interface exactly as the shell drives it: `Originate` to a span group on
//! span 1 arrives as `Incoming` on span 2 with the dialled number and the right B-channel;
//! ringing, answer, audio both ways through the ports the legs hand to the media plane,
//! clearing from either side with its cause; PRI and CAS (E&M wink start with MF, immediate
//! start with DTMF, an FXO port ringing an FXS port); span alarm → cause 38 and refusal, then
//! recovery; channel hunting. After every call: no leg, no busy channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::calls::leg::{
    AudioCodec, EndCause, FramePort, LegCommand, LegEvent, LegId, LegIds, LegProvider, LegSource,
    LocalMedia, MediaAttachment, Target,
};
use gateway::config::{Hunt, SpanGroupConfig};
use gateway::tdm::TdmProvider;
use gateway::tdm::config::{Addressing, Signalling, TdmConfig};
use tdm_driver::sim::{ClockMode, SimSpans};

type Frame = [i16; 160];

struct Rig {
    sim: Arc<SimSpans>,
    p: TdmProvider<SimSpans>,
    ids: LegIds,
    log: Vec<(LegId, LegEvent)>,
}

fn rig(
    a: Signalling,
    b: Signalling,
    addressing: Addressing,
    groups: &[(&str, &[u32], Hunt)],
) -> Rig {
    let mut cfg = TdmConfig::sim_pri_pair();
    cfg.spans[0].signalling = a;
    cfg.spans[1].signalling = b;
    for s in &mut cfg.spans {
        s.addressing = addressing;
    }
    let groups: Vec<SpanGroupConfig> = groups
        .iter()
        .map(|(name, spans, hunt)| SpanGroupConfig {
            name: (*name).into(),
            spans: spans.to_vec(),
            hunt: *hunt,
        })
        .collect();
    let sim = Arc::new(SimSpans::preconfigured(ClockMode::Thread));
    let ids = LegIds::new();
    let p = TdmProvider::start(
        Instant::now(),
        sim.clone(),
        &cfg,
        &groups,
        ids.clone(),
        true,
    )
    .unwrap();
    let mut r = Rig {
        sim,
        p,
        ids,
        log: Vec::new(),
    };
    r.run_until(5, "PRI spans ready", |r| r.p.pri_ready());
    r
}

fn pri() -> Rig {
    rig(
        Signalling::PriNet,
        Signalling::PriCpe,
        Addressing::Dtmf,
        &[
            ("out", &[1], Hunt::Descending),
            ("back", &[2], Hunt::Ascending),
        ],
    )
}

fn media() -> LocalMedia {
    LocalMedia {
        address: None,
        codecs: vec![AudioCodec::Pcma],
        telephone_event: false,
        ptime_ms: 20,
    }
}

impl Rig {
    fn step(&mut self) {
        let now = Instant::now();
        self.p.handle_timeout(now);
        while let Some(e) = self.p.poll_event() {
            self.log.push(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    fn run_until(&mut self, secs: u64, what: &str, done: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; events {:?}",
                self.log
            );
            self.step();
        }
    }

    fn command(&mut self, leg: LegId, c: LegCommand) {
        self.p.handle_command(Instant::now(), leg, c);
    }

    fn originate(&mut self, group: &str, number: &str) -> LegId {
        let leg = self.ids.next_id();
        self.command(
            leg,
            LegCommand::Originate {
                target: Target::Tdm {
                    group: group.into(),
                    number: number.into(),
                },
                caller: "5551000".into(),
                caller_name: None,
                media: media(),
                max_forwards: 70,
            },
        );
        leg
    }

    fn incoming(&self) -> Option<(LegId, String, String, u32, u32)> {
        self.log.iter().find_map(|(id, e)| match e {
            LegEvent::Incoming(c) => match c.source {
                LegSource::Channel { span, channel } => {
                    Some((*id, c.callee.clone(), c.caller.clone(), span, channel))
                }
                _ => None,
            },
            _ => None,
        })
    }

    fn take_incoming_port(&mut self) -> Box<dyn FramePort> {
        self.log
            .iter()
            .find_map(|(_, e)| match e {
                LegEvent::Incoming(c) => match &c.attachment {
                    MediaAttachment::Port(slot) => slot.take(),
                    _ => None,
                },
                _ => None,
            })
            .expect("an inbound TDM leg carries its port")
    }

    fn take_answered_port(&mut self, leg: LegId) -> Box<dyn FramePort> {
        self.log
            .iter()
            .find_map(|(id, e)| match e {
                LegEvent::Answered {
                    attachment: MediaAttachment::Port(slot),
                    ..
                } if *id == leg => slot.take(),
                _ => None,
            })
            .expect("an answered outbound TDM leg carries its port")
    }

    fn has(&self, leg: LegId, f: impl Fn(&LegEvent) -> bool) -> bool {
        self.log.iter().any(|(id, e)| *id == leg && f(e))
    }

    fn end_cause(&self, leg: LegId) -> Option<(bool, u8)> {
        self.log.iter().find_map(|(id, e)| match e {
            LegEvent::HungUp { cause } if *id == leg => Some((true, cause.q850)),
            LegEvent::Failed { cause } if *id == leg => Some((false, cause.q850)),
            _ => None,
        })
    }

    fn all_clear(&mut self) {
        self.run_until(15, "no legs, no busy channel", |r| {
            r.p.live_legs() == 0 && r.p.busy_channels() == 0
        });
    }
}

fn tone(freq: f64, frames: usize) -> Vec<Frame> {
    let mut phase = 0.0f64;
    (0..frames)
        .map(|_| {
            core::array::from_fn(|_| {
                phase = (phase + freq / 8000.0).fract();
                (8000.0 * (phase * std::f64::consts::TAU).sin()) as i16
            })
        })
        .collect()
}

fn share_at(x: &[i16], freq: f64) -> f64 {
    let (mut re, mut im, mut total) = (0.0, 0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        let a = std::f64::consts::TAU * freq * n as f64 / 8000.0;
        re += f64::from(s) * a.cos();
        im -= f64::from(s) * a.sin();
        total += f64::from(s) * f64::from(s);
    }
    if total == 0.0 {
        0.0
    } else {
        2.0 * (re * re + im * im) / x.len() as f64 / total
    }
}

/// 0.5 s of `freq` into `tx`, collected from `rx`; the tone must dominate what arrives.
fn audio(r: &mut Rig, tx: &mut dyn FramePort, rx: &mut dyn FramePort, freq: f64) {
    while rx.pop_received().is_some() {}
    let frames = tone(freq, 25);
    let mut got = Vec::new();
    let start = Instant::now();
    let mut next = 0;
    while start.elapsed() < Duration::from_millis(700) {
        // Feed at the line rate.
        let due = (start.elapsed().as_millis() / 20) as usize + 2;
        while next < frames.len() && next < due {
            tx.push_to_send(&frames[next]);
            next += 1;
        }
        while let Some(f) = rx.pop_received() {
            got.extend_from_slice(&f);
        }
        r.step();
    }
    // Judged per 20 ms frame: a frame lost to scheduling on this shared machine breaks the
    // phase across frames, not the tone within one.
    let loud: Vec<f64> = got
        .chunks_exact(160)
        .filter(|f| f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 160.0 > 1.0e5)
        .map(|f| share_at(f, freq))
        .collect();
    let good = loud.iter().filter(|&&s| s > 0.8).count();
    assert!(
        good >= 12 && good * 10 >= loud.len() * 8,
        "{freq} Hz: {good} of {} loud frames carry the tone ({} frames received)",
        loud.len(),
        got.len() / 160
    );
}

#[test]
fn a_pri_call_from_span_1_arrives_on_span_2_with_audio_and_clears_both_ways() {
    let mut r = pri();
    for caller_clears in [true, false] {
        r.log.clear();
        let out = r.originate("out", "2001");
        r.run_until(3, "SETUP arrives on span 2", |r| r.incoming().is_some());
        let (inb, callee, caller, span, channel) = r.incoming().unwrap();
        assert_eq!(
            (callee.as_str(), caller.as_str(), span),
            ("2001", "5551000", 2)
        );
        assert_eq!(channel, 31, "span group 'out' hunts descending");
        let mut in_port = r.take_incoming_port();
        // Early media: PROGRESS with in-band information -> progress upstream, carrying the
        // channel's audio; ringing after it: ALERTING.
        r.command(
            inb,
            LegCommand::Ring {
                early_media: Some(media()),
            },
        );
        r.run_until(3, "progress", |r| {
            r.has(out, |e| {
                matches!(
                    e,
                    LegEvent::Progress {
                        media: None,
                        attachment: MediaAttachment::Port(_)
                    }
                )
            })
        });
        assert!(!r.has(out, |e| *e == LegEvent::Alerting));
        r.command(inb, LegCommand::Ring { early_media: None });
        r.run_until(3, "alerting", |r| r.has(out, |e| *e == LegEvent::Alerting));
        r.command(inb, LegCommand::Answer { media: media() });
        r.run_until(3, "answered", |r| {
            r.has(out, |e| matches!(e, LegEvent::Answered { .. }))
        });
        let mut out_port = r.take_answered_port(out);
        audio(&mut r, out_port.as_mut(), in_port.as_mut(), 1004.0);
        audio(&mut r, in_port.as_mut(), out_port.as_mut(), 697.0);
        let status = r.p.status();
        assert_eq!(
            status.spans[0]
                .channels
                .iter()
                .filter(|c| c.state == "busy")
                .count(),
            1
        );
        assert_eq!(status.spans[0].dchannel.as_ref().unwrap().link, "up");
        let (clearer, other) = if caller_clears {
            (out, inb)
        } else {
            (inb, out)
        };
        r.command(
            clearer,
            LegCommand::HangUp {
                cause: EndCause::q850(16, "bye"),
            },
        );
        r.run_until(3, "the other leg hears the clear", |r| {
            r.end_cause(other).is_some()
        });
        assert_eq!(r.end_cause(other), Some((true, 16)));
        // The media plane releases both legs: the ports go home.
        drop(in_port);
        drop(out_port);
        r.all_clear();
    }
}

#[test]
fn a_busy_callee_and_a_full_group_give_their_causes() {
    let mut r = pri();
    let out = r.originate("out", "17");
    r.run_until(3, "incoming", |r| r.incoming().is_some());
    let (inb, ..) = r.incoming().unwrap();
    r.command(
        inb,
        LegCommand::Reject {
            cause: EndCause::q850(17, "busy"),
        },
    );
    r.run_until(3, "rejected", |r| r.end_cause(out).is_some());
    assert_eq!(r.end_cause(out), Some((false, 17)));
    r.log.clear();
    r.all_clear();
    // 30 calls fill the E1; the 31st fails with 34 (no circuit available).
    let legs: Vec<LegId> = (0..30)
        .map(|i| r.originate("out", &format!("{i}")))
        .collect();
    let extra = r.originate("out", "x");
    match r.p.poll_event() {
        Some((id, LegEvent::Failed { cause })) => assert_eq!((id, cause.q850), (extra, 34)),
        other => panic!("31st call: {other:?}"),
    }
    r.run_until(5, "thirty incoming", |r| {
        r.log
            .iter()
            .filter(|e| matches!(e.1, LegEvent::Incoming(_)))
            .count()
            == 30
    });
    for l in legs {
        r.command(
            l,
            LegCommand::HangUp {
                cause: EndCause::normal("done"),
            },
        );
    }
    r.run_until(5, "thirty cleared", |r| {
        r.log
            .iter()
            .filter(|e| matches!(e.1, LegEvent::HungUp { .. } | LegEvent::Failed { .. }))
            .count()
            >= 30
    });
    // The inbound legs' ports were never taken by a plane: dropping the events returns them.
    r.log.clear();
    r.all_clear();
}

#[test]
fn a_span_alarm_clears_with_38_refuses_new_calls_and_recovers() {
    let mut r = pri();
    let out = r.originate("out", "1");
    r.run_until(3, "incoming", |r| r.incoming().is_some());
    let (inb, ..) = r.incoming().unwrap();
    r.command(inb, LegCommand::Answer { media: media() });
    r.run_until(3, "answered", |r| {
        r.has(out, |e| matches!(e, LegEvent::Answered { .. }))
    });
    r.sim.control("alarm 2 RED").unwrap();
    r.run_until(3, "both legs cleared", |r| {
        r.end_cause(out).is_some() && r.end_cause(inb).is_some()
    });
    assert_eq!(r.end_cause(out), Some((true, 38)));
    assert_eq!(r.end_cause(inb), Some((true, 38)));
    let status = r.p.status();
    assert!(status.spans[1].alarms.contains("RED"), "{status:?}");
    assert!(status.spans[0].alarms.contains("YELLOW"), "{status:?}");
    assert!(
        status
            .spans
            .iter()
            .all(|s| s.channels.iter().all(|c| c.state == "blocked"))
    );
    let refused = r.originate("out", "2");
    r.step();
    assert_eq!(r.end_cause(refused), Some((false, 38)));
    r.sim.control("clear 2").unwrap();
    r.log.clear();
    r.run_until(10, "spans ready again", |r| r.p.pri_ready());
    r.all_clear();
    let again = r.originate("out", "3");
    r.run_until(3, "calls again", |r| r.incoming().is_some());
    r.command(
        again,
        LegCommand::HangUp {
            cause: EndCause::normal("done"),
        },
    );
    r.log.clear();
    r.all_clear();
}

fn cas_call(r: &mut Rig, group: &str, number: &str, expect_called: &str, limit_s: u64) {
    r.log.clear();
    let out = r.originate(group, number);
    r.run_until(limit_s, "address delivered", |r| r.incoming().is_some());
    let (inb, callee, _, span, _) = r.incoming().unwrap();
    assert_eq!(callee, expect_called);
    let mut in_port = r.take_incoming_port();
    r.command(inb, LegCommand::Answer { media: media() });
    r.run_until(3, "answer supervision", |r| {
        r.has(out, |e| matches!(e, LegEvent::Answered { .. }))
    });
    let mut out_port = r.take_answered_port(out);
    audio(r, out_port.as_mut(), in_port.as_mut(), 1004.0);
    audio(r, in_port.as_mut(), out_port.as_mut(), 440.0);
    r.command(
        out,
        LegCommand::HangUp {
            cause: EndCause::normal("done"),
        },
    );
    r.run_until(4, "clear forward", |r| r.end_cause(inb).is_some());
    assert_eq!(r.end_cause(inb), Some((true, 16)));
    let _ = span;
    drop((in_port, out_port));
    r.all_clear();
}

#[test]
fn em_wink_start_with_mf_and_immediate_start_with_dtmf_through_the_provider() {
    let groups: &[(&str, &[u32], Hunt)] =
        &[("a", &[1], Hunt::Ascending), ("b", &[2], Hunt::RoundRobin)];
    let mut r = rig(
        Signalling::EmWink,
        Signalling::EmWink,
        Addressing::Mf,
        groups,
    );
    cas_call(&mut r, "a", "4085551212", "4085551212", 5);
    cas_call(&mut r, "b", "911", "911", 5);
    drop(r);
    let mut r = rig(
        Signalling::EmImmediate,
        Signalling::EmImmediate,
        Addressing::Dtmf,
        groups,
    );
    cas_call(&mut r, "a", "2001#", "2001", 5);
}

#[test]
fn an_fxo_port_rings_an_fxs_port_through_the_provider() {
    let groups: &[(&str, &[u32], Hunt)] = &[("phones", &[1], Hunt::Ascending)];
    let mut r = rig(
        Signalling::FxoKs,
        Signalling::FxsKs,
        Addressing::Dtmf,
        groups,
    );
    cas_call(&mut r, "phones", "", "", 3);
}

#[test]
fn hunting_goes_round_robin_and_skips_busy_channels() {
    let mut r = rig(
        Signalling::PriNet,
        Signalling::PriCpe,
        Addressing::Dtmf,
        &[
            ("rr", &[1], Hunt::RoundRobin),
            ("asc", &[1], Hunt::Ascending),
        ],
    );
    let mut chans = Vec::new();
    let mut legs = Vec::new();
    for i in 0..3 {
        r.log.clear();
        let l = r.originate("rr", &format!("{i}"));
        legs.push(l);
        r.run_until(3, "incoming", |r| r.incoming().is_some());
        chans.push(r.incoming().unwrap().4);
    }
    assert_eq!(chans, vec![1, 2, 3], "round robin from the first channel");
    r.log.clear();
    let l = r.originate("asc", "x");
    legs.push(l);
    r.run_until(3, "incoming", |r| r.incoming().is_some());
    assert_eq!(
        r.incoming().unwrap().4,
        4,
        "ascending skips the busy channels 1-3"
    );
    for l in legs {
        r.command(
            l,
            LegCommand::HangUp {
                cause: EndCause::normal("done"),
            },
        );
    }
    r.log.clear();
    r.all_clear();
}

#[test]
fn a_pri_call_carries_the_calling_name_and_hold_resume_travel_as_notify() {
    let mut r = pri();
    let out = r.ids.next_id();
    r.command(
        out,
        LegCommand::Originate {
            target: Target::Tdm {
                group: "out".into(),
                number: "2002".into(),
            },
            caller: "5551000".into(),
            caller_name: Some("Alice Example".into()),
            media: media(),
            max_forwards: 70,
        },
    );
    r.run_until(3, "SETUP arrives on span 2", |r| r.incoming().is_some());
    let inb = r.incoming().unwrap().0;
    // The calling name went out in the SETUP's display element and came back as the name.
    let name = r.log.iter().find_map(|(_, e)| match e {
        LegEvent::Incoming(c) => Some(c.caller_name.clone()),
        _ => None,
    });
    assert_eq!(name, Some(Some("Alice Example".to_string())));
    r.command(inb, LegCommand::Answer { media: media() });
    r.run_until(3, "answered", |r| {
        r.has(out, |e| matches!(e, LegEvent::Answered { .. }))
    });
    // Let span 2 see CONNECT ACKNOWLEDGE (its call active) before it notifies.
    for _ in 0..20 {
        r.step();
    }
    // Span 2's party holds: NOTIFY user suspended → span 1's leg reports Hold; and resume.
    r.command(inb, LegCommand::Hold);
    r.run_until(3, "hold on span 1", |r| {
        r.has(out, |e| *e == LegEvent::Hold)
    });
    r.command(inb, LegCommand::Resume);
    r.run_until(3, "resume on span 1", |r| {
        r.has(out, |e| *e == LegEvent::Resume)
    });
    // And the other way.
    r.command(out, LegCommand::Hold);
    r.run_until(3, "hold on span 2", |r| {
        r.has(inb, |e| *e == LegEvent::Hold)
    });
    r.command(out, LegCommand::Resume);
    r.run_until(3, "resume on span 2", |r| {
        r.has(inb, |e| *e == LegEvent::Resume)
    });
    assert_eq!(r.p.notifications_ignored(), 0);
    let holds = r.log.iter().filter(|(_, e)| *e == LegEvent::Hold).count();
    assert_eq!(holds, 2, "each hold reported once: {:?}", r.log);
    r.command(
        out,
        LegCommand::HangUp {
            cause: EndCause::normal("done"),
        },
    );
    r.run_until(3, "span 2 hears the hang-up", |r| {
        r.end_cause(inb).is_some()
    });
    // The plane drops both legs' ports: the channels' audio goes home.
    drop(r.take_incoming_port());
    drop(r.take_answered_port(out));
    r.all_clear();
}

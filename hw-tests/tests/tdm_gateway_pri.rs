//! The gateway's TDM provider on the PRI loopback over real DAHDI syscalls (dahdi-sim's E1
//! pair as `dahdi_cfg` configured it: span 1 network side on its hardhdlc D-channel, span 2 user
//! side on its dchan): calls placed through the engine's leg interface on span group "out"
//! (span 1) arrive as incoming legs on span 2 with the dialled and calling numbers and the
//! hunted B-channel; ringing with early media, answer, audio both ways through the ports the
//! legs hand to the media plane, clearing from each side with its Q.850 cause; two calls at
//! once on two B-channels, one refused busy (17) after alerting, one abandoned before answer,
//! each channel free once its call ended and the plane gave its port back; then a span
//! alarm (injected RED on span 2; span 1 sees YELLOW) clears the call with cause 38 on both
//! legs, new calls are refused with 38, and after recovery (layer 2 back, RESTART) calls work
//! again. After each call: no leg, no busy channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::calls::leg::{
    AudioCodec, EndCause, FramePort, LegCommand, LegEvent, LegId, LegIds, LegProvider, LegSource,
    LocalMedia, MediaAttachment, Target,
};
use gateway::config::{Hunt, SpanGroupConfig};
use gateway::tdm::{TdmConfig, TdmProvider, config::TdmBackend};
use hw_tests::{configure_spans, dahdi_root, sim_command, sim_control};
use tdm_driver::DeviceRoot;

type Frame = [i16; 160];

struct Rig {
    p: TdmProvider<DeviceRoot>,
    ids: LegIds,
    log: Vec<(LegId, LegEvent)>,
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
        self.p.handle_timeout(Instant::now());
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

    fn originate(&mut self, number: &str) -> LegId {
        let leg = self.ids.next_id();
        self.command(
            leg,
            LegCommand::Originate {
                target: Target::Tdm {
                    group: "out".into(),
                    number: number.into(),
                },
                caller: "3025550100".into(),
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

    fn incomings(&self) -> Vec<(LegId, String, u32)> {
        self.log
            .iter()
            .filter_map(|(id, e)| match e {
                LegEvent::Incoming(c) => match c.source {
                    LegSource::Channel { channel, .. } => Some((*id, c.callee.clone(), channel)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn port_of(&self, leg: LegId) -> Box<dyn FramePort> {
        self.log
            .iter()
            .find_map(|(id, e)| match e {
                LegEvent::Incoming(c) if *id == leg => match &c.attachment {
                    MediaAttachment::Port(slot) => slot.take(),
                    _ => None,
                },
                LegEvent::Answered {
                    attachment: MediaAttachment::Port(slot),
                    ..
                } if *id == leg => slot.take(),
                _ => None,
            })
            .expect("the leg carries its port")
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
        self.log.clear();
        self.run_until(10, "no legs, no busy channel", |r| {
            r.p.live_legs() == 0 && r.p.busy_channels() == 0
        });
    }
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

/// 0.5 s of `freq` into `tx`; at least 12 received frames, and 80 % of the loud ones, must
/// carry it (judged per frame: a frame lost to scheduling breaks the phase, not the tone).
fn audio(r: &mut Rig, tx: &mut dyn FramePort, rx: &mut dyn FramePort, freq: f64) {
    while rx.pop_received().is_some() {}
    let mut phase = 0.0f64;
    let frames: Vec<Frame> = (0..25)
        .map(|_| {
            core::array::from_fn(|_| {
                phase = (phase + freq / 8000.0).fract();
                (8000.0 * (phase * std::f64::consts::TAU).sin()) as i16
            })
        })
        .collect();
    let start = Instant::now();
    let (mut next, mut got) = (0, Vec::new());
    while start.elapsed() < Duration::from_millis(800) {
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
    let loud: Vec<f64> = got
        .chunks_exact(160)
        .filter(|f| f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 160.0 > 1.0e5)
        .map(|f| share_at(f, freq))
        .collect();
    let good = loud.iter().filter(|&&s| s > 0.8).count();
    assert!(
        good >= 12 && good * 10 >= loud.len() * 8,
        "{freq} Hz: {good} of {} loud frames carry it",
        loud.len()
    );
}

#[test]
fn pri_loopback_through_the_gateways_tdm_provider_over_dahdi() {
    configure_spans().expect("dahdi_cfg must succeed");
    let mut cfg = TdmConfig::sim_pri_pair();
    cfg.backend = TdmBackend::Dahdi;
    cfg.root = dahdi_root().display().to_string();
    // SYSTEM_CONF puts span 2's D-channel on its position 16 too (channel 47).
    let groups = [SpanGroupConfig {
        name: "out".into(),
        spans: vec![1],
        hunt: Hunt::Ascending,
    }];
    let ids = LegIds::new();
    let backend = Arc::new(DeviceRoot::new(dahdi_root()));
    let p = TdmProvider::start(Instant::now(), backend, &cfg, &groups, ids.clone(), false)
        .expect("the provider opens both spans");
    let mut r = Rig {
        p,
        ids,
        log: Vec::new(),
    };
    r.run_until(10, "both D-channels up", |r| r.p.pri_ready());

    for caller_clears in [true, false] {
        r.log.clear();
        let out = r.originate("4021");
        r.run_until(3, "SETUP reaches span 2", |r| r.incoming().is_some());
        let (inb, callee, caller, span, channel) = r.incoming().unwrap();
        assert_eq!(
            (callee.as_str(), caller.as_str(), span, channel),
            ("4021", "3025550100", 2, 1)
        );
        let mut in_port = r.port_of(inb);
        r.command(
            inb,
            LegCommand::Ring {
                early_media: Some(media()),
            },
        );
        // Early media: PROGRESS with PI 8 reaches span 1 as progress carrying the
        // B-channel's port (the answer hands on the same one); ringing after it: ALERTING.
        r.run_until(3, "in-band progress", |r| {
            r.has(out, |e| {
                matches!(
                    e,
                    LegEvent::Progress {
                        attachment: MediaAttachment::Port(_),
                        ..
                    }
                )
            })
        });
        r.command(inb, LegCommand::Ring { early_media: None });
        r.run_until(3, "alerting", |r| r.has(out, |e| *e == LegEvent::Alerting));
        r.command(inb, LegCommand::Answer { media: media() });
        r.run_until(3, "answer", |r| {
            r.has(out, |e| matches!(e, LegEvent::Answered { .. }))
        });
        let mut out_port = r.port_of(out);
        audio(&mut r, out_port.as_mut(), in_port.as_mut(), 1004.0);
        audio(&mut r, in_port.as_mut(), out_port.as_mut(), 697.0);
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
        r.run_until(3, "the other side hears it", |r| {
            r.end_cause(other).is_some()
        });
        assert_eq!(r.end_cause(other), Some((true, 16)));
        drop((in_port, out_port));
        r.all_clear();
    }

    // Two calls at once hunt two B-channels; the far end refuses one busy (17) after it rang,
    // the caller abandons the other before answer.
    r.log.clear();
    let first = r.originate("5001");
    r.run_until(3, "first SETUP", |r| r.incomings().len() == 1);
    let second = r.originate("5002");
    r.run_until(3, "second SETUP", |r| r.incomings().len() == 2);
    let calls = r.incomings();
    assert_eq!(
        calls
            .iter()
            .map(|(_, n, ch)| (n.as_str(), *ch))
            .collect::<Vec<_>>(),
        [("5001", 1), ("5002", 2)]
    );
    let (in1, in2) = (calls[0].0, calls[1].0);
    // Held as the media plane holds them: a channel frees when its call ended and the plane
    // gave the port back.
    let (port1, port2) = (r.port_of(in1), r.port_of(in2));
    r.command(in2, LegCommand::Ring { early_media: None });
    r.run_until(3, "second alerting", |r| {
        r.has(second, |e| *e == LegEvent::Alerting)
    });
    r.command(
        in2,
        LegCommand::Reject {
            cause: EndCause::q850(17, "busy"),
        },
    );
    r.run_until(3, "busy reaches the caller", |r| {
        r.end_cause(second).is_some()
    });
    assert_eq!(r.end_cause(second), Some((false, 17)));
    drop(port2);
    // The refused call's channels (one per span) come free; the first call keeps its two.
    r.run_until(3, "the refused call's channels free", |r| {
        r.p.busy_channels() == 2
    });
    r.command(
        first,
        LegCommand::HangUp {
            cause: EndCause::q850(16, "abandoned"),
        },
    );
    r.run_until(3, "the far end sees the caller give up", |r| {
        r.end_cause(in1).is_some()
    });
    assert_eq!(r.end_cause(in1), Some((false, 16)));
    drop(port1);
    r.all_clear();

    let Some(control) = sim_control() else {
        return;
    };
    struct Clear(std::path::PathBuf);
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = sim_command(&self.0, "clear 2");
        }
    }
    let _clear = Clear(control.clone());
    let out = r.originate("77");
    r.run_until(3, "incoming", |r| r.incoming().is_some());
    let (inb, ..) = r.incoming().unwrap();
    r.command(inb, LegCommand::Answer { media: media() });
    r.run_until(3, "answered", |r| {
        r.has(out, |e| matches!(e, LegEvent::Answered { .. }))
    });
    sim_command(&control, "alarm 2 RED").unwrap();
    r.run_until(3, "cleared by the alarm", |r| {
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
    let refused = r.originate("78");
    r.step();
    assert_eq!(r.end_cause(refused), Some((false, 38)));
    sim_command(&control, "clear 2").unwrap();
    r.log.clear();
    r.run_until(10, "spans ready again", |r| r.p.pri_ready());
    r.all_clear();
    let again = r.originate("79");
    r.run_until(3, "calls again after recovery", |r| r.incoming().is_some());
    r.command(
        again,
        LegCommand::HangUp {
            cause: EndCause::normal("done"),
        },
    );
    r.all_clear();
}

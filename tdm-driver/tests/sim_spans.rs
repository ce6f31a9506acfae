//! The in-process simulated DAHDI (`tdm_driver::sim::SimSpans`) under the safe API, on virtual
//! time: configuration, DAHDI's open rules, the loopback pair, hook signalling, alarms, slips,
//! timers, T1 layouts — and the span media thread running on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use codecs::g711::Law as G711;
use ringbuf::traits::{Consumer, Producer};
use tdm_driver::config::{ApplyOptions, SystemConf, apply};
use tdm_driver::sim::{ClockMode, SimSpans};
use tdm_driver::span::{ChannelSpec, SpanMedia};
use tdm_driver::{Channel, ChannelConfig, Ctl, Event, Hook, Law, SigType, TdmError, Timer};

const SYSTEM_CONF: &str = "span=1,1,0,ccs,hdb3,crc4\nspan=2,0,0,ccs,hdb3,crc4\nbchan=1-15,17-31\nhardhdlc=16\nbchan=32-46,48-62\nhardhdlc=47\n";

fn configured(mode: ClockMode) -> Arc<SimSpans> {
    let sim = Arc::new(SimSpans::new(mode));
    let ctl = Ctl::open(sim.clone()).unwrap();
    let conf = SystemConf::parse("system.conf", SYSTEM_CONF).unwrap();
    apply(&ctl, &conf, ApplyOptions::default()).unwrap();
    sim
}

#[test]
fn two_e1_spans_and_dahdis_open_rules() {
    let sim = Arc::new(SimSpans::new(ClockMode::Manual));
    let ctl = Ctl::open(sim.clone()).unwrap();
    let spans = ctl.spans().unwrap();
    assert_eq!(spans.len(), 2);
    assert!(
        spans
            .iter()
            .all(|s| s.total_channels == 31 && s.span_type == "E1")
    );
    // Unconfigured: ENXIO, as a typed error.
    assert!(matches!(
        Channel::open_span_channel(sim.clone(), 1, 1),
        Err(TdmError::Unconfigured { .. })
    ));
    let conf = SystemConf::parse("system.conf", SYSTEM_CONF).unwrap();
    let report = apply(&ctl, &conf, ApplyOptions::default()).unwrap();
    assert_eq!(report.spans_started, vec![1, 2]);
    let a = Channel::open_span_channel(sim.clone(), 1, 1).unwrap();
    assert!(matches!(
        Channel::open_span_channel(sim.clone(), 1, 1),
        Err(TdmError::Busy { .. })
    ));
    assert!(matches!(
        Channel::open(sim.clone(), 1),
        Err(TdmError::Busy { .. })
    ));
    drop(a);
    Channel::open(sim.clone(), 1).unwrap();
    assert_eq!(ctl.channel_params(16).unwrap().sigtype, SigType::HardHdlc);
}

#[test]
fn a_block_crosses_the_pair_bit_exact_on_virtual_time() {
    let sim = configured(ClockMode::Manual);
    let mut tx = Channel::open_span_channel_with(sim.clone(), 1, 7, true).unwrap();
    let mut rx = Channel::open_span_channel_with(sim.clone(), 2, 7, true).unwrap();
    tx.set_block_size(160).unwrap();
    rx.set_block_size(160).unwrap();
    let block: Vec<u8> = (0..160u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut got = Vec::new();
    let mut buf = [0u8; 160];
    for _ in 0..10 {
        let _ = tx.write_block(&block);
        sim.advance(20);
        while let Ok(n) = rx.read_block(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    let start = got
        .windows(160)
        .position(|w| w == &block[..])
        .expect("block arrived");
    assert!(got[start..].starts_with(&block), "bit-exact");
    // Nothing moves without the clock: a non-blocking read with no block ready says so.
    assert!(rx.read_block(&mut buf).is_err());
}

#[test]
fn hook_changes_and_alarms_arrive_as_events() {
    let sim = configured(ClockMode::Manual);
    let ctl = Ctl::open(sim.clone()).unwrap();
    for chan in [5, 36] {
        ctl.chan_config(&ChannelConfig {
            chan,
            sigtype: SigType::EmE1,
            deflaw: Law::Default,
            master: chan,
            idlebits: 0,
            netdev_name: String::new(),
        })
        .unwrap();
    }
    let a = Channel::open_span_channel_with(sim.clone(), 1, 5, true).unwrap();
    let b = Channel::open_span_channel_with(sim.clone(), 2, 5, true).unwrap();
    a.hook(Hook::OffHook).unwrap();
    // DAHDI's E&M receiver calls an off-hook a seizure once it outlasts 250 ms (a wink).
    sim.advance(200);
    assert_eq!(b.get_event().unwrap(), None);
    assert!(b.params().unwrap().rx_off_hook);
    sim.advance(100);
    assert_eq!(b.get_event().unwrap(), Some(Event::RingOffHook));
    a.hook(Hook::OnHook).unwrap();
    sim.advance(50);
    assert_eq!(b.get_event().unwrap(), Some(Event::OnHook));

    sim.control("alarm 1 RED").unwrap();
    sim.advance(5);
    assert!(
        ctl.span_stat(1)
            .unwrap()
            .alarms
            .contains(tdm_driver::abi::DAHDI_ALARM_RED)
    );
    // The far end receives the remote alarm indication: YELLOW, and an ALARM event too.
    assert_eq!(
        ctl.span_stat(2).unwrap().alarms,
        tdm_driver::Alarms(tdm_driver::abi::DAHDI_ALARM_YELLOW as u32)
    );
    assert_eq!(b.get_event().unwrap(), Some(Event::Alarm));
    let mut buf = [0u8; 1024];
    assert!(matches!(
        a.read_block(&mut buf),
        Err(TdmError::EventPending { .. })
    ));
    assert_eq!(a.get_event().unwrap(), Some(Event::Alarm));
    sim.control("clear 1").unwrap();
    sim.advance(5);
    assert_eq!(a.get_event().unwrap(), Some(Event::NoAlarm));
    assert_eq!(b.get_event().unwrap(), Some(Event::NoAlarm));
    assert!(ctl.span_stat(1).unwrap().alarms.is_clear());
    assert!(ctl.span_stat(2).unwrap().alarms.is_clear());

    sim.control("slip 2 3").unwrap();
    assert!(sim.status().contains("slip"), "{}", sim.status());
    assert!(sim.control("alarm 9 RED").is_err(), "unknown span refused");
}

#[test]
fn a_timer_expires_on_virtual_time() {
    let sim = configured(ClockMode::Manual);
    let timer = Timer::open(sim.clone()).unwrap();
    timer.configure(80).unwrap(); // 10 ms
    sim.advance(9);
    assert_eq!(timer.get_event().unwrap(), None);
    sim.advance(1);
    assert_eq!(timer.get_event().unwrap(), Some(Event::TimerExpired));
}

#[test]
fn t1_spans_from_a_config() {
    let sim = SimSpans::from_toml(
        "crossconnect = [[1, 2]]\n[[span]]\ntype = \"T1\"\n[[span]]\ntype = \"T1\"\n",
        ClockMode::Manual,
    )
    .unwrap();
    assert_eq!(sim.layout(), &[(1, 1, 24), (2, 25, 24)]);
    assert!(SimSpans::from_toml("nonsense = 1", ClockMode::Manual).is_err());
}

#[test]
fn the_span_thread_carries_audio_across_the_simulated_pair() {
    let sim = configured(ClockMode::Thread);
    let specs = |span| -> Vec<ChannelSpec> {
        (1..=31)
            .filter(|&p| p != 16)
            .map(|position| ChannelSpec {
                span,
                position,
                law: G711::Alaw,
            })
            .collect()
    };
    let (m1, mut p1) = SpanMedia::open(sim.clone(), 1, &specs(1)).unwrap();
    let (m2, mut p2) = SpanMedia::open(sim.clone(), 2, &specs(2)).unwrap();
    let (t1, t2) = (m1.spawn().unwrap(), m2.spawn().unwrap());
    let frame: [i16; 160] = core::array::from_fn(|i| ((i as f64 * 0.4).sin() * 6000.0) as i16);
    let mut seen = vec![0usize; 30];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.iter().any(|&n| n < 20) && std::time::Instant::now() < deadline {
        for p in p1.iter_mut() {
            let _ = p.to_line.try_push(frame);
        }
        for (k, p) in p2.iter_mut().enumerate() {
            while let Some(f) = p.from_line.try_pop() {
                if f.iter().any(|&s| s.abs() > 1000) {
                    seen[k] += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen.iter().all(|&n| n >= 20),
        "frames with audio per channel: {seen:?}"
    );
    t1.stop().unwrap();
    t2.stop().unwrap();
    // Everything released: all channels open again.
    for span in 1..=2 {
        for pos in (1..=31).filter(|&p| p != 16) {
            Channel::open_span_channel(sim.clone(), span, pos).unwrap();
        }
    }
}

#[test]
fn an_fxo_port_rings_an_fxs_port_which_answers_and_hangs_up() {
    // Ringing needs a loaded tone zone (its ring cadence), as in DAHDI: the preconfigured set
    // is what `dahdi_cfg` with `loadzone=` leaves behind.
    let sim = Arc::new(SimSpans::preconfigured(ClockMode::Manual));
    let ctl = Ctl::open(sim.clone()).unwrap();
    // In DAHDI's naming the signalling type is what the channel *speaks*: position 6 of span 1
    // uses FXO signalling (it is the office end: it rings a station and sees its loop), position
    // 6 of span 2 FXS signalling (the station end: it sees ringing and closes the loop).
    for (chan, sigtype) in [(6, SigType::FxoLs), (37, SigType::FxsLs)] {
        ctl.chan_config(&ChannelConfig {
            chan,
            sigtype,
            deflaw: Law::Default,
            master: chan,
            idlebits: 0,
            netdev_name: String::new(),
        })
        .unwrap();
    }
    let fxo = Channel::open_span_channel_with(sim.clone(), 1, 6, true).unwrap();
    let fxs = Channel::open_span_channel_with(sim.clone(), 2, 6, true).unwrap();
    // Seizure by ringing: the station side sees the ring begin.
    fxo.set_cadence(&[500, 1000]).unwrap();
    fxo.hook(Hook::Ring).unwrap();
    sim.advance(20);
    assert_eq!(fxs.get_event().unwrap(), Some(Event::RingBegin));
    // Answer supervision: the station closes the loop; the office end sees it off hook.
    fxs.hook(Hook::OffHook).unwrap();
    sim.advance(20);
    let mut seen = Vec::new();
    while let Ok(Some(e)) = fxo.get_event() {
        seen.push(e);
    }
    assert_eq!(seen, vec![Event::RingOffHook], "office events");
    fxo.hook(Hook::OffHook).unwrap();
    // Disconnect supervision: the station hangs up; after DAHDI's 1250 ms flash window the
    // office end reports it on hook.
    sim.advance(700);
    fxs.hook(Hook::OnHook).unwrap();
    sim.advance(1200);
    assert_eq!(
        fxo.get_event().unwrap(),
        None,
        "not before the flash window"
    );
    sim.advance(100);
    assert_eq!(fxo.get_event().unwrap(), Some(Event::OnHook));
}

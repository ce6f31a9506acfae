//! Signalling across the simulated cable and the clock-driven devices: hook changes arrive as
//! events at the far end, injected alarms show in SPANSTAT, GET_PARAMS and as ALARM/NOALARM
//! events, timers expire on time, and pseudo channels are paced by the master clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::{Dev, field_i32, params, spaninfo};
use hw_tests::{chan_node, configure_spans, node, sim_command, sim_control};
use std::time::{Duration, Instant};

const ELAST: i32 = 500;
const SIG_CLEAR: i32 = 0x80;
const SIG_EM_E1: i32 = 0x20000;
const EVENT_ONHOOK: i32 = 1;
const EVENT_RINGOFFHOOK: i32 = 2;
const EVENT_ALARM: i32 = 4;
const EVENT_NOALARM: i32 = 5;
const EVENT_TIMER_EXPIRED: i32 = 15;
const EVENT_DIALCOMPLETE: i32 = 9;
const DIAL_OP_APPEND: i32 = 1;
const ALARM_RED: i32 = 8;
const ALARM_YELLOW: i32 = 4;
const ALARM_LOS: i32 = 256;
const IOMUX_SIGEVENT: i32 = 8;
const IOMUX_READ: i32 = 1;

/// Alarms touch every channel of a span: run these tests one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Clears injected alarms even when an assertion fails.
struct ClearAlarms(std::path::PathBuf);
impl Drop for ClearAlarms {
    fn drop(&mut self) {
        let _ = sim_command(&self.0, "clear 1");
        let _ = sim_command(&self.0, "clear 2");
    }
}

#[test]
fn off_hook_on_one_span_rings_off_hook_on_the_other() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    {
        // As DAHDI: a clear channel has no hook.
        let clear = Dev::open(&chan_node(1, 5), false).unwrap();
        assert_eq!(
            clear.hook(1).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
    // E&M on E1 (hook carried in CAS bits) on both ends of position 5; clear again afterwards.
    struct Restore<'a>(&'a Dev);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = self.0.chanconfig(5, SIG_CLEAR);
            let _ = self.0.chanconfig(36, SIG_CLEAR);
        }
    }
    let _restore = Restore(&ctl);
    ctl.chanconfig(5, SIG_EM_E1).unwrap();
    ctl.chanconfig(36, SIG_EM_E1).unwrap();
    let a = Dev::open(&chan_node(1, 5), false).unwrap();
    let b = Dev::open(&chan_node(2, 5), false).unwrap();
    a.hook(1).unwrap();
    let revents = b.poll(libc::POLLPRI, 1000).unwrap();
    assert_ne!(revents & libc::POLLPRI, 0, "POLLPRI: an event is queued");
    let mut buf = [0u8; 1024];
    assert_eq!(b.read(&mut buf).unwrap_err().raw_os_error(), Some(ELAST));
    assert_eq!(
        b.write(&buf[..160]).unwrap_err().raw_os_error(),
        Some(ELAST)
    );
    assert_eq!(b.get_event().unwrap(), EVENT_RINGOFFHOOK);
    assert_eq!(b.get_event().unwrap(), 0);
    let p = ctl.params(36).unwrap(); // span 2 position 5
    assert_eq!(
        field_i32(&p, params::RXISOFFHOOK),
        1,
        "rxisoffhook of the far end"
    );
    a.hook(0).unwrap();
    assert_eq!(b.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(b.get_event().unwrap(), EVENT_ONHOOK);
    // Closing an off-hook channel hangs up.
    b.hook(1).unwrap();
    assert_eq!(a.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(a.get_event().unwrap(), EVENT_RINGOFFHOOK);
    drop(b);
    // Audio blocks keep arriving meanwhile; the on-hook crosses with the next tick's bits.
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.iomux(IOMUX_SIGEVENT | IOMUX_READ).unwrap() & IOMUX_SIGEVENT == 0 {
        let _ = a.read(&mut buf);
        assert!(
            Instant::now() < deadline,
            "no event after closing the far end"
        );
    }
    assert_eq!(a.get_event().unwrap(), EVENT_ONHOOK);
}

#[test]
fn injected_alarms_show_in_spanstat_params_and_as_events() {
    let Some(control) = sim_control() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let _guard = ClearAlarms(control.clone());
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    let a = Dev::open(&chan_node(1, 6), false).unwrap();
    let b = Dev::open(&chan_node(2, 6), false).unwrap();
    assert_eq!(field_i32(&ctl.spanstat(1).unwrap(), spaninfo::ALARMS), 0);

    sim_command(&control, "alarm 1 RED").unwrap();
    assert_eq!(
        field_i32(&ctl.spanstat(1).unwrap(), spaninfo::ALARMS),
        ALARM_RED
    );
    // Span 1 lost span 2's signal and sends it a remote alarm indication: span 2 is YELLOW.
    assert_eq!(
        field_i32(&ctl.spanstat(2).unwrap(), spaninfo::ALARMS),
        ALARM_YELLOW
    );
    assert_eq!(
        field_i32(&a.spanstat(0).unwrap(), spaninfo::ALARMS),
        ALARM_RED,
        "span of this fd"
    );
    assert_eq!(
        field_i32(&ctl.params(6).unwrap(), params::CHAN_ALARMS),
        ALARM_RED
    );
    assert_eq!(a.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(a.get_event().unwrap(), EVENT_ALARM);
    assert_eq!(b.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(
        b.get_event().unwrap(),
        EVENT_ALARM,
        "YELLOW is an alarm too"
    );

    // Both lose the signal: each is RED and sees the other's RAI. No new events: both
    // already are in alarm.
    sim_command(&control, "alarm 2 LOS").unwrap();
    assert_eq!(
        field_i32(&ctl.spanstat(2).unwrap(), spaninfo::ALARMS),
        ALARM_LOS | ALARM_RED | ALARM_YELLOW
    );
    assert_eq!(
        field_i32(&ctl.spanstat(1).unwrap(), spaninfo::ALARMS),
        ALARM_RED | ALARM_YELLOW
    );
    assert_eq!(b.poll(libc::POLLPRI, 50).unwrap() & libc::POLLPRI, 0);

    // Span 1 recovers its receive side: it still sees span 2's RAI (YELLOW); span 2 keeps its
    // own LOS but no longer gets an RAI.
    sim_command(&control, "clear 1").unwrap();
    assert_eq!(
        field_i32(&ctl.spanstat(1).unwrap(), spaninfo::ALARMS),
        ALARM_YELLOW
    );
    assert_eq!(
        field_i32(&ctl.spanstat(2).unwrap(), spaninfo::ALARMS),
        ALARM_LOS | ALARM_RED
    );
    assert_eq!(a.poll(libc::POLLPRI, 50).unwrap() & libc::POLLPRI, 0);
    sim_command(&control, "clear 2").unwrap();
    assert_eq!(field_i32(&ctl.spanstat(1).unwrap(), spaninfo::ALARMS), 0);
    assert_eq!(field_i32(&ctl.spanstat(2).unwrap(), spaninfo::ALARMS), 0);
    assert_eq!(a.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(a.get_event().unwrap(), EVENT_NOALARM);
    assert_eq!(b.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(b.get_event().unwrap(), EVENT_NOALARM);
    // A bad command is refused with EINVAL.
    let err = sim_command(&control, "alarm 1 PURPLE").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn a_timer_expires_every_period_with_pollpri() {
    let t = Dev::open(&node("timer"), false).unwrap();
    t.timer_config(80).unwrap(); // 80 samples = 10 ms
    let start = Instant::now();
    let mut expiries = 0;
    while expiries < 50 {
        let revents = t.poll(libc::POLLPRI, 1000).unwrap();
        assert_ne!(revents & libc::POLLPRI, 0, "timer expired within 1 s");
        assert_eq!(t.get_event().unwrap(), EVENT_TIMER_EXPIRED);
        t.timer_ack(1).unwrap();
        expiries += 1;
    }
    let took = start.elapsed();
    println!("timer: 50 expiries of 10 ms in {took:?}");
    assert!(
        took >= Duration::from_millis(490) && took <= Duration::from_millis(600),
        "50 × 10 ms took {took:?}"
    );
}

#[test]
fn a_pseudo_channel_is_paced_by_the_master_clock() {
    let p = Dev::open(&node("pseudo"), false).unwrap();
    p.set_blocksize(160).unwrap();
    let mut buf = [0u8; 1024];
    assert_eq!(p.read(&mut buf).unwrap(), 160);
    let start = Instant::now();
    for _ in 0..50 {
        assert_eq!(p.read(&mut buf).unwrap(), 160);
        assert!(buf[..160].iter().all(|&b| b == 0xff), "µ-law silence");
    }
    let took = start.elapsed();
    println!("pseudo: 50 × 160 B in {took:?}");
    assert!(
        took >= Duration::from_millis(985) && took <= Duration::from_millis(1030),
        "50 blocks of 20 ms took {took:?}"
    );
}

#[test]
fn dialling_completes_with_dialcomplete() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let a = Dev::open(&chan_node(1, 7), false).unwrap();
    let start = Instant::now();
    a.dial(DIAL_OP_APPEND, "T123").unwrap();
    assert!(a.dialing().unwrap(), "DAHDI_DIALING while digits go out");
    assert_eq!(a.iomux(IOMUX_SIGEVENT).unwrap(), IOMUX_SIGEVENT);
    assert_eq!(a.get_event().unwrap(), EVENT_DIALCOMPLETE);
    assert!(!a.dialing().unwrap());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "4 digits took {took:?}");
}

#[test]
fn a_pseudo_channel_monitors_what_a_channel_receives() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    // As dahdi_monitor does: a pseudo channel in DAHDI_CONF_MONITOR of channel 39 (span 2
    // position 8) hears what span 1 position 8 sends.
    let tx = Dev::open(&chan_node(1, 8), false).unwrap();
    let watched = Dev::open(&chan_node(2, 8), false).unwrap();
    let mon = Dev::open(&node("pseudo"), false).unwrap();
    mon.set_blocksize(160).unwrap();
    mon.set_conf(39, 1).unwrap();
    tx.set_blocksize(160).unwrap();
    let pattern = [0x5au8; 160];
    let mut heard = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    // The pseudo channel is µ-law; the E1 channel A-law: the monitor re-encodes.
    let want = codecs::g711::alaw_to_ulaw(0x5a);
    while !heard.windows(80).any(|w| w.iter().all(|&b| b == want)) {
        assert!(Instant::now() < deadline, "monitor never heard the pattern");
        tx.write(&pattern).unwrap();
        let n = mon.read(&mut buf).unwrap();
        heard.extend_from_slice(&buf[..n]);
    }
    drop(watched);
}

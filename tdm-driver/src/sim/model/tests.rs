//! Unit tests of the simulated core on virtual time (ticks called directly).

use super::*;
use crate::sim::wire::consts as c;

fn cfg(pre: bool) -> SimConfig {
    SimConfig {
        preconfigured: pre,
        ..SimConfig::default()
    }
}

fn int(v: i32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn ioctl_int(m: &mut Model, fh: Fh, cmd: u32, v: i32) -> IoctlResult {
    m.ioctl(fh, cmd, &int(v))
}

const SPECIFY: u32 = 0x4004_da26;
const SET_BLOCKSIZE: u32 = 0x4004_da01;
const GETEVENT: u32 = 0x8004_da08;
const HOOK: u32 = 0x4004_da07;
const SPANSTAT: u32 = 0xc13a_da0a;
const GET_PARAMS: u32 = 0xc088_da05;
const CHANCONFIG: u32 = 0x404c_da13;
const IOMUX: u32 = 0xc004_da09;

fn event(m: &mut Model, fh: Fh) -> i32 {
    match m.ioctl(fh, GETEVENT, &[]) {
        IoctlResult::Done(0, b) => wire::get_i32(&b, 0),
        other => panic!("GETEVENT: {other:?}"),
    }
}

#[test]
fn unconfigured_channel_is_enxio_and_double_open_is_ebusy() {
    let mut m = Model::new(&cfg(false));
    assert_eq!(m.open(Node::Chan(1)), Err(errno::ENXIO));
    let fh = m.open(Node::Channel).unwrap();
    assert_eq!(
        ioctl_int(&mut m, fh, SPECIFY, 1),
        IoctlResult::Err(errno::ENXIO)
    );
    assert_eq!(
        ioctl_int(&mut m, fh, SPECIFY, 999),
        IoctlResult::Err(errno::EINVAL)
    );
    // Anything but SPECIFY on an unbound `channel` fd is ENOSYS.
    assert_eq!(m.ioctl(fh, GETEVENT, &[]), IoctlResult::Err(errno::ENOSYS));

    let mut m = Model::new(&cfg(true));
    let a = m.open(Node::Chan(1)).unwrap();
    assert_eq!(m.open(Node::Chan(1)), Err(errno::EBUSY));
    let b = m.open(Node::Channel).unwrap();
    assert_eq!(
        ioctl_int(&mut m, b, SPECIFY, 1),
        IoctlResult::Err(errno::EBUSY)
    );
    m.release(a);
    assert_eq!(
        ioctl_int(&mut m, b, SPECIFY, 1),
        IoctlResult::Done(0, vec![])
    );
}

#[test]
fn audio_crosses_the_wire_one_block_per_read() {
    let mut m = Model::new(&cfg(true));
    let tx = m.open(Node::Chan(5)).unwrap();
    let rx = m.open(Node::Chan(36)).unwrap(); // span 2, position 5
    for fh in [tx, rx] {
        assert_eq!(
            ioctl_int(&mut m, fh, SET_BLOCKSIZE, 160),
            IoctlResult::Done(0, vec![])
        );
    }
    let block: Vec<u8> = (0..160u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(m.write(tx, &block), Ok(160));
    assert_eq!(m.write(tx, &block), Ok(160));
    assert_eq!(
        m.write(tx, &block),
        Err(errno::EAGAIN),
        "two tx buffers, both full"
    );
    assert_eq!(m.read(rx, 4096), Err(errno::EAGAIN));
    for _ in 0..20 {
        m.tick();
    }
    assert_eq!(m.read(rx, 4096), Ok(block.clone()), "exactly one block");
    assert_eq!(m.read(rx, 4096), Err(errno::EAGAIN));
    // A short read returns part of one block and drops the rest.
    for _ in 0..20 {
        m.tick();
    }
    assert_eq!(m.read(rx, 10), Ok(block[..10].to_vec()));
    // Idle after the writer stops: A-law silence on an E1.
    for _ in 0..20 {
        m.tick();
    }
    assert_eq!(m.read(rx, 4096), Ok(vec![0xd5; 160]));
}

#[test]
fn hook_reaches_the_far_end_as_events_and_blocks_io_with_elast() {
    let mut m = Model::new(&cfg(true));
    let ctl = m.open(Node::Ctl).unwrap();
    let clear = m.open(Node::Chan(3)).unwrap();
    assert_eq!(
        ioctl_int(&mut m, clear, HOOK, c::OFFHOOK),
        IoctlResult::Err(errno::EINVAL),
        "no hook on a clear channel"
    );
    // E&M on E1 (CAS-style hook signalling) on both ends of position 2.
    for chan in [2, 33] {
        let mut cc = vec![0u8; 76];
        wire::put_i32(&mut cc, 0, chan);
        wire::put_i32(&mut cc, 44, 0x20000);
        assert_eq!(m.ioctl(ctl, CHANCONFIG, &cc), IoctlResult::Done(0, vec![]));
    }
    let a = m.open(Node::Chan(2)).unwrap();
    let b = m.open(Node::Chan(33)).unwrap();
    assert_eq!(
        ioctl_int(&mut m, a, HOOK, c::OFFHOOK),
        IoctlResult::Done(0, vec![])
    );
    // As DAHDI's E&M receiver: an off-hook is a seizure only once it outlasts the receive-wink
    // time (250 ms); until then it could still be a wink.
    for _ in 0..249 {
        m.tick();
    }
    assert_eq!(
        m.poll(b) & libc::POLLPRI as u32,
        0,
        "no event before 250 ms"
    );
    m.tick();
    assert_eq!(m.poll(b) & libc::POLLPRI as u32, libc::POLLPRI as u32);
    assert_eq!(m.read(b, 1024), Err(errno::ELAST));
    assert_eq!(m.write(b, &[0; 8]), Err(errno::ELAST));
    assert_eq!(
        ioctl_int(&mut m, b, IOMUX, c::IOMUX_SIGEVENT),
        IoctlResult::Done(0, int(c::IOMUX_SIGEVENT))
    );
    assert_eq!(event(&mut m, b), c::EVENT_RINGOFFHOOK);
    assert_eq!(event(&mut m, b), 0);
    assert_eq!(
        ioctl_int(&mut m, b, IOMUX, c::IOMUX_SIGEVENT),
        IoctlResult::Block
    );
    // Closing an off-hook channel puts it on-hook at the far end (bits cross on the next tick).
    m.release(a);
    m.tick();
    assert_eq!(event(&mut m, b), c::EVENT_ONHOOK);
}

#[test]
fn hdlc_frames_carry_a_real_fcs_and_bad_ones_become_badfcs() {
    let mut m = Model::new(&cfg(true));
    let d1 = m.open(Node::Chan(16)).unwrap();
    let d2 = m.open(Node::Chan(47)).unwrap();
    let frame = [0x00, 0x01, 0x7f, 0xaa, 0xbb, 0, 0];
    assert_eq!(m.write(d1, &frame), Ok(7));
    assert_eq!(m.read(d2, 1024), Err(errno::EAGAIN));
    m.tick();
    let got = m.read(d2, 1024).unwrap();
    assert_eq!(&got[..5], &frame[..5]);
    assert!(fcs::is_good(&got), "delivered with its FCS bytes");

    m.control("corrupt 16").unwrap();
    assert_eq!(m.write(d1, &frame), Ok(7));
    m.tick();
    assert_eq!(m.read(d2, 1024), Err(errno::ELAST));
    assert_eq!(event(&mut m, d2), c::EVENT_BADFCS);
    assert_eq!(m.read(d2, 1024), Err(errno::EAGAIN), "bad frame dropped");
}

#[test]
fn alarms_show_in_spanstat_and_as_events_and_kill_rx_data() {
    let mut m = Model::new(&cfg(true));
    let ctl = m.open(Node::Ctl).unwrap();
    let b = m.open(Node::Chan(40)).unwrap();
    m.control("alarm 2 LOS").unwrap();
    let mut arg = vec![0u8; wire::SPANINFO_SIZE];
    wire::put_i32(&mut arg, 0, 2);
    let IoctlResult::Done(0, info) = m.ioctl(ctl, SPANSTAT, &arg) else {
        panic!("spanstat")
    };
    assert_eq!(
        wire::get_i32(&info, wire::spaninfo::ALARMS),
        c::ALARM_LOS | c::ALARM_RED
    );
    assert_eq!(event(&mut m, b), c::EVENT_ALARM);
    m.control("clear 2").unwrap();
    assert_eq!(event(&mut m, b), c::EVENT_NOALARM);
    assert!(m.control("alarm 9 RED").is_err());
    assert!(m.control("alarm 1 PURPLE").is_err());
    assert!(m.control("frobnicate").is_err());
}

#[test]
fn spanstat_and_params_reflect_configuration() {
    let mut m = Model::new(&cfg(false));
    let ctl = m.open(Node::Ctl).unwrap();
    let mut lc = vec![0u8; 36];
    wire::put_i32(&mut lc, 0, 1);
    wire::put_i32(&mut lc, 28, 0x700);
    wire::put_i32(&mut lc, 32, 1);
    assert_eq!(m.ioctl(ctl, 0x4024_da12, &lc), IoctlResult::Done(0, vec![]));
    let mut cc = vec![0u8; 76];
    wire::put_i32(&mut cc, 0, 16);
    wire::put_i32(&mut cc, 44, c::SIG_HDLCFCS as i32);
    assert_eq!(m.ioctl(ctl, CHANCONFIG, &cc), IoctlResult::Done(0, vec![]));
    wire::put_i32(&mut cc, 44, 0x7fff_0000);
    assert_eq!(
        m.ioctl(ctl, CHANCONFIG, &cc),
        IoctlResult::Err(errno::EINVAL)
    );
    let mut arg = vec![0u8; wire::PARAMS_SIZE];
    wire::put_i32(&mut arg, 0, 16);
    let IoctlResult::Done(0, p) = m.ioctl(ctl, GET_PARAMS, &arg) else {
        panic!("params")
    };
    assert_eq!(
        wire::get_i32(&p, wire::params::SIGTYPE),
        c::SIG_HDLCFCS as i32
    );
    assert_eq!(wire::get_i32(&p, wire::params::SPANNO), 1);
    assert_eq!(wire::get_i32(&p, wire::params::CHANPOS), 16);
    assert_eq!(wire::get_str(&p, wire::params::NAME, 40), "SIM/1/16");
    wire::put_i32(&mut arg, 0, 0);
    assert_eq!(
        m.ioctl(ctl, GET_PARAMS, &arg),
        IoctlResult::Err(errno::EINVAL)
    );
    let mut arg = vec![0u8; wire::SPANINFO_SIZE];
    wire::put_i32(&mut arg, 0, 1);
    let IoctlResult::Done(0, info) = m.ioctl(ctl, SPANSTAT, &arg) else {
        panic!("spanstat")
    };
    assert_eq!(wire::get_i32(&info, wire::spaninfo::LINECONFIG), 0x700);
    assert_eq!(wire::get_i32(&info, wire::spaninfo::NUMCHANS), 1);
    assert_eq!(wire::get_i32(&info, wire::spaninfo::TOTALCHANS), 31);
    assert_eq!(wire::get_str(&info, wire::spaninfo::SPANTYPE, 6), "E1");
    wire::put_i32(&mut arg, 0, 3);
    assert_eq!(
        m.ioctl(ctl, SPANSTAT, &arg),
        IoctlResult::Err(errno::EINVAL)
    );
}

#[test]
fn timers_trip_every_period_and_ack() {
    let mut m = Model::new(&cfg(false));
    let t = m.open(Node::Timer).unwrap();
    assert_eq!(
        ioctl_int(&mut m, t, 0x4004_da2f, 160),
        IoctlResult::Done(0, vec![])
    );
    for _ in 0..19 {
        m.tick();
    }
    assert_eq!(m.poll(t), 0);
    m.tick();
    assert_eq!(m.poll(t), libc::POLLPRI as u32);
    assert_eq!(event(&mut m, t), c::EVENT_TIMER_EXPIRED);
    assert_eq!(
        ioctl_int(&mut m, t, 0x4004_da30, 0),
        IoctlResult::Done(0, vec![])
    );
    assert_eq!(m.poll(t), 0);
    assert_eq!(m.ioctl(t, 0x0000_da34, &[]), IoctlResult::Done(0, vec![]));
    assert_eq!(event(&mut m, t), c::EVENT_TIMER_PING);
}

#[test]
fn pseudo_reads_one_default_block_per_128_ms() {
    let mut m = Model::new(&cfg(false));
    let p = m.open(Node::Pseudo).unwrap();
    for _ in 0..127 {
        m.tick();
    }
    assert_eq!(m.read(p, 8192), Err(errno::EAGAIN));
    m.tick();
    assert_eq!(m.read(p, 8192), Ok(vec![0xff; 1024]));
}

#[test]
fn slips_delete_a_frame_and_count() {
    let mut m = Model::new(&cfg(true));
    let rx = m.open(Node::Chan(33)).unwrap();
    ioctl_int(&mut m, rx, SET_BLOCKSIZE, 16);
    m.control("slip 2").unwrap();
    m.tick();
    m.tick();
    m.tick();
    // 7 + 8 bytes after the slip: one block of 16 needs a third tick.
    assert_eq!(m.read(rx, 100).map(|b| b.len()), Ok(16));
    assert!(m.status_text().contains("slips=1"));
    assert!(m.proc_text(2).unwrap().contains("Timing slips: 1"));
}

#[test]
fn linear_mode_converts_through_the_channel_law() {
    let mut m = Model::new(&cfg(true));
    let tx = m.open(Node::Chan(1)).unwrap();
    let rx = m.open(Node::Chan(32)).unwrap();
    for fh in [tx, rx] {
        ioctl_int(&mut m, fh, SET_BLOCKSIZE, 16);
        assert_eq!(
            ioctl_int(&mut m, fh, 0x4004_da28, 1),
            IoctlResult::Err(errno::EINVAL),
            "no linear mode on a clear channel out of audio mode"
        );
        ioctl_int(&mut m, fh, 0x4004_da20, 1); // AUDIOMODE
        assert_eq!(
            ioctl_int(&mut m, fh, 0x4004_da28, 1),
            IoctlResult::Done(0, vec![])
        );
    }
    let samples: Vec<u8> = (0..16i16).flat_map(|i| (i * 1000).to_ne_bytes()).collect();
    assert_eq!(m.write(tx, &samples), Ok(32));
    m.tick();
    m.tick();
    let got = m.read(rx, 4096).unwrap();
    assert_eq!(got.len(), 32);
    let first: Vec<i16> = got
        .chunks_exact(2)
        .map(|p| i16::from_ne_bytes([p[0], p[1]]))
        .collect();
    for (i, s) in first.iter().enumerate() {
        let want = i as i32 * 1000;
        assert!(
            (i32::from(*s) - want).abs() <= want / 16 + 16,
            "{i}: {s} vs {want}"
        );
    }
}

#[test]
fn ioctls_never_panic_on_any_argument() {
    let mut m = Model::new(&cfg(true));
    let fhs = [
        m.open(Node::Ctl).unwrap(),
        m.open(Node::Channel).unwrap(),
        m.open(Node::Pseudo).unwrap(),
        m.open(Node::Timer).unwrap(),
        m.open(Node::Chan(3)).unwrap(),
        m.open(Node::Chan(16)).unwrap(),
        9999,
    ];
    let mut seed = 0x1234_5678u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let cmds: Vec<u32> = super::wire::tests_all_numbers();
    for _ in 0..20_000 {
        let fh = fhs[rnd() as usize % fhs.len()];
        let cmd = if rnd() % 8 == 0 {
            rnd()
        } else {
            cmds[rnd() as usize % cmds.len()]
        };
        let len = rnd() as usize % 600;
        let mut input: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        // Edge values in the leading ints, where channel and span numbers live.
        for off in (0..len.min(16)).step_by(4) {
            let edge = [0i32, -1, 1, i32::MIN, i32::MAX, 0x4000_0000][rnd() as usize % 6];
            if rnd() % 2 == 0 {
                wire::put_i32(&mut input, off, edge);
            }
        }
        let _ = m.ioctl(fh, cmd, &input);
        let _ = m.write(fh, &input);
        let _ = m.read(fh, rnd());
        if rnd() % 64 == 0 {
            m.tick();
        }
    }
}

#[test]
fn gains_apply_only_with_audio_processing() {
    let mut m = Model::new(&cfg(true));
    let tx = m.open(Node::Chan(7)).unwrap();
    let rx = m.open(Node::Chan(38)).unwrap();
    ioctl_int(&mut m, rx, SET_BLOCKSIZE, 16);
    // txgain on the sender maps every byte to 0x42.
    let mut gains = vec![0u8; wire::GAINS_SIZE];
    for i in 0..256 {
        gains[4 + i] = i as u8;
        gains[4 + 256 + i] = 0x42;
    }
    assert_eq!(
        m.ioctl(tx, 0x4204_da10, &gains),
        IoctlResult::Done(0, vec![])
    );
    assert_eq!(m.write(tx, &[0x10; 16]), Ok(16));
    m.tick();
    m.tick();
    assert_eq!(
        m.read(rx, 100),
        Ok(vec![0x10; 16]),
        "clear channel: data untouched"
    );
    ioctl_int(&mut m, tx, 0x4004_da20, 1); // AUDIOMODE on
    assert_eq!(m.write(tx, &[0x10; 16]), Ok(16));
    m.tick();
    m.tick();
    assert_eq!(
        m.read(rx, 100),
        Ok(vec![0x42; 16]),
        "audio mode: txgain applied"
    );
    let IoctlResult::Done(0, back) = m.ioctl(tx, 0xc204_da10, &[0u8; wire::GAINS_SIZE]) else {
        panic!("getgains")
    };
    assert_eq!(&back[4..], &gains[4..]);
}

#[test]
fn a_frame_longer_than_the_receive_block_is_an_overrun() {
    let mut m = Model::new(&cfg(true));
    let d1 = m.open(Node::Chan(16)).unwrap();
    let d2 = m.open(Node::Chan(47)).unwrap();
    ioctl_int(&mut m, d2, SET_BLOCKSIZE, 32);
    assert_eq!(m.write(d1, &[0x55; 100]), Ok(100));
    for _ in 0..13 {
        m.tick();
    }
    assert_eq!(m.read(d2, 1024), Err(errno::ELAST));
    assert_eq!(event(&mut m, d2), c::EVENT_OVERRUN);
    assert_eq!(m.read(d2, 1024), Err(errno::EAGAIN));
}

#[test]
fn open_restores_dahdi_defaults() {
    let mut m = Model::new(&cfg(true));
    let fh = m.open(Node::Chan(9)).unwrap();
    ioctl_int(&mut m, fh, SET_BLOCKSIZE, 160);
    m.release(fh);
    let fh = m.open(Node::Chan(9)).unwrap();
    assert_eq!(
        m.ioctl(fh, 0x8004_da01, &[]),
        IoctlResult::Done(0, 1024i32.to_ne_bytes().to_vec())
    );
    let IoctlResult::Done(0, p) = m.ioctl(fh, GET_PARAMS, &[0u8; wire::PARAMS_SIZE]) else {
        panic!("params")
    };
    // prewinktime, winktime and flashtime at DAHDI's defaults.
    assert_eq!(wire::get_i32(&p, wire::params::TIMING_FIRST), 50);
    assert_eq!(wire::get_i32(&p, wire::params::TIMING_FIRST + 8), 150);
    assert_eq!(wire::get_i32(&p, wire::params::TIMING_FIRST + 12), 750);
}

/// Configures channels `chans` with signalling `sig` and opens them.
fn rbs_pair(m: &mut Model, sig: u32, a: usize, b: usize) -> (Fh, Fh) {
    let ctl = m.open(Node::Ctl).unwrap();
    for chan in [a, b] {
        let mut cc = vec![0u8; 76];
        wire::put_i32(&mut cc, 0, chan as i32);
        wire::put_i32(&mut cc, 44, sig as i32);
        assert_eq!(m.ioctl(ctl, CHANCONFIG, &cc), IoctlResult::Done(0, vec![]));
    }
    (
        m.open(Node::Chan(a)).unwrap(),
        m.open(Node::Chan(b)).unwrap(),
    )
}

fn ticks(m: &mut Model, n: u32) {
    for _ in 0..n {
        m.tick();
    }
}

/// Every event queued on `fh`, with the tick it was seen at.
fn events_over(m: &mut Model, fh: Fh, n: u32) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    for t in 1..=n {
        m.tick();
        loop {
            let e = event(m, fh);
            if e == 0 {
                break;
            }
            out.push((t, e));
        }
    }
    out
}

fn configure_one(m: &mut Model, chan: usize, sig: u32) {
    let ctl = m.open(Node::Ctl).unwrap();
    let mut cc = vec![0u8; 76];
    wire::put_i32(&mut cc, 0, chan as i32);
    wire::put_i32(&mut cc, 44, sig as i32);
    assert_eq!(m.ioctl(ctl, CHANCONFIG, &cc), IoctlResult::Done(0, vec![]));
}

#[test]
fn an_em_wink_is_a_winkflash_and_a_long_off_hook_a_seizure() {
    let mut m = Model::new(&cfg(true));
    let (a, b) = rbs_pair(&mut m, c::SIG_EM_E1, 3, 34);
    // b winks: 50 ms pre-wink on hook, 150 ms off hook, back on hook, HOOKCOMPLETE.
    assert_eq!(
        ioctl_int(&mut m, b, HOOK, c::WINK),
        IoctlResult::Done(0, vec![])
    );
    let seen_a = events_over(&mut m, a, 400);
    assert_eq!(seen_a.len(), 1, "{seen_a:?}");
    assert_eq!(seen_a[0].1, c::EVENT_WINKFLASH);
    assert!((199..=202).contains(&seen_a[0].0), "{seen_a:?}");
    assert_eq!(event(&mut m, b), c::EVENT_HOOKCOMPLETE);
    // Winking needs the on-hook state.
    assert_eq!(
        ioctl_int(&mut m, a, HOOK, c::OFFHOOK),
        IoctlResult::Done(0, vec![])
    );
    assert_eq!(
        ioctl_int(&mut m, a, HOOK, c::WINK),
        IoctlResult::Err(errno::EBUSY)
    );
    let seen_b = events_over(&mut m, b, 300);
    assert_eq!(seen_b.len(), 1, "{seen_b:?}");
    assert_eq!(seen_b[0].1, c::EVENT_RINGOFFHOOK);
    assert!((249..=252).contains(&seen_b[0].0), "{seen_b:?}");
    ioctl_int(&mut m, a, HOOK, c::ONHOOK);
    assert_eq!(events_over(&mut m, b, 5), vec![(1, c::EVENT_ONHOOK)]);
}

#[test]
fn an_fxo_port_rings_with_its_cadence_and_the_fxs_side_answers_and_hangs_up() {
    let mut m = Model::new(&cfg(true));
    // Span 1 position 4 rings a station (FXO signalling, kewl start); span 2 position 4 is
    // the station's line interface (FXS signalling, kewl start).
    configure_one(&mut m, 4, c::SIG_FXOKS);
    configure_one(&mut m, 35, c::SIG_FXSKS);
    let fxo = m.open(Node::Chan(4)).unwrap();
    let fxs = m.open(Node::Chan(35)).unwrap();
    // Cadence 1 s on, 2 s off.
    let mut cad = vec![0u8; 64];
    wire::put_i32(&mut cad, 0, 1000);
    wire::put_i32(&mut cad, 4, 2000);
    assert_eq!(
        m.ioctl(fxo, 0x4040_da2a, &cad),
        IoctlResult::Done(0, vec![])
    );
    assert_eq!(
        ioctl_int(&mut m, fxo, HOOK, c::RING),
        IoctlResult::Done(0, vec![])
    );
    let at_fxs = events_over(&mut m, fxs, 4100);
    assert_eq!(
        at_fxs.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![
            c::EVENT_RINGBEGIN,
            c::EVENT_RINGOFFHOOK,
            c::EVENT_RINGBEGIN,
            c::EVENT_RINGOFFHOOK
        ],
        "{at_fxs:?}"
    );
    // Ring 1 s from tick 1, its end seen after the 50 ms trailer; the next ring at 3 s.
    assert!((1048..=1052).contains(&at_fxs[1].0), "{at_fxs:?}");
    assert!((3000..=3003).contains(&at_fxs[2].0), "{at_fxs:?}");
    let at_fxo: Vec<i32> = std::iter::from_fn(|| Some(event(&mut m, fxo)))
        .take_while(|&e| e != 0)
        .collect();
    assert_eq!(
        at_fxo,
        vec![c::EVENT_RINGEROFF, c::EVENT_RINGERON, c::EVENT_RINGEROFF]
    );
    // The second ring ended at 4 s; the next one is due at 6 s.
    // The station answers (loop closed): the FXO side sees RINGOFFHOOK and stops ringing.
    ioctl_int(&mut m, fxs, HOOK, c::OFFHOOK);
    let seen = events_over(&mut m, fxo, 20);
    assert_eq!(
        seen.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![c::EVENT_RINGOFFHOOK]
    );
    ioctl_int(&mut m, fxo, HOOK, c::OFFHOOK);
    // Talking (past the FXS side's 600 ms off-hook debounce, during which DAHDI ignores the
    // loop).
    assert_eq!(events_over(&mut m, fxs, 700), vec![]);
    // Disconnect from the FXO side on kewl start: battery is dropped for 500 ms, which the FXS
    // side sees as the far end hanging up.
    ioctl_int(&mut m, fxo, HOOK, c::ONHOOK);
    let seen = events_over(&mut m, fxs, 700);
    assert!(seen.iter().any(|e| e.1 == c::EVENT_ONHOOK), "{seen:?}");
    // The station hangs up too: the FXO side reports on hook only after 1250 ms (shorter
    // would be a flash or a dial pulse).
    // (after the FXO side's 300 ms after-kewl guard, during which DAHDI ignores the loop).
    ticks(&mut m, 200);
    while event(&mut m, fxo) != 0 {}
    ioctl_int(&mut m, fxs, HOOK, c::ONHOOK);
    let seen = events_over(&mut m, fxo, 1400);
    let onhook: Vec<_> = seen.iter().filter(|e| e.1 == c::EVENT_ONHOOK).collect();
    assert_eq!(onhook.len(), 1, "{seen:?}");
}

#[test]
fn an_fxo_side_hears_a_flash_and_dial_pulses() {
    let mut m = Model::new(&cfg(true));
    configure_one(&mut m, 5, c::SIG_FXOLS);
    configure_one(&mut m, 36, c::SIG_FXSLS);
    let fxo = m.open(Node::Chan(5)).unwrap();
    let fxs = m.open(Node::Chan(36)).unwrap();
    ioctl_int(&mut m, fxs, HOOK, c::OFFHOOK);
    assert_eq!(
        events_over(&mut m, fxo, 700),
        vec![(1, c::EVENT_RINGOFFHOOK)]
    );
    // A 750 ms flash.
    assert_eq!(
        ioctl_int(&mut m, fxs, HOOK, c::FLASH),
        IoctlResult::Done(0, vec![])
    );
    let seen = events_over(&mut m, fxo, 1000);
    assert_eq!(
        seen.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![c::EVENT_WINKFLASH]
    );
    // Three 60 ms breaks: PULSE_START, then digit 3 after the pulse timeout.
    for _ in 0..3 {
        ioctl_int(&mut m, fxs, HOOK, c::ONHOOK);
        ticks(&mut m, 60);
        ioctl_int(&mut m, fxs, HOOK, c::OFFHOOK);
        ticks(&mut m, 40);
    }
    let seen = events_over(&mut m, fxo, 400);
    assert_eq!(
        seen.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![c::EVENT_PULSE_START, c::EVENT_PULSEDIGIT | i32::from(b'3')]
    );
}

#[test]
fn cas_bits_cross_the_cable_and_report_bitschanged() {
    let mut m = Model::new(&cfg(true));
    let (a, b) = rbs_pair(&mut m, c::SIG_CAS, 6, 37);
    ticks(&mut m, 2);
    while event(&mut m, b) != 0 {}
    assert_eq!(
        ioctl_int(&mut m, a, HOOK, c::OFFHOOK),
        IoctlResult::Err(errno::EINVAL)
    );
    assert_eq!(
        ioctl_int(&mut m, a, 0x4004_da2b, 0b1001),
        IoctlResult::Done(0, vec![])
    );
    assert_eq!(events_over(&mut m, b, 3), vec![(1, c::EVENT_BITSCHANGED)]);
    assert_eq!(
        m.ioctl(b, 0x8004_da2b, &[]),
        IoctlResult::Done(0, int(0b1001))
    );
}

//! dahdi-sim never panics and never leaves a request unanswered, whatever arrives: tens of
//! thousands of ioctls with random arguments on every kind of device file, reads and writes of
//! random sizes, and random control commands, all through the real syscall path. Runs on a
//! private simulator instance so the shared one keeps its configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::{Dev, field_i32, spaninfo};
use hw_tests::{SimInstance, sim_bin};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};
use tdm_driver::abi;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn int(&mut self) -> i32 {
        match self.next() % 6 {
            0 => 0,
            1 => -1,
            2 => (self.next() % 70) as i32,
            3 => i32::MAX,
            4 => i32::MIN,
            _ => self.next() as i32,
        }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        b.iter_mut().for_each(|x| *x = self.next() as u8);
        b
    }
}

/// One random ioctl; the result is ignored (errors are expected), only the answer matters.
fn random_ioctl(fd: BorrowedFd<'_>, r: &mut Rng) {
    let v = r.int();
    let _ = match r.next() % 30 {
        0 => abi::spanstat(
            fd,
            &mut abi::SpanInfo {
                spanno: v,
                ..Default::default()
            },
        ),
        1 => abi::get_params(
            fd,
            &mut abi::Params {
                channo: v,
                ..Default::default()
            },
        ),
        2 => abi::chanconfig(
            fd,
            &abi::ChanConfig {
                chan: r.int(),
                name: r.bytes(),
                sigtype: r.int(),
                deflaw: r.int(),
                master: r.int(),
                idlebits: r.int(),
                netdev_name: r.bytes(),
            },
        ),
        3 => abi::spanconfig(
            fd,
            &abi::LineConfig {
                span: r.int(),
                name: r.bytes(),
                lbo: r.int(),
                lineconfig: r.int(),
                sync: r.int(),
            },
        ),
        4 => abi::maint(
            fd,
            &abi::MaintInfo {
                spanno: v,
                command: r.int(),
            },
        ),
        5 => abi::set_bufinfo(
            fd,
            &abi::BufferInfo {
                txbufpolicy: r.int(),
                rxbufpolicy: r.int(),
                numbufs: r.int(),
                bufsize: r.int(),
                readbufs: r.int(),
                writebufs: r.int(),
            },
        ),
        6 => abi::set_blocksize(fd, &v),
        7 => abi::hook(fd, &v),
        8 => abi::iomux(fd, &mut (v | abi::DAHDI_IOMUX_NOWAIT)),
        9 => abi::specify(fd, &v),
        10 => abi::dial(
            fd,
            &abi::DialOperation {
                op: v,
                dialstr: r.bytes(),
            },
        ),
        11 => abi::setconf(
            fd,
            &mut abi::ConfInfo {
                chan: v,
                confno: r.int(),
                confmode: r.int(),
            },
        ),
        12 => abi::getgains(
            fd,
            &mut abi::Gains {
                chan: v,
                ..Default::default()
            },
        ),
        13 => abi::timerconfig(fd, &v),
        14 => abi::timerack(fd, &v),
        15 => abi::setlaw(fd, &v),
        16 => abi::setlinear(fd, &v),
        17 => abi::hdlcfcsmode(fd, &v),
        18 => abi::audiomode(fd, &v),
        19 => abi::flush(fd, &v),
        20 => abi::getevent(fd, &mut 0),
        21 => abi::defaultzone(fd, &v),
        22 => abi::startup(fd, &v),
        23 => abi::shutdown(fd, &v),
        24 => abi::settxbits(fd, &v),
        25 => abi::loopback(fd, &v),
        26 => abi::timerping(fd),
        27 => abi::getversion(fd, &mut abi::VersionInfo::default()),
        28 => abi::radio_getstat(fd, &mut abi::RadioStat::default()),
        _ => abi::get_bufinfo(fd, &mut abi::BufferInfo::default()),
    };
}

#[test]
fn random_ioctls_reads_writes_and_commands_are_all_answered() {
    let Some(bin) = sim_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("dahdi");
    std::fs::create_dir(&mnt).unwrap();
    let mut sim = SimInstance::start(&bin, &["--preconfigured".as_ref()], &mnt);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let mut calls = 0u64;
    for round in 0..100 {
        // A fresh set of files each round (non-blocking, so no read or write can wait).
        let mut files: Vec<Dev> = Vec::new();
        for rel in [
            "ctl",
            "channel",
            "pseudo",
            "timer",
            "chan/001/010",
            "chan/002/016",
        ] {
            if let Ok(d) = Dev::open(&mnt.join(rel), true) {
                files.push(d);
            }
        }
        for _ in 0..500 {
            let Some(d) = files.get(r.next() as usize % files.len().max(1)) else {
                break;
            };
            match r.next() % 4 {
                0 | 1 => random_ioctl(d.as_fd(), &mut r),
                2 => {
                    let n = (r.next() % 3000) as usize;
                    let data: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
                    let _ = d.write(&data);
                }
                _ => {
                    let mut buf = vec![0u8; (r.next() % 3000) as usize];
                    let _ = d.read(&mut buf);
                }
            }
            calls += 1;
        }
        let words = [
            "alarm", "clear", "slip", "bpv", "corrupt", "x", "1", "2", "99", "RED", "LOS", "",
        ];
        let cmd: Vec<&str> = (0..3)
            .map(|_| words[r.next() as usize % words.len()])
            .collect();
        let _ = std::fs::write(mnt.join("sim/control"), cmd.join(" ") + "\n");
        let _ = std::fs::read_to_string(mnt.join(format!("sim/proc/dahdi/{}", round % 3)));
        assert!(sim.is_running(), "dahdi-sim died in round {round}");
    }
    let took = start.elapsed();
    println!("{calls} random calls answered in {took:?}");
    assert!(took < Duration::from_secs(60));
    // Still serving, and still right.
    let ctl = Dev::open(&mnt.join("ctl"), false).unwrap();
    assert_eq!(field_i32(&ctl.spanstat(2).unwrap(), spaninfo::SPANNO), 2);
    assert!(sim.is_running());
}

#[test]
fn a_blocked_read_is_answered_within_the_park_limit() {
    let Some(bin) = sim_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("dahdi");
    std::fs::create_dir(&mnt).unwrap();
    let _sim = SimInstance::start(
        &bin,
        &[
            "--preconfigured".as_ref(),
            "--park-limit-ms".as_ref(),
            "2000".as_ref(),
        ],
        &mnt,
    );
    // A blocking read of a D-channel nobody sends on: fuser cannot see FUSE_INTERRUPT, so the
    // simulator answers EINTR after its park limit (2 s here) rather than never.
    let d = Dev::open(&mnt.join("chan/001/016"), false).unwrap();
    let start = Instant::now();
    let err = d.read(&mut [0u8; 1024]).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EINTR));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
}

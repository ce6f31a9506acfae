//! Error paths of the device tree as a driver meets them: a second open of a channel is EBUSY,
//! an unconfigured channel is ENXIO, an unknown ioctl is ENOTTY, `channel` needs SPECIFY first,
//! and read/write follow DAHDI's block rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::Dev;
use hw_tests::{chan_node, configure_spans, dahdi_root, node};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tdm_driver::{Channel, DeviceRoot, TdmError};

const SIG_CLEAR: i32 = 0x80;

fn errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn a_second_open_of_a_channel_is_ebusy_whichever_node_is_used() {
    configure_spans().expect("dahdi_cfg must succeed");
    let first = Dev::open(&chan_node(1, 2), false).unwrap();
    assert_eq!(errno(Dev::open(&chan_node(1, 2), false)), libc::EBUSY);
    let unbound = Dev::open(&node("channel"), false).unwrap();
    assert_eq!(
        errno(unbound.specify(2)),
        libc::EBUSY,
        "SPECIFY of an open channel"
    );
    drop(first);
    unbound.specify(2).expect("free again after close");
    assert_eq!(unbound.channo().unwrap(), 2);
    assert_eq!(errno(Dev::open(&chan_node(1, 2), false)), libc::EBUSY);
}

#[test]
fn an_unconfigured_channel_is_enxio() {
    configure_spans().expect("dahdi_cfg must succeed");
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    // Channel 30 (span 1 position 30) back to "unused", then configured again.
    ctl.chanconfig(30, 0).unwrap();
    let res_node = Dev::open(&chan_node(1, 30), false);
    let unbound = Dev::open(&node("channel"), false).unwrap();
    let res_specify = unbound.specify(30);
    ctl.chanconfig(30, SIG_CLEAR).unwrap();
    assert_eq!(errno(res_node), libc::ENXIO);
    assert_eq!(errno(res_specify), libc::ENXIO);
    Dev::open(&chan_node(1, 30), false).expect("configured again");
}

#[test]
fn unknown_ioctls_and_unknown_channels_get_typed_errors() {
    configure_spans().expect("dahdi_cfg must succeed");
    let ch = Dev::open(&chan_node(1, 3), false).unwrap();
    assert_eq!(errno(ch.unknown_ioctl()), libc::ENOTTY);
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    assert_eq!(errno(ctl.unknown_ioctl()), libc::ENOTTY);
    assert_eq!(
        errno(ctl.params(999)),
        libc::EINVAL,
        "GET_PARAMS of a channel that does not exist"
    );
    assert_eq!(
        errno(ctl.spanstat(99)),
        libc::EINVAL,
        "SPANSTAT of a span that does not exist"
    );
    let unbound = Dev::open(&node("channel"), false).unwrap();
    assert_eq!(errno(unbound.specify(999)), libc::EINVAL);
    // DAHDI answers ENOSYS before SPECIFY; FUSE turns a daemon's ENOSYS into ENOTTY.
    let before = errno(unbound.blocksize());
    assert!(
        before == libc::ENOSYS || before == libc::ENOTTY,
        "errno {before}"
    );
    assert_eq!(
        errno(ch.set_blocksize(8)),
        libc::EINVAL,
        "block size below 16"
    );
    assert_eq!(
        errno(ch.set_blocksize(8193)),
        libc::EINVAL,
        "block size above 8192"
    );
    assert_eq!(
        errno(ch.set_bufinfo(0, 4, 9000)),
        libc::EINVAL,
        "buffer above 8192"
    );
}

#[test]
fn read_returns_one_block_and_write_takes_at_most_one() {
    configure_spans().expect("dahdi_cfg must succeed");
    let a = Dev::open(&chan_node(1, 4), false).unwrap();
    let b = Dev::open(&chan_node(2, 4), true).unwrap();
    assert_eq!(
        a.blocksize().unwrap(),
        1024,
        "DAHDI's block size after open"
    );
    a.set_blocksize(160).unwrap();
    b.set_blocksize(160).unwrap();
    assert_eq!(
        a.write(&[0x55; 500]).unwrap(),
        160,
        "a write takes at most one block"
    );
    // Non-blocking: EAGAIN until a block is complete, then exactly one block.
    b.flush(3).unwrap();
    assert_eq!(errno(b.read(&mut [0u8; 4096])), libc::EAGAIN);
    let start = Instant::now();
    let revents = b.poll(libc::POLLIN, 1000).unwrap();
    assert_ne!(revents & libc::POLLIN, 0, "POLLIN once a block is complete");
    let waited = start.elapsed();
    assert!(
        waited <= Duration::from_millis(60),
        "a 20 ms block took {waited:?}"
    );
    let mut buf = [0u8; 4096];
    assert_eq!(b.read(&mut buf).unwrap(), 160, "exactly one block");
    assert_ne!(
        a.poll(libc::POLLOUT, 0).unwrap() & libc::POLLOUT,
        0,
        "room to write"
    );
}

#[test]
fn our_driver_reports_busy_unconfigured_and_unknown_channels_as_typed_errors() {
    configure_spans().expect("dahdi_cfg must succeed");
    let root = Arc::new(DeviceRoot::new(dahdi_root()));
    let first = Channel::open(root.clone(), 60).unwrap();
    match Channel::open(root.clone(), 60) {
        Err(TdmError::Busy { .. }) => {}
        other => panic!("second open of channel 60: {other:?}"),
    }
    match Channel::open_span_channel(root.clone(), 2, 29) {
        Err(TdmError::Busy { .. }) => {}
        other => panic!("chan/002/029 while open: {other:?}"),
    }
    drop(first);
    let ctl = Dev::open(&node("ctl"), false).unwrap();
    ctl.chanconfig(29, 0).unwrap();
    let unconfigured = Channel::open(root.clone(), 29);
    ctl.chanconfig(29, SIG_CLEAR).unwrap();
    match unconfigured {
        Err(TdmError::Unconfigured { .. }) => {}
        other => panic!("open of an unconfigured channel: {other:?}"),
    }
    match Channel::open(root, 700) {
        Err(TdmError::NoSuchChannel { .. }) => {}
        other => panic!("open of channel 700: {other:?}"),
    }
}

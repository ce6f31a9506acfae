//! D-channel frames across the cable: every frame arrives whole with a correct FCS-16 (checked
//! here with an independent implementation), and a corrupted frame is dropped and reported as
//! DAHDI_EVENT_BADFCS with errno 500 on the next read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::raw::Dev;
use hw_tests::{chan_node, configure_spans, sim_command, sim_control};

const ELAST: i32 = 500;
const EVENT_BADFCS: i32 = 8;
/// Both D-channel tests use positions 16; the raw-mode test uses 31.
static DCHANNELS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// CRC-16/X.25 as PPP uses it (RFC 1662), bit by bit: independent of the simulator's table.
fn fcs16(data: &[u8]) -> u16 {
    let mut crc = 0xffffu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn frame(n: usize, tag: u8) -> Vec<u8> {
    // SAPI 0, TEI 0 address, an I-frame control and a payload, then 2 FCS placeholder bytes.
    let mut f = vec![0x02, 0x01, 0x00, 0x00];
    f.extend((0..n).map(|i| tag.wrapping_add(i as u8)));
    f.extend([0, 0]);
    f
}

fn read_frame(d: &Dev) -> Vec<u8> {
    let revents = d.poll(libc::POLLIN | libc::POLLPRI, 2000).unwrap();
    assert_ne!(revents, 0, "a frame or an event within 2 s");
    let mut buf = [0u8; 1024];
    let n = d.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn d_pair() -> (Dev, Dev) {
    let a = Dev::open(&chan_node(1, 16), true).unwrap();
    let b = Dev::open(&chan_node(2, 16), true).unwrap();
    for d in [&a, &b] {
        d.set_bufinfo(0, 8, 1024).unwrap();
    }
    (a, b)
}

#[test]
fn frames_round_trip_both_ways_with_a_correct_fcs() {
    let _serial = DCHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let (a, b) = d_pair();
    for (i, (tx, rx)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
        for len in [0usize, 1, 30, 260] {
            let f = frame(len, i as u8 * 50 + len as u8);
            assert_eq!(tx.write(&f).unwrap(), f.len(), "one write is one frame");
            let got = read_frame(rx);
            assert_eq!(got.len(), f.len(), "delivered with its two FCS bytes");
            let body = &got[..got.len() - 2];
            assert_eq!(body, &f[..f.len() - 2]);
            let fcs = u16::from_le_bytes([got[got.len() - 2], got[got.len() - 1]]);
            assert_eq!(
                fcs,
                fcs16(body),
                "FCS-16 filled in by the sender, LSB first"
            );
        }
    }
}

#[test]
fn a_corrupted_frame_is_dropped_and_reported_as_badfcs() {
    let Some(control) = sim_control() else {
        return;
    };
    let _serial = DCHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    let (a, b) = d_pair();
    sim_command(&control, "corrupt 16").unwrap();
    a.write(&frame(10, 1)).unwrap();
    let revents = b.poll(libc::POLLIN | libc::POLLPRI, 2000).unwrap();
    assert_eq!(
        revents & (libc::POLLPRI | libc::POLLIN),
        libc::POLLPRI,
        "an event, no frame"
    );
    let mut buf = [0u8; 1024];
    let err = b.read(&mut buf).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(ELAST),
        "read while an event is pending"
    );
    assert_eq!(b.get_event().unwrap(), EVENT_BADFCS);
    assert_eq!(b.get_event().unwrap(), 0);
    assert_eq!(
        b.read(&mut buf).unwrap_err().raw_os_error(),
        Some(libc::EAGAIN),
        "frame dropped"
    );
    // The next frame is clean again.
    a.write(&frame(10, 2)).unwrap();
    assert_eq!(read_frame(&b).len(), 16);
}

#[test]
fn a_raw_hdlc_sender_with_a_wrong_fcs_is_caught_by_an_fcs_receiver() {
    let _serial = DCHANNELS.lock().unwrap_or_else(|e| e.into_inner());
    configure_spans().expect("dahdi_cfg must succeed");
    // Position 31 is a clear channel on both spans: switch one side to raw HDLC (no FCS added)
    // and the other to HDLC with FCS checking.
    let raw = Dev::open(&chan_node(1, 31), true).unwrap();
    let fcs = Dev::open(&chan_node(2, 31), true).unwrap();
    raw.hdlc_raw_mode(true).unwrap();
    fcs.hdlc_fcs_mode(true).unwrap();
    let mut good = frame(20, 7);
    let n = good.len();
    let sum = fcs16(&good[..n - 2]).to_le_bytes();
    good[n - 2..].copy_from_slice(&sum);
    raw.write(&good).unwrap();
    assert_eq!(read_frame(&fcs), good, "our FCS accepted as is");
    let mut bad = good.clone();
    bad[n - 1] ^= 0x80;
    raw.write(&bad).unwrap();
    fcs.poll(libc::POLLPRI, 2000).unwrap();
    assert_eq!(fcs.get_event().unwrap(), EVENT_BADFCS);
    raw.audio_mode(true).unwrap();
    fcs.audio_mode(true).unwrap();
}

//! Readiness through tokio (`tdm_driver::AsyncChannel`, epoll edge-triggered) over the FUSE
//! device: the simulator's poll notifications must wake a task for every complete block, every
//! frame and every event, or a gateway control path would stall.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::{configure_spans, dahdi_root, sim_command, sim_control};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tdm_driver::{AsyncChannel, DeviceRoot, Event};
use tokio::time::timeout;

#[tokio::test(flavor = "current_thread")]
async fn d_channel_frames_and_events_wake_async_tasks() {
    configure_spans().expect("dahdi_cfg must succeed");
    let root = Arc::new(DeviceRoot::new(dahdi_root()));
    let mut a = AsyncChannel::open(root.clone(), 16).unwrap();
    let b = AsyncChannel::open(root, 47).unwrap();
    let mut buf = [0u8; 1024];
    for i in 0..20u8 {
        let frame = [0x02, 0x01, i, 0x10, 0x20, 0x30];
        a.write_frame(&frame).await.unwrap();
        let n = timeout(Duration::from_secs(2), b.read_frame(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("frame {i} did not wake the reader within 2 s"))
            .unwrap();
        assert_eq!(&buf[..n], &frame, "frame {i}");
    }
    if let Some(control) = sim_control() {
        sim_command(&control, "corrupt 16").unwrap();
        a.write_frame(&[0x02, 0x01, 0x77]).await.unwrap();
        let ev = timeout(Duration::from_secs(2), b.next_event())
            .await
            .expect("event woke the task within 2 s")
            .unwrap();
        assert_eq!(ev, Event::BadFcs);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn audio_blocks_wake_an_async_reader_every_20_ms() {
    configure_spans().expect("dahdi_cfg must succeed");
    let root = Arc::new(DeviceRoot::new(dahdi_root()));
    let mut rx = AsyncChannel::open(root, 40).unwrap();
    rx.set_block_size(160).unwrap();
    let mut buf = [0u8; 160];
    // Skip the first (partial-phase) block, then time 50.
    timeout(Duration::from_secs(1), rx.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let start = Instant::now();
    for _ in 0..50 {
        let n = timeout(Duration::from_secs(1), rx.read(&mut buf))
            .await
            .expect("block within 1 s")
            .unwrap();
        assert_eq!(n, 160);
    }
    let took = start.elapsed();
    println!("async reader: 50 × 20 ms blocks in {took:?}");
    assert!(
        took >= Duration::from_millis(980) && took <= Duration::from_millis(1050),
        "{took:?}"
    );
}

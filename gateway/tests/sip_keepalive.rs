//! OPTIONS keepalive pings to trunks: on virtual time (schedule, timeouts, down after N,
//! up on the first answer, down statuses, RTT), and against a real SIPp trunk that is killed
//! and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Sipp, Ua, free_udp_port};
use gateway::sip::dialog::ViaTemplate;
use gateway::sip::keepalive::{PingConfig, TrunkMonitor, TrunkPinger, TrunkState};
use gateway::sip::message::{HeaderName, Method, Response, Uri};
use gateway::sip::transaction::{Reliability, TuEvent};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn pinger(t0: Instant, config: PingConfig, target: &str) -> TrunkPinger {
    TrunkPinger::new(
        t0,
        config,
        Uri::parse(target).unwrap(),
        Uri::parse("sip:ping@192.0.2.1").unwrap(),
        ViaTemplate {
            transport: "UDP".into(),
            sent_by: "192.0.2.1:5060".into(),
        },
        "carrier-a",
    )
}

#[test]
fn schedule_down_after_three_silent_pings_and_up_on_the_first_answer() {
    let t0 = Instant::now();
    let mut p = pinger(t0, PingConfig::default(), "sip:192.0.2.50");
    let mut sent = Vec::new();
    let mut changes = Vec::new();
    let mut now = t0;
    // Answer the first ping after 40 ms, then go silent.
    let first = p.handle_timeout(now, "z9hG4bK0").unwrap();
    assert_eq!(first.method, Method::Options);
    assert_eq!(first.headers.get(&HeaderName::MaxForwards), Some("70"));
    sent.push(0);
    changes.extend(p.handle_response(t0 + ms(40), &Response::for_request(&first, 200)));
    assert_eq!(p.rtt(), Some(ms(40)));
    for i in 1..10 {
        now = p.poll_timeout().unwrap();
        if p.handle_timeout(now, &format!("z9hG4bK{i}")).is_some() {
            sent.push((now - t0).as_millis());
        }
        changes.extend(p.take_change());
        if p.state() == TrunkState::Down {
            break;
        }
    }
    // Up at 40 ms: next ping 30 s after the answer; it times out 5 s later, which makes the
    // trunk suspect: pings every 10 s from then; the third failure marks it down.
    assert_eq!(sent, vec![0, 30_040, 45_040, 55_040]);
    assert_eq!(p.state(), TrunkState::Down);
    assert_eq!(
        changes.iter().map(|c| (c.from, c.to)).collect::<Vec<_>>(),
        vec![
            (TrunkState::Unknown, TrunkState::Up),
            (TrunkState::Up, TrunkState::Down)
        ]
    );
    assert_eq!(now - t0, ms(60_040), "down when the third ping timed out");
    assert_eq!(changes[1].status, 408);
    // Down: pings every 10 s; the first answer brings it up.
    let at = p.poll_timeout().unwrap();
    assert_eq!(at - t0, ms(65_040), "10 s after the last ping");
    let ping = p.handle_timeout(at, "z9hG4bKup").unwrap();
    let ch = p
        .handle_response(at + ms(5), &Response::for_request(&ping, 404))
        .unwrap();
    assert_eq!(
        (ch.from, ch.to, ch.status),
        (TrunkState::Down, TrunkState::Up, 404)
    );
    assert_eq!(p.failures(), 0);
    assert_eq!(p.stats().sent, 5);
    assert_eq!(p.stats().answered, 2);
    assert_eq!(p.stats().failed, 3);
}

#[test]
fn down_statuses_count_as_failures_and_stale_answers_are_ignored() {
    let t0 = Instant::now();
    let cfg = PingConfig {
        down_after: 2,
        ..PingConfig::default()
    };
    let mut p = pinger(t0, cfg, "sip:192.0.2.51");
    let a = p.handle_timeout(t0, "z9hG4bKa").unwrap();
    assert!(
        p.handle_response(t0 + ms(1), &Response::for_request(&a, 503))
            .is_none()
    );
    assert_eq!(p.failures(), 1);
    let t1 = p.poll_timeout().unwrap();
    let b = p.handle_timeout(t1, "z9hG4bKb").unwrap();
    // A late answer to the first ping changes nothing.
    assert!(
        p.handle_response(t1, &Response::for_request(&a, 200))
            .is_none()
    );
    let ch = p
        .handle_response(t1 + ms(2), &Response::for_request(&b, 408))
        .unwrap();
    assert_eq!(ch.to, TrunkState::Down);
    let mut m = TrunkMonitor::new();
    m.insert(p);
    assert!(!m.is_up("carrier-a"));
    assert!(m.is_up("not-monitored"));
}

/// A real trunk (SIPp answering OPTIONS): up with an RTT; SIPp killed → down after three
/// unanswered pings; SIPp back on the same port → up on the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_trunk_goes_down_when_killed_and_up_when_restarted() {
    let port = free_udp_port();
    let mut sipp = Some(Sipp::start_on(port, "options_uas.xml", None, 1000, &[]));
    tokio::time::sleep(ms(300)).await;
    let trunk = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ua = Ua::bind().await;
    let cfg = PingConfig {
        interval: ms(150),
        down_interval: ms(150),
        timeout: ms(250),
        down_after: 3,
        ..PingConfig::default()
    };
    let mut p = TrunkPinger::new(
        Instant::now(),
        cfg,
        Uri::parse(&format!("sip:{trunk}")).unwrap(),
        Uri::parse(&format!("sip:ping@{}", ua.local)).unwrap(),
        ViaTemplate {
            transport: "UDP".into(),
            sent_by: ua.local.to_string(),
        },
        "sipp-trunk",
    );
    let mut changes = Vec::new();
    let limit = Instant::now() + Duration::from_secs(20);
    let mut phase = 0;
    while phase < 3 && Instant::now() < limit {
        let events = ua.step(p.poll_timeout(), limit).await;
        let now = Instant::now();
        for ev in events {
            match ev {
                TuEvent::Response { response, .. } => {
                    changes.extend(p.handle_response(now, &response))
                }
                TuEvent::Timeout { .. } => changes.extend(p.transaction_failed(now)),
                _ => {}
            }
        }
        let b = ua.branch();
        if let Some(ping) = p.handle_timeout(now, &b) {
            ua.layer
                .send_request(now, ping, trunk, Reliability::Unreliable)
                .unwrap();
        }
        changes.extend(p.take_change());
        match phase {
            0 if p.state() == TrunkState::Up && p.stats().answered >= 3 => {
                assert!(p.rtt().unwrap() < Duration::from_secs(1));
                drop(sipp.take()); // kill the trunk
                phase = 1;
            }
            1 if p.state() == TrunkState::Down => {
                sipp = Some(Sipp::start_on(port, "options_uas.xml", None, 1000, &[]));
                phase = 2;
            }
            2 if p.state() == TrunkState::Up => phase = 3,
            _ => {}
        }
    }
    drop(sipp);
    assert_eq!(phase, 3, "{changes:?} {:?}", p.stats());
    let states: Vec<(TrunkState, TrunkState)> = changes.iter().map(|c| (c.from, c.to)).collect();
    assert_eq!(
        states,
        vec![
            (TrunkState::Unknown, TrunkState::Up),
            (TrunkState::Up, TrunkState::Down),
            (TrunkState::Down, TrunkState::Up)
        ]
    );
    assert_eq!(changes[1].status, 408);
    assert_eq!(changes[2].status, 200);
    assert!(p.stats().failed >= 3);
}

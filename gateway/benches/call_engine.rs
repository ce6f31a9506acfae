//! What one call costs the signalling core (SIP legs + call engine, the `Switch`), without
//! sockets or media: CPU per complete call (INVITE in → INVITE out → 200 → ACKs → BYE both
//! ways; 11 SIP messages, each parsed and built for real) and heap per live call.
//!
//! `cargo bench -p gateway --bench call_engine` prints a table.

use std::alloc::System;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::calls::cdr::LegMediaStats;
use gateway::calls::engine::{CallKey, Engine, EngineConfig, MediaCommand, TrunkSettings};
use gateway::calls::leg::{AudioCodec, DtmfMode, LegId, LegIds, PortSlot, SipTransportKind};
use gateway::calls::routing::{Destination, NumberPattern, Route, RouteTable, SourceMatch};
use gateway::calls::sip_leg::{SipLegs, SipLegsConfig, SipPeer};
use gateway::calls::switch::{MediaBackend, Switch};
use gateway::sip::message::{HeaderName, Message, Response};
use gateway::sip::parse::parse_message;
use gateway::sip::transport::Transport;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct NoMedia(u16);

impl MediaBackend for NoMedia {
    fn open_rtp(&mut self, _: LegId, _: CallKey, ip: IpAddr) -> Result<SocketAddr, String> {
        self.0 = self.0.wrapping_add(2);
        Ok(SocketAddr::new(ip, 20000 + self.0 % 10000))
    }
    fn attach_port(&mut self, _: LegId, _: CallKey, _: PortSlot) -> Result<(), String> {
        Ok(())
    }
    fn execute(&mut self, _: &MediaCommand) -> Result<(), String> {
        Ok(())
    }
    fn leg_stats(&self, _: LegId) -> Option<LegMediaStats> {
        None
    }
}

const GW: &str = "10.0.0.2:5060";
const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.3:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5060)))
}

fn switch() -> Switch<NoMedia> {
    let ids = LegIds::new();
    let mut sip = SipLegsConfig::new(addr(GW));
    sip.trusted = vec![
        gateway::calls::routing::IpNet::parse("10.0.0.0/8").unwrap_or(
            gateway::calls::routing::IpNet::host(IpAddr::from([10, 0, 0, 1])),
        ),
    ];
    sip.peers = vec![SipPeer {
        name: "pbx".into(),
        address: addr(B),
        transport: SipTransportKind::Udp,
        inbound: true,
        keepalive: None,
    }];
    let mut cfg = EngineConfig::new(IpAddr::from([10, 0, 0, 2]));
    cfg.event_log_capacity = 1000;
    cfg.trunks = vec![TrunkSettings {
        name: "pbx".into(),
        address: addr(B),
        transport: SipTransportKind::Udp,
        host: None,
        credentials: None,
        codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
        dtmf: DtmfMode::Rfc4733,
        propagate_hold: true,
        max_calls: None,
    }];
    cfg.routes = RouteTable {
        routes: vec![Route {
            name: "all".into(),
            pattern: NumberPattern::Any,
            source: SourceMatch::Any,
            strip: 0,
            prepend: String::new(),
            destinations: vec![Destination::Trunk("pbx".into())],
        }],
        acls: Vec::new(),
    };
    Switch::new(
        SipLegs::new(sip, ids.clone()),
        Engine::new(cfg, ids),
        NoMedia(0),
    )
}

const SDP: &str = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn invite(n: u64) -> String {
    format!(
        "INVITE sip:bob@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa{n}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{A}>;tag=f{n}\r\nTo: <sip:bob@{GW}>\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{A}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn a_req(n: u64, method: &str, seq: u32, to: &str) -> String {
    format!(
        "{method} sip:gw@{GW} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa{n}m{seq}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{A}>;tag=f{n}\r\nTo: {to}\r\nCall-ID: c{n}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Drives one call from INVITE to the 200 of both BYEs; returns how many messages crossed.
fn set_up(sw: &mut Switch<NoMedia>, now: Instant, n: u64) -> Option<(String, Vec<u8>)> {
    sw.handle_sip(now, invite(n).as_bytes(), addr(A), Transport::Udp);
    let mut b_inv = None;
    while let Some(t) = sw.poll_transmit(now) {
        if t.dest == addr(B)
            && let Ok(Message::Request(r)) = parse_message(&t.bytes)
        {
            b_inv = Some(r);
        }
    }
    let inv = b_inv?;
    let mut ok = Response::for_request(&inv, 200);
    ok.ensure_to_tag("bt");
    ok.headers
        .push(HeaderName::Contact, format!("<sip:bob@{B}>"));
    ok.headers.push(HeaderName::ContentType, "application/sdp");
    ok.body = SDP.replace("10.0.0.1", "10.0.0.3").into_bytes();
    sw.handle_sip(now, &ok.to_bytes(), addr(B), Transport::Udp);
    let mut a_to = None;
    while let Some(t) = sw.poll_transmit(now) {
        if t.dest == addr(A)
            && let Ok(Message::Response(r)) = parse_message(&t.bytes)
            && r.status == 200
        {
            a_to = r.headers.get(&HeaderName::To).map(str::to_owned);
        }
    }
    let to = a_to?;
    sw.handle_sip(
        now,
        a_req(n, "ACK", 1, &to).as_bytes(),
        addr(A),
        Transport::Udp,
    );
    Some((to, inv.to_bytes()))
}

fn tear_down(sw: &mut Switch<NoMedia>, now: Instant, n: u64, to: &str) {
    sw.handle_sip(
        now,
        a_req(n, "BYE", 2, to).as_bytes(),
        addr(A),
        Transport::Udp,
    );
    let mut byes = VecDeque::new();
    while let Some(t) = sw.poll_transmit(now) {
        if let Ok(Message::Request(r)) = parse_message(&t.bytes)
            && r.method.as_str() == "BYE"
        {
            byes.push_back((t.dest, r));
        }
    }
    for (dest, bye) in byes {
        sw.handle_sip(
            now,
            &Response::for_request(&bye, 200).to_bytes(),
            dest,
            Transport::Udp,
        );
    }
    while sw.poll_transmit(now).is_some() {}
    while sw.poll_cdr().is_some() {}
    while sw.poll_notice().is_some() {}
}

fn main() {
    let calls: u64 = std::env::var("CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    // Sequential calls: CPU per complete call.
    let mut sw = switch();
    let t0 = Instant::now();
    let mut now = t0;
    let start = Instant::now();
    let mut done = 0u64;
    for n in 0..calls {
        now += Duration::from_micros(100);
        if let Some((to, _)) = set_up(&mut sw, now, n) {
            tear_down(&mut sw, now, n, &to);
            done += 1;
        }
        // Let finished transactions expire now and then (virtual time).
        if n % 1000 == 999 {
            now += Duration::from_secs(40);
            sw.handle_timeout(now);
        }
    }
    let per_call = start.elapsed().as_secs_f64() / done.max(1) as f64;
    // Concurrent calls: heap per live call.
    let mut sw = switch();
    let live = 2_000u64;
    let region = Region::new(GLOBAL);
    let mut up = Vec::new();
    for n in 0..live {
        if let Some((to, _)) = set_up(&mut sw, t0, n) {
            up.push((n, to));
        }
    }
    // The 2xx retransmission state ends with the ACK; what is left is what a call holds.
    let held = region.change();
    let bytes = held.bytes_allocated as i64 - held.bytes_deallocated as i64;
    let counts = sw.counts();
    println!("call engine (SIP legs + engine, no sockets, no media), {done} calls");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| CPU per complete call (11 SIP messages parsed and built) | {:.1} µs |",
        per_call * 1e6
    );
    println!(
        "| calls per second on one core, signalling only | {:.0} |",
        1.0 / per_call
    );
    println!(
        "| heap per live call ({} calls up, {} legs, {} transactions) | {:.1} KiB |",
        counts.calls,
        counts.legs,
        counts.transactions,
        bytes as f64 / counts.calls.max(1) as f64 / 1024.0
    );
    for (n, to) in up {
        tear_down(&mut sw, t0, n, &to);
    }
}

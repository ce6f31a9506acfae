//! Parse rate of a typical INVITE (with SDP): our strict parser vs `rsip` 0.4 vs `rsipstack` 0.7,
//! in the same run. Two groups: parsing alone, and parsing plus reading what a transaction
//! layer needs (top Via branch, From/To tags, Call-ID, CSeq), because `rsip` defers header
//! parsing to typed access while ours validates during parsing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::sip::message::Message;
use gateway::sip::parse::parse_message;

/// A typical INVITE as a softphone or PBX sends it (RFC 3665-style, 2 Vias, Record-Route).
const INVITE: &str = "INVITE sip:+4930123456@pbx.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK-524287-1---9e6a4c9d1f0a2b3c;rport\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9;received=192.0.2.1\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:192.0.2.101;lr>\r\n\
Contact: <sip:alice@192.0.2.50:5060;transport=udp>\r\n\
To: <sip:+4930123456@pbx.example.com;user=phone>\r\n\
From: \"Alice Agent\" <sip:alice@pbx.example.com>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@192.0.2.50\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: Softphone 5.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 238\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.50\r\n\
s=-\r\n\
c=IN IP4 192.0.2.50\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn bench(c: &mut Criterion) {
    let bytes = INVITE.as_bytes();
    // Sanity: all three accept this message, and the body length is right.
    let Ok(Message::Request(ours)) = parse_message(bytes) else {
        panic!("ours rejects the INVITE: {:?}", parse_message(bytes))
    };
    assert_eq!(ours.body.len(), 238);
    rsip::SipMessage::try_from(bytes).expect("rsip rejects the INVITE");
    rsipstack::sip::SipMessage::try_from(bytes).expect("rsipstack rejects the INVITE");

    let mut g = c.benchmark_group("sip_parse_invite");
    g.throughput(Throughput::Elements(1));
    g.bench_function("spanbridge", |b| {
        b.iter(|| parse_message(black_box(bytes)).unwrap())
    });
    g.bench_function("rsip_0.4", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(bytes)).unwrap())
    });
    g.bench_function("rsipstack_0.7", |b| {
        b.iter(|| rsipstack::sip::SipMessage::try_from(black_box(bytes)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("sip_parse_invite_and_read_keys");
    g.throughput(Throughput::Elements(1));
    g.bench_function("spanbridge", |b| {
        b.iter(|| {
            let Ok(Message::Request(r)) = parse_message(black_box(bytes)) else {
                panic!()
            };
            let h = &r.headers;
            let via = h.top_via().unwrap();
            let key = (
                via.branch().map(str::len),
                h.from().unwrap().tag().map(str::len),
                h.to().unwrap().tag().is_none(),
                h.call_id().unwrap().len(),
                h.cseq().unwrap().seq,
            );
            black_box(key)
        })
    });
    g.bench_function("rsip_0.4", |b| {
        use rsip::prelude::*;
        b.iter(|| {
            let rsip::SipMessage::Request(r) =
                rsip::SipMessage::try_from(black_box(bytes)).unwrap()
            else {
                panic!()
            };
            let via = r.via_header().unwrap().typed().unwrap();
            let key = (
                via.branch().map(|b| b.to_string().len()),
                r.from_header()
                    .unwrap()
                    .tag()
                    .unwrap()
                    .map(|t| t.to_string().len()),
                r.to_header().unwrap().tag().unwrap().is_none(),
                r.call_id_header().unwrap().value().len(),
                r.cseq_header().unwrap().seq().unwrap(),
            );
            black_box(key)
        })
    });
    g.bench_function("rsipstack_0.7", |b| {
        use rsipstack::sip::prelude::*;
        b.iter(|| {
            let rsipstack::sip::SipMessage::Request(r) =
                rsipstack::sip::SipMessage::try_from(black_box(bytes)).unwrap()
            else {
                panic!()
            };
            let via = r.via_header().unwrap().typed().unwrap();
            let key = (
                via.branch().map(|b| b.to_string().len()),
                r.from_header()
                    .unwrap()
                    .tag()
                    .unwrap()
                    .map(|t| t.to_string().len()),
                r.to_header().unwrap().tag().unwrap().is_none(),
                r.call_id_header().unwrap().value().len(),
                r.cseq_header().unwrap().seq().unwrap(),
            );
            black_box(key)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

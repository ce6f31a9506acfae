//! SIP over TCP and TLS: responses return on the request's connection (RFC 5923-style reuse),
//! Content-Length framing across arbitrary TCP segmentation, CRLF keepalives, broken streams
//! closed, and TLS with a self-signed certificate made by `rcgen` (trusted / not trusted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway::sip::message::Message;
use gateway::sip::parse::parse_message;
use gateway::sip::transport::{SipTransport, Transport, TransportConfig};
use gateway::sip::uas::{OptionsUas, UdpUas};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};

fn options(transport: &str, n: u32) -> String {
    format!(
        "OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bKt{n}\r\n\
Max-Forwards: 70\r\n\
From: <sip:t@127.0.0.1>;tag=t{n}\r\n\
To: <sip:ping@127.0.0.1>\r\n\
Call-ID: tr{n}\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
    )
}

fn tls_pair() -> (Arc<ServerConfig>, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let server = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    (Arc::new(server), cert)
}

fn client_config(trusted: Option<CertificateDer<'static>>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Some(c) = trusted {
        roots.add(c).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn uas_with(tls: Option<Arc<ServerConfig>>) -> UdpUas {
    UdpUas::bind_transport(
        TransportConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            tls: tls.map(|t| ("127.0.0.1:0".parse().unwrap(), t)),
            ..TransportConfig::default()
        },
        OptionsUas::default(),
    )
    .await
    .unwrap()
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_with_a_self_signed_certificate_is_answered_on_the_same_connection() {
    let (server, cert) = tls_pair();
    let uas = uas_with(Some(server)).await;
    let dest = uas.tls_addr().unwrap();
    let mut client = SipTransport::bind(TransportConfig {
        tls_client: Some(client_config(Some(cert))),
        ..TransportConfig::default()
    })
    .await
    .unwrap();
    for n in 0..3 {
        client
            .send(
                dest,
                Transport::Tls,
                options("TLS", n).into_bytes(),
                Some("localhost"),
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), client.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.transport, Transport::Tls);
        assert_eq!(got.source, dest);
        let Message::Response(r) = parse_message(&got.bytes).unwrap() else {
            panic!("expected a response");
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.call_id().unwrap(), format!("tr{n}"));
    }
    // One connection carried all three transactions, in both directions.
    assert_eq!(client.open_connections(), 1);
    assert_eq!(client.connection_to(dest), Some(Transport::Tls));
    assert_eq!(uas.counters().open_connections.load(Ordering::Relaxed), 1);
    client.shutdown().await;
    // The server notices the close and forgets the connection (on its next event).
    let uas_udp = uas.local_addr();
    let poke = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(
        wait_for(|| {
            let _ = poke.send_to(b"\r\n\r\n", uas_udp);
            uas.counters().open_connections.load(Ordering::Relaxed) == 0
        })
        .await
    );
    uas.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_an_untrusted_certificate_is_refused() {
    let (server, _cert) = tls_pair();
    let uas = uas_with(Some(server)).await;
    let client = SipTransport::bind(TransportConfig {
        tls_client: Some(client_config(None)),
        ..TransportConfig::default()
    })
    .await
    .unwrap();
    let r = client
        .send(
            uas.tls_addr().unwrap(),
            Transport::Tls,
            options("TLS", 9).into_bytes(),
            Some("localhost"),
        )
        .await;
    assert!(
        r.is_err(),
        "handshake with an untrusted certificate must fail"
    );
    assert_eq!(client.open_connections(), 0);
    assert_eq!(uas.counters().answered.load(Ordering::Relaxed), 0);
    client.shutdown().await;
    uas.shutdown().await.unwrap();
}

async fn read_responses(s: &mut TcpStream, want: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while String::from_utf8_lossy(&buf).matches("SIP/2.0 200").count() < want {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf)
        .split("SIP/2.0 ")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_messages_split_and_coalesced_are_each_answered_and_ping_gets_pong() {
    let uas = uas_with(None).await;
    let mut s = TcpStream::connect(uas.tcp_addr().unwrap()).await.unwrap();
    s.set_nodelay(true).unwrap();
    // One message byte-dribbled in three writes, then two in one write.
    let one = options("TCP", 1);
    let (a, rest) = one.split_at(10);
    let (b, c) = rest.split_at(rest.len() - 3);
    for part in [a, b, c] {
        s.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let two = format!("{}{}", options("TCP", 2), options("TCP", 3));
    s.write_all(two.as_bytes()).await.unwrap();
    let got = read_responses(&mut s, 3).await;
    let ids: Vec<bool> = (1..=3)
        .map(|n| {
            got.iter()
                .any(|r| r.contains(&format!("Call-ID: tr{n}\r\n")))
        })
        .collect();
    assert_eq!(ids, vec![true, true, true]);
    // RFC 5626 keepalive: CRLF CRLF is answered with CRLF.
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    uas.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_stream_with_a_negative_content_length_is_closed_not_hung() {
    let uas = uas_with(None).await;
    let mut s = TcpStream::connect(uas.tcp_addr().unwrap()).await.unwrap();
    let bad = options("TCP", 4).replace("Content-Length: 0", "Content-Length: -5");
    s.write_all(bad.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server must close a stream it cannot frame")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "unexpected data: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(uas.counters().answered.load(Ordering::Relaxed), 0);
    uas.shutdown().await.unwrap();
}

/// RFC 3581 on real sockets: a request whose Via names another address and asks for rport is
/// answered to its real source port, with `rport=<port>;received=<ip>` (received even when
/// the IP matches, RFC 3581 §4), from which the client learns its reflexive address. Without
/// rport the answer still goes to the source (symmetric routing, decision 0007).
#[tokio::test]
async fn udp_responses_go_to_the_source_with_rport_and_received() {
    use gateway::sip::transaction::reflexive_address;
    let uas = UdpUas::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let mut buf = vec![0u8; 65_535];
    for (via, expect_rport) in [
        ("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKnat1;rport", true),
        ("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKnat2", false),
    ] {
        let text = options("UDP", 1).replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKt1",
            &format!("Via: {via}"),
        );
        let text = text.replace("Call-ID: tr1", &format!("Call-ID: nat-{expect_rport}"));
        client
            .send_to(text.as_bytes(), uas.local_addr())
            .await
            .unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("the response came back to the source port, not to sent-by 5099")
            .unwrap();
        assert_eq!(from, uas.local_addr());
        let Ok(Message::Response(r)) = parse_message(&buf[..n]) else {
            panic!()
        };
        assert_eq!(r.status, 200);
        let top = r.headers.top_via().unwrap();
        if expect_rport {
            assert_eq!(top.rport(), Some(Some(me.port())));
            assert_eq!(top.received(), Some("127.0.0.1"));
            assert_eq!(reflexive_address(&r), Some(me));
        } else {
            assert_eq!(top.rport(), None);
            assert_eq!(
                top.received(),
                None,
                "same IP as sent-by, no rport: nothing added"
            );
            assert_eq!(reflexive_address(&r), None);
        }
    }
    uas.shutdown().await.unwrap();
}

/// RFC 3261 §18.2.2: the TCP connection a request came on has closed before the response is
/// ready: the response goes on a new connection to the Via's received address and sent-by
/// port, where the client listens.
#[tokio::test]
async fn tcp_response_after_the_connection_closed_opens_one_to_sent_by() {
    use gateway::sip::transport::response_fallback;
    let mut server = SipTransport::bind(TransportConfig {
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..TransportConfig::default()
    })
    .await
    .unwrap();
    let mut closed = server.closed_connections();
    let client_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sent_by = client_listener.local_addr().unwrap();
    let mut c = TcpStream::connect(server.tcp_addr().unwrap())
        .await
        .unwrap();
    let text = options("TCP", 7).replace(
        "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKt7",
        &format!("Via: SIP/2.0/TCP {sent_by};branch=z9hG4bKt7"),
    );
    c.write_all(text.as_bytes()).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), server.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.transport, Transport::Tcp);
    let conn = item
        .connection
        .expect("stream items carry their connection id");
    drop(c);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .unwrap(),
        Some(conn)
    );
    let Ok(Message::Request(req)) = parse_message(&item.bytes) else {
        panic!()
    };
    let mut resp = gateway::sip::message::Response::for_request(&req, 200);
    gateway::sip::transaction::stamp_received(&mut resp, item.source);
    let bytes = resp.to_bytes();
    assert_eq!(
        response_fallback(&bytes, item.source, Transport::Tcp),
        Some(sent_by)
    );
    server
        .send_response(item.source, Transport::Tcp, bytes)
        .await
        .unwrap();
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), client_listener.accept())
        .await
        .expect("the server connected back to sent-by")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let Ok(Message::Response(r)) = parse_message(&buf[..n]) else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.call_id().unwrap(), "tr7");
    server.shutdown().await;
}

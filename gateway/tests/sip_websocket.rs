//! SIP over WebSocket (RFC 7118) with a real WebSocket client (tokio-tungstenite) sending what
//! JsSIP sends (`/work/shared/peers.md`): `Sec-WebSocket-Protocol: sip`, one message per text
//! frame, `.invalid` Via and Contact hosts, outbound `reg-id`/`+sip.instance`, REGISTER with
//! MD5 digest, INVITE/ACK/BYE both ways, un-REGISTER. The server side is built from the
//! sans-IO pieces the engine wires: transport (ws + wss), transaction layer, registrar,
//! dialogs. It checks that responses and requests to the browser travel on its connection,
//! that the registrar's binding follows the flow, and that the binding dies with the
//! connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway::sip::auth::{
    DigestAlgorithm, DigestClient, DigestServer, DigestServerConfig, pick_challenge,
};
use gateway::sip::dialog::{Dialog, InDialogRequest, ViaTemplate};
use gateway::sip::message::{HeaderName, Message, Method, Request, Response, Uri};
use gateway::sip::parse::parse_message;
use gateway::sip::registrar::{Flow, Registrar, RegistrarConfig};
use gateway::sip::transaction::{TimerConfig, TransactionKey, TransactionLayer, TuEvent};
use gateway::sip::transport::{ConnectionId, SipTransport, Transport, TransportConfig, needs_flow};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// What the test asks the server to do.
enum Command {
    /// Call the AoR's registered contacts (INVITE over their flow), then BYE after the ACK.
    Call(Uri),
}

/// What the server reports.
#[derive(Debug, PartialEq)]
enum Report {
    /// Our INVITE to the browser got this final status.
    CallAnswered(u16),
    /// Our BYE to the browser got this final status.
    ByeAnswered(u16),
    /// The browser hung up its call to us (BYE answered 200).
    ByeReceived,
    /// A connection closed and this many bindings went with it.
    Closed(ConnectionId, usize),
    /// Registrar bindings after a REGISTER: (count, flow of the first).
    Bindings(usize, Option<Flow>),
}

struct OutCall {
    invite: Request,
    dialog: Option<Dialog>,
    flow: Flow,
}

/// The server: transport + transaction layer + registrar + dialogs, in one task.
async fn server(
    mut transport: SipTransport,
    mut commands: mpsc::Receiver<Command>,
    reports: mpsc::Sender<Report>,
) {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut closed = transport.closed_connections();
    let mut digest = DigestServer::new(
        DigestServerConfig {
            algorithms: vec![DigestAlgorithm::Md5],
            ..DigestServerConfig::default()
        },
        [5; 32],
    );
    digest.set_user("alice", "s3cret");
    let mut registrar = Registrar::new(RegistrarConfig::default(), digest);
    let ws = transport.ws_addr().unwrap();
    // Where each peer address came from (transport and connection).
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut dialogs: HashMap<String, Dialog> = HashMap::new();
    let mut out: HashMap<TransactionKey, OutCall> = HashMap::new();
    let mut n = 0u64;
    let via = |t: Transport| ViaTemplate {
        transport: t.via_token().into(),
        sent_by: format!("gw.example:{}", ws.port()),
    };
    loop {
        let now = Instant::now();
        let wake = layer
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            r = transport.recv() => {
                let Some(item) = r else { return };
                flows.insert(item.source, Flow {
                    transport: item.transport,
                    remote: item.source,
                    connection: item.connection,
                });
                layer.handle_datagram(now, &item.bytes, item.source, item.transport.reliability());
            }
            c = closed.recv() => {
                let Some(id) = c else { return };
                let removed = registrar.connection_closed(id);
                let _ = reports.send(Report::Closed(id, removed)).await;
            }
            c = commands.recv() => {
                let Some(Command::Call(aor)) = c else { return };
                for target in registrar.lookup(now, &aor) {
                    let flow = target.flow.expect("a WebSocket binding needs its flow");
                    n += 1;
                    let mut inv = Request::new(Method::Invite, target.uri.clone());
                    let v = via(flow.transport);
                    inv.headers.push(HeaderName::Via, format!("SIP/2.0/{} {};branch=z9hG4bKgw{n}", v.transport, v.sent_by));
                    inv.headers.push(HeaderName::MaxForwards, "70");
                    inv.headers.push(HeaderName::From, format!("<sip:agent-queue@gw.example>;tag=gw{n}"));
                    inv.headers.push(HeaderName::To, format!("<{aor}>"));
                    inv.headers.push(HeaderName::CallId, format!("gwcall{n}"));
                    inv.headers.push(HeaderName::CSeq, "1 INVITE");
                    inv.headers.push(HeaderName::Contact, format!("<sip:gw@gw.example:{};transport=ws>", ws.port()));
                    inv.headers.push(HeaderName::ContentType, "application/sdp");
                    inv.body = SDP.as_bytes().to_vec();
                    let key = layer.send_request(now, inv.clone(), flow.remote, flow.transport.reliability()).unwrap();
                    out.insert(key, OutCall { invite: inv, dialog: None, flow });
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => layer.handle_timeout(now),
        }
        while let Some(ev) = layer.poll_event() {
            match ev {
                TuEvent::Request {
                    key,
                    request,
                    source,
                } => {
                    let flow = flows[&source];
                    let resp = match request.method {
                        Method::Register => {
                            let r = registrar.handle_register(now, &request, flow);
                            if r.status == 200 {
                                let to = request.headers.to().unwrap().uri;
                                let b = registrar.lookup(now, &to);
                                let _ = reports
                                    .send(Report::Bindings(b.len(), b.first().and_then(|t| t.flow)))
                                    .await;
                            }
                            r
                        }
                        Method::Invite => {
                            n += 1;
                            let contact = Uri::parse(&format!(
                                "sip:gw@gw.example:{};transport=ws",
                                ws.port()
                            ))
                            .unwrap();
                            let mut d = Dialog::new_uas(
                                &request,
                                &format!("gwt{n}"),
                                contact,
                                via(flow.transport),
                            )
                            .unwrap();
                            let mut ok = d.response(&request, 200);
                            ok.headers.push(HeaderName::ContentType, "application/sdp");
                            ok.body = SDP.as_bytes().to_vec();
                            dialogs.insert(request.headers.call_id().unwrap().to_owned(), d);
                            ok
                        }
                        Method::Bye => {
                            let d = dialogs.get_mut(request.headers.call_id().unwrap()).unwrap();
                            assert_eq!(d.handle_request(&request), Ok(InDialogRequest::Bye));
                            let _ = reports.send(Report::ByeReceived).await;
                            d.response(&request, 200)
                        }
                        _ => Response::for_request(&request, 200),
                    };
                    layer.send_response(now, &key, resp).unwrap();
                }
                TuEvent::Ack { request, .. } => {
                    let d = dialogs.get_mut(request.headers.call_id().unwrap()).unwrap();
                    assert_eq!(d.handle_request(&request), Ok(InDialogRequest::Ack));
                }
                TuEvent::Response { key, response } if response.status >= 200 => {
                    if key.method == Method::Invite
                        && let Some(call) = out.get_mut(&key)
                    {
                        let _ = reports.send(Report::CallAnswered(response.status)).await;
                        let mut d =
                            Dialog::new_uac(&call.invite, &response, via(call.flow.transport))
                                .unwrap();
                        n += 1;
                        let ack = d
                            .ack_for_2xx(&response, &format!("z9hG4bKack{n}"), None)
                            .unwrap();
                        // The browser's Contact is `.invalid`: the ACK and BYE go on its flow.
                        assert!(needs_flow(d.next_hop()));
                        transport
                            .send_on(call.flow.connection.unwrap(), ack.to_bytes())
                            .await
                            .unwrap();
                        n += 1;
                        let bye = d
                            .new_request(Method::Bye, &format!("z9hG4bKbye{n}"))
                            .unwrap();
                        let (remote, rel) = (call.flow.remote, call.flow.transport.reliability());
                        call.dialog = Some(d);
                        layer.send_request(now, bye, remote, rel).unwrap();
                    } else if key.method == Method::Bye {
                        let _ = reports.send(Report::ByeAnswered(response.status)).await;
                    }
                }
                _ => {}
            }
        }
        while let Some(t) = layer.poll_transmit() {
            let transport_of = flows.get(&t.dest).map_or(Transport::Udp, |f| f.transport);
            transport
                .send_response(t.dest, transport_of, t.bytes)
                .await
                .unwrap();
        }
    }
}

/// The JsSIP-like browser end.
struct Browser<S> {
    ws: WebSocketStream<S>,
    host: String,
    user: String,
    cseq: u32,
    call_id: String,
    digest: DigestClient,
    challenge: Option<gateway::sip::auth::Challenge>,
    n: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Browser<S> {
    fn new(ws: WebSocketStream<S>, host: &str) -> Self {
        Browser {
            ws,
            host: format!("{host}.invalid"),
            user: "k3x9fq".into(),
            cseq: 0,
            call_id: format!("{host}regcallid"),
            digest: DigestClient::new("alice", "s3cret"),
            challenge: None,
            n: 0,
        }
    }

    async fn send(&mut self, text: String) {
        self.ws.send(WsMessage::text(text)).await.unwrap();
    }

    async fn recv(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("nothing from the gateway within 5 s")
                .expect("WebSocket closed")
                .unwrap();
            let WsMessage::Text(t) = m else { continue };
            return parse_message(t.as_str().as_bytes()).expect("the gateway sent valid SIP");
        }
    }

    async fn recv_response(&mut self) -> Response {
        match self.recv().await {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {}", r.method),
        }
    }

    fn branch(&mut self) -> String {
        self.n += 1;
        format!("z9hG4bK{}{}", self.host.len(), self.n * 7919)
    }

    fn register(&mut self, expires: u32, ws_host: &str, transport: &str) -> Request {
        self.cseq += 1;
        let branch = self.branch();
        let text = format!(
            "REGISTER sip:{ws_host} SIP/2.0\r\n\
Via: SIP/2.0/{transport} {h};branch={branch}\r\n\
Max-Forwards: 69\r\n\
To: <sip:alice@{ws_host}>\r\n\
From: <sip:alice@{ws_host}>;tag=jssiptag1\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:{u}@{h};transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:8f1a9a6c-5a4e-4d2b-9a36-3f5e1b0c7d21>\";expires={expires}\r\n\
Expires: {expires}\r\n\
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
Supported: path,gruu,outbound\r\n\
User-Agent: JsSIP 3.10.1\r\n\
Content-Length: 0\r\n\r\n",
            h = self.host,
            u = self.user,
            cid = self.call_id,
            cseq = self.cseq,
        );
        match parse_message(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    /// REGISTER; answer a 401 with digest (or send the cached credentials right away, as
    /// JsSIP does once it has a nonce); returns the final response.
    async fn register_authenticated(
        &mut self,
        expires: u32,
        ws_host: &str,
        transport: &str,
    ) -> Response {
        let mut req = self.register(expires, ws_host, transport);
        if let Some(ch) = self.challenge.clone() {
            let v = self
                .digest
                .credentials(&ch, &Method::Register, &req.uri, "c0ffee");
            req.headers.push(HeaderName::Authorization, v);
        }
        self.send(String::from_utf8(req.to_bytes()).unwrap()).await;
        let r = self.recv_response().await;
        if r.status != 401 {
            return r;
        }
        self.challenge = pick_challenge(&r);
        let branch = self.branch();
        let again = self.digest.authorize(&req, &r, &branch, "b7f3a2").unwrap();
        self.cseq += 1;
        self.send(String::from_utf8(again.to_bytes()).unwrap())
            .await;
        self.recv_response().await
    }
}

async fn connect_ws(addr: SocketAddr) -> WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "sip".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("sip"),
        "RFC 7118: the server selects the sip subprotocol"
    );
    ws
}

fn tls() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

async fn start() -> (
    SocketAddr,
    SocketAddr,
    mpsc::Sender<Command>,
    mpsc::Receiver<Report>,
    tokio::task::JoinHandle<()>,
    Arc<ClientConfig>,
) {
    let (server_tls, client_tls) = tls();
    let transport = SipTransport::bind(TransportConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ws: Some("127.0.0.1:0".parse().unwrap()),
        wss: Some(("127.0.0.1:0".parse().unwrap(), server_tls)),
        ..TransportConfig::default()
    })
    .await
    .unwrap();
    let (ws, wss) = (transport.ws_addr().unwrap(), transport.wss_addr().unwrap());
    let (ctx, crx) = mpsc::channel(8);
    let (rtx, rrx) = mpsc::channel(64);
    let task = tokio::spawn(server(transport, crx, rtx));
    (ws, wss, ctx, rrx, task, client_tls)
}

async fn report(rx: &mut mpsc::Receiver<Report>) -> Report {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no report within 5 s")
        .unwrap()
}

/// The whole JsSIP life cycle over `ws://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_like_client_registers_calls_is_called_and_unregisters_over_ws() {
    let (ws_addr, _, commands, mut reports, task, _) = start().await;
    let mut b = Browser::new(connect_ws(ws_addr).await, "df7jal23ls0d");

    // REGISTER with digest: 401, then 200 listing the binding, outbound required.
    let ok = b.register_authenticated(600, "127.0.0.1", "WS").await;
    assert_eq!(ok.status, 200, "{}", ok.reason);
    assert_eq!(ok.headers.get(&HeaderName::Require), Some("outbound"));
    let contact = ok.headers.get(&HeaderName::Contact).unwrap();
    assert!(
        contact.contains(".invalid;transport=ws>") && contact.ends_with(";expires=600"),
        "{contact}"
    );
    let via = ok.headers.top_via().unwrap();
    assert_eq!(via.host, "df7jal23ls0d.invalid");
    assert_eq!(
        via.received(),
        Some("127.0.0.1"),
        "RFC 3261 §18.2.1 received on the .invalid Via"
    );
    let Report::Bindings(1, Some(flow)) = report(&mut reports).await else {
        panic!()
    };
    assert_eq!(flow.transport, Transport::Ws);
    assert!(flow.connection.is_some());

    // The browser calls: INVITE with non-trickle SDP, 200 on this connection, ACK, BYE.
    let branch = b.branch();
    let invite = format!(
        "INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {h};branch={branch}\r\nMax-Forwards: 69\r\n\
To: <sip:echo@127.0.0.1>\r\nFrom: <sip:alice@127.0.0.1>;tag=br1\r\nCall-ID: brcall1\r\nCSeq: 8123 INVITE\r\n\
Contact: <sip:k3x9fq@{h};transport=ws;ob>\r\nAllow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
Supported: ice,replaces,outbound\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len(),
        h = b.host
    );
    b.send(invite).await;
    let ok = loop {
        let r = b.recv_response().await;
        if r.status >= 200 {
            break r;
        }
    };
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, SDP.as_bytes());
    let to = ok.headers.get(&HeaderName::To).unwrap().to_owned();
    let our_contact = match ok.headers.contacts().unwrap() {
        gateway::sip::message::Contacts::List(l) => l[0].uri.clone(),
        _ => panic!(),
    };
    for (method, cseq) in [("ACK", 8123), ("BYE", 8124)] {
        let br = b.branch();
        b.send(format!(
            "{method} {our_contact} SIP/2.0\r\nVia: SIP/2.0/WS {h};branch={br}\r\nMax-Forwards: 69\r\n\
To: {to}\r\nFrom: <sip:alice@127.0.0.1>;tag=br1\r\nCall-ID: brcall1\r\nCSeq: {cseq} {method}\r\n\
Content-Length: 0\r\n\r\n",
            h = b.host
        ))
        .await;
    }
    assert_eq!(report(&mut reports).await, Report::ByeReceived);
    assert_eq!(
        b.recv_response().await.status,
        200,
        "BYE answered on the connection"
    );

    // The gateway calls the browser: the INVITE arrives on this WebSocket, to the `.invalid`
    // Contact; the browser answers; the ACK and the BYE come on the same connection.
    commands
        .send(Command::Call(Uri::parse("sip:alice@127.0.0.1").unwrap()))
        .await
        .unwrap();
    let Message::Request(inv) = b.recv().await else {
        panic!()
    };
    assert_eq!(inv.method, Method::Invite);
    assert!(inv.uri.as_str().contains(".invalid"), "{}", inv.uri);
    assert_eq!(inv.headers.top_via().unwrap().transport, "WS");
    let mut ok = Response::for_request(&inv, 200);
    ok.ensure_to_tag("brt");
    ok.headers.push(
        HeaderName::Contact,
        format!("<sip:k3x9fq@{};transport=ws>", b.host),
    );
    ok.headers.push(HeaderName::ContentType, "application/sdp");
    ok.body = SDP.as_bytes().to_vec();
    b.send(String::from_utf8(ok.to_bytes()).unwrap()).await;
    assert_eq!(report(&mut reports).await, Report::CallAnswered(200));
    let Message::Request(ack) = b.recv().await else {
        panic!()
    };
    assert_eq!(ack.method, Method::Ack);
    let Message::Request(bye) = b.recv().await else {
        panic!()
    };
    assert_eq!(bye.method, Method::Bye);
    let mut r = Response::for_request(&bye, 200);
    r.ensure_to_tag("brt");
    b.send(String::from_utf8(r.to_bytes()).unwrap()).await;
    assert_eq!(report(&mut reports).await, Report::ByeAnswered(200));

    // un-REGISTER with the cached credentials (nc=2): accepted at once, binding gone.
    let ok = b.register_authenticated(0, "127.0.0.1", "WS").await;
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get(&HeaderName::Contact).is_none());
    assert_eq!(report(&mut reports).await, Report::Bindings(0, None));

    // Register again, then drop the connection: the binding goes with it.
    let ok = b.register_authenticated(600, "127.0.0.1", "WS").await;
    assert_eq!(ok.status, 200);
    let Report::Bindings(1, Some(flow)) = report(&mut reports).await else {
        panic!()
    };
    b.ws.close(None).await.unwrap();
    drop(b);
    assert_eq!(
        report(&mut reports).await,
        Report::Closed(flow.connection.unwrap(), 1)
    );
    task.abort();
}

/// `wss://`: the same over TLS; Via transport WSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_over_wss() {
    let (_, wss_addr, _commands, mut reports, task, client_tls) = start().await;
    let tcp = tokio::net::TcpStream::connect(wss_addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut req = format!("wss://localhost:{}", wss_addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "sip".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    let mut b = Browser::new(ws, "q1w2e3r4t5y6");
    let ok = b.register_authenticated(300, "localhost", "WSS").await;
    assert_eq!(ok.status, 200, "{}", ok.reason);
    let Report::Bindings(1, Some(flow)) = report(&mut reports).await else {
        panic!()
    };
    assert_eq!(flow.transport, Transport::Wss);
    task.abort();
}

/// A WebSocket handshake without `Sec-WebSocket-Protocol: sip` is refused with HTTP 400;
/// a CRLF CRLF keepalive frame gets a CRLF pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_sip_subprotocol_is_refused_and_keepalive_is_answered() {
    let (ws_addr, _, _commands, _reports, task, _) = start().await;
    let tcp = tokio::net::TcpStream::connect(ws_addr).await.unwrap();
    let err = tokio_tungstenite::client_async(format!("ws://{ws_addr}"), tcp)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    let mut ws = connect_ws(ws_addr).await;
    ws.send(WsMessage::text("\r\n\r\n")).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, WsMessage::text("\r\n"));
    task.abort();
}

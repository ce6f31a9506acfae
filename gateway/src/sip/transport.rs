//! SIP transports on tokio: UDP, TCP, TLS (rustls), and WebSocket (RFC 7118, `ws` and `wss`)
//! listeners, outbound TCP/TLS connections, and connection reuse in the spirit of RFC 5923: a
//! message for an address that has an open connection (inbound or outbound) goes on that
//! connection, so responses return on the one the request came in on. Stream connections are
//! cut into messages by the [`StreamFramer`] (Content-Length
//! framing, CRLF CRLF keepalives); a WebSocket carries one SIP message per text or binary
//! frame.
//!
//! Every stream connection has a [`ConnectionId`], carried by each [`Received`] item; the
//! registrar binds RFC 5626 flows to it, [`SipTransport::send_on`] writes to it, and
//! [`SipTransport::closed_connections`] reports when it goes away (so bindings on a dead flow are dropped).
//! WebSocket clients (JsSIP, SIP.js) put `.invalid` hosts in Via and Contact: nothing can be
//! sent to those, so requests for them go on their connection ([`needs_flow`]); a WebSocket
//! handshake without the `sip` subprotocol is refused (HTTP 400).
//!
//! A response whose TCP/TLS connection has closed is sent on a new connection to the Via's
//! `received` address and sent-by port (RFC 3261 §18.2.2), see
//! [`SipTransport::send_response`].
//!
//! WebSocket library: tokio-tungstenite (already in the tree through axum's `ws` feature); see
//! `docs/decisions/0005-sip-over-websocket.md`.
//!
//! This is the IO shell only; the protocol cores stay sans-IO and are fed [`Received`] items.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::message::Uri;
use super::parse::{Framed, StreamFramer};
use super::transaction::Reliability;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// TCP byte stream.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SIP over WebSocket (RFC 7118).
    Ws,
    /// SIP over secure WebSocket (RFC 7118).
    Wss,
}

/// Identifies one stream connection (TCP, TLS, WS, WSS) for its whole life; never reused
/// while the transport lives. The registrar binds RFC 5626 flows to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

impl Transport {
    /// Whether the transport retransmits by itself.
    pub fn reliability(&self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                Reliability::Reliable
            }
        }
    }

    /// The Via transport token.
    pub fn via_token(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The transport named by a Via token or a `transport=` URI parameter (any case).
    pub fn from_token(token: &str) -> Option<Transport> {
        Some(match token.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ => return None,
        })
    }
}

/// One received SIP message (or datagram) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The transport it arrived on.
    pub transport: Transport,
    /// The peer address (for streams, the connection's remote address).
    pub source: SocketAddr,
    /// The message bytes (a whole message for streams, the datagram for UDP).
    pub bytes: Vec<u8>,
    /// The stream connection it arrived on (`None` for UDP).
    pub connection: Option<ConnectionId>,
}

/// Whether a request for `uri` cannot be sent to its host and must go over the flow (the
/// connection) its owner registered or called on: a `.invalid` host (RFC 7118 §5: WebSocket
/// clients have no reachable address) or a `transport=ws`/`wss` URI (we cannot open a
/// WebSocket to a browser).
pub fn needs_flow(uri: &Uri) -> bool {
    let Some(parts) = uri.sip_parts() else {
        return false;
    };
    let transport = uri.param("transport").flatten().unwrap_or("");
    parts.host.to_ascii_lowercase().ends_with(".invalid")
        || transport.eq_ignore_ascii_case("ws")
        || transport.eq_ignore_ascii_case("wss")
}

/// What to listen on.
#[derive(Clone, Default)]
pub struct TransportConfig {
    /// UDP listen address.
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address and server configuration (certificate and key).
    pub tls: Option<(SocketAddr, Arc<ServerConfig>)>,
    /// SIP over WebSocket (RFC 7118) listen address (`ws://`).
    pub ws: Option<SocketAddr>,
    /// SIP over secure WebSocket listen address and TLS server configuration (`wss://`).
    pub wss: Option<(SocketAddr, Arc<ServerConfig>)>,
    /// Client configuration for outbound TLS connections.
    pub tls_client: Option<Arc<ClientConfig>>,
    /// Most simultaneous stream connections; further inbound ones are closed at once.
    pub max_connections: usize,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("tls", &self.tls.as_ref().map(|t| t.0))
            .field("ws", &self.ws)
            .field("wss", &self.wss.as_ref().map(|t| t.0))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    transport: Transport,
    writer: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

/// State shared by the listeners, the connection tasks and the [`SipTransport`].
#[derive(Debug)]
struct Shared {
    table: Mutex<HashMap<SocketAddr, Connection>>,
    next_id: AtomicU64,
    inbound: mpsc::Sender<Received>,
    /// Set once someone asked for closure reports ([`SipTransport::closed_connections`]).
    closed: Mutex<Option<mpsc::UnboundedSender<ConnectionId>>>,
    max_connections: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Connection>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| !c.task.is_finished())
            .count()
    }

    fn new_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Called by a connection task as it ends: forget it (unless a newer connection from the
    /// same address replaced it) and report the closure.
    fn finished(&self, peer: SocketAddr, id: ConnectionId) {
        let mut t = self.lock();
        if t.get(&peer).is_some_and(|c| c.id == id) {
            t.remove(&peer);
        }
        drop(t);
        if let Some(tx) = self
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.send(id);
        }
    }
}

/// Bound listeners and open connections. Receive with [`SipTransport::recv`], send with
/// [`SipTransport::send`].
#[derive(Debug)]
pub struct SipTransport {
    udp: Option<Arc<UdpSocket>>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    tls_client: Option<Arc<ClientConfig>>,
    shared: Arc<Shared>,
    inbound_rx: mpsc::Receiver<Received>,
    listeners: Vec<JoinHandle<()>>,
}

const INBOUND_QUEUE: usize = 1024;
const WRITE_QUEUE: usize = 256;
const MAX_MESSAGE: usize = 65_535;
/// How long a TLS or WebSocket handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How an accepted TCP connection is turned into a SIP connection.
#[derive(Clone)]
enum Listener {
    Tcp,
    Tls(TlsAcceptor),
    Ws,
    Wss(TlsAcceptor),
}

impl SipTransport {
    /// Binds the configured listeners (port 0 picks a free port).
    pub async fn bind(config: TransportConfig) -> io::Result<SipTransport> {
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let shared = Arc::new(Shared {
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            inbound: inbound_tx,
            closed: Mutex::new(None),
            max_connections: if config.max_connections == 0 {
                1024
            } else {
                config.max_connections
            },
        });
        let mut listeners = Vec::new();
        let udp = match config.udp {
            Some(a) => {
                let s = Arc::new(UdpSocket::bind(a).await?);
                listeners.push(tokio::spawn(udp_loop(s.clone(), shared.inbound.clone())));
                Some(s)
            }
            None => None,
        };
        let mut bind_stream = async |addr: Option<SocketAddr>, kind: Listener| {
            let Some(a) = addr else {
                return Ok::<_, io::Error>(None);
            };
            let l = TcpListener::bind(a).await?;
            let local = l.local_addr()?;
            listeners.push(tokio::spawn(accept_loop(l, kind, shared.clone())));
            Ok(Some(local))
        };
        let tcp_addr = bind_stream(config.tcp, Listener::Tcp).await?;
        let tls_addr = match config.tls {
            Some((a, server)) => {
                bind_stream(Some(a), Listener::Tls(TlsAcceptor::from(server))).await?
            }
            None => None,
        };
        let ws_addr = bind_stream(config.ws, Listener::Ws).await?;
        let wss_addr = match config.wss {
            Some((a, server)) => {
                bind_stream(Some(a), Listener::Wss(TlsAcceptor::from(server))).await?
            }
            None => None,
        };
        Ok(SipTransport {
            udp,
            tcp_addr,
            tls_addr,
            ws_addr,
            wss_addr,
            tls_client: config.tls_client,
            shared,
            inbound_rx,
            listeners,
        })
    }

    /// The UDP listen address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The TCP listen address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The TLS listen address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The WebSocket (`ws://`) listen address.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The secure WebSocket (`wss://`) listen address.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// Open stream connections (inbound and outbound).
    pub fn open_connections(&self) -> usize {
        self.shared.open()
    }

    /// The transport of the open connection to `peer`, if any.
    pub fn connection_to(&self, peer: SocketAddr) -> Option<Transport> {
        self.shared
            .lock()
            .get(&peer)
            .filter(|c| !c.task.is_finished())
            .map(|c| c.transport)
    }

    /// The id of the open connection to `peer`, if any.
    pub fn connection_id(&self, peer: SocketAddr) -> Option<ConnectionId> {
        self.shared
            .lock()
            .get(&peer)
            .filter(|c| !c.task.is_finished())
            .map(|c| c.id)
    }

    /// The next received message; `None` only after every listener ended.
    pub async fn recv(&mut self) -> Option<Received> {
        self.inbound_rx.recv().await
    }

    /// A receiver of the ids of stream connections as they close (either side, or a framing
    /// error), to drop registrations bound to those flows
    /// ([`super::registrar::Registrar::connection_closed`]). Owned separately so a loop can
    /// select on it and on [`SipTransport::recv`] at once. Asking again replaces the earlier
    /// receiver; until someone asks, closures are not recorded.
    pub fn closed_connections(&self) -> mpsc::UnboundedReceiver<ConnectionId> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self
            .shared
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Sends `bytes` on connection `id` (the flow a registration or request came on).
    /// Fails with `NotConnected` when it has closed.
    pub async fn send_on(&self, id: ConnectionId, bytes: Vec<u8>) -> io::Result<()> {
        let writer = self
            .shared
            .lock()
            .values()
            .find(|c| c.id == id && !c.task.is_finished())
            .map(|c| c.writer.clone());
        match writer {
            Some(w) => w.send(bytes).await.map_err(|_| closed()),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{id} is closed"),
            )),
        }
    }

    /// Sends `bytes` to `dest`: on the open connection to `dest` if there is one (whatever
    /// `transport` says, RFC 5923-style reuse), else over `transport` (UDP, or a new TCP/TLS
    /// connection; `server_name` names the TLS peer for certificate checks). A WebSocket can
    /// only be reached on a connection the client opened: without one this fails with
    /// `NotConnected`.
    pub async fn send(
        &self,
        dest: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
        server_name: Option<&str>,
    ) -> io::Result<()> {
        let existing = self
            .shared
            .lock()
            .get(&dest)
            .filter(|c| !c.task.is_finished())
            .map(|c| c.writer.clone());
        if let Some(w) = existing {
            return w.send(bytes).await.map_err(|_| closed());
        }
        match transport {
            Transport::Udp => {
                let udp = self.udp.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::Unsupported, "no UDP listener configured")
                })?;
                udp.send_to(&bytes, dest).await.map(|_| ())
            }
            Transport::Ws | Transport::Wss => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("no WebSocket connection from {dest}; a WebSocket peer must connect first"),
            )),
            Transport::Tcp | Transport::Tls => {
                let writer = self.connect(dest, transport, server_name).await?;
                writer.send(bytes).await.map_err(|_| closed())
            }
        }
    }

    async fn connect(
        &self,
        dest: SocketAddr,
        transport: Transport,
        server_name: Option<&str>,
    ) -> io::Result<mpsc::Sender<Vec<u8>>> {
        if self.open_connections() >= self.shared.max_connections {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "connection limit reached",
            ));
        }
        let stream = TcpStream::connect(dest).await?;
        let _ = stream.set_nodelay(true);
        if transport == Transport::Tls {
            let config = self.tls_client.clone().ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "no TLS client configuration")
            })?;
            let name = server_name.map_or_else(
                || ServerName::IpAddress(dest.ip().into()),
                |n| {
                    ServerName::try_from(n.to_owned())
                        .unwrap_or_else(|_| ServerName::IpAddress(dest.ip().into()))
                },
            );
            let tls = TlsConnector::from(config).connect(name, stream).await?;
            Ok(spawn_connection(tls, dest, Transport::Tls, &self.shared))
        } else {
            Ok(spawn_connection(stream, dest, Transport::Tcp, &self.shared))
        }
    }

    /// Sends a response the transaction layer addressed to `dest` (the request's source):
    /// on the request's connection if it is still open; over UDP as is; for TCP/TLS whose
    /// connection closed, on a new connection to the top Via's `received` address (else the
    /// source address) and sent-by port (RFC 3261 §18.2.2). WebSocket responses can only go
    /// on the request's connection.
    pub async fn send_response(
        &self,
        dest: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        let open = self
            .shared
            .lock()
            .get(&dest)
            .is_some_and(|c| !c.task.is_finished());
        if open || !matches!(transport, Transport::Tcp | Transport::Tls) {
            return self.send(dest, transport, bytes, None).await;
        }
        let fallback = response_fallback(&bytes, dest, transport).unwrap_or(dest);
        self.send(fallback, transport, bytes, None).await
    }

    /// Closes every listener and connection.
    pub async fn shutdown(self) {
        for l in &self.listeners {
            l.abort();
        }
        let conns: Vec<Connection> = self.shared.lock().drain().map(|(_, c)| c).collect();
        for c in &conns {
            c.task.abort();
        }
        for l in self.listeners {
            let _ = l.await;
        }
        for c in conns {
            let _ = c.task.await;
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "connection closed")
}

/// RFC 3261 §18.2.2 for a reliable transport whose connection is gone: the `received`
/// address (else the source's) and the sent-by port (else 5060, 5061 for TLS) of the top Via.
pub fn response_fallback(
    bytes: &[u8],
    source: SocketAddr,
    transport: Transport,
) -> Option<SocketAddr> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(bytes.get(..head_end)?).ok()?;
    let via = head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case("via") || n.eq_ignore_ascii_case("v")).then_some(v)
    })?;
    let top = super::parse::split_list(via).ok()?.into_iter().next()?;
    let via = super::parse::parse_via(top).ok()?;
    let ip = via
        .received()
        .and_then(|r| r.parse().ok())
        .unwrap_or(source.ip());
    let default = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    Some(SocketAddr::new(ip, via.port.unwrap_or(default)))
}

async fn udp_loop(socket: Arc<UdpSocket>, tx: mpsc::Sender<Received>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, source)) => {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                let item = Received {
                    transport: Transport::Udp,
                    source,
                    bytes,
                    connection: None,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send surfaces here on Linux.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        }
    }
}

async fn accept_loop(listener: TcpListener, kind: Listener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        if shared.open() >= shared.max_connections {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match kind.clone() {
            Listener::Tcp => {
                spawn_connection(stream, peer, Transport::Tcp, &shared);
            }
            // Handshakes in their own task, bounded in time, so a slow client cannot stall the
            // accept loop or hold a socket for ever.
            Listener::Tls(acceptor) => {
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(s)) = hs.await {
                        spawn_connection(s, peer, Transport::Tls, &shared);
                    }
                });
            }
            Listener::Ws => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        accept_ws(stream, peer, Transport::Ws, shared),
                    )
                    .await;
                });
            }
            Listener::Wss(acceptor) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async move {
                        if let Ok(s) = acceptor.accept(stream).await {
                            accept_ws(s, peer, Transport::Wss, shared).await;
                        }
                    })
                    .await;
                });
            }
        }
    }
}

/// RFC 7118 §4.1: the client must offer the `sip` subprotocol; we select it.
// The signature is tungstenite's `Callback`; its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn check_subprotocol(req: &WsRequest, mut resp: WsResponse) -> Result<WsResponse, ErrorResponse> {
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offered {
        let mut err = ErrorResponse::new(Some(
            "SIP over WebSocket needs Sec-WebSocket-Protocol: sip (RFC 7118)".to_owned(),
        ));
        *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
        return Err(err);
    }
    resp.headers_mut().insert(
        "sec-websocket-protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("sip"),
    );
    Ok(resp)
}

async fn accept_ws<S>(stream: S, peer: SocketAddr, transport: Transport, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_subprotocol, Some(config))
            .await
    else {
        return;
    };
    let (writer, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let id = shared.new_id();
    let shared2 = shared.clone();
    let task = tokio::spawn(async move {
        let (mut sink, mut source) = ws.split();
        loop {
            tokio::select! {
                m = source.next() => {
                    let bytes = match m {
                        Some(Ok(WsMessage::Text(t))) => t.as_str().as_bytes().to_vec(),
                        Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
                            continue
                        }
                        Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                    };
                    if bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
                        // A CRLF CRLF keepalive ping gets a CRLF pong; stray CRLFs are dropped.
                        if bytes == b"\r\n\r\n" && sink.send(WsMessage::text("\r\n")).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let item = Received { transport, source: peer, bytes, connection: Some(id) };
                    if shared2.inbound.send(item).await.is_err() {
                        break;
                    }
                }
                m = outgoing.recv() => {
                    let Some(bytes) = m else { break };
                    let msg = match String::from_utf8(bytes) {
                        Ok(text) => WsMessage::text(text),
                        Err(e) => WsMessage::binary(e.into_bytes()),
                    };
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
        shared2.finished(peer, id);
    });
    insert(&shared, peer, id, transport, writer, task);
}

fn insert(
    shared: &Shared,
    peer: SocketAddr,
    id: ConnectionId,
    transport: Transport,
    writer: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
) {
    let mut t = shared.lock();
    t.retain(|_, c| !c.task.is_finished());
    t.insert(
        peer,
        Connection {
            id,
            transport,
            writer,
            task,
        },
    );
}

fn spawn_connection<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    shared: &Arc<Shared>,
) -> mpsc::Sender<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (writer, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let id = shared.new_id();
    let shared2 = shared.clone();
    let task = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut framer = StreamFramer::new(MAX_MESSAGE);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => {
                    let n = match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    framer.push(buf.get(..n).unwrap_or_default());
                    let mut broken = false;
                    loop {
                        match framer.next_item() {
                            Ok(Some(Framed::Message(bytes))) => {
                                let item = Received { transport, source: peer, bytes, connection: Some(id) };
                                if shared2.inbound.send(item).await.is_err() {
                                    broken = true;
                                    break;
                                }
                            }
                            Ok(Some(Framed::KeepAlivePing)) => {
                                if wr.write_all(b"\r\n").await.is_err() {
                                    broken = true;
                                    break;
                                }
                            }
                            Ok(None) => break,
                            // A stream we cannot frame cannot be resynchronised: close it.
                            Err(_) => {
                                broken = true;
                                break;
                            }
                        }
                    }
                    if broken {
                        break;
                    }
                }
                m = outgoing.recv() => {
                    let Some(bytes) = m else { break };
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = wr.shutdown().await;
        shared2.finished(peer, id);
    });
    insert(shared, peer, id, transport, writer.clone(), task);
    writer
}

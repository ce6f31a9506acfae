//! SIP transports on tokio: UDP, TCP and TLS (rustls) listeners, outbound connections, and
//! connection reuse in the spirit of RFC 5923: a message for an address that has an open
//! connection (inbound or outbound) goes on that connection, so responses return on the one the
//! request came in on. Stream connections are cut into messages by the
//! [`StreamFramer`](super::parse::StreamFramer) (Content-Length framing, CRLF CRLF keepalives).
//!
//! This is the IO shell only; the protocol cores stay sans-IO and are fed [`Received`] items.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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
}

impl Transport {
    /// Whether the transport retransmits by itself.
    pub fn reliability(&self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp | Transport::Tls => Reliability::Reliable,
        }
    }

    /// The Via transport token.
    pub fn via_token(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
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
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug)]
struct Connection {
    transport: Transport,
    writer: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

type ConnectionTable = Arc<Mutex<HashMap<SocketAddr, Connection>>>;

fn lock(table: &ConnectionTable) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Connection>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bound listeners and open connections. Receive with [`SipTransport::recv`], send with
/// [`SipTransport::send`].
#[derive(Debug)]
pub struct SipTransport {
    udp: Option<Arc<UdpSocket>>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    tls_client: Option<Arc<ClientConfig>>,
    connections: ConnectionTable,
    inbound_tx: mpsc::Sender<Received>,
    inbound_rx: mpsc::Receiver<Received>,
    listeners: Vec<JoinHandle<()>>,
    max_connections: usize,
}

const INBOUND_QUEUE: usize = 1024;
const WRITE_QUEUE: usize = 256;
const MAX_MESSAGE: usize = 65_535;

impl SipTransport {
    /// Binds the configured listeners (port 0 picks a free port).
    pub async fn bind(config: TransportConfig) -> io::Result<SipTransport> {
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let connections: ConnectionTable = Arc::default();
        let max_connections = if config.max_connections == 0 {
            1024
        } else {
            config.max_connections
        };
        let mut listeners = Vec::new();
        let udp = match config.udp {
            Some(a) => {
                let s = Arc::new(UdpSocket::bind(a).await?);
                listeners.push(tokio::spawn(udp_loop(s.clone(), inbound_tx.clone())));
                Some(s)
            }
            None => None,
        };
        let mut tcp_addr = None;
        if let Some(a) = config.tcp {
            let l = TcpListener::bind(a).await?;
            tcp_addr = Some(l.local_addr()?);
            listeners.push(tokio::spawn(accept_loop(
                l,
                None,
                connections.clone(),
                inbound_tx.clone(),
                max_connections,
            )));
        }
        let mut tls_addr = None;
        if let Some((a, server)) = config.tls {
            let l = TcpListener::bind(a).await?;
            tls_addr = Some(l.local_addr()?);
            listeners.push(tokio::spawn(accept_loop(
                l,
                Some(TlsAcceptor::from(server)),
                connections.clone(),
                inbound_tx.clone(),
                max_connections,
            )));
        }
        Ok(SipTransport {
            udp,
            tcp_addr,
            tls_addr,
            tls_client: config.tls_client,
            connections,
            inbound_tx,
            inbound_rx,
            listeners,
            max_connections,
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

    /// Open stream connections (inbound and outbound).
    pub fn open_connections(&self) -> usize {
        lock(&self.connections)
            .values()
            .filter(|c| !c.task.is_finished())
            .count()
    }

    /// The transport of the open connection to `peer`, if any.
    pub fn connection_to(&self, peer: SocketAddr) -> Option<Transport> {
        lock(&self.connections)
            .get(&peer)
            .filter(|c| !c.task.is_finished())
            .map(|c| c.transport)
    }

    /// The next received message; `None` only after every listener ended.
    pub async fn recv(&mut self) -> Option<Received> {
        self.inbound_rx.recv().await
    }

    /// Sends `bytes` to `dest`: on the open connection to `dest` if there is one (whatever
    /// `transport` says, RFC 5923-style reuse), else over `transport` (UDP, or a new TCP/TLS
    /// connection; `server_name` names the TLS peer for certificate checks).
    pub async fn send(
        &self,
        dest: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
        server_name: Option<&str>,
    ) -> io::Result<()> {
        let existing = lock(&self.connections)
            .get(&dest)
            .filter(|c| !c.task.is_finished())
            .map(|c| c.writer.clone());
        if let Some(w) = existing {
            return w
                .send(bytes)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection closed"));
        }
        match transport {
            Transport::Udp => {
                let udp = self.udp.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::Unsupported, "no UDP listener configured")
                })?;
                udp.send_to(&bytes, dest).await.map(|_| ())
            }
            Transport::Tcp | Transport::Tls => {
                if self.open_connections() >= self.max_connections {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        "connection limit reached",
                    ));
                }
                let stream = TcpStream::connect(dest).await?;
                let _ = stream.set_nodelay(true);
                let writer = if transport == Transport::Tls {
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
                    spawn_connection(
                        tls,
                        dest,
                        Transport::Tls,
                        self.connections.clone(),
                        self.inbound_tx.clone(),
                    )
                } else {
                    spawn_connection(
                        stream,
                        dest,
                        Transport::Tcp,
                        self.connections.clone(),
                        self.inbound_tx.clone(),
                    )
                };
                writer
                    .send(bytes)
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection closed"))
            }
        }
    }

    /// Closes every listener and connection.
    pub async fn shutdown(self) {
        for l in &self.listeners {
            l.abort();
        }
        let conns: Vec<Connection> = lock(&self.connections).drain().map(|(_, c)| c).collect();
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

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    table: ConnectionTable,
    tx: mpsc::Sender<Received>,
    max_connections: usize,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let open = lock(&table)
            .values()
            .filter(|c| !c.task.is_finished())
            .count();
        if open >= max_connections {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                spawn_connection(stream, peer, Transport::Tcp, table.clone(), tx.clone());
            }
            Some(acceptor) => {
                // Handshake in its own task so a slow client cannot stall the accept loop.
                let acceptor = acceptor.clone();
                let (table, tx) = (table.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(s) = acceptor.accept(stream).await {
                        spawn_connection(s, peer, Transport::Tls, table, tx);
                    }
                });
            }
        }
    }
}

fn spawn_connection<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    table: ConnectionTable,
    tx: mpsc::Sender<Received>,
) -> mpsc::Sender<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (writer, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let table2 = table.clone();
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
                                let item = Received { transport, source: peer, bytes };
                                if tx.send(item).await.is_err() {
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
        lock(&table2).remove(&peer);
    });
    let mut t = lock(&table);
    t.retain(|_, c| !c.task.is_finished());
    t.insert(
        peer,
        Connection {
            transport,
            writer: writer.clone(),
            task,
        },
    );
    drop(t);
    writer
}

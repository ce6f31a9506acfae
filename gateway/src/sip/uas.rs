//! A minimal UAS over the transaction layer: answers OPTIONS 200 (with Allow/Accept/Supported),
//! optionally acts as a digest-authenticating registrar (REGISTER → 401 → 200), refuses what it does not implement (501, 416, 420, 415), answers malformed requests 400/505,
//! and a tokio UDP adapter that drives it. It is the smallest useful SIP element and the shape
//! the B2BUA core takes: a sans-IO core plus a thin socket loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::DigestServer;
use super::message::{HeaderName, Method, Response};
use super::parse::{UasPolicy, validate_request};
use super::registrar::{Flow, Registrar, RegistrarConfig};
use super::transaction::{
    Reliability, TimerConfig, TransactionLayer, TransactionStats, Transmit, TuEvent,
};
use super::transport::{SipTransport, Transport, TransportConfig};

/// The sans-IO OPTIONS/501 responder.
#[derive(Debug)]
pub struct OptionsUas {
    layer: TransactionLayer,
    policy: UasPolicy,
    tag_counter: u64,
    answered: u64,
    registrar: Option<Registrar>,
    authorized: u64,
}

impl Default for OptionsUas {
    fn default() -> Self {
        Self::new(TimerConfig::default())
    }
}

impl OptionsUas {
    /// A responder implementing only OPTIONS (ACK and CANCEL are handled by the transactions).
    pub fn new(timers: TimerConfig) -> Self {
        let policy = UasPolicy {
            methods: vec![Method::Options],
            ..UasPolicy::default()
        };
        let mut layer = TransactionLayer::new(timers);
        layer.set_policy(Some(policy.clone()));
        OptionsUas {
            layer,
            policy,
            tag_counter: 0,
            answered: 0,
            registrar: None,
            authorized: 0,
        }
    }

    /// A responder that is also a registrar ([`Registrar`], default settings): REGISTERs are
    /// challenged with `digest` (401) and authenticated ones bound and answered 200 with
    /// every binding of the address-of-record.
    pub fn with_registrar(timers: TimerConfig, digest: DigestServer) -> Self {
        let mut uas = Self::new(timers);
        uas.policy.methods.push(Method::Register);
        uas.layer.set_policy(Some(uas.policy.clone()));
        uas.registrar = Some(Registrar::new(RegistrarConfig::default(), digest));
        uas
    }

    /// The registrar, if this responder is one.
    pub fn registrar(&self) -> Option<&Registrar> {
        self.registrar.as_ref()
    }

    /// Sets the policy the transaction layer checks new requests against (see
    /// [`TransactionLayer::set_policy`]); what passes it and is not OPTIONS (or REGISTER for a
    /// registrar) is still answered 501 by this responder.
    pub fn with_layer_policy(mut self, policy: Option<UasPolicy>) -> Self {
        self.layer.set_policy(policy);
        self
    }

    /// REGISTER requests whose credentials were accepted.
    pub fn authorized(&self) -> u64 {
        self.authorized
    }

    /// Feeds a received datagram.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8], source: SocketAddr) {
        self.handle_received(now, bytes, source, Reliability::Unreliable);
    }

    /// Feeds a received message from any transport (a datagram, or one framed stream message).
    pub fn handle_received(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: SocketAddr,
        reliability: Reliability,
    ) {
        self.layer.handle_datagram(now, bytes, source, reliability);
        let transport = match reliability {
            Reliability::Unreliable => Transport::Udp,
            Reliability::Reliable => Transport::Tcp,
        };
        self.run_tu(now, transport);
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.run_tu(now, Transport::Udp);
    }

    /// When to call [`OptionsUas::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.layer.poll_timeout()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.layer.poll_transmit()
    }

    /// Transaction counters.
    pub fn transaction_stats(&self) -> &TransactionStats {
        self.layer.stats()
    }

    /// Requests answered by the TU (not counting 400s for malformed ones).
    pub fn answered(&self) -> u64 {
        self.answered
    }

    fn run_tu(&mut self, now: Instant, transport: Transport) {
        while let Some(ev) = self.layer.poll_event() {
            let TuEvent::Request {
                key,
                request,
                source,
            } = ev
            else {
                continue;
            };
            self.tag_counter += 1;
            let tag = format!("sb{:x}", self.tag_counter);
            let mut resp = match validate_request(&request, &self.policy) {
                Err(rej) => rej.response(&request, &self.policy),
                Ok(()) if request.method == Method::Register => {
                    let Some(registrar) = self.registrar.as_mut() else {
                        continue;
                    };
                    let flow = Flow {
                        transport,
                        remote: source,
                        connection: None,
                    };
                    let r = registrar.handle_register(now, &request, flow);
                    self.authorized = registrar.stats().accepted;
                    r
                }
                Ok(()) => {
                    let mut r = Response::for_request(&request, 200);
                    let allow: Vec<&str> = self
                        .policy
                        .methods
                        .iter()
                        .map(Method::as_str)
                        .chain(["ACK", "CANCEL"])
                        .collect();
                    r.headers.push(HeaderName::Allow, allow.join(", "));
                    r.headers
                        .push(HeaderName::Accept, self.policy.content_types.join(", "));
                    r
                }
            };
            resp.ensure_to_tag(&tag);
            resp.headers.push(HeaderName::Server, "spanbridge");
            if self.layer.send_response(now, &key, resp).is_ok() {
                self.answered += 1;
            }
        }
    }
}

/// Counters shared with a running [`UdpUas`].
#[derive(Debug, Default)]
pub struct UdpUasCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Send errors (e.g. ICMP unreachable reported on the socket).
    pub send_errors: AtomicU64,
    /// Malformed requests (answered 400/505 when addressable).
    pub malformed_requests: AtomicU64,
    /// Malformed responses dropped.
    pub malformed_responses: AtomicU64,
    /// Requests the TU answered (each transaction once; retransmissions are absorbed below it).
    pub answered: AtomicU64,
    /// REGISTERs whose digest credentials were accepted.
    pub authorized: AtomicU64,
    /// Well-formed requests the transaction layer refused (501, 416, 483, 482, 420, 415).
    pub rejected_requests: AtomicU64,
    /// ACKs for non-2xx finals absorbed by INVITE server transactions.
    pub absorbed_acks: AtomicU64,
    /// Open TCP/TLS connections after the last event.
    pub open_connections: AtomicU64,
}

/// A running [`OptionsUas`] on UDP (and, with [`UdpUas::bind_transport`], TCP/TLS); stop it
/// with [`UdpUas::shutdown`].
#[derive(Debug)]
pub struct UdpUas {
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    counters: Arc<UdpUasCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl UdpUas {
    /// Binds `addr` (port 0 for any) and serves until shut down.
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpUas> {
        Self::bind_with(addr, OptionsUas::default()).await
    }

    /// Binds `addr` and serves `uas` (e.g. one built with [`OptionsUas::with_registrar`]).
    pub async fn bind_with(addr: SocketAddr, uas: OptionsUas) -> io::Result<UdpUas> {
        Self::bind_transport(
            TransportConfig {
                udp: Some(addr),
                ..TransportConfig::default()
            },
            uas,
        )
        .await
    }

    /// Serves `uas` on every listener in `config` (UDP must be among them); responses to a
    /// request that came over TCP/TLS go back on its connection.
    pub async fn bind_transport(config: TransportConfig, uas: OptionsUas) -> io::Result<UdpUas> {
        let transport = SipTransport::bind(config).await?;
        let local_addr = transport.udp_addr().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a UDP listener is required")
        })?;
        let tcp_addr = transport.tcp_addr();
        let tls_addr = transport.tls_addr();
        let counters = Arc::new(UdpUasCounters::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(transport, uas, counters.clone(), stopped));
        Ok(UdpUas {
            local_addr,
            tcp_addr,
            tls_addr,
            counters,
            stop: Some(stop),
            task,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP listen address, if configured.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The TLS listen address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Live counters.
    pub fn counters(&self) -> &UdpUasCounters {
        &self.counters
    }

    /// Stops the loop and waits for it; returns its IO error if it failed.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

async fn serve(
    mut transport: SipTransport,
    mut uas: OptionsUas,
    counters: Arc<UdpUasCounters>,
    mut stopped: oneshot::Receiver<()>,
) -> io::Result<()> {
    let mut peers: std::collections::HashMap<SocketAddr, Transport> =
        std::collections::HashMap::new();
    loop {
        let deadline = uas.poll_timeout();
        tokio::select! {
            _ = &mut stopped => {
                transport.shutdown().await;
                return Ok(());
            }
            r = transport.recv() => {
                let Some(item) = r else {
                    return Err(io::Error::other("all SIP listeners ended"));
                };
                counters.received.fetch_add(1, Ordering::Relaxed);
                if item.transport != Transport::Udp {
                    if peers.len() >= 4096 {
                        // Forget peers whose connection is gone (bounded memory).
                        peers.retain(|a, _| transport.connection_to(*a).is_some());
                    }
                    peers.insert(item.source, item.transport);
                }
                uas.handle_received(
                    Instant::now(),
                    &item.bytes,
                    item.source,
                    item.transport.reliability(),
                );
            }
            _ = sleep_until(deadline) => uas.handle_timeout(Instant::now()),
        }
        let s = uas.transaction_stats();
        counters
            .malformed_requests
            .store(s.malformed_requests, Ordering::Relaxed);
        counters
            .malformed_responses
            .store(s.malformed_responses_dropped, Ordering::Relaxed);
        counters
            .rejected_requests
            .store(s.rejected_requests, Ordering::Relaxed);
        counters
            .absorbed_acks
            .store(s.absorbed_acks, Ordering::Relaxed);
        counters.answered.store(uas.answered(), Ordering::Relaxed);
        counters
            .authorized
            .store(uas.authorized(), Ordering::Relaxed);
        while let Some(t) = uas.poll_transmit() {
            let via = peers.get(&t.dest).copied().unwrap_or(Transport::Udp);
            match transport.send_response(t.dest, via, t.bytes).await {
                Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
        counters
            .open_connections
            .store(transport.open_connections() as u64, Ordering::Relaxed);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

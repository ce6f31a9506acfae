//! The tokio shell around the [`B2bua`] core: one UDP SIP socket, an RTP port pair per leg
//! allocated when the core asks, a [`Relay`] per call, and live counters (calls, legs, RTP
//! sockets) that tests and `gwctl` read. Everything a call holds is released when it ends.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::b2bua::{B2bua, B2buaConfig, CallEvent, CallUri};
use super::rtp_relay::{LegPorts, Relay, RelayCounters};
use crate::sip::transport::{SipTransport, Transport, TransportConfig};

/// Live figures of a running [`B2buaServer`].
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Live calls.
    pub calls: AtomicUsize,
    /// Live legs.
    pub legs: AtomicUsize,
    /// Open RTP/RTCP sockets.
    pub rtp_sockets: Arc<AtomicUsize>,
    /// Live SIP transactions.
    pub transactions: AtomicUsize,
    /// Calls answered so far.
    pub answered: AtomicU64,
    /// Calls ended so far.
    pub ended: AtomicU64,
    /// Calls hung up because a leg never ACKed our 2xx.
    pub ack_timeouts: AtomicU64,
    /// RTP packets relayed A → B over all ended calls.
    pub rtp_a_to_b: AtomicU64,
    /// RTP packets relayed B → A over all ended calls.
    pub rtp_b_to_a: AtomicU64,
}

/// A running B2BUA; stop it with [`B2buaServer::shutdown`].
#[derive(Debug)]
pub struct B2buaServer {
    sip_addr: SocketAddr,
    counters: Arc<ServerCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl B2buaServer {
    /// Binds `config.sip_addr` (UDP; port 0 picks one, and the core is told the real port)
    /// and serves calls, anchoring media on `media_ip`.
    pub async fn start(mut config: B2buaConfig, media_ip: IpAddr) -> io::Result<B2buaServer> {
        let transport = SipTransport::bind(TransportConfig {
            udp: Some(config.sip_addr),
            ..TransportConfig::default()
        })
        .await?;
        let sip_addr = transport
            .udp_addr()
            .ok_or_else(|| io::Error::other("UDP listener has no address"))?;
        config.sip_addr = sip_addr;
        let core =
            B2bua::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let counters = Arc::new(ServerCounters::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(transport, core, media_ip, counters.clone(), stopped));
        Ok(B2buaServer {
            sip_addr,
            counters,
            stop: Some(stop),
            task,
        })
    }

    /// The SIP address.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Live counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// Stops serving; every relay and socket is closed before this returns.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

fn fold_counters(counters: &ServerCounters, relay: &RelayCounters) {
    counters
        .rtp_a_to_b
        .fetch_add(relay.a_to_b.load(Ordering::Relaxed), Ordering::Relaxed);
    counters
        .rtp_b_to_a
        .fetch_add(relay.b_to_a.load(Ordering::Relaxed), Ordering::Relaxed);
}

async fn serve(
    mut transport: SipTransport,
    mut core: B2bua,
    media_ip: IpAddr,
    counters: Arc<ServerCounters>,
    mut stopped: oneshot::Receiver<()>,
) -> io::Result<()> {
    let mut relays: HashMap<CallUri, Relay> = HashMap::new();
    let mut seed: u64 = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        Instant::now(),
    );
    loop {
        tokio::select! {
            _ = &mut stopped => {
                for (_, r) in relays.drain() {
                    fold_counters(&counters, r.counters());
                    r.stop().await;
                }
                transport.shutdown().await;
                return Ok(());
            }
            r = transport.recv() => {
                let Some(item) = r else {
                    return Err(io::Error::other("SIP listener ended"));
                };
                core.handle_datagram(Instant::now(), &item.bytes, item.source);
            }
            _ = sleep_until(core.poll_timeout()) => core.handle_timeout(Instant::now()),
        }
        while let Some(ev) = core.poll_event() {
            match ev {
                CallEvent::AllocateMedia { call } => {
                    let ports = async {
                        let a = LegPorts::bind(media_ip, &counters.rtp_sockets).await?;
                        let b = LegPorts::bind(media_ip, &counters.rtp_sockets).await?;
                        io::Result::Ok((a, b))
                    }
                    .await;
                    let addrs = ports.and_then(|(a, b)| {
                        let (aa, ba) = (a.rtp_addr()?, b.rtp_addr()?);
                        Ok((a, b, aa, ba))
                    });
                    if let Ok((a, b, a_addr, b_addr)) = addrs {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let relay = Relay::start(a, b, seed);
                        if core.media_ready(Instant::now(), &call, a_addr, b_addr) {
                            relays.insert(call, relay);
                        } else {
                            relay.stop().await;
                        }
                    } else {
                        // No ports: refuse the call (503) rather than leave it waiting.
                        core.media_failed(Instant::now(), &call);
                    }
                }
                CallEvent::MediaPeers {
                    call,
                    a_remote,
                    b_remote,
                } => {
                    if let Some(r) = relays.get(&call) {
                        r.set_peers(a_remote, b_remote);
                    }
                }
                CallEvent::Ended { call, .. } => {
                    if let Some(r) = relays.remove(&call) {
                        fold_counters(&counters, r.counters());
                        r.stop().await;
                    }
                }
            }
        }
        while let Some(t) = core.poll_transmit() {
            let _ = transport.send(t.dest, Transport::Udp, t.bytes, None).await;
        }
        counters.calls.store(core.calls(), Ordering::Relaxed);
        counters.legs.store(core.legs(), Ordering::Relaxed);
        counters
            .transactions
            .store(core.transactions(), Ordering::Relaxed);
        counters
            .answered
            .store(core.stats().answered, Ordering::Relaxed);
        counters.ended.store(core.stats().ended, Ordering::Relaxed);
        counters
            .ack_timeouts
            .store(core.stats().ack_timeouts, Ordering::Relaxed);
    }
}

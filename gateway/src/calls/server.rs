//! The tokio shell around the [`Switch`]: SIP listeners (UDP, TCP), the media backend, a timer,
//! the CDR file, channels for leg providers that run in their own tasks (WebRTC, TDM), and a
//! job channel through which the HTTP side and the control plane act on the switch
//! ([`SwitchHandle::run`]). One task owns the switch — one owner per call — and everything a
//! call holds is released through it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use super::cdr::Cdr;
use super::engine::{Engine, LegNotice};
use super::leg::{EndCause, LegCommand, LegEvent, LegId, LegIds, LegKind, SipTransportKind};
use super::routing::IpNet;
use super::sip_leg::{PeerRegistration, SipLegs, SipLegsConfig, SipPeer};
use super::switch::{MediaBackend, Switch};
use crate::config::Config;
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::{SipTransport, TransportConfig};

/// The switch as the shell runs it.
pub type GatewaySwitch = Switch<Box<dyn MediaBackend + Send>>;

type Job = Box<dyn FnOnce(&mut GatewaySwitch, Instant) + Send>;

/// How to start a [`GatewayServer`].
pub struct ServerOptions {
    /// The configuration (its `[sip]` addresses may use port 0).
    pub config: Config,
    /// Transaction timers (default: RFC 3261's, or `[sip] t1_ms`).
    pub timers: Option<TimerConfig>,
    /// Seed for tags and nonces (default: random).
    pub seed: Option<[u8; 32]>,
    /// Leg technologies that run in their own tasks; each gets a [`ProviderPort`].
    pub external: Vec<LegKind>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

/// The channels of a leg technology that runs in its own task: commands for its legs come out
/// of `commands`, its legs' events go into `events`, new legs are numbered with `ids`.
#[derive(Debug)]
pub struct ProviderPort {
    /// The technology.
    pub kind: LegKind,
    /// Leg numbering shared with the engine and the other providers.
    pub ids: LegIds,
    /// Commands for its legs.
    pub commands: mpsc::UnboundedReceiver<(LegId, LegCommand)>,
    /// Where its legs' events go.
    pub events: mpsc::UnboundedSender<(LegId, LegEvent)>,
}

/// Live figures of a running server, updated after every step of the switch.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Live calls.
    pub calls: AtomicUsize,
    /// Live legs (engine).
    pub legs: AtomicUsize,
    /// SIP legs live or finishing their signalling.
    pub sip_legs: AtomicUsize,
    /// Live SIP transactions.
    pub transactions: AtomicUsize,
    /// Live media legs.
    pub media_legs: AtomicUsize,
    /// Open RTP/RTCP sockets.
    pub rtp_sockets: AtomicUsize,
    /// Calls created.
    pub calls_total: AtomicU64,
    /// Calls answered.
    pub answered: AtomicU64,
    /// SIP legs hung up for a missing ACK.
    pub ack_timeouts: AtomicU64,
    /// New calls per second over the last 10 s, in thousandths.
    pub cps_milli: AtomicU64,
}

impl ServerCounters {
    /// New calls per second over the last 10 s.
    pub fn cps(&self) -> f64 {
        self.cps_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Whether nothing is left: no call, leg, SIP leg, transaction, media leg or socket.
    pub fn idle(&self) -> bool {
        [
            &self.calls,
            &self.legs,
            &self.sip_legs,
            &self.transactions,
            &self.media_legs,
            &self.rtp_sockets,
        ]
        .iter()
        .all(|c| c.load(Ordering::Relaxed) == 0)
    }
}

/// A cheap handle to act on the running switch from other tasks.
#[derive(Clone)]
pub struct SwitchHandle {
    jobs: mpsc::Sender<Job>,
    counters: Arc<ServerCounters>,
    notices: broadcast::Sender<LegNotice>,
    cdrs: broadcast::Sender<Cdr>,
}

impl std::fmt::Debug for SwitchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchHandle").finish_non_exhaustive()
    }
}

impl SwitchHandle {
    /// Runs `f` on the switch task (with the current time) and returns its result; `None` if
    /// the server has stopped.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut GatewaySwitch, Instant) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |sw, now| {
            let _ = tx.send(f(sw, now));
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }

    /// Live counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// Leg notices for the control plane (alerting, answered, failed, digits, REFER).
    pub fn subscribe_notices(&self) -> broadcast::Receiver<LegNotice> {
        self.notices.subscribe()
    }

    /// Finished calls' records.
    pub fn subscribe_cdrs(&self) -> broadcast::Receiver<Cdr> {
        self.cdrs.subscribe()
    }
}

/// A running gateway core; stop it with [`GatewayServer::shutdown`].
#[derive(Debug)]
pub struct GatewayServer {
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    handle: SwitchHandle,
    providers: HashMap<LegKind, ProviderPort>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed
}

fn transport_kind(k: SipTransportKind) -> crate::sip::transport::Transport {
    match k {
        SipTransportKind::Udp => crate::sip::transport::Transport::Udp,
        SipTransportKind::Tcp => crate::sip::transport::Transport::Tcp,
        SipTransportKind::Tls => crate::sip::transport::Transport::Tls,
    }
}

fn pem_error(path: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot read the PEM file {path} ([sip] TLS): {e}"),
    )
}

fn pem_certs(path: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The SIP TLS listener's rustls configuration (ring, TLS 1.2 and 1.3) from PEM files.
fn sip_tls_server(cert: &str, key: &str) -> io::Result<Arc<rustls::ServerConfig>> {
    let certs = pem_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pem_error(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| pem_error(cert, e))?;
    Ok(Arc::new(cfg))
}

/// Outbound TLS trusting the certificates in `ca` (PEM).
fn sip_tls_client(ca: &str) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca)? {
        roots.add(c).map_err(|e| pem_error(ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pem_error(ca, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl GatewayServer {
    /// Binds the configured SIP listeners and starts the switch with `media`.
    pub async fn start(
        opts: ServerOptions,
        mut media: Box<dyn MediaBackend + Send>,
    ) -> io::Result<GatewayServer> {
        let cfg = opts.config;
        let sip = cfg
            .sip
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no [sip] section"))?;
        let tls = match (&sip.tls, &sip.tls_cert, &sip.tls_key) {
            (None, _, _) => None,
            (Some(a), Some(cert), Some(key)) => Some((*a, sip_tls_server(cert, key)?)),
            (Some(_), _, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "[sip] tls needs tls_cert and tls_key (PEM files)",
                ));
            }
        };
        let tls_client = sip.tls_ca.as_deref().map(sip_tls_client).transpose()?;
        let transport = SipTransport::bind(TransportConfig {
            udp: sip.udp,
            tcp: sip.tcp,
            tls,
            tls_client,
            ..TransportConfig::default()
        })
        .await
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind the SIP listeners ([sip] udp/tcp): {e}"),
            )
        })?;
        let udp = transport.udp_addr();
        let tcp = transport.tcp_addr();
        let tls_addr = transport.tls_addr();
        let mut timers = opts.timers.unwrap_or_default();
        if opts.timers.is_none()
            && let Some(t1) = sip.t1_ms
        {
            timers.t1 = Duration::from_millis(t1.max(1));
        }
        let ids = LegIds::new();
        let mut sip_cfg = SipLegsConfig::new(
            udp.or(tcp)
                .ok_or_else(|| io::Error::other("no SIP listener"))?,
        );
        if udp.is_none() {
            // A TCP-only gateway still needs a sent-by for UDP; refuse UDP targets instead.
            sip_cfg.udp = tcp.unwrap_or(sip_cfg.udp);
        }
        sip_cfg.tcp = tcp;
        sip_cfg.tls = tls_addr;
        sip_cfg.timers = timers;
        sip_cfg.seed = opts.seed.unwrap_or_else(random_seed);
        sip_cfg.realm = sip.realm.clone();
        sip_cfg.trusted = sip
            .trusted
            .iter()
            .filter_map(|n| IpNet::parse(n.get_ref()).ok())
            .collect();
        sip_cfg.users = cfg
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect();
        sip_cfg.peers = cfg
            .trunks
            .iter()
            .map(|t| SipPeer {
                name: t.name.clone(),
                address: t.address,
                transport: t.transport,
                inbound: t.inbound,
                keepalive: (t.keepalive_s > 0).then(|| Duration::from_secs(t.keepalive_s)),
            })
            .collect();
        sip_cfg.registrations = cfg
            .trunks
            .iter()
            .filter(|t| t.register)
            .map(|t| PeerRegistration {
                peer: t.name.clone(),
                host: t.host.clone(),
                user: t.username.clone().unwrap_or_else(|| "gateway".to_owned()),
                password: t.password.clone(),
                expires: Duration::from_secs(t.register_expires_s.max(1)),
            })
            .collect();
        for t in &cfg.trunks {
            if transport_kind(t.transport) == crate::sip::transport::Transport::Tls
                && sip.tls_ca.is_none()
            {
                tracing::warn!(trunk = %t.name, "trunk uses TLS but [sip] has no tls_ca to verify it: calls to it will fail");
            }
            if transport_kind(t.transport) == crate::sip::transport::Transport::Tcp && tcp.is_none()
            {
                tracing::warn!(trunk = %t.name, "trunk uses TCP but [sip] has no tcp listener: calls to it will fail");
            }
        }
        let mut engine_cfg = cfg.engine_config();
        engine_cfg.providers.extend(opts.external.iter().copied());
        for g in &cfg.span_groups {
            if !engine_cfg.providers.contains(&LegKind::Tdm) {
                tracing::warn!(
                    span_group = %g.name,
                    "TDM legs are not part of this build yet: calls routed to span group {} are refused with 503 (Q.850 cause 34, no circuit available)",
                    g.name
                );
            }
        }
        let sip_legs = SipLegs::new(sip_cfg, ids.clone());
        let engine = Engine::new(engine_cfg, ids.clone());
        let notices_rx = media.take_notices();
        let mut sw: GatewaySwitch = Switch::new(sip_legs, engine, media);
        for k in &opts.external {
            sw.engine.add_provider(*k);
        }
        let cdr_file = match &cfg.cdr {
            Some(c) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&c.path)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot open the CDR file {} ([cdr] path): {e}", c.path),
                        )
                    })?,
            ),
            None => None,
        };
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(256);
        let (ext_events_tx, ext_events_rx) =
            mpsc::unbounded_channel::<(LegKind, LegId, LegEvent)>();
        let mut providers = HashMap::new();
        let mut ext_commands = HashMap::new();
        for k in &opts.external {
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<(LegId, LegEvent)>();
            let fwd = ext_events_tx.clone();
            let kind = *k;
            tokio::spawn(async move {
                while let Some((leg, ev)) = ev_rx.recv().await {
                    if fwd.send((kind, leg, ev)).is_err() {
                        break;
                    }
                }
            });
            ext_commands.insert(*k, cmd_tx);
            providers.insert(
                *k,
                ProviderPort {
                    kind: *k,
                    ids: ids.clone(),
                    commands: cmd_rx,
                    events: ev_tx,
                },
            );
        }
        let counters = Arc::new(ServerCounters::default());
        let (notices, _) = broadcast::channel(1024);
        let (cdrs, _) = broadcast::channel(1024);
        let handle = SwitchHandle {
            jobs: jobs_tx,
            counters: counters.clone(),
            notices: notices.clone(),
            cdrs: cdrs.clone(),
        };
        let (stop, stopped) = oneshot::channel();
        let closed = transport.closed_connections();
        let task = tokio::spawn(serve(Shell {
            closed,
            transport,
            sw,
            jobs: jobs_rx,
            media_notices: notices_rx,
            ext_events: ext_events_rx,
            ext_commands,
            counters,
            notices,
            cdrs,
            cdr_file,
            stopped,
        }));
        if let Some(a) = udp {
            tracing::info!(sip_udp = %a, "SIP UDP listener up");
        }
        if let Some(a) = tcp {
            tracing::info!(sip_tcp = %a, "SIP TCP listener up");
        }
        if let Some(a) = tls_addr {
            tracing::info!(sip_tls = %a, "SIP TLS listener up");
        }
        Ok(GatewayServer {
            udp,
            tcp,
            tls: tls_addr,
            handle,
            providers,
            stop: Some(stop),
            task,
        })
    }

    /// The SIP UDP address.
    pub fn sip_udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// The SIP TCP address.
    pub fn sip_tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The SIP TLS address.
    pub fn sip_tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// A handle to act on the switch.
    pub fn handle(&self) -> SwitchHandle {
        self.handle.clone()
    }

    /// Live counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.handle.counters
    }

    /// The channels of an external leg technology named in [`ServerOptions::external`].
    pub fn take_provider(&mut self, kind: LegKind) -> Option<ProviderPort> {
        self.providers.remove(&kind)
    }

    /// Ends every call, stops the listeners and closes every socket.
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

struct Shell {
    transport: SipTransport,
    /// Stream connections as they close (phones registered on them).
    closed: mpsc::UnboundedReceiver<crate::sip::transport::ConnectionId>,
    sw: GatewaySwitch,
    jobs: mpsc::Receiver<Job>,
    media_notices: Option<mpsc::UnboundedReceiver<(LegId, super::engine::MediaNotice)>>,
    ext_events: mpsc::UnboundedReceiver<(LegKind, LegId, LegEvent)>,
    ext_commands: HashMap<LegKind, mpsc::UnboundedSender<(LegId, LegCommand)>>,
    counters: Arc<ServerCounters>,
    notices: broadcast::Sender<LegNotice>,
    cdrs: broadcast::Sender<Cdr>,
    cdr_file: Option<std::fs::File>,
    stopped: oneshot::Receiver<()>,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn next_notice(
    rx: &mut Option<mpsc::UnboundedReceiver<(LegId, super::engine::MediaNotice)>>,
) -> Option<(LegId, super::engine::MediaNotice)> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

impl Shell {
    async fn flush(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.sw.poll_transmit(now) {
            if let Err(e) = self
                .transport
                .send(t.dest, t.transport, t.bytes, None)
                .await
            {
                tracing::debug!(dest = %t.dest, "SIP send failed: {e}");
            }
        }
        while let Some((leg, kind, command)) = self.sw.poll_external() {
            match self.ext_commands.get(&kind) {
                Some(tx) => {
                    let _ = tx.send((leg, command));
                }
                None => tracing::warn!(%leg, kind = kind.as_str(), "no provider for this leg kind"),
            }
        }
        while let Some(cdr) = self.sw.poll_cdr() {
            if let Some(f) = self.cdr_file.as_mut() {
                let line = cdr.to_json_line();
                if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                    tracing::error!("cannot write the CDR of {}: {e}", cdr.call_uri);
                }
            }
            let _ = self.cdrs.send(cdr);
        }
        while let Some(n) = self.sw.poll_notice() {
            let _ = self.notices.send(n);
        }
        let c = self.sw.counts();
        let k = &self.counters;
        k.calls.store(c.calls, Ordering::Relaxed);
        k.legs.store(c.legs, Ordering::Relaxed);
        k.sip_legs.store(c.sip_legs, Ordering::Relaxed);
        k.transactions.store(c.transactions, Ordering::Relaxed);
        let s = self.sw.engine.stats();
        k.calls_total.store(s.calls_total, Ordering::Relaxed);
        k.answered.store(s.calls_answered, Ordering::Relaxed);
        k.ack_timeouts
            .store(self.sw.sip.stats().ack_timeouts, Ordering::Relaxed);
    }
}

async fn serve(mut sh: Shell) -> io::Result<()> {
    // Socket gauges of the relay close asynchronously: refresh the counters now and then.
    let mut refresh = tokio::time::interval(Duration::from_millis(200));
    let mut samples: std::collections::VecDeque<(Instant, u64)> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            _ = &mut sh.stopped => break,
            r = sh.transport.recv() => {
                let Some(item) = r else {
                    return Err(io::Error::other("SIP listeners ended"));
                };
                sh.sw.handle_sip_on(Instant::now(), &item.bytes, item.source, item.transport, item.connection);
            }
            Some(id) = sh.closed.recv() => sh.sw.sip.connection_closed(id),
            _ = sleep_until(sh.sw.poll_timeout()) => sh.sw.handle_timeout(Instant::now()),
            Some((leg, n)) = next_notice(&mut sh.media_notices) => sh.sw.media_event(Instant::now(), leg, n),
            Some((kind, leg, ev)) = sh.ext_events.recv() => sh.sw.external_event(Instant::now(), kind, leg, ev),
            Some(job) = sh.jobs.recv() => {
                let now = Instant::now();
                job(&mut sh.sw, now);
                sh.sw.pump(now);
            }
            _ = refresh.tick() => {
                // The plane's counts wait for its workers: asked here only, not per message.
                let m = sh.sw.media.counts();
                sh.counters.media_legs.store(m.legs, Ordering::Relaxed);
                sh.counters.rtp_sockets.store(m.sockets, Ordering::Relaxed);
                let now = Instant::now();
                let total = sh.sw.engine.stats().calls_total;
                samples.push_back((now, total));
                while samples.len() > 2
                    && samples.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > Duration::from_secs(10))
                {
                    samples.pop_front();
                }
                if let Some((t0, n0)) = samples.front() {
                    let secs = now.saturating_duration_since(*t0).as_secs_f64().max(1.0);
                    let cps = (total.saturating_sub(*n0)) as f64 / secs;
                    sh.counters.cps_milli.store((cps * 1000.0) as u64, Ordering::Relaxed);
                }
            }
        }
        sh.flush().await;
    }
    // Shutting down: every call ends with a BYE/CANCEL/final response that goes out now.
    let now = Instant::now();
    sh.sw.sip.unregister_all(now);
    let calls: Vec<_> = sh.sw.engine.calls(now).into_iter().map(|c| c.uri).collect();
    for uri in calls {
        let _ = sh.sw.with_engine(now, |e| {
            e.hang_up(now, &uri, EndCause::q850(41, "gateway shutting down"))
        });
    }
    sh.flush().await;
    sh.transport.shutdown().await;
    Ok(())
}

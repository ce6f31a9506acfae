//! SIP over WebSocket (RFC 7118) as the signalling of WebRTC legs: what standard browser
//! softphone libraries (JsSIP, SIP.js) speak.
//!
//! A [`SipWsServer`] owns a WebSocket-only [`SipTransport`], a transaction layer, a registrar
//! with digest authentication (the `[[users]]` of the configuration) and the dialogs of its
//! calls. The media of every call is a WebRTC leg of the [`RtcProvider`](super::provider)
//! (DTLS-SRTP, ICE, Opus/G.711), so the call engine sees an ordinary `webrtc` leg:
//!
//! - **Browser calls** (INVITE with a non-trickle WebRTC offer): digest-challenged (401), then
//!   answered by [`RtcHandle::accept_signalled`]; the engine routes the Request-URI user. We
//!   send `100`, then `183` with our answer at once (ICE and DTLS connect while the far end
//!   rings: no connect timeout during long ringing, early media), `180` when the engine rings,
//!   `200` (same SDP) when it answers, the mapped final status when it fails. CANCEL → 487 and
//!   the leg ends; BYE either way; re-INVITE/UPDATE are answered with our current SDP (the
//!   peer connection does not change) — a re-offer whose audio does not receive (JsSIP
//!   `hold()`: `sendonly`) is the browser holding: the engine hears `Hold` (its partner gets the
//!   hold tone), our answer says `recvonly` with a raised `o=` version, and the next
//!   `sendrecv` re-offer resumes; INFO `application/dtmf-relay` / `application/dtmf`
//!   becomes a digit (RFC 4733 digits come through the media).
//! - **Calls to a browser**: a successful REGISTER of user `U` registers WebRTC endpoint `U`
//!   ([`RtcHandle::register_endpoint`]); a route `webrtc:U` makes the provider offer, we send
//!   the INVITE over the registered flow (`.invalid` Contact: only that connection reaches
//!   it), apply the 200's answer, ACK on the same connection; CANCEL if the engine gives up
//!   first; a non-2xx final fails the leg with its status.
//! - **Signalling loss and re-attach**: when a connection closes under a confirmed call, the
//!   call and its media stay up for `[rtc] grace_s` ([`RtcHandle::signalling_lost`]). The
//!   client re-attaches by sending any request of the call's dialog (the call's URI in SIP
//!   terms: Call-ID and tags; JsSIP: `session.renegotiate()` after its transport reconnects)
//!   on a new authenticated connection: the dialog moves to that flow and the grace timer
//!   stops. A re-attach may also be an INVITE with `Replaces` naming the dialog (RFC 3891): it
//!   takes the call over with the new dialog. Without a re-attach the leg ends (Q.850 102) and
//!   the engine writes the CDR as for any hang-up.
//!
//! Every response goes back on the connection its request came on (`.invalid` Via hosts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;

use super::provider::{Accepted, IncomingSpec, LegSignal, OutgoingOffer, RtcHandle};
use crate::calls::leg::{EndCause, LegId};
use crate::sip::auth::{AuthVerdict, DigestAlgorithm, DigestServer, DigestServerConfig};
use crate::sip::dialog::{Dialog, InDialogRequest, ViaTemplate};
use crate::sip::message::{HeaderName, Method, Request, Response, Uri};
use crate::sip::registrar::{Flow, Registrar, RegistrarConfig};
use crate::sip::sdp::{Direction, SessionDescription};
use crate::sip::transaction::{
    Reliability, TimerConfig, TransactionKey, TransactionLayer, TuEvent,
};
use crate::sip::transport::{ConnectionId, SipTransport, Transport, TransportConfig};

/// How to start a [`SipWsServer`].
#[derive(Clone)]
pub struct SipWsConfig {
    /// `ws://` listen address (port 0: ephemeral); `None`: no plain WebSocket listener.
    pub listen: Option<SocketAddr>,
    /// `wss://` listen address and its TLS server configuration (see [`wss_tls_config`]);
    /// `None`: no secure WebSocket listener. At least one of `listen` and `wss` is needed.
    pub wss: Option<(SocketAddr, Arc<ServerConfig>)>,
    /// Digest realm.
    pub realm: String,
    /// Users who may register and call: (name, password).
    pub users: Vec<(String, String)>,
    /// Transaction timers.
    pub timers: TimerConfig,
}

impl std::fmt::Debug for SipWsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipWsConfig")
            .field("listen", &self.listen)
            .field("wss", &self.wss.as_ref().map(|w| w.0))
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// The `wss://` listener's rustls configuration (ring; TLS 1.2 and 1.3) from a PEM certificate
/// chain and a PEM private key; the error names the file and what is wrong with it.
///
/// # Errors
/// A file cannot be read, holds no certificate / no private key, or the key does not fit.
pub fn wss_tls_config(cert: &str, key: &str) -> std::io::Result<Arc<ServerConfig>> {
    let bad = |path: &str, what: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{path}: {what}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no CERTIFICATE block (PEM expected)"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(key, &format!("no usable PEM private key: {e}")))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, &format!("does not fit the certificate in {cert}: {e}")))?;
    Ok(Arc::new(cfg))
}

/// Live figures of a [`SipWsServer`] (tests assert 0 after calls).
#[derive(Debug, Default)]
pub struct SipWsCounters {
    /// Calls (dialogs) live.
    pub calls: AtomicUsize,
    /// Open WebSocket connections.
    pub connections: AtomicUsize,
    /// Calls kept up without signalling (in their grace period).
    pub detached: AtomicUsize,
    /// Successful re-attaches.
    pub reattached: AtomicUsize,
    /// Registered bindings.
    pub bindings: AtomicUsize,
}

/// A running SIP-over-WebSocket signalling server for WebRTC legs.
#[derive(Debug)]
pub struct SipWsServer {
    addr: SocketAddr,
    wss_addr: Option<SocketAddr>,
    counters: Arc<SipWsCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SipWsServer {
    /// Binds the listener and starts the server on `rtc` (the running WebRTC provider).
    ///
    /// # Errors
    /// A listener cannot be bound, or neither `ws` nor `wss` is configured.
    pub async fn start(cfg: SipWsConfig, rtc: RtcHandle) -> std::io::Result<SipWsServer> {
        if cfg.listen.is_none() && cfg.wss.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "SIP over WebSocket needs a ws or a wss listen address",
            ));
        }
        let transport = SipTransport::bind(TransportConfig {
            ws: cfg.listen,
            wss: cfg.wss.clone(),
            ..TransportConfig::default()
        })
        .await?;
        let ws_addr = transport.ws_addr();
        let wss_addr = transport.wss_addr();
        let addr = ws_addr
            .or(wss_addr)
            .ok_or_else(|| std::io::Error::other("no WebSocket listener"))?;
        let counters = Arc::new(SipWsCounters::default());
        let (stop, stopped) = oneshot::channel();
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let mut digest = DigestServer::new(
            DigestServerConfig {
                realm: cfg.realm.clone(),
                algorithms: vec![DigestAlgorithm::Md5],
                ..DigestServerConfig::default()
            },
            secret,
        );
        for (u, p) in &cfg.users {
            digest.set_user(u, p);
        }
        let (int_tx, int_rx) = mpsc::unbounded_channel();
        let closed = transport.closed_connections();
        let server = Server {
            layer: TransactionLayer::new(cfg.timers),
            registrar: Registrar::new(RegistrarConfig::default(), digest),
            transport,
            closed,
            rtc,
            addr,
            ws_addr,
            wss_addr,
            flows: HashMap::new(),
            calls: HashMap::new(),
            by_leg: HashMap::new(),
            out_keys: HashMap::new(),
            endpoints: HashMap::new(),
            internal: int_tx,
            internal_rx: int_rx,
            counters: Arc::clone(&counters),
            n: 0,
            sends: Vec::new(),
        };
        let task = tokio::spawn(server.run(stopped));
        tracing::info!(
            sip_ws = ?ws_addr,
            sip_wss = ?wss_addr,
            "SIP over WebSocket listener up (WebRTC legs)"
        );
        Ok(SipWsServer {
            addr,
            wss_addr,
            counters,
            stop: Some(stop),
            task,
        })
    }

    /// The `ws://` address (the `wss://` one when there is no plain listener).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `wss://` address, if that listener runs.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// Live figures.
    pub fn counters(&self) -> &SipWsCounters {
        &self.counters
    }

    /// Stops the listener and closes every connection (calls end through their legs).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[derive(Debug)]
enum Internal {
    Accepted {
        call_id: String,
        result: Result<(Accepted, mpsc::UnboundedReceiver<LegSignal>), String>,
    },
    Signal {
        leg: LegId,
        signal: LegSignal,
    },
    Offer {
        user: String,
        offer: OutgoingOffer,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inbound: the leg is being created.
    Accepting,
    /// Before the final response (inbound) or the 2xx (outbound).
    Early,
    /// 2xx sent/received.
    Confirmed,
}

#[derive(Debug)]
struct Call {
    leg: Option<LegId>,
    inbound: bool,
    phase: Phase,
    flow: Flow,
    invite: Request,
    /// Inbound: the INVITE server transaction until its final response.
    invite_key: Option<TransactionKey>,
    /// Outbound: our INVITE's client transaction.
    out_key: Option<TransactionKey>,
    dialog: Option<Dialog>,
    /// Our SDP (answer for inbound, offer for outbound).
    sdp: String,
    /// Outbound: the provider's offer, answered from the 2xx.
    offer: Option<OutgoingOffer>,
    detached: bool,
    /// The engine gave up before our INVITE had a provisional response: CANCEL on the first.
    cancel_wanted: bool,
    /// The browser holds us (its last re-offer's audio does not receive).
    held: bool,
    /// How many times our re-answers changed the SDP (added to its `o=` version).
    sdp_changes: u64,
}

struct Server {
    layer: TransactionLayer,
    registrar: Registrar,
    transport: SipTransport,
    closed: mpsc::UnboundedReceiver<ConnectionId>,
    rtc: RtcHandle,
    addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    flows: HashMap<SocketAddr, Flow>,
    calls: HashMap<String, Call>,
    by_leg: HashMap<LegId, String>,
    out_keys: HashMap<TransactionKey, String>,
    /// Users registered as WebRTC endpoints, with their address-of-record.
    endpoints: HashMap<String, (Uri, JoinHandle<()>)>,
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    counters: Arc<SipWsCounters>,
    n: u64,
    /// Messages outside transactions (ACK for 2xx): (connection, bytes).
    sends: Vec<(Flow, Vec<u8>)>,
}

fn user_of(uri: &Uri) -> String {
    uri.sip_parts()
        .and_then(|p| p.user)
        .map(|u| {
            u.chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.+*#".contains(*c))
                .collect()
        })
        .unwrap_or_default()
}

fn with_sdp(mut r: Response, sdp: &str) -> Response {
    r.headers.set(HeaderName::ContentType, "application/sdp");
    r.body = sdp.as_bytes().to_vec();
    r
}

/// Our offer as an answer in a re-INVITE of a call we offered: the DTLS role we took.
fn as_answer(sdp: &str) -> String {
    sdp.replace("a=setup:actpass", "a=setup:passive")
}

/// Whether a (re-)offer holds us: its audio does not receive (`sendonly`, `inactive`, or a
/// 0.0.0.0 address), with the direction our answer must then take. `None` without a readable
/// SDP with audio (the offer changes nothing then).
fn hold_of(body: &[u8]) -> Option<(bool, Direction)> {
    let sd = SessionDescription::parse(std::str::from_utf8(body).ok()?).ok()?;
    let offered = sd.direction_of(sd.audio()?);
    Some((
        !offered.receives(),
        Direction::answer_to(offered, Direction::SendRecv),
    ))
}

/// `sdp` with every media direction attribute set to `dir` (added where there is none) and
/// the `o=` version raised by `bump` (RFC 3264 §8: a changed SDP gets a higher version).
fn with_direction(sdp: &str, dir: Direction, bump: u64) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out: Vec<String> = Vec::new();
    let mut in_media = false;
    let mut has_dir = false;
    let close = |out: &mut Vec<String>, in_media: bool, has_dir: bool| {
        if in_media && !has_dir && dir != Direction::SendRecv {
            out.push(format!("a={}", dir.as_str()));
        }
    };
    for line in sdp.lines() {
        if line.starts_with("m=") {
            close(&mut out, in_media, has_dir);
            in_media = true;
            has_dir = false;
            out.push(line.to_owned());
        } else if matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            if in_media {
                has_dir = true;
                out.push(format!("a={}", dir.as_str()));
            }
        } else if let Some(rest) = line.strip_prefix("o=") {
            let mut f: Vec<&str> = rest.split(' ').collect();
            let version = f.get(2).and_then(|v| v.parse::<u64>().ok());
            match (version, f.get_mut(2)) {
                (Some(v), Some(slot)) => {
                    let raised = v.saturating_add(bump).to_string();
                    *slot = &raised;
                    out.push(format!("o={}", f.join(" ")));
                }
                _ => out.push(line.to_owned()),
            }
        } else if !line.is_empty() {
            out.push(line.to_owned());
        }
    }
    close(&mut out, in_media, has_dir);
    let mut text = out.join(eol);
    text.push_str(eol);
    text
}

impl Server {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        loop {
            let now = Instant::now();
            let wake = [self.layer.poll_timeout(), self.registrar.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut stopped => break,
                r = self.transport.recv() => {
                    let Some(item) = r else { break };
                    self.flows.insert(item.source, Flow {
                        transport: item.transport,
                        remote: item.source,
                        connection: item.connection,
                    });
                    self.layer.handle_datagram(now, &item.bytes, item.source, Reliability::Reliable);
                }
                c = self.closed.recv() => {
                    let Some(id) = c else { break };
                    self.connection_closed(id);
                }
                i = self.internal_rx.recv() => {
                    if let Some(i) = i {
                        self.on_internal(now, i);
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.layer.handle_timeout(now);
                    self.registrar.handle_timeout(now);
                }
            }
            self.pump(Instant::now());
            self.flush().await;
        }
        for c in self.calls.values() {
            if let Some(l) = c.leg {
                self.rtc.hang_up(l);
            }
        }
        for (_, (_, t)) in self.endpoints.drain() {
            t.abort();
        }
        self.transport.shutdown().await;
    }

    fn next(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    fn branch(&mut self) -> String {
        format!(
            "z9hG4bKsbws{}{}",
            self.next(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    }

    /// Our transport and address as seen on a flow of `transport` (WSS flows name the `wss://`
    /// listener).
    fn local(&self, transport: Transport) -> (Transport, SocketAddr) {
        match (transport, self.wss_addr, self.ws_addr) {
            (Transport::Wss, Some(a), _) => (Transport::Wss, a),
            (_, _, Some(a)) => (Transport::Ws, a),
            (_, Some(a), None) => (Transport::Wss, a),
            (_, None, None) => (Transport::Ws, self.addr),
        }
    }

    fn via(&self, transport: Transport) -> ViaTemplate {
        let (t, a) = self.local(transport);
        ViaTemplate {
            transport: t.via_token().to_owned(),
            sent_by: a.to_string(),
        }
    }

    fn contact(&self, transport: Transport) -> Option<Uri> {
        let (t, a) = self.local(transport);
        let param = if t == Transport::Wss { "wss" } else { "ws" };
        Uri::parse(&format!("sip:gw@{a};transport={param}")).ok()
    }

    async fn flush(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            if let Err(e) = self
                .transport
                .send_response(t.dest, Transport::Ws, t.bytes)
                .await
            {
                tracing::debug!(dest = %t.dest, "SIP-WS send failed: {e}");
            }
        }
        for (flow, bytes) in std::mem::take(&mut self.sends) {
            let r = match flow.connection {
                Some(c) => self.transport.send_on(c, bytes).await,
                None => {
                    self.transport
                        .send(flow.remote, flow.transport, bytes, None)
                        .await
                }
            };
            if let Err(e) = r {
                tracing::debug!(dest = %flow.remote, "SIP-WS send failed: {e}");
            }
        }
        let k = &self.counters;
        k.calls.store(self.calls.len(), Ordering::Relaxed);
        k.connections
            .store(self.transport.open_connections(), Ordering::Relaxed);
        k.detached.store(
            self.calls.values().filter(|c| c.detached).count(),
            Ordering::Relaxed,
        );
        k.bindings
            .store(self.registrar.binding_count(), Ordering::Relaxed);
    }

    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.layer.poll_event() {
            match ev {
                TuEvent::Request {
                    key,
                    request,
                    source,
                } => self.on_request(now, key, request, source),
                TuEvent::Ack { request, source } => self.on_ack(&request, source),
                TuEvent::Cancelled { invite } => self.on_cancelled(now, &invite),
                TuEvent::Response { key, response } => self.on_response(now, &key, response),
                TuEvent::Timeout { key } => self.on_timeout(now, &key),
                TuEvent::Terminated { key } => {
                    self.out_keys.remove(&key);
                }
            }
        }
    }

    fn respond(&mut self, now: Instant, key: &TransactionKey, resp: Response) {
        if let Err(e) = self.layer.send_response(now, key, resp) {
            tracing::debug!("SIP-WS response not sent: {e}");
        }
    }

    fn plain(&mut self, now: Instant, key: &TransactionKey, req: &Request, status: u16) {
        let mut r = Response::for_request(req, status);
        let tag = format!("sbws{}", self.next());
        r.ensure_to_tag(&tag);
        self.respond(now, key, r);
    }

    fn flow_of(&self, source: SocketAddr) -> Flow {
        self.flows.get(&source).copied().unwrap_or(Flow {
            transport: Transport::Ws,
            remote: source,
            connection: None,
        })
    }

    // ----- requests ---------------------------------------------------------------------

    fn on_request(&mut self, now: Instant, key: TransactionKey, req: Request, source: SocketAddr) {
        let flow = self.flow_of(source);
        let Ok(call_id) = req.headers.call_id().map(str::to_owned) else {
            return self.plain(now, &key, &req, 400);
        };
        let to_tag = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        if to_tag.is_some() {
            return self.on_in_dialog(now, key, req, flow, &call_id);
        }
        match req.method {
            Method::Register => {
                let resp = self.registrar.handle_register(now, &req, flow);
                if resp.status == 200 {
                    self.registered(&req);
                }
                self.respond(now, &key, resp);
            }
            Method::Invite => self.on_invite(now, key, req, flow, call_id),
            Method::Options => self.plain(now, &key, &req, 200),
            _ => self.plain(now, &key, &req, 405),
        }
    }

    /// A user registered: make it a WebRTC endpoint (once).
    fn registered(&mut self, req: &Request) {
        let Ok(to) = req.headers.to() else { return };
        let user = user_of(&to.uri);
        if user.is_empty() {
            return;
        }
        if self
            .endpoints
            .get(&user)
            .is_some_and(|(_, t)| !t.is_finished())
        {
            return;
        }
        let mut rx = self.rtc.register_endpoint(&user);
        let tx = self.internal.clone();
        let u = user.clone();
        let task = tokio::spawn(async move {
            while let Some(offer) = rx.recv().await {
                if tx
                    .send(Internal::Offer {
                        user: u.clone(),
                        offer,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        self.endpoints.insert(user, (to.uri, task));
    }

    fn on_invite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        req: Request,
        flow: Flow,
        call_id: String,
    ) {
        if self.calls.contains_key(&call_id) {
            return self.plain(now, &key, &req, 482);
        }
        let username = match self.registrar.digest_mut().verify(now, &req, false) {
            AuthVerdict::Authorized { username } => username,
            AuthVerdict::Challenge { stale, .. } => {
                let mut resp = self
                    .registrar
                    .digest_mut()
                    .challenge(now, &req, stale, false);
                let tag = format!("sbws{}", self.next());
                resp.ensure_to_tag(&tag);
                return self.respond(now, &key, resp);
            }
        };
        let is_sdp = req
            .headers
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"));
        let Ok(offer) = String::from_utf8(req.body.clone()) else {
            return self.plain(now, &key, &req, 400);
        };
        if !is_sdp || offer.trim().is_empty() {
            // A browser always offers (non-trickle); a late offer has no WebRTC leg to make.
            let mut r = Response::for_request(&req, 488);
            r.reason = "WebRTC offer required in the INVITE".into();
            r.ensure_to_tag(&format!("sbws{}", self.next()));
            return self.respond(now, &key, r);
        }
        // RFC 3891 Replaces naming one of our dialogs: a re-attach that takes the call over.
        if let Some(replaced) = self.replaces_target(&req) {
            return self.take_over(now, key, req, flow, call_id, replaced);
        }
        let local_tag = format!("sbws{}", self.next());
        let (Some(contact), via) = (self.contact(flow.transport), self.via(flow.transport)) else {
            return self.plain(now, &key, &req, 500);
        };
        let Ok(dialog) = Dialog::new_uas(&req, &local_tag, contact, via) else {
            return self.plain(now, &key, &req, 400);
        };
        let trying = Response::for_request(&req, 100);
        self.respond(now, &key, trying);
        let from = req.headers.from().ok();
        let spec = IncomingSpec {
            caller: username.clone(),
            caller_name: from.and_then(|f| f.display_name).filter(|d| !d.is_empty()),
            callee: user_of(&req.uri),
            source: Some(flow.remote),
            authenticated: Some(username),
        };
        self.calls.insert(
            call_id.clone(),
            Call {
                leg: None,
                inbound: true,
                phase: Phase::Accepting,
                flow,
                invite: req,
                invite_key: Some(key),
                out_key: None,
                dialog: Some(dialog),
                sdp: String::new(),
                offer: None,
                detached: false,
                cancel_wanted: false,
                held: false,
                sdp_changes: 0,
            },
        );
        let rtc = self.rtc.clone();
        let tx = self.internal.clone();
        tokio::spawn(async move {
            let result = rtc
                .accept_signalled(&offer, spec)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Internal::Accepted { call_id, result });
        });
    }

    fn replaces_target(&self, req: &Request) -> Option<String> {
        let v = req.headers.get(&HeaderName::Replaces)?;
        let mut parts = v.split(';');
        let call_id = parts.next()?.trim().to_owned();
        let mut to_tag = None;
        let mut from_tag = None;
        for p in parts {
            let (k, val) = p.split_once('=')?;
            match k.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(val.trim().to_owned()),
                "from-tag" => from_tag = Some(val.trim().to_owned()),
                _ => {}
            }
        }
        let c = self.calls.get(&call_id)?;
        let d = c.dialog.as_ref()?;
        (c.phase == Phase::Confirmed
            && to_tag.as_deref() == Some(d.id().local_tag.as_str())
            && from_tag.as_deref() == Some(d.id().remote_tag.as_str()))
        .then_some(call_id)
    }

    /// INVITE with Replaces: the new dialog takes over the old one's leg (same peer
    /// connection: answered with the leg's SDP); the old dialog ends without a BYE to the
    /// browser (it replaced it itself).
    fn take_over(
        &mut self,
        now: Instant,
        key: TransactionKey,
        req: Request,
        flow: Flow,
        call_id: String,
        replaced: String,
    ) {
        let Some(mut old) = self.calls.remove(&replaced) else {
            return self.plain(now, &key, &req, 481);
        };
        let local_tag = format!("sbws{}", self.next());
        let (Some(contact), via) = (self.contact(flow.transport), self.via(flow.transport)) else {
            self.calls.insert(replaced, old);
            return self.plain(now, &key, &req, 500);
        };
        let Ok(mut dialog) = Dialog::new_uas(&req, &local_tag, contact, via) else {
            self.calls.insert(replaced, old);
            return self.plain(now, &key, &req, 400);
        };
        if let Some(l) = old.leg {
            self.reattach(l, &mut old);
            self.by_leg.insert(l, call_id.clone());
        }
        let sdp = if old.inbound {
            old.sdp.clone()
        } else {
            as_answer(&old.sdp)
        };
        let ok = with_sdp(dialog.response(&req, 200), &sdp);
        self.respond(now, &key, ok);
        self.calls.insert(
            call_id,
            Call {
                leg: old.leg,
                inbound: true,
                phase: Phase::Confirmed,
                flow,
                invite: req,
                invite_key: None,
                out_key: None,
                dialog: Some(dialog),
                sdp,
                offer: None,
                detached: false,
                cancel_wanted: false,
                held: false,
                sdp_changes: 0,
            },
        );
    }

    fn reattach(&mut self, leg: LegId, call: &mut Call) {
        if !call.detached {
            return;
        }
        match self.rtc.reattach(leg) {
            Ok(_) => {
                call.detached = false;
                self.counters.reattached.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%leg, "SIP-WS signalling re-attached");
            }
            Err(e) => tracing::info!(%leg, "re-attach refused: {e}"),
        }
    }

    fn on_in_dialog(
        &mut self,
        now: Instant,
        key: TransactionKey,
        req: Request,
        flow: Flow,
        call_id: &str,
    ) {
        let Some(mut call) = self.calls.remove(call_id) else {
            return self.plain(now, &key, &req, 481);
        };
        let Some(mut dialog) = call.dialog.take() else {
            self.calls.insert(call_id.to_owned(), call);
            return self.plain(now, &key, &req, 481);
        };
        let verdict = dialog.handle_request(&req);
        // Any request of the dialog on a new connection moves the dialog there (re-attach).
        if call.flow.connection != flow.connection {
            call.flow = flow;
        }
        if let Some(l) = call.leg {
            self.reattach(l, &mut call);
        }
        let resp = match verdict {
            Ok(InDialogRequest::Bye) => {
                let r = dialog.response(&req, 200);
                if let Some(l) = call.leg {
                    self.rtc.hang_up(l);
                    self.by_leg.remove(&l);
                }
                self.respond(now, &key, r);
                return;
            }
            Ok(InDialogRequest::ReInvite) | Ok(InDialogRequest::Update) => {
                let base = if call.inbound {
                    call.sdp.clone()
                } else {
                    as_answer(&call.sdp)
                };
                // A browser's hold (JsSIP `hold()`: sendonly) or resume: the engine is told,
                // our answer takes the matching direction. The peer connection itself is not
                // renegotiated (the browser keeps its transceivers).
                let (held, dir) = hold_of(&req.body).unwrap_or((call.held, Direction::SendRecv));
                if held != call.held {
                    call.held = held;
                    call.sdp_changes += 1;
                    if let Some(l) = call.leg {
                        tracing::info!(%l, held, "browser {}", if held { "holds" } else { "resumes" });
                        self.rtc.party_hold(l, held);
                    }
                }
                let sdp = if held || call.sdp_changes > 0 {
                    with_direction(
                        &base,
                        if held { dir } else { Direction::SendRecv },
                        call.sdp_changes,
                    )
                } else {
                    base
                };
                with_sdp(dialog.response(&req, 200), &sdp)
            }
            Ok(InDialogRequest::Other) if req.method == Method::Info => {
                let ct = req
                    .headers
                    .content_type()
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match crate::calls::sip_leg::parse_dtmf_info(&ct, &req.body) {
                    Some((digit, duration)) => {
                        if let Some(l) = call.leg {
                            self.rtc.signalled_digit(l, digit, duration);
                        }
                        dialog.response(&req, 200)
                    }
                    None => dialog.response(&req, 415),
                }
            }
            Ok(InDialogRequest::Other) => dialog.response(&req, 200),
            Ok(InDialogRequest::Ack) => {
                call.dialog = Some(dialog);
                self.calls.insert(call_id.to_owned(), call);
                return;
            }
            Err(reject) => match reject.status() {
                Some(s) => dialog.response(&req, s),
                None => {
                    call.dialog = Some(dialog);
                    self.calls.insert(call_id.to_owned(), call);
                    return;
                }
            },
        };
        self.respond(now, &key, resp);
        call.dialog = Some(dialog);
        self.calls.insert(call_id.to_owned(), call);
    }

    fn on_ack(&mut self, req: &Request, source: SocketAddr) {
        let flow = self.flow_of(source);
        let Ok(call_id) = req.headers.call_id() else {
            return;
        };
        if let Some(c) = self.calls.get_mut(call_id) {
            if c.flow.connection != flow.connection {
                c.flow = flow;
            }
            if let Some(d) = c.dialog.as_mut() {
                let _ = d.handle_request(req);
            }
        }
    }

    fn on_cancelled(&mut self, now: Instant, invite: &TransactionKey) {
        let Some(id) = self
            .calls
            .iter()
            .find(|(_, c)| c.invite_key.as_ref() == Some(invite))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let r = match call.dialog.as_mut() {
            Some(d) => d.response(&call.invite, 487),
            None => Response::for_request(&call.invite, 487),
        };
        self.respond(now, invite, r);
        if let Some(l) = call.leg {
            self.rtc.hang_up(l);
            self.by_leg.remove(&l);
        }
        // Accepting: the leg is hung up when it arrives (no call entry left).
    }

    // ----- what the provider reports ----------------------------------------------------

    fn on_internal(&mut self, now: Instant, it: Internal) {
        match it {
            Internal::Accepted { call_id, result } => self.on_accepted(now, call_id, result),
            Internal::Signal { leg, signal } => self.on_signal(now, leg, signal),
            Internal::Offer { user, offer } => self.on_offer(now, &user, offer),
        }
    }

    fn forward_signals(&self, leg: LegId, mut rx: mpsc::UnboundedReceiver<LegSignal>) {
        let tx = self.internal.clone();
        tokio::spawn(async move {
            while let Some(signal) = rx.recv().await {
                let last = matches!(signal, LegSignal::Ended(_));
                if tx.send(Internal::Signal { leg, signal }).is_err() || last {
                    break;
                }
            }
        });
    }

    fn on_accepted(
        &mut self,
        now: Instant,
        call_id: String,
        result: Result<(Accepted, mpsc::UnboundedReceiver<LegSignal>), String>,
    ) {
        let Some(mut call) = self.calls.remove(&call_id) else {
            // CANCELled (or the connection went) while the leg was being made.
            if let Ok((a, _)) = result {
                self.rtc.hang_up(a.leg);
            }
            return;
        };
        let Some(key) = call.invite_key.clone() else {
            return;
        };
        match result {
            Ok((a, rx)) => {
                call.leg = Some(a.leg);
                call.sdp = a.sdp;
                call.phase = Phase::Early;
                self.by_leg.insert(a.leg, call_id.clone());
                self.forward_signals(a.leg, rx);
                if let Some(d) = call.dialog.as_mut() {
                    let r = with_sdp(d.response(&call.invite, 183), &call.sdp);
                    self.respond(now, &key, r);
                }
                self.calls.insert(call_id, call);
            }
            Err(e) => {
                tracing::info!(%call_id, "WebRTC offer refused: {e}");
                let mut r = match call.dialog.as_mut() {
                    Some(d) => d.response(&call.invite, 488),
                    None => Response::for_request(&call.invite, 488),
                };
                r.headers
                    .push(HeaderName::Warning, format!("399 spanbridge \"{e}\""));
                self.respond(now, &key, r);
            }
        }
    }

    fn on_signal(&mut self, now: Instant, leg: LegId, signal: LegSignal) {
        let Some(call_id) = self.by_leg.get(&leg).cloned() else {
            return;
        };
        let Some(mut call) = self.calls.remove(&call_id) else {
            self.by_leg.remove(&leg);
            return;
        };
        match signal {
            LegSignal::Ringing => {
                if call.inbound
                    && call.phase == Phase::Early
                    && let (Some(d), Some(key)) = (call.dialog.as_mut(), call.invite_key.clone())
                {
                    let r = d.response(&call.invite, 180);
                    self.respond(now, &key, r);
                }
            }
            LegSignal::Answered => {
                if call.inbound
                    && call.phase == Phase::Early
                    && let (Some(d), Some(key)) = (call.dialog.as_mut(), call.invite_key.take())
                {
                    let r = with_sdp(d.response(&call.invite, 200), &call.sdp);
                    self.respond(now, &key, r);
                    call.phase = Phase::Confirmed;
                }
            }
            LegSignal::Ended(cause) => {
                self.by_leg.remove(&leg);
                return self.end(now, call, &cause);
            }
        }
        self.calls.insert(call_id, call);
    }

    /// The leg is over: tell the browser (final response, CANCEL or BYE) unless its
    /// signalling is gone.
    fn end(&mut self, now: Instant, mut call: Call, cause: &EndCause) {
        if call.detached {
            tracing::info!(leg = ?call.leg, "call ended while detached: {}", cause.text);
            return;
        }
        match (call.inbound, call.phase) {
            (true, Phase::Accepting | Phase::Early) => {
                if let Some(key) = call.invite_key.take() {
                    let status = cause.sip_status_for_relay();
                    let r = match call.dialog.as_mut() {
                        Some(d) => d.response(&call.invite, status),
                        None => Response::for_request(&call.invite, status),
                    };
                    self.respond(now, &key, r);
                }
            }
            (false, Phase::Early) => {
                if let Some(key) = call.out_key.clone() {
                    match self.layer.cancel(now, &key) {
                        Ok(_) => {}
                        Err(_) => {
                            // No provisional yet: CANCEL when one comes (RFC 3261 §9.1).
                            call.cancel_wanted = true;
                            call.leg = None;
                            let id = call.invite.headers.call_id().unwrap_or_default().to_owned();
                            self.calls.insert(id, call);
                        }
                    }
                }
            }
            (_, Phase::Confirmed) => self.send_bye(now, &mut call),
            (false, Phase::Accepting) => {}
        }
    }

    fn send_bye(&mut self, now: Instant, call: &mut Call) {
        let branch = self.branch();
        let Some(d) = call.dialog.as_mut() else {
            return;
        };
        match d.new_request(Method::Bye, &branch) {
            Ok(bye) => {
                if let Err(e) =
                    self.layer
                        .send_request(now, bye, call.flow.remote, Reliability::Reliable)
                {
                    tracing::debug!("BYE not sent: {e}");
                }
            }
            Err(e) => tracing::debug!("no BYE: {e}"),
        }
    }

    fn on_offer(&mut self, now: Instant, user: &str, offer: OutgoingOffer) {
        let Some(aor) = self.endpoints.get(user).map(|(a, _)| a.clone()) else {
            return offer.decline(EndCause::sip(480, "not registered"));
        };
        let Some(target) = self.registrar.lookup(now, &aor).into_iter().next() else {
            return offer.decline(EndCause::sip(480, "no registered WebSocket binding"));
        };
        let flow = target.flow.unwrap_or(target.registered_from);
        let n = self.next();
        let branch = self.branch();
        let call_id = format!("sbws{n}-{}", uuid::Uuid::new_v4().simple());
        let local_tag = format!("sbwsf{n}");
        let mut inv = Request::new(Method::Invite, target.uri.clone());
        let via = self.via(flow.transport);
        inv.headers.push(
            HeaderName::Via,
            format!("SIP/2.0/{} {};branch={branch}", via.transport, via.sent_by),
        );
        inv.headers.push(HeaderName::MaxForwards, "70");
        let caller = if offer.caller.is_empty() {
            "anonymous".to_owned()
        } else {
            offer
                .caller
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.+*#".contains(*c))
                .collect()
        };
        let display = offer
            .caller_name
            .as_ref()
            .map(|d| {
                let clean: String = d.chars().filter(|c| *c != '"' && *c != '\\').collect();
                format!("\"{clean}\" ")
            })
            .unwrap_or_default();
        inv.headers.push(
            HeaderName::From,
            format!("{display}<sip:{caller}@{}>;tag={local_tag}", self.addr),
        );
        inv.headers.push(HeaderName::To, format!("<{aor}>"));
        inv.headers.push(HeaderName::CallId, call_id.clone());
        inv.headers.push(HeaderName::CSeq, "1 INVITE");
        if let Some(c) = self.contact(flow.transport) {
            inv.headers.push(HeaderName::Contact, format!("<{c}>"));
        }
        inv.headers.push(
            HeaderName::Allow,
            "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, OPTIONS",
        );
        inv.headers.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.sdp.as_bytes().to_vec();
        let key =
            match self
                .layer
                .send_request(now, inv.clone(), flow.remote, Reliability::Reliable)
            {
                Ok(k) => k,
                Err(e) => {
                    return offer.decline(EndCause::q850(41, format!("INVITE not sent: {e}")));
                }
            };
        let mut offer = offer;
        let leg = offer.leg;
        let (_, dummy) = mpsc::unbounded_channel();
        let signals = std::mem::replace(&mut offer.signals, dummy);
        self.forward_signals(leg, signals);
        self.by_leg.insert(leg, call_id.clone());
        self.out_keys.insert(key.clone(), call_id.clone());
        self.calls.insert(
            call_id,
            Call {
                leg: Some(leg),
                inbound: false,
                phase: Phase::Early,
                flow,
                sdp: offer.sdp.clone(),
                invite: inv,
                invite_key: None,
                out_key: Some(key),
                dialog: None,
                offer: Some(offer),
                detached: false,
                cancel_wanted: false,
                held: false,
                sdp_changes: 0,
            },
        );
    }

    fn on_response(&mut self, now: Instant, key: &TransactionKey, resp: Response) {
        if key.method != Method::Invite {
            return;
        }
        let Some(call_id) = self.out_keys.get(key).cloned() else {
            return;
        };
        let Some(mut call) = self.calls.remove(&call_id) else {
            return;
        };
        if call.cancel_wanted {
            if resp.status < 200 {
                let _ = self.layer.cancel(now, key);
                self.calls.insert(call_id, call);
            } else if resp.status < 300 {
                // Answered as we gave up: ACK and BYE.
                if let Ok(mut d) =
                    Dialog::new_uac(&call.invite, &resp, self.via(call.flow.transport))
                {
                    let branch = self.branch();
                    if let Ok(ack) = d.ack_for_2xx(&resp, &branch, None) {
                        self.sends.push((call.flow, ack.to_bytes()));
                    }
                    call.dialog = Some(d);
                    self.send_bye(now, &mut call);
                }
            }
            return;
        }
        if resp.status < 200 {
            self.calls.insert(call_id, call);
            return;
        }
        if resp.status >= 300 {
            if let Some(o) = call.offer.take() {
                o.decline(EndCause::sip(resp.status, resp.reason.clone()));
            }
            if let Some(l) = call.leg {
                self.by_leg.remove(&l);
            }
            return;
        }
        let Ok(mut d) = Dialog::new_uac(&call.invite, &resp, self.via(call.flow.transport)) else {
            if let Some(o) = call.offer.take() {
                o.decline(EndCause::q850(111, "unusable 2xx from the browser"));
            }
            return;
        };
        let branch = self.branch();
        if let Ok(ack) = d.ack_for_2xx(&resp, &branch, None) {
            self.sends.push((call.flow, ack.to_bytes()));
        }
        call.dialog = Some(d);
        call.phase = Phase::Confirmed;
        let answer = String::from_utf8_lossy(&resp.body).into_owned();
        match call.offer.take() {
            Some(o) if !answer.trim().is_empty() => o.answer(answer),
            Some(o) => o.decline(EndCause::q850(88, "the browser's 2xx had no SDP answer")),
            None => {}
        }
        self.calls.insert(call_id, call);
    }

    fn on_timeout(&mut self, _now: Instant, key: &TransactionKey) {
        if key.method != Method::Invite {
            return;
        }
        let Some(call_id) = self.out_keys.remove(key) else {
            return;
        };
        if let Some(mut call) = self.calls.remove(&call_id) {
            if let Some(o) = call.offer.take() {
                o.decline(EndCause::sip(408, "the browser did not answer the INVITE"));
            }
            if let Some(l) = call.leg {
                self.by_leg.remove(&l);
            }
        }
    }

    fn connection_closed(&mut self, id: ConnectionId) {
        self.registrar.connection_closed(id);
        self.flows.retain(|_, f| f.connection != Some(id));
        let gone: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.flow.connection == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for call_id in gone {
            let Some(mut call) = self.calls.remove(&call_id) else {
                continue;
            };
            match (call.phase, call.leg) {
                (Phase::Confirmed, Some(leg)) => match self.rtc.signalling_lost(leg) {
                    Ok(()) => {
                        tracing::info!(%leg, %call_id, "SIP-WS connection lost mid-call: grace period");
                        call.detached = true;
                        self.calls.insert(call_id, call);
                    }
                    Err(_) => {
                        self.rtc.hang_up(leg);
                        self.by_leg.remove(&leg);
                    }
                },
                (_, leg) => {
                    // Not yet answered: nobody can answer it any more.
                    if let Some(l) = leg {
                        self.rtc.hang_up(l);
                        self.by_leg.remove(&l);
                    }
                    if let Some(o) = call.offer.take() {
                        o.decline(EndCause::sip(480, "the browser's connection closed"));
                    }
                }
            }
        }
    }
}

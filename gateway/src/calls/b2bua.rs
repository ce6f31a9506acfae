//! The SIP-to-SIP B2BUA call core, sans-IO: leg A (we are its UAS) is routed by Request-URI
//! user to leg B (we are its UAC); provisional and final responses are relayed, CANCEL and BYE
//! cross over, and each side's SDP is re-offered to the other with the gateway's own media
//! address (media anchoring). The shell feeds received SIP messages and time, allocates media
//! ports when asked ([`CallEvent::AllocateMedia`]), and releases them on [`CallEvent::Ended`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::sip::auth::DigestClient;
use crate::sip::dialog::{
    AnswerRetransmit, AnswerTimer, Dialog, DialogId, InDialogRequest, ViaTemplate, uri_socket_addr,
};
use crate::sip::message::{HeaderName, Method, Request, Response, Uri};
use crate::sip::sdp::SessionDescription;
use crate::sip::transaction::{
    Reliability, TimerConfig, TransactionKey, TransactionLayer, Transmit, TuEvent,
};

/// A call's stable identity: a `urn:uuid:` URI (RFC 4122), present in every event and log line.
pub type CallUri = String;

/// Static routing for now: Request-URI user → the SIP destination of leg B.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Exact user matches.
    pub by_user: HashMap<String, SocketAddr>,
    /// Where unmatched users go (`None`: answer 404).
    pub default: Option<SocketAddr>,
}

impl Routes {
    fn lookup(&self, user: &str) -> Option<SocketAddr> {
        self.by_user.get(user).copied().or(self.default)
    }
}

/// Settings of the B2BUA core.
#[derive(Debug, Clone)]
pub struct B2buaConfig {
    /// Our SIP address (Via sent-by, Contact, From of leg B).
    pub sip_addr: SocketAddr,
    /// Routing of new calls.
    pub routes: Routes,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Seed for call URIs, tags and branches (random in production, fixed in tests).
    pub seed: [u8; 32],
    /// Digest credentials (user, password) to answer a 401/407 from a leg-B destination.
    pub credentials: HashMap<SocketAddr, (String, String)>,
}

/// What the shell must do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// Allocate an RTP port pair for each leg, then call [`B2bua::media_ready`].
    AllocateMedia {
        /// The call.
        call: CallUri,
    },
    /// Both sides' media addresses are known (from their SDP): start relaying.
    MediaPeers {
        /// The call.
        call: CallUri,
        /// Where leg A's party receives RTP.
        a_remote: SocketAddr,
        /// Where leg B's party receives RTP.
        b_remote: SocketAddr,
    },
    /// The call is over; release its media.
    Ended {
        /// The call.
        call: CallUri,
        /// Why (a SIP status, or a short reason).
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingMedia,
    Calling,
    Answered,
}

/// A re-INVITE from one leg being relayed to the other.
#[derive(Debug)]
struct Reinvite {
    from: Side,
    key: TransactionKey,
    request: Request,
    sdp: Option<SessionDescription>,
    out_seq: u32,
}

#[derive(Debug)]
struct Call {
    uri: CallUri,
    phase: Phase,
    a_key: TransactionKey,
    a_invite: Request,
    a_source: SocketAddr,
    a_dialog: Dialog,
    a_sdp: SessionDescription,
    a_answer: Option<AnswerRetransmit>,
    a_cancelled: bool,
    a_call_id: String,
    b_digest: Option<DigestClient>,
    b_answer: Option<AnswerRetransmit>,
    b_sdp: Option<SessionDescription>,
    sdp_version: u64,
    reinvite: Option<Reinvite>,
    b_dest: SocketAddr,
    b_user: String,
    b_call_id: String,
    b_invite: Option<Request>,
    b_key: Option<TransactionKey>,
    b_dialog: Option<Dialog>,
    a_local: Option<SocketAddr>,
    b_local: Option<SocketAddr>,
}

/// Counters for tests and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct B2buaStats {
    /// Calls that reached the answered state.
    pub answered: u64,
    /// Calls ended (any reason).
    pub ended: u64,
    /// INVITEs refused before routing (no route, bad SDP, ...).
    pub rejected: u64,
    /// Calls hung up because a leg never ACKed our 2xx (RFC 3261 §13.3.1.4).
    pub ack_timeouts: u64,
}

/// The B2BUA core: one transaction layer for both legs, the calls, and their dialogs.
#[derive(Debug)]
pub struct B2bua {
    config: B2buaConfig,
    layer: TransactionLayer,
    calls: HashMap<CallUri, Call>,
    /// Leg A (Call-ID, From tag) → call.
    by_a: HashMap<(String, String), CallUri>,
    /// Leg A Call-ID → call (for responses to requests we send on leg A).
    by_a_call_id: HashMap<String, CallUri>,
    /// Leg B Call-ID → call.
    by_b: HashMap<String, CallUri>,
    events: Vec<CallEvent>,
    pending: Vec<Transmit>,
    counter: u64,
    stats: B2buaStats,
    contact: Uri,
}

/// Why the core cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum B2buaError {
    /// The configured SIP address does not form a SIP URI.
    #[error("SIP address {0} does not form a valid SIP URI")]
    BadAddress(SocketAddr),
}

fn user_of(uri: &Uri) -> String {
    uri.sip_parts()
        .and_then(|p| p.user.map(str::to_owned))
        .unwrap_or_default()
}

/// `sdp` with every connection address set to `local`'s IP and the audio port set to
/// `local`'s port (the gateway anchors the media).
fn anchor_sdp(sdp: &SessionDescription, local: SocketAddr, version: u64) -> Vec<u8> {
    let mut out = sdp.clone();
    out.origin_addr = local.ip();
    out.origin_user = "spanbridge".to_owned();
    out.session_version = version;
    out.connection = Some(local.ip());
    let mut done = false;
    for m in &mut out.media {
        m.connection = None;
        if m.kind == "audio" && m.port != 0 && !done {
            m.port = local.port();
            done = true;
        } else {
            // Only one audio stream is anchored; refuse the rest.
            m.port = 0;
        }
    }
    out.to_string().into_bytes()
}

fn audio_addr(sdp: &SessionDescription) -> Option<SocketAddr> {
    let m = sdp.audio()?;
    let ip: IpAddr = sdp.address_of(m)?;
    Some(SocketAddr::new(ip, m.port))
}

fn parse_sdp(body: &[u8]) -> Option<SessionDescription> {
    let text = std::str::from_utf8(body).ok()?;
    SessionDescription::parse(text).ok()
}

impl B2bua {
    /// A core with no calls.
    pub fn new(config: B2buaConfig) -> Result<Self, B2buaError> {
        let contact = Uri::parse(&format!("sip:gw@{}", config.sip_addr))
            .map_err(|_| B2buaError::BadAddress(config.sip_addr))?;
        Ok(B2bua {
            layer: TransactionLayer::new(config.timers),
            contact,
            pending: Vec::new(),
            config,
            calls: HashMap::new(),
            by_a: HashMap::new(),
            by_a_call_id: HashMap::new(),
            by_b: HashMap::new(),
            events: Vec::new(),
            counter: 0,
            stats: B2buaStats::default(),
        })
    }

    /// Live calls.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Live legs (two per call once it is routed).
    pub fn legs(&self) -> usize {
        self.calls.len() * 2
    }

    /// Live transactions (they outlive calls by their completion timers).
    pub fn transactions(&self) -> usize {
        self.layer.len()
    }

    /// Counters.
    pub fn stats(&self) -> &B2buaStats {
        &self.stats
    }

    fn token(&mut self) -> [u8; 32] {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.config.seed);
        h.update(self.counter.to_be_bytes());
        h.finalize().into()
    }

    fn hex_token(&mut self, len: usize) -> String {
        let t = self.token();
        t.iter()
            .take(len.div_ceil(2))
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }

    fn new_call_uri(&mut self) -> CallUri {
        let mut b = self.token();
        // RFC 4122 version 4 / variant bits.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: Vec<String> = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
        format!(
            "urn:uuid:{}-{}-{}-{}-{}",
            h[0..4].concat(),
            h[4..6].concat(),
            h[6..8].concat(),
            h[8..10].concat(),
            h[10..16].concat()
        )
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.hex_token(16))
    }

    fn via(&self) -> ViaTemplate {
        ViaTemplate {
            transport: "UDP".to_owned(),
            sent_by: self.config.sip_addr.to_string(),
        }
    }

    /// Feeds a received SIP datagram.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8], source: SocketAddr) {
        self.layer
            .handle_datagram(now, bytes, source, Reliability::Unreliable);
        self.run(now);
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        let mut resends = Vec::new();
        let mut gave_up = Vec::new();
        for call in self.calls.values_mut() {
            for a in [call.a_answer.as_mut(), call.b_answer.as_mut()]
                .into_iter()
                .flatten()
            {
                if a.poll_timeout().is_some_and(|t| t <= now) {
                    match a.handle_timeout(now) {
                        AnswerTimer::Resend { dest, bytes } => {
                            resends.push(Transmit { dest, bytes })
                        }
                        AnswerTimer::GaveUp => gave_up.push(call.uri.clone()),
                        AnswerTimer::Idle => {}
                    }
                }
            }
        }
        self.pending.extend(resends);
        for uri in gave_up {
            self.stats.ack_timeouts += 1;
            self.hang_up(now, &uri, true, true, "ACK timeout");
        }
        self.run(now);
    }

    /// The earliest time [`B2bua::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let answers = self
            .calls
            .values()
            .flat_map(|c| [c.a_answer.as_ref(), c.b_answer.as_ref()])
            .flatten()
            .filter_map(AnswerRetransmit::poll_timeout);
        answers.chain(self.layer.poll_timeout()).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.pending.pop() {
            return Some(t);
        }
        self.layer.poll_transmit()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl B2bua {
    fn run(&mut self, now: Instant) {
        while let Some(ev) = self.layer.poll_event() {
            match ev {
                TuEvent::Request {
                    key,
                    request,
                    source,
                } => self.on_request(now, key, request, source),
                TuEvent::Ack { request, .. } => self.on_ack(&request),
                TuEvent::Cancelled { invite } => self.on_cancelled(now, &invite),
                TuEvent::Response { response, .. } => self.on_response(now, response),
                TuEvent::Timeout { key } => self.on_timeout(now, &key),
                TuEvent::Terminated { .. } => {}
            }
        }
    }

    fn find_call(&self, req: &Request) -> Option<(CallUri, Side)> {
        let call_id = req.headers.call_id().ok()?;
        if let Some(c) = self.by_b.get(call_id) {
            return Some((c.clone(), Side::B));
        }
        let from = req.headers.from().ok()?;
        let tag = from.tag()?.to_owned();
        self.by_a
            .get(&(call_id.to_owned(), tag))
            .map(|c| (c.clone(), Side::A))
    }

    fn answer(&mut self, now: Instant, key: &TransactionKey, req: &Request, status: u16) {
        let mut resp = Response::for_request(req, status);
        let tag = self.hex_token(8);
        resp.ensure_to_tag(&tag);
        // Fails only if the transaction already ended; nothing more to do then.
        let _ = self.layer.send_response(now, key, resp);
    }

    fn on_request(&mut self, now: Instant, key: TransactionKey, req: Request, source: SocketAddr) {
        let has_to_tag = req.headers.to().ok().is_some_and(|t| t.tag().is_some());
        let Some((uri, side)) = self.find_call(&req) else {
            match req.method {
                Method::Invite if !has_to_tag => self.new_call(now, key, req, source),
                Method::Options if !has_to_tag => self.answer(now, &key, &req, 200),
                _ if has_to_tag => self.answer(now, &key, &req, 481),
                _ => self.answer(now, &key, &req, 405),
            }
            return;
        };
        if !has_to_tag {
            // Same Call-ID and From tag, new branch: a loop or a forked copy.
            self.answer(now, &key, &req, 482);
            return;
        }
        let Some(call) = self.calls.get_mut(&uri) else {
            return;
        };
        let dialog = match side {
            Side::A => Some(&mut call.a_dialog),
            Side::B => call.b_dialog.as_mut(),
        };
        let Some(dialog) = dialog else {
            self.answer(now, &key, &req, 481);
            return;
        };
        let verdict = dialog.handle_request(&req);
        if verdict == Ok(InDialogRequest::ReInvite) && call.phase == Phase::Answered {
            self.relay_reinvite(now, &uri, side, key, req);
            return;
        }
        let Some(call) = self.calls.get_mut(&uri) else {
            return;
        };
        let dialog = match side {
            Side::A => Some(&mut call.a_dialog),
            Side::B => call.b_dialog.as_mut(),
        };
        let Some(dialog) = dialog else {
            return;
        };
        let status = match verdict {
            Ok(InDialogRequest::Bye) => 200,
            Ok(InDialogRequest::Other)
                if matches!(req.method, Method::Info | Method::Options | Method::Notify) =>
            {
                200
            }
            // Re-INVITE/UPDATE/REFER relaying is not implemented yet: refuse without harm.
            Ok(InDialogRequest::ReInvite | InDialogRequest::Update) => 488,
            Ok(_) => 501,
            Err(rej) => rej.status().unwrap_or(500),
        };
        let resp = dialog.response(&req, status);
        let _ = self.layer.send_response(now, &key, resp);
        if verdict == Ok(InDialogRequest::Bye) {
            let reason = match side {
                Side::A => "BYE from A",
                Side::B => "BYE from B",
            };
            self.hang_up(now, &uri, side == Side::B, side == Side::A, reason);
        }
    }

    fn new_call(&mut self, now: Instant, key: TransactionKey, req: Request, source: SocketAddr) {
        let user = user_of(&req.uri);
        let reject = |me: &mut Self, status| {
            me.stats.rejected += 1;
            me.answer(now, &key, &req, status);
        };
        if req.headers.max_forwards().ok().flatten() == Some(0) {
            return reject(self, 483);
        }
        let Some(b_dest) = self.config.routes.lookup(&user) else {
            return reject(self, 404);
        };
        let Some(a_sdp) = parse_sdp(&req.body).filter(|s| audio_addr(s).is_some()) else {
            // An INVITE without an (audio) offer: late offer is not supported yet.
            return reject(self, 488);
        };
        let tag = self.hex_token(8);
        let via = self.via();
        let Ok(a_dialog) = Dialog::new_uas(&req, &tag, self.contact.clone(), via) else {
            return reject(self, 400);
        };
        let (Ok(call_id), Ok(from)) = (req.headers.call_id(), req.headers.from()) else {
            return reject(self, 400);
        };
        let a_index = (
            call_id.to_owned(),
            from.tag().unwrap_or_default().to_owned(),
        );
        let a_call_id = call_id.to_owned();
        let uri = self.new_call_uri();
        let b_call_id = format!("{}@{}", self.hex_token(24), self.config.sip_addr.ip());
        self.by_a.insert(a_index, uri.clone());
        self.by_a_call_id.insert(call_id.to_owned(), uri.clone());
        self.calls.insert(
            uri.clone(),
            Call {
                uri: uri.clone(),
                phase: Phase::AwaitingMedia,
                a_key: key,
                a_invite: req,
                a_source: source,
                a_dialog,
                a_sdp,
                a_answer: None,
                a_cancelled: false,
                a_call_id,
                b_answer: None,
                b_sdp: None,
                sdp_version: 1,
                reinvite: None,
                b_digest: None,
                b_dest,
                b_user: user,
                b_call_id,
                b_invite: None,
                b_key: None,
                b_dialog: None,
                a_local: None,
                b_local: None,
            },
        );
        self.events.push(CallEvent::AllocateMedia { call: uri });
    }

    /// The shell allocated leg A's and leg B's local RTP addresses: leg B is called. Returns
    /// `false` if the call is gone (release the ports again).
    pub fn media_ready(
        &mut self,
        now: Instant,
        call: &str,
        a_local: SocketAddr,
        b_local: SocketAddr,
    ) -> bool {
        let branch = self.branch();
        let from_tag = self.hex_token(8);
        let contact = self.contact.clone();
        let sip_addr = self.config.sip_addr;
        let Some(c) = self.calls.get_mut(call) else {
            return false;
        };
        if c.phase != Phase::AwaitingMedia {
            return false;
        }
        let Ok(target) = Uri::parse(&format!("sip:{}@{}", c.b_user, c.b_dest)) else {
            return false;
        };
        let caller = c
            .a_invite
            .headers
            .from()
            .ok()
            .map(|f| user_of(&f.uri))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "gateway".to_owned());
        let mut inv = Request::new(Method::Invite, target.clone());
        let h = &mut inv.headers;
        h.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP {sip_addr};branch={branch};rport"),
        );
        let mf = c
            .a_invite
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .map_or(70, |m| m.saturating_sub(1));
        h.push(HeaderName::MaxForwards, mf.to_string());
        h.push(
            HeaderName::From,
            format!("<sip:{caller}@{sip_addr}>;tag={from_tag}"),
        );
        h.push(HeaderName::To, format!("<{target}>"));
        h.push(HeaderName::CallId, c.b_call_id.clone());
        h.push(HeaderName::CSeq, "1 INVITE");
        h.push(HeaderName::Contact, format!("<{contact}>"));
        h.push(HeaderName::ContentType, "application/sdp");
        inv.body = anchor_sdp(&c.a_sdp, b_local, 1);
        c.a_local = Some(a_local);
        c.b_local = Some(b_local);
        c.phase = Phase::Calling;
        c.b_invite = Some(inv.clone());
        let dest = c.b_dest;
        let b_call_id = c.b_call_id.clone();
        match self
            .layer
            .send_request(now, inv, dest, Reliability::Unreliable)
        {
            Ok(k) => {
                if let Some(c) = self.calls.get_mut(call) {
                    c.b_key = Some(k);
                }
                self.by_b.insert(b_call_id, call.to_owned());
                true
            }
            Err(_) => {
                self.fail_a(now, call, 500, "could not send INVITE to leg B");
                false
            }
        }
    }

    /// The shell could not allocate media ports: leg A gets 503 and the call ends.
    pub fn media_failed(&mut self, now: Instant, call: &str) {
        if self
            .calls
            .get(call)
            .is_some_and(|c| c.phase == Phase::AwaitingMedia)
        {
            self.fail_a(now, call, 503, "no media ports");
        }
    }

    /// Answers leg A's pending INVITE with `status` and ends the call.
    fn fail_a(&mut self, now: Instant, uri: &str, status: u16, reason: &str) {
        if let Some(c) = self.calls.get_mut(uri) {
            let resp = c.a_dialog.response(&c.a_invite, status);
            let key = c.a_key.clone();
            let _ = self.layer.send_response(now, &key, resp);
        }
        self.remove(uri, reason);
    }

    fn remove(&mut self, uri: &str, reason: &str) {
        if let Some(c) = self.calls.remove(uri) {
            self.by_b.remove(&c.b_call_id);
            self.by_a.retain(|_, v| v != uri);
            self.by_a_call_id.remove(&c.a_call_id);
            self.stats.ended += 1;
            self.events.push(CallEvent::Ended {
                call: c.uri,
                reason: reason.to_owned(),
            });
        }
    }

    /// Ends a call, sending BYE on the legs that are up and asked for.
    fn hang_up(&mut self, now: Instant, uri: &str, bye_a: bool, bye_b: bool, reason: &str) {
        let mut byes = Vec::new();
        let branch_a = self.branch();
        let branch_b = self.branch();
        if let Some(c) = self.calls.get_mut(uri) {
            if bye_a {
                c.a_dialog.ack_never_came();
                if let Ok(bye) = c.a_dialog.new_request(Method::Bye, &branch_a) {
                    let dest = uri_socket_addr(c.a_dialog.next_hop()).unwrap_or(c.a_source);
                    byes.push((bye, dest));
                }
            }
            if bye_b
                && let Some(d) = c.b_dialog.as_mut()
                && let Ok(bye) = d.new_request(Method::Bye, &branch_b)
            {
                let dest = uri_socket_addr(d.next_hop()).unwrap_or(c.b_dest);
                byes.push((bye, dest));
            }
        }
        for (bye, dest) in byes {
            let _ = self
                .layer
                .send_request(now, bye, dest, Reliability::Unreliable);
        }
        self.remove(uri, reason);
    }

    fn on_ack(&mut self, req: &Request) {
        let Some((uri, side)) = self.find_call(req) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&uri) else {
            return;
        };
        let (dialog, answer) = match side {
            Side::A => (Some(&mut c.a_dialog), c.a_answer.as_mut()),
            Side::B => (c.b_dialog.as_mut(), c.b_answer.as_mut()),
        };
        if let Some(d) = dialog
            && d.handle_request(req) == Ok(InDialogRequest::Ack)
            && let (Some(a), Ok(cseq)) = (answer, req.headers.cseq())
        {
            a.ack_received(cseq.seq);
        }
    }

    /// Relays an accepted re-INVITE (hold/resume, address or codec change) from `from` to the
    /// other leg, with its SDP anchored at the other leg's gateway address.
    fn relay_reinvite(
        &mut self,
        now: Instant,
        uri: &str,
        from: Side,
        key: TransactionKey,
        req: Request,
    ) {
        let branch = self.branch();
        let Some(c) = self.calls.get_mut(uri) else {
            return;
        };
        let sdp = parse_sdp(&req.body);
        let (local, out_dialog) = match from {
            Side::A => (c.b_local, c.b_dialog.as_mut()),
            Side::B => (c.a_local, Some(&mut c.a_dialog)),
        };
        let out = out_dialog.and_then(|d| {
            let r = d.new_request(Method::Invite, &branch).ok()?;
            let dest = uri_socket_addr(d.next_hop())?;
            Some((r, dest))
        });
        let Some((mut out, dest)) = out else {
            // The other leg has an INVITE of its own in progress: glare toward `from`.
            let d = match from {
                Side::A => Some(&mut c.a_dialog),
                Side::B => c.b_dialog.as_mut(),
            };
            if let Some(d) = d {
                let resp = d.response(&req, 491);
                let _ = self.layer.send_response(now, &key, resp);
            }
            return;
        };
        if let (Some(sdp), Some(local)) = (&sdp, local) {
            c.sdp_version += 1;
            out.headers.push(HeaderName::ContentType, "application/sdp");
            out.body = anchor_sdp(sdp, local, c.sdp_version);
        }
        let out_seq = out.headers.cseq().map(|s| s.seq).unwrap_or(0);
        c.reinvite = Some(Reinvite {
            from,
            key,
            request: req,
            sdp,
            out_seq,
        });
        let _ = self
            .layer
            .send_request(now, out, dest, Reliability::Unreliable);
    }

    /// A response to a re-INVITE we relayed: ACK a 2xx on that leg, answer the originator with
    /// the peer's SDP anchored on its side, and update the media peers.
    fn on_reinvite_response(&mut self, now: Instant, uri: &str, resp: &Response) {
        let ack_branch = self.branch();
        let Some(c) = self.calls.get_mut(uri) else {
            return;
        };
        let Some(re) = c.reinvite.as_ref() else {
            return;
        };
        let from = re.from;
        let (answered_dialog, origin_local) = match from {
            Side::A => (c.b_dialog.as_mut(), c.a_local),
            Side::B => (Some(&mut c.a_dialog), c.b_local),
        };
        let Some(answered_dialog) = answered_dialog else {
            return;
        };
        answered_dialog.handle_response(resp);
        if resp.status < 200 {
            return;
        }
        let success = resp.status < 300;
        if success
            && let Ok(ack) = answered_dialog.ack_for_2xx(resp, &ack_branch, None)
            && let Some(dest) = uri_socket_addr(answered_dialog.next_hop())
        {
            self.pending.push(Transmit {
                dest,
                bytes: ack.to_bytes(),
            });
        }
        let Some(c) = self.calls.get_mut(uri) else {
            return;
        };
        let Some(re) = c.reinvite.take() else {
            return;
        };
        let peer_sdp = parse_sdp(&resp.body);
        c.sdp_version += 1;
        let version = c.sdp_version;
        let (origin_dialog, origin_source) = match from {
            Side::A => (Some(&mut c.a_dialog), Some(c.a_source)),
            Side::B => (c.b_dialog.as_mut(), None),
        };
        let Some(origin_dialog) = origin_dialog else {
            return;
        };
        let mut answer = origin_dialog.response(&re.request, resp.status);
        answer.reason = resp.reason.clone();
        let origin_dest = origin_source.or_else(|| uri_socket_addr(origin_dialog.next_hop()));
        if success {
            if let (Some(sdp), Some(local)) = (&peer_sdp, origin_local) {
                answer
                    .headers
                    .push(HeaderName::ContentType, "application/sdp");
                answer.body = anchor_sdp(sdp, local, version);
            }
            // Update what each side's media address is.
            match from {
                Side::A => {
                    if let Some(s) = &re.sdp {
                        c.a_sdp = s.clone();
                    }
                    if peer_sdp.is_some() {
                        c.b_sdp = peer_sdp.clone();
                    }
                }
                Side::B => {
                    if let Some(s) = &peer_sdp {
                        c.a_sdp = s.clone();
                    }
                    if re.sdp.is_some() {
                        c.b_sdp = re.sdp.clone();
                    }
                }
            }
        }
        let mut sent = answer.clone();
        if let Some(dest) = origin_dest {
            crate::sip::transaction::stamp_received(&mut sent, dest);
        }
        let bytes = sent.to_bytes();
        let _ = self.layer.send_response(now, &re.key, answer);
        if success {
            let seq = re.request.headers.cseq().map(|s| s.seq).unwrap_or(0);
            let retransmit = origin_dest.map(|dest| {
                AnswerRetransmit::new(
                    now,
                    seq,
                    dest,
                    bytes,
                    Reliability::Unreliable,
                    self.config.timers,
                )
            });
            match from {
                Side::A => c.a_answer = retransmit,
                Side::B => c.b_answer = retransmit,
            }
            let peers = audio_addr(&c.a_sdp).zip(c.b_sdp.as_ref().and_then(audio_addr));
            if let Some((a_remote, b_remote)) = peers {
                self.events.push(CallEvent::MediaPeers {
                    call: uri.to_owned(),
                    a_remote,
                    b_remote,
                });
            }
        }
    }

    fn on_cancelled(&mut self, now: Instant, invite: &TransactionKey) {
        let Some(uri) = self
            .calls
            .values()
            .find(|c| &c.a_key == invite)
            .map(|c| c.uri.clone())
        else {
            return;
        };
        let Some(c) = self.calls.get_mut(&uri) else {
            return;
        };
        match c.phase {
            Phase::AwaitingMedia => self.fail_a(now, &uri, 487, "CANCEL from A"),
            Phase::Calling => {
                c.a_cancelled = true;
                let resp = c.a_dialog.response(&c.a_invite, 487);
                let (a_key, b_key) = (c.a_key.clone(), c.b_key.clone());
                let _ = self.layer.send_response(now, &a_key, resp);
                // The call ends when leg B's final response arrives.
                if let Some(k) = b_key
                    && self.layer.cancel(now, &k).is_err()
                {
                    self.remove(&uri, "CANCEL from A");
                }
            }
            Phase::Answered => {}
        }
    }

    fn on_timeout(&mut self, now: Instant, key: &TransactionKey) {
        let Some(c) = self
            .calls
            .values()
            .find(|c| c.b_key.as_ref() == Some(key) || &c.a_key == key)
        else {
            return;
        };
        let uri = c.uri.clone();
        if c.phase == Phase::Answered {
            return;
        }
        if c.b_key.as_ref() == Some(key) && !c.a_cancelled {
            self.fail_a(now, &uri, 408, "leg B did not answer");
        } else {
            // Leg A's INVITE was answered 408 by the transaction layer itself.
            if let Some(k) = c.b_key.clone() {
                let _ = self.layer.cancel(now, &k);
            }
            self.remove(&uri, "timeout");
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        let Ok(cseq) = resp.headers.cseq() else {
            return;
        };
        let Ok(call_id) = resp.headers.call_id() else {
            return;
        };
        let (uri, side) = if let Some(u) = self.by_b.get(call_id) {
            (u.clone(), Side::B)
        } else if let Some(u) = self.by_a_call_id.get(call_id) {
            (u.clone(), Side::A)
        } else {
            return;
        };
        if cseq.method != Method::Invite || resp.status == 100 {
            return;
        }
        let is_reinvite_response = self.calls.get(&uri).is_some_and(|c| {
            c.reinvite
                .as_ref()
                .is_some_and(|r| r.out_seq == cseq.seq && r.from != side)
        });
        if is_reinvite_response {
            self.on_reinvite_response(now, &uri, &resp);
            return;
        }
        if side == Side::A {
            // A retransmitted 2xx to a re-INVITE we sent on leg A: ACK it again.
            let branch = self.branch();
            if (200..300).contains(&resp.status)
                && let Some(c) = self.calls.get_mut(&uri)
                && let Ok(ack) = c.a_dialog.ack_for_2xx(&resp, &branch, None)
                && let Some(dest) = uri_socket_addr(c.a_dialog.next_hop())
            {
                self.pending.push(Transmit {
                    dest,
                    bytes: ack.to_bytes(),
                });
            }
            return;
        }
        let ack_branch = self.branch();
        let sip_via = self.via();
        let Some(c) = self.calls.get_mut(&uri) else {
            return;
        };
        let Some(b_invite) = c.b_invite.clone() else {
            return;
        };
        let has_tag = resp.headers.to().ok().is_some_and(|t| t.tag().is_some());
        if has_tag && resp.status < 300 {
            match c.b_dialog.as_mut() {
                None => c.b_dialog = Dialog::new_uac(&b_invite, &resp, sip_via).ok(),
                Some(d) => {
                    d.handle_response(&resp);
                }
            }
        }
        let b_sdp = parse_sdp(&resp.body);
        if resp.status < 200 {
            if c.a_cancelled {
                return;
            }
            let mut relay = c.a_dialog.response(&c.a_invite, resp.status);
            relay.reason = resp.reason.clone();
            if let (Some(sdp), Some(local)) = (&b_sdp, c.a_local) {
                relay
                    .headers
                    .push(HeaderName::ContentType, "application/sdp");
                relay.body = anchor_sdp(sdp, local, 1);
            }
            let key = c.a_key.clone();
            let _ = self.layer.send_response(now, &key, relay);
            return;
        }
        if resp.status < 300 {
            // ACK every 2xx (retransmissions too) along leg B's route set to its Contact.
            let ack = c
                .b_dialog
                .as_mut()
                .and_then(|d| d.ack_for_2xx(&resp, &ack_branch, None).ok());
            let dest = c
                .b_dialog
                .as_ref()
                .and_then(|d| uri_socket_addr(d.next_hop()))
                .unwrap_or(c.b_dest);
            if let Some(ack) = ack {
                self.pending.push(Transmit {
                    dest,
                    bytes: ack.to_bytes(),
                });
            }
            let Some(c) = self.calls.get_mut(&uri) else {
                return;
            };
            if c.phase == Phase::Answered {
                return;
            }
            if c.a_cancelled || c.b_dialog.is_none() {
                // A gave up while B answered: B's call must not stay up.
                self.hang_up(now, &uri, false, true, "CANCEL from A crossed 2xx");
                return;
            }
            let (Some(sdp), Some(a_local)) = (b_sdp, c.a_local) else {
                self.hang_up(now, &uri, false, true, "2xx from B without SDP");
                return;
            };
            let mut ok = c.a_dialog.response(&c.a_invite, resp.status);
            ok.reason = resp.reason.clone();
            ok.headers.push(HeaderName::ContentType, "application/sdp");
            ok.body = anchor_sdp(&sdp, a_local, 1);
            crate::sip::transaction::stamp_received(&mut ok, c.a_source);
            let bytes = ok.to_bytes();
            let key = c.a_key.clone();
            let seq = c.a_invite.headers.cseq().map(|s| s.seq).unwrap_or(0);
            c.a_answer = Some(AnswerRetransmit::new(
                now,
                seq,
                c.a_source,
                bytes,
                Reliability::Unreliable,
                self.config.timers,
            ));
            c.phase = Phase::Answered;
            let peers = audio_addr(&c.a_sdp).zip(audio_addr(&sdp));
            c.b_sdp = Some(sdp);
            let _ = self.layer.send_response(now, &key, ok);
            self.stats.answered += 1;
            if let Some((a_remote, b_remote)) = peers {
                self.events.push(CallEvent::MediaPeers {
                    call: uri.clone(),
                    a_remote,
                    b_remote,
                });
            }
            return;
        }
        // A final failure from B: relay it to A (unless A already got its 487) and end.
        if c.phase == Phase::Answered {
            return;
        }
        if matches!(resp.status, 401 | 407) && !c.a_cancelled {
            let creds = self.config.credentials.get(&c.b_dest).cloned();
            let branch = self.branch();
            let cnonce = self.hex_token(16);
            let Some(c) = self.calls.get_mut(&uri) else {
                return;
            };
            let retry = creds.and_then(|(user, password)| {
                let client = c
                    .b_digest
                    .get_or_insert_with(|| DigestClient::new(&user, &password));
                client.authorize(&b_invite, &resp, &branch, &cnonce).ok()
            });
            if let Some(retry) = retry {
                c.b_invite = Some(retry.clone());
                let dest = c.b_dest;
                match self
                    .layer
                    .send_request(now, retry, dest, Reliability::Unreliable)
                {
                    Ok(k) => {
                        if let Some(c) = self.calls.get_mut(&uri) {
                            c.b_key = Some(k);
                        }
                        return;
                    }
                    Err(_) => {
                        self.fail_a(now, &uri, 500, "could not resend INVITE to leg B");
                        return;
                    }
                }
            }
            // No or rejected credentials: the trunk refused us, not the caller's fault.
            self.fail_a(now, &uri, 403, "leg B authentication failed");
            return;
        }
        if !c.a_cancelled {
            let mut relay = c.a_dialog.response(&c.a_invite, resp.status);
            relay.reason = resp.reason.clone();
            let key = c.a_key.clone();
            let _ = self.layer.send_response(now, &key, relay);
        }
        let reason = format!("{} from B", resp.status);
        self.remove(&uri, &reason);
    }

    /// The dialog ids of leg A of every live call (for tests and `gwctl calls`).
    pub fn leg_a_dialogs(&self) -> Vec<DialogId> {
        self.calls
            .values()
            .map(|c| c.a_dialog.id().clone())
            .collect()
    }
}

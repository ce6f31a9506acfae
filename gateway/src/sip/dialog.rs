//! RFC 3261 §12 dialogs as sans-IO state: creation on the UAC and UAS side, route sets from
//! Record-Route, the remote target from Contact, CSeq rules, in-dialog request construction with
//! loose and strict routing, the ACK for a 2xx, the UAS's 2xx retransmission until ACK (RFC 3261
//! §13.3.1.4 / RFC 6026) and the §14.1 glare back-off.
//!
//! A [`Dialog`] never touches a socket or a clock: the caller asks it to build a request, finds
//! the next hop with [`Dialog::next_hop`], and passes the request to the transaction layer (or,
//! for an ACK, straight to the transport).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::message::{HeaderName, Method, NameAddr, Request, Response, Uri};
use super::transaction::{Reliability, TimerConfig};

/// Identifies a dialog from our side (RFC 3261 §12): Call-ID, our tag, the peer's tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (From for requests we send, To for those we receive).
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a received request belongs to (local tag = To tag, remote tag = From tag);
    /// `None` if it carries no To tag (it is not an in-dialog request).
    pub fn for_received_request(req: &Request) -> Option<DialogId> {
        let to = req.headers.to().ok()?;
        let from = req.headers.from().ok()?;
        Some(DialogId {
            call_id: req.headers.call_id().ok()?.to_owned(),
            local_tag: to.tag()?.to_owned(),
            remote_tag: from.tag().unwrap_or_default().to_owned(),
        })
    }

    /// The dialog a received response belongs to (local tag = From tag, remote tag = To tag);
    /// `None` without both tags.
    pub fn for_received_response(resp: &Response) -> Option<DialogId> {
        let to = resp.headers.to().ok()?;
        let from = resp.headers.from().ok()?;
        Some(DialogId {
            call_id: resp.headers.call_id().ok()?.to_owned(),
            local_tag: from.tag()?.to_owned(),
            remote_tag: to.tag()?.to_owned(),
        })
    }
}

/// Where a dialog is in its life (RFC 3261 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// Ended by BYE, a non-2xx final to the initial INVITE, 481/408 to an in-dialog request, or
    /// the caller.
    Terminated,
}

/// Which side created the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogRole {
    /// We sent the initial INVITE.
    Uac,
    /// We received the initial INVITE.
    Uas,
}

/// How we appear in the Via of requests we send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaTemplate {
    /// Transport token (`UDP`, `TCP`, `TLS`).
    pub transport: String,
    /// Our sent-by (`host:port`).
    pub sent_by: String,
}

/// Why a dialog operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DialogError {
    /// The message lacks a header a dialog needs (named); the peer is non-compliant.
    #[error("message cannot create a dialog: {0}")]
    Unusable(&'static str),
    /// The dialog has ended; start a new call instead.
    #[error("dialog is terminated")]
    Terminated,
    /// RFC 3261 §14.1: an INVITE transaction is already in progress in either direction; retry
    /// after it completes.
    #[error("an INVITE transaction is already in progress in this dialog")]
    InviteInProgress,
    /// ACK and CANCEL are not built with `new_request` (use `ack_for_2xx` or the transaction
    /// layer's `cancel`).
    #[error("{0} is not sent as a new in-dialog request")]
    WrongMethod(&'static str),
    /// The local CSeq would pass 2^31 (RFC 3261 §8.1.1.5); end the dialog.
    #[error("local CSeq exhausted")]
    CSeqExhausted,
}

/// What a received in-dialog request means for the dialog, when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDialogRequest {
    /// The ACK for our 2xx to INVITE: stop retransmitting it.
    Ack,
    /// A re-INVITE (hold/resume, address or codec change): answer it.
    ReInvite,
    /// BYE: the dialog is now terminated; answer 200.
    Bye,
    /// UPDATE (target refreshed if it carried a Contact).
    Update,
    /// Any other method (INFO, REFER, NOTIFY, OPTIONS, MESSAGE, PRACK, extensions), passed
    /// through to the call.
    Other,
}

/// Why a received in-dialog request must be refused, with the response status to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDialogReject {
    /// CSeq lower than the last one seen (RFC 3261 §12.2.2): 500.
    CSeqOutOfOrder,
    /// A re-INVITE crossed ours (glare, RFC 3261 §14.2): 491.
    Glare,
    /// A re-INVITE arrived while the peer's previous one is still pending: 500 with Retry-After.
    PendingInvite,
    /// The dialog is gone: 481.
    Terminated,
    /// An ACK that matches no INVITE of ours (stray; drop it, no response).
    StrayAck,
}

impl InDialogReject {
    /// The status to answer with (`None` for an ACK, which is never answered).
    pub fn status(&self) -> Option<u16> {
        match self {
            InDialogReject::CSeqOutOfOrder | InDialogReject::PendingInvite => Some(500),
            InDialogReject::Glare => Some(491),
            InDialogReject::Terminated => Some(481),
            InDialogReject::StrayAck => None,
        }
    }
}

/// One SIP dialog (RFC 3261 §12.1): identity, sequence numbers, route set and targets.
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    role: DialogRole,
    state: DialogState,
    local_seq: Option<u32>,
    remote_seq: Option<u32>,
    local_uri: NameAddr,
    remote_uri: NameAddr,
    remote_target: Uri,
    route_set: Vec<NameAddr>,
    local_contact: Uri,
    via: ViaTemplate,
    /// CSeq of our INVITE awaiting a final response.
    outgoing_invite: Option<u32>,
    /// CSeq of the peer's INVITE that has not been ACKed (or answered non-2xx).
    incoming_invite: Option<u32>,
    /// The last ACK we built for a 2xx, resent as-is for retransmitted 2xx (§13.2.2.4).
    last_ack: Option<(u32, Request)>,
}

fn cseq_of_request(req: &Request) -> Result<u32, DialogError> {
    req.headers
        .cseq()
        .map(|c| c.seq)
        .map_err(|_| DialogError::Unusable("CSeq"))
}

fn first_contact(headers: &super::message::Headers) -> Option<Uri> {
    match headers.contacts().ok()? {
        super::message::Contacts::List(list) => list.into_iter().next().map(|c| c.uri),
        super::message::Contacts::Wildcard => None,
    }
}

impl Dialog {
    /// The UAC side (RFC 3261 §12.1.2): a dialog from our `invite` and a 101–299 response with
    /// a To tag. The route set is the response's Record-Route reversed; the remote target is its
    /// Contact.
    pub fn new_uac(
        invite: &Request,
        resp: &Response,
        via: ViaTemplate,
    ) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&resp.status) {
            return Err(DialogError::Unusable("status"));
        }
        let to = resp.headers.to().map_err(|_| DialogError::Unusable("To"))?;
        let remote_tag = to.tag().ok_or(DialogError::Unusable("To tag"))?.to_owned();
        let from = invite
            .headers
            .from()
            .map_err(|_| DialogError::Unusable("From"))?;
        let local_tag = from
            .tag()
            .ok_or(DialogError::Unusable("From tag"))?
            .to_owned();
        let call_id = invite
            .headers
            .call_id()
            .map_err(|_| DialogError::Unusable("Call-ID"))?
            .to_owned();
        let remote_target = match first_contact(&resp.headers) {
            Some(c) => c,
            // A 2xx must carry a Contact (§12.1.2); a provisional may not, so until one does
            // the Request-URI stands in.
            None if resp.status >= 200 => return Err(DialogError::Unusable("Contact")),
            None => invite.uri.clone(),
        };
        let mut route_set = resp
            .headers
            .record_routes()
            .map_err(|_| DialogError::Unusable("Record-Route"))?;
        route_set.reverse();
        let local_contact =
            first_contact(&invite.headers).ok_or(DialogError::Unusable("Contact"))?;
        let seq = cseq_of_request(invite)?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            role: DialogRole::Uac,
            state: if resp.status >= 200 {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq: Some(seq),
            remote_seq: None,
            local_uri: from,
            remote_uri: to,
            remote_target,
            route_set,
            local_contact,
            via,
            outgoing_invite: if resp.status >= 200 { None } else { Some(seq) },
            incoming_invite: None,
            last_ack: None,
        })
    }

    /// The UAS side (RFC 3261 §12.1.1): a dialog from a received `invite`, in the Early state,
    /// with `local_tag` as our To tag. The route set is the request's Record-Route in order;
    /// the remote target its Contact. Build responses with [`Dialog::response`], which copies
    /// Record-Route and adds our tag and Contact.
    pub fn new_uas(
        invite: &Request,
        local_tag: &str,
        local_contact: Uri,
        via: ViaTemplate,
    ) -> Result<Dialog, DialogError> {
        let from = invite
            .headers
            .from()
            .map_err(|_| DialogError::Unusable("From"))?;
        let mut to = invite
            .headers
            .to()
            .map_err(|_| DialogError::Unusable("To"))?;
        to.params.set("tag", Some(local_tag));
        let call_id = invite
            .headers
            .call_id()
            .map_err(|_| DialogError::Unusable("Call-ID"))?
            .to_owned();
        let remote_target =
            first_contact(&invite.headers).ok_or(DialogError::Unusable("Contact"))?;
        let route_set = invite
            .headers
            .record_routes()
            .map_err(|_| DialogError::Unusable("Record-Route"))?;
        let seq = cseq_of_request(invite)?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_owned(),
                remote_tag: from.tag().unwrap_or_default().to_owned(),
            },
            role: DialogRole::Uas,
            state: DialogState::Early,
            local_seq: None,
            remote_seq: Some(seq),
            local_uri: to,
            remote_uri: from,
            remote_target,
            route_set,
            local_contact,
            via,
            outgoing_invite: None,
            incoming_invite: Some(seq),
            last_ack: None,
        })
    }

    /// The dialog's identity.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Which side created it.
    pub fn role(&self) -> DialogRole {
        self.role
    }

    /// Early, confirmed or terminated.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The route set (first element = next hop when non-empty).
    pub fn route_set(&self) -> &[NameAddr] {
        &self.route_set
    }

    /// The remote target (the peer's Contact).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The last CSeq we used, if any.
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// Ends the dialog (the call hung up, or a timer gave up).
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// The URI to resolve for sending the next in-dialog request (RFC 3261 §12.2.1.1 and
    /// §8.1.2): the first route if there is a route set, else the remote target.
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target)
    }

    fn first_route_is_loose(&self) -> bool {
        self.route_set
            .first()
            .is_some_and(|r| r.uri.param("lr").is_some())
    }

    /// Request-URI and Route headers per RFC 3261 §12.2.1.1 (loose or strict next hop).
    fn apply_routing(&self, method: Method) -> Request {
        let mut req;
        if self.route_set.is_empty() || self.first_route_is_loose() {
            req = Request::new(method, self.remote_target.clone());
            for r in &self.route_set {
                req.headers.push(HeaderName::Route, r.to_string());
            }
        } else {
            // Strict router: it becomes the Request-URI (without parameters not allowed in a
            // Request-URI — we keep the URI as recorded), the remote target goes last in Route.
            let first = self.route_set.first().map(|r| r.uri.clone());
            req = Request::new(method, first.unwrap_or_else(|| self.remote_target.clone()));
            for r in self.route_set.iter().skip(1) {
                req.headers.push(HeaderName::Route, r.to_string());
            }
            req.headers
                .push(HeaderName::Route, format!("<{}>", self.remote_target));
        }
        req
    }

    fn base_headers(&self, req: &mut Request, branch: &str, seq: u32) {
        let mut out = super::message::Headers::with_capacity(10);
        out.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                self.via.transport, self.via.sent_by
            ),
        );
        out.push(HeaderName::MaxForwards, "70");
        out.push(HeaderName::From, self.local_uri.to_string());
        out.push(HeaderName::To, self.remote_uri.to_string());
        out.push(HeaderName::CallId, self.id.call_id.clone());
        out.push(HeaderName::CSeq, format!("{seq} {}", req.method));
        for h in req.headers.iter() {
            out.push(h.name.clone(), h.value.clone());
        }
        req.headers = out;
    }

    /// Builds a new in-dialog request (BYE, re-INVITE, INFO, UPDATE, REFER, NOTIFY, OPTIONS,
    /// ...) with the next local CSeq and the given Via branch. An INVITE is refused while
    /// another INVITE transaction is in progress (§14.1); send BYE even then.
    pub fn new_request(&mut self, method: Method, branch: &str) -> Result<Request, DialogError> {
        match method {
            Method::Ack => return Err(DialogError::WrongMethod("ACK")),
            Method::Cancel => return Err(DialogError::WrongMethod("CANCEL")),
            _ => {}
        }
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        let is_invite = method == Method::Invite;
        if is_invite && (self.outgoing_invite.is_some() || self.incoming_invite.is_some()) {
            return Err(DialogError::InviteInProgress);
        }
        let seq = match self.local_seq {
            Some(s) if s >= 0x7fff_ffff => return Err(DialogError::CSeqExhausted),
            Some(s) => s + 1,
            None => 1,
        };
        let refresh = matches!(
            method,
            Method::Invite | Method::Update | Method::Refer | Method::Notify | Method::Subscribe
        );
        let mut req = self.apply_routing(method);
        if refresh {
            req.headers
                .push(HeaderName::Contact, format!("<{}>", self.local_contact));
        }
        self.base_headers(&mut req, branch, seq);
        self.local_seq = Some(seq);
        if is_invite {
            self.outgoing_invite = Some(seq);
        }
        Ok(req)
    }

    /// The ACK for a 2xx to our INVITE (RFC 3261 §13.2.2.4): routed like any in-dialog request
    /// (to the remote target through the route set, never to where the 2xx came from), CSeq
    /// number of the INVITE, a new branch. A retransmitted 2xx gets the same ACK again.
    /// `sdp` is the answer when the INVITE carried no offer.
    pub fn ack_for_2xx(
        &mut self,
        resp: &Response,
        branch: &str,
        sdp: Option<&[u8]>,
    ) -> Result<Request, DialogError> {
        let seq = resp
            .headers
            .cseq()
            .map_err(|_| DialogError::Unusable("CSeq"))?
            .seq;
        if let Some((s, ack)) = &self.last_ack
            && *s == seq
        {
            return Ok(ack.clone());
        }
        let mut ack = self.apply_routing(Method::Ack);
        self.base_headers(&mut ack, branch, seq);
        if let Some(body) = sdp {
            ack.headers.push(HeaderName::ContentType, "application/sdp");
            ack.body = body.to_vec();
        }
        self.last_ack = Some((seq, ack.clone()));
        Ok(ack)
    }

    /// Feeds a response to a request we sent in (or that created) this dialog. Returns `true`
    /// if the response ended the dialog.
    pub fn handle_response(&mut self, resp: &Response) -> bool {
        let Ok(cseq) = resp.headers.cseq() else {
            return false;
        };
        let success = (200..300).contains(&resp.status);
        let is_invite = cseq.method == Method::Invite;
        if is_invite && resp.status >= 200 && self.outgoing_invite == Some(cseq.seq) {
            self.outgoing_invite = None;
        }
        if success
            && matches!(cseq.method, Method::Invite | Method::Update)
            && let Some(target) = first_contact(&resp.headers)
        {
            self.remote_target = target;
        }
        if is_invite && success && self.state == DialogState::Early {
            // §12.1.2: the 2xx fixes the route set.
            if let Ok(mut rr) = resp.headers.record_routes() {
                rr.reverse();
                self.route_set = rr;
            }
            self.state = DialogState::Confirmed;
        } else if is_invite && self.state == DialogState::Early && resp.status >= 300 {
            self.state = DialogState::Terminated;
        } else if resp.status == 481 || resp.status == 408 {
            // §12.2.1.2: the peer no longer knows the dialog.
            self.state = DialogState::Terminated;
        } else if cseq.method == Method::Bye && resp.status >= 200 {
            self.state = DialogState::Terminated;
        }
        self.state == DialogState::Terminated
    }

    /// Our INVITE transaction ended without a final response (timeout or transport error).
    pub fn outgoing_invite_failed(&mut self) {
        self.outgoing_invite = None;
        if self.state == DialogState::Early {
            self.state = DialogState::Terminated;
        }
    }

    /// Feeds a received in-dialog request (RFC 3261 §12.2.2). On acceptance the caller answers
    /// it (with [`Dialog::response`]); on rejection it answers with the given status.
    pub fn handle_request(&mut self, req: &Request) -> Result<InDialogRequest, InDialogReject> {
        let Ok(cseq) = req.headers.cseq() else {
            return Err(InDialogReject::CSeqOutOfOrder);
        };
        if req.method == Method::Ack {
            return if self.incoming_invite == Some(cseq.seq) {
                self.incoming_invite = None;
                if self.state == DialogState::Early {
                    self.state = DialogState::Confirmed;
                }
                Ok(InDialogRequest::Ack)
            } else {
                Err(InDialogReject::StrayAck)
            };
        }
        if self.state == DialogState::Terminated {
            return Err(InDialogReject::Terminated);
        }
        if let Some(last) = self.remote_seq
            && cseq.seq <= last
            && req.method != Method::Cancel
        {
            return Err(InDialogReject::CSeqOutOfOrder);
        }
        if req.method == Method::Invite {
            if self.outgoing_invite.is_some() {
                self.remote_seq = Some(cseq.seq);
                return Err(InDialogReject::Glare);
            }
            if self.incoming_invite.is_some() {
                self.remote_seq = Some(cseq.seq);
                return Err(InDialogReject::PendingInvite);
            }
        }
        self.remote_seq = Some(cseq.seq);
        let refresh = matches!(
            req.method,
            Method::Invite | Method::Update | Method::Refer | Method::Notify | Method::Subscribe
        );
        if refresh && let Some(target) = first_contact(&req.headers) {
            self.remote_target = target;
        }
        Ok(match req.method {
            Method::Invite => {
                self.incoming_invite = Some(cseq.seq);
                InDialogRequest::ReInvite
            }
            Method::Bye => {
                self.state = DialogState::Terminated;
                InDialogRequest::Bye
            }
            Method::Update => InDialogRequest::Update,
            _ => InDialogRequest::Other,
        })
    }

    /// A response to a received request in this dialog: our To tag, Record-Route copied for
    /// the dialog-creating INVITE, our Contact on 2xx/1xx to INVITE and 2xx to target refresh
    /// requests. A 2xx to the initial INVITE confirms the dialog (the ACK is still awaited); a
    /// final non-2xx to a pending INVITE clears it (and ends an early dialog).
    pub fn response(&mut self, req: &Request, status: u16) -> Response {
        let mut resp = Response::for_request(req, status);
        resp.ensure_to_tag(&self.id.local_tag);
        let is_invite = req.method == Method::Invite;
        if is_invite {
            for rr in req.headers.get_all(&HeaderName::RecordRoute) {
                resp.headers.push(HeaderName::RecordRoute, rr);
            }
        }
        let refresh = matches!(
            req.method,
            Method::Invite | Method::Update | Method::Refer | Method::Notify | Method::Subscribe
        );
        if refresh && status < 300 && status > 100 {
            resp.headers
                .push(HeaderName::Contact, format!("<{}>", self.local_contact));
        }
        if is_invite && status >= 200 {
            if status < 300 {
                if self.state == DialogState::Early {
                    self.state = DialogState::Confirmed;
                }
            } else {
                self.incoming_invite = None;
                if self.state == DialogState::Early {
                    self.state = DialogState::Terminated;
                }
            }
        }
        resp
    }

    /// The peer never ACKed our 2xx (see [`AnswerRetransmit`]): RFC 3261 §13.3.1.4 says to end
    /// the dialog with BYE. Clears the pending INVITE so the BYE can be built.
    pub fn ack_never_came(&mut self) {
        self.incoming_invite = None;
    }
}

/// The resolved socket address of a SIP URI whose host is an IP literal (`maddr` is not
/// honoured); `None` for names, which need the resolver.
pub fn uri_socket_addr(uri: &Uri) -> Option<SocketAddr> {
    let parts = uri.sip_parts()?;
    let host = parts.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    let default = if parts.secure { 5061 } else { 5060 };
    Some(SocketAddr::new(ip, parts.port.unwrap_or(default)))
}

/// What [`AnswerRetransmit::handle_timeout`] asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerTimer {
    /// Nothing due.
    Idle,
    /// Send the 2xx again.
    Resend {
        /// Where.
        dest: SocketAddr,
        /// The 2xx bytes.
        bytes: Vec<u8>,
    },
    /// 64*T1 passed without ACK: end the dialog with BYE (RFC 3261 §13.3.1.4).
    GaveUp,
}

/// The UAS core's 2xx retransmission (RFC 3261 §13.3.1.4, RFC 6026): resend at T1, doubling up
/// to T2, until the ACK arrives; give up at 64*T1. On reliable transports only the give-up
/// timer runs.
#[derive(Debug, Clone)]
pub struct AnswerRetransmit {
    seq: u32,
    dest: SocketAddr,
    bytes: Vec<u8>,
    interval: Duration,
    t2: Duration,
    next_at: Option<Instant>,
    give_up_at: Instant,
    done: bool,
}

impl AnswerRetransmit {
    /// Starts after the first 2xx (for the INVITE with CSeq `seq`) was sent at `now`.
    pub fn new(
        now: Instant,
        seq: u32,
        dest: SocketAddr,
        bytes: Vec<u8>,
        reliability: Reliability,
        timers: TimerConfig,
    ) -> Self {
        let timers = timers.clamped();
        AnswerRetransmit {
            seq,
            dest,
            bytes,
            interval: timers.t1,
            t2: timers.t2,
            next_at: (reliability == Reliability::Unreliable).then(|| now + timers.t1),
            give_up_at: now + 64 * timers.t1,
            done: false,
        }
    }

    /// An ACK with CSeq `seq` arrived; returns `true` if it was ours (retransmission stops).
    pub fn ack_received(&mut self, seq: u32) -> bool {
        if seq == self.seq {
            self.done = true;
        }
        self.done
    }

    /// Whether the ACK arrived or the timer gave up.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// When to call [`AnswerRetransmit::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        Some(
            self.next_at
                .map_or(self.give_up_at, |n| n.min(self.give_up_at)),
        )
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> AnswerTimer {
        if self.done {
            return AnswerTimer::Idle;
        }
        if now >= self.give_up_at {
            self.done = true;
            return AnswerTimer::GaveUp;
        }
        match self.next_at {
            Some(at) if at <= now => {
                self.interval = (self.interval * 2).min(self.t2);
                self.next_at = Some(at + self.interval);
                AnswerTimer::Resend {
                    dest: self.dest,
                    bytes: self.bytes.clone(),
                }
            }
            _ => AnswerTimer::Idle,
        }
    }
}

/// RFC 3261 §14.1: how long to wait before retrying a re-INVITE that got 491. The owner of the
/// Call-ID (the UAC of the dialog) waits 2.1–4 s, the other side 0–2 s, both in 10 ms units;
/// `random` is any uniformly distributed value (the core stays deterministic for tests).
pub fn glare_retry_delay(role: DialogRole, random: u32) -> Duration {
    match role {
        DialogRole::Uac => Duration::from_millis(2100 + u64::from(random % 191) * 10),
        DialogRole::Uas => Duration::from_millis(u64::from(random % 201) * 10),
    }
}

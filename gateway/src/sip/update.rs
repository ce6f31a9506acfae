//! UPDATE (RFC 3311) in early and confirmed dialogs: building one, checking a received one,
//! and answering it, with the offer/answer rules of [`super::offer_answer`].
//!
//! UPDATE changes the session (a new offer) or only refreshes it (no body, e.g. a session
//! timer refresh, [`super::session_timer`]) without touching the dialog's INVITE state, so it
//! works while the INVITE is still ringing. Rules enforced here:
//!
//! - an UPDATE is sent only in an early or confirmed dialog; with an offer, only once the
//!   initial offer/answer has completed (in a reliable provisional/PRACK, or the 2xx/ACK) and
//!   no other offer is outstanding (RFC 3311 §5.1);
//! - a received UPDATE with an offer crossing ours is answered 491, one arriving before we
//!   answered the previous offer 500 with `Retry-After` (RFC 3311 §5.2); CSeq and dialog
//!   errors keep their RFC 3261 status (500/481);
//! - a non-2xx to our UPDATE voids its offer and the previous session stays (§5.1); a 491
//!   should be retried after [`super::dialog::glare_retry_delay`].
//!
//! ```
//! use gateway::sip::dialog::{Dialog, ViaTemplate};
//! use gateway::sip::message::{Message, Method, Response, Uri};
//! use gateway::sip::offer_answer::OfferAnswer;
//! use gateway::sip::parse::parse_message;
//! use gateway::sip::update::{UpdateError, new_update};
//!
//! let invite = "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!     To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
//!     Contact: <sip:a@192.0.2.1>\r\nContent-Length: 0\r\n\r\n";
//! let Ok(Message::Request(invite)) = parse_message(invite.as_bytes()) else { unreachable!() };
//! let mut ringing = Response::for_request(&invite, 180);
//! ringing.ensure_to_tag("b");
//! ringing.headers.push(gateway::sip::message::HeaderName::Contact, "<sip:b@192.0.2.2>");
//! let via = ViaTemplate { transport: "UDP".into(), sent_by: "192.0.2.1:5060".into() };
//! let mut dialog = Dialog::new_uac(&invite, &ringing, via).unwrap();
//! let mut oa = OfferAnswer::default();
//! // No offer/answer has completed yet: an UPDATE with an offer must wait.
//! assert_eq!(
//!     new_update(&mut dialog, &mut oa, "z9hG4bK2", Some(b"v=0\r\n")).unwrap_err(),
//!     UpdateError::NoSessionYet
//! );
//! // Without a body it is fine (e.g. a session-timer refresh).
//! let upd = new_update(&mut dialog, &mut oa, "z9hG4bK3", None).unwrap();
//! assert_eq!(upd.method, Method::Update);
//! ```

use thiserror::Error;

use super::dialog::{Dialog, DialogError, DialogState, InDialogReject, InDialogRequest};
use super::message::{HeaderName, Method, Request, Response};
use super::offer_answer::{BodyRole, OaError, OfferAnswer, has_sdp};

/// Why an UPDATE cannot be sent now.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The dialog refused (terminated, CSeq exhausted).
    #[error(transparent)]
    Dialog(#[from] DialogError),
    /// Another offer is outstanding; retry when it completes.
    #[error("an offer/answer exchange is in progress")]
    OfferPending,
    /// The initial offer/answer has not completed; an UPDATE may not carry an offer yet.
    #[error("the initial offer/answer exchange has not completed")]
    NoSessionYet,
}

impl From<OaError> for UpdateError {
    fn from(_: OaError) -> Self {
        UpdateError::OfferPending
    }
}

/// Builds an UPDATE in `dialog` (early or confirmed) with `sdp` as a new offer, or none for
/// a plain refresh.
pub fn new_update(
    dialog: &mut Dialog,
    oa: &mut OfferAnswer,
    branch: &str,
    sdp: Option<&[u8]>,
) -> Result<Request, UpdateError> {
    if dialog.state() == DialogState::Terminated {
        return Err(DialogError::Terminated.into());
    }
    if sdp.is_some() {
        if oa.completed() == 0 {
            return Err(UpdateError::NoSessionYet);
        }
        if !oa.is_idle() {
            return Err(UpdateError::OfferPending);
        }
    }
    let mut req = dialog.new_request(Method::Update, branch)?;
    if let Some(body) = sdp {
        oa.offer_sent()?;
        req.headers.push(HeaderName::ContentType, "application/sdp");
        req.body = body.to_vec();
    }
    Ok(req)
}

/// What a received UPDATE asks for, once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedUpdate {
    /// It carries an offer: answer it in the 2xx ([`update_response`] with the answer SDP).
    Offer,
    /// No body: a refresh (session timer) or target refresh only; answer 200.
    Refresh,
}

/// A received UPDATE that must be refused: the status, and `Retry-After` seconds for a 500
/// caused by an unanswered offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateRefusal {
    /// 491, 500 or 481.
    pub status: u16,
    /// For the 500 of an unanswered offer (RFC 3311 §5.2: a random 0–10 s).
    pub retry_after: Option<u32>,
}

/// Checks a received UPDATE against the dialog (CSeq, state; target refresh from its
/// Contact) and the offer/answer state. `random` picks the Retry-After of a 500.
pub fn check_update(
    dialog: &mut Dialog,
    oa: &mut OfferAnswer,
    req: &Request,
    random: u32,
) -> Result<ReceivedUpdate, UpdateRefusal> {
    match dialog.handle_request(req) {
        Ok(InDialogRequest::Update) => {}
        Ok(_) => {
            return Err(UpdateRefusal {
                status: 500,
                retry_after: None,
            });
        }
        Err(rej) => {
            return Err(UpdateRefusal {
                status: rej.status().unwrap_or(500),
                retry_after: matches!(rej, InDialogReject::PendingInvite).then_some(random % 11),
            });
        }
    }
    let role = oa.classify_offer_request(has_sdp(&req.headers, &req.body));
    match role {
        Err(r) => Err(UpdateRefusal {
            status: r.status(),
            retry_after: (r.status() == 500).then_some(random % 11),
        }),
        Ok(BodyRole::Offer) => {
            // Cannot fail: classify_offer_request said Idle.
            let _ = oa.offer_received();
            Ok(ReceivedUpdate::Offer)
        }
        _ => Ok(ReceivedUpdate::Refresh),
    }
}

/// The response to a received UPDATE: a 2xx with `answer` (the SDP answer to its offer)
/// completes the exchange; a refusal gets `Retry-After` when given.
pub fn update_response(
    dialog: &mut Dialog,
    oa: &mut OfferAnswer,
    req: &Request,
    status: u16,
    answer: Option<&[u8]>,
    retry_after: Option<u32>,
) -> Response {
    let mut resp = dialog.response(req, status);
    if (200..300).contains(&status) {
        if let Some(body) = answer {
            resp.headers
                .push(HeaderName::ContentType, "application/sdp");
            resp.body = body.to_vec();
            oa.answer_sent();
        }
    } else {
        // We rejected its offer: the previous session stays.
        if oa.state() == super::offer_answer::OaState::RemoteOffer {
            oa.offer_failed();
        }
        if let Some(secs) = retry_after {
            resp.headers.push(HeaderName::RetryAfter, secs.to_string());
        }
    }
    resp
}

/// What the final response to our UPDATE means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// 2xx: the offer (if any) is answered by its body.
    Accepted,
    /// 491: glare; retry after [`super::dialog::glare_retry_delay`].
    Glare,
    /// 481/408: the dialog is gone (the dialog already terminated itself).
    DialogGone,
    /// Another failure; the previous session stays.
    Rejected,
}

/// Feeds the final response to our UPDATE into the dialog and the offer/answer state.
pub fn handle_update_response(
    dialog: &mut Dialog,
    oa: &mut OfferAnswer,
    resp: &Response,
) -> UpdateOutcome {
    if resp.status < 200 {
        return UpdateOutcome::Rejected;
    }
    dialog.handle_response(resp);
    match resp.status {
        200..=299 => {
            if has_sdp(&resp.headers, &resp.body) {
                oa.answer_received();
            }
            UpdateOutcome::Accepted
        }
        s => {
            if oa.state() == super::offer_answer::OaState::LocalOffer {
                oa.offer_failed();
            }
            match s {
                491 => UpdateOutcome::Glare,
                408 | 481 => UpdateOutcome::DialogGone,
                _ => UpdateOutcome::Rejected,
            }
        }
    }
}

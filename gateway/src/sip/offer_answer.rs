//! The SDP offer/answer state of one dialog (RFC 3264 §4 as SIP carries it: RFC 3261 §13.2.1,
//! RFC 3262 §5, RFC 3311 §5): at most one offer outstanding in each direction, and what to
//! answer when an offer crosses ours.
//!
//! INVITE, a reliable provisional, PRACK, UPDATE, 2xx and ACK can all carry an offer or an
//! answer; which one a body is depends only on this state, so the leg asks
//! [`OfferAnswer::classify_incoming`] what a received SDP body is and tells the tracker what it
//! sent. Glare rules (RFC 3311 §5.2, RFC 3261 §14.2):
//!
//! - an offer arrives while ours is unanswered → **491 Request Pending**;
//! - an offer arrives while we still owe an answer to the previous one → **500** with
//!   `Retry-After` (0–10 s);
//! - we may not send an offer while either is outstanding ([`OaError::Pending`]).
//!
//! ```
//! use gateway::sip::offer_answer::{BodyRole, OfferAnswer, OfferRefusal};
//!
//! // UAS: the INVITE had no SDP, we offer in a reliable 183, the PRACK answers it.
//! let mut oa = OfferAnswer::default();
//! oa.offer_sent().unwrap();
//! assert_eq!(oa.classify_incoming(true), Ok(BodyRole::Answer));
//! oa.answer_received();
//! assert!(oa.is_idle());
//!
//! // An UPDATE offer crossing our own UPDATE offer: 491.
//! oa.offer_sent().unwrap();
//! assert_eq!(oa.classify_offer_request(true), Err(OfferRefusal::Glare));
//! ```

use thiserror::Error;

/// Where the dialog's offer/answer exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OaState {
    /// No offer outstanding (before the first one, or after a completed exchange).
    #[default]
    Idle,
    /// We sent an offer and wait for its answer.
    LocalOffer,
    /// We received an offer and owe the answer.
    RemoteOffer,
}

/// What a received SDP body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRole {
    /// A new offer: answer it (in the response, the PRACK, the 2xx or the ACK).
    Offer,
    /// The answer to our offer.
    Answer,
    /// No body, or one that is neither (e.g. an SDP repeated in a retransmitted provisional).
    None,
}

/// Why a received offer must be refused, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OfferRefusal {
    /// Our own offer is unanswered: 491 Request Pending (RFC 3311 §5.2, RFC 3261 §14.2).
    #[error("our offer is still unanswered (491)")]
    Glare,
    /// We have not answered the peer's previous offer yet: 500 with Retry-After.
    #[error("the previous offer is not answered yet (500, Retry-After)")]
    AnswerOwed,
}

impl OfferRefusal {
    /// The response status.
    pub fn status(&self) -> u16 {
        match self {
            OfferRefusal::Glare => 491,
            OfferRefusal::AnswerOwed => 500,
        }
    }
}

/// Why we may not send an offer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OaError {
    /// An offer is outstanding in one direction; wait for it to complete.
    #[error("an offer/answer exchange is in progress")]
    Pending,
}

/// The offer/answer state machine of one dialog (or of an INVITE transaction before a dialog
/// exists).
#[derive(Debug, Clone, Default)]
pub struct OfferAnswer {
    state: OaState,
    completed: u32,
}

impl OfferAnswer {
    /// The current state.
    pub fn state(&self) -> OaState {
        self.state
    }

    /// Whether no offer is outstanding.
    pub fn is_idle(&self) -> bool {
        self.state == OaState::Idle
    }

    /// Completed exchanges so far (the first one establishes the session).
    pub fn completed(&self) -> u32 {
        self.completed
    }

    /// We are about to send an offer (INVITE, reliable provisional, PRACK, UPDATE, or 2xx to
    /// an offer-less INVITE).
    pub fn offer_sent(&mut self) -> Result<(), OaError> {
        if self.state != OaState::Idle {
            return Err(OaError::Pending);
        }
        self.state = OaState::LocalOffer;
        Ok(())
    }

    /// What a received message's SDP body (`has_sdp`) is, given the state. An offer that
    /// crosses an outstanding one is refused with the status to answer; the state only
    /// changes through [`OfferAnswer::offer_received`] / [`OfferAnswer::answer_received`].
    pub fn classify_incoming(&self, has_sdp: bool) -> Result<BodyRole, OfferRefusal> {
        if !has_sdp {
            return Ok(BodyRole::None);
        }
        match self.state {
            OaState::Idle => Ok(BodyRole::Offer),
            OaState::LocalOffer => Ok(BodyRole::Answer),
            OaState::RemoteOffer => Err(OfferRefusal::AnswerOwed),
        }
    }

    /// Like [`OfferAnswer::classify_incoming`] for a request that can only carry an offer
    /// (UPDATE, re-INVITE): an SDP body while our offer is outstanding is glare (491).
    pub fn classify_offer_request(&self, has_sdp: bool) -> Result<BodyRole, OfferRefusal> {
        if !has_sdp {
            return Ok(BodyRole::None);
        }
        match self.state {
            OaState::Idle => Ok(BodyRole::Offer),
            OaState::LocalOffer => Err(OfferRefusal::Glare),
            OaState::RemoteOffer => Err(OfferRefusal::AnswerOwed),
        }
    }

    /// A received offer was accepted for processing.
    pub fn offer_received(&mut self) -> Result<(), OfferRefusal> {
        match self.state {
            OaState::Idle => {
                self.state = OaState::RemoteOffer;
                Ok(())
            }
            OaState::LocalOffer => Err(OfferRefusal::Glare),
            OaState::RemoteOffer => Err(OfferRefusal::AnswerOwed),
        }
    }

    /// We sent the answer to the peer's offer.
    pub fn answer_sent(&mut self) {
        if self.state == OaState::RemoteOffer {
            self.state = OaState::Idle;
            self.completed += 1;
        }
    }

    /// The answer to our offer arrived.
    pub fn answer_received(&mut self) {
        if self.state == OaState::LocalOffer {
            self.state = OaState::Idle;
            self.completed += 1;
        }
    }

    /// The request that carried an offer failed (non-2xx to UPDATE or re-INVITE, 491, a
    /// timeout): the offer is void and the previous session stays (RFC 3311 §5.1).
    pub fn offer_failed(&mut self) {
        self.state = OaState::Idle;
    }
}

/// Whether a body is SDP (Content-Type `application/sdp`, or no Content-Type on a non-empty
/// body, which RFC 3261 §7.4.1 leaves to the receiver; we then accept it as SDP).
pub fn has_sdp(headers: &super::message::Headers, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    match headers.content_type() {
        Ok(Some(t)) => t == "application/sdp",
        Ok(None) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_offer_answered_in_2xx_then_reinvite() {
        let mut oa = OfferAnswer::default();
        assert_eq!(oa.classify_incoming(true), Ok(BodyRole::Offer));
        oa.offer_received().unwrap();
        // A second offer (UPDATE) before we answered: 500.
        assert_eq!(
            oa.classify_offer_request(true),
            Err(OfferRefusal::AnswerOwed)
        );
        oa.answer_sent();
        assert_eq!(oa.completed(), 1);
        oa.offer_sent().unwrap();
        assert_eq!(oa.offer_sent(), Err(OaError::Pending));
        assert_eq!(oa.classify_offer_request(true), Err(OfferRefusal::Glare));
        assert_eq!(OfferRefusal::Glare.status(), 491);
        oa.offer_failed();
        assert!(oa.is_idle());
        assert_eq!(oa.completed(), 1);
    }
}

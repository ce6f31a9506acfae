//! Reliable provisional responses and PRACK (RFC 3262), both roles, sans-IO.
//!
//! **UAS** ([`UasPrack`], one per INVITE server transaction): when the INVITE `Require`s
//! `100rel` (or `Support`s it and the leg wants reliability), every 101–199 response gets
//! `Require: 100rel` and an `RSeq`, and is retransmitted at T1, 2·T1, 4·T1… until its PRACK
//! arrives; after 64·T1 without one the leg must reject the INVITE with a 5xx
//! ([`UasPrackEvent::GaveUp`]). Only one reliable provisional is outstanding at a time (later
//! ones queue, RFC 3262 §3), and a 2xx is held until every reliable provisional has been
//! PRACKed, so the answer never overtakes an offer in a provisional. A PRACK that matches
//! nothing outstanding is answered 481.
//!
//! **UAC** ([`UacPrack`], one per INVITE client transaction): classifies each provisional —
//! unreliable, a new reliable one to PRACK (with the `RAck` value to send), or a
//! retransmission / out-of-order one to discard — per early dialog (forks have their own RSeq
//! spaces). [`UacPrack::prack`] builds the PRACK in the early dialog.
//!
//! Offer/answer in reliable provisionals (RFC 3262 §5) is tracked by
//! [`super::offer_answer::OfferAnswer`]: an offer in a reliable 18x is answered in the PRACK;
//! an answer in a reliable 18x completes the INVITE's offer.
//!
//! UAS wiring (the transaction layer sends what this returns):
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use gateway::sip::message::{HeaderName, Message, Response};
//! use gateway::sip::parse::parse_message;
//! use gateway::sip::prack::{PrackConfig, UasPrack};
//!
//! let invite = "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!     To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
//!     Contact: <sip:a@192.0.2.1>\r\nSupported: 100rel\r\nContent-Length: 0\r\n\r\n";
//! let Ok(Message::Request(invite)) = parse_message(invite.as_bytes()) else { unreachable!() };
//! let now = Instant::now();
//! let mut rel = UasPrack::for_invite(&invite, PrackConfig::default(), 7).expect("peer supports 100rel");
//! let mut ringing = Response::for_request(&invite, 180);
//! ringing.ensure_to_tag("b");
//! let sent = rel.provisional(now, ringing).expect("nothing outstanding: send now");
//! assert_eq!(sent.headers.get(&HeaderName::RSeq), Some("7"));
//! // The 200 waits for the PRACK ...
//! let mut ok = Response::for_request(&invite, 200);
//! ok.ensure_to_tag("b");
//! assert!(rel.final_response(ok).is_none());
//! // ... which releases it.
//! let prack = "PRACK sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\n\
//!     To: <sip:b@192.0.2.2>;tag=b\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\n\
//!     CSeq: 2 PRACK\r\nRAck: 7 1 INVITE\r\nContent-Length: 0\r\n\r\n";
//! let Ok(Message::Request(prack)) = parse_message(prack.as_bytes()) else { unreachable!() };
//! let outcome = rel.handle_prack(now + Duration::from_millis(30), &prack);
//! assert_eq!(outcome.status, 200);
//! assert_eq!(outcome.release[0].status, 200);
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::dialog::{Dialog, DialogError};
use super::message::{HeaderName, Method, Request, Response};
use super::transaction::TimerConfig;

/// When a UAS uses reliable provisionals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrackConfig {
    /// Also when the peer only lists `100rel` in Supported (it is always used when the peer
    /// Requires it). Default on: trunks that support 100rel expect early media reliably.
    pub when_supported: bool,
    /// T1 for the retransmission schedule (and 64·T1 as the give-up time).
    pub timers: TimerConfig,
}

impl Default for PrackConfig {
    fn default() -> Self {
        PrackConfig {
            when_supported: true,
            timers: TimerConfig::default(),
        }
    }
}

fn lists_100rel(values: &[String]) -> bool {
    values.iter().any(|t| t.eq_ignore_ascii_case("100rel"))
}

/// Whether `msg_headers` Require `100rel`.
pub fn requires_100rel(headers: &super::message::Headers) -> bool {
    lists_100rel(&headers.require().unwrap_or_default())
}

/// Whether `msg_headers` Support (or Require) `100rel`.
pub fn supports_100rel(headers: &super::message::Headers) -> bool {
    requires_100rel(headers) || lists_100rel(&headers.supported().unwrap_or_default())
}

/// Adds `Supported: 100rel` (or `Require: 100rel` when `require`) to an INVITE we send.
pub fn offer_100rel(invite: &mut Request, require: bool) {
    let name = if require {
        HeaderName::Require
    } else {
        HeaderName::Supported
    };
    invite.headers.push(name, "100rel");
}

/// A parsed RAck value (RFC 3262 §7.2): `response-num CSeq-num Method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    /// The RSeq being acknowledged.
    pub rseq: u32,
    /// The CSeq number of the INVITE.
    pub cseq: u32,
    /// The method (INVITE).
    pub method: Method,
}

impl RAck {
    /// Parses `1 314159 INVITE`; `None` if malformed.
    pub fn parse(v: &str) -> Option<RAck> {
        let mut it = v.split_ascii_whitespace();
        let rseq = it.next()?.parse().ok()?;
        let cseq = it.next()?.parse().ok()?;
        let method = Method::from_token(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some(RAck { rseq, cseq, method })
    }
}

impl std::fmt::Display for RAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.rseq, self.cseq, self.method)
    }
}

#[derive(Debug, Clone)]
struct Outstanding {
    rseq: u32,
    resp: Response,
    interval: Duration,
    next_at: Instant,
    give_up_at: Instant,
}

/// What the UAS side's timer asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum UasPrackEvent {
    /// Send this provisional again (through the INVITE server transaction).
    Resend(Response),
    /// 64·T1 passed without PRACK: reject the INVITE with a 5xx (RFC 3262 §3; 504 is a good
    /// choice). A held 2xx, if any, is dropped; later responses pass through unchanged.
    GaveUp,
}

/// The result of a received PRACK.
#[derive(Debug, Clone, PartialEq)]
pub struct PrackOutcome {
    /// Answer the PRACK with this: 200 if it matched the outstanding reliable provisional,
    /// 481 if it matched nothing.
    pub status: u16,
    /// Responses the PRACK released, to send on the INVITE transaction in order: the next
    /// queued reliable provisional, or the held final response.
    pub release: Vec<Response>,
}

/// The UAS side of RFC 3262 for one INVITE.
#[derive(Debug, Clone)]
pub struct UasPrack {
    invite_cseq: u32,
    next_rseq: u32,
    t1: Duration,
    outstanding: Option<Outstanding>,
    queue: VecDeque<Response>,
    held_final: Option<Response>,
    gave_up: bool,
}

impl UasPrack {
    /// Reliability for `invite`, if the peer Requires 100rel, or Supports it and
    /// `config.when_supported`; `None` means send every provisional unreliably.
    /// `initial_rseq` should be random (RFC 3262 §3); it is kept within 1..2^31 - 2^16.
    pub fn for_invite(invite: &Request, config: PrackConfig, initial_rseq: u32) -> Option<Self> {
        let wanted = requires_100rel(&invite.headers)
            || (config.when_supported && supports_100rel(&invite.headers));
        if !wanted || invite.method != Method::Invite {
            return None;
        }
        let invite_cseq = invite.headers.cseq().ok()?.seq;
        Some(UasPrack {
            invite_cseq,
            next_rseq: if (1..0x7fff_0000).contains(&initial_rseq) {
                initial_rseq
            } else {
                initial_rseq % 0x7fff_0000 + 1
            },
            t1: config.timers.clamped().t1,
            outstanding: None,
            queue: VecDeque::new(),
            held_final: None,
            gave_up: false,
        })
    }

    /// Whether a reliable provisional awaits its PRACK (or one is queued).
    pub fn is_waiting(&self) -> bool {
        self.outstanding.is_some() || !self.queue.is_empty()
    }

    /// Passes a provisional response through: 100 unchanged; 101–199 made reliable and
    /// returned to send now, or queued (returns `None`) behind an unacknowledged one.
    pub fn provisional(&mut self, now: Instant, resp: Response) -> Option<Response> {
        if resp.status <= 100 || resp.status >= 200 || self.gave_up {
            return Some(resp);
        }
        if self.outstanding.is_some() {
            self.queue.push_back(resp);
            return None;
        }
        Some(self.start(now, resp))
    }

    fn start(&mut self, now: Instant, mut resp: Response) -> Response {
        let rseq = self.next_rseq;
        self.next_rseq = self.next_rseq.saturating_add(1);
        resp.headers.push(HeaderName::Require, "100rel");
        resp.headers.set(HeaderName::RSeq, rseq.to_string());
        self.outstanding = Some(Outstanding {
            rseq,
            resp: resp.clone(),
            interval: self.t1,
            next_at: now + self.t1,
            give_up_at: now + 64 * self.t1,
        });
        resp
    }

    /// Passes the final response: returns it to send now, or `None` for a 2xx held until
    /// the outstanding reliable provisionals are PRACKed. A non-2xx goes at once and stops
    /// the provisional retransmissions.
    pub fn final_response(&mut self, resp: Response) -> Option<Response> {
        if (200..300).contains(&resp.status) && self.is_waiting() && !self.gave_up {
            self.held_final = Some(resp);
            return None;
        }
        self.outstanding = None;
        self.queue.clear();
        self.held_final = None;
        Some(resp)
    }

    /// Feeds a PRACK received in the INVITE's dialog.
    pub fn handle_prack(&mut self, now: Instant, prack: &Request) -> PrackOutcome {
        let rack = prack.headers.get(&HeaderName::RAck).and_then(RAck::parse);
        let matches = match (&rack, &self.outstanding) {
            (Some(r), Some(o)) => {
                r.rseq == o.rseq && r.cseq == self.invite_cseq && r.method == Method::Invite
            }
            _ => false,
        };
        if !matches {
            return PrackOutcome {
                status: 481,
                release: Vec::new(),
            };
        }
        self.outstanding = None;
        let mut release = Vec::new();
        if let Some(next) = self.queue.pop_front() {
            release.push(self.start(now, next));
        } else if let Some(fin) = self.held_final.take() {
            release.push(fin);
        }
        PrackOutcome {
            status: 200,
            release,
        }
    }

    /// When to call [`UasPrack::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding
            .as_ref()
            .map(|o| o.next_at.min(o.give_up_at))
    }

    /// Runs the retransmission timer.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<UasPrackEvent> {
        let o = self.outstanding.as_mut()?;
        if now >= o.give_up_at {
            self.outstanding = None;
            self.queue.clear();
            self.held_final = None;
            self.gave_up = true;
            return Some(UasPrackEvent::GaveUp);
        }
        if now < o.next_at {
            return None;
        }
        o.interval = o.interval.saturating_mul(2);
        o.next_at += o.interval;
        Some(UasPrackEvent::Resend(o.resp.clone()))
    }
}

/// What a received provisional response means on the UAC side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisional {
    /// An ordinary provisional: hand it to the call.
    Unreliable,
    /// A new reliable provisional: hand it to the call and send a PRACK with this RAck.
    Reliable(RAck),
    /// A retransmission of one already PRACKed, or one out of order: discard it (no PRACK,
    /// the call does not see it again).
    Discard,
}

/// The UAC side of RFC 3262 for one INVITE.
#[derive(Debug, Clone)]
pub struct UacPrack {
    invite_cseq: u32,
    /// Per early dialog (To tag): the last RSeq PRACKed.
    last_rseq: HashMap<String, u32>,
}

impl UacPrack {
    /// For our INVITE (its CSeq number is echoed in RAck); `None` if it has no CSeq.
    pub fn new(invite: &Request) -> Option<Self> {
        Some(UacPrack {
            invite_cseq: invite.headers.cseq().ok()?.seq,
            last_rseq: HashMap::new(),
        })
    }

    /// Classifies a 101–199 response to the INVITE (RFC 3262 §4).
    pub fn handle_provisional(&mut self, resp: &Response) -> Provisional {
        if resp.status <= 100 || resp.status >= 200 || !requires_100rel(&resp.headers) {
            return Provisional::Unreliable;
        }
        let rseq = resp
            .headers
            .get(&HeaderName::RSeq)
            .and_then(|v| v.trim().parse::<u32>().ok());
        let tag = resp
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        let (Some(rseq), Some(tag)) = (rseq, tag) else {
            // A "reliable" provisional without RSeq or To tag cannot be acknowledged.
            return Provisional::Discard;
        };
        match self.last_rseq.get(&tag) {
            Some(&last) if rseq != last.wrapping_add(1) => Provisional::Discard,
            _ => {
                self.last_rseq.insert(tag, rseq);
                Provisional::Reliable(RAck {
                    rseq,
                    cseq: self.invite_cseq,
                    method: Method::Invite,
                })
            }
        }
    }

    /// The PRACK for `rack` in the early `dialog` (created from the provisional), with
    /// `body` (an SDP answer to an offer in the provisional, or a new offer) if any.
    pub fn prack(
        dialog: &mut Dialog,
        rack: &RAck,
        branch: &str,
        sdp: Option<&[u8]>,
    ) -> Result<Request, DialogError> {
        let mut req = dialog.new_request(Method::Prack, branch)?;
        req.headers.push(HeaderName::RAck, rack.to_string());
        if let Some(body) = sdp {
            req.headers.push(HeaderName::ContentType, "application/sdp");
            req.body = body.to_vec();
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::parse_message;

    fn invite(extra: &str) -> Request {
        let t = format!(
            "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\n\
             CSeq: 5 INVITE\r\nContact: <sip:a@192.0.2.1>\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_message(t.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn prack(rack: &str) -> Request {
        let t = format!(
            "PRACK sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\n\
             To: <sip:b@192.0.2.2>;tag=b\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\n\
             CSeq: 6 PRACK\r\nRAck: {rack}\r\nContent-Length: 0\r\n\r\n"
        );
        match parse_message(t.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_100rel_means_no_reliability() {
        assert!(UasPrack::for_invite(&invite(""), PrackConfig::default(), 1).is_none());
        let cfg = PrackConfig {
            when_supported: false,
            ..PrackConfig::default()
        };
        assert!(UasPrack::for_invite(&invite("Supported: 100rel\r\n"), cfg, 1).is_none());
        assert!(UasPrack::for_invite(&invite("Require: 100rel\r\n"), cfg, 1).is_some());
    }

    #[test]
    fn retransmits_at_t1_doubling_and_gives_up_at_64_t1() {
        let inv = invite("Require: 100rel\r\n");
        let mut u = UasPrack::for_invite(&inv, PrackConfig::default(), 0).unwrap();
        let t0 = Instant::now();
        let mut r = Response::for_request(&inv, 183);
        r.ensure_to_tag("b");
        let sent = u.provisional(t0, r).unwrap();
        assert_eq!(sent.headers.get(&HeaderName::RSeq), Some("1"));
        let mut at = Vec::new();
        while let Some(t) = u.poll_timeout() {
            match u.handle_timeout(t) {
                Some(UasPrackEvent::Resend(_)) => at.push((t - t0).as_millis()),
                Some(UasPrackEvent::GaveUp) => {
                    at.push((t - t0).as_millis());
                    break;
                }
                None => {}
            }
        }
        assert_eq!(at, vec![500, 1500, 3500, 7500, 15500, 31500, 32000]);
        // After giving up, responses pass through unchanged.
        let ok = Response::for_request(&inv, 200);
        assert!(u.final_response(ok).is_some());
    }

    #[test]
    fn second_provisional_queues_and_prack_for_wrong_rseq_is_481() {
        let inv = invite("Require: 100rel\r\n");
        let mut u = UasPrack::for_invite(&inv, PrackConfig::default(), 99).unwrap();
        let t0 = Instant::now();
        assert!(
            u.provisional(t0, Response::for_request(&inv, 180))
                .is_some()
        );
        assert!(
            u.provisional(t0, Response::for_request(&inv, 183))
                .is_none()
        );
        assert_eq!(u.handle_prack(t0, &prack("98 5 INVITE")).status, 481);
        assert_eq!(u.handle_prack(t0, &prack("99 4 INVITE")).status, 481);
        let out = u.handle_prack(t0, &prack("99 5 INVITE"));
        assert_eq!(out.status, 200);
        assert_eq!(out.release.len(), 1);
        assert_eq!(out.release[0].status, 183);
        assert_eq!(out.release[0].headers.get(&HeaderName::RSeq), Some("100"));
        // The PRACK already used is now unknown.
        assert_eq!(u.handle_prack(t0, &prack("99 5 INVITE")).status, 481);
    }

    #[test]
    fn uac_pracks_new_ones_and_discards_retransmissions_per_dialog() {
        let inv = invite("Supported: 100rel\r\n");
        let mut c = UacPrack::new(&inv).unwrap();
        let mut r = Response::for_request(&inv, 180);
        assert_eq!(c.handle_provisional(&r), Provisional::Unreliable);
        r.ensure_to_tag("b1");
        r.headers.push(HeaderName::Require, "100rel");
        r.headers.push(HeaderName::RSeq, "10");
        assert!(matches!(
            c.handle_provisional(&r),
            Provisional::Reliable(RAck {
                rseq: 10,
                cseq: 5,
                ..
            })
        ));
        assert_eq!(c.handle_provisional(&r), Provisional::Discard);
        r.headers.set(HeaderName::RSeq, "12");
        assert_eq!(
            c.handle_provisional(&r),
            Provisional::Discard,
            "out of order"
        );
        r.headers.set(HeaderName::RSeq, "11");
        assert!(matches!(c.handle_provisional(&r), Provisional::Reliable(_)));
        // Another fork starts its own sequence.
        let mut f = Response::for_request(&inv, 183);
        f.ensure_to_tag("b2");
        f.headers.push(HeaderName::Require, "100rel");
        f.headers.push(HeaderName::RSeq, "500");
        assert!(matches!(
            c.handle_provisional(&f),
            Provisional::Reliable(RAck { rseq: 500, .. })
        ));
        assert_eq!(RAck::parse("1 2 INVITE").unwrap().to_string(), "1 2 INVITE");
        assert!(RAck::parse("1 INVITE").is_none());
    }
}

//! Session timers (RFC 4028) for one dialog, both roles, sans-IO.
//!
//! A [`SessionTimer`] negotiates the session interval and who refreshes it, then says when to
//! act: the refresher sends a re-INVITE or UPDATE at half the interval
//! ([`SessionTimerEvent::Refresh`]); the other side ends the call with BYE if no refresh came
//! by the interval minus min(32 s, interval/3) ([`SessionTimerEvent::Expired`]). Every
//! successful refresh — ours or the peer's, re-INVITE or UPDATE — restarts the clock and may
//! move the refresher role.
//!
//! Negotiation (RFC 4028 §7–§9):
//!
//! - requests we send (INVITE, re-INVITE, UPDATE) get `Supported: timer`, `Session-Expires`
//!   and `Min-SE` ([`SessionTimer::decorate_request`]); a 422 answer raises our interval to the
//!   peer's `Min-SE` and asks for the request to be sent again ([`ResponseVerdict::Retry`]);
//! - a request from the peer whose interval is below our `Min-SE` is refused 422 with our
//!   `Min-SE` when the peer supports timers (otherwise the interval is raised silently)
//!   ([`SessionTimer::check_request`]); our 2xx states the interval and the refresher, with
//!   `Require: timer` when the peer supports it ([`SessionTimer::answer`]);
//! - a 2xx without `Session-Expires` (peer without timer support) leaves us as refresher with
//!   the interval we asked for.
//!
//! The refresh uses UPDATE (no SDP) when the peer listed UPDATE in `Allow` and
//! [`SessionTimerConfig::prefer_update`] is set, else a re-INVITE with the current SDP.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use gateway::sip::message::{HeaderName, Method, Message, Response};
//! use gateway::sip::parse::parse_message;
//! use gateway::sip::session_timer::{SessionTimer, SessionTimerConfig, SessionTimerEvent};
//!
//! let invite = "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!     To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
//!     Contact: <sip:a@192.0.2.1>\r\nSupported: timer\r\nSession-Expires: 120\r\n\
//!     Allow: INVITE, ACK, BYE, UPDATE\r\nContent-Length: 0\r\n\r\n";
//! let Ok(Message::Request(invite)) = parse_message(invite.as_bytes()) else { unreachable!() };
//! let t0 = Instant::now();
//! let mut st = SessionTimer::new(SessionTimerConfig::default());
//! st.check_request(&invite).expect("120 s is above our Min-SE of 90 s");
//! let mut ok = Response::for_request(&invite, 200);
//! st.answer(t0, &invite, &mut ok);
//! // The caller left the choice to us: we refresh, by UPDATE since it allows it, at 60 s.
//! assert_eq!(ok.headers.get(&HeaderName::SessionExpires), Some("120;refresher=uas"));
//! assert_eq!(ok.headers.get(&HeaderName::Require), Some("timer"));
//! assert!(st.we_refresh());
//! assert_eq!(st.poll_timeout(), Some(t0 + Duration::from_secs(60)));
//! assert_eq!(
//!     st.handle_timeout(t0 + Duration::from_secs(60)),
//!     Some(SessionTimerEvent::Refresh(Method::Update))
//! );
//! // No 2xx to our refresh: at 120 s - min(32 s, 120 s / 3) the session is over.
//! assert_eq!(st.handle_timeout(t0 + Duration::from_secs(88)), Some(SessionTimerEvent::Expired));
//! ```

use std::time::{Duration, Instant};

use super::message::{HeaderName, Method, Request, Response};

/// The RFC 4028 floor for any Min-SE.
pub const ABSOLUTE_MIN_SE: Duration = Duration::from_secs(90);

/// Who refreshes, in the terms of one transaction (`uac` = whoever sent the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The sender of the INVITE/UPDATE that negotiated the interval.
    Uac,
    /// Its receiver.
    Uas,
}

impl Refresher {
    fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A parsed `Session-Expires` value: `1800;refresher=uac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The interval.
    pub interval: Duration,
    /// The refresher parameter, if present.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses a header value; `None` if malformed (a delta-seconds up to 2^32-1 is required).
    pub fn parse(v: &str) -> Option<SessionExpires> {
        let mut parts = v.split(';').map(str::trim);
        let secs: u32 = parts.next()?.parse().ok()?;
        let mut refresher = None;
        for p in parts {
            if let Some((n, val)) = p.split_once('=')
                && n.trim().eq_ignore_ascii_case("refresher")
            {
                refresher = match val.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => return None,
                };
            }
        }
        Some(SessionExpires {
            interval: Duration::from_secs(u64::from(secs)),
            refresher,
        })
    }

    /// From a message's headers (`Session-Expires` or compact `x`).
    pub fn from_headers(h: &super::message::Headers) -> Option<SessionExpires> {
        h.get(&HeaderName::SessionExpires)
            .and_then(SessionExpires::parse)
    }
}

impl std::fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.interval.as_secs())?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={}", r.as_str())?;
        }
        Ok(())
    }
}

/// Settings of a [`SessionTimer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we ask for (default 1800 s, RFC 4028's recommendation).
    pub session_expires: Duration,
    /// The smallest interval we accept (default and floor 90 s).
    pub min_se: Duration,
    /// Whether we would rather refresh ourselves when the choice is ours (default true: a
    /// gateway that refreshes its own sessions does not depend on a peer's timer to free a
    /// channel).
    pub prefer_refresher: bool,
    /// Refresh with UPDATE when the peer allows it (default true); else re-INVITE.
    pub prefer_update: bool,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            session_expires: Duration::from_secs(1800),
            min_se: ABSOLUTE_MIN_SE,
            prefer_refresher: true,
            prefer_update: true,
        }
    }
}

/// What the timer asks the leg to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTimerEvent {
    /// Send a session refresh with this method (UPDATE without SDP, or re-INVITE with the
    /// current SDP), decorated by [`SessionTimer::decorate_request`].
    Refresh(Method),
    /// No refresh came in time: send BYE and end the call (RFC 4028 §10).
    Expired,
}

/// What a response to our INVITE/UPDATE means for the session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// A 2xx: the timer runs (or runs again) with the negotiated interval.
    Running,
    /// 422: send the request again (new CSeq and branch, decorated again; the interval was
    /// raised to the peer's Min-SE).
    Retry,
    /// 408 or 481 to a refresh: the session is gone; send BYE (RFC 4028 §10).
    SessionLost,
    /// Anything else: nothing changes (a failed refresh leaves the expiry where it was).
    Unchanged,
}

/// The session timer of one dialog.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    config: SessionTimerConfig,
    /// The interval our next request asks for.
    requested: Duration,
    /// The largest Min-SE seen from the peer (or ours).
    min_se: Duration,
    interval: Option<Duration>,
    we_refresh: bool,
    refresh_at: Option<Instant>,
    expire_at: Option<Instant>,
    peer_supports_timer: bool,
    peer_allows_update: bool,
    refreshing: bool,
}

fn lists(headers: &super::message::Headers, name: &HeaderName, tag: &str) -> bool {
    headers
        .get_all(name)
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(tag)))
}

fn min_se_of(headers: &super::message::Headers) -> Option<Duration> {
    let v = headers.get(&HeaderName::MinSe)?;
    let secs: u32 = v.split(';').next()?.trim().parse().ok()?;
    Some(Duration::from_secs(u64::from(secs)))
}

impl SessionTimer {
    /// A timer with `config` (its Min-SE raised to the 90 s floor, its interval to Min-SE).
    pub fn new(config: SessionTimerConfig) -> Self {
        let min_se = config.min_se.max(ABSOLUTE_MIN_SE);
        let requested = config.session_expires.max(min_se);
        SessionTimer {
            config,
            requested,
            min_se,
            interval: None,
            we_refresh: false,
            refresh_at: None,
            expire_at: None,
            peer_supports_timer: false,
            peer_allows_update: false,
            refreshing: false,
        }
    }

    /// The negotiated interval, once a 2xx fixed it.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether we are the refresher.
    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    /// When the session expires without a refresh.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expire_at
    }

    fn note_peer(&mut self, headers: &super::message::Headers) {
        if lists(headers, &HeaderName::Supported, "timer")
            || lists(headers, &HeaderName::Require, "timer")
        {
            self.peer_supports_timer = true;
        }
        if headers.get(&HeaderName::Allow).is_some() {
            self.peer_allows_update = lists(headers, &HeaderName::Allow, "UPDATE");
        }
    }

    /// Adds `Supported: timer`, `Session-Expires` (with `refresher=uac` on a refresh we
    /// perform) and `Min-SE` to an INVITE, re-INVITE or UPDATE we send.
    pub fn decorate_request(&mut self, req: &mut Request) {
        if !lists(&req.headers, &HeaderName::Supported, "timer") {
            req.headers.push(HeaderName::Supported, "timer");
        }
        let se = SessionExpires {
            interval: self
                .interval
                .map_or(self.requested, |i| i.max(self.requested)),
            // An initial request leaves the choice to the UAS; a refresh keeps us refresher.
            refresher: (self.interval.is_some() && self.we_refresh).then_some(Refresher::Uac),
        };
        req.headers.set(HeaderName::SessionExpires, se.to_string());
        req.headers
            .set(HeaderName::MinSe, self.min_se.as_secs().to_string());
        if self.interval.is_some() {
            self.refreshing = true;
        }
    }

    /// Checks an INVITE/UPDATE from the peer (RFC 4028 §9): `Err` carries the 422 to send
    /// when its interval is below our Min-SE and the peer supports timers.
    pub fn check_request(&mut self, req: &Request) -> Result<(), Box<Response>> {
        self.note_peer(&req.headers);
        if let Some(m) = min_se_of(&req.headers) {
            self.min_se = self.min_se.max(m);
        }
        let Some(se) = SessionExpires::from_headers(&req.headers) else {
            return Ok(());
        };
        if se.interval < self.min_se && self.peer_supports_timer {
            let mut r = Response::for_request(req, 422);
            r.headers
                .push(HeaderName::MinSe, self.min_se.as_secs().to_string());
            return Err(Box::new(r));
        }
        Ok(())
    }

    /// Decorates our 2xx to the peer's INVITE/UPDATE `req` with the negotiated
    /// `Session-Expires` (and `Require: timer` when the peer supports it) and starts the
    /// timer at `now`. Call only for 2xx; call [`SessionTimer::check_request`] first.
    pub fn answer(&mut self, now: Instant, req: &Request, resp: &mut Response) {
        self.note_peer(&req.headers);
        let asked = SessionExpires::from_headers(&req.headers);
        let interval = match asked {
            Some(se) => se.interval.max(self.min_se),
            None => self.requested,
        };
        // Who refreshes: the request's choice if it made one; else ours, but the peer can
        // only be made refresher if it supports timers.
        let refresher = match asked.and_then(|s| s.refresher) {
            Some(r) => r,
            None if !self.peer_supports_timer => Refresher::Uas,
            None if self.config.prefer_refresher => Refresher::Uas,
            None => Refresher::Uac,
        };
        let se = SessionExpires {
            interval,
            refresher: Some(refresher),
        };
        resp.headers.set(HeaderName::SessionExpires, se.to_string());
        if self.peer_supports_timer && !lists(&resp.headers, &HeaderName::Require, "timer") {
            resp.headers.push(HeaderName::Require, "timer");
        }
        self.start(now, interval, refresher == Refresher::Uas);
    }

    /// Feeds the final response to an INVITE/UPDATE we sent (decorated by
    /// [`SessionTimer::decorate_request`]).
    pub fn handle_response(&mut self, now: Instant, resp: &Response) -> ResponseVerdict {
        if resp.status < 200 {
            return ResponseVerdict::Unchanged;
        }
        let was_refresh = std::mem::take(&mut self.refreshing);
        self.note_peer(&resp.headers);
        match resp.status {
            200..=299 => {
                match SessionExpires::from_headers(&resp.headers) {
                    Some(se) => {
                        let ours = se.refresher.unwrap_or(Refresher::Uac) == Refresher::Uac;
                        self.start(now, se.interval.max(ABSOLUTE_MIN_SE), ours);
                    }
                    // No timer support at the peer: we refresh with what we asked for.
                    None => self.start(now, self.requested, true),
                }
                ResponseVerdict::Running
            }
            422 => match min_se_of(&resp.headers) {
                Some(m) if m > self.requested && m <= Duration::from_secs(86_400) => {
                    self.min_se = self.min_se.max(m);
                    self.requested = m;
                    ResponseVerdict::Retry
                }
                _ => ResponseVerdict::Unchanged,
            },
            408 | 481 if was_refresh => ResponseVerdict::SessionLost,
            _ => {
                // A refresh that failed otherwise (491, 500, ...): try again halfway to the
                // expiry, while at least a second is left.
                if was_refresh
                    && self.we_refresh
                    && let Some(e) = self.expire_at
                    && e > now + Duration::from_secs(2)
                {
                    self.refresh_at = Some(now + (e - now) / 2);
                }
                ResponseVerdict::Unchanged
            }
        }
    }

    fn start(&mut self, now: Instant, interval: Duration, we_refresh: bool) {
        self.interval = Some(interval);
        self.we_refresh = we_refresh;
        self.refresh_at = we_refresh.then(|| now + interval / 2);
        let margin = Duration::from_secs(32).min(interval / 3);
        self.expire_at = Some(now + interval - margin);
    }

    /// When to call [`SessionTimer::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.refresh_at, self.expire_at) {
            (Some(r), Some(e)) => Some(r.min(e)),
            (r, e) => r.or(e),
        }
    }

    /// Runs the timer: a refresh to send (once per interval), or the session's expiry.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<SessionTimerEvent> {
        if self.expire_at.is_some_and(|e| e <= now) {
            self.expire_at = None;
            self.refresh_at = None;
            return Some(SessionTimerEvent::Expired);
        }
        if self.refresh_at.is_some_and(|r| r <= now) {
            self.refresh_at = None;
            let method = if self.config.prefer_update && self.peer_allows_update {
                Method::Update
            } else {
                Method::Invite
            };
            return Some(SessionTimerEvent::Refresh(method));
        }
        None
    }

    /// The dialog ended: no more timers.
    pub fn stop(&mut self) {
        self.refresh_at = None;
        self.expire_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::parse_message;

    fn req(method: &str, extra: &str) -> Request {
        let t = format!(
            "{method} sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             To: <sip:b@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\n\
             CSeq: 1 {method}\r\nContact: <sip:a@192.0.2.1>\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_message(t.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_small_interval_gets_422_with_min_se_only_if_the_peer_supports_timer() {
        let mut st = SessionTimer::new(SessionTimerConfig {
            min_se: Duration::from_secs(300),
            ..SessionTimerConfig::default()
        });
        let r = st
            .check_request(&req(
                "INVITE",
                "Supported: timer\r\nSession-Expires: 100\r\n",
            ))
            .unwrap_err();
        assert_eq!(r.status, 422);
        assert_eq!(r.headers.get(&HeaderName::MinSe), Some("300"));
        // Without timer support the interval is raised instead, and we refresh.
        let mut st = SessionTimer::new(SessionTimerConfig {
            min_se: Duration::from_secs(300),
            ..SessionTimerConfig::default()
        });
        let inv = req("INVITE", "Session-Expires: 100\r\n");
        st.check_request(&inv).unwrap();
        let mut ok = Response::for_request(&inv, 200);
        st.answer(Instant::now(), &inv, &mut ok);
        assert_eq!(
            ok.headers.get(&HeaderName::SessionExpires),
            Some("300;refresher=uas")
        );
        assert!(ok.headers.get(&HeaderName::Require).is_none());
        assert!(st.we_refresh());
    }

    #[test]
    fn uac_retries_after_422_with_the_peers_min_se() {
        let mut st = SessionTimer::new(SessionTimerConfig {
            session_expires: Duration::from_secs(120),
            ..SessionTimerConfig::default()
        });
        let mut inv = req("INVITE", "");
        st.decorate_request(&mut inv);
        assert_eq!(inv.headers.get(&HeaderName::SessionExpires), Some("120"));
        assert_eq!(inv.headers.get(&HeaderName::MinSe), Some("90"));
        let mut r422 = Response::for_request(&inv, 422);
        r422.headers.push(HeaderName::MinSe, "600");
        assert_eq!(
            st.handle_response(Instant::now(), &r422),
            ResponseVerdict::Retry
        );
        let mut again = req("INVITE", "");
        st.decorate_request(&mut again);
        assert_eq!(again.headers.get(&HeaderName::SessionExpires), Some("600"));
        assert_eq!(again.headers.get(&HeaderName::MinSe), Some("600"));
    }

    #[test]
    fn refresher_refreshes_at_half_and_each_refresh_restarts_the_clock() {
        let t0 = Instant::now();
        let mut st = SessionTimer::new(SessionTimerConfig {
            session_expires: Duration::from_secs(200),
            ..SessionTimerConfig::default()
        });
        let mut inv = req("INVITE", "");
        st.decorate_request(&mut inv);
        let mut ok = Response::for_request(&inv, 200);
        ok.headers
            .push(HeaderName::SessionExpires, "200;refresher=uac");
        ok.headers
            .push(HeaderName::Allow, "INVITE, ACK, BYE, UPDATE");
        assert_eq!(st.handle_response(t0, &ok), ResponseVerdict::Running);
        assert!(st.we_refresh());
        let half = t0 + Duration::from_secs(100);
        assert_eq!(st.poll_timeout(), Some(half));
        assert_eq!(
            st.handle_timeout(half),
            Some(SessionTimerEvent::Refresh(Method::Update))
        );
        let mut upd = req("UPDATE", "");
        st.decorate_request(&mut upd);
        assert_eq!(
            upd.headers.get(&HeaderName::SessionExpires),
            Some("200;refresher=uac")
        );
        // The refresh's 2xx restarts both timers from its arrival.
        let mut ok = Response::for_request(&upd, 200);
        ok.headers
            .push(HeaderName::SessionExpires, "200;refresher=uac");
        st.handle_response(half, &ok);
        assert_eq!(st.poll_timeout(), Some(half + Duration::from_secs(100)));
        // A refresh that gets 481 means the session is gone.
        st.handle_timeout(half + Duration::from_secs(100));
        let mut upd = req("UPDATE", "");
        st.decorate_request(&mut upd);
        let r481 = Response::for_request(&upd, 481);
        assert_eq!(
            st.handle_response(half + Duration::from_secs(100), &r481),
            ResponseVerdict::SessionLost
        );
    }

    #[test]
    fn caller_refreshes_when_we_prefer_not_to_and_a_failed_refresh_is_retried() {
        let t0 = Instant::now();
        let mut st = SessionTimer::new(SessionTimerConfig {
            prefer_refresher: false,
            ..SessionTimerConfig::default()
        });
        let inv = req("INVITE", "Supported: timer\r\nSession-Expires: 300\r\n");
        st.check_request(&inv).unwrap();
        let mut ok = Response::for_request(&inv, 200);
        st.answer(t0, &inv, &mut ok);
        assert_eq!(
            ok.headers.get(&HeaderName::SessionExpires),
            Some("300;refresher=uac")
        );
        assert!(!st.we_refresh());
        assert_eq!(st.poll_timeout(), Some(t0 + Duration::from_secs(268)));
        // The caller's refresh (an UPDATE naming itself refresher) restarts the clock.
        let t1 = t0 + Duration::from_secs(150);
        let upd = req(
            "UPDATE",
            "Supported: timer\r\nSession-Expires: 300;refresher=uac\r\n",
        );
        st.check_request(&upd).unwrap();
        let mut ok = Response::for_request(&upd, 200);
        st.answer(t1, &upd, &mut ok);
        assert_eq!(st.poll_timeout(), Some(t1 + Duration::from_secs(268)));

        // As refresher, a 491 to our refresh schedules another attempt before expiry.
        let mut st = SessionTimer::new(SessionTimerConfig::default());
        let mut inv = req("INVITE", "");
        st.decorate_request(&mut inv);
        let mut ok = Response::for_request(&inv, 200);
        ok.headers
            .push(HeaderName::SessionExpires, "1800;refresher=uac");
        st.handle_response(t0, &ok);
        let half = t0 + Duration::from_secs(900);
        assert!(matches!(
            st.handle_timeout(half),
            Some(SessionTimerEvent::Refresh(_))
        ));
        let mut re = req("INVITE", "");
        st.decorate_request(&mut re);
        let r491 = Response::for_request(&re, 491);
        assert_eq!(st.handle_response(half, &r491), ResponseVerdict::Unchanged);
        let expiry = t0 + Duration::from_secs(1800 - 32);
        let retry = st.poll_timeout().unwrap();
        assert!(retry > half && retry < expiry, "{:?}", retry - t0);
    }

    #[test]
    fn peer_without_timer_support_leaves_us_refreshing_with_reinvite() {
        let t0 = Instant::now();
        let mut st = SessionTimer::new(SessionTimerConfig::default());
        let mut inv = req("INVITE", "");
        st.decorate_request(&mut inv);
        let mut ok = Response::for_request(&inv, 200);
        ok.headers.push(HeaderName::Allow, "INVITE, ACK, BYE");
        st.handle_response(t0, &ok);
        assert!(st.we_refresh());
        assert_eq!(st.interval(), Some(Duration::from_secs(1800)));
        assert_eq!(
            st.handle_timeout(t0 + Duration::from_secs(900)),
            Some(SessionTimerEvent::Refresh(Method::Invite))
        );
        assert_eq!(
            SessionExpires::parse("90;refresher=UAS"),
            Some(SessionExpires {
                interval: Duration::from_secs(90),
                refresher: Some(Refresher::Uas)
            })
        );
        assert!(SessionExpires::parse("x").is_none());
    }
}

//! The REGISTER client (RFC 3261 §10.2): the gateway registering to a PBX or a carrier's
//! registrar, sans-IO.
//!
//! A [`Registration`] builds each REGISTER (one Call-ID for the binding's life, CSeq
//! increasing), answers 401/407 with its [`DigestClient`], follows 423 `Min-Expires`, refreshes
//! ahead of expiry (half the lifetime for short ones, 32 s early for long ones, so one lost
//! REGISTER can still be retransmitted), retries after a failure with exponential back-off
//! (`retry_after` doubling up to `retry_max`, or the registrar's `Retry-After`), keeps counting
//! a binding as valid until it really lapses, and un-REGISTERs (`Expires: 0`) on shutdown.
//! With an instance id it registers as an RFC 5626 outbound client (`+sip.instance`,
//! `reg-id`, `Supported: outbound, path`).
//!
//! The leg drives it like this: send what [`Registration::register`] returns through the
//! transaction layer; feed every final response to [`Registration::handle_response`] and send
//! any [`RegistrationAction::Send`]; on a transaction timeout call
//! [`Registration::transaction_timed_out`]; at [`Registration::poll_timeout`] call
//! [`Registration::handle_timeout`] and send what it returns; at shutdown send
//! [`Registration::unregister`] and wait (bounded) for its response.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use gateway::sip::auth::DigestClient;
//! use gateway::sip::dialog::ViaTemplate;
//! use gateway::sip::message::{HeaderName, Response, Uri};
//! use gateway::sip::registration::{Registration, RegistrationAction, RegistrationConfig};
//!
//! let config = RegistrationConfig::new(
//!     Uri::parse("sip:192.0.2.2").unwrap(),
//!     Uri::parse("sip:gw@192.0.2.2").unwrap(),
//!     Uri::parse("sip:gw@192.0.2.1:5060").unwrap(),
//!     ViaTemplate { transport: "UDP".into(), sent_by: "192.0.2.1:5060".into() },
//!     "reg-call-id",
//!     "ftag",
//! );
//! let mut reg = Registration::new(config, DigestClient::new("gw", "secret"));
//! let t0 = Instant::now();
//! let req = reg.register("z9hG4bK1");
//! let mut busy = Response::for_request(&req, 503);
//! busy.headers.push(HeaderName::RetryAfter, "20");
//! assert_eq!(
//!     reg.handle_response(t0, &busy, "z9hG4bK2", "cn"),
//!     RegistrationAction::Failed { status: 503, retry_in: Duration::from_secs(20) }
//! );
//! assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(20)));
//! ```

use std::time::{Duration, Instant};

use super::auth::DigestClient;
use super::dialog::ViaTemplate;
use super::message::{Contacts, HeaderName, Method, Request, Response, Uri};

/// Settings of a [`Registration`].
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The registrar's URI (Request-URI of REGISTER), e.g. `sip:pbx.example.com`.
    pub registrar: Uri,
    /// The address-of-record (From/To), e.g. `sip:gateway@pbx.example.com`.
    pub aor: Uri,
    /// Our Contact.
    pub contact: Uri,
    /// Requested lifetime (default 3600 s).
    pub expires: Duration,
    /// Our Via.
    pub via: ViaTemplate,
    /// Call-ID for all REGISTERs of this binding (RFC 3261 §10.2.4 asks to keep it).
    pub call_id: String,
    /// From tag.
    pub from_tag: String,
    /// Delay before the first retry after a failure (default 30 s); doubles per failure.
    pub retry_after: Duration,
    /// Longest retry delay (default 1800 s).
    pub retry_max: Duration,
    /// RFC 5626 `+sip.instance` (e.g. `<urn:uuid:...>`), for an outbound registration.
    pub instance: Option<String>,
    /// RFC 5626 `reg-id` (with `instance`).
    pub reg_id: Option<u32>,
}

impl RegistrationConfig {
    /// A configuration with the default lifetime and back-off.
    pub fn new(
        registrar: Uri,
        aor: Uri,
        contact: Uri,
        via: ViaTemplate,
        call_id: &str,
        from_tag: &str,
    ) -> Self {
        RegistrationConfig {
            registrar,
            aor,
            contact,
            expires: Duration::from_secs(3600),
            via,
            call_id: call_id.to_owned(),
            from_tag: from_tag.to_owned(),
            retry_after: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
            instance: None,
            reg_id: None,
        }
    }
}

/// What the caller must do after feeding a REGISTER response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationAction {
    /// Send this REGISTER (answering a challenge, or with a new interval after 423).
    Send(Request),
    /// The registrar accepted the binding for this long; a refresh is scheduled.
    Registered {
        /// Granted lifetime.
        expires: Duration,
    },
    /// The registrar refused (status, 0 when our credentials were rejected, 408 for no
    /// answer); a retry is scheduled after `retry_in`. A binding granted earlier still counts
    /// until it lapses.
    Failed {
        /// The final status.
        status: u16,
        /// When the retry goes out.
        retry_in: Duration,
    },
    /// The un-REGISTER completed (or failed; we are shutting down either way): no binding,
    /// no timers.
    Unregistered,
    /// A provisional or unrelated response.
    Nothing,
}

/// Where the registration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Nothing sent yet.
    Idle,
    /// A REGISTER is in flight (initial, refresh or retry).
    Registering,
    /// The registrar accepted it; a refresh is scheduled.
    Registered,
    /// The last attempt failed; a retry is scheduled.
    Failed,
    /// The un-REGISTER is in flight.
    Unregistering,
    /// Shut down: no binding, no timers.
    Unregistered,
}

/// A REGISTER client (RFC 3261 §10.2) with digest answers, refresh before expiry, back-off and
/// un-REGISTER.
#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    client: DigestClient,
    cseq: u32,
    last: Option<Request>,
    refresh_at: Option<Instant>,
    registered_until: Option<Instant>,
    failures: u32,
    state: RegistrationState,
    last_status: Option<u16>,
}

impl Registration {
    /// A registration that will authenticate with `client`'s credentials.
    pub fn new(config: RegistrationConfig, client: DigestClient) -> Self {
        Registration {
            config,
            client,
            cseq: 0,
            last: None,
            refresh_at: None,
            registered_until: None,
            failures: 0,
            state: RegistrationState::Idle,
            last_status: None,
        }
    }

    /// Whether a binding is currently in force at `now`.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|u| now < u)
            && self.state != RegistrationState::Unregistered
    }

    /// Where the registration is.
    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// The last final status from the registrar (for operators: why it is not registered).
    pub fn last_status(&self) -> Option<u16> {
        self.last_status
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn build(&mut self, branch: &str, expires: Duration) -> Request {
        self.cseq = self.cseq.saturating_add(1);
        let c = &self.config;
        let mut r = Request::new(Method::Register, c.registrar.clone());
        r.headers.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                c.via.transport, c.via.sent_by
            ),
        );
        r.headers.push(HeaderName::MaxForwards, "70");
        r.headers
            .push(HeaderName::From, format!("<{}>;tag={}", c.aor, c.from_tag));
        r.headers.push(HeaderName::To, format!("<{}>", c.aor));
        r.headers.push(HeaderName::CallId, c.call_id.clone());
        r.headers
            .push(HeaderName::CSeq, format!("{} REGISTER", self.cseq));
        let mut contact = format!("<{}>", c.contact);
        if let Some(instance) = &c.instance {
            contact.push_str(&format!(";+sip.instance=\"{instance}\""));
            if let Some(id) = c.reg_id {
                contact.push_str(&format!(";reg-id={id}"));
            }
            r.headers.push(HeaderName::Supported, "outbound, path");
        }
        r.headers.push(HeaderName::Contact, contact);
        r.headers
            .push(HeaderName::Expires, expires.as_secs().to_string());
        self.refresh_at = None;
        self.last = Some(r.clone());
        r
    }

    /// A new REGISTER (initial, refresh or retry) with branch `branch`.
    pub fn register(&mut self, branch: &str) -> Request {
        self.state = RegistrationState::Registering;
        self.build(branch, self.config.expires)
    }

    /// The un-REGISTER (`Expires: 0`) to send at shutdown; `None` when nothing was ever sent
    /// (or it already ran). After it no refresh is scheduled, whatever the answer.
    pub fn unregister(&mut self, branch: &str) -> Option<Request> {
        if matches!(
            self.state,
            RegistrationState::Idle | RegistrationState::Unregistered
        ) {
            self.state = RegistrationState::Unregistered;
            self.refresh_at = None;
            return None;
        }
        self.state = RegistrationState::Unregistering;
        Some(self.build(branch, Duration::ZERO))
    }

    /// Feeds the final or provisional response to our last REGISTER. `branch` and `cnonce`
    /// are used if a new REGISTER must be sent.
    pub fn handle_response(
        &mut self,
        now: Instant,
        resp: &Response,
        branch: &str,
        cnonce: &str,
    ) -> RegistrationAction {
        let Some(last) = self.last.clone() else {
            return RegistrationAction::Nothing;
        };
        if resp.headers.cseq().map(|c| c.seq).ok() != Some(self.cseq) || resp.status < 200 {
            return RegistrationAction::Nothing;
        }
        self.last_status = Some(resp.status);
        let unregistering = self.state == RegistrationState::Unregistering;
        match resp.status {
            200..=299 if unregistering => self.finish_unregister(),
            200..=299 => {
                let granted =
                    granted_expires(resp, &self.config.contact).unwrap_or(self.config.expires);
                self.failures = 0;
                if granted.is_zero() {
                    // The registrar kept no binding for us: treat as a failure.
                    return self.failed(now, resp.status, None);
                }
                self.state = RegistrationState::Registered;
                self.registered_until = Some(now + granted);
                let margin = (granted / 2).min(Duration::from_secs(32));
                self.refresh_at = Some(now + granted - margin);
                RegistrationAction::Registered { expires: granted }
            }
            401 | 407 => match self.client.authorize(&last, resp, branch, cnonce) {
                Ok(req) => {
                    self.cseq = req.headers.cseq().map(|c| c.seq).unwrap_or(self.cseq);
                    self.last = Some(req.clone());
                    RegistrationAction::Send(req)
                }
                Err(_) if unregistering => self.finish_unregister(),
                Err(_) => self.failed(now, 0, None),
            },
            423 if !unregistering => {
                let min = resp
                    .headers
                    .get(&HeaderName::MinExpires)
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match min {
                    Some(m) if m > self.config.expires.as_secs() && m <= 86_400 => {
                        self.config.expires = Duration::from_secs(m);
                        RegistrationAction::Send(self.register(branch))
                    }
                    _ => self.failed(now, 423, None),
                }
            }
            _ if unregistering => self.finish_unregister(),
            s => {
                let retry = resp
                    .headers
                    .get(&HeaderName::RetryAfter)
                    .and_then(|v| v.split([';', '(']).next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                self.failed(now, s, retry)
            }
        }
    }

    fn finish_unregister(&mut self) -> RegistrationAction {
        self.state = RegistrationState::Unregistered;
        self.registered_until = None;
        self.refresh_at = None;
        RegistrationAction::Unregistered
    }

    fn failed(&mut self, now: Instant, status: u16, retry: Option<Duration>) -> RegistrationAction {
        self.failures = self.failures.saturating_add(1);
        let backoff = self
            .config
            .retry_after
            .saturating_mul(1u32 << (self.failures - 1).min(16));
        let retry_in = retry.unwrap_or(backoff).min(self.config.retry_max);
        self.state = RegistrationState::Failed;
        self.refresh_at = Some(now + retry_in);
        RegistrationAction::Failed { status, retry_in }
    }

    /// The REGISTER transaction timed out (no response): retry with back-off.
    pub fn transaction_timed_out(&mut self, now: Instant) -> RegistrationAction {
        if self.state == RegistrationState::Unregistering {
            return self.finish_unregister();
        }
        self.last_status = Some(408);
        self.failed(now, 408, None)
    }

    /// When to call [`Registration::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.refresh_at
    }

    /// At the refresh (or retry) time, returns the REGISTER to send.
    pub fn handle_timeout(&mut self, now: Instant, branch: &str) -> Option<Request> {
        match self.refresh_at {
            Some(at) if at <= now => Some(self.register(branch)),
            _ => None,
        }
    }
}

/// The lifetime the registrar granted our contact (RFC 3261 §10.2.4): the `expires` parameter
/// of our Contact in the 200 (matched by URI, or by user/host/port when the registrar
/// rewrote parameters, or the only Contact listed), else the Expires header.
fn granted_expires(resp: &Response, contact: &Uri) -> Option<Duration> {
    let cap = |s: u64| Duration::from_secs(s.min(86_400 * 7));
    if let Ok(Contacts::List(list)) = resp.headers.contacts() {
        let ours = contact.sip_parts();
        let same_place = |u: &Uri| match (u.sip_parts(), &ours) {
            (Some(a), Some(b)) => {
                a.user == b.user
                    && a.host.eq_ignore_ascii_case(b.host)
                    && a.port.unwrap_or(5060) == b.port.unwrap_or(5060)
            }
            _ => false,
        };
        let expires_of = |c: &super::message::NameAddr| {
            c.params
                .get("expires")
                .flatten()
                .and_then(|e| e.parse::<u64>().ok())
        };
        let pick = list
            .iter()
            .find(|c| c.uri.as_str() == contact.as_str())
            .or_else(|| list.iter().find(|c| same_place(&c.uri)))
            .or_else(|| (list.len() == 1).then(|| list.first()).flatten());
        if let Some(e) = pick.and_then(expires_of) {
            return Some(cap(e));
        }
    }
    resp.headers
        .get(&HeaderName::Expires)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registration {
        let mut c = RegistrationConfig::new(
            Uri::parse("sip:192.0.2.2").unwrap_or_else(|_| unreachable!()),
            Uri::parse("sip:gw@192.0.2.2").unwrap_or_else(|_| unreachable!()),
            Uri::parse("sip:gw@192.0.2.1:5060").unwrap_or_else(|_| unreachable!()),
            ViaTemplate {
                transport: "UDP".into(),
                sent_by: "192.0.2.1:5060".into(),
            },
            "cid",
            "ft",
        );
        c.retry_after = Duration::from_secs(10);
        c.retry_max = Duration::from_secs(60);
        c.instance = Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".into());
        c.reg_id = Some(1);
        Registration::new(c, DigestClient::new("gw", "pw"))
    }

    #[test]
    fn back_off_doubles_to_the_cap_and_resets_on_success() {
        let mut r = reg();
        let t0 = Instant::now();
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..5 {
            let req = r.register("z9hG4bKx");
            let resp = Response::for_request(&req, 500);
            let RegistrationAction::Failed { retry_in, .. } =
                r.handle_response(now, &resp, "b", "c")
            else {
                panic!()
            };
            delays.push(retry_in.as_secs());
            now += retry_in;
            assert!(r.handle_timeout(now, "z9hG4bKy").is_some());
        }
        assert_eq!(delays, vec![10, 20, 40, 60, 60]);
        let req = r.register("z9hG4bKz");
        let mut ok = Response::for_request(&req, 200);
        ok.headers.push(
            HeaderName::Contact,
            "<sip:gw@192.0.2.1:5060;transport=udp>;expires=300",
        );
        assert_eq!(
            r.handle_response(now, &ok, "b", "c"),
            RegistrationAction::Registered {
                expires: Duration::from_secs(300)
            }
        );
        assert_eq!(r.failures(), 0);
        assert_eq!(r.state(), RegistrationState::Registered);
    }

    #[test]
    fn outbound_contact_and_unregister() {
        let mut r = reg();
        assert!(r.unregister("z9hG4bKu0").is_none(), "nothing to remove yet");
        let mut r = reg();
        let req = r.register("z9hG4bK1");
        let contact = req.headers.get(&HeaderName::Contact).unwrap_or_default();
        assert!(contact.contains(";+sip.instance=\"<urn:uuid:"), "{contact}");
        assert!(contact.ends_with(";reg-id=1"), "{contact}");
        assert_eq!(
            req.headers.get(&HeaderName::Supported),
            Some("outbound, path")
        );
        let t0 = Instant::now();
        let mut ok = Response::for_request(&req, 200);
        ok.headers.push(HeaderName::Expires, "600");
        r.handle_response(t0, &ok, "b", "c");
        let un = r.unregister("z9hG4bK2").unwrap_or_else(|| unreachable!());
        assert_eq!(un.headers.get(&HeaderName::Expires), Some("0"));
        assert_eq!(r.poll_timeout(), None);
        let ok = Response::for_request(&un, 200);
        assert_eq!(
            r.handle_response(t0, &ok, "b", "c"),
            RegistrationAction::Unregistered
        );
        assert!(!r.is_registered(t0));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_failed_refresh_keeps_the_binding_until_it_lapses() {
        let mut r = reg();
        let t0 = Instant::now();
        let req = r.register("z9hG4bK1");
        let mut ok = Response::for_request(&req, 200);
        ok.headers.push(HeaderName::Expires, "120");
        r.handle_response(t0, &ok, "b", "c");
        let t1 = t0 + Duration::from_secs(88);
        let refresh = r
            .handle_timeout(t1, "z9hG4bK2")
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            r.transaction_timed_out(t1 + Duration::from_secs(32)),
            RegistrationAction::Failed {
                status: 408,
                retry_in: Duration::from_secs(10)
            }
        );
        assert!(r.is_registered(t1 + Duration::from_secs(31)));
        assert!(!r.is_registered(t0 + Duration::from_secs(120)));
        let _ = refresh;
    }
}

//! REFER and its NOTIFYs (RFC 3515), `Refer-Sub: false` (RFC 4488), the Replaces header
//! (RFC 3891) and `message/sipfrag` bodies (RFC 3420): the SIP side of call transfer, sans-IO,
//! for the transfer executor.
//!
//! Two roles:
//!
//! - **Transferor** (we send REFER, e.g. the gateway asks a PBX to move a call):
//!   [`ReferClient`] follows the REFER's 202, the NOTIFY progress (`SIP/2.0 180 Ringing` …
//!   `SIP/2.0 200 OK`) and ends with [`ReferEvent::Succeeded`] / [`ReferEvent::Failed`] — or
//!   [`ReferEvent::TimedOut`] if the final NOTIFY never comes (the "transfer hangs" bug), so
//!   the executor can take the caller back. With `Refer-Sub: false` honoured (the 202 echoes
//!   it) there are no NOTIFYs and the 202 is the end.
//! - **Transferee** (a SIP agent's phone sends us REFER, blind or with Replaces):
//!   [`ReferTo::parse`] gives the target and any embedded Replaces; [`accept_refer`] builds the
//!   202; [`ReferNotifier`] builds the NOTIFYs as the new call progresses (the first one
//!   `100 Trying` right away, RFC 3515 §2.4.5), the last with `Subscription-State:
//!   terminated`, none at all when the REFER said `Refer-Sub: false`.
//!
//! Replaces (RFC 3891) identifies a dialog *as its recipient sees it*: `to-tag` is the
//! recipient's local tag, `from-tag` its remote tag. [`Replaces::matches`] checks a received one
//! against our [`DialogId`]; [`Replaces::for_peer_of`] builds one for a dialog of ours to
//! send to the peer of that dialog; [`check_replaces`] gives the RFC 3891 §3 answer (481, 486,
//! 603) when the replaced dialog cannot be taken over.
//!
//! ```
//! use gateway::sip::dialog::DialogId;
//! use gateway::sip::refer::{Replaces, ReferTo};
//!
//! let rt = ReferTo::parse(
//!     "<sip:agent2@192.0.2.7?Replaces=abc%40192.0.2.7%3Bto-tag%3D7743%3Bfrom-tag%3D6472>",
//! ).unwrap();
//! assert_eq!(rt.target.as_str(), "sip:agent2@192.0.2.7");
//! let r = rt.replaces.unwrap();
//! assert_eq!(r.call_id, "abc@192.0.2.7");
//! // The recipient of the INVITE with Replaces has local tag 7743, remote tag 6472:
//! let ours = DialogId { call_id: "abc@192.0.2.7".into(), local_tag: "7743".into(), remote_tag: "6472".into() };
//! assert!(r.matches(&ours));
//! ```

use std::time::{Duration, Instant};

use thiserror::Error;

use super::dialog::{Dialog, DialogError, DialogId, DialogRole, DialogState};
use super::message::{HeaderName, Method, NameAddr, Request, Response, Uri};
use super::parse;

/// A Replaces value (RFC 3891 §6.1): `call-id;to-tag=x;from-tag=y[;early-only]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    /// The dialog's Call-ID.
    pub call_id: String,
    /// The tag of the recipient's side (its local tag).
    pub to_tag: String,
    /// The tag of the other side (the recipient's remote tag).
    pub from_tag: String,
    /// Only replace an early dialog (486 if it is confirmed).
    pub early_only: bool,
}

/// Why a Replaces or Refer-To value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReferError {
    /// The Replaces value lacks to-tag or from-tag, or its Call-ID is empty.
    #[error("Replaces needs a Call-ID, to-tag and from-tag")]
    BadReplaces,
    /// Refer-To is not a name-addr with a URI.
    #[error("Refer-To is malformed: {0}")]
    BadReferTo(&'static str),
    /// An escape sequence in the embedded headers is not valid UTF-8 / hex.
    #[error("bad %-escape in Refer-To headers")]
    BadEscape,
    /// The REFER has no Refer-To (or more than one: RFC 3515 §2.4.1 answers 400).
    #[error("REFER must carry exactly one Refer-To")]
    ReferToCount,
}

impl Replaces {
    /// Parses a header value.
    pub fn parse(v: &str) -> Result<Replaces, ReferError> {
        let mut parts = v.split(';').map(str::trim);
        let call_id = parts.next().unwrap_or_default().to_owned();
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for p in parts {
            match p.split_once('=') {
                Some((n, val)) if n.trim().eq_ignore_ascii_case("to-tag") => {
                    to_tag = Some(val.trim().to_owned())
                }
                Some((n, val)) if n.trim().eq_ignore_ascii_case("from-tag") => {
                    from_tag = Some(val.trim().to_owned())
                }
                None if p.eq_ignore_ascii_case("early-only") => early_only = true,
                _ => {}
            }
        }
        match (to_tag, from_tag) {
            (Some(to_tag), Some(from_tag))
                if !call_id.is_empty() && !to_tag.is_empty() && !from_tag.is_empty() =>
            {
                Ok(Replaces {
                    call_id,
                    to_tag,
                    from_tag,
                    early_only,
                })
            }
            _ => Err(ReferError::BadReplaces),
        }
    }

    /// The Replaces to send to the peer of our dialog `id` (to name that dialog in an INVITE
    /// to the peer, or in a Refer-To given to someone who will INVITE the peer): the peer's
    /// local tag is our remote tag.
    pub fn for_peer_of(id: &DialogId) -> Replaces {
        Replaces {
            call_id: id.call_id.clone(),
            to_tag: id.remote_tag.clone(),
            from_tag: id.local_tag.clone(),
            early_only: false,
        }
    }

    /// Whether a received Replaces names our dialog `id` (RFC 3891 §3: to-tag against the
    /// local tag, from-tag against the remote tag).
    pub fn matches(&self, id: &DialogId) -> bool {
        self.call_id == id.call_id && self.to_tag == id.local_tag && self.from_tag == id.remote_tag
    }

    /// The value %-escaped for a URI header (`Refer-To: <sip:x?Replaces=...>`).
    pub fn to_uri_header(&self) -> String {
        format!("Replaces={}", escape_header_value(&self.to_string()))
    }
}

impl std::fmt::Display for Replaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{};to-tag={};from-tag={}",
            self.call_id, self.to_tag, self.from_tag
        )?;
        if self.early_only {
            f.write_str(";early-only")?;
        }
        Ok(())
    }
}

/// RFC 3891 §3: the status to refuse an INVITE with Replaces naming `dialog` (`Err`), or `Ok`
/// to take it over: 481 for no such dialog, or an early dialog we did not initiate; 486 for a
/// confirmed dialog with `early-only`; 603 for one already terminated.
pub fn check_replaces(replaces: &Replaces, dialog: Option<&Dialog>) -> Result<(), u16> {
    let Some(d) = dialog.filter(|d| replaces.matches(d.id())) else {
        return Err(481);
    };
    match d.state() {
        DialogState::Terminated => Err(603),
        DialogState::Confirmed if replaces.early_only => Err(486),
        DialogState::Early if d.role() == DialogRole::Uas => Err(481),
        _ => Ok(()),
    }
}

fn escape_header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 2);
    for b in v.bytes() {
        // RFC 3261 hnv-unreserved / unreserved are safe; everything else is escaped.
        if b.is_ascii_alphanumeric() || b"-_.!~*'()[]/?:+$".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(v: &str) -> Result<String, ReferError> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = v.get(i + 1..i + 3).ok_or(ReferError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ReferError::BadEscape)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ReferError::BadEscape)
}

/// A parsed Refer-To (RFC 3515 §2.1): the target and the headers embedded in its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    /// The target URI without its `?headers` part (the Request-URI of the INVITE to send).
    pub target: Uri,
    /// An embedded Replaces (attended transfer).
    pub replaces: Option<Replaces>,
    /// Other embedded headers, unescaped, to copy into the INVITE (e.g. `Referred-By`).
    pub headers: Vec<(String, String)>,
    /// The value as received.
    pub name_addr: NameAddr,
}

impl ReferTo {
    /// Parses a Refer-To value.
    pub fn parse(v: &str) -> Result<ReferTo, ReferError> {
        let name_addr = parse::parse_name_addr(v, true).map_err(ReferError::BadReferTo)?;
        let raw = name_addr.uri.as_str();
        let (base, hdrs) = match raw.split_once('?') {
            Some((b, h)) => (b, Some(h)),
            None => (raw, None),
        };
        let target = Uri::parse(base).map_err(ReferError::BadReferTo)?;
        let mut replaces = None;
        let mut headers = Vec::new();
        for pair in hdrs
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (n, val) = pair.split_once('=').unwrap_or((pair, ""));
            let n = unescape(n)?;
            let val = unescape(val)?;
            if n.eq_ignore_ascii_case("Replaces") {
                replaces = Some(Replaces::parse(&val)?);
            } else {
                headers.push((n, val));
            }
        }
        Ok(ReferTo {
            target,
            replaces,
            headers,
            name_addr,
        })
    }

    /// The one Refer-To of a REFER (RFC 3515 §2.4.1: none or several → 400).
    pub fn from_request(req: &Request) -> Result<ReferTo, ReferError> {
        let mut all = req.headers.get_all(&HeaderName::ReferTo);
        match (all.next(), all.next()) {
            (Some(v), None) => ReferTo::parse(v),
            _ => Err(ReferError::ReferToCount),
        }
    }

    /// A Refer-To value for `target`, with `replaces` embedded for an attended transfer.
    pub fn format(target: &Uri, replaces: Option<&Replaces>) -> String {
        match replaces {
            Some(r) => format!("<{target}?{}>", r.to_uri_header()),
            None => format!("<{target}>"),
        }
    }
}

/// Whether the REFER asks for no implicit subscription (`Refer-Sub: false`, RFC 4488).
pub fn refer_sub_requested(req: &Request) -> bool {
    !req.headers
        .get(&HeaderName::ReferSub)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// The 202 Accepted for a received REFER, echoing `Refer-Sub: false` when we honour it
/// (RFC 4488 §4: we always do).
pub fn accept_refer(dialog: &mut Dialog, refer: &Request) -> Response {
    let mut r = dialog.response(refer, 202);
    if !refer_sub_requested(refer) {
        r.headers.push(HeaderName::ReferSub, "false");
    }
    r
}

/// A `message/sipfrag` body carrying a status line (RFC 3420, RFC 3515 §2.4.5).
pub fn sipfrag(status: u16, reason: &str) -> Vec<u8> {
    let reason = if reason.is_empty() {
        super::message::default_reason(status)
    } else {
        reason
    };
    format!("SIP/2.0 {status} {reason}\r\n").into_bytes()
}

/// The status code of a sipfrag body's status line; `None` if it has none.
pub fn parse_sipfrag(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    (100..700).contains(&code).then_some(code)
}

/// What a NOTIFY about a REFER says, and what to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferEvent {
    /// The REFER got 202 (NOTIFYs follow unless Refer-Sub was declined).
    Accepted {
        /// Whether NOTIFYs will follow.
        subscribed: bool,
    },
    /// A provisional status of the new call (e.g. 180).
    Progress(u16),
    /// The new call was answered (2xx in the final NOTIFY), or the REFER was accepted with no
    /// subscription (then the status is 202).
    Succeeded(u16),
    /// The REFER was refused, or the new call failed (its final status).
    Failed(u16),
    /// No final NOTIFY (or no answer to the REFER) in time: treat as failed.
    TimedOut,
}

/// The transferor's view of one REFER it sent.
#[derive(Debug, Clone)]
pub struct ReferClient {
    event_id: u32,
    subscribed: bool,
    deadline: Option<Instant>,
    timeout: Duration,
    done: bool,
}

impl ReferClient {
    /// Follows `refer` (sent at `now`), expecting its outcome within `timeout` (e.g. 60 s:
    /// ring time plus margin). A REFER carrying `Refer-Sub: false` expects no NOTIFY.
    pub fn new(now: Instant, refer: &Request, timeout: Duration) -> Self {
        ReferClient {
            event_id: refer.headers.cseq().map(|c| c.seq).unwrap_or(0),
            subscribed: refer_sub_requested(refer),
            deadline: Some(now + timeout),
            timeout,
            done: false,
        }
    }

    /// Adds `Refer-Sub: false` (and `Supported: norefersub`) to a REFER we are about to send.
    pub fn decline_subscription(refer: &mut Request) {
        refer.headers.set(HeaderName::ReferSub, "false");
        refer.headers.push(HeaderName::Supported, "norefersub");
    }

    /// Whether the outcome is known.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the final response to the REFER.
    pub fn handle_response(&mut self, now: Instant, resp: &Response) -> Option<ReferEvent> {
        if resp.status < 200 || self.done {
            return None;
        }
        if !(200..300).contains(&resp.status) {
            self.finish();
            return Some(ReferEvent::Failed(resp.status));
        }
        // RFC 4488 §4: the subscription is declined only if the 202 echoes Refer-Sub: false.
        let declined = resp
            .headers
            .get(&HeaderName::ReferSub)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        if declined || !self.subscribed {
            self.subscribed = false;
            self.finish();
            return Some(ReferEvent::Succeeded(resp.status));
        }
        self.deadline = Some(now + self.timeout);
        Some(ReferEvent::Accepted { subscribed: true })
    }

    /// Feeds a NOTIFY received in the REFER's dialog: the status to answer it with (200, or
    /// 481 if it is not about this REFER, 400 for a body without a status line) and the event.
    pub fn handle_notify(&mut self, notify: &Request) -> (u16, Option<ReferEvent>) {
        let event = notify.headers.get(&HeaderName::Event).unwrap_or_default();
        let mut parts = event.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|e| e.eq_ignore_ascii_case("refer"))
        {
            return (489, None);
        }
        let id = parts
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("id"))
            .and_then(|(_, v)| v.trim().parse::<u32>().ok());
        if id.is_some_and(|id| id != self.event_id) || self.done {
            return (481, None);
        }
        let Some(status) = parse_sipfrag(&notify.body) else {
            return (400, None);
        };
        let terminated = notify
            .headers
            .get(&HeaderName::SubscriptionState)
            .is_some_and(|s| {
                s.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("terminated")
            });
        let ev = if status < 200 && !terminated {
            ReferEvent::Progress(status)
        } else {
            self.finish();
            // A subscription terminated while the call was still trying counts as failed:
            // the outcome is unknown, the caller must not be left waiting.
            if (200..300).contains(&status) {
                ReferEvent::Succeeded(status)
            } else {
                ReferEvent::Failed(status)
            }
        };
        (200, Some(ev))
    }

    fn finish(&mut self) {
        self.done = true;
        self.deadline = None;
    }

    /// When to call [`ReferClient::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// [`ReferEvent::TimedOut`] once the deadline passed without an outcome.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ReferEvent> {
        match self.deadline {
            Some(d) if d <= now => {
                self.finish();
                Some(ReferEvent::TimedOut)
            }
            _ => None,
        }
    }
}

/// The transferee's implicit subscription for one REFER it accepted: builds the NOTIFYs.
#[derive(Debug, Clone)]
pub struct ReferNotifier {
    event_id: u32,
    subscribed: bool,
    expires_at: Instant,
    terminated: bool,
}

impl ReferNotifier {
    /// For an accepted `refer` (answer it with [`accept_refer`]); the subscription lasts
    /// `lifetime` (RFC 3515 leaves it to the notifier; 60 s is common).
    pub fn new(now: Instant, refer: &Request, lifetime: Duration) -> Self {
        ReferNotifier {
            event_id: refer.headers.cseq().map(|c| c.seq).unwrap_or(0),
            subscribed: refer_sub_requested(refer),
            expires_at: now + lifetime,
            terminated: false,
        }
    }

    /// Whether NOTIFYs are sent at all (`Refer-Sub: false` turns them off).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// Whether the final NOTIFY was built.
    pub fn is_terminated(&self) -> bool {
        self.terminated || !self.subscribed
    }

    /// The NOTIFY reporting `status` of the new call (100 at once after the 202, then 18x,
    /// then the final status which terminates the subscription); `Ok(None)` when no NOTIFY is
    /// due (no subscription, or already terminated).
    pub fn notify(
        &mut self,
        now: Instant,
        dialog: &mut Dialog,
        branch: &str,
        status: u16,
        reason: &str,
    ) -> Result<Option<Request>, DialogError> {
        if self.is_terminated() {
            return Ok(None);
        }
        let final_ = status >= 200 || now >= self.expires_at;
        let mut req = dialog.new_request(Method::Notify, branch)?;
        req.headers
            .push(HeaderName::Event, format!("refer;id={}", self.event_id));
        let state = if final_ {
            self.terminated = true;
            if status >= 200 {
                "terminated;reason=noresource".to_owned()
            } else {
                "terminated;reason=timeout".to_owned()
            }
        } else {
            let left = self.expires_at.saturating_duration_since(now).as_secs();
            format!("active;expires={left}")
        };
        req.headers.push(HeaderName::SubscriptionState, state);
        req.headers
            .push(HeaderName::ContentType, "message/sipfrag;version=2.0");
        req.body = sipfrag(status, reason);
        Ok(Some(req))
    }

    /// When the subscription lapses (send a final NOTIFY then, with the last known status).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_terminated()).then_some(self.expires_at)
    }
}

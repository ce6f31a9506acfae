//! What a UAS refuses in a well-formed request (RFC 3261 §8.2, §16.3 step 2), and the response
//! that says why.
//!
//! The parser ([`super::parse`]) already refuses what is syntactically wrong (400, 505 for a
//! version other than SIP/2.0, 513 for a message over the size limit). This module checks a
//! parsed request against what the element supports, in the order RFC 3261 gives:
//!
//! | check | status | extra header |
//! |---|---|---|
//! | method not implemented (§8.2.1) | 501 | `Allow` |
//! | Request-URI scheme not sip/sips/tel (§8.2.2.1) | 416 | |
//! | `Max-Forwards: 0` on anything but OPTIONS (§16.3 step 2; the B2BUA would forward it) | 483 | |
//! | merged request (§8.2.2.2: same From tag, Call-ID and CSeq as a live transaction, no To tag) | 482 | |
//! | `Require` lists an option tag not supported (§8.2.2.3; never for ACK/CANCEL) | 420 | `Unsupported` |
//! | body media type not accepted (§8.2.3) | 415 | `Accept` |
//! | `Content-Encoding` not understood (§8.2.3) | 415 | `Accept-Encoding` |
//!
//! Every response carries a `Warning: 399 spanbridge "..."` header naming the problem, so the
//! peer's operator sees what was wrong, not only a status code.
//!
//! The [`super::transaction::TransactionLayer`] runs these checks on every new server
//! transaction (its policy defaults to [`UasPolicy::gateway`]), answers refused requests itself
//! and counts them, so no UA built on it ever sees a request it cannot handle. The 482 check
//! needs the set of live transactions and lives in the layer.
//!
//! ```
//! use gateway::sip::message::Message;
//! use gateway::sip::parse::parse_message;
//! use gateway::sip::validate::{UasPolicy, validate_request};
//!
//! let text = "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!     Max-Forwards: 70\r\nTo: <sip:bob@192.0.2.2>\r\n\
//!     From: <sip:alice@192.0.2.1>;tag=a\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
//!     Require: foo, 100rel\r\nContent-Length: 0\r\n\r\n";
//! let Ok(Message::Request(req)) = parse_message(text.as_bytes()) else { unreachable!() };
//! let policy = UasPolicy::gateway();
//! let rejection = validate_request(&req, &policy).unwrap_err();
//! let resp = rejection.response(&req, &policy);
//! assert_eq!(resp.status, 420);
//! assert_eq!(resp.headers.get(&gateway::sip::message::HeaderName::Unsupported), Some("foo"));
//! ```

use thiserror::Error;

use super::message::{HeaderName, Method, Request, Response};

/// What this element supports, for [`validate_request`].
#[derive(Debug, Clone)]
pub struct UasPolicy {
    /// Methods this UAS implements (others get 501 with an Allow header).
    pub methods: Vec<Method>,
    /// Option tags this UAS supports (a Require outside this set gets 420).
    pub option_tags: Vec<String>,
    /// Body media types this UAS accepts (others get 415).
    pub content_types: Vec<String>,
    /// Content codings this UAS decodes besides `identity` (others get 415).
    pub content_encodings: Vec<String>,
    /// Refuse `Max-Forwards: 0` with 483 (OPTIONS excepted). On for an element that forwards
    /// (the B2BUA); an endpoint that never forwards may turn it off.
    pub check_max_forwards: bool,
}

impl Default for UasPolicy {
    /// The minimal policy of a plain UAS: INVITE, ACK, BYE, CANCEL, OPTIONS; no extensions;
    /// SDP bodies.
    fn default() -> Self {
        UasPolicy {
            methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
            ],
            option_tags: Vec::new(),
            content_types: vec!["application/sdp".to_owned()],
            content_encodings: Vec::new(),
            check_max_forwards: true,
        }
    }
}

impl UasPolicy {
    /// What the gateway's SIP stack implements, the transaction layer's default: the methods
    /// of calls, registration, PRACK, UPDATE, INFO and REFER/NOTIFY; the option tags `100rel`
    /// (RFC 3262), `timer` (RFC 4028), `replaces` (RFC 3891), `norefersub` (RFC 4488) and
    /// `outbound` (RFC 5626); SDP, DTMF (INFO) and sipfrag (NOTIFY) bodies.
    pub fn gateway() -> Self {
        UasPolicy {
            methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Register,
                Method::Prack,
                Method::Update,
                Method::Info,
                Method::Refer,
                Method::Notify,
            ],
            option_tags: ["100rel", "timer", "replaces", "norefersub", "outbound"]
                .map(str::to_owned)
                .to_vec(),
            content_types: [
                "application/sdp",
                "application/dtmf-relay",
                "application/dtmf",
                "message/sipfrag",
            ]
            .map(str::to_owned)
            .to_vec(),
            content_encodings: Vec::new(),
            check_max_forwards: true,
        }
    }

    /// The `Allow` header value (implemented methods, ACK and CANCEL always included).
    pub fn allow(&self) -> String {
        let mut names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        for always in ["ACK", "CANCEL"] {
            if !names.contains(&always) {
                names.push(always);
            }
        }
        names.join(", ")
    }

    /// The `Supported` header value.
    pub fn supported(&self) -> String {
        self.option_tags.join(", ")
    }
}

/// A well-formed request this UAS must refuse, and the response that says why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rejection {
    /// 416: the Request-URI scheme is not sip/sips/tel.
    #[error("Request-URI scheme {0:?} is not supported")]
    UnsupportedUriScheme(String),
    /// 501: the method is not implemented here.
    #[error("method {0} is not implemented")]
    NotImplemented(String),
    /// 420: Require lists option tags not supported here.
    #[error("required extensions not supported: {0:?}")]
    BadExtension(Vec<String>),
    /// 415: the body's media type is not accepted.
    #[error("media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    /// 415: the body's Content-Encoding is not understood.
    #[error("content coding {0:?} is not supported")]
    UnsupportedEncoding(String),
    /// 483: Max-Forwards reached 0; forwarding would loop forever.
    #[error("Max-Forwards is 0")]
    TooManyHops,
    /// 482: a merged request (§8.2.2.2), e.g. a forked request reaching us twice.
    #[error("request merged with a live transaction (same From tag, Call-ID and CSeq)")]
    LoopDetected,
}

impl Rejection {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::UnsupportedUriScheme(_) => 416,
            Rejection::NotImplemented(_) => 501,
            Rejection::BadExtension(_) => 420,
            Rejection::UnsupportedMediaType(_) | Rejection::UnsupportedEncoding(_) => 415,
            Rejection::TooManyHops => 483,
            Rejection::LoopDetected => 482,
        }
    }

    /// The full response to `req` (with Allow / Unsupported / Accept / Accept-Encoding as
    /// RFC 3261 requires, and a Warning naming the problem). The caller adds the To tag.
    pub fn response(&self, req: &Request, policy: &UasPolicy) -> Response {
        let mut resp = Response::for_request(req, self.status());
        match self {
            Rejection::NotImplemented(_) => {
                resp.headers.push(HeaderName::Allow, policy.allow());
            }
            Rejection::BadExtension(tags) => {
                resp.headers.push(HeaderName::Unsupported, tags.join(", "))
            }
            Rejection::UnsupportedMediaType(_) => {
                resp.headers
                    .push(HeaderName::Accept, policy.content_types.join(", "));
            }
            Rejection::UnsupportedEncoding(_) => {
                let mut enc = vec!["identity".to_owned()];
                enc.extend(policy.content_encodings.iter().cloned());
                resp.headers
                    .push(HeaderName::AcceptEncoding, enc.join(", "));
            }
            Rejection::UnsupportedUriScheme(_)
            | Rejection::TooManyHops
            | Rejection::LoopDetected => {}
        }
        resp.headers
            .push(HeaderName::Warning, warning(&self.to_string()));
        resp
    }
}

/// A `Warning` header value (RFC 3261 §20.43, code 399 "miscellaneous") carrying `text`, with
/// quotes, backslashes and control characters made safe for a quoted-string.
pub fn warning(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 20);
    out.push_str("399 spanbridge \"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// RFC 3261 §8.2.1–§8.2.3 (and §16.3 step 2) checks of a parsed request against what this UAS
/// supports, in the order the RFC gives: method (501), Request-URI scheme (416), Max-Forwards
/// (483), Require (420), body type and coding (415). ACK and CANCEL are never refused for
/// Require (§8.2.2.3). The merged-request check (482) needs the live transactions and is done
/// by the transaction layer.
pub fn validate_request(req: &Request, policy: &UasPolicy) -> Result<(), Rejection> {
    let ack_or_cancel = matches!(req.method, Method::Ack | Method::Cancel);
    if !ack_or_cancel && !policy.methods.contains(&req.method) {
        return Err(Rejection::NotImplemented(req.method.to_string()));
    }
    let scheme = req.uri.scheme();
    if !["sip", "sips", "tel"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        return Err(Rejection::UnsupportedUriScheme(scheme.to_owned()));
    }
    if policy.check_max_forwards
        && req.method != Method::Options
        && !ack_or_cancel
        && matches!(req.headers.max_forwards(), Ok(Some(0)))
    {
        return Err(Rejection::TooManyHops);
    }
    if !ack_or_cancel {
        let required = req.headers.require().unwrap_or_default();
        let missing: Vec<String> = required
            .into_iter()
            .filter(|t| !policy.option_tags.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !missing.is_empty() {
            return Err(Rejection::BadExtension(missing));
        }
    }
    if !req.body.is_empty() {
        if let Ok(Some(ct)) = req.headers.content_type()
            && !policy
                .content_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&ct))
        {
            return Err(Rejection::UnsupportedMediaType(ct));
        }
        for enc in req.headers.get_all(&HeaderName::ContentEncoding) {
            for coding in enc.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                let known = coding.eq_ignore_ascii_case("identity")
                    || policy
                        .content_encodings
                        .iter()
                        .any(|e| e.eq_ignore_ascii_case(coding));
                if !known {
                    return Err(Rejection::UnsupportedEncoding(coding.to_owned()));
                }
            }
        }
    }
    Ok(())
}

/// The Max-Forwards a B2BUA puts on the request it sends for `incoming` (RFC 3261 §16.6 step
/// 3, which a B2BUA should honour so loops through it end): one less than received, 70 when
/// absent; `None` when it is already 0 (answer 483 instead of forwarding).
pub fn forwarded_max_forwards(incoming: &Request) -> Option<u8> {
    match incoming.headers.max_forwards() {
        Ok(Some(0)) => None,
        Ok(Some(n)) => Some(n - 1),
        _ => Some(70),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::parse_message;

    fn req(extra: &str, body: &str) -> Request {
        let text = format!(
            "INVITE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             To: <sip:bob@192.0.2.2>\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse_message(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_forwards_zero_is_483_except_options() {
        let p = UasPolicy::gateway();
        let r = req("Max-Forwards: 0\r\n", "");
        assert_eq!(validate_request(&r, &p), Err(Rejection::TooManyHops));
        assert_eq!(forwarded_max_forwards(&r), None);
        assert_eq!(
            forwarded_max_forwards(&req("Max-Forwards: 5\r\n", "")),
            Some(4)
        );
        assert_eq!(forwarded_max_forwards(&req("", "")), Some(70));
        let mut o = r.clone();
        o.method = Method::Options;
        o.headers.set(HeaderName::CSeq, "1 OPTIONS");
        assert_eq!(validate_request(&o, &p), Ok(()));
    }

    #[test]
    fn unknown_content_encoding_is_415_with_accept_encoding() {
        let p = UasPolicy::gateway();
        let r = req(
            "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
            "v=0\r\n",
        );
        let rej = validate_request(&r, &p).unwrap_err();
        assert_eq!(rej, Rejection::UnsupportedEncoding("gzip".into()));
        let resp = rej.response(&r, &p);
        assert_eq!(resp.status, 415);
        assert_eq!(
            resp.headers.get(&HeaderName::AcceptEncoding),
            Some("identity")
        );
    }

    #[test]
    fn warning_is_a_safe_quoted_string() {
        assert_eq!(
            warning("a \"b\" \\ c\r\n"),
            "399 spanbridge \"a \\\"b\\\" \\\\ c  \""
        );
    }

    #[test]
    fn gateway_policy_allows_the_stacks_methods() {
        let p = UasPolicy::gateway();
        assert!(p.allow().contains("PRACK"));
        assert!(p.allow().contains("UPDATE"));
        let mut r = req("Require: 100rel, timer\r\n", "");
        assert_eq!(validate_request(&r, &p), Ok(()));
        r.method = Method::Extension("FOO".into());
        assert_eq!(
            validate_request(&r, &p),
            Err(Rejection::NotImplemented("FOO".into()))
        );
    }
}

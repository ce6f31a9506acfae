//! SIP message model: request/response start lines, raw headers with typed accessors, and body.
//!
//! Headers are stored as received (name normalised to its full form, folded lines joined with a
//! single space) so a proxy-like element forwards what it does not understand unchanged. Typed
//! accessors (`via`, `from`, `cseq`, ...) parse on demand; the parser in [`super::parse`] has
//! already checked the headers a transaction or dialog depends on, so for a parsed message they
//! only fail on headers nobody validated (e.g. `Authorization`).

use std::fmt;

use super::parse::{self, HeaderError};

/// A SIP request method. Unknown methods are kept as [`Method::Extension`] (RFC 3261 §7.1 allows
/// any token); a UAS answers them 501 via [`super::parse::validate_request`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// OPTIONS (RFC 3261).
    Options,
    /// REGISTER (RFC 3261).
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// PUBLISH (RFC 3903).
    Publish,
    /// INFO (RFC 6086).
    Info,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// UPDATE (RFC 3311).
    Update,
    /// Any other token, case preserved (methods are case-sensitive).
    Extension(String),
}

impl Method {
    /// Interprets a method token; `None` if `token` is empty or contains a non-token character.
    pub fn from_token(token: &str) -> Option<Method> {
        if token.is_empty() || !token.bytes().all(parse::is_token_char) {
            return None;
        }
        Some(match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            other => Method::Extension(other.to_owned()),
        })
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Extension(s) => s,
        }
    }

    /// The equivalent `rsip` method, for code that talks to `rsip`-typed APIs; `None` for
    /// extension methods, which `rsip` 0.4 cannot represent.
    pub fn to_rsip(&self) -> Option<rsip::Method> {
        Some(match self {
            Method::Invite => rsip::Method::Invite,
            Method::Ack => rsip::Method::Ack,
            Method::Bye => rsip::Method::Bye,
            Method::Cancel => rsip::Method::Cancel,
            Method::Options => rsip::Method::Options,
            Method::Register => rsip::Method::Register,
            Method::Prack => rsip::Method::PRack,
            Method::Subscribe => rsip::Method::Subscribe,
            Method::Notify => rsip::Method::Notify,
            Method::Publish => rsip::Method::Publish,
            Method::Info => rsip::Method::Info,
            Method::Refer => rsip::Method::Refer,
            Method::Message => rsip::Method::Message,
            Method::Update => rsip::Method::Update,
            Method::Extension(_) => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! header_names {
    ($( $variant:ident => $full:literal $(, $compact:literal)? ; )*) => {
        /// A header field name. Known names are matched case-insensitively, compact forms
        /// (RFC 3261 §7.3.3) map to their full name; others keep their spelling.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $full, "`")]
                $variant,
            )*
            /// An extension header, spelled as received.
            Other(String),
        }

        impl HeaderName {
            /// Interprets a header name as found on the wire (any case, compact or full form).
            pub fn from_wire(name: &str) -> HeaderName {
                $(
                    if name.eq_ignore_ascii_case($full) $(|| name.eq_ignore_ascii_case($compact))? {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other(name.to_owned())
            }

            /// The full, canonical spelling used when serializing.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $full, )*
                    HeaderName::Other(s) => s,
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", "m";
    Route => "Route";
    RecordRoute => "Record-Route";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    Subject => "Subject", "s";
    Date => "Date";
    Expires => "Expires";
    UserAgent => "User-Agent";
    Server => "Server";
    RSeq => "RSeq";
    RAck => "RAck";
    SessionExpires => "Session-Expires", "x";
    ReferTo => "Refer-To", "r";
    Event => "Event", "o";
    AllowEvents => "Allow-Events", "u";
    ReferredBy => "Referred-By", "b";
    ReferSub => "Refer-Sub";
    Replaces => "Replaces";
    SubscriptionState => "Subscription-State";
    MinSe => "Min-SE";
    MinExpires => "Min-Expires";
    RetryAfter => "Retry-After";
    Warning => "Warning";
    AcceptEncoding => "Accept-Encoding";
    Path => "Path";
    FlowTimer => "Flow-Timer";
    InfoPackage => "Info-Package";
    RecvInfo => "Recv-Info";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field line (after unfolding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: HeaderName,
    /// The field value, trimmed, with folded line breaks replaced by one space.
    pub value: String,
}

/// The header fields of a message, in order of arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// An empty header list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    /// Appends a header field.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Replaces every field named `name` by one field with `value` (appended if absent).
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        let value = value.into();
        if let Some(pos) = self.0.iter().position(|h| h.name == name) {
            self.0.retain({
                let mut seen = 0usize;
                let name = name.clone();
                move |h| {
                    if h.name == name {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                }
            });
            if let Some(h) = self.0.get_mut(pos) {
                h.value = value;
            }
        } else {
            self.push(name, value);
        }
    }

    /// Removes every field named `name`.
    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    /// The first field value named `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every field value named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// How many fields are named `name`.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every Via value, topmost first (comma-separated values split).
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(&HeaderName::Via) {
            for item in parse::split_list(v).map_err(|r| HeaderError::new("Via", r))? {
                out.push(parse::parse_via(item).map_err(|r| HeaderError::new("Via", r))?);
            }
        }
        Ok(out)
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let v = self
            .get(&HeaderName::Via)
            .ok_or(HeaderError::new("Via", "missing"))?;
        let first = parse::split_list(v)
            .map_err(|r| HeaderError::new("Via", r))?
            .into_iter()
            .next()
            .ok_or(HeaderError::new("Via", "empty"))?;
        parse::parse_via(first).map_err(|r| HeaderError::new("Via", r))
    }

    fn single_name_addr(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<NameAddr, HeaderError> {
        let v = self.get(name).ok_or(HeaderError::new(label, "missing"))?;
        parse::parse_name_addr(v, true).map_err(|r| HeaderError::new(label, r))
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        self.single_name_addr(&HeaderName::From, "From")
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        self.single_name_addr(&HeaderName::To, "To")
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Result<&str, HeaderError> {
        self.get(&HeaderName::CallId)
            .ok_or(HeaderError::new("Call-ID", "missing"))
    }

    /// The CSeq header.
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        let v = self
            .get(&HeaderName::CSeq)
            .ok_or(HeaderError::new("CSeq", "missing"))?;
        parse::parse_cseq(v).map_err(|r| HeaderError::new("CSeq", r))
    }

    /// The Max-Forwards value, if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        self.get(&HeaderName::MaxForwards)
            .map(|v| parse::parse_max_forwards(v).map_err(|r| HeaderError::new("Max-Forwards", r)))
            .transpose()
    }

    /// The Content-Length value, if present.
    pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
        self.get(&HeaderName::ContentLength)
            .map(|v| {
                parse::parse_content_length(v).map_err(|r| HeaderError::new("Content-Length", r))
            })
            .transpose()
    }

    /// The Content-Type media type (`type/subtype`, lower-cased, parameters dropped), if present.
    pub fn content_type(&self) -> Result<Option<String>, HeaderError> {
        self.get(&HeaderName::ContentType)
            .map(|v| parse::parse_media_type(v).map_err(|r| HeaderError::new("Content-Type", r)))
            .transpose()
    }

    /// Contact values; [`Contacts::Wildcard`] for `Contact: *`.
    pub fn contacts(&self) -> Result<Contacts, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(&HeaderName::Contact) {
            if v.trim() == "*" {
                return Ok(Contacts::Wildcard);
            }
            for item in parse::split_list(v).map_err(|r| HeaderError::new("Contact", r))? {
                out.push(
                    parse::parse_name_addr(item, true)
                        .map_err(|r| HeaderError::new("Contact", r))?,
                );
            }
        }
        Ok(Contacts::List(out))
    }

    fn route_list(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<Vec<NameAddr>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            for item in parse::split_list(v).map_err(|r| HeaderError::new(label, r))? {
                out.push(
                    parse::parse_name_addr(item, false).map_err(|r| HeaderError::new(label, r))?,
                );
            }
        }
        Ok(out)
    }

    /// Route values in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.route_list(&HeaderName::Route, "Route")
    }

    /// Record-Route values in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.route_list(&HeaderName::RecordRoute, "Record-Route")
    }

    fn option_tags(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<Vec<String>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            out.extend(parse::parse_token_list(v).map_err(|r| HeaderError::new(label, r))?);
        }
        Ok(out)
    }

    /// Option tags listed in Require.
    pub fn require(&self) -> Result<Vec<String>, HeaderError> {
        self.option_tags(&HeaderName::Require, "Require")
    }

    /// Option tags listed in Supported.
    pub fn supported(&self) -> Result<Vec<String>, HeaderError> {
        self.option_tags(&HeaderName::Supported, "Supported")
    }

    /// The Authorization credentials, if present.
    pub fn authorization(&self) -> Result<Option<AuthParams>, HeaderError> {
        self.get(&HeaderName::Authorization)
            .map(|v| parse::parse_auth(v).map_err(|r| HeaderError::new("Authorization", r)))
            .transpose()
    }

    /// The WWW-Authenticate challenge, if present.
    pub fn www_authenticate(&self) -> Result<Option<AuthParams>, HeaderError> {
        self.get(&HeaderName::WwwAuthenticate)
            .map(|v| parse::parse_auth(v).map_err(|r| HeaderError::new("WWW-Authenticate", r)))
            .transpose()
    }
}

/// Header parameters (`;name=value`), names compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// The value of `name`: `Some(Some(v))` with a value, `Some(None)` for a bare flag.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Sets or replaces `name`.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        if let Some(p) = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            p.1 = value;
        } else {
            self.0.push((name.to_owned(), value));
        }
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// A URI as found in a Request-URI or a name-addr. SIP/SIPS URIs are checked for structure when
/// parsed; other schemes are kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    raw: String,
}

/// The parts of a `sip:`/`sips:` URI, borrowed from its [`Uri`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUriParts<'a> {
    /// `true` for `sips:`.
    pub secure: bool,
    /// The user part (still %-escaped), if any.
    pub user: Option<&'a str>,
    /// The host: a name, an IPv4 address or a bracketed IPv6 reference.
    pub host: &'a str,
    /// The explicit port, if any.
    pub port: Option<u16>,
    /// The URI parameters after the host, including the leading `;` (may be empty).
    pub params: &'a str,
    /// The header part after `?`, if any.
    pub headers: Option<&'a str>,
}

impl Uri {
    /// Parses and checks a URI; SIP/SIPS URIs must have a valid host and port.
    pub fn parse(s: &str) -> Result<Uri, &'static str> {
        parse::check_uri(s)?;
        Ok(Uri { raw: s.to_owned() })
    }

    /// The URI text.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The scheme, lower-cased comparison is up to the caller (`sip`, `sips`, `tel`, ...).
    pub fn scheme(&self) -> &str {
        self.raw.split(':').next().unwrap_or("")
    }

    /// Whether the scheme is `sip` or `sips`.
    pub fn is_sip(&self) -> bool {
        let s = self.scheme();
        s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips")
    }

    /// The SIP URI parts, `None` for other schemes.
    pub fn sip_parts(&self) -> Option<SipUriParts<'_>> {
        parse::split_sip_uri(&self.raw).ok().flatten()
    }

    /// The value of a URI parameter (`;lr`, `;transport=tcp`), SIP URIs only.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        let parts = self.sip_parts()?;
        parts
            .params
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            })
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A Via header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-cased (`UDP`, `TCP`, `TLS`, `WS`, ...).
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port, if given.
    pub port: Option<u16>,
    /// Via parameters (branch, received, rport, maddr, ttl, extensions).
    pub params: Params,
}

impl Via {
    /// The branch parameter (transaction id).
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// The received parameter.
    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }

    /// The rport parameter: `None` if absent, `Some(None)` if requested (no value),
    /// `Some(Some(port))` if filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Whether the branch starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// A name-addr or addr-spec with header parameters (From, To, Contact, Route, Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted (quoted-pairs kept escaped), if any.
    pub display_name: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters after the address.
    pub params: Params,
}

impl NameAddr {
    /// The tag parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// The Contact header set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (REGISTER removing all bindings).
    Wildcard,
    /// Listed contacts (possibly none).
    List(Vec<NameAddr>),
}

/// A CSeq value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (< 2^31, RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

/// An Authorization/WWW-Authenticate value: a scheme and its `name=value` parameters (quoted
/// values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    /// The scheme (`Digest`, or anything a peer sends).
    pub scheme: String,
    /// Parameters in order.
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    /// A parameter by name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Header fields.
    pub headers: Headers,
    /// Body (exactly Content-Length bytes).
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Header fields.
    pub headers: Headers,
    /// Body (exactly Content-Length bytes).
    pub body: Vec<u8>,
}

/// A SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// Serializes the message (see [`Request::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

fn write_headers_and_body(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for h in headers.iter() {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Self {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Serializes with canonical header names and a Content-Length computed from the body
    /// (any Content-Length field in `headers` is replaced).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.as_str().as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }
}

/// The RFC 3261 §21 reason phrase for a status code (a class name for unlisted codes).
pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

impl Response {
    /// A response to `req` per RFC 3261 §8.2.6: Via, From, To, Call-ID and CSeq copied, the
    /// default reason phrase for `status`, no body.
    pub fn for_request(req: &Request, status: u16) -> Self {
        Self::from_request_headers(&req.headers, status)
    }

    /// As [`Response::for_request`], from just the header fields of a request (e.g. those a
    /// [`super::parse::ParseError`] salvaged from a malformed request).
    pub fn from_request_headers(headers: &Headers, status: u16) -> Self {
        let mut out = Headers::new();
        for h in headers.iter() {
            let copy = match h.name {
                HeaderName::Via => true,
                // Single-valued: a malformed request may repeat them; the first one is copied.
                HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq => {
                    out.get(&h.name).is_none()
                }
                _ => false,
            };
            if copy {
                out.push(h.name.clone(), h.value.clone());
            }
        }
        Response {
            status,
            reason: default_reason(status).to_owned(),
            headers: out,
            body: Vec::new(),
        }
    }

    /// Adds `;tag=tag` to the To header if it has no tag yet.
    pub fn ensure_to_tag(&mut self, tag: &str) {
        let has_tag = self.headers.to().map(|t| t.tag().is_some()).unwrap_or(true);
        if !has_tag && let Some(v) = self.headers.get(&HeaderName::To) {
            let v = format!("{v};tag={tag}");
            self.headers.set(HeaderName::To, v);
        }
    }

    /// Serializes (see [`Request::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }
}

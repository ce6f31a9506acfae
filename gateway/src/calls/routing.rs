//! Routing of new calls: number patterns with prefix strip/prepend, source matches, and a
//! failover list of destinations per route; plus the CIDR networks of inbound ACLs.
//!
//! A route matches on the called number (the SIP Request-URI user, or TDM dialled digits) and
//! optionally on where the call came from (a trunk, an ACL, an authenticated user). Patterns
//! are exact strings, prefixes (`9*`) or Asterisk-style (`_9NXX.`: `X` any digit, `Z` 1–9,
//! `N` 2–9, `[1-5]` a set, `.` one or more of anything, `!` zero or more), which every telecom
//! engineer reads at a glance. The first matching route wins.

use std::fmt;
use std::net::IpAddr;

use super::leg::ServiceKind;

/// An IPv4 or IPv6 network (`192.0.2.0/24`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    /// A network of exactly one address.
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V4(a)) => {
                // An IPv4-mapped IPv6 network matches the IPv4 address.
                IpNet {
                    addr: IpAddr::V6(n),
                    prefix: self.prefix,
                }
                .contains(IpAddr::V6(a.to_ipv6_mapped()))
            }
            (IpAddr::V4(_), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A called-number pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberPattern {
    /// Matches everything (`*` or empty).
    Any,
    /// Exactly this user/number.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// Asterisk-style pattern (without the leading `_`).
    Dialplan(Vec<PatternItem>),
}

/// One element of a dial-plan pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternItem {
    /// A literal character.
    Char(char),
    /// One of a set (from `X`, `Z`, `N` or `[...]`).
    Set(Vec<char>),
    /// `.`: one or more of anything (must be last).
    OneOrMore,
    /// `!`: zero or more of anything (must be last).
    ZeroOrMore,
}

impl NumberPattern {
    /// Parses `*`, `9*` (prefix), `_9XX.` (dial-plan) or an exact user.
    pub fn parse(s: &str) -> Result<NumberPattern, String> {
        let s = s.trim();
        if s.is_empty() || s == "*" {
            return Ok(NumberPattern::Any);
        }
        if let Some(p) = s.strip_prefix('_') {
            return parse_dialplan(p).map(NumberPattern::Dialplan);
        }
        if let Some(p) = s.strip_suffix('*') {
            if p.contains('*') {
                return Err(format!("{s:?}: only one trailing * is allowed in a prefix"));
            }
            return Ok(NumberPattern::Prefix(p.to_owned()));
        }
        Ok(NumberPattern::Exact(s.to_owned()))
    }

    /// Whether `number` matches.
    pub fn matches(&self, number: &str) -> bool {
        match self {
            NumberPattern::Any => true,
            NumberPattern::Exact(e) => e == number,
            NumberPattern::Prefix(p) => number.starts_with(p.as_str()),
            NumberPattern::Dialplan(items) => dialplan_match(items, number),
        }
    }
}

fn digit_range(a: char, b: char) -> Vec<char> {
    (a..=b).collect()
}

fn parse_dialplan(p: &str) -> Result<Vec<PatternItem>, String> {
    let mut items = Vec::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        let item = match c.to_ascii_uppercase() {
            'X' => PatternItem::Set(digit_range('0', '9')),
            'Z' => PatternItem::Set(digit_range('1', '9')),
            'N' => PatternItem::Set(digit_range('2', '9')),
            '.' => PatternItem::OneOrMore,
            '!' => PatternItem::ZeroOrMore,
            '[' => {
                let mut set = Vec::new();
                let mut closed = false;
                let mut prev: Option<char> = None;
                while let Some(d) = chars.next() {
                    if d == ']' {
                        closed = true;
                        break;
                    }
                    if d == '-'
                        && let (Some(lo), Some(&hi)) = (prev, chars.peek())
                        && hi != ']'
                    {
                        chars.next();
                        set.extend(digit_range(lo, hi));
                        prev = None;
                        continue;
                    }
                    set.push(d);
                    prev = Some(d);
                }
                if !closed || set.is_empty() {
                    return Err(format!("_{p}: unclosed or empty [...] set"));
                }
                PatternItem::Set(set)
            }
            _ => PatternItem::Char(c),
        };
        let wildcard = matches!(item, PatternItem::OneOrMore | PatternItem::ZeroOrMore);
        items.push(item);
        if wildcard && chars.peek().is_some() {
            return Err(format!("_{p}: '.' and '!' must end the pattern"));
        }
    }
    Ok(items)
}

fn dialplan_match(items: &[PatternItem], number: &str) -> bool {
    let mut chars = number.chars();
    for item in items {
        match item {
            PatternItem::OneOrMore => return chars.next().is_some(),
            PatternItem::ZeroOrMore => return true,
            PatternItem::Char(c) => {
                if chars.next() != Some(*c) {
                    return false;
                }
            }
            PatternItem::Set(set) => match chars.next() {
                Some(d) if set.contains(&d) => {}
                _ => return false,
            },
        }
    }
    chars.next().is_none()
}

/// Where a route sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A configured SIP trunk, by name.
    Trunk(String),
    /// A SIP URI reached directly (`sip:user@host:port`).
    Uri(String),
    /// A TDM span group, by name (a channel is hunted).
    SpanGroup(String),
    /// A built-in service.
    Service(ServiceKind),
    /// Handed to the contact-center control plane (`agent:ID` or `queue:NAME`): the engine
    /// keeps the caller's leg and the control plane decides whom to offer the call to.
    Control(String),
    /// A registered WebRTC endpoint (a browser page, by its name).
    WebRtc(String),
}

impl Destination {
    /// Parses `trunk:NAME`, `uri:sip:...`, `span_group:NAME` or `service:echo|milliwatt`.
    pub fn parse(s: &str) -> Result<Destination, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: expected trunk:NAME, uri:sip:..., span_group:NAME or service:NAME")
        })?;
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(format!("{s:?}: the name after ':' is empty"));
        }
        match kind.trim() {
            "trunk" => Ok(Destination::Trunk(rest.to_owned())),
            "uri" => {
                crate::sip::message::Uri::parse(rest)
                    .map_err(|e| format!("{s:?}: not a SIP URI: {e}"))?;
                Ok(Destination::Uri(rest.to_owned()))
            }
            "span_group" | "tdm" => Ok(Destination::SpanGroup(rest.to_owned())),
            "webrtc" => Ok(Destination::WebRtc(rest.to_owned())),
            "service" => ServiceKind::from_name(rest)
                .map(Destination::Service)
                .ok_or_else(|| format!("{s:?}: unknown service (echo, milliwatt)")),
            "control" => match rest.split_once(':') {
                Some(("agent" | "queue", name)) if !name.trim().is_empty() => {
                    Ok(Destination::Control(rest.to_owned()))
                }
                _ => Err(format!(
                    "{s:?}: expected control:agent:ID or control:queue:NAME"
                )),
            },
            other => Err(format!(
                "{s:?}: unknown destination kind {other:?} (trunk, uri, span_group, service, webrtc, control)"
            )),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Trunk(t) => write!(f, "trunk:{t}"),
            Destination::Uri(u) => write!(f, "uri:{u}"),
            Destination::SpanGroup(g) => write!(f, "span_group:{g}"),
            Destination::Service(s) => write!(f, "service:{}", s.as_str()),
            Destination::Control(c) => write!(f, "control:{c}"),
            Destination::WebRtc(e) => write!(f, "webrtc:{e}"),
        }
    }
}

/// Where a call must come from for a route to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    /// Anywhere.
    Any,
    /// In on this trunk.
    Trunk(String),
    /// From an address in this ACL.
    Acl(String),
    /// Authenticated as this user.
    User(String),
}

impl SourceMatch {
    /// Parses `any`, `trunk:NAME`, `acl:NAME` or `user:NAME`.
    pub fn parse(s: &str) -> Result<SourceMatch, String> {
        let s = s.trim();
        if s.is_empty() || s == "any" || s == "*" {
            return Ok(SourceMatch::Any);
        }
        match s.split_once(':') {
            Some(("trunk", n)) if !n.is_empty() => Ok(SourceMatch::Trunk(n.to_owned())),
            Some(("acl", n)) if !n.is_empty() => Ok(SourceMatch::Acl(n.to_owned())),
            Some(("user", n)) if !n.is_empty() => Ok(SourceMatch::User(n.to_owned())),
            _ => Err(format!(
                "{s:?}: expected any, trunk:NAME, acl:NAME or user:NAME"
            )),
        }
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its name (logs, CDRs).
    pub name: String,
    /// Called-number pattern.
    pub pattern: NumberPattern,
    /// Source condition.
    pub source: SourceMatch,
    /// Leading characters to remove from the number.
    pub strip: usize,
    /// What to put in front afterwards.
    pub prepend: String,
    /// Destinations, tried in order (failover).
    pub destinations: Vec<Destination>,
}

impl Route {
    /// The number to dial after strip and prepend.
    pub fn translate(&self, number: &str) -> String {
        let rest: String = number.chars().skip(self.strip).collect();
        format!("{}{rest}", self.prepend)
    }
}

/// What is known about the call being routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// The called number/user.
    pub number: &'a str,
    /// The trunk it came in on.
    pub trunk: Option<&'a str>,
    /// The source IP, if a network leg.
    pub source_ip: Option<IpAddr>,
    /// The authenticated user.
    pub user: Option<&'a str>,
}

/// The routes and the ACLs they refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Routes in order.
    pub routes: Vec<Route>,
    /// Named ACLs (for `acl:NAME` sources).
    pub acls: Vec<(String, Vec<IpNet>)>,
}

impl RouteTable {
    /// The first route matching `q`.
    pub fn lookup(&self, q: &RouteQuery<'_>) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.pattern.matches(q.number) && self.source_ok(&r.source, q))
    }

    fn source_ok(&self, s: &SourceMatch, q: &RouteQuery<'_>) -> bool {
        match s {
            SourceMatch::Any => true,
            SourceMatch::Trunk(t) => q.trunk == Some(t.as_str()),
            SourceMatch::User(u) => q.user == Some(u.as_str()),
            SourceMatch::Acl(name) => q.source_ip.is_some_and(|ip| {
                self.acls
                    .iter()
                    .filter(|(n, _)| n == name)
                    .any(|(_, nets)| nets.iter().any(|n| n.contains(ip)))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_and_bad_ones_are_explained() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            IpNet::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("127.0.0.1")
                .unwrap()
                .contains("::ffff:127.0.0.1".parse().unwrap())
        );
        assert!(IpNet::parse("10.0.0.0/33").unwrap_err().contains("0..=32"));
        assert!(IpNet::parse("bogus").is_err());
    }

    #[test]
    fn patterns() {
        let p = |s| NumberPattern::parse(s).unwrap();
        assert!(p("9*").matches("9123") && !p("9*").matches("8123"));
        assert!(p("echo").matches("echo") && !p("echo").matches("echo2"));
        assert!(p("*").matches("anything"));
        let us = p("_1NXXNXXXXXX");
        assert!(us.matches("12125551234") && !us.matches("11125551234"));
        assert!(p("_9.").matches("90") && !p("_9.").matches("9"));
        assert!(p("_9!").matches("9"));
        assert!(p("_[1-3]5").matches("25") && !p("_[1-3]5").matches("45"));
        assert!(NumberPattern::parse("_9.X").is_err());
        assert!(NumberPattern::parse("_[12").is_err());
    }

    #[test]
    fn first_matching_route_with_source_and_translation() {
        let t = RouteTable {
            routes: vec![
                Route {
                    name: "tdm".into(),
                    pattern: NumberPattern::parse("9*").unwrap(),
                    source: SourceMatch::Acl("lan".into()),
                    strip: 1,
                    prepend: "0".into(),
                    destinations: vec![Destination::parse("span_group:e1").unwrap()],
                },
                Route {
                    name: "rest".into(),
                    pattern: NumberPattern::Any,
                    source: SourceMatch::Any,
                    strip: 0,
                    prepend: String::new(),
                    destinations: vec![Destination::parse("trunk:pbx").unwrap()],
                },
            ],
            acls: vec![("lan".into(), vec![IpNet::parse("10.0.0.0/8").unwrap()])],
        };
        let q = |n, ip: &str| RouteQuery {
            number: n,
            trunk: None,
            source_ip: Some(ip.parse().unwrap()),
            user: None,
        };
        let r = t.lookup(&q("9555", "10.1.1.1")).unwrap();
        assert_eq!(r.name, "tdm");
        assert_eq!(r.translate("9555"), "0555");
        assert_eq!(t.lookup(&q("9555", "192.0.2.1")).unwrap().name, "rest");
        assert!(Destination::parse("service:nope").is_err());
        assert!(Destination::parse("trunk").is_err());
        assert_eq!(
            Destination::parse("service:milliwatt").unwrap().to_string(),
            "service:milliwatt"
        );
    }
}

//! The registrar and location service (RFC 3261 §10.3, RFC 5626 outbound), sans-IO.
//!
//! Phones and browser softphones register here; calls to them look their bindings up.
//! [`Registrar::handle_register`] runs the §10.3 steps on a REGISTER that passed the
//! transaction layer's validation and returns the response to send:
//!
//! 1. the Request-URI domain must be one we serve (404 otherwise, when domains are set);
//! 2. digest authentication per user (401 with a fresh challenge, `stale=true` on an expired
//!    nonce, replays refused — [`DigestServer`]);
//! 3. the authenticated user may only register its own address-of-record (403);
//! 4. `Contact: *` only with `Expires: 0` and alone (400), removing every binding;
//! 5. each Contact's lifetime from its `expires` parameter or the Expires header, capped at
//!    `max_expires`; below `min_expires` the whole request gets 423 with `Min-Expires`;
//! 6. a binding refreshed with the same Call-ID needs a higher CSeq (500 otherwise, nothing
//!    changed); at most `max_bindings` per address-of-record (403 beyond);
//! 7. the 200 lists every current binding with its remaining `expires`.
//!
//! Each binding remembers the **flow** the REGISTER came on ([`Flow`]: transport, remote
//! address, connection id). An RFC 5626 registration (`+sip.instance` and `reg-id` in the
//! Contact, `Supported: outbound`) is keyed by instance and reg-id, answered with
//! `Require: outbound`, and its calls must go back on that flow; so must those of a Contact
//! that cannot be reached directly — a `.invalid` host (what WebSocket clients such as JsSIP
//! send) or a `ws`/`wss` transport. [`Registrar::lookup`] says which ([`Target::flow`]);
//! [`Registrar::lookup_user`] does the same by user name across domains (an agent's phone is
//! configured by user); [`Registrar::connection_closed`] drops the bindings whose flow died
//! (RFC 5626 §6: a flow that fails takes its binding with it) and forgets the connection of
//! the others (they are reached at their Contact from then on).
//!
//! ```
//! # use std::time::Instant;
//! use gateway::sip::auth::{DigestServer, DigestServerConfig};
//! use gateway::sip::message::Uri;
//! use gateway::sip::registrar::{Registrar, RegistrarConfig};
//!
//! let mut digest = DigestServer::new(DigestServerConfig::default(), [7; 32]);
//! digest.set_user("alice", "secret");
//! let reg = Registrar::new(RegistrarConfig::default(), digest);
//! let aor = Uri::parse("sip:alice@gw.example").unwrap();
//! assert!(reg.lookup(Instant::now(), &aor).is_empty());
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{AuthVerdict, DigestServer};
use super::message::{Contacts, HeaderName, NameAddr, Request, Response, Uri};
use super::transport::{ConnectionId, Transport};

/// Settings of a [`Registrar`].
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Domains we are registrar for (Request-URI host, case-insensitive); empty: any.
    pub domains: Vec<String>,
    /// Shortest lifetime accepted (423 below it); default 60 s.
    pub min_expires: Duration,
    /// Longest lifetime granted (longer requests are cut down); default 3600 s.
    pub max_expires: Duration,
    /// Lifetime when the REGISTER names none; default 3600 s.
    pub default_expires: Duration,
    /// Most bindings per address-of-record; default 10.
    pub max_bindings: usize,
    /// Whether REGISTERs must authenticate (default true).
    pub authenticate: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            domains: Vec::new(),
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(3600),
            default_expires: Duration::from_secs(3600),
            max_bindings: 10,
            authenticate: true,
        }
    }
}

/// The connection (or datagram path) a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The transport.
    pub transport: Transport,
    /// The peer's address as seen by us (the connection's remote end, or the datagram source).
    pub remote: SocketAddr,
    /// The stream connection, if any (TCP, TLS, WS, WSS).
    pub connection: Option<ConnectionId>,
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact (URI and header parameters as registered).
    pub contact: NameAddr,
    /// When it lapses.
    pub expires_at: Instant,
    /// The REGISTER's Call-ID and CSeq (§10.3 step 7 ordering).
    pub call_id: String,
    /// CSeq of the last REGISTER that touched it.
    pub cseq: u32,
    /// RFC 5626 `+sip.instance`, if given.
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`, if given with an instance.
    pub reg_id: Option<u32>,
    /// Whether this is an outbound registration (instance + reg-id + `Supported: outbound`).
    pub outbound: bool,
    /// The flow the REGISTER came on.
    pub flow: Flow,
}

impl Binding {
    /// Whether requests to this contact must travel over its registration flow rather than to
    /// the Contact's address: outbound registrations, `.invalid` hosts and WebSocket contacts.
    pub fn needs_flow(&self) -> bool {
        if self.outbound || matches!(self.flow.transport, Transport::Ws | Transport::Wss) {
            return true;
        }
        let Some(parts) = self.contact.uri.sip_parts() else {
            return false;
        };
        let transport = self.contact.uri.param("transport").flatten().unwrap_or("");
        parts.host.to_ascii_lowercase().ends_with(".invalid")
            || transport.eq_ignore_ascii_case("ws")
            || transport.eq_ignore_ascii_case("wss")
    }
}

/// Where to send a request for an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Request-URI to use (the registered Contact URI).
    pub uri: Uri,
    /// `Some` when the request must go over this flow (its connection, or its source address
    /// for UDP) instead of to the URI's host.
    pub flow: Option<Flow>,
    /// The flow it registered on, in any case (a NATed UDP phone is best reached there too).
    pub registered_from: Flow,
}

/// Counters for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    /// REGISTERs answered 200.
    pub accepted: u64,
    /// REGISTERs challenged (401).
    pub challenged: u64,
    /// REGISTERs refused (403, 404, 423, 400, 500).
    pub refused: u64,
    /// Bindings removed because their flow's connection closed.
    pub flow_failures: u64,
    /// Bindings that lapsed.
    pub expired: u64,
}

/// The registrar: digest authentication plus the location service.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    digest: DigestServer,
    bindings: HashMap<String, Vec<Binding>>,
    stats: RegistrarStats,
}

/// The canonical address-of-record key: `sip:user@host` with the host lower-cased and the
/// scheme folded to `sip` (a sips AoR is the same user).
pub fn aor_key(uri: &Uri) -> Option<String> {
    let p = uri.sip_parts()?;
    let user = p.user?;
    Some(format!("sip:{user}@{}", p.host.to_ascii_lowercase()))
}

fn contact_expires(c: &NameAddr) -> Option<u64> {
    c.params
        .get("expires")
        .flatten()
        .and_then(|v| v.trim().parse().ok())
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches('"').to_owned()
}

impl Registrar {
    /// A registrar authenticating with `digest` (its users are the ones who may register).
    pub fn new(config: RegistrarConfig, digest: DigestServer) -> Self {
        Registrar {
            config,
            digest,
            bindings: HashMap::new(),
            stats: RegistrarStats::default(),
        }
    }

    /// The digest server (to add users at run time).
    pub fn digest_mut(&mut self) -> &mut DigestServer {
        &mut self.digest
    }

    /// Counters.
    pub fn stats(&self) -> &RegistrarStats {
        &self.stats
    }

    /// Live bindings across all addresses-of-record.
    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    fn refuse(&mut self, req: &Request, status: u16, why: &str) -> Response {
        self.stats.refused += 1;
        let mut r = Response::for_request(req, status);
        r.headers
            .push(HeaderName::Warning, super::validate::warning(why));
        r
    }

    /// Processes a REGISTER that arrived on `flow` and returns the response (the caller adds
    /// nothing but sends it on the REGISTER's server transaction; a To tag is included).
    pub fn handle_register(&mut self, now: Instant, req: &Request, flow: Flow) -> Response {
        let mut resp = self.process(now, req, flow);
        resp.ensure_to_tag("reg");
        resp
    }

    fn process(&mut self, now: Instant, req: &Request, flow: Flow) -> Response {
        self.purge(now);
        // Step 1: our domain?
        if !self.config.domains.is_empty() {
            let host = req.uri.sip_parts().map(|p| p.host.to_ascii_lowercase());
            let ours = host.is_some_and(|h| {
                self.config
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&h))
            });
            if !ours {
                return self.refuse(req, 404, "not a domain this registrar serves");
            }
        }
        let Ok(to) = req.headers.to() else {
            return self.refuse(req, 400, "To header is malformed");
        };
        let Some(aor) = aor_key(&to.uri) else {
            return self.refuse(req, 404, "To is not a sip URI with a user");
        };
        // Steps 2 and 3: who is it, and may they register this AoR?
        if self.config.authenticate {
            match self.digest.verify(now, req, false) {
                AuthVerdict::Authorized { username } => {
                    let user = to.uri.sip_parts().and_then(|p| p.user).unwrap_or("");
                    if user != username {
                        return self.refuse(
                            req,
                            403,
                            "credentials do not own this address-of-record",
                        );
                    }
                }
                AuthVerdict::Challenge { stale, .. } => {
                    self.stats.challenged += 1;
                    return self.digest.challenge(now, req, stale, false);
                }
            }
        }
        let Ok(call_id) = req.headers.call_id().map(str::to_owned) else {
            return self.refuse(req, 400, "no Call-ID");
        };
        let Ok(cseq) = req.headers.cseq().map(|c| c.seq) else {
            return self.refuse(req, 400, "no CSeq");
        };
        let header_expires = req
            .headers
            .get(&HeaderName::Expires)
            .and_then(|v| v.trim().parse::<u64>().ok());
        let contacts = match req.headers.contacts() {
            Ok(c) => c,
            Err(_) => return self.refuse(req, 400, "Contact header is malformed"),
        };
        let supports_outbound = req
            .headers
            .supported()
            .unwrap_or_default()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("outbound"));
        let mut outbound_used = false;
        match contacts {
            Contacts::Wildcard => {
                // Step 6: `*` only alone and with Expires: 0.
                if header_expires != Some(0) || req.headers.count(&HeaderName::Contact) != 1 {
                    return self.refuse(
                        req,
                        400,
                        "Contact: * needs Expires: 0 and no other Contact",
                    );
                }
                let list = self.bindings.entry(aor.clone()).or_default();
                if list.iter().any(|b| b.call_id == call_id && cseq <= b.cseq) {
                    return self.refuse(req, 500, "CSeq not higher than the last REGISTER");
                }
                list.clear();
            }
            Contacts::List(list) => {
                // Lifetimes first: a too-short one refuses the whole request (423).
                let mut updates = Vec::with_capacity(list.len());
                for c in list {
                    let secs = contact_expires(&c)
                        .or(header_expires)
                        .unwrap_or(self.config.default_expires.as_secs());
                    let d = Duration::from_secs(secs).min(self.config.max_expires);
                    if !d.is_zero() && d < self.config.min_expires {
                        let mut r = self.refuse(req, 423, "registration interval too brief");
                        r.headers.push(
                            HeaderName::MinExpires,
                            self.config.min_expires.as_secs().to_string(),
                        );
                        return r;
                    }
                    updates.push((c, d));
                }
                let existing = self.bindings.get(&aor).cloned().unwrap_or_default();
                let mut next = existing.clone();
                for (c, d) in updates {
                    let instance = c.params.get("+sip.instance").flatten().map(unquote);
                    let reg_id = c
                        .params
                        .get("reg-id")
                        .flatten()
                        .and_then(|v| v.trim().parse::<u32>().ok());
                    let outbound = supports_outbound && instance.is_some() && reg_id.is_some();
                    outbound_used |= outbound;
                    let same = |b: &Binding| {
                        if outbound {
                            b.outbound && b.instance == instance && b.reg_id == reg_id
                        } else {
                            !b.outbound && b.contact.uri.as_str() == c.uri.as_str()
                        }
                    };
                    if let Some(b) = next.iter().find(|b| same(b))
                        && b.call_id == call_id
                        && cseq <= b.cseq
                    {
                        return self.refuse(req, 500, "CSeq not higher than the last REGISTER");
                    }
                    next.retain(|b| !same(b));
                    if !d.is_zero() {
                        let mut contact = c.clone();
                        contact
                            .params
                            .0
                            .retain(|(n, _)| !n.eq_ignore_ascii_case("expires"));
                        next.push(Binding {
                            contact,
                            expires_at: now + d,
                            call_id: call_id.clone(),
                            cseq,
                            instance,
                            reg_id,
                            outbound,
                            flow,
                        });
                    }
                }
                if next.len() > self.config.max_bindings {
                    return self.refuse(
                        req,
                        403,
                        "too many registrations for this address-of-record",
                    );
                }
                self.bindings.insert(aor.clone(), next);
            }
        }
        self.stats.accepted += 1;
        let mut ok = Response::for_request(req, 200);
        if let Some(list) = self.bindings.get(&aor) {
            for b in list {
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                ok.headers
                    .push(HeaderName::Contact, format!("{};expires={left}", b.contact));
            }
        }
        if outbound_used {
            ok.headers.push(HeaderName::Require, "outbound");
        }
        if self.bindings.get(&aor).is_some_and(Vec::is_empty) {
            self.bindings.remove(&aor);
        }
        ok
    }

    /// Where to send a request for `aor` now: its live bindings, most recently registered
    /// first.
    pub fn lookup(&self, now: Instant, aor: &Uri) -> Vec<Target> {
        let Some(key) = aor_key(aor) else {
            return Vec::new();
        };
        let mut live: Vec<&Binding> = self
            .bindings
            .get(&key)
            .map(|l| l.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        live.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
        live.into_iter()
            .map(|b| Target {
                uri: b.contact.uri.clone(),
                flow: b.needs_flow().then_some(b.flow),
                registered_from: b.flow,
            })
            .collect()
    }

    /// Where to send a request for user `user` of any domain we serve (an agent's phone is
    /// configured by user name; it registers under whatever host it was given): the live
    /// bindings of every address-of-record with that user part, most recently registered first.
    pub fn lookup_user(&self, now: Instant, user: &str) -> Vec<Target> {
        let prefix = format!("sip:{user}@");
        let mut live: Vec<&Binding> = self
            .bindings
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .flat_map(|(_, l)| l.iter().filter(|b| b.expires_at > now))
            .collect();
        live.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
        live.into_iter()
            .map(|b| Target {
                uri: b.contact.uri.clone(),
                flow: b.needs_flow().then_some(b.flow),
                registered_from: b.flow,
            })
            .collect()
    }

    /// The bindings of `aor` (for `gwctl` and tests).
    pub fn bindings(&self, aor: &Uri) -> &[Binding] {
        aor_key(aor)
            .and_then(|k| self.bindings.get(&k))
            .map_or(&[], Vec::as_slice)
    }

    /// A stream connection closed: bindings that need that flow are removed (RFC 5626 §6).
    /// Returns how many. The other bindings registered on it stay, without the connection
    /// (`flow.connection` becomes `None`): requests for them go to their Contact.
    pub fn connection_closed(&mut self, connection: ConnectionId) -> usize {
        let mut removed = 0;
        for list in self.bindings.values_mut() {
            let before = list.len();
            list.retain(|b| !(b.flow.connection == Some(connection) && b.needs_flow()));
            removed += before - list.len();
            for b in list.iter_mut() {
                if b.flow.connection == Some(connection) {
                    b.flow.connection = None;
                }
            }
        }
        self.bindings.retain(|_, l| !l.is_empty());
        self.stats.flow_failures += removed as u64;
        removed
    }

    /// When the next binding lapses.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings
            .values()
            .flat_map(|l| l.iter().map(|b| b.expires_at))
            .min()
    }

    /// Drops lapsed bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.purge(now);
    }

    fn purge(&mut self, now: Instant) {
        let mut expired = 0;
        for list in self.bindings.values_mut() {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            expired += before - list.len();
        }
        self.bindings.retain(|_, l| !l.is_empty());
        self.stats.expired += expired as u64;
    }
}

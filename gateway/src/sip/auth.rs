//! SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760: MD5 and SHA-256, qop=auth) as
//! sans-IO state: the UAS side ([`DigestServer`]: per-user credentials, nonces that expire,
//! nonce-count replay protection, `stale=true`), the UAC side ([`DigestClient`]: answering 401 and
//! 407). The REGISTER client that uses [`DigestClient`] lives in [`super::registration`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::message::{AuthParams, HeaderName, Method, Request, Response, Uri};
use super::parse;

/// A digest hash algorithm (RFC 8760 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `MD5` (RFC 2617; the only one most SIP peers implement).
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl DigestAlgorithm {
    /// The `algorithm=` token.
    pub fn token(&self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` token; absent means MD5 (RFC 2617 §3.2.1).
    pub fn from_token(token: Option<&str>) -> Option<DigestAlgorithm> {
        match token {
            None => Some(DigestAlgorithm::Md5),
            Some(t) if t.eq_ignore_ascii_case("MD5") => Some(DigestAlgorithm::Md5),
            Some(t) if t.eq_ignore_ascii_case("SHA-256") => Some(DigestAlgorithm::Sha256),
            Some(_) => None,
        }
    }

    /// Lower-case hex of the hash of `parts` joined with `:`.
    pub fn hash_hex(&self, parts: &[&str]) -> String {
        let joined = parts.join(":");
        match self {
            DigestAlgorithm::Md5 => hex(&Md5::digest(joined.as_bytes())),
            DigestAlgorithm::Sha256 => hex(&Sha256::digest(joined.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Everything that enters a digest `response` value.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    /// Hash algorithm.
    pub algorithm: DigestAlgorithm,
    /// User name.
    pub username: &'a str,
    /// Realm.
    pub realm: &'a str,
    /// Password.
    pub password: &'a str,
    /// The request method (`REGISTER`, `INVITE`, ...).
    pub method: &'a str,
    /// The `uri` parameter (the Request-URI).
    pub uri: &'a str,
    /// Server nonce.
    pub nonce: &'a str,
    /// `(nc, cnonce)` for qop=auth; `None` for RFC 2069 style (no qop).
    pub qop_auth: Option<(&'a str, &'a str)>,
}

/// The `response` value (RFC 7616 §3.4.1): `H(H(A1):nonce[:nc:cnonce:qop]:H(A2))`.
pub fn digest_response(input: &DigestInput<'_>) -> String {
    let alg = input.algorithm;
    let ha1 = alg.hash_hex(&[input.username, input.realm, input.password]);
    let ha2 = alg.hash_hex(&[input.method, input.uri]);
    match input.qop_auth {
        Some((nc, cnonce)) => alg.hash_hex(&[&ha1, input.nonce, nc, cnonce, "auth", &ha2]),
        None => alg.hash_hex(&[&ha1, input.nonce, &ha2]),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Settings of a [`DigestServer`].
#[derive(Debug, Clone)]
pub struct DigestServerConfig {
    /// The realm offered in challenges.
    pub realm: String,
    /// How long a nonce may be used before the answer is `stale=true`; default 300 s.
    pub nonce_lifetime: Duration,
    /// Algorithms offered, most preferred first (one challenge header each, RFC 8760 §2.4).
    pub algorithms: Vec<DigestAlgorithm>,
    /// Most nonces kept at once (oldest dropped first); bounds memory under a flood.
    pub max_nonces: usize,
}

impl Default for DigestServerConfig {
    fn default() -> Self {
        DigestServerConfig {
            realm: "spanbridge".to_owned(),
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            max_nonces: 10_000,
        }
    }
}

/// Why a request was not authorized (for logs and counters; the peer only sees a challenge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No Authorization / Proxy-Authorization header for our realm.
    #[error("no credentials")]
    NoCredentials,
    /// The header did not parse or lacks a required parameter.
    #[error("malformed credentials")]
    Malformed,
    /// User not configured.
    #[error("unknown user")]
    UnknownUser,
    /// A nonce we never issued (or already forgot).
    #[error("unknown nonce")]
    UnknownNonce,
    /// A nonce past its lifetime; the client should retry with the new one (stale=true).
    #[error("nonce expired")]
    StaleNonce,
    /// nc not greater than one already used with this nonce: a replay.
    #[error("nonce count replayed")]
    Replay,
    /// qop missing or not `auth`.
    #[error("qop=auth required")]
    QopRequired,
    /// An algorithm we did not offer.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `uri` differs from the Request-URI.
    #[error("digest uri does not match the Request-URI")]
    UriMismatch,
    /// Wrong password.
    #[error("wrong response (bad password)")]
    WrongResponse,
}

/// The verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Credentials are valid for this user.
    Authorized {
        /// The authenticated user name.
        username: String,
    },
    /// Answer with [`DigestServer::challenge`] (`stale` = the password was right but the nonce
    /// expired).
    Challenge {
        /// Why.
        failure: AuthFailure,
        /// Whether to send `stale=true`.
        stale: bool,
    },
}

#[derive(Debug, Clone)]
struct NonceState {
    issued: Instant,
    algorithm: DigestAlgorithm,
    highest_nc: u32,
}

/// The UAS side of digest authentication.
#[derive(Debug)]
pub struct DigestServer {
    config: DigestServerConfig,
    secret: [u8; 32],
    counter: u64,
    users: HashMap<String, String>,
    nonces: HashMap<String, NonceState>,
}

impl DigestServer {
    /// A server whose nonces derive from `secret` (use 32 random bytes in production).
    pub fn new(config: DigestServerConfig, secret: [u8; 32]) -> Self {
        DigestServer {
            config,
            secret,
            counter: 0,
            users: HashMap::new(),
            nonces: HashMap::new(),
        }
    }

    /// Adds or replaces a user's password.
    pub fn set_user(&mut self, username: &str, password: &str) {
        self.users.insert(username.to_owned(), password.to_owned());
    }

    /// Nonces currently remembered.
    pub fn live_nonces(&self) -> usize {
        self.nonces.len()
    }

    fn new_nonce(&mut self, now: Instant, algorithm: DigestAlgorithm) -> String {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(self.counter.to_be_bytes());
        let nonce = hex(&h.finalize()).chars().take(32).collect::<String>();
        // Forget nonces long past their lifetime, then bound the table.
        let keep = self.config.nonce_lifetime * 2;
        self.nonces
            .retain(|_, n| now.saturating_duration_since(n.issued) < keep);
        while self.nonces.len() >= self.config.max_nonces.max(1) {
            let oldest = self
                .nonces
                .iter()
                .min_by_key(|(_, n)| n.issued)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.nonces.remove(&k);
                }
                None => break,
            }
        }
        self.nonces.insert(
            nonce.clone(),
            NonceState {
                issued: now,
                algorithm,
                highest_nc: 0,
            },
        );
        nonce
    }

    /// A 401 (or 407 when `proxy`) for `req` with one fresh challenge per configured algorithm.
    pub fn challenge(&mut self, now: Instant, req: &Request, stale: bool, proxy: bool) -> Response {
        let mut resp = Response::for_request(req, if proxy { 407 } else { 401 });
        let name = if proxy {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        for alg in self.config.algorithms.clone() {
            let nonce = self.new_nonce(now, alg);
            let mut v = format!(
                "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                self.config.realm,
                alg.token()
            );
            if stale {
                v.push_str(", stale=true");
            }
            resp.headers.push(name.clone(), v);
        }
        resp
    }

    /// Checks the credentials in `req` (Authorization, or Proxy-Authorization when `proxy`).
    pub fn verify(&mut self, now: Instant, req: &Request, proxy: bool) -> AuthVerdict {
        match self.check(now, req, proxy) {
            Ok(username) => AuthVerdict::Authorized { username },
            Err(failure) => AuthVerdict::Challenge {
                failure,
                stale: failure == AuthFailure::StaleNonce,
            },
        }
    }

    fn check(&mut self, now: Instant, req: &Request, proxy: bool) -> Result<String, AuthFailure> {
        let name = if proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        let mut creds = None;
        for v in req.headers.get_all(&name) {
            let p = parse::parse_auth(v).map_err(|_| AuthFailure::Malformed)?;
            if p.scheme.eq_ignore_ascii_case("Digest") && p.get("realm") == Some(&self.config.realm)
            {
                creds = Some(p);
                break;
            }
        }
        let creds = creds.ok_or(AuthFailure::NoCredentials)?;
        let field = |n: &str| creds.get(n).ok_or(AuthFailure::Malformed);
        let username = field("username")?;
        let nonce = field("nonce")?;
        let uri = field("uri")?;
        let response = field("response")?;
        let algorithm = DigestAlgorithm::from_token(creds.get("algorithm"))
            .ok_or(AuthFailure::UnsupportedAlgorithm)?;
        if !creds
            .get("qop")
            .is_some_and(|q| q.eq_ignore_ascii_case("auth"))
        {
            return Err(AuthFailure::QopRequired);
        }
        let nc_text = field("nc")?;
        let cnonce = field("cnonce")?;
        let nc = u32::from_str_radix(nc_text, 16).map_err(|_| AuthFailure::Malformed)?;
        if nc_text.len() != 8 {
            return Err(AuthFailure::Malformed);
        }
        if uri != req.uri.as_str() {
            return Err(AuthFailure::UriMismatch);
        }
        let password = self.users.get(username).ok_or(AuthFailure::UnknownUser)?;
        let state = self.nonces.get(nonce).ok_or(AuthFailure::UnknownNonce)?;
        if state.algorithm != algorithm {
            return Err(AuthFailure::UnsupportedAlgorithm);
        }
        let expected = digest_response(&DigestInput {
            algorithm,
            username,
            realm: &self.config.realm,
            password,
            method: req.method.as_str(),
            uri,
            nonce,
            qop_auth: Some((nc_text, cnonce)),
        });
        if !constant_time_eq(&expected, response) {
            return Err(AuthFailure::WrongResponse);
        }
        if nc <= state.highest_nc {
            return Err(AuthFailure::Replay);
        }
        if now.saturating_duration_since(state.issued) > self.config.nonce_lifetime {
            return Err(AuthFailure::StaleNonce);
        }
        let username = username.to_owned();
        if let Some(s) = self.nonces.get_mut(nonce) {
            s.highest_nc = nc;
        }
        Ok(username)
    }
}

/// Why the UAC could not answer a challenge.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DigestClientError {
    /// The response carries no Digest challenge with an algorithm we implement.
    #[error("no usable Digest challenge (MD5 or SHA-256) in the response")]
    NoUsableChallenge,
    /// We already answered this realm's challenge and got a fresh one without `stale=true`:
    /// the server refused our credentials; check the user name and password.
    #[error("credentials rejected by the server; check user name and password")]
    Rejected,
    /// The request to resend is unusable (no CSeq or Via).
    #[error("request cannot be resent: {0}")]
    BadRequest(&'static str),
}

/// A challenge picked from a 401/407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The parameters (realm, nonce, opaque, qop, stale, ...).
    pub params: AuthParams,
    /// Its algorithm.
    pub algorithm: DigestAlgorithm,
    /// From Proxy-Authenticate (answer with Proxy-Authorization).
    pub proxy: bool,
}

/// Picks the best challenge in `resp`: SHA-256 over MD5, unknown algorithms skipped.
pub fn pick_challenge(resp: &Response) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    for (name, proxy) in [
        (HeaderName::WwwAuthenticate, false),
        (HeaderName::ProxyAuthenticate, true),
    ] {
        for v in resp.headers.get_all(&name) {
            let Ok(p) = parse::parse_auth(v) else {
                continue;
            };
            if !p.scheme.eq_ignore_ascii_case("Digest") || p.get("nonce").is_none() {
                continue;
            }
            let Some(algorithm) = DigestAlgorithm::from_token(p.get("algorithm")) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some(b) => {
                    b.algorithm == DigestAlgorithm::Md5 && algorithm == DigestAlgorithm::Sha256
                }
            };
            if better {
                best = Some(Challenge {
                    params: p,
                    algorithm,
                    proxy,
                });
            }
        }
    }
    best
}

/// The UAC side: one user's credentials, answering 401/407 challenges.
#[derive(Debug, Clone)]
pub struct DigestClient {
    username: String,
    password: String,
    /// Per nonce, the last nonce-count used.
    nc: HashMap<String, u32>,
    /// Per realm, the nonce we last answered (to detect rejected credentials).
    answered: HashMap<String, String>,
}

impl DigestClient {
    /// A client for `username` / `password`.
    pub fn new(username: &str, password: &str) -> Self {
        DigestClient {
            username: username.to_owned(),
            password: password.to_owned(),
            nc: HashMap::new(),
            answered: HashMap::new(),
        }
    }

    /// The credentials header value for `challenge`, for `method` on `uri`, with our `cnonce`.
    pub fn credentials(
        &mut self,
        challenge: &Challenge,
        method: &Method,
        uri: &Uri,
        cnonce: &str,
    ) -> String {
        let p = &challenge.params;
        let realm = p.get("realm").unwrap_or_default();
        let nonce = p.get("nonce").unwrap_or_default();
        let qop_auth = p
            .get("qop")
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
        let nc = self.nc.entry(nonce.to_owned()).or_insert(0);
        *nc = nc.saturating_add(1);
        let nc_text = format!("{:08x}", *nc);
        let response = digest_response(&DigestInput {
            algorithm: challenge.algorithm,
            username: &self.username,
            realm,
            password: &self.password,
            method: method.as_str(),
            uri: uri.as_str(),
            nonce,
            qop_auth: qop_auth.then_some((nc_text.as_str(), cnonce)),
        });
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}",
            self.username,
            challenge.algorithm.token()
        );
        if qop_auth {
            v.push_str(&format!(", qop=auth, nc={nc_text}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = p.get("opaque") {
            v.push_str(&format!(", opaque=\"{opaque}\""));
        }
        v
    }

    /// `req` again with credentials for the challenge in `resp`, CSeq + 1 and Via branch
    /// `branch` (RFC 3261 §22.2). Fails with [`DigestClientError::Rejected`] if the server
    /// challenges again without `stale=true` after we answered it once.
    pub fn authorize(
        &mut self,
        req: &Request,
        resp: &Response,
        branch: &str,
        cnonce: &str,
    ) -> Result<Request, DigestClientError> {
        let challenge = pick_challenge(resp).ok_or(DigestClientError::NoUsableChallenge)?;
        let realm = challenge.params.get("realm").unwrap_or_default().to_owned();
        let stale = challenge
            .params
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
        let had_credentials = req.headers.get(&HeaderName::Authorization).is_some()
            || req.headers.get(&HeaderName::ProxyAuthorization).is_some();
        if had_credentials && !stale && self.answered.contains_key(&realm) {
            return Err(DigestClientError::Rejected);
        }
        let cseq = req
            .headers
            .cseq()
            .map_err(|_| DigestClientError::BadRequest("CSeq"))?;
        let mut via = req
            .headers
            .top_via()
            .map_err(|_| DigestClientError::BadRequest("Via"))?;
        via.params.set("branch", Some(branch));
        let header = if challenge.proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        let value = self.credentials(&challenge, &req.method, &req.uri, cnonce);
        let mut out = req.clone();
        out.headers.set(HeaderName::Via, via.to_string());
        out.headers.set(
            HeaderName::CSeq,
            format!("{} {}", cseq.seq.saturating_add(1), cseq.method),
        );
        out.headers.remove(&header);
        out.headers.push(header, value);
        self.answered.insert(
            realm,
            challenge.params.get("nonce").unwrap_or_default().to_owned(),
        );
        Ok(out)
    }
}

pub use super::registration::{Registration, RegistrationAction, RegistrationConfig};

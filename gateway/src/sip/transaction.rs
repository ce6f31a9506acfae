//! RFC 3261 §17 transactions as a sans-IO state machine (with the RFC 6026 Accepted state).
//!
//! The [`TransactionLayer`] is fed received messages and the current time, and is told what the
//! transaction user (TU) wants to send; it returns what to put on the wire ([`Transmit`]), what to
//! tell the TU ([`TuEvent`]), and when it next needs [`TransactionLayer::handle_timeout`]. It owns
//! every retransmission and timeout (timers A–K, L, M), so a stuck transaction is impossible: every
//! state has a timer that ends it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::message::{HeaderName, Message, Method, Request, Response};
use super::parse::{self, ParseError};
use super::validate::{Rejection, UasPolicy, validate_request};

/// Timer base values (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; default 500 ms.
    pub t1: Duration,
    /// Cap for non-INVITE and response retransmit intervals; default 4 s.
    pub t2: Duration,
    /// How long a message can stay in the network; default 5 s.
    pub t4: Duration,
    /// Timer D: how long an INVITE client transaction absorbs retransmitted non-2xx finals
    /// after ACKing one (unreliable transports); RFC 3261 asks for at least 32 s.
    pub timer_d: Duration,
    /// Timer C (RFC 3261 §16.6): how long an INVITE client transaction may stay in
    /// Proceeding (ringing) after its last provisional response; when it fires the layer sends
    /// CANCEL itself and reports [`TuEvent::Timeout`]. Default 181 s (> 3 min as the RFC asks);
    /// `None` leaves a ringing transaction to the TU's own timeout.
    pub timer_c: Option<Duration>,
    /// How long an INVITE server transaction waits for the TU before sending 100 Trying itself.
    pub trying_delay: Duration,
    /// How long an INVITE server transaction waits for the TU's final response before answering
    /// 408 itself and reporting [`TuEvent::Timeout`], so no transaction outlives a silent TU.
    pub server_invite_timeout: Duration,
}

impl TimerConfig {
    /// The values limited to sane ranges: T1 1 ms..=60 s, T2 ≥ T1 and ≤ 1 h, T4, Timer C, the
    /// 100 Trying delay and the server INVITE timeout ≤ 1 h.
    pub fn clamped(self) -> TimerConfig {
        let hour = Duration::from_secs(3600);
        let t1 = self
            .t1
            .clamp(Duration::from_millis(1), Duration::from_secs(60));
        TimerConfig {
            t1,
            t2: self.t2.clamp(t1, hour),
            t4: self.t4.min(hour),
            timer_d: self.timer_d.min(hour),
            timer_c: self.timer_c.map(|c| c.min(hour)),
            trying_delay: self.trying_delay.min(hour),
            server_invite_timeout: self.server_invite_timeout.min(hour),
        }
    }
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            timer_c: Some(Duration::from_secs(181)),
            trying_delay: Duration::from_millis(200),
            server_invite_timeout: Duration::from_secs(180),
        }
    }
}

/// Whether the transport retransmits by itself (TCP, TLS, WS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reliability {
    /// UDP: the transaction retransmits.
    Unreliable,
    /// TCP/TLS/WS: no retransmissions; completion timers are zero.
    Reliable,
}

/// Identifies a transaction (RFC 3261 §17.1.3 / §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    /// Top Via branch (or a derived id for pre-RFC 3261 requests without the magic cookie).
    pub branch: String,
    /// Top Via sent-by, for server transactions (empty for client ones).
    pub sent_by: String,
    /// The method, with ACK counted as INVITE.
    pub method: Method,
    /// Client or server side.
    pub role: Role,
}

/// Which side of a transaction we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: SocketAddr,
    /// The serialized message.
    pub bytes: Vec<u8>,
}

/// What the transaction layer tells its user.
#[derive(Debug, Clone, PartialEq)]
pub enum TuEvent {
    /// A new request created a server transaction; answer it with
    /// [`TransactionLayer::send_response`].
    Request {
        /// The server transaction.
        key: TransactionKey,
        /// The request.
        request: Request,
        /// Where it came from.
        source: SocketAddr,
    },
    /// An ACK that matched no transaction (the ACK for a 2xx; it belongs to the dialog).
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        source: SocketAddr,
    },
    /// A CANCEL matched this INVITE server transaction (the layer already answered the CANCEL
    /// 200); the TU should answer the INVITE 487 unless it already sent a final response.
    Cancelled {
        /// The INVITE server transaction.
        invite: TransactionKey,
    },
    /// A response for a client transaction.
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Response,
    },
    /// A client transaction got no final response in time (Timer B/F, or C), or an INVITE
    /// server transaction never got its ACK (Timer H).
    Timeout {
        /// The transaction.
        key: TransactionKey,
    },
    /// A transaction ended and was removed.
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
}

/// Counters for operators (`gwctl sip`) and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// Responses that failed to parse and were dropped (RFC 3261 §18.1.2).
    pub malformed_responses_dropped: u64,
    /// Requests that failed to parse (answered 400/505 when addressable).
    pub malformed_requests: u64,
    /// Responses that matched no client transaction (dropped).
    pub stray_responses: u64,
    /// Retransmissions sent by timers.
    pub retransmissions: u64,
    /// Request retransmissions absorbed by server transactions.
    pub absorbed_requests: u64,
    /// ACKs for non-2xx finals absorbed by INVITE server transactions.
    pub absorbed_acks: u64,
    /// Well-formed requests the layer refused on the TU's behalf (501, 416, 483, 482, 420,
    /// 415: see [`super::validate`]).
    pub rejected_requests: u64,
    /// Responses dropped because they carried more than one Via (RFC 3261 §8.1.3.3: they were
    /// meant for someone else); also counted in `malformed_responses_dropped`.
    pub misrouted_responses: u64,
    /// The last malformed message (request or response): its source and what was wrong, for
    /// operators (`gwctl sip`).
    pub last_malformed: Option<String>,
}

/// Why the TU's request or response could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The request has no usable top Via branch; the TU must add `Via: ...;branch=z9hG4bK...`.
    #[error("request has no top Via with a branch parameter")]
    MissingBranch,
    /// A transaction with this key already exists.
    #[error("a transaction with this branch already exists")]
    Duplicate,
    /// No server transaction with that key (it ended, e.g. after Timer H or J).
    #[error("no such server transaction (it may have ended)")]
    NoSuchTransaction,
    /// The transaction already sent a final response.
    #[error("transaction already sent a final response")]
    AlreadyFinal,
    /// ACK is not sent through a transaction (send it directly; RFC 3261 §17.1.1.3).
    #[error("ACK is not sent through a client transaction")]
    AckHasNoTransaction,
    /// Malformed message.
    #[error("message is malformed: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

#[derive(Debug)]
struct Transaction {
    state: State,
    reliability: Reliability,
    peer: SocketAddr,
    /// Client: the request; server: the last response sent.
    last_sent: Option<Vec<u8>>,
    /// Client INVITE: the request (to build ACK / CANCEL from).
    request: Option<Request>,
    /// Retransmission timer (A, E, G) and its current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timeout timer (B, F, H) or completion timer (D, I, J, K, L, M).
    end_at: Option<Instant>,
    /// True if `end_at` means failure (B, F, H, C) rather than normal end.
    end_is_timeout: bool,
    /// INVITE server: when to send 100 Trying if the TU has not responded.
    trying_at: Option<Instant>,
    /// Client INVITE: Timer C; server INVITE: the TU's answer deadline.
    timer_c_at: Option<Instant>,
    /// Client INVITE: the ACK sent for a non-2xx final.
    ack: Option<Vec<u8>>,
    /// Client INVITE: when Timer C made the layer send CANCEL.
    cancel_sent_at: Option<Instant>,
    /// Server transaction of a request without To tag: its merge key (§8.2.2.2).
    merge: Option<MergeKey>,
    /// The entry of the layer's timer heap that stands for this transaction's next deadline.
    scheduled: Option<(Instant, u64)>,
}

/// From tag, Call-ID and CSeq of a request outside a dialog (RFC 3261 §8.2.2.2).
type MergeKey = (String, String, u32, Method);

fn merge_key(req: &Request) -> Option<MergeKey> {
    let to = req.headers.to().ok()?;
    if to.tag().is_some() {
        return None;
    }
    let from_tag = req.headers.from().ok()?.tag()?.to_owned();
    let cseq = req.headers.cseq().ok()?;
    Some((
        from_tag,
        req.headers.call_id().ok()?.to_owned(),
        cseq.seq,
        cseq.method,
    ))
}

impl Transaction {
    fn new(peer: SocketAddr, reliability: Reliability, state: State) -> Self {
        Transaction {
            state,
            reliability,
            peer,
            last_sent: None,
            request: None,
            retransmit_at: None,
            interval: Duration::ZERO,
            end_at: None,
            end_is_timeout: false,
            trying_at: None,
            timer_c_at: None,
            ack: None,
            cancel_sent_at: None,
            merge: None,
            scheduled: None,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.end_at,
            self.trying_at,
            self.timer_c_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// All client and server transactions of one SIP endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: TimerConfig,
    transactions: HashMap<TransactionKey, Transaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TuEvent>,
    stats: TransactionStats,
    policy: Option<UasPolicy>,
    merges: HashMap<MergeKey, TransactionKey>,
    tag_counter: u64,
    /// Deadlines, earliest first: (when, entry number). An entry is live only while its
    /// transaction's `scheduled` names it; others are skipped when they come up. This keeps
    /// `poll_timeout` O(1) and `handle_timeout` proportional to what is due, whatever the
    /// number of live transactions (a UDP endpoint at 1,000 calls/s holds ~100,000 of them in
    /// their 32 s completion states).
    timer_heap: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_keys: HashMap<u64, TransactionKey>,
    timer_seq: u64,
    /// Transactions changed since their deadline was last put on the heap.
    dirty: Vec<TransactionKey>,
}

const MAGIC_COOKIE: &str = "z9hG4bK";

fn branch_of(headers: &super::message::Headers) -> Option<(String, String)> {
    let via = headers.top_via().ok()?;
    let sent_by = match via.port {
        Some(p) => format!("{}:{p}", via.host.to_ascii_lowercase()),
        None => via.host.to_ascii_lowercase(),
    };
    match via.branch() {
        Some(b) if b.starts_with(MAGIC_COOKIE) => Some((b.to_owned(), sent_by)),
        _ => {
            // RFC 2543 peer: derive an id from Call-ID, CSeq number and From tag (§17.2.3 lite).
            let call_id = headers.call_id().ok()?;
            let cseq = headers.cseq().ok()?.seq;
            let from_tag = headers.from().ok()?.tag().unwrap_or("").to_owned();
            Some((format!("2543:{call_id}:{cseq}:{from_tag}"), sent_by))
        }
    }
}

fn base_method(m: &Method) -> Method {
    if *m == Method::Ack {
        Method::Invite
    } else {
        m.clone()
    }
}

impl TransactionLayer {
    /// A layer with the given timer values.
    ///
    /// Timer values come from configuration, so they are clamped ([`TimerConfig::clamped`])
    /// rather than trusted: no value can make the timer arithmetic
    /// overflow.
    ///
    /// New requests are checked against [`UasPolicy::gateway`] (see [`super::validate`]);
    /// change that with [`TransactionLayer::set_policy`].
    pub fn new(timers: TimerConfig) -> Self {
        TransactionLayer {
            timers: timers.clamped(),
            transactions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TransactionStats::default(),
            policy: Some(UasPolicy::gateway()),
            merges: HashMap::new(),
            tag_counter: 0,
            timer_heap: BinaryHeap::new(),
            timer_keys: HashMap::new(),
            timer_seq: 0,
            dirty: Vec::new(),
        }
    }

    /// What new server transactions are checked against before the TU hears of them: a
    /// request the policy refuses (501, 416, 483, 420, 415) is answered by the layer and only
    /// counted ([`TransactionStats::rejected_requests`]). `None` passes every well-formed
    /// request to the TU (it then validates itself). Merged requests (482) are refused either
    /// way.
    pub fn set_policy(&mut self, policy: Option<UasPolicy>) {
        self.policy = policy;
    }

    /// The policy new requests are checked against.
    pub fn policy(&self) -> Option<&UasPolicy> {
        self.policy.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &TransactionStats {
        &self.stats
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<TuEvent> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] must next be called.
    ///
    /// O(1). It may name a deadline that has since moved later; the call to
    /// [`TransactionLayer::handle_timeout`] then does nothing but discard it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The transaction, marked for rescheduling.
    fn tx_mut(&mut self, key: &TransactionKey) -> Option<&mut Transaction> {
        let tx = self.transactions.get_mut(key)?;
        self.dirty.push(key.clone());
        Some(tx)
    }

    fn insert_tx(&mut self, key: TransactionKey, tx: Transaction) {
        self.dirty.push(key.clone());
        self.transactions.insert(key, tx);
    }

    /// Puts the next deadline of every changed transaction on the timer heap.
    fn reschedule(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(tx) = self.transactions.get_mut(&key) else {
                continue;
            };
            match (tx.next_deadline(), tx.scheduled) {
                (Some(d), Some((s, _))) if s == d => {}
                (Some(d), _) => {
                    self.timer_seq += 1;
                    self.timer_heap.push(Reverse((d, self.timer_seq)));
                    tx.scheduled = Some((d, self.timer_seq));
                    self.timer_keys.insert(self.timer_seq, key);
                }
                (None, _) => tx.scheduled = None,
            }
        }
    }

    fn transmit(&mut self, dest: SocketAddr, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { dest, bytes });
    }

    /// Feeds bytes received from `source`. Malformed responses are dropped and counted;
    /// malformed requests are answered 400/505 when addressable, and counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        bytes: &[u8],
        source: SocketAddr,
        reliability: Reliability,
    ) {
        match parse::parse_message(bytes) {
            Ok(msg) => self.handle_message(now, msg, source, reliability),
            Err(e) => self.handle_malformed(&e, source),
        }
    }

    fn handle_malformed(&mut self, e: &ParseError, source: SocketAddr) {
        let kind = if e.is_request() { "request" } else { "message" };
        self.stats.last_malformed = Some(format!("{kind} from {source}: {e}"));
        if e.is_request() {
            self.stats.malformed_requests += 1;
            if let Some(mut resp) = e.error_response() {
                stamp_received(&mut resp, source);
                self.transmit(source, resp.to_bytes());
            }
        } else {
            self.stats.malformed_responses_dropped += 1;
        }
    }

    /// Feeds a parsed message received from `source`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        msg: Message,
        source: SocketAddr,
        reliability: Reliability,
    ) {
        match msg {
            Message::Request(r) => self.handle_request(now, r, source, reliability),
            Message::Response(r) => self.handle_response(now, r),
        }
        self.reschedule();
    }

    fn server_key(&self, req: &Request, method: Method) -> Option<TransactionKey> {
        let (branch, sent_by) = branch_of(&req.headers)?;
        Some(TransactionKey {
            branch,
            sent_by,
            method,
            role: Role::Server,
        })
    }

    fn handle_request(
        &mut self,
        now: Instant,
        req: Request,
        source: SocketAddr,
        reliability: Reliability,
    ) {
        let Some(key) = self.server_key(&req, base_method(&req.method)) else {
            self.stats.malformed_requests += 1;
            return;
        };
        let t4 = self.timers.t4;
        if self.transactions.contains_key(&key) {
            self.dirty.push(key.clone());
        }
        if let Some(tx) = self.transactions.get_mut(&key) {
            if req.method == Method::Ack {
                match tx.state {
                    State::Completed => {
                        // ACK for our non-2xx final: absorb, wait Timer I for ACK retransmissions.
                        self.stats.absorbed_acks += 1;
                        tx.state = State::Confirmed;
                        tx.retransmit_at = None;
                        tx.end_is_timeout = false;
                        tx.end_at = Some(now + completion(reliability, t4));
                    }
                    State::Confirmed => self.stats.absorbed_acks += 1,
                    _ => {
                        // ACK with the INVITE's branch in Accepted (RFC 2543-style 2xx ACK): TU.
                        self.events.push_back(TuEvent::Ack {
                            request: req,
                            source,
                        });
                    }
                }
                return;
            }
            // A retransmitted request: resend the last response, if any.
            self.stats.absorbed_requests += 1;
            if matches!(tx.state, State::Proceeding | State::Completed)
                && let Some(bytes) = tx.last_sent.clone()
            {
                let peer = tx.peer;
                self.transmit(peer, bytes);
            }
            return;
        }
        match req.method {
            Method::Ack => self.events.push_back(TuEvent::Ack {
                request: req,
                source,
            }),
            Method::Cancel => self.handle_cancel(now, key, req, source, reliability),
            _ if self.refuse(now, &key, &req, source, reliability) => {}
            Method::Invite => {
                let mut tx = Transaction::new(source, reliability, State::Proceeding);
                tx.trying_at = Some(now + self.timers.trying_delay);
                tx.timer_c_at = Some(now + self.timers.server_invite_timeout);
                tx.request = Some(req.clone());
                tx.merge = self.track_merge(&req, &key);
                self.insert_tx(key.clone(), tx);
                self.events.push_back(TuEvent::Request {
                    key,
                    request: req,
                    source,
                });
            }
            _ => {
                let mut tx = Transaction::new(source, reliability, State::Trying);
                // The client gives up after 64*T1 (Timer F); a TU that never answers must not
                // leave the transaction behind.
                tx.end_at = Some(now + 64 * self.timers.t1);
                tx.end_is_timeout = true;
                tx.merge = self.track_merge(&req, &key);
                self.insert_tx(key.clone(), tx);
                self.events.push_back(TuEvent::Request {
                    key,
                    request: req,
                    source,
                });
            }
        }
    }

    fn track_merge(&mut self, req: &Request, key: &TransactionKey) -> Option<MergeKey> {
        let m = merge_key(req)?;
        self.merges.insert(m.clone(), key.clone());
        Some(m)
    }

    /// Checks a request that starts a new server transaction; if it must be refused, answers
    /// it (through a server transaction of its own, so retransmissions are absorbed and an
    /// INVITE's ACK is matched) and returns `true`.
    fn refuse(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        req: &Request,
        source: SocketAddr,
        reliability: Reliability,
    ) -> bool {
        let merged = merge_key(req)
            .and_then(|m| self.merges.get(&m))
            .is_some_and(|k| k != key && self.transactions.contains_key(k));
        let rejection = if merged {
            Some(Rejection::LoopDetected)
        } else {
            self.policy
                .as_ref()
                .and_then(|p| validate_request(req, p).err())
        };
        let Some(rejection) = rejection else {
            return false;
        };
        let fallback = UasPolicy::gateway();
        let policy = self.policy.as_ref().unwrap_or(&fallback);
        let mut resp = rejection.response(req, policy);
        self.tag_counter += 1;
        resp.ensure_to_tag(&format!("sbr{:x}", self.tag_counter));
        let state = if req.method == Method::Invite {
            State::Proceeding
        } else {
            State::Trying
        };
        self.insert_tx(key.clone(), Transaction::new(source, reliability, state));
        self.stats.rejected_requests += 1;
        // Cannot fail: the transaction was just inserted and has sent nothing.
        let _ = self.send_response(now, key, resp);
        true
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        key: TransactionKey,
        req: Request,
        source: SocketAddr,
        reliability: Reliability,
    ) {
        // §9.2: the CANCEL matches the INVITE server transaction with the same branch/sent-by.
        let invite_key = TransactionKey {
            method: Method::Invite,
            ..key.clone()
        };
        let invite_pending = self
            .transactions
            .get(&invite_key)
            .is_some_and(|t| t.state == State::Proceeding);
        let found = self.transactions.contains_key(&invite_key);
        let tx = Transaction::new(source, reliability, State::Trying);
        self.insert_tx(key.clone(), tx);
        let status = if found { 200 } else { 481 };
        let mut resp = Response::for_request(&req, status);
        resp.ensure_to_tag("cancel");
        // The layer answers the CANCEL itself; the TU only hears about the INVITE.
        let _ = self.send_response(now, &key, resp);
        if invite_pending {
            self.events
                .push_back(TuEvent::Cancelled { invite: invite_key });
        }
    }

    fn handle_response(&mut self, now: Instant, resp: Response) {
        // §8.1.3.3: a response with more than one Via was meant for someone else.
        if resp.headers.vias().map_or(true, |v| v.len() != 1) {
            self.stats.malformed_responses_dropped += 1;
            self.stats.misrouted_responses += 1;
            self.stats.last_malformed = Some(format!(
                "response {} {}: {} Via values, expected exactly 1",
                resp.status,
                resp.reason,
                resp.headers.vias().map_or(0, |v| v.len())
            ));
            return;
        }
        let key = match (branch_of(&resp.headers), resp.headers.cseq()) {
            (Some((branch, _)), Ok(cseq)) => TransactionKey {
                branch,
                sent_by: String::new(),
                method: cseq.method,
                role: Role::Client,
            },
            _ => {
                self.stats.stray_responses += 1;
                return;
            }
        };
        let timers = self.timers;
        let Some(tx) = self.tx_mut(&key) else {
            self.stats.stray_responses += 1;
            return;
        };
        let reliability = tx.reliability;
        let provisional = resp.status < 200;
        let success = (200..300).contains(&resp.status);
        if key.method == Method::Invite {
            match (tx.state, provisional, success) {
                (State::Calling | State::Proceeding, true, _) => {
                    tx.state = State::Proceeding;
                    tx.retransmit_at = None;
                    // Timer B only runs in Calling (§17.1.1.2): a ringing call must not time
                    // out at 64*T1.
                    if tx.end_is_timeout && tx.cancel_sent_at.is_none() {
                        tx.end_at = None;
                    }
                    if let Some(c) = timers.timer_c
                        && tx.cancel_sent_at.is_none()
                    {
                        tx.timer_c_at = Some(now + c);
                    }
                    self.events.push_back(TuEvent::Response {
                        key,
                        response: resp,
                    });
                }
                (State::Calling | State::Proceeding, false, true) => {
                    // RFC 6026: Accepted, pass this and any retransmitted 2xx up (Timer M).
                    tx.state = State::Accepted;
                    tx.retransmit_at = None;
                    tx.timer_c_at = None;
                    tx.end_is_timeout = false;
                    tx.end_at = Some(now + 64 * timers.t1);
                    self.events.push_back(TuEvent::Response {
                        key,
                        response: resp,
                    });
                }
                (State::Accepted, false, true) => {
                    self.events.push_back(TuEvent::Response {
                        key,
                        response: resp,
                    });
                }
                (State::Calling | State::Proceeding, false, false) => {
                    let ack = tx
                        .request
                        .as_ref()
                        .map(|req| build_ack(req, &resp).to_bytes())
                        .unwrap_or_default();
                    tx.state = State::Completed;
                    tx.retransmit_at = None;
                    tx.timer_c_at = None;
                    tx.end_is_timeout = false;
                    tx.end_at = Some(now + completion(reliability, timers.timer_d));
                    tx.ack = Some(ack.clone());
                    let peer = tx.peer;
                    self.transmit(peer, ack);
                    self.events.push_back(TuEvent::Response {
                        key,
                        response: resp,
                    });
                }
                (State::Completed, false, false) => {
                    // Retransmitted final: resend the ACK, TU does not hear it again.
                    if let Some(ack) = tx.ack.clone() {
                        let peer = tx.peer;
                        self.transmit(peer, ack);
                    }
                }
                _ => {}
            }
            return;
        }
        match (tx.state, provisional) {
            (State::Trying | State::Proceeding, true) => {
                tx.state = State::Proceeding;
                self.events.push_back(TuEvent::Response {
                    key,
                    response: resp,
                });
            }
            (State::Trying | State::Proceeding, false) => {
                tx.state = State::Completed;
                tx.retransmit_at = None;
                tx.end_is_timeout = false;
                tx.end_at = Some(now + completion(reliability, timers.t4));
                self.events.push_back(TuEvent::Response {
                    key,
                    response: resp,
                });
            }
            _ => {}
        }
    }

    /// Starts a client transaction for `req` (which must carry a top Via with a branch) and
    /// sends it to `dest`. ACK is refused: send it directly.
    pub fn send_request(
        &mut self,
        now: Instant,
        req: Request,
        dest: SocketAddr,
        reliability: Reliability,
    ) -> Result<TransactionKey, TransactionError> {
        if req.method == Method::Ack {
            return Err(TransactionError::AckHasNoTransaction);
        }
        let via = req
            .headers
            .top_via()
            .map_err(|_| TransactionError::MissingBranch)?;
        let branch = via
            .branch()
            .ok_or(TransactionError::MissingBranch)?
            .to_owned();
        let key = TransactionKey {
            branch,
            sent_by: String::new(),
            method: req.method.clone(),
            role: Role::Client,
        };
        if self.transactions.contains_key(&key) {
            return Err(TransactionError::Duplicate);
        }
        let bytes = req.to_bytes();
        let t1 = self.timers.t1;
        let invite = req.method == Method::Invite;
        let mut tx = Transaction::new(
            dest,
            reliability,
            if invite {
                State::Calling
            } else {
                State::Trying
            },
        );
        tx.end_at = Some(now + 64 * t1);
        tx.end_is_timeout = true;
        if reliability == Reliability::Unreliable {
            tx.interval = t1;
            tx.retransmit_at = Some(now + t1);
        }
        tx.last_sent = Some(bytes.clone());
        if invite {
            tx.request = Some(req);
        }
        self.insert_tx(key.clone(), tx);
        self.reschedule();
        self.transmit(dest, bytes);
        Ok(key)
    }

    /// Sends `resp` on server transaction `key` (the TU answering a [`TuEvent::Request`]).
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        mut resp: Response,
    ) -> Result<(), TransactionError> {
        let timers = self.timers;
        let tx = self
            .tx_mut(key)
            .ok_or(TransactionError::NoSuchTransaction)?;
        stamp_received(&mut resp, tx.peer);
        if matches!(
            tx.state,
            State::Completed | State::Confirmed | State::Accepted
        ) {
            return Err(TransactionError::AlreadyFinal);
        }
        let bytes = resp.to_bytes();
        let reliability = tx.reliability;
        let provisional = resp.status < 200;
        tx.trying_at = None;
        if !provisional {
            tx.timer_c_at = None;
        }
        if key.method == Method::Invite {
            if provisional {
                tx.state = State::Proceeding;
                tx.last_sent = Some(bytes.clone());
            } else if (200..300).contains(&resp.status) {
                // RFC 6026 Accepted: 2xx retransmission is the TU's (dialog's) job; absorb
                // INVITE retransmissions until Timer L.
                tx.state = State::Accepted;
                tx.last_sent = None;
                tx.end_is_timeout = false;
                tx.end_at = Some(now + 64 * timers.t1);
            } else {
                tx.state = State::Completed;
                tx.last_sent = Some(bytes.clone());
                if reliability == Reliability::Unreliable {
                    tx.interval = timers.t1;
                    tx.retransmit_at = Some(now + timers.t1);
                }
                tx.end_is_timeout = true; // Timer H: ACK never came
                tx.end_at = Some(now + 64 * timers.t1);
            }
        } else if provisional {
            tx.state = State::Proceeding;
            tx.last_sent = Some(bytes.clone());
        } else {
            tx.state = State::Completed;
            tx.last_sent = Some(bytes.clone());
            tx.end_is_timeout = false;
            tx.end_at = Some(now + completion(reliability, 64 * timers.t1));
        }
        let peer = tx.peer;
        self.transmit(peer, bytes);
        self.reschedule();
        Ok(())
    }

    /// Builds a CANCEL for the pending INVITE client transaction `invite` and starts its own
    /// non-INVITE client transaction (RFC 3261 §9.1). Returns the CANCEL's key.
    pub fn cancel(
        &mut self,
        now: Instant,
        invite: &TransactionKey,
    ) -> Result<TransactionKey, TransactionError> {
        let tx = self
            .transactions
            .get(invite)
            .ok_or(TransactionError::NoSuchTransaction)?;
        if !matches!(tx.state, State::Calling | State::Proceeding) {
            return Err(TransactionError::AlreadyFinal);
        }
        let req = tx
            .request
            .as_ref()
            .ok_or(TransactionError::NoSuchTransaction)?;
        let (peer, reliability) = (tx.peer, tx.reliability);
        let cancel = build_cancel(req);
        self.send_request(now, cancel, peer, reliability)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timers = self.timers;
        let mut ended = Vec::new();
        let mut sends = Vec::new();
        let mut timeouts = Vec::new();
        let mut cancels = Vec::new();
        let mut due = Vec::new();
        while let Some(&Reverse((at, seq))) = self.timer_heap.peek() {
            if at > now {
                break;
            }
            self.timer_heap.pop();
            let Some(key) = self.timer_keys.remove(&seq) else {
                continue;
            };
            if self
                .transactions
                .get(&key)
                .is_some_and(|t| t.scheduled == Some((at, seq)))
            {
                due.push(key);
            }
        }
        for key in &due {
            let Some(tx) = self.transactions.get_mut(key) else {
                continue;
            };
            tx.scheduled = None;
            self.dirty.push(key.clone());
            if tx.trying_at.is_some_and(|t| t <= now) {
                tx.trying_at = None;
                if let Some(req) = &tx.request {
                    let mut trying = Response::for_request(req, 100);
                    stamp_received(&mut trying, tx.peer);
                    let trying = trying.to_bytes();
                    tx.last_sent = Some(trying.clone());
                    sends.push((tx.peer, trying));
                }
            }
            if tx.timer_c_at.is_some_and(|t| t <= now) {
                tx.timer_c_at = None;
                if key.role == Role::Server {
                    // The TU never answered: 408 on its behalf, then the normal Completed
                    // flow (Timer G/H) ends the transaction.
                    if let Some(req) = &tx.request {
                        let mut resp = Response::for_request(req, 408);
                        stamp_received(&mut resp, tx.peer);
                        resp.ensure_to_tag("sb-timeout");
                        let bytes = resp.to_bytes();
                        tx.state = State::Completed;
                        tx.trying_at = None;
                        tx.last_sent = Some(bytes.clone());
                        if tx.reliability == Reliability::Unreliable {
                            tx.interval = timers.t1;
                            tx.retransmit_at = Some(now + timers.t1);
                        }
                        tx.end_is_timeout = false;
                        tx.end_at = Some(now + 64 * timers.t1);
                        sends.push((tx.peer, bytes));
                    }
                    timeouts.push(key.clone());
                    continue;
                }
                // Client INVITE ringing too long: CANCEL it and wait (64*T1) for the 487.
                if let Some(req) = &tx.request
                    && tx.state == State::Proceeding
                {
                    cancels.push((build_cancel(req), tx.peer, tx.reliability));
                    tx.cancel_sent_at = Some(now);
                    tx.end_is_timeout = false;
                    tx.end_at = Some(now + 64 * timers.t1);
                    timeouts.push(key.clone());
                    continue;
                }
                ended.push((key.clone(), true));
                continue;
            }
            if tx.end_at.is_some_and(|t| t <= now) {
                ended.push((key.clone(), tx.end_is_timeout));
                continue;
            }
            if let Some(at) = tx.retransmit_at
                && at <= now
            {
                if let Some(bytes) = tx.last_sent.clone() {
                    sends.push((tx.peer, bytes));
                    self.stats.retransmissions += 1;
                }
                // Timer A doubles without cap; E and G cap at T2 (§17.1.1.2, §17.1.2.2, §17.2.1).
                let doubled = tx.interval * 2;
                tx.interval = if key.role == Role::Client && key.method == Method::Invite {
                    doubled
                } else if tx.state == State::Proceeding && key.role == Role::Client {
                    timers.t2
                } else {
                    doubled.min(timers.t2)
                };
                tx.retransmit_at = Some(at + tx.interval);
            }
        }
        for (dest, bytes) in sends {
            self.transmit(dest, bytes);
        }
        for key in timeouts {
            self.events.push_back(TuEvent::Timeout { key });
        }
        for (cancel, peer, reliability) in cancels {
            // Fails only if a CANCEL for this branch already exists (the TU sent one).
            let _ = self.send_request(now, cancel, peer, reliability);
        }
        for (key, timed_out) in ended {
            if let Some(m) = self.transactions.remove(&key).and_then(|t| t.merge) {
                self.merges.remove(&m);
            }
            if timed_out {
                self.events.push_back(TuEvent::Timeout { key: key.clone() });
            }
            self.events.push_back(TuEvent::Terminated { key });
        }
        self.reschedule();
    }
}

/// RFC 3261 §18.2.1 and RFC 3581: record in the response's top Via where the request really
/// came from — `received` when the source IP differs from sent-by (and always when the client
/// asked for `rport`, RFC 3581 §4), and `rport` filled with the source port — so responses find
/// their way back through NAT and the client can learn its public address
/// ([`reflexive_address`]).
///
/// Where the response is *sent* is the request's source address and port in every case
/// (symmetric response routing, what RFC 3581 asks when `rport` is present and what NATed
/// phones without rport support need too): see `docs/decisions/0007-symmetric-responses.md`.
pub fn stamp_received(resp: &mut Response, source: SocketAddr) {
    let Some(value) = resp.headers.get(&HeaderName::Via) else {
        return;
    };
    let Ok(items) = parse::split_list(value) else {
        return;
    };
    let Some((first, rest)) = items.split_first() else {
        return;
    };
    let Ok(mut via) = parse::parse_via(first) else {
        return;
    };
    let ip = source.ip().to_string();
    let mut changed = false;
    let rport_requested = via.params.get("rport") == Some(None);
    if rport_requested {
        via.params.set("rport", Some(&source.port().to_string()));
        changed = true;
    }
    if (rport_requested || via.host.trim_start_matches('[').trim_end_matches(']') != ip)
        && via.received() != Some(ip.as_str())
    {
        via.params.set("received", Some(&ip));
        changed = true;
    }
    if !changed {
        return;
    }
    let mut new_value = via.to_string();
    for item in rest {
        new_value.push_str(", ");
        new_value.push_str(item);
    }
    // Replace the first Via field only, keeping any further Via fields as they are.
    let mut headers = super::message::Headers::with_capacity(resp.headers.len());
    let mut done = false;
    for h in resp.headers.iter() {
        if !done && h.name == HeaderName::Via {
            headers.push(HeaderName::Via, new_value.clone());
            done = true;
        } else {
            headers.push(h.name.clone(), h.value.clone());
        }
    }
    resp.headers = headers;
}

/// Our address as the peer saw it (RFC 3581 §9): `received` and `rport` of the top Via of a
/// response to a request we sent with `;rport`. A gateway behind NAT uses it to put a
/// reachable address in its Contact (e.g. when registering to a carrier); `None` when the
/// peer did not fill both in.
pub fn reflexive_address(resp: &Response) -> Option<SocketAddr> {
    let via = resp.headers.top_via().ok()?;
    let ip: std::net::IpAddr = via
        .received()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, via.rport()??))
}

fn completion(reliability: Reliability, d: Duration) -> Duration {
    match reliability {
        Reliability::Reliable => Duration::ZERO,
        Reliability::Unreliable => d,
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI, top Via, From,
/// Call-ID, CSeq number and Route as the INVITE; To from the response.
pub fn build_ack(invite: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get(&HeaderName::Via) {
        let top = parse::split_list(via)
            .ok()
            .and_then(|l| l.first().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| via.to_owned());
        ack.headers.push(HeaderName::Via, top);
    }
    ack.headers.push(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(to) = resp.headers.get(&HeaderName::To) {
        ack.headers.push(HeaderName::To, to);
    }
    if let Ok(cseq) = invite.headers.cseq() {
        ack.headers
            .push(HeaderName::CSeq, format!("{} ACK", cseq.seq));
    }
    for route in invite.headers.get_all(&HeaderName::Route) {
        ack.headers.push(HeaderName::Route, route);
    }
    ack
}

/// A CANCEL for `invite` (RFC 3261 §9.1): same Request-URI, top Via, From, To, Call-ID, CSeq
/// number and Route.
pub fn build_cancel(invite: &Request) -> Request {
    let mut c = Request::new(Method::Cancel, invite.uri.clone());
    if let Some(via) = invite.headers.get(&HeaderName::Via) {
        let top = parse::split_list(via)
            .ok()
            .and_then(|l| l.first().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| via.to_owned());
        c.headers.push(HeaderName::Via, top);
    }
    c.headers.push(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            c.headers.push(name, v);
        }
    }
    if let Ok(cseq) = invite.headers.cseq() {
        c.headers
            .push(HeaderName::CSeq, format!("{} CANCEL", cseq.seq));
    }
    for route in invite.headers.get_all(&HeaderName::Route) {
        c.headers.push(HeaderName::Route, route);
    }
    c
}

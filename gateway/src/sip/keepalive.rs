//! OPTIONS keepalive pings to trunks, sans-IO: ping at an interval, mark a trunk down after N
//! failures in a row (no answer within the ping timeout, or a status that means "not
//! serving"), up again on the first good answer; measure the round-trip time. The engine's
//! routing asks [`TrunkPinger::is_up`] (or [`TrunkMonitor::is_up`] by trunk name) to fail over.
//!
//! A ping is an ordinary non-INVITE client transaction: send what
//! [`TrunkPinger::handle_timeout`] returns through the transaction layer, feed its final
//! response to [`TrunkPinger::handle_response`] (a response to an older ping is ignored). The
//! pinger has its own, shorter timeout than Timer F (default 5 s): a trunk that takes longer
//! than that to answer OPTIONS is not fit to take calls. Any final response proves the trunk
//! is alive, except those in [`PingConfig::down_statuses`] (408 and 503 by default: timed out
//! upstream, overloaded); a 401/404/405/501 still means "it is there".
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use gateway::sip::dialog::ViaTemplate;
//! use gateway::sip::keepalive::{PingConfig, TrunkPinger, TrunkState};
//! use gateway::sip::message::{Response, Uri};
//!
//! let t0 = Instant::now();
//! let mut p = TrunkPinger::new(
//!     t0,
//!     PingConfig::default(),
//!     Uri::parse("sip:192.0.2.50:5060").unwrap(),
//!     Uri::parse("sip:ping@192.0.2.1").unwrap(),
//!     ViaTemplate { transport: "UDP".into(), sent_by: "192.0.2.1:5060".into() },
//!     "carrier-a",
//! );
//! let options = p.handle_timeout(t0, "z9hG4bK1").expect("first ping at once");
//! let ok = Response::for_request(&options, 200);
//! p.handle_response(t0 + Duration::from_millis(12), &ok);
//! assert_eq!(p.state(), TrunkState::Up);
//! assert_eq!(p.rtt(), Some(Duration::from_millis(12)));
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::dialog::ViaTemplate;
use super::message::{HeaderName, Method, Request, Response, Uri};

/// Settings of a [`TrunkPinger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingConfig {
    /// Time between pings while up (default 30 s).
    pub interval: Duration,
    /// Time between pings while down or unknown (default 10 s), so recovery is seen soon.
    pub down_interval: Duration,
    /// A ping not answered within this counts as failed (default 5 s).
    pub timeout: Duration,
    /// Failures in a row that mark the trunk down (default 3).
    pub down_after: u32,
    /// Final statuses that count as failures (default 408, 503).
    pub down_statuses: Vec<u16>,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            interval: Duration::from_secs(30),
            down_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            down_after: 3,
            down_statuses: vec![408, 503],
        }
    }
}

/// A trunk's reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkState {
    /// Not yet pinged (routing may use it).
    Unknown,
    /// The last ping was answered.
    Up,
    /// `down_after` pings in a row failed.
    Down,
}

/// A state change, for logs and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkChange {
    /// The trunk's name.
    pub trunk: String,
    /// Before.
    pub from: TrunkState,
    /// After.
    pub to: TrunkState,
    /// Why: the status that answered, or 408 for no answer in time.
    pub status: u16,
}

/// Counters of one trunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingStats {
    /// Pings sent.
    pub sent: u64,
    /// Pings answered with a good status.
    pub answered: u64,
    /// Pings that failed (no answer in time, or a down status).
    pub failed: u64,
}

#[derive(Debug, Clone)]
struct InFlight {
    call_id: String,
    sent_at: Instant,
    timed_out: bool,
}

/// The keepalive state of one trunk.
#[derive(Debug, Clone)]
pub struct TrunkPinger {
    config: PingConfig,
    target: Uri,
    from: Uri,
    via: ViaTemplate,
    name: String,
    state: TrunkState,
    failures: u32,
    next_at: Option<Instant>,
    in_flight: Option<InFlight>,
    counter: u64,
    rtt: Option<Duration>,
    rtt_avg: Option<Duration>,
    last_status: Option<u16>,
    stats: PingStats,
    pending: Vec<TrunkChange>,
}

impl TrunkPinger {
    /// A pinger for `target` (the trunk's URI, also the Request-URI), sending from `from` via
    /// `via`. The first ping is due at `now`.
    pub fn new(
        now: Instant,
        config: PingConfig,
        target: Uri,
        from: Uri,
        via: ViaTemplate,
        name: &str,
    ) -> Self {
        TrunkPinger {
            config,
            target,
            from,
            via,
            name: name.to_owned(),
            state: TrunkState::Unknown,
            failures: 0,
            next_at: Some(now),
            in_flight: None,
            counter: 0,
            rtt: None,
            rtt_avg: None,
            last_status: None,
            stats: PingStats::default(),
            pending: Vec::new(),
        }
    }

    /// The trunk's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Up, down or not yet known.
    pub fn state(&self) -> TrunkState {
        self.state
    }

    /// Whether routing may use the trunk (up, or not yet known).
    pub fn is_up(&self) -> bool {
        self.state != TrunkState::Down
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The smoothed round-trip time (RFC 6298-style, 1/8 weight).
    pub fn rtt_smoothed(&self) -> Option<Duration> {
        self.rtt_avg
    }

    /// Failed pings in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last final status seen (408 for no answer in time).
    pub fn last_status(&self) -> Option<u16> {
        self.last_status
    }

    /// Counters.
    pub fn stats(&self) -> &PingStats {
        &self.stats
    }

    /// When to call [`TrunkPinger::handle_timeout`]: the in-flight ping's timeout while one
    /// is unanswered (no second ping is sent meanwhile), else the next ping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.in_flight.as_ref().filter(|f| !f.timed_out) {
            Some(f) => Some(f.sent_at + self.config.timeout),
            None => self.next_at,
        }
    }

    /// Runs the timers: a ping past its timeout counts as failed (and may mark the trunk
    /// down: see [`TrunkPinger::take_change`]); returns the OPTIONS to send when one is due
    /// (with Via branch `branch`).
    pub fn handle_timeout(&mut self, now: Instant, branch: &str) -> Option<Request> {
        if let Some(f) = &mut self.in_flight
            && !f.timed_out
            && now >= f.sent_at + self.config.timeout
        {
            f.timed_out = true;
            self.failure(now, 408);
        }
        let waiting = self.in_flight.as_ref().is_some_and(|f| !f.timed_out);
        if waiting || self.next_at.is_some_and(|t| t > now) {
            return None;
        }
        Some(self.ping(now, branch))
    }

    /// The normal interval while up and healthy; the shorter one while down, not yet known,
    /// or suspect (a ping failed), so both failure and recovery are seen soon.
    fn interval(&self) -> Duration {
        if self.state == TrunkState::Up && self.failures == 0 {
            self.config.interval
        } else {
            self.config.down_interval
        }
    }

    fn ping(&mut self, now: Instant, branch: &str) -> Request {
        self.counter += 1;
        let call_id = format!("sbping-{}-{}", self.name, self.counter);
        let mut r = Request::new(Method::Options, self.target.clone());
        let h = &mut r.headers;
        h.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                self.via.transport, self.via.sent_by
            ),
        );
        h.push(HeaderName::MaxForwards, "70");
        h.push(
            HeaderName::From,
            format!("<{}>;tag=sbp{}", self.from, self.counter),
        );
        h.push(HeaderName::To, format!("<{}>", self.target));
        h.push(HeaderName::CallId, call_id.clone());
        h.push(HeaderName::CSeq, "1 OPTIONS");
        h.push(HeaderName::Accept, "application/sdp");
        self.in_flight = Some(InFlight {
            call_id,
            sent_at: now,
            timed_out: false,
        });
        self.stats.sent += 1;
        self.next_at = Some(now + self.interval());
        r
    }

    fn failure(&mut self, now: Instant, status: u16) {
        self.stats.failed += 1;
        self.last_status = Some(status);
        self.failures = self.failures.saturating_add(1);
        let retry = now + self.config.down_interval;
        self.next_at = Some(self.next_at.map_or(retry, |t| t.min(retry)));
        if self.failures >= self.config.down_after.max(1) && self.state != TrunkState::Down {
            self.set(TrunkState::Down, status);
        }
    }

    fn set(&mut self, to: TrunkState, status: u16) {
        if self.state != to {
            self.pending.push(TrunkChange {
                trunk: self.name.clone(),
                from: self.state,
                to,
                status,
            });
            self.state = to;
        }
    }

    /// Feeds the final response to a ping. Returns the state change it caused, if any.
    pub fn handle_response(&mut self, now: Instant, resp: &Response) -> Option<TrunkChange> {
        if resp.status < 200 {
            return None;
        }
        let call_id = resp.headers.call_id().ok()?;
        let f = self.in_flight.take_if(|f| f.call_id == call_id)?;
        let rtt = now.saturating_duration_since(f.sent_at);
        if self.config.down_statuses.contains(&resp.status) {
            if !f.timed_out {
                self.failure(now, resp.status);
            }
            return self.take_change();
        }
        self.rtt = Some(rtt);
        self.rtt_avg = Some(match self.rtt_avg {
            Some(avg) => (avg * 7 + rtt) / 8,
            None => rtt,
        });
        self.stats.answered += 1;
        self.last_status = Some(resp.status);
        self.failures = 0;
        let was_down = self.state != TrunkState::Up;
        self.set(TrunkState::Up, resp.status);
        if was_down {
            // Back up: return to the normal interval from now.
            self.next_at = Some(now + self.config.interval);
        }
        self.take_change()
    }

    /// The ping's transaction ended without a response (Timer F, or a transport error).
    pub fn transaction_failed(&mut self, now: Instant) -> Option<TrunkChange> {
        if let Some(f) = self.in_flight.take()
            && !f.timed_out
        {
            self.failure(now, 408);
        }
        self.take_change()
    }

    /// The state change caused by the last [`TrunkPinger::handle_timeout`], if any.
    pub fn take_change(&mut self) -> Option<TrunkChange> {
        self.pending.pop()
    }
}

/// Every trunk's pinger, by name, for the router's failover queries.
#[derive(Debug, Default)]
pub struct TrunkMonitor {
    trunks: HashMap<String, TrunkPinger>,
}

impl TrunkMonitor {
    /// An empty monitor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a trunk.
    pub fn insert(&mut self, pinger: TrunkPinger) {
        self.trunks.insert(pinger.name.clone(), pinger);
    }

    /// Removes a trunk.
    pub fn remove(&mut self, name: &str) -> Option<TrunkPinger> {
        self.trunks.remove(name)
    }

    /// Whether `name` may take calls (unknown trunks count as up: no monitoring configured).
    pub fn is_up(&self, name: &str) -> bool {
        self.trunks.get(name).is_none_or(TrunkPinger::is_up)
    }

    /// One trunk.
    pub fn get(&self, name: &str) -> Option<&TrunkPinger> {
        self.trunks.get(name)
    }

    /// One trunk, mutably (to feed its responses).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut TrunkPinger> {
        self.trunks.get_mut(name)
    }

    /// All trunks.
    pub fn iter(&self) -> impl Iterator<Item = &TrunkPinger> {
        self.trunks.values()
    }

    /// The earliest timer of any trunk.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.trunks
            .values()
            .filter_map(TrunkPinger::poll_timeout)
            .min()
    }

    /// The trunk a ping response belongs to (by its Call-ID).
    pub fn trunk_of(&self, resp: &Response) -> Option<&str> {
        let call_id = resp.headers.call_id().ok()?;
        self.trunks
            .values()
            .find(|p| p.in_flight.as_ref().is_some_and(|f| f.call_id == call_id))
            .map(|p| p.name.as_str())
    }
}

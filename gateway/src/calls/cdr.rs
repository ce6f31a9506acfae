//! Call detail records: one JSON object per call, written as a line when the call ends, keyed by
//! the call URI. What a billing or troubleshooting system needs: who called whom, when it was
//! set up, answered and ended, how long it was billable, why it ended (Q.850 cause and SIP
//! status, and which side hung up), which route and trunks it used, each destination tried, and
//! each leg's codec and media figures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::leg::{AudioCodec, LegId, LegKind};
use crate::control::CallUri;

/// One destination tried by the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The destination (`trunk:pbx`, `span_group:e1`, ...).
    pub destination: String,
    /// Q.850 cause it failed with (absent if it answered).
    pub q850: Option<u8>,
    /// SIP status it failed with.
    pub sip_status: Option<u16>,
    /// Detail.
    pub text: Option<String>,
}

/// Media figures of one leg, filled in by the shell from the media plane at release.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LegMediaStats {
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Packets lost (RFC 3550 cumulative).
    pub packets_lost: i64,
    /// Interarrival jitter in ms.
    pub jitter_ms: f64,
}

/// One leg of the call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CdrLeg {
    /// The leg.
    pub leg: LegId,
    /// Its technology.
    pub kind: LegKind,
    /// `inbound` (it called us) or `outbound` (we called it).
    pub direction: &'static str,
    /// Where it went or came from (trunk, URI, service, span group).
    pub peer: String,
    /// Codec used.
    pub codec: Option<AudioCodec>,
    /// When it answered (RFC 3339).
    pub answered: Option<String>,
    /// Q.850 cause it ended with.
    pub q850: Option<u8>,
    /// Media figures (RTP legs).
    pub media: Option<LegMediaStats>,
}

/// A call detail record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cdr {
    /// The call's URI (the key).
    pub call_uri: CallUri,
    /// When the first leg appeared (RFC 3339, UTC).
    pub start: String,
    /// When the call was answered: the caller's leg was answered (by the called party, or by
    /// us for the control plane: a queued caller, a web caller accepted). Billing starts here.
    pub answer: Option<String>,
    /// When the caller was first connected to another party (the called party, an agent).
    /// Equal to `answer` for a routed call; later for a queued one (the wait is the
    /// difference). Absent if the caller never reached anyone.
    pub connected: Option<String>,
    /// When it ended.
    pub end: String,
    /// Start to end, ms.
    pub duration_ms: u64,
    /// Answer to end, ms (0 if never answered).
    pub billable_ms: u64,
    /// Calling number/user.
    pub caller: String,
    /// Calling name.
    pub caller_name: Option<String>,
    /// Called number/user as received.
    pub callee: String,
    /// The request URI as received.
    pub request_uri: String,
    /// The matching route.
    pub route: Option<String>,
    /// The number after the route's strip/prepend.
    pub dialled: Option<String>,
    /// The trunk the call came in on.
    pub in_trunk: Option<String>,
    /// The destination that answered, or the last one tried.
    pub destination: Option<String>,
    /// Why the call ended (Q.850).
    pub q850: u8,
    /// The SIP status that ended it, if one did.
    pub sip_status: Option<u16>,
    /// Detail of the cause.
    pub cause: String,
    /// Who ended it: `caller`, `callee`, `gateway` or `control`.
    pub ended_by: String,
    /// Destinations tried, in order.
    pub attempts: Vec<Attempt>,
    /// The legs.
    pub legs: Vec<CdrLeg>,
}

impl Cdr {
    /// The record as one JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Serialising plain data cannot fail; an empty object is a safe fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_999);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.999Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }
}

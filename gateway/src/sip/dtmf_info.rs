//! DTMF carried in SIP INFO bodies: `application/dtmf-relay` (`Signal=5` / `Duration=160`, the
//! Cisco format most PBXs and softphones send) and `application/dtmf` (the bare digit), parsed
//! and formatted.
//!
//! Digits are the characters `0-9 * # A-D` and `!` for a hook flash (RFC 4733 event 16), the
//! same characters the media engine's RFC 4733 code uses, so a digit can be relayed between
//! INFO and telephone-events unchanged. Numeric signals (`Signal=10` for `*`, `11` for `#`,
//! `12`–`15` for `A`–`D`, `16` for flash) are accepted too. An INFO retransmission never
//! yields a second digit: the transaction layer absorbs it; each new INFO transaction is one
//! key press.
//!
//! ```
//! use std::time::Duration;
//! use gateway::sip::dtmf_info::{DtmfBody, DtmfInfo};
//!
//! let d = DtmfInfo::parse_body("application/dtmf-relay", b"Signal=#\r\nDuration=250\r\n").unwrap();
//! assert_eq!(d, DtmfInfo { digit: '#', duration: Some(Duration::from_millis(250)) });
//! let (content_type, body) = DtmfInfo::new('5', Duration::from_millis(160)).unwrap().to_body(DtmfBody::DtmfRelay);
//! assert_eq!(content_type, "application/dtmf-relay");
//! assert_eq!(body, b"Signal=5\r\nDuration=160\r\n");
//! ```

use std::time::Duration;

use thiserror::Error;

use super::dialog::{Dialog, DialogError};
use super::message::{HeaderName, Method, Request};

/// Which INFO body format to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfBody {
    /// `application/dtmf-relay`: `Signal=` and `Duration=` lines.
    DtmfRelay,
    /// `application/dtmf`: the digit alone.
    Dtmf,
}

impl DtmfBody {
    /// The Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            DtmfBody::DtmfRelay => "application/dtmf-relay",
            DtmfBody::Dtmf => "application/dtmf",
        }
    }
}

/// Why an INFO body is not a usable DTMF digit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DtmfInfoError {
    /// The body has no `Signal=` line.
    #[error("dtmf-relay body has no Signal line")]
    MissingSignal,
    /// The signal is not a DTMF digit or flash.
    #[error("{0:?} is not a DTMF signal")]
    BadSignal(String),
    /// `Duration=` is not a number of milliseconds.
    #[error("{0:?} is not a duration in milliseconds")]
    BadDuration(String),
    /// The body is not UTF-8 text.
    #[error("body is not text")]
    NotText,
}

/// One key press received or to send by INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfInfo {
    /// `0-9 * # A-D`, or `!` for flash.
    pub digit: char,
    /// How long the key was held, if given.
    pub duration: Option<Duration>,
}

const DIGITS: &[u8; 17] = b"0123456789*#ABCD!";

fn signal_to_digit(s: &str) -> Option<char> {
    let s = s.trim();
    if let Ok(n) = s.parse::<usize>() {
        return DIGITS.get(n).map(|&c| char::from(c));
    }
    let mut chars = s.chars();
    let c = chars.next()?.to_ascii_uppercase();
    if chars.next().is_some() {
        return None;
    }
    if !c.is_ascii() {
        return None;
    }
    DIGITS.contains(&(c as u8)).then_some(c)
}

/// Longest duration accepted from a peer (a key "held" longer is an error upstream).
const MAX_DURATION_MS: u64 = 60_000;

impl DtmfInfo {
    /// A digit to send; `None` if `digit` is not `0-9 * # A-D !`.
    pub fn new(digit: char, duration: Duration) -> Option<DtmfInfo> {
        let d = signal_to_digit(&digit.to_string())?;
        Some(DtmfInfo {
            digit: d,
            duration: Some(duration),
        })
    }

    /// Parses an INFO body of `content_type` (`application/dtmf` is the bare digit; anything
    /// else is read as `application/dtmf-relay`; parameters ignored).
    pub fn parse_body(content_type: &str, body: &[u8]) -> Result<DtmfInfo, DtmfInfoError> {
        let text = std::str::from_utf8(body).map_err(|_| DtmfInfoError::NotText)?;
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if ct == "application/dtmf" {
            let digit = signal_to_digit(text)
                .ok_or_else(|| DtmfInfoError::BadSignal(text.trim().to_owned()))?;
            return Ok(DtmfInfo {
                digit,
                duration: None,
            });
        }
        let mut digit = None;
        let mut duration = None;
        for line in text.lines() {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            if name.trim().eq_ignore_ascii_case("signal") {
                digit = Some(
                    signal_to_digit(value)
                        .ok_or_else(|| DtmfInfoError::BadSignal(value.to_owned()))?,
                );
            } else if name.trim().eq_ignore_ascii_case("duration") {
                let ms: u64 = value
                    .parse()
                    .ok()
                    .filter(|ms| *ms <= MAX_DURATION_MS)
                    .ok_or_else(|| DtmfInfoError::BadDuration(value.to_owned()))?;
                duration = Some(Duration::from_millis(ms));
            }
        }
        Ok(DtmfInfo {
            digit: digit.ok_or(DtmfInfoError::MissingSignal)?,
            duration,
        })
    }

    /// The DTMF digit of a received INFO request: `Ok(None)` if it is not a DTMF INFO (no body,
    /// another Content-Type, or an `Info-Package` other than `dtmf`), `Err` if its DTMF body is
    /// malformed (answer 400).
    pub fn from_request(req: &Request) -> Result<Option<DtmfInfo>, DtmfInfoError> {
        if req.method != Method::Info || req.body.is_empty() {
            return Ok(None);
        }
        if let Some(pkg) = req.headers.get(&HeaderName::InfoPackage)
            && !pkg
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("dtmf")
        {
            return Ok(None);
        }
        let Some(ct) = req.headers.get(&HeaderName::ContentType) else {
            return Ok(None);
        };
        let base = ct.split(';').next().unwrap_or("").trim();
        if !(base.eq_ignore_ascii_case("application/dtmf-relay")
            || base.eq_ignore_ascii_case("application/dtmf"))
        {
            return Ok(None);
        }
        Self::parse_body(ct, &req.body).map(Some)
    }

    /// The Content-Type and body to send.
    pub fn to_body(&self, kind: DtmfBody) -> (&'static str, Vec<u8>) {
        let body = match kind {
            DtmfBody::Dtmf => self.digit.to_string(),
            DtmfBody::DtmfRelay => format!(
                "Signal={}\r\nDuration={}\r\n",
                self.digit,
                self.duration
                    .unwrap_or(Duration::from_millis(160))
                    .as_millis()
            ),
        };
        (kind.content_type(), body.into_bytes())
    }

    /// An INFO request in `dialog` carrying this digit.
    pub fn info_request(
        &self,
        dialog: &mut Dialog,
        branch: &str,
        kind: DtmfBody,
    ) -> Result<Request, DialogError> {
        let mut req = dialog.new_request(Method::Info, branch)?;
        let (ct, body) = self.to_body(kind);
        req.headers.push(HeaderName::ContentType, ct);
        req.body = body;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relay_variants_and_bare_digits() {
        let p = |b: &str| DtmfInfo::parse_body("application/dtmf-relay", b.as_bytes());
        assert_eq!(p("Signal=1\nDuration=100\n").unwrap().digit, '1');
        assert_eq!(p("signal = *\r\nduration = 90").unwrap().digit, '*');
        assert_eq!(p("Signal=10\r\n").unwrap().digit, '*');
        assert_eq!(p("Signal=11\r\n").unwrap().digit, '#');
        assert_eq!(p("Signal=16\r\n").unwrap().digit, '!');
        assert_eq!(p("Signal=d\r\n").unwrap().digit, 'D');
        assert_eq!(p("Duration=100\r\n"), Err(DtmfInfoError::MissingSignal));
        assert!(matches!(
            p("Signal=X\r\n"),
            Err(DtmfInfoError::BadSignal(_))
        ));
        assert!(matches!(
            p("Signal=17\r\n"),
            Err(DtmfInfoError::BadSignal(_))
        ));
        assert!(matches!(
            p("Signal=1\r\nDuration=-5\r\n"),
            Err(DtmfInfoError::BadDuration(_))
        ));
        assert!(matches!(
            p("Signal=1\r\nDuration=99999999\r\n"),
            Err(DtmfInfoError::BadDuration(_))
        ));
        let d = DtmfInfo::parse_body("application/dtmf", b"7\r\n").unwrap();
        assert_eq!(d.digit, '7');
        assert!(DtmfInfo::parse_body("application/dtmf", b"77").is_err());
        assert!(DtmfInfo::parse_body("application/dtmf", &[0xff]).is_err());
    }

    #[test]
    fn formats_both_kinds() {
        let d = DtmfInfo::new('a', Duration::from_millis(200)).unwrap();
        assert_eq!(d.digit, 'A');
        assert_eq!(
            d.to_body(DtmfBody::Dtmf),
            ("application/dtmf", b"A".to_vec())
        );
        assert!(DtmfInfo::new('x', Duration::ZERO).is_none());
        for c in "0123456789*#ABCD!".chars() {
            let d = DtmfInfo::new(c, Duration::from_millis(120)).unwrap();
            let (ct, body) = d.to_body(DtmfBody::DtmfRelay);
            assert_eq!(DtmfInfo::parse_body(ct, &body).unwrap(), d);
        }
    }
}

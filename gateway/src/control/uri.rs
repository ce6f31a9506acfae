//! Call URIs: `urn:uuid:<v4>`, assigned when a call's first leg appears and kept for its whole
//! life, across transfers. Every API response, event, CDR and log line of a call carries it.

use core::fmt;
use core::str::FromStr;

/// A call's URI (RFC 4122 `urn:uuid:` form, lower-case).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct CallUri(uuid::Uuid);

impl CallUri {
    /// A new random URI.
    pub fn new() -> Self {
        CallUri(uuid::Uuid::new_v4())
    }

    /// The UUID inside.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for CallUri {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CallUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "urn:uuid:{}", self.0.hyphenated())
    }
}

/// Why a string is not a call URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a call URI (expected urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct BadCallUri(pub String);

impl FromStr for CallUri {
    type Err = BadCallUri;

    /// Accepts `urn:uuid:<uuid>` (scheme and NID case-insensitive) or a bare UUID.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let body = if t.len() >= 9
            && t.get(..9)
                .is_some_and(|p| p.eq_ignore_ascii_case("urn:uuid:"))
        {
            &t[9..]
        } else {
            t
        };
        if body.len() != 36 {
            return Err(BadCallUri(s.to_string()));
        }
        uuid::Uuid::parse_str(body)
            .map(CallUri)
            .map_err(|_| BadCallUri(s.to_string()))
    }
}

impl TryFrom<String> for CallUri {
    type Error = BadCallUri;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CallUri> for String {
    fn from(u: CallUri) -> String {
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_unique_and_round_trip() {
        let a = CallUri::new();
        let b = CallUri::new();
        assert_ne!(a, b);
        let text = a.to_string();
        assert!(text.starts_with("urn:uuid:") && text.len() == 45, "{text}");
        assert_eq!(text.parse::<CallUri>().unwrap(), a);
        assert_eq!(text.to_uppercase().parse::<CallUri>().unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<CallUri>(&json).unwrap(), a);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "urn:uuid:",
            "urn:uuid:1234",
            "urn:isbn:0451450523",
            "not a uri",
            "urn:uuid:zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
            "ürn:uuid:0",
        ] {
            assert!(bad.parse::<CallUri>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<CallUri>("\"x\"").is_err());
    }
}

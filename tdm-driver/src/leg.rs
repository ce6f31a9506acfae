//! What a TDM call leg reports upward, whatever its signalling (PRI, E&M, loop start): the
//! leg-level events a call engine needs. Causes are Q.850 values.

/// Q.850 cause values the TDM signalling uses.
pub mod cause {
    /// Unallocated (unassigned) number.
    pub const UNALLOCATED_NUMBER: u8 = 1;
    /// Normal call clearing.
    pub const NORMAL_CLEARING: u8 = 16;
    /// User busy.
    pub const USER_BUSY: u8 = 17;
    /// No user responding.
    pub const NO_USER_RESPONDING: u8 = 18;
    /// No answer from user (user alerted).
    pub const NO_ANSWER: u8 = 19;
    /// Call rejected.
    pub const CALL_REJECTED: u8 = 21;
    /// Invalid number format (address incomplete).
    pub const ADDRESS_INCOMPLETE: u8 = 28;
    /// Normal, unspecified.
    pub const NORMAL_UNSPECIFIED: u8 = 31;
    /// No circuit/channel available.
    pub const NO_CIRCUIT: u8 = 34;
    /// Network out of order (span alarm, D-channel down).
    pub const NETWORK_OUT_OF_ORDER: u8 = 38;
    /// Temporary failure.
    pub const TEMPORARY_FAILURE: u8 = 41;
    /// Requested circuit/channel not available (glare).
    pub const CHANNEL_UNAVAILABLE: u8 = 44;
    /// Recovery on timer expiry.
    pub const TIMER_EXPIRY: u8 = 102;
}

/// An event of one TDM call leg.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LegEvent {
    /// A call arrived and its address is complete.
    Incoming {
        /// Called number (may be empty: a loop-start line has none).
        called: String,
        /// Calling number, when the signalling carries one.
        calling: Option<String>,
    },
    /// The far end accepted the call for processing (PRI CALL PROCEEDING).
    Proceeding,
    /// The far end is alerting its user; `inband`: it sends ringback in-band.
    Alerting {
        /// Ringback is in the audio.
        inband: bool,
    },
    /// Call progress; `inband`: tones or announcements are in the audio (early media).
    Progress {
        /// In-band information available.
        inband: bool,
    },
    /// The far end answered (outgoing legs).
    Answered,
    /// The far user put the call on hold (PRI NOTIFY "user suspended").
    Held,
    /// The far user took the call off hold (PRI NOTIFY "user resumed").
    Resumed,
    /// Another notification (PRI NOTIFY, e.g. 0x02 bearer service change).
    Notified {
        /// Notification description (Q.931 §4.5.22 octet 3 without the extension bit).
        indicator: u8,
    },
    /// A message during the call carried display or facility elements (PRI).
    Elements {
        /// Display contents.
        display: Option<Vec<u8>>,
        /// Facility elements' contents, passed through opaquely.
        facility: Vec<Vec<u8>>,
    },
    /// The leg is gone and its channel free (or blocked); `cause` says why.
    Released {
        /// Q.850 cause.
        cause: u8,
    },
}

//! Q.850 cause values ↔ SIP status codes, per RFC 3398 (§7.2.4.1 for SIP → ISUP/Q.850 and
//! §8.2.6.1 for Q.850 → SIP), for calls between SIP and TDM (ISDN PRI, CAS) legs.
//!
//! Causes the RFC does not list are mapped by their class (the high three bits), as it
//! recommends; SIP statuses it does not list by their class (4xx, 5xx, 6xx).

/// The SIP final response for a call cleared on the TDM side with `cause`, or `None` for
/// normal call clearing (16), which is a BYE (or a CANCEL before answer), not a response.
pub fn sip_status_for_cause(cause: u8) -> Option<u16> {
    Some(match cause {
        16 => return None,
        1..=3 => 404,
        17 => 486,
        18 => 408,
        19 | 20 => 480,
        21 => 403,
        22 | 23 => 410,
        26 => 404,
        27 => 502,
        28 => 484,
        29 => 501,
        31 => 480,
        34 | 38 | 41 | 42 | 47 => 503,
        55 | 57 | 87 => 403,
        58 | 88 => 503,
        65 | 70 => 488,
        69 | 79 => 501,
        102 => 504,
        111 | 127 => 500,
        // By class.
        0..=31 => 480,
        32..=47 => 503,
        48..=63 => 503,
        64..=79 => 501,
        80..=95 => 400,
        _ => 500,
    })
}

/// The Q.850 cause to clear a TDM leg with when the SIP side answered `status` (a final
/// non-2xx response).
pub fn cause_for_sip_status(status: u16) -> u8 {
    listed_cause(status).unwrap_or(match status {
        // No RFC 3398 mapping (487 Request Terminated, 488 "by Warning"): by class.
        500..=599 => 41,
        600..=699 => 31,
        _ => 127,
    })
}

/// A short snake_case name of a Q.850 cause for events, logs and metrics labels
/// (`normal_clearing`, `user_busy`, ...); unlisted causes are named by their class.
pub fn cause_name(cause: u8) -> &'static str {
    match cause {
        1 => "unallocated_number",
        2 => "no_route_to_network",
        3 => "no_route_to_destination",
        16 => "normal_clearing",
        17 => "user_busy",
        18 => "no_user_response",
        19 => "no_answer",
        20 => "subscriber_absent",
        21 => "call_rejected",
        22 => "number_changed",
        25 => "exchange_routing_error",
        27 => "destination_out_of_order",
        28 => "invalid_number_format",
        29 => "facility_rejected",
        31 => "normal_unspecified",
        34 => "no_circuit_available",
        38 => "network_out_of_order",
        41 => "temporary_failure",
        42 => "switching_equipment_congestion",
        44 => "requested_channel_not_available",
        47 => "resource_unavailable",
        58 => "bearer_capability_not_available",
        65 => "bearer_capability_not_implemented",
        79 => "service_not_implemented",
        88 => "incompatible_destination",
        102 => "recovery_on_timer_expiry",
        111 => "protocol_error",
        127 => "interworking",
        0..=31 => "normal_event",
        32..=47 => "resource_unavailable",
        48..=63 => "service_not_available",
        64..=79 => "service_not_implemented",
        80..=95 => "invalid_message",
        96..=111 => "protocol_error",
        _ => "interworking",
    }
}

/// Whether a call that failed on one destination with `cause` should be tried on the next
/// destination of its route: network and resource failures yes; the called party's own
/// answers (busy, rejected, no answer, unknown number) no.
pub fn is_failover_cause(cause: u8) -> bool {
    matches!(
        cause,
        3 | 27 | 34 | 38 | 41 | 42 | 44 | 47 | 58 | 63 | 102 | 111
    ) || (cause > 31 && cause <= 47)
}

/// The rows of RFC 3398 §7.2.4.1.
fn listed_cause(status: u16) -> Option<u8> {
    Some(match status {
        400 => 41,
        401 | 402 | 403 | 407 => 21,
        404 | 485 | 604 => 1,
        405 => 63,
        406 | 415 => 79,
        408 | 504 => 102,
        410 => 22,
        413 | 414 | 416 | 420 | 421 | 423 | 505 | 513 => 127,
        480 => 18,
        481 => 41,
        482 | 483 => 25,
        484 => 28,
        486 | 600 => 17,
        500 | 503 => 41,
        501 => 79,
        502 => 38,
        603 => 21,
        606 => 58,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3398_rows_both_ways() {
        for (cause, status) in [
            (1, 404),
            (17, 486),
            (18, 408),
            (19, 480),
            (21, 403),
            (22, 410),
            (27, 502),
            (28, 484),
            (34, 503),
            (38, 503),
            (41, 503),
            (58, 503),
            (65, 488),
            (79, 501),
            (102, 504),
            (127, 500),
        ] {
            assert_eq!(sip_status_for_cause(cause), Some(status), "cause {cause}");
        }
        assert_eq!(sip_status_for_cause(16), None, "normal clearing is a BYE");
        for (status, cause) in [
            (404, 1),
            (486, 17),
            (600, 17),
            (480, 18),
            (408, 102),
            (403, 21),
            (603, 21),
            (484, 28),
            (502, 38),
            (503, 41),
            (410, 22),
        ] {
            assert_eq!(cause_for_sip_status(status), cause, "status {status}");
        }
    }

    #[test]
    fn unlisted_values_map_by_class_and_every_value_maps() {
        assert_eq!(sip_status_for_cause(44), Some(503)); // resource unavailable class
        assert_eq!(sip_status_for_cause(66), Some(501)); // not implemented class
        assert_eq!(sip_status_for_cause(95), Some(400)); // invalid message class
        assert_eq!(cause_for_sip_status(487), 127);
        assert_eq!(cause_for_sip_status(599), 41);
        for c in 0..=255u8 {
            if let Some(s) = sip_status_for_cause(c) {
                assert!((400..700).contains(&s), "cause {c} -> {s}");
            }
        }
        for s in 0..=1000u16 {
            assert!(cause_for_sip_status(s) <= 127);
        }
    }
}

//! Property tests: every media parser takes arbitrary bytes without panicking, and what it
//! accepts round-trips through the serialiser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway::media::rtp::{RtpExtension, RtpPacket};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn rtp_parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = RtpPacket::parse(&bytes) {
            let mut out = vec![0u8; p.wire_len()];
            let n = p.write(&mut out).unwrap();
            prop_assert_eq!(n, p.wire_len());
            let q = RtpPacket::parse(&out[..n]).unwrap();
            prop_assert_eq!(p, q);
            prop_assert!(p.wire_len() <= bytes.len());
        }
    }

    #[test]
    fn rtp_write_then_parse_is_identity(
        pt in 0u8..128, marker: bool, seq: u16, ts: u32, ssrc: u32,
        ncsrc in 0usize..16, ext_words in proptest::option::of(0usize..4),
        payload in proptest::collection::vec(any::<u8>(), 0..200), padding in 0u8..8,
    ) {
        let csrc: Vec<u8> = (0..ncsrc * 4).map(|i| i as u8).collect();
        let ext: Vec<u8> = vec![0x5a; ext_words.unwrap_or(0) * 4];
        let p = RtpPacket {
            csrc_bytes: &csrc,
            extension: ext_words.map(|_| RtpExtension { profile: 0xbede, data: &ext }),
            padding,
            ..RtpPacket::new(pt, marker, seq, ts, ssrc, &payload)
        };
        let mut out = vec![0u8; 512];
        let n = p.write(&mut out).unwrap();
        prop_assert_eq!(RtpPacket::parse(&out[..n]).unwrap(), p);
    }
}

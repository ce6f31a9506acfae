//! The PPP/X.25 frame check sequence (FCS-16, RFC 1662) that DAHDI appends to and checks on
//! HDLCFCS D-channel frames.

/// Initial FCS value.
const INIT: u16 = 0xffff;
/// The value the FCS takes over a whole frame including a correct trailing FCS.
pub const GOOD: u16 = 0xf0b8;

/// The reflected CRC-CCITT table (polynomial 0x8408), built at compile time.
const TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = i as u16;
        let mut bit = 0;
        while bit < 8 {
            v = if v & 1 != 0 {
                (v >> 1) ^ 0x8408
            } else {
                v >> 1
            };
            bit += 1;
        }
        table[i] = v;
        i += 1;
    }
    table
}

/// Runs the FCS over `data`, starting from `fcs`.
pub fn update(mut fcs: u16, data: &[u8]) -> u16 {
    for &b in data {
        fcs = (fcs >> 8) ^ TABLE[usize::from((fcs ^ u16::from(b)) & 0xff)];
    }
    fcs
}

/// Overwrites the last two bytes of `frame` with the FCS of the bytes before them (LSB first),
/// as DAHDI's `calc_fcs()` does on write. Frames shorter than two bytes are left alone.
pub fn fill(frame: &mut [u8]) {
    let Some(body_len) = frame.len().checked_sub(2) else {
        return;
    };
    let fcs = !update(INIT, &frame[..body_len]);
    let [lo, hi] = fcs.to_le_bytes();
    if let Some(tail) = frame.get_mut(body_len..) {
        tail.copy_from_slice(&[lo, hi]);
    }
}

/// Whether `frame` (body plus two FCS bytes) carries a correct FCS.
pub fn is_good(frame: &[u8]) -> bool {
    frame.len() >= 2 && update(INIT, frame) == GOOD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check_is_good() {
        let mut frame = b"\x02\x01\x7f\x00\x00".to_vec();
        fill(&mut frame);
        assert!(is_good(&frame));
        frame[1] ^= 0x10;
        assert!(!is_good(&frame));
    }

    #[test]
    fn known_vector_from_rfc1662_style_check() {
        // "123456789" has CRC-16/X.25 = 0x906E (the check value of this CRC).
        let fcs = !update(INIT, b"123456789");
        assert_eq!(fcs, 0x906e);
    }

    #[test]
    fn short_frames_are_left_alone() {
        let mut one = [0x55u8];
        fill(&mut one);
        assert_eq!(one, [0x55]);
        assert!(!is_good(&one));
    }
}

//! G.711 µ-law and A-law conversion for the simulator's linear mode (DAHDI_SETLINEAR).

/// µ-law byte to a linear sample.
pub(crate) fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    let v = if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 };
    v as i16
}

/// Linear sample to a µ-law byte.
pub(crate) fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let s = i32::from(sample);
    let (sign, mag) = if s < 0 {
        (0x80u8, (-s).min(CLIP))
    } else {
        (0u8, s.min(CLIP))
    };
    let mag = mag + BIAS;
    let mut exponent = 7u8;
    let mut mask = 0x4000;
    while exponent > 0 && mag & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = ((mag >> (exponent + 3)) & 0x0f) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// A-law byte to a linear sample.
pub(crate) fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a & 0x70) >> 4;
    let mantissa = i32::from(a & 0x0f);
    let mag = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if a & 0x80 != 0 { mag } else { -mag }) as i16
}

/// Linear sample to an A-law byte.
pub(crate) fn linear_to_alaw(sample: i16) -> u8 {
    let s = i32::from(sample);
    let (sign, mag) = if s >= 0 { (0x80u8, s) } else { (0u8, -s - 1) };
    let mag = mag.min(0x7fff);
    let mut exponent = 7u8;
    let mut mask = 0x4000;
    while exponent > 0 && mag & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let shift = if exponent == 0 { 4 } else { exponent + 3 };
    let mantissa = ((mag >> shift) & 0x0f) as u8;
    (sign | (exponent << 4) | mantissa) ^ 0x55
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_bytes_decode_near_zero() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(alaw_to_linear(0xd5), 8);
    }

    #[test]
    fn every_byte_round_trips_through_linear() {
        for b in 0..=255u8 {
            let u = linear_to_ulaw(ulaw_to_linear(b));
            // 0x7f and 0xff are both zero in µ-law; everything else is exact.
            if b != 0x7f {
                assert_eq!(u, b, "ulaw {b:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "alaw {b:#x}");
        }
    }
}

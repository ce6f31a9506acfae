//! ITU-T G.711 µ-law and A-law: per-sample functions, slice, frame and chunk APIs, and direct
//! A-law ↔ µ-law transcoding.
//!
//! # Conventions
//!
//! Linear samples are signed 16-bit. G.711 itself quantises 14-bit (µ-law) and 13-bit (A-law)
//! magnitudes; the extra low bits of a 16-bit sample are dropped *towards zero in magnitude*,
//! which is the convention of spandsp, Asterisk and DAHDI:
//!
//! * µ-law uses the magnitude `|x|` (so `-1` encodes like `+1`, as "negative zero", `0x7F`).
//!   Python's `audioop` instead shifts the sample arithmetically (`x >> 2`, rounding negative
//!   values away from zero) and so differs on 381 negative inputs by one step.
//! * A-law uses the one's complement magnitude `!x` for negative samples, as G.191's reference
//!   code does; spandsp and `audioop` agree on every input.
//!
//! Encoding clips: values beyond the largest G.711 level map to the largest code. Decoding
//! returns the mid-point of the quantisation interval scaled to 16 bits. A-law output carries the
//! even-bit inversion (XOR `0x55`) that goes on the wire. Transcoding uses the mapping of G.711
//! Tables 3 and 4 (which is *not* simply encode(decode(x)): the standard picks the code that
//! keeps the round trip µ → A → µ transparent for as many codes as possible).
//!
//! # Speed
//!
//! The per-sample encoders are a table lookup on the magnitude (4 KiB for µ-law, 2 KiB for A-law,
//! built at compile time, small enough to stay in L1) plus a sign fix-up, with no branches. The
//! slice and frame µ-law encoder uses an arithmetic kernel that the compiler vectorises (see
//! below). Decoding is a 256-entry table. None of the functions allocate.

use core::str::FromStr;

use crate::CodecError;

/// Which G.711 companding law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (North America, Japan; RTP payload type 0, "PCMU").
    Ulaw,
    /// A-law (Europe and most of the world; RTP payload type 8, "PCMA").
    Alaw,
}

impl Law {
    /// The code that decodes to (near) silence: `0xFF` for µ-law, `0xD5` for A-law.
    pub const fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xFF,
            Law::Alaw => 0xD5,
        }
    }

    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub const fn rtp_payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The SDP/RTP encoding name: `PCMU` or `PCMA`.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Law::Ulaw => "PCMU",
            Law::Alaw => "PCMA",
        }
    }

    /// Encodes one sample.
    #[inline]
    pub fn encode_sample(self, x: i16) -> u8 {
        match self {
            Law::Ulaw => ulaw_encode(x),
            Law::Alaw => alaw_encode(x),
        }
    }

    /// Decodes one code.
    #[inline]
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ulaw_decode(code),
            Law::Alaw => alaw_decode(code),
        }
    }
}

impl core::fmt::Display for Law {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Law::Ulaw => "ulaw",
            Law::Alaw => "alaw",
        })
    }
}

impl FromStr for Law {
    type Err = CodecError;

    /// Accepts `ulaw`, `mulaw`, `u`, `pcmu`, `alaw`, `a`, `pcma` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ulaw" | "mulaw" | "µlaw" | "u" | "pcmu" => Ok(Law::Ulaw),
            "alaw" | "a" | "pcma" => Ok(Law::Alaw),
            other => Err(CodecError::InvalidArgument(format!(
                "unknown G.711 law {other:?}: use ulaw or alaw"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-sample reference arithmetic, used at compile time to build the tables.

/// Bias added to a µ-law magnitude before finding its segment (33 in 14-bit units).
const ULAW_BIAS: i32 = 0x84;

/// Position of the highest set bit of a positive value.
const fn top_bit(v: i32) -> i32 {
    31 - v.leading_zeros() as i32
}

/// µ-law code for a non-negative 16-bit magnitude `m` (0..=32768), positive sign.
const fn ulaw_positive_code(m: i32) -> u8 {
    let biased = m + ULAW_BIAS;
    let seg = top_bit(biased | 0xFF) - 7;
    if seg >= 8 {
        0x80
    } else {
        (((seg << 4) | ((biased >> (seg + 3)) & 0xF)) ^ 0xFF) as u8
    }
}

/// A-law code for a non-negative 15-bit magnitude `m` (0..=32767), positive sign, with the
/// even-bit inversion applied.
const fn alaw_positive_code(m: i32) -> u8 {
    let seg = top_bit(m | 0xFF) - 7;
    let shift = if seg == 0 { 4 } else { seg + 3 };
    (((seg << 4) | ((m >> shift) & 0xF)) ^ 0xD5) as u8
}

/// Number of entries of the µ-law encoder table: index `(|x| + 4) >> 3` for `|x|` ≤ 32768.
const ULAW_ENC_LEN: usize = 4097;
/// Number of entries of the A-law encoder table: index `m >> 4` for `m` ≤ 32767.
const ALAW_ENC_LEN: usize = 2048;

/// µ-law code (positive sign) for every `(|x| + 4) >> 3`.
///
/// The code depends on `|x|` only through `(|x| + 132) >> 3`, i.e. through `(|x| + 4) >> 3`.
static ULAW_ENC: [u8; ULAW_ENC_LEN] = {
    let mut t = [0u8; ULAW_ENC_LEN];
    let mut i = 0;
    while i < ULAW_ENC_LEN {
        // Any magnitude in the bucket gives the same code; take the bucket's lowest member.
        let m = if i == 0 { 0 } else { (i as i32) * 8 - 4 };
        t[i] = ulaw_positive_code(m);
        i += 1;
    }
    t
};

/// A-law code (positive sign) for every `m >> 4`.
static ALAW_ENC: [u8; ALAW_ENC_LEN] = {
    let mut t = [0u8; ALAW_ENC_LEN];
    let mut i = 0;
    while i < ALAW_ENC_LEN {
        t[i] = alaw_positive_code((i as i32) << 4);
        i += 1;
    }
    t
};

const fn ulaw_decode_calc(code: u8) -> i16 {
    let c = !code as i32;
    let t = (((c & 0x0F) << 3) + ULAW_BIAS) << ((c & 0x70) >> 4);
    (if c & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

const fn alaw_decode_calc(code: u8) -> i16 {
    let c = (code ^ 0x55) as i32;
    let mut i = (c & 0x0F) << 4;
    let seg = (c & 0x70) >> 4;
    if seg != 0 {
        i = (i + 0x108) << (seg - 1);
    } else {
        i += 8;
    }
    (if c & 0x80 != 0 { i } else { -i }) as i16
}

static ULAW_DEC: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_calc(i as u8);
        i += 1;
    }
    t
};

static ALAW_DEC: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_calc(i as u8);
        i += 1;
    }
    t
};

/// G.711 Table 3 (µ-law → A-law) as a map of magnitude indices: entry `i` is the A-law
/// magnitude index (1-based, 1 = smallest) for µ-law magnitude index `i + 1`.
const U2A_MAGNITUDE: [u8; 128] = [
    1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    21, 22, 23, 24, 25, 27, 29, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 48, 49, 50,
    51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
    76, 77, 78, 79, 80, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99,
    100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
    119, 120, 121, 122, 123, 124, 125, 126, 127, 128,
];

/// G.711 Table 4 (A-law → µ-law) as a map of magnitude indices, like [`U2A_MAGNITUDE`].
const A2U_MAGNITUDE: [u8; 128] = [
    2, 4, 6, 8, 10, 12, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33,
    33, 34, 34, 35, 35, 36, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 49, 50, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74,
    75, 76, 77, 78, 79, 80, 81, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97,
    98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116,
    117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128,
];

/// µ-law code → A-law code, for all 256 codes.
static U2A: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        // µ-law: magnitude index i = (c ^ 0xFF) & 0x7F for positive codes (bit 7 set),
        // (c ^ 0x7F) & 0x7F for negative ones.
        let positive = c & 0x80 != 0;
        let i = (c ^ if positive { 0xFF } else { 0x7F }) & 0x7F;
        let j = (U2A_MAGNITUDE[i] - 1) as usize;
        t[c] = (j ^ if positive { 0xD5 } else { 0x55 }) as u8;
        c += 1;
    }
    t
};

/// A-law code → µ-law code, for all 256 codes.
static A2U: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let positive = c & 0x80 != 0;
        let j = (c ^ if positive { 0xD5 } else { 0x55 }) & 0x7F;
        let i = (A2U_MAGNITUDE[j] - 1) as usize;
        t[c] = (i ^ if positive { 0xFF } else { 0x7F }) as u8;
        c += 1;
    }
    t
};

// ---------------------------------------------------------------------------------------------
// Per-sample API.

/// Encodes one 16-bit sample to µ-law.
#[inline(always)]
pub fn ulaw_encode(x: i16) -> u8 {
    let x = i32::from(x);
    let sign = x >> 31; // 0 or -1
    let magnitude = (x ^ sign) - sign; // 0..=32768
    let index = ((magnitude + 4) >> 3) as usize; // 0..=4096
    // Negative samples differ from positive ones only in bit 7 (cleared).
    ULAW_ENC[index.min(ULAW_ENC_LEN - 1)] ^ ((sign & 0x80) as u8)
}

/// Decodes one µ-law code to a 16-bit sample.
#[inline(always)]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DEC[usize::from(code)]
}

/// Encodes one 16-bit sample to A-law (with the even-bit inversion).
#[inline(always)]
pub fn alaw_encode(x: i16) -> u8 {
    let sign = x >> 15; // 0 or -1
    let magnitude = (x ^ sign) as u16; // one's complement magnitude, 0..=32767
    ALAW_ENC[usize::from(magnitude >> 4) & (ALAW_ENC_LEN - 1)] ^ ((sign & 0x80) as u8)
}

/// Decodes one A-law code to a 16-bit sample.
#[inline(always)]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DEC[usize::from(code)]
}

/// Converts a µ-law code to the A-law code G.711 Table 3 assigns it.
#[inline(always)]
pub fn ulaw_to_alaw(code: u8) -> u8 {
    U2A[usize::from(code)]
}

/// Converts an A-law code to the µ-law code G.711 Table 4 assigns it.
#[inline(always)]
pub fn alaw_to_ulaw(code: u8) -> u8 {
    A2U[usize::from(code)]
}

// ---------------------------------------------------------------------------------------------
// Branch-free arithmetic kernels. They compute exactly what the tables hold (tests compare them
// on every input) but use only operations the compiler can vectorise with baseline SSE2: the
// segment and the top four mantissa bits of a magnitude are read from the exponent and mantissa
// fields of its exact `f32` representation. Measured (docs/BENCHMARKS.md): the µ-law encoder
// kernel is 2.4x faster per frame than the µ-law table, so the slice/frame APIs use it; for
// A-law encoding and for decoding the tables win, and the other kernels are test-only,
// checked against the tables.

/// µ-law, vectorisable: `(|x| + 132)` as `f32` has exponent `seg + 7` and its top four mantissa
/// bits are the quantisation bits; bits 19.. of the float are therefore `(seg + 134) << 4 | q`.
#[inline(always)]
fn ulaw_encode_vec(x: i16) -> u8 {
    let x = i32::from(x);
    let biased = x.abs() + ULAW_BIAS; // 132..=32900, exact in f32
    let field = ((biased as f32).to_bits() >> 19) as i32 - (134 << 4);
    let magnitude = field.min(0x7F); // segment 8 and up clips to the largest code
    ((0xFF ^ magnitude) ^ ((x >> 31) & 0x80)) as u8
}

/// A-law, vectorisable: below 256 the code is `m >> 4`; above, the float trick as for µ-law.
#[cfg(test)]
#[inline(always)]
fn alaw_encode_vec(x: i16) -> u8 {
    let x = i32::from(x);
    let sign = x >> 31;
    let m = x ^ sign; // one's complement magnitude, 0..=32767
    let field = ((m as f32).to_bits() >> 19) as i32 - (134 << 4);
    let magnitude = if m < 256 { m >> 4 } else { field };
    ((magnitude ^ 0xD5) ^ (sign & 0x80)) as u8
}

/// µ-law decode without a table.
#[cfg(test)]
#[inline(always)]
fn ulaw_decode_vec(code: u8) -> i16 {
    let c = i32::from(!code);
    let t = (((c & 0x0F) << 3) + ULAW_BIAS) << ((c >> 4) & 7);
    let v = t - ULAW_BIAS;
    (if c & 0x80 != 0 { -v } else { v }) as i16
}

/// A-law decode without a table.
#[cfg(test)]
#[inline(always)]
fn alaw_decode_vec(code: u8) -> i16 {
    let c = i32::from(code ^ 0x55);
    let seg = (c >> 4) & 7;
    let base = ((c & 0x0F) << 4) + 8;
    let v = if seg == 0 {
        base
    } else {
        (base + 0x100) << (seg - 1)
    };
    (if c & 0x80 != 0 { v } else { -v }) as i16
}

// ---------------------------------------------------------------------------------------------
// Slice APIs.

fn check_len(needed: usize, got: usize) -> Result<(), CodecError> {
    if got < needed {
        Err(CodecError::OutputTooSmall { needed, got })
    } else {
        Ok(())
    }
}

/// Encodes `src` into the first `src.len()` bytes of `dst`; returns the number written.
///
/// # Errors
/// [`CodecError::OutputTooSmall`] if `dst` is shorter than `src` (nothing is written).
pub fn encode(law: Law, src: &[i16], dst: &mut [u8]) -> Result<usize, CodecError> {
    check_len(src.len(), dst.len())?;
    let dst = &mut dst[..src.len()];
    match law {
        Law::Ulaw => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &s)| *d = ulaw_encode_vec(s)),
        Law::Alaw => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &s)| *d = alaw_encode(s)),
    }
    Ok(src.len())
}

/// Decodes `src` into the first `src.len()` samples of `dst`; returns the number written.
///
/// # Errors
/// [`CodecError::OutputTooSmall`] if `dst` is shorter than `src` (nothing is written).
pub fn decode(law: Law, src: &[u8], dst: &mut [i16]) -> Result<usize, CodecError> {
    check_len(src.len(), dst.len())?;
    match law {
        Law::Ulaw => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &c)| *d = ulaw_decode(c)),
        Law::Alaw => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &c)| *d = alaw_decode(c)),
    }
    Ok(src.len())
}

/// Transcodes `src` from one law to another into `dst`; returns the number of bytes written.
/// With `from == to` the bytes are copied unchanged.
///
/// # Errors
/// [`CodecError::OutputTooSmall`] if `dst` is shorter than `src` (nothing is written).
pub fn transcode(from: Law, to: Law, src: &[u8], dst: &mut [u8]) -> Result<usize, CodecError> {
    check_len(src.len(), dst.len())?;
    let dst = &mut dst[..src.len()];
    let table = match (from, to) {
        (Law::Ulaw, Law::Alaw) => &U2A,
        (Law::Alaw, Law::Ulaw) => &A2U,
        _ => {
            dst.copy_from_slice(src);
            return Ok(src.len());
        }
    };
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, &c)| *d = table[usize::from(c)]);
    Ok(src.len())
}

/// Transcodes a buffer in place (e.g. a DAHDI block received in the other law).
pub fn transcode_in_place(from: Law, to: Law, buf: &mut [u8]) {
    let table = match (from, to) {
        (Law::Ulaw, Law::Alaw) => &U2A,
        (Law::Alaw, Law::Ulaw) => &A2U,
        _ => return,
    };
    buf.iter_mut().for_each(|c| *c = table[usize::from(*c)]);
}

// Fixed-size variants: the compiler knows the trip count, so these unroll and never fail.

/// Encodes one 20 ms frame (160 samples).
#[inline]
pub fn encode_frame(
    law: Law,
    src: &[i16; crate::FRAME_SAMPLES],
    dst: &mut [u8; crate::FRAME_SAMPLES],
) {
    encode_fixed(law, src, dst);
}

/// Decodes one 20 ms frame (160 codes).
#[inline]
pub fn decode_frame(
    law: Law,
    src: &[u8; crate::FRAME_SAMPLES],
    dst: &mut [i16; crate::FRAME_SAMPLES],
) {
    decode_fixed(law, src, dst);
}

/// Encodes one 1 ms DAHDI chunk (8 samples).
#[inline]
pub fn encode_chunk(
    law: Law,
    src: &[i16; crate::CHUNK_SAMPLES],
    dst: &mut [u8; crate::CHUNK_SAMPLES],
) {
    encode_fixed(law, src, dst);
}

/// Decodes one 1 ms DAHDI chunk (8 codes).
#[inline]
pub fn decode_chunk(
    law: Law,
    src: &[u8; crate::CHUNK_SAMPLES],
    dst: &mut [i16; crate::CHUNK_SAMPLES],
) {
    decode_fixed(law, src, dst);
}

#[inline(always)]
fn encode_fixed<const N: usize>(law: Law, src: &[i16; N], dst: &mut [u8; N]) {
    match law {
        Law::Ulaw => {
            for i in 0..N {
                dst[i] = ulaw_encode_vec(src[i]);
            }
        }
        Law::Alaw => {
            for i in 0..N {
                dst[i] = alaw_encode(src[i]);
            }
        }
    }
}

#[inline(always)]
fn decode_fixed<const N: usize>(law: Law, src: &[u8; N], dst: &mut [i16; N]) {
    match law {
        Law::Ulaw => {
            for i in 0..N {
                dst[i] = ulaw_decode(src[i]);
            }
        }
        Law::Alaw => {
            for i in 0..N {
                dst[i] = alaw_decode(src[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_encoder_matches_per_sample_arithmetic_for_every_input() {
        for x in i16::MIN..=i16::MAX {
            let m = i32::from(x).abs();
            let u = if x < 0 {
                ulaw_positive_code(m) & 0x7F
            } else {
                ulaw_positive_code(m)
            };
            assert_eq!(ulaw_encode(x), u, "ulaw {x}");
            let a = if x < 0 {
                alaw_positive_code(i32::from(!x)) & 0x7F
            } else {
                alaw_positive_code(i32::from(x))
            };
            assert_eq!(alaw_encode(x), a, "alaw {x}");
        }
    }

    #[test]
    fn vector_kernels_match_the_tables_on_every_input() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode_vec(x), ulaw_encode(x), "ulaw {x}");
            assert_eq!(alaw_encode_vec(x), alaw_encode(x), "alaw {x}");
        }
        for c in 0..=255u8 {
            assert_eq!(ulaw_decode_vec(c), ulaw_decode(c), "ulaw {c:#04x}");
            assert_eq!(alaw_decode_vec(c), alaw_decode(c), "alaw {c:#04x}");
        }
    }

    #[test]
    fn decode_then_encode_is_identity_on_codes() {
        for c in 0..=255u8 {
            // µ-law has two zeros (0x7F and 0xFF) that both decode to 0, which encodes as 0xFF.
            if c != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(c)), c, "ulaw {c:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "alaw {c:#04x}");
        }
    }

    #[test]
    fn slice_apis_reject_short_output_without_writing() {
        let mut out = [0u8; 3];
        assert_eq!(
            encode(Law::Ulaw, &[1, 2, 3, 4], &mut out),
            Err(CodecError::OutputTooSmall { needed: 4, got: 3 })
        );
        assert_eq!(out, [0, 0, 0]);
        let mut pcm = [0i16; 1];
        assert!(decode(Law::Alaw, &[0, 0], &mut pcm).is_err());
        assert!(transcode(Law::Alaw, Law::Ulaw, &[0, 0], &mut out[..1]).is_err());
    }

    #[test]
    fn frame_and_slice_apis_agree() {
        let src: [i16; 160] = core::array::from_fn(|i| (i as i16 - 80) * 409);
        for law in [Law::Ulaw, Law::Alaw] {
            let mut a = [0u8; 160];
            let mut b = [0u8; 160];
            encode_frame(law, &src, &mut a);
            assert_eq!(encode(law, &src, &mut b), Ok(160));
            assert_eq!(a, b);
            let mut pa = [0i16; 160];
            let mut pb = [0i16; 160];
            decode_frame(law, &a, &mut pa);
            assert_eq!(decode(law, &b, &mut pb), Ok(160));
            assert_eq!(pa, pb);
            let chunk: [i16; 8] = core::array::from_fn(|i| src[i]);
            let mut c = [0u8; 8];
            encode_chunk(law, &chunk, &mut c);
            assert_eq!(c[..], a[..8]);
        }
    }

    #[test]
    fn law_names_parse() {
        assert_eq!("PCMU".parse::<Law>(), Ok(Law::Ulaw));
        assert_eq!("alaw".parse::<Law>(), Ok(Law::Alaw));
        assert!("gsm".parse::<Law>().is_err());
    }
}

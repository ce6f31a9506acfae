//! Call-progress tones by country: dial, ringback, busy and congestion, generated from data
//! tables at 8 kHz.

/// Level in dBm0 of a sine whose peak is the 16-bit full scale (32767), by the ITU-T G.711 µ-law
/// convention (the A-law figure is +3.14 dBm0; we use the µ-law one throughout).
pub const FULL_SCALE_SINE_DBM0: f32 = 3.17;

/// Peak amplitude (16-bit linear units) of a sine at `dbm0`.
pub fn dbm0_to_peak(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)
}

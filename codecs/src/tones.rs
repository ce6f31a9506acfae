//! Call-progress tones by country.

//! DTMF generation and detection.

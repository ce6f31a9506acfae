//! G.711 µ-law and A-law conversion for the simulator's linear mode (DAHDI_SETLINEAR): the
//! gateway's own codec from the `codecs` crate (bit-exact with spandsp and DAHDI's tables), under
//! the names DAHDI uses.

pub(crate) use codecs::g711::{
    alaw_decode as alaw_to_linear, alaw_encode as linear_to_alaw, ulaw_decode as ulaw_to_linear,
    ulaw_encode as linear_to_ulaw,
};

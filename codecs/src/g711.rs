//! G.711 mu-law and A-law.

//! Packet-loss concealment for G.711 streams.

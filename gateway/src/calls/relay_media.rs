//! An interim [`MediaBackend`]: the old packet relay ([`super::rtp_relay`]) behind the switch's
//! media interface, until the media plane (`media::plane`) takes over. It anchors each RTP leg
//! on its own port pair and relays packets between two connected legs, keeping one outbound RTP
//! context per leg. It does not decode: no transcoding, no tones, no services, no digits — a
//! connect of legs with different codecs passes the packets unchanged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::cdr::LegMediaStats;
use super::engine::{CallKey, MediaCommand};
use super::leg::{LegId, PortSlot};
use super::rtp_relay::{LegPorts, Relay};
use super::switch::{MediaBackend, MediaCounts};

/// The relay backend. See the module docs.
#[derive(Debug, Default)]
pub struct RelayMedia {
    gauge: Arc<AtomicUsize>,
    ports: HashMap<LegId, LegPorts>,
    remotes: HashMap<LegId, SocketAddr>,
    relays: Vec<(LegId, LegId, Relay)>,
    seed: u64,
}

impl RelayMedia {
    /// A backend with nothing open.
    pub fn new() -> Self {
        RelayMedia {
            seed: 0x9e37_79b9_7f4a_7c15,
            ..Self::default()
        }
    }

    fn update_peers(&self, leg: LegId) {
        for (a, b, r) in &self.relays {
            if *a == leg || *b == leg {
                if let (Some(ra), Some(rb)) = (self.remotes.get(a), self.remotes.get(b)) {
                    r.set_peers(*ra, *rb);
                }
            }
        }
    }
}

impl MediaBackend for RelayMedia {
    fn open_rtp(&mut self, leg: LegId, _call: CallKey, ip: IpAddr) -> Result<SocketAddr, String> {
        let ports = LegPorts::bind_now(ip, &self.gauge).map_err(|e| e.to_string())?;
        let addr = ports.rtp_addr().map_err(|e| e.to_string())?;
        self.ports.insert(leg, ports);
        Ok(addr)
    }

    fn attach_port(&mut self, _leg: LegId, _call: CallKey, _port: PortSlot) -> Result<(), String> {
        Err("the interim relay cannot carry frame ports (needs the media plane)".to_owned())
    }

    fn execute(&mut self, command: &MediaCommand) {
        match command {
            MediaCommand::ConfigureRtp { leg, media } => {
                if let Some(r) = media.remote {
                    self.remotes.insert(*leg, r);
                }
                self.update_peers(*leg);
            }
            MediaCommand::Connect { a, b } => {
                if self
                    .relays
                    .iter()
                    .any(|(x, y, _)| (x == a && y == b) || (x == b && y == a))
                {
                    return;
                }
                let (Some(pa), Some(pb)) = (self.ports.remove(a), self.ports.remove(b)) else {
                    tracing::debug!(%a, %b, "interim relay: cannot re-point a running relay");
                    return;
                };
                self.seed = self
                    .seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let relay = Relay::start(pa, pb, self.seed);
                self.relays.push((*a, *b, relay));
                self.update_peers(*a);
            }
            MediaCommand::Release { leg } => {
                self.ports.remove(leg);
                self.remotes.remove(leg);
                // Dropping a relay aborts its task, which closes both legs' sockets.
                self.relays.retain(|(a, b, _)| a != leg && b != leg);
            }
            MediaCommand::Play { .. }
            | MediaCommand::SendDigit { .. }
            | MediaCommand::OpenRtp { .. }
            | MediaCommand::AttachPort { .. } => {}
        }
    }

    fn leg_stats(&self, leg: LegId) -> Option<LegMediaStats> {
        let (a, _, r) = self
            .relays
            .iter()
            .find(|(a, b, _)| *a == leg || *b == leg)?;
        let c = r.counters();
        let (rx, tx) = if *a == leg {
            (
                c.a_to_b.load(Ordering::Relaxed),
                c.b_to_a.load(Ordering::Relaxed),
            )
        } else {
            (
                c.b_to_a.load(Ordering::Relaxed),
                c.a_to_b.load(Ordering::Relaxed),
            )
        };
        Some(LegMediaStats {
            packets_received: rx,
            packets_sent: tx,
            packets_lost: 0,
            jitter_ms: 0.0,
        })
    }

    fn counts(&self) -> MediaCounts {
        MediaCounts {
            legs: self.ports.len() + 2 * self.relays.len(),
            sockets: self.gauge.load(Ordering::Relaxed),
            bridges: self.relays.len(),
        }
    }
}

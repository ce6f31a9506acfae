//! A stop-gap RTP relay between a call's two anchored legs, until the media engine (`media/`)
//! takes over: each leg has an RTP/RTCP port pair on the gateway, packets from one leg's party
//! go out of the other leg's socket, and every leg keeps one outbound RTP context (SSRC, sequence
//! number, timestamp) for its whole life, so a change of source never looks like a new stream
//! to the receiver. Symmetric RTP: a leg sends to where its party's packets come from, or to
//! the SDP address until the first one arrives.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte RTP header.
    #[error("packet shorter than an RTP header")]
    TooShort,
    /// Not RTP version 2.
    #[error("not RTP version 2")]
    BadVersion,
}

/// What [`OutboundContext::rewrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewritten {
    /// An RTP packet, now in our context.
    Rtp,
    /// A multiplexed RTCP packet (RFC 5761), passed on unchanged.
    Rtcp,
}

/// One leg's outbound RTP context: our SSRC and continuous sequence numbers and timestamps,
/// whatever source feeds it.
#[derive(Debug, Clone)]
pub struct OutboundContext {
    ssrc: u32,
    next_seq: u16,
    next_ts: u32,
    source: Option<u32>,
    seq_delta: u16,
    ts_delta: u32,
    /// Timestamp step assumed across a source change (one 20 ms frame at 8 kHz).
    frame_ticks: u32,
}

impl OutboundContext {
    /// A context with our `ssrc`, first sequence number and first timestamp (random in
    /// production, RFC 3550 §5.1).
    pub fn new(ssrc: u32, first_seq: u16, first_ts: u32) -> Self {
        OutboundContext {
            ssrc,
            next_seq: first_seq,
            next_ts: first_ts,
            source: None,
            seq_delta: 0,
            ts_delta: 0,
            frame_ticks: 160,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Rewrites `packet` in place into this context (no allocation).
    pub fn rewrite(&mut self, packet: &mut [u8]) -> Result<Rewritten, RtpError> {
        if packet.len() < 12 {
            return Err(RtpError::TooShort);
        }
        let (Some(&b0), Some(&b1)) = (packet.first(), packet.get(1)) else {
            return Err(RtpError::TooShort);
        };
        if b0 >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        // RFC 5761 §4: RTCP packet types 200–204 land on payload types 72–76.
        if (72..=76).contains(&(b1 & 0x7f)) {
            return Ok(Rewritten::Rtcp);
        }
        let be16 = |p: &[u8], i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        let be32 = |p: &[u8], i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let seq = be16(packet, 2);
        let ts = be32(packet, 4);
        let ssrc = be32(packet, 8);
        let mut marker = b1 & 0x80;
        if self.source != Some(ssrc) {
            // A new source: continue our numbering where it stopped, mark a new talkspurt.
            self.seq_delta = self.next_seq.wrapping_sub(seq);
            self.ts_delta = self.next_ts.wrapping_sub(ts);
            if self.source.is_some() {
                marker = 0x80;
            }
            self.source = Some(ssrc);
        }
        let out_seq = seq.wrapping_add(self.seq_delta);
        let out_ts = ts.wrapping_add(self.ts_delta);
        // Advance only for packets newer than the newest sent (reordering keeps its order).
        if out_seq.wrapping_sub(self.next_seq) < 0x8000 {
            self.next_seq = out_seq.wrapping_add(1);
            self.next_ts = out_ts.wrapping_add(self.frame_ticks);
        }
        packet[1] = (b1 & 0x7f) | marker;
        packet[2..4].copy_from_slice(&out_seq.to_be_bytes());
        packet[4..8].copy_from_slice(&out_ts.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(Rewritten::Rtp)
    }
}

/// A socket counted in a shared live-socket gauge while it exists.
#[derive(Debug)]
struct CountedSocket {
    socket: UdpSocket,
    gauge: Arc<AtomicUsize>,
}

impl Drop for CountedSocket {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A leg's RTP/RTCP port pair on the gateway.
#[derive(Debug)]
pub struct LegPorts {
    rtp: CountedSocket,
    rtcp: CountedSocket,
}

impl LegPorts {
    /// Binds an even RTP port and the next odd one for RTCP on `ip` (RFC 3550 §11), counting
    /// both in `gauge`.
    pub async fn bind(ip: IpAddr, gauge: &Arc<AtomicUsize>) -> io::Result<LegPorts> {
        for _ in 0..64 {
            let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await else {
                continue;
            };
            gauge.fetch_add(2, Ordering::Relaxed);
            return Ok(LegPorts {
                rtp: CountedSocket {
                    socket: rtp,
                    gauge: gauge.clone(),
                },
                rtcp: CountedSocket {
                    socket: rtcp,
                    gauge: gauge.clone(),
                },
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free even/odd RTP port pair",
        ))
    }

    /// As [`LegPorts::bind`], without awaiting (inside a tokio runtime).
    pub fn bind_now(ip: IpAddr, gauge: &Arc<AtomicUsize>) -> io::Result<LegPorts> {
        let tokio_socket = |s: std::net::UdpSocket| {
            s.set_nonblocking(true)?;
            UdpSocket::from_std(s)
        };
        for _ in 0..64 {
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) else {
                continue;
            };
            let (rtp, rtcp) = (tokio_socket(rtp)?, tokio_socket(rtcp)?);
            gauge.fetch_add(2, Ordering::Relaxed);
            return Ok(LegPorts {
                rtp: CountedSocket {
                    socket: rtp,
                    gauge: gauge.clone(),
                },
                rtcp: CountedSocket {
                    socket: rtcp,
                    gauge: gauge.clone(),
                },
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free even/odd RTP port pair",
        ))
    }

    /// The RTP address to put in SDP.
    pub fn rtp_addr(&self) -> io::Result<SocketAddr> {
        self.rtp.socket.local_addr()
    }
}

/// Packet counters of one relay.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Packets received on leg A and sent out of leg B.
    pub a_to_b: AtomicU64,
    /// Packets received on leg B and sent out of leg A.
    pub b_to_a: AtomicU64,
    /// Packets dropped (malformed, or the other side's address unknown yet).
    pub dropped: AtomicU64,
}

/// A running relay; dropping it (or [`Relay::stop`]) closes its sockets.
#[derive(Debug)]
pub struct Relay {
    peers: watch::Sender<Option<(SocketAddr, SocketAddr)>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    counters: Arc<RelayCounters>,
}

impl Relay {
    /// Starts relaying between leg A's and leg B's ports; packets flow once
    /// [`Relay::set_peers`] names the parties' SDP addresses (or they are latched).
    pub fn start(a: LegPorts, b: LegPorts, ssrc_seed: u64) -> Relay {
        let (peers, peers_rx) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let counters = Arc::new(RelayCounters::default());
        let task = tokio::spawn(relay_loop(
            a,
            b,
            peers_rx,
            stopped,
            counters.clone(),
            ssrc_seed,
        ));
        Relay {
            peers,
            stop: Some(stop),
            task,
            counters,
        }
    }

    /// Where each party receives RTP, from its SDP.
    pub fn set_peers(&self, a_remote: SocketAddr, b_remote: SocketAddr) {
        let _ = self.peers.send(Some((a_remote, b_remote)));
    }

    /// Packet counters.
    pub fn counters(&self) -> &Arc<RelayCounters> {
        &self.counters
    }

    /// Stops the relay and waits until its sockets are closed.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_loop(
    a: LegPorts,
    b: LegPorts,
    mut peers: watch::Receiver<Option<(SocketAddr, SocketAddr)>>,
    mut stopped: oneshot::Receiver<()>,
    counters: Arc<RelayCounters>,
    seed: u64,
) {
    // One context per outbound leg, alive as long as the leg.
    let mut out_a = OutboundContext::new(seed as u32, (seed >> 32) as u16, (seed >> 16) as u32);
    let mut out_b = OutboundContext::new(
        (seed as u32).rotate_left(16) ^ 0x5bd1_e995,
        (seed >> 48) as u16,
        (seed >> 8) as u32,
    );
    let (mut a_target, mut b_target): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    let (mut a_latched, mut b_latched) = (false, false);
    let mut buf_a = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    let mut rtcp_buf_a = vec![0u8; 2048];
    let mut rtcp_buf_b = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            r = peers.changed() => {
                if r.is_err() {
                    return;
                }
                if let Some((pa, pb)) = *peers.borrow_and_update() {
                    if !a_latched { a_target = Some(pa); }
                    if !b_latched { b_target = Some(pb); }
                }
            }
            r = a.rtp.socket.recv_from(&mut buf_a) => {
                let Ok((n, from)) = r else { continue };
                a_target = Some(from);
                a_latched = true;
                let Some(pkt) = buf_a.get_mut(..n) else { continue };
                match (out_b.rewrite(pkt), b_target) {
                    (Ok(_), Some(dest)) => {
                        if b.rtp.socket.send_to(pkt, dest).await.is_ok() {
                            counters.a_to_b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => { counters.dropped.fetch_add(1, Ordering::Relaxed); }
                }
            }
            r = b.rtp.socket.recv_from(&mut buf_b) => {
                let Ok((n, from)) = r else { continue };
                b_target = Some(from);
                b_latched = true;
                let Some(pkt) = buf_b.get_mut(..n) else { continue };
                match (out_a.rewrite(pkt), a_target) {
                    (Ok(_), Some(dest)) => {
                        if a.rtp.socket.send_to(pkt, dest).await.is_ok() {
                            counters.b_to_a.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => { counters.dropped.fetch_add(1, Ordering::Relaxed); }
                }
            }
            // RTCP on the odd ports is drained (reports are the media engine's job).
            _ = a.rtcp.socket.recv_from(&mut rtcp_buf_a) => {}
            _ = b.rtcp.socket.recv_from(&mut rtcp_buf_b) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    fn fields(p: &[u8]) -> (bool, u16, u32, u32) {
        (
            p[1] & 0x80 != 0,
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    }

    #[test]
    fn one_continuous_context_across_a_source_change() {
        let mut ctx = OutboundContext::new(0xabcd, 1000, 50_000);
        let mut out = Vec::new();
        for i in 0..3u16 {
            let mut p = pkt(1, 65_534u16.wrapping_add(i), 7 + u32::from(i) * 160);
            assert_eq!(ctx.rewrite(&mut p), Ok(Rewritten::Rtp));
            out.push(fields(&p));
        }
        // A new source (e.g. after a re-bridge) with unrelated numbers.
        for i in 0..2u16 {
            let mut p = pkt(2, 9 + i, 900_000 + u32::from(i) * 160);
            ctx.rewrite(&mut p).unwrap();
            out.push(fields(&p));
        }
        assert_eq!(
            out,
            vec![
                (false, 1000, 50_000, 0xabcd),
                (false, 1001, 50_160, 0xabcd),
                (false, 1002, 50_320, 0xabcd),
                (true, 1003, 50_480, 0xabcd),
                (false, 1004, 50_640, 0xabcd),
            ]
        );
        // Reordering: a late packet keeps its place and does not move the context back.
        let mut late = pkt(2, 8, 900_000 - 160);
        ctx.rewrite(&mut late).unwrap();
        assert_eq!(fields(&late).1, 1002);
        let mut next = pkt(2, 11, 900_320);
        ctx.rewrite(&mut next).unwrap();
        assert_eq!(fields(&next).1, 1005);
    }

    #[test]
    fn short_wrong_version_and_muxed_rtcp() {
        let mut ctx = OutboundContext::new(1, 0, 0);
        assert_eq!(ctx.rewrite(&mut [0x80; 11]), Err(RtpError::TooShort));
        let mut v1 = pkt(1, 1, 1);
        v1[0] = 0x40;
        assert_eq!(ctx.rewrite(&mut v1), Err(RtpError::BadVersion));
        let mut rr = pkt(1, 1, 1);
        rr[1] = 201; // RTCP RR
        let before = rr.clone();
        assert_eq!(ctx.rewrite(&mut rr), Ok(Rewritten::Rtcp));
        assert_eq!(rr, before);
    }
}

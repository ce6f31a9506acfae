//! What workers publish for the control side: per-leg figures and plane-wide counts in atomics
//! (relaxed stores on the tick path; no lock), and latency histograms.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Duration;

use super::{MediaStats, PlaneCounts};
use crate::media::codec::AudioFormat;

const R: Ordering = Ordering::Relaxed;

/// Sets the kernel receive and send buffers of a socket (best effort: the kernel caps them at
/// `net.core.rmem_max`/`wmem_max`).
pub(super) fn set_buffers(s: &UdpSocket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(s, sockopt::RcvBuf, &bytes);
    let _ = setsockopt(s, sockopt::SndBuf, &bytes);
}

/// A socket address readers can load while the worker stores it (a sequence lock over atomics).
#[derive(Default)]
pub(super) struct AtomicAddr {
    version: AtomicU32,
    hi: AtomicU64,
    lo: AtomicU64,
    /// Bit 32: set; bit 33: IPv6; low 16 bits: port.
    meta: AtomicU64,
}

impl AtomicAddr {
    pub(super) fn store(&self, a: Option<SocketAddr>) {
        let (hi, lo, meta) = match a {
            None => (0, 0, 0),
            Some(SocketAddr::V4(v4)) => (
                0,
                u64::from(u32::from(*v4.ip())),
                (1 << 32) | u64::from(v4.port()),
            ),
            Some(SocketAddr::V6(v6)) => {
                let bits = u128::from(*v6.ip());
                (
                    (bits >> 64) as u64,
                    bits as u64,
                    (3 << 32) | u64::from(v6.port()),
                )
            }
        };
        if self.meta.load(R) == meta && self.lo.load(R) == lo && self.hi.load(R) == hi {
            return;
        }
        let v = self.version.load(R);
        self.version.store(v.wrapping_add(1), R);
        fence(Ordering::Release);
        self.hi.store(hi, R);
        self.lo.store(lo, R);
        self.meta.store(meta, R);
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }

    pub(super) fn load(&self) -> Option<SocketAddr> {
        for _ in 0..1000 {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let (hi, lo, meta) = (self.hi.load(R), self.lo.load(R), self.meta.load(R));
            fence(Ordering::Acquire);
            if self.version.load(R) != v1 {
                continue;
            }
            if meta & (1 << 32) == 0 {
                return None;
            }
            let port = meta as u16;
            let ip = if meta & (1 << 33) != 0 {
                IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo)))
            } else {
                IpAddr::V4(Ipv4Addr::from(lo as u32))
            };
            return Some(SocketAddr::new(ip, port));
        }
        None
    }
}

/// One leg's figures, written by its worker.
#[derive(Default)]
pub(super) struct LegShared {
    pub(super) rx_packets: AtomicU64,
    pub(super) rx_bytes: AtomicU64,
    pub(super) tx_packets: AtomicU64,
    pub(super) tx_bytes: AtomicU64,
    pub(super) lost: AtomicI64,
    pub(super) jitter_us: AtomicU64,
    /// u64::MAX: not measured.
    pub(super) rtt_us: AtomicU64,
    pub(super) jb_delay_us: AtomicU64,
    pub(super) concealed: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) foreign: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) underruns: AtomicU64,
    pub(super) overruns: AtomicU64,
    pub(super) digits: AtomicU64,
    pub(super) remote: AtomicAddr,
}

impl LegShared {
    pub(super) fn snapshot(
        &self,
        local: Option<SocketAddr>,
        format: Option<AudioFormat>,
    ) -> MediaStats {
        let rtt = self.rtt_us.load(R);
        MediaStats {
            rtp: local.is_some(),
            local,
            format,
            remote: self.remote.load(),
            packets_received: self.rx_packets.load(R),
            bytes_received: self.rx_bytes.load(R),
            packets_sent: self.tx_packets.load(R),
            bytes_sent: self.tx_bytes.load(R),
            packets_lost: self.lost.load(R),
            jitter: Duration::from_micros(self.jitter_us.load(R)),
            round_trip: (rtt != u64::MAX && rtt != 0).then(|| Duration::from_micros(rtt)),
            jitter_buffer_delay: Duration::from_micros(self.jb_delay_us.load(R)),
            frames_concealed: self.concealed.load(R),
            packets_late: self.late.load(R),
            malformed: self.malformed.load(R),
            foreign: self.foreign.load(R),
            send_errors: self.send_errors.load(R),
            underruns: self.underruns.load(R),
            overruns: self.overruns.load(R),
            digits: self.digits.load(R),
        }
    }
}

/// Buckets of [`LatencyHistogram`]: 10 µs wide up to 20 ms, then one overflow bucket.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 2001;

/// A histogram of durations in 10 µs buckets (up to 20 ms; longer ones in the last bucket).
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("p50", &self.percentile(0.5))
            .field("p99", &self.percentile(0.99))
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration (wait-free).
    pub fn record(&self, d: Duration) {
        let i = ((d.as_micros() as u64) / BUCKET_US).min(BUCKETS as u64 - 1) as usize;
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, R);
        }
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(R)).sum()
    }

    /// Upper edge of the bucket holding the `p` quantile (0.0..=1.0); zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * p.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(R);
            if seen >= rank {
                return Duration::from_micros((i as u64 + 1) * BUCKET_US);
            }
        }
        Duration::from_micros(BUCKETS as u64 * BUCKET_US)
    }

    /// Share of recorded durations above `d`.
    pub fn fraction_above(&self, d: Duration) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let from = ((d.as_micros() as u64) / BUCKET_US) as usize + 1;
        let above: u64 = self.buckets.iter().skip(from).map(|b| b.load(R)).sum();
        above as f64 / total as f64
    }

    /// Adds another histogram's counts.
    pub fn merge(&self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter().zip(other.buckets.iter()) {
            a.fetch_add(b.load(R), R);
        }
    }

    /// Clears it.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, R);
        }
    }
}

/// The plane's processing latency, over all workers (see `docs/BENCHMARKS.md` for exactly what
/// is measured).
#[derive(Debug, Default)]
pub struct LatencyReport {
    /// Per datagram: from the return of `epoll_wait` that reported it to the end of its
    /// processing (parse, latching, statistics, jitter-buffer insert) — includes waiting for the
    /// datagrams reported before it in the same batch.
    pub receive: LatencyHistogram,
    /// Per packet sent: from the phase's deadline (when its frame was due out of the jitter
    /// buffer) to the return of `sendto` — includes timer wake-up delay, the legs processed
    /// before it in that phase, decode, PLC, bridge, encode and the syscall.
    pub send: LatencyHistogram,
    /// Phases that started more than one tick late (the worker fell behind).
    pub overloaded_phases: u64,
}

/// Plane-wide counts and histograms.
pub(super) struct PlaneShared {
    pub(super) legs: AtomicUsize,
    pub(super) sockets: AtomicUsize,
    pub(super) bridges: AtomicUsize,
    pub(super) sources: AtomicUsize,
    pub(super) receive: Vec<LatencyHistogram>,
    pub(super) send: Vec<LatencyHistogram>,
    pub(super) overloaded: AtomicU64,
}

impl PlaneShared {
    pub(super) fn new(workers: usize, measure: bool) -> Self {
        let n = if measure { workers } else { 0 };
        Self {
            legs: AtomicUsize::new(0),
            sockets: AtomicUsize::new(0),
            bridges: AtomicUsize::new(0),
            sources: AtomicUsize::new(0),
            receive: (0..n).map(|_| LatencyHistogram::default()).collect(),
            send: (0..n).map(|_| LatencyHistogram::default()).collect(),
            overloaded: AtomicU64::new(0),
        }
    }

    pub(super) fn counts(&self) -> PlaneCounts {
        PlaneCounts {
            legs: self.legs.load(Ordering::Acquire),
            sockets: self.sockets.load(Ordering::Acquire),
            bridges: self.bridges.load(Ordering::Acquire),
            sources: self.sources.load(Ordering::Acquire),
        }
    }

    pub(super) fn latency(&self) -> LatencyReport {
        let r = LatencyReport::default();
        for h in &self.receive {
            r.receive.merge(h);
        }
        for h in &self.send {
            r.send.merge(h);
        }
        LatencyReport {
            overloaded_phases: self.overloaded.load(R),
            ..r
        }
    }

    /// Clears the latency histograms (a benchmark's warm-up).
    pub(super) fn reset_latency(&self) {
        for h in self.receive.iter().chain(&self.send) {
            h.reset();
        }
        self.overloaded.store(0, R);
    }
}

//! The switch's [`MediaBackend`] over the media plane ([`crate::media::plane::MediaPlane`]):
//! engine media commands (by [`LegId`]) become plane operations (by [`MediaId`]), plane events
//! become [`MediaNotice`]s for the engine.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use super::cdr::LegMediaStats;
use super::engine::{CallKey, MediaCommand, MediaNotice, MediaSource};
use super::leg::{AudioCodec, DigitSource, LegId, MediaDirection, NegotiatedMedia, PortSlot};
use super::switch::{MediaBackend, MediaCounts};
use crate::media::codec::AudioFormat;
use crate::media::plane::{
    Country, Direction, MediaEvent, MediaId, MediaPlane, RtpParams, Source, ToneKind,
};

type Ids = Arc<Mutex<HashMap<MediaId, (LegId, bool)>>>;

/// The plane backend. See the module docs.
#[derive(Debug)]
pub struct PlaneMedia {
    plane: MediaPlane,
    legs: HashMap<LegId, MediaId>,
    /// The `call` span current when each leg's media opened (the switch opens it in the
    /// call's span): the leg's media log lines run in it.
    spans: super::leg::LegSpans,
    ids: Ids,
    notices: Option<mpsc::UnboundedReceiver<(LegId, MediaNotice)>>,
    inactivity: Duration,
    country: Country,
}

fn format_of(codec: AudioCodec) -> Result<AudioFormat, String> {
    match codec {
        AudioCodec::Pcmu => Ok(AudioFormat::Pcmu),
        AudioCodec::Pcma => Ok(AudioFormat::Pcma),
        AudioCodec::L16 => Ok(AudioFormat::L16),
        AudioCodec::Opus => Err("Opus is carried on WebRTC legs only, not on RTP legs".to_owned()),
    }
}

fn direction_of(d: MediaDirection) -> Direction {
    match d {
        MediaDirection::SendRecv => Direction::SendRecv,
        MediaDirection::SendOnly => Direction::SendOnly,
        MediaDirection::RecvOnly => Direction::RecvOnly,
        MediaDirection::Inactive => Direction::Inactive,
    }
}

impl PlaneMedia {
    /// A backend over `plane` (whose events it takes; call inside a tokio runtime). RTP legs
    /// that receive are hung up after `inactivity` without media; ringback follows `country`.
    pub fn new(plane: MediaPlane, inactivity: Duration, country: Country) -> Self {
        let ids: Ids = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(mut events) = plane.take_events() {
            let ids = Arc::clone(&ids);
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    let (id, mut notice) = match ev {
                        MediaEvent::Digit {
                            id,
                            digit,
                            duration,
                        } => (
                            id,
                            MediaNotice::Digit {
                                digit,
                                duration,
                                source: DigitSource::Rfc4733,
                            },
                        ),
                        MediaEvent::Inactive { id } => (id, MediaNotice::Inactive),
                        MediaEvent::Failed { id, reason } => (id, MediaNotice::Failed(reason)),
                        _ => continue,
                    };
                    let leg = ids
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&id)
                        .copied();
                    let Some((leg, rtp)) = leg else { continue };
                    if let MediaNotice::Digit { source, .. } = &mut notice
                        && !rtp
                    {
                        *source = DigitSource::Inband;
                    }
                    if tx.send((leg, notice)).is_err() {
                        break;
                    }
                }
            });
        }
        PlaneMedia {
            plane,
            legs: HashMap::new(),
            spans: Default::default(),
            ids,
            notices: Some(rx),
            inactivity,
            country,
        }
    }

    /// The plane.
    pub fn plane(&self) -> &MediaPlane {
        &self.plane
    }

    fn id(&self, leg: LegId) -> Result<MediaId, String> {
        self.legs
            .get(&leg)
            .copied()
            .ok_or_else(|| format!("{leg} has no media"))
    }

    fn params(&self, m: &NegotiatedMedia) -> Result<RtpParams, String> {
        let direction = direction_of(m.direction);
        Ok(RtpParams {
            format: format_of(m.codec)?,
            payload_type: m.payload_type,
            telephone_event: m.telephone_event,
            comfort_noise: None,
            ptime_ms: m.ptime_ms,
            remote: m.remote,
            remote_rtcp: m.remote_rtcp,
            rtcp_mux: m.rtcp_mux,
            direction,
            // A leg that expects nothing (we are held, or inactive) must not time out.
            inactivity_timeout: if m.direction.receives() {
                self.inactivity
            } else {
                Duration::ZERO
            },
        })
    }

    fn source(&self, s: &MediaSource) -> Source {
        match s {
            MediaSource::Silence => Source::Silence,
            MediaSource::ComfortNoise => Source::ComfortNoise,
            MediaSource::HoldTone => Source::HoldTone,
            MediaSource::Music(m) => Source::Wav(Arc::clone(m.samples()), true),
            MediaSource::Ringback => Source::Tone(self.country, ToneKind::Ringback),
            MediaSource::Echo => Source::Echo,
            MediaSource::Milliwatt => Source::Milliwatt,
        }
    }

    fn span(&self, leg: LegId) -> tracing::Span {
        self.spans.get(leg)
    }

    fn forget(&mut self, leg: LegId) -> Option<MediaId> {
        self.spans.remove(leg);
        let id = self.legs.remove(&leg)?;
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        Some(id)
    }
}

impl MediaBackend for PlaneMedia {
    fn open_rtp(&mut self, leg: LegId, call: CallKey, ip: IpAddr) -> Result<SocketAddr, String> {
        let (id, addr) = self.plane.open_rtp(call.0, ip).map_err(|e| e.to_string())?;
        tracing::debug!(%leg, media_id = id.0, local = %addr, "RTP socket opened");
        self.spans.insert(leg, tracing::Span::current());
        self.legs.insert(leg, id);
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (leg, true));
        Ok(addr)
    }

    fn attach_port(&mut self, leg: LegId, call: CallKey, port: PortSlot) -> Result<(), String> {
        let port = port
            .take()
            .ok_or_else(|| format!("{leg}: its frame port was already attached or never given"))?;
        let id = self
            .plane
            .attach_port(call.0, port)
            .map_err(|e| e.to_string())?;
        tracing::debug!(%leg, media_id = id.0, "frame port attached");
        self.spans.insert(leg, tracing::Span::current());
        self.legs.insert(leg, id);
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (leg, false));
        Ok(())
    }

    fn execute(&mut self, command: &MediaCommand) -> Result<(), String> {
        let span = match command {
            MediaCommand::ConfigureRtp { leg, .. }
            | MediaCommand::Play { leg, .. }
            | MediaCommand::Mute { leg, .. }
            | MediaCommand::SendDigit { leg, .. }
            | MediaCommand::Release { leg }
            | MediaCommand::Connect { a: leg, .. } => self.span(*leg),
            MediaCommand::OpenRtp { .. } | MediaCommand::AttachPort { .. } => tracing::Span::none(),
        };
        let _entered = span.enter();
        match command {
            MediaCommand::ConfigureRtp { leg, media } => {
                let id = self.id(*leg)?;
                let p = self.params(media)?;
                tracing::debug!(
                    %leg,
                    codec = media.codec.name(),
                    remote = ?media.remote,
                    rtcp_mux = media.rtcp_mux,
                    direction = ?media.direction,
                    "RTP configured"
                );
                self.plane.configure_rtp(id, p).map_err(|e| e.to_string())
            }
            MediaCommand::Connect { a, b } => {
                let (ia, ib) = (self.id(*a)?, self.id(*b)?);
                self.plane.connect(ia, ib).map_err(|e| e.to_string())
            }
            MediaCommand::Play { leg, source } => {
                let id = self.id(*leg)?;
                let s = self.source(source);
                self.plane.play(id, s).map_err(|e| e.to_string())
            }
            MediaCommand::Mute { leg, on } => {
                let id = self.id(*leg)?;
                self.plane.mute(id, *on).map_err(|e| e.to_string())
            }
            MediaCommand::SendDigit {
                leg,
                digit,
                duration,
            } => {
                let id = self.id(*leg)?;
                self.plane
                    .send_digit(id, *digit, *duration)
                    .map_err(|e| e.to_string())
            }
            MediaCommand::Release { leg } => {
                if let Some(id) = self.forget(*leg) {
                    if let Some(s) = self.plane.stats(id) {
                        tracing::debug!(
                            %leg,
                            packets_received = s.packets_received,
                            packets_sent = s.packets_sent,
                            packets_lost = s.packets_lost,
                            jitter_ms = s.jitter.as_secs_f64() * 1000.0,
                            "media released"
                        );
                    }
                    self.plane.release(id);
                }
                Ok(())
            }
            MediaCommand::OpenRtp { .. } | MediaCommand::AttachPort { .. } => Ok(()),
        }
    }

    fn move_leg(&mut self, leg: LegId, call: CallKey) -> Result<(), String> {
        let id = self.id(leg)?;
        self.plane.move_leg(id, call.0).map_err(|e| e.to_string())
    }

    fn leg_stats(&self, leg: LegId) -> Option<LegMediaStats> {
        let s = self.plane.stats(*self.legs.get(&leg)?)?;
        Some(LegMediaStats {
            packets_received: s.packets_received,
            packets_sent: s.packets_sent,
            packets_lost: s.packets_lost,
            jitter_ms: s.jitter.as_secs_f64() * 1000.0,
        })
    }

    fn counts(&self) -> MediaCounts {
        let c = self.plane.counts();
        MediaCounts {
            legs: c.legs,
            sockets: c.sockets,
            bridges: c.bridges,
        }
    }

    fn take_notices(&mut self) -> Option<mpsc::UnboundedReceiver<(LegId, MediaNotice)>> {
        self.notices.take()
    }
}

impl Drop for PlaneMedia {
    /// The gateway owns the plane: when its switch goes, every worker and socket goes too.
    fn drop(&mut self) {
        self.plane.shutdown();
    }
}

//! A B-channel's audio rings lent to the media plane for one call.
//!
//! The span thread made one pair of rings per channel for the channel's whole life. A call
//! borrows them as a [`TdmPort`] (the media plane's [`FramePort`]); when the plane releases
//! the leg and drops the port, the rings go back to the channel's [`PortHome`] and the channel
//! can carry the next call. Until then the provider counts the channel busy. The rings are
//! used lock-free; the home's lock is taken only when a port is lent or returned.

use std::sync::{Arc, Mutex, PoisonError};

use ringbuf::traits::{Consumer, Producer};
use tdm_driver::span::{ChannelPorts, Frame};

use crate::calls::leg::FramePort;

/// Where a channel's rings live between calls.
#[derive(Debug, Clone)]
pub struct PortHome(Arc<Mutex<Option<ChannelPorts>>>);

impl PortHome {
    /// A home holding `ports`.
    pub fn new(ports: ChannelPorts) -> Self {
        Self(Arc::new(Mutex::new(Some(ports))))
    }

    /// Whether the rings are home (no call holds them).
    pub fn is_home(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Lends the rings for a call; stale received audio is dropped first. `None` while a
    /// previous call still holds them.
    pub fn lend(&self) -> Option<TdmPort> {
        let mut ports = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        while ports.from_line.try_pop().is_some() {}
        Some(TdmPort {
            ports: Some(ports),
            home: self.clone(),
        })
    }

    /// Drops any audio the line delivered while no call listens (keeps the ring fresh).
    pub fn drain_idle(&self) {
        if let Some(p) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            while p.from_line.try_pop().is_some() {}
        }
    }
}

/// A channel's rings on loan to a call (see the module docs).
#[derive(Debug)]
pub struct TdmPort {
    ports: Option<ChannelPorts>,
    home: PortHome,
}

impl FramePort for TdmPort {
    fn pop_received(&mut self) -> Option<Frame> {
        self.ports.as_mut()?.from_line.try_pop()
    }

    fn push_to_send(&mut self, frame: &Frame) -> bool {
        self.ports
            .as_mut()
            .is_some_and(|p| p.to_line.try_push(*frame).is_ok())
    }
}

impl Drop for TdmPort {
    fn drop(&mut self) {
        if let Some(p) = self.ports.take() {
            *self.home.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
        }
    }
}

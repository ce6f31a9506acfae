//! One PRI D-channel's signalling stack: a Q.921 link carrying Q.931 call control, joined so
//! that an IO adapter only moves frames and the time.

use std::time::Instant;

use super::call::{CallControl, CallEvent, SwitchType};
use super::q921::{Link, LinkConfig, LinkEvent, LinkState, Role};
use super::q931::{Message, MessageError};

/// What the stack reports besides call events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackEvent {
    /// A call control event.
    Call(CallEvent),
    /// Layer 2 came up.
    LinkUp,
    /// Layer 2 went down (released or failed); calls not yet active were cleared.
    LinkDown,
    /// An I frame did not carry a Q.931 message; it was ignored (Q.931 §5.8.1).
    BadMessage(MessageError),
}

/// Q.921 + Q.931 for one D-channel, sans IO.
#[derive(Debug)]
pub struct PriStack {
    /// The data link (read its state; drive it through the stack).
    pub link: Link,
    /// Call control (place and answer calls through it).
    pub calls: CallControl,
    events: std::collections::VecDeque<StackEvent>,
}

impl PriStack {
    /// A stack for `role`'s side of a span speaking `switch`; starts bringing layer 2 up.
    pub fn new(now: Instant, role: Role, switch: SwitchType) -> Self {
        let mut link = Link::new(LinkConfig::new(role));
        link.establish(now);
        Self {
            link,
            calls: CallControl::new(role, switch),
            events: std::collections::VecDeque::new(),
        }
    }

    /// True when layer 2 is in multiple-frame operation.
    pub fn is_up(&self) -> bool {
        !matches!(
            self.link.state(),
            LinkState::Released | LinkState::AwaitingEstablishment | LinkState::AwaitingRelease
        )
    }

    /// Feeds one D-channel frame (FCS already removed).
    pub fn receive_frame(&mut self, now: Instant, frame: &[u8]) {
        self.link.receive(now, frame);
        self.run(now);
    }

    /// Runs due timers of both layers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now);
        self.calls.handle_timeout(now);
        self.run(now);
    }

    /// Passes messages between the layers; call after using [`PriStack::calls`] directly.
    pub fn run(&mut self, now: Instant) {
        for _ in 0..8 {
            let mut moved = false;
            while let Some(event) = self.link.poll_event() {
                moved = true;
                match event {
                    LinkEvent::Data(bytes) | LinkEvent::UnitData(bytes) => {
                        match Message::decode(&bytes) {
                            Ok(msg) => self.calls.receive(now, &msg),
                            Err(e) => self.events.push_back(StackEvent::BadMessage(e)),
                        }
                    }
                    LinkEvent::Established => {
                        self.calls.link_changed(now, true);
                        self.events.push_back(StackEvent::LinkUp);
                    }
                    LinkEvent::Released | LinkEvent::Failure => {
                        self.calls.link_changed(now, false);
                        self.events.push_back(StackEvent::LinkDown);
                    }
                    _ => {}
                }
            }
            while let Some(msg) = self.calls.poll_transmit() {
                moved = true;
                self.link.send(now, msg.to_bytes());
            }
            while let Some(event) = self.calls.poll_event() {
                self.events.push_back(StackEvent::Call(event));
            }
            if !moved {
                break;
            }
        }
    }

    /// The next frame to write to the D-channel (without FCS).
    pub fn poll_frame(&mut self) -> Option<Vec<u8>> {
        self.link.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StackEvent> {
        self.events.pop_front()
    }

    /// When [`PriStack::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.link.poll_timeout(), self.calls.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

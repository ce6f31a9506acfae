//! Two PRI stacks over a clear 64 kbit/s channel with software HDLC: 8-octet blocks every
//! millisecond as the span thread would move them, bit errors injected; corrupted frames are
//! dropped by the FCS and Q.921 recovers them, and a call completes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tdm_driver::hdlc::{HdlcDecoder, HdlcEncoder, HdlcEvent};
use tdm_driver::pri::call::{CallEvent, SwitchType, cause};
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::q931::PartyNumber;
use tdm_driver::pri::stack::{PriStack, StackEvent};

struct Side {
    stack: PriStack,
    tx: HdlcEncoder,
    rx: HdlcDecoder,
    events: Vec<CallEvent>,
    up: bool,
    bad_fcs: usize,
}

impl Side {
    fn new(now: Instant, role: Role) -> Self {
        Self {
            stack: PriStack::new(now, role, SwitchType::EuroIsdnE1),
            tx: HdlcEncoder::new(),
            rx: HdlcDecoder::default(),
            events: Vec::new(),
            up: false,
            bad_fcs: 0,
        }
    }

    /// One millisecond: queue our frames, emit 8 line octets.
    fn tick(&mut self, now: Instant) -> [u8; 8] {
        self.stack.handle_timeout(now);
        while let Some(f) = self.stack.poll_frame() {
            self.tx.queue_frame(&f);
        }
        while let Some(e) = self.stack.poll_event() {
            match e {
                StackEvent::Call(e) => self.events.push(e),
                StackEvent::LinkUp => self.up = true,
                StackEvent::LinkDown => self.up = false,
                _ => {}
            }
        }
        let mut block = [0u8; 8];
        self.tx.fill(&mut block);
        block
    }

    fn hear(&mut self, now: Instant, block: &[u8]) {
        let mut out = Vec::new();
        self.rx.push(block, &mut out);
        for e in out {
            match e {
                HdlcEvent::Frame(f) => self.stack.receive_frame(now, &f),
                // A flipped bit shows as a bad FCS, or (when it breaks or fakes a flag) as an
                // unaligned, aborted or short frame: any way, the frame is dropped.
                HdlcEvent::Error(_) => self.bad_fcs += 1,
            }
        }
    }
}

fn num(d: &str) -> PartyNumber {
    PartyNumber {
        number_type: 0,
        plan: 1,
        presentation: None,
        reason: None,
        digits: d.into(),
    }
}

#[test]
fn a_call_completes_over_software_hdlc_with_bit_errors() {
    let start = Instant::now();
    let mut net = Side::new(start, Role::Network);
    let mut user = Side::new(start, Role::User);
    let mut call = None;
    let mut answered = false;
    let mut flipped = 0;
    for ms in 0..20_000u32 {
        let now = start + Duration::from_millis(u64::from(ms));
        let mut a = net.tick(now);
        let b = user.tick(now);
        // Flip one bit in every 4th block network→user that lies inside a frame (frame bits
        // still queued after it), 6 times: the FCS must catch each.
        if ms % 4 == 0 && flipped < 6 && !net.tx.is_idle() {
            a[4] ^= 0x04;
            flipped += 1;
        }
        user.hear(now, &a);
        net.hear(now, &b);
        if net.up && user.up && call.is_none() {
            call = Some(
                net.stack
                    .calls
                    .setup(now, num("123"), Some(num("456")), None, true)
                    .unwrap(),
            );
        }
        if let Some(pos) = user
            .events
            .iter()
            .position(|e| matches!(e, CallEvent::Incoming { .. }))
        {
            let CallEvent::Incoming {
                call: uc, called, ..
            } = user.events.remove(pos)
            else {
                unreachable!()
            };
            assert_eq!(called.unwrap().digits, "123");
            user.stack.calls.connect(now, uc).unwrap();
            user.stack.run(now);
        }
        if let Some(pos) = user
            .events
            .iter()
            .position(|e| matches!(e, CallEvent::Disconnecting { .. }))
        {
            let CallEvent::Disconnecting { call: uc, cause: c } = user.events.remove(pos) else {
                unreachable!()
            };
            assert_eq!(c, cause::NORMAL_CLEARING);
            user.stack.calls.release(now, uc, c).unwrap();
            user.stack.run(now);
        }
        if net
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Answered { .. }))
            && !answered
        {
            answered = true;
            net.stack
                .calls
                .disconnect(now, call.unwrap(), cause::NORMAL_CLEARING)
                .unwrap();
            net.stack.run(now);
        }
        if answered && net.stack.calls.live_calls() == 0 && user.stack.calls.live_calls() == 0 {
            assert_eq!(flipped, 6);
            assert!(
                user.bad_fcs >= 6,
                "bit errors must be caught: {} frames dropped",
                user.bad_fcs
            );
            return;
        }
    }
    panic!(
        "call did not complete: up {}/{}, net {:?}, user {:?}, bad FCS {}",
        net.up, user.up, net.events, user.events, user.bad_fcs
    );
}

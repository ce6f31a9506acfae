//! Robbed-bit / CAS signalling as DAHDI's core runs it (dahdi-base.c 2.11.1:
//! `dahdi_rbs_sethook`, `__rbs_otimer_expire`, `dahdi_rbsbits`, `__dahdi_hooksig_pvt`,
//! `rbs_itimer_expire` and the ring debounce of `_dahdi_receive`), re-expressed for the model:
//!
//! - **Transmit**: DAHDI_HOOK moves a channel's *tx state* (on hook, debounce, off hook, start,
//!   ring on/off with the channel's cadence, pre-wink/wink, pre-flash/flash, kewl) and sends the
//!   ABCD bits its signalling type gives that state (the `outs` table of `dahdi_rbs_sethook`).
//!   An output timer in samples moves timed states on.
//! - **Receive**: each tick a channel reads the bits its far end sends (through the span pair)
//!   and turns a change into a receive hook signal (on hook, off hook, start, ring) by its
//!   signalling type, then into events: E&M reports an off-hook as RINGOFFHOOK only after the
//!   receive-wink time (a shorter pulse is a WINKFLASH); FXO signalling reports an on-hook only
//!   after the receive-flash time (shorter: a flash, or a dial pulse); FXS signalling reports
//!   ringing as RINGBEGIN and its end, after a 50 ms trailer, as RINGOFFHOOK.
//!
//! Simplifications, all documented in `dahdi-sim --help`'s spirit: WINK and FLASH never block
//! the caller (DAHDI blocks a blocking fd until the pulse ends; here HOOKCOMPLETE is queued at
//! the end for every caller); pulse *dialling* (DAHDI_DIAL `P`) is not generated; the
//! compile-time options EMFLASH, EMPULSE and FXSFLASH are off as in DAHDI's default build.

use super::{Channel, SIG_FXO_BIT, c};

/// `__DAHDI_SIG_FXS`: the bit every FXS-style signalling type carries.
const SIG_FXS_BIT: u32 = 1 << 13;

const ABIT: i32 = 8;
const BBIT: i32 = 4;
const CBIT: i32 = 2;
const DBIT: i32 = 1;
const BITS_ABCD: i32 = ABIT | BBIT | CBIT | DBIT;
const BITS_ABD: i32 = ABIT | BBIT | DBIT;
const BITS_ACD: i32 = ABIT | CBIT | DBIT;
const BITS_BCD: i32 = BBIT | CBIT | DBIT;
const BITS_AC: i32 = ABIT | CBIT;
const BITS_BD: i32 = BBIT | DBIT;

/// Samples per tick (DAHDI_CHUNKSIZE).
const CHUNK: i32 = 8;
/// RING_DEBOUNCE_TIME, in ticks (ms).
const RING_DEBOUNCE_TIME: i32 = 2000;
/// DAHDI_RINGTRAILER, in samples.
const RING_TRAILER: i32 = 50 * 8;
/// DAHDI_AFTERSTART_TIME, ms.
const AFTERSTART_TIME: i32 = 500;
/// DAHDI_KEWLTIME, ms.
const KEWL_TIME: i32 = 500;
/// DAHDI_AFTERKEWLTIME, ms.
const AFTERKEWL_TIME: i32 = 300;
/// DAHDI_MINPULSETIME / DAHDI_MAXPULSETIME, samples.
const MIN_PULSE: i32 = 15 * 8;
const MAX_PULSE: i32 = 200 * 8;
/// DAHDI_PULSETIMEOUT, ticks.
const PULSE_TIMEOUT: i32 = MAX_PULSE / 8 + 50;
/// DAHDI_RINGOFFTIME, ms.
const RING_OFF_TIME: i32 = 4000;

/// Indices into `Channel::timing` (dahdi_params order).
mod timing {
    pub const PREWINK: usize = 0;
    pub const PREFLASH: usize = 1;
    pub const WINK: usize = 2;
    pub const FLASH: usize = 3;
    pub const START: usize = 4;
    pub const RXWINK: usize = 5;
    pub const RXFLASH: usize = 6;
    pub const DEBOUNCE: usize = 7;
}

/// DAHDI_TXSIG_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxSig {
    OnHook,
    OffHook,
    Start,
    Kewl,
}

/// DAHDI_RXSIG_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxSig {
    OnHook,
    OffHook,
    Start,
    Ring,
    Initial,
}

/// DAHDI_TXSTATE_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxState {
    OnHook,
    OffHook,
    Start,
    PreWink,
    Wink,
    PreFlash,
    Flash,
    Debounce,
    AfterStart,
    RingOn,
    RingOff,
    Kewl,
    AfterKewl,
}

/// One channel's RBS state.
#[derive(Debug, Clone)]
pub(super) struct Rbs {
    pub(super) txstate: TxState,
    pub(super) txhooksig: TxSig,
    /// ABCD bits sent.
    pub(super) txsig: i32,
    /// Output timer, samples.
    otimer: i32,
    /// ABCD bits last received (-1: none yet).
    pub(super) rxsig: i32,
    pub(super) rxhooksig: RxSig,
    /// Input timer, samples.
    itimer: i32,
    itimerset: i32,
    /// Ticks.
    ringdebtimer: i32,
    /// Samples.
    ringtrailer: i32,
    gotgs: bool,
    kewlonhook: bool,
    pulsecount: i32,
    /// Ticks.
    pulsetimer: i32,
    cadence: [i32; 16],
    cadencepos: usize,
    firstcadencepos: usize,
}

impl Default for Rbs {
    fn default() -> Self {
        let mut cadence = [0; 16];
        cadence[0] = 2000;
        cadence[1] = RING_OFF_TIME;
        Rbs {
            txstate: TxState::OnHook,
            txhooksig: TxSig::OnHook,
            txsig: 0,
            otimer: 0,
            rxsig: -1,
            rxhooksig: RxSig::Initial,
            itimer: 0,
            itimerset: 0,
            ringdebtimer: 0,
            ringtrailer: 0,
            gotgs: false,
            kewlonhook: false,
            pulsecount: 0,
            pulsetimer: 0,
            cadence,
            cadencepos: 0,
            firstcadencepos: 0,
        }
    }
}

/// The bits `sig` sends for `txsig` (DAHDI's `outs` table); `None` for types without RBS.
fn out_bits(sig: u32, txsig: TxSig) -> Option<i32> {
    use TxSig::*;
    let bits = match sig {
        0 => match txsig {
            OnHook => BITS_ACD,
            _ => 0,
        },
        c::SIG_EM => match txsig {
            OffHook | Start => BITS_ABCD,
            _ => 0,
        },
        c::SIG_FXSLS | c::SIG_FXSKS => match txsig {
            OnHook => BITS_BD,
            OffHook | Start => BITS_ABCD,
            Kewl => 0,
        },
        c::SIG_FXSGS => match txsig {
            OnHook => BITS_BD,
            OffHook => BITS_ABCD,
            Start => BITS_AC,
            Kewl => 0,
        },
        c::SIG_FXOLS => match txsig {
            OnHook | OffHook => BITS_BD,
            _ => 0,
        },
        c::SIG_FXOGS => match txsig {
            OnHook => BITS_ABCD,
            OffHook => BITS_BD,
            _ => 0,
        },
        c::SIG_FXOKS => match txsig {
            OnHook | OffHook => BITS_BD,
            Kewl => BITS_ABCD,
            Start => 0,
        },
        c::SIG_SF => match txsig {
            OnHook | Kewl => BITS_BCD,
            OffHook | Start => BITS_ABCD,
        },
        c::SIG_EM_E1 => match txsig {
            OnHook | Kewl => DBIT,
            OffHook | Start => BITS_ABD,
        },
        _ => return None,
    };
    Some(bits)
}

/// Whether DAHDI_HOOK drives RBS on a channel of signalling `sig`.
pub(super) fn has_hook(sig: u32) -> bool {
    sig != 0 && sig != c::SIG_CAS && out_bits(sig, TxSig::OnHook).is_some()
}

impl Channel {
    fn is_fxs(&self) -> bool {
        self.sig & SIG_FXS_BIT != 0
    }

    fn is_fxo(&self) -> bool {
        self.sig & SIG_FXO_BIT != 0
    }

    /// `dahdi_rbs_sethook`.
    fn sethook(&mut self, txsig: TxSig, txstate: TxState, timeout_ms: i32) {
        self.rbs.txstate = txstate;
        self.rbs.txhooksig = txsig;
        if let Some(bits) = out_bits(self.sig, txsig) {
            self.rbs.txsig = bits;
        }
        self.rbs.otimer = timeout_ms.saturating_mul(CHUNK);
    }

    /// Resets the RBS state for a (re)configured signalling type, sending its idle bits.
    pub(super) fn rbs_configure(&mut self) {
        let cadence = self.rbs.cadence;
        self.rbs = Rbs {
            cadence,
            ..Rbs::default()
        };
        if self.sig == c::SIG_CAS {
            self.rbs.txsig = self.idlebits & 0xf;
        } else if let Some(bits) = out_bits(self.sig, TxSig::OnHook) {
            self.rbs.txsig = bits;
        }
    }

    /// `dahdi_hangup` for RBS channels.
    pub(super) fn rbs_hangup(&mut self) {
        self.rbs.kewlonhook = false;
        if self.is_fxs() {
            self.rbs.ringdebtimer = RING_DEBOUNCE_TIME;
        }
        if self.sig == c::SIG_CAS {
            self.rbs.txsig = self.idlebits & 0xf;
        } else if self.sig == c::SIG_FXOKS
            && self.rbs.txstate != TxState::OnHook
            && !(self.rbs.rxhooksig == RxSig::OnHook && self.rbs.itimer <= 0)
        {
            self.sethook(TxSig::Kewl, TxState::Kewl, KEWL_TIME);
        } else {
            self.sethook(TxSig::OnHook, TxState::OnHook, 0);
        }
    }

    /// DAHDI_HOOK on an RBS channel; `Err(errno)` as DAHDI refuses.
    pub(super) fn rbs_hook(&mut self, arg: i32, zone_loaded: bool) -> Result<(), i32> {
        use super::errno::{EBUSY, EINVAL};
        let t = |i: usize, ch: &Channel| ch.timing.get(i).copied().unwrap_or(0);
        // "if dialing, stop it".
        self.dialing = None;
        match arg {
            c::ONHOOK => {
                self.rbs_hangup();
                self.flush_buffers(true, true);
            }
            c::OFFHOOK => {
                if matches!(self.rbs.txstate, TxState::Kewl | TxState::AfterKewl) {
                    return Err(EBUSY);
                }
                let debounce = t(timing::DEBOUNCE, self);
                self.sethook(TxSig::OffHook, TxState::Debounce, debounce);
            }
            c::RING | c::START => {
                if !zone_loaded {
                    return Err(libc::ENODATA);
                }
                if self.rbs.txstate != TxState::OnHook {
                    return Err(EBUSY);
                }
                if self.is_fxo() {
                    self.rbs.cadencepos = 0;
                    let on = self.rbs.cadence[0];
                    self.sethook(TxSig::Start, TxState::RingOn, on);
                } else {
                    let start = t(timing::START, self);
                    self.sethook(TxSig::Start, TxState::Start, start);
                }
            }
            c::WINK => {
                if self.rbs.txstate != TxState::OnHook {
                    return Err(EBUSY);
                }
                let prewink = t(timing::PREWINK, self);
                self.sethook(TxSig::OnHook, TxState::PreWink, prewink);
            }
            c::FLASH => {
                if self.rbs.txstate != TxState::OffHook {
                    return Err(EBUSY);
                }
                let preflash = t(timing::PREFLASH, self);
                self.sethook(TxSig::OffHook, TxState::PreFlash, preflash);
            }
            c::RINGOFF => self.sethook(TxSig::OnHook, TxState::OnHook, 0),
            _ => return Err(EINVAL),
        }
        Ok(())
    }

    /// DAHDI_SETCADENCE: `values` are the 16 ms values; `None` restores the default.
    pub(super) fn rbs_set_cadence(&mut self, values: Option<[i32; 16]>) {
        self.rbs.firstcadencepos = 0;
        match values {
            Some(mut cad) => {
                for i in (0..16).step_by(2) {
                    if let Some(v) = cad.get_mut(i).filter(|v| **v < 0) {
                        *v = v.saturating_neg();
                        self.rbs.firstcadencepos = i;
                        break;
                    }
                }
                self.rbs.cadence = cad;
            }
            None => {
                let mut cad = [0; 16];
                cad[0] = self.timing.get(timing::START).copied().unwrap_or(2000);
                cad[1] = RING_OFF_TIME;
                self.rbs.cadence = cad;
            }
        }
    }

    /// `__rbs_otimer_expire`.
    fn otimer_expire(&mut self) {
        let t = |i: usize, ch: &Channel| ch.timing.get(i).copied().unwrap_or(0);
        self.rbs.otimer = 0;
        match self.rbs.txstate {
            TxState::RingOff => {
                self.rbs.cadencepos += 1;
                if self.rbs.cadencepos >= 16 {
                    self.rbs.cadencepos = self.rbs.firstcadencepos;
                }
                let mut len = self.rbs.cadence[self.rbs.cadencepos % 16];
                if len == 0 {
                    self.rbs.cadencepos = self.rbs.firstcadencepos;
                    len = self.rbs.cadence[self.rbs.cadencepos % 16];
                }
                self.sethook(TxSig::Start, TxState::RingOn, len);
                self.push_event(c::EVENT_RINGERON);
            }
            TxState::RingOn => {
                self.rbs.cadencepos += 1;
                if self.rbs.cadencepos >= 16 {
                    self.rbs.cadencepos = 0;
                }
                let mut len = self.rbs.cadence[self.rbs.cadencepos % 16];
                if len == 0 {
                    self.rbs.cadencepos = 0;
                    len = RING_OFF_TIME;
                }
                self.sethook(TxSig::OffHook, TxState::RingOff, len);
                self.push_event(c::EVENT_RINGEROFF);
            }
            TxState::Start => {
                self.sethook(TxSig::OffHook, TxState::AfterStart, AFTERSTART_TIME);
            }
            TxState::PreWink => {
                let wink = t(timing::WINK, self);
                self.sethook(TxSig::OffHook, TxState::Wink, wink);
            }
            TxState::Wink => {
                self.sethook(TxSig::OnHook, TxState::OnHook, 0);
                self.push_event(c::EVENT_HOOKCOMPLETE);
            }
            TxState::PreFlash => {
                let flash = t(timing::FLASH, self);
                self.sethook(TxSig::OnHook, TxState::Flash, flash);
            }
            TxState::Flash => {
                self.sethook(TxSig::OffHook, TxState::OffHook, 0);
                self.push_event(c::EVENT_HOOKCOMPLETE);
            }
            TxState::Debounce => {
                self.sethook(TxSig::OffHook, TxState::OffHook, 0);
                let rxflash = t(timing::RXFLASH, self);
                if self.rbs.rxhooksig == RxSig::OnHook && rxflash > 2 {
                    self.rbs.itimer = rxflash.saturating_mul(CHUNK);
                    self.rbs.itimerset = self.rbs.itimer;
                }
            }
            TxState::AfterStart => {
                self.sethook(TxSig::OffHook, TxState::OffHook, 0);
                self.push_event(c::EVENT_HOOKCOMPLETE);
            }
            TxState::Kewl => {
                self.sethook(TxSig::OnHook, TxState::AfterKewl, AFTERKEWL_TIME);
                self.push_event(c::EVENT_HOOKCOMPLETE);
            }
            TxState::AfterKewl => {
                if self.rbs.kewlonhook {
                    self.push_event(c::EVENT_ONHOOK);
                }
                self.rbs.txstate = TxState::OnHook;
                self.rbs.gotgs = false;
            }
            TxState::OnHook | TxState::OffHook => {}
        }
    }

    /// The transmit side of one tick (DAHDI runs the output timer in `_dahdi_transmit`).
    pub(super) fn rbs_tx_tick(&mut self) {
        if self.rbs.otimer > 0 {
            self.rbs.otimer -= CHUNK;
            if self.rbs.otimer <= 0 {
                self.otimer_expire();
            }
        }
    }

    /// `dahdi_rbsbits`: the far end's bits as received this tick.
    pub(super) fn rbs_receive_bits(&mut self, cursig: i32) {
        if cursig == self.rbs.rxsig {
            return;
        }
        match self.sig {
            c::SIG_FXOGS if cursig & BBIT == 0 => self.hooksig(RxSig::Start),
            c::SIG_FXOGS | c::SIG_EM_E1 | c::SIG_FXOLS | c::SIG_FXOKS => {
                self.hooksig(if cursig & ABIT != 0 {
                    RxSig::OffHook
                } else {
                    RxSig::OnHook
                });
            }
            c::SIG_EM | c::SIG_SF
                if self.rbs.rxsig < 0 || (cursig & ABIT) != (self.rbs.rxsig & ABIT) =>
            {
                self.hooksig(if cursig & ABIT != 0 {
                    RxSig::OffHook
                } else {
                    RxSig::OnHook
                });
            }
            c::SIG_FXSKS | c::SIG_FXSGS | c::SIG_FXSLS => {
                if cursig & BBIT == 0 {
                    self.hooksig(RxSig::Ring);
                } else if self.sig != c::SIG_FXSLS && cursig & ABIT != 0 {
                    self.hooksig(RxSig::OnHook);
                } else {
                    self.hooksig(RxSig::OffHook);
                }
            }
            c::SIG_CAS if self.rbs.rxsig >= 0 => self.push_event(c::EVENT_BITSCHANGED),
            _ => {}
        }
        self.rbs.rxsig = cursig;
    }

    /// `__dahdi_hooksig_pvt`.
    fn hooksig(&mut self, rxsig: RxSig) {
        if self.rbs.rxhooksig == rxsig {
            return;
        }
        let initial = self.rbs.rxhooksig == RxSig::Initial;
        self.rbs.rxhooksig = rxsig;
        if self.is_fxs() && rxsig == RxSig::Ring && self.rbs.ringdebtimer == 0 {
            self.push_event(c::EVENT_RINGBEGIN);
        }
        let rxwink = self.timing.get(timing::RXWINK).copied().unwrap_or(250);
        let rxflash = self.timing.get(timing::RXFLASH).copied().unwrap_or(1250);
        match self.sig {
            c::SIG_EM | c::SIG_EM_E1 | c::SIG_SF => match rxsig {
                RxSig::OffHook => {
                    self.rbs.itimer = rxwink.saturating_mul(CHUNK);
                    self.rbs.itimerset = self.rbs.itimer;
                }
                RxSig::OnHook => {
                    if self.rbs.itimer > 0 {
                        self.push_event(c::EVENT_WINKFLASH);
                    } else if !initial {
                        self.push_event(c::EVENT_ONHOOK);
                        self.rbs.gotgs = false;
                    }
                    self.rbs.itimer = 0;
                    self.rbs.itimerset = 0;
                }
                _ => {}
            },
            c::SIG_FXSKS | c::SIG_FXSGS => {
                if self.sig == c::SIG_FXSKS && self.rbs.txstate != TxState::OffHook {
                    return;
                }
                if rxsig == RxSig::OnHook {
                    self.rbs.ringdebtimer = RING_DEBOUNCE_TIME;
                    self.rbs.ringtrailer = 0;
                    if self.rbs.txstate != TxState::Debounce {
                        self.rbs.gotgs = false;
                        self.push_event(c::EVENT_ONHOOK);
                    }
                }
            }
            c::SIG_FXOGS | c::SIG_FXOLS | c::SIG_FXOKS => {
                if self.sig == c::SIG_FXOGS && rxsig == RxSig::Start && !self.rbs.gotgs {
                    self.push_event(c::EVENT_RINGOFFHOOK);
                    self.rbs.gotgs = true;
                }
                match rxsig {
                    RxSig::OffHook => {
                        if self.rbs.txstate == TxState::Start {
                            self.sethook(TxSig::OffHook, TxState::AfterStart, AFTERSTART_TIME);
                        }
                        self.rbs.kewlonhook = false;
                        if self.rbs.itimer > 0 {
                            let plen = self.rbs.itimerset - self.rbs.itimer;
                            if plen <= MAX_PULSE {
                                if plen >= MIN_PULSE {
                                    self.rbs.pulsecount += 1;
                                    self.rbs.pulsetimer = PULSE_TIMEOUT;
                                    if self.rbs.pulsecount == 1 {
                                        self.push_event(c::EVENT_PULSE_START);
                                    }
                                }
                            } else {
                                self.push_event(c::EVENT_WINKFLASH);
                            }
                        } else if !self.rbs.gotgs {
                            self.push_event(c::EVENT_RINGOFFHOOK);
                            self.rbs.gotgs = true;
                        }
                        self.rbs.itimer = 0;
                        self.rbs.itimerset = 0;
                    }
                    RxSig::OnHook => {
                        if !matches!(
                            self.rbs.txstate,
                            TxState::Debounce | TxState::Kewl | TxState::AfterKewl
                        ) && !initial
                        {
                            self.rbs.itimer = rxflash.saturating_mul(CHUNK);
                            self.rbs.itimerset = self.rbs.itimer;
                        }
                        if self.rbs.txstate == TxState::Kewl {
                            self.rbs.kewlonhook = true;
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The receive side of one tick: input timer, ring debounce and trailer, pulse timer.
    pub(super) fn rbs_rx_tick(&mut self) {
        if self.rbs.itimer > 0 {
            self.rbs.itimer -= CHUNK;
            if self.rbs.itimer <= 0 {
                self.rbs.itimer = 0;
                if self.is_fxo() {
                    self.push_event(c::EVENT_ONHOOK);
                    self.rbs.gotgs = false;
                } else {
                    self.push_event(c::EVENT_RINGOFFHOOK);
                }
            }
        }
        if self.rbs.ringdebtimer > 0 {
            self.rbs.ringdebtimer -= 1;
        }
        if self.is_fxs() {
            if self.rbs.rxhooksig == RxSig::Ring {
                self.rbs.ringtrailer = RING_TRAILER;
            } else if self.rbs.ringtrailer > 0 {
                self.rbs.ringtrailer -= CHUNK;
                if self.rbs.ringtrailer <= 0 && self.rbs.ringdebtimer == 0 {
                    self.rbs.ringtrailer = 0;
                    self.push_event(c::EVENT_RINGOFFHOOK);
                }
            }
        }
        if self.rbs.pulsetimer > 0 {
            self.rbs.pulsetimer -= 1;
            if self.rbs.pulsetimer <= 0 && self.rbs.pulsecount > 0 {
                let digit = match self.rbs.pulsecount {
                    n @ 1..=9 => Some(b'0' + n as u8),
                    10 => Some(b'0'),
                    11 => Some(b'*'),
                    12 => Some(b'#'),
                    _ => None,
                };
                if let Some(d) = digit {
                    self.push_event(c::EVENT_PULSEDIGIT | i32::from(d));
                }
                self.rbs.pulsecount = 0;
            }
        }
    }

    /// Whether the far end is off hook as GET_PARAMS reports it (`rxisoffhook`).
    pub(super) fn rbs_rx_offhook(&self) -> bool {
        !matches!(self.rbs.rxhooksig, RxSig::OnHook | RxSig::Initial)
    }

    /// DAHDI_TXSIG_* number of the current transmit hook state (GET_PARAMS `txhooksig`).
    pub(super) fn rbs_txhooksig(&self) -> i32 {
        match self.rbs.txhooksig {
            TxSig::OnHook => 0,
            TxSig::OffHook => 1,
            TxSig::Start => 2,
            TxSig::Kewl => 3,
        }
    }

    /// DAHDI_RXSIG_* number of the current receive hook state (GET_PARAMS `rxhooksig`).
    pub(super) fn rbs_rxhooksig(&self) -> i32 {
        match self.rbs.rxhooksig {
            RxSig::OnHook => 0,
            RxSig::OffHook => 1,
            RxSig::Start => 2,
            RxSig::Ring => 3,
            RxSig::Initial => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outs_table_matches_dahdi() {
        assert_eq!(out_bits(c::SIG_EM, TxSig::OnHook), Some(0));
        assert_eq!(out_bits(c::SIG_EM, TxSig::OffHook), Some(BITS_ABCD));
        assert_eq!(out_bits(c::SIG_EM_E1, TxSig::OnHook), Some(DBIT));
        assert_eq!(out_bits(c::SIG_EM_E1, TxSig::OffHook), Some(BITS_ABD));
        assert_eq!(out_bits(c::SIG_FXSLS, TxSig::OffHook), Some(BITS_ABCD));
        assert_eq!(out_bits(c::SIG_FXOLS, TxSig::Start), Some(0));
        assert_eq!(out_bits(c::SIG_FXOKS, TxSig::Kewl), Some(BITS_ABCD));
        assert_eq!(out_bits(c::SIG_FXSGS, TxSig::Start), Some(BITS_AC));
        assert_eq!(out_bits(0, TxSig::OnHook), Some(BITS_ACD));
        assert_eq!(out_bits(c::SIG_CLEAR, TxSig::OnHook), None);
        assert!(has_hook(c::SIG_EM_E1) && !has_hook(c::SIG_CAS) && !has_hook(c::SIG_CLEAR));
    }
}

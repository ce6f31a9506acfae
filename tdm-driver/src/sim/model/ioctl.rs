//! The ioctl half of the simulated core: decoding each request's argument bytes at the struct
//! offsets of `crate::abi` and applying it with DAHDI's rules (which fd may issue it, which
//! values are EINVAL), plus the SPANSTAT and GET_PARAMS encoders.

use super::{Binding, Channel, Fh, IoctlResult, Mode, Model, Span, errno};
use crate::sim::wire::{self, Ioctl, consts as c, small};

fn arg_i32(input: &[u8]) -> i32 {
    wire::get_i32(input, 0)
}

fn out_i32(v: i32) -> IoctlResult {
    IoctlResult::Done(0, v.to_ne_bytes().to_vec())
}

fn ok() -> IoctlResult {
    IoctlResult::Done(0, Vec::new())
}

/// A 1-based DAHDI number (span, channel) from user input as a 0-based index, if positive.
pub(super) fn index_of(n: i32) -> Option<usize> {
    usize::try_from(n).ok()?.checked_sub(1)
}

/// The line build-out names DAHDI reports for `lbo` 0..=7.
fn lbo_name(lbo: i32) -> &'static str {
    match lbo {
        0 => "0 db (CSU)/0-133 feet (DSX-1)",
        1 => "133-266 feet (DSX-1)",
        2 => "266-399 feet (DSX-1)",
        3 => "399-533 feet (DSX-1)",
        4 => "533-655 feet (DSX-1)",
        5 => "-7.5db (CSU)",
        6 => "-15db (CSU)",
        7 => "-22.5db (CSU)",
        _ => "Unknown",
    }
}

fn confinfo_bytes([chan, confno, mode]: [i32; 3]) -> Vec<u8> {
    let mut out = vec![0u8; wire::CONFINFO_SIZE];
    wire::put_i32(&mut out, small::CONF_CHAN, chan);
    wire::put_i32(&mut out, small::CONF_CONFNO, confno);
    wire::put_i32(&mut out, small::CONF_CONFMODE, mode);
    out
}

/// Ticks a dialled digit takes (tone plus pause).
const DIGIT_TICKS: u32 = 100;

impl Model {
    fn params_bytes(&self, ch: &Channel) -> Vec<u8> {
        use wire::params as p;
        let mut out = vec![0u8; wire::PARAMS_SIZE];
        let span = ch.span.and_then(|s| self.spans.get(s));
        wire::put_i32(&mut out, p::CHANNO, ch.channo);
        wire::put_i32(
            &mut out,
            p::SPANNO,
            ch.span.map(|s| s as i32 + 1).unwrap_or(0),
        );
        wire::put_i32(&mut out, p::CHANPOS, ch.chanpos);
        wire::put_i32(&mut out, p::SIGTYPE, ch.sig as i32);
        wire::put_i32(&mut out, p::SIGCAP, ch.sigcap as i32);
        wire::put_i32(&mut out, p::RXISOFFHOOK, i32::from(ch.rbs_rx_offhook()));
        wire::put_i32(&mut out, p::RXBITS, ch.rbs.rxsig.max(0));
        wire::put_i32(&mut out, p::TXBITS, ch.rbs.txsig);
        wire::put_i32(&mut out, p::TXHOOKSIG, ch.rbs_txhooksig());
        wire::put_i32(&mut out, p::RXHOOKSIG, ch.rbs_rxhooksig());
        wire::put_i32(&mut out, p::CURLAW, ch.law);
        wire::put_i32(&mut out, p::IDLEBITS, ch.idlebits);
        wire::put_str(&mut out, p::NAME, p::NAME_LEN, &ch.name);
        for (i, t) in ch.timing.iter().enumerate() {
            wire::put_i32(&mut out, p::TIMING_FIRST + 4 * i, *t);
        }
        wire::put_i32(
            &mut out,
            p::CHAN_ALARMS,
            span.map(Span::reported_alarms).unwrap_or(0),
        );
        out
    }

    fn spaninfo_bytes(&self, idx: usize) -> Option<Vec<u8>> {
        use wire::spaninfo as s;
        let span = self.spans.get(idx)?;
        let mut out = vec![0u8; wire::SPANINFO_SIZE];
        let configured = self
            .chans
            .get(span.first..span.first + span.count)
            .map(|cs| cs.iter().filter(|ch| ch.sig != 0).count())
            .unwrap_or(0);
        wire::put_i32(&mut out, s::SPANNO, idx as i32 + 1);
        wire::put_str(&mut out, s::NAME, 20, &span.name);
        wire::put_str(&mut out, s::DESC, 40, &span.desc);
        wire::put_i32(&mut out, s::ALARMS, span.reported_alarms());
        wire::put_i32(&mut out, s::TXLEVEL, 0);
        wire::put_i32(&mut out, s::RXLEVEL, 0);
        wire::put_i32(&mut out, s::BPVCOUNT, span.bpv as i32);
        wire::put_i32(&mut out, s::CRC4COUNT, span.crc4 as i32);
        wire::put_i32(&mut out, s::EBITCOUNT, span.ebit as i32);
        wire::put_i32(&mut out, s::FASCOUNT, span.fas as i32);
        wire::put_i32(&mut out, s::FECOUNT, 0);
        wire::put_i32(&mut out, s::CVCOUNT, 0);
        wire::put_i32(&mut out, s::BECOUNT, 0);
        wire::put_i32(&mut out, s::PRBS, 0);
        wire::put_i32(&mut out, s::ERRSEC, 0);
        wire::put_i32(
            &mut out,
            s::IRQMISSES,
            self.late_ticks.min(i32::MAX as u64) as i32,
        );
        wire::put_i32(&mut out, s::SYNCSRC, self.sync_source());
        wire::put_i32(&mut out, s::NUMCHANS, configured as i32);
        wire::put_i32(&mut out, s::TOTALCHANS, span.count as i32);
        wire::put_i32(&mut out, s::TOTALSPANS, self.spans.len() as i32);
        wire::put_i32(&mut out, s::LBO, span.lbo);
        wire::put_i32(&mut out, s::LINECONFIG, span.lineconfig);
        wire::put_str(&mut out, s::LBONAME, 40, lbo_name(span.lbo));
        wire::put_str(&mut out, s::LOCATION, 40, "dahdi-sim");
        wire::put_str(&mut out, s::MANUFACTURER, 40, "spanbridge");
        wire::put_str(&mut out, s::DEVICETYPE, 40, "dahdi-sim loopback pair");
        wire::put_i32(&mut out, s::IRQ, 0);
        wire::put_i32(&mut out, s::LINECOMPAT, span.linecompat());
        wire::put_str(&mut out, s::SPANTYPE, 6, span.line.name());
        Some(out)
    }

    /// ioctl(): decodes the request and runs it. `input` holds the `_IOC_SIZE` bytes the
    /// kernel copied in (for `_IOW`/`_IOWR`).
    pub fn ioctl(&mut self, fh: Fh, cmd: u32, input: &[u8]) -> IoctlResult {
        let Some(binding) = self.files.get(&fh) else {
            return IoctlResult::Err(errno::EBADF);
        };
        let Some(req) = wire::decode(cmd) else {
            return IoctlResult::Err(errno::ENOTTY);
        };
        // A direction-W ioctl must have brought its argument in full.
        if cmd >> 30 & 1 == 1 && input.len() < wire::size_of_request(cmd) {
            return IoctlResult::Err(libc::EFAULT);
        }
        match binding {
            Binding::Other => IoctlResult::Err(errno::ENOTTY),
            Binding::Unbound => {
                if req == Ioctl::Specify {
                    self.specify(fh, arg_i32(input))
                } else {
                    IoctlResult::Err(errno::ENOSYS)
                }
            }
            Binding::Timer(_) => self.timer_ioctl(fh, req, input),
            Binding::Ctl => match self.common_ioctl(fh, req, input) {
                Some(r) => r,
                None => self.ctl_ioctl(req, input),
            },
            Binding::Chan(_) | Binding::Pseudo(_) => match self.common_ioctl(fh, req, input) {
                Some(r) => r,
                None => self.chan_ioctl(fh, req, input),
            },
        }
    }

    fn specify(&mut self, fh: Fh, channo: i32) -> IoctlResult {
        let Some(idx) = channo
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.chans.len())
        else {
            return IoctlResult::Err(errno::EINVAL);
        };
        match self.bind_channel(idx) {
            Ok(()) => {
                self.files.insert(fh, Binding::Chan(idx));
                ok()
            }
            Err(e) => IoctlResult::Err(e),
        }
    }

    fn timer_ioctl(&mut self, fh: Fh, req: Ioctl, input: &[u8]) -> IoctlResult {
        let Some(Binding::Timer(t)) = self.files.get_mut(&fh) else {
            return IoctlResult::Err(errno::EBADF);
        };
        match req {
            Ioctl::TimerConfig => {
                let samples = arg_i32(input);
                if samples < 0 {
                    return IoctlResult::Err(errno::EINVAL);
                }
                t.period = samples;
                t.pos = samples;
                ok()
            }
            Ioctl::TimerAck => {
                let n = arg_i32(input);
                if n < 1 || n > t.tripped {
                    t.tripped = 0;
                } else {
                    t.tripped -= n;
                }
                ok()
            }
            Ioctl::TimerPing => {
                t.ping = true;
                t.activity = t.activity.wrapping_add(1);
                ok()
            }
            Ioctl::TimerPong => {
                t.ping = false;
                ok()
            }
            Ioctl::GetEvent => {
                let ev = if t.ping {
                    t.ping = false;
                    c::EVENT_TIMER_PING
                } else if t.tripped > 0 {
                    c::EVENT_TIMER_EXPIRED
                } else {
                    0
                };
                out_i32(ev)
            }
            _ => IoctlResult::Err(errno::ENOTTY),
        }
    }

    /// Ioctls every device fd accepts (DAHDI's dahdi_common_ioctl). `None`: not one of them.
    fn common_ioctl(&mut self, fh: Fh, req: Ioctl, input: &[u8]) -> Option<IoctlResult> {
        let r = match req {
            Ioctl::GetParams | Ioctl::GetParamsV1 => {
                let raw = if req == Ioctl::GetParams {
                    wire::get_i32(input, wire::params::CHANNO)
                } else {
                    0
                };
                let channo = raw & !c::GET_PARAMS_RETURN_MASTER;
                let ch = if channo == 0 {
                    self.chan_ref(fh)
                } else {
                    self.find_chan_by_number(channo)
                };
                // As dahdi-base.c: the channel's own parameters, with its master's number in
                // the top 16 bits of `channo` when asked for.
                match ch {
                    Some(ch) => {
                        let mut out = self.params_bytes(ch);
                        if raw & c::GET_PARAMS_RETURN_MASTER != 0 {
                            let master = if ch.master > 0 { ch.master } else { ch.channo };
                            wire::put_i32(
                                &mut out,
                                wire::params::CHANNO,
                                ch.channo | (master << 16),
                            );
                        }
                        IoctlResult::Done(0, out)
                    }
                    None => IoctlResult::Err(errno::EINVAL),
                }
            }
            Ioctl::SpanStat => {
                let spanno = wire::get_i32(input, wire::spaninfo::SPANNO);
                let idx = if spanno == 0 {
                    self.span_of_fh(fh)
                } else {
                    index_of(spanno)
                };
                match idx.and_then(|i| self.spaninfo_bytes(i)) {
                    Some(b) => IoctlResult::Done(0, b),
                    None => IoctlResult::Err(errno::EINVAL),
                }
            }
            Ioctl::GetVersion => {
                let mut out = vec![0u8; wire::VERSION_SIZE];
                wire::put_str(&mut out, small::VERSION_VERSION, 80, "3.1.0-dahdi-sim");
                wire::put_str(&mut out, small::VERSION_ECHO, 80, "");
                IoctlResult::Done(0, out)
            }
            Ioctl::Maint => self.maint(
                wire::get_i32(input, small::MAINT_SPANNO),
                wire::get_i32(input, small::MAINT_COMMAND),
            ),
            Ioctl::GetGains | Ioctl::SetGains => {
                let channo = wire::get_i32(input, small::GAINS_CHAN);
                let idx = if channo == 0 {
                    match self.files.get(&fh) {
                        Some(Binding::Chan(i)) => Some(*i),
                        _ => None,
                    }
                } else {
                    index_of(channo).filter(|&i| i < self.chans.len())
                };
                let Some(ch) = idx.and_then(|i| self.chans.get_mut(i)) else {
                    return Some(IoctlResult::Err(errno::EINVAL));
                };
                if req == Ioctl::SetGains {
                    if let Some(src) = input.get(small::GAINS_RX..wire::GAINS_SIZE) {
                        ch.set_gains(src);
                    }
                    ok()
                } else {
                    let mut out = vec![0u8; wire::GAINS_SIZE];
                    wire::put_i32(&mut out, small::GAINS_CHAN, ch.channo);
                    if let Some(dst) = out.get_mut(small::GAINS_RX..) {
                        dst.copy_from_slice(&ch.gains);
                    }
                    IoctlResult::Done(0, out)
                }
            }
            _ => return None,
        };
        Some(r)
    }

    fn maint(&mut self, spanno: i32, command: i32) -> IoctlResult {
        let Some(span) = index_of(spanno).and_then(|i| self.spans.get_mut(i)) else {
            return IoctlResult::Err(errno::EINVAL);
        };
        match command {
            c::MAINT_NONE | c::MAINT_LOOPDOWN => {
                span.maint = c::MAINT_NONE;
                span.alarms &= !c::ALARM_LOOPBACK;
            }
            c::MAINT_LOCALLOOP | c::MAINT_REMOTELOOP | c::MAINT_LOOPUP => {
                span.maint = command;
                span.alarms |= c::ALARM_LOOPBACK;
            }
            c::MAINT_RESET_COUNTERS => {
                span.bpv = 0;
                span.crc4 = 0;
                span.ebit = 0;
                span.fas = 0;
                span.slips = 0;
            }
            _ => return IoctlResult::Err(errno::EINVAL),
        }
        ok()
    }

    /// Ioctls of the `ctl` device.
    fn ctl_ioctl(&mut self, req: Ioctl, input: &[u8]) -> IoctlResult {
        match req {
            Ioctl::SpanConfig => {
                use wire::lineconfig as l;
                let spanno = wire::get_i32(input, l::SPAN);
                let Some(span) = index_of(spanno).and_then(|i| self.spans.get_mut(i)) else {
                    return IoctlResult::Err(errno::EINVAL);
                };
                let lineconfig = wire::get_i32(input, l::LINECONFIG);
                let framing = lineconfig & 0x1ff0;
                if framing & span.linecompat() != framing & !(c::CONFIG_NTTE | c::CONFIG_TERM) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                let name = wire::get_str(input, l::NAME, 20);
                if !name.is_empty() {
                    span.name = name;
                }
                span.lineconfig = lineconfig;
                span.lbo = wire::get_i32(input, l::LBO);
                span.sync = wire::get_i32(input, l::SYNC);
                ok()
            }
            Ioctl::ChanConfig => self.chanconfig(input),
            Ioctl::Startup | Ioctl::Shutdown => {
                let spanno = arg_i32(input);
                let Some(span) = index_of(spanno).and_then(|i| self.spans.get_mut(i)) else {
                    return IoctlResult::Err(errno::EINVAL);
                };
                span.running = req == Ioctl::Startup;
                ok()
            }
            Ioctl::LoadZone => {
                let zone = wire::get_i32(input, small::ZONE_ZONE);
                if !(0..c::TONE_ZONE_MAX).contains(&zone) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                self.zone_loaded = true;
                ok()
            }
            Ioctl::FreeZone | Ioctl::DefaultZone => {
                let zone = arg_i32(input);
                if !(0..c::TONE_ZONE_MAX).contains(&zone) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                if req == Ioctl::DefaultZone {
                    self.default_zone = zone;
                }
                ok()
            }
            Ioctl::AttachEchocan => {
                let chan = wire::get_i32(input, small::ECHOCAN_CHAN);
                if self.find_chan_by_number(chan).is_none() {
                    return IoctlResult::Err(errno::EINVAL);
                }
                ok()
            }
            Ioctl::SetDialParams => {
                for (i, p) in self.dialparams.iter_mut().enumerate() {
                    *p = wire::get_i32(input, 4 * i);
                }
                ok()
            }
            Ioctl::GetDialParams => {
                let mut out = vec![0u8; wire::DIALPARAMS_SIZE];
                for (i, p) in self.dialparams.iter().enumerate() {
                    wire::put_i32(&mut out, 4 * i, *p);
                }
                IoctlResult::Done(0, out)
            }
            // The pointer INDIRECT carries cannot be followed over a restricted FUSE ioctl.
            Ioctl::Indirect => IoctlResult::Err(errno::EINVAL),
            _ => IoctlResult::Err(errno::ENOTTY),
        }
    }

    fn chanconfig(&mut self, input: &[u8]) -> IoctlResult {
        use wire::chanconfig as cc;
        let channo = wire::get_i32(input, cc::CHAN);
        let Some(idx) = index_of(channo).filter(|&i| i < self.chans.len()) else {
            return IoctlResult::Err(errno::EINVAL);
        };
        let sig = wire::get_i32(input, cc::SIGTYPE) as u32;
        let deflaw = wire::get_i32(input, cc::DEFLAW);
        let master = wire::get_i32(input, cc::MASTER);
        if !(0..=2).contains(&deflaw) {
            return IoctlResult::Err(errno::EINVAL);
        }
        if sig == c::SIG_SLAVE {
            let ok_master = index_of(master).and_then(|m| self.chans.get(m)).is_some();
            if !ok_master {
                return IoctlResult::Err(errno::EINVAL);
            }
        }
        let span_law = self
            .chans
            .get(idx)
            .and_then(|ch| ch.span)
            .and_then(|s| self.spans.get(s))
            .map(Span::default_law)
            .unwrap_or(c::LAW_MULAW);
        let Some(ch) = self.chans.get_mut(idx) else {
            return IoctlResult::Err(errno::EINVAL);
        };
        if sig & ch.sigcap != sig {
            return IoctlResult::Err(errno::EINVAL);
        }
        ch.sig = sig;
        ch.deflaw = if deflaw == c::LAW_DEFAULT {
            span_law
        } else {
            deflaw
        };
        if !ch.open {
            ch.law = ch.deflaw;
        }
        ch.master = if sig == c::SIG_SLAVE { master } else { channo };
        ch.idlebits = wire::get_i32(input, cc::IDLEBITS);
        ch.rbs_configure();
        let name = wire::get_str(input, cc::NAME, 40);
        if !name.is_empty() && sig == c::SIG_HDLCNET {
            ch.name = name;
        }
        ok()
    }

    /// Ioctls of a channel or pseudo channel fd.
    fn chan_ioctl(&mut self, fh: Fh, req: Ioctl, input: &[u8]) -> IoctlResult {
        let idx = match self.files.get(&fh) {
            Some(Binding::Chan(i)) => Some(*i),
            _ => None,
        };
        let peer = idx.and_then(|i| self.peer_of(i));
        let zone_loaded = self.zone_loaded;
        let span_chans = self.chans.len();
        let arg = arg_i32(input);
        let ch = match self.chan_mut(fh) {
            Ok(ch) => ch,
            Err(e) => return IoctlResult::Err(e),
        };
        let audio = ch.mode() == Mode::Audio;
        match req {
            Ioctl::GetBlocksize => out_i32(ch.blocksize as i32),
            Ioctl::SetBlocksize => {
                let Ok(size) = usize::try_from(arg) else {
                    return IoctlResult::Err(errno::EINVAL);
                };
                if !(c::MIN_BLOCKSIZE..=c::MAX_BLOCKSIZE).contains(&size) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                if size != ch.blocksize {
                    ch.blocksize = size;
                    ch.flush_buffers(true, true);
                }
                ok()
            }
            Ioctl::GetBufInfo => {
                use wire::bufinfo as b;
                let mut out = vec![0u8; wire::BUFINFO_SIZE];
                wire::put_i32(&mut out, b::TXBUFPOLICY, ch.txpolicy);
                wire::put_i32(&mut out, b::RXBUFPOLICY, c::POLICY_IMMEDIATE);
                wire::put_i32(&mut out, b::NUMBUFS, ch.numbufs as i32);
                wire::put_i32(&mut out, b::BUFSIZE, ch.blocksize as i32);
                wire::put_i32(&mut out, b::READBUFS, -1);
                wire::put_i32(&mut out, b::WRITEBUFS, -1);
                IoctlResult::Done(0, out)
            }
            Ioctl::SetBufInfo => {
                use wire::bufinfo as b;
                let Ok(size) = usize::try_from(wire::get_i32(input, b::BUFSIZE)) else {
                    return IoctlResult::Err(errno::EINVAL);
                };
                if !(c::MIN_BLOCKSIZE..=c::MAX_BLOCKSIZE).contains(&size) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                let numbufs =
                    wire::get_i32(input, b::NUMBUFS).clamp(2, c::MAX_NUM_BUFS as i32) as usize;
                if size * numbufs > c::MAX_BUF_SPACE {
                    return IoctlResult::Err(errno::EINVAL);
                }
                let policy = wire::get_i32(input, b::TXBUFPOLICY);
                if !(0..=2).contains(&policy) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                ch.txpolicy = policy;
                ch.numbufs = numbufs;
                ch.blocksize = size;
                ch.flush_buffers(true, true);
                ok()
            }
            Ioctl::Flush => {
                ch.flush_buffers(arg & c::FLUSH_READ != 0, arg & c::FLUSH_WRITE != 0);
                if arg & c::FLUSH_EVENT != 0 {
                    ch.events.clear();
                }
                ok()
            }
            Ioctl::Sync => ok(),
            Ioctl::SetParams => {
                use wire::params as p;
                for (i, t) in ch.timing.iter_mut().enumerate() {
                    *t = wire::get_i32(input, p::TIMING_FIRST + 4 * i);
                }
                ok()
            }
            Ioctl::ChanNo => out_i32(ch.channo),
            Ioctl::GetEvent => out_i32(ch.events.pop_front().unwrap_or(0)),
            Ioctl::IoMux => {
                let ready = ch.iomux_ready(arg);
                if ready != 0 || arg & c::IOMUX_NOWAIT != 0 {
                    out_i32(ready)
                } else if arg & 0xf == 0 {
                    IoctlResult::Err(errno::EINVAL)
                } else {
                    IoctlResult::Block
                }
            }
            Ioctl::Hook => {
                // As DAHDI: no hook on clear-type channels (DAHDI_FLAG_CLEAR) or CAS.
                if ch.span.is_none() || !super::rbs::has_hook(ch.sig) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                match ch.rbs_hook(arg, zone_loaded) {
                    Ok(()) => ok(),
                    Err(e) => IoctlResult::Err(e),
                }
            }
            Ioctl::SetLaw => {
                if !(0..=2).contains(&arg) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                ch.law = if arg == c::LAW_DEFAULT {
                    ch.deflaw
                } else {
                    arg
                };
                ok()
            }
            Ioctl::SetLinear => {
                if !audio || !ch.audio_processing {
                    return IoctlResult::Err(errno::EINVAL);
                }
                ch.linear = arg != 0;
                ok()
            }
            Ioctl::AudioMode | Ioctl::HdlcRawMode | Ioctl::HdlcFcsMode => {
                if ch.sig != c::SIG_CLEAR {
                    return IoctlResult::Err(errno::EINVAL);
                }
                match req {
                    Ioctl::HdlcRawMode => {
                        ch.raw_mode = arg != 0;
                        ch.fcs_mode = false;
                        ch.audio_processing = false;
                    }
                    Ioctl::HdlcFcsMode => {
                        ch.fcs_mode = arg != 0;
                        ch.raw_mode = false;
                        ch.audio_processing = false;
                    }
                    _ => {
                        ch.audio_processing = arg != 0;
                        if arg != 0 {
                            ch.raw_mode = false;
                            ch.fcs_mode = false;
                        }
                    }
                }
                ch.flush_buffers(true, true);
                ok()
            }
            Ioctl::Dial => {
                if !zone_loaded {
                    // DAHDI: "Cannot dial until a tone zone is loaded" (dahdi_cfg loads them).
                    return IoctlResult::Err(libc::ENODATA);
                }
                let op = wire::get_i32(input, small::DIAL_OP);
                let digits = wire::get_str(input, small::DIAL_STR, small::DIAL_STR_LEN);
                match op {
                    c::DIAL_OP_APPEND | c::DIAL_OP_REPLACE => {
                        let ticks = DIGIT_TICKS.saturating_mul(digits.len() as u32);
                        let base = if op == c::DIAL_OP_APPEND {
                            ch.dialing.unwrap_or(0)
                        } else {
                            0
                        };
                        ch.dialing = Some(base.saturating_add(ticks).max(1));
                        ok()
                    }
                    c::DIAL_OP_CANCEL => {
                        ch.dialing = None;
                        ok()
                    }
                    _ => IoctlResult::Err(errno::EINVAL),
                }
            }
            Ioctl::Dialing => out_i32(i32::from(ch.dialing.is_some())),
            Ioctl::SetConf => {
                let chan = wire::get_i32(input, small::CONF_CHAN);
                let confno = wire::get_i32(input, small::CONF_CONFNO);
                let mode = wire::get_i32(input, small::CONF_CONFMODE);
                if chan != 0 && chan != ch.channo {
                    // Conferencing another channel's fd is not simulated.
                    return IoctlResult::Err(errno::EINVAL);
                }
                if !ch.audio_processing {
                    return IoctlResult::Err(errno::EINVAL);
                }
                let monitor = matches!(mode & c::CONF_MODE_MASK, 1..=3 | 9..=12);
                let target_ok = if monitor {
                    index_of(confno).is_some_and(|t| t < span_chans)
                } else {
                    (-1..=1024).contains(&confno)
                };
                if !target_ok || (confno == 0) != (mode == 0) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                let chan = ch.channo;
                ch.conf = [chan, confno, mode];
                IoctlResult::Done(0, confinfo_bytes(ch.conf))
            }
            Ioctl::GetConf => {
                IoctlResult::Done(0, confinfo_bytes([ch.channo, ch.conf[1], ch.conf[2]]))
            }
            Ioctl::ConfMute => {
                ch.confmute = arg;
                ok()
            }
            Ioctl::GetConfMute => out_i32(ch.confmute),
            Ioctl::EchoCancel | Ioctl::EchoCancelParams => {
                ch.echocancel = if req == Ioctl::EchoCancel {
                    arg
                } else {
                    wire::get_i32(input, 0)
                };
                ok()
            }
            Ioctl::GetToneZone => out_i32(ch.tonezone),
            Ioctl::SetToneZone => {
                if !(0..c::TONE_ZONE_MAX).contains(&arg) {
                    return IoctlResult::Err(errno::EINVAL);
                }
                ch.tonezone = arg;
                ok()
            }
            Ioctl::GetRxBits => out_i32(ch.rbs.rxsig.max(0)),
            Ioctl::SetTxBits => {
                // As DAHDI: CAS signalling only; the far end sees the bits on the next tick.
                if ch.sig != c::SIG_CAS {
                    return IoctlResult::Err(errno::EINVAL);
                }
                ch.rbs.txsig = arg & 0xf;
                ok()
            }
            Ioctl::SetPolarity => {
                // Battery reversal is an analog (FXO-signalled port) feature; the far end of
                // the simulated cable sees it as a POLARITY event.
                if ch.sig & super::SIG_FXO_BIT == 0 {
                    return IoctlResult::Err(errno::EINVAL);
                }
                if let Some(p) = peer.and_then(|p| self.chans.get_mut(p)) {
                    if p.open {
                        p.push_event(c::EVENT_POLARITY);
                    }
                }
                ok()
            }
            Ioctl::SetCadence => {
                let mut cad = [0i32; 16];
                for (i, v) in cad.iter_mut().enumerate() {
                    *v = wire::get_i32(input, 4 * i);
                }
                // A null pointer restores the default; over ioctl copies, all zeros does.
                ch.rbs_set_cadence(cad.iter().any(|v| *v != 0).then_some(cad));
                ok()
            }
            Ioctl::Loopback => {
                ch.loopback = arg != 0;
                ok()
            }
            Ioctl::BufferEvents => {
                ch.buffer_events = arg != 0;
                ok()
            }
            Ioctl::SendTone
            | Ioctl::EchoTrain
            | Ioctl::ToneDetect
            | Ioctl::VmwiConfig
            | Ioctl::HdlcRate
            | Ioctl::EchoCancelFaxMode => ok(),
            Ioctl::Vmwi => out_i32(0),
            Ioctl::Specify => IoctlResult::Err(errno::EINVAL),
            _ => IoctlResult::Err(errno::ENOTTY),
        }
    }
}

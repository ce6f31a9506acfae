//! The control device (`ctl`): span status, span and channel configuration, start-up and
//! shut-down of spans, the driver version and maintenance commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::abi;
use crate::backend::{Backend, DeviceRoot, Node, Op};
use crate::error::{Result, TdmError};
use crate::types::{Alarms, Law, MaintCommand, SigType};

/// Issues `op` through `backend`, mapping a failure to a [`TdmError`] naming the request.
pub(crate) fn issue<B: Backend>(
    backend: &B,
    handle: &B::Handle,
    path: &Path,
    op: Op<'_>,
) -> Result<()> {
    let request = op.request();
    backend.ioctl(handle, op).map_err(|e| {
        TdmError::from_io(abi::request_name(request).unwrap_or("DAHDI ioctl"), path, e)
    })
}

/// The DAHDI driver's version (DAHDI_GETVERSION).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Driver version (`2.11.1`, or the simulator's).
    pub version: String,
    /// Default echo canceller name.
    pub echo_canceller: String,
}

/// One span's status (DAHDI_SPANSTAT), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanStatus {
    /// Span number.
    pub span: i32,
    /// Span name (`WCT1/0`, `DAHDI_SIM/1`).
    pub name: String,
    /// Description.
    pub description: String,
    /// Alarm bits.
    pub alarms: Alarms,
    /// Transmit level.
    pub tx_level: i32,
    /// Receive level.
    pub rx_level: i32,
    /// Bipolar violations.
    pub bpv_count: i32,
    /// CRC4 errors.
    pub crc4_count: i32,
    /// E-bit errors.
    pub ebit_count: i32,
    /// FAS errors.
    pub fas_count: i32,
    /// Framing errors.
    pub fe_count: u32,
    /// Coding violations.
    pub cv_count: u32,
    /// Bit errors.
    pub be_count: u32,
    /// Detected PRBS pattern.
    pub prbs: u32,
    /// Errored seconds.
    pub errored_seconds: u32,
    /// IRQ misses.
    pub irq_misses: i32,
    /// Span number of the current timing source, 0 for free run.
    pub sync_source: i32,
    /// Configured channels.
    pub configured_channels: i32,
    /// All channels of the span.
    pub total_channels: i32,
    /// Spans in the system.
    pub total_spans: i32,
    /// Line build-out.
    pub lbo: i32,
    /// Framing and coding bits (`DAHDI_CONFIG_*`).
    pub line_config: i32,
    /// Line build-out as text.
    pub lbo_name: String,
    /// Device location.
    pub location: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Device type.
    pub device_type: String,
    /// IRQ.
    pub irq: i32,
    /// Supported line configurations.
    pub line_compat: i32,
    /// Span type (`E1`, `T1`, ...).
    pub span_type: String,
}

impl From<&abi::SpanInfo> for SpanStatus {
    fn from(s: &abi::SpanInfo) -> Self {
        // Copy every packed field out before use (no references into a packed struct).
        let (name, desc, lboname) = (s.name, s.desc, s.lboname);
        let (location, manufacturer, devicetype, spantype) =
            (s.location, s.manufacturer, s.devicetype, s.spantype);
        SpanStatus {
            span: s.spanno,
            name: abi::c_str_field(&name),
            description: abi::c_str_field(&desc),
            alarms: Alarms(s.alarms as u32),
            tx_level: s.txlevel,
            rx_level: s.rxlevel,
            bpv_count: s.bpvcount,
            crc4_count: s.crc4count,
            ebit_count: s.ebitcount,
            fas_count: s.fascount,
            fe_count: s.fecount,
            cv_count: s.cvcount,
            be_count: s.becount,
            prbs: s.prbs,
            errored_seconds: s.errsec,
            irq_misses: s.irqmisses,
            sync_source: s.syncsrc,
            configured_channels: s.numchans,
            total_channels: s.totalchans,
            total_spans: s.totalspans,
            lbo: s.lbo,
            line_config: s.lineconfig,
            lbo_name: abi::c_str_field(&lboname),
            location: abi::c_str_field(&location),
            manufacturer: abi::c_str_field(&manufacturer),
            device_type: abi::c_str_field(&devicetype),
            irq: s.irq,
            line_compat: s.linecompat,
            span_type: abi::c_str_field(&spantype),
        }
    }
}

/// A span's line configuration (DAHDI_SPANCONFIG), as `span=` in system.conf gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLineConfig {
    /// Span number.
    pub span: i32,
    /// Timing priority: 0 never a timing source, 1 the first choice, ...
    pub sync: i32,
    /// Line build-out (0 = 0 dB).
    pub lbo: i32,
    /// Framing and coding bits (`DAHDI_CONFIG_*`).
    pub line_config: i32,
}

/// A channel's signalling configuration (DAHDI_CHANCONFIG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Channel number.
    pub chan: i32,
    /// Signalling type.
    pub sigtype: SigType,
    /// Default law.
    pub deflaw: Law,
    /// Master channel (the channel itself unless it is a slave).
    pub master: i32,
    /// Idle CAS bits (for `cas=` channels); the partner channel for DACS.
    pub idlebits: i32,
    /// Network device name for `nethdlc` channels (empty: the driver picks one).
    pub netdev_name: String,
}

/// Hook-signalling timings of a channel, in ms (DAHDI_GET_PARAMS / DAHDI_SET_PARAMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelTiming {
    /// Pre-wink.
    pub prewink: i32,
    /// Pre-flash.
    pub preflash: i32,
    /// Wink.
    pub wink: i32,
    /// Flash.
    pub flash: i32,
    /// Start.
    pub start: i32,
    /// Receive wink.
    pub rxwink: i32,
    /// Receive flash.
    pub rxflash: i32,
    /// Debounce.
    pub debounce: i32,
    /// Pulse-dial break.
    pub pulse_break: i32,
    /// Pulse-dial make.
    pub pulse_make: i32,
    /// Pulse-dial inter-digit.
    pub pulse_after: i32,
}

/// A channel's parameters (DAHDI_GET_PARAMS), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelParams {
    /// Channel number.
    pub channo: i32,
    /// Span number.
    pub span: i32,
    /// Position within the span.
    pub chanpos: i32,
    /// Configured signalling.
    pub sigtype: SigType,
    /// Signalling capabilities (`DAHDI_SIG_*` bits).
    pub sigcap: i32,
    /// The far end is off hook.
    pub rx_off_hook: bool,
    /// Received CAS bits.
    pub rxbits: i32,
    /// Transmitted CAS bits.
    pub txbits: i32,
    /// Transmit hook state.
    pub txhooksig: i32,
    /// Receive hook state.
    pub rxhooksig: i32,
    /// Current law.
    pub law: Law,
    /// Idle CAS bits.
    pub idlebits: i32,
    /// Channel name.
    pub name: String,
    /// Hook timings.
    pub timing: ChannelTiming,
    /// Channel alarms.
    pub alarms: Alarms,
}

impl From<&abi::Params> for ChannelParams {
    fn from(p: &abi::Params) -> Self {
        ChannelParams {
            channo: p.channo,
            span: p.spanno,
            chanpos: p.chanpos,
            sigtype: SigType::from(p.sigtype),
            sigcap: p.sigcap,
            rx_off_hook: p.rxisoffhook != 0,
            rxbits: p.rxbits,
            txbits: p.txbits,
            txhooksig: p.txhooksig,
            rxhooksig: p.rxhooksig,
            law: Law::from(p.curlaw),
            idlebits: p.idlebits,
            name: abi::c_str_field(&p.name),
            timing: ChannelTiming {
                prewink: p.prewinktime,
                preflash: p.preflashtime,
                wink: p.winktime,
                flash: p.flashtime,
                start: p.starttime,
                rxwink: p.rxwinktime,
                rxflash: p.rxflashtime,
                debounce: p.debouncetime,
                pulse_break: p.pulsebreaktime,
                pulse_make: p.pulsemaketime,
                pulse_after: p.pulseaftertime,
            },
            alarms: Alarms(p.chan_alarms),
        }
    }
}

impl ChannelTiming {
    /// DAHDI's defaults (`dahdi/kernel.h`): pre-wink 50, pre-flash 50, wink 150, flash 750,
    /// start 1500, receive wink 250, receive flash 1250, debounce 600, pulse break/make 50,
    /// pulse inter-digit 750 ms.
    pub fn dahdi_defaults() -> Self {
        Self {
            prewink: 50,
            preflash: 50,
            wink: 150,
            flash: 750,
            start: 1500,
            rxwink: 250,
            rxflash: 1250,
            debounce: 600,
            pulse_break: 50,
            pulse_make: 50,
            pulse_after: 750,
        }
    }

    pub(crate) fn write_into(&self, p: &mut abi::Params) {
        p.prewinktime = self.prewink;
        p.preflashtime = self.preflash;
        p.winktime = self.wink;
        p.flashtime = self.flash;
        p.starttime = self.start;
        p.rxwinktime = self.rxwink;
        p.rxflashtime = self.rxflash;
        p.debouncetime = self.debounce;
        p.pulsebreaktime = self.pulse_break;
        p.pulsemaketime = self.pulse_make;
        p.pulseaftertime = self.pulse_after;
    }
}

/// The control device of a DAHDI tree.
#[derive(Debug)]
pub struct Ctl<B: Backend = DeviceRoot> {
    backend: Arc<B>,
    handle: B::Handle,
    path: PathBuf,
}

impl<B: Backend> Ctl<B> {
    /// Opens `ctl`.
    pub fn open(backend: Arc<B>) -> Result<Self> {
        let path = backend.path_of(Node::Ctl);
        let handle = backend
            .open(Node::Ctl, false)
            .map_err(|e| TdmError::from_open("open", "the control device", None, &path, e))?;
        Ok(Ctl {
            backend,
            handle,
            path,
        })
    }

    /// The device node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend this control device was opened on (to open channels of the same tree).
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    fn op(&self, op: Op<'_>) -> Result<()> {
        issue(&*self.backend, &self.handle, &self.path, op)
    }

    /// DAHDI_GETVERSION.
    pub fn version(&self) -> Result<Version> {
        let mut v = abi::VersionInfo::default();
        self.op(Op::GetVersion(&mut v))?;
        Ok(Version {
            version: abi::c_str_field(&v.version),
            echo_canceller: abi::c_str_field(&v.echo_canceller),
        })
    }

    /// DAHDI_SPANSTAT for `span` (1-based). A span that does not exist is
    /// [`TdmError::NoSuchSpan`].
    pub fn span_stat(&self, span: i32) -> Result<SpanStatus> {
        if span < 1 {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_SPANSTAT",
                reason: format!("span numbers start at 1, got {span}"),
            });
        }
        let mut info = abi::SpanInfo {
            spanno: span,
            ..Default::default()
        };
        match self.backend.ioctl(&self.handle, Op::SpanStat(&mut info)) {
            Ok(()) => Ok(SpanStatus::from(&info)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(TdmError::NoSuchSpan {
                span,
                path: self.path.clone(),
            }),
            Err(e) => Err(TdmError::from_io("DAHDI_SPANSTAT", &self.path, e)),
        }
    }

    /// The status of every span, as `dahdi_scan` finds them (SPANSTAT on 1..DAHDI_MAX_SPANS,
    /// skipping absent spans).
    pub fn spans(&self) -> Result<Vec<SpanStatus>> {
        let mut spans = Vec::new();
        for span in 1..abi::DAHDI_MAX_SPANS {
            match self.span_stat(span) {
                Ok(status) => spans.push(status),
                Err(TdmError::NoSuchSpan { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(spans)
    }

    /// DAHDI_GET_PARAMS for channel `channo` (as dahdi_cfg asks before CHANCONFIG).
    pub fn channel_params(&self, channo: i32) -> Result<ChannelParams> {
        if channo < 1 {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_GET_PARAMS",
                reason: format!("channel numbers start at 1, got {channo}"),
            });
        }
        let mut p = abi::Params {
            channo,
            ..Default::default()
        };
        match self.backend.ioctl(&self.handle, Op::GetParams(&mut p)) {
            Ok(()) => Ok(ChannelParams::from(&p)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(TdmError::NoSuchChannel {
                channel: channo,
                op: "DAHDI_GET_PARAMS",
                path: self.path.clone(),
            }),
            Err(e) => Err(TdmError::from_io("DAHDI_GET_PARAMS", &self.path, e)),
        }
    }

    /// DAHDI_GET_PARAMS for `channo` with DAHDI_GET_PARAMS_RETURN_MASTER, as dahdi_cfg asks
    /// before deciding whether a channel needs CHANCONFIG: the parameters and the master
    /// channel.
    pub fn channel_state(&self, channo: i32) -> Result<(ChannelParams, i32)> {
        if !(1..abi::DAHDI_MAX_CHANNELS).contains(&channo) {
            return Err(TdmError::InvalidArgument {
                op: "DAHDI_GET_PARAMS",
                reason: format!(
                    "channel numbers are 1..{}, got {channo}",
                    abi::DAHDI_MAX_CHANNELS
                ),
            });
        }
        let mut p = abi::Params {
            channo: channo | abi::DAHDI_GET_PARAMS_RETURN_MASTER,
            ..Default::default()
        };
        match self.backend.ioctl(&self.handle, Op::GetParams(&mut p)) {
            Ok(()) => {
                // The driver answers channo = (master << 16) | channel.
                let master = p.channo >> 16;
                p.channo &= 0xffff;
                Ok((ChannelParams::from(&p), master))
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(TdmError::NoSuchChannel {
                channel: channo,
                op: "DAHDI_GET_PARAMS",
                path: self.path.clone(),
            }),
            Err(e) => Err(TdmError::from_io("DAHDI_GET_PARAMS", &self.path, e)),
        }
    }

    /// DAHDI_SPANCONFIG.
    pub fn span_config(&self, config: &SpanLineConfig) -> Result<()> {
        let lc = abi::LineConfig {
            span: config.span,
            lbo: config.lbo,
            lineconfig: config.line_config,
            sync: config.sync,
            ..Default::default()
        };
        self.op(Op::SpanConfig(&lc))
    }

    /// DAHDI_CHANCONFIG.
    pub fn chan_config(&self, config: &ChannelConfig) -> Result<()> {
        let mut cc = abi::ChanConfig {
            chan: config.chan,
            sigtype: config.sigtype.to_raw(),
            deflaw: config.deflaw.to_raw(),
            master: config.master,
            idlebits: config.idlebits,
            ..Default::default()
        };
        abi::set_c_str_field(&mut cc.netdev_name, &config.netdev_name).map_err(|e| {
            TdmError::InvalidArgument {
                op: "DAHDI_CHANCONFIG",
                reason: format!("network device name: {e}"),
            }
        })?;
        self.op(Op::ChanConfig(&cc))
    }

    /// DAHDI_ATTACH_ECHOCAN: attach the echo canceller `name` to `chan` (empty detaches).
    pub fn attach_echocan(&self, chan: i32, name: &str) -> Result<()> {
        let mut ae = abi::AttachEchoCan {
            chan,
            ..Default::default()
        };
        abi::set_c_str_field(&mut ae.echocan, name).map_err(|e| TdmError::InvalidArgument {
            op: "DAHDI_ATTACH_ECHOCAN",
            reason: e.to_string(),
        })?;
        self.op(Op::AttachEchoCan(&ae))
    }

    /// DAHDI_DEFAULTZONE: make the (already loaded) tone zone `zone` the default.
    pub fn set_default_zone(&self, zone: i32) -> Result<()> {
        self.op(Op::DefaultZone(zone))
    }

    /// DAHDI_STARTUP: start `span` after its configuration.
    pub fn startup(&self, span: i32) -> Result<()> {
        self.op(Op::Startup(span))
    }

    /// DAHDI_SHUTDOWN: stop `span`.
    pub fn shutdown(&self, span: i32) -> Result<()> {
        self.op(Op::Shutdown(span))
    }

    /// DAHDI_MAINT: a maintenance command (loopbacks, counter reset) on `span`.
    pub fn maint(&self, span: i32, command: MaintCommand) -> Result<()> {
        let mi = abi::MaintInfo {
            spanno: span,
            command: command.to_raw(),
        };
        self.op(Op::Maint(&mi))
    }
}

//! The text faces of the simulated core: control commands (`alarm 1 RED`, `slip 2`, ...), the
//! status served by `sim/control`, and `/proc/dahdi/N` text in DAHDI's format for `lsdahdi`.

use super::Model;
use crate::sim::wire::consts as c;
use std::fmt::Write as _;

fn sig_name(sig: u32) -> &'static str {
    match sig {
        c::SIG_FXSLS => "FXSLS",
        c::SIG_FXSGS => "FXSGS",
        c::SIG_FXSKS => "FXSKS",
        c::SIG_FXOLS => "FXOLS",
        c::SIG_FXOGS => "FXOGS",
        c::SIG_FXOKS => "FXOKS",
        c::SIG_EM => "E&M",
        c::SIG_EM_E1 => "E&M-E1",
        c::SIG_CLEAR => "Clear",
        c::SIG_HDLCRAW => "HDLCRAW",
        c::SIG_HDLCFCS => "HDLCFCS",
        c::SIG_HDLCNET => "HDLCNET",
        c::SIG_HARDHDLC => "Hardware-assisted HDLC",
        c::SIG_MTP2 => "MTP2",
        c::SIG_SLAVE => "Slave",
        c::SIG_CAS => "CAS",
        c::SIG_DACS => "DACS",
        c::SIG_DACS_RBS => "DACS+RBS",
        c::SIG_SF => "SF (ToneOnly)",
        _ => "Reserved",
    }
}

/// Alarm names as /proc/dahdi prints them (and lsdahdi parses them).
fn alarm_words(alarms: i32) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (bit, name) in [
        (c::ALARM_BLUE, "BLUE"),
        (c::ALARM_YELLOW, "YELLOW"),
        (c::ALARM_RED, "RED"),
        (c::ALARM_LOOPBACK, "LOOP"),
        (c::ALARM_RECOVER, "RECOVERING"),
        (c::ALARM_NOTOPEN, "NOTOPEN"),
    ] {
        if alarms & bit != 0 {
            v.push(name);
        }
    }
    v
}

impl Model {
    /// Runs one control command (`alarm 1 RED`, `clear 1`, `slip 2`, ...).
    pub fn control(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, args)) = words.split_first() else {
            return Ok(());
        };
        let span_arg = |s: Option<&&str>| -> Result<usize, String> {
            let s = s.ok_or_else(|| format!("{cmd}: missing span number"))?;
            let n: usize = s
                .parse()
                .map_err(|_| format!("{cmd}: {s:?} is not a span number"))?;
            if n == 0 || n > self.spans.len() {
                return Err(format!(
                    "{cmd}: no span {n} (spans are 1..={})",
                    self.spans.len()
                ));
            }
            Ok(n - 1)
        };
        match cmd {
            "alarm" => {
                let idx = span_arg(args.first())?;
                let mut bits = 0;
                for w in args.iter().skip(1).flat_map(|w| w.split(',')) {
                    bits |= match w.to_ascii_uppercase().as_str() {
                        "LOS" => c::ALARM_LOS | c::ALARM_RED,
                        "LFA" => c::ALARM_LFA | c::ALARM_RED,
                        "LMFA" => c::ALARM_LMFA | c::ALARM_RED,
                        "RED" => c::ALARM_RED,
                        "YELLOW" | "RAI" => c::ALARM_YELLOW,
                        "BLUE" | "AIS" => c::ALARM_BLUE,
                        "RECOVER" => c::ALARM_RECOVER,
                        "NONE" | "" => 0,
                        other => {
                            return Err(format!(
                                "alarm: unknown alarm {other:?}; use LOS, RED, YELLOW, BLUE, LFA, LMFA, RECOVER or NONE"
                            ));
                        }
                    };
                }
                self.set_alarms(idx, bits)
            }
            "clear" => {
                let idx = span_arg(args.first())?;
                self.set_alarms(idx, 0)
            }
            "slip" | "bpv" | "crc4" | "fas" | "ebit" => {
                let idx = span_arg(args.first())?;
                let count: u32 = match args.get(1) {
                    Some(s) => s
                        .parse()
                        .map_err(|_| format!("{cmd}: {s:?} is not a count"))?,
                    None => 1,
                };
                if let Some(span) = self.spans.get_mut(idx) {
                    let field = match cmd {
                        "slip" => &mut span.pending_slips,
                        "bpv" => &mut span.bpv,
                        "crc4" => &mut span.crc4,
                        "fas" => &mut span.fas,
                        _ => &mut span.ebit,
                    };
                    *field = field.saturating_add(count);
                }
                Ok(())
            }
            "corrupt" => {
                let s = args
                    .first()
                    .ok_or_else(|| "corrupt: missing channel number".to_string())?;
                let channo: usize = s
                    .parse()
                    .map_err(|_| format!("corrupt: {s:?} is not a channel number"))?;
                let ch = channo
                    .checked_sub(1)
                    .and_then(|i| self.chans.get_mut(i))
                    .ok_or_else(|| format!("corrupt: no channel {channo}"))?;
                ch.corrupt_next = true;
                Ok(())
            }
            other => Err(format!(
                "unknown command {other:?}; commands: alarm SPAN NAME..., clear SPAN, slip SPAN [N], \
                 bpv|crc4|fas|ebit SPAN [N], corrupt CHANNO"
            )),
        }
    }

    /// Status text served by reading `sim/control`.
    pub fn status_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "ticks {}", self.ticks);
        let _ = writeln!(t, "late_ticks {}", self.late_ticks);
        for (i, s) in self.spans.iter().enumerate() {
            let _ = writeln!(
                t,
                "span {} name={} type={} running={} alarms={:#x} slips={} bpv={} crc4={} peer={}",
                i + 1,
                s.name,
                s.line.name(),
                s.running,
                s.reported_alarms(),
                s.slips,
                s.bpv,
                s.crc4,
                s.peer.map(|p| p + 1).unwrap_or(0)
            );
        }
        t
    }

    /// `/proc/dahdi/N` text for span number `spanno`, in DAHDI's format.
    pub fn proc_text(&self, spanno: usize) -> Option<String> {
        let idx = spanno.checked_sub(1)?;
        let s = self.spans.get(idx)?;
        let mut t = String::new();
        let _ = write!(t, "Span {spanno}: {} \"{}\"", s.name, s.desc);
        if self.sync_source() == spanno as i32 {
            t.push_str(" (MASTER)");
        }
        if s.lineconfig != 0 {
            let lc = s.lineconfig;
            let coding = if lc & c::CONFIG_B8ZS != 0 {
                " B8ZS/"
            } else if lc & c::CONFIG_AMI != 0 {
                " AMI/"
            } else if lc & c::CONFIG_HDB3 != 0 {
                " HDB3/"
            } else {
                " "
            };
            t.push_str(coding);
            if lc & c::CONFIG_ESF != 0 {
                t.push_str("ESF");
            } else if lc & c::CONFIG_D4 != 0 {
                t.push_str("D4");
            } else if lc & c::CONFIG_CCS != 0 {
                t.push_str("CCS");
            }
            if lc & c::CONFIG_CRC4 != 0 {
                t.push_str("/CRC4");
            }
        }
        t.push(' ');
        for w in alarm_words(s.reported_alarms()) {
            let _ = write!(t, "{w} ");
        }
        t.push('\n');
        for (label, v) in [
            ("BPV count", s.bpv),
            ("CRC4 error count", s.crc4),
            ("E-bit error count", s.ebit),
            ("FAS error count", s.fas),
            ("Timing slips", s.slips),
        ] {
            if v != 0 {
                let _ = writeln!(t, "\t{label}: {v}");
            }
        }
        t.push('\n');
        for ch in self.chans.get(s.first..s.first + s.count).unwrap_or(&[]) {
            let _ = write!(t, "\t{:4} {} ", ch.channo, ch.name);
            if ch.sig != 0 {
                let _ = write!(t, "{} ", sig_name(ch.sig));
            }
            if ch.open {
                t.push_str("(In use) ");
            }
            for w in alarm_words(s.reported_alarms()) {
                let _ = write!(t, "{w} ");
            }
            t.push('\n');
        }
        Some(t)
    }
}

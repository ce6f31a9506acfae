//! `gwctl tdm`: DAHDI span and channel diagnostics over `tdm-driver`'s safe API — what
//! `dahdi_scan`, `lsdahdi`, `dahdi_test` and a loopback plug tell an operator, in one tool.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::g711::{self, Law as G711Law};
use serde::Serialize;
use tdm_driver::{Channel, Ctl, DeviceRoot, Law, Pseudo, SpanStatus, TdmError};

/// Why a `gwctl tdm` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TdmCliError {
    /// No device tree at the root.
    #[error(
        "no DAHDI device tree at {0}: load the DAHDI driver or run dahdi-sim there (or pass --root / DAHDI_ROOT)"
    )]
    NoTree(PathBuf),
    /// A driver call failed.
    #[error(transparent)]
    Driver(#[from] TdmError),
    /// A `SPAN/CHAN` argument is malformed.
    #[error("{0:?} is not SPAN/CHAN (e.g. 1/5)")]
    BadChannel(String),
    /// A span or channel asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A check did not pass (the command ran; the line or channel is not healthy).
    #[error("{0}")]
    CheckFailed(String),
}

type Result<T> = std::result::Result<T, TdmCliError>;

/// Opens the control device, turning "no such file" into the operator's explanation.
fn open_ctl(root: &Path) -> Result<Ctl> {
    if !root.join("ctl").exists() {
        return Err(TdmCliError::NoTree(root.to_path_buf()));
    }
    Ok(Ctl::open(Arc::new(DeviceRoot::new(root)))?)
}

fn backend(root: &Path) -> Arc<DeviceRoot> {
    Arc::new(DeviceRoot::new(root))
}

/// `SPAN/CHAN` → (span, chan).
pub fn parse_span_chan(s: &str) -> Result<(u32, u32)> {
    let bad = || TdmCliError::BadChannel(s.to_string());
    let (a, b) = s.split_once('/').ok_or_else(bad)?;
    let span: u32 = a.trim().parse().map_err(|_| bad())?;
    let chan: u32 = b.trim().parse().map_err(|_| bad())?;
    if span == 0 || chan == 0 {
        return Err(bad());
    }
    Ok((span, chan))
}

fn framing(line_config: i32) -> String {
    use tdm_driver::abi;
    let mut parts = Vec::new();
    for (bit, name) in [
        (abi::DAHDI_CONFIG_D4, "D4"),
        (abi::DAHDI_CONFIG_ESF, "ESF"),
        (abi::DAHDI_CONFIG_CCS, "CCS"),
        (abi::DAHDI_CONFIG_CRC4, "CRC4"),
        (abi::DAHDI_CONFIG_AMI, "AMI"),
        (abi::DAHDI_CONFIG_B8ZS, "B8ZS"),
        (abi::DAHDI_CONFIG_HDB3, "HDB3"),
    ] {
        if line_config & bit != 0 {
            parts.push(name);
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("/")
    }
}

/// A span as `gwctl tdm spans --json` prints it.
#[derive(Debug, Serialize)]
pub struct SpanRow {
    span: i32,
    name: String,
    description: String,
    span_type: String,
    alarms: String,
    alarm_bits: u32,
    sync_source: i32,
    framing: String,
    configured_channels: i32,
    total_channels: i32,
    bpv: i32,
    crc4: i32,
    fas: i32,
    ebit: i32,
    irq_misses: i32,
    errored_seconds: u32,
    lbo: String,
}

impl From<&SpanStatus> for SpanRow {
    fn from(s: &SpanStatus) -> Self {
        SpanRow {
            span: s.span,
            name: s.name.clone(),
            description: s.description.clone(),
            span_type: s.span_type.clone(),
            alarms: s.alarms.to_string(),
            alarm_bits: s.alarms.0,
            sync_source: s.sync_source,
            framing: framing(s.line_config),
            configured_channels: s.configured_channels,
            total_channels: s.total_channels,
            bpv: s.bpv_count,
            crc4: s.crc4_count,
            fas: s.fas_count,
            ebit: s.ebit_count,
            irq_misses: s.irq_misses,
            errored_seconds: s.errored_seconds,
            lbo: s.lbo_name.clone(),
        }
    }
}

/// `gwctl tdm spans`.
pub fn spans(root: &Path, json: bool) -> Result<String> {
    let ctl = open_ctl(root)?;
    let rows: Vec<SpanRow> = ctl.spans()?.iter().map(SpanRow::from).collect();
    if json {
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default());
    }
    let mut out = format!(
        "{:<4} {:<14} {:<4} {:<10} {:<5} {:<14} {:>7} {:>6} {:>6} {:>6} {:>6} {:>8}  {}\n",
        "SPAN",
        "NAME",
        "TYPE",
        "ALARMS",
        "SYNC",
        "FRAMING",
        "CHANS",
        "BPV",
        "CRC4",
        "FAS",
        "EBIT",
        "IRQMISS",
        "DESCRIPTION"
    );
    for r in &rows {
        out.push_str(&format!(
            "{:<4} {:<14} {:<4} {:<10} {:<5} {:<14} {:>7} {:>6} {:>6} {:>6} {:>6} {:>8}  {}\n",
            r.span,
            r.name,
            r.span_type,
            r.alarms,
            if r.sync_source == 0 {
                "free".to_string()
            } else {
                r.sync_source.to_string()
            },
            r.framing,
            format!("{}/{}", r.configured_channels, r.total_channels),
            r.bpv,
            r.crc4,
            r.fas,
            r.ebit,
            r.irq_misses,
            r.description
        ));
    }
    if rows.is_empty() {
        out.push_str("(no spans)\n");
    }
    Ok(out)
}

/// A channel as `gwctl tdm channels --json` prints it.
#[derive(Debug, Serialize)]
pub struct ChannelRow {
    channel: i32,
    span: i32,
    position: i32,
    name: String,
    signalling: String,
    law: String,
    rx_off_hook: bool,
    alarms: String,
}

/// `gwctl tdm channels [--span N]`.
pub fn channels(root: &Path, only_span: Option<i32>, json: bool) -> Result<String> {
    let ctl = open_ctl(root)?;
    let spans = ctl.spans()?;
    if let Some(s) = only_span {
        if !spans.iter().any(|x| x.span == s) {
            return Err(TdmCliError::NotFound(format!(
                "no span {s} (spans: {})",
                spans
                    .iter()
                    .map(|x| x.span.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let total: i32 = spans.iter().map(|s| s.total_channels.max(0)).sum();
    let mut rows = Vec::new();
    for channo in 1..=total {
        let Ok(p) = ctl.channel_params(channo) else {
            continue;
        };
        if only_span.is_some_and(|s| s != p.span) {
            continue;
        }
        rows.push(ChannelRow {
            channel: p.channo,
            span: p.span,
            position: p.chanpos,
            name: p.name.clone(),
            signalling: format!("{:?}", p.sigtype),
            law: match p.law {
                Law::MuLaw => "ulaw".into(),
                Law::ALaw => "alaw".into(),
                other => format!("{other:?}"),
            },
            rx_off_hook: p.rx_off_hook,
            alarms: p.alarms.to_string(),
        });
    }
    if json {
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default());
    }
    let mut out = format!(
        "{:>5} {:>9} {:<20} {:<14} {:<5} {:<6} {}\n",
        "CHAN", "SPAN/POS", "NAME", "SIGNALLING", "LAW", "RXHOOK", "ALARMS"
    );
    for r in &rows {
        out.push_str(&format!(
            "{:>5} {:>9} {:<20} {:<14} {:<5} {:<6} {}\n",
            r.channel,
            format!("{}/{}", r.span, r.position),
            r.name,
            r.signalling,
            r.law,
            if r.rx_off_hook { "off" } else { "on" },
            r.alarms
        ));
    }
    Ok(out)
}

/// Timing accuracy, as `gwctl tdm test` reports it.
#[derive(Debug, Serialize)]
pub struct TimingReport {
    passes: Vec<f64>,
    worst_percent: f64,
    best_percent: f64,
    average_percent: f64,
}

/// `gwctl tdm test`: reads 1 s blocks from a pseudo channel (paced by the master span clock)
/// and compares their arrival times with the wall clock, as `dahdi_test` does.
pub fn timing_test(root: &Path, seconds: u32, json: bool) -> Result<String> {
    let _ = open_ctl(root)?;
    let mut chan = Pseudo::open(backend(root))?.into_channel();
    chan.set_block_size(8000)?;
    let mut buf = vec![0u8; chan.block_bytes()];
    // The first read aligns with the clock; it is not timed.
    chan.read_block(&mut buf)?;
    let mut passes = Vec::new();
    let mut last = Instant::now();
    let stderr = std::io::stderr();
    for i in 0..seconds.max(1) {
        chan.read_block(&mut buf)?;
        let now = Instant::now();
        let elapsed = now.duration_since(last).as_secs_f64();
        last = now;
        let accuracy = 100.0 - (elapsed - 1.0).abs() * 100.0;
        passes.push(accuracy);
        let done = (i + 1) as usize;
        let width = 30usize;
        let filled = done * width / seconds.max(1) as usize;
        let mut e = stderr.lock();
        let _ = write!(
            e,
            "\r[{}{}] {done}/{} s  last {accuracy:.3}%",
            "#".repeat(filled),
            " ".repeat(width - filled),
            seconds.max(1)
        );
        let _ = e.flush();
    }
    let _ = writeln!(stderr.lock());
    let worst = passes.iter().cloned().fold(f64::MAX, f64::min);
    let best = passes.iter().cloned().fold(f64::MIN, f64::max);
    let average = passes.iter().sum::<f64>() / passes.len() as f64;
    let report = TimingReport {
        passes,
        worst_percent: worst,
        best_percent: best,
        average_percent: average,
    };
    let text = if json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        let mut t = String::new();
        for (i, p) in report.passes.iter().enumerate() {
            t.push_str(&format!("pass {:>3}: {p:.4}%\n", i + 1));
        }
        t.push_str(&format!(
            "--- results after {} passes ---\nbest: {best:.4}% -- worst: {worst:.4}% -- average: {average:.4}%\n",
            report.passes.len()
        ));
        t
    };
    if worst < 99.9 {
        return Err(TdmCliError::CheckFailed(format!(
            "{text}timing accuracy {worst:.3}% is below 99.9%: the span clock is unstable (IRQ misses, no sync source?)"
        )));
    }
    Ok(text)
}

fn g711_law(law: Law, span_type: &str) -> G711Law {
    match law {
        Law::MuLaw => G711Law::Ulaw,
        Law::ALaw => G711Law::Alaw,
        _ if span_type.contains("T1") || span_type.contains("J1") => G711Law::Ulaw,
        _ => G711Law::Alaw,
    }
}

fn open_audio_channel(root: &Path, span: u32, chan: u32) -> Result<(Channel, G711Law)> {
    let ctl = open_ctl(root)?;
    let status = ctl
        .span_stat(span as i32)
        .map_err(|e| TdmCliError::NotFound(format!("span {span}: {e}")))?;
    let mut channel = Channel::open_span_channel(backend(root), span, chan)?;
    channel.set_block_size(160)?;
    let params = channel.params()?;
    Ok((channel, g711_law(params.law, &status.span_type)))
}

/// Result of `gwctl tdm loop`.
#[derive(Debug, Serialize)]
pub struct LoopReport {
    sent: String,
    received: String,
    frequency_hz: f64,
    level_dbm0: f64,
    delay_ms: f64,
    passed: bool,
}

/// Goertzel power of `freq` in `x`, as the amplitude of a sine.
fn tone_amplitude(x: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &v) in x.iter().enumerate() {
        re += f64::from(v) * (w * n as f64).cos();
        im += f64::from(v) * (w * n as f64).sin();
    }
    (re * re + im * im).sqrt() * 2.0 / x.len().max(1) as f64
}

/// `gwctl tdm loop SPAN/CHAN [--peer SPAN/CHAN]`: sends 1004 Hz at −10 dBm0 on one channel for
/// `seconds` and measures what arrives on the peer (by default the same channel: a loopback plug
/// or a span in loopback): level, frequency match and delay.
pub fn loopback(
    root: &Path,
    from: &str,
    peer: Option<&str>,
    seconds: f64,
    json: bool,
) -> Result<String> {
    const FREQ: f64 = 1004.0;
    let (span, chan) = parse_span_chan(from)?;
    let (peer_span, peer_chan) = match peer {
        Some(p) => parse_span_chan(p)?,
        None => (span, chan),
    };
    let (tx, law) = open_audio_channel(root, span, chan)?;
    let (rx_holder, rx_law);
    let rx: &Channel = if (peer_span, peer_chan) == (span, chan) {
        rx_law = law;
        &tx
    } else {
        let (c, l) = open_audio_channel(root, peer_span, peer_chan)?;
        rx_holder = c;
        rx_law = l;
        &rx_holder
    };
    let amplitude = f64::from(codecs::tones::dbm0_to_peak(-10.0));
    let blocks = ((seconds * 50.0).round() as usize).max(10);
    // Write and read in lockstep (one block each per 20 ms), silence first: the tone's onset in
    // the received stream minus its onset in the sent stream is the loop delay.
    const SILENT_BLOCKS: usize = 10;
    let mut phase = 0.0f64;
    let mut pcm = [0i16; 160];
    let mut out = [0u8; 160];
    let mut inb = [0u8; 160];
    let mut received: Vec<i16> = Vec::with_capacity((SILENT_BLOCKS + blocks) * 160);
    // Start both directions from empty buffers so that sample i of what is read and sample i
    // of what is written belong to the same 125 µs slot of the span clock.
    tx.flush(tdm_driver::Flush::Both)?;
    if !std::ptr::eq(rx, &tx) {
        rx.flush(tdm_driver::Flush::Both)?;
    }
    for block in 0..SILENT_BLOCKS + blocks {
        for s in pcm.iter_mut() {
            *s = if block < SILENT_BLOCKS {
                0
            } else {
                (amplitude * (phase * std::f64::consts::TAU).sin()) as i16
            };
            if block >= SILENT_BLOCKS {
                phase = (phase + FREQ / 8000.0).fract();
            }
        }
        g711::encode_frame(law, &pcm, &mut out);
        tx.write_block(&out)?;
        let n = rx.read_block(&mut inb)?;
        let mut dec = [0i16; 160];
        g711::decode(rx_law, &inb[..n.min(160)], &mut dec)
            .map_err(|e| TdmCliError::CheckFailed(format!("decoding the received block: {e}")))?;
        received.extend_from_slice(&dec[..n.min(160)]);
    }
    // Delay: first 5 ms window whose energy reaches half the tone's.
    let threshold = amplitude * amplitude / 2.0 / 2.0;
    let onset = received
        .chunks(40)
        .position(|w| w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 40.0 > threshold)
        .map(|i| i * 40);
    let steady = &received[received.len() / 2..];
    let level = tone_amplitude(steady, FREQ);
    let level_dbm0 = 20.0 * (level.max(1e-9) / amplitude).log10() - 10.0;
    // Line delay: the tone's onset in the received stream minus its onset in the sent stream
    // (5 ms resolution; the driver's own buffering is not included).
    let delay_ms = onset
        .map(|r| r.saturating_sub(SILENT_BLOCKS * 160) as f64 / 8.0)
        .unwrap_or(f64::NAN);
    let passed = onset.is_some() && (level_dbm0 + 10.0).abs() < 1.0;
    let report = LoopReport {
        sent: format!("{span}/{chan}"),
        received: format!("{peer_span}/{peer_chan}"),
        frequency_hz: FREQ,
        level_dbm0,
        delay_ms,
        passed,
    };
    let text = if json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        format!(
            "sent {FREQ} Hz at -10.0 dBm0 on {span}/{chan}, received on {peer_span}/{peer_chan}: level {level_dbm0:.2} dBm0, delay {delay_ms:.1} ms: {}\n",
            if passed { "PASS" } else { "FAIL" }
        )
    };
    if passed {
        Ok(text)
    } else {
        Err(TdmCliError::CheckFailed(format!(
            "{text}the tone did not come back at its level: check the loopback (plug, MAINT loopback or cross-connect) and the channel's configuration"
        )))
    }
}

/// `gwctl tdm monitor SPAN/CHAN OUT.wav`: records what a channel receives.
pub fn monitor(root: &Path, which: &str, output: &Path, seconds: f64) -> Result<String> {
    let (span, chan) = parse_span_chan(which)?;
    let (channel, law) = open_audio_channel(root, span, chan)?;
    let blocks = ((seconds * 50.0).round() as usize).max(1);
    let mut buf = [0u8; 160];
    let mut samples = Vec::with_capacity(blocks * 160);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 5.0);
    for _ in 0..blocks {
        let n = channel.read_block(&mut buf)?;
        let mut dec = [0i16; 160];
        let m = n.min(160);
        let _ = g711::decode(law, &buf[..m], &mut dec[..m]);
        samples.extend_from_slice(&dec[..m]);
        if Instant::now() > deadline {
            break;
        }
    }
    std::fs::write(output, codecs::wav::write_pcm16(8000, &samples)).map_err(|source| {
        TdmCliError::Write {
            path: output.to_path_buf(),
            source,
        }
    })?;
    Ok(format!(
        "recorded {:.2} s of {span}/{chan} ({law}) to {}\n",
        samples.len() as f64 / 8000.0,
        output.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_chan_arguments() {
        assert_eq!(parse_span_chan("1/5").unwrap(), (1, 5));
        assert_eq!(parse_span_chan(" 2 / 31 ").unwrap(), (2, 31));
        for bad in ["", "1", "1/", "/5", "0/1", "1/0", "a/b", "1/2/3", "-1/2"] {
            assert!(parse_span_chan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_tree_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let e = spans(dir.path(), false).unwrap_err().to_string();
        assert!(
            e.contains("no DAHDI device tree") && e.contains("dahdi-sim"),
            "{e}"
        );
    }

    #[test]
    fn tone_amplitude_measures_a_sine() {
        let x: Vec<i16> = (0..800)
            .map(|n| (1000.0 * (std::f64::consts::TAU * 1004.0 * n as f64 / 8000.0).sin()) as i16)
            .collect();
        assert!((tone_amplitude(&x, 1004.0) - 1000.0).abs() < 20.0);
        assert!(tone_amplitude(&x, 2000.0) < 50.0);
    }
}

//! `gwctl pri trace`: a PRI span's D-channel, decoded (Q.921 frames, Q.931 messages with their
//! elements, numbers and causes) — live from a running gateway, which holds the D-channel, or
//! from a capture file (pcap `LINKTYPE_LINUX_LAPD`, as `--pcap` writes and Wireshark reads, or
//! hex lines). And `gwctl tdm spans --gateway`: D-channel state and B-channel use per span.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tdm_driver::pri::q921::Role;
use tdm_driver::pri::trace::{self, Direction, TraceRecord};

use crate::http;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn parse_role(role: &str) -> Result<Role> {
    match role {
        "network" | "net" => Ok(Role::Network),
        "user" | "cpe" => Ok(Role::User),
        other => Err(format!("--role {other:?}: use network or user").into()),
    }
}

fn record_from_json(v: &serde_json::Value) -> Option<TraceRecord> {
    let hex = v.get("hex")?.as_str()?;
    let frame: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    Some(TraceRecord {
        unix_micros: v.get("time_us")?.as_u64()?,
        span: u32::try_from(v.get("span")?.as_u64()?).ok()?,
        dir: if v.get("dir")?.as_str()? == "tx" {
            Direction::Tx
        } else {
            Direction::Rx
        },
        role: if v.get("role")?.as_str()? == "network" {
            Role::Network
        } else {
            Role::User
        },
        frame: frame?,
    })
}

/// Options of a live trace.
#[derive(Debug)]
pub struct LiveTrace<'a> {
    /// Gateway core URL.
    pub gateway: &'a str,
    /// Span.
    pub span: u32,
    /// Also write the frames to this pcap file.
    pub pcap: Option<&'a Path>,
    /// Print JSON lines instead of text.
    pub json: bool,
    /// Stop after this many frames.
    pub count: Option<usize>,
    /// Stop after this long.
    pub seconds: Option<f64>,
}

/// Follows a span's D-channel on a running gateway, printing each frame decoded.
pub fn live(opts: &LiveTrace<'_>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut pcap = match opts.pcap {
        Some(p) => {
            let mut f = std::fs::File::create(p)
                .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
            f.write_all(&trace::pcap_header())?;
            Some(f)
        }
        None => None,
    };
    let mut seen = 0usize;
    let path = format!("/api/v1/tdm/spans/{}/trace", opts.span);
    let stdout = std::io::stdout();
    let run = http::get_lines(opts.gateway, &path, |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return true;
        };
        if let Some(n) = v.get("lost") {
            eprintln!("gwctl: {n} frames were not shown (this reader was too slow)");
            return true;
        }
        let Some(rec) = record_from_json(&v) else {
            return true;
        };
        let mut out = stdout.lock();
        let _ = if opts.json {
            writeln!(out, "{line}")
        } else {
            writeln!(out, "{}", rec.to_text())
        };
        let _ = out.flush();
        if let Some(f) = pcap.as_mut() {
            let _ = f.write_all(&trace::pcap_record(&rec));
            let _ = f.flush();
        }
        seen += 1;
        opts.count.is_none_or(|c| seen < c)
    });
    rt.block_on(async {
        match opts.seconds {
            Some(s) => match tokio::time::timeout(Duration::from_secs_f64(s.max(0.0)), run).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            },
            None => run.await,
        }
    })
}

/// Decodes a capture file.
pub fn decode(file: &Path, role: &str, json: bool) -> Result<String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let role = parse_role(role)?;
    let recs =
        trace::read_capture(&bytes, 0, role).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = String::new();
    for r in &recs {
        if json {
            let hex: String = r.frame.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(
                &serde_json::json!({
                    "time_us": r.unix_micros,
                    "dir": if r.dir == Direction::Tx { "tx" } else { "rx" },
                    "hex": hex,
                    "text": r.to_text(),
                })
                .to_string(),
            );
            out.push('\n');
        } else {
            out.push_str(&r.to_text());
            out.push('\n');
        }
    }
    if recs.is_empty() {
        out.push_str("(no frames)\n");
    }
    Ok(out)
}

/// `gwctl tdm spans --gateway`: the gateway's view of its spans.
pub fn spans_from_gateway(gateway: &str, json: bool) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let body = rt.block_on(http::get(gateway, "/api/v1/tdm/spans"))?;
    let _ = started;
    if json {
        return Ok(body);
    }
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("the gateway's answer is not JSON: {e}"))?;
    let mut out = String::new();
    let spans = v
        .get("spans")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    out.push_str("SPAN  SIGNALLING    ALARMS   D-CHANNEL                         B-CHANNELS\n");
    for s in &spans {
        let span = s.get("span").and_then(|x| x.as_u64()).unwrap_or(0);
        let sig = s.get("signalling").and_then(|x| x.as_str()).unwrap_or("?");
        let alarms = s.get("alarms").and_then(|x| x.as_str()).unwrap_or("?");
        let d = match s.get("dchannel") {
            Some(d) if !d.is_null() => format!(
                "{} {} ({}, TEI {}, {}{})",
                d.get("role").and_then(|x| x.as_str()).unwrap_or("?"),
                d.get("link").and_then(|x| x.as_str()).unwrap_or("?"),
                d.get("state").and_then(|x| x.as_str()).unwrap_or("?"),
                d.get("tei").and_then(|x| x.as_u64()).unwrap_or(0),
                d.get("calls").and_then(|x| x.as_u64()).unwrap_or(0),
                " calls"
            ),
            _ => "-".into(),
        };
        let chans = s
            .get("channels")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        let count = |st: &str| {
            chans
                .iter()
                .filter(|c| c.get("state").and_then(|x| x.as_str()) == Some(st))
                .count()
        };
        out.push_str(&format!(
            "{span:<5} {sig:<13} {alarms:<8} {d:<33} {} idle, {} busy, {} blocked\n",
            count("idle"),
            count("busy"),
            count("blocked")
        ));
        // One character per channel: . idle, B busy, x blocked.
        let map: String = chans
            .iter()
            .map(|c| match c.get("state").and_then(|x| x.as_str()) {
                Some("idle") => '.',
                Some("busy") => 'B',
                _ => 'x',
            })
            .collect();
        let first = chans
            .first()
            .and_then(|c| c.get("channel"))
            .and_then(|x| x.as_u64())
            .unwrap_or(1);
        out.push_str(&format!("      channels {first}..: {map}\n"));
        for c in chans
            .iter()
            .filter(|c| !c.get("leg").is_none_or(|l| l.is_null()))
        {
            out.push_str(&format!(
                "      channel {:>2}: {} ({})\n",
                c.get("channel").and_then(|x| x.as_u64()).unwrap_or(0),
                c.get("state").and_then(|x| x.as_str()).unwrap_or("?"),
                c.get("leg").and_then(|x| x.as_str()).unwrap_or("")
            ));
        }
    }
    if let Some(n) = v.get("legs").and_then(|x| x.as_u64()) {
        out.push_str(&format!("TDM legs: {n}\n"));
    }
    Ok(out)
}

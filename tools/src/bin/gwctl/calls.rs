//! `gwctl calls`, `gwctl sip trace`, `gwctl sip ping`: live calls and SIP from a running gateway
//! (its `/diag` JSON over HTTP), and an OPTIONS ping to any SIP URI.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;

type Error = Box<dyn std::error::Error>;

/// GET `path` from the gateway's HTTP listener and parse the JSON body.
pub fn get_json(gateway: &str, path: &str) -> Result<Value, Error> {
    let addr = gateway
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e} (give --gateway HOST:PORT of the HTTP listener)"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(|e| {
        format!("cannot reach the gateway's HTTP listener at {addr}: {e} (is it running? see [http] listen)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the gateway sent no HTTP body")?;
    let status = head.split(' ').nth(1).unwrap_or("?");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| format!("the gateway answered {status} with no JSON ({e}): {body}"))?;
    if status != "200" {
        let msg = v["error"].as_str().unwrap_or("error");
        return Err(format!("the gateway answered {status}: {msg}").into());
    }
    Ok(v)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let Some(chunk) = tail.get(..n) else {
            out.push_str(tail);
            break;
        };
        out.push_str(chunk);
        rest = tail.get(n + 2..).unwrap_or("");
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `gwctl calls`: one block per call, one line per leg with codec, media counters, jitter and
/// loss.
pub fn calls(gateway: &str, json: bool) -> Result<String, Error> {
    let v = get_json(gateway, "/diag/calls")?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let calls = v["calls"].as_array().cloned().unwrap_or_default();
    // WebRTC transport figures, when the gateway runs WebRTC legs ([rtc]); absent otherwise.
    let rtc = if calls.is_empty() {
        Vec::new()
    } else {
        get_json(gateway, "/diag/rtc/legs")
            .ok()
            .and_then(|r| r["legs"].as_array().cloned())
            .unwrap_or_default()
    };
    let mut out = String::new();
    if calls.is_empty() {
        out.push_str("no live calls\n");
        return Ok(out);
    }
    for c in &calls {
        let _ = writeln!(
            out,
            "{}  {}  {} -> {}  route {}  {:.1} s",
            s(&c["uri"]),
            s(&c["state"]),
            s(&c["caller"]),
            s(&c["callee"]),
            s(&c["route"]),
            c["age_ms"].as_f64().unwrap_or(0.0) / 1000.0
        );
        let _ = writeln!(
            out,
            "  {:<8} {:<7} {:<8} {:<9} {:<22} {:<6} {:>8} {:>8} {:>6} {:>8}",
            "LEG", "KIND", "DIR", "STATE", "PEER", "CODEC", "RX", "TX", "LOST", "JITTER"
        );
        for l in c["legs"].as_array().cloned().unwrap_or_default() {
            let m = &l["media"];
            let _ = writeln!(
                out,
                "  {:<8} {:<7} {:<8} {:<9} {:<22} {:<6} {:>8} {:>8} {:>6} {:>6.1}ms{}",
                s(&l["id"]),
                s(&l["kind"]),
                s(&l["direction"]),
                s(&l["state"]),
                s(&l["peer"]),
                s(&l["codec"]),
                s(&m["packets_received"]),
                s(&m["packets_sent"]),
                s(&m["packets_lost"]),
                m["jitter_ms"].as_f64().unwrap_or(0.0),
                if l["held"].as_bool() == Some(true) {
                    "  (held)"
                } else {
                    ""
                }
            );
            if let Some(r) = rtc
                .iter()
                .find(|r| r["leg"].as_u64().is_some() && r["leg"].as_u64() == l["id"].as_u64())
            {
                out.push_str(&rtc_line(r));
            }
        }
    }
    Ok(out)
}

/// The transport of a WebRTC leg under its leg line: ICE state and selected candidate pair,
/// DTLS state and role, SRTP profile, codec, RTT and loss (and the grace period left when its
/// signalling is gone).
fn rtc_line(r: &Value) -> String {
    let pair = match r["selected_pair"].as_array().map(Vec::as_slice) {
        Some([local, remote]) => format!("{} <-> {}", s(local), s(remote)),
        _ => "none".to_owned(),
    };
    let rtt = r["rtt_ms"]
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
    let mut line = format!(
        "           webrtc: ice {} pair {}  dtls {} ({})  srtp {}  codec {}  rtt {}  loss {:.2} % ({} lost of {} rx)",
        s(&r["ice_state"]),
        pair,
        s(&r["dtls_state"]),
        s(&r["dtls_role"]),
        s(&r["srtp_profile"]),
        s(&r["codec"]),
        rtt,
        r["loss_percent"].as_f64().unwrap_or(0.0),
        s(&r["packets_lost"]),
        s(&r["packets_received"]),
    );
    if let Some(g) = r["grace_left_s"].as_f64() {
        let _ = write!(line, "  signalling lost: {g:.1} s of grace left");
    }
    line.push('\n');
    line
}

/// `gwctl sip trace`: the SIP messages the gateway saw (of one call with `call`), as text or as
/// a ladder diagram; with `follow`, keeps polling for new ones.
pub fn trace(
    gateway: &str,
    call: Option<&str>,
    ladder_view: bool,
    follow: bool,
) -> Result<(), Error> {
    let mut since = 0u64;
    let mut all = Vec::new();
    loop {
        let mut path = format!("/diag/sip/trace?since={since}");
        if let Some(c) = call {
            path.push_str("&call=");
            path.push_str(c);
        }
        let v = get_json(gateway, &path)?;
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        for m in &msgs {
            since = since.max(m["seq"].as_u64().unwrap_or(0));
        }
        if ladder_view {
            all.extend(msgs);
            if !follow {
                print!("{}", ladder(&all));
                return Ok(());
            }
            print!("\x1b[2J\x1b[H{}", ladder(&all));
        } else {
            for m in &msgs {
                let arrow = if m["direction"] == "in" { "<-" } else { "->" };
                println!(
                    "#{} {} {} {} {} {}",
                    s(&m["seq"]),
                    s(&m["time"]),
                    arrow,
                    s(&m["peer"]),
                    s(&m["transport"]),
                    s(&m["call_uri"])
                );
                println!("{}", m["text"].as_str().unwrap_or_default().trim_end());
                println!();
            }
            if !follow {
                return Ok(());
            }
        }
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn label(m: &Value) -> String {
    let first = m["first_line"].as_str().unwrap_or_default();
    let mut l = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        rest.to_owned()
    } else {
        first.split(' ').next().unwrap_or_default().to_owned()
    };
    if let Some(cseq) = m["cseq"].as_str()
        && first.starts_with("SIP/2.0")
        && let Some(method) = cseq.split_whitespace().nth(1)
    {
        l = format!("{l} ({method})");
    }
    if m["text"]
        .as_str()
        .is_some_and(|t| t.contains("\r\n\r\nv=0"))
    {
        l.push_str(" +SDP");
    }
    l
}

/// A ladder diagram: one column per party (the first caller left, the gateway in the middle,
/// the others right), one row per message.
pub fn ladder(msgs: &[Value]) -> String {
    const W: usize = 30;
    let mut peers: Vec<String> = Vec::new();
    for m in msgs {
        let p = s(&m["peer"]);
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
    if peers.is_empty() {
        return "no SIP messages\n".to_owned();
    }
    // Columns: peer 0, gateway, then the other peers.
    let mut cols: Vec<String> = vec![peers[0].clone(), "gateway".to_owned()];
    cols.extend(peers.iter().skip(1).cloned());
    let x_of = |name: &str| -> usize {
        cols.iter()
            .position(|c| c == name)
            .map_or(0, |i| i * W + W / 2)
    };
    let width = cols.len() * W;
    let mut out = String::new();
    let mut header = String::from("        ");
    for c in &cols {
        let _ = write!(header, "{c:^W$}");
    }
    out.push_str(header.trim_end());
    out.push('\n');
    let t0 = msgs.first().and_then(|m| m["ms"].as_u64()).unwrap_or(0);
    for m in msgs {
        let peer = s(&m["peer"]);
        let (from, to) = if m["direction"] == "in" {
            (x_of(&peer), x_of("gateway"))
        } else {
            (x_of("gateway"), x_of(&peer))
        };
        let mut row: Vec<char> = vec![' '; width + 1];
        for c in &cols {
            if let Some(ch) = row.get_mut(x_of(c)) {
                *ch = '|';
            }
        }
        let (lo, hi) = (from.min(to), from.max(to));
        for ch in row.iter_mut().take(hi).skip(lo + 1) {
            *ch = '-';
        }
        if from < to {
            if let Some(ch) = row.get_mut(hi.saturating_sub(1)) {
                *ch = '>';
            }
        } else if let Some(ch) = row.get_mut(lo + 1) {
            *ch = '<';
        }
        let text = label(m);
        let span = hi - lo;
        if text.len() + 4 < span {
            let start = lo + (span - text.len()) / 2;
            for (i, ch) in text.chars().enumerate() {
                if let Some(c) = row.get_mut(start + i) {
                    *c = ch;
                }
            }
            let line: String = row.into_iter().collect();
            let ms = m["ms"].as_u64().unwrap_or(0).saturating_sub(t0);
            let _ = writeln!(out, "{:>6}ms {}", ms, line.trim_end());
        } else {
            let line: String = row.into_iter().collect();
            let ms = m["ms"].as_u64().unwrap_or(0).saturating_sub(t0);
            let _ = writeln!(out, "{:>6}ms {}  {text}", ms, line.trim_end());
        }
    }
    out
}

/// Where a SIP URI points: `sip:[user@]host[:port]` (host a name or an IP).
fn uri_target(uri: &str) -> Result<SocketAddr, Error> {
    let rest = uri
        .strip_prefix("sip:")
        .ok_or_else(|| format!("{uri:?} is not a sip: URI (e.g. sip:pbx.example.com:5060)"))?;
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split([';', '?']).next().unwrap_or(hostport);
    let with_port = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.to_owned()
        } else {
            format!("{hostport}:5060")
        }
    } else if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5060")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("{uri}: cannot resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{uri}: {with_port} has no address").into())
}

/// One OPTIONS exchange over UDP with RFC 3261 retransmissions (T1 = 500 ms doubling to 4 s)
/// until `timeout`; returns the status line and the round-trip time.
fn ping_once(
    sock: &UdpSocket,
    target: SocketAddr,
    uri: &str,
    n: u32,
    timeout: Duration,
) -> Result<(String, Duration, String), Error> {
    let local = sock.local_addr()?;
    let branch = format!("z9hG4bKgwctl{}{n}", std::process::id());
    let call_id = format!("gwctl-{}-{n}@{}", std::process::id(), local.ip());
    let req = format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:gwctl@{local}>;tag=gwctl{n}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {n} OPTIONS\r\nContact: <sip:gwctl@{local}>\r\nAccept: application/sdp\r\nUser-Agent: gwctl/{}\r\nContent-Length: 0\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let start = Instant::now();
    let mut interval = Duration::from_millis(500);
    let mut next_send = start;
    let mut buf = [0u8; 8192];
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= timeout {
            return Err(format!(
                "no answer from {target} within {:.1} s",
                timeout.as_secs_f64()
            )
            .into());
        }
        if now >= next_send {
            sock.send_to(req.as_bytes(), target)?;
            next_send = now + interval;
            interval = (interval * 2).min(Duration::from_secs(4));
        }
        let wait = next_send
            .min(start + timeout)
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                let text = String::from_utf8_lossy(buf.get(..len).unwrap_or_default()).into_owned();
                if !text.contains(&branch) {
                    continue; // a late answer to an earlier ping
                }
                let status = text.lines().next().unwrap_or_default().to_owned();
                if status.starts_with("SIP/2.0 1") {
                    continue; // provisional
                }
                let agent = text
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        (n.eq_ignore_ascii_case("server") || n.eq_ignore_ascii_case("user-agent"))
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                return Ok((status, start.elapsed(), agent));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `gwctl sip ping URI`: sends OPTIONS (`count` times, one a second) and prints status and RTT.
/// Fails if any ping went unanswered.
pub fn ping(uri: &str, count: u32, timeout: Duration) -> Result<String, Error> {
    let target = uri_target(uri)?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind)?;
    let mut out = String::new();
    let mut rtts = Vec::new();
    let mut failures = 0;
    for n in 1..=count.max(1) {
        match ping_once(&sock, target, uri, n, timeout) {
            Ok((status, rtt, agent)) => {
                let ms = rtt.as_secs_f64() * 1000.0;
                rtts.push(ms);
                let agent = if agent.is_empty() {
                    String::new()
                } else {
                    format!("  [{agent}]")
                };
                let line = format!(
                    "{uri} ({target}): {}  rtt {ms:.2} ms{agent}",
                    status.trim_start_matches("SIP/2.0 ")
                );
                println!("{line}");
                let _ = writeln!(out, "{line}");
            }
            Err(e) => {
                failures += 1;
                let line = format!("{uri} ({target}): {e}");
                println!("{line}");
                let _ = writeln!(out, "{line}");
            }
        }
        if n < count {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if count > 1 && !rtts.is_empty() {
        let min = rtts.iter().copied().fold(f64::MAX, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        println!(
            "{count} sent, {} answered, rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms",
            rtts.len()
        );
    }
    if failures > 0 {
        return Err(format!("{failures} of {count} pings unanswered").into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_resolve_with_default_port() {
        assert_eq!(
            uri_target("sip:127.0.0.1").unwrap(),
            "127.0.0.1:5060".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            uri_target("sip:bob@127.0.0.1:5070;transport=udp").unwrap(),
            "127.0.0.1:5070".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            uri_target("sip:[::1]:5080").unwrap(),
            "[::1]:5080".parse::<SocketAddr>().unwrap()
        );
        assert!(uri_target("tel:+123").is_err());
    }

    #[test]
    fn ladder_draws_arrows_both_ways() {
        let msgs: Vec<Value> = serde_json::from_str(
            r#"[
            {"peer":"10.0.0.1:5060","direction":"in","first_line":"INVITE sip:bob@gw SIP/2.0","cseq":"1 INVITE","ms":0,"text":""},
            {"peer":"10.0.0.9:5060","direction":"out","first_line":"INVITE sip:bob@b SIP/2.0","cseq":"1 INVITE","ms":3,"text":"x\r\n\r\nv=0"},
            {"peer":"10.0.0.1:5060","direction":"out","first_line":"SIP/2.0 180 Ringing","cseq":"1 INVITE","ms":9,"text":""}
            ]"#,
        )
        .unwrap();
        let l = ladder(&msgs);
        let lines: Vec<&str> = l.lines().collect();
        assert!(
            lines[0].contains("10.0.0.1:5060")
                && lines[0].contains("gateway")
                && lines[0].contains("10.0.0.9:5060")
        );
        assert!(lines[1].contains("INVITE") && lines[1].contains('>'), "{l}");
        assert!(lines[2].contains("INVITE +SDP"), "{l}");
        assert!(
            lines[3].contains("180 Ringing (INVITE)") && lines[3].contains('<'),
            "{l}"
        );
    }
}

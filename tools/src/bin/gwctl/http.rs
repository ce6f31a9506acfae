//! A small HTTP/1.1 client for the gateway's API: GET, status check, and a body delivered line
//! by line as it arrives (the live trace is an endless chunked response). Plain HTTP on the
//! private core listener only.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `http://HOST:PORT` → ("HOST:PORT", "HOST").
fn authority(base: &str) -> Result<(String, String)> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        format!("gateway URL {base:?} must start with http:// (the core listener, e.g. http://127.0.0.1:8080)")
    })?;
    let auth = rest.trim_end_matches('/').to_owned();
    if auth.is_empty() || auth.contains('/') {
        return Err(format!("gateway URL {base:?}: give only scheme, host and port").into());
    }
    let host = auth
        .rsplit_once(':')
        .map_or(auth.as_str(), |(h, _)| h)
        .to_owned();
    Ok((auth, host))
}

/// GETs `path` and calls `on_line` for every line of the body as it arrives (until it returns
/// false or the body ends). Fails with the server's message on a non-2xx status.
pub async fn get_lines(
    base: &str,
    path: &str,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<()> {
    let (auth, host) = authority(base)?;
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&auth))
        .await
        .map_err(|_| format!("connecting to {auth} timed out"))?
        .map_err(|e| format!("cannot connect to the gateway at {auth}: {e}"))?;
    let mut stream = BufReader::new(stream);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\nUser-Agent: gwctl\r\n\r\n"
    );
    stream.get_mut().write_all(req.as_bytes()).await?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response from {auth}: {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err("connection closed in the response headers".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    let mut pending = String::new();
    let mut deliver = |text: &str, pending: &mut String| -> bool {
        pending.push_str(text);
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            if !on_line(line.trim_end_matches(['\r', '\n'])) {
                return false;
            }
        }
        true
    };
    if !(200..300).contains(&status) {
        let mut body = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut body)).await;
        return Err(format!("gateway answered {status}: {}", body.trim()).into());
    }
    if chunked {
        loop {
            let mut size_line = String::new();
            if stream.read_line(&mut size_line).await? == 0 {
                break;
            }
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            let mut buf = vec![0u8; size + 2];
            stream.read_exact(&mut buf).await?;
            buf.truncate(size);
            if !deliver(&String::from_utf8_lossy(&buf), &mut pending) {
                return Ok(());
            }
        }
    } else {
        let mut body = Vec::new();
        match length {
            Some(n) => {
                body.resize(n, 0);
                stream.read_exact(&mut body).await?;
            }
            None => {
                stream.read_to_end(&mut body).await?;
            }
        }
        if !deliver(&String::from_utf8_lossy(&body), &mut pending) {
            return Ok(());
        }
    }
    if !pending.is_empty() {
        on_line(&pending);
    }
    Ok(())
}

/// GETs `path` and returns the whole body.
pub async fn get(base: &str, path: &str) -> Result<String> {
    let mut out = String::new();
    get_lines(base, path, |l| {
        out.push_str(l);
        out.push('\n');
        true
    })
    .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            authority("http://127.0.0.1:8080/").unwrap(),
            ("127.0.0.1:8080".into(), "127.0.0.1".into())
        );
        assert!(authority("https://x").is_err());
        assert!(authority("http://x/api").is_err());
    }
}

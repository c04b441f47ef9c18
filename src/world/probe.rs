//! Network health probes: tcp, http (over TCP or a Unix socket), unix.
//!
//! Owns: one probe attempt with a hard deadline, answered as (ok, detail).
//! Exec probes are not here: they are processes, so they go through the
//! spawner and the one reaper like everything else. Must never: block the
//! driver loop (each probe is its own task), or outlive its timeout.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::unit::ProbeTarget;

/// Run one network probe. `Exec` targets are refused here.
pub async fn run(target: &ProbeTarget, timeout: Duration) -> (bool, Option<String>) {
    match tokio::time::timeout(timeout, attempt(target)).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(e)) => (false, Some(e)),
        Err(_) => (false, Some(format!("timed out after {timeout:?}"))),
    }
}

async fn attempt(target: &ProbeTarget) -> Result<Option<String>, String> {
    match target {
        ProbeTarget::Tcp(addr) => {
            tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            Ok(None)
        }
        ProbeTarget::Unix(path) => {
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("connect {}: {e}", path.display()))?;
            Ok(None)
        }
        ProbeTarget::Http(url) => http(url).await,
        ProbeTarget::Exec(_) => Err("exec probes are run by the spawner".to_string()),
    }
}

/// `http://host[:port]/path` or `http+unix:///run/app.sock:/path`.
async fn http(url: &str) -> Result<Option<String>, String> {
    if let Some(rest) = url.strip_prefix("http+unix://") {
        let (sock, path) = match rest.split_once(':') {
            Some((s, p)) => (s, if p.is_empty() { "/" } else { p }),
            None => (rest, "/"),
        };
        let stream = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(|e| format!("connect {sock}: {e}"))?;
        return get(stream, "localhost", path).await;
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported URL {url:?} (use http:// or http+unix://)"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let stream = tokio::net::TcpStream::connect(addr.as_str())
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    get(stream, hostport, path).await
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
) -> Result<Option<String>, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: supd-probe\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need; read at most a few KiB.
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < buf.len() {
        let n = s
            .read(&mut buf[got..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(Some(line))
    } else {
        Err(format!("HTTP status {code}: {line}"))
    }
}

//! Service output capture.
//!
//! Owns: reading a child's output pipe (stdout and stderr share it, as a
//! systemd journal stream does) line by line and logging each line with the
//! unit's name. Lines are bounded (a service that never prints
//! a newline cannot grow supd's memory) and the pipe is always drained, so a
//! chatty child never blocks on a full pipe. Must never: block the driver
//! loop, or hold the pipe open after the child's side closes.

use std::os::fd::OwnedFd;

use tokio::io::AsyncReadExt;

/// Longest line kept; the rest of a longer line is cut and marked.
const MAX_LINE: usize = 4096;

/// Spawn a task that logs every line of `fd` under `unit`.
pub fn capture(unit: String, fd: OwnedFd) {
    let rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(unit = %unit, "cannot capture output: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let rx = rx;
        let mut line: Vec<u8> = Vec::new();
        let mut truncated = false;
        loop {
            // Wait for data, then read into a buffer that lives only in this
            // step: the task keeps no read buffer while it waits (one task
            // per service; 512 bytes each was a third of supd's memory per
            // unit).
            if rx.readable().await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            let n = match rx.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            };
            for &b in &buf[..n] {
                if b == b'\n' {
                    emit(&unit, &line, truncated);
                    line.clear();
                    line.shrink_to(256);
                    truncated = false;
                } else if line.len() < MAX_LINE {
                    line.push(b);
                } else {
                    truncated = true;
                }
            }
        }
        if !line.is_empty() {
            emit(&unit, &line, truncated);
        }
    });
}

fn emit(unit: &str, line: &[u8], truncated: bool) {
    let text = String::from_utf8_lossy(line);
    let cut = if truncated { " [line truncated]" } else { "" };
    tracing::info!(target: "unit", unit = %unit, "{text}{cut}");
}

/// `[ready] kind = "fd"`: report `run` as ready on the first newline the
/// service writes to its readiness descriptor.
pub fn watch_ready_line(
    fd: OwnedFd,
    run: crate::engine::RunId,
    tx: tokio::sync::mpsc::UnboundedSender<crate::engine::RunId>,
) {
    let rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("cannot watch the readiness pipe: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let mut rx = rx;
        let mut buf = [0u8; 256];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if buf[..n].contains(&b'\n') {
                        let _ = tx.send(run);
                        return;
                    }
                }
            }
        }
    });
}

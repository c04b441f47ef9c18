//! Service output capture.
//!
//! Owns: reading a child's output pipe (stdout and stderr share it, as a
//! systemd journal stream does) and cutting it into lines: each read's
//! complete lines go to the unit's log (`world::logstore`) as one chunk
//! stamped with its arrival time, whatever supd's own log level; they are
//! also echoed into supd's own log (target `unit`, level info, tagged with
//! the unit's name) as before, for consoles and container logs. Lines are
//! bounded (a service that never prints a newline cannot grow supd's
//! memory) and the pipe is always drained, so a chatty child never blocks
//! on a full pipe. Must never: block the driver loop (the store only
//! queues), or keep its own hold on the pipe after the child's side
//! closes.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::logstore::{Limits, LogStore, MAX_LINE, Stream, wall_us};

/// Bytes read per `read` call. The buffer lives only between the wake-up
/// and the next wait (see `capture`).
const READ_BUF: usize = 16 * 1024;
/// Reads per wake-up before yielding to the rest of the loop (fairness
/// under a flood: 256 KiB, then other work).
const READS_PER_WAKE: usize = 16;

/// The read end of a pipe as a tokio receiver. The spawner makes its ends
/// non-blocking and read-only already (one fcntl tells); anything else (a
/// pipe handed over by an older image) gets tokio's full check, an fstat
/// and two more fcntls.
fn receiver(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags >= 0 && flags & libc::O_NONBLOCK != 0 && flags & libc::O_ACCMODE == libc::O_RDONLY {
        tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)
    } else {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
    }
}

/// Capture tasks whose pipe has not reached its end yet.
static READING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many pipes are still being read: at shutdown the driver lets them
/// reach their end (a service's last lines) before it exits.
pub fn reading() -> usize {
    READING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a capture task in `READING` for as long as it lives.
struct Reading;

impl Reading {
    fn new() -> Reading {
        READING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Reading
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A pipe's read end that the capture task shares with whoever else
/// holds it (the process table keeps a service's for a re-exec): one
/// descriptor, closed when the last holder lets go — not a copy each.
struct SharedPipe(tokio::io::unix::AsyncFd<Arc<OwnedFd>>);

impl SharedPipe {
    fn new(fd: Arc<OwnedFd>) -> std::io::Result<SharedPipe> {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor `fd` keeps open. A pipe
        // from the spawner is non-blocking already (one fcntl tells); one
        // handed over by an older image may not be.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            // SAFETY: as above.
            && unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // `Arc<OwnedFd>` owns its descriptor, so the deprecated
        // constructor's I/O-safety concern does not apply.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(SharedPipe(fd))
    }

    async fn readable(&self) -> std::io::Result<()> {
        // Readiness is cleared by the `try_read` that would block.
        self.0.readable().await.map(|_| ())
    }

    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.0.try_io(tokio::io::Interest::READABLE, |fd| {
            // SAFETY: read(2) into a buffer we own, of its length.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

/// Spawn a task that logs every line of `fd` under `unit`. The task's
/// hold on `fd` ends at end-of-file; another holder (the process table,
/// for a re-exec) may keep it open longer.
pub fn capture(
    store: LogStore,
    unit: Arc<str>,
    stream: Stream,
    limits: Limits,
    fd: impl Into<Arc<OwnedFd>>,
) {
    let rx = match SharedPipe::new(fd.into()) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(unit = %unit, "cannot capture output: {e}");
            return;
        }
    };
    tokio::spawn(pump(rx, store, unit, stream, limits, Reading::new()));
}

/// The capture task: read until the end of the stream (`_reading` counts
/// it in `reading()` until then).
async fn pump(
    rx: SharedPipe,
    store: LogStore,
    unit: Arc<str>,
    stream: Stream,
    limits: Limits,
    _reading: Reading,
) {
    {
        // The part of a line not ended yet; bounded by MAX_LINE.
        let mut line: Vec<u8> = Vec::new();
        let mut truncated = false;
        let mut eof = false;
        while !eof {
            // Wait for data, then read into a buffer that lives only in this
            // step: the task keeps no read buffer while it waits (one task
            // per service).
            if rx.readable().await.is_err() {
                break;
            }
            // The buffer's scope ends before the next `.await`: a local
            // alive across an await is part of the task's stored state, and
            // the 16 KiB buffer made every task (one per service) 16 KiB,
            // allocated and copied at spawn — 8 KiB of supd's resident
            // memory per unit at N = 1,000. Here it is on the stack of
            // the poll only.
            eof = read_some(
                &rx,
                &mut line,
                &mut truncated,
                &unit,
                stream,
                &store,
                limits,
            );
            if !eof {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Read what the pipe holds now (at most `READS_PER_WAKE` reads) and hand
/// its complete lines on; true at the end of the stream.
fn read_some(
    rx: &SharedPipe,
    line: &mut Vec<u8>,
    truncated: &mut bool,
    unit: &Arc<str>,
    stream: Stream,
    store: &LogStore,
    limits: Limits,
) -> bool {
    let mut eof = false;
    let mut buf = [0u8; READ_BUF];
    let mut reads = 0;
    while reads < READS_PER_WAKE && !eof {
        reads += 1;
        let n = match rx.try_read(&mut buf) {
            Ok(0) => {
                eof = true;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {
                eof = true;
                0
            }
        };
        // One chunk per read, sized to it: the store's byte bound
        // is then close to the memory it really holds.
        let mut chunk = Vec::with_capacity(n + line.len() + 32);
        split_lines(&buf[..n], line, truncated, &mut chunk);
        if eof && !line.is_empty() {
            end_line(line, truncated, &mut chunk);
        }
        if !chunk.is_empty() {
            echo(unit, stream, &chunk);
            store.push(unit, stream, limits, wall_us(), chunk);
        }
        if n < buf.len() {
            break;
        }
    }
    eof
}

/// Append the complete lines of `data` to `out` (each ending in `\n`);
/// keep an unfinished one in `line`.
fn split_lines(data: &[u8], line: &mut Vec<u8>, truncated: &mut bool, out: &mut Vec<u8>) {
    let mut rest = data;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        let (head, tail) = rest.split_at(i);
        if line.is_empty() && !*truncated && head.len() <= MAX_LINE {
            // The common case: a whole line inside this read.
            out.extend_from_slice(head);
            out.push(b'\n');
        } else {
            take_part(line, truncated, head);
            end_line(line, truncated, out);
        }
        rest = &tail[1..];
    }
    take_part(line, truncated, rest);
}

fn take_part(line: &mut Vec<u8>, truncated: &mut bool, part: &[u8]) {
    let room = MAX_LINE.saturating_sub(line.len());
    if part.len() > room {
        *truncated = true;
    }
    line.extend_from_slice(&part[..part.len().min(room)]);
}

fn end_line(line: &mut Vec<u8>, truncated: &mut bool, out: &mut Vec<u8>) {
    let head = &line[..line.len().min(MAX_LINE)];
    out.extend_from_slice(head);
    if *truncated {
        out.extend_from_slice(b" [line truncated]");
    }
    out.push(b'\n');
    line.clear();
    line.shrink_to(256);
    *truncated = false;
}

/// Echo into supd's own log (only when its level lets info through).
fn echo(unit: &str, stream: Stream, chunk: &[u8]) {
    if !tracing::enabled!(target: "unit", tracing::Level::INFO) {
        return;
    }
    for l in chunk.split(|&b| b == b'\n') {
        if l.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(l);
        match stream {
            Stream::Out | Stream::Supd => tracing::info!(target: "unit", unit = %unit, "{text}"),
            Stream::Stop => {
                tracing::info!(target: "unit", unit = %format_args!("{unit}:stop"), "{text}")
            }
            Stream::Probe => {
                tracing::info!(target: "unit", unit = %format_args!("{unit}:probe"), "{text}")
            }
        }
    }
}

/// `[ready] kind = "fd"`: report `run` as ready on the first newline the
/// service writes to its readiness descriptor.
pub fn watch_ready_line(
    fd: OwnedFd,
    run: crate::engine::RunId,
    tx: tokio::sync::mpsc::UnboundedSender<crate::engine::RunId>,
) {
    let rx = match receiver(fd) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_reads_and_bounded() {
        let (mut line, mut cut, mut out) = (Vec::new(), false, Vec::new());
        split_lines(b"one\ntw", &mut line, &mut cut, &mut out);
        split_lines(b"o\nthree", &mut line, &mut cut, &mut out);
        assert_eq!(out, b"one\ntwo\n");
        assert_eq!(line, b"three");
        out.clear();
        line.clear();
        let long = vec![b'x'; MAX_LINE + 10];
        split_lines(&long, &mut line, &mut cut, &mut out);
        split_lines(b"yy\nnext\n", &mut line, &mut cut, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" [line truncated]"));
        assert_eq!(lines[0].len(), MAX_LINE + " [line truncated]".len());
        assert_eq!(lines[1], "next");
    }

    /// One capture task per service: what it keeps while waiting is
    /// supd's memory per unit. Its read buffer (16 KiB) is not part of it.
    #[test]
    fn a_waiting_capture_task_is_small() {
        let dir = std::env::temp_dir().join(format!("supd-output-size-{}", std::process::id()));
        let store = LogStore::start(&dir, None).expect("log store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
            let rx = SharedPipe::new(Arc::new(r)).expect("shared pipe");
            let task = pump(
                rx,
                store.clone(),
                Arc::from("u"),
                Stream::Out,
                Limits {
                    max_size: 1 << 20,
                    max_files: 2,
                },
                Reading::new(),
            );
            let size = std::mem::size_of_val(&task);
            assert!(
                size < 1024,
                "a capture task holds {size} bytes while it waits"
            );
        });
        store.close(std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

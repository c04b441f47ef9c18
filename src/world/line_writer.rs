//! A line writer that never blocks its caller.
//!
//! Owns: one output descriptor (supd's stderr today; per-unit log files
//! later), a bounded buffer of whole lines that could not be written yet,
//! a count of lines dropped because that buffer was full, and a small
//! flusher thread (started only the first time the descriptor refuses a
//! write) that waits for the descriptor to drain, writes the backlog, and
//! then writes one report line saying how many lines were dropped.
//!
//! Why: supd's stderr is a pipe to a container runtime or a console that
//! an outsider can stall; a blocking write on the event loop then stops
//! reaping, restarting and answering (DESIGN.md invariant 10). Here a
//! stalled reader costs at most `capacity` bytes of memory and some lost
//! lines, which are counted and reported once the reader is back.
//!
//! How it stays non-blocking without changing what others see: setting
//! `O_NONBLOCK` on fd 2 would change the open file description shared with
//! every child whose output is `inherit` (they would get `EAGAIN`). So a
//! pipe, FIFO or terminal is opened afresh through `/proc/self/fd/N`, which
//! gives a description of our own with `O_NONBLOCK`; a socket is written
//! with `send(MSG_DONTWAIT)`; a regular file cannot stall and is written as
//! is. Until `/proc` exists (the first lines of a VM's PID 1) writes are
//! plain ones, and the reopen is tried again on every line.
//!
//! While a `Held` guard lives (the driver takes one around each batch of
//! engine actions: a stop of 1,000 units logs 2,000 lines), lines are
//! gathered and written together, up to `PIPE_BUF` bytes per write — a
//! write that size to a pipe is atomic, so lines of services sharing the
//! descriptor (`output = "inherit"`) still cannot land inside supd's —
//! and what is gathered goes out when the last guard drops. One system
//! call (and one wake-up of the reader) per 30–50 lines instead of one
//! per line.
//!
//! Must never: block the caller on the descriptor (only on the short,
//! uncontended mutex), write part of a line followed by another line,
//! write more than `PIPE_BUF` bytes of gathered lines at once, hold more
//! than `capacity` bytes (plus the rest of one partly written line, plus
//! `PIPE_BUF` gathered), panic, or take signals in its thread.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Formats the report line for `n` dropped lines.
pub type ReportFn = fn(u64) -> Vec<u8>;

pub struct LineWriter {
    state: Mutex<State>,
    /// Signalled when the buffer gains bytes (wakes the flusher) and when
    /// it empties (wakes `flush`).
    changed: Condvar,
    capacity: usize,
    report: ReportFn,
}

/// Most bytes of gathered lines written at once (see the module doc).
const GATHER: usize = libc::PIPE_BUF;

/// See `LineWriter::hold`.
pub struct Held(Arc<LineWriter>);

impl Drop for Held {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.holds = st.holds.saturating_sub(1);
        if st.holds == 0 {
            self.0.write_gathered(&mut st);
        }
    }
}

struct State {
    out: Out,
    /// `Held` guards alive, and the lines gathered meanwhile.
    holds: u32,
    gathered: Vec<u8>,
    /// Bytes of whole lines not yet written; the front may be the rest of a
    /// line the descriptor took only part of.
    buf: VecDeque<u8>,
    /// Lines refused since the last report.
    dropped: u64,
    dropped_total: u64,
    flusher_started: bool,
}

enum Out {
    /// Our own non-blocking description of a pipe, FIFO or terminal.
    Nonblocking(OwnedFd),
    /// A socket: `send` with `MSG_DONTWAIT`.
    Socket(OwnedFd),
    /// A regular file or anything that cannot stall: plain `write`.
    Plain(OwnedFd),
    /// Not reopened yet (no `/proc`): plain writes to the original fd.
    Pending(RawFd),
}

impl Out {
    fn fd(&self) -> RawFd {
        match self {
            Out::Nonblocking(f) | Out::Socket(f) | Out::Plain(f) => f.as_raw_fd(),
            Out::Pending(fd) => *fd,
        }
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: valid pointer and length; the fd stays open while `self` lives.
        let n = unsafe {
            match self {
                Out::Socket(f) => libc::send(
                    f.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                ),
                _ => libc::write(self.fd(), bytes.as_ptr().cast(), bytes.len()),
            }
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// What to do with the descriptor `fd` (not taken over: it stays open).
fn open_out(fd: RawFd) -> Out {
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Out::Pending(fd);
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO | libc::S_IFCHR => match reopen_nonblocking(fd) {
            Some(f) => Out::Nonblocking(f),
            None => Out::Pending(fd),
        },
        libc::S_IFSOCK => dup(fd).map(Out::Socket).unwrap_or(Out::Pending(fd)),
        _ => dup(fd).map(Out::Plain).unwrap_or(Out::Pending(fd)),
    }
}

fn reopen_nonblocking(fd: RawFd) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: valid C string; the result is checked.
    let r = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    // SAFETY: a fresh descriptor we own.
    (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r) })
}

fn dup(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor or -1.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: a fresh descriptor we own.
    (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r) })
}

impl LineWriter {
    /// A writer for `fd` (which stays open and unchanged) holding at most
    /// `capacity` bytes while the descriptor does not accept more.
    pub fn new(fd: RawFd, capacity: usize, report: ReportFn) -> Arc<LineWriter> {
        Arc::new(LineWriter {
            state: Mutex::new(State {
                out: open_out(fd),
                holds: 0,
                gathered: Vec::new(),
                buf: VecDeque::new(),
                dropped: 0,
                dropped_total: 0,
                flusher_started: false,
            }),
            changed: Condvar::new(),
            capacity,
            report,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind: go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gather lines until the guard (and every other one) is dropped; see
    /// the module doc.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.lock().holds += 1;
        Held(Arc::clone(self))
    }

    /// Write one line (with its newline), now or later, or drop and count
    /// it if the backlog is full. Never blocks on the descriptor.
    pub fn write_line(self: &Arc<Self>, line: &[u8]) {
        let mut st = self.lock();
        if st.holds > 0 {
            if st.gathered.len() + line.len() > GATHER {
                self.write_gathered(&mut st);
            }
            if line.len() <= GATHER {
                st.gathered.extend_from_slice(line);
                return;
            }
        }
        self.write_locked(&mut st, line);
    }

    /// Write what was gathered (whole lines, at most `GATHER` bytes) as
    /// one piece.
    fn write_gathered(self: &Arc<Self>, st: &mut State) {
        if st.gathered.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut st.gathered);
        self.write_locked(st, &lines);
        st.gathered = lines;
        st.gathered.clear();
    }

    fn write_locked(self: &Arc<Self>, st: &mut State, line: &[u8]) {
        if let Out::Pending(fd) = st.out {
            st.out = open_out(fd);
        }
        self.flush_locked(st);
        if st.buf.is_empty() {
            match write_some(&st.out, line) {
                Ok(n) => st.buf.extend(&line[n..]),
                Err(_) => st.buf.extend(line),
            }
        } else if st.buf.len() + line.len() <= self.capacity {
            st.buf.extend(line);
        } else {
            let n = line.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
            st.dropped += n;
            st.dropped_total += n;
        }
        if !st.buf.is_empty() {
            if !st.flusher_started {
                st.flusher_started = self.start_flusher();
            }
            self.changed.notify_all();
        }
    }

    /// Lines dropped since this writer was made.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Wait up to `timeout` for the backlog to be written (before exit or
    /// reboot). Returns whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(Duration::from_secs(3600));
        let mut st = self.lock();
        // Gathered under a guard still alive (at exit there should be
        // none): out with the rest, if there is room.
        if !st.gathered.is_empty() {
            let g = std::mem::take(&mut st.gathered);
            if st.buf.len() + g.len() <= self.capacity {
                st.buf.extend(&g);
            }
        }
        loop {
            self.flush_locked(&mut st);
            if st.buf.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            st = match self.changed.wait_timeout(st, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Write as much of the backlog as the descriptor takes now; once it
    /// is empty, queue the report of dropped lines.
    fn flush_locked(&self, st: &mut State) {
        // Only a backlog that emptied here is news to `flush`'s waiters:
        // a condvar's notify is a system call even with nobody waiting,
        // and this runs before every line supd logs.
        let mut drained = false;
        loop {
            while !st.buf.is_empty() {
                let (front, _) = st.buf.as_slices();
                match st.out.write(front) {
                    Ok(0) => return,
                    Ok(n) => {
                        st.buf.drain(..n);
                        drained = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        // The reader is gone (EPIPE) or the fd is bad:
                        // nothing queued can ever arrive.
                        let lines = st.buf.iter().filter(|&&b| b == b'\n').count() as u64;
                        st.buf.clear();
                        st.dropped_total += lines;
                        st.dropped = 0;
                        return;
                    }
                }
            }
            if st.dropped == 0 {
                if drained {
                    self.changed.notify_all();
                }
                return;
            }
            let n = std::mem::take(&mut st.dropped);
            st.buf.extend((self.report)(n));
        }
    }

    fn start_flusher(self: &Arc<Self>) -> bool {
        let me = Arc::clone(self);
        // The thread takes no signals: they belong to the event loop's
        // thread, and a handler must never run in the middle of a write.
        let held = super::sigmask::SigHold::all();
        let r = std::thread::Builder::new()
            .name("supd-log".into())
            .stack_size(64 * 1024)
            .spawn(move || me.flusher());
        drop(held);
        r.is_ok()
    }

    fn flusher(&self) {
        loop {
            let fd = {
                let mut st = self.lock();
                while st.buf.is_empty() {
                    st = match self.changed.wait(st) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
                st.out.fd()
            };
            // Wait for room without the lock, so writers only queue; the
            // timeout covers a descriptor replaced meanwhile.
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 1000) };
            let mut st = self.lock();
            self.flush_locked(&mut st);
        }
    }
}

/// Write `line` as far as the descriptor takes it now.
fn write_some(out: &Out, line: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < line.len() {
        match out.write(&line[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn report(n: u64) -> Vec<u8> {
        format!("dropped {n}\n").into_bytes()
    }

    fn fill(fd: RawFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        n as usize
    }

    #[test]
    fn a_stalled_pipe_never_blocks_and_drops_are_reported() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let lw = LineWriter::new(w.as_raw_fd(), 4096, report);
        // The pipe's own flags are untouched: a child sharing it still
        // writes blocking.
        let fl = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(fl & libc::O_NONBLOCK, 0);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let t0 = Instant::now();
        for _ in 0..5000 {
            lw.write_line(&line);
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        // 64 KiB pipe + 4 KiB backlog; the rest is counted.
        assert!(lw.dropped_total() > 4000, "{}", lw.dropped_total());
        let mut f = std::fs::File::from(r);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&got).contains("dropped") {
            assert!(Instant::now() < deadline, "no report");
            if fill(f.as_raw_fd()) > 0 {
                let n = f.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let text = String::from_utf8_lossy(&got).to_string();
        // Every line is whole, and the report counts what is missing.
        let report = text.lines().find(|l| l.starts_with("dropped")).unwrap();
        let dropped: u64 = report["dropped ".len()..].parse().unwrap();
        let whole = text.lines().filter(|l| l.as_bytes() == &line[..99]).count() as u64;
        assert_eq!(whole + dropped, 5000, "{report}");
        assert!(
            text.lines()
                .all(|l| l.len() == 99 || l.starts_with("dropped"))
        );
        drop(w);
    }

    #[test]
    fn held_lines_go_out_together_in_whole_lines_of_at_most_pipe_buf() {
        // A datagram socket shows each write as one message.
        let mut fds = [0; 2];
        // SAFETY: socketpair into a local array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: fresh descriptors we own.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let lw = LineWriter::new(a.as_raw_fd(), 1 << 20, report);
        let messages = |b: &OwnedFd| -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                // SAFETY: recv into a buffer we own.
                let n = unsafe {
                    libc::recv(
                        b.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    return out;
                }
                out.push(buf[..n as usize].to_vec());
            }
        };
        let lines: Vec<String> = (0..300)
            .map(|i| format!("{i:04} {}\n", "y".repeat(70)))
            .collect();
        {
            let _h = lw.hold();
            let _nested = lw.hold();
            for l in &lines[..20] {
                lw.write_line(l.as_bytes());
            }
            assert!(messages(&b).is_empty(), "nothing written while held");
            drop(_nested);
            assert!(messages(&b).is_empty(), "still held by the outer guard");
            for l in &lines[20..] {
                lw.write_line(l.as_bytes());
            }
        }
        let got = messages(&b);
        assert!(got.len() < 20, "{} writes for 300 lines", got.len());
        for m in &got {
            assert!(m.len() <= libc::PIPE_BUF, "{}", m.len());
            assert_eq!(m.last(), Some(&b'\n'), "whole lines only");
        }
        let all: Vec<u8> = got.concat();
        assert_eq!(all, lines.concat().into_bytes(), "every line, in order");
        // Without a guard, one write per line as before.
        lw.write_line(b"alone\n");
        assert_eq!(messages(&b), vec![b"alone\n".to_vec()]);
    }

    #[test]
    fn a_regular_file_is_written_in_order() {
        let p = std::env::temp_dir().join(format!("supd-lw-{}", std::process::id()));
        let f = std::fs::File::create(&p).unwrap();
        let lw = LineWriter::new(f.as_raw_fd(), 16, report);
        for i in 0..100 {
            lw.write_line(format!("line {i}\n").as_bytes());
        }
        assert!(lw.flush(Duration::from_secs(1)));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(lw.dropped_total(), 0);
        let _ = std::fs::remove_file(&p);
    }
}

//! The control socket: supd's side and the client used by supctl.
//!
//! Owns: binding the Unix socket (0600 from the first instant, in a
//! directory no one else controls; only a stale socket is ever replaced),
//! accepting connections with limits (a total, slots reserved for root and
//! supd's user, a share per client pid and per unprivileged uid, an idle
//! timeout, request size, read and write deadlines; when full, the oldest
//! connection that has not sent its request is evicted), checking the
//! peer's credentials (SO_PEERCRED) for requests that change anything, and
//! handing valid requests to the driver with a reply channel. One request
//! per connection. Streaming requests (`logs`, `events`) get a bounded
//! channel too: after the response line, each item put into it is written
//! as one more line until the producer drops it or the client goes away.
//! Must never: block the driver loop, buffer more than `MAX_REQUEST_BYTES`
//! from a client (or `STREAM_DEPTH` items for one), die on a bad client or
//! a failed accept, or panic.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::protocol::{Envelope, MAX_REQUEST_BYTES, Request, Response, VERSION};

/// Concurrent connections served; more are answered "busy".
const MAX_CONNECTIONS: usize = 64;
/// Further slots only root and supd's own user may use, so clients of
/// other users can never lock the operators out.
const RESERVED_PRIVILEGED: usize = 8;
/// Connections one client process (SO_PEERCRED pid) may hold at once: one
/// program opening hundreds of idle connections must not take them all.
const MAX_PER_PID: usize = 8;
/// Connections one unprivileged user may hold at once.
const MAX_PER_UID: usize = 16;
/// The idle timeout: a client has this long to send its request line.
const READ_DEADLINE: Duration = Duration::from_secs(3);
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Largest response a client accepts (status of thousands of units).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Items queued for one streaming client before its producer waits (logs
/// backlog) or drops it (events).
pub const STREAM_DEPTH: usize = 256;
/// Streaming connections at once (followers must not use up the
/// connections operators need).
const MAX_STREAMS: usize = 16;
/// Bytes gathered into one write to a streaming client.
const STREAM_WRITE: usize = 64 * 1024;

/// Who is on the other end (SO_PEERCRED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    pub fn user_name(&self) -> String {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid)) {
            Ok(Some(u)) => u.name,
            _ => format!("uid:{}", self.uid),
        }
    }
}

pub struct ControlRequest {
    pub peer: Peer,
    pub req: Request,
    pub reply: oneshot::Sender<Response>,
    /// For streaming requests: lines (JSON, no newline) written after an ok
    /// response, until every sender is dropped or the client goes away.
    pub stream: Option<mpsc::Sender<String>>,
}

/// `/run/supd/control.sock` as root, else `$XDG_RUNTIME_DIR/supd/…`
/// (falling back to `/tmp/supd-$UID/…`, which `bind` accepts only if it is
/// the user's own and not writable by others). `SUPD_SOCKET` is applied by
/// the callers, before this default.
pub fn default_socket_path() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/supd/control.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("supd/control.sock"),
        _ => PathBuf::from(format!("/tmp/supd-{uid}/control.sock")),
    }
}

/// Make `path`'s directory (creating it, 0755) and check that nobody else
/// can plant or swap sockets in it: it must belong to us or to root and
/// not be writable by group or others (unless it is a root-owned sticky
/// directory such as /tmp, where others cannot touch our files).
pub fn prepare_socket_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if !dir.exists() {
        if let Some(up) = dir.parent() {
            std::fs::create_dir_all(up).map_err(|e| {
                std::io::Error::new(e.kind(), format!("creating {}: {e}", up.display()))
            })?;
        }
        // The last component with its mode from the start; if someone
        // makes it first, the checks below judge theirs.
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("creating {}: {e}", dir.display()),
                ));
            }
        }
    }
    let md = std::fs::metadata(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "refusing to put the control socket in {}: {why}. Another user could replace supd's sockets there. Remove it (or fix its owner and mode: chown {me} and chmod 700), set XDG_RUNTIME_DIR, or give --socket a path in a directory of your own",
                dir.display()
            ),
        ))
    };
    if !md.is_dir() {
        return refuse("it is not a directory".into());
    }
    if md.uid() != me && md.uid() != 0 {
        return refuse(format!(
            "it is owned by uid {}, not by you (uid {me})",
            md.uid()
        ));
    }
    // A root-owned sticky directory (/tmp): others cannot remove or
    // rename what we create in it. A root-owned one that is not writable
    // by others is harmless (if we cannot write it, bind says so).
    let sticky_root = md.uid() == 0 && md.mode() & 0o1000 != 0;
    if md.mode() & 0o022 != 0 && !sticky_root {
        let owner = if md.uid() == me {
            String::new()
        } else {
            format!(
                "it is owned by uid {}, not by you (uid {me}), and ",
                md.uid()
            )
        };
        return refuse(format!(
            "{owner}it is writable by others (mode {:o})",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Clear `path` for a new socket: nothing there, or a stale socket (no one
/// answers on it: `live` says whether someone does) that is removed. A live
/// socket or anything that is not a socket is refused and left alone.
pub fn clear_stale_socket(path: &Path, live: impl FnOnce(&Path) -> bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ));
        }
    };
    if !md.file_type().is_socket() {
        let what = if md.is_file() {
            "a regular file"
        } else if md.is_dir() {
            "a directory"
        } else if md.file_type().is_symlink() {
            "a symlink"
        } else {
            "not a socket"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket ({what}); supd replaces only a stale socket. Move it away, or choose another path",
                path.display()
            ),
        ));
    }
    if live(path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "another supd is listening on {} (stop it, or give this one another --socket)",
                path.display()
            ),
        ));
    }
    std::fs::remove_file(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("removing stale socket {}: {e}", path.display()),
        )
    })
}

/// Bind the control socket. The socket is created under a 0077 umask so
/// it is never world-writable, not even between bind and chmod.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let ctx = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    prepare_socket_dir(path)?;
    clear_stale_socket(path, |p| std::os::unix::net::UnixStream::connect(p).is_ok())?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let l = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.map_err(|e| ctx("binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ctx("chmod", e))?;
    l.set_nonblocking(true).map_err(|e| ctx("configuring", e))?;
    UnixListener::from_std(l).map_err(|e| ctx("registering", e))
}

/// Open connections per client pid and per unprivileged uid; an entry
/// lives as long as a `PeerSlot`.
#[derive(Default)]
struct PeerCounts {
    by_pid: std::collections::HashMap<i32, usize>,
    by_uid: std::collections::HashMap<u32, usize>,
}

/// One connection's share of `PeerCounts`, given back on drop.
struct PeerSlot {
    counts: Arc<std::sync::Mutex<PeerCounts>>,
    pid: Option<i32>,
    uid: Option<u32>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pid) = self.pid
            && let Some(n) = c.by_pid.get_mut(&pid)
        {
            *n -= 1;
            if *n == 0 {
                c.by_pid.remove(&pid);
            }
        }
        if let Some(uid) = self.uid
            && let Some(n) = c.by_uid.get_mut(&uid)
        {
            *n -= 1;
            if *n == 0 {
                c.by_uid.remove(&uid);
            }
        }
    }
}

/// Take a slot for this peer, or say why not.
fn admit(
    counts: &Arc<std::sync::Mutex<PeerCounts>>,
    peer: &Peer,
    privileged: bool,
) -> Result<PeerSlot, String> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    // pid 0: the client is outside our PID namespace; its pid is unknown.
    let pid = peer.pid.filter(|&p| p > 0);
    if let Some(pid) = pid
        && c.by_pid.get(&pid).copied().unwrap_or(0) >= MAX_PER_PID
    {
        return Err(format!(
            "supd is busy: this client (pid {pid}) already has {MAX_PER_PID} control connections open; close them and retry"
        ));
    }
    if !privileged && c.by_uid.get(&peer.uid).copied().unwrap_or(0) >= MAX_PER_UID {
        return Err(format!(
            "supd is busy: uid {} already has {MAX_PER_UID} control connections open; retry",
            peer.uid
        ));
    }
    if let Some(pid) = pid {
        *c.by_pid.entry(pid).or_default() += 1;
    }
    if !privileged {
        *c.by_uid.entry(peer.uid).or_default() += 1;
    }
    Ok(PeerSlot {
        counts: Arc::clone(counts),
        pid,
        uid: (!privileged).then_some(peer.uid),
    })
}

/// Connections that have not sent their request yet, oldest first. When
/// every slot is taken, a new client evicts the oldest of these: idle
/// connections (however many, from whoever) can then never keep an
/// operator out, while a connection that sent its request is never cut.
#[derive(Default)]
struct IdleSet {
    next: u64,
    waiting: std::collections::VecDeque<(u64, oneshot::Sender<()>)>,
}

impl IdleSet {
    fn add(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.waiting.push_back((self.next, tx));
        (self.next, rx)
    }

    fn remove(&mut self, id: u64) {
        self.waiting.retain(|(i, _)| *i != id);
    }

    /// Tell the oldest idle connection to go; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((_, tx)) = self.waiting.pop_front() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

/// Answer "busy" and close, without waiting on the client.
fn refuse_busy(stream: UnixStream, why: String) {
    tokio::spawn(async move {
        let mut s = stream;
        let _ = write_response(&mut s, &Response::err(why)).await;
    });
}

/// Accept loop; runs until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    tx: mpsc::Sender<ControlRequest>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(Semaphore::new(MAX_STREAMS));
    let reserved = Arc::new(Semaphore::new(RESERVED_PRIVILEGED));
    let counts = Arc::new(std::sync::Mutex::new(PeerCounts::default()));
    let idle = Arc::new(std::sync::Mutex::new(IdleSet::default()));
    let me = nix::unistd::geteuid().as_raw();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                refuse_busy(stream, format!("cannot read peer credentials: {e}"));
                continue;
            }
        };
        let privileged = peer.uid == 0 || peer.uid == me;
        let slot = match admit(&counts, &peer, privileged) {
            Ok(s) => s,
            Err(why) => {
                refuse_busy(stream, why);
                continue;
            }
        };
        let mut permit = limit.clone().try_acquire_owned().ok();
        if permit.is_none() && privileged {
            permit = reserved.clone().try_acquire_owned().ok();
        }
        if permit.is_none() {
            let evicted = idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .evict_oldest();
            if evicted {
                // The evicted task gives its slot back at once; wait for
                // it (briefly: the loop must go on accepting).
                let wait = Duration::from_millis(200);
                permit = tokio::time::timeout(wait, limit.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
        }
        let Some(permit) = permit else {
            refuse_busy(
                stream,
                "supd is busy: too many control connections, all with requests in progress; retry"
                    .into(),
            );
            continue;
        };
        let tx = tx.clone();
        let (idle_id, evict) = idle.lock().unwrap_or_else(|p| p.into_inner()).add();
        let idle = Arc::clone(&idle);
        let streams = streams.clone();
        tokio::spawn(async move {
            handle(stream, peer, tx, streams, evict, || {
                idle.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(idle_id)
            })
            .await;
            drop(permit);
            drop(slot);
        });
    }
}

async fn write_response(s: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    if let Some(report) = &r.status {
        return write_status(s, r, report).await;
    }
    let mut line = serde_json::to_vec(r).unwrap_or_else(|_| b"{\"v\":1,\"ok\":false}".to_vec());
    line.push(b'\n');
    match tokio::time::timeout(WRITE_DEADLINE, s.write_all(&line)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Bytes gathered before each write of a streamed answer.
const STATUS_CHUNK: usize = 64 * 1024;

/// A `status` answer, the same line `write_response` would write for
/// `data = report`, serialised one unit at a time into a bounded buffer
/// that is written out whenever it fills: supd never holds the whole
/// answer as one string (nor as a JSON value tree).
async fn write_status(
    s: &mut UnixStream,
    r: &Response,
    report: &crate::protocol::StatusReport,
) -> std::io::Result<()> {
    // Everything but the units, serialised as usual; its text starts with
    // the empty list, which the units replace.
    let rest = crate::protocol::StatusReport {
        units: Vec::new(),
        lock_state_problem: report.lock_state_problem.clone(),
        lock_write_problem: report.lock_write_problem.clone(),
        unit_file_problems: report.unit_file_problems.clone(),
        mount_table_problem: report.mount_table_problem.clone(),
        shed_level: report.shed_level,
        pressure_shed: report.pressure_shed.clone(),
        shutting_down: report.shutting_down,
        containment: report.containment.clone(),
    };
    let rest = serde_json::to_vec(&rest).map_err(std::io::Error::other)?;
    let Some(tail) = rest.strip_prefix(br#"{"units":[]"#.as_slice()) else {
        return Err(std::io::Error::other("status: unexpected serialisation"));
    };
    let mut buf = Vec::with_capacity(STATUS_CHUNK + 4096);
    buf.extend_from_slice(format!("{{\"v\":{},\"ok\":{},\"message\":", r.v, r.ok).as_bytes());
    serde_json::to_writer(&mut buf, &r.message).map_err(std::io::Error::other)?;
    buf.extend_from_slice(br#","data":{"units":["#);
    for (i, unit) in report.units.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut buf, unit).map_err(std::io::Error::other)?;
        if buf.len() >= STATUS_CHUNK {
            write_chunk(s, &buf).await?;
            buf.clear();
        }
    }
    buf.push(b']');
    buf.extend_from_slice(tail);
    buf.extend_from_slice(b"}\n");
    write_chunk(s, &buf).await
}

async fn write_chunk(s: &mut UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_DEADLINE, s.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Read one request line with a size cap; `Err` is what to tell the client.
async fn read_request(s: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let reader = BufReader::new(&mut *s);
    let mut limited = reader.take(MAX_REQUEST_BYTES as u64 + 1);
    let read = tokio::time::timeout(READ_DEADLINE, limited.read_until(b'\n', &mut buf)).await;
    match read {
        Err(_) => Err(format!(
            "no complete request within {}s; send one JSON line",
            READ_DEADLINE.as_secs()
        )),
        Ok(Err(e)) => Err(format!("read error: {e}")),
        Ok(Ok(_)) if buf.len() > MAX_REQUEST_BYTES => Err(format!(
            "request larger than {MAX_REQUEST_BYTES} bytes; refused"
        )),
        Ok(Ok(_)) => Ok(buf),
    }
}

async fn handle(
    mut stream: UnixStream,
    peer: Peer,
    tx: mpsc::Sender<ControlRequest>,
    streams: Arc<Semaphore>,
    evict: oneshot::Receiver<()>,
    not_idle: impl FnOnce(),
) {
    let read = tokio::select! {
        r = read_request(&mut stream) => r,
        _ = evict => Err("closed: idle without a request while supd was busy; send the request right after connecting".to_string()),
    };
    not_idle();
    let bytes = match read {
        Ok(b) => b,
        Err(msg) => {
            let _ = write_response(&mut stream, &Response::err(msg)).await;
            return;
        }
    };
    let req = match crate::protocol::decode_request(&bytes) {
        Ok(r) => r,
        Err(msg) => {
            let _ = write_response(&mut stream, &Response::err(msg)).await;
            return;
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    if req.mutates() && peer.uid != 0 && peer.uid != me {
        tracing::warn!(
            "refused control request from uid {} (pid {:?}): {:?} needs root",
            peer.uid,
            peer.pid,
            req
        );
        let _ = write_response(
            &mut stream,
            &Response::err(format!(
                "permission denied: uid {} may only read; changes need root (or uid {me}, supd's own user)",
                peer.uid
            )),
        )
        .await;
        return;
    }
    let (rtx, rrx) = oneshot::channel();
    let mut stream_permit = None;
    let (stx, srx) = if req.streams() {
        match streams.try_acquire_owned() {
            Ok(p) => stream_permit = Some(p),
            Err(_) => {
                let _ = write_response(
                    &mut stream,
                    &Response::err(format!(
                        "supd is busy: {MAX_STREAMS} streams (logs -f, events) are open; retry later"
                    )),
                )
                .await;
                return;
            }
        }
        let (t, r) = mpsc::channel(STREAM_DEPTH);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    if tx
        .send(ControlRequest {
            peer,
            req,
            reply: rtx,
            stream: stx,
        })
        .await
        .is_err()
    {
        let _ = write_response(&mut stream, &Response::err("supd is shutting down")).await;
        return;
    }
    let resp = rrx
        .await
        .unwrap_or_else(|_| Response::err("supd dropped the request (shutting down?)"));
    if write_response(&mut stream, &resp).await.is_err() || !resp.ok {
        return;
    }
    if let Some(rx) = srx {
        forward(stream, rx).await;
    }
    drop(stream_permit);
}

/// Write a stream's items until it ends or the client goes away (EOF or
/// error on its side, or no progress within the write deadline).
async fn forward(mut s: UnixStream, mut rx: mpsc::Receiver<String>) {
    let (mut rd, mut wr) = s.split();
    let mut probe = [0u8; 64];
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            r = rd.read(&mut probe) => match r {
                // The client has nothing more to say; a closed side or an
                // error means it is gone.
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let Some(first) = first else {
            let _ = wr.shutdown().await;
            return;
        };
        buf.clear();
        buf.extend_from_slice(first.as_bytes());
        buf.push(b'\n');
        // Gather what is already queued into one write.
        while buf.len() < STREAM_WRITE {
            match rx.try_recv() {
                Ok(l) => {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                }
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_DEADLINE, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no supd listening at {0} (is supd running? set --socket or SUPD_SOCKET)")]
    NotRunning(String),
    #[error("permission denied on {0}: control needs root (or supd's user)")]
    Permission(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(
        "no answer from supd at {0} within {1:?} (what it was asked to do goes on there: see `supctl status`; a longer --timeout waits for it)"
    )]
    Timeout(String, Duration),
    #[error("supd sent an invalid answer: {0}")]
    BadResponse(String),
    #[error(
        "supd at {0} closed the connection without answering: it is busy (too many control connections) or stopping; retry in a moment"
    )]
    Busy(String),
}

/// A stream's item lines, after its response (see `open_stream`).
pub struct StreamReader {
    r: BufReader<UnixStream>,
    path: String,
}

impl StreamReader {
    /// The next item line (without its newline); None when supd ended the
    /// stream.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let mut line = Vec::new();
        let n = (&mut self.r)
            .take(MAX_RESPONSE_BYTES as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| ClientError::Io(self.path.clone(), e))?;
        if n == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        Ok(Some(text.trim_end_matches('\n').to_string()))
    }
}

/// Client side of a streaming request: the response (within `timeout`)
/// and, when it is ok, a reader of the items that follow (no time limit).
pub async fn open_stream(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<(Response, StreamReader), ClientError> {
    let p = path.display().to_string();
    let connect = async {
        let mut s = connect(path, &p).await?;
        send_request(&mut s, req, &p).await?;
        let mut r = BufReader::new(s);
        let mut buf = Vec::new();
        (&mut r)
            .take(MAX_RESPONSE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| ClientError::Io(p.clone(), e))?;
        let resp = parse_response(&buf)?;
        Ok::<_, ClientError>((resp, StreamReader { r, path: p.clone() }))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout(p, timeout)),
    }
}

/// Client side of a streaming request: the response (within `timeout`),
/// then every item line, each handed to `on_item` (return false to stop),
/// until supd ends the stream. No time limit after the response.
pub async fn request_stream(
    path: &Path,
    req: &Request,
    timeout: Duration,
    mut on_item: impl FnMut(&str) -> bool,
) -> Result<Response, ClientError> {
    let (resp, mut reader) = open_stream(path, req, timeout).await?;
    if !resp.ok {
        return Ok(resp);
    }
    while let Some(line) = reader.next_line().await? {
        if !on_item(&line) {
            break;
        }
    }
    Ok(resp)
}

async fn connect(path: &Path, p: &str) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(p.to_string())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Permission(p.to_string()),
        _ => ClientError::Io(p.to_string(), e),
    })
}

async fn send_request(s: &mut UnixStream, req: &Request, p: &str) -> Result<(), ClientError> {
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        req: req.clone(),
    })
    .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line)
        .await
        .map_err(|e| ClientError::Io(p.to_string(), e))
}

fn parse_response(buf: &[u8]) -> Result<Response, ClientError> {
    serde_json::from_slice::<Response>(buf).map_err(|e| {
        ClientError::BadResponse(format!(
            "{e}: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        ))
    })
}

/// Client side: one request, one response, bounded in time and size.
pub async fn request(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let p = path.display().to_string();
    let fut = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(p.clone())
                }
                std::io::ErrorKind::PermissionDenied => ClientError::Permission(p.clone()),
                _ => ClientError::Io(p.clone(), e),
            })?;
        let line = crate::protocol::encode_request(req);
        // A busy supd answers and closes without reading the request: the
        // write may then fail (EPIPE), but its answer is still there to read.
        let written = s.write_all(&line).await;
        let mut buf = Vec::new();
        let mut r = BufReader::new(s).take(MAX_RESPONSE_BYTES as u64);
        let read = r.read_until(b'\n', &mut buf).await;
        let closed = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        };
        if buf.is_empty() {
            return Err(match (written, read) {
                (Err(e), _) | (Ok(()), Err(e)) if !closed(&e) => ClientError::Io(p.clone(), e),
                _ => ClientError::Busy(p.clone()),
            });
        }
        serde_json::from_slice::<Response>(&buf).map_err(|e| {
            ClientError::BadResponse(format!(
                "{e}: {}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ))
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout(p, timeout)),
    }
}

//! The control socket: supd's side and the client used by supctl.
//!
//! Owns: binding the Unix socket (0600 from the first instant), accepting
//! connections with limits (connection count, request size, read and write
//! deadlines), checking the peer's credentials (SO_PEERCRED) for requests
//! that change anything, and handing valid requests to the driver with a
//! reply channel. One request per connection. Streaming requests (`logs`,
//! `events`) get a bounded channel too: after the response line, each item
//! put into it is written as one more line until the producer drops it or
//! the client goes away. Must never: block the driver loop, buffer more
//! than `MAX_REQUEST_BYTES` from a client (or `STREAM_DEPTH` items for one),
//! die on a bad client or a failed accept, or panic.

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
const READ_DEADLINE: Duration = Duration::from_secs(5);
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
/// (falling back to `/tmp/supd-$UID/…`). `SUPD_SOCKET` is applied by the
/// callers, before this default.
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

/// Bind the control socket. The socket is created under a 0077 umask so
/// it is never world-writable, not even between bind and chmod.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let ctx = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| ctx("creating the directory of", e))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    if path.exists() {
        // Someone listening? Then refuse; else it is stale: remove it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another supd is listening on {} (stop it, or give this one another --socket)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path).map_err(|e| ctx("removing stale socket", e))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let l = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.map_err(|e| ctx("binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ctx("chmod", e))?;
    l.set_nonblocking(true).map_err(|e| ctx("configuring", e))?;
    UnixListener::from_std(l).map_err(|e| ctx("registering", e))
}

/// Accept loop; runs until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    tx: mpsc::Sender<ControlRequest>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(Semaphore::new(MAX_STREAMS));
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
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tokio::spawn(async move {
                    let mut s = stream;
                    let _ = write_response(
                        &mut s,
                        &Response::err("supd is busy: too many control connections; retry"),
                    )
                    .await;
                });
                continue;
            }
        };
        let tx = tx.clone();
        let streams = streams.clone();
        tokio::spawn(async move {
            handle(stream, tx, streams).await;
            drop(permit);
        });
    }
}

async fn write_response(s: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).unwrap_or_else(|_| b"{\"v\":1,\"ok\":false}".to_vec());
    line.push(b'\n');
    match tokio::time::timeout(WRITE_DEADLINE, s.write_all(&line)).await {
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

async fn handle(mut stream: UnixStream, tx: mpsc::Sender<ControlRequest>, streams: Arc<Semaphore>) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        Err(e) => {
            let _ = write_response(
                &mut stream,
                &Response::err(format!("cannot read peer credentials: {e}")),
            )
            .await;
            return;
        }
    };
    let bytes = match read_request(&mut stream).await {
        Ok(b) => b,
        Err(msg) => {
            let _ = write_response(&mut stream, &Response::err(msg)).await;
            return;
        }
    };
    let env: Envelope = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            // Say what shape was expected: a wrong version gets its own
            // message so an old supctl knows to upgrade.
            let msg = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) if v.get("v").and_then(|x| x.as_u64()) != Some(VERSION as u64) => format!(
                    "unsupported protocol version {} (this supd speaks v{VERSION}); use a matching supctl",
                    v.get("v")
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "missing".into())
                ),
                _ => format!(
                    "invalid request ({e}); expected one JSON line like {{\"v\":{VERSION},\"cmd\":\"status\"}}"
                ),
            };
            let _ = write_response(&mut stream, &Response::err(msg)).await;
            return;
        }
    };
    if env.v != VERSION {
        let _ = write_response(
            &mut stream,
            &Response::err(format!(
                "unsupported protocol version {} (this supd speaks v{VERSION})",
                env.v
            )),
        )
        .await;
        return;
    }
    let me = nix::unistd::geteuid().as_raw();
    if env.req.mutates() && peer.uid != 0 && peer.uid != me {
        tracing::warn!(
            "refused control request from uid {} (pid {:?}): {:?} needs root",
            peer.uid,
            peer.pid,
            env.req
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
    let (stx, srx) = if env.req.streams() {
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
            req: env.req,
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
        let mut line = serde_json::to_vec(&Envelope {
            v: VERSION,
            req: req.clone(),
        })
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        line.push(b'\n');
        s.write_all(&line)
            .await
            .map_err(|e| ClientError::Io(p.clone(), e))?;
        let mut buf = Vec::new();
        let mut r = BufReader::new(s).take(MAX_RESPONSE_BYTES as u64);
        r.read_until(b'\n', &mut buf)
            .await
            .map_err(|e| ClientError::Io(p.clone(), e))?;
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

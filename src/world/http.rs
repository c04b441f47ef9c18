//! The monitoring endpoint: `/metrics` (Prometheus text exposition),
//! `/healthz` and `/readyz`, on `--metrics ADDR` (off by default).
//!
//! Owns: the TCP listener, reading one small HTTP/1.1 request per
//! connection (parsed by `httparse`, the parser hyper uses), asking the
//! driver for a snapshot (`Scrape`) and rendering it. It reads snapshots;
//! it decides nothing.
//!
//! Why not hyper or prometheus-client: three GET routes with
//! `Connection: close` need no HTTP machinery beyond a request-line parser,
//! and the exposition format is a few lines of text (checked by a real
//! Prometheus parser in tests/observe.rs); both crates would grow the
//! PID-1 binary for nothing supd uses.
//!
//! Must never: block the event loop (every client is a task with read and
//! write deadlines; the snapshot is built by the loop between events);
//! buffer more than `MAX_REQUEST` bytes of a client; serve more than
//! `MAX_CONNECTIONS` at once; die on a bad client or a failed accept.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::engine::{EngineMetrics, STATE_WORDS};

const MAX_CONNECTIONS: usize = 16;
const MAX_REQUEST: usize = 8 * 1024;
const READ_DEADLINE: Duration = Duration::from_secs(5);
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a scrape waits for the loop's snapshot.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(5);

/// What a scrape is built from, taken by the driver between events.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// None when the engine failed (supd keeps reaping, starts nothing).
    pub engine: Option<EngineMetrics>,
    pub orphans_reaped: u64,
    /// Control requests by command.
    pub control_requests: Vec<(String, u64)>,
    pub log_lines_written: u64,
    pub log_lines_dropped: u64,
    pub log_write_errors: u64,
}

/// A scrape asking the loop for a snapshot.
pub struct ScrapeRequest {
    pub reply: oneshot::Sender<Scrape>,
}

/// Bind `addr` (a failure names the address and what to do).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "metrics listener on {addr}: {e} (choose another --metrics address, or free it)"
            ),
        )
    })?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// Accept loop; runs for supd's lifetime.
pub async fn serve(listener: TcpListener, tx: mpsc::Sender<ScrapeRequest>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Too many at once: close; a scraper retries.
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            handle(stream, tx).await;
            drop(permit);
        });
    }
}

/// Read the request head (up to the blank line), bounded in size and time.
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if buf.len() > MAX_REQUEST {
                return None;
            }
        }
    };
    tokio::time::timeout(READ_DEADLINE, read).await.ok()??;
    Some(buf)
}

async fn handle(mut s: TcpStream, tx: mpsc::Sender<ScrapeRequest>) {
    let Some(head) = read_head(&mut s).await else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let (method, path) = match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => (
            req.method.unwrap_or("").to_string(),
            req.path.unwrap_or("").to_string(),
        ),
        _ => {
            respond(&mut s, 400, "text/plain", "bad request\n", false).await;
            return;
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        respond(&mut s, 405, "text/plain", "only GET\n", head_only).await;
        return;
    }
    let route = path.split('?').next().unwrap_or("");
    if !matches!(route, "/metrics" | "/healthz" | "/readyz") {
        respond(
            &mut s,
            404,
            "text/plain",
            "not found: /metrics, /healthz, /readyz\n",
            head_only,
        )
        .await;
        return;
    }
    let (rtx, rrx) = oneshot::channel();
    let scrape = match tx.try_send(ScrapeRequest { reply: rtx }) {
        Ok(()) => tokio::time::timeout(SNAPSHOT_DEADLINE, rrx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    let Some(scrape) = scrape else {
        respond(
            &mut s,
            503,
            "text/plain",
            "supd is busy or shutting down; retry\n",
            head_only,
        )
        .await;
        return;
    };
    match route {
        "/metrics" => {
            let body = render(&scrape);
            respond(
                &mut s,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await;
        }
        "/healthz" => match &scrape.engine {
            Some(_) => respond(&mut s, 200, "text/plain", "ok\n", head_only).await,
            None => {
                respond(
                    &mut s,
                    503,
                    "text/plain",
                    "supd's engine failed: services run unsupervised\n",
                    head_only,
                )
                .await
            }
        },
        _ => {
            let (code, body) = readiness(&scrape);
            respond(&mut s, code, "text/plain", &body, head_only).await;
        }
    }
}

/// /readyz: 200 when every non-optional unit that should be up is ready
/// and the lock state is known.
pub fn readiness(s: &Scrape) -> (u16, String) {
    match &s.engine {
        None => (503, "not ready: supd's engine failed\n".to_string()),
        Some(e) if e.not_ready.is_empty() => (200, "ready\n".to_string()),
        Some(e) => {
            let mut b = String::from("not ready:\n");
            for w in &e.not_ready {
                let _ = writeln!(b, "- {w}");
            }
            (503, b)
        }
    }
}

async fn respond(s: &mut TcpStream, code: u16, ctype: &str, body: &str, head_only: bool) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = tokio::time::timeout(WRITE_DEADLINE, async {
        let _ = s.write_all(&out).await;
        let _ = s.shutdown().await;
    })
    .await;
}

/// A label value, escaped as the text format requires.
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_shed(o: &mut String, s: &crate::engine::ShedMetrics) {
    family(
        o,
        "supd_shed_step",
        "gauge",
        "Automatic shedding under pressure ([shed]): 0 nothing, 1 optional units, 2 also sheddable normal units.",
    );
    let _ = writeln!(o, "supd_shed_step {}", s.auto_step);
    family(
        o,
        "supd_shed_manual",
        "gauge",
        "1 while an operator's `supctl shed` is in effect (it wins over automatic shedding).",
    );
    let _ = writeln!(o, "supd_shed_manual {}", u8::from(s.manual));
    family(
        o,
        "supd_units_shed",
        "gauge",
        "Units kept down by shedding now.",
    );
    let _ = writeln!(o, "supd_units_shed {}", s.units_shed);
    family(
        o,
        "supd_shed_changes_total",
        "counter",
        "Shed and unshed changes, by operator or by pressure.",
    );
    let c = &s.counters;
    for (by, dir, n) in [
        ("pressure", "shed", c.auto_sheds),
        ("pressure", "unshed", c.auto_restores),
        ("operator", "shed", c.manual_sheds),
        ("operator", "unshed", c.manual_unsheds),
    ] {
        let _ = writeln!(
            o,
            "supd_shed_changes_total{{by=\"{by}\",direction=\"{dir}\"}} {n}"
        );
    }
    family(
        o,
        "supd_pressure_events_total",
        "counter",
        "PSI trigger firings: the stall share went above [shed] above (threshold=\"above\") or below (threshold=\"below\").",
    );
    for r in crate::engine::shed::Resource::ALL {
        for (i, t) in ["above", "below"].iter().enumerate() {
            let _ = writeln!(
                o,
                "supd_pressure_events_total{{resource=\"{}\",threshold=\"{t}\"}} {}",
                r.name(),
                c.pressure[r as usize][i]
            );
        }
    }
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot.
pub fn render(s: &Scrape) -> String {
    let mut o = String::with_capacity(4096);
    family(
        &mut o,
        "supd_engine_ok",
        "gauge",
        "1 while supd's engine works; 0 after it failed (nothing starts any more).",
    );
    let _ = writeln!(o, "supd_engine_ok {}", u8::from(s.engine.is_some()));
    if let Some(e) = &s.engine {
        family(
            &mut o,
            "supd_unit_state",
            "gauge",
            "1 for the unit's current state, 0 for the others.",
        );
        for u in &e.units {
            let n = label(&u.name);
            for st in STATE_WORDS {
                let _ = writeln!(
                    o,
                    "supd_unit_state{{unit=\"{n}\",state=\"{st}\"}} {}",
                    u8::from(u.state == *st)
                );
            }
        }
        family(
            &mut o,
            "supd_unit_ready",
            "gauge",
            "1 when the unit is ready for its dependents.",
        );
        for u in &e.units {
            let _ = writeln!(
                o,
                "supd_unit_ready{{unit=\"{}\"}} {}",
                label(&u.name),
                u8::from(u.ready)
            );
        }
        family(
            &mut o,
            "supd_unit_restarts_total",
            "counter",
            "Automatic restarts since supd started.",
        );
        for u in &e.units {
            let _ = writeln!(
                o,
                "supd_unit_restarts_total{{unit=\"{}\"}} {}",
                label(&u.name),
                u.restarts
            );
        }
        family(
            &mut o,
            "supd_unit_start_timestamp_seconds",
            "gauge",
            "When the unit's current (or last) process was started, Unix time.",
        );
        for u in &e.units {
            if let Some(ms) = u.start_unix_ms {
                let _ = writeln!(
                    o,
                    "supd_unit_start_timestamp_seconds{{unit=\"{}\"}} {}.{:03}",
                    label(&u.name),
                    ms / 1000,
                    ms % 1000
                );
            }
        }
        family(
            &mut o,
            "supd_unit_last_exit_code",
            "gauge",
            "Exit code of the unit's last process (128 + signal number when killed by a signal).",
        );
        for u in &e.units {
            if let Some(c) = u.last_exit_code {
                let _ = writeln!(
                    o,
                    "supd_unit_last_exit_code{{unit=\"{}\"}} {c}",
                    label(&u.name)
                );
            }
        }
        family(
            &mut o,
            "supd_unit_health_failures_total",
            "counter",
            "Failed liveness probes since supd started.",
        );
        for u in &e.units {
            let _ = writeln!(
                o,
                "supd_unit_health_failures_total{{unit=\"{}\"}} {}",
                label(&u.name),
                u.health_failures
            );
        }
        family(
            &mut o,
            "supd_unit_startup_seconds",
            "gauge",
            "Boot: seconds from the unit becoming startable to ready (its waits on mounts, locks, dependencies and the start cap included; as `supctl analyze blame`). Absent until ready.",
        );
        for u in &e.units {
            if let Some(ms) = u.startup_ms {
                let _ = writeln!(
                    o,
                    "supd_unit_startup_seconds{{unit=\"{}\"}} {}.{:03}",
                    label(&u.name),
                    ms / 1000,
                    ms % 1000
                );
            }
        }
        let now_ms = crate::world::logstore::wall_us() / 1000;
        family(
            &mut o,
            "supd_maintenance_locked",
            "gauge",
            "1 per holder of a maintenance lock on the unit.",
        );
        for u in &e.units {
            for (h, _) in &u.locks {
                let _ = writeln!(
                    o,
                    "supd_maintenance_locked{{unit=\"{}\",holder=\"{}\"}} 1",
                    label(&u.name),
                    label(h)
                );
            }
        }
        family(
            &mut o,
            "supd_maintenance_lock_age_seconds",
            "gauge",
            "How long the holder's maintenance lock has been held.",
        );
        for u in &e.units {
            for (h, since) in &u.locks {
                let _ = writeln!(
                    o,
                    "supd_maintenance_lock_age_seconds{{unit=\"{}\",holder=\"{}\"}} {}",
                    label(&u.name),
                    label(h),
                    now_ms.saturating_sub(*since) / 1000
                );
            }
        }
        family(
            &mut o,
            "supd_mounts_waiting",
            "gauge",
            "Units waiting for a required mount.",
        );
        let _ = writeln!(o, "supd_mounts_waiting {}", e.mounts_waiting);
        render_shed(&mut o, &e.shed);
        family(
            &mut o,
            "supd_lock_state_ok",
            "gauge",
            "1 when the lock state is known; 0 while supd is fail-closed.",
        );
        let _ = writeln!(o, "supd_lock_state_ok {}", u8::from(e.lock_state_ok));
        family(
            &mut o,
            "supd_ready",
            "gauge",
            "1 when /readyz answers ready.",
        );
        let _ = writeln!(o, "supd_ready {}", u8::from(e.not_ready.is_empty()));
    }
    family(
        &mut o,
        "supd_orphans_reaped_total",
        "counter",
        "Processes supd reaped that were not its own (orphans reparented to it).",
    );
    let _ = writeln!(o, "supd_orphans_reaped_total {}", s.orphans_reaped);
    family(
        &mut o,
        "supd_control_requests_total",
        "counter",
        "Requests on the control socket, by command.",
    );
    for (cmd, n) in &s.control_requests {
        let _ = writeln!(
            o,
            "supd_control_requests_total{{cmd=\"{}\"}} {n}",
            label(cmd)
        );
    }
    family(
        &mut o,
        "supd_log_lines_written_total",
        "counter",
        "Unit log lines written (or held until the state directory is mounted).",
    );
    let _ = writeln!(o, "supd_log_lines_written_total {}", s.log_lines_written);
    family(
        &mut o,
        "supd_log_lines_dropped_total",
        "counter",
        "Unit log lines dropped because the log writer fell behind.",
    );
    let _ = writeln!(o, "supd_log_lines_dropped_total {}", s.log_lines_dropped);
    family(
        &mut o,
        "supd_log_write_errors_total",
        "counter",
        "Failed writes to unit logs (disk full, read-only...).",
    );
    let _ = writeln!(o, "supd_log_write_errors_total {}", s.log_write_errors);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::UnitMetrics;

    #[test]
    fn renders_every_family_and_escapes_labels() {
        let s = Scrape {
            engine: Some(EngineMetrics {
                units: vec![UnitMetrics {
                    name: "web".into(),
                    state: "running",
                    ready: true,
                    restarts: 2,
                    start_unix_ms: Some(1_700_000_000_123),
                    last_exit_code: Some(137),
                    health_failures: 4,
                    locks: vec![("al\"ice\\".into(), 0)],
                    startup_ms: Some(4_205),
                }],
                mounts_waiting: 1,
                lock_state_ok: true,
                not_ready: vec![],
                shed: Default::default(),
            }),
            orphans_reaped: 3,
            control_requests: vec![("status".into(), 5)],
            ..Scrape::default()
        };
        let t = render(&s);
        for needle in [
            "supd_unit_state{unit=\"web\",state=\"running\"} 1",
            "supd_unit_state{unit=\"web\",state=\"failed\"} 0",
            "supd_unit_ready{unit=\"web\"} 1",
            "supd_unit_restarts_total{unit=\"web\"} 2",
            "supd_unit_start_timestamp_seconds{unit=\"web\"} 1700000000.123",
            "supd_unit_last_exit_code{unit=\"web\"} 137",
            "supd_unit_health_failures_total{unit=\"web\"} 4",
            "supd_unit_startup_seconds{unit=\"web\"} 4.205",
            "supd_maintenance_locked{unit=\"web\",holder=\"al\\\"ice\\\\\"} 1",
            "supd_mounts_waiting 1",
            "supd_shed_step 0",
            "supd_shed_changes_total{by=\"pressure\",direction=\"shed\"} 0",
            "supd_pressure_events_total{resource=\"cpu\",threshold=\"above\"} 0",
            "supd_lock_state_ok 1",
            "supd_orphans_reaped_total 3",
            "supd_control_requests_total{cmd=\"status\"} 5",
        ] {
            assert!(t.contains(needle), "missing {needle} in\n{t}");
        }
        assert_eq!(readiness(&s).0, 200);
        let broken = Scrape::default();
        assert!(render(&broken).contains("supd_engine_ok 0"));
        assert_eq!(readiness(&broken).0, 503);
    }
}

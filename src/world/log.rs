//! supd's log sink: every `tracing` event as one line on stderr.
//!
//! Owns: formatting an event as `TIME LEVEL target: message key=value...`
//! (the same shape `tracing-subscriber`'s fmt layer prints, which scripts
//! and the VM test read) — or, with `log_format = "json"`, as one JSON
//! object (`time`, `level`, `target`, `unit`, `message`, `fields`) for log
//! collectors — and writing it with one `write` call, so lines from supd
//! never interleave mid-line on a shared console.
//!
//! Why not tracing-subscriber: its fmt layer cost 49 KB more than this
//! module in the static PID-1 binary (measured on the musl build), for a
//! job that is one visitor and one write here. We use no spans, filters or layers.
//!
//! The write goes through `line_writer`: it never blocks, however stalled
//! the reader of stderr is (a container log consumer, a console); lines
//! that do not fit its bounded backlog are dropped, counted and reported
//! once stderr is writable again.
//!
//! Must never: block on stderr, panic on a closed or broken stderr (the
//! console of a VM can vanish), or allocate per event more than the line it
//! prints.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use super::line_writer::LineWriter;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Install the sink for events at `max` and more severe. Returns false if a
/// global subscriber was already set.
pub fn init(max: Level) -> bool {
    init_as(max, false)
}

/// As `init`; `json`: one JSON object per line instead of text.
pub fn init_as(max: Level, json: bool) -> bool {
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    let out = STDERR.get_or_init(|| LineWriter::new(2, BACKLOG, dropped_report));
    tracing::subscriber::set_global_default(StderrLog {
        max,
        json,
        out: Arc::clone(out),
    })
    .is_ok()
}

/// Bytes of log lines held while stderr does not accept more.
const BACKLOG: usize = 256 * 1024;

static STDERR: OnceLock<Arc<LineWriter>> = OnceLock::new();

/// Gather supd's log lines until the guard drops, and write them
/// together (see `line_writer`): the driver holds one around each batch
/// of engine actions.
pub fn hold() -> Option<super::line_writer::Held> {
    STDERR.get().map(|w| w.hold())
}

/// Wait up to `timeout` for log lines still held to reach stderr (before
/// reboot(2) or exit).
pub fn flush(timeout: std::time::Duration) {
    if let Some(w) = STDERR.get() {
        w.flush(timeout);
    }
}

/// `log_format = "json"` was chosen (for the dropped-lines report, which
/// is written outside any event).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn dropped_report(n: u64) -> Vec<u8> {
    let (secs, micros) = wall_now();
    let message = format!("{n} log lines dropped: stderr was not writable (its reader stalled)");
    let mut line = String::with_capacity(160);
    push_rfc3339(&mut line, secs, micros);
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        let mut o = serde_json::Map::new();
        o.insert("time".into(), line.into());
        o.insert("level".into(), "warn".into());
        o.insert("target".into(), module_path!().into());
        o.insert("message".into(), message.into());
        let mut l = serde_json::Value::Object(o).to_string();
        l.push('\n');
        return l.into_bytes();
    }
    let _ = writeln!(line, "  WARN {}: {message}", module_path!());
    line.into_bytes()
}

struct StderrLog {
    max: Level,
    json: bool,
    out: Arc<LineWriter>,
}

impl Subscriber for StderrLog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // tracing orders levels by verbosity: TRACE is the greatest.
        *m.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = if self.json {
            format_json(wall_now(), event)
        } else {
            format_line(wall_now(), event)
        };
        self.out.write_line(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn wall_now() -> (u64, u32) {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_micros()),
        Err(_) => (0, 0),
    }
}

fn format_line(now: (u64, u32), event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut v = Fields {
        message: String::new(),
        rest: String::new(),
    };
    event.record(&mut v);
    let mut line = String::with_capacity(48 + v.message.len() + v.rest.len());
    push_rfc3339(&mut line, now.0, now.1);
    let level = match *meta.level() {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    };
    let _ = write!(line, " {level} {}: {}", meta.target(), v.message);
    line.push_str(&v.rest);
    line.push('\n');
    line
}

/// `{"time":...,"level":"warn","target":...,"unit":"web","message":...,
/// "fields":{...}}` and a newline.
fn format_json(now: (u64, u32), event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut v = JsonFields::default();
    event.record(&mut v);
    let mut time = String::with_capacity(27);
    push_rfc3339(&mut time, now.0, now.1);
    let mut obj = serde_json::Map::new();
    obj.insert("time".into(), time.into());
    obj.insert(
        "level".into(),
        meta.level().as_str().to_ascii_lowercase().into(),
    );
    obj.insert("target".into(), meta.target().into());
    if let Some(u) = v.unit {
        obj.insert("unit".into(), u.into());
    }
    obj.insert("message".into(), v.message.into());
    if !v.fields.is_empty() {
        obj.insert("fields".into(), serde_json::Value::Object(v.fields));
    }
    let mut line = serde_json::Value::Object(obj).to_string();
    line.push('\n');
    line
}

#[derive(Default)]
struct JsonFields {
    message: String,
    unit: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match field.name() {
            "message" => {
                self.message = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            "unit" => {
                self.unit = Some(match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            name => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` fields arrive as a Debug that prints Display (unquoted),
        // `?x` as Debug proper — the same convention as tracing-subscriber.
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for seconds since the epoch (UTC).
pub(crate) fn push_rfc3339(out: &mut String, secs: u64, micros: u32) {
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let mut s = String::new();
        push_rfc3339(&mut s, 0, 0);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        // 2026-12-01T08:03:55.047951Z
        push_rfc3339(&mut s, 1_796_112_235, 47_951);
        assert_eq!(s, "2026-12-01T08:03:55.047951Z");
        s.clear();
        // A leap day.
        push_rfc3339(&mut s, 951_782_400, 1);
        assert_eq!(s, "2000-02-29T00:00:00.000001Z");
    }

    static JSON_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    #[test]
    fn fields_follow_the_message_display_unquoted_debug_quoted() {
        struct Capture(std::sync::Mutex<Vec<String>>);
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, e: &Event<'_>) {
                if let Ok(mut v) = self.0.lock() {
                    v.push(format_line((0, 0), e));
                }
                if let Ok(mut v) = JSON_LINES.lock() {
                    v.push(format_json((0, 0), e));
                }
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let cap = std::sync::Arc::new(Capture(std::sync::Mutex::new(Vec::new())));
        tracing::subscriber::with_default(cap.clone(), || {
            let unit = "web";
            let why = String::from("a b");
            tracing::warn!(unit = %unit, why = ?why, n = 3, "stopped (system shutdown): {}", 7);
        });
        let lines = cap.0.lock().map(|v| v.clone()).unwrap_or_default();
        let json = JSON_LINES.lock().map(|v| v.clone()).unwrap_or_default();
        let j: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        assert_eq!(j["time"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(j["level"], "warn");
        assert_eq!(j["unit"], "web");
        assert_eq!(j["message"], "stopped (system shutdown): 7");
        assert_eq!(j["fields"]["why"], "\"a b\"");
        assert_eq!(j["fields"]["n"], 3);
        assert!(json[0].ends_with("}\n") && json[0].matches('\n').count() == 1);
        assert_eq!(
            lines,
            vec![format!(
                "1970-01-01T00:00:00.000000Z  WARN {}: stopped (system shutdown): 7 unit=web why=\"a b\" n=3\n",
                module_path!()
            )]
        );
    }
}

//! Reading the boot: blame, the critical chain, the SVG timeline and the
//! dependency graph, computed from what supd recorded.
//!
//! Owns: turning a `TimelineReport` / `GraphReport` (the `analyze` and
//! `graph` answers) into rows, chains, SVG and DOT text. `supctl` calls it;
//! PID 1 never does (supd only records and answers with data).
//!
//! Must never: do I/O, read a clock, or trust the report's shape — it came
//! over a socket: every lookup may miss, every walk is bounded, and every
//! piece of text is escaped for the format it lands in.

pub mod graph;
pub mod plot;

use serde::Serialize;

use crate::protocol::{Phase, RunRecord, Segment, TimelineReport, UnitTimeline, WaitKind};

/// Which cycle of each unit to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// The first cycle since supd started.
    Boot,
    /// The latest cycle (the boot's, if the unit never cycled again).
    Current,
}

impl Cycle {
    pub fn word(self) -> &'static str {
        match self {
            Cycle::Boot => "boot",
            Cycle::Current => "current cycle",
        }
    }
}

pub fn record(u: &UnitTimeline, cycle: Cycle) -> Option<&RunRecord> {
    match cycle {
        Cycle::Boot => u.boot.as_ref(),
        Cycle::Current => u.current.as_ref().or(u.boot.as_ref()),
    }
}

fn is_up(p: Phase) -> bool {
    matches!(p, Phase::Ready | Phase::Done)
}

fn seg_end(s: &Segment, now_ms: u64) -> u64 {
    s.end_ms.unwrap_or(now_ms).max(s.start_ms)
}

/// Where a record first reached ready (or done), if it did.
fn first_up(r: &RunRecord) -> Option<usize> {
    r.segments.iter().position(|s| is_up(s.phase))
}

/// A duration for people: "35 ms", "4.2 s", "2 min 5 s".
pub fn dur(ms: u64) -> String {
    if ms < 100 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// A point on the time axis: "+4.20 s".
pub fn at(ms: u64) -> String {
    format!("+{:.2} s", ms as f64 / 1000.0)
}

/// What a segment was, as a sentence fragment after "waited 4.2 s ...".
fn wait_phrase(s: &Segment) -> String {
    let cause = s.cause.clone().unwrap_or_default();
    match s.wait {
        Some(WaitKind::Mount) => match &s.path {
            Some(p) => format!("for mount {p}"),
            None => format!("for a mount ({cause})"),
        },
        Some(WaitKind::Lock) => format!("for the maintenance lock, {cause}"),
        Some(WaitKind::LockUnknown) => format!("while {cause}"),
        Some(WaitKind::Dependency) => match &s.unit {
            Some(u) => format!("for required unit {u} to be ready"),
            None => format!("for {cause}"),
        },
        Some(WaitKind::Ordering) => match &s.unit {
            Some(u) => format!("for {u} (ordered after it)"),
            None => format!("for {cause}"),
        },
        Some(WaitKind::Cap) => format!("in {cause}"),
        Some(WaitKind::Backoff) => format!("in {cause}"),
        Some(WaitKind::Operator) => "stopped by an operator".to_string(),
        Some(WaitKind::Shed) => "shed by an operator".to_string(),
        Some(WaitKind::Shutdown) => "while supd shut down".to_string(),
        Some(WaitKind::Removed) => "after its unit file was removed".to_string(),
        Some(WaitKind::Other) | None => format!("for {cause}"),
    }
}

/// One segment as a sentence. `next` is the phase that followed, if any.
fn sentence(s: &Segment, next: Option<&Segment>, oneshot: bool, now_ms: u64) -> String {
    let d = dur(seg_end(s, now_ms).saturating_sub(s.start_ms));
    let still = s.end_ms.is_none();
    let cause = s.cause.as_deref().unwrap_or("");
    match s.phase {
        Phase::Waiting => {
            if still {
                format!("waiting {d} so far {}", wait_phrase(s))
            } else {
                format!("waited {d} {}", wait_phrase(s))
            }
        }
        Phase::Starting => match next.map(|n| n.phase) {
            Some(Phase::Ready) => format!("started in {d} (spawned → ready)"),
            Some(Phase::Done) => format!("ran {d} to completion (oneshot)"),
            None if oneshot => format!("running {d} so far (oneshot)"),
            None => format!("starting {d} so far (spawned, not ready yet)"),
            Some(_) => format!("attempt ran {d}, then ended"),
        },
        Phase::Ready => format!("ready (for {d})"),
        Phase::Done => "completed".to_string(),
        Phase::NotReady => format!("not ready for {d} (its readiness probe failed)"),
        Phase::Stopping => format!("stopping took {d} ({cause})"),
        Phase::Failed => format!("failed: {cause}"),
        Phase::Exited => format!("exited: {cause}"),
        Phase::Other => format!("{d} in a phase this supctl does not know"),
    }
}

// ---- blame ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LongestWait {
    pub wait: Option<WaitKind>,
    pub cause: String,
    pub ms: u64,
}

/// One unit in `analyze blame`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlameRow {
    pub unit: String,
    pub state: String,
    /// When it became startable.
    pub startable_ms: u64,
    /// When its last (successful) attempt was spawned.
    pub spawned_ms: Option<u64>,
    pub ready_ms: Option<u64>,
    /// Startable → ready.
    pub total_ms: Option<u64>,
    /// Time spent waiting (mount, lock, dependency, cap, backoff...)
    /// before ready, or until now.
    pub waited_ms: u64,
    /// Spawned → ready.
    pub starting_ms: Option<u64>,
    pub longest_wait: Option<LongestWait>,
    /// Not ready: what it is doing now, in words.
    pub now: Option<String>,
}

/// Units by time from startable to ready, longest first; units not ready
/// follow, longest waiting first.
pub fn blame(r: &TimelineReport, cycle: Cycle) -> Vec<BlameRow> {
    let mut rows: Vec<BlameRow> = r
        .units
        .iter()
        .filter_map(|u| {
            let rec = record(u, cycle)?;
            let up = first_up(rec);
            let upto = up.unwrap_or(rec.segments.len());
            let before = &rec.segments[..upto];
            let mut waited = 0u64;
            let mut longest: Option<LongestWait> = None;
            for s in before.iter().filter(|s| s.phase == Phase::Waiting) {
                let ms = seg_end(s, r.now_ms).saturating_sub(s.start_ms);
                waited = waited.saturating_add(ms);
                if ms > 0 && longest.as_ref().is_none_or(|l| ms > l.ms) {
                    longest = Some(LongestWait {
                        wait: s.wait,
                        cause: wait_phrase(s),
                        ms,
                    });
                }
            }
            let ready_ms = up.map(|i| rec.segments[i].start_ms);
            let spawned_ms = before
                .iter()
                .rev()
                .find(|s| s.phase == Phase::Starting)
                .map(|s| s.start_ms);
            let now = match up {
                Some(_) => None,
                None => rec
                    .segments
                    .last()
                    .map(|s| sentence(s, None, u.kind == "oneshot", r.now_ms)),
            };
            Some(BlameRow {
                unit: u.name.clone(),
                state: u.state.clone(),
                startable_ms: rec.start_ms,
                spawned_ms,
                ready_ms,
                total_ms: ready_ms.map(|t| t.saturating_sub(rec.start_ms)),
                waited_ms: waited,
                starting_ms: match (ready_ms, spawned_ms) {
                    (Some(t), Some(s)) => Some(t.saturating_sub(s)),
                    _ => None,
                },
                longest_wait: longest,
                now,
            })
        })
        .collect();
    rows.sort_by(|a, b| match (a.total_ms, b.total_ms) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.unit.cmp(&b.unit)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b
            .waited_ms
            .cmp(&a.waited_ms)
            .then_with(|| a.unit.cmp(&b.unit)),
    });
    rows
}

pub fn blame_text(rows: &[BlameRow]) -> String {
    let w = rows.iter().map(|r| r.unit.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:>10} {:>10} {:>10}  {:<w$}  LONGEST WAIT / NOW\n",
        "TOTAL", "WAITED", "STARTING", "UNIT"
    );
    let opt = |v: Option<u64>| v.map(dur).unwrap_or_else(|| "-".to_string());
    for r in rows {
        let tail = match (&r.now, &r.longest_wait) {
            (Some(now), _) => format!("not ready: {now}"),
            (None, Some(l)) if l.ms > 0 => format!("{} {}", dur(l.ms), l.cause),
            (None, _) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:>10} {:>10} {:>10}  {:<w$}  {}\n",
            opt(r.total_ms),
            dur(r.waited_ms),
            opt(r.starting_ms),
            printable(&r.unit),
            printable(&tail)
        ));
    }
    out
}

// ---- critical chain ------------------------------------------------------

/// One link of a critical chain: a phase of one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub unit: String,
    /// 0 for the unit asked about, +1 for each dependency descended into.
    pub depth: usize,
    pub phase: Phase,
    pub wait: Option<WaitKind>,
    /// The dependency waited for (`dependency`, `ordering`).
    pub dep: Option<String>,
    /// The mount point waited for (`mount`).
    pub path: Option<String>,
    pub cause: Option<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_ms: u64,
    /// The link in words: "waited 4.2 s for mount /var/lib/postgresql".
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub unit: String,
    pub cycle: String,
    pub startable_ms: u64,
    /// None: not ready (yet); the chain then ends now.
    pub ready_ms: Option<u64>,
    /// Latest first: the unit's own last phase, back to where the chain
    /// began. A dependency wait that its dependency's readiness ended is
    /// followed by that dependency's links (one level deeper).
    pub links: Vec<Link>,
    /// Other units that are not ready, with what they do now.
    pub not_ready: Vec<(String, String)>,
}

/// The chain of waits that decided when `unit` became ready (None: the
/// unit that became ready last).
pub fn critical_chain(
    r: &TimelineReport,
    unit: Option<&str>,
    cycle: Cycle,
) -> Result<Chain, String> {
    let name = match unit {
        Some(n) => n.to_string(),
        None => r
            .units
            .iter()
            .filter_map(|u| {
                let rec = record(u, cycle)?;
                first_up(rec).map(|i| (rec.segments[i].start_ms, u.name.clone()))
            })
            .max()
            .map(|(_, n)| n)
            .ok_or_else(|| format!("no unit has become ready in the {}; name one", cycle.word()))?,
    };
    let Some(u) = r.units.iter().find(|u| u.name == name) else {
        let mut known: Vec<&str> = r.units.iter().map(|u| u.name.as_str()).collect();
        known.sort();
        return Err(format!(
            "no unit named {name:?} in the timeline (known: {})",
            known.join(", ")
        ));
    };
    let rec = record(u, cycle).ok_or_else(|| {
        format!(
            "{name} has no recorded {}: it has not been considered for starting yet",
            cycle.word()
        )
    })?;
    let up = first_up(rec);
    let mut links = Vec::new();
    // Every descent moves to another unit; the count bounds a malformed
    // report that names units in a circle.
    let mut budget = r.units.len() + 1;
    let mut cur = (u, rec, up.unwrap_or(rec.segments.len()), 0usize);
    loop {
        let (cu, crec, end, depth) = cur;
        let mut next = None;
        for i in (0..end).rev() {
            let s = &crec.segments[i];
            let following = crec.segments.get(i + 1);
            let end_ms = seg_end(s, r.now_ms);
            // A wait that cost nothing (the lock state read in the first
            // millisecond) decided nothing.
            if s.phase == Phase::Waiting && end_ms == s.start_ms && s.end_ms.is_some() {
                continue;
            }
            push_link(
                &mut links,
                Link {
                    unit: cu.name.clone(),
                    depth,
                    phase: s.phase,
                    wait: s.wait,
                    dep: s.unit.clone(),
                    path: s.path.clone(),
                    cause: s.cause.clone(),
                    start_ms: s.start_ms,
                    end_ms,
                    duration_ms: end_ms.saturating_sub(s.start_ms),
                    text: sentence(s, following, cu.kind == "oneshot", r.now_ms),
                },
            );
            if let (Some(WaitKind::Dependency | WaitKind::Ordering), Some(dep), Some(_)) =
                (s.wait, &s.unit, s.end_ms)
                && let Some(found) = released_by(r, dep, s, s.wait == Some(WaitKind::Ordering))
            {
                next = Some(found);
                break;
            }
        }
        match next {
            Some((du, drec, j)) if budget > 0 => {
                budget -= 1;
                cur = (du, drec, j, depth + 1);
            }
            _ => break,
        }
    }
    let not_ready = r
        .units
        .iter()
        .filter(|o| o.name != name)
        .filter_map(|o| {
            let rec = record(o, cycle)?;
            if first_up(rec).is_some() {
                return None;
            }
            let last = rec.segments.last()?;
            Some((
                o.name.clone(),
                sentence(last, None, o.kind == "oneshot", r.now_ms),
            ))
        })
        .collect();
    Ok(Chain {
        unit: name,
        cycle: cycle.word().to_string(),
        startable_ms: rec.start_ms,
        ready_ms: up.map(|i| rec.segments[i].start_ms),
        links,
        not_ready,
    })
}

/// Consecutive waits on the same thing (a mount that went from missing to
/// read-only) read as one link.
fn push_link(links: &mut Vec<Link>, l: Link) {
    if let Some(prev) = links.last_mut()
        && prev.unit == l.unit
        && prev.phase == Phase::Waiting
        && l.phase == Phase::Waiting
        && prev.wait == l.wait
        && prev.dep == l.dep
        && prev.path == l.path
        && l.end_ms == prev.start_ms
    {
        prev.start_ms = l.start_ms;
        prev.duration_ms = prev.end_ms.saturating_sub(prev.start_ms);
        let mut seg_like = Segment {
            phase: Phase::Waiting,
            wait: prev.wait,
            cause: prev.cause.clone(),
            unit: prev.dep.clone(),
            path: prev.path.clone(),
            start_ms: prev.start_ms,
            end_ms: Some(prev.end_ms),
        };
        if prev.text.starts_with("waiting") {
            seg_like.end_ms = None;
        }
        prev.text = sentence(&seg_like, None, false, prev.end_ms);
        return;
    }
    links.push(l);
}

/// The dependency whose change ended wait `s`: its cycle and the index of
/// the segment that began when the wait ended (ready; for an ordering wait
/// also failed or exited).
fn released_by<'a>(
    r: &'a TimelineReport,
    dep: &str,
    s: &Segment,
    ordering: bool,
) -> Option<(&'a UnitTimeline, &'a RunRecord, usize)> {
    let end = s.end_ms?;
    let du = r.units.iter().find(|u| u.name == dep)?;
    let ends_wait = |p: Phase| is_up(p) || (ordering && matches!(p, Phase::Failed | Phase::Exited));
    [du.current.as_ref(), du.boot.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|rec| {
            rec.segments
                .iter()
                .enumerate()
                .rev()
                .find(|(_, g)| ends_wait(g.phase) && g.start_ms >= s.start_ms && g.start_ms <= end)
                .map(|(j, g)| (g.start_ms, rec, j))
        })
        .max_by_key(|(t, _, _)| *t)
        .map(|(_, rec, j)| (du, rec, j))
}

pub fn chain_text(c: &Chain) -> String {
    let mut out = match c.ready_ms {
        Some(t) => format!(
            "{}: ready at {} ({} after it became startable at {}; {})\n",
            printable(&c.unit),
            at(t),
            dur(t.saturating_sub(c.startable_ms)),
            at(c.startable_ms),
            c.cycle
        ),
        None => format!(
            "{}: not ready; startable since {} ({})\n",
            printable(&c.unit),
            at(c.startable_ms),
            c.cycle
        ),
    };
    let w = c
        .links
        .iter()
        .map(|l| l.unit.len() + 2 * l.depth)
        .max()
        .unwrap_or(4);
    for l in &c.links {
        let who = format!("{}{}", "  ".repeat(l.depth), printable(&l.unit));
        out.push_str(&format!(
            "  {:>9} → {:<9}  {:<w$}  {}\n",
            at(l.start_ms),
            at(l.end_ms),
            who,
            printable(&l.text)
        ));
    }
    if c.links.is_empty() {
        out.push_str("  (nothing recorded before it)\n");
    }
    if !c.not_ready.is_empty() {
        out.push_str("not ready:\n");
        for (u, now) in &c.not_ready {
            out.push_str(&format!("  {}: {}\n", printable(u), printable(now)));
        }
    }
    out
}

/// Free text (a unit name, a lock reason, a path, a cause) for a terminal:
/// control characters — newlines too, so a reason cannot forge lines — and
/// bidirectional overrides are shown escaped (`\u{1b}`), as supctl does for
/// everything else supd sends.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    escape_terminal(s, false)
}

/// The one escaping rule for text from supd shown on a terminal (supctl
/// uses it for everything it prints): control characters and bidi
/// overrides as `\u{..}`; newlines kept only where the caller prints
/// multi-line text.
pub fn escape_terminal(s: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// XML text and attribute escaping (SVG).
pub(crate) fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            // Would reorder what the picture shows: shown, not obeyed.
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;

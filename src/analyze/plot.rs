//! `supctl analyze plot`: the boot as a self-contained SVG timeline.
//!
//! Owns: the layout (one row per unit, time across), the colour of each
//! phase and the legend. Each bar carries its cause as a `<title>` (the
//! browser's tooltip). Must never: reference anything outside the file
//! (no fonts, scripts or images to fetch), or emit unescaped text.

use std::fmt::Write;

use super::{Cycle, at, dur, first_up, record, seg_end, sentence, xml};
use crate::protocol::{Phase, TimelineReport, WaitKind};

/// Colour classes: (class, fill, legend text).
const STYLES: &[(&str, &str, &str)] = &[
    ("w-mount", "#e69138", "waiting: mount"),
    ("w-lock", "#cc0000", "waiting: maintenance lock"),
    ("w-dep", "#8e7cc3", "waiting: dependency ready"),
    ("w-order", "#c5b9e8", "waiting: ordering (after/wants)"),
    ("w-cap", "#f1c232", "waiting: start cap"),
    ("w-backoff", "#c27ba0", "waiting: restart backoff"),
    (
        "w-other",
        "#b7b7b7",
        "waiting: operator / shed / lock state",
    ),
    ("starting", "#3d85c6", "starting (spawned, not ready)"),
    ("ready", "#6aa84f", "ready"),
    ("done", "#93c47d", "done (oneshot completed)"),
    ("notready", "#d9ead3", "running, not ready"),
    ("stopping", "#666666", "stopping"),
    ("failed", "#990000", "failed / exited"),
];

fn class_of(phase: Phase, wait: Option<WaitKind>) -> &'static str {
    match phase {
        Phase::Waiting => match wait {
            Some(WaitKind::Mount) => "w-mount",
            Some(WaitKind::Lock) => "w-lock",
            Some(WaitKind::Dependency) => "w-dep",
            Some(WaitKind::Ordering) => "w-order",
            Some(WaitKind::Cap) => "w-cap",
            Some(WaitKind::Backoff) => "w-backoff",
            Some(
                WaitKind::LockUnknown
                | WaitKind::Operator
                | WaitKind::Shed
                | WaitKind::Shutdown
                | WaitKind::Removed
                | WaitKind::Other,
            )
            | None => "w-other",
        },
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Done => "done",
        Phase::NotReady => "notready",
        Phase::Stopping => "stopping",
        Phase::Failed | Phase::Exited | Phase::Other => "failed",
    }
}

/// A round step for axis ticks giving about `n` ticks over `span_ms`.
fn tick_step(span_ms: u64, n: u64) -> u64 {
    let raw = (span_ms / n.max(1)).max(1);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= raw {
                return step.saturating_mul(m);
            }
        }
        if step > u64::MAX / 10 {
            return step;
        }
        step *= 10;
    }
}

const ROW_H: f64 = 26.0;
const BAR_H: f64 = 16.0;
const CHART_W: f64 = 900.0;
const TOP: f64 = 74.0;
/// Average glyph width at 13px, for sizing text columns without fonts.
const CHAR_W: f64 = 7.4;

/// The SVG document for one cycle of every unit.
pub fn plot_svg(r: &TimelineReport, cycle: Cycle) -> String {
    // Rows in the order things happened: by spawn, then readiness.
    let mut rows: Vec<_> = r
        .units
        .iter()
        .filter_map(|u| record(u, cycle).map(|rec| (u, rec)))
        .collect();
    let key = |rec: &crate::protocol::RunRecord| {
        let spawn = rec
            .segments
            .iter()
            .find(|s| s.phase == Phase::Starting)
            .map(|s| s.start_ms)
            .unwrap_or(u64::MAX);
        let ready = first_up(rec)
            .map(|i| rec.segments[i].start_ms)
            .unwrap_or(u64::MAX);
        (spawn, ready)
    };
    rows.sort_by(|(a, ra), (b, rb)| key(ra).cmp(&key(rb)).then_with(|| a.name.cmp(&b.name)));

    // Time span: from the earliest start to shortly after the last change,
    // so a boot seen an hour later is not a sliver at the left edge. Phases
    // still open at the right edge continue (say so in their tooltip).
    let t0 = rows.iter().map(|(_, rec)| rec.start_ms).min().unwrap_or(0);
    let last = rows
        .iter()
        .flat_map(|(_, rec)| rec.segments.iter().map(|s| s.end_ms.unwrap_or(s.start_ms)))
        .max()
        .unwrap_or(t0);
    let span0 = last.saturating_sub(t0);
    let t1 = last
        .saturating_add((span0 / 8).max(500))
        .min(r.now_ms.max(last))
        .max(t0 + 1);
    let span = (t1 - t0) as f64;

    let label_w = rows
        .iter()
        .map(|(u, _)| u.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4) as f64
        * CHAR_W
        + 24.0;
    let note_w = 230.0;
    let width = label_w + CHART_W + note_w;
    let legend_rows = STYLES.len().div_ceil(4) as f64;
    let height = TOP + rows.len() as f64 * ROW_H + 34.0 + legend_rows * 20.0 + 16.0;
    let x = |ms: u64| label_w + (ms.saturating_sub(t0).min(t1 - t0)) as f64 / span * CHART_W;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Verdana, Helvetica, Arial, sans-serif" font-size="13">"#
    );
    s.push_str("<style>\n");
    s.push_str(".bg{fill:#ffffff}.stripe{fill:#f3f3f3}.grid{stroke:#dddddd;stroke-width:1}.axis{fill:#555555;font-size:11px}.label{fill:#222222}.note{fill:#444444;font-size:12px}.title{font-size:16px;font-weight:bold;fill:#222222}.sub{font-size:12px;fill:#555555}.bar{stroke:#ffffff;stroke-width:0.5}.open{stroke-dasharray:3 2}\n");
    for (class, fill, _) in STYLES {
        let _ = writeln!(s, ".{class}{{fill:{fill}}}");
    }
    s.push_str("</style>\n");
    let _ = writeln!(
        s,
        r#"<rect class="bg" x="0" y="0" width="{width:.0}" height="{height:.0}"/>"#
    );

    let ready_all = rows
        .iter()
        .filter_map(|(_, rec)| first_up(rec).map(|i| rec.segments[i].start_ms))
        .max();
    let not_ready = rows
        .iter()
        .filter(|(_, rec)| first_up(rec).is_none())
        .count();
    let origin = crate::engine::rfc3339(r.origin_unix_ms);
    let _ = writeln!(
        s,
        r#"<text class="title" x="12" y="24">supd {} timeline — {} unit(s), supd started {}</text>"#,
        xml(cycle.word()),
        rows.len(),
        xml(&origin)
    );
    let summary = match (ready_all, not_ready) {
        (Some(t), 0) => format!("every unit ready or done by {}", at(t)),
        (Some(t), n) => format!("last ready at {}; {n} unit(s) not ready", at(t)),
        (None, n) => format!("{n} unit(s), none ready yet"),
    };
    let _ = writeln!(
        s,
        r#"<text class="sub" x="12" y="44">{} — hover a bar for its cause</text>"#,
        xml(&summary)
    );

    // Axis and grid.
    let step = tick_step(t1 - t0, 10);
    let first_tick = t0.div_ceil(step) * step;
    let bottom = TOP + rows.len() as f64 * ROW_H;
    let mut t = first_tick;
    while t <= t1 {
        let xt = x(t);
        let _ = writeln!(
            s,
            r#"<line class="grid" x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{bottom:.1}"/><text class="axis" x="{xt:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP - 6.0,
            TOP - 10.0,
            xml(&axis_label(t, step))
        );
        match t.checked_add(step) {
            Some(n) => t = n,
            None => break,
        }
    }

    for (i, (u, rec)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let _ = writeln!(s, r#"<g class="row" data-unit="{}">"#, xml(&u.name));
        if i % 2 == 0 {
            let _ = writeln!(
                s,
                r#"<rect class="stripe" x="0" y="{y:.1}" width="{width:.0}" height="{ROW_H:.0}"/>"#
            );
        }
        let _ = writeln!(
            s,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 10.0,
            y + ROW_H / 2.0 + 4.5,
            xml(&u.name)
        );
        for (j, seg) in rec.segments.iter().enumerate() {
            let end = seg_end(seg, r.now_ms);
            let (x0, x1) = (x(seg.start_ms), x(end));
            // Zero-length phases (started and ready in one instant) stay
            // visible and hoverable.
            let w = (x1 - x0).max(2.0);
            let next = rec.segments.get(j + 1);
            let mut tip = format!(
                "{}: {} ({} → {})",
                u.name,
                sentence(seg, next, u.kind == "oneshot", r.now_ms),
                at(seg.start_ms),
                if seg.end_ms.is_some() {
                    at(end)
                } else {
                    "now".to_string()
                }
            );
            if let Some(c) = &seg.cause
                && !tip.contains(c.as_str())
            {
                tip.push_str(&format!(" — {c}"));
            }
            let open = if seg.end_ms.is_none() && end > t1 {
                " open"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<rect class="bar {}{open}" x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{BAR_H:.0}"><title>{}</title></rect>"#,
                class_of(seg.phase, seg.wait),
                y + (ROW_H - BAR_H) / 2.0,
                xml(&tip)
            );
        }
        let note = match first_up(rec) {
            Some(k) => {
                let t = rec.segments[k].start_ms;
                format!(
                    "{} {} ({})",
                    if rec.segments[k].phase == Phase::Done {
                        "done"
                    } else {
                        "ready"
                    },
                    at(t),
                    dur(t.saturating_sub(rec.start_ms))
                )
            }
            None => match rec.segments.last() {
                Some(l) if l.phase == Phase::Waiting => match l.wait {
                    Some(WaitKind::Lock) => "held by a maintenance lock".to_string(),
                    Some(WaitKind::Mount) => {
                        format!("waiting for mount {}", l.path.clone().unwrap_or_default())
                    }
                    _ => "waiting".to_string(),
                },
                Some(l) => format!("{:?}", l.phase).to_lowercase(),
                None => String::new(),
            },
        };
        let _ = writeln!(
            s,
            r#"<text class="note" x="{:.1}" y="{:.1}">{}</text>"#,
            label_w + CHART_W + 10.0,
            y + ROW_H / 2.0 + 4.5,
            xml(&note)
        );
        s.push_str("</g>\n");
    }

    // Legend.
    let ly = bottom + 26.0;
    for (k, (class, _, text)) in STYLES.iter().enumerate() {
        let col = (k % 4) as f64;
        let row = (k / 4) as f64;
        let lx = 12.0 + col * 250.0;
        let yy = ly + row * 20.0;
        let _ = writeln!(
            s,
            r#"<g class="legend"><rect class="{class}" x="{lx:.1}" y="{:.1}" width="14" height="12"/><text class="note" x="{:.1}" y="{yy:.1}">{}</text></g>"#,
            yy - 10.0,
            lx + 20.0,
            xml(text)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn axis_label(t: u64, step: u64) -> String {
    if step >= 1000 {
        format!("{} s", t / 1000)
    } else if step >= 100 {
        format!("{:.1} s", t as f64 / 1000.0)
    } else {
        format!("{:.2} s", t as f64 / 1000.0)
    }
}

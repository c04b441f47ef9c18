//! The renderers against a boot the engine recorded (engine::timeline's
//! scenario: a late mount, the start cap, a dependency, a lock) and against
//! hostile reports.

use super::graph::{graph_dot, graph_svg};
use super::plot::plot_svg;
use super::*;
use crate::engine::timeline::tests::boot_scenario;
use crate::protocol::{
    GraphMount, GraphReport, GraphUnit, HolderInfo, Phase, RunRecord, Segment, TimelineReport,
    UnitTimeline, WaitKind,
};

/// Tags balance, text and attributes hold no raw `<` or bare `&`: what a
/// browser's XML parser needs to load the file at all.
fn assert_well_formed(doc: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        check_text(text);
        let close = rest[open..].find('>').expect("tag closes") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "closing {name}");
            continue;
        }
        check_attrs(tag);
        if tag.ends_with('/') {
            continue;
        }
        let name = tag.split_whitespace().next().expect("tag name");
        stack.push(name.to_string());
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn check_text(t: &str) {
    for (i, _) in t.match_indices('&') {
        let ent = &t[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| ent.starts_with(e)),
            "bare & in {t:?}"
        );
    }
}

fn check_attrs(tag: &str) {
    // Quotes pair up; nothing inside them breaks out.
    assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
    check_text(tag);
}

#[test]
fn critical_chain_follows_the_dependency_into_its_mount_wait() {
    let (_, r) = boot_scenario();
    let c = critical_chain(&r, Some("app"), Cycle::Boot).expect("chain");
    assert_eq!(c.ready_ms, Some(2000));
    let texts: Vec<(String, usize, String)> = c
        .links
        .iter()
        .map(|l| (l.unit.clone(), l.depth, l.text.clone()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("app".into(), 0, "started in 0 ms (spawned → ready)".into()),
            (
                "app".into(),
                0,
                "waited 2.0 s for required unit db to be ready".into()
            ),
            ("db".into(), 1, "started in 0.5 s (spawned → ready)".into()),
            (
                "db".into(),
                1,
                "waited 0.5 s in the start cap (max_parallel_starts = 1)".into()
            ),
            ("db".into(), 1, "waited 1.0 s for mount /srv/db".into()),
        ],
        "{}",
        chain_text(&c)
    );
    let mount = &c.links[4];
    assert_eq!(mount.wait, Some(WaitKind::Mount));
    assert_eq!(mount.path.as_deref(), Some("/srv/db"));
    assert_eq!(
        (mount.start_ms, mount.end_ms, mount.duration_ms),
        (0, 1000, 1000)
    );
    let text = chain_text(&c);
    assert!(text.contains("app: ready at +2.00 s"), "{text}");
}

#[test]
fn critical_chain_names_the_lock_and_defaults_to_the_last_unit_ready() {
    let (_, r) = boot_scenario();
    let c = critical_chain(&r, None, Cycle::Boot).expect("chain");
    assert_eq!(
        c.unit, "cache",
        "cache became ready last (lock released at 3 s)"
    );
    assert_eq!(
        c.links[1].text,
        "waited 3.0 s for the maintenance lock, held by alice (resize volume)"
    );
    assert!(c.not_ready.is_empty());
    assert!(
        critical_chain(&r, Some("nope"), Cycle::Boot)
            .unwrap_err()
            .contains("known: app, cache, db, web")
    );
}

#[test]
fn blame_orders_by_startable_to_ready() {
    let (_, r) = boot_scenario();
    let rows = blame(&r, Cycle::Boot);
    let order: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
    assert_eq!(order, vec!["cache", "app", "db", "web"]);
    let db = &rows[2];
    assert_eq!(
        (db.total_ms, db.waited_ms, db.starting_ms),
        (Some(2000), 1500, Some(500))
    );
    assert_eq!(
        db.longest_wait.as_ref().map(|l| l.cause.as_str()),
        Some("for mount /srv/db")
    );
    let text = blame_text(&rows);
    assert!(text.contains("1.0 s for mount /srv/db"), "{text}");
}

#[test]
fn a_unit_still_waiting_is_shown_as_waiting() {
    let (mut w, _) = boot_scenario();
    w.cmd(crate::protocol::Request::MaintenanceOn {
        unit: "web".into(),
        reason: "swap <disk> & \"cable\"".into(),
        holder: Some("bob".into()),
    });
    w.exit("web", 143);
    w.at(6000);
    let r = w.report();
    let rows = blame(&r, Cycle::Current);
    let web = rows.iter().find(|r| r.unit == "web").expect("web");
    assert_eq!(web.ready_ms, None);
    let now = web.now.as_deref().unwrap_or("");
    assert!(
        now.starts_with("waiting 2.0 s so far for the maintenance lock, held by bob"),
        "{now}"
    );
    assert_eq!(rows.last().map(|r| r.unit.as_str()), Some("web"));
    // Free text reaches the terminal escaped.
    let mut hostile = rows.clone();
    if let Some(n) = hostile.last_mut().and_then(|r| r.now.as_mut()) {
        n.push_str("\n  db  FORGED\u{1b}[2J\u{202e}");
    }
    let text = blame_text(&hostile);
    assert_eq!(text.lines().count(), hostile.len() + 1, "{text}");
    assert!(
        text.contains("\\u{a}  db  FORGED\\u{1b}[2J\\u{202e}"),
        "{text}"
    );
    let c = critical_chain(&r, Some("web"), Cycle::Current).expect("chain");
    assert_eq!(c.ready_ms, None);
    assert!(chain_text(&c).contains("not ready"));
    // The reason is free text: escaped in the SVG.
    let svg = plot_svg(&r, Cycle::Current);
    assert_well_formed(&svg);
    assert!(svg.contains("swap &lt;disk&gt; &amp; &quot;cable&quot;"));
    assert_eq!(xml("a\u{202e}b\u{7}c"), "a\\u{202e}b c");
}

#[test]
fn plot_has_one_row_per_unit_and_a_tooltip_per_phase() {
    let (_, r) = boot_scenario();
    let svg = plot_svg(&r, Cycle::Boot);
    assert_well_formed(&svg);
    assert_eq!(svg.matches("<g class=\"row\"").count(), 4);
    let bars = svg.matches("<rect class=\"bar ").count();
    let segs: usize = r
        .units
        .iter()
        .map(|u| u.boot.as_ref().map_or(0, |b| b.segments.len()))
        .sum();
    assert_eq!(bars, segs);
    assert_eq!(svg.matches("<title>").count(), segs);
    assert!(svg.contains("db: waited 1.0 s for mount /srv/db (+0.00 s → +1.00 s)"));
    assert!(svg.contains("class=\"bar w-mount\""));
    assert!(svg.contains("class=\"bar w-cap\""));
    assert!(svg.contains("class=\"bar w-lock\""));
    assert!(svg.contains("class=\"bar w-dep\""));
    // Rows in the order units were spawned: web first, cache last.
    let pos = |n: &str| svg.find(&format!("data-unit=\"{n}\"")).expect(n);
    assert!(pos("web") < pos("db") && pos("db") < pos("app") && pos("app") < pos("cache"));
    assert!(!svg.contains("href"), "self-contained");
}

fn seg(
    phase: Phase,
    wait: Option<WaitKind>,
    unit: Option<&str>,
    a: u64,
    b: Option<u64>,
) -> Segment {
    Segment {
        phase,
        wait,
        cause: Some("x".into()),
        unit: unit.map(str::to_string),
        path: None,
        start_ms: a,
        end_ms: b,
    }
}

#[test]
fn a_report_naming_units_in_a_circle_ends() {
    // Not producible by supd (cycles are load errors), but the report came
    // over a socket.
    let mk = |name: &str, dep: &str| UnitTimeline {
        name: name.into(),
        state: "running".into(),
        kind: "longrun".into(),
        boot: Some(RunRecord {
            start_ms: 0,
            dropped: 0,
            segments: vec![
                seg(
                    Phase::Waiting,
                    Some(WaitKind::Dependency),
                    Some(dep),
                    0,
                    Some(10),
                ),
                seg(Phase::Starting, None, None, 10, Some(10)),
                seg(Phase::Ready, None, None, 10, None),
            ],
        }),
        current: None,
    };
    let r = TimelineReport {
        origin_unix_ms: 0,
        now_ms: 20,
        max_parallel_starts: 1,
        units: vec![mk("a", "b"), mk("b", "a")],
    };
    let c = critical_chain(&r, Some("a"), Cycle::Boot).expect("chain");
    assert!(c.links.len() <= 2 * 3 * 3, "{c:#?}");
    assert_well_formed(&plot_svg(&r, Cycle::Boot));
    // Unknown dependency, empty report.
    let mut lone = r.clone();
    lone.units.truncate(1);
    assert!(critical_chain(&lone, Some("a"), Cycle::Boot).is_ok());
    let empty = TimelineReport { units: vec![], ..r };
    assert!(critical_chain(&empty, None, Cycle::Boot).is_err());
    assert_well_formed(&plot_svg(&empty, Cycle::Boot));
    assert!(blame(&empty, Cycle::Boot).is_empty());
}

fn graph_report() -> GraphReport {
    GraphReport {
        units: vec![
            GraphUnit {
                name: "app".into(),
                state: "waiting".into(),
                ready: false,
                requires: vec!["db".into()],
                wants: vec!["cache".into()],
                after: vec!["missing-unit".into()],
                mounts: vec![],
                maintenance: Some(vec![HolderInfo {
                    holder: "alice \"the admin\"".into(),
                    reason: "swap disk <sdb> \\ & rebuild".into(),
                    since: "2024-01-01T00:00:00Z".into(),
                    age_secs: 1,
                }]),
            },
            GraphUnit {
                name: "db".into(),
                state: "running".into(),
                ready: true,
                requires: vec![],
                wants: vec![],
                after: vec![],
                mounts: vec![GraphMount {
                    path: "/srv/pg".into(),
                    fstype: Some("ext4".into()),
                    mounted: true,
                    problem: None,
                }],
                maintenance: None,
            },
            GraphUnit {
                name: "cache".into(),
                state: "running".into(),
                ready: true,
                requires: vec![],
                wants: vec![],
                after: vec![],
                mounts: vec![GraphMount {
                    path: "/srv/pg".into(),
                    fstype: None,
                    mounted: false,
                    problem: Some("not a mount point".into()),
                }],
                maintenance: None,
            },
        ],
    }
}

#[test]
fn dot_quotes_free_text_and_names_every_edge() {
    let dot = graph_dot(&graph_report());
    assert!(dot.starts_with("digraph supd {") && dot.trim_end().ends_with('}'));
    assert!(
        dot.contains(r#""unit:db" -> "unit:app" [label="requires""#),
        "{dot}"
    );
    assert!(dot.contains(r#""unit:cache" -> "unit:app" [label="wants""#));
    assert!(dot.contains(r#""mount:/srv/pg" -> "unit:db" [label="mount""#));
    assert!(dot.contains(r#""mount:/srv/pg" -> "unit:cache""#));
    assert!(dot.contains(r#""lock:app" -> "unit:app" [label="holds down""#));
    assert!(
        dot.contains(r#"alice \"the admin\": swap disk <sdb> \\ & rebuild"#),
        "{dot}"
    );
    // One node for a mount two units share; an unknown unit makes no edge.
    assert_eq!(dot.matches("\"mount:/srv/pg\" [").count(), 1);
    let mut g = graph_report();
    g.units[0].maintenance.as_mut().expect("locked")[0].reason = "x\u{202e}y\nz".into();
    let dot = graph_dot(&g);
    // Bidi overrides shown, not obeyed; a newline is one more label line.
    assert!(dot.contains(r#"x\\u{202e}y\nz""#), "{dot}");
    assert!(!dot.contains("missing-unit"));
}

#[test]
fn graph_svg_is_well_formed_with_a_node_per_unit_mount_and_lock() {
    let svg = graph_svg(&graph_report());
    assert_well_formed(&svg);
    assert_eq!(svg.matches("<g class=\"gnode unit\"").count(), 3);
    assert_eq!(svg.matches("<g class=\"gnode mount\"").count(), 1);
    assert_eq!(svg.matches("<g class=\"gnode lock\"").count(), 1);
    assert_eq!(
        svg.matches("<path class=\"e ").count(),
        5 + 5,
        "edges + legend"
    );
    assert!(
        svg.contains("class=\"node missing\""),
        "shared mount shows the worst"
    );
    let empty = graph_svg(&GraphReport { units: vec![] });
    assert_well_formed(&empty);
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    assert_eq!(dur(0), "0 ms");
    assert_eq!(dur(99), "99 ms");
    assert_eq!(dur(800), "0.8 s");
    assert_eq!(dur(4200), "4.2 s");
    assert_eq!(dur(125_000), "2 min 5 s");
    assert!(dur(u64::MAX).starts_with("5124095576030 h"));
    assert_eq!(at(1500), "+1.50 s");
}

//! Issue 19 with a real boot: `supctl analyze blame | critical-chain |
//! plot` and `supctl graph` against supd as PID 1 of a fresh namespace,
//! where one unit waits for a tmpfs the test mounts late, one is held by a
//! maintenance lock, and the start cap is 1. The SVG is loaded in headless
//! Chromium and the DOT rendered by Graphviz.
//!
//! Set SUPD_TEST_ARTIFACTS=DIR to keep the SVGs and the screenshot.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn a_real_boot_seen_through_blame_chain_plot_and_graph() {
    if !can_run("analyze_real_boot") {
        return;
    }
    need("chromium", "chromium");
    need("dot", "graphviz");
    let data = TempDir::new("an-data");
    let d = data.path().display().to_string();
    let db = format!(
        "{}\n[[mount]]\npath = {}\n",
        sh_unit(
            "sleep 0.3; echo ready >&3; exec sleep 600",
            "description = \"database on a late disk\"\n[ready]\nkind = \"fd\""
        ),
        toml_str(&d)
    );
    let units = [
        ("db", db),
        (
            "setup",
            format!("type = \"oneshot\"\n{}", sh_unit("sleep 0.4", "")),
        ),
        ("cache", sh_unit("exec sleep 600", "")),
        (
            "app",
            sh_unit(
                "sleep 0.2; echo >&3; exec sleep 600",
                "requires = [\"db\", \"cache\"]\nafter = [\"setup\"]\n[ready]\nkind = \"fd\"",
            ),
        ),
        ("report", sh_unit("exec sleep 600", "requires = [\"db\"]")),
    ];
    let refs: Vec<(&str, &str)> = units.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let supd = Supd::start_with(
        "analyze",
        &refs,
        Options {
            extra_args: vec!["--max-parallel-starts".into(), "1".into()],
            ..Options::default()
        },
    );
    // report requires db, which waits for its mount: the lock is in place
    // before report could start.
    supd.ok(&[
        "maintenance",
        "on",
        "report",
        "--reason",
        "nightly reindex",
        "--holder",
        "ops",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(supd.state_of("db"), "waiting");
    supd.in_ns_ok(&["mount", "-t", "tmpfs", "supd-analyze", &d]);
    wait_for("app to be ready", Duration::from_secs(10), || {
        let u = supd.unit("app");
        (u["ready"] == true).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    supd.ok(&["maintenance", "off", "report", "--holder", "ops"]);
    supd.wait_state("report", "running", Duration::from_secs(10));

    // critical-chain names the mount wait, with the right path, and its
    // duration covers the delay before the test mounted it.
    let chain = supd.ok(&["analyze", "critical-chain", "db"]);
    assert!(chain.contains(&format!("for mount {d}")), "{chain}");
    let cj = json(&supd.ok(&["analyze", "critical-chain", "db", "--json"]));
    let links = cj["links"].as_array().expect("links");
    let mount = links
        .iter()
        .find(|l| l["wait"] == "mount")
        .unwrap_or_else(|| panic!("no mount link: {cj:#}"));
    assert_eq!(mount["path"], d.as_str());
    assert!(
        mount["duration_ms"].as_u64().unwrap_or(0) >= 1400,
        "{mount}"
    );
    // app's chain descends into db's mount wait.
    let chain = supd.ok(&["analyze", "critical-chain", "app"]);
    assert!(
        chain.contains("for required unit db to be ready"),
        "{chain}"
    );
    assert!(chain.contains(&format!("for mount {d}")), "{chain}");
    // report waited for the lock, and says who held it and why.
    let chain = supd.ok(&["analyze", "critical-chain", "report"]);
    assert!(
        chain.contains("for the maintenance lock, held by ops (nightly reindex)"),
        "{chain}"
    );
    // The start cap (1): someone waited in it.
    let blame_json = json(&supd.ok(&["analyze", "blame", "--json"]));
    let rows = blame_json.as_array().expect("rows");
    assert_eq!(rows.len(), 5, "{blame_json:#}");
    let blame = supd.ok(&["analyze", "blame"]);
    for u in ["db", "setup", "cache", "app", "report"] {
        assert!(
            blame.lines().any(|l| l.contains(&format!(" {u} "))),
            "{u} in:\n{blame}"
        );
    }
    let timeline = json(&supd.ok(&["analyze", "plot", "--json"]));
    let waits: Vec<String> = timeline["units"]
        .as_array()
        .expect("units")
        .iter()
        .flat_map(|u| {
            u["boot"]["segments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["wait"].as_str().map(str::to_string))
        .collect();
    assert!(waits.iter().any(|w| w == "cap"), "{waits:?}");
    // Unknown unit: refused with exit 1 and the known names.
    println!(
        "{blame}\n{}\n{}",
        supd.ok(&["analyze", "critical-chain"]),
        supd.ok(&["analyze", "critical-chain", "report"])
    );
    let bad = supd.supctl(&["analyze", "critical-chain", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("known: app, cache, db, report, setup"));

    // The SVG timeline in a real browser: it parses (no parsererror), and
    // lays out one visible row per unit, each at its own height.
    let work = TempDir::new("an-browser");
    let svg = supd.ok(&["analyze", "plot"]);
    let svg_path = work.path().join("boot.svg");
    std::fs::write(&svg_path, &svg).expect("write svg");
    let laid = timeline_in_browser(&svg, work.path());
    assert_eq!(
        (laid.rows, laid.shown, laid.distinct_y),
        (5, 5, 5),
        "one visible row per unit, each at its own height"
    );
    assert!(laid.bars >= 10, "{laid:?}");
    let png = work.path().join("boot.png");
    let (ok, _, err) = chromium(
        &work.path().join("profile2"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,420",
        ],
        &format!("file://{}", svg_path.display()),
    );
    assert!(ok, "chromium screenshot failed: {err}");
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000);

    // The graph: DOT through Graphviz without a complaint; the SVG in the
    // browser.
    let dot_src = supd.ok(&["graph", "--dot"]);
    let rendered = dot_to_svg(&dot_src, work.path());
    for u in ["db", "setup", "cache", "app", "report"] {
        assert!(
            rendered.contains(&format!(">{u}</text>")),
            "{u} not drawn by dot"
        );
    }
    assert!(
        rendered.contains(&format!("mount {d}")),
        "mount node not drawn by dot:\n{rendered}"
    );
    let g = json(&supd.ok(&["graph", "--json"]));
    let app = g["units"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "app"))
        .expect("app in graph");
    assert_eq!(app["requires"], serde_json::json!(["db", "cache"]));
    let graph_svg = supd.ok(&["graph"]);
    let graph_path = work.path().join("units.svg");
    std::fs::write(&graph_path, &graph_svg).expect("write graph svg");
    let (ok, dom, err) = chromium(
        &work.path().join("profile3"),
        &["--dump-dom"],
        &format!("file://{}", graph_path.display()),
    );
    assert!(ok, "chromium failed: {err}");
    assert!(!dom.contains("parsererror"), "{dom}");
    assert_eq!(dom.matches("class=\"gnode unit\"").count(), 5);
    assert_eq!(dom.matches("class=\"gnode mount\"").count(), 1);

    if let Some(keep) = std::env::var_os("SUPD_TEST_ARTIFACTS") {
        let keep = PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        for f in ["boot.svg", "boot.png", "units.svg", "units.dot.svg"] {
            let _ = std::fs::copy(work.path().join(f), keep.join(f));
        }
    }
    supd.in_ns_ok(&["umount", "-l", &d]);
}

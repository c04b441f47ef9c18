//! `supctl graph`: the units, their requires/wants/after edges, and the
//! mounts and maintenance locks they wait on, as Graphviz DOT or as a
//! self-contained SVG.
//!
//! Owns: the node/edge model shared by both outputs, DOT quoting, and a
//! small layered layout for the SVG (columns by longest path from the
//! roots, rows ordered by the mean row of each node's predecessors). For a
//! large set, `--dot | dot -Tsvg` lays it out better. Must never: emit
//! unquoted user text (paths, reasons and holder names are free text).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::xml;
use crate::protocol::GraphReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Unit,
    Mount,
    Lock,
}

#[derive(Debug, Clone)]
struct Node {
    id: String,
    kind: Kind,
    lines: Vec<String>,
    /// A style class: the unit's state, or mounted/missing, or locked.
    class: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EdgeKind {
    Requires,
    Wants,
    After,
    Mount,
    Lock,
}

impl EdgeKind {
    fn word(self) -> &'static str {
        match self {
            EdgeKind::Requires => "requires",
            EdgeKind::Wants => "wants",
            EdgeKind::After => "after",
            EdgeKind::Mount => "mount",
            EdgeKind::Lock => "holds down",
        }
    }
}

/// Edges run from what must come first to what waits on it.
#[derive(Debug, Clone)]
struct Edge {
    from: usize,
    to: usize,
    kind: EdgeKind,
}

struct Model {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

fn state_class(state: &str, ready: bool) -> &'static str {
    match state {
        "running" if ready => "ok",
        "done" => "ok",
        "running" | "starting" => "starting",
        "failed" => "bad",
        "waiting" | "backoff" => "waiting",
        _ => "idle",
    }
}

fn model(g: &GraphReport) -> Model {
    let mut nodes: Vec<Node> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    fn add(nodes: &mut Vec<Node>, index: &mut BTreeMap<String, usize>, n: Node) -> usize {
        if let Some(&i) = index.get(&n.id) {
            // A mount shared by several units: missing for one is
            // missing (its checks differ per unit; show the worst).
            if n.class == "missing" {
                nodes[i].class = "missing";
            }
            return i;
        }
        index.insert(n.id.clone(), nodes.len());
        nodes.push(n);
        nodes.len() - 1
    }
    let mut units = g.units.clone();
    units.sort_by(|a, b| a.name.cmp(&b.name));
    for u in &units {
        add(
            &mut nodes,
            &mut index,
            Node {
                id: format!("unit:{}", u.name),
                kind: Kind::Unit,
                lines: vec![
                    u.name.clone(),
                    if u.state == "running" && !u.ready {
                        "running, not ready".to_string()
                    } else {
                        u.state.clone()
                    },
                ],
                class: state_class(&u.state, u.ready),
            },
        );
    }
    let mut edges = Vec::new();
    for u in &units {
        let Some(&to) = index.get(&format!("unit:{}", u.name)) else {
            continue;
        };
        for (list, kind) in [
            (&u.requires, EdgeKind::Requires),
            (&u.wants, EdgeKind::Wants),
            (&u.after, EdgeKind::After),
        ] {
            for dep in list {
                if let Some(&from) = index.get(&format!("unit:{dep}")) {
                    edges.push(Edge { from, to, kind });
                }
            }
        }
        for m in &u.mounts {
            let mut lines = vec![format!("mount {}", m.path)];
            if let Some(f) = &m.fstype {
                lines.push(f.clone());
            }
            lines.push(if m.mounted { "mounted" } else { "missing" }.to_string());
            let from = add(
                &mut nodes,
                &mut index,
                Node {
                    id: format!("mount:{}", m.path),
                    kind: Kind::Mount,
                    lines,
                    class: if m.mounted { "mounted" } else { "missing" },
                },
            );
            edges.push(Edge {
                from,
                to,
                kind: EdgeKind::Mount,
            });
        }
        if let Some(hs) = &u.maintenance {
            let mut lines = vec!["maintenance lock".to_string()];
            for h in hs {
                lines.push(format!("{}: {}", h.holder, h.reason));
            }
            let from = add(
                &mut nodes,
                &mut index,
                Node {
                    id: format!("lock:{}", u.name),
                    kind: Kind::Lock,
                    lines,
                    class: "locked",
                },
            );
            edges.push(Edge {
                from,
                to,
                kind: EdgeKind::Lock,
            });
        }
    }
    Model { nodes, edges }
}

/// A DOT double-quoted string: quotes and backslashes escaped, newlines as
/// `\n` (so Graphviz centres each line).
fn dq(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fill(class: &str) -> &'static str {
    match class {
        "ok" | "mounted" => "#d9ead3",
        "starting" => "#cfe2f3",
        "waiting" | "missing" => "#fce5cd",
        "bad" | "locked" => "#f4cccc",
        _ => "#eeeeee",
    }
}

/// Graphviz DOT: `supctl graph --dot | dot -Tsvg > graph.svg`.
pub fn graph_dot(g: &GraphReport) -> String {
    let m = model(g);
    let mut s = String::new();
    s.push_str("digraph supd {\n");
    s.push_str("  graph [rankdir=LR, fontname=\"DejaVu Sans\", label=\"supd units: an arrow runs from what must come first to what waits on it\", labelloc=t, fontsize=12];\n");
    s.push_str(
        "  node [fontname=\"DejaVu Sans\", fontsize=11, shape=box, style=\"rounded,filled\"];\n",
    );
    s.push_str("  edge [fontname=\"DejaVu Sans\", fontsize=9];\n");
    for n in &m.nodes {
        let shape = match n.kind {
            Kind::Unit => "box",
            Kind::Mount => "folder",
            Kind::Lock => "octagon",
        };
        let style = match n.kind {
            Kind::Unit => "rounded,filled",
            Kind::Mount | Kind::Lock => "filled",
        };
        let _ = writeln!(
            s,
            "  {} [label={}, shape={shape}, style={}, fillcolor={}];",
            dq(&n.id),
            dq(&n.lines.join("\n")),
            dq(style),
            dq(fill(n.class))
        );
    }
    for e in &m.edges {
        let attrs = match e.kind {
            EdgeKind::Requires => "style=solid, color=\"#333333\"",
            EdgeKind::Wants => "style=dashed, color=\"#555555\"",
            EdgeKind::After => "style=dotted, color=\"#777777\"",
            EdgeKind::Mount => "style=solid, color=\"#b45f06\"",
            EdgeKind::Lock => "style=bold, color=\"#cc0000\"",
        };
        let _ = writeln!(
            s,
            "  {} -> {} [label={}, {attrs}];",
            dq(&m.nodes[e.from].id),
            dq(&m.nodes[e.to].id),
            dq(e.kind.word())
        );
    }
    s.push_str("}\n");
    s
}

const LEGEND: [(&str, &str); 5] = [
    ("e-requires", "requires (ready first)"),
    ("e-wants", "wants"),
    ("e-after", "after (ordering)"),
    ("e-mount", "needs a mount"),
    ("e-lock", "held down by a lock"),
];
const LEGEND_W: f64 = 200.0;
const NODE_H_LINE: f64 = 16.0;
const GAP_X: f64 = 90.0;
const GAP_Y: f64 = 18.0;
const CHAR_W: f64 = 7.0;

/// The graph as SVG, laid out here (no Graphviz needed).
pub fn graph_svg(g: &GraphReport) -> String {
    let m = model(g);
    let n = m.nodes.len();
    // Columns: longest path from a root. Relaxation rounds bounded by the
    // node count, so a cyclic report (impossible from a valid set) ends.
    let mut col = vec![0usize; n];
    for _ in 0..n {
        let mut changed = false;
        for e in &m.edges {
            if col[e.to] < col[e.from] + 1 && col[e.from] < n {
                col[e.to] = col[e.from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // A unit nothing is required before sits right before its first
    // dependent, not at the far left with a long edge across the picture.
    for i in 0..n {
        let is_root = m.nodes[i].kind == Kind::Unit
            && !m
                .edges
                .iter()
                .any(|e| e.to == i && m.nodes[e.from].kind == Kind::Unit);
        if let Some(first) = m
            .edges
            .iter()
            .filter(|e| is_root && e.from == i)
            .map(|e| col[e.to])
            .min()
        {
            col[i] = col[i].max(first.saturating_sub(1));
        }
    }
    // Mounts and locks sit right before the first unit that waits on them.
    for (i, node) in m.nodes.iter().enumerate() {
        if node.kind != Kind::Unit {
            let first = m
                .edges
                .iter()
                .filter(|e| e.from == i)
                .map(|e| col[e.to])
                .min()
                .unwrap_or(1);
            col[i] = first.saturating_sub(1);
        }
    }
    let ncols = col.iter().max().map_or(0, |c| c + 1);
    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); ncols];
    for (i, &c) in col.iter().enumerate() {
        columns[c].push(i);
    }
    // Order each column by its nodes' kinds, then by the mean position of
    // their predecessors (fewer crossings); two sweeps settle small graphs.
    let mut pos = vec![0f64; n];
    for c in &columns {
        for (k, &i) in c.iter().enumerate() {
            pos[i] = k as f64;
        }
    }
    for _ in 0..2 {
        for c in columns.iter_mut() {
            let bary = |i: usize| {
                let preds: Vec<f64> = m
                    .edges
                    .iter()
                    .filter(|e| e.to == i)
                    .map(|e| pos[e.from])
                    .collect();
                if preds.is_empty() {
                    pos[i]
                } else {
                    preds.iter().sum::<f64>() / preds.len() as f64
                }
            };
            let mut keyed: Vec<(f64, Kind, usize)> =
                c.iter().map(|&i| (bary(i), m.nodes[i].kind, i)).collect();
            keyed.sort_by(|a, b| {
                a.0.partial_cmp(&b.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.1.cmp(&b.1))
                    .then(a.2.cmp(&b.2))
            });
            *c = keyed.into_iter().map(|(_, _, i)| i).collect();
            for (k, &i) in c.iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    }
    // Geometry.
    let size = |i: usize| {
        let node = &m.nodes[i];
        let w = node
            .lines
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(1) as f64
            * CHAR_W
            + 24.0;
        let h = node.lines.len() as f64 * NODE_H_LINE + 12.0;
        (w.min(420.0), h)
    };
    let col_w: Vec<f64> = columns
        .iter()
        .map(|c| c.iter().map(|&i| size(i).0).fold(60.0, f64::max))
        .collect();
    let col_h: Vec<f64> = columns
        .iter()
        .map(|c| c.iter().map(|&i| size(i).1 + GAP_Y).sum::<f64>())
        .collect();
    let total_h = col_h.iter().copied().fold(0.0, f64::max);
    let top = 56.0;
    let mut xy = vec![(0f64, 0f64, 0f64, 0f64); n];
    let mut x = 20.0;
    for (c, nodes) in columns.iter().enumerate() {
        // Centre each column vertically.
        let mut y = top + (total_h - col_h[c]) / 2.0;
        for &i in nodes {
            let (w, h) = size(i);
            xy[i] = (x + (col_w[c] - w) / 2.0, y, w, h);
            y += h + GAP_Y;
        }
        x += col_w[c] + GAP_X;
    }
    // Wide enough for the title and the legend.
    let width = (x - GAP_X + 20.0).max(40.0 + LEGEND.len() as f64 * LEGEND_W);
    let legend_y = top + total_h + 16.0;
    let height = legend_y + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Verdana, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    s.push_str("<style>\n.bg{fill:#ffffff}.title{font-size:15px;font-weight:bold;fill:#222222}.t{fill:#222222}.small{fill:#555555;font-size:11px}\n.node{stroke:#555555;stroke-width:1}\n.e{fill:none;stroke-width:1.4}.e-requires{stroke:#333333}.e-wants{stroke:#555555;stroke-dasharray:6 4}.e-after{stroke:#777777;stroke-dasharray:2 3}.e-mount{stroke:#b45f06}.e-lock{stroke:#cc0000;stroke-width:2.5}\n");
    for class in [
        "ok", "starting", "waiting", "bad", "idle", "mounted", "missing", "locked",
    ] {
        let _ = writeln!(s, ".{class}{{fill:{}}}", fill(class));
    }
    s.push_str("</style>\n");
    s.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#444444"/></marker></defs>"##);
    s.push('\n');
    let _ = writeln!(
        s,
        r#"<rect class="bg" x="0" y="0" width="{width:.0}" height="{height:.0}"/>"#
    );
    let units = m.nodes.iter().filter(|n| n.kind == Kind::Unit).count();
    let _ = writeln!(
        s,
        r#"<text class="title" x="20" y="28">supd units ({units}): arrows run from what must come first to what waits on it</text>"#
    );
    for e in &m.edges {
        let (fx, fy, fw, fh) = xy[e.from];
        let (tx, ty, _, th) = xy[e.to];
        let (x1, y1) = (fx + fw, fy + fh / 2.0);
        let (x2, y2) = (tx, ty + th / 2.0);
        let dx = ((x2 - x1) / 2.0).max(30.0);
        let class = match e.kind {
            EdgeKind::Requires => "e-requires",
            EdgeKind::Wants => "e-wants",
            EdgeKind::After => "e-after",
            EdgeKind::Mount => "e-mount",
            EdgeKind::Lock => "e-lock",
        };
        let _ = writeln!(
            s,
            r#"<path class="e {class}" d="M {x1:.1} {y1:.1} C {:.1} {y1:.1}, {:.1} {y2:.1}, {x2:.1} {y2:.1}" marker-end="url(#arrow)"><title>{}</title></path>"#,
            x1 + dx,
            x2 - dx,
            xml(&format!(
                "{} {} {}",
                m.nodes[e.to].lines[0],
                match e.kind {
                    EdgeKind::Lock => "is held down by",
                    EdgeKind::Mount => "needs",
                    _ => e.kind.word(),
                },
                m.nodes[e.from].lines[0]
            ))
        );
    }
    for (i, node) in m.nodes.iter().enumerate() {
        let (nx, ny, w, h) = xy[i];
        let kind = match node.kind {
            Kind::Unit => "unit",
            Kind::Mount => "mount",
            Kind::Lock => "lock",
        };
        let rx = if node.kind == Kind::Unit { 8 } else { 0 };
        let _ = writeln!(
            s,
            r#"<g class="gnode {kind}" data-id="{}"><title>{}</title><rect class="node {}" x="{nx:.1}" y="{ny:.1}" width="{w:.1}" height="{h:.1}" rx="{rx}"/>"#,
            xml(&node.id),
            xml(&node.lines.join("\n")),
            node.class
        );
        for (k, line) in node.lines.iter().enumerate() {
            let class = if k == 0 { "t" } else { "small" };
            let max_chars = ((w - 16.0) / CHAR_W) as usize;
            let shown: String = if line.chars().count() > max_chars {
                let mut t: String = line.chars().take(max_chars.saturating_sub(1)).collect();
                t.push('…');
                t
            } else {
                line.clone()
            };
            let _ = writeln!(
                s,
                r#"<text class="{class}" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                nx + w / 2.0,
                ny + 6.0 + (k as f64 + 1.0) * NODE_H_LINE - 3.0,
                xml(&shown)
            );
        }
        s.push_str("</g>\n");
    }
    for (k, (class, text)) in LEGEND.iter().enumerate() {
        let lx = 20.0 + k as f64 * LEGEND_W;
        let _ = writeln!(
            s,
            r#"<path class="e {class}" d="M {lx:.1} {legend_y:.1} L {:.1} {legend_y:.1}" marker-end="url(#arrow)"/><text class="small" x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 36.0,
            lx + 42.0,
            legend_y + 4.0,
            xml(text)
        );
    }
    s.push_str("</svg>\n");
    s
}

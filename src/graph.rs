//! The dependency graph of a unit set.
//!
//! Owns: checking that every `requires`/`wants`/`after` names a defined unit,
//! finding cycles (reported as the whole path `a -> b -> c -> a`), and a
//! deterministic topological start order. Must never: recurse (this runs in
//! PID 1 on user input), or build a `UnitSet` that has any of these errors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::UnitError;
use crate::unit::toml::DepLines;
use crate::unit::{UnitSet, UnitSpec};

/// Build a validated set (no line information for dependency errors).
pub fn build(specs: Vec<UnitSpec>) -> Result<UnitSet, Vec<UnitError>> {
    build_with_lines(specs, &BTreeMap::new())
}

/// Build a validated set; `lines[unit][dep]` is where `dep` is named.
pub fn build_with_lines(
    specs: Vec<UnitSpec>,
    lines: &BTreeMap<String, DepLines>,
) -> Result<UnitSet, Vec<UnitError>> {
    build_checked(specs, lines, &BTreeSet::new())
}

/// As `build_with_lines`; `also_defined` are units whose files exist but
/// failed to parse (so naming them is not an "unknown dependency" error —
/// their own errors are reported instead).
pub fn build_checked(
    mut specs: Vec<UnitSpec>,
    lines: &BTreeMap<String, DepLines>,
    also_defined: &BTreeSet<String>,
) -> Result<UnitSet, Vec<UnitError>> {
    let mut errors = Vec::new();
    let names: BTreeSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    // A well-known target nobody defines is reached at once: depending on
    // it orders nothing.
    let builtin = |d: &String| {
        crate::unit::BUILTIN_TARGETS.contains(&d.as_str())
            && !names.contains(d)
            && !also_defined.contains(d)
    };
    for s in specs.iter_mut() {
        s.requires.retain(|d| !builtin(d));
        s.wants.retain(|d| !builtin(d));
        s.after.retain(|d| !builtin(d));
    }
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &specs {
        for (key, list) in [
            ("requires", &s.requires),
            ("wants", &s.wants),
            ("after", &s.after),
            ("part_of", &s.part_of),
            ("on_failure", &s.on_failure),
            ("reload_propagated_from", &s.reload_propagated_from),
        ] {
            for dep in list {
                if !names.contains(dep) && !also_defined.contains(dep) {
                    let mut e = UnitError::new(
                        &s.file,
                        format!("unit {} {key} {dep:?}, which is not defined", s.name),
                    )
                    .hint(format!(
                        "create {dep}.toml in the units directory, or remove it from `{key}`"
                    ));
                    if let Some(l) = lines.get(&s.name).and_then(|m| m.get(dep)) {
                        e = e.at(*l, 1);
                    }
                    errors.push(e);
                }
            }
        }
        let deps: Vec<String> = s
            .requires
            .iter()
            .chain(&s.wants)
            .chain(&s.after)
            .filter(|d| names.contains(*d))
            .cloned()
            .collect();
        edges.insert(s.name.clone(), deps);
    }
    let by_name: BTreeMap<&str, &UnitSpec> = specs.iter().map(|s| (s.name.as_str(), s)).collect();
    for cycle in find_cycles(&edges) {
        let first = &cycle[0];
        let file = by_name
            .get(first.as_str())
            .map(|s| s.file.clone())
            .unwrap_or_default();
        let mut path = cycle.clone();
        path.push(first.clone());
        errors.push(
            UnitError::new(file, format!("dependency cycle: {}", path.join(" -> "))).hint(
                "break the cycle: one of these units must not require (or be after) the next",
            ),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Kahn's algorithm, smallest name first for a deterministic order.
    let mut indeg: BTreeMap<&str, usize> = edges.keys().map(|k| (k.as_str(), 0)).collect();
    let mut rev: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, deps) in &edges {
        for d in deps {
            *indeg.entry(n.as_str()).or_default() += 1;
            rev.entry(d.as_str()).or_default().push(n.as_str());
        }
    }
    let mut ready: BTreeSet<&str> = indeg
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::new();
    while let Some(n) = ready.pop_first() {
        order.push(n.to_string());
        for m in rev.get(n).into_iter().flatten() {
            if let Some(d) = indeg.get_mut(m) {
                *d -= 1;
                if *d == 0 {
                    ready.insert(m);
                }
            }
        }
    }
    let units = specs
        .into_iter()
        .map(|s| (s.name.clone(), Arc::new(s)))
        .collect();
    Ok(UnitSet { units, order })
}

/// The dependency cycles among `specs` (edges to units not in `specs`
/// ignored), each as its member names.
pub(crate) fn cycles(specs: &[UnitSpec]) -> Vec<Vec<String>> {
    let names: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let edges: BTreeMap<String, Vec<String>> = specs
        .iter()
        .map(|s| {
            let deps = s
                .requires
                .iter()
                .chain(&s.wants)
                .chain(&s.after)
                .filter(|d| names.contains(d.as_str()))
                .cloned()
                .collect();
            (s.name.clone(), deps)
        })
        .collect();
    find_cycles(&edges)
}

/// Every elementary cycle found by an iterative DFS, each reported once
/// (rotated to start at its smallest name).
fn find_cycles(edges: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = edges.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in edges.keys() {
        if mark[start.as_str()] != Mark::New {
            continue;
        }
        // Stack of (node, next edge index); `path` mirrors the stack.
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        mark.insert(start.as_str(), Mark::OnStack);
        while let Some((node, i)) = stack.last().copied() {
            let deps = edges.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if i < deps.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let next = deps[i].as_str();
                match mark.get(next).copied().unwrap_or(Mark::Done) {
                    Mark::New => {
                        mark.insert(next, Mark::OnStack);
                        stack.push((next, 0));
                    }
                    Mark::OnStack => {
                        let pos = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cyc: Vec<String> =
                            stack[pos..].iter().map(|(n, _)| n.to_string()).collect();
                        let min = cyc
                            .iter()
                            .enumerate()
                            .min_by(|a, b| a.1.cmp(b.1))
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cyc.rotate_left(min);
                        found.insert(cyc);
                    }
                    Mark::Done => {}
                }
            } else {
                mark.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitKind;

    fn u(name: &str, requires: &[&str], after: &[&str]) -> UnitSpec {
        let mut s = UnitSpec::simple(name, UnitKind::Longrun, &["/bin/true"]);
        s.requires = requires.iter().map(|s| s.to_string()).collect();
        s.after = after.iter().map(|s| s.to_string()).collect();
        s
    }

    #[test]
    fn diamond_order_is_topological_and_deterministic() {
        let set = build(vec![
            u("top", &["left", "right"], &[]),
            u("left", &["base"], &[]),
            u("right", &["base"], &[]),
            u("base", &[], &[]),
            u("solo", &[], &[]),
        ])
        .unwrap();
        assert_eq!(set.order, vec!["base", "left", "right", "solo", "top"]);
    }

    #[test]
    fn builtin_targets_order_nothing_unless_defined() {
        let set = build(vec![
            u("web", &["network-online"], &["local-fs", "db"]),
            u("db", &[], &[]),
        ])
        .unwrap();
        let web = &set.units["web"];
        assert!(web.requires.is_empty());
        assert_eq!(web.after, ["db"]);
        // Defined as a unit: an ordinary dependency.
        let set = build(vec![
            u("web", &["network-online"], &[]),
            u("network-online", &[], &[]),
        ])
        .unwrap();
        assert_eq!(set.units["web"].requires, ["network-online"]);
        assert_eq!(set.order, ["network-online", "web"]);
        assert!(build(vec![u("web", &["network-offline"], &[])]).is_err());
    }

    #[test]
    fn three_cycle_is_named_as_a_path() {
        let e = build(vec![
            u("a", &["b"], &[]),
            u("b", &[], &["c"]),
            u("c", &["a"], &[]),
        ])
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].message.contains("dependency cycle: a -> b -> c -> a"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn two_disjoint_cycles_and_missing_dep() {
        let e = build(vec![
            u("a", &["b"], &[]),
            u("b", &["a"], &[]),
            u("x", &["y"], &[]),
            u("y", &[], &["x"]),
            u("m", &["ghost"], &[]),
        ])
        .unwrap_err();
        let all: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.iter().any(|s| s.contains("a -> b -> a")));
        assert!(all.iter().any(|s| s.contains("x -> y -> x")));
        assert!(all.iter().any(|s| s.contains("ghost")));
    }

    #[test]
    fn deep_chain_does_not_recurse() {
        let n = 20_000;
        let specs: Vec<UnitSpec> = (0..n)
            .map(|i| {
                let name = format!("u{i:05}");
                if i == 0 {
                    u(&name, &[], &[])
                } else {
                    let dep = format!("u{:05}", i - 1);
                    u(&name, &[dep.as_str()], &[])
                }
            })
            .collect();
        let set = build(specs).unwrap();
        assert_eq!(set.order.len(), n);
        assert_eq!(set.order[0], "u00000");
    }
}

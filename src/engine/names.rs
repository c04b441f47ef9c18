//! Dependency names resolved to unit ids, once per unit set.
//!
//! Owns: for every unit, its effective spec's `requires`, `part_of` and
//! `after` then `wants`, as `Option<UnitId>` in the spec's order (None: the
//! name is not defined), in flat arrays indexed by unit; and the few
//! scalars of that spec the decisions read (`Hot`). The decisions
//! (`stop_cause`, `start_blockers`) read these instead of hashing each name
//! into `by_name` and comparing its bytes — at ten thousand units each of
//! those lookups missed the cache several times (the name, the map's
//! bucket, the map's copy of the key), and a crash asks them for every
//! unit in its chain.
//!
//! Must never: go stale, nor describe any spec but `effective()` (the
//! running spec, `Unit::spec`, differs while a reload waits in `next_spec`).
//! `by_name` and each unit's `effective()` spec change
//! only in `Engine::install` (a reload promotes `next_spec` to `spec`
//! without changing what `effective()` returns), and `install` rebuilds this
//! table; so an entry is always exactly what `by_name.get(name)` would say.

use std::collections::HashMap;

use super::UnitId;
use crate::unit::{Priority, UnitSpec};

/// The scalar fields of a unit's effective spec that its decisions read,
/// copied next to each other: a decision about a unit with no locks and
/// no mounts then reads no part of its spec (two kilobytes spread over
/// thirty cache lines).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hot {
    pub essential: bool,
    pub priority: Priority,
    pub sheddable: bool,
    pub has_mounts: bool,
}

/// One list per unit, all in one array.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists {
    at: Vec<u32>,
    ids: Vec<Option<UnitId>>,
}

impl Lists {
    fn push<'a>(
        &mut self,
        names: impl Iterator<Item = &'a String>,
        by_name: &HashMap<String, UnitId>,
    ) {
        if self.at.is_empty() {
            self.at.push(0);
        }
        self.ids
            .extend(names.map(|n| by_name.get(n.as_str()).copied()));
        self.at.push(self.ids.len() as u32);
    }

    /// Unit `id`'s list, in its spec's order (empty for an unknown id).
    pub fn of(&self, id: UnitId) -> &[Option<UnitId>] {
        let i = id.0 as usize;
        match (self.at.get(i), self.at.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.ids[a as usize..b as usize],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub requires: Lists,
    pub part_of: Lists,
    /// `after`, then `wants` (the order `start_blockers` asks them in).
    pub after_wants: Lists,
    /// Indexed by unit id.
    pub hot: Vec<Hot>,
}

impl Resolved {
    /// Resolve every unit's names; `specs` in unit id order.
    pub fn build<'a>(
        specs: impl Iterator<Item = &'a UnitSpec>,
        by_name: &HashMap<String, UnitId>,
    ) -> Resolved {
        let mut r = Resolved::default();
        for s in specs {
            r.requires.push(s.requires.iter(), by_name);
            r.part_of.push(s.part_of.iter(), by_name);
            r.after_wants
                .push(s.after.iter().chain(s.wants.iter()), by_name);
            r.hot.push(Hot {
                essential: s.essential,
                priority: s.priority,
                sheddable: s.sheddable,
                has_mounts: !s.mounts.is_empty(),
            });
        }
        r
    }
}

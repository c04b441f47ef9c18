//! Dependency names resolved to unit ids, once per unit set; and the
//! reverse dependency lists as flat arrays (`IdLists`).
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
use std::sync::Arc;

use super::UnitId;
use crate::protocol::{NameTable, UnitName};
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

/// One list per unit, all in one array; and the names themselves, in one
/// string, for the reasons and blockers that name a dependency (read from
/// the spec, a name cost three dependent misses at ten thousand units —
/// the spec's line holding the list, the list, the bytes — on every ask
/// of a unit whose dependency is down).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists {
    at: Vec<u32>,
    ids: Vec<Option<UnitId>>,
    /// Entry `j`'s name is `names[name_at[j]..name_at[j + 1]]`.
    names: String,
    name_at: Vec<u32>,
}

impl Lists {
    fn push<'a>(
        &mut self,
        names: impl Iterator<Item = &'a String>,
        by_name: &HashMap<String, UnitId>,
    ) {
        if self.at.is_empty() {
            self.at.push(0);
            self.name_at.push(0);
        }
        for n in names {
            self.ids.push(by_name.get(n.as_str()).copied());
            self.names.push_str(n);
            self.name_at.push(self.names.len() as u32);
        }
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

    /// The name of entry `k` of unit `id`'s list (`of(id)[k]`), as its
    /// spec spells it; empty for an entry that does not exist.
    pub fn name(&self, id: UnitId, k: usize) -> &str {
        let i = id.0 as usize;
        let (Some(&from), Some(&to)) = (self.at.get(i), self.at.get(i + 1)) else {
            return "";
        };
        let j = from as usize + k;
        if j >= to as usize {
            return "";
        }
        match (self.name_at.get(j), self.name_at.get(j + 1)) {
            (Some(&a), Some(&b)) => self.names.get(a as usize..b as usize).unwrap_or(""),
            _ => "",
        }
    }
}

/// Every unit's name, in one shared table: what a published state or probe
/// change names its unit by (`UnitName::in_table`: the table's one
/// reference count and the unit's index). The engine reads no name to
/// publish; the copy this replaced (`to_string` of the name) was, at ten
/// thousand units, a cold read of the name, an allocation and a free on
/// every published change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitNames {
    /// Indexed by unit id; replaced whole (never changed) by `install`.
    table: Arc<NameTable>,
}

impl UnitNames {
    /// Unit `id`'s name (empty for an unknown id).
    #[cfg(test)]
    pub fn of(&self, id: UnitId) -> &str {
        self.table.get(id.0)
    }

    /// Unit `id`'s name, for an event.
    pub fn shared(&self, id: UnitId) -> UnitName {
        UnitName::in_table(&self.table, id.0)
    }
}

/// Unit ids per unit, all in one array (`ids[at[i]..at[i + 1]]` is unit
/// `i`'s): the reverse dependency lists a stop asks of every unit in a
/// crash's chain (`dependents_down`). As one `Vec` per unit each ask cost
/// two dependent misses at ten thousand units (the unit's `Vec` header in
/// an array of them, then its separately allocated list) before the first
/// dependent's record; here the offsets are 4 bytes a unit and the lists
/// lie side by side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdLists {
    at: Vec<u32>,
    ids: Vec<UnitId>,
}

impl IdLists {
    /// The lists of `lists` in one array, in the same order.
    pub fn flatten(lists: &[Vec<UnitId>]) -> IdLists {
        let mut at = Vec::with_capacity(lists.len() + 1);
        let mut ids = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        at.push(0);
        for l in lists {
            ids.extend_from_slice(l);
            at.push(ids.len() as u32);
        }
        IdLists { at, ids }
    }

    /// Unit `id`'s list (empty for an unknown id).
    pub fn of(&self, id: UnitId) -> &[UnitId] {
        let i = id.0 as usize;
        match (self.at.get(i), self.at.get(i + 1)) {
            (Some(&a), Some(&b)) => self.ids.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// Indexed by unit id (a unit's name is the same in every spec it
    /// runs: a reload keeps it, a rename is another unit).
    pub names: UnitNames,
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
        let mut names = NameTable::default();
        for s in specs {
            names.push(&s.name);
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
        r.names = UnitNames {
            table: Arc::new(names),
        };
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each unit's list, in order, whatever the lengths around it; an
    /// unknown id has none.
    #[test]
    fn id_lists_flatten_in_order() {
        let lists = vec![
            vec![UnitId(3), UnitId(1)],
            vec![],
            vec![UnitId(0)],
            vec![UnitId(2), UnitId(2), UnitId(4)],
        ];
        let flat = IdLists::flatten(&lists);
        for (i, l) in lists.iter().enumerate() {
            assert_eq!(flat.of(UnitId(i as u32)), l.as_slice());
        }
        assert!(flat.of(UnitId(4)).is_empty());
        assert!(IdLists::default().of(UnitId(0)).is_empty());
    }

    /// Each entry's name is the spec's, in the spec's order, whatever the
    /// lengths of the lists around it; past a list's end there is none.
    #[test]
    fn names_beside_the_ids() {
        let by_name: HashMap<String, UnitId> =
            [("a".to_string(), UnitId(0)), ("bb".to_string(), UnitId(1))].into();
        let lists: [&[&str]; 4] = [&["bb", "zz"], &[], &["a"], &["ccc", "a", "bb"]];
        let mut l = Lists::default();
        for names in lists {
            let v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            l.push(v.iter(), &by_name);
        }
        for (i, names) in lists.iter().enumerate() {
            let id = UnitId(i as u32);
            assert_eq!(l.of(id).len(), names.len());
            for (k, n) in names.iter().enumerate() {
                assert_eq!(l.name(id, k), *n);
                assert_eq!(l.of(id)[k], by_name.get(*n).copied());
            }
            assert_eq!(l.name(id, names.len()), "");
        }
        assert_eq!(l.name(UnitId(9), 0), "");
    }
}

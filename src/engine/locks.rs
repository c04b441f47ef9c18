//! In-memory model of maintenance locks.
//!
//! Owns: who holds which unit down, as the engine sees it, split into the
//! state requested by operators (`wanted`) and the state known to be on disk
//! (`durable`). Must never: do I/O; let a release take effect before it is
//! durable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One holder's lock on one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub holder: String,
    pub reason: String,
    /// Wall-clock time the lock was taken, milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
}

/// unit name -> holders (in the order they took the lock).
pub type LockMap = BTreeMap<String, Vec<Holder>>;

/// Is the lock state known? `Unknown` is fail-closed: only essential units
/// start automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    Known,
    Unknown(String),
}

/// The engine's view of the locks. A new lock holds a unit down as soon as
/// it is in `wanted`; a release frees it only once it is gone from
/// `durable` too (invariant 3).
#[derive(Debug, Clone, PartialEq)]
pub struct LockModel {
    /// What operators asked for, possibly not yet on disk.
    pub wanted: LockMap,
    /// What the last successful write put on disk.
    pub durable: LockMap,
    pub state: LockState,
    /// Version of the last `PersistLocks` emitted.
    pub version: u64,
    /// Highest version known durable.
    pub persisted: u64,
    /// Snapshots in flight, by version, so an ack can update `durable`.
    pub inflight: BTreeMap<u64, LockMap>,
    /// Set while a `recover` is being written: the state becomes Known only
    /// once that write is durable.
    pub recovering: Option<u64>,
}

impl LockModel {
    pub fn new() -> LockModel {
        LockModel {
            wanted: LockMap::new(),
            durable: LockMap::new(),
            state: LockState::Unknown("lock state not loaded yet".to_string()),
            version: 0,
            persisted: 0,
            inflight: BTreeMap::new(),
            recovering: None,
        }
    }

    /// Holders keeping `unit` down: the union of wanted and durable, so a
    /// lock counts from the moment it is asked until its release is durable.
    /// No lock is wanted or on disk (what lets a decision skip the name).
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty() && self.durable.is_empty()
    }

    pub fn holders(&self, unit: &str) -> Option<Vec<Holder>> {
        let mut out: Vec<Holder> = self.wanted.get(unit).cloned().unwrap_or_default();
        if let Some(d) = self.durable.get(unit) {
            for h in d {
                if !out.iter().any(|o| o.holder == h.holder) {
                    out.push(h.clone());
                }
            }
        }
        if out.is_empty() { None } else { Some(out) }
    }

    pub fn unknown_reason(&self) -> Option<&str> {
        match &self.state {
            LockState::Known => None,
            LockState::Unknown(why) => Some(why),
        }
    }

    /// Record a new wanted state and return the version to persist.
    pub fn bump(&mut self) -> u64 {
        self.version += 1;
        self.inflight.insert(self.version, self.wanted.clone());
        self.version
    }

    /// A write finished. Writes complete in order; an ack covers every
    /// earlier version too.
    pub fn persisted(&mut self, version: u64, ok: bool) {
        if ok {
            if let Some(snapshot) = self.inflight.get(&version) {
                self.durable = snapshot.clone();
            }
            self.persisted = self.persisted.max(version);
            if self.recovering.is_some_and(|v| v <= version) {
                self.recovering = None;
                self.state = LockState::Known;
            }
        }
        self.inflight.retain(|v, _| *v > version);
    }
}

impl Default for LockModel {
    fn default() -> Self {
        LockModel::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str) -> Holder {
        Holder {
            holder: name.into(),
            reason: "r".into(),
            since_unix_ms: 0,
        }
    }

    #[test]
    fn release_counts_only_once_durable() {
        let mut m = LockModel::new();
        m.state = LockState::Known;
        m.wanted.insert("db".into(), vec![h("alice")]);
        let v1 = m.bump();
        assert!(m.holders("db").is_some(), "new lock holds at once");
        m.persisted(v1, true);
        m.wanted.remove("db");
        let v2 = m.bump();
        assert!(m.holders("db").is_some(), "release not durable yet");
        m.persisted(v2, false);
        assert!(m.holders("db").is_some(), "failed release keeps holding");
        let v3 = m.bump();
        m.persisted(v3, true);
        assert!(m.holders("db").is_none());
    }
}

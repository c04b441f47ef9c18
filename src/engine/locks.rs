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

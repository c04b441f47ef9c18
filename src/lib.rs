//! supd — a service supervisor that can run as PID 1.
//!
//! The shape (see ../shared/ARCHITECTURE.md):
//!
//! - **Pure core** (no I/O, no clock, no tokio): `engine` (events in, actions
//!   out), `unit` (validated specs), `graph` (dependency order and cycles),
//!   `mounts` (mountinfo parsing and checks), `protocol` (wire types),
//!   `analyze` (blame, critical chain, SVG timeline and graph renderers for
//!   supctl — PID 1 records and answers with data, never renders), and
//!   `import` (systemd unit files to supd units; its `command` alone reads
//!   and writes files).
//! - **World** (`world/`): everything that touches the kernel — spawning
//!   (`spawn`: clone(CLONE_VM|CLONE_VFORK), no fork), the single reaper, the
//!   mount watcher, the lock store, the control socket, signals, PID-1
//!   duties, the log sink (`log`, writing through `line_writer`, which never
//!   blocks on a stalled reader), host checks of a unit set (`host_check`),
//!   the one way to open a file someone else controls (`regular_file`:
//!   only regular files, never blocking), per-unit logs (`logstore`:
//!   captured output in rotated files, written and read off the loop), the
//!   monitoring endpoint (`http`: /metrics, /healthz, /readyz) and giving
//!   start-up memory back (`trim`).
//! - **Driver** (`driver/`): the only place the two meet; a current-thread
//!   tokio loop that turns the world into `Event`s, feeds the engine and
//!   carries out its `Action`s. It is a router: the process table and
//!   reaper (`procs`), the persistence thread (`disk`), the reading thread
//!   for reloads and recovery files (`reader`) and request dispatch
//!   (`dispatch`, which also fans the engine's published changes out to
//!   `supctl events` subscribers) are its submodules.

pub mod analyze;
pub mod cli;
pub mod config;
pub mod docs;
pub mod driver;
pub mod engine;
pub mod error;
pub mod graph;
pub mod import;
pub mod mounts;
pub mod protocol;
pub mod unit;
pub mod world;

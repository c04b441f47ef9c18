//! Fuzzing on stable Rust: property tests for every decoder that reads what
//! an outsider controls.
//!
//! Targets: unit files (text, structured, mutated real units, whole
//! directories), mountinfo, the control protocol, the lock file and sd_notify
//! datagrams. The property is the same everywhere: no panic, no hang, the
//! answer is an error or a *valid* value (checked, not assumed: a parsed
//! unit set is also run through the engine, a parsed mount table answers
//! path lookups like a model of the kernel's mount tree), and
//! `decode(encode(x)) == x` where supd has an encoder (lock file, protocol)
//! or where the other side's encoder is specified (mountinfo's octal
//! escapes, sd_notify's `KEY=VALUE` lines).
//!
//! Why an integration test and not `#[cfg(test)]` modules: every target goes
//! through the public entry points supd itself uses on outside input, so the
//! fuzz cannot lean on internals a real input never reaches; it is one
//! binary that CI and a soak run alike (`cargo test --test fuzz`); and it
//! needs no root, so it runs everywhere.
//!
//! Inputs: proptest strategies (`proptest` with `std` only: no fork, no
//! persistence files in the tree) plus a corpus of real inputs (every unit in
//! `units/`, `packaging/vm/units/` and `tests/fixtures/`, mountinfo captured
//! from real kernels under `tests/corpus/mountinfo/`, request lines of every
//! supctl command, a v1 lock file, sd_notify datagrams), fed as is and
//! mutated. Sizes are bounded (a few KiB), so a case that runs for seconds is
//! a hang: a watchdog aborts the run after `SUPD_FUZZ_CASE_LIMIT_MS`
//! (default 20 s) and prints the input.
//!
//! Knobs: `SUPD_FUZZ_CASES` (default 1000; heavier targets run a fraction),
//! `SUPD_FUZZ_SEED` to replay (every run prints its seed). Soak:
//! `SUPD_FUZZ_CASES=2000000 cargo test --release --test fuzz -- --test-threads=2`.

mod harness;
mod locks;
mod mountinfo;
mod notify;
mod protocol;
mod units;

use harness::*;

#[test]
fn corpus_inventory() {
    // The corpus README says where every file came from; keep both in step.
    let readme = std::fs::read_to_string(repo().join("tests/corpus/README.md")).unwrap_or_default();
    for p in files(&repo().join("tests/corpus"), "") {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name != "README.md" {
            assert!(
                readme.contains(&name),
                "{name} not described in tests/corpus/README.md"
            );
        }
    }
}

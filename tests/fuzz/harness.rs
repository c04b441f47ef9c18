//! The fuzz harness: case counts, seeds, the hang watchdog, corpus files,
//! byte-level mutations and the cheap text generators every target shares.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use proptest::test_runner::{Config, RngSeed, TestRunner};
use std::thread::ThreadId;

pub(crate) fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Cases for a target: `SUPD_FUZZ_CASES` divided by the target's weight.
pub(crate) fn cases(divisor: u32) -> u32 {
    let total = env_u64("SUPD_FUZZ_CASES")
        .unwrap_or(1000)
        .min(u32::MAX as u64) as u32;
    (total / divisor.max(1)).max(1)
}

/// One seed per run, printed, so a failure replays with `SUPD_FUZZ_SEED`.
pub(crate) fn base_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        env_u64("SUPD_FUZZ_SEED").unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ ((std::process::id() as u64) << 32)
        })
    })
}

pub(crate) fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across runs and Rust versions (unlike DefaultHasher).
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

pub(crate) struct Running {
    target: &'static str,
    since: Instant,
    input: Box<dyn Debug + Send>,
}

pub(crate) fn running() -> &'static Mutex<HashMap<ThreadId, Running>> {
    static RUNNING: OnceLock<Mutex<HashMap<ThreadId, Running>>> = OnceLock::new();
    RUNNING.get_or_init(|| {
        let limit = Duration::from_millis(env_u64("SUPD_FUZZ_CASE_LIMIT_MS").unwrap_or(20_000));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let Ok(map) = running().lock() else { continue };
                for r in map.values() {
                    if r.since.elapsed() > limit {
                        eprintln!(
                            "fuzz {}: HANG — one case ran for more than {limit:?} (seed {}). Input:\n{:?}",
                            r.target,
                            base_seed(),
                            r.input
                        );
                        std::process::abort();
                    }
                }
            }
        });
        Mutex::new(HashMap::new())
    })
}

pub(crate) struct Watched;

impl Watched {
    fn start<T: Debug + Clone + Send + 'static>(target: &'static str, input: &T) -> Watched {
        if let Ok(mut m) = running().lock() {
            m.insert(
                std::thread::current().id(),
                Running {
                    target,
                    since: Instant::now(),
                    input: Box::new(input.clone()),
                },
            );
        }
        Watched
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(mut m) = running().lock() {
            m.remove(&std::thread::current().id());
        }
    }
}

/// Run `test` on `cases(divisor)` inputs from `strategy`; a failure (an
/// `Err` or a panic) is shrunk to a small input and reported with the seed.
pub(crate) fn fuzz<S>(
    target: &'static str,
    divisor: u32,
    strategy: S,
    test: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug + Clone + Send + 'static,
{
    let n = cases(divisor);
    let seed = base_seed();
    let config = Config {
        cases: n,
        rng_seed: RngSeed::Fixed(seed ^ name_hash(target)),
        failure_persistence: None,
        max_shrink_time: 60_000,
        max_global_rejects: n.saturating_mul(4),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let t0 = Instant::now();
    let result = runner.run(&strategy, |v| {
        let _w = Watched::start(target, &v);
        test(&v)
    });
    match result {
        Ok(()) => eprintln!(
            "fuzz {target}: {n} cases passed in {:.1?} (seed {seed})",
            t0.elapsed()
        ),
        Err(e) => panic!(
            "fuzz {target} failed (replay: SUPD_FUZZ_SEED={seed} cargo test --test fuzz {target}):\n{e}"
        ),
    }
}

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (recursively) whose name ends in `ext`, sorted.
pub(crate) fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("corpus {}: {e}", p.display())))
        .collect()
}

// -------------------------------------------------------------- mutations

/// One edit of a corpus input. Positions are fractions of the input length
/// so that shrinking keeps them meaningful.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    FlipBit {
        at: u16,
        bit: u8,
    },
    SetByte {
        at: u16,
        byte: u8,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Delete {
        at: u16,
        len: u8,
    },
    Duplicate {
        at: u16,
        len: u8,
        to: u16,
    },
    Splice {
        from: usize,
        at: u16,
        len: u8,
        to: u16,
    },
    Truncate {
        at: u16,
    },
}

pub(crate) fn pos(frac: u16, len: usize) -> usize {
    (frac as usize * (len + 1)) / (u16::MAX as usize + 1)
}

pub(crate) fn edit_strategy(dictionary: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    let token = prop_oneof![
        select(dictionary).prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 1..6),
    ];
    prop_oneof![
        (any::<u16>(), 0u8..8).prop_map(|(at, bit)| Edit::FlipBit { at, bit }),
        (any::<u16>(), any::<u8>()).prop_map(|(at, byte)| Edit::SetByte { at, byte }),
        (any::<u16>(), token).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<u16>(), 1u8..64).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<u16>(), 1u8..64, any::<u16>()).prop_map(|(at, len, to)| Edit::Duplicate {
            at,
            len,
            to
        }),
        (any::<usize>(), any::<u16>(), 1u8..128, any::<u16>())
            .prop_map(|(from, at, len, to)| { Edit::Splice { from, at, len, to } }),
        any::<u16>().prop_map(|at| Edit::Truncate { at }),
    ]
}

pub(crate) fn apply(input: &[u8], edits: &[Edit], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    for e in edits {
        let n = b.len();
        match e {
            Edit::FlipBit { at, bit } if n > 0 => {
                let i = pos(*at, n - 1);
                b[i] ^= 1 << bit;
            }
            Edit::SetByte { at, byte } if n > 0 => {
                let i = pos(*at, n - 1);
                b[i] = *byte;
            }
            Edit::Insert { at, bytes } => {
                let i = pos(*at, n);
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete { at, len } => {
                let i = pos(*at, n);
                let j = (i + *len as usize).min(n);
                b.drain(i..j);
            }
            Edit::Duplicate { at, len, to } => {
                let i = pos(*at, n);
                let j = (i + *len as usize).min(n);
                let piece = b[i..j].to_vec();
                let k = pos(*to, n);
                b.splice(k..k, piece);
            }
            Edit::Splice { from, at, len, to } if !corpus.is_empty() => {
                let src = &corpus[from % corpus.len()];
                let i = pos(*at, src.len());
                let j = (i + *len as usize).min(src.len());
                let k = pos(*to, n);
                b.splice(k..k, src[i..j].iter().copied());
            }
            Edit::Truncate { at } => {
                let i = pos(*at, n);
                b.truncate(i);
            }
            _ => {}
        }
        b.truncate(64 * 1024);
    }
    b
}

pub(crate) fn mutated(
    corpus: Arc<Vec<Vec<u8>>>,
    dictionary: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    let n = corpus.len();
    (
        0..n,
        proptest::collection::vec(edit_strategy(dictionary), 1..5),
    )
        .prop_map(move |(i, edits)| apply(&corpus[i], &edits, &corpus))
}

/// Characters worth more than their share: separators, quotes, escapes,
/// controls, non-ASCII of every UTF-8 length, a BOM, a surrogate's
/// neighbours, the largest code point.
pub(crate) const ODD_CHARS: &[char] = &[
    '\0',
    '\n',
    '\r',
    '\t',
    '\u{7f}',
    '"',
    '\'',
    '\\',
    '=',
    '[',
    ']',
    '{',
    '}',
    '#',
    '/',
    '.',
    ',',
    ' ',
    'é',
    'ü',
    '√',
    '\u{feff}',
    '\u{2028}',
    '\u{d7ff}',
    '\u{e000}',
    '\u{fffd}',
    '𝕏',
    '\u{10ffff}',
];

/// Text up to `max` bytes. Built from bytes (cheap to generate and to
/// shrink even in a debug build, where a vector of per-char strategies
/// costs ~100 ms a case): ASCII
/// bytes are themselves, the rest pick from `ODD_CHARS`.
pub(crate) fn any_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(|bytes| {
        bytes
            .iter()
            .map(|&b| {
                if b < 0x80 {
                    b as char
                } else {
                    ODD_CHARS[b as usize % ODD_CHARS.len()]
                }
            })
            .collect()
    })
}

/// Any string: the cheap generator mostly, all of Unicode sometimes.
pub(crate) fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![4 => any_text(64), 1 => any::<String>()]
}

/// A short word: mostly identifier-like, sometimes anything.
pub(crate) fn word(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z][a-z0-9_.@-]{0,10}",
        1 => any_text(max),
    ]
}

/// Unit names that collide on purpose (dependencies, lock maps).
pub(crate) const UNIT_NAMES: &[&str] = &["a", "b", "c", "db", "web", "x.y@1", "missing"];

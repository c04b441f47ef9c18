//! The lock file: round trip, corruption and torn writes, arbitrary bytes.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::harness::*;
use supd::engine::locks::{Holder, LockMap};
use supd::protocol::{self, Response};
use supd::world::lock_store;

fn lock_map() -> impl Strategy<Value = LockMap> {
    let holder =
        (any_string(), any_string(), any::<u64>()).prop_map(|(holder, reason, since_unix_ms)| {
            Holder {
                holder,
                reason,
                since_unix_ms,
            }
        });
    proptest::collection::btree_map(
        prop_oneof![select(UNIT_NAMES).prop_map(String::from), any_string()],
        proptest::collection::vec(holder, 1..4),
        0..6,
    )
}

const LOCK_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "\"generation\": 18446744073709551615",
    "\"version\": 2",
    "\"format\": \"supd-locks\"",
    "\"checksum\": \"crc32:00000000\"",
    "\"locks\": {}",
    "\"since_unix_ms\": -1",
    "\\u0000",
    "\n",
    " ",
];

#[test]
fn lock_file_corpus_decodes_forever() {
    // A v1 lock file as supd wrote it: every later supd must read it.
    let bytes = std::fs::read(repo().join("tests/corpus/locks/v1-locks.json")).unwrap_or_default();
    let d = lock_store::decode(&bytes).expect("v1 lock file decodes");
    assert_eq!(d.generation, 42);
    assert_eq!(d.locks["db"][0].holder, "alice");
    assert_eq!(d.locks["db"].len(), 2);
    assert_eq!(lock_store::decode(&lock_store::encode(&d.locks, 42)), Ok(d));
}

#[test]
fn lock_file_round_trip() {
    fuzz(
        "lock_file_round_trip",
        1,
        (lock_map(), any::<u64>()),
        |(locks, generation)| {
            let bytes = lock_store::encode(locks, *generation);
            let d = lock_store::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(d.generation, *generation);
            prop_assert_eq!(&d.locks, locks);
            Ok(())
        },
    );
}

#[test]
fn lock_file_corruption_is_detected() {
    // Any edit of a valid file decodes to an error or to exactly what was
    // written: never to a different lock state (that would be a silent
    // loss or an invented lock). A torn write — the new file's head on the
    // old file's tail — is one of the two or an error.
    fuzz(
        "lock_file_corruption_is_detected",
        1,
        (
            lock_map(),
            lock_map(),
            any::<u64>(),
            proptest::collection::vec(edit_strategy(LOCK_WORDS), 1..4),
            any::<u16>(),
        ),
        |(old, new, generation, edits, cut)| {
            let g = *generation % (u64::MAX - 1);
            let a = lock_store::encode(old, g);
            let b = lock_store::encode(new, g + 1);
            let corpus = vec![a.clone(), b.clone()];
            match lock_store::decode(&apply(&a, edits, &corpus)) {
                Ok(d) => {
                    prop_assert_eq!(d.generation, g, "edited file decoded to another generation");
                    prop_assert_eq!(&d.locks, old, "edited file decoded to other locks");
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            let k = pos(*cut, b.len());
            let mut torn = b[..k].to_vec();
            torn.extend_from_slice(a.get(k..).unwrap_or_default());
            if let Ok(d) = lock_store::decode(&torn) {
                prop_assert!(
                    (d.generation == g && &d.locks == old)
                        || (d.generation == g + 1 && &d.locks == new),
                    "torn write decoded to a third state"
                );
            }
            Ok(())
        },
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // serde_json's recursion limit must hold on every JSON decoder supd
    // runs on outside input (a test thread has a 2 MiB stack, less than
    // supd's main thread).
    for open in ["[", "{\"a\":", "{\"v\":1,\"cmd\":"] {
        let deep = open.repeat(1_000_000).into_bytes();
        assert!(protocol::decode_request(&deep).is_err());
        assert!(lock_store::decode(&deep).is_err());
        assert!(serde_json::from_slice::<Response>(&deep).is_err());
    }
}

#[test]
fn lock_file_arbitrary_bytes() {
    fuzz(
        "lock_file_arbitrary_bytes",
        1,
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            any::<String>().prop_map(String::into_bytes),
            (1usize..2_000).prop_map(|n| "[".repeat(n).into_bytes()),
        ],
        |bytes| {
            if let Ok(d) = lock_store::decode(bytes) {
                // Only a self-consistent file decodes: re-encoding is stable.
                prop_assert_eq!(
                    lock_store::decode(&lock_store::encode(&d.locks, d.generation)),
                    Ok(d)
                );
            }
            Ok(())
        },
    );
}

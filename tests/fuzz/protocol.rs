//! The control protocol: request lines decoded as supd does, encoded as
//! supctl does, and answers as supctl reads them.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::harness::*;
use supd::protocol::{self, Request, Response};
use supd::unit;

fn request_strategy() -> impl Strategy<Value = Request> {
    let s = || any_string();
    let os = || proptest::option::of(any_string());
    prop_oneof![
        os().prop_map(|unit| Request::Status { unit }),
        s().prop_map(|unit| Request::Start { unit }),
        s().prop_map(|unit| Request::Stop { unit }),
        s().prop_map(|unit| Request::Restart { unit }),
        s().prop_map(|unit| Request::Reset { unit }),
        s().prop_map(|unit| Request::Why { unit }),
        s().prop_map(|unit| Request::ReloadUnit { unit }),
        Just(Request::Reload),
        (s(), s(), os()).prop_map(|(unit, reason, holder)| Request::MaintenanceOn {
            unit,
            reason,
            holder
        }),
        (s(), os(), any::<bool>(), any::<bool>()).prop_map(|(unit, holder, force, dry_run)| {
            Request::MaintenanceOff {
                unit,
                holder,
                force,
                dry_run,
            }
        }),
        Just(Request::MaintenanceList),
        proptest::option::of(any::<usize>()).prop_map(|limit| Request::MaintenanceLog { limit }),
        (os(), any::<bool>())
            .prop_map(|(from, accept_empty)| Request::MaintenanceRecover { from, accept_empty }),
        select(
            &[
                unit::Priority::Optional,
                unit::Priority::Normal,
                unit::Priority::Critical
            ][..]
        )
        .prop_map(|level| Request::Shed { level }),
        Just(Request::Unshed),
        Just(Request::Poweroff),
        Just(Request::Reboot),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn protocol_corpus() -> Vec<Vec<u8>> {
    let text =
        std::fs::read(repo().join("tests/corpus/protocol/v1-requests.jsonl")).unwrap_or_default();
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect()
}

const JSON_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "1e999",
    "-0",
    "\\u0000",
    "\\ud800",
    "\"v\":1",
    "\"v\":2",
    "\"v\":-1",
    "\"cmd\":",
    "\"unit\":",
    "\"status\"",
    "\"maintenance-on\"",
    "\"reason\":",
    "\"holder\":",
    "\"force\":true",
    "\"limit\":18446744073709551616",
    "\"level\":\"critical\"",
    "\n",
];

#[test]
fn protocol_corpus_decodes_forever() {
    // Request lines as supctl of protocol v1 sends them: a later supd must
    // keep decoding every one to the same request (fields are only added).
    let corpus = protocol_corpus();
    assert!(corpus.len() >= 17, "one line per command");
    let mut cmds = BTreeSet::new();
    for line in &corpus {
        let req = protocol::decode_request(line)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(line)));
        let again = protocol::decode_request(&protocol::encode_request(&req));
        assert_eq!(again.as_ref(), Ok(&req));
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        cmds.insert(v["cmd"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(cmds.len(), 17, "every command: {cmds:?}");
}

#[test]
fn protocol_request_round_trip() {
    fuzz(
        "protocol_request_round_trip",
        1,
        request_strategy(),
        |req| {
            let line = protocol::encode_request(req);
            prop_assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
            prop_assert_eq!(protocol::decode_request(&line), Ok(req.clone()));
            Ok(())
        },
    );
}

#[test]
fn protocol_decode_arbitrary() {
    let corpus = Arc::new(protocol_corpus());
    fuzz(
        "protocol_decode_arbitrary",
        1,
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1024),
            mutated(corpus, JSON_WORDS),
            // Deep nesting must be refused, not overflow the stack.
            (
                1usize..2_000,
                select(&["[", "{\"a\":", "{\"v\":1,\"cmd\":"][..])
            )
                .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        ],
        |bytes| {
            match protocol::decode_request(bytes) {
                Ok(req) => {
                    // Whatever supd accepted means what it says when sent
                    // back, and the read-only test is total.
                    let _ = req.mutates();
                    prop_assert_eq!(
                        protocol::decode_request(&protocol::encode_request(&req)),
                        Ok(req)
                    );
                }
                Err(msg) => prop_assert!(!msg.is_empty()),
            }
            // supctl's side: an answer line.
            let _ = serde_json::from_slice::<Response>(bytes);
            Ok(())
        },
    );
}

#[test]
fn protocol_response_round_trip() {
    fuzz(
        "protocol_response_round_trip",
        1,
        (any::<bool>(), any_string(), json_value()),
        |(ok, message, data)| {
            let r = Response {
                v: protocol::VERSION,
                ok: *ok,
                message: message.clone(),
                data: data.clone(),
                status: None,
            };
            let line = serde_json::to_vec(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!line.contains(&b'\n'), "a response must stay one line");
            let back: Response =
                serde_json::from_slice(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, r);
            Ok(())
        },
    );
}

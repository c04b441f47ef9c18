//! sd_notify datagrams: mutated real datagrams, arbitrary bytes, and
//! sd_notify(3)'s `KEY=VALUE` lines rendered and parsed back.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::harness::*;
use supd::engine::NotifyMsg;
use supd::world::notify;

/// How a service writes a datagram (sd_notify(3)): one `KEY=VALUE` per line.
fn render_notify(m: &NotifyMsg) -> String {
    let mut lines = Vec::new();
    if m.ready {
        lines.push("READY=1".to_string());
    }
    if m.stopping {
        lines.push("STOPPING=1".to_string());
    }
    if m.watchdog {
        lines.push("WATCHDOG=1".to_string());
    }
    if let Some(s) = &m.status {
        lines.push(format!("STATUS={s}"));
    }
    if let Some(p) = m.main_pid {
        lines.push(format!("MAINPID={p}"));
    }
    if m.reloading {
        lines.push("RELOADING=1".to_string());
    }
    if m.watchdog_trigger {
        lines.push("WATCHDOG=trigger".to_string());
    }
    if let Some(u) = m.extend_timeout_usec {
        lines.push(format!("EXTEND_TIMEOUT_USEC={u}"));
    }
    if let Some(u) = m.monotonic_usec {
        lines.push(format!("MONOTONIC_USEC={u}"));
    }
    if let Some(e) = m.errno {
        lines.push(format!("ERRNO={e}"));
    }
    lines.join("\n")
}

fn check_notify(text: &str, m: &NotifyMsg) -> Result<(), TestCaseError> {
    let has = |l: &str| text.lines().any(|x| x == l);
    prop_assert_eq!(m.ready, has("READY=1"));
    prop_assert_eq!(m.stopping, has("STOPPING=1"));
    prop_assert_eq!(m.watchdog, has("WATCHDOG=1"));
    if let Some(s) = &m.status {
        prop_assert!(s.chars().count() <= 512, "STATUS not bounded");
        prop_assert!(!s.contains('\n'));
    }
    if let Some(p) = m.main_pid {
        prop_assert!(p > 0, "MAINPID={p} accepted (not a process id)");
    }
    Ok(())
}

const NOTIFY_WORDS: &[&str] = &[
    "READY=1",
    "READY=0",
    "STOPPING=1",
    "WATCHDOG=1",
    "STATUS=",
    "MAINPID=",
    "MAINPID=-1",
    "MAINPID=0",
    "MAINPID=2147483648",
    "\n",
    "=",
    "\r",
    "\u{0}",
    "\u{ff}",
    "EXTEND_TIMEOUT_USEC=",
    "FDSTORE=1",
];

#[test]
fn notify_corpus_and_mutations() {
    let text = std::fs::read_to_string(repo().join("tests/corpus/notify/datagrams.jsonl"))
        .unwrap_or_default();
    let corpus: Vec<Vec<u8>> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<String>(l).ok())
        .map(String::into_bytes)
        .collect();
    assert!(corpus.len() >= 5);
    for d in &corpus {
        let s = String::from_utf8_lossy(d);
        check_notify(&s, &notify::parse(&s)).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    }
    fuzz(
        "notify_datagram_mutated",
        1,
        prop_oneof![
            mutated(Arc::new(corpus), NOTIFY_WORDS),
            proptest::collection::vec(any::<u8>(), 0..4096),
        ],
        |bytes| {
            // The datagram buffer is 4096 bytes; the reader decodes lossily.
            let bytes = &bytes[..bytes.len().min(4096)];
            let text = String::from_utf8_lossy(bytes);
            check_notify(&text, &notify::parse(&text))
        },
    );
}

#[test]
fn notify_render_then_parse() {
    let msg = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any_text(600).prop_map(|t| {
            let t: String = t
                .chars()
                .filter(|c| *c != '\n' && *c != '\r')
                .take(512)
                .collect();
            t
        })),
        // Pid 1 is never a unit's main process: parse drops it.
        proptest::option::of(2i32..=i32::MAX),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(0i32..=i32::MAX),
            proptest::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                ready,
                stopping,
                watchdog,
                status,
                main_pid,
                (reloading, trigger, extend, errno, monotonic),
            )| {
                NotifyMsg {
                    ready,
                    stopping,
                    watchdog,
                    status,
                    main_pid,
                    reloading,
                    watchdog_trigger: trigger,
                    extend_timeout_usec: extend,
                    errno,
                    monotonic_usec: monotonic,
                    // Filled in at receipt, never parsed.
                    monotonic_at: None,
                }
            },
        );
    fuzz("notify_render_then_parse", 1, msg, |m| {
        let text = render_notify(m);
        prop_assert_eq!(&notify::parse(&text), m, "{:?}", text);
        Ok(())
    });
}

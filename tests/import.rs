//! `supd import`: systemd unit files in, supd units out that pass
//! `supd check`; refusals named, an error unless `--lossy`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/systemd")
}

fn supd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SUPD).args(args).output().expect("run supd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_writes_units_that_pass_check() {
    let dir = TempDir::new("import-ok");
    let out = dir.path().join("units");
    let f = fixtures();
    let (code, _, err) = supd(&[
        "import",
        "--out",
        out.to_str().unwrap(),
        f.join("echo-server.service").to_str().unwrap(),
        f.join("worker@.service").to_str().unwrap(),
        // An instance of the template, read from worker@.service.
        f.join("worker@blue.service").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for n in ["echo-server", "worker@", "worker@blue"] {
        assert!(out.join(format!("{n}.toml")).exists(), "{n}: {err}");
    }
    let echo = std::fs::read_to_string(out.join("echo-server.toml")).unwrap();
    // Commented with its sources, the empty argument kept.
    assert!(echo.contains("# ExecStart="), "{echo}");
    assert!(echo.contains("\"--unused\", \"\""), "{echo}");
    let blue = std::fs::read_to_string(out.join("worker@blue.toml")).unwrap();
    assert!(blue.contains("echo worker blue for blue"), "{blue}");
    assert!(blue.contains("requires = [\"echo-server\"]"), "{blue}");
    // Approximations are printed, with file and line.
    assert!(
        err.contains("echo-server.service:16: approximated: KillMode=:"),
        "{err}"
    );
    let (code, stdout, err) = supd(&["check", "--units", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{err}");
}

#[test]
fn refusals_are_errors_unless_lossy() {
    let dir = TempDir::new("import-refuse");
    let out = dir.path().join("units");
    let hardened = fixtures().join("hardened.service");
    let (code, _, err) = supd(&[
        "import",
        "--out",
        out.to_str().unwrap(),
        hardened.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("hardened.service:6: error: SystemCallLog=:"),
        "{err}"
    );
    assert!(err.contains("hardened.service:7: error: Slice=:"), "{err}");
    assert!(
        !out.join("hardened.toml").exists(),
        "written despite errors"
    );

    let (code, _, err) = supd(&[
        "import",
        "--lossy",
        "--out",
        out.to_str().unwrap(),
        hardened.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: not honoured"), "{err}");
    let text = std::fs::read_to_string(out.join("hardened.toml")).unwrap();
    assert!(
        text.contains("NOT honoured") && text.contains("SystemCallLog"),
        "{text}"
    );
    let (code, stdout, err) = supd(&["check", "--units", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{err}");
}

#[test]
fn without_out_units_are_printed_and_usage_errors_exit_2() {
    let (code, stdout, err) = supd(&[
        "import",
        fixtures().join("echo-server.service").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("# ---- echo-server.toml"), "{stdout}");
    let v: Result<toml::Value, _> = toml::from_str(&stdout);
    assert!(v.is_ok(), "{stdout}");
    assert_eq!(supd(&["import"]).0, 2);
    assert_eq!(supd(&["import", "--bogus", "x.service"]).0, 2);
    let (code, _, err) = supd(&["import", "/nonexistent/x.service"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/x.service"), "{err}");
    assert!(supd(&["--help"]).1.contains("import"));
}

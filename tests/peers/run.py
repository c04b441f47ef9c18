#!/usr/bin/env python3
"""Run tini's and dumb-init's own test suites against `supd --`, and
against the real tools for comparison, and print a side-by-side table.

The suites are the upstream releases fetched by tests/peers/fetch.sh (not
committed here). The only adaptation is the binary: a tiny launcher named
`dumb-init` (on PATH) or `tini` (in tini's BUILD_DIR) that execs
`supd -- ARGS` in place, so the process the tests watch is supd itself, with
the signal mask and dispositions the test gave it. Tests of options supd
does not have are not run against supd; each is listed with the reason.

Usage: run.py --supd PATH [--cache DIR] [--peers] [--markdown FILE]
Exit status: 1 if any applicable test fails against supd.
Needs: Debian's python3 with pytest, pytest-timeout, psutil, prctl (the
venv made by fetch.sh adds `bitmap`), cc, ps, unshare, root (tini's suite
runs subreapers; the zombie test runs a PID namespace).
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))

# dumb-init tests (node-id prefixes) that exercise something supd does not
# have. Everything else in the suite runs against supd.
DUMB_INIT_NA = [
    ("tests/cli_test.py",
     "dumb-init's own usage, --help and --version texts, its -c/-r flags"),
    ("tests/child_processes_test.py::test_fails_nonzero_with_bad_exec",
     "expects dumb-init's message text and passes -c; supd exits 127 with "
     "its own message (tests/shim.rs)"),
    ("tests/child_processes_test.py::test_no_setsid_doesnt_signal_entire_group",
     "-c (single-child mode): supd always signals the command's process group"),
    ("tests/child_processes_test.py::test_processes_dont_receive_term_on_exit_if_no_setsid",
     "-c (single-child mode): supd always sends SIGTERM to the group when the command exits"),
    ("tests/proxies_signals_test.py::test_default_rewrites_can_be_overriden_with_setsid_enabled",
     "-r (signal rewriting)"),
    ("tests/proxies_signals_test.py::test_ignored_signals_are_not_proxied",
     "-r (signal rewriting)"),
    ("tests/shell_background_test.py::test_shell_background_support_setsid",
     "setsid mode: there the child has a session of its own, so its group is "
     "orphaned and SIGTSTP must become SIGSTOP; supd's child keeps supd's "
     "session (as with tini) and gets SIGTSTP itself, which the non-setsid "
     "test checks"),
    ("tests/tty_test.py::test_sighup_sigcont_ignored_if_was_session_leader",
     "asserts dumb-init's -v debug lines about its TIOCNOTTY hand-off; supd "
     "never gives up its terminal, so it gets no such SIGHUP/SIGCONT"),
]

# What must have run against supd (a suite that fails to collect must not
# pass by running nothing).
DUMB_INIT_APPLICABLE = [
    "tests/exit_status_test.py::test_exit_status_regular_exit",
    "tests/exit_status_test.py::test_exit_status_terminated_by_signal",
    "tests/proxies_signals_test.py::test_proxies_signals",
    "tests/proxies_signals_test.py::test_proxies_signals_with_rewrite",
    "tests/child_processes_test.py::test_setsid_signals_entire_group",
    "tests/child_processes_test.py::test_all_processes_receive_term_on_exit_if_setsid",
    "tests/shell_background_test.py::test_shell_background_support_without_setsid",
    "tests/tty_test.py::test_tty",
    "tests/tty_test.py::test_child_gets_controlling_tty_if_we_had_one",
    "tests/cwd_test.py::test_working_directories",
]

# Cases of a parametrised dumb-init test that use -r (pytest -k keywords).
DUMB_INIT_NA_CASES = ("tests/proxies_signals_test.py::test_proxies_signals_with_rewrite",
                      ["rewrite_map1", "rewrite_map2", "rewrite_map3"])

# Sections of tini's test/run_inner_tests.py, by the line each prints.
TINI_SECTIONS = [
    (r"^Running reaping test \(\S*subreaper-proxy\.py ", "reaping (under a subreaper proxy)"),
    (r"^Running reaping test \(\S*/tini with env \{'TINI_SUBREAPER'", "reaping (as a subreaper)"),
    (r"^running signal test for: 15 ", "signals: TERM -> 143"),
    (r"^running signal test for: 10 ", "signals: USR1 -> 138"),
    (r"^running signal test for: 12 ", "signals: USR2 -> 140"),
    (r"^Running process group test \(environment variable\)", "process group signalled"),
    (r"^Running zombie reaping failure test", "warns when neither PID 1 nor subreaper"),
    (r"^Running signal configuration test", "child gets the original mask and ignored signals"),
    (r"^All done, tests as expected", None),
]
TINI_NA = {
    "warns when neither PID 1 nor subreaper":
        "tini's no-subreaper mode (built without it, or TINI_SUBREAPER unset); "
        "supd always makes itself a subreaper",
}
# With MINIMAL=1 tini's harness skips the tests of its flags (-e exit-code
# remapping, -s, -w, -g, -p): options supd does not have.
TINI_SKIPPED_BY_MINIMAL = "-e, -s, -w, -g and -p flag tests (options supd does not have)"

LAUNCHER_C = r"""
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char **a = calloc((size_t)argc + 2, sizeof *a);
    if (!a) return 126;
    a[0] = SUPD;
    a[1] = "--";
    for (int i = 1; i < argc; i++) a[i + 1] = argv[i];
    execv(SUPD, a);
    return 127;
}
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def extract(cache, work, pkg):
    tars = sorted(glob.glob(os.path.join(cache, "dl", pkg + "_*.orig.tar.*")))
    if not tars:
        sys.exit(f"run.py: no {pkg} tarball in {cache}/dl (run tests/peers/fetch.sh)")
    with tarfile.open(tars[-1]) as t:
        t.extractall(work)  # a Debian-verified upstream tarball
    dirs = [d for d in glob.glob(os.path.join(work, pkg + "-*")) if os.path.isdir(d)]
    return dirs[0]


def build_launcher(supd, path):
    src = path + ".c"
    with open(src, "w") as f:
        f.write(LAUNCHER_C)
    sh(["cc", "-O2", "-o", path, f'-DSUPD="{supd}"', src])


def run_dumb_init(srcdir, bindir, venv, tool, junit, only=None):
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{venv}/bin:{env['PATH']}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    args = [f"{venv}/bin/python", "-m", "pytest", "-p", "no:cacheprovider",
            "-q", "-o", "timeout=60", f"--junitxml={junit}"]
    if only:
        args += only
    else:
        args.append("tests/")
        if tool == "supd":
            for nodeid, _ in DUMB_INIT_NA:
                args += ["--deselect", nodeid]
            args += ["-k", " and ".join(f"not {k}" for k in DUMB_INIT_NA_CASES[1])]
    p = subprocess.run(args, cwd=srcdir, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=1800)
    return p.stdout


def failed_cases(junit):
    """Node ids of the failed cases in a junit file."""
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if any(c.tag in ("failure", "error") for c in case):
            out.append(case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", ""))
    return out


def junit_results(path, retried=None):
    """{test function node id: (passed, total, passed only on retry)}"""
    again = {}
    if retried:
        for case in ET.parse(retried).getroot().iter("testcase"):
            ok = not any(c.tag in ("failure", "error", "skipped") for c in case)
            again[case.get("classname", "") + "::" + case.get("name", "")] = ok
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        cls = case.get("classname", "")  # tests.proxies_signals_test
        name = re.sub(r"\[.*$", "", case.get("name", ""))
        key = cls.replace(".", "/") + ".py::" + name
        ok = not any(c.tag in ("failure", "error", "skipped") for c in case)
        late = not ok and again.get(cls + "::" + case.get("name", ""), False)
        p, t, r = out.get(key, (0, 0, 0))
        out[key] = (p + (ok or late), t + 1, r + late)
    return out


def run_zombies(srcdir, exe):
    """dumb-init's tests/test-zombies: run as PID 1 of a fresh PID namespace."""
    p = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL",
                        "--", exe, os.path.join(srcdir, "tests", "test-zombies")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return p.returncode == 0, p.stdout


def run_tini_inner(srcdir, builddir, venv, drop_failure_mode):
    script = os.path.join(srcdir, "test", "run_inner_tests.py")
    if drop_failure_mode:
        text = open(script).read()
        start = text.index('    # Run failing test.')
        end = text.index('    # Test that the signals are properly in place here.')
        text = text[:start] + text[end:]
        script = os.path.join(builddir, "run_inner_tests_supd.py")
        with open(script, "w") as f:
            f.write(text)
    env = dict(os.environ, SOURCE_DIR=srcdir, BUILD_DIR=builddir, MINIMAL="1",
               FORCE_SUBREAPER="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{venv}/bin:{env['PATH']}"
    p = subprocess.run([f"{venv}/bin/python", script], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900)
    return p.returncode, p.stdout


def tini_sections(output, dropped):
    """Each section passed if a later section (or the final line) began."""
    lines = output.splitlines()
    starts = []
    for pat, label in TINI_SECTIONS:
        rx = re.compile(pat)
        idx = [i for i, l in enumerate(lines) if rx.search(l)]
        starts.append((label, idx))
    res = {}
    done = any("All done, tests as expected" in l for l in lines)
    all_starts = sorted(i for _, idx in starts for i in idx)
    for label, idx in starts:
        if label is None:
            continue
        if label in dropped:
            res[label] = None
            continue
        if not idx:
            res[label] = False
            continue
        ok = True
        for i in idx:
            later = [j for j in all_starts if j > i]
            ok = ok and (bool(later) or done)
        res[label] = ok
    return res


def tini_smoke(exe):
    """The run-time checks of tini's ci/run_build.sh (the script itself also
    builds and packages tini), against `exe`."""
    def rc(args, stdin=None):
        return subprocess.run([exe] + args, input=stdin, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=60).returncode
    return {
        "true -> 0": rc(["true"]) == 0,
        "false -> non-zero": rc(["false"]) != 0,
        "missing command -> 127": rc(["foobar123"]) == 127,
        "not executable (/etc) -> 126": rc(["/etc"]) == 126,
        "stdin reaches the command (exit 0 piped into tini sh)": rc(["sh"], b"exit 0\n") == 0,
    }


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, tuple):
        p, t, r = v
        late = f" ({r} on retry)" if r else ""
        return f"pass {p}/{t}{late}" if p == t else f"**FAIL** {p}/{t}{late}"
    return "pass" if v else "**FAIL**"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supd", required=True)
    ap.add_argument("--cache", default=os.path.join(HERE, "..", "..", "target", "peer-suites"))
    ap.add_argument("--peers", action="store_true",
                    help="also run the suites against the installed tini and dumb-init")
    ap.add_argument("--markdown", help="write the table here too")
    a = ap.parse_args()
    cache = os.path.abspath(a.cache)
    venv = os.path.join(cache, "venv")
    supd = os.path.abspath(a.supd)
    work = tempfile.mkdtemp(prefix="supd-peers-")
    failed = []
    rows = []  # (suite, test, peer result, supd result, note)
    try:
        # dumb-init
        src = extract(cache, work, "dumb-init")
        runs = {}
        tools = ["supd"] + (["dumb-init"] if a.peers else [])
        zombies = {}
        for tool in tools:
            bindir = os.path.join(work, f"bin-{tool}")
            os.makedirs(bindir)
            exe = os.path.join(bindir, "dumb-init")
            if tool == "supd":
                build_launcher(supd, exe)
            else:
                os.symlink(shutil.which("dumb-init"), exe)
            junit = os.path.join(work, f"dumb-init-{tool}.xml")
            out = run_dumb_init(src, bindir, venv, tool, junit)
            print(f"===== dumb-init's suite against {tool} =====\n{out}")
            # Its tests allow 1.5 s for a process to react: on a loaded
            # machine a failure gets one more try, and the table says so.
            again = None
            failed_ids = failed_cases(junit)
            if failed_ids:
                again = os.path.join(work, f"dumb-init-{tool}-retry.xml")
                out = run_dumb_init(src, bindir, venv, tool, again, only=failed_ids)
                print(f"===== retry of {len(failed_ids)} failed case(s) against {tool} =====\n{out}")
            runs[tool] = junit_results(junit, again)
            ok, out = run_zombies(src, exe)
            print(f"===== dumb-init's tests/test-zombies as PID 1: {tool}: {'ok' if ok else 'FAILED'}\n{out}")
            zombies[tool] = ok
        whole = dict(DUMB_INIT_NA)
        partly = {DUMB_INIT_NA_CASES[0]}
        names = set().union(*[set(r) for r in runs.values()])
        names |= {n for n in whole if "::" in n}
        names |= set(DUMB_INIT_APPLICABLE)
        for name in sorted(names):
            file_na = whole.get(name.split("::")[0])
            fn_na = whole.get(name)
            s = runs["supd"].get(name)
            note = ""
            if file_na or fn_na:
                s, note = None, file_na or fn_na
            elif name in partly:
                note = "supd: the case without -r; the others test -r (signal rewriting)"
            if s is None and not note:
                s = False  # neither run nor excused: it did not run
            if s is not None and (s is False or s[0] != s[1]):
                failed.append(f"dumb-init {name}")
            peer = runs["dumb-init"].get(name, False) if a.peers else "-"
            rows.append(("dumb-init", name, peer, s, note))
        if not a.peers:
            for n, why in whole.items():
                if "::" not in n:
                    rows.append(("dumb-init", n, "-", None, why))
        rows.append(("dumb-init", "tests/test-zombies (as PID 1)",
                     zombies.get("dumb-init", "-"), zombies["supd"], ""))
        if not zombies["supd"]:
            failed.append("dumb-init tests/test-zombies")

        # tini
        src = extract(cache, work, "tini")
        tools = ["supd"] + (["tini"] if a.peers else [])
        tres = {}
        smoke = {}
        for tool in tools:
            build = os.path.join(work, f"tini-build-{tool}")
            os.makedirs(build)
            exe = os.path.join(build, "tini")
            if tool == "supd":
                build_launcher(supd, exe)
            else:
                os.symlink(shutil.which("tini"), exe)
            sh(["cc", "-o", os.path.join(build, "sigconf-test"),
                os.path.join(src, "test", "sigconf", "sigconf-test.c")])
            dropped = set(TINI_NA) if tool == "supd" else set()
            code, out = run_tini_inner(src, build, venv, drop_failure_mode=bool(dropped))
            print(f"===== tini's test/run_inner_tests.py (MINIMAL=1) against {tool}: exit {code} =====\n{out}")
            tres[tool] = tini_sections(out, dropped)
            smoke[tool] = tini_smoke(exe)
        for label, res in tres["supd"].items():
            if res is False:
                failed.append(f"tini {label}")
            peer = tres["tini"].get(label) if a.peers else "-"
            rows.append(("tini", label, peer, res, TINI_NA.get(label, "")))
        rows.append(("tini", TINI_SKIPPED_BY_MINIMAL, "not run", None, "MINIMAL=1 skips them for both"))
        for label, res in smoke["supd"].items():
            if not res:
                failed.append(f"tini smoke {label}")
            peer = smoke["tini"][label] if a.peers else "-"
            rows.append(("tini", "ci/run_build.sh: " + label, peer, res, ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = ["| suite | test | the tool itself | `supd --` | note |", "|---|---|---|---|---|"]
    for suite, test, peer, res, note in rows:
        shown = peer if peer in ("-", "not run") else fmt(peer)
        table.append(f"| {suite} | `{test}` | {shown} | {fmt(res)} | {note} |")
    text = "\n".join(table)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    if failed:
        print("FAILED against supd: " + "; ".join(failed))
        return 1
    print("peer suites: every applicable test passes against supd")
    return 0


if __name__ == "__main__":
    sys.exit(main())

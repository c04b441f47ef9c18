#!/usr/bin/env python3
"""How fast `supd -- sleep 30` stops on SIGTERM, next to tini and dumb-init.

Goals (issue 12): SIGTERM -> supd exited with 143 within 50 ms, as PID 1 of a
fresh PID namespace and not; `podman stop` of a container whose entrypoint is
`supd --` within 1 s with exit 143 (tini: about 155 ms). The tests assert the
behaviour (tests/shim.rs, tests/container.rs); this measures the times.

Usage (root): bench/shim_stop.py [--supd PATH] [--runs N] [--podman]
  --supd    the supd to measure (default target/release/supd, else debug)
  --podman  also time `podman stop` (images built with
            packaging/container/build.sh, plus busybox; tini-static for tini)
Prints one markdown table: median and worst time, and the exit codes seen.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs",
          "--events-backend=file", "--log-level=error"]
RUN = ["--network=none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_until(what, fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.002)
    raise SystemExit(f"timed out waiting for {what}")


def one_local(argv, pid1):
    pre = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL", "--"] if pid1 else []
    p = subprocess.Popen(pre + argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    init = p.pid
    if pid1:
        init = wait_until("unshare's child", lambda: (children(p.pid) or [None])[0])
    wait_until("sleep", lambda: any(comm(c) == "sleep" for c in children(init)))
    # A blocking wait (Popen.wait with a timeout polls, in steps of up to
    # 50 ms); a timer ends a tool that never exits.
    guard = threading.Timer(60, p.kill)
    guard.start()
    t0 = time.monotonic()
    os.kill(init, signal.SIGTERM)
    code = p.wait()
    took = (time.monotonic() - t0) * 1000
    guard.cancel()
    return took, code


def one_podman(image):
    name = f"supd-bench-{os.getpid()}-{time.monotonic_ns()}"
    try:
        subprocess.run(PODMAN + ["run", "-d", "--name", name] + RUN + [image],
                       check=True, stdout=subprocess.DEVNULL)
        pid = int(subprocess.run(PODMAN + ["inspect", "-f", "{{.State.Pid}}", name], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout)
        wait_until("sleep in the container", lambda: any(comm(c) == "sleep" for c in children(pid)))
        t0 = time.monotonic()
        subprocess.run(PODMAN + ["stop", "-t", "10", name], check=True, stdout=subprocess.DEVNULL)
        took = (time.monotonic() - t0) * 1000
        code = int(subprocess.run(PODMAN + ["inspect", "-f", "{{.State.ExitCode}}", name],
                                  check=True, stdout=subprocess.PIPE, text=True).stdout)
        return took, code
    finally:
        subprocess.run(PODMAN + ["rm", "-f", "-t", "0", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def row(label, results, goal):
    ms = [t for t, _ in results]
    codes = sorted({c for _, c in results})
    med = statistics.median(ms)
    met = "yes" if med < goal else "NO"
    return f"| {label} | {med:.1f} | {max(ms):.1f} | {codes} | {goal:.0f} ms: {met} |"


def build_images(supd_tag, tini_tag, ctx):
    env = dict(os.environ, ENGINE_ARGS=" ".join(PODMAN[1:]))
    subprocess.run([os.path.join(REPO, "packaging/container/build.sh"), supd_tag + "-base"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    os.makedirs(os.path.join(ctx, "bin"))
    shutil.copy("/bin/busybox", os.path.join(ctx, "bin", "busybox"))
    os.symlink("busybox", os.path.join(ctx, "bin", "sleep"))
    shutil.copy(shutil.which("tini-static") or "/usr/bin/tini-static", os.path.join(ctx, "tini"))
    files = {
        supd_tag: f'FROM {supd_tag}-base\nCOPY bin /bin\nENTRYPOINT ["/supd", "--"]\nCMD ["sleep", "30"]\n',
        tini_tag: 'FROM scratch\nCOPY bin /bin\nCOPY tini /tini\nENTRYPOINT ["/tini", "--"]\nCMD ["sleep", "30"]\n',
    }
    for tag, text in files.items():
        f = os.path.join(ctx, "Containerfile")
        with open(f, "w") as fh:
            fh.write(text)
        subprocess.run(PODMAN + ["build", "-q", "-f", f, "-t", tag, ctx], check=True,
                       stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supd")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--podman", action="store_true")
    a = ap.parse_args()
    supd = a.supd or next((p for p in (f"{REPO}/target/release/supd", f"{REPO}/target/debug/supd")
                           if os.path.exists(p)), None)
    if not supd:
        sys.exit("no supd built (cargo build --release)")
    tools = [("supd", [supd, "--"])]
    # tini as a subreaper (-s), as supd always is when not PID 1.
    for name, argv in (("tini", ["tini", "-s", "--"]), ("dumb-init", ["dumb-init"])):
        if shutil.which(argv[0]):
            tools.append((name, argv))
    lines = ["| what | median (ms) | worst (ms) | exit codes | goal |", "|---|---|---|---|---|"]
    for name, argv in tools:
        for pid1 in (False, True):
            res = [one_local(argv + ["sleep", "30"], pid1) for _ in range(a.runs)]
            where = "as PID 1" if pid1 else "not PID 1"
            lines.append(row(f"`{' '.join([name] + argv[1:])} sleep 30`, SIGTERM -> exit, {where}", res, 50))
    if a.podman:
        ctx = tempfile.mkdtemp(prefix="supd-bench-")
        tags = (f"localhost/supd-bench-supd:{os.getpid()}", f"localhost/supd-bench-tini:{os.getpid()}")
        try:
            build_images(*tags, ctx)
            for label, tag in (("supd", tags[0]), ("tini", tags[1])):
                res = [one_podman(tag) for _ in range(max(3, a.runs // 4))]
                lines.append(row(f"`podman stop`, entrypoint `{label} --`, CMD sleep 30", res, 1000))
        finally:
            for t in (tags[0], tags[0] + "-base", tags[1]):
                subprocess.run(PODMAN + ["rmi", "-f", t], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            shutil.rmtree(ctx, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

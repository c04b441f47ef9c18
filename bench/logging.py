#!/usr/bin/env python3
"""What per-unit logging costs supd (issue 14): numbers, not a test.

1. Throughput: one unit writes 100 MB/s of 100-byte lines to its captured
   stdout for DURATION seconds (bench/flood.c). Measured: supd's CPU (all
   its threads, split per thread), its memory over the run (RSS and PSS,
   sampled every second), the rate the writer achieved (a writer that
   supd does not drain fast enough is slowed by the full pipe), lines
   written/dropped (supd's /metrics) and the disk the unit's log takes.
   Twice: supd's own log at warn (lines go only to the unit log) and at
   info (each line is also echoed into supd's stderr, here /dev/null).
2. Start: N=500 services that each print one line at start, supd with
   `output = "capture"` (per-unit logs) against `output = "inherit"`,
   start-to-all-running as bench.py measures it, rounds interleaved.

Usage (root): bench/logging.sh, or
  python3 bench/logging.py BUILD_DIR SUPD SUPCTL OUT.md [--quick]
Reuses bench.py's Marks/Run (supd as PID 1 of a fresh PID namespace,
ended by pid; every wait bounded).
"""

import os
import random
import shutil
import socket
import statistics
import sys
import time
import urllib.request

BUILD, SUPD, SUPCTL, OUT = sys.argv[1:5]
QUICK = "--quick" in sys.argv
# --nice N: run supd (and what it starts) at this nice value, so that on a
# machine shared with other work the figures show supd's cost more than
# its share of a contended CPU.
NICE = None
if "--nice" in sys.argv:
    NICE = sys.argv[sys.argv.index("--nice") + 1]
sys.argv = sys.argv[:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (after argv is set: bench reads it on import)

FLOOD = os.path.join(BUILD, "flood")
SERVICE = os.path.join(BUILD, "service")
TMP = bench.TMP
RATE = 100_000_000
LINE = 100
DURATION = 10 if QUICK else 20
TICK = os.sysconf("SC_CLK_TCK")
lines = []


def out(s=""):
    lines.append(s)
    print(s, flush=True)


def niced(argv):
    # `nice` execs supd, which stays PID 1 of the namespace.
    return ["nice", "-n", NICE] + argv if NICE else argv


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_by_thread(pid):
    """{thread name: cpu seconds} for every thread of pid."""
    res = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        secs = (int(fields[11]) + int(fields[12])) / TICK
        res[name] = res.get(name, 0.0) + secs
    return res


def mem_kib(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def metric(port, name):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def throughput(level):
    base = os.path.join(TMP, f"flood-{level}")
    units = base + "-units"
    state = base + "-state"
    stats = base + ".stats"
    for p in (units, state):
        shutil.rmtree(p, ignore_errors=True)
    os.makedirs(units)
    with open(os.path.join(units, "flood.toml"), "w") as f:
        f.write(f'exec = ["{FLOOD}", "{RATE}", "{LINE}", "{DURATION}", "{stats}"]\n')
    port = free_port()
    argv = niced([SUPD, "--units", units, "--state-dir", state, "--socket", base + ".sock",
                  "--config", "/nonexistent", "--log-level", level, "--metrics", f"127.0.0.1:{port}"])
    marks = os.path.join(TMP, "marks")
    os.makedirs(marks, exist_ok=True)
    run = bench.Run(argv, marks)
    try:
        pid = run.pid
        time.sleep(1.0)  # the flood is under way; memory has grown to its working size
        c0, t0 = cpu_by_thread(pid), time.monotonic()
        mem = []
        end = t0 + DURATION - 2
        while time.monotonic() < end:
            mem.append(mem_kib(pid))
            time.sleep(1.0)
        c1, t1 = cpu_by_thread(pid), time.monotonic()
        deadline = time.monotonic() + DURATION + 10
        while not os.path.exists(stats) and time.monotonic() < deadline:
            time.sleep(0.2)
        sent, el = 0, 1.0
        if os.path.exists(stats):
            with open(stats) as f:
                s, e = f.read().split()
                sent, el = int(s), float(e)
        time.sleep(1.0)  # let the writer drain the queue
        written = metric(port, "supd_log_lines_written_total")
        dropped = metric(port, "supd_log_lines_dropped_total")
        disk = du(os.path.join(state, "logs", "flood"))
    finally:
        run.kill()
    wall = t1 - t0
    per = {k: (c1.get(k, 0) - c0.get(k, 0)) / wall for k in set(c0) | set(c1)}
    total = sum(per.values())
    rss = [m[0] for m in mem]
    pss = [m[1] for m in mem]
    return {
        "level": level,
        "cores": total,
        "per_thread": per,
        "rss": (min(rss), max(rss)) if rss else (0, 0),
        "pss": (min(pss), max(pss)) if pss else (0, 0),
        "rate": sent / el / 1e6,
        "written": written,
        "dropped": dropped,
        "sent_lines": sent // LINE,
        "disk": disk,
    }


def start_round(kind, n):
    base = os.path.join(TMP, f"start-{kind}")
    units = base + "-units"
    shutil.rmtree(units, ignore_errors=True)
    os.makedirs(units)
    extra = 'output = "inherit"\n' if kind == "inherit" else ""
    for i in range(n):
        with open(os.path.join(units, f"s{i}.toml"), "w") as f:
            f.write(f'exec = ["{SERVICE}", "s{i}"]\n'
                    f'env = {{ MARKDIR = "{bench.MARKS}", SERVICE_SAY = "1" }}\n{extra}')
    argv = niced(bench.supd_argv(units, base))
    m = bench.Marks(bench.MARKS)
    t0 = bench.now()
    run = bench.Run(argv, m.path)
    ok = m.wait(lambda m: len(m.starts()) >= n, 60)
    t = (m.last_start_ns() - t0) / 1e6 if ok else None
    run.kill()
    m.close()
    return t


def main():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out("# What per-unit logging costs supd")
    out("")
    load = os.getloadavg()[0]
    out(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average at start: {load:.1f}. Machine: `nproc` = "
        f"{os.cpu_count()}, {cpu}, kernel {os.uname().release}. Command: `bench/logging.sh"
        f"{' --quick' if QUICK else ''}{' --nice ' + NICE if NICE else ''}` as root. supd: `{SUPD}`.")
    out("")
    out(f"## 1. One unit writing {RATE / 1e6:.0f} MB/s ({LINE}-byte lines) for {DURATION} s")
    out("")
    out("CPU: supd's threads over the middle of the run, in cores (1.0 = one core busy). "
        "Memory: min–max of supd's RSS and PSS sampled every second. Achieved: the rate "
        "the writer managed (it blocks when supd does not drain the pipe). Lines: from "
        "supd's /metrics. Disk: the unit's log directory at the end (cap: 4 × 1 MiB).")
    out("")
    out("| supd log level | supd CPU (cores) | per thread | RSS KiB | PSS KiB | achieved MB/s | lines written | lines dropped | log on disk |")
    out("|---|---|---|---|---|---|---|---|---|")
    for level in ("warn", "info"):
        r = throughput(level)
        per = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["per_thread"].items(), key=lambda kv: -kv[1]) if v >= 0.005)
        out(f"| {level} | {r['cores']:.2f} | {per} | {r['rss'][0]}–{r['rss'][1]} | {r['pss'][0]}–{r['pss'][1]} "
            f"| {r['rate']:.1f} | {r['written']:.0f} of {r['sent_lines']} | {r['dropped']:.0f} | {r['disk'] / 1048576:.2f} MiB |")
    out("")
    n = 500
    rounds = 3 if QUICK else 7
    out(f"## 2. Start to all running, N={n}, each service printing one line (ms)")
    out("")
    out(f"{rounds} rounds, interleaved in a shuffled order; median (min–max); the ratio is "
        "capture/inherit within each round, median (min–max).")
    out("")
    per = {"capture": [], "inherit": []}
    for _ in range(rounds):
        order = ["capture", "inherit"]
        random.shuffle(order)
        for k in order:
            per[k].append(start_round(k, n))
    rs = [c / i for c, i in zip(per["capture"], per["inherit"]) if c and i]
    out("| capture (per-unit logs) | inherit | capture / inherit |")
    out("|---|---|---|")
    out(f"| {bench.med(per['capture'])} | {bench.med(per['inherit'])} | "
        + (f"×{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})" if rs else "n/a") + " |")
    out("")
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()

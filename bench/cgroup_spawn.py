#!/usr/bin/env python3
"""Spawn cost of supd with a cgroup per unit against process-group mode.

Issue 15's target: with cgroups, spawn cost within 1.1x of process-group
mode, and no idle wake-ups. One invocation runs both modes in interleaved
rounds (shuffled order per round) and prints medians (min-max):

- start-to-all-running: from just before `unshare` is exec'd until the last
  of the N services ran its first instructions (the service's own
  CLOCK_MONOTONIC stamp in its marker file);
- supd CPU per spawn: supd's on-CPU time (every thread, from
  /proc/PID/task/*/schedstat, nanoseconds; threads that already exited,
  such as the group-preparing one, from the process's utime + stime in
  clock ticks) from its exec until the moment
  every service has run, divided by N — start-up included, the same in
  both modes;
- of which main thread: the same for supd's main thread alone (the one
  that spawns, serially: its time per spawn is what start-up waits for);
- idle wake-ups: voluntary + involuntary context switches of all supd's
  threads over IDLE_S seconds, from 5 s after everything runs (first
  round of each mode).

CPU time in a VM includes time stolen by the hypervisor, and a loaded host
inflates it: the minimum over rounds (the least disturbed run) is shown
beside the median, and the ratio of the minima.

Process-group mode is forced with SUPD_CONTAINMENT=process-groups.
Every supd is PID 1 of its own PID namespace (`unshare --pid --fork
--kill-child`), stopped by SIGTERM to its pid (ordered shutdown removes its
cgroup subtree), SIGKILL by pid after 60 s. Root only (cgroups).

Usage: sudo python3 bench/cgroup_spawn.py SUPD SERVICE [N] [ROUNDS] [IDLE_S]
(defaults 300, 15, 10); see bench/README.md.
"""

import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cgclean  # noqa: E402

SUPD, SERVICE = sys.argv[1:3]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 15
IDLE_S = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
TMP = tempfile.mkdtemp(prefix="supd-cgbench-")
MODES = {"cgroup": {}, "process-groups": {"SUPD_CONTAINMENT": "process-groups"}}


def ns_children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def ticks(path):
    """utime + stime of /proc/.../stat, in clock ticks."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid):
    """On-CPU time of all of supd's threads: the live ones from schedstat
    (ns), plus the threads that already exited (supd's group-preparing
    thread ends once every group is made), which only the process's
    utime + stime (clock ticks) still count."""
    total = 0
    live_ticks = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
            live_ticks += ticks(f"/proc/{pid}/task/{t}/stat")
        except OSError:
            pass
    try:
        gone = max(0, ticks(f"/proc/{pid}/stat") - live_ticks)
    except OSError:
        gone = 0
    return total + gone * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def main_cpu_ns(pid):
    """On-CPU time of supd's main thread alone (the one that spawns)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def switches(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def service_cgroup(supd):
    """The cgroup of one of supd's services."""
    try:
        kid = ns_children(supd)[0]
        with open(f"/proc/{kid}/cgroup") as f:
            return f.read().strip().splitlines()[-1]
    except (OSError, IndexError):
        return "?"


def one(mode, rnd):
    base = os.path.join(TMP, f"{mode}-{rnd}")
    units, marks, state = base + "/units", base + "/marks", base + "/state"
    for d in (units, marks):
        os.makedirs(d)
    for i in range(N):
        with open(f"{units}/s{i}.toml", "w") as f:
            f.write(f'exec = ["{SERVICE}", "s{i}"]\nenv = {{ MARKDIR = "{marks}" }}\noutput = "null"\n')
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL", "--", SUPD,
            "--units", units, "--state-dir", state, "--socket", base + "/ctl.sock",
            "--config", "/nonexistent", "--max-parallel-starts", "1000", "--log-level", "warn"]
    env = dict(os.environ, **MODES[mode])
    t0 = time.monotonic_ns()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(base + "/supd.log", "w"))
    pid = None
    end = time.monotonic() + 10
    while pid is None and time.monotonic() < end:
        kids = ns_children(p.pid)
        pid = kids[0] if kids else None
        if pid is None:
            time.sleep(0.0005)
    if pid is None:
        raise SystemExit(f"{mode}: supd did not start")
    deadline = time.monotonic() + 60
    while len(os.listdir(marks)) < N:
        if time.monotonic() > deadline:
            raise SystemExit(f"{mode}: only {len(os.listdir(marks))}/{N} services ran in 60 s")
        time.sleep(0.005)
    last = 0
    for name in os.listdir(marks):
        with open(os.path.join(marks, name)) as f:
            last = max(last, int(f.read().strip() or 0))
    cpu_per_spawn_us = cpu_ns(pid) / N / 1e3
    main_per_spawn_us = main_cpu_ns(pid) / N / 1e3
    start_ms = (last - t0) / 1e6
    cg = service_cgroup(pid)
    wakeups = None
    if rnd == 0:
        # After start-up has settled (supd trims its start-up memory once
        # quiet): then nothing may wake it.
        time.sleep(5)
        sw0 = switches(pid)
        time.sleep(IDLE_S)
        wakeups = switches(pid) - sw0
    os.kill(pid, signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        p.wait(10)
        for top in cgclean.subtrees_of(argv):
            cgclean.remove_empty_tree(top)
    shutil.rmtree(base, ignore_errors=True)
    return start_ms, cpu_per_spawn_us, wakeups, main_per_spawn_us, cg


def fmt(xs, unit, digits=1):
    return f"{statistics.median(xs):.{digits}f} {unit} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def main():
    if os.geteuid() != 0:
        raise SystemExit("root needed (cgroups, namespaces)")
    res = {m: [] for m in MODES}
    where = {}
    for rnd in range(ROUNDS):
        order = list(MODES)
        random.shuffle(order)
        for m in order:
            r = one(m, rnd)
            res[m].append(r[:4])
            where[m] = r[4]
            idle = "" if r[2] is None else f", {r[2]} wake-ups in {IDLE_S:g} s idle"
            print(f"round {rnd + 1}/{ROUNDS} {m}: start {r[0]:.1f} ms, supd CPU {r[1]:.1f} us/spawn"
                  f" (main thread {r[3]:.1f}){idle}", file=sys.stderr)
    print(f"N = {N} units of bench/service.c, {ROUNDS} rounds (interleaved, shuffled), "
          f"`nproc` = {os.cpu_count()}, kernel {os.uname().release}\n")
    print("| mode | start-to-all-running: median (min-max) | supd CPU per spawn: median (min-max) "
          f"| of which main thread | idle wake-ups in {IDLE_S:g} s |")
    print("|---|---|---|---|---|")
    for m in MODES:
        xs = res[m]
        idle = [x[2] for x in xs if x[2] is not None]
        print(f"| {m} | {fmt([x[0] for x in xs], 'ms')} | {fmt([x[1] for x in xs], 'µs')} | "
              f"{fmt([x[3] for x in xs], 'µs')} | {idle[0] if idle else '-'} |")
    ratio_start = [a[0] / b[0] for a, b in zip(res["cgroup"], res["process-groups"])]
    ratio_cpu = [a[1] / b[1] for a, b in zip(res["cgroup"], res["process-groups"])]
    ratio_main = [a[3] / b[3] for a, b in zip(res["cgroup"], res["process-groups"])]
    mins = {m: (min(x[0] for x in res[m]), min(x[1] for x in res[m])) for m in MODES}
    print(f"\ncgroup / process-groups: per-round ratio medians: start {fmt(ratio_start, 'x', 2)}, "
          f"supd CPU {fmt(ratio_cpu, 'x', 2)}, main thread CPU {fmt(ratio_main, 'x', 2)}; "
          f"ratio of the minima: start "
          f"{mins['cgroup'][0] / mins['process-groups'][0]:.2f} x, supd CPU "
          f"{mins['cgroup'][1] / mins['process-groups'][1]:.2f} x")
    for m, cg in where.items():
        print(f"\na service's cgroup ({m}): `{cg}`")
    shutil.rmtree(TMP, ignore_errors=True)


main()

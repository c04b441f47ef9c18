#!/usr/bin/env python3
"""Restart latency, many samples: SIGKILL of a running service -> its
replacement's first instruction, against the floor.

    bench/restart.py BUILD SUPD [KILLS] [N]      (as root)

BUILD holds `service` and `floor` (built as bench/README.md says). Starts
one instance of each supervisor with N services (default 100) — the floor,
supd with its defaults (a cgroup per unit where the host allows it) and
supd with `SUPD_CONTAINMENT=process-groups` (more with SUPD_B=PATH: a second
supd build, both modes) — all alive at once, each PID 1 of its own
namespace, then kills KILLS services (default 200, rounded down to a
multiple of 10) in each, in blocks of 10 that rotate over the instances in
a shuffled order, so every instance is measured under the same load. A sample is, as in bench.py: from just
before kill(2) to the stamp the replacement wrote (CLOCK_MONOTONIC at its
start). supd's units are bench.py's (`[restart] delay = max_delay = "0s"`,
default burst 5 in 5 m): no service is killed more than 4 times, so N must
be at least KILLS / 4. Prints median, p90 and mean per instance, the
ratio of medians to the floor's, and the supervisor's CPU per restart (all
its threads, /proc/PID/task/*/schedstat, from just before each kill until
10 ms after the replacement's marker: less sensitive to the machine's load
than the wall time, though not immune to it).
"""

import os
import random
import signal
import statistics
import sys
import time

BUILD, SUPD = sys.argv[1:3]
KILLS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
N = int(sys.argv[4]) if len(sys.argv) > 4 else 100
if N * 4 < KILLS:
    sys.exit("restart.py: N must be at least KILLS / 4 (supd's default burst allows 5 starts)")
# bench.py reads its arguments when imported; it is used here as a library
# (its supervisors, marker waiter and unit files), never run.
sys.argv = [sys.argv[0], BUILD, SUPD, "/nonexistent", "/dev/null"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import bench  # noqa: E402

BLOCK = 10


class Instance:
    def __init__(self, name, kind, env, binary=None):
        self.name = name
        # supd's units name their marker directory (supd gives services a
        # clean environment): one per instance.
        bench.MARKS = os.path.join(bench.TMP, f"marks-{name}")
        self.marks = bench.Marks(bench.MARKS)
        argv, self.sig = bench.setup(kind, N, f"restart-{name}")
        if binary:
            argv[0] = binary
        self.run = bench.Run(argv, self.marks.path, env_extra=env)
        self.kills = {}
        self.samples = []
        # ns on a CPU of the supervisor's own threads (schedstat), summed
        # over the kills.
        self.cpu_ns = 0
        # Markers name the service and its pid: the newest per service is
        # its running process.
        self.live = {}
        self.seen = 0

    def started(self, timeout):
        ok = self.marks.wait(lambda m: len(m.starts()) >= N, timeout)
        self._update()
        return ok

    def _update(self):
        starts = self.marks.starts()
        for name in starts[self.seen:]:
            svc, pid = name.rsplit(".", 1)
            self.live[svc] = int(pid)
        self.seen = len(starts)

    def kill_one(self):
        candidates = [s for s in self.live if self.kills.get(s, 0) < 4]
        svc = random.choice(candidates)
        pid = self.live[svc]
        have = len(self.marks.starts())
        time.sleep(random.uniform(0.02, 0.06))
        cpu0 = self.cpu()
        t1 = bench.now()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.kills[svc] = self.kills.get(svc, 0) + 1
        if self.marks.wait(lambda m: len(m.starts()) > have, 10):
            name = self.marks.starts()[-1]
            self.samples.append((self.marks.stamp(name) - t1) / 1e3)
            # Whatever the supervisor does after the spawn (its logs) is
            # done by the time the harness has read the marker.
            time.sleep(0.01)
            self.cpu_ns += self.cpu() - cpu0
        self._update()

    def cpu(self):
        total = 0
        try:
            for t in os.listdir(f"/proc/{self.run.pid}/task"):
                with open(f"/proc/{self.run.pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
        return total

    def close(self):
        self.run.kill()
        self.marks.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    pg = {"SUPD_CONTAINMENT": "process-groups"}
    specs = [("floor", "floor", {}, None), ("supd", "supd", {}, None), ("supd-pg", "supd", pg, None)]
    if os.environ.get("SUPD_B"):
        b = os.environ["SUPD_B"]
        specs += [("supd-b", "supd", {}, b), ("supd-b-pg", "supd", pg, b)]
    insts = []
    try:
        for name, kind, env, binary in specs:
            inst = Instance(name, kind, env, binary)
            insts.append(inst)
            if not inst.started(60):
                sys.exit(f"restart.py: {name} did not start {N} services in 60 s")
        time.sleep(1.0)
        for _ in range(KILLS // BLOCK):
            order = insts[:]
            random.shuffle(order)
            for inst in order:
                for _ in range(BLOCK):
                    inst.kill_one()
    finally:
        for inst in insts:
            inst.close()
        bench.shutil.rmtree(bench.TMP, ignore_errors=True)
    floor = statistics.median(insts[0].samples)
    print(f"N={N}, {KILLS} kills per instance, load {os.getloadavg()[0]:.2f}")
    print("| instance | samples | median (µs) | p90 (µs) | mean (µs) | median / floor's | supervisor CPU per restart (µs) |")
    print("|---|---|---|---|---|---|---|")
    for inst in insts:
        s = inst.samples
        m = statistics.median(s)
        print(f"| {inst.name} | {len(s)} | {m:.0f} | {pct(s, 0.9):.0f} | "
              f"{statistics.mean(s):.0f} | ×{m / floor:.2f} | {inst.cpu_ns / 1e3 / len(s):.0f} |")


if __name__ == "__main__":
    main()

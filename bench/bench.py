#!/usr/bin/env python3
"""supd against its peers and a floor, on one machine, in one run.

Called by bench/run.sh (which builds the C tools and installs the peers).
Every supervisor runs as PID 1 of its own PID namespace (`unshare --pid
--fork --kill-child`), so nothing it starts can outlive a measurement, and
all run the same tiny service binary (one exec, no shell) that creates a
marker file the harness waits for with inotify. Rounds interleave the
supervisors in a shuffled order; each figure is a median with min-max, and
ratios to the floor are taken within each round.

Usage: bench.py BUILD_DIR SUPD SUPCTL OUT.md [--quick]
"""

import ctypes
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cgclean  # noqa: E402

BUILD, SUPD, SUPCTL, OUT = sys.argv[1:5]
QUICK = "--quick" in sys.argv
SERVICE = os.path.join(BUILD, "service")
FLOOR = os.path.join(BUILD, "floor")
MOUNTAT = os.path.join(BUILD, "mountat")
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CREATE, IN_MOVED_TO = 0x100, 0x80


def tmpfs_dir():
    """A tmpfs to keep markers, unit files and state in: on a disk file
    system, creating a file after heavy churn costs 0.1-1 ms of kernel time
    per service (ext4's inode allocator), the same for every supervisor,
    which pulls every ratio towards 1."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == "/dev/shm" and parts[2] == "tmpfs":
                return "/dev/shm"
    sys.exit("bench.py: /dev/shm is not a tmpfs here; mount one there first")


TMP = tempfile.mkdtemp(prefix="supd-bench-", dir=tmpfs_dir())
# supd gives services a clean environment, so its units name this directly.
MARKS = os.path.join(TMP, "marks")


def now():
    return time.monotonic_ns()


class Marks:
    """Counts marker files created in a directory, via inotify."""

    def __init__(self, path):
        self.path = path
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        libc.inotify_add_watch(self.fd, path.encode(), IN_CREATE | IN_MOVED_TO)
        self.names = []
        self.start_names = []

    def _drain(self, timeout):
        import select

        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        i = 0
        while i < len(buf):
            _, _, _, ln = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16 : i + 16 + ln].split(b"\0", 1)[0].decode()
            self.names.append(name)
            if name.rsplit(".", 1)[-1].isdigit():
                self.start_names.append(name)
            i += 16 + ln

    def starts(self):
        """Start markers seen so far, in order (counted as they arrive: the
        waiter must not cost more per event as N grows)."""
        return self.start_names

    def stamp(self, name):
        """CLOCK_MONOTONIC ns at which the service wrote marker `name`."""
        return read_int(os.path.join(self.path, name))

    def last_start_ns(self):
        """When the last service to start ran its first instruction."""
        return max(self.stamp(n) for n in self.start_names)

    def wait(self, pred, timeout):
        end = time.monotonic() + timeout
        while not pred(self):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._drain(min(left, 0.05))
        return True

    def close(self):
        os.close(self.fd)


def read_int(path, timeout=2.0):
    """A marker's number; the file may exist a moment before its content."""
    end = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                txt = f.read().strip()
            if txt:
                return int(txt)
        except OSError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"no number in {path}")
        time.sleep(0.0002)


def ns_children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        rest = s.rsplit(")", 1)[1].split()
        comm = s[s.index("(") + 1 : s.rindex(")")]
        return comm, rest[0]
    except OSError:
        return None, None


def ns_pids(ns_init):
    """Every process in the PID namespace whose init is ns_init."""
    try:
        ino = os.stat(f"/proc/{ns_init}/ns/pid").st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/pid").st_ino == ino:
                    out.append(int(d))
            except OSError:
                pass
    return out


# ---- supervisors --------------------------------------------------------

HORUST = shutil.which("horust") or (os.environ.get("HORUST") if os.path.exists(os.environ.get("HORUST", "/x/none")) else None)


def layout_dirs(n, base):
    """runit/s6 service directories whose ./run is the service itself."""
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    for i in range(n):
        d = os.path.join(base, f"s{i}")
        os.makedirs(d)
        os.symlink(SERVICE, os.path.join(d, "run"))
    return base


def supd_units(n, base, probes=False, extra=""):
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    probe = '[health]\nexec = ["/bin/true"]\ninterval = "5s"\n' if probes else ""
    for i in range(n):
        with open(os.path.join(base, f"s{i}.toml"), "w") as f:
            f.write(f'exec = ["{SERVICE}", "s{i}"]\nenv = {{ MARKDIR = "{MARKS}" }}\n{extra}\n'
                    f'{SUPD_RESTART}{probe}')
    return base


# Everything else is supd's default (burst 5 in 5m, max_parallel_starts
# 16, log level info, output captured); restart without backoff so the
# restart figure is supd's and not its delay. Printed beside the figures.
# Extra flags for experiments (SUPD_FLAGS="--log-level warn"); printed.
SUPD_FLAGS = os.environ.get("SUPD_FLAGS", "").split()
SUPD_RESTART = '[restart]\ndelay = "0s"\nmax_delay = "0s"\n'
SUPD_SETTINGS = ("supd with its default settings (flags: only `--units`, `--state-dir`, `--socket`, "
                 "`--config /nonexistent`); every unit `exec = [service, sI]`, `env = { MARKDIR }`, "
                 "`[restart] delay = \"0s\"`, `max_delay = \"0s\"` (policy, burst, interval, stop: "
                 "defaults)" + (f"; extra flags: `{' '.join(SUPD_FLAGS)}`" if SUPD_FLAGS else ""))


def supd_argv(units, base, binary=None):
    state = base + "-state"
    shutil.rmtree(state, ignore_errors=True)
    return [binary or SUPD, "--units", units, "--state-dir", state, "--socket", base + ".sock",
            "--config", "/nonexistent"] + SUPD_FLAGS


def horust_dir(n, base, args=""):
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    for i in range(n):
        with open(os.path.join(base, f"s{i}.toml"), "w") as f:
            # Horust's smallest restart backoff is what `backoff` says; 0s here.
            f.write(f'command = "{SERVICE} s{i}{args}"\n[restart]\nstrategy = "always"\n'
                    'backoff = "0s"\nattempts = 0\n[environment]\nkeep-env = true\n')
    return base


def horust_argv(services):
    uds = services + "-uds"
    os.makedirs(uds, exist_ok=True)
    return [HORUST, "--services-path", services, "--uds-folder-path", uds,
            "--config-path", "/nonexistent"]


def setup(kind, n, tag, probes=False):
    """(argv, stop signal) for `kind` supervising n services."""
    base = os.path.join(TMP, f"{kind}-{tag}")
    if kind == "floor":
        return [FLOOR, str(n), SERVICE], signal.SIGTERM
    if kind == "supd":
        return supd_argv(supd_units(n, base + "-units", probes), base), signal.SIGTERM
    if kind == "supd-inherit":
        # Services write straight to supd's stdout/stderr, as they do under
        # the floor, runit, s6 and horust: no output pipe per unit.
        units = supd_units(n, base + "-units", probes, extra='output = "inherit"')
        return supd_argv(units, base), signal.SIGTERM
    if kind == "supd-null":
        units = supd_units(n, base + "-units", probes, extra='output = "null"')
        return supd_argv(units, base), signal.SIGTERM
    if kind == "supd-b":
        return supd_argv(supd_units(n, base + "-units", probes), base, binary=SUPD_B), signal.SIGTERM
    if kind == "runit":
        # runsvdir's documented stop for a PID-1-like role: SIGHUP (TERM to
        # every runsv, then exit).
        return ["runsvdir", "-P", layout_dirs(n, base)], signal.SIGHUP
    if kind == "s6":
        return ["s6-svscan", layout_dirs(n, base)], signal.SIGTERM
    if kind == "horust":
        return horust_argv(horust_dir(n, base)), signal.SIGTERM
    if kind == "monit":
        # monit runs programs that return (daemons): `service sN daemon`
        # forks and its parent exits. It checks every `set daemon` seconds
        # (1 here, its minimum) and finds processes by their command line.
        rc = base + ".monitrc"
        for ext in (".state", ".id", ".pid", ".log"):
            # A state file left by the previous round would be restored.
            if os.path.exists(base + ext):
                os.remove(base + ext)
        with open(rc, "w") as f:
            f.write(f"set daemon 1\nset init\nset logfile {base}.log\nset pidfile {base}.pid\n"
                    f"set idfile {base}.id\nset statefile {base}.state\n")
            for i in range(n):
                f.write(f'check process s{i} matching "^{SERVICE} s{i} daemon$"\n'
                        f'  start program = "{SERVICE} s{i} daemon"\n')
        os.chmod(rc, 0o600)
        return ["monit", "-I", "-c", rc], signal.SIGTERM
    if kind == "supervisord":
        conf = base + ".conf"
        with open(conf, "w") as f:
            f.write(f"[supervisord]\nnodaemon=true\nlogfile=/dev/null\npidfile={base}.pid\n"
                    f"[unix_http_server]\nfile={base}.s\n")
            for i in range(n):
                f.write(f"[program:s{i}]\ncommand={SERVICE} s{i}\nautorestart=true\n"
                        "startsecs=0\nstdout_logfile=NONE\nstderr_logfile=NONE\n")
        return ["supervisord", "-n", "-c", conf], signal.SIGTERM
    raise ValueError(kind)


class Run:
    """One supervisor as PID 1 of a fresh PID namespace. Everything it starts
    dies with it (the kernel SIGKILLs a namespace whose init exits), and
    `unshare --kill-child` takes the supervisor down if we die."""

    def __init__(self, argv, marks, env_extra=None, mount_ns=False, mount_proc=False):
        env = dict(os.environ, MARKDIR=marks)
        env.update(env_extra or {})
        pre = ["unshare", "--pid", "--fork", "--kill-child=SIGKILL"]
        if mount_proc:
            pre += ["--mount-proc"]
        elif mount_ns:
            pre += ["--mount", "--propagation", "private"]
        self.argv = argv
        self.p = subprocess.Popen(pre + ["--"] + argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = None
        end = time.monotonic() + 10
        while self.pid is None and time.monotonic() < end:
            kids = ns_children(self.p.pid)
            if kids:
                self.pid = kids[0]
            else:
                time.sleep(0.0005)

    def signal(self, sig):
        if self.pid:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        try:
            self.p.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        """SIGKILL the supervisor (by pid): its namespace goes with it."""
        self.signal(signal.SIGKILL)
        if not self.wait(10):
            self.p.kill()
            self.p.wait(10)
        # What this instance left in cgroupfs (its own subtree only: other
        # supd instances may be running on this host).
        for top in cgclean.subtrees_of(self.argv):
            cgclean.remove_empty_tree(top)


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"


def ratio(vals, floor):
    rs = [v / f for v, f in zip(vals, floor) if v is not None and f]
    if not rs:
        return "n/a"
    return f"×{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"


# A second supd build to compare against (e.g. the previous commit's).
SUPD_B = os.environ.get("SUPD_B")
PEERS = (["floor", "supd", "supd-inherit"] + (["supd-b"] if SUPD_B else [])
         + (["supd-null"] if os.environ.get("BENCH_PEERS") else [])
         + ["runit", "s6", "supervisord"] + (["horust"] if HORUST else [])
         + (["monit"] if shutil.which("monit") else []))
# BENCH_PEERS=floor,supd,... narrows the set (the floor is always kept);
# BENCH_ONLY=start,idle,restart,reap,stop,supd narrows the sections.
if os.environ.get("BENCH_PEERS"):
    want = os.environ["BENCH_PEERS"].split(",")
    PEERS = ["floor"] + [p for p in PEERS[1:] if p in want]
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
results = {}
lines = []


def out(s=""):
    print(s, flush=True)
    lines.append(s)


def log(s):
    print(f"[bench {time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)


# ---- 1. start-to-all-running --------------------------------------------


def bench_start():
    plan = [(1, 3), (10, 3), (100, 3), (500, 2)] if QUICK else [(1, 5), (10, 5), (100, 5), (500, 5)]
    out("## 1. Start to all running (ms)")
    out("")
    out("From just before `unshare` is exec'd to the moment the last of the N services "
        "ran (the CLOCK_MONOTONIC stamp each service writes into its marker; the "
        "harness's inotify waiter only decides when to stop waiting). Rounds per N: "
        + ", ".join(f"N={n}: {r}" for n, r in plan) + ". Cells: median (min–max), "
        "then the ratio to the floor of the same round, median (min–max).")
    out("")
    out("| N | " + " | ".join(PEERS) + " |")
    out("|---|" + "---|" * len(PEERS))
    for n, rounds in plan:
        per = {k: [] for k in PEERS}
        for r in range(rounds):
            order = PEERS[:]
            random.shuffle(order)
            for k in order:
                if k == "monit" and n > 100:
                    # monit starts about five services a second (N=100
                    # takes ~20 s): N=500 would exceed the 60 s bound.
                    per[k].append(None)
                    continue
                argv, sig = setup(k, n, f"start{n}")
                m = Marks(MARKS)
                t0 = now()
                run = Run(argv, m.path)
                ok = m.wait(lambda m: len(m.starts()) >= n, 60)
                t = (m.last_start_ns() - t0) / 1e6 if ok else None
                per[k].append(t)
                run.kill()
                m.close()
        log(f"start N={n} done")
        row = [med(per["floor"])] + [f"{med(per[k])} {ratio(per[k], per['floor'])}" for k in PEERS[1:]]
        out(f"| {n} | " + " | ".join(row) + " |")
        results[f"start{n}"] = per
    out("")


# ---- 2. idle cost -------------------------------------------------------


def own_processes(run):
    """The supervisor's processes: everything in its namespace that is not
    a service or a probe (runit and s6 exec ./run, so match the executable,
    not the name)."""
    out = []
    for p in ns_pids(run.pid):
        try:
            if os.readlink(f"/proc/{p}/exe") in (SERVICE, "/usr/bin/true", "/bin/true"):
                continue
        except OSError:
            continue
        out.append(p)
    return out


def mem_kib(pids):
    pss = anon = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon += int(line.split()[1])
        except OSError:
            pass
    return pss, anon


def switches(pids):
    """Sum of voluntary + involuntary context switches of every thread."""
    total = 0
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/status") as f:
                    for line in f:
                        if "ctxt_switches" in line:
                            total += int(line.split()[1])
        except OSError:
            pass
    return total


def bench_idle():
    secs = 3 if QUICK else 10
    out(f"## 2. Idle cost (supervisor's own processes; wake-ups = context switches of all "
        f"their threads over {secs} s idle, 1 s after the last service started)")
    out("")
    out("| supervisor | N | processes | threads | PSS MiB | RssAnon MiB | wake-ups/s |")
    out("|---|---|---|---|---|---|---|")
    cases = [(p, 100, False) for p in PEERS]
    if "supd" in PEERS:
        cases += [("supd", 1, False), ("supd", 500, False), ("supd", 100, True)]
    for k, n, probes in cases:
        argv, sig = setup(k, n, "idle" + ("p" if probes else ""), probes)
        m = Marks(MARKS)
        run = Run(argv, m.path)
        m.wait(lambda m: len(m.starts()) >= n, 60)
        time.sleep(1.0)
        pids = own_processes(run)
        threads = sum(len(os.listdir(f"/proc/{p}/task")) for p in pids if os.path.exists(f"/proc/{p}/task"))
        a = switches(pids)
        time.sleep(secs)
        b = switches(pids)
        pss, anon = mem_kib(pids)
        label = k + (" + exec probe every 5 s per unit" if probes else "")
        out(f"| {label} | {n} | {len(pids)} | {threads} | {pss / 1024:.2f} | {anon / 1024:.2f} | {(b - a) / secs:.1f} |")
        results[f"idle-{label}-{n}"] = (len(pids), pss, anon, (b - a) / secs)
        run.kill()
        m.close()
    log("idle done")
    out("")


# ---- 3. restart latency -------------------------------------------------


def bench_restart():
    # supd's default burst (5 automatic restarts in 5 m) bounds the kills
    # per instance; more rounds instead.
    kills = 4
    rounds = 3 if QUICK else 5
    out(f"## 3. Restart latency after SIGKILL, N=1 ({rounds} rounds × {kills} kills at a random "
        "moment, ms: from just before kill(2) to the replacement's first instruction)")
    out("")
    out("| supervisor | median (min–max) | ratio to floor, per round: median (min–max) |")
    out("|---|---|---|")
    per = {k: [] for k in PEERS}
    rounds_v = []
    for r in range(rounds):
        order = PEERS[:]
        random.shuffle(order)
        rnd = {}
        for k in order:
            argv, sig = setup(k, 1, "restart")
            m = Marks(MARKS)
            run = Run(argv, m.path)
            started = m.wait(lambda m: len(m.starts()) >= 1, 30)
            ts = []
            for _ in range(kills if started else 0):
                time.sleep(random.uniform(0.05, 0.3))
                have = len(m.starts())
                pid = int(m.starts()[-1].rsplit(".", 1)[1])
                t0 = now()
                os.kill(pid, signal.SIGKILL)
                ok = m.wait(lambda m: len(m.starts()) > have, 10)
                ts.append((m.stamp(m.starts()[-1]) - t0) / 1e6 if ok else None)
            good = [t for t in ts if t is not None]
            rnd[k] = statistics.median(good) if good else None
            per[k] += ts
            run.kill()
            m.close()
        rounds_v.append(rnd)
    for k in PEERS:
        out(f"| {k} | {med(per[k])} | {ratio([r[k] for r in rounds_v], [r['floor'] for r in rounds_v])} |")
    results["restart"] = per
    log("restart done")
    out("")


# ---- 4. reaping as PID 1 -------------------------------------------------


def bench_reap():
    rounds = 2 if QUICK else 3
    out(f"## 4. Reaping 1000 orphaned grandchildren as PID 1 of a PID namespace ({rounds} rounds, ms)")
    out("")
    out("`unshare -fp --mount-proc`; the service forks 1000 children that each leave an "
        "orphaned grandchild which exits at once, then polls /proc/1/task/*/children "
        "itself until PID 1 has no zombie child left (so the harness's latency is not in "
        "the figure; the poll's own granularity is, the same for all).")
    out("")
    out("| supervisor | first fork → no zombie | last fork → no zombie |")
    out("|---|---|---|")
    kinds = ["floor", "supd", "tini", "dumb-init", "catatonit"] + [
        p for p in PEERS if p not in ("floor", "supd", "supd-inherit", "supd-b")]
    for k in kinds:
        tot, after = [], []
        for _ in range(rounds):
            m = Marks(MARKS)
            if k in ("tini", "dumb-init", "catatonit"):
                argv, sig = [k, "--", SERVICE, "s0", "orphans"], signal.SIGTERM
            elif k == "supd":
                base = os.path.join(TMP, "reap")
                units = supd_units(0, base + "-units")
                with open(os.path.join(units, "s0.toml"), "w") as f:
                    f.write(f'exec = ["{SERVICE}", "s0", "orphans"]\nenv = {{ MARKDIR = "{MARKS}" }}\n')
                argv, sig = supd_argv(units, base), signal.SIGTERM
            elif k == "floor":
                argv, sig = [FLOOR, "1", SERVICE, "orphans"], signal.SIGTERM
            elif k in ("runit", "s6"):
                # ./run takes no arguments: a one-line exec script.
                argv, sig = setup(k, 0, "reap")
                d = os.path.join(argv[-1], "s0")
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "run"), "w") as f:
                    f.write(f"#!/bin/sh\nexec {SERVICE} s0 orphans\n")
                os.chmod(os.path.join(d, "run"), 0o755)
            elif k == "horust":
                argv, sig = horust_argv(horust_dir(1, os.path.join(TMP, "hreap"), " orphans")), signal.SIGTERM
            elif k == "monit":
                argv, sig = setup(k, 1, "reap")
                rc = argv[-1]
                txt = open(rc).read().replace(" s0 daemon", " s0 orphans daemon")
                open(rc, "w").write(txt)
            else:  # supervisord
                argv, sig = setup(k, 1, "reap")
                conf = argv[-1]
                txt = open(conf).read().replace(f"command={SERVICE} s0", f"command={SERVICE} s0 orphans")
                open(conf, "w").write(txt)
            run = Run(argv, m.path, mount_proc=True)
            ok = m.wait(lambda m: "s0.reaped" in m.names, 40)
            if ok:
                first = read_int(os.path.join(m.path, "s0.firstfork"))
                last = read_int(os.path.join(m.path, "s0.lastfork"))
                done = read_int(os.path.join(m.path, "s0.reaped"))
                ok = done > 0
            tot.append((done - first) / 1e6 if ok else None)
            after.append((done - last) / 1e6 if ok else None)
            run.kill()
            m.close()
        out(f"| {k} | {med(tot)} | {med(after)} |")
        results[f"reap-{k}"] = (tot, after)
    log("reap done")
    out("")


# ---- 5. stop-all ----------------------------------------------------------


def bench_stop():
    rounds = 2 if QUICK else 3
    out(f"## 5. Stop-all, N=100: stop signal until the supervisor and every service are gone "
        f"({rounds} rounds, ms)")
    out("")
    out("From just before kill(2) of the supervisor (its stop signal: SIGTERM; runsvdir: "
        "SIGHUP) until `unshare` has reaped it, which the kernel allows only once every "
        "process of the namespace is gone. A `.term` marker counts a service that got "
        "SIGTERM (rather than the kernel's SIGKILL when PID 1 exits).")
    out("")
    out("| supervisor | median (min–max) | ratio to floor | services that got SIGTERM |")
    out("|---|---|---|---|")
    per = {k: [] for k in PEERS}
    terms = {k: [] for k in PEERS}
    for r in range(rounds):
        order = PEERS[:]
        random.shuffle(order)
        for k in order:
            argv, sig = setup(k, 100, "stop")
            m = Marks(MARKS)
            run = Run(argv, m.path)
            m.wait(lambda m: len(m.starts()) >= 100, 60)
            time.sleep(0.3)
            t0 = now()
            run.signal(sig)
            ok = run.wait(30)
            per[k].append((now() - t0) / 1e6 if ok else None)
            if not ok:
                run.kill()
            terms[k].append(sum(1 for n in os.listdir(m.path) if n.endswith(".term")))
            m.close()
    for k in PEERS:
        out(f"| {k} | {med(per[k])} | {ratio(per[k], per['floor'])} | {min(terms[k])}–{max(terms[k])} of 100 |")
    results["stop"] = (per, terms)
    log("stop done")
    out("")


# ---- 6. supd only -------------------------------------------------------


def raw_request(sock, req, timeout=10):
    """One request line over the control socket; ns until the answer line."""
    import json
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    t0 = now()
    s.connect(sock)
    s.sendall((json.dumps(dict(v=1, **req)) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    t = now() - t0
    s.close()
    return t, buf


def bench_supd_only():
    out("## 6. supd only")
    out("")
    # mount appears -> service runs
    lat = []
    for i in range(5 if QUICK else 10):
        base = os.path.join(TMP, "mnt")
        target = base + "-dir"
        os.makedirs(target, exist_ok=True)
        units = supd_units(0, base + "-units")
        with open(os.path.join(units, "s0.toml"), "w") as f:
            f.write(f'exec = ["{SERVICE}", "s0"]\nenv = {{ MARKDIR = "{MARKS}" }}\n[[mount]]\npath = "{target}"\n')
        m = Marks(MARKS)
        run = Run(supd_argv(units, base), m.path, mount_ns=True)
        time.sleep(0.3)
        r = subprocess.run([MOUNTAT, str(run.pid), target], capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and m.wait(lambda m: len(m.starts()) >= 1, 10):
            lat.append((m.stamp(m.starts()[0]) - int(r.stdout)) / 1e6)
        else:
            lat.append(None)
        # Unmount what we mounted (the private namespace would drop it anyway).
        subprocess.run([MOUNTAT, str(run.pid), target, "-u"], capture_output=True, timeout=10)
        run.kill()
        m.close()
    out(f"- mount appears → the waiting service's first instruction ({len(lat)} rounds; from "
        f"just after mount(2) returns in supd's mount namespace): {med(lat)} ms")
    results["mount"] = lat
    # status --json at 1000 units, maintenance on
    base = os.path.join(TMP, "k")
    units = supd_units(1000, base + "-units")
    m = Marks(MARKS)
    sock = base + ".sock"
    run = Run(supd_argv(units, base), m.path)
    m.wait(lambda m: len(m.starts()) >= 1000, 120)
    time.sleep(0.5)
    st, st_raw, size = [], [], 0
    for _ in range(20):
        t0 = now()
        subprocess.run([SUPCTL, "--socket", sock, "status", "--json"], stdout=subprocess.DEVNULL,
                       check=True, timeout=10)
        st.append((now() - t0) / 1e6)
        t, buf = raw_request(sock, {"cmd": "status", "unit": None})
        st_raw.append(t / 1e6)
        size = len(buf)
    out(f"- `supctl status --json` with 1000 units running, 20 times: whole command {med(st)} ms; "
        f"the request alone over the socket {med(st_raw)} ms ({size / 1024:.0f} KiB answer)")
    mo, mo_raw = [], []
    for i in range(20):
        t0 = now()
        subprocess.run([SUPCTL, "--socket", sock, "maintenance", "on", f"s{i}", "--reason", "bench"],
                       stdout=subprocess.DEVNULL, check=True, timeout=20)
        mo.append((now() - t0) / 1e6)
        t, buf = raw_request(sock, {"cmd": "maintenance-on", "unit": f"s{500 + i}", "reason": "bench"}, 20)
        if b'"ok":true' not in buf.replace(b" ", b"") and b"error" in buf:
            log(f"maintenance-on answer: {buf[:200]!r}")
        mo_raw.append(t / 1e6)
    out(f"- `supctl maintenance on UNIT` acknowledged (lock fsynced, the unit stopped), 20 units "
        f"of the 1000: whole command {med(mo)} ms; the request alone {med(mo_raw)} ms")
    results["status"] = (st, st_raw)
    results["maint"] = (mo, mo_raw)
    run.kill()
    m.close()
    log("supd-only done")
    out("")


# ---- 7. the curve: N = 100 ... 10,000 ------------------------------------

CURVE_N = [int(x) for x in os.environ.get("CURVE_N", "100,500,1000,4000,10000").split(",")]
CURVE_KINDS = [k for k in ["floor", "supd", "supd-b", "runit", "s6"] if k in PEERS]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def bench_curve():
    """One supervisor instance per (kind, N, round) measures, in order:
    start-to-all-running, idle PSS 1 s later, three restarts after SIGKILL
    of a random service, then stop-all."""
    rounds = int(os.environ.get("CURVE_ROUNDS", "2" if QUICK else "3"))
    out(f"## 7. The curve: N = {', '.join(map(str, CURVE_N))} ({rounds} rounds, interleaved in a shuffled order)")
    out("")
    out(SUPD_SETTINGS + ". runit: `runsvdir -P DIR`, s6: `s6-svscan -c N+100 DIR` (s6-svscan "
        "refuses more than its `-c` services, 500 by default); both wait 1 s between starts of one "
        "service by design, which is their restart figure. Per instance: start (as in section 1), "
        "PSS of the supervisor's own processes 1 s after the last service started, 3 restarts "
        "(SIGKILL of a random service → its replacement's first instruction), then stop-all "
        "(as in section 5). Cells: median (min–max); ratio to the floor within each round.")
    out("")
    data = {}
    loads = []
    for n in CURVE_N:
        for r in range(rounds):
            order = CURVE_KINDS[:]
            random.shuffle(order)
            for k in order:
                loads.append(loadavg())
                data.setdefault((k, n), []).append(curve_once(k, n))
            log(f"curve N={n} round {r + 1} done (load {loadavg()})")
    metrics = [("start (ms)", 0), ("stop-all (ms)", 3), ("restart (ms)", 2), ("idle PSS (MiB)", 1),
               ("supervisor CPU to start all (ms; utime+stime of its own processes, 10 ms ticks)", 4)]
    for title, i in metrics:
        out(f"### {title}")
        out("")
        out("| N | " + " | ".join(CURVE_KINDS) + " |")
        out("|---|" + "---|" * len(CURVE_KINDS))
        for n in CURVE_N:
            floor = [x[i] for x in data[("floor", n)]]
            cells = []
            for k in CURVE_KINDS:
                vs = [x[i] for x in data[(k, n)]]
                if i == 1:
                    vs = [v / 1024 if v is not None else None for v in vs]
                    fl = [v / 1024 if v is not None else None for v in floor]
                else:
                    fl = floor
                cell = med(vs)
                if k != "floor":
                    cell += " " + ratio(vs, fl)
                cells.append(cell)
            out(f"| {n} | " + " | ".join(cells) + " |")
        out("")
    out("### KiB per unit (idle PSS above N=100's, divided by the added units; median PSS)")
    out("")
    out("| N | " + " | ".join(CURVE_KINDS) + " |")
    out("|---|" + "---|" * len(CURVE_KINDS))
    base_n = CURVE_N[0]
    for n in CURVE_N[1:]:
        cells = []
        for k in CURVE_KINDS:
            a = [x[1] for x in data[(k, base_n)] if x[1] is not None]
            b = [x[1] for x in data[(k, n)] if x[1] is not None]
            cells.append(f"{(statistics.median(b) - statistics.median(a)) / (n - base_n):.1f}"
                         if a and b else "n/a")
        out(f"| {n} | " + " | ".join(cells) + " |")
    out("")
    out(f"Load average (1/5/15 min) before each instance: first {loads[0]}, last {loads[-1]}; "
        f"1-min load median {statistics.median(float(x.split()[0]) for x in loads):.2f}, "
        f"range {min(float(x.split()[0]) for x in loads):.2f}–{max(float(x.split()[0]) for x in loads):.2f}.")
    out("")
    results["curve"] = data


def fd_room(n):
    """Whether supd can hold n units' descriptors here: one per unit (its
    output pipe; a cgroup directory is open only while spawning into it,
    every cgroup.events is watched through one inotify instance), plus
    headroom for probe sockets and readiness pipes. supd raises its soft
    limit to the hard one, and the hard one only with CAP_SYS_RESOURCE."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open("/proc/self/status") as f:
        cap = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
    return bool(cap & (1 << 24)) or hard == resource.RLIM_INFINITY or fd_need(n) <= hard


def fd_need(n):
    return 64 + n + n // 4


def curve_once(k, n):
    """(start ms, PSS KiB, median restart ms, stop ms, CPU ms) for one instance;
    None where it did not finish in its bound."""
    if k.startswith("supd") and not fd_room(n):
        return (None, None, None, None, None)
    if k == "s6":
        argv, sig = ["s6-svscan", "-c", str(n + 100), layout_dirs(n, os.path.join(TMP, "s6-curve"))], signal.SIGTERM
    else:
        argv, sig = setup(k, n, "curve")
    bound = 30 + n * 0.02
    m = Marks(MARKS)
    t0 = now()
    run = Run(argv, m.path)
    ok = m.wait(lambda m: len(m.starts()) >= n, bound)
    start = (m.last_start_ns() - t0) / 1e6 if ok else None
    pss = restart = stop = cpu = None
    if ok:
        # CPU the supervisor's own processes used to start everything
        # (less sensitive to the machine's load than the wall time).
        cpu = sum(cpu_ticks(p) for p in own_processes(run)) * 1000 / os.sysconf("SC_CLK_TCK")
        time.sleep(1.0)
        pss, _ = mem_kib(own_processes(run))
        ts = []
        for _ in range(3):
            time.sleep(random.uniform(0.05, 0.3))
            have = len(m.starts())
            pid = int(random.choice(m.starts()[-n:]).rsplit(".", 1)[1])
            t1 = now()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if m.wait(lambda m: len(m.starts()) > have, 10):
                ts.append((m.stamp(m.starts()[-1]) - t1) / 1e6)
        restart = statistics.median(ts) if ts else None
        time.sleep(0.3)
        t2 = now()
        run.signal(sig)
        if run.wait(bound):
            stop = (now() - t2) / 1e6
    run.kill()
    m.close()
    return (start, pss, restart, stop, cpu)


# ---- 8. supd CPU at 1,000 TCP probe results/s ----------------------------


def bench_probecpu():
    """supd's CPU (utime+stime of all its threads, /proc/PID/stat) over a
    fixed window while N units are TCP-probed at 1,000 results/s in all.
    With SUPD_B the other build runs each case too, and PROBE_ROUNDS=k
    repeats everything k times; the order of builds alternates per round
    and the cases alternate with them, so neither build nor size always
    runs first (the kernel's TCP tables keep what a previous case left)."""
    listener = os.path.join(BUILD, "listener")
    secs = int(os.environ.get("PROBE_SECS", "10" if QUICK else "30"))
    rounds = int(os.environ.get("PROBE_ROUNDS", "1"))
    cases = [(int(a), int(b)) for a, b in (c.split(":") for c in
             os.environ.get("PROBE_CASES", "1000:1,4000:4,10000:10").split(","))]
    builds = [("supd", SUPD)] + ([("supd-b", SUPD_B)] if SUPD_B else [])
    ports = 64
    out(f"## 8. supd CPU at 1,000 TCP-probe results/s ({secs} s window)")
    out("")
    out(f"Each unit: the tiny service plus `[health] tcp = \"127.0.0.1:PORT\"` (one of {ports} "
        "real listening sockets, `listener.c` outside supd's namespace, accepting and closing), "
        "`interval` as below; otherwise " + SUPD_SETTINGS + ". The window starts "
        "two probe intervals after the last service started; % of one core = "
        "Δ(utime+stime) / window. Results/s = connections the listener accepted in the window / window; "
        "µs/result = supd's CPU in the window / connections accepted; sleeps and preemptions per result = "
        "supd's voluntary and involuntary context switches (all threads) / connections accepted (counts that "
        "do not depend on the machine's speed)."
        + (f" supd-b: `{SUPD_B}`." if SUPD_B else ""))
    out("")
    out("| round | build | units | probe interval | results/s | supd CPU (% of one core) | µs/result "
        "| sleeps/result | preemptions/result | load (1 min) |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    hz = os.sysconf("SC_CLK_TCK")
    per = {}
    for r in range(rounds):
        order = [(b, c) for c in (cases if r % 2 == 0 else cases[::-1])
                 for b in (builds if r % 2 == 0 else builds[::-1])]
        for (label, binary), (n, every) in order:
            if not fd_room(n):
                out(f"| {r + 1} | {label} | {n} | {every} s | not run | needs ~{fd_need(n)} descriptors; the hard "
                    f"RLIMIT_NOFILE here is lower and supd may not raise it | | | | {loadavg().split()[0]} |")
                continue
            count = os.path.join(TMP, "accepted")
            lp = subprocess.Popen([listener, "21000", str(ports), count], stdin=subprocess.DEVNULL)
            base = os.path.join(TMP, "probecpu")
            units = base + "-units"
            shutil.rmtree(units, ignore_errors=True)
            os.makedirs(units)
            for i in range(n):
                with open(os.path.join(units, f"s{i}.toml"), "w") as f:
                    f.write(f'exec = ["{SERVICE}", "s{i}"]\nenv = {{ MARKDIR = "{MARKS}" }}\n{SUPD_RESTART}'
                            f'[health]\ntcp = "127.0.0.1:{21000 + i % ports}"\ninterval = "{every}s"\n')
            m = Marks(MARKS)
            run = Run(supd_argv(units, base, binary=binary), m.path)
            cpu = rate = None
            if m.wait(lambda m: len(m.starts()) >= n, 60 + n * 0.02):
                time.sleep(2 * every)
                a, c0, t0, s0 = cpu_ticks(run.pid), read_count(count), time.monotonic(), ctx_switches(run.pid)
                time.sleep(secs)
                b, c1, t1, s1 = cpu_ticks(run.pid), read_count(count), time.monotonic(), ctx_switches(run.pid)
                vol, invol = ((s1[i] - s0[i]) / max(1, c1 - c0) for i in (0, 1))
                cpu = 100.0 * (b - a) / hz / (t1 - t0)
                rate = (c1 - c0) / (t1 - t0)
                us = 1e6 * (b - a) / hz / max(1, c1 - c0)
                per.setdefault((label, n), []).append((cpu, us))
            load = loadavg().split()[0]
            run.kill()
            m.close()
            lp.kill()
            lp.wait(10)
            out(f"| {r + 1} | {label} | {n} | {every} s | {rate:.0f} | {cpu:.1f} | {us:.0f} | {vol:.3f} | {invol:.3f} "
                f"| {load} |" if cpu is not None
                else f"| {r + 1} | {label} | {n} | {every} s | n/a | did not start in time | | | | {load} |")
            results[f"probecpu{n}" + ("" if label == "supd" else "-b")] = (cpu, rate)
    if rounds > 1 or SUPD_B:
        out("")
        out("| build | units | supd CPU, median (min–max) | µs/result, median (min–max) |")
        out("|---|---|---|---|")
        for (label, n), v in sorted(per.items()):
            out(f"| {label} | {n} | {med([c for c, _ in v])} % | {med([u for _, u in v])} |")
    out("")
    log("probecpu done")


def ctx_switches(pid):
    """(voluntary, involuntary) context switches of all of pid's threads."""
    vol = invol = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
    except OSError:
        pass
    return vol, invol


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(rest[11]) + int(rest[12])


def read_count(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def main():
    u = os.uname()
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    t_start = time.monotonic()
    out("# supd benchmark results")
    out("")
    out(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: `nproc` = {os.cpu_count()}, "
        f"{cpu}, kernel {u.release}. Command: `{'HORUST=' + HORUST + ' ' if os.environ.get('HORUST') else ''}"
        f"bench/run.sh{' --quick' if QUICK else ''}{' --curve' if ONLY == {'curve', 'probecpu'} else ''}` as root"
        f"{' (BENCH_ONLY=' + ','.join(sorted(ONLY)) + ')' if ONLY and ONLY != {'curve', 'probecpu'} else ''}. "
        f"Load average at the start: {loadavg()} (the machine is shared). "
        "Every supervisor runs as PID 1 of its own PID namespace. Figures: median (min–max) over "
        "rounds; ratios to the floor taken within each round; rounds interleave the supervisors "
        "in a shuffled order.")
    out("")
    sz = os.path.getsize(SUPD)
    out(f"Peers: {', '.join(PEERS[1:])}; tini, dumb-init, catatonit for reaping only."
        + ("" if HORUST else " Horust: not installed (see bench/README.md).")
        + f" supd binary measured: `{SUPD}`, {sz:,} bytes.")
    out("")
    try:
        for name, fn in [("start", bench_start), ("idle", bench_idle), ("restart", bench_restart),
                         ("reap", bench_reap), ("stop", bench_stop), ("supd", bench_supd_only),
                         ("curve", bench_curve), ("probecpu", bench_probecpu)]:
            # The curve and the probe CPU run only when asked for
            # (`bench/run.sh --curve`): they take longer than the rest.
            if name in ONLY or (not ONLY and name not in ("curve", "probecpu")):
                fn()
    finally:
        out(f"Total harness time: {time.monotonic() - t_start:.0f} s.")
        with open(OUT, "w") as f:
            f.write("\n".join(lines) + "\n")
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()

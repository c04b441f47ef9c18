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

BUILD, SUPD, SUPCTL, OUT = sys.argv[1:5]
QUICK = "--quick" in sys.argv
SERVICE = os.path.join(BUILD, "service")
FLOOR = os.path.join(BUILD, "floor")
MOUNTAT = os.path.join(BUILD, "mountat")
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CREATE, IN_MOVED_TO = 0x100, 0x80
TMP = tempfile.mkdtemp(prefix="supd-bench-")
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
            i += 16 + ln

    def starts(self):
        return [n for n in self.names if n.rsplit(".", 1)[-1].isdigit()]

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


def layout_dirs(n, base):
    """runit/s6 service directories whose ./run is the service itself."""
    shutil.rmtree(base, ignore_errors=True)
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
            f.write(
                f'exec = ["{SERVICE}", "s{i}"]\nenv = {{ MARKDIR = "{MARKS}" }}\n{extra}\n'
                f'[restart]\npolicy = "always"\n'
                f'delay = "0s"\nmax_delay = "0s"\nburst = 1000\ninterval = "1s"\n'
                f'[stop]\ntimeout = "10s"\n{probe}'
            )
    return base


def setup(kind, n, tag, probes=False):
    """(argv, stop signal) for `kind` supervising n services."""
    base = os.path.join(TMP, f"{kind}-{tag}")
    if kind == "floor":
        return [FLOOR, str(n), SERVICE], signal.SIGTERM
    if kind == "supd":
        units = supd_units(n, base + "-units", probes)
        state = base + "-state"
        shutil.rmtree(state, ignore_errors=True)
        return [
            SUPD, "--units", units, "--state-dir", state, "--socket", base + ".sock",
            "--config", "/nonexistent", "--max-parallel-starts", "1000", "--log-level", "warn",
        ], signal.SIGTERM
    if kind == "runit":
        return ["runsvdir", "-P", layout_dirs(n, base)], signal.SIGHUP
    if kind == "s6":
        return ["s6-svscan", layout_dirs(n, base)], signal.SIGTERM
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
    """One supervisor as PID 1 of a fresh PID namespace."""

    def __init__(self, argv, marks, env_extra=None, mount_ns=False):
        env = dict(os.environ, MARKDIR=marks)
        env.update(env_extra or {})
        pre = ["unshare", "--pid", "--fork", "--kill-child=SIGKILL"]
        if mount_ns:
            pre += ["--mount", "--propagation", "private"]
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
        self.signal(signal.SIGKILL)
        if not self.wait(10):
            self.p.kill()
            self.p.wait()


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"


def ratio(vals, floor):
    rs = [v / f for v, f in zip(vals, floor) if v is not None and f]
    return f"×{statistics.median(rs):.2f}" if rs else "n/a"


PEERS = ["floor", "supd", "runit", "s6", "supervisord"]
results = {}
lines = []


def out(s=""):
    print(s, flush=True)
    lines.append(s)


# ---- 1. start-to-all-running --------------------------------------------


def bench_start():
    out("## 1. Start to all running (ms)")
    out("")
    out("| N | " + " | ".join(PEERS) + " |")
    out("|---|" + "---|" * len(PEERS))
    for n, rounds in ([(1, 3), (10, 3), (100, 3), (500, 2)] if QUICK else
                      [(1, 5), (10, 5), (100, 5), (500, 3)]):
        per = {k: [] for k in PEERS}
        for r in range(rounds):
            order = PEERS[:]
            random.shuffle(order)
            for k in order:
                argv, sig = setup(k, n, f"start{n}")
                m = Marks(MARKS)
                t0 = now()
                run = Run(argv, m.path)
                ok = m.wait(lambda m: len(m.starts()) >= n, 60)
                t = (now() - t0) / 1e6 if ok else None
                per[k].append(t)
                run.signal(sig)
                if not run.wait(30):
                    run.kill()
                m.close()
        row = [med(per["floor"])] + [f"{med(per[k])} {ratio(per[k], per['floor'])}" for k in PEERS[1:]]
        out(f"| {n} | " + " | ".join(row) + " |")
        results[f"start{n}"] = per
    out("")


# ---- 2. idle cost -------------------------------------------------------


def own_processes(run):
    """The supervisor's processes: everything in its namespace that is not
    a service (runit and s6 exec ./run, so match the executable, not the
    name)."""
    out = []
    for p in ns_pids(run.pid):
        try:
            if os.readlink(f"/proc/{p}/exe") == SERVICE:
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
    out(f"## 2. Idle cost at N=100 (supervisor's own processes; wake-ups over {secs} s)")
    out("")
    out("| supervisor | processes | PSS MiB | RssAnon MiB | wake-ups/s |")
    out("|---|---|---|---|---|")
    for k, probes in [(p, False) for p in PEERS] + [("supd", True)]:
        argv, sig = setup(k, 100, "idle" + ("p" if probes else ""), probes)
        m = Marks(MARKS)
        run = Run(argv, m.path)
        m.wait(lambda m: len(m.starts()) >= 100, 60)
        time.sleep(1.0)
        pids = own_processes(run)
        a = switches(pids)
        time.sleep(secs)
        b = switches(pids)
        pss, anon = mem_kib(pids)
        label = k + (" (exec probe every 5 s per unit)" if probes else "")
        out(f"| {label} | {len(pids)} | {pss / 1024:.2f} | {anon / 1024:.2f} | {(b - a) / secs:.1f} |")
        results[f"idle-{label}"] = (len(pids), pss, anon, (b - a) / secs)
        run.signal(sig)
        if not run.wait(30):
            run.kill()
        m.close()
    out("")


# ---- 3. restart latency -------------------------------------------------


def bench_restart():
    kills = 5 if QUICK else 10
    out(f"## 3. Restart latency after SIGKILL, N=1 ({kills} kills per round, ms)")
    out("")
    out("| supervisor | median (min–max) | ratio to floor |")
    out("|---|---|---|")
    per = {k: [] for k in PEERS}
    floor_round = []
    for r in range(2 if QUICK else 3):
        order = PEERS[:]
        random.shuffle(order)
        rnd = {}
        for k in order:
            argv, sig = setup(k, 1, "restart")
            m = Marks(MARKS)
            run = Run(argv, m.path)
            m.wait(lambda m: len(m.starts()) >= 1, 30)
            ts = []
            for _ in range(kills):
                time.sleep(random.uniform(0.05, 0.3))
                have = len(m.starts())
                pid = int(m.starts()[-1].rsplit(".", 1)[1])
                t0 = now()
                os.kill(pid, signal.SIGKILL)
                ok = m.wait(lambda m: len(m.starts()) > have, 10)
                ts.append((now() - t0) / 1e6 if ok else None)
            rnd[k] = statistics.median([t for t in ts if t is not None] or [0])
            per[k] += ts
            run.signal(sig)
            if not run.wait(30):
                run.kill()
            m.close()
        floor_round.append(rnd)
    for k in PEERS:
        rs = [r[k] / r["floor"] for r in floor_round if r.get("floor")]
        out(f"| {k} | {med(per[k])} | ×{statistics.median(rs):.2f} |")
    results["restart"] = per
    out("")


# ---- 4. reaping as PID 1 -------------------------------------------------


def bench_reap():
    out("## 4. Reaping 1000 orphaned grandchildren as PID 1 (ms after the last fork until no zombie)")
    out("")
    out("| supervisor | after last fork: median (min–max) |")
    out("|---|---|")
    kinds = ["floor", "supd", "tini", "dumb-init", "catatonit", "runit", "s6", "supervisord"]
    for k in kinds:
        vals = []
        for _ in range(2 if QUICK else 3):
            m = Marks(MARKS)
            if k in ("tini", "dumb-init", "catatonit"):
                argv, sig = [k, "--", SERVICE, "s0", "orphans"], signal.SIGTERM
            elif k == "supd":
                base = os.path.join(TMP, "reap")
                units = supd_units(0, base + "-units")
                with open(os.path.join(units, "s0.toml"), "w") as f:
                    f.write(f'exec = ["{SERVICE}", "s0", "orphans"]\nenv = {{ MARKDIR = "{MARKS}" }}\n')
                shutil.rmtree(base + "-state", ignore_errors=True)
                argv, sig = [SUPD, "--units", units, "--state-dir", base + "-state", "--socket",
                             base + ".sock", "--config", "/nonexistent", "--log-level", "warn"], signal.SIGTERM
            elif k == "floor":
                argv, sig = [FLOOR, "1", SERVICE, "orphans"], signal.SIGTERM
            else:
                argv, sig = setup(k, 1, "reap")
            if k in ("runit", "s6"):
                # ./run takes no arguments: give the service dir an env var.
                argv, sig = setup(k, 0, "reap")
                d = os.path.join(argv[-1], "s0")
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "run"), "w") as f:
                    f.write(f"#!/bin/sh\nexec {SERVICE} s0 orphans\n")
                os.chmod(os.path.join(d, "run"), 0o755)
            if k == "supervisord":
                conf = argv[-1]
                txt = open(conf).read().replace(f"command={SERVICE} s0", f"command={SERVICE} s0 orphans")
                open(conf, "w").write(txt)
            run = Run(argv, m.path)
            ok = m.wait(lambda m: any(n.endswith(".lastfork") for n in m.names), 30)
            if not ok:
                vals.append(None)
                run.kill()
                m.close()
                continue
            last = read_int(os.path.join(m.path, "s0.lastfork"))
            end = time.monotonic() + 30
            while time.monotonic() < end:
                z = sum(1 for c in ns_children(run.pid) if stat(c)[1] == "Z")
                if z == 0:
                    break
            t = now()
            vals.append((t - last) / 1e6)
            run.signal(sig)
            if not run.wait(10):
                run.kill()
            m.close()
        out(f"| {k} | {med(vals)} |")
        results[f"reap-{k}"] = vals
    out("")


# ---- 5. stop-all ----------------------------------------------------------


def bench_stop():
    out("## 5. Stop-all, N=100: stop signal until the supervisor and every service are gone (ms)")
    out("")
    out("| supervisor | median (min–max) | ratio to floor | services that got SIGTERM |")
    out("|---|---|---|---|")
    per = {k: [] for k in PEERS}
    terms = {k: [] for k in PEERS}
    for r in range(2 if QUICK else 3):
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
            ok = run.wait(60)
            per[k].append((now() - t0) / 1e6 if ok else None)
            if not ok:
                run.kill()
            terms[k].append(sum(1 for n in os.listdir(m.path) if n.endswith(".term")))
            m.close()
    for k in PEERS:
        out(f"| {k} | {med(per[k])} | {ratio(per[k], per['floor'])} | {min(terms[k])}–{max(terms[k])} of 100 |")
    results["stop"] = (per, terms)
    out("")


# ---- 6. supd only -------------------------------------------------------


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
        shutil.rmtree(base + "-state", ignore_errors=True)
        m = Marks(MARKS)
        run = Run([SUPD, "--units", units, "--state-dir", base + "-state", "--socket", base + ".sock",
                   "--config", "/nonexistent", "--log-level", "warn"], m.path, mount_ns=True)
        time.sleep(0.5)
        t_mount = int(subprocess.run([MOUNTAT, str(run.pid), target], capture_output=True, text=True).stdout)
        m.wait(lambda m: len(m.starts()) >= 1, 10)
        t_run = read_int(os.path.join(m.path, m.starts()[0]))
        lat.append((t_run - t_mount) / 1e6)
        run.signal(signal.SIGTERM)
        if not run.wait(10):
            run.kill()
        m.close()
    out(f"- mount appears → service's first instruction: {med(lat)} ms")
    results["mount"] = lat
    # status --json at 1000 units, maintenance on
    base = os.path.join(TMP, "k")
    units = supd_units(1000, base + "-units")
    shutil.rmtree(base + "-state", ignore_errors=True)
    m = Marks(MARKS)
    sock = base + ".sock"
    run = Run([SUPD, "--units", units, "--state-dir", base + "-state", "--socket", sock,
               "--config", "/nonexistent", "--max-parallel-starts", "1000", "--log-level", "warn"], m.path)
    m.wait(lambda m: len(m.starts()) >= 1000, 120)
    st = []
    for _ in range(20):
        t0 = now()
        subprocess.run([SUPCTL, "--socket", sock, "status", "--json"], stdout=subprocess.DEVNULL, check=True)
        st.append((now() - t0) / 1e6)
    out(f"- `supctl status --json` with 1000 units (whole command): {med(st)} ms")
    mo = []
    for i in range(20):
        t0 = now()
        subprocess.run([SUPCTL, "--socket", sock, "maintenance", "on", f"s{i}", "--reason", "bench"],
                       stdout=subprocess.DEVNULL, check=True)
        mo.append((now() - t0) / 1e6)
    out(f"- `supctl maintenance on` acknowledged (lock fsynced, unit stopped; whole command): {med(mo)} ms")
    results["status"] = st
    results["maint"] = mo
    run.signal(signal.SIGTERM)
    if not run.wait(60):
        run.kill()
    m.close()
    out("")


def main():
    u = os.uname()
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out("# supd benchmark results")
    out("")
    out(f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {os.cpu_count()} cores, {cpu}, "
        f"kernel {u.release}. Command: `bench/run.sh{' --quick' if QUICK else ''}` as root. "
        "Figures: median (min–max) over rounds; ratios to the floor taken within each round.")
    out("")
    try:
        bench_start()
        bench_idle()
        bench_restart()
        bench_reap()
        bench_stop()
        bench_supd_only()
    finally:
        with open(OUT, "w") as f:
            f.write("\n".join(lines) + "\n")
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()

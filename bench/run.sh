#!/usr/bin/env bash
# Benchmark supd against its peers and a floor (a minimal C supervisor), on
# this machine, in one run. As root on Debian: installs the peers by name,
# builds the C tools and supd (release), runs bench/bench.py, and writes
# bench/RESULTS.md (about 10 minutes on 2 cores).
#
#   bench/run.sh [--quick] [--no-horust]
#
# --quick: fewer rounds (a smoke run, ~4 minutes). Horust is installed with
# `cargo install horust --locked` into /var/cache/supd-bench/horust (once;
# about 5 minutes with one job on 2 cores; given 20 at most) unless
# --no-horust; a horust on PATH, or named by $HORUST, is used as it is.
# $CARGO_TARGET_DIR is honoured for the supd build. Environment knobs for
# bench.py: BENCH_PEERS=floor,supd,... BENCH_ONLY=start,idle,... SUPD_B=PATH
# (a second supd build measured beside the first).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (PID namespaces, mounts, apt-get)" >&2; exit 1; }

quick=() with_horust=1 out=bench/RESULTS.md
for a in "$@"; do
  case "$a" in
    --quick) quick=(--quick) ;;
    --no-horust) with_horust=0 ;;
    --with-horust) with_horust=1 ;;
    # The N = 100..10,000 curve against the floor, runit and s6, and supd's
    # CPU under 1,000 TCP-probe results/s: bench/CURVE.md.
    --curve) export BENCH_ONLY=curve,probecpu; with_horust=0; out=bench/CURVE.md ;;
    *) echo "usage: bench/run.sh [--quick] [--no-horust] [--curve]" >&2; exit 2 ;;
  esac
done
# Nothing of the caller's reaches the supervisors: descriptors above 2 are
# closed here (bench.py's subprocesses close theirs too), so no supervisor
# starts with a descriptor table grown by its caller.
for fd in /proc/$$/fd/*; do
  fd="${fd##*/}"
  [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done

build="$(mktemp -d)"
guard=0
cleanup() {
  if [ "$guard" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  rm -rf "$build"
}
trap cleanup EXIT

# Peers, by Debian package name; a name the archive does not have is skipped.
need=()
for p in runit s6 supervisor tini dumb-init catatonit; do
  dpkg -s "$p" >/dev/null 2>&1 && continue
  if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]'; then
    need+=("$p")
  else
    echo "bench: package $p is not in the archive here; skipped" >&2
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  # Keep the packages' own daemons (runit's runsvdir, supervisord) from
  # starting: invoke-rc.d asks policy-rc.d, and 101 means "not allowed".
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=1
  fi
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ "$guard" = 1 ]; then rm -f /usr/sbin/policy-rc.d; guard=0; fi
fi

cache=/var/cache/supd-bench
if [ "$with_horust" = 1 ] && ! command -v horust >/dev/null && [ -z "${HORUST:-}" ]; then
  if [ ! -x "$cache/horust/bin/horust" ]; then
    echo "bench: cargo install horust --locked (once; 20 minutes at most)"
    mkdir -p "$cache"
    timeout 1200 cargo install horust --locked -j1 --root "$cache/horust" >"$cache/horust.log" 2>&1 \
      || echo "bench: horust did not install (see $cache/horust.log); not measured" >&2
  fi
  [ -x "$cache/horust/bin/horust" ] && export HORUST="$cache/horust/bin/horust"
fi

for t in service floor mountat listener; do
  gcc -O2 -Wall -static -o "$build/$t" "bench/$t.c" 2>/dev/null || gcc -O2 -Wall -o "$build/$t" "bench/$t.c"
done
cargo build --locked --release --bin supd --bin supctl
target="${CARGO_TARGET_DIR:-target}"
python3 bench/bench.py "$build" "$target/release/supd" "$target/release/supctl" "$out" "${quick[@]}"
echo "bench: results in $out"

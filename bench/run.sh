#!/usr/bin/env bash
# Benchmark supd against its peers and a floor (a minimal C supervisor), on
# this machine, in one run. As root on Debian: installs the peers by name,
# builds the C tools and supd (release), runs bench/bench.py, and writes
# bench/RESULTS.md. `--quick` uses fewer rounds (a smoke run, ~2 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (PID namespaces, mounts, apt-get)" >&2; exit 1; }

need=()
for p in runit s6 supervisor tini dumb-init catatonit; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [ "$guard" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
for t in service floor mountat; do
  gcc -O2 -static -o "$build/$t" "bench/$t.c" 2>/dev/null || gcc -O2 -o "$build/$t" "bench/$t.c"
done
cargo build --locked --release --bin supd --bin supctl
python3 bench/bench.py "$build" target/release/supd target/release/supctl bench/RESULTS.md "$@"
echo "bench: results in bench/RESULTS.md"

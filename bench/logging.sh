#!/usr/bin/env bash
# What per-unit logging costs supd: a unit writing 100 MB/s, and N=500
# start with logging on against output = "inherit". Root (namespaces).
# Usage: sudo bench/logging.sh [--quick] [--nice N]   results in bench/LOGGING.md
# (--nice -10 runs supd at a higher priority: on a machine busy with other
# work the figures then show what supd costs, not its share of a contended CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/logging.sh: needs root (PID namespaces)" >&2; exit 1; }
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
for t in service flood; do
  gcc -O2 -Wall -static -o "$build/$t" "bench/$t.c" 2>/dev/null || gcc -O2 -Wall -o "$build/$t" "bench/$t.c"
done
cargo build --locked --release --bin supd --bin supctl
target="${CARGO_TARGET_DIR:-target}"
python3 bench/logging.py "$build" "$target/release/supd" "$target/release/supctl" bench/LOGGING.md "$@"
echo "bench: results in bench/LOGGING.md"

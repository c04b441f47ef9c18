#!/usr/bin/env bash
# Hostile peers, longer and larger than in the suite: the operator's
# answers (p50/p99/max) while idle, slow and flooding clients hold supd's
# control socket, and while forged datagrams flood its notify socket.
# Root (namespaces, setpriv). Prints the figures tests/peers.rs measures.
#
# Usage: sudo bench/peers.sh [SECONDS] [SCALE]     (default 60 s, 4x peers)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
scale="${2:-4}"
echo "bench/peers.sh: ${secs}s per socket, ${scale}x peers, $(nproc) CPUs, $(uname -r)"
SUPD_PEERS_SECS="$secs" SUPD_PEERS_SCALE="$scale" \
  cargo test --release --locked --test peers -- --include-ignored --nocapture --test-threads=1 2>&1 \
  | grep -E '^(peers|  peers|test |test result)'

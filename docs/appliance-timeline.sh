#!/usr/bin/env bash
# Boot the appliance example units (units/appliance: PostgreSQL, Redis, an
# app, nginx) under supd as PID 1 of a fresh PID + mount namespace, the way
# a host boots them: the data disk (an ext4 image) is attached 2 s late,
# and nginx is held by a maintenance lock until a little after the app is
# ready. Then print `supctl analyze blame` and `critical-chain`, and write
# the timeline (SVG + a Chromium screenshot) and the graph to OUT_DIR
# (default docs/): the pictures in README.md come from here.
#
# Needs root, postgresql-15, redis-server, nginx-light, chromium,
# e2fsprogs (./test.sh installs them as root). Ports 80, 5432, 6379 and
# 8000 must be free. Everything it starts dies with the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-docs}
[ "$(id -u)" = 0 ] || { echo "appliance-timeline.sh: run as root" >&2; exit 2; }

cargo build -q --bin supd --bin supctl
supd=$PWD/target/debug/supd
supctl=$PWD/target/debug/supctl
work=$(mktemp -d /tmp/supd-appliance.XXXXXX)
chmod 755 "$work"   # initdb runs as postgres
made_srv=0
outer=
cleanup() {
  if [ -n "$outer" ] && kill -0 "$outer" 2>/dev/null; then
    kill -KILL "$outer" 2>/dev/null || true
    wait "$outer" 2>/dev/null || true
  fi
  mountpoint -q "$work/prep" && umount "$work/prep"
  [ "$made_srv" = 1 ] && rmdir /srv/pg 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The data disk: an ext4 image holding an initialised cluster.
img=$work/pg.img
truncate -s 256M "$img"
mkfs.ext4 -q "$img"
mkdir -p "$work/prep"
mount -o loop "$img" "$work/prep"
install -d -o postgres -g postgres "$work/prep/data"
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$work/prep/data" >/dev/null
umount "$work/prep"
[ -d /srv/pg ] || { mkdir -p /srv/pg; made_srv=1; }

# The example units as they are, except where this host forbids them: a
# container without CAP_SYS_RESOURCE cannot raise nofile to 65536.
units=$work/units
cp -r units/appliance "$units"
if ! (ulimit -n 65536) 2>/dev/null; then
  hard=$(ulimit -Hn)
  sed -i "s/nofile = 65536/nofile = $hard/" "$units/postgres.toml"
  echo "note: nofile = 65536 is not allowed here; postgres runs with nofile = $hard" >&2
fi

sock=$work/control.sock
unshare --pid --fork --mount --propagation private --mount-proc --kill-child=SIGKILL -- \
  "$supd" --units "$units" --state-dir "$work/state" --socket "$sock" \
  --config "$work/supd.toml" >"$work/supd.log" 2>&1 &
outer=$!
ctl() { "$supctl" --socket "$sock" "$@"; }
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
pid=$(cut -d' ' -f1 "/proc/$outer/task/$outer/children")

ctl maintenance on nginx --reason "certificate renewal" --holder ops >/dev/null
sleep 2
nsenter -t "$pid" -m -p -- mount -o loop "$img" /srv/pg
ready=0
for _ in $(seq 600); do
  st=$(ctl status app --json)
  case $st in *'"ready": true'*) ready=1; break ;; esac
  sleep 0.1
done
if [ "$ready" = 0 ]; then
  echo "appliance-timeline.sh: the app did not become ready within 60 s" >&2
  ctl status >&2 || true
  tail -n 40 "$work/supd.log" >&2
  exit 1
fi
sleep 1
mkdir -p "$out"
# The graph while nginx is still held down: the lock is one of its nodes.
ctl graph >"$out/appliance-graph.svg"
ctl maintenance off nginx --holder ops >/dev/null
for _ in $(seq 100); do
  st=$(ctl status nginx --json)
  case $st in *'"state": "running"'*) break ;; esac
  sleep 0.1
done
sleep 0.5

echo '$ supctl analyze blame'
ctl analyze blame
echo
echo '$ supctl analyze critical-chain nginx'
ctl analyze critical-chain nginx
echo
echo '$ supctl analyze critical-chain app'
ctl analyze critical-chain app

ctl analyze plot >"$out/appliance-boot.svg"
profile=$work/chromium
for pic in appliance-boot appliance-graph; do
  # The window is the picture's own size.
  size=$(sed -n 's/^<svg [^>]*width="\([0-9]*\)" height="\([0-9]*\)".*/\1,\2/p' "$out/$pic.svg" | head -n 1)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size=$size \
    --screenshot="$out/$pic.png" "file://$PWD/$out/$pic.svg" 2>/dev/null
done

ctl poweroff >/dev/null
wait "$outer" || true
outer=
echo
echo "wrote $out/appliance-boot.svg, $out/appliance-boot.png, $out/appliance-graph.svg, $out/appliance-graph.png"

#!/usr/bin/env bash
# Run every supd test. As root, first install what the tests need (they run
# real supd processes in PID + mount namespaces, real daemons, a real VM).
# Usage: ./test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" = 0 ]; then
  need=()
  command -v unshare >/dev/null || need+=(util-linux)
  command -v nsenter >/dev/null || need+=(util-linux)
  command -v python3 >/dev/null || need+=(python3)
  command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
  command -v losetup >/dev/null || need+=(mount)
  command -v setpriv >/dev/null || need+=(util-linux)
  # systemd-notify for tests/notify.rs (the package's daemons are not started).
  command -v systemd-notify >/dev/null || need+=(systemd)
  # EIO under the lock store (tests/faults.rs): a FUSE passthrough that
  # fails on demand (the kernel may have no device-mapper).
  /usr/bin/python3 -c 'import fusepy' 2>/dev/null || need+=(python3-fusepy)
  # Real daemons for tests/real_services.rs.
  [ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v nginx >/dev/null || need+=(nginx-light)
  # tests/forking.rs: Type=forking without PIDFile=, from its own unit.
  [ -x /usr/sbin/apache2 ] || need+=(apache2)
  # tests/imported_services.rs runs these from their own Debian unit files.
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  # The VM test (tests/vm.rs): QEMU, a Debian kernel, busybox, cpio.
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  ls /lib/modules 2>/dev/null | grep -q -- '-cloud-amd64$' || need+=(linux-image-cloud-amd64)
  [ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
  command -v cpio >/dev/null || need+=(cpio)
  command -v debugfs >/dev/null || need+=(e2fsprogs)
  command -v file >/dev/null || need+=(file)
  # tests/analyze.rs: the SVG timeline in a real browser, the graph in Graphviz.
  command -v chromium >/dev/null || need+=(chromium)
  command -v dot >/dev/null || need+=(graphviz)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
  # The shim's tests (tests/shim.rs): a C fixture, bash under a pty.
  command -v cc >/dev/null || need+=(gcc libc6-dev)
  command -v bash >/dev/null || need+=(bash)
  command -v ps >/dev/null || need+=(procps)
  # A real container runtime (tests/container.rs): podman with runc.
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  # tini's and dumb-init's own test suites (tests/peers/): their harness
  # modules, and the tools themselves for bench/shim_stop.py.
  /usr/bin/python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)
  /usr/bin/python3 -c 'import pytest_timeout' 2>/dev/null || need+=(python3-pytest-timeout)
  /usr/bin/python3 -c 'import psutil' 2>/dev/null || need+=(python3-psutil)
  /usr/bin/python3 -c 'import prctl' 2>/dev/null || need+=(python3-prctl)
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  # tests/listen.rs: a real daemon taking a passed socket (rsyslog from its
  # own Debian unit), and logger to write to it.
  command -v rsyslogd >/dev/null || need+=(rsyslog)
  command -v logger >/dev/null || need+=(bsdutils)
  command -v tini >/dev/null || need+=(tini)
  command -v dumb-init >/dev/null || need+=(dumb-init)
  if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start their daemons: the tests start their own,
    # under supd, and nothing may be left running.
    guard=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      guard=1
    fi
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
    [ "$guard" = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
  # The reference Prometheus text parser that tests/observe.rs checks
  # /metrics with (pip where python3 has it, else Debian's package).
  if ! python3 -c 'import prometheus_client.parser' 2>/dev/null; then
    echo "test.sh: installing the prometheus-client Python package"
    python3 -m pip install -q prometheus-client 2>/dev/null \
      || python3 -m pip install -q --break-system-packages prometheus-client 2>/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-prometheus-client >/dev/null; }
  fi
else
  echo "test.sh: not root — namespace tests will print SKIP lines (run as root for the full suite)"
fi

# tini's and dumb-init's published suites (Debian source packages), run
# against `supd --` by tests/shim.rs; never committed here.
if [ "$(id -u)" = 0 ]; then
  tests/peers/fetch.sh || echo "test.sh: could not fetch the peer suites; tests/shim.rs will skip them"
fi

# The VM's and the container image's supd is a static musl build.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl || echo "test.sh: could not add the musl target; the VM and container tests will fail"
fi

# The engine simulation runs this many seeds (CI: a few hundred).
export SUPD_SIM_SEEDS="${SUPD_SIM_SEEDS:-300}"
cargo build --locked --all-targets
# Benches (harness = false) are built above but not run here: they are
# numbers, not tests (`cargo bench --bench engine`).
cargo test --locked --lib --bins --tests "$@"

#!/usr/bin/env bash
# Fetch tini's and dumb-init's own published test suites, unchanged, for
# tests/peers/run.py: the upstream release tarballs as Debian ships them
# (the .orig.tar.gz of the `tini` and `dumb-init` source packages, checked
# against the hashes of the signed Sources index), plus a Python venv with
# the one module tini's harness needs that Debian lacks (`bitmap`, PyPI).
# Nothing of theirs is committed to this repository.
#
# Usage: tests/peers/fetch.sh [CACHE_DIR]    (default: target/peer-suites)
# Needs: apt-get (network to Debian), python3-venv, pip (network to PyPI).
# Uses a private apt configuration: the system's sources stay untouched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${1:-$here/../../target/peer-suites}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

want=(dumb-init tini)
have_all=1
for p in "${want[@]}"; do
  ls "$cache"/dl/"$p"_*.orig.tar.gz >/dev/null 2>&1 || have_all=0
done
[ -x "$cache/venv/bin/python" ] || have_all=0
if [ "$have_all" = 1 ]; then
  echo "peer suites: already in $cache"
  exit 0
fi

apt="$cache/apt"
mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$cache/dl"
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
cat > "$apt/parts/debian-src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/parts"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" -qq update
for p in "${want[@]}"; do
  # Only the upstream tarball: URI, name, size and SHA256 from the index.
  line="$(apt-get "${opts[@]}" source --print-uris --only-source "$p" \
          | grep -E "\.orig\.tar\.(gz|xz|bz2)' " | head -n 1)"
  [ -n "$line" ] || { echo "fetch.sh: no upstream tarball for $p in Debian $suite" >&2; exit 1; }
  uri="$(echo "$line" | awk '{print $1}' | tr -d "'")"
  name="$(echo "$line" | awk '{print $2}')"
  hash="$(echo "$line" | grep -oE 'SHA256:[0-9a-f]{64}' || true)"
  [ -n "$hash" ] || { echo "fetch.sh: no SHA256 for $name" >&2; exit 1; }
  /usr/lib/apt/apt-helper -o "APT::Sandbox::User=root" download-file "$uri" "$cache/dl/$name" "$hash" >/dev/null
  echo "peer suites: $name ($hash)"
done

if [ ! -x "$cache/venv/bin/python" ]; then
  # Debian's python3 (pytest, psutil, prctl come from Debian packages).
  /usr/bin/python3 -m venv --system-site-packages "$cache/venv.tmp"
  "$cache/venv.tmp/bin/pip" install -q --disable-pip-version-check 'bitmap==0.0.7'
  mv "$cache/venv.tmp" "$cache/venv"
fi
echo "peer suites: ready in $cache"

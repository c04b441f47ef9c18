#!/usr/bin/env bash
# Build the supd container image (packaging/container/Dockerfile): compile a
# static musl supd and supctl, then build the image from a context holding
# only them (no registry is needed: the image starts FROM scratch).
#
# Usage: packaging/container/build.sh [TAG]          (default: localhost/supd:latest)
# Env:   ENGINE       podman (default) or docker
#        ENGINE_ARGS  global engine flags, e.g. on a hybrid-cgroup host
#                     "--runtime runc --cgroup-manager=cgroupfs"
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tag="${1:-localhost/supd:latest}"
engine="${ENGINE:-podman}"
target=x86_64-unknown-linux-musl

die() { echo "build.sh: $*" >&2; exit 1; }
command -v "$engine" >/dev/null || die "$engine not found (apt-get install podman runc)"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q "$target"; then
  rustup target add "$target" || die "cannot add rust target $target"
fi
(cd "$repo" && cargo build --locked --release --target "$target" --bin supd --bin supctl) \
  || die "static build failed"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$repo/target/$target/release/supd" "$repo/target/$target/release/supctl" "$ctx/"
# shellcheck disable=SC2086 # ENGINE_ARGS is a list of flags
"$engine" ${ENGINE_ARGS:-} build -q -f "$here/Dockerfile" -t "$tag" "$ctx" >/dev/null
echo "$tag"

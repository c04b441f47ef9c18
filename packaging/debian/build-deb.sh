#!/usr/bin/env bash
# Build the Debian package: release binaries, man pages and completions
# generated from the CLIs, then cargo-deb (installed on demand).
# Usage: packaging/debian/build-deb.sh   (from anywhere; output in target/debian/)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --locked --release --bin supd --bin supctl
rm -rf target/docs
target/release/supctl generate-docs target/docs   # both binaries' pages
if ! command -v cargo-deb >/dev/null; then
  echo "build-deb: installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked
fi
cargo deb --no-build
ls -l target/debian/*.deb

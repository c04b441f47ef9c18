#!/usr/bin/env bash
# Build a bootable initramfs with a static supd as /init, busybox, the
# virtio modules of a Debian kernel, the test helpers (sendraw, hammer), and
# a scenario: SCENARIO/supd.toml and SCENARIO/units/*.toml (default: this
# directory, i.e. packaging/vm/units/; packaging/vm/powercut/ is the
# power-cut test's). Output: $OUT/initramfs.cpio.gz and $OUT/vmlinuz.
#
# Usage: packaging/vm/build-initramfs.sh OUTDIR [release|debug] [SCENARIO]
# Needs: rustup target x86_64-unknown-linux-musl, busybox-static, cpio,
#        linux-image-cloud-amd64 (./test.sh installs them as root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?usage: build-initramfs.sh OUTDIR [release|debug]}"
profile="${2:-release}"
scenario="$(cd "${3:-$here}" && pwd)"
target=x86_64-unknown-linux-musl

die() { echo "build-initramfs: $*" >&2; exit 1; }

command -v busybox >/dev/null || die "busybox not found (apt-get install busybox-static)"
file -L "$(command -v busybox)" 2>/dev/null | grep -q "statically linked" \
  || ldd "$(command -v busybox)" 2>&1 | grep -q "not a dynamic" \
  || die "busybox is not static (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"
kver="$(ls /lib/modules | grep -- -cloud-amd64 | sort -V | tail -n 1 || true)"
[ -n "$kver" ] || die "no cloud kernel in /lib/modules (apt-get install linux-image-cloud-amd64)"
[ -f "/boot/vmlinuz-$kver" ] || die "/boot/vmlinuz-$kver missing"

if ! rustup target list --installed 2>/dev/null | grep -q "$target"; then
  rustup target add "$target" || die "cannot add rust target $target"
fi
flags=()
[ "$profile" = release ] && flags=(--release)
(cd "$repo" && cargo build --locked "${flags[@]}" --target "$target" --bin supd --bin supctl) \
  || die "static build failed"
bin="$repo/target/$target/$profile"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc/supd/units,lib/modules,data,proc,sys,dev,run,tmp,www,root}
cp "$bin/supd" "$root/init"
cp "$bin/supctl" "$root/sbin/supctl"
cp "$(command -v busybox)" "$root/bin/busybox"
gcc -O2 -static -o "$root/bin/sendraw" "$here/sendraw.c" || die "cannot build sendraw (gcc, static libc)"
gcc -O2 -static -o "$root/bin/hammer" "$here/hammer.c" || die "cannot build hammer (gcc, static libc)"
for applet in $(busybox --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# The virtio stack, in load order (the cloud kernel builds them as modules).
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  f="$(modinfo -k "$kver" -n "$m")" || die "module $m not found for $kver"
  case "$f" in
    *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *) die "unexpected module file $f" ;;
  esac
done
cp "$scenario"/units/*.toml "$root/etc/supd/units/"
cp "$scenario/supd.toml" "$root/etc/supd/supd.toml"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
echo 'hello from supd in a VM' > "$root/www/index.html"
mkdir -p "$out"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "build-initramfs: $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1)), kernel $kver, supd $(du -h "$bin/supd" | cut -f1)"

#!/usr/bin/env bash
# Boot the initramfs from build-initramfs.sh under QEMU (TCG: nested KVM
# does not work on these machines), with DISK as a virtio disk, until the
# guest powers off. The serial console goes to LOG. A guest kernel panic
# reboots at once (panic=-1) and -no-reboot turns that into a QEMU exit, so
# a dying PID 1 ends the run instead of hanging it.
#
# VM_CACHE sets the disk's cache mode (default: QEMU's, writeback). With
# VM_DIRECT=1 QEMU replaces this script (no timeout wrapper): the caller
# owns its pid and its deadline — the power-cut test kills it.
#
# Usage: packaging/vm/run-vm.sh OUTDIR DISK LOG [extra kernel args...]
set -euo pipefail
out="${1:?usage: run-vm.sh OUTDIR DISK LOG [kernel args]}"
disk="${2:?disk image}"
log="${3:?serial log}"
shift 3
timeout="${VM_TIMEOUT:-240}"
command -v qemu-system-x86_64 >/dev/null || { echo "run-vm: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 1; }
drive="file=$disk,format=raw,if=virtio"
[ -n "${VM_CACHE:-}" ] && drive="$drive,cache=$VM_CACHE"
wrap=(timeout --kill-after=5 "$timeout")
[ "${VM_DIRECT:-0}" = 1 ] && wrap=()
exec "${wrap[@]}" qemu-system-x86_64 \
  -accel tcg -m 256 -smp 1 \
  -kernel "$out/vmlinuz" -initrd "$out/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 loglevel=4 $*" \
  -drive "$drive" \
  -display none -serial "file:$log" -monitor none \
  -no-reboot

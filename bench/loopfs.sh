#!/usr/bin/env bash
# bench/loopfs.sh - a disk-backed ext4 for `make bench-gc`, mounted the
# ext4 default way (no `discard`), for machines whose root filesystem is
# mounted with `discard` (docs/benchmarks.md explains why that matters:
# every unlink then waits for a synchronous TRIM).
#
#   bench/loopfs.sh up   [IMG] [MNT]   create IMG (16 GiB, preallocated),
#                                      mkfs.ext4 with 4M inodes, attach it
#                                      with direct I/O (no double caching),
#                                      mount at MNT
#   bench/loopfs.sh down [IMG] [MNT]   unmount, detach, delete IMG
# Defaults: IMG=/var/tmp/ckl-bench.img MNT=/var/tmp/ckl-bench-fs. Needs root.
set -euo pipefail
cmd=${1:-}
img=${2:-/var/tmp/ckl-bench.img}
mnt=${3:-/var/tmp/ckl-bench-fs}
case "$cmd" in
up)
  [ -e "$img" ] && { echo "loopfs: $img exists" >&2; exit 1; }
  fallocate -l 16G "$img"
  mkfs.ext4 -q -N 4000000 -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  dev=$(losetup --direct-io=on -f --show "$img")
  mkdir -p "$mnt"
  mount -o nodiscard "$dev" "$mnt"
  echo "loopfs: $img on $dev mounted at $mnt"
  ;;
down)
  dev=$(findmnt -n -o SOURCE "$mnt" || true)
  [ -n "$dev" ] && umount "$mnt"
  [ -n "$dev" ] && losetup -d "$dev"
  rm -f "$img"
  rmdir "$mnt" 2>/dev/null || true
  ;;
*)
  echo "usage: bench/loopfs.sh up|down [IMG] [MNT]" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# Two sshfs mounts of one directory over loopback: two "hosts" sharing a
# network filesystem, for test_softlock_netfs.
#   softlock-sshfs.sh start DIR   -> DIR/m1 and DIR/m2 mount DIR/export
#   softlock-sshfs.sh stop DIR
# Exit 77 (skip) when sshfs, sshd, fusermount3 or /dev/fuse is missing or a
# mount cannot be made; the reason goes to stderr.
set -u
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
stop() {
  for m in m1 m2; do
    mountpoint -q "$dir/$m" 2>/dev/null && { fusermount3 -u "$dir/$m" 2>/dev/null || umount -l "$dir/$m"; }
  done
  [ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null
  rm -f "$dir/sshd.pid"
  return 0
}
if [ "$cmd" = stop ]; then stop; exit 0; fi
skip() { echo "softlock-sshfs: $*" >&2; stop; exit 77; }
command -v sshfs >/dev/null || skip "sshfs not installed"
command -v fusermount3 >/dev/null || skip "fusermount3 not installed"
[ -x "$SSHD" ] || skip "sshd not installed"
[ -c /dev/fuse ] || skip "/dev/fuse missing"
mkdir -p "$dir/export" "$dir/m1" "$dir/m2" || exit 2
chmod 700 "$dir" "$dir/export"
ssh-keygen -q -t ed25519 -N '' -f "$dir/hostkey" <<<y >/dev/null 2>&1 || skip "ssh-keygen failed"
ssh-keygen -q -t ed25519 -N '' -f "$dir/userkey" <<<y >/dev/null 2>&1 || skip "ssh-keygen failed"
cp "$dir/userkey.pub" "$dir/authorized_keys"; chmod 600 "$dir/authorized_keys"
[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd 2>/dev/null
for attempt in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 20000))
  cat >"$dir/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/hostkey
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
PidFile $dir/sshd.pid
CFG
  "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log" || continue
  # sshd writes its pid file once it listens. A hang guard, not a guess
  # of how fast it starts: on a loaded machine a start slower than the
  # 2.5 s this once allowed gets the mounts refused, and the test skipped
  # (a lost run, and an sshd left running without a pid file to stop it).
  for _ in $(seq 1200); do [ -s "$dir/sshd.pid" ] && break; sleep 0.05; done
  ok=1
  for m in m1 m2; do
    # No client caches: every lookup, attribute and directory read goes
    # to the server, as on NFS with noac/lookupcache=none.
    timeout 20 sshfs -p "$port" -o "IdentityFile=$dir/userkey,BatchMode=yes" \
      -o "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR" \
      -o "cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0,dir_cache=no" \
      "127.0.0.1:$dir/export" "$dir/$m" 2>>"$dir/sshfs.log" || { ok=0; break; }
  done
  [ $ok -eq 1 ] && exit 0
  stop
done
skip "could not mount sshfs over loopback (see $dir/sshfs.log, $dir/sshd.log)"

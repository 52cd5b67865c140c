#!/usr/bin/env bash
# A snapshot in use cannot be forgotten, and the message names who uses
# it: forget of a snapshot that a running verify holds (paused at
# verify.before_finish) exits 3 naming the verify; the same while a
# restore reads it (paused at restore.after_open); prune skips it with a
# warning. A frozen store (with-lock --shared) makes forget and prune exit
# 3 naming the freeze while backups and verify go on, and --wait gets
# through once it ends. Under with-lock --exclusive a backup of another
# process, a forget and a gc exit 3, restore and verify run. fsck and
# verify report damage with exit 4.
. "$CKL_CLI_LIB"
require_command backup
new_store
S=$T/store
mkdir -p "$T/src"
head -c 200000 /dev/urandom >"$T/src/f"
ck backup "$S" host/x "$T/src" --time 2026-01-01T00:00:00Z >/dev/null
ck backup "$S" host/x "$T/src" --time 2026-01-02T00:00:00Z >/dev/null
old=host/x/2026-01-01T00:00:00Z

# -- verify holds the snapshot
CHUNKLOCK_FAILPOINTS="verify.before_finish=pausefile($T/fp)" "$CHUNKLOCK" verify "$S" "$old" \
  >"$T/v.out" 2>&1 &
v=$!
BG_PIDS+=($v)
wait_for "$T/fp/verify.before_finish.hit.*"
expect_exit 3 ck forget "$S" "$old"
expect_err "held by verify (pid $v"
expect_exit 0 ck prune "$S" host/x --keep-last 1
expect_out "busy"
expect_err "in use, skipped"
touch "$T/fp/verify.before_finish.go"
wait "$v" || fail "verify failed: $(cat "$T/v.out")"
rm -f "$T"/fp/*

# -- a restore holds the snapshot
CHUNKLOCK_FAILPOINTS="restore.after_open=pausefile($T/fp)" "$CHUNKLOCK" restore "$S" "$old" \
  "$T/r" >"$T/r.out" 2>&1 &
r=$!
BG_PIDS+=($r)
wait_for "$T/fp/restore.after_open.hit.*"
expect_exit 3 ck forget "$S" "$old"
expect_err "(pid $r"
touch "$T/fp/restore.after_open.go"
wait "$r" || fail "restore failed: $(cat "$T/r.out")"
cmp "$T/src/f" "$T/r/src/f"
rm -f "$T"/fp/*

# -- a freeze: forget and prune are busy, named; --wait gets through after
"$CHUNKLOCK" with-lock "$S" --shared -- sh -c 'touch "$0/frozen"; while [ ! -e "$0/thaw" ]; do sleep 0.01; done' "$T" &
w=$!
BG_PIDS+=($w)
wait_for "$T/frozen"
expect_exit 3 ck forget "$S" "$old"
expect_err "held by with-lock (pid $w"
expect_exit 3 ck prune "$S" host/x --keep-last 1
expect_err "held by with-lock"
expect_exit 0 ck prune "$S" host/x --keep-last 1 --dry-run   # deletes nothing: allowed
expect_exit 0 ck backup "$S" host/x "$T/src" --time 2026-01-03T00:00:00Z  # backups still add
expect_exit 0 ck verify "$S" host/x/2026-01-03T00:00:00Z                  # readers still read
"$CHUNKLOCK" forget "$S" "$old" --wait "$WAIT_S" >"$T/f.out" 2>&1 &
f=$!
BG_PIDS+=($f)
touch "$T/thaw"
wait "$w"
wait "$f" || fail "forget --wait failed: $(cat "$T/f.out")"
expect_exit 1 ck forget "$S" "$old"                              # gone now

# -- with-lock --exclusive: no backup in another process, readers go on
"$CHUNKLOCK" with-lock "$S" --exclusive -- sh -c 'touch "$0/excl"; while [ ! -e "$0/done" ]; do sleep 0.01; done' "$T" &
x=$!
BG_PIDS+=($x)
wait_for "$T/excl"
expect_exit 3 ck backup "$S" host/y "$T/src" --time 2026-01-04T00:00:00Z
expect_err "(pid $x"
expect_exit 3 ck forget "$S" host/x/2026-01-02T00:00:00Z
expect_exit 3 ck gc "$S"
expect_exit 0 ck restore "$S" host/x/2026-01-02T00:00:00Z "$T/r2"
expect_exit 0 ck verify "$S" host/x/2026-01-02T00:00:00Z
touch "$T/done"
wait "$x"
expect_exit 0 ck backup "$S" host/y "$T/src" --time 2026-01-04T00:00:00Z
expect_exit 0 ck fsck "$S"

# -- damage: a corrupt chunk makes verify and fsck exit 4
chunk=$(find "$S/.chunks" -type f -size +100k | head -n 1)   # the file's chunk, referenced
chmod u+w "$chunk"
printf 'garbage' | dd of="$chunk" bs=1 seek=40 conv=notrunc status=none
expect_exit 4 ck verify "$S"
expect_out "DAMAGED"
expect_exit 4 ck fsck "$S" --json
json_ok "$T/out"
echo ok

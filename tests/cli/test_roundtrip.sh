#!/usr/bin/env bash
# backup -> restore round trip on a tree with edge cases: empty files, a
# file of many chunks, sparse-looking data (long zero runs, a real hole),
# symlinks (relative, absolute, dangling, to a directory), unicode and
# non-UTF-8 names, spaces and newlines in names, modes (setuid, 0000,
# 0751 directories), nanosecond mtimes, deep nesting, hard links. The
# restored tree must be identical in content, type, mode, mtime and link
# target. An incremental backup reuses unchanged files and still restores
# identically; every command's --json output parses.
. "$CKL_CLI_LIB"
require_command backup
new_store
S=$T/store
src=$T/src
mkdir -p "$src/deep/a/b/c/d/e/f" "$src/dir with space" "$src/émoji 😀"
: >"$src/empty"
: >"$src/deep/a/b/c/d/e/f/empty too"
echo hello >"$src/small"
head -c 9000000 /dev/urandom >"$src/large"           # many 64 KiB-average chunks
head -c 300000 /dev/zero >"$src/zeros"               # sparse-looking data
{ head -c 100000 /dev/urandom; head -c 2000000 /dev/zero; echo tail; } >"$src/mixed"
truncate -s 3M "$src/hole"                            # a real hole
printf 'x' | dd of="$src/hole" bs=1 seek=2000000 conv=notrunc status=none
ln -s small "$src/link-rel"
ln -s /etc/hostname "$src/link-abs"
ln -s does/not/exist "$src/link-dangling"
ln -s deep "$src/link-dir"
echo u >"$src/émoji 😀/naïve ✓.txt"
echo nl >"$src/new
line"
echo raw >"$src/$(printf 'bad-\xff-utf8')"
ln "$src/small" "$src/hardlink"
echo s >"$src/setuid"
chmod 4755 "$src/setuid"
echo z >"$src/nomode"
chmod 0000 "$src/nomode"
chmod 0751 "$src/deep/a"
touch -h -d '1999-12-31 23:59:59.123456789' "$src/link-rel"
touch -d '2001-02-03 04:05:06.987654321' "$src/small" "$src/deep/a/b"
mkfifo "$src/fifo"                                    # skipped with a warning

expect_exit 0 ck backup "$S" host/tree "$src" --chunk-size 64K --time 2026-01-01T00:00:00Z
snap=$(tail -n 1 "$T/out")
[ "$snap" = host/tree/2026-01-01T00:00:00Z ] || fail "last line of stdout is '$snap'"
expect_err "skipping $src/fifo"
rm "$src/fifo"
expect_exit 0 ck restore "$S" "$snap" "$T/out1"
[ "$(tree_digest "$src")" = "$(tree_digest "$T/out1/src")" ] || {
  diff <(tree_digest "$src") <(tree_digest "$T/out1/src") || true
  fail "restored tree differs"
}
# the hole stayed a hole (fewer blocks than bytes)
[ "$(stat -c %b "$T/out1/src/hole")" -lt 2000 ] || fail "sparse file was not restored sparse"

# -- incremental: change one file; unchanged files are reused, not read
echo more >>"$src/large"
expect_exit 0 ck backup "$S" host/tree "$src" --chunk-size 64K --time 2026-01-02T00:00:00Z --json
json_ok "$T/out"
[ "$(json_get "$T/out" 'd["snapshot"]')" = host/tree/2026-01-02T00:00:00Z ] || fail "json snapshot"
[ "$(json_get "$T/out" 'd["unchanged_files"] >= 10')" = True ] || fail "unchanged files were read again"
[ "$(json_get "$T/out" 'd["dedup_chunks"] > 100')" = True ] || fail "the changed file did not dedup"
expect_exit 0 ck restore "$S" host/tree/2026-01-02T00:00:00Z "$T/out2" --json
json_ok "$T/out"
[ "$(tree_digest "$src")" = "$(tree_digest "$T/out2/src")" ] || fail "incremental restore differs"

# -- two roots, and a single file as a root
expect_exit 0 ck backup "$S" host/two "$src/small" "$src/deep" --time 2026-01-03T00:00:00Z
expect_exit 0 ck restore "$S" host/two/2026-01-03T00:00:00Z "$T/out3"
cmp "$src/small" "$T/out3/small"
[ "$(tree_digest "$src/deep")" = "$(tree_digest "$T/out3/deep")" ] || fail "second root differs"

# -- errors
expect_exit 1 ck restore "$S" "$snap" "$T/out1"            # DEST not empty
expect_err "must not exist or be empty"
expect_exit 1 ck restore "$S" host/tree/2030-01-01T00:00:00Z "$T/none"
expect_exit 2 ck restore "$S" not-a-snapshot "$T/none"
expect_exit 2 ck backup "$S" host/tree "$src" --time yesterday
expect_exit 2 ck backup "$S" host/tree "$src/small" "$src/deep/a/b/../../../small"
expect_exit 2 ck backup "$S" "Bad Group" "$src"
expect_exit 1 ck backup "$S" host/tree "$T/missing"
expect_exit 1 ck backup "$S" host/tree "$src" --chunk-size 64K --time 2026-01-01T00:00:00Z
expect_err "exists"

# -- every reporting command's --json parses
for cmd in "list $S" "list $S host/tree" "status $S" "locks $S" "locks $S --reap" \
  "verify $S" "verify $S $snap" "fsck $S" "gc $S --dry-run" "gc $S" \
  "prune $S host/tree --keep-last 1 --dry-run" "failpoints"; do
  # shellcheck disable=SC2086
  expect_exit 0 ck $cmd --json
  json_ok "$T/out"
done
expect_exit 0 ck forget "$S" host/two/2026-01-03T00:00:00Z --json
json_ok "$T/out"
expect_exit 0 ck prune "$S" host/tree --keep-last 1 --json
json_ok "$T/out"
[ "$(json_get "$T/out" 'd["removed"]')" = 1 ] || fail "prune removed the wrong count"
expect_exit 0 ck init "$T/store2" --json
json_ok "$T/out"
# after prune + gc the remaining snapshot still restores, fsck is clean
expect_exit 0 ck gc "$S"
expect_exit 0 ck restore "$S" host/tree/2026-01-02T00:00:00Z "$T/out4"
[ "$(tree_digest "$src")" = "$(tree_digest "$T/out4/src")" ] || fail "restore after gc differs"
expect_exit 0 ck fsck "$S"
echo ok

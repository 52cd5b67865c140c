#!/usr/bin/env bash
# `chunklock demo --seconds 5` runs concurrent backups, prunes, forgets,
# GCs, verifies and restores on one loop and exits 0: fsck clean, every
# restore read back what was written. It cleans up after itself, --json
# prints one document, and its usage errors exit 2.
. "$CKL_CLI_LIB"
require_command demo
mkdir -p "$T/demo"
expect_exit 0 ck demo --seconds 5 --dir "$T/demo"
expect_out "fsck         clean"
expect_out "restores"
grep -qE "gc +[1-9][0-9]* runs" "$T/out" || fail "no GC ran during the demo"
grep -qE "snapshots +[1-9][0-9]* written" "$T/out" || fail "no snapshot was written"
[ -z "$(ls -A "$T/demo")" ] || fail "the demo left files behind: $(ls -A "$T/demo")"
expect_exit 0 ck demo --seconds 2 --dir "$T/demo" --json
json_ok "$T/out"
[ "$(json_get "$T/out" 'd["fsck_clean"] and d["failures"] == 0')" = True ] || fail "demo --json"
expect_exit 2 ck demo --seconds 0
expect_exit 2 ck demo --bogus
expect_exit 0 ck demo --help
echo ok

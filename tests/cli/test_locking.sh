#!/usr/bin/env bash
# CLI locking contract: with-lock --exclusive while a with-lock --shared
# holds the store exits 3 (--wait 0) naming the holder; a second gc while
# one runs exits 3 naming it; a frozen store makes gc exit 3 and a waiting
# freeze gets in when the GC ends; with-lock passes the command's status
# through (and 128+N for a signal); locks lists holders; usage errors exit 2.
. "$CKL_CLI_LIB"
new_store
S=$T/store

# -- with-lock --shared holds; --exclusive --wait 0 is busy and names it
"$CHUNKLOCK" with-lock "$S" --shared -- sh -c 'touch "$0/held"; while [ ! -e "$0/go1" ]; do sleep 0.01; done' "$T" &
BG_PIDS+=($!)
wait_for "$T/held"
expect_exit 3 ck with-lock "$S" --exclusive --wait 0 -- true
expect_err "held by with-lock (pid"
# shared holders share
expect_exit 0 ck with-lock "$S" --shared -- true
# nothing is deleted meanwhile: gc is busy, named
expect_exit 3 ck gc "$S"
expect_err "held by with-lock"
# but a dry-run gc deletes nothing and runs
expect_exit 0 ck gc "$S" --dry-run
# locks lists the holder with its mode and the freeze
expect_exit 0 ck locks "$S" --json
json_ok "$T/out"
[ "$(json_get "$T/out" 'd["freeze"]["frozen"]')" = shared ] || fail "freeze not reported"
[ "$(json_get "$T/out" '[h["operation"] for h in d["holders"]].count("with-lock")')" = 1 ] ||
  fail "with-lock holder not listed"
touch "$T/go1"
wait "${BG_PIDS[0]}"
expect_exit 0 ck with-lock "$S" --exclusive --wait 0 -- true

# -- a second gc while one runs exits 3 naming the first
CHUNKLOCK_FAILPOINTS="gc.mark.after_list=pausefile($T/fp)" "$CHUNKLOCK" gc "$S" >"$T/gc1.out" 2>&1 &
gc1=$!
BG_PIDS+=($gc1)
wait_for "$T/fp/gc.mark.after_list.hit.*"
expect_exit 3 ck gc "$S"
expect_err "held by gc (pid $gc1"
# the exclusive with-lock is busy too (the GC lock), a freeze as well
expect_exit 3 ck with-lock "$S" --exclusive -- true
expect_exit 3 ck with-lock "$S" --shared -- true
expect_err "held by gc"
# a freeze that waits gets in once the GC is done (its deadline is a hang
# guard: the rest of the GC, a sweep of 65,536 directories, runs under it,
# and under ASan on a loaded machine that is not a matter of seconds)
"$CHUNKLOCK" with-lock "$S" --shared --wait "$WAIT_S" -- touch "$T/froze" &
waiter=$!
BG_PIDS+=($waiter)
touch "$T/fp/gc.mark.after_list.go"
wait "$gc1" || fail "the paused gc failed: $(cat "$T/gc1.out")"
wait "$waiter" || fail "the waiting with-lock failed"
[ -e "$T/froze" ] || fail "the waiting with-lock did not run its command"

# -- exit status passthrough
expect_exit 7 ck with-lock "$S" --shared -- sh -c 'exit 7'
expect_exit 0 ck with-lock "$S" --exclusive -- sh -c '[ "$CHUNKLOCK_WITH_LOCK" = exclusive ]'
expect_exit 137 ck with-lock "$S" --shared -- sh -c 'kill -9 $$'
expect_exit 127 ck with-lock "$S" --shared -- /nonexistent/command
# the lock is gone with the command: a gc runs
expect_exit 0 ck gc "$S"

# -- usage errors
expect_exit 2 ck with-lock "$S" -- true
expect_exit 2 ck with-lock "$S" --shared --exclusive -- true
expect_exit 2 ck with-lock "$S" --shared
expect_exit 2 ck with-lock "$S" --shared --wait soon -- true
expect_exit 2 ck gc
expect_exit 2 ck gc "$S" --bogus
expect_exit 2 ck nosuchcommand
expect_exit 1 ck gc "$T/not-a-store"
expect_err "not a chunklock store"
echo "ok"

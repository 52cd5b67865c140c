#!/usr/bin/env bash
# with-lock --soft PATH: the soft reader/writer lease lock on any directory
# (not a store). An exclusive holder makes a second holder exit 3 naming it
# (with-lock, pid); shared holders share; the markers are gone afterwards;
# the command's status passes through; usage errors exit 2.
. "$CKL_CLI_LIB"
D=$T/shared-dir
mkdir -p "$D"

"$CHUNKLOCK" with-lock --soft "$D/lk" --exclusive -- sh -c 'touch "$0/held"; while [ ! -e "$0/go" ]; do sleep 0.01; done' "$T" &
BG_PIDS+=($!)
wait_for "$T/held"
expect_exit 3 ck with-lock --soft "$D/lk" --shared -- true
expect_err "held by with-lock (pid"
expect_exit 3 ck with-lock --soft "$D/lk" --exclusive --wait 0 -- true
touch "$T/go"
wait "${BG_PIDS[@]}"
BG_PIDS=()
# the writer marker is gone; readers share and see their mode
[ ! -e "$D/lk.write" ] || fail "writer marker left behind"
expect_exit 0 ck with-lock --soft "$D/lk" --shared -- sh -c \
  '[ "$CHUNKLOCK_WITH_LOCK" = shared ] && "$0" with-lock --soft "$1" --shared -- true' "$CHUNKLOCK" "$D/lk"
[ -z "$(ls -A "$D/lk.readers")" ] || fail "reader markers left behind: $(ls -A "$D/lk.readers")"
expect_exit 7 ck with-lock --soft "$D/lk" --exclusive -- sh -c 'exit 7'
expect_exit 2 ck with-lock --soft "$D/lk" -- true
expect_exit 2 ck with-lock --soft -- true
echo "test_softlock.sh: ok"

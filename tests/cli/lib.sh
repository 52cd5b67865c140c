# tests/cli/lib.sh - helpers for the CLI tests, sourced by each test_*.sh.
#
# Each test drives the built binary ($CHUNKLOCK, set by ctest) as a user
# would, in a fresh directory under $CKL_TEST_TMPDIR that is removed at
# exit. Interleavings are forced with failpoints across processes
# (pausefile) and with commands that wait for a file to appear, never with
# sleeps that hope for an order: wait_for polls for a condition.
set -euo pipefail

: "${CHUNKLOCK:?CHUNKLOCK must name the chunklock binary}"
base=${CKL_TEST_TMPDIR:-/tmp}
mkdir -p "$base"
T=$(mktemp -d "$base/cli.XXXXXX")
BG_PIDS=()
cleanup() {
  local rc=$?
  # release anything still paused, then reap what we started
  touch "$T"/fp/*.go 2>/dev/null || true
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
mkdir -p "$T/fp"

ck() { "$CHUNKLOCK" "$@"; }

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# expect_exit CODE CMD...: run CMD, check its exit status; its stdout goes
# to $T/out, its stderr to $T/err (both shown on failure).
expect_exit() {
  local want=$1
  shift
  local got=0
  "$@" >"$T/out" 2>"$T/err" || got=$?
  if [ "$got" != "$want" ]; then
    echo "--- stdout"; cat "$T/out"; echo "--- stderr"; cat "$T/err"
    fail "'$*' exited $got, expected $want"
  fi
}

# expect_err TEXT: the last expect_exit's stderr contains TEXT.
expect_err() {
  grep -qF -- "$1" "$T/err" || { cat "$T/err"; fail "stderr lacks '$1'"; }
}
expect_out() {
  grep -qF -- "$1" "$T/out" || { cat "$T/out"; fail "stdout lacks '$1'"; }
}

# json_ok FILE: FILE holds exactly one JSON document.
json_ok() {
  /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)' <"$1" || {
    cat "$1"
    fail "not one JSON document: $1"
  }
}
# json_get FILE EXPR: evaluate a Python expression on the document d.
json_get() {
  /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($2)" <"$1"
}

# The bound of a wait that is expected to end (a paused process reaching
# its failpoint, a --wait that another process's release ends): a hang
# guard, not a measurement, so as long as the ctest timeout allows (the
# CKL_TEST_WAIT_MS of tests/support/testutil.h). A tighter one fails a
# correct test on a slow machine (ASan, two loaded cores).
WAIT_S=60

# wait_for PATH-GLOB [SECONDS]: poll until a file matching the glob exists.
wait_for() {
  local glob=$1 limit=${2:-$WAIT_S} i=0
  while ! compgen -G "$glob" >/dev/null; do
    i=$((i + 1))
    [ $i -le $((limit * 100)) ] || fail "timed out waiting for $glob"
    sleep 0.01
  done
}

# A fresh store at $T/store; GC keeps nothing by age (safety 0, margin 0).
new_store() {
  ck init "$T/store" --atime-safety 0 --gc-margin 0 >/dev/null
}

# Skip (ctest SKIP_RETURN_CODE 77) when a command this test needs is not
# built: backup and friends need the operations module, demo the runtime.
require_command() {
  if ! "$CHUNKLOCK" "$1" --help >/dev/null 2>&1; then
    echo "SKIP: 'chunklock $1' is not built"
    exit 77
  fi
}

# tree_digest DIR: one line per entry (relative path, type, mode, mtime in
# ns, size, SHA-256 of the content or the symlink target), sorted; two
# trees are identical when their digests are.
tree_digest() {
  /usr/bin/python3 - "$1" <<'PY'
import hashlib, os, stat, sys
root = os.fsencode(sys.argv[1])
out = []
for dirpath, dirs, files in os.walk(root):
    for name in dirs + files:
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        rel = os.path.relpath(p, root)
        if stat.S_ISLNK(st.st_mode):
            kind, what = "l", hashlib.sha256(os.readlink(p)).hexdigest()
        elif stat.S_ISDIR(st.st_mode):
            kind, what = "d", ""
        elif stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for b in iter(lambda: f.read(1 << 20), b""):
                    h.update(b)
            kind, what = "f", h.hexdigest()
        else:
            continue
        mode = "" if kind == "l" else oct(stat.S_IMODE(st.st_mode))
        size = st.st_size if kind == "f" else ""
        out.append("%s %s %s %d %s %s" % (rel.hex(), kind, mode, st.st_mtime_ns, size, what))
print("\n".join(sorted(out)))
PY
}

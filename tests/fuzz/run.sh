#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] [BUILD_DIR] - fuzz every target for SECONDS
# (default 60) each, one after the other, and fail if any finds a crash,
# a sanitizer report, a leak, a timeout or a failed FUZZ_CHECK.
#
# BUILD_DIR (default build-fuzz) must hold a CKL_BUILD_FUZZ build:
#   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCKL_BUILD_FUZZ=ON -DCKL_BUILD_TESTS=OFF
#   cmake --build build-fuzz --target fuzz-targets
# (`make fuzz SECONDS=N` does both, then runs this.)
#
# Each target starts from its committed seeds (tests/fuzz/corpus/<t>/, read
# only) and grows a scratch corpus in a temp dir, deleted afterwards; set
# CKL_FUZZ_KEEP=1 to keep it. Crash inputs go to BUILD_DIR/fuzz-artifacts/.
# Restrict to some targets with CKL_FUZZ_TARGETS="chunk roster".
set -euo pipefail
secs=${1:-60}
build=${2:-build-fuzz}
here=$(cd "$(dirname "$0")" && pwd)
bin="$build/tests/fuzz"
targets=${CKL_FUZZ_TARGETS:-"chunk didx fidx manifest roster store_config snapshot_name softlock_marker"}

# Input size bounds: a little above the largest input that can be valid
# where that is small, enough for many entries where it is not.
declare -A maxlen=([chunk]=65536 [didx]=8192 [fidx]=8192 [manifest]=16384
                   [roster]=4608 [store_config]=8192 [snapshot_name]=256
                   [softlock_marker]=1280)

[[ "$secs" =~ ^[0-9]+$ ]] || { echo "run.sh: SECONDS must be a number, not '$secs'" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ckl-fuzz-XXXXXX")
art="$build/fuzz-artifacts"
mkdir -p "$art"
failed=()
printf '%-14s %12s %10s %8s %8s  %s\n' target executions exec/s cov units result
for t in $targets; do
  exe="$bin/fuzz_$t"
  [ -x "$exe" ] || { echo "run.sh: $exe not built (see the header of this script)" >&2; exit 2; }
  mkdir -p "$work/$t"
  rm -f "$art/$t"-*
  args=(-max_len="${maxlen[$t]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$art/$t-")
  [ -f "$here/dict/$t.dict" ] && args+=(-dict="$here/dict/$t.dict")
  log="$work/$t.log"
  rc=0
  "$exe" "${args[@]}" "$work/$t" "$here/corpus/$t" >"$log" 2>&1 || rc=$?
  # A target that crashes on a seed prints none of these: no value is "?".
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1) || true
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1) || true
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  units=$(find "$work/$t" -type f | wc -l)
  result=ok
  if [ "$rc" -ne 0 ] || compgen -G "$art/$t-*" >/dev/null; then
    result="FAILED (exit $rc; inputs: $(ls "$art/$t"-* 2>/dev/null | tr '\n' ' '))"
    failed+=("$t")
    cp "$log" "$art/$t.log"
  fi
  printf '%-14s %12s %10s %8s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$units" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "==== $t: last lines of $art/$t.log"
    grep -E 'ERROR|FUZZ_CHECK|SUMMARY|#0 |#1 |#2 |#3 ' "$art/$t.log" | head -20 || tail -30 "$art/$t.log"
  done
  echo "run.sh: findings in: ${failed[*]} (scratch corpora kept in $work)" >&2
  exit 1
fi
if [ "${CKL_FUZZ_KEEP:-0}" = 1 ]; then echo "scratch corpora kept in $work"; else rm -rf "$work"; fi
echo "run.sh: no findings in $secs s per target"

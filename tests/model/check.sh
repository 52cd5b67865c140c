#!/usr/bin/env bash
# tests/model/check.sh [--mutants | --mutant NAME] - exhaustive spin
# check of gc.pml.
#
#   check.sh            the model as implemented: "safe" and
#                       "gc_never_aborts" hold, no process can get stuck,
#                       and every non-vacuity claim is violated (the runs
#                       it names - a GC that finishes, removes garbage,
#                       marks a forgotten snapshot from .trash; a backup
#                       that withdraws - really happen in the model)
#   check.sh --mutants  every variant of mutants.txt: each mutant (a
#                       mechanism removed) must violate the property it
#                       protects, a mutant that passes is an error; the
#                       variants that remove one of two redundant defences
#                       must stay safe (docs/model.md)
#   check.sh --mutant NAME   one line of mutants.txt
#
# Exit 0 when every result is as expected, 1 otherwise, 77 (ctest: skipped)
# when spin or a C compiler is missing. Counterexample trails of failing
# runs are printed with CKL_MODEL_VERBOSE=1 and kept in the work directory
# with CKL_MODEL_KEEP=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model="$here/gc.pml"
mode=${1:-}
only=${2:-}
case "$mode" in
  ""|--mutants) ;;
  --mutant) [ -n "$only" ] || { echo "usage: $0 --mutant NAME" >&2; exit 2; } ;;
  *) echo "usage: $0 [--mutants | --mutant NAME]" >&2; exit 2 ;;
esac

command -v spin >/dev/null || { echo "check.sh: spin is not installed (apt-get install spin): skipped"; exit 77; }
cc=${CC:-cc}
command -v "$cc" >/dev/null || { echo "check.sh: no C compiler ($cc): skipped"; exit 77; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ckl-model-XXXXXX")
cleanup() { if [ "${CKL_MODEL_KEEP:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
bad=0

# build VARIANT DEFINES...: spin -a with the -D flags, then compile pan.
# pan.c is generated: gcc 12 flags a write in its undo code as a possible
# overflow (an array indexed by a loop counter that ends at its length);
# pan checks every index at run time, so that one warning is turned off.
build() {
  local v=$1; shift
  mkdir -p "$work/$v"
  local defs=()
  for d in "$@"; do defs+=("-D$d"); done
  # A local copy: pan names its trail after the model, and spin -t looks
  # for it beside the file it is given.
  cp "$model" "$work/$v/gc.pml"
  printf '%s\n' "${defs[@]}" >"$work/$v/defines"
  (cd "$work/$v" && spin "${defs[@]}" -a gc.pml >spin.log 2>&1) ||
    { echo "check.sh: spin -a failed for $v:"; cat "$work/$v/spin.log"; exit 1; }
  (cd "$work/$v" && "$cc" -O2 -Wno-stringop-overflow -o pan pan.c) ||
    { echo "check.sh: compiling pan.c failed for $v"; exit 1; }
}

# run VARIANT PROPERTY EXPECT: PROPERTY is an ltl name, or "deadlock"
# (no claim: invalid end states). EXPECT is "holds" or "violated".
run() {
  local v=$1 prop=$2 expect=$3 out got states
  if [ "$prop" = deadlock ]; then
    [ -x "$work/$v/pan-noclaim" ] || (cd "$work/$v" &&
      "$cc" -O2 -Wno-stringop-overflow -DNOCLAIM -o pan-noclaim pan.c) ||
      { echo "check.sh: compiling pan.c failed for $v"; exit 1; }
    out=$(cd "$work/$v" && ./pan-noclaim -m10000 2>&1) || true
  else
    out=$(cd "$work/$v" && ./pan -a -m10000 -N "$prop" 2>&1) || true
  fi
  printf '%s\n' "$out" >"$work/$v/$prop.out"
  if grep -q "max search depth too small" <<<"$out"; then
    echo "check.sh: $v/$prop: search incomplete (depth bound hit)"; bad=1; return
  fi
  local errors
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$out" | tail -1)
  if [ -z "$errors" ]; then
    echo "check.sh: $v/$prop: pan printed no result:"; tail -5 <<<"$out"; bad=1; return
  fi
  got=holds
  [ "$errors" -gt 0 ] && got=violated
  states=$(sed -n 's/^ *\([0-9e.+]*\) states, stored.*/\1/p' <<<"$out" | tail -1)
  local verdict=ok
  [ "$got" = "$expect" ] || { verdict="UNEXPECTED (expected: $expect)"; bad=1; }
  printf '  %-22s %-22s %-9s %10s states  %s\n' "$v" "$prop" "$got" "$states" "$verdict"
  if [ "$got" = violated ] && [ "${CKL_MODEL_VERBOSE:-0}" = 1 ]; then
    local defs=()
    mapfile -t defs <"$work/$v/defines"
    echo "  ---- counterexample ($v, $prop):"
    (cd "$work/$v" && spin "${defs[@]}" -t -p -g -N "$prop" gc.pml 2>&1 | sed -n '1,400p') || true
  fi
}

if [ "$mode" = "" ]; then
  echo "model check: $model (as implemented)"
  build correct
  run correct safe holds
  run correct gc_never_aborts holds
  run correct deadlock holds
  run correct gc_can_finish violated
  run correct gc_can_remove_garbage violated
  run correct gc_can_mark_trash violated
  run correct backup_can_withdraw violated
else
  echo "model mutants: each must violate the property it protects"
  found=0
  while read -r name defs prop expect; do
    case "$name" in ""|\#*) continue ;; esac
    [ -n "$only" ] && [ "$name" != "$only" ] && continue
    found=1
    IFS=, read -r -a dl <<<"$defs"
    build "$name" "${dl[@]}"
    run "$name" "$prop" "$expect"
  done <"$here/mutants.txt"
  [ "$found" = 1 ] || { echo "check.sh: no mutant named '$only' in mutants.txt" >&2; exit 2; }
fi

if [ "$bad" -ne 0 ]; then
  echo "check.sh: FAILED (see above; CKL_MODEL_VERBOSE=1 prints the trails)"
  exit 1
fi
echo "check.sh: all results as expected"

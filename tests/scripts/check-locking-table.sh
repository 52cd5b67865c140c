#!/usr/bin/env bash
# docs/locking.md must not go stale: every numbered cell of "The cells"
#   - names at least one race-matrix test (`test_matrix_*.c:ID`), and
#   - every test it names exists: `file:ID` means a file of that name under
#     tests/ that contains the string ID; a bare `file.c` or a path
#     `tests/...` must exist;
# every cell number of the table has its paragraph, and every cell the
# matrix's expectation table cites (tests/race/matrix_expect.c) exists.
set -euo pipefail
root=${1:-.}
cd "$root"
doc=docs/locking.md
[ -f "$doc" ] || { echo "check-locking-table: $doc not found"; exit 1; }
rc=0

# The paragraphs: "N. **...**" up to the next one or the next heading.
cells=$(awk '/^## The cells/{on=1; next} /^## /{on=0} on' "$doc")
numbers=$(echo "$cells" | grep -oE '^[0-9]+\.' | tr -d . )
[ -n "$numbers" ] || { echo "check-locking-table: no numbered cells in $doc"; exit 1; }

# Cell numbers used in the matrix itself.
table_numbers=$(awk '/^## The matrix/{on=1; next} /^## /{on=0} on && /^\| \*\*/' "$doc" |
  grep -oE '\| [0-9]+' | grep -oE '[0-9]+' | sort -un)
for n in $table_numbers; do
  echo "$numbers" | grep -qx "$n" || { echo "cell $n is in the matrix but has no paragraph"; rc=1; }
done

find_test() { # name -> path of a file under tests/ with that name, or ""
  find tests -type f -name "$1" -print -quit
}

for n in $numbers; do
  text=$(echo "$cells" | awk -v n="$n" '
    $0 ~ "^" n "\\. " {on=1; print; next}
    /^[0-9]+\. / {on=0}
    on')
  matrix=0
  # every `...` token that looks like a test reference
  while IFS= read -r tok; do
    [ -n "$tok" ] || continue
    file=${tok%%:*}
    id=""
    [ "$file" != "$tok" ] && id=${tok#*:}
    case "$file" in
      */*) path=$file ;;
      *) path=$(find_test "$file") ;;
    esac
    if [ -z "$path" ] || [ ! -f "$path" ]; then
      echo "cell $n: $tok: no such test file under tests/"; rc=1; continue
    fi
    if [ -n "$id" ] && ! grep -qF -- "$id" "$path"; then
      echo "cell $n: $tok: \"$id\" does not appear in $path"; rc=1; continue
    fi
    case "$file" in test_matrix_*) [ -n "$id" ] && matrix=1 ;; esac
  done < <(echo "$text" | grep -oE '`[^`]+\.(c|sh)(:[^`]+)?`' | tr -d '`')
  if [ "$matrix" -eq 0 ]; then
    echo "cell $n: names no race-matrix test (test_matrix_*.c:ID)"; rc=1
  fi
done

# Cells cited by the expectation table must exist.
if [ -f tests/race/matrix_expect.c ]; then
  for n in $(grep -E '^ +R\(' tests/race/matrix_expect.c | grep -oE ', [0-9]+\),' | grep -oE '[0-9]+' | sort -un); do
    echo "$numbers" | grep -qx "$n" || { echo "matrix_expect.c cites cell $n, which $doc does not have"; rc=1; }
  done
fi

count=$(echo "$numbers" | wc -l)
[ $rc -eq 0 ] && echo "check-locking-table: $count cells, each names existing tests including the race matrix"
exit $rc

#!/usr/bin/env bash
# Every CKL_FAILPOINT("name") site must be in common/failpoints.def and
# every catalogued name must have a site: the catalog is what users' harnesses
# read (`chunklock failpoints`), so it must never lie.
set -euo pipefail
root=${1:-.}
cd "$root"
dirs=$(for d in common locks datastore gc tasks tools; do [ -d "$d" ] && echo "$d"; done)
# shellcheck disable=SC2086
sites=$( (grep -rhoE --exclude=internal.h --exclude="*.def" 'CKL_FAILPOINT\("[^"]+"\)' $dirs || true) \
        | sed -E 's/CKL_FAILPOINT\("([^"]+)"\)/\1/' | sort -u)
catalog=$(cat common/failpoints.def */*.fp.def 2>/dev/null | grep -oE '^CKL_FP\("[^"]+"' | sed -E 's/CKL_FP\("//; s/"$//' | sort -u)
missing=$(comm -23 <(echo "$sites") <(echo "$catalog"))
unused=$(comm -13 <(echo "$sites") <(echo "$catalog"))
dups=$(cat */*.fp.def 2>/dev/null | grep -oE '^CKL_FP\("[^"]+"' | sort | uniq -d)
rc=0
# A module catalog that common/failpoints.def does not include is invisible
# to ckl_failpoint_arm and `chunklock failpoints`.
for def in */*.fp.def; do
  [ -e "$def" ] || continue
  grep -qF "#include \"$def\"" common/failpoints.def ||
    { echo "$def is not included by common/failpoints.def"; rc=1; }
done
if [ -n "$missing" ]; then echo "failpoint sites missing from common/failpoints.def:"; echo "$missing"; rc=1; fi
if [ -n "$unused" ]; then echo "catalogued failpoints with no site:"; echo "$unused"; rc=1; fi
if [ -n "$dups" ]; then echo "duplicate catalog entries:"; echo "$dups"; rc=1; fi
n=$(echo "$catalog" | grep -c . || true)
[ $rc -eq 0 ] && echo "check-failpoints: $n failpoints, every site catalogued, every entry used"
exit $rc

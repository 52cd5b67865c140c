#!/usr/bin/env bash
# bench/peers/writers_during_prune.sh - figure 5 peers: can a backup run
# while restic prunes or borg compacts the same repository?
#
#   bench/peers/writers_during_prune.sh --json FILE [--quick] [--dir DIR]
#
# For each tool: a repository holding a backup of random data (2 GiB;
# --quick 128 MiB) that is then forgotten (restic forget / borg delete), so
# that the space-reclaiming command (restic prune / borg compact) has work
# for a few seconds. Start it in the background, wait until it holds the
# repository lock (restic: a lock file appears; borg: lock.exclusive
# exists), then start a backup of new data (64 MiB) with the tool's
# defaults, and record its exit code, its lock error and how long it took,
# and whether the prune/compact was still running when the backup gave up.
# The prune/compact is paused (SIGSTOP) while it holds its lock and the
# backup runs, then resumed: the overlap is forced, not hoped for.
# Records (figure 5, peer: true): value = backup throughput during the
# prune / compact relative to without = 0 when the backup failed, with the
# error quoted in the note. Needs restic and borgbackup (Debian packages)
# and /usr/bin/python3 for the JSON.
set -euo pipefail
json= quick=0 dir=/var/tmp/ckl-bench
while [ $# -gt 0 ]; do
  case "$1" in
  --json) json=$2; shift 2 ;;
  --quick) quick=1; shift ;;
  --dir) dir=$2; shift 2 ;;
  *) echo "usage: $0 --json FILE [--quick] [--dir DIR]" >&2; exit 2 ;;
  esac
done
[ -n "$json" ] || { echo "$0: --json FILE is required" >&2; exit 2; }
root=$dir/writers-peers
rm -rf "$root"
mkdir -p "$root/old" "$root/new"
old_mib=$((quick ? 128 : 2048))
# Seeded, incompressible data (openssl's AES-CTR keystream of a fixed key).
# (openssl dies of SIGPIPE when head has enough: not an error here)
stream() { (set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -in /dev/zero 2>/dev/null | head -c "$2"); }
for i in $(seq 0 7); do stream "old$i" $((old_mib * 131072)) > "$root/old/f$i"; done
stream new $((64 << 20)) > "$root/new/f"
records=$root/records.jsonl
: > "$records"

# record TOOL OP RC SECONDS STILL_RUNNING OP_SECONDS MESSAGE
record() {
  /usr/bin/python3 - "$@" >> "$records" <<'EOF'
import json, sys
tool, op, rc, secs, still, op_secs, msg = sys.argv[1:8]
rc, secs, op_secs = int(rc), float(secs), float(op_secs)
failed = rc != 0
print(json.dumps({
  "figure": 5, "name": "backup during %s (%s)" % (op, tool),
  "value": 0.0 if failed else 1.0, "unit": "ratio", "floor": None, "ratio": None,
  "target": None, "target_cmp": None, "met": None, "min": 0.0 if failed else 1.0,
  "max": 0.0 if failed else 1.0, "runs": 1,
  "peer": True,
  "note": ("the backup %s after %.1f s with exit code %d while `%s` %s (it ran %.1f s): %s" %
           ("FAILED" if failed else "succeeded", secs, rc, op,
            "was still running (paused while holding its lock)" if still == "1" else "had already finished",
            op_secs, msg.strip()[:300]))}))
EOF
}

# measure TOOL OP "START CMD" "BACKUP CMD" LOCKTEST
measure() {
  local tool=$1 op=$2 start=$3 backup=$4 locktest=$5
  local t0 t1 rc still=0 msg
  bash -c "exec $start" > "$root/$tool-op.log" 2>&1 &
  local op_pid=$! op_t0 stopped=0
  op_t0=$(date +%s.%N)
  for _ in $(seq 1 2000); do eval "$locktest" && break; sleep 0.002; done
  # Pause the prune/compact while it holds its lock (SIGSTOP), so the
  # backup certainly starts while it runs: a prune of forgotten whole packs
  # can finish in well under a second, before a backup on a loaded machine
  # gets going. Resumed (SIGCONT) after the backup.
  if eval "$locktest" && kill -STOP "$op_pid" 2>/dev/null; then stopped=1; fi
  t0=$(date +%s.%N)
  set +e
  msg=$(bash -c "$backup" 2>&1 >/dev/null)
  rc=$?
  set -e
  t1=$(date +%s.%N)
  kill -0 "$op_pid" 2>/dev/null && still=1
  [ "$stopped" = 1 ] && kill -CONT "$op_pid"
  wait "$op_pid" || echo "$0: $op exited non-zero (see $root/$tool-op.log)" >&2
  local op_s
  op_s=$(echo "$(date +%s.%N) - $op_t0" | bc)
  msg=$(printf '%s' "$msg" | { grep -iE 'lock|error|fatal' || true; } | head -3 | tr '\n' ' ')
  echo "  $tool: backup rc=$rc after $(echo "$t1 - $t0" | bc) s, $op still running=$still: $msg" >&2
  # A backup that succeeded after the prune/compact had finished did not
  # overlap it (a loaded machine can delay the start that long): that run
  # says nothing, the caller sets up again and retries.
  if [ "$rc" -eq 0 ] && [ "$still" -eq 0 ]; then
    echo "  $tool: no overlap; setting up again" >&2
    return 1
  fi
  record "$tool" "$op" "$rc" "$(echo "$t1 - $t0" | bc)" "$still" "$op_s" "$msg"
}

# Up to 3 attempts each, a fresh forgotten backup every time.
if command -v restic >/dev/null; then
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$root/restic
  restic init -q
  for attempt in 1 2 3; do
    (cd "$root/old" && restic backup -q --tag "old$attempt" .)
    restic forget -q $(restic snapshots --tag "old$attempt" --json | /usr/bin/python3 -c \
      'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')
    measure restic "restic prune" "restic prune" "cd $root/new && restic backup ." \
      "ls $root/restic/locks 2>/dev/null | grep -q ." && break
    [ "$attempt" -lt 3 ] || echo "$0: WARNING: no overlap with restic prune in 3 attempts" >&2
  done
  unset RESTIC_PASSWORD RESTIC_REPOSITORY
fi
if command -v borg >/dev/null; then
  export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$root/borg-home
  borg init -e none "$root/borg"
  for attempt in 1 2 3; do
    (cd "$root/old" && borg create "$root/borg::old$attempt" .)
    borg delete "$root/borg::old$attempt"
    borg delete "$root/borg::new" 2>/dev/null || true
    measure borg "borg compact" "borg compact $root/borg" \
      "cd $root/new && borg create $root/borg::new ." "[ -e $root/borg/lock.exclusive ]" && break
    [ "$attempt" -lt 3 ] || echo "$0: WARNING: no overlap with borg compact in 3 attempts" >&2
  done
fi
/usr/bin/python3 -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
json.dump(recs, open(sys.argv[2], "w"), indent=1)
' "$records" "$json"
rm -rf "$root"

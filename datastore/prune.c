/*
 * datastore/prune.c - retention: which snapshots of a group to keep, and
 * the removal of the others through the forget path.
 *
 * The rules (ckl_prune_select, a pure function)
 * ---------------------------------------------
 * Each rule is applied on its own to the complete snapshots, newest to
 * oldest: keep-last N keeps the N newest; a period rule (hourly, daily,
 * weekly, monthly, yearly) keeps the newest snapshot of each distinct
 * period until it has kept N periods. A snapshot is kept if any rule keeps
 * it, and is credited to the first rule, in that order, that does. A
 * snapshot kept by one rule still counts for every other rule whose period
 * it is the newest of (restic's semantics: with keep-last 1 and keep-daily
 * 2, today's newest snapshot is both the last one and one of the two
 * days). Proxmox instead lets a rule skip the periods an earlier rule
 * already covered, which keeps more; we take the rule that makes "keep N
 * days" mean N days. Periods are UTC (snapshot names are UTC); weeks are
 * ISO 8601 weeks, so a week that spans a year boundary is one week. The
 * newest snapshot is the first one every rule meets, so with any rule set
 * it is always kept.
 *
 * The operation (ckl_prune)
 * -------------------------
 * Group lock (exclusive, never waits: a backup of the group holds it for
 * its whole run, so a prune never competes with one) -> roster "prune" ->
 * list -> decide -> for each snapshot to remove: snapshot lock exclusive,
 * never waiting (a reader or verify holding it makes the removal a skip
 * with a warning, not a failure) -> the forget path. Snapshots without a
 * manifest are outside the rules: with a holder, a writer is at work and
 * the snapshot is kept; without one, its backup died and it is removed
 * through the forget path like any other.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chunklock/freeze.h"
#include "chunklock/maintenance.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"

static const char *const reason_names[] = {
    [CKL_PRUNE_REMOVE] = "remove",           [CKL_PRUNE_KEEP_LAST] = "keep-last",
    [CKL_PRUNE_KEEP_HOURLY] = "keep-hourly", [CKL_PRUNE_KEEP_DAILY] = "keep-daily",
    [CKL_PRUNE_KEEP_WEEKLY] = "keep-weekly", [CKL_PRUNE_KEEP_MONTHLY] = "keep-monthly",
    [CKL_PRUNE_KEEP_YEARLY] = "keep-yearly", [CKL_PRUNE_IN_PROGRESS] = "in-progress",
    [CKL_PRUNE_ABANDONED] = "abandoned",
};

const char *ckl_prune_reason_name(ckl_prune_reason r) {
  if ((unsigned)r >= CKL__ARRAY_SIZE(reason_names)) return "unknown";
  return reason_names[r];
}

/* The period of t under rule r, as a number that differs between any two
 * periods. Floor division: times before 1970 fall in the right period. */
static int period_key(ckl_prune_reason r, int64_t t, size_t index, int64_t *key) {
  struct tm tm;
  time_t tt = (time_t)t;
  if (r != CKL_PRUNE_KEEP_LAST && !gmtime_r(&tt, &tm)) return -EINVAL;
  switch (r) {
    case CKL_PRUNE_KEEP_LAST:
      *key = (int64_t)index; /* every snapshot is its own period */
      return 0;
    case CKL_PRUNE_KEEP_HOURLY:
      *key = t >= 0 ? t / 3600 : -((-t + 3599) / 3600);
      return 0;
    case CKL_PRUNE_KEEP_DAILY:
      *key = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
      return 0;
    case CKL_PRUNE_KEEP_WEEKLY: {
      char buf[16];
      if (strftime(buf, sizeof buf, "%G %V", &tm) == 0) return -EINVAL;
      int y, w;
      if (sscanf(buf, "%d %d", &y, &w) != 2) return -EINVAL;
      *key = (int64_t)y * 100 + w;
      return 0;
    }
    case CKL_PRUNE_KEEP_MONTHLY:
      *key = ((int64_t)tm.tm_year + 1900) * 12 + tm.tm_mon;
      return 0;
    case CKL_PRUNE_KEEP_YEARLY:
      *key = (int64_t)tm.tm_year + 1900;
      return 0;
    default:
      return -EINVAL;
  }
}

int ckl_prune_select(const int64_t *times_s, size_t n, const ckl_prune_opts *o,
                     ckl_prune_reason *out) {
  if (!o || (n > 0 && (!times_s || !out))) return -EINVAL;
  const struct {
    ckl_prune_reason r;
    unsigned count;
  } rules[] = {{CKL_PRUNE_KEEP_LAST, o->keep_last},       {CKL_PRUNE_KEEP_HOURLY, o->keep_hourly},
               {CKL_PRUNE_KEEP_DAILY, o->keep_daily},     {CKL_PRUNE_KEEP_WEEKLY, o->keep_weekly},
               {CKL_PRUNE_KEEP_MONTHLY, o->keep_monthly}, {CKL_PRUNE_KEEP_YEARLY, o->keep_yearly}};
  bool any = false;
  for (size_t k = 0; k < CKL__ARRAY_SIZE(rules); k++) any |= rules[k].count > 0;
  if (!any) return -EINVAL; /* "keep nothing" is never what anyone meant */
  for (size_t i = 0; i + 1 < n; i++)
    if (times_s[i] <= times_s[i + 1]) return -EINVAL;
  for (size_t i = 0; i < n; i++) out[i] = CKL_PRUNE_REMOVE;
  /* Later rules first, so that the first rule in order wins the credit. */
  for (size_t k = CKL__ARRAY_SIZE(rules); k-- > 0;) {
    unsigned kept = 0;
    int64_t last = 0;
    for (size_t i = 0; i < n && kept < rules[k].count; i++) {
      int64_t key;
      if (period_key(rules[k].r, times_s[i], i, &key) < 0) return -EINVAL;
      if (kept > 0 && key == last) continue; /* an older one of a kept period */
      last = key;
      kept++;
      out[i] = rules[k].r;
    }
  }
  return 0;
}

/* ---- the operation ------------------------------------------------------------ */

/* Remove one snapshot: exclusive lock (never waits), then the forget
 * path. `abandoned`: only if it still has no manifest under the lock. */
static int remove_one(ckl_store *st, ckl__state *state, ckl_lock_order *order, ckl_prune_item *it,
                      bool abandoned) {
  char name[CKL_SNAP_NAME_MAX + 1];
  ckl__ops_snap_str(&it->name, name);
  ckl_path_lock lk = {0};
  ckl_holder who = {0};
  ckl_snap_lock_opts so = {.order = order, .operation = "prune", .busy_holder = &who};
  int rc = ckl_snapshot_lock(st, &it->name, CKL_LOCK_EXCLUSIVE, &lk, &so);
  if (rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    if (abandoned) { /* somebody is writing it after all */
      it->keep = 1;
      it->reason = CKL_PRUNE_IN_PROGRESS;
      return 0;
    }
    ckl__log_warn("%s: prune: %s is in use by %s: not removed", st->path, name, h);
    return rc;
  }
  if (rc < 0) return rc;
  if (abandoned && ckl__ops_has_manifest(st, &it->name)) {
    ckl_path_lock_release(&lk);
    it->keep = 1;
    it->reason = CKL_PRUNE_IN_PROGRESS; /* finished meanwhile: the rules never saw it */
    return 0;
  }
  if ((rc = CKL_FAILPOINT("prune.before_remove")) < 0) {
    ckl_path_lock_release(&lk);
    return rc;
  }
  rc = ckl__forget_held(st, state, &it->name, &lk, order, "prune", NULL);
  if (rc >= 0) {
    ckl__log_info("%s: prune: removed %s (%s)", st->path, name, ckl_prune_reason_name(it->reason));
    rc = 0;
  }
  return rc;
}

/* Dry run for a snapshot without manifest: is anybody holding it? */
static bool held_now(ckl_store *st, const ckl_snapshot_name *n) {
  char path[PATH_MAX];
  if (ckl__store_snapshot_lock_path(st, n, path, sizeof path) < 0) return false;
  return ckl_path_lock_probe(path, CKL_LOCK_EXCLUSIVE, NULL) == CKL_EBUSY;
}

static int decide(const ckl_snapshot_info *list, size_t n, const ckl_prune_opts *o,
                  ckl_prune_item *items) {
  int64_t *times = calloc(n ? n : 1, sizeof *times);
  ckl_prune_reason *why = calloc(n ? n : 1, sizeof *why);
  size_t *at = calloc(n ? n : 1, sizeof *at);
  int rc = (!times || !why || !at) ? -ENOMEM : 0;
  size_t m = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    items[i].name = list[i].name;
    if (list[i].state != CKL_SNAP_COMPLETE) continue;
    times[m] = list[i].name.time_s;
    at[m++] = i;
  }
  if (rc == 0) rc = ckl_prune_select(times, m, o, why);
  for (size_t j = 0; rc == 0 && j < m; j++) {
    items[at[j]].reason = why[j];
    items[at[j]].keep = why[j] != CKL_PRUNE_REMOVE;
  }
  free(times);
  free(why);
  free(at);
  return rc;
}

int ckl_prune(ckl_store *st, const ckl_group_name *g, const ckl_prune_opts *o, ckl_prune_item **out,
              size_t *count) {
  if (!out || !count) return -EINVAL;
  *out = NULL;
  *count = 0;
  if (!st || !o || !ckl__group_name_ok(g)) return -EINVAL;
  ckl_prune_reason probe;
  int64_t t0 = 0;
  if (ckl_prune_select(&t0, 1, o, &probe) < 0) {
    ckl__log_error("%s: prune %s/%s: no keep rule given", st->path, g->type, g->id);
    return -EINVAL;
  }
  char gname[CKL_SNAP_NAME_MAX + 1];
  snprintf(gname, sizeof gname, "%s/%s", g->type, g->id);
  ckl__state *state = NULL;
  int rc = ckl__ops_state_open(st, &state);
  if (rc < 0) return rc;
  ckl_lock_order order = {0};
  ckl_path_lock glk = {0};
  ckl_holder who = {0};
  char token[CKL_TOKEN_HEX_LEN + 1] = "";
  ckl_snapshot_info *list = NULL;
  size_t n = 0;
  ckl_deleter del = {0};
  if (!o->dry_run) {
    /* A frozen store deletes nothing (freeze.h); the guard comes before
     * the group lock, in the fixed order. A dry run deletes nothing. */
    ckl_freeze_opts fo = {.operation = "prune", .busy_holder = &who};
    rc = ckl_deleter_acquire(st, &del, &fo);
    if (rc < 0) {
      if (o->busy_holder) *o->busy_holder = who;
      goto out;
    }
  }
  if ((rc = CKL_FAILPOINT("prune.after_guard")) < 0) goto out;
  ckl_snap_lock_opts go = {.order = &order, .operation = "prune", .busy_holder = &who};
  rc = ckl_group_lock(st, g, &glk, &go);
  if (o->busy_holder) *o->busy_holder = who;
  if (rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    ckl__log_info("%s: prune %s: the group is busy: held by %s", st->path, gname, h);
  }
  if (rc < 0) goto out;
  if ((rc = ckl__ops_register(st, state, "prune", gname, CKL_ROSTER_EXCLUSIVE, token)) < 0)
    goto out;
  if ((rc = ckl_snapshot_list(st, g, &list, &n)) < 0) goto out;
  ckl_prune_item *items = calloc(n ? n : 1, sizeof *items);
  if (!items) {
    rc = -ENOMEM;
    goto out;
  }
  *out = items;
  *count = n;
  if ((rc = decide(list, n, o, items)) < 0) goto out;
  if ((rc = CKL_FAILPOINT("prune.after_list")) < 0) goto out;
  int first_err = 0, removed = 0;
  for (size_t i = 0; i < n; i++) {
    ckl_prune_item *it = &items[i];
    bool abandoned = list[i].state != CKL_SNAP_COMPLETE;
    if (abandoned) {
      /* Never decided by the rules: a writer's (kept) or a dead one's. */
      bool held = o->dry_run && held_now(st, &it->name);
      it->keep = held;
      it->reason = held ? CKL_PRUNE_IN_PROGRESS : CKL_PRUNE_ABANDONED;
    }
    if (it->keep || o->dry_run) continue;
    /* A runtime task's safe point between removals: once told to stop,
     * every removal left says why it was not done. */
    ckl__observe_progress("prune", i, n, 0);
    int cp = ckl__observe_checkpoint();
    if (cp < 0) {
      it->rc = cp;
      if (first_err == 0) first_err = cp;
      continue;
    }
    it->rc = remove_one(st, state, &order, it, abandoned);
    if (it->rc == 0 && !it->keep) removed++;
    if (it->rc < 0 && it->rc != CKL_EBUSY && it->rc != -ENOENT && first_err == 0)
      first_err = it->rc;
  }
  if (removed > 0) (void)ckl__trash_purge_stale(st, state);
  rc = first_err;
out:
  ckl_snapshot_list_free(list, n);
  ckl__ops_deregister(state, token);
  ckl_path_lock_release(&glk);
  ckl_deleter_release(&del);
  ckl__ops_state_close(st, state);
  return rc;
}

/*
 * tests/race/soak_check.c - the coordinator's checks, run while every
 * worker is parked (nothing runs), and the recovery a user would do after
 * a crash.
 *
 * Two layers:
 *   1. ckl_inv_check (tests/support/invariants.h), quiescent: every chunk
 *      of every finished snapshot exists and matches its digest, no
 *      manifest update was lost (the table's counters), no lock, roster
 *      record or gc_active outlives its holder, nothing is left behind.
 *   2. The soak's own checks against its table (candidates for the shared
 *      checker): the set of finished snapshots on disk is exactly the set
 *      the table says is alive (nothing vanished without a forget or prune
 *      that reported removing it, nothing appeared), and each one reads
 *      back through ckl_reader byte for byte as its backup wrote it; in
 *      crash mode, a counter with updates lost in a crash lies between the
 *      updates that returned 0 and those plus the ones in flight.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "invariants.h"
#include "soak.h"

static int64_t last_scan_s; /* wall clock of the previous check */

static int open_store(ckl_store **st) {
  int rc = ckl_store_open(soak->store, NULL, st);
  if (rc != 0) soak_fail("coordinator: cannot open %s: %s", soak->store, ckl_err_name(rc));
  return rc;
}

/* A snapshot read back through the API, compared with its recipe. */
static int read_back(ckl_store *st, const ckl_snapshot_name *n, const soak_recipe *r,
                     const char *snap, const char *when) {
  ckl_reader *rd;
  int rc = ckl_reader_open(st, n, NULL, &rd);
  if (rc != 0) {
    soak_fail("%s: snapshot %s cannot be opened for reading: %s", when, snap, ckl_err_name(rc));
    return -1;
  }
  int bad = 0;
  for (int a = 0; a < r->narch && !bad; a++) {
    char name[32];
    soak_arch_name(&r->arch[a], a, name, sizeof name);
    ckl_reader_archive *ra;
    if ((rc = ckl_reader_archive_open(rd, name, &ra)) != 0) {
      soak_fail("%s: %s/%s: %s", when, snap, name, ckl_err_name(rc));
      bad = 1;
      break;
    }
    uint64_t size;
    unsigned char *want = soak_arch_bytes(&r->arch[a], &size);
    unsigned char *got = malloc(size + 1);
    ssize_t got_n = ckl_reader_archive_read(ra, 0, got, size + 1);
    if (got_n < 0 || (uint64_t)got_n != size || memcmp(want, got, size) != 0) {
      soak_fail("%s: %s/%s reads back %zd bytes (%s), %llu written%s", when, snap, name, got_n,
                got_n < 0 ? ckl_err_name((int)got_n) : "ok", (unsigned long long)size,
                got_n >= 0 && (uint64_t)got_n == size ? ", and they differ" : "");
      bad = 1;
    }
    free(want);
    free(got);
    ckl_reader_archive_close(ra);
  }
  ckl_reader_close(rd);
  return bad ? -1 : 0;
}

/* The finished snapshots on disk against the table. */
static int table_vs_store(ckl_store *st, const char *when) {
  static uint8_t seen[SOAK_MAX_SNAPS];
  memset(seen, 0, sizeof seen);
  for (int g = 0; g < SOAK_GROUPS; g++) {
    ckl_group_name gn;
    soak_group_name(g, &gn);
    ckl_snapshot_info *list = NULL;
    size_t n = 0;
    int rc = ckl_snapshot_list(st, &gn, &list, &n);
    if (rc == -ENOENT) continue;
    if (rc != 0) {
      soak_fail("%s: listing %s/%s: %s", when, gn.type, gn.id, ckl_err_name(rc));
      return -1;
    }
    for (size_t k = 0; k < n; k++) {
      if (list[k].state != CKL_SNAP_COMPLETE) continue;
      char snap[CKL_SNAP_NAME_MAX + 1];
      ckl_snapshot_name_format(&list[k].name, snap, sizeof snap);
      int i = soak_find_locked(&list[k].name);
      if (i < 0 || soak->snaps[i].state != S_COMPLETE) {
        soak_fail("%s: finished snapshot %s is on disk but the soak holds it %s", when, snap,
                  i < 0 ? "removed (a forget or prune reported it gone)" : "unfinished");
        ckl_snapshot_list_free(list, n);
        return -1;
      }
      seen[i] = 1;
    }
    ckl_snapshot_list_free(list, n);
  }
  for (int i = 0; i < SOAK_MAX_SNAPS; i++) {
    soak_snap *s = &soak->snaps[i];
    ckl_snapshot_name n;
    char snap[CKL_SNAP_NAME_MAX + 1];
    if (s->state == S_FREE) continue;
    soak_snap_name(s->group, s->time_s, &n);
    ckl_snapshot_name_format(&n, snap, sizeof snap);
    if (s->state == S_WRITING) { /* every op has returned: nothing is being written */
      soak_fail("%s: snapshot %s is still being written while everything is parked", when, snap);
      return -1;
    }
    if (!seen[i]) {
      soak_fail("%s: snapshot %s vanished: no forget or prune reported removing it", when, snap);
      return -1;
    }
    if (!soak->crash && s->ctr_pending != 0) {
      soak_fail("%s: %s has %lld manifest updates in flight while everything is parked", when,
                snap, (long long)s->ctr_pending);
      return -1;
    }
    if (read_back(st, &n, &s->r, snap, when) < 0) return -1;
  }
  return 0;
}

/* Crash mode: counters whose updates may have died half way. */
static int counter_ranges(ckl_store *st, const char *when) {
  for (int i = 0; i < SOAK_MAX_SNAPS; i++) {
    soak_snap *s = &soak->snaps[i];
    if (s->state != S_COMPLETE || s->ctr_pending == 0) continue;
    ckl_snapshot_name n;
    soak_snap_name(s->group, s->time_s, &n);
    json_t *m;
    int rc = ckl_manifest_load(st, &n, &m);
    if (rc != 0) {
      soak_fail("%s: manifest of %s/%s/%s: %s", when, n.type, n.id, n.time, ckl_err_name(rc));
      return -1;
    }
    json_int_t v =
        json_integer_value(json_object_get(json_object_get(m, "unprotected"), SOAK_COUNTER_KEY));
    json_decref(m);
    if (v < s->ctr_ok || v > s->ctr_ok + s->ctr_pending) {
      soak_fail("%s: counter of %s/%s/%s is %lld: %lld updates returned 0 and %lld died in "
                "flight: an update was lost",
                when, n.type, n.id, n.time, (long long)v, (long long)s->ctr_ok,
                (long long)s->ctr_pending);
      return -1;
    }
  }
  return 0;
}

/* The shared checker, quiescent, with the table's counters. */
static int shared_check(const char *when) {
  static ckl_inv_counter ctr[SOAK_MAX_SNAPS];
  static char names[SOAK_MAX_SNAPS][CKL_SNAP_NAME_MAX + 1];
  size_t nc = 0;
  for (int i = 0; i < SOAK_MAX_SNAPS; i++) {
    soak_snap *s = &soak->snaps[i];
    /* an update that died in a crash may or may not have been written:
     * counter_ranges checks those */
    if (s->state != S_COMPLETE || s->ctr_pending != 0) continue;
    ckl_snapshot_name n;
    soak_snap_name(s->group, s->time_s, &n);
    ckl_snapshot_name_format(&n, names[nc], sizeof names[nc]);
    ctr[nc] = (ckl_inv_counter){
        .snapshot = names[nc], .key = SOAK_COUNTER_KEY, .expected = s->ctr_ok, .gone_ok = 0};
    nc++;
  }
  int64_t now = (int64_t)time(NULL);
  ckl_inv_opts o = {.quiescent = 1,
                    .counters = ctr,
                    .ncounters = nc,
                    .chunk_scan_since_s = last_scan_s ? last_scan_s - 2 : 0};
  char why[2048] = "";
  int rc = ckl_inv_check(soak->store, &o, why, sizeof why);
  if (rc != 0) {
    soak_fail("%s: invariant broken (%s): %s", when, ckl_err_name(rc), why);
    return -1;
  }
  last_scan_s = now;
  return 0;
}

int soak_check_quiescent(const char *when) {
  ckl_store *st;
  if (open_store(&st) != 0) return -1;
  soak_lock();
  int rc = shared_check(when);
  if (rc == 0) rc = table_vs_store(st, when);
  if (rc == 0 && soak->crash) rc = counter_ranges(st, when);
  soak_unlock();
  ckl_store_close(st);
  atomic_fetch_add(&soak->checks_run, 1);
  return rc;
}

/* What a user does after a crash, in order: the next GC takes over a dead
 * GC's state, judges its sweep names and purges .trash; a prune of each
 * group removes snapshots abandoned by dead backups (keep_last 1000 keeps
 * every finished one); fsck --clean removes temp files once they are
 * older than every live writer (the coordinator waits out the margin). */
int soak_recover(void) {
  ckl_store *st;
  if (open_store(&st) != 0) return -1;
  int rc = 0;
  ckl_holder who = {0};
  ckl_gc_opts go = {.wait_ms = 5000, .busy_holder = &who};
  ckl_gc_result gr;
  if ((rc = ckl_gc_run(st, &go, &gr)) != 0) {
    char h[256] = "";
    if (who.known) ckl_holder_format(&who, h, sizeof h);
    soak_fail("recovery: gc: %s %s", ckl_err_name(rc), h);
    goto out;
  }
  for (int g = 0; g < SOAK_GROUPS && rc == 0; g++) {
    ckl_group_name gn;
    soak_group_name(g, &gn);
    ckl_prune_opts po = {.keep_last = 1000};
    ckl_prune_item *items = NULL;
    size_t n = 0;
    rc = ckl_prune(st, &gn, &po, &items, &n);
    for (size_t i = 0; i < n; i++)
      if (!items[i].keep && items[i].reason != CKL_PRUNE_ABANDONED)
        soak_fail("recovery: prune of %s/%s with keep_last 1000 removed a finished snapshot",
                  gn.type, gn.id);
    free(items);
    if (rc == -ENOENT) rc = 0;
    if (rc != 0) soak_fail("recovery: prune of %s/%s: %s", gn.type, gn.id, ckl_err_name(rc));
  }
  if (rc == 0) {
    ckl_fsck_opts fo = {.flags = CKL_FSCK_CLEAN};
    ckl_fsck_summary sum;
    rc = ckl_fsck(st, &fo, NULL, NULL, &sum);
    /* everything fsck reports here it must also have cleaned */
    if (rc < 0) soak_fail("recovery: fsck --clean: %s", ckl_err_name(rc));
    else rc = 0;
  }
out:
  ckl_store_close(st);
  return rc == 0 && !atomic_load(&soak->failed) ? 0 : -1;
}

static void fsck_report(const ckl_fsck_problem *p, void *arg) {
  char *buf = arg;
  size_t n = strlen(buf);
  if (n < 3000)
    snprintf(buf + n, 4096 - n, "  %s %s: %s\n", ckl_fsck_kind_name(p->kind), p->path, p->detail);
}

int soak_check_final(void) {
  if (soak->crash && soak_recover() < 0) return -1;
  if (soak_check_quiescent("final check") < 0) return -1;
  ckl_store *st;
  if (open_store(&st) != 0) return -1;
  char problems[4096] = "";
  ckl_fsck_summary sum;
  int rc = ckl_fsck(st, NULL, fsck_report, problems, &sum);
  ckl_store_close(st);
  if (rc != 0) {
    soak_fail("final fsck: %d (%s); problems:\n%s", rc, rc < 0 ? ckl_err_name(rc) : "problems",
              problems);
    return -1;
  }
  return 0;
}

/* A worker process died (crash mode): settle what it was changing. */
void soak_reconcile_dead(pid_t pid, int proc) {
  ckl_store *st;
  if (open_store(&st) != 0) return;
  soak_lock();
  for (int i = 0; i < SOAK_MAX_SNAPS; i++) {
    soak_snap *s = &soak->snaps[i];
    if (s->state == S_FREE) continue;
    int forgetting = s->forgetting[proc] != 0;
    s->forgetting[proc] = 0;
    /* A live process's backup is its own business even if the dead one
     * tried to forget it (busy) or pruned its group before it began. */
    if (s->state == S_WRITING && s->writer_pid != pid) continue;
    if (s->state == S_COMPLETE && !forgetting && !soak->groups[s->group].pruning[proc]) continue;
    ckl_snapshot_name n;
    soak_snap_name(s->group, s->time_s, &n);
    char dir[PATH_MAX], man[PATH_MAX + 16];
    if (ckl_snapshot_path(st, &n, dir, sizeof dir) < 0) abort();
    snprintf(man, sizeof man, "%s/%s", dir, CKL_MANIFEST_NAME);
    struct stat sb;
    if (stat(man, &sb) == 0) {
      s->state = S_COMPLETE; /* died after the manifest: it is a snapshot */
    } else {
      s->state = S_FREE; /* never finished, or forgotten before the death */
      s->gen++;
    }
  }
  for (int g = 0; g < SOAK_GROUPS; g++) soak->groups[g].pruning[proc] = 0;
  soak_unlock();
  ckl_store_close(st);
}

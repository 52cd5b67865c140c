/*
 * tests/crash/crash_matrix.h - the body of test_crash_matrix_{backup,
 * maint,gc}.c: each defines CRASH_MATRIX_OPS (the operations whose rows it
 * runs, so that no binary takes long) and includes this file.
 *
 * Crash torture, data-driven: for every failpoint of the backup, chunk
 * insert, index write, manifest update, forget, prune, coordination-state
 * and GC protocols (and the lock steps they take), a forked child runs the
 * operation with `crash` armed at that point (it _exits 77 there, like
 * kill -9), and the parent then recovers as a user would and checks:
 *
 *   - the child really died at the point (a point the operation cannot
 *     reach is a failure, not a skip);
 *   - nothing complete was lost: every snapshot that has a manifest after
 *     the crash, and that the operation was not removing, is still there;
 *   - recovery works with no waiting: the crashed operation retried (a
 *     forget, prune or verify), the next backup of the group, a verify of
 *     every snapshot and the next GC all get their locks at once (CKL_TRY)
 *     and succeed; the GC's cutoff is not held back by the dead process's
 *     roster record (it was reaped) and it removes the garbage;
 *   - afterwards fsck is clean, every snapshot reads back byte for byte,
 *     the roster is empty, gc_active is clear, .trash is empty, no insert
 *     temp file or .gc- sweep name is left, every lock is free, and the
 *     snapshots of each group are exactly the expected ones.
 *
 * Completeness: test_catalog_covered enumerates the failpoint catalog and
 * fails if a point whose prefix is in `scope` has no row in `cases` (or an
 * explained entry in `excluded`), so a new failpoint in these protocols
 * cannot be skipped silently.
 *
 * Soak: CKL_CRASH_SOAK_ITERS=N (and optionally CKL_CRASH_SOAK_SEED=S) runs
 * N rounds of 1-3 crashes at random rows, chained without recovery in
 * between, on a store with a random sync policy, then the same recovery
 * and checks. The seed is printed; the same seed replays the same rounds.
 * Any of the three binaries runs the soak over all rows. Off in ctest (see
 * docs/hacking.md).
 *
 * Speed: making a store (65,536 prefix directories) and removing it cost
 * more than a case, so one store per sync policy is made once and reset
 * between cases (ops_store_reset: snapshots, trash, locks and the chunks of
 * recently changed prefix directories go; the coordination state stays,
 * and every case leaves it with an empty roster and no GC marking, which
 * the checks assert). Per case fsck checks snapshots and indexes; the
 * chunk-directory scan (the part that costs) runs in the last case and in
 * every soak round, and the leftover checks below look at every prefix
 * directory a case can write to.
 */
#ifndef CKL_CRASH_MATRIX_H
#define CKL_CRASH_MATRIX_H
#include "testutil.h"

#include "ops_util.h"

#include "crash_util.h"
#include "chunklock/freeze.h"

#include <sys/wait.h>

/* ---- the world every case starts from --------------------------------------- */

/* host/a: S0 <- AB (abandoned) <- S1 <- NB (the crashing backup) <- RB
 * (the recovery's backup); vm/100: S2. Chunk seeds overlap on purpose
 * (dedup and reuse). */
static const cu_snap S0 = {"host", "a", 0, {{"root.didx", {1, 2, 3, 4}, 4}}, 1};
static const cu_snap AB = {"host", "a", 5, {{"root.didx", {9}, 1}}, 1};
static const cu_snap S1 = {
    "host", "a", 10, {{"root.didx", {3, 4, 5, 6}, 4}, {"disk.fidx", {7}, 1}}, 2};
static const cu_snap NB = {"host",
                           "a",
                           20,
                           {{"root.didx", {5 | CU_REUSE, 6, 20, 21}, 4}, {"disk.fidx", {22, 23}, 2}},
                           2};
static const cu_snap RB = {"host", "a", 30, {{"root.didx", {3, 30, 31}, 3}}, 1};
static const cu_snap S2 = {"vm", "100", 0, {{"disk.fidx", {7, 8}, 2}}, 1};
static const uint32_t garbage[] = {100, 101, 102, 103};
/* Every chunk any case writes, for the leftover checks. */
static const uint32_t all_seeds[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 30, 31,
                                     100, 101, 102, 103};

typedef enum op_kind {
  OP_BACKUP,       /* backup NB (base S1; removes the abandoned AB first) */
  OP_BACKUP_ABORT, /* the same, aborted after its archives */
  OP_VERIFY,       /* verify S0 (manifest update) */
  OP_FORGET,       /* forget S0 */
  OP_FORGET_GC,    /* forget S0 while gc_active is set (a GC died marking) */
  OP_PRUNE,        /* prune host/a, keep-last 1 */
  OP_GC,           /* GC, safety 0 */
  OP_GC_STRICT,    /* GC in strict mode (process locker exclusive) */
  OP_GC_FAIL,      /* GC whose mark fails (EIO): the abort path */
  OP_FREEZE,       /* with-lock --exclusive: acquire, release */
} op_kind;

static const char *const op_names[] = {"backup", "backup-abort", "verify", "forget", "forget-gc",
                                       "prune",  "gc",           "gc-strict", "gc-fail",
                                       "freeze-exclusive"};

typedef struct ccase {
  const char *point;
  op_kind op;
} ccase;

/* Each failpoint with the operation that reaches it. A point may appear
 * with several operations (forget steps are taken by forget, prune and a
 * backup removing an abandoned snapshot). */
static const ccase cases[] = {
    /* backup: begin, archives, finish */
    {"proclock.before_shared", OP_BACKUP},
    {"flock.before_lock", OP_BACKUP},
    {"flock.after_lock", OP_BACKUP},
    {"forget.after_lock", OP_BACKUP}, /* removing the abandoned AB */
    {"state.forget.before_commit", OP_BACKUP},
    {"backup.after_locks", OP_BACKUP},
    {"state.roster.before_register_commit", OP_BACKUP},
    {"state.roster.after_register", OP_BACKUP},
    {"state.txn.before_commit", OP_BACKUP},
    {"backup.after_register", OP_BACKUP},
    {"backup.after_mkdir", OP_BACKUP},
    {"chunk.insert.after_tmp_create", OP_BACKUP},
    {"chunk.insert.after_tmp_write", OP_BACKUP},
    {"chunk.insert.before_fsync", OP_BACKUP},
    {"chunk.insert.before_rename", OP_BACKUP},
    {"chunk.insert.after_rename", OP_BACKUP},
    {"index.write.after_create", OP_BACKUP},
    {"atomic.before_lock", OP_BACKUP},
    {"atomic.after_create", OP_BACKUP},
    {"index.write.after_entries", OP_BACKUP},
    {"index.write.before_commit", OP_BACKUP},
    {"atomic.before_fsync", OP_BACKUP},
    {"atomic.after_rename", OP_BACKUP},
    {"index.write.after_rename", OP_BACKUP},
    {"backup.archive.after_close", OP_BACKUP},
    {"backup.before_finish", OP_BACKUP},
    {"state.roster.before_refresh_commit", OP_BACKUP},
    {"backup.after_manifest", OP_BACKUP},
    {"state.roster.before_deregister", OP_BACKUP},
    {"backup.abort.before_remove", OP_BACKUP_ABORT},
    {"forget.after_move", OP_BACKUP_ABORT},
    /* manifest update (verify's result) */
    {"manifest.load.before_read", OP_VERIFY},
    {"update_manifest.after_lock", OP_VERIFY},
    {"update_manifest.after_load", OP_VERIFY},
    {"update_manifest.before_replace", OP_VERIFY},
    {"atomic.after_write", OP_VERIFY},
    {"atomic.before_rename", OP_VERIFY},
    {"update_manifest.after_replace", OP_VERIFY},
    /* forget, without and with a GC marking */
    {"freeze.after_check", OP_FORGET},
    {"freeze.after_acquire", OP_FREEZE}, /* held and named: a dead freezer */
    {"forget.after_guard", OP_FORGET},
    {"forget.after_lock", OP_FORGET},
    {"state.forget.before_move", OP_FORGET},
    {"state.forget.before_commit", OP_FORGET},
    {"state.forget.after_commit", OP_FORGET},
    {"forget.after_move", OP_FORGET},
    {"forget.before_unlink", OP_FORGET},
    {"flock.before_unlink", OP_FORGET},
    {"forget.after_lock", OP_FORGET_GC},
    {"state.forget.before_move", OP_FORGET_GC},
    {"state.forget.before_commit", OP_FORGET_GC},
    {"state.forget.after_commit", OP_FORGET_GC},
    {"forget.after_move", OP_FORGET_GC},
    {"forget.before_unlink", OP_FORGET_GC},
    /* prune */
    {"prune.after_guard", OP_PRUNE},
    {"prune.after_list", OP_PRUNE},
    {"prune.before_remove", OP_PRUNE},
    {"state.forget.after_commit", OP_PRUNE},
    {"forget.before_unlink", OP_PRUNE},
    /* GC */
    {"gclock.before_lock", OP_GC},
    {"gclock.after_lock", OP_GC},
    {"gc.begin.after_lock", OP_GC},
    {"gc.begin.after_guard", OP_GC},
    {"state.roster.before_reap_delete", OP_GC}, /* the abandoned backup's record */
    {"state.gc_begin.before_commit", OP_GC},
    {"state.gc_begin.after_commit", OP_GC},
    {"gc.begin.after_state", OP_GC},
    {"gc.atime.after_check", OP_GC},
    {"gc.mark.after_list", OP_GC},
    {"gc.mark.before_snapshot", OP_GC},
    {"gc.mark.before_removed_set", OP_GC},
    {"state.removed.before_clear_active", OP_GC},
    {"gc.sweep.before", OP_GC},
    {"gc.sweep.after_writer_check", OP_GC},
    {"gc.sweep.before_rename", OP_GC},
    {"gc.sweep.after_rename", OP_GC},
    {"gc.sweep.before_unlink", OP_GC},
    {"gc.purge.before", OP_GC},
    {"gc.purge.before_entry", OP_GC},
    {"state.gc_end.before_commit", OP_GC},
    {"gc.status.before_write", OP_GC},
    {"atomic.after_create", OP_GC}, /* .gc-status's temp file: the next GC removes it */
    {"proclock.before_exclusive", OP_GC_STRICT},
    {"proclock.after_exclusive", OP_GC_STRICT},
    {"state.gc_abort.before_commit", OP_GC_FAIL},
};

/* Catalog prefixes whose every point must have a row above. */
static const char *const scope[] = {
    "backup.",      "chunk.insert", "index.write",   "update_manifest.", "forget.",
    "prune.",       "state.forget", "state.gc_",     "state.removed",    "state.roster.",
    "gc.",          "flock.",       "gclock.",       "proclock.",        "freeze.",
};

/* In-scope points with no row, each with the reason. */
static const struct {
  const char *point, *why;
} excluded[] = {
    {"gc.sweep.helper_batch",
     "whether the helper thread claims a batch before the calling thread has claimed all 1,024 "
     "is up to the scheduler, so a crash there cannot be forced; a helper dies with its process, "
     "in a state the gc.sweep.* rows above already leave"},
};

/* ---- one round ------------------------------------------------------------------ */

typedef struct world {
  ops_store o;
  ckl_sync_policy sync;
  bool full_fsck; /* also scan .chunks and .trash */
} world;

/* One store per sync policy, made on first use, reset per case. */
static ops_store stores[3];

typedef struct child_arg {
  const char *path, *point, *also;
  op_kind op;
} child_arg;

static int run_op(ckl_store *st, op_kind op) {
  ckl_snapshot_name s0 = cu_name(&S0);
  switch (op) {
    case OP_BACKUP: return cu_backup(st, &NB, false);
    case OP_BACKUP_ABORT: return cu_backup(st, &NB, true);
    case OP_VERIFY: return ckl_verify(st, &s0, NULL, NULL);
    case OP_FORGET:
    case OP_FORGET_GC: return ckl_forget(st, &s0, NULL);
    case OP_PRUNE: {
      ckl_group_name g = ops_group("host", "a");
      ckl_prune_opts po = {.keep_last = 1};
      ckl_prune_item *items = NULL;
      size_t n = 0;
      int rc = ckl_prune(st, &g, &po, &items, &n);
      free(items);
      return rc;
    }
    case OP_GC:
    case OP_GC_STRICT:
    case OP_GC_FAIL: {
      ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0, .exclusive = op == OP_GC_STRICT};
      return ckl_gc_run(st, &go, NULL);
    }
    case OP_FREEZE: {
      ckl_freeze f = {0};
      ckl_freeze_opts fo = {.timeout_ms = CKL_TRY, .operation = "with-lock"};
      int rc = ckl_freeze_acquire(st, CKL_FREEZE_EXCLUSIVE, &f, &fo);
      if (rc == 0) ckl_freeze_release(&f);
      return rc;
    }
  }
  return -EINVAL;
}

static int child(void *p) {
  child_arg *c = p;
  ckl_store *st;
  if (ckl_store_open(c->path, NULL, &st) != 0) return 10;
  if (c->also && ckl_failpoint_arm_spec(c->also) != 0) return 11;
  if (ckl_failpoint_arm(c->point, "crash") != 0) return 12;
  int rc = run_op(st, c->op);
  ckl_store_close(st);
  return rc < 0 ? 13 : 0;
}

/* Run op in a child that crashes at point; its exit status. */
static int crash_child(world *w, const char *point, op_kind op) {
  child_arg c = {.path = w->o.path, .point = point, .op = op};
  if (op == OP_GC_FAIL) c.also = "gc.mark.after_list=error(EIO)";
  return ckl_test_wait(ckl_test_fork(child, &c));
}

static void must_crash(world *w, const char *point, op_kind op) {
  int st = crash_child(w, point, op);
  if (st != CKL_FAILPOINT_CRASH_STATUS)
    fail_msg("%s (%s): the child exited %d instead of crashing there", point, op_names[op], st);
}

static void world_new(world *w, ckl_sync_policy sync) {
  memset(w, 0, sizeof *w);
  w->sync = sync;
  ops_store *o = &stores[sync];
  if (!o->st) {
    cu_store_new(o, "crashmx", sync);
    o->reset_s = (int64_t)time(NULL);
  } else {
    ops_store_reset(o);
  }
  w->o = *o;
  assert_int_equal(cu_backup(w->o.st, &S0, false), 0);
  assert_int_equal(cu_backup(w->o.st, &S1, false), 0);
  assert_int_equal(cu_backup(w->o.st, &S2, false), 0);
  for (size_t i = 0; i < CKL__ARRAY_SIZE(garbage); i++) {
    unsigned char buf[CU_CHUNK];
    ckl_digest d;
    cu_chunk(garbage[i], buf, &d);
    assert_int_equal(ckl_chunk_insert(w->o.st->chunks, &d, buf, CU_CHUNK, NULL), CKL_INSERT_NEW);
    cu_age_chunk(&w->o, garbage[i], 3600);
  }
  /* What a forget that died after its move leaves: GC purges it. */
  char *t = ckl_test_path(w->o.path, ".trash/host-a-leftover-0123456789abcdef");
  assert_int_equal(mkdir(t, 0755), 0);
  char *f = ckl_test_path(t, "root.didx");
  ckl_test_write_file(f, "x", 1);
  free(f);
  free(t);
  /* A backup that died with its indexes written: an abandoned snapshot
   * (older than S1, whose lock nobody holds) and the roster record of a
   * dead writer. */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    ckl_store *st;
    if (ckl_store_open(w->o.path, NULL, &st) != 0) _exit(10);
    if (ckl_failpoint_arm("backup.before_finish", "crash") != 0) _exit(11);
    (void)cu_backup(st, &AB, false);
    _exit(12);
  }
  assert_int_equal(ckl_test_wait(pid), CKL_FAILPOINT_CRASH_STATUS);
  assert_true(cu_present(&w->o, &AB));
  assert_false(cu_complete(&w->o, &AB));
}

static void world_free(world *w) {
  ckl_failpoint_disarm_all();
  memset(w, 0, sizeof *w);
}

static int stores_free(void **state) {
  (void)state;
  for (size_t i = 0; i < CKL__ARRAY_SIZE(stores); i++) {
    if (!stores[i].st) continue;
    ckl_store_close(stores[i].st);
    ops_rmtree(stores[i].dir);
    free(stores[i].path);
    free(stores[i].dir);
    memset(&stores[i], 0, sizeof stores[i]);
  }
  return 0;
}

/* Exactly the snapshots `want` (n of them) in group type/id. */
static void expect_group(world *w, const char *type, const char *id, const cu_snap *const *want,
                         size_t n) {
  ckl_group_name g = ops_group(type, id);
  ckl_snapshot_info *list = NULL;
  size_t got = 0;
  assert_int_equal(ckl_snapshot_list(w->o.st, &g, &list, &got), 0);
  bool ok = got == n;
  for (size_t i = 0; ok && i < n; i++) {
    bool found = false;
    ckl_snapshot_name name = cu_name(want[i]);
    for (size_t j = 0; j < got; j++)
      found |= strcmp(list[j].name.time, name.time) == 0 && list[j].state == CKL_SNAP_COMPLETE;
    ok = found;
  }
  if (!ok) {
    for (size_t j = 0; j < got; j++)
      fprintf(stderr, "  %s/%s has %s (%s)\n", type, id, list[j].name.time,
              list[j].state == CKL_SNAP_COMPLETE ? "complete" : "in progress");
    for (size_t i = 0; i < n; i++) {
      ckl_snapshot_name name = cu_name(want[i]);
      fprintf(stderr, "  expected %s\n", name.time);
    }
    fail_msg("group %s/%s is not as expected", type, id);
  }
  ckl_snapshot_list_free(list, got);
}

/* Recover from the crashes of `ops` (in order) as a user would, then check
 * everything the header promises. */
static void recover_and_check(world *w, const op_kind *ops, size_t nops) {
  ops_store *o = &w->o;
  bool forgot = false, pruned = false;
  for (size_t i = 0; i < nops; i++) {
    forgot |= ops[i] == OP_FORGET || ops[i] == OP_FORGET_GC;
    pruned |= ops[i] == OP_PRUNE;
  }
  /* Nothing complete lost: S2 is never touched; S1 goes only by a prune;
   * S0 only by a forget or prune; and what is there is whole. */
  assert_true(cu_complete(o, &S2));
  if (!pruned) assert_true(cu_complete(o, &S1));
  if (!forgot && !pruned) assert_true(cu_complete(o, &S0));
  const cu_snap *const every[] = {&S0, &S1, &NB};
  for (size_t i = 0; i < 3; i++)
    if (cu_present(o, every[i]) && !cu_complete(o, every[i]) && every[i] != &NB)
      fail_msg("snapshot at dt %lld lost its manifest", (long long)every[i]->dt);
  bool nb_done = cu_complete(o, &NB);

  /* 1. Retry what crashed; every lock must be free at once. */
  ckl_snapshot_name s0 = cu_name(&S0);
  for (size_t i = 0; i < nops; i++) {
    int rc;
    switch (ops[i]) {
      case OP_FORGET:
      case OP_FORGET_GC:
        rc = ckl_forget(o->st, &s0, NULL);
        if (cu_present(o, &S0) || (rc != -ENOENT && rc < 0))
          fail_msg("retried forget: %s", ckl_err_name(rc));
        break;
      case OP_PRUNE:
        rc = run_op(o->st, OP_PRUNE);
        if (rc != 0) fail_msg("retried prune: %s", ckl_err_name(rc));
        break;
      case OP_VERIFY:
        if (cu_present(o, &S0)) assert_int_equal(ckl_verify(o->st, &s0, NULL, NULL), 0);
        break;
      default:
        break;
    }
  }
  /* 2. The next backup of the group (removes an abandoned snapshot). */
  int rc = cu_backup(o->st, &RB, false);
  if (rc != 0) fail_msg("the next backup: %s", ckl_err_name(rc));
  assert_false(cu_present(o, &AB));
  assert_false(cu_present(o, &NB) && !cu_complete(o, &NB));

  /* The expected snapshots of host/a. */
  const cu_snap *want[4];
  size_t nwant = 0;
  if (pruned) {
    want[nwant++] = nb_done ? &NB : &S1;
  } else {
    if (!forgot) want[nwant++] = &S0;
    want[nwant++] = &S1;
    if (nb_done) want[nwant++] = &NB;
  }
  want[nwant++] = &RB;
  expect_group(w, "host", "a", want, nwant);
  const cu_snap *const vm[] = {&S2};
  expect_group(w, "vm", "100", vm, 1);

  /* 3. Time passes for the dead writers' temp files; verify everything
   * (which also removes a dead manifest update's temp file). */
  for (size_t i = 0; i < CKL__ARRAY_SIZE(all_seeds); i++)
    (void)cu_prefix_entries(o, all_seeds[i], ".tmp-", 3600);
  for (size_t i = 0; i < nwant; i++) {
    ckl_snapshot_name n = cu_name(want[i]);
    rc = ckl_verify(o->st, &n, NULL, NULL);
    if (rc != 0) fail_msg("verify %s: %s", n.time, ckl_err_name(rc));
  }
  ckl_snapshot_name s2 = cu_name(&S2);
  assert_int_equal(ckl_verify(o->st, &s2, NULL, NULL), 0);

  /* 4. The next GC: no wait, the dead records reaped before the cutoff
   * was taken (else the abandoned writer would hold it back and nothing
   * would be swept), garbage gone. */
  ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0};
  ckl_gc_result r;
  rc = ckl_gc_run(o->st, &go, &r);
  if (rc != 0) fail_msg("the next GC: %s", ckl_err_name(rc));
  assert_true(r.oldest_writer_ns == INT64_MAX);
  for (size_t i = 0; i < CKL__ARRAY_SIZE(garbage); i++) assert_false(cu_has_chunk(o, garbage[i]));

  /* 5. The store is as new. */
  assert_int_equal(cu_fsck(o, w->full_fsck ? 0 : CKL_FSCK_SNAPSHOTS_ONLY), 0);
  for (size_t i = 0; i < nwant; i++) assert_int_equal(cu_read_back(o->st, want[i]), 0);
  assert_int_equal(cu_read_back(o->st, &S2), 0);
  assert_int_equal(cu_roster_count(o), 0);
  ckl_roster_gc gs;
  assert_int_equal(ckl_roster_gc_state(o->path, &gs), 0);
  assert_int_equal(gs.active, 0);
  assert_int_equal(gs.removed, 0);
  assert_int_equal(ops_trash_count(o), 0);
  /* .gc-status's temp of a GC that died writing it: the next GC's */
  assert_int_equal(ckl_test_count_entries(o->path, "..gc-status.tmp-"), 0);
  for (size_t i = 0; i < CKL__ARRAY_SIZE(all_seeds); i++) {
    assert_int_equal(cu_prefix_entries(o, all_seeds[i], ".tmp-", 0), 0);
    assert_int_equal(cu_prefix_entries(o, all_seeds[i], ".gc-", 0), 0);
  }
  /* Every lock free: each snapshot and group exclusively, the process
   * locker exclusively, the GC lock. */
  for (size_t i = 0; i < nwant; i++) {
    ckl_snapshot_name n = cu_name(want[i]);
    ckl_path_lock lk = {0};
    assert_int_equal(ckl_snapshot_lock(o->st, &n, CKL_LOCK_EXCLUSIVE, &lk, NULL), 0);
    ckl_path_lock_release(&lk);
  }
  const char *groups[][2] = {{"host", "a"}, {"vm", "100"}};
  for (size_t i = 0; i < 2; i++) {
    ckl_group_name g = ops_group(groups[i][0], groups[i][1]);
    ckl_path_lock lk = {0};
    assert_int_equal(ckl_group_lock(o->st, &g, &lk, NULL), 0);
    ckl_path_lock_release(&lk);
  }
  ckl_proclock_guard pg = {0};
  assert_int_equal(ckl_proclock_exclusive(o->st->proclock, &pg, CKL_TRY, NULL), 0);
  ckl_proclock_release(&pg);
  ckl_gclock gl = {0};
  assert_int_equal(ckl_gclock_acquire(o->st->lock_path, &gl, CKL_TRY, NULL), 0);
  ckl_gclock_release(&gl);
}

/* Crash at one row (after the pre-step its operation needs). */
static void crash_row(world *w, const ccase *c) {
  if (c->op == OP_FORGET_GC) must_crash(w, "state.gc_begin.after_commit", OP_GC);
  must_crash(w, c->point, c->op);
}

/* ---- tests ------------------------------------------------------------------------ */

static bool in_scope(const char *name) {
  for (size_t i = 0; i < CKL__ARRAY_SIZE(scope); i++)
    if (strncmp(name, scope[i], strlen(scope[i])) == 0) return true;
  return false;
}

static void test_catalog_covered(void **state) {
  (void)state;
  int missing = 0;
  size_t in = 0;
  for (size_t i = 0; i < ckl_failpoint_count(); i++) {
    const char *name = ckl_failpoint_catalog(i, NULL);
    if (!in_scope(name)) continue;
    in++;
    bool has = false;
    for (size_t k = 0; k < CKL__ARRAY_SIZE(cases); k++) has |= strcmp(cases[k].point, name) == 0;
    for (size_t k = 0; k < CKL__ARRAY_SIZE(excluded); k++)
      has |= excluded[k].point && strcmp(excluded[k].point, name) == 0;
    if (!has) {
      fprintf(stderr, "failpoint %s is in scope but has no crash case\n", name);
      missing++;
    }
  }
  /* And every row names a catalogued point. */
  for (size_t k = 0; k < CKL__ARRAY_SIZE(cases); k++) {
    bool known = false;
    for (size_t i = 0; i < ckl_failpoint_count(); i++)
      known |= strcmp(ckl_failpoint_catalog(i, NULL), cases[k].point) == 0;
    if (!known) {
      fprintf(stderr, "crash case %s is not in the catalog\n", cases[k].point);
      missing++;
    }
  }
  assert_int_equal(missing, 0);
  assert_true(in >= 60);
}

static bool selected(op_kind op) {
  static const op_kind mine[] = {CRASH_MATRIX_OPS};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(mine); i++)
    if (mine[i] == op) return true;
  return false;
}

static void test_crash_every_point(void **state) {
  (void)state;
  size_t last = 0, n = 0;
  for (size_t k = 0; k < CKL__ARRAY_SIZE(cases); k++)
    if (selected(cases[k].op)) last = k;
  for (size_t k = 0; k < CKL__ARRAY_SIZE(cases); k++) {
    if (!selected(cases[k].op)) continue;
    fprintf(stderr, "crash at %s (%s)\n", cases[k].point, op_names[cases[k].op]);
    world w;
    world_new(&w, CKL_SYNC_FILE);
    w.full_fsck = k == last;
    crash_row(&w, &cases[k]);
    op_kind ops[] = {cases[k].op};
    recover_and_check(&w, ops, 1);
    world_free(&w);
    n++;
  }
  assert_true(n > 0);
}

/* ---- soak -------------------------------------------------------------------------- */

static uint64_t soak_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static int soak(long iters, uint64_t seed) {
  fprintf(stderr, "crash soak: %ld rounds, seed %llu (CKL_CRASH_SOAK_SEED=%llu replays)\n",
          iters, (unsigned long long)seed, (unsigned long long)seed);
  uint64_t s = seed ? seed : 1;
  static const ckl_sync_policy syncs[] = {CKL_SYNC_FILE, CKL_SYNC_NONE, CKL_SYNC_FILESYSTEM};
  for (long it = 0; it < iters; it++) {
    world w;
    world_new(&w, syncs[soak_next(&s) % 3]);
    w.full_fsck = true;
    size_t chain = 1 + (size_t)(soak_next(&s) % 3);
    op_kind ops[3];
    fprintf(stderr, "round %ld (sync %d):", it, (int)w.sync);
    for (size_t i = 0; i < chain; i++) {
      const ccase *c = &cases[soak_next(&s) % CKL__ARRAY_SIZE(cases)];
      ops[i] = c->op;
      fprintf(stderr, " %s(%s)", c->point, op_names[c->op]);
      /* In a chain an earlier crash may have changed what the operation
       * meets (its snapshot forgotten, NB already complete), so it may
       * end without reaching the point: that is fine here. */
      if (c->op == OP_FORGET_GC) (void)crash_child(&w, "state.gc_begin.after_commit", OP_GC);
      int st = crash_child(&w, c->point, c->op);
      fprintf(stderr, "=%d", st);
      if (st != CKL_FAILPOINT_CRASH_STATUS && st != 0 && st != 13) {
        fprintf(stderr, "\nround %ld: child exited %d\n", it, st);
        return 1;
      }
    }
    fprintf(stderr, "\n");
    recover_and_check(&w, ops, chain);
    world_free(&w);
  }
  return 0;
}

static long soak_iters;
static uint64_t soak_seed;

static void test_soak(void **state) {
  (void)state;
  assert_int_equal(soak(soak_iters, soak_seed), 0);
}

int main(void) {
  const char *iters = getenv("CKL_CRASH_SOAK_ITERS");
  if (iters && atol(iters) > 0) {
    const char *sd = getenv("CKL_CRASH_SOAK_SEED");
    soak_iters = atol(iters);
    soak_seed = sd ? strtoull(sd, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    const struct CMUnitTest soak_tests[] = {
        cmocka_unit_test(test_catalog_covered),
        cmocka_unit_test(test_soak),
    };
    return cmocka_run_group_tests(soak_tests, NULL, stores_free);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_catalog_covered),
      cmocka_unit_test(test_crash_every_point),
  };
  return cmocka_run_group_tests(tests, NULL, stores_free);
}

#endif

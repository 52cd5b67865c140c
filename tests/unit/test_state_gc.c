/* The GC state and the removed-during-GC set: gc_begin across processes,
 * forget recorded only while a GC marks (settled for a dry run, whose
 * forgets delete at once), the take-unmarked loop that ends the mark
 * phase, abort and token ownership, undecodable records, a lost state, a
 * crash in the middle of a GC, and a forget racing the GC's final check
 * (threads and processes). */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/proc_identity.h"
#include "datastore/state.h"

static char *store;


static int setup(void **state) {
  (void)state;
  store = ckl_test_mkdtemp("state");
  ckl_test_log_capture();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  ckl_test_rmtree(store);
  free(store);
  store = NULL;
  return 0;
}

static ckl__state *open_state(void) {
  ckl__state *st = NULL;
  assert_int_equal(ckl__state_open(store, &st), 0);
  return st;
}

/* ---- GC state ------------------------------------------------------------------- */

static const char *GC1 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *GC2 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/* A forget's move step: rename STORE/<snap> to STORE/<trash>. */
struct mover {
  const char *snap, *trash;
  int calls;
  int saw_active;
  int fail;
};

static int move_fn(void *arg, int gc_active) {
  struct mover *m = arg;
  m->calls++;
  m->saw_active = gc_active;
  if (m->fail) return m->fail;
  char from[4096], to[4096];
  snprintf(from, sizeof from, "%s/%s", store, m->snap);
  snprintf(to, sizeof to, "%s/%s", store, m->trash);
  return rename(from, to) == 0 ? 0 : -errno;
}

static void make_snapshot(const char *rel) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s/%s' '%s/.trash'", store, rel, store);
  assert_int_equal(system(cmd), 0);
}

static int exists(const char *rel) {
  char p[4096];
  struct stat sb;
  snprintf(p, sizeof p, "%s/%s", store, rel);
  return stat(p, &sb) == 0;
}

static void test_gc_begin_basics(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 0);
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, "short", 0, 0, &bi), -EINVAL);
  int64_t t0 = ckl__now_realtime_ns();
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  assert_true(bi.phase1_start_ns >= t0 && bi.phase1_start_ns <= ckl__now_realtime_ns());
  assert_int_equal(bi.oldest_writer_start_ns, INT64_MAX);
  assert_int_equal(bi.writers, 0);
  assert_int_equal(bi.recovered, 0);
  assert_int_equal(bi.stale_removed, 0);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1);
  assert_string_equal(gi.token, GC1);
  assert_int_equal(gi.phase1_start_ns, bi.phase1_start_ns);
  /* injected now, writers of this process, a non-writer that is ignored */
  ckl__roster_reg w = {.operation = "backup"}, r = {.operation = "verify"};
  char tw[33], tr[33];
  assert_int_equal(ckl__state_register(st, &r, tr), 0);
  assert_int_equal(ckl__state_register(st, &w, tw), 0);
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  int64_t wstart = 0;
  for (size_t i = 0; i < l.n; i++)
    if (!strcmp(l.v[i].token, tw)) wstart = l.v[i].start_ns;
  ckl__roster_list_free(&l);
  assert_int_equal(ckl__state_gc_begin(st, GC2, 12345, 0, &bi), 0);
  assert_int_equal(bi.recovered, 1); /* GC1 never ended */
  assert_int_equal(bi.phase1_start_ns, 12345);
  assert_int_equal(bi.writers, 1);
  assert_int_equal(bi.oldest_writer_start_ns, wstart);
  assert_true(ckl_test_logged("never finished: taking over its state"));
  assert_int_equal(ckl__state_gc_end(st, GC1), CKL_ELOCKLOST);
  assert_int_equal(ckl__state_gc_end(st, GC2), 0);
  ckl__state_close(st);
}

struct gc_child {
  char fpdir[512];
  char token[33];
  int64_t start_ns;
};

static int backup_child(void *p) {
  struct gc_child *a = p;
  ckl__state *st;
  if (ckl__state_open(store, &st) != 0) return 10;
  char spec[600];
  snprintf(spec, sizeof spec, "pausefile(%s)", a->fpdir);
  if (ckl_failpoint_arm("state.roster.after_register", spec) != 0) return 11;
  ckl__roster_ident id = {0};
  (void)id;
  ckl__roster_reg reg = {.operation = "backup", .target = "vm/9"};
  if (ckl__state_register(st, &reg, a->token) != 0) return 12;
  if (ckl__state_deregister(st, a->token) != 0) return 13;
  ckl__state_close(st);
  return 0;
}

static void wait_hit(const char *dir, const char *fp, pid_t pid) {
  char hit[256];
  snprintf(hit, sizeof hit, "%s.hit.%d", fp, (int)pid);
  ckl_test_wait_file(dir, hit);
}

static void go(const char *dir, const char *fp) { ckl_test_release_pausefile(dir, fp); }

/* The oldest writer is read across processes: a backup registered in a
 * child (before ours) is the oldest. */
static void test_gc_begin_oldest_writer_across_processes(void **state) {
  (void)state;
  ckl__state *st = open_state();
  struct gc_child *a = ckl_test_shared_alloc(sizeof *a);
  char *d = ckl_test_mkdtemp("fp-oldest");
  snprintf(a->fpdir, sizeof a->fpdir, "%s", d);
  free(d);
  pid_t pid = ckl_test_fork(backup_child, a);
  wait_hit(a->fpdir, "state.roster.after_register", pid);
  char mine[33];
  ckl__roster_reg w = {.operation = "backup"};
  assert_int_equal(ckl__state_register(st, &w, mine), 0);
  int64_t child_start = 0, my_start = 0;
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
  assert_int_equal(l.n, 2);
  for (size_t i = 0; i < l.n; i++) {
    if (!strcmp(l.v[i].token, a->token)) child_start = l.v[i].start_ns;
    if (!strcmp(l.v[i].token, mine)) my_start = l.v[i].start_ns;
  }
  ckl__roster_list_free(&l);
  assert_true(child_start > 0 && child_start <= my_start);
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  assert_int_equal(bi.writers, 2);
  assert_int_equal(bi.oldest_writer_start_ns, child_start);
  go(a->fpdir, "state.roster.after_register");
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(ckl__state_deregister(st, mine), 0);
  assert_int_equal(ckl__state_gc_abort(st, GC1), 0);
  ckl__state_close(st);
  ckl_test_rmtree(a->fpdir);
  ckl_test_shared_free(a, sizeof *a);
}

static void test_forget_recorded_only_while_active(void **state) {
  (void)state;
  ckl__state *st = open_state();
  make_snapshot("vm/1/A");
  make_snapshot("vm/1/B");
  struct mover ma = {.snap = "vm/1/A", .trash = ".trash/A"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &ma), 0);
  assert_int_equal(ma.calls, 1);
  assert_int_equal(ma.saw_active, 0);
  assert_false(exists("vm/1/A"));
  assert_true(exists(".trash/A"));
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_list(st, &rl), 0);
  assert_int_equal(rl.n, 0);

  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  struct mover mb = {.snap = "vm/1/B", .trash = ".trash/B"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/B", ".trash/B", move_fn, &mb), 1);
  assert_int_equal(mb.saw_active, 1);
  assert_true(exists(".trash/B"));
  assert_int_equal(ckl__state_removed_list(st, &rl), 0);
  assert_int_equal(rl.n, 1);
  assert_string_equal(rl.v[0].snapshot_rel, "vm/1/B");
  assert_string_equal(rl.v[0].trash_rel, ".trash/B");
  assert_int_equal(rl.v[0].marked, 0);
  ckl__removed_list_free(&rl);
  assert_int_equal(ckl__state_is_removed(st, "vm/1/B"), 1);
  assert_int_equal(ckl__state_is_removed(st, "vm/1/A"), 0);
  assert_int_equal(ckl__state_is_removed(st, "vm/1"), 0);   /* prefix is not a match */
  assert_int_equal(ckl__state_is_removed(st, "vm/1/"), 0);
  assert_int_equal(ckl__state_is_removed(st, "vm/1/BB"), 0);
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);
  ckl__state_close(st);
}

static void test_forget_errors(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  /* fn fails: nothing recorded */
  struct mover m = {.snap = "vm/1/A", .trash = ".trash/A", .fail = -EXDEV};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &m), -EXDEV);
  assert_int_equal(ckl__state_is_removed(st, "vm/1/A"), 0);
  /* an error before the move: fn never called */
  assert_int_equal(ckl_failpoint_arm("state.forget.before_move", "1*error(EIO)"), 0);
  m.fail = 0;
  m.calls = 0;
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &m), -EIO);
  assert_int_equal(m.calls, 0);
  /* the move happened but the transaction did not commit: the caller is
   * told, the set has no entry (so a GC that sees the index gone aborts) */
  make_snapshot("vm/1/A");
  assert_int_equal(ckl_failpoint_arm("state.forget.before_commit", "1*error(ENOSPC)"), 0);
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &m), -ENOSPC);
  assert_int_equal(m.calls, 1);
  assert_true(exists(".trash/A"));
  assert_int_equal(ckl__state_is_removed(st, "vm/1/A"), 0);
  /* arguments */
  char longp[300];
  memset(longp, 'x', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  assert_int_equal(ckl__state_forget_txn(st, longp, ".trash/x", move_fn, &m), -ENAMETOOLONG);
  assert_int_equal(ckl__state_forget_txn(st, "/abs", ".trash/x", move_fn, &m), -EINVAL);
  assert_int_equal(ckl__state_forget_txn(st, "a", "", move_fn, &m), -EINVAL);
  assert_int_equal(ckl__state_forget_txn(st, "a", "b", NULL, &m), -EINVAL);
  assert_int_equal(ckl__state_is_removed(st, longp), 0);
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);
  ckl__state_close(st);
}

static void test_take_unmarked_loop(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__removed_list rl;
  /* no GC state at all: a GC asking has lost it */
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), CKL_ELOCKLOST);
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC2, &rl), CKL_ELOCKLOST);
  const char *snaps[] = {"vm/1/A", "vm/1/B", "ct/2/C"};
  const char *trash[] = {".trash/A", ".trash/B", ".trash/C"};
  for (int i = 0; i < 2; i++) {
    make_snapshot(snaps[i]);
    struct mover m = {.snap = snaps[i], .trash = trash[i]};
    assert_int_equal(ckl__state_forget_txn(st, snaps[i], trash[i], move_fn, &m), 1);
  }
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), 2);
  assert_int_equal(rl.n, 2);
  assert_string_equal(rl.v[0].snapshot_rel, "vm/1/A"); /* key order */
  assert_string_equal(rl.v[0].trash_rel, ".trash/A");
  assert_string_equal(rl.v[1].snapshot_rel, "vm/1/B");
  ckl__removed_list_free(&rl);
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1);
  assert_int_equal(gi.removed, 2);
  assert_int_equal(gi.unmarked, 0);
  /* a forget while the GC marks those: handed out on the next call */
  make_snapshot(snaps[2]);
  struct mover mc = {.snap = snaps[2], .trash = trash[2]};
  assert_int_equal(ckl__state_forget_txn(st, snaps[2], trash[2], move_fn, &mc), 1);
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), 1);
  assert_string_equal(rl.v[0].snapshot_rel, "ct/2/C");
  ckl__removed_list_free(&rl);
  /* nothing unmarked: gc_active cleared in the same transaction */
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), 0);
  assert_int_equal(rl.n, 0);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 0);
  assert_int_equal(gi.removed, 3); /* kept for the purge */
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), 0); /* idempotent */
  /* a forget now deletes at once: not recorded */
  make_snapshot("vm/1/D");
  struct mover md = {.snap = "vm/1/D", .trash = ".trash/D"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/D", ".trash/D", move_fn, &md), 0);
  assert_int_equal(ckl__state_removed_list(st, &rl), 0);
  assert_int_equal(rl.n, 3);
  for (size_t i = 0; i < rl.n; i++) assert_int_equal(rl.v[i].marked, 1);
  ckl__removed_list_free(&rl);
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.removed, 0);
  assert_int_equal(gi.active, 0);
  assert_string_equal(gi.token, GC1);
  ckl__state_close(st);
}

static void test_gc_abort_clears(void **state) {
  (void)state;
  ckl__state *st = open_state();
  assert_int_equal(ckl__state_gc_abort(st, GC1), 0); /* nothing began: no-op */
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  make_snapshot("vm/1/A");
  struct mover m = {.snap = "vm/1/A", .trash = ".trash/A"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &m), 1);
  assert_int_equal(ckl__state_gc_abort(st, GC2), CKL_ELOCKLOST);
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1); /* unchanged by the wrong token */
  assert_int_equal(gi.removed, 1);
  assert_int_equal(ckl_failpoint_arm("state.gc_abort.before_commit", "1*error(EIO)"), 0);
  assert_int_equal(ckl__state_gc_abort(st, GC1), -EIO);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1); /* aborted transaction: nothing changed */
  assert_int_equal(ckl__state_gc_abort(st, GC1), 0);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 0);
  assert_int_equal(gi.removed, 0);
  assert_true(ckl_test_logged("abandoned"));
  make_snapshot("vm/1/B");
  struct mover mb = {.snap = "vm/1/B", .trash = ".trash/B"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/B", ".trash/B", move_fn, &mb), 0);
  ckl__state_close(st);
}

/* Undecodable GC state: forget keeps the snapshot for a GC (as if active),
 * the next gc_begin takes over; an undecodable removed entry stops the GC. */
static void test_undecodable_gc_state(void **state) {
  (void)state;
  ckl__state *st = open_state();
  assert_int_equal(ckl__state_raw_put(st, "gc", "gc", 2, "junk", 4), 0);
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.unparseable, 1);
  assert_int_equal(gi.active, 1);
  make_snapshot("vm/1/A");
  struct mover m = {.snap = "vm/1/A", .trash = ".trash/A"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &m), 1);
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  assert_int_equal(bi.recovered, 1);
  assert_int_equal(bi.stale_removed, 1);
  assert_int_equal(ckl__state_raw_put(st, "removed", "vm/1/X\0.trash/X", 15, "bad", 3), 0);
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), CKL_ECORRUPT);
  assert_int_equal(rl.n, 0);
  assert_int_equal(ckl__state_removed_list(st, &rl), 0); /* still listed for the purge */
  assert_int_equal(rl.n, 1);
  assert_string_equal(rl.v[0].trash_rel, ".trash/X");
  ckl__removed_list_free(&rl);
  assert_int_equal(ckl__state_gc_abort(st, GC1), 0);
  ckl__state_close(st);
}

/* A GC record as gc_begin writes it (datastore/state_gc.c), with any
 * flags: how the test checks the layout and plants unknown bits. */
static void put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_gc_record(ckl__state *st, unsigned flags, const char *token) {
  unsigned char rec[24 + CKL_TOKEN_HEX_LEN];
  put_le(rec, 0x474c4b43u, 4); /* "CKLG" */
  put_le(rec + 4, 1, 2);       /* version */
  put_le(rec + 6, flags, 2);
  put_le(rec + 8, 1000, 8);    /* phase1_start */
  put_le(rec + 16, 1000, 8);   /* began */
  memcpy(rec + 24, token, CKL_TOKEN_HEX_LEN);
  assert_int_equal(ckl__state_raw_put(st, "gc", "gc", 2, rec, sizeof rec), 0);
}

/* A dry-run GC: forgets are recorded settled (the mark knows the index was
 * forgotten) and told to delete at once; settled entries are never handed
 * out; a GC that sweeps, even one taking over a dead dry run, gets its
 * forgets kept in .trash again. */
static void test_dry_run_forgets_settled(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 4u, &bi), -EINVAL);
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, CKL__GC_DRY_RUN, &bi), 0);
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1);
  assert_int_equal(gi.dry_run, 1);
  make_snapshot("vm/1/A");
  struct mover ma = {.snap = "vm/1/A", .trash = ".trash/A"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &ma),
                   CKL__FORGET_DRY_GC);
  assert_int_equal(ma.saw_active, CKL__FORGET_DRY_GC);
  assert_true(exists(".trash/A")); /* moved; deleting it is the forget's job */
  assert_int_equal(ckl__state_is_removed(st, "vm/1/A"), 1);
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_list(st, &rl), 0);
  assert_int_equal(rl.n, 1);
  assert_string_equal(rl.v[0].trash_rel, ".trash/A");
  assert_int_equal(rl.v[0].marked, CKL__RM_SETTLED);
  ckl__removed_list_free(&rl);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.removed, 1);
  assert_int_equal(gi.unmarked, 0);
  /* nothing to hand out: the mark phase ends at once */
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), 0);
  assert_int_equal(rl.n, 0);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 0);
  assert_int_equal(gi.dry_run, 1);
  make_snapshot("vm/1/B");
  struct mover mb = {.snap = "vm/1/B", .trash = ".trash/B"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/B", ".trash/B", move_fn, &mb),
                   CKL__FORGET_NO_GC);
  assert_int_equal(ckl__state_is_removed(st, "vm/1/B"), 0);
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);

  /* a dry run dies; a GC that sweeps takes over: its forgets are kept */
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, CKL__GC_DRY_RUN, &bi), 0);
  assert_int_equal(ckl__state_gc_begin(st, GC2, 0, 0, &bi), 0);
  assert_int_equal(bi.recovered, 1);
  assert_true(ckl_test_logged("(a dry run)"));
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.dry_run, 0);
  make_snapshot("vm/1/C");
  struct mover mc = {.snap = "vm/1/C", .trash = ".trash/C"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/C", ".trash/C", move_fn, &mc),
                   CKL__FORGET_KEEP);
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC2, &rl), 1);
  assert_string_equal(rl.v[0].snapshot_rel, "vm/1/C");
  ckl__removed_list_free(&rl);
  assert_int_equal(ckl__state_gc_end(st, GC2), 0);

  /* the record's layout: flags 3 = active dry run; an unknown bit does not
   * decode, and an undecodable record keeps the copy (the safe answer) */
  put_gc_record(st, 3, GC1);
  make_snapshot("vm/1/D");
  struct mover md = {.snap = "vm/1/D", .trash = ".trash/D"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/D", ".trash/D", move_fn, &md),
                   CKL__FORGET_DRY_GC);
  put_gc_record(st, 1 | 4, GC1);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.unparseable, 1);
  make_snapshot("vm/1/E");
  struct mover me = {.snap = "vm/1/E", .trash = ".trash/E"};
  assert_int_equal(ckl__state_forget_txn(st, "vm/1/E", ".trash/E", move_fn, &me),
                   CKL__FORGET_KEEP);
  ckl__state_close(st);
}

/* The state vanishes under a GC: its next step learns it lost the state. */
static void test_state_lost_mid_gc(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  char *sd = ckl_test_path(store, ".state"), *old = ckl_test_path(store, ".state.old");
  assert_int_equal(rename(sd, old), 0);
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), CKL_ELOCKLOST);
  assert_int_equal(ckl__state_gc_end(st, GC1), CKL_ELOCKLOST);
  assert_int_equal(ckl__state_gc_abort(st, GC1), 0);
  ckl__state_close(st);
  free(sd);
  free(old);
}

/* ---- crash in the middle of a GC ---------------------------------------------------- */

static int crashing_gc(void *arg) {
  (void)arg;
  ckl__state *st;
  if (ckl__state_open(store, &st) != 0) return 10;
  ckl__gc_begin_info bi;
  if (ckl__state_gc_begin(st, GC1, 0, 0, &bi) != 0) return 11;
  make_snapshot("vm/1/A");
  struct mover m = {.snap = "vm/1/A", .trash = ".trash/A"};
  if (ckl__state_forget_txn(st, "vm/1/A", ".trash/A", move_fn, &m) != 1) return 12;
  ckl__removed_list rl;
  if (ckl__state_removed_take_unmarked(st, GC1, &rl) != 1) return 13;
  ckl__removed_list_free(&rl);
  /* dies inside the final write transaction, holding LMDB's writer mutex */
  if (ckl_failpoint_arm("state.removed.before_clear_active", "crash") != 0) return 14;
  ckl__state_removed_take_unmarked(st, GC1, &rl);
  return 15;
}

static int crashing_forget(void *arg) {
  (void)arg;
  ckl__state *st;
  if (ckl__state_open(store, &st) != 0) return 10;
  if (ckl_failpoint_arm("state.forget.before_commit", "crash") != 0) return 11;
  struct mover m = {.snap = "vm/1/B", .trash = ".trash/B"};
  ckl__state_forget_txn(st, "vm/1/B", ".trash/B", move_fn, &m);
  return 12;
}

static void test_crash_mid_gc_recovered(void **state) {
  (void)state;
  pid_t pid = ckl_test_fork(crashing_gc, NULL);
  assert_int_equal(ckl_test_wait(pid), CKL_FAILPOINT_CRASH_STATUS);
  ckl__state *st = open_state();
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1); /* left set by the dead GC */
  assert_string_equal(gi.token, GC1);
  assert_int_equal(gi.removed, 1);
  assert_int_equal(gi.unmarked, 0);
  /* writers are not wedged by the dead writer's mutex */
  char tok[33];
  ckl__roster_reg reg = {.operation = "backup"};
  assert_int_equal(ckl__state_register(st, &reg, tok), 0);
  assert_int_equal(ckl__state_deregister(st, tok), 0);

  /* a forget that dies between its move and its commit leaves no entry:
   * the GC then finds the index gone and not removed, and aborts */
  make_snapshot("vm/1/B");
  pid = ckl_test_fork(crashing_forget, NULL);
  assert_int_equal(ckl_test_wait(pid), CKL_FAILPOINT_CRASH_STATUS);
  assert_true(exists(".trash/B"));
  assert_int_equal(ckl__state_is_removed(st, "vm/1/B"), 0);

  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC2, 0, 0, &bi), 0);
  assert_int_equal(bi.recovered, 1);
  assert_int_equal(bi.stale_removed, 1);
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 1);
  assert_string_equal(gi.token, GC2);
  assert_int_equal(gi.removed, 0);
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), CKL_ELOCKLOST);
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC2, &rl), 0);
  assert_int_equal(ckl__state_gc_end(st, GC2), 0);
  ckl__state_close(st);
}

/* ---- a forget racing the final check ------------------------------------------------ */

struct forget_thr {
  ckl__state *st;
  struct mover m;
  int rc;
};

static void *forget_thread(void *p) {
  struct forget_thr *f = p;
  pthread_setname_np(pthread_self(), "forget");
  f->rc = ckl__state_forget_txn(f->st, f->m.snap, f->m.trash, move_fn, &f->m);
  return NULL;
}

struct take_thr {
  ckl__state *st;
  ckl__removed_list rl;
  int rc;
};

static void *take_thread(void *p) {
  struct take_thr *t = p;
  pthread_setname_np(pthread_self(), "gc-final");
  t->rc = ckl__state_removed_take_unmarked(t->st, GC1, &t->rl);
  return NULL;
}

/* The forget is inside its transaction (moved, not committed) when the GC
 * makes its final check: the GC waits, then sees and marks the entry. */
static void test_forget_lands_before_final_check(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  make_snapshot("vm/5/R");
  assert_int_equal(ckl_failpoint_arm("state.forget.before_commit", "pause"), 0);
  assert_int_equal(ckl_failpoint_arm("state.removed.before_clear_active", "count"), 0);
  struct forget_thr f = {.st = st, .m = {.snap = "vm/5/R", .trash = ".trash/R"}, .rc = 0};
  pthread_t ft, tt;
  assert_int_equal(pthread_create(&ft, NULL, forget_thread, &f), 0);
  assert_int_equal(ckl_failpoint_wait_hits("state.forget.before_commit", 1, CKL_TEST_WAIT_MS), 0);
  assert_false(exists("vm/5/R")); /* moved, entry not yet committed */
  struct take_thr t = {.st = st, .rc = -1};
  assert_int_equal(pthread_create(&tt, NULL, take_thread, &t), 0);
  assert_int_equal(ckl_failpoint_release("state.forget.before_commit"), 1);
  assert_int_equal(pthread_join(ft, NULL), 0);
  assert_int_equal(pthread_join(tt, NULL), 0);
  assert_int_equal(f.rc, 1);
  assert_int_equal(f.m.saw_active, 1);
  assert_int_equal(t.rc, 1); /* handed out for marking, not lost */
  assert_string_equal(t.rl.v[0].snapshot_rel, "vm/5/R");
  assert_int_equal(ckl_failpoint_hits("state.removed.before_clear_active"), 0);
  ckl__removed_list_free(&t.rl);
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_take_unmarked(st, GC1, &rl), 0);
  assert_int_equal(ckl_failpoint_hits("state.removed.before_clear_active"), 1);
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);
  ckl__state_close(st);
}

/* The GC is inside its final transaction (found nothing, about to clear
 * gc_active) when the forget starts: the forget waits, then sees
 * gc_active == 0 and is free to delete at once. */
static void test_forget_lands_after_final_check(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  make_snapshot("vm/5/S");
  assert_int_equal(ckl_failpoint_arm("state.removed.before_clear_active", "pause"), 0);
  assert_int_equal(ckl_failpoint_arm("state.forget.before_move", "count"), 0);
  struct take_thr t = {.st = st, .rc = -1};
  pthread_t ft, tt;
  assert_int_equal(pthread_create(&tt, NULL, take_thread, &t), 0);
  assert_int_equal(
      ckl_failpoint_wait_hits("state.removed.before_clear_active", 1, CKL_TEST_WAIT_MS), 0);
  struct forget_thr f = {.st = st, .m = {.snap = "vm/5/S", .trash = ".trash/S"}, .rc = -1};
  assert_int_equal(pthread_create(&ft, NULL, forget_thread, &f), 0);
  assert_int_equal(ckl_failpoint_release("state.removed.before_clear_active"), 1);
  assert_int_equal(pthread_join(tt, NULL), 0);
  assert_int_equal(pthread_join(ft, NULL), 0);
  assert_int_equal(t.rc, 0);
  assert_int_equal(f.rc, 0);
  assert_int_equal(f.m.saw_active, 0);
  assert_int_equal(ckl_failpoint_hits("state.forget.before_move"), 1);
  ckl__removed_list rl;
  assert_int_equal(ckl__state_removed_list(st, &rl), 0);
  assert_int_equal(rl.n, 0); /* not recorded: the forget deletes it itself */
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);
  ckl__state_close(st);
}

/* The same race across processes: the GC in a child paused inside its
 * final transaction, the forget in this process. */
static int final_check_child(void *p) {
  const char *dir = p;
  ckl__state *st;
  if (ckl__state_open(store, &st) != 0) return 10;
  char spec[600];
  snprintf(spec, sizeof spec, "pausefile(%s)", dir);
  if (ckl_failpoint_arm("state.removed.before_clear_active", spec) != 0) return 11;
  ckl__removed_list rl;
  int rc = ckl__state_removed_take_unmarked(st, GC1, &rl);
  ckl__state_close(st);
  return rc == 0 ? 0 : 12;
}

static void test_forget_race_across_processes(void **state) {
  (void)state;
  ckl__state *st = open_state();
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, GC1, 0, 0, &bi), 0);
  make_snapshot("vm/6/P");
  char *dir = ckl_test_mkdtemp("fp-race");
  pid_t pid = ckl_test_fork(final_check_child, dir);
  wait_hit(dir, "state.removed.before_clear_active", pid);
  struct forget_thr f = {.st = st, .m = {.snap = "vm/6/P", .trash = ".trash/P"}, .rc = -1};
  pthread_t ft;
  assert_int_equal(pthread_create(&ft, NULL, forget_thread, &f), 0);
  go(dir, "state.removed.before_clear_active");
  assert_int_equal(pthread_join(ft, NULL), 0);
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(f.rc, 0);
  assert_int_equal(f.m.saw_active, 0);
  ckl__gc_info gi;
  assert_int_equal(ckl__state_gc_info(st, &gi), 0);
  assert_int_equal(gi.active, 0);
  assert_int_equal(gi.removed, 0);
  assert_int_equal(ckl__state_gc_end(st, GC1), 0);
  ckl__state_close(st);
  ckl_test_rmtree(dir);
  free(dir);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_gc_begin_basics),
      T(test_gc_begin_oldest_writer_across_processes),
      T(test_forget_recorded_only_while_active),
      T(test_forget_errors),
      T(test_take_unmarked_loop),
      T(test_gc_abort_clears),
      T(test_dry_run_forgets_settled),
      T(test_undecodable_gc_state),
      T(test_state_lost_mid_gc),
      T(test_crash_mid_gc_recovered),
      T(test_forget_lands_before_final_check),
      T(test_forget_lands_after_final_check),
      T(test_forget_race_across_processes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

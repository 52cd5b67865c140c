/*
 * A backup with CKL_BACKUP_BASE_LATEST picks the newest complete snapshot
 * and then locks it; a forget (which takes no group lock) can remove it in
 * between. The backup must then take the next newest as its base, not
 * fail with -ENOENT (found by the soak, tests/race/soak.c).
 *
 * The interleaving: flock.before_lock paused in this process; the backup
 * thread passes it for the group lock (hit 1) and stops at it for the base
 * lock (hit 2); a child process (its own, disarmed, failpoint table)
 * forgets the newest snapshot; then the backup goes on.
 */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

typedef struct bk {
  ckl_store *st;
  ckl_group_name g;
  int rc;
  ckl_snapshot_name base;
  int has_base;
} bk;

static void *backup_thread(void *p) {
  bk *a = p;
  ckl_backup_opts o = {.time_s = OPS_T0 + 100, .flags = CKL_BACKUP_BASE_LATEST};
  ckl_backup *b;
  a->rc = ckl_backup_begin(a->st, &a->g, &o, &b);
  if (a->rc == 0) {
    const ckl_snapshot_name *bn = ckl_backup_base(b);
    a->has_base = bn != NULL;
    if (bn) a->base = *bn;
    a->rc = ops_write_didx(b, "root.didx", 2, 500, 77, NULL);
    int rc = ckl_backup_finish(b);
    if (a->rc == 0) a->rc = rc;
  }
  return NULL;
}

typedef struct fg {
  const char *path;
  ckl_snapshot_name n;
} fg;

static int forget_child(void *p) {
  fg *f = p;
  ckl_failpoint_disarm_all(); /* the parent's pause is not ours */
  ckl_store *st;
  if (ckl_store_open(f->path, NULL, &st) != 0) return 10;
  int rc = ckl_forget(st, &f->n, NULL);
  ckl_store_close(st);
  return rc == CKL_FORGET_DELETED ? 0 : 11;
}

static void run(ops_store *s, int forget_all) {
  ckl_snapshot_name old = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_snapshot_name newest = ops_make_snapshot(s->st, "host", "a", 10, 2);
  bk a = {.st = s->st, .g = ops_group("host", "a")};
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "pause"), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, backup_thread, &a), 0);
  /* hit 1: the group lock; let it through */
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, CKL_TEST_WAIT_MS), 0);
  ckl_failpoint_release("flock.before_lock");
  /* hit 2: the base lock of `newest`, picked and not yet locked */
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 2, CKL_TEST_WAIT_MS), 0);
  fg f = {.path = s->path, .n = newest};
  assert_int_equal(ckl_test_wait(ckl_test_fork(forget_child, &f)), 0);
  if (forget_all) {
    f.n = old;
    assert_int_equal(ckl_test_wait(ckl_test_fork(forget_child, &f)), 0);
  }
  assert_int_equal(ckl_failpoint_disarm("flock.before_lock"), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a.rc, 0);
  if (forget_all) {
    assert_int_equal(a.has_base, 0); /* nothing left: no base */
  } else {
    assert_int_equal(a.has_base, 1); /* the next newest */
    assert_string_equal(a.base.time, old.time);
  }
  assert_false(ops_snap_exists(s, &newest));
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, NULL), 0);
}

static void test_newest_forgotten_takes_next(void **state) { run(*state, 0); }
static void test_all_forgotten_takes_none(void **state) { run(*state, 1); }

static int setup(void **state) { return ops_group_setup(state, "latestforget"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_newest_forgotten_takes_next, ops_reset),
      cmocka_unit_test_setup(test_all_forgotten_takes_none, ops_reset),
  };
  return cmocka_run_group_tests(tests, setup, ops_group_teardown);
}

/*
 * A forget during a dry-run GC's mark leaves the snapshot in .trash for the
 * GC (gc_active is set: the forget cannot know the GC will not sweep). The
 * dry run never purged it, so the forgotten snapshot stayed on disk, and
 * fsck reported a trash entry, until some later forget or GC (found by the
 * soak, tests/race/soak.c). The dry run must finish the deletion the forget
 * deferred to it, unless the store is frozen.
 */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

typedef struct gc_arg {
  ckl_store *st;
  int rc;
} gc_arg;

static void *gc_thread(void *p) {
  gc_arg *a = p;
  ckl_gc_opts o = {.dry_run = 1};
  ckl_gc_result r;
  a->rc = ckl_gc_run(a->st, &o, &r);
  return NULL;
}

/* Forget `n` while a dry-run GC is paused after its listing; with
 * `freeze`, a shared freeze is held when the GC ends. */
static void forget_during_dry_run(ops_store *s, const ckl_snapshot_name *n, ckl_freeze *f) {
  assert_int_equal(ckl_failpoint_arm("gc.mark.after_list", "pause"), 0);
  gc_arg a = {.st = s->st};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, gc_thread, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.mark.after_list", 1, 30000), 0);
  assert_int_equal(ckl_forget(s->st, n, NULL), CKL_FORGET_TRASHED);
  assert_int_equal(ops_trash_count(s), 1);
  if (f) assert_int_equal(ckl_freeze_acquire(s->st, CKL_FREEZE_SHARED, f, NULL), 0);
  assert_int_equal(ckl_failpoint_disarm("gc.mark.after_list"), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a.rc, 0);
}

static void test_dry_run_purges_what_forget_left(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_snapshot_name keep = ops_make_snapshot(s->st, "host", "a", 10, 2);
  forget_during_dry_run(s, &n, NULL);
  assert_int_equal(ops_trash_count(s), 0);
  assert_false(ops_snap_exists(s, &n));
  assert_true(ops_snap_exists(s, &keep));
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, NULL), 0);
}

/* Frozen: nothing is deleted; the entry waits for the next deleter. */
static void test_dry_run_frozen_leaves_it(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_snapshot_name other = ops_make_snapshot(s->st, "host", "a", 10, 2);
  ckl_freeze f = {0};
  forget_during_dry_run(s, &n, &f);
  assert_int_equal(ops_trash_count(s), 1);
  assert_int_equal(ckl_freeze_release(&f), 0);
  /* the next forget purges it, as before */
  assert_int_equal(ckl_forget(s->st, &other, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ops_trash_count(s), 0);
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, NULL), 0);
}

static int setup(void **state) { return ops_group_setup(state, "gcdrytrash"); }
static int reset(void **state) {
  ops_store_reset(*state);
  return 0;
}
static int teardown(void **state) {
  ops_store_free(*state);
  free(*state);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_dry_run_purges_what_forget_left, reset),
      cmocka_unit_test_setup(test_dry_run_frozen_leaves_it, reset),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* Failpoints: parsing, every action, pause/release from another thread,
 * hit counting, the N* prefix, catalog completeness, crash exit status. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"

static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  return 0;
}

static void test_unarmed_is_zero(void **state) {
  (void)state;
  assert_int_equal(atomic_load(&ckl__failpoints_armed), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), 0);
  assert_int_equal(ckl_failpoint_hits("flock.before_lock"), 0);
}

static void test_error_action(void **state) {
  (void)state;
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "error(EIO)"), 0);
  assert_int_equal(atomic_load(&ckl__failpoints_armed), 1);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), -EIO);
  assert_int_equal(CKL_FAILPOINT("flock.after_lock"), 0);
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "error(CKL_EBUSY)"), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), CKL_EBUSY);
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "error(28)"), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), -ENOSPC);
  assert_int_equal(ckl_failpoint_hits("flock.before_lock"), 1);
  assert_int_equal(ckl_failpoint_disarm("flock.before_lock"), 0);
  assert_int_equal(atomic_load(&ckl__failpoints_armed), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), 0);
}

static void test_count_prefix(void **state) {
  (void)state;
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "2*error(ENOSPC)"), 0);
  assert_int_equal(CKL_FAILPOINT("flock.after_lock"), -ENOSPC);
  assert_int_equal(CKL_FAILPOINT("flock.after_lock"), -ENOSPC);
  assert_int_equal(CKL_FAILPOINT("flock.after_lock"), 0);
  assert_int_equal(ckl_failpoint_hits("flock.after_lock"), 3);
}

static void test_bad_specs(void **state) {
  (void)state;
  assert_int_equal(ckl_failpoint_arm("no.such.point", "crash"), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "explode"), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "sleep(x)"), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "sleep(10"), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "error(ENOTANERRNO)"), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "0*crash"), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm(NULL, "crash"), CKL_EFAILPOINT);
  /* all or nothing: the valid first entry must not be armed */
  assert_int_equal(ckl_failpoint_arm_spec("flock.before_lock=count;bogus=crash"), CKL_EFAILPOINT);
  assert_int_equal(atomic_load(&ckl__failpoints_armed), 0);
  assert_int_equal(ckl_failpoint_arm_spec("flock.before_lock=count;flock.after_lock=sleep(1);"), 0);
  assert_int_equal(atomic_load(&ckl__failpoints_armed), 2);
}

static void test_sleep_action(void **state) {
  (void)state;
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "sleep(30)"), 0);
  int64_t t0 = ckl__now_monotonic_ns();
  assert_int_equal(CKL_FAILPOINT("flock.after_lock"), 0);
  assert_true(ckl__now_monotonic_ns() - t0 >= 30 * 1000000LL);
}

static atomic_int passed;
static void *pause_thread(void *arg) {
  (void)arg;
  int rc = CKL_FAILPOINT("flock.before_unlink");
  atomic_store(&passed, 1);
  return (void *)(intptr_t)rc;
}

static void test_pause_release(void **state) {
  (void)state;
  atomic_store(&passed, 0);
  assert_int_equal(ckl_failpoint_arm("flock.before_unlink", "pause"), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, pause_thread, NULL), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_unlink", 1, CKL_TEST_WAIT_MS), 0);
  /* the thread is paused: it cannot have passed the site */
  assert_int_equal(atomic_load(&passed), 0);
  assert_int_equal(ckl_failpoint_release("flock.before_unlink"), 1);
  void *ret;
  assert_int_equal(pthread_join(t, &ret), 0);
  assert_int_equal((intptr_t)ret, 0);
  assert_int_equal(atomic_load(&passed), 1);
}

static void test_wait_hits_timeout(void **state) {
  (void)state;
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, 10), CKL_EFAILPOINT);
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "count"), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, 20), CKL_ETIMEDOUT);
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, CKL_TRY), CKL_ETIMEDOUT);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, CKL_TRY), 0);
}

static int crash_child(void *arg) {
  (void)arg;
  ckl_failpoint_arm("flock.before_lock", "crash");
  (void)CKL_FAILPOINT("flock.before_lock");
  return 0; /* not reached */
}

static void test_crash_action(void **state) {
  (void)state;
  pid_t pid = ckl_test_fork(crash_child, NULL);
  assert_int_equal(ckl_test_wait(pid), CKL_FAILPOINT_CRASH_STATUS);
}

static int pausefile_child(void *arg) {
  const char *dir = arg;
  char spec[512];
  snprintf(spec, sizeof spec, "pausefile(%s)", dir);
  if (ckl_failpoint_arm("flock.after_lock", spec) != 0) return 10;
  return CKL_FAILPOINT("flock.after_lock") == 0 ? 0 : 11;
}

static void test_pausefile_cross_process(void **state) {
  (void)state;
  char *dir = ckl_test_mkdtemp("fp");
  pid_t pid = ckl_test_fork(pausefile_child, dir);
  char hit[256];
  snprintf(hit, sizeof hit, "flock.after_lock.hit.%d", (int)pid);
  ckl_test_wait_file(dir, hit);
  ckl_test_release_pausefile(dir, "flock.after_lock");
  assert_int_equal(ckl_test_wait(pid), 0);
  ckl_test_rmtree(dir);
  free(dir);
}

static void test_catalog(void **state) {
  (void)state;
  size_t n = ckl_failpoint_count();
  assert_true(n >= 3);
  for (size_t i = 0; i < n; i++) {
    const char *d = NULL;
    const char *name = ckl_failpoint_catalog(i, &d);
    assert_non_null(name);
    assert_non_null(d);
    assert_true(strlen(d) > 5);
    assert_int_equal(ckl_failpoint_arm(name, "count"), 0);
  }
  assert_null(ckl_failpoint_catalog(n, NULL));
  assert_int_equal(atomic_load(&ckl__failpoints_armed), (int)n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_unarmed_is_zero, teardown),
      cmocka_unit_test_teardown(test_error_action, teardown),
      cmocka_unit_test_teardown(test_count_prefix, teardown),
      cmocka_unit_test_teardown(test_bad_specs, teardown),
      cmocka_unit_test_teardown(test_sleep_action, teardown),
      cmocka_unit_test_teardown(test_pause_release, teardown),
      cmocka_unit_test_teardown(test_wait_hits_timeout, teardown),
      cmocka_unit_test_teardown(test_crash_action, teardown),
      cmocka_unit_test_teardown(test_pausefile_cross_process, teardown),
      cmocka_unit_test_teardown(test_catalog, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

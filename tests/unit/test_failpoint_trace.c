/* The failpoint trace hook (ckl_failpoint_set_trace): which hits reach it,
 * on which thread, with which name pointer, and that a thread paused at a
 * point has already reported it (what the soak's "currently at step"
 * table relies on). */
// ctest-labels: threads
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "common/internal.h"

#define MAXREC 64

typedef struct trace_log {
  pthread_mutex_t mu;
  size_t n;
  const char *name[MAXREC];
  pthread_t thread[MAXREC];
} trace_log;

static trace_log tl = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void record(const char *name, void *arg) {
  assert_ptr_equal(arg, &tl);
  pthread_mutex_lock(&tl.mu);
  if (tl.n < MAXREC) {
    tl.name[tl.n] = name;
    tl.thread[tl.n] = pthread_self();
    tl.n++;
  }
  pthread_mutex_unlock(&tl.mu);
}

static size_t recorded(void) {
  pthread_mutex_lock(&tl.mu);
  size_t n = tl.n;
  pthread_mutex_unlock(&tl.mu);
  return n;
}

static const char *catalog_name(const char *name) {
  for (size_t i = 0; i < ckl_failpoint_count(); i++) {
    const char *c = ckl_failpoint_catalog(i, NULL);
    if (strcmp(c, name) == 0) return c;
  }
  fail_msg("%s is not catalogued", name);
  return NULL;
}

static int setup(void **state) {
  (void)state;
  pthread_mutex_lock(&tl.mu);
  tl.n = 0;
  pthread_mutex_unlock(&tl.mu);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ckl_failpoint_set_trace(NULL, NULL);
  ckl_failpoint_disarm_all();
  return 0;
}

/* Only armed points are traced, with the catalog's own pointer, and an
 * error action's code still comes back. Removing the hook stops it. */
static void test_armed_hits_only(void **state) {
  (void)state;
  ckl_failpoint_set_trace(record, &tl);
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "count"), 0);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "error(EIO)"), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_unlink"), 0); /* not armed */
  assert_int_equal(CKL_FAILPOINT("flock.after_lock"), -EIO);
  assert_int_equal(recorded(), 2);
  assert_ptr_equal(tl.name[0], catalog_name("flock.before_lock"));
  assert_ptr_equal(tl.name[1], catalog_name("flock.after_lock"));
  assert_true(pthread_equal(tl.thread[0], pthread_self()));
  ckl_failpoint_set_trace(NULL, &tl);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), 0);
  assert_int_equal(recorded(), 2);
  assert_int_equal(ckl_failpoint_hits("flock.before_lock"), 2);
}

/* An N* action that has run out keeps counting and keeps tracing. */
static void test_exhausted_action_still_traced(void **state) {
  (void)state;
  ckl_failpoint_set_trace(record, &tl);
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "1*error(ENOSPC)"), 0);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), -ENOSPC);
  assert_int_equal(CKL_FAILPOINT("flock.before_lock"), 0);
  assert_int_equal(recorded(), 2);
}

static void *paused_thread(void *arg) {
  (void)arg;
  return (void *)(intptr_t)CKL_FAILPOINT("flock.after_lock");
}

/* A thread paused at a point has reported it before it blocks, from its
 * own thread; a release wakes it as without the hook. */
static void test_paused_thread_reported_first(void **state) {
  (void)state;
  ckl_failpoint_set_trace(record, &tl);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "pause"), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, paused_thread, NULL), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  /* the hit is counted before the trace call: wait for the record too */
  for (int i = 0; i < CKL_TEST_WAIT_MS && recorded() == 0; i++) ckl__sleep_ms(1);
  assert_int_equal(recorded(), 1);
  assert_ptr_equal(tl.name[0], catalog_name("flock.after_lock"));
  assert_true(pthread_equal(tl.thread[0], t));
  /* reported, and not past the pause: nothing has released it */
  void *early;
  assert_int_equal(pthread_tryjoin_np(t, &early), EBUSY);
  /* release it (the release may come before it waits: it then never does) */
  assert_int_equal(ckl_failpoint_disarm("flock.after_lock"), 0);
  void *ret;
  assert_int_equal(pthread_join(t, &ret), 0);
  assert_int_equal((int)(intptr_t)ret, 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_armed_hits_only),
      T(test_exhausted_action_still_traced),
      T(test_paused_thread_reported_first),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

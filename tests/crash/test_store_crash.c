/* Crash the store create at each of its steps (a child armed with
 * store.create.<step>=crash dies with _exit, like kill -9): open must
 * answer exactly CKL_EHALFCREATED, never a half-made store that looks
 * complete; a new create finishes it, after which open succeeds and the
 * layout is whole. */
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const points[] = {"store.create.after_marker", "store.create.after_chunks",
                                     "store.create.after_dirs", "store.create.after_config"};

typedef struct crash_arg {
  const char *path;
  const char *point;
} crash_arg;

static int crash_child(void *p) {
  crash_arg *a = p;
  if (ckl_failpoint_arm(a->point, "crash") != 0) return 1;
  int rc = ckl_store_create(a->path, NULL);
  return rc == 0 ? 2 : 3; /* reaching here means the crash did not happen */
}

static void assert_whole(const char *path) {
  ckl_store *st;
  assert_int_equal(ckl_store_open(path, NULL, &st), 0);
  ckl_store_close(st);
  static const char *const entries[] = {".chunks", ".lock", ".locks", ".state", ".trash",
                                        "chunklock.json"};
  for (size_t i = 0; i < 6; i++) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", path, entries[i]);
    assert_int_equal(access(p, F_OK), 0);
  }
  char chunks[PATH_MAX];
  snprintf(chunks, sizeof chunks, "%s/.chunks", path);
  assert_int_equal(ckl_test_count_entries(chunks, NULL), 65536);
  assert_int_equal(ckl_test_count_entries(path, NULL), 6);
}

static void test_crash_at_each_step(void **state) {
  (void)state;
  char *dir = ckl_test_mkdtemp("store-crash");
  for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/s%zu", dir, i);
    crash_arg a = {.path = path, .point = points[i]};
    assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)),
                     CKL_FAILPOINT_CRASH_STATUS);
    ckl_store *st = (ckl_store *)0x1;
    int rc = ckl_store_open(path, NULL, &st);
    if (rc != CKL_EHALFCREATED) fail_msg("%s: open gave %s", points[i], ckl_err_name(rc));
    assert_null(st);
    /* A second crash while finishing is still only half-created. */
    assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)),
                     CKL_FAILPOINT_CRASH_STATUS);
    assert_int_equal(ckl_store_open(path, NULL, &st), CKL_EHALFCREATED);
    assert_int_equal(ckl_store_create(path, NULL), 0);
    assert_whole(path);
  }
  ckl_test_rmtree(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_crash_at_each_step)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

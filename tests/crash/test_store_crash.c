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
    char *p = ckl_test_path(path, entries[i]);
    assert_int_equal(access(p, F_OK), 0);
    free(p);
  }
  char *chunks = ckl_test_path(path, ".chunks");
  assert_int_equal(ckl_test_count_entries(chunks, NULL), 65536);
  free(chunks);
  assert_int_equal(ckl_test_count_entries(path, NULL), 6);
}

/* One path, crashed at each step in turn: the first crash leaves only the
 * marker, each later one resumes the interrupted create and dies one step
 * further (so a crash while finishing is covered too). Making the 65,536
 * chunk directories once keeps this fast on a slow disk. */
static void test_crash_at_each_step(void **state) {
  (void)state;
  char *dir = ckl_test_mkdtemp("store-crash");
  char *path = ckl_test_path(dir, "store");
  /* An existing empty directory is a valid place for a store. */
  assert_int_equal(mkdir(path, 0755), 0);
  for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
    crash_arg a = {.path = path, .point = points[i]};
    assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)),
                     CKL_FAILPOINT_CRASH_STATUS);
    ckl_store *st = (ckl_store *)0x1;
    int rc = ckl_store_open(path, NULL, &st);
    if (rc != CKL_EHALFCREATED) fail_msg("%s: open gave %s", points[i], ckl_err_name(rc));
    assert_null(st);
    char *cfg = ckl_test_path(path, "chunklock.json");
    /* The configuration is written only once every directory exists. */
    assert_int_equal(access(cfg, F_OK) == 0, i == 3);
    free(cfg);
  }
  assert_int_equal(ckl_store_create(path, NULL), 0);
  assert_whole(path);
  ckl_test_rmtree(dir);
  free(path);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_crash_at_each_step)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

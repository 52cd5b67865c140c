/*
 * Crash torture for GC: for EVERY "gc." failpoint in the catalog, a child
 * runs a GC that crashes (_exit, like kill -9) at that point; then a new GC
 * runs as a user would. Afterwards: the GC succeeded, gc_active is clear,
 * every chunk of every live snapshot exists and reads back (digest
 * checked), the garbage is gone, no .gc- leftover and no .trash entry
 * remains. A new failpoint in gc/ is covered automatically.
 */
// ctest-labels: threads
// ctest-timeout: 600
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/store_internal.h"
#include "gc_fixture.h"

#define S0 "host/a/2026-01-01T00:00:00Z"
#define S1 "vm/100/2026-01-01T00:00:00Z"

static const uint32_t live0[] = {1, 2, 3, 4};
static const uint32_t live1[] = {4, 5, 6};
static const uint32_t garbage[] = {100, 101, 102, 103, 104, 105};

typedef struct crash_arg {
  gcfx *f;
  const char *point;
} crash_arg;

static int crash_child(void *arg) {
  crash_arg *a = arg;
  ckl_store *st;
  if (ckl_store_open(a->f->dir, NULL, &st) != 0) return 10;
  if (ckl_failpoint_arm(a->point, "crash") != 0) return 11;
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0};
  int rc = ckl_gc_run(st, &o, NULL);
  ckl_store_close(st);
  /* Not every point is reached in every run (e.g. a step after an early
   * error); the parent checks that the crash happened. */
  return rc == 0 ? 0 : 12;
}

static void check_store(gcfx *f) {
  for (size_t i = 0; i < sizeof live0 / sizeof *live0; i++) assert_true(gcfx_has(f, live0[i]));
  for (size_t i = 0; i < sizeof live1 / sizeof *live1; i++) assert_true(gcfx_has(f, live1[i]));
  for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++)
    assert_false(gcfx_has(f, garbage[i]));
  uint32_t all[] = {1, 2, 3, 4, 5, 6};
  for (size_t i = 0; i < 6; i++) {
    ckl_digest d;
    gcfx_chunk(all[i], &d);
    void *data;
    size_t len;
    assert_int_equal(ckl_chunk_read(f->st->chunks, &d, &data, &len), 0);
    free(data);
  }
  assert_int_equal(gcfx_count_gc_leftovers(f), 0);
  assert_int_equal(ckl_test_count_entries(f->st->trash_path, NULL), 0);
  assert_int_equal(gcfx_gc_active(f), 0);
}

static void run_point(const char *point) {
  gcfx f = {0};
  gcfx_open(&f);
  gcfx_snapshot(&f, S0, live0, 4);
  gcfx_snapshot(&f, S1, live1, 3);
  for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) gcfx_insert(&f, garbage[i]);
  /* a crashed forget's leftover, so the purge has work */
  char trash[4200];
  snprintf(trash, sizeof trash, "%s/.trash/leftover", f.dir);
  assert_int_equal(mkdir(trash, 0755), 0);
  gcfx_age_chunks(&f, 3600);
  crash_arg a = {&f, point};
  int status = ckl_test_wait(ckl_test_fork(crash_child, &a));
  if (status != CKL_FAILPOINT_CRASH_STATUS) {
    fprintf(stderr, "failpoint %s: child exited %d, expected a crash\n", point, status);
    fail();
  }
  /* The user runs GC again. */
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0};
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f.st, &o, &r), 0);
  check_store(&f);
  gcfx_close(&f);
}

static void test_every_gc_point(void **state) {
  (void)state;
  int n = 0;
  for (size_t i = 0; i < ckl_failpoint_count(); i++) {
    const char *name = ckl_failpoint_catalog(i, NULL);
    if (strncmp(name, "gc.", 3) != 0) continue;
    fprintf(stderr, "crash at %s\n", name);
    run_point(name);
    n++;
  }
  assert_true(n >= 13);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_gc_point)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Atomic replace under threads: concurrent replacers with readers that
 * must always see one complete version, and both orders of the race
 * between a begin (temp created, not yet locked) and a cleanup, forced
 * with pause failpoints. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/internal.h"

static char *tmpdir;

static int setup(void **state) {
  (void)state;
  tmpdir = ckl_test_mkdtemp("atomic-thr");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  assert_int_equal(ckl_test_rmtree(tmpdir), 0);
  free(tmpdir);
  tmpdir = NULL;
  return 0;
}

static void assert_file_is(const char *path, const char *want) {
  size_t len = 0;
  char *got = ckl_test_read_file(path, &len);
  assert_non_null(got);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(got, want, len);
  free(got);
}

/* ---- concurrent replacers ------------------------------------------------------ */

#define NWRITERS 4
#define ROUNDS 200
#define NREADERS 2

/* "<len> <seed>\n" then len bytes derived from seed: a mix of versions or
 * a truncated one cannot pass check_version. */
static size_t make_version(char *buf, size_t cap, uint64_t seed) {
  size_t len = 100 + (size_t)(seed % 3000);
  int h = snprintf(buf, cap, "%zu %llu\n", len, (unsigned long long)seed);
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[(size_t)h + i] = (char)('a' + x % 26);
  }
  return (size_t)h + len;
}

static int check_version(const char *data, size_t n) {
  size_t len;
  unsigned long long seed;
  if (sscanf(data, "%zu %llu\n", &len, &seed) != 2) return -1;
  char want[4096];
  size_t wn = make_version(want, sizeof want, seed);
  return wn == n && memcmp(want, data, n) == 0 ? 0 : -1;
}

static const char *target;
static atomic_int writers_left, readers_ready, readers_read;
static atomic_int write_errors, missing_reads, torn_reads;
static atomic_long good_reads;

/* Readers and writers overlap by construction, not by luck: no writer
 * makes its last replace before every reader has finished a read, and
 * readers read until the last writer is done. Without it a reader
 * descheduled for the whole write phase (short, on a loaded machine)
 * read nothing and good_reads > 0 failed. */
static void wait_for_readers(void) {
  while (atomic_load(&readers_read) < NREADERS) sched_yield();
}

static void *writer_thread(void *arg) {
  uint64_t id = (uint64_t)(intptr_t)arg;
  char buf[4096];
  for (int i = 0; i < ROUNDS; i++) {
    if (i == ROUNDS - 1) wait_for_readers();
    size_t n = make_version(buf, sizeof buf, id * 1000 + (uint64_t)i);
    if (ckl_atomic_replace(target, buf, n, 0644, i % 2 ? CKL_ATOMIC_NOSYNC : 0) != 0)
      atomic_fetch_add(&write_errors, 1);
  }
  atomic_fetch_sub(&writers_left, 1);
  return NULL;
}

static void *reader_thread(void *arg) {
  (void)arg;
  atomic_fetch_add(&readers_ready, 1);
  bool read_once = false;
  while (atomic_load(&writers_left) > 0) {
    size_t n;
    char *data = ckl_test_read_file(target, &n);
    if (!data) {
      atomic_fetch_add(&missing_reads, 1);
    } else {
      if (check_version(data, n) != 0) atomic_fetch_add(&torn_reads, 1);
      else atomic_fetch_add(&good_reads, 1);
      free(data);
    }
    if (!read_once) {
      read_once = true;
      atomic_fetch_add(&readers_read, 1);
    }
  }
  return NULL;
}

static void test_concurrent_threads(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  target = f;
  char buf[4096];
  size_t n = make_version(buf, sizeof buf, 1);
  ckl_test_write_file(f, buf, n);
  atomic_store(&writers_left, NWRITERS);
  pthread_t r[NREADERS], w[NWRITERS];
  for (int i = 0; i < NREADERS; i++) assert_int_equal(pthread_create(&r[i], NULL, reader_thread, NULL), 0);
  while (atomic_load(&readers_ready) < NREADERS) sched_yield();
  for (int i = 0; i < NWRITERS; i++)
    assert_int_equal(pthread_create(&w[i], NULL, writer_thread, (void *)(intptr_t)(i + 2)), 0);
  for (int i = 0; i < NWRITERS; i++) assert_int_equal(pthread_join(w[i], NULL), 0);
  for (int i = 0; i < NREADERS; i++) assert_int_equal(pthread_join(r[i], NULL), 0);
  assert_int_equal(atomic_load(&write_errors), 0);
  assert_int_equal(atomic_load(&missing_reads), 0);
  assert_int_equal(atomic_load(&torn_reads), 0);
  assert_true(atomic_load(&good_reads) > 0);
  char *data = ckl_test_read_file(f, &n);
  assert_non_null(data);
  assert_int_equal(check_version(data, n), 0);
  free(data);
  assert_int_equal(ckl_test_count_entries(tmpdir, NULL), 1);
  free(f);
}

/* ---- begin vs cleanup ------------------------------------------------------------ */

typedef struct job {
  const char *path;
  int dir;
  int rc;
} job;

static void *replace_thread(void *arg) {
  job *j = arg;
  if (j->dir) {
    ckl_atomic_dir ad = {0};
    j->rc = ckl_atomic_dir_begin(&ad, j->path, 0755, 0);
    if (j->rc == 0) {
      char *p = ckl_test_path(ckl_atomic_dir_path(&ad), "new");
      ckl_test_write_file(p, "new", 3);
      free(p);
      j->rc = ckl_atomic_dir_commit(&ad);
    }
    ckl_atomic_dir_rollback(&ad);
  } else {
    j->rc = ckl_atomic_replace(j->path, "new", 3, 0644, 0);
  }
  return NULL;
}

static void *cleanup_thread(void *arg) {
  job *j = arg;
  j->rc = ckl_atomic_cleanup(j->path);
  return NULL;
}

static void assert_new(const char *path, int dir) {
  if (dir) {
    char *p = ckl_test_path(path, "new");
    assert_file_is(p, "new");
    assert_int_equal(ckl_test_count_entries(path, NULL), 1);
    free(p);
  } else {
    assert_file_is(path, "new");
  }
}

/* The cleanup runs entirely inside the writer's create-to-lock window: it
 * removes the unlocked temp; the writer then finds its file unlinked (or
 * its directory gone) and starts over under a fresh name. */
static void race_cleanup_first(int dir) {
  const char *fp = dir ? "atomic.dir_before_lock" : "atomic.before_lock";
  char *t = ckl_test_path(tmpdir, "t");
  assert_int_equal(ckl_failpoint_arm(fp, "1*pause"), 0);
  job w = {.path = t, .dir = dir};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, replace_thread, &w), 0);
  assert_int_equal(ckl_failpoint_wait_hits(fp, 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_test_count_entries(tmpdir, "."), 1);
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 1);
  assert_int_equal(ckl_test_count_entries(tmpdir, "."), 0);
  assert_int_equal(ckl_failpoint_release(fp), 1);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(w.rc, 0);
  assert_int_equal(ckl_failpoint_hits(fp), 2); /* the retry under a new name */
  assert_new(t, dir);
  assert_int_equal(ckl_test_count_entries(tmpdir, NULL), 1);
  free(t);
}

/* The cleanup takes the lock first and is paused holding it; the writer's
 * own lock is refused, so it leaves that temp to the cleanup and starts
 * over. The cleanup then removes the temp it holds, and only that. */
static void race_cleanup_holds_lock(int dir) {
  const char *fp = dir ? "atomic.dir_before_lock" : "atomic.before_lock";
  char *t = ckl_test_path(tmpdir, "t");
  assert_int_equal(ckl_failpoint_arm(fp, "1*pause"), 0);
  assert_int_equal(ckl_failpoint_arm("atomic.cleanup_locked", "pause"), 0);
  job w = {.path = t, .dir = dir}, c = {.path = tmpdir};
  pthread_t wt, ct;
  assert_int_equal(pthread_create(&wt, NULL, replace_thread, &w), 0);
  assert_int_equal(ckl_failpoint_wait_hits(fp, 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(pthread_create(&ct, NULL, cleanup_thread, &c), 0);
  assert_int_equal(ckl_failpoint_wait_hits("atomic.cleanup_locked", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_failpoint_release(fp), 1);
  assert_int_equal(pthread_join(wt, NULL), 0);
  assert_int_equal(w.rc, 0);
  assert_int_equal(ckl_failpoint_hits(fp), 2);
  assert_new(t, dir);
  /* the refused temp is still there, held by the paused cleanup */
  assert_int_equal(ckl_test_count_entries(tmpdir, "."), 1);
  assert_int_equal(ckl_failpoint_release("atomic.cleanup_locked"), 1);
  assert_int_equal(pthread_join(ct, NULL), 0);
  assert_int_equal(c.rc, 1);
  assert_int_equal(ckl_failpoint_hits("atomic.cleanup_locked"), 1);
  assert_new(t, dir);
  assert_int_equal(ckl_test_count_entries(tmpdir, NULL), 1);
  free(t);
}

static void test_race_file_cleanup_first(void **state) {
  (void)state;
  race_cleanup_first(0);
}
static void test_race_dir_cleanup_first(void **state) {
  (void)state;
  race_cleanup_first(1);
}
static void test_race_file_cleanup_holds(void **state) {
  (void)state;
  race_cleanup_holds_lock(0);
}
static void test_race_dir_cleanup_holds(void **state) {
  (void)state;
  race_cleanup_holds_lock(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_concurrent_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_race_file_cleanup_first, setup, teardown),
      cmocka_unit_test_setup_teardown(test_race_dir_cleanup_first, setup, teardown),
      cmocka_unit_test_setup_teardown(test_race_file_cleanup_holds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_race_dir_cleanup_holds, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

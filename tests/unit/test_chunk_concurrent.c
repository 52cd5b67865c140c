/* Chunk store under concurrency: inserts of one digest from 8 threads and
 * from 4 processes forced (by failpoints, not timing) to all be writing at
 * once, and overlapping sets of different digests from threads and
 * processes. Afterwards every chunk reads back exactly and no temp file
 * is left anywhere. */
// ctest-labels: threads
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/chunk_internal.h"

#define N_THREADS 8
#define N_PROCS 4

#define SET 600

static char *root, *chunks;
static ckl_chunkstore *cs;

static void make_chunk(unsigned family, unsigned i, uint8_t *buf, size_t *len, ckl_digest *d);

static void make_prefix(const char *p4) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", chunks, p4);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) abort();
}

static int group_setup(void **state) {
  (void)state;
  root = ckl_test_mkdtemp("chunk-conc");
  chunks = ckl_test_path(root, ".chunks");
  if (mkdir(chunks, 0755) != 0) return -1;
  /* Only the prefix directories these tests use (plus the ones open()
   * probes): 65,536 mkdirs and their removal would dominate the runtime,
   * and the full layout is test_chunk's business. */
  static const char *const probes[] = {"0000", "7fff", "8000", "ffff"};
  for (size_t i = 0; i < 4; i++) make_prefix(probes[i]);
  uint8_t buf[4096];
  size_t len;
  ckl_digest d;
  for (unsigned family = 1; family <= 4; family++)
    for (unsigned i = 0; i < SET; i++) {
      make_chunk(family, i, buf, &len, &d);
      char hex[CKL_DIGEST_HEX_LEN + 1];
      ckl_digest_to_hex(&d, hex);
      hex[4] = '\0';
      make_prefix(hex);
    }
  ckl_chunkstore_opts o = {.sync = CKL_SYNC_NONE, .compress_level = 1};
  return ckl_chunkstore_open(chunks, &o, &cs);
}
static int group_teardown(void **state) {
  (void)state;
  ckl_chunkstore_close(cs);
  ckl_test_rmtree(root);
  free(root);
  free(chunks);
  return 0;
}
static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  return 0;
}

/* Chunk i of a family: deterministic content, some compressible, some not. */
#define CHUNK_LEN(i) (512 + ((i) * 37) % 3000)
static void make_chunk(unsigned family, unsigned i, uint8_t *buf, size_t *len, ckl_digest *d) {
  *len = CHUNK_LEN(i);
  uint64_t x = (uint64_t)family << 32 | i;
  for (size_t k = 0; k < *len; k++) {
    if (i % 2) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      buf[k] = (uint8_t)x;
    } else {
      buf[k] = (uint8_t)("family chunk "[k % 13] + (k == 0 ? i : 0));
    }
  }
  buf[0] = (uint8_t)i;
  buf[1] = (uint8_t)(i >> 8);
  buf[2] = (uint8_t)family;
  ckl_digest_compute(buf, *len, d);
}

static void check_family(unsigned family, unsigned n) {
  uint8_t buf[4096];
  for (unsigned i = 0; i < n; i++) {
    size_t len;
    ckl_digest d;
    make_chunk(family, i, buf, &len, &d);
    void *back;
    size_t blen;
    assert_int_equal(ckl_chunk_read(cs, &d, &back, &blen), 0);
    assert_int_equal(blen, len);
    assert_memory_equal(back, buf, len);
    free(back);
  }
}

/* No ".tmp-" file in any prefix directory of the store, and nothing but
 * prefix directories at the top. */
static void assert_no_temps(void) {
  DIR *top = opendir(chunks);
  assert_non_null(top);
  struct dirent *e;
  int dirs = 0;
  while ((e = readdir(top))) {
    if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
    assert_int_equal(strlen(e->d_name), 4);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", chunks, e->d_name);
    int n = ckl_test_count_entries(dir, CKL__CHUNK_TMP_PREFIX);
    if (n != 0) fail_msg("%d temp files left in %s", n, dir);
    dirs++;
  }
  closedir(top);
  assert_true(dirs > 100);
}

/* ---- one digest, 8 threads, all inside the write path at once ------------------ */

typedef struct same_arg {
  const uint8_t *data;
  size_t len;
  const ckl_digest *d;
  int rc;
  uint64_t stored;
} same_arg;

static void *same_thread(void *p) {
  same_arg *a = p;
  a->rc = ckl_chunk_insert(cs, a->d, a->data, a->len, &a->stored);
  return NULL;
}

static void test_same_digest_threads(void **state) {
  (void)state;
  uint8_t buf[4096];
  size_t len;
  ckl_digest d;
  make_chunk(1, 0, buf, &len, &d);
  /* Every thread must find the chunk absent and reach the rename before
   * any of them renames: the pause makes that certain. */
  assert_int_equal(ckl_failpoint_arm("chunk.insert.before_rename", "pause"), 0);
  pthread_t th[N_THREADS];
  same_arg args[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) {
    args[i] = (same_arg){buf, len, &d, -1, 0};
    assert_int_equal(pthread_create(&th[i], NULL, same_thread, &args[i]), 0);
  }
  assert_int_equal(
      ckl_failpoint_wait_hits("chunk.insert.before_rename", N_THREADS, CKL_TEST_WAIT_MS), 0);
  char rel[80], prefix[4200];
  ckl_chunk_relpath(&d, rel, sizeof rel);
  rel[4] = '\0';
  snprintf(prefix, sizeof prefix, "%s/%s", chunks, rel);
  /* eight private temp files side by side, nothing at the final name yet */
  assert_int_equal(ckl_test_count_entries(prefix, CKL__CHUNK_TMP_PREFIX), N_THREADS);
  struct stat st;
  assert_int_equal(ckl_chunk_stat(cs, &d, &st), -ENOENT);
  assert_int_equal(ckl_failpoint_disarm("chunk.insert.before_rename"), 0);
  for (int i = 0; i < N_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].rc, CKL_INSERT_NEW);
    assert_true(args[i].stored > 0);
  }
  assert_int_equal(ckl_test_count_entries(prefix, CKL__CHUNK_TMP_PREFIX), 0);
  check_family(1, 1);
  assert_int_equal(ckl_chunk_insert(cs, &d, buf, len, NULL), CKL_INSERT_DEDUP);
}

/* ---- one digest, 4 processes, all inside the write path at once --------------- */

static char *pause_dir;

static int same_proc(void *p) {
  (void)p;
  char spec[4300];
  snprintf(spec, sizeof spec, "pausefile(%s)", pause_dir);
  if (ckl_failpoint_arm("chunk.insert.before_rename", spec) != 0) return 10;
  uint8_t buf[4096];
  size_t len;
  ckl_digest d;
  make_chunk(2, 0, buf, &len, &d);
  int rc = ckl_chunk_insert(cs, &d, buf, len, NULL);
  return rc == CKL_INSERT_NEW ? 0 : 20;
}

static void test_same_digest_processes(void **state) {
  (void)state;
  pause_dir = ckl_test_path(root, "pause");
  assert_int_equal(mkdir(pause_dir, 0700), 0);
  pid_t pids[N_PROCS];
  for (int i = 0; i < N_PROCS; i++) pids[i] = ckl_test_fork(same_proc, NULL);
  /* Wait (not a race-maker: a readiness check) until all four are paused
   * with their temp files written. */
  int64_t deadline = ckl__now_monotonic_ns() + CKL_TEST_WAIT_MS * 1000000LL;
  while (ckl_test_count_entries(pause_dir, "chunk.insert.before_rename.hit.") < N_PROCS) {
    assert_true(ckl__now_monotonic_ns() < deadline);
    ckl__sleep_ms(2);
  }
  uint8_t buf[4096];
  size_t len;
  ckl_digest d;
  make_chunk(2, 0, buf, &len, &d);
  struct stat st;
  assert_int_equal(ckl_chunk_stat(cs, &d, &st), -ENOENT);
  char *go = ckl_test_path(pause_dir, "chunk.insert.before_rename.go");
  ckl_test_write_file(go, "", 0);
  for (int i = 0; i < N_PROCS; i++) assert_int_equal(ckl_test_wait(pids[i]), 0);
  check_family(2, 1);
  char rel[80], prefix[4200];
  ckl_chunk_relpath(&d, rel, sizeof rel);
  rel[4] = '\0';
  snprintf(prefix, sizeof prefix, "%s/%s", chunks, rel);
  assert_int_equal(ckl_test_count_entries(prefix, CKL__CHUNK_TMP_PREFIX), 0);
  free(go);
  free(pause_dir);
}

/* ---- overlapping sets of different digests ------------------------------------- */

typedef struct many_arg {
  unsigned family;
  unsigned start;    /* each worker walks the set from its own offset */
  unsigned stride;
  int news, dedups, errors;
} many_arg;

static void *many_thread(void *p) {
  many_arg *a = p;
  uint8_t buf[4096];
  for (unsigned k = 0; k < SET; k++) {
    unsigned i = (a->start + k * a->stride) % SET;
    size_t len;
    ckl_digest d;
    make_chunk(a->family, i, buf, &len, &d);
    int rc = ckl_chunk_insert(cs, &d, buf, len, NULL);
    if (rc == CKL_INSERT_NEW) a->news++;
    else if (rc == CKL_INSERT_DEDUP) a->dedups++;
    else a->errors++;
  }
  return NULL;
}

static void test_many_digests_threads(void **state) {
  (void)state;
  pthread_t th[N_THREADS];
  many_arg args[N_THREADS];
  for (unsigned i = 0; i < N_THREADS; i++) {
    args[i] = (many_arg){3, i * 75, 7, 0, 0, 0};
    assert_int_equal(pthread_create(&th[i], NULL, many_thread, &args[i]), 0);
  }
  int news = 0, total = 0;
  for (int i = 0; i < N_THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].errors, 0);
    news += args[i].news;
    total += args[i].news + args[i].dedups;
  }
  assert_int_equal(total, N_THREADS * SET);
  assert_true(news >= SET); /* each digest written at least once */
  check_family(3, SET);
  assert_no_temps();
}

static int many_proc(void *p) {
  unsigned idx = *(unsigned *)p;
  /* two threads per process: cross-process and cross-thread at once */
  pthread_t th[2];
  many_arg args[2];
  for (unsigned t = 0; t < 2; t++) {
    args[t] = (many_arg){4, idx * 150 + t * 300, 11, 0, 0, 0};
    if (pthread_create(&th[t], NULL, many_thread, &args[t]) != 0) return 30;
  }
  int bad = 0;
  for (unsigned t = 0; t < 2; t++) {
    pthread_join(th[t], NULL);
    if (args[t].errors != 0 || args[t].news + args[t].dedups != SET) bad = 1;
  }
  return bad;
}

static void test_many_digests_processes(void **state) {
  (void)state;
  pid_t pids[N_PROCS];
  unsigned idx[N_PROCS];
  for (unsigned i = 0; i < N_PROCS; i++) {
    idx[i] = i;
    pids[i] = ckl_test_fork(many_proc, &idx[i]);
  }
  for (int i = 0; i < N_PROCS; i++) assert_int_equal(ckl_test_wait(pids[i]), 0);
  check_family(4, SET);
  assert_no_temps();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_same_digest_threads, teardown),
      cmocka_unit_test_teardown(test_same_digest_processes, teardown),
      cmocka_unit_test_teardown(test_many_digests_threads, teardown),
      cmocka_unit_test_teardown(test_many_digests_processes, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

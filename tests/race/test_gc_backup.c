/*
 * A backup in another process runs during the WHOLE GC (DESIGN.md section
 * 5, "backups in any process run during GC"): the backup begins, reuses
 * chunks of its base by touching them and uploads new ones, then pauses
 * (pausefile at backup.archive.after_close) while the parent runs a complete
 * GC in default mode, which must not be blocked; then the backup writes a
 * second archive and finishes. Afterwards its snapshot reads back byte-exact
 * and fsck is clean. In strict mode the same GC is refused with CKL_EBUSY.
 */
// ctest-labels: threads
// ctest-timeout: 300
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/store_internal.h"
#include "gc_fixture.h"

#define CHUNK 4096

static void fill(uint8_t *buf, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    buf[i] = (uint8_t)x;
  }
}

/* One archive of `n` chunks, chunk i made from seed base+i. */
static void write_archive(ckl_backup *b, const char *name, uint32_t base, int n) {
  ckl_backup_archive *a;
  assert_int_equal(ckl_backup_archive_open(b, name, 0, &a), 0);
  uint8_t buf[CHUNK];
  for (int i = 0; i < n; i++) {
    fill(buf, sizeof buf, base + (uint32_t)i);
    int rc = ckl_backup_archive_write_chunk(a, buf, sizeof buf, NULL);
    assert_true(rc == CKL_INSERT_NEW || rc == CKL_INSERT_DEDUP);
  }
  assert_int_equal(ckl_backup_archive_close(a), 0);
}

static void expect_archive(ckl_store *st, const ckl_snapshot_name *n, const char *name,
                           uint32_t base, int count) {
  ckl_reader *r;
  assert_int_equal(ckl_reader_open(st, n, NULL, &r), 0);
  ckl_reader_archive *a;
  assert_int_equal(ckl_reader_archive_open(r, name, &a), 0);
  assert_int_equal(ckl_reader_archive_size(a), (uint64_t)count * CHUNK);
  uint8_t want[CHUNK], got[CHUNK];
  for (int i = 0; i < count; i++) {
    fill(want, sizeof want, base + (uint32_t)i);
    assert_int_equal(ckl_reader_archive_read(a, (uint64_t)i * CHUNK, got, sizeof got), CHUNK);
    assert_memory_equal(want, got, CHUNK);
  }
  ckl_reader_archive_close(a);
  assert_int_equal(ckl_reader_close(r), 0);
}

typedef struct child_arg {
  gcfx *f;
  ckl_snapshot_name name; /* out, through shared memory */
} child_arg;

/* The backup: archive 1 reuses the base's chunks (seeds 0..7: dedup
 * touches) plus new ones, pauses, then archive 2 is all new. */
static int child_backup(void *arg) {
  child_arg *c = arg;
  ckl_store *st;
  if (ckl_store_open(c->f->dir, NULL, &st) != 0) return 10;
  char spec[4200];
  snprintf(spec, sizeof spec, "1*pausefile(%s)", c->f->dir);
  if (ckl_failpoint_arm("backup.archive.after_close", spec) != 0) return 11;
  ckl_group_name g;
  ckl_group_name_parse("host/w", &g);
  ckl_backup_opts o = {.flags = CKL_BACKUP_BASE_LATEST, .time_s = 1800000000};
  ckl_backup *b;
  if (ckl_backup_begin(st, &g, &o, &b) != 0) return 12;
  c->name = *ckl_backup_snapshot(b);
  write_archive(b, "one.didx", 0, 16);   /* 0..7 reused, 8..15 new */
  write_archive(b, "two.didx", 500, 8);  /* written after the GC */
  int rc = ckl_backup_finish(b);
  ckl_store_close(st);
  return rc == 0 ? 0 : 13;
}

static void wait_hit(const char *dir, pid_t pid) {
  char hit[256];
  snprintf(hit, sizeof hit, "backup.archive.after_close.hit.%d", (int)pid);
  ckl_test_wait_file(dir, hit);
}

static void test_backup_runs_through_gc(void **state) {
  (void)state;
  gcfx f = {0};
  gcfx_open(&f);
  /* base snapshot: seeds 0..7; garbage: 300..309 */
  ckl_group_name g;
  assert_int_equal(ckl_group_name_parse("host/w", &g), 0);
  ckl_backup_opts o = {.time_s = 1700000000};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(f.st, &g, &o, &b), 0);
  write_archive(b, "one.didx", 0, 8);
  assert_int_equal(ckl_backup_finish(b), 0);
  uint8_t buf[CHUNK];
  ckl_digest garbage[10];
  for (int i = 0; i < 10; i++) {
    fill(buf, sizeof buf, 300 + (uint32_t)i);
    ckl_digest_compute(buf, sizeof buf, &garbage[i]);
    assert_true(ckl_chunk_insert(f.st->chunks, &garbage[i], buf, sizeof buf, NULL) >= 0);
  }
  gcfx_age_chunks(&f, 3600);

  child_arg *c = ckl_test_shared_alloc(sizeof *c);
  c->f = &f;
  pid_t pid = ckl_test_fork(child_backup, c);
  wait_hit(f.dir, pid);

  /* Strict mode: the other process's writer blocks it. */
  ckl_holder who = {0};
  ckl_gc_opts so = {.use_safety = 1, .atime_safety_s = 0, .exclusive = 1, .busy_holder = &who};
  assert_int_equal(ckl_gc_run(f.st, &so, NULL), CKL_EBUSY);

  /* Default mode: a whole GC while the backup is mid-way. */
  ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0};
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f.st, &go, &r), 0);
  assert_int_equal(r.removed_chunks, 10);
  assert_true(r.oldest_writer_ns != INT64_MAX); /* the backup was seen */
  struct stat sb;
  for (int i = 0; i < 10; i++) assert_int_equal(ckl_chunk_stat(f.st->chunks, &garbage[i], &sb), -ENOENT);

  ckl_test_release_pausefile(f.dir, "backup.archive.after_close");
  assert_int_equal(ckl_test_wait(pid), 0);

  expect_archive(f.st, &c->name, "one.didx", 0, 16);
  expect_archive(f.st, &c->name, "two.didx", 500, 8);
  ckl_fsck_summary sum;
  assert_int_equal(ckl_fsck(f.st, NULL, NULL, NULL, &sum), 0);
  assert_int_equal(sum.problems, 0);
  assert_int_equal(sum.snapshots, 2);
  /* a later GC keeps everything both snapshots need */
  gcfx_age_chunks(&f, 3600);
  assert_int_equal(ckl_gc_run(f.st, &go, &r), 0);
  assert_int_equal(r.removed_chunks, 0);
  assert_int_equal(ckl_fsck(f.st, NULL, NULL, NULL, &sum), 0);
  ckl_test_shared_free(c, sizeof *c);
  gcfx_close(&f);
}

/* locking.md cells 14 and 18: verify and a reader run while a GC marks and
 * while it sweeps, forced at gc.mark.after_list and gc.sweep.before_rename
 * (the sweep paused on a garbage chunk). Both see a complete snapshot and
 * the GC removes only the garbage. */
typedef struct gc_bg {
  ckl_store *st;
  ckl_gc_result r;
  int rc;
} gc_bg;

static void *gc_bg_main(void *arg) {
  gc_bg *g = arg;
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0, .threads = 1};
  g->rc = ckl_gc_run(g->st, &o, &g->r);
  return NULL;
}

static void verify_and_read(ckl_store *st, const ckl_snapshot_name *n) {
  assert_int_equal(ckl_verify(st, n, NULL, NULL), 0);
  expect_archive(st, n, "one.didx", 0, 8);
}

static void test_verify_and_read_during_gc(void **state) {
  (void)state;
  gcfx f = {0};
  gcfx_open(&f);
  ckl_group_name g;
  assert_int_equal(ckl_group_name_parse("host/v", &g), 0);
  ckl_backup_opts o = {.time_s = 1700000000};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(f.st, &g, &o, &b), 0);
  ckl_snapshot_name name = *ckl_backup_snapshot(b);
  write_archive(b, "one.didx", 0, 8);
  assert_int_equal(ckl_backup_finish(b), 0);
  uint8_t buf[CHUNK];
  fill(buf, sizeof buf, 900);
  ckl_digest junk;
  ckl_digest_compute(buf, sizeof buf, &junk);
  assert_true(ckl_chunk_insert(f.st->chunks, &junk, buf, sizeof buf, NULL) >= 0);
  gcfx_age_chunks(&f, 3600);

  assert_int_equal(ckl_failpoint_arm("gc.mark.after_list", "1*pause"), 0);
  assert_int_equal(ckl_failpoint_arm("gc.sweep.before_rename", "1*pause"), 0);
  gc_bg bg = {.st = f.st};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, gc_bg_main, &bg), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.mark.after_list", 1, CKL_TEST_WAIT_MS), 0);
  verify_and_read(f.st, &name); /* during the mark */
  ckl_failpoint_release("gc.mark.after_list");
  assert_int_equal(ckl_failpoint_wait_hits("gc.sweep.before_rename", 1, CKL_TEST_WAIT_MS), 0);
  verify_and_read(f.st, &name); /* during the sweep, paused on the junk chunk */
  ckl_failpoint_release("gc.sweep.before_rename");
  pthread_join(th, NULL);
  ckl_failpoint_disarm_all();
  assert_int_equal(bg.rc, 0);
  assert_int_equal(bg.r.removed_chunks, 1);
  struct stat sb;
  assert_int_equal(ckl_chunk_stat(f.st->chunks, &junk, &sb), -ENOENT);
  verify_and_read(f.st, &name);
  assert_int_equal(ckl_fsck(f.st, NULL, NULL, NULL, NULL), 0);
  gcfx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_backup_runs_through_gc),
                                     cmocka_unit_test(test_verify_and_read_during_gc)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

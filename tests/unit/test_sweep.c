/* GC sweep protocol (DESIGN.md section 5, phase 2): rename-then-verify,
 * the two writer races, crashed-GC leftovers, temps, dry run, cancel.
 * Fake chunk files with chosen atimes stand in for real chunks: the sweep
 * judges names and atimes only. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "gc/sweep.h"

#define SEC 1000000000LL

typedef struct fixture {
  char *root;   /* the fake .chunks directory */
  int dirfd;
  int64_t now;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->root = ckl_test_mkdtemp("sweep");
  f->dirfd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  f->now = ckl__now_realtime_ns();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  ckl_failpoint_disarm_all();
  close(f->dirfd);
  ckl_test_rmtree(f->root);
  free(f->root);
  free(f);
  return 0;
}

/* 64-hex name whose first 4 digits pick the prefix directory. */
static void chunk_name(int i, char out[65]) {
  snprintf(out, 65, "%04x%060d", (unsigned)(i * 7919) & 0xffff, i);
}

static char *chunk_path(fixture *f, const char *name, const char *prefix_add) {
  char *p = NULL;
  if (asprintf(&p, "%s/%.4s/%s%s", f->root, name, prefix_add ? prefix_add : "", name) < 0) abort();
  return p;
}

/* Create a file with content and atime = now + offset. */
static void make_file(fixture *f, const char *name, const char *prefix_add, int64_t atime_off_s,
                      const char *content) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s/%.4s", f->root, name);
  mkdir(dir, 0755);
  char *p = chunk_path(f, name, prefix_add);
  ckl_test_write_file(p, content, strlen(content));
  int64_t t = f->now + atime_off_s * SEC;
  struct timespec ts[2] = {{.tv_sec = t / SEC, .tv_nsec = t % SEC}, {.tv_sec = 0, .tv_nsec = UTIME_OMIT}};
  assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
  free(p);
}

static bool exists(fixture *f, const char *name, const char *prefix_add) {
  char *p = chunk_path(f, name, prefix_add);
  struct stat st;
  bool ok = lstat(p, &st) == 0;
  free(p);
  return ok;
}

static ckl__sweep_opts opts_for(fixture *f, int threads) {
  ckl__sweep_opts o = {.chunks_dirfd = f->dirfd,
                       .cutoff_ns = f->now - 100 * SEC,
                       .pending_below_ns = f->now - 50 * SEC,
                       .threads = threads};
  return o;
}

static void test_old_removed_recent_kept(void **state) {
  fixture *f = *state;
  char a[65], b[65], c[65];
  chunk_name(1, a);
  chunk_name(2, b);
  chunk_name(3, c);
  make_file(f, a, NULL, -1000, "old");    /* garbage */
  make_file(f, b, NULL, -10, "recent");   /* live */
  make_file(f, c, NULL, -70, "pending");  /* kept only for a writer */
  ckl__sweep_opts o = opts_for(f, 2);
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_false(exists(f, a, NULL));
  assert_true(exists(f, b, NULL));
  assert_true(exists(f, c, NULL));
  assert_false(exists(f, a, ".gc-"));
  assert_int_equal(s.disk_chunks, 3);
  assert_int_equal(s.removed_chunks, 1);
  assert_int_equal(s.removed_bytes, 3);
  assert_int_equal(s.pending_chunks, 1);
  assert_int_equal(s.pending_bytes, 7);
  assert_int_equal(s.errors, 0);
}

static void test_dry_run_keeps(void **state) {
  fixture *f = *state;
  char a[65];
  chunk_name(4, a);
  make_file(f, a, NULL, -1000, "old");
  make_file(f, a, ".gc-", -1000, "old");
  ckl__sweep_opts o = opts_for(f, 1);
  o.dry_run = true;
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_true(exists(f, a, NULL));
  assert_true(exists(f, a, ".gc-"));
  assert_int_equal(s.removed_chunks, 1);
  assert_int_equal(s.leftovers, 1);
}

static void test_leftovers_of_crashed_gc(void **state) {
  fixture *f = *state;
  char a[65], b[65], c[65];
  chunk_name(5, a);
  chunk_name(6, b);
  chunk_name(7, c);
  make_file(f, a, ".gc-", -1000, "x");     /* old: remove */
  make_file(f, b, ".gc-", -1, "y");        /* touched: restore */
  make_file(f, c, ".gc-", -1, "z");        /* touched, but rewritten meanwhile */
  make_file(f, c, NULL, -1, "z");
  ckl__sweep_opts o = opts_for(f, 2);
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_false(exists(f, a, ".gc-"));
  assert_false(exists(f, a, NULL));
  assert_true(exists(f, b, NULL));
  assert_false(exists(f, b, ".gc-"));
  assert_true(exists(f, c, NULL));
  assert_false(exists(f, c, ".gc-"));
  assert_int_equal(s.leftovers, 3);
  assert_int_equal(s.restored, 1);
  assert_int_equal(s.rewritten, 1);
  assert_int_equal(s.removed_chunks, 1);
}

static void test_temps_bad_symlinks(void **state) {
  fixture *f = *state;
  char a[65], bad[80], tmp_old[80], tmp_new[80];
  chunk_name(8, a);
  snprintf(bad, sizeof bad, "%s.0.bad", a);
  snprintf(tmp_old, sizeof tmp_old, ".tmp-%.20s-old", a);
  snprintf(tmp_new, sizeof tmp_new, ".tmp-%.20s-new", a);
  char dir[600];
  snprintf(dir, sizeof dir, "%s/%.4s", f->root, a);
  mkdir(dir, 0755);
  char *p = ckl_test_path(dir, bad);
  ckl_test_write_file(p, "bad!", 4);
  free(p);
  p = ckl_test_path(dir, tmp_old);
  ckl_test_write_file(p, "t", 1);
  struct timespec old[2] = {{.tv_sec = (f->now / SEC) - 1000}, {.tv_sec = (f->now / SEC) - 1000}};
  assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
  free(p);
  p = ckl_test_path(dir, tmp_new);
  ckl_test_write_file(p, "t", 1);
  free(p);
  /* a symlink named like a chunk, pointing at a victim with an old atime */
  char *victim = ckl_test_path(f->root, "victim");
  ckl_test_write_file(victim, "v", 1);
  assert_int_equal(utimensat(AT_FDCWD, victim, old, 0), 0);
  char lname[65];
  chunk_name(9, lname);
  char ldir[600];
  snprintf(ldir, sizeof ldir, "%s/%.4s", f->root, lname);
  mkdir(ldir, 0755);
  char *lp = ckl_test_path(ldir, lname);
  assert_int_equal(symlink(victim, lp), 0);

  ckl__sweep_opts o = opts_for(f, 2);
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_int_equal(s.bad_chunks, 1);
  assert_int_equal(s.bad_bytes, 4);
  assert_int_equal(s.temps_removed, 1);
  assert_int_equal(ckl_test_count_entries(dir, ".tmp-"), 1);
  struct stat st;
  assert_int_equal(lstat(lp, &st), 0);     /* symlink left alone */
  assert_int_equal(stat(victim, &st), 0);  /* victim untouched */
  assert_int_equal(s.disk_chunks, 0);
  free(lp);
  free(victim);
}

/* ---- the two writer races, forced with failpoints ---------------------- */

typedef struct sweep_thread {
  ckl__sweep_opts o;
  ckl__sweep_stats s;
  int rc;
} sweep_thread;

static void *run_sweep(void *arg) {
  sweep_thread *t = arg;
  t->rc = ckl__sweep(&t->o, &t->s);
  return NULL;
}

static void touch_now(fixture *f, const char *name, int expect_errno) {
  char *p = chunk_path(f, name, NULL);
  struct timespec ts[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
  int rc = utimensat(AT_FDCWD, p, ts, 0);
  if (expect_errno) {
    assert_int_equal(rc, -1);
    assert_int_equal(errno, expect_errno);
  } else {
    assert_int_equal(rc, 0);
  }
  free(p);
}

/* A writer touches the chunk after the sweep judged it by atime but before
 * the rename: the re-stat sees the new atime and puts it back. */
static void test_touch_between_stat_and_rename(void **state) {
  fixture *f = *state;
  char a[65];
  chunk_name(10, a);
  make_file(f, a, NULL, -1000, "data");
  assert_int_equal(ckl_failpoint_arm("gc.sweep.before_rename", "pause"), 0);
  sweep_thread t = {.o = opts_for(f, 1)};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_sweep, &t), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.sweep.before_rename", 1, CKL_TEST_WAIT_MS), 0);
  touch_now(f, a, 0); /* writer: touch succeeds => dedup hit, chunk "exists" */
  ckl_failpoint_release("gc.sweep.before_rename");
  pthread_join(th, NULL);
  assert_int_equal(t.rc, 0);
  assert_true(exists(f, a, NULL));
  assert_false(exists(f, a, ".gc-"));
  assert_int_equal(t.s.restored, 1);
  assert_int_equal(t.s.removed_chunks, 0);
}

/* A writer touches after the rename: it gets ENOENT and rewrites the chunk;
 * the sweep removes only its trash copy. */
static void test_touch_after_rename(void **state) {
  fixture *f = *state;
  char a[65];
  chunk_name(11, a);
  make_file(f, a, NULL, -1000, "data");
  assert_int_equal(ckl_failpoint_arm("gc.sweep.after_rename", "pause"), 0);
  sweep_thread t = {.o = opts_for(f, 1)};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_sweep, &t), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.sweep.after_rename", 1, CKL_TEST_WAIT_MS), 0);
  touch_now(f, a, ENOENT);                   /* writer: must upload */
  make_file(f, a, NULL, 0, "data");          /* ... and does */
  ckl_failpoint_release("gc.sweep.after_rename");
  pthread_join(th, NULL);
  assert_int_equal(t.rc, 0);
  assert_true(exists(f, a, NULL));
  assert_false(exists(f, a, ".gc-"));
  assert_int_equal(t.s.removed_chunks, 1);   /* the stale copy */
}

/* Touch lands after the rename but a writer ALSO rewrote before the
 * put-back: put-back must not clobber, the duplicate is dropped. */
static void test_rewrite_during_window_with_recent_trash(void **state) {
  fixture *f = *state;
  char a[65];
  chunk_name(12, a);
  make_file(f, a, NULL, -1000, "data");
  assert_int_equal(ckl_failpoint_arm("gc.sweep.after_rename", "pause"), 0);
  sweep_thread t = {.o = opts_for(f, 1)};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_sweep, &t), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.sweep.after_rename", 1, CKL_TEST_WAIT_MS), 0);
  /* the trash copy was touched (e.g. by a reader's repair path) and a writer rewrote */
  char *tp = chunk_path(f, a, ".gc-");
  struct timespec ts[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
  assert_int_equal(utimensat(AT_FDCWD, tp, ts, 0), 0);
  free(tp);
  make_file(f, a, NULL, 0, "DATA");
  ckl_failpoint_release("gc.sweep.after_rename");
  pthread_join(th, NULL);
  assert_int_equal(t.rc, 0);
  char *p = chunk_path(f, a, NULL);
  size_t len;
  char *content = ckl_test_read_file(p, &len);
  assert_string_equal(content, "DATA"); /* the writer's copy, not clobbered */
  free(content);
  free(p);
  assert_false(exists(f, a, ".gc-"));
  assert_int_equal(t.s.rewritten, 1);
}

static void test_error_failpoint_never_removes(void **state) {
  fixture *f = *state;
  char a[65];
  chunk_name(13, a);
  make_file(f, a, NULL, -1000, "data");
  assert_int_equal(ckl_failpoint_arm("gc.sweep.before_unlink", "error(EIO)"), 0);
  ckl__sweep_opts o = opts_for(f, 1);
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_int_equal(s.errors, 1);
  assert_int_equal(s.removed_chunks, 0);
  /* the chunk sits at its trash name; the next sweep finishes the job */
  assert_true(exists(f, a, ".gc-"));
  ckl_failpoint_disarm_all();
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_false(exists(f, a, ".gc-"));
  assert_false(exists(f, a, NULL));
  assert_int_equal(s.leftovers, 1);
}

static void test_cancel(void **state) {
  fixture *f = *state;
  char a[65];
  chunk_name(14, a);
  make_file(f, a, NULL, -1000, "data");
  atomic_bool cancel;
  atomic_init(&cancel, true);
  ckl__sweep_opts o = opts_for(f, 2);
  o.cancel = &cancel;
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), CKL_ECANCELED);
  assert_true(exists(f, a, NULL));
}

/* ---- auto threads: the helper stands by while writers are registered ---- */

typedef struct writers_script {
  int calls;
  int flip_at;           /* answer "writers" before this call, "none" from it */
  uint64_t helper_hits_at_flip;
} writers_script;

static int scripted_writers(void *arg) {
  writers_script *w = arg;
  w->calls++;
  if (w->flip_at == 0 || w->calls < w->flip_at) return 1;
  if (w->calls == w->flip_at) {
    w->helper_hits_at_flip = ckl_failpoint_hits("gc.sweep.helper_batch");
    /* park this thread right after it lets the helper go, so only the
     * helper can sweep on (the test waits for its first batch) */
    assert_int_equal(ckl_failpoint_arm("gc.sweep.after_writer_check", "1*pause"), 0);
  }
  return 0;
}

static void make_many(fixture *f) {
  for (int i = 100; i < 400; i++) {
    char n[65];
    chunk_name(i, n);
    make_file(f, n, NULL, (i % 2) ? -1000 : -1, "c");
  }
}

static void assert_many_swept(fixture *f, const ckl__sweep_stats *s) {
  assert_int_equal(s->disk_chunks, 300);
  assert_int_equal(s->removed_chunks, 150);
  for (int i = 100; i < 400; i++) {
    char n[65];
    chunk_name(i, n);
    assert_int_equal(exists(f, n, NULL), (i % 2) == 0);
  }
}

/* Sweep make_many's store with `threads`, asking `w` about writers. */
static void sweep_with_writers(fixture *f, int threads, writers_script *w, ckl__sweep_stats *s) {
  ckl__sweep_opts o = opts_for(f, threads);
  o.writers_live = scripted_writers;
  o.writers_arg = w;
  assert_int_equal(ckl__sweep(&o, s), 0);
  assert_many_swept(f, s);
}

static void test_many_chunks_two_threads(void **state) {
  fixture *f = *state;
  make_many(f);
  ckl__sweep_opts o = opts_for(f, 2);
  ckl__sweep_stats s;
  assert_int_equal(ckl__sweep(&o, &s), 0);
  assert_many_swept(f, &s);
}

static void test_auto_stands_by_for_writers(void **state) {
  fixture *f = *state;
  make_many(f);
  writers_script w = {0}; /* writers throughout */
  ckl__sweep_stats s;
  sweep_with_writers(f, 0, &w, &s);
  assert_int_equal(s.helper_batches, 0);
  /* asked before the helper starts, then every 16 of the 1,024 batches */
  assert_int_equal(w.calls, 1 + 1024 / 16);
  assert_int_equal(s.writer_checks, 1 + 1024 / 16);
}

static void test_auto_helper_resumes_when_writers_leave(void **state) {
  fixture *f = *state;
  make_many(f);
  assert_int_equal(ckl_failpoint_arm("gc.sweep.helper_batch", "count"), 0);
  writers_script w = {.flip_at = 2}; /* writers at the start, gone at the first recheck */
  sweep_thread t = {.o = opts_for(f, 0)};
  t.o.writers_live = scripted_writers;
  t.o.writers_arg = &w;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_sweep, &t), 0);
  /* The calling thread is parked after the flip: the helper must sweep. */
  assert_int_equal(ckl_failpoint_wait_hits("gc.sweep.helper_batch", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.sweep.after_writer_check", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_failpoint_release("gc.sweep.after_writer_check"), 1);
  pthread_join(th, NULL);
  assert_int_equal(t.rc, 0);
  assert_many_swept(f, &t.s);
  assert_int_equal(w.helper_hits_at_flip, 0); /* stood by until then */
  assert_true(t.s.helper_batches >= 1);
  assert_int_equal(t.s.helper_batches, ckl_failpoint_hits("gc.sweep.helper_batch"));
}

/* A fixed thread count never asks. */
static void test_fixed_threads_never_ask(void **state) {
  fixture *f = *state;
  make_many(f);
  writers_script w = {0};
  ckl__sweep_stats s;
  sweep_with_writers(f, 2, &w, &s);
  assert_int_equal(w.calls, 0);
  assert_int_equal(s.writer_checks, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_old_removed_recent_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dry_run_keeps, setup, teardown),
      cmocka_unit_test_setup_teardown(test_leftovers_of_crashed_gc, setup, teardown),
      cmocka_unit_test_setup_teardown(test_temps_bad_symlinks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_touch_between_stat_and_rename, setup, teardown),
      cmocka_unit_test_setup_teardown(test_touch_after_rename, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rewrite_during_window_with_recent_trash, setup, teardown),
      cmocka_unit_test_setup_teardown(test_error_failpoint_never_removes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_chunks_two_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_auto_stands_by_for_writers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_auto_helper_resumes_when_writers_leave, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fixed_threads_never_ask, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

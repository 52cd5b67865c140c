/*
 * A forget during a dry-run GC's mark. The dry run sweeps nothing and
 * holds no deleter guard (it may run while the store is frozen), so a
 * forget must not leave its snapshot in .trash for it: the snapshot used
 * to stay there until some later forget or GC, and fsck and the invariant
 * checker reported it (found by the soak, tests/race/soak.c). Now the
 * forget records the snapshot for the dry run (settled) and deletes it at
 * once; the dry run, finding the index gone, learns it was forgotten (no
 * abort) and counts the snapshot's unique chunks as garbage, as a real GC
 * starting now would.
 */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

typedef struct gc_arg {
  ckl_store *st;
  int rc;
  ckl_gc_result r;
} gc_arg;

static void *gc_thread(void *p) {
  gc_arg *a = p;
  ckl_gc_opts o = {.dry_run = 1, .use_safety = 1, .atime_safety_s = 0};
  a->rc = ckl_gc_run(a->st, &o, &a->r);
  return NULL;
}

/* Every chunk file's atime to an hour ago: older than any cutoff, so only
 * the mark's touch keeps a chunk out of the garbage count. */
static void age_chunks(const ops_store *s) {
  char *cp = ckl_test_path(s->path, ".chunks");
  int cfd = open(cp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(cfd >= 0);
  struct timespec ts[2] = {{.tv_sec = time(NULL) - 3600}, {.tv_nsec = UTIME_OMIT}};
  for (unsigned i = 0; i < 0x10000; i++) {
    char name[8];
    snprintf(name, sizeof name, "%04x", i);
    int fd = openat(cfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') assert_int_equal(utimensat(dirfd(d), e->d_name, ts, 0), 0);
    closedir(d);
  }
  close(cfd);
  free(cp);
}

/* Chunk files in the store (dry runs must leave them all). */
static int chunk_count(const ops_store *s) {
  int n = 0;
  for (unsigned i = 0; i < 0x10000; i++) {
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/.chunks/%04x", s->path, i);
    DIR *d = opendir(sub);
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') n++;
    closedir(d);
  }
  return n;
}

/* `n` (chunks of seeds 1, 2, 3) and `keep` (seeds 3, 4, 5): n's unique
 * chunks are the two of seeds 1 and 2. Forget n while a dry-run GC is
 * paused after its listing (n's index is listed, none of its chunks
 * touched); with `freeze`, a shared freeze is held when the GC ends. */
static void forget_during_dry_run(ops_store *s, ckl_freeze *freeze, gc_arg *a) {
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_snapshot_name keep = ops_make_snapshot(s->st, "host", "a", 10, 3);
  assert_int_equal(chunk_count(s), 5);
  age_chunks(s);
  ckl_test_log_capture();
  assert_int_equal(ckl_failpoint_arm("gc.mark.after_list", "pause"), 0);
  a->st = s->st;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, gc_thread, a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.mark.after_list", 1, CKL_TEST_WAIT_MS), 0);
  /* the forget does not wait for the dry run: deleted, nothing in .trash */
  assert_int_equal(ckl_forget(s->st, &n, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ops_trash_count(s), 0);
  assert_false(ops_snap_exists(s, &n));
  if (freeze) assert_int_equal(ckl_freeze_acquire(s->st, CKL_FREEZE_SHARED, freeze, NULL), 0);
  assert_int_equal(ckl_failpoint_disarm("gc.mark.after_list"), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a->rc, 0);
  /* the vanished index was known forgotten: the dry run said so */
  assert_true(ckl_test_logged("was forgotten during the mark"));
  assert_int_equal(a->r.dry_run, 1);
  assert_int_equal(a->r.index_files, 1);           /* keep's; n's was gone */
  assert_int_equal(a->r.removed_set_snapshots, 0); /* its copy was never marked */
  assert_int_equal(a->r.referenced_chunks, 3);
  assert_int_equal(a->r.disk_chunks, 5);
  assert_int_equal(a->r.removed_chunks, 2); /* n's unique chunks: garbage */
  assert_int_equal(a->r.trash_purged, 0);
  assert_int_equal(chunk_count(s), 5); /* a dry run deletes nothing */
  assert_int_equal(ops_trash_count(s), 0);
  assert_true(ops_snap_exists(s, &keep));
}

static void test_dry_run_does_not_keep_forgets_waiting(void **state) {
  ops_store *s = *state;
  gc_arg a = {0};
  forget_during_dry_run(s, NULL, &a);
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, NULL), 0);
  /* what the dry run reported is what a real GC now frees */
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0};
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(s->st, &o, &r), 0);
  assert_int_equal(r.removed_chunks, a.r.removed_chunks);
  assert_int_equal(chunk_count(s), 3);
}

/* A freeze held when the dry run ends changes nothing: the forget already
 * deleted, under its own deleter guard, before the freeze was taken. */
static void test_dry_run_ends_frozen(void **state) {
  ops_store *s = *state;
  ckl_freeze f = {0};
  gc_arg a = {0};
  forget_during_dry_run(s, &f, &a);
  assert_int_equal(ckl_freeze_release(&f), 0);
  assert_int_equal(ops_trash_count(s), 0);
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, NULL), 0);
}

static int setup(void **state) { return ops_group_setup(state, "gcdrytrash"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_dry_run_does_not_keep_forgets_waiting, ops_reset),
      cmocka_unit_test_setup(test_dry_run_ends_frozen, ops_reset),
  };
  return cmocka_run_group_tests(tests, setup, ops_group_teardown);
}

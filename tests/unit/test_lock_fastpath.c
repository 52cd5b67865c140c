/* The fast paths of the snapshot and manifest locks (datastore/
 * snapshot_lock.c) and of path-lock verification keep the answers of the
 * slow ones:
 *   - the first attempt, on an existing lock file, skips the pre-check, so
 *     the post-lock check alone must catch a snapshot removed meanwhile;
 *   - a lock file that exists but is held (a forget that moved the
 *     snapshot and still holds its locks) answers -ENOENT as the pre-check
 *     did, not CKL_EBUSY, and a manifest lock does not wait for it;
 *   - the one-call openat2 walk refuses a symlink at any level, like the
 *     component walk, with the same codes;
 *   - with openat2 and statx refused by a seccomp filter (ENOSYS, or EPERM
 *     as old container profiles answer) the fallbacks give the same
 *     answers. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/store_internal.h"
#include "ops_util.h"

#define BIG (PATH_MAX + 256)

/* One store for the file (ops_util.h). */
typedef ops_store fixture;

static int setup(void **state) { return ops_group_setup(state, "fastpath"); }

static void mkdirs(fixture *f, const char *rel) { ckl_test_mkdirs(f->path, rel); }

static void rmdir_in(fixture *f, const char *rel) {
  char p[BIG];
  snprintf(p, sizeof p, "%s/%s", f->path, rel);
  assert_int_equal(rmdir(p), 0);
}

static int lock_exists(fixture *f, const char *rel) {
  char p[BIG];
  struct stat st;
  snprintf(p, sizeof p, "%s/%s", ckl_store_locks_root(f->st), rel);
  return lstat(p, &st) == 0;
}

static ckl_snapshot_name snap(const char *s) {
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_parse(s, &n), 0);
  return n;
}

/* Lock and release once, so that the lock file exists for the fast path. */
static void prime(fixture *f, const ckl_snapshot_name *sn, int manifest) {
  ckl_path_lock lk = {0};
  if (manifest) assert_int_equal(ckl_manifest_lock(f->st, sn, &lk, NULL), 0);
  else assert_int_equal(ckl_snapshot_lock(f->st, sn, CKL_LOCK_SHARED, &lk, NULL), 0);
  assert_int_equal(ckl_path_lock_release(&lk), 0);
}

/* The lock file exists (no pre-check is made) and the snapshot directory
 * goes away after the grant: the post-lock check answers -ENOENT; an
 * exclusive holder removes the lock file, a shared one may not. */
static void removed_after_grant(fixture *f, const char *name, ckl_lock_mode mode, int manifest) {
  char rel[128];
  snprintf(rel, sizeof rel, "host/grant/%s", name);
  mkdirs(f, rel);
  ops_locker a = {.s = f, .sn = snap(rel), .mode = mode, .manifest = manifest, .rc = 1};
  prime(f, &a.sn, manifest);
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "pause"), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, ops_locker_main, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  rmdir_in(f, rel);
  ckl_failpoint_disarm("flock.after_lock");
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a.rc, -ENOENT);
  assert_int_equal(a.lk.held, 0);
  char lockrel[160];
  snprintf(lockrel, sizeof lockrel, "%s%s", rel, manifest ? ".manifest.lck" : ".lck");
  assert_int_equal(lock_exists(f, lockrel), mode == CKL_LOCK_SHARED);
}

static void test_removed_after_grant_on_existing_lock_file(void **state) {
  fixture *f = *state;
  removed_after_grant(f, "2026-03-01T12:00:00Z", CKL_LOCK_SHARED, 0);
  removed_after_grant(f, "2026-03-02T12:00:00Z", CKL_LOCK_EXCLUSIVE, 0);
  removed_after_grant(f, "2026-03-03T12:00:00Z", CKL_LOCK_EXCLUSIVE, 1);
}

/* A forget has moved the snapshot away and still holds both of its locks:
 * the lock files exist and are busy, yet the answer is -ENOENT, the
 * caller's holder is left untouched, and the manifest lock answers at
 * once instead of waiting out its deadline for the forget. */
static void test_held_lock_file_of_gone_snapshot_is_enoent(void **state) {
  fixture *f = *state;
  const char *rel = "host/held/2026-03-01T12:00:00Z";
  mkdirs(f, rel);
  ckl_snapshot_name sn = snap(rel);
  ckl_path_lock sl = {0}, ml = {0}, lk = {0};
  ckl_snap_lock_opts fo = {.operation = "forget"};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &sl, &fo), 0);
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &ml, &fo), 0);
  rmdir_in(f, rel);

  ckl_holder who;
  memset(&who, 0x5a, sizeof who);
  ckl_snap_lock_opts ro = {.busy_holder = &who};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &lk, &ro), -ENOENT);
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &lk, &ro), -ENOENT);
  /* One that waited would answer CKL_ETIMEDOUT: the forget holds it until
   * we release below. */
  ckl_snap_lock_opts mo = {.timeout_ms = 2000, .busy_holder = &who};
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &lk, &mo), -ENOENT);
  assert_int_equal(lk.held, 0);
  unsigned char pattern[sizeof who];
  memset(pattern, 0x5a, sizeof pattern);
  assert_memory_equal(&who, pattern, sizeof who);

  assert_int_equal(ckl_path_lock_unlink(&ml), 0);
  assert_int_equal(ckl_path_lock_unlink(&sl), 0);
}

/* The snapshot exists and its lock is busy: the fast attempt's busy answer
 * (and holder) is the answer; a manifest lock waits as before and gets the
 * lock once it is released. */
typedef struct release_arg {
  ckl_path_lock *lk;
  int rc;
} release_arg;

static void *release_later(void *p) {
  release_arg *a = p;
  /* Released once the waiter is waiting: it has opened the file a second
   * time, after its first busy answer and first sleep. The result is
   * checked after the join: released on a timeout instead, the waiter
   * would get the lock without having waited, and the test would pass
   * without testing the wait. */
  a->rc = ckl_failpoint_wait_hits("flock.before_lock", 2, CKL_TEST_WAIT_MS);
  ckl_path_lock_release(a->lk);
  return NULL;
}

static void test_busy_existing_snapshot(void **state) {
  fixture *f = *state;
  const char *rel = "host/busy/2026-03-01T12:00:00Z";
  mkdirs(f, rel);
  ckl_snapshot_name sn = snap(rel);
  ckl_path_lock sl = {0}, ml = {0}, lk = {0};
  ckl_snap_lock_opts fo = {.operation = "forget"};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &sl, &fo), 0);
  ckl_holder who = {0};
  ckl_snap_lock_opts ro = {.busy_holder = &who};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &lk, &ro), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "forget");
  assert_int_equal(ckl_path_lock_release(&sl), 0);

  ckl_snap_lock_opts vo = {.operation = "verify"};
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &ml, &vo), 0);
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "count"), 0);
  release_arg ra = {.lk = &ml};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, release_later, &ra), 0);
  ckl_snap_lock_opts mo = {.timeout_ms = CKL_TEST_WAIT_MS};
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &lk, &mo), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(ra.rc, 0);
  ckl_failpoint_disarm("flock.before_lock");
  assert_int_equal(ckl_path_lock_release(&lk), 0);
}

/* A symlink at any level of type/id/time is not a snapshot: the same code
 * from the one-call walk as from the component walk, no lock litter.
 * Returns 0 or the failing line (it also runs in a child, where cmocka's
 * assertions cannot report). */
#define EXPECT(c)                                                                  \
  do {                                                                             \
    if (!(c)) {                                                                    \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #c);             \
      return __LINE__;                                                             \
    }                                                                              \
  } while (0)

static int check_symlinks(fixture *f, const char *group) {
  char rel[128], p[BIG], q[BIG];
  struct stat sb;
  /* id is a symlink to a real group directory with the snapshot in it. */
  snprintf(rel, sizeof rel, "host/%s-real/2026-03-01T12:00:00Z", group);
  mkdirs(f, rel);
  snprintf(p, sizeof p, "%s/host/%s", f->path, group);
  snprintf(q, sizeof q, "%s-real", group);
  EXPECT(symlink(q, p) == 0);
  snprintf(rel, sizeof rel, "host/%s/2026-03-01T12:00:00Z", group);
  ckl_snapshot_name sn = snap(rel);
  EXPECT(ckl__snapshot_open_dir(f->st, &sn) == -ENOTDIR);
  EXPECT(ckl__snapshot_dir_exists(f->st, &sn) == -ENOENT);
  ckl_path_lock lk = {0};
  EXPECT(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &lk, NULL) == -ENOENT);
  EXPECT(ckl_manifest_lock(f->st, &sn, &lk, NULL) == -ENOENT);
  snprintf(rel, sizeof rel, "host/%s", group);
  EXPECT(!lock_exists(f, rel));
  /* The last component a symlink, and a file where a directory belongs. */
  snprintf(rel, sizeof rel, "host/%s-real/2026-03-02T12:00:00Z", group);
  snprintf(p, sizeof p, "%s/%s", f->path, rel);
  EXPECT(symlink("2026-03-01T12:00:00Z", p) == 0);
  sn = snap(rel);
  EXPECT(ckl__snapshot_open_dir(f->st, &sn) == -ENOTDIR);
  EXPECT(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &lk, NULL) == -ENOENT);
  snprintf(rel, sizeof rel, "host/%s-real/2026-03-03T12:00:00Z", group);
  snprintf(p, sizeof p, "%s/%s", f->path, rel);
  int wfd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  EXPECT(wfd >= 0);
  close(wfd);
  sn = snap(rel);
  EXPECT(ckl__snapshot_open_dir(f->st, &sn) == -ENOTDIR);
  EXPECT(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &lk, NULL) == -ENOENT);
  snprintf(p, sizeof p, "%s/host/%s-real/2026-03-03T12:00:00Z.lck", ckl_store_locks_root(f->st),
           group);
  EXPECT(lstat(p, &sb) != 0 && errno == ENOENT);
  /* And the real one locks, twice (the second time on the fast path). */
  snprintf(rel, sizeof rel, "host/%s-real/2026-03-01T12:00:00Z", group);
  sn = snap(rel);
  int fd = ckl__snapshot_open_dir(f->st, &sn);
  EXPECT(fd >= 0);
  close(fd);
  EXPECT(ckl__snapshot_dir_exists(f->st, &sn) == 0);
  for (int i = 0; i < 2; i++) {
    EXPECT(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &lk, NULL) == 0);
    EXPECT(ckl_path_lock_verify(&lk) == 0);
    EXPECT(ckl_path_lock_release(&lk) == 0);
  }
  return 0;
}

static void test_symlinks_refused(void **state) {
  assert_int_equal(check_symlinks(*state, "sym"), 0);
}

/* ---- with openat2 and statx refused --------------------------------------------- */

static int deny(int err) {
  struct sock_filter filt[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_statx, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)(err & SECCOMP_RET_DATA)),
  };
  struct sock_fprog prog = {.len = (unsigned short)(sizeof filt / sizeof filt[0]),
                            .filter = filt};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

typedef struct fb_arg {
  fixture *f;
  int err;
  const char *group;
} fb_arg;

/* In a child (the filter cannot be removed): the symlink checks, a
 * replaced lock file caught by verify, and the fast-path checks above. */
static int fallback_child(void *v) {
  fb_arg *a = v;
  if (deny(a->err) != 0) return 100;
  if (syscall(SYS_openat2, AT_FDCWD, ".", NULL, 0) != -1 || errno != a->err) return 101;
  if (check_symlinks(a->f, a->group) != 0) return 99;
  char rel[128];
  snprintf(rel, sizeof rel, "host/%s-real/2026-03-01T12:00:00Z", a->group);
  ckl_snapshot_name sn = snap(rel);
  ckl_path_lock lk = {0};
  if (ckl_snapshot_lock(a->f->st, &sn, CKL_LOCK_SHARED, &lk, NULL) != 0) return 102;
  char p[BIG];
  snprintf(p, sizeof p, "%s/%s.lck", ckl_store_locks_root(a->f->st), rel);
  if (unlink(p) != 0) return 103;
  if (ckl_path_lock_verify(&lk) != CKL_EREPLACED) return 104;
  ckl_path_lock_release(&lk);
  return 0;
}

static void test_fallbacks_without_openat2_and_statx(void **state) {
  fixture *f = *state;
  fb_arg a = {.f = f, .err = ENOSYS, .group = "nosys"};
  assert_int_equal(ckl_test_wait(ckl_test_fork(fallback_child, &a)), 0);
  fb_arg b = {.f = f, .err = EPERM, .group = "eperm"};
  assert_int_equal(ckl_test_wait(ckl_test_fork(fallback_child, &b)), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_removed_after_grant_on_existing_lock_file, ops_disarm),
      cmocka_unit_test_teardown(test_held_lock_file_of_gone_snapshot_is_enoent, ops_disarm),
      cmocka_unit_test_teardown(test_busy_existing_snapshot, ops_disarm),
      cmocka_unit_test_teardown(test_symlinks_refused, ops_disarm),
      cmocka_unit_test_teardown(test_fallbacks_without_openat2_and_statx, ops_disarm),
  };
  return cmocka_run_group_tests(tests, setup, ops_group_teardown);
}

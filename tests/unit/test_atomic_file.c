/* Atomic replace of files: the calling sequence and its error codes,
 * modes, symlinked targets, short writes, failpoint-injected errors, and
 * ckl_atomic_cleanup() telling live temp entries (this process, a child)
 * from abandoned ones (a crashed child), with exact counts. Concurrent
 * replacers in separate processes with readers checking every version.
 * Directories: test_atomic_dir.c. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"

static char *tmpdir;

static int setup(void **state) {
  (void)state;
  tmpdir = ckl_test_mkdtemp("atomic");
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

/* The file's whole content must be exactly `want`. */
static void assert_file_is(const char *path, const char *want) {
  size_t len = 0;
  char *got = ckl_test_read_file(path, &len);
  assert_non_null(got);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(got, want, len);
  free(got);
}

static int count_all(const char *dir) { return ckl_test_count_entries(dir, NULL); }
static int count_hidden(const char *dir) { return ckl_test_count_entries(dir, "."); }

/* Name of the only hidden entry of dir (a temp), malloc'd. */
static char *only_hidden(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  char *name = NULL;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    assert_null(name);
    name = strdup(e->d_name);
  }
  closedir(d);
  assert_non_null(name);
  return name;
}

/* ---- files ---------------------------------------------------------------- */

static void test_round_trip(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  assert_int_equal(ckl_atomic_replace(f, "hello", 5, 0644, 0), 0);
  assert_file_is(f, "hello");
  assert_int_equal(count_all(tmpdir), 1);
  /* empty content is a valid version too */
  assert_int_equal(ckl_atomic_replace(f, NULL, 0, 0644, CKL_ATOMIC_NOSYNC), 0);
  assert_file_is(f, "");
  assert_int_equal(count_all(tmpdir), 1);
  free(f);
}

static void test_replace_existing(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  ckl_test_write_file(f, "old content", 11);
  struct stat before, after;
  assert_int_equal(stat(f, &before), 0);
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  assert_int_equal(af.active, 1);
  assert_int_equal(ckl_atomic_write(&af, "new", 3), 0);
  assert_int_equal(ckl_atomic_write(&af, " content!", 9), 0);
  /* until commit a reader still sees the old file, the new one is a temp */
  assert_file_is(f, "old content");
  char *tmpname = only_hidden(tmpdir);
  assert_int_equal(strncmp(tmpname, ".f.tmp-", 7), 0);
  assert_int_equal(strlen(tmpname), 7 + 16);
  free(tmpname);
  assert_int_equal(ckl_atomic_commit(&af), 0);
  assert_int_equal(af.active, 0);
  assert_int_equal(ckl_atomic_fd(&af), -1);
  assert_file_is(f, "new content!");
  assert_int_equal(stat(f, &after), 0);
  assert_true(before.st_ino != after.st_ino); /* replaced, not rewritten */
  assert_int_equal(count_all(tmpdir), 1);
  ckl_atomic_rollback(&af);
  free(f);
}

static void test_write_through_fd(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_fd(&af), -1);
  assert_int_equal(ckl_atomic_begin(&af, f, 0600, 0), 0);
  int fd = ckl_atomic_fd(&af);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "world", 5, 6), 5);
  assert_int_equal(pwrite(fd, "hello ", 6, 0), 6);
  assert_int_equal(ckl_atomic_commit(&af), 0);
  assert_file_is(f, "hello world");
  free(f);
}

static void check_mode(const char *path, mode_t mode, unsigned flags) {
  assert_int_equal(ckl_atomic_replace(path, "x", 1, mode, flags), 0);
  struct stat st;
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, mode);
}

static void test_mode_honoured(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  mode_t old = umask(077); /* would turn 0644 into 0600 if the mode came from open() */
  check_mode(f, 0644, 0);
  check_mode(f, 0640, CKL_ATOMIC_NOSYNC);
  check_mode(f, 0444, 0);
  check_mode(f, 0755, 0);
  umask(old);
  free(f);
}

static void test_zeroed_struct(void **state) {
  (void)state;
  int fd0 = fcntl(0, F_GETFD);
  ckl_atomic_file af = {0};
  ckl_atomic_rollback(&af);
  ckl_atomic_rollback(NULL);
  assert_int_equal(ckl_atomic_fd(&af), -1);
  assert_int_equal(ckl_atomic_write(&af, "x", 1), -EINVAL);
  assert_int_equal(ckl_atomic_commit(&af), -EINVAL);
  assert_int_equal(af.active, 0);
  /* the zero fd in the struct was never closed on our behalf */
  assert_int_equal(fcntl(0, F_GETFD), fd0);
  ckl_atomic_dir ad = {0};
  ckl_atomic_dir_rollback(&ad);
  ckl_atomic_dir_rollback(NULL);
  assert_null(ckl_atomic_dir_path(&ad));
  assert_int_equal(ckl_atomic_dir_commit(&ad), -EINVAL);
  assert_int_equal(fcntl(0, F_GETFD), fd0);
  assert_int_equal(count_all(tmpdir), 0);
}

static void test_rollback_after_commit(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  ckl_test_write_file(f, "old", 3);
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  assert_int_equal(ckl_atomic_write(&af, "new", 3), 0);
  assert_int_equal(ckl_atomic_commit(&af), 0);
  ckl_atomic_rollback(&af);
  ckl_atomic_rollback(&af);
  assert_file_is(f, "new");
  assert_int_equal(count_all(tmpdir), 1);
  /* the struct is reusable after commit */
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  assert_int_equal(ckl_atomic_write(&af, "newer", 5), 0);
  assert_int_equal(ckl_atomic_commit(&af), 0);
  assert_file_is(f, "newer");
  free(f);
}

static void test_rollback_removes_temp(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  char *g = ckl_test_path(tmpdir, "g");
  ckl_test_write_file(f, "old", 3);
  ckl_atomic_file af = {0}, ag = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  assert_int_equal(ckl_atomic_write(&af, "new!", 4), 0);
  assert_int_equal(ckl_atomic_begin(&ag, g, 0644, 0), 0); /* target absent */
  assert_int_equal(count_hidden(tmpdir), 2);
  ckl_atomic_rollback(&af);
  ckl_atomic_rollback(&ag);
  assert_int_equal(af.active, 0);
  assert_int_equal(ckl_atomic_fd(&af), -1);
  assert_null(af.tmp_path);
  assert_file_is(f, "old");
  assert_int_equal(count_all(tmpdir), 1); /* f only: no temp, no g */
  free(f);
  free(g);
}

static void test_double_begin(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  char *tmp = strdup(af.tmp_path);
  int fd = af.fd;
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), -EINVAL);
  /* the first begin is undisturbed */
  assert_int_equal(af.active, 1);
  assert_int_equal(af.fd, fd);
  assert_string_equal(af.tmp_path, tmp);
  assert_int_equal(count_hidden(tmpdir), 1);
  assert_int_equal(ckl_atomic_write(&af, "one", 3), 0);
  assert_int_equal(ckl_atomic_commit(&af), 0);
  assert_file_is(f, "one");
  assert_int_equal(count_all(tmpdir), 1);
  free(tmp);
  free(f);
}

static void test_bad_arguments(void **state) {
  (void)state;
  ckl_atomic_file af = {0};
  char *f = ckl_test_path(tmpdir, "f");
  char *slash = ckl_test_path(tmpdir, "sub/");
  char *dotdot = ckl_test_path(tmpdir, "..");
  assert_int_equal(ckl_atomic_begin(NULL, f, 0644, 0), -EINVAL);
  assert_int_equal(ckl_atomic_begin(&af, NULL, 0644, 0), -EINVAL);
  assert_int_equal(ckl_atomic_begin(&af, "", 0644, 0), -EINVAL);
  assert_int_equal(ckl_atomic_begin(&af, slash, 0644, 0), -EINVAL);
  assert_int_equal(ckl_atomic_begin(&af, dotdot, 0644, 0), -EINVAL);
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0x100), -EINVAL);
  assert_int_equal(ckl_atomic_begin(&af, f, 010644, 0), -EINVAL);
  assert_int_equal(ckl_atomic_replace(f, NULL, 3, 0644, 0), -EINVAL);
  assert_int_equal(af.active, 0);
  /* an argument error of write on an active struct rolls back like any other */
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  assert_int_equal(ckl_atomic_write(&af, NULL, 1), -EINVAL);
  assert_int_equal(af.active, 0);
  assert_int_equal(ckl_atomic_cleanup(NULL), -EINVAL);
  assert_int_equal(count_all(tmpdir), 0);
  free(f);
  free(slash);
  free(dotdot);
}

static void test_missing_directory(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "nodir/f");
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), -ENOENT);
  assert_int_equal(af.active, 0);
  assert_int_equal(ckl_atomic_replace(f, "x", 1, 0644, 0), -ENOENT);
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_dir_begin(&ad, f, 0755, 0), -ENOENT);
  assert_int_equal(ad.active, 0);
  assert_int_equal(ckl_atomic_cleanup(f), -ENOENT);
  assert_int_equal(count_all(tmpdir), 0);
  free(f);
}

static void test_target_is_directory(void **state) {
  (void)state;
  char *d = ckl_test_path(tmpdir, "d");
  char *inner = ckl_test_path(tmpdir, "d/keep");
  assert_int_equal(mkdir(d, 0755), 0);
  ckl_test_write_file(inner, "k", 1);
  assert_int_equal(ckl_atomic_replace(d, "x", 1, 0644, 0), -EISDIR);
  assert_file_is(inner, "k");
  assert_int_equal(count_all(tmpdir), 1); /* no temp left */
  free(d);
  free(inner);
}

/* Renaming over a symlink replaces the link; it never writes through it. */
static void test_symlink_target_replaced(void **state) {
  (void)state;
  char *real = ckl_test_path(tmpdir, "real");
  char *link = ckl_test_path(tmpdir, "link");
  ckl_test_write_file(real, "REAL", 4);
  assert_int_equal(symlink("real", link), 0);
  assert_int_equal(ckl_atomic_replace(link, "NEW", 3, 0644, 0), 0);
  struct stat st;
  assert_int_equal(lstat(link, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_file_is(link, "NEW");
  assert_file_is(real, "REAL");
  assert_int_equal(count_all(tmpdir), 2);
  free(real);
  free(link);
}

/* A 250-byte name is legal; its temp name must still fit in NAME_MAX. */
static void test_long_name(void **state) {
  (void)state;
  char name[251];
  memset(name, 'n', 250);
  name[250] = '\0';
  char *f = ckl_test_path(tmpdir, name);
  assert_int_equal(ckl_atomic_replace(f, "long", 4, 0644, 0), 0);
  assert_file_is(f, "long");
  ckl_atomic_dir ad = {0};
  name[0] = 'D';
  char *d = ckl_test_path(tmpdir, name);
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), 0);
  assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
  struct stat st;
  assert_int_equal(lstat(d, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(count_all(tmpdir), 2);
  free(f);
  free(d);
}

static void failpoint_case(const char *fp, const char *action, int want) {
  char *f = ckl_test_path(tmpdir, "f");
  ckl_test_write_file(f, "old", 3);
  assert_int_equal(ckl_failpoint_arm(fp, action), 0);
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), 0);
  int rc = ckl_atomic_write(&af, "new", 3);
  if (rc == 0) rc = ckl_atomic_commit(&af);
  assert_int_equal(rc, want);
  assert_int_equal(af.active, 0); /* the failing call already rolled back */
  ckl_atomic_rollback(&af);
  assert_int_equal(ckl_failpoint_hits(fp), 1);
  assert_file_is(f, "old");
  assert_int_equal(count_all(tmpdir), 1);
  assert_int_equal(ckl_failpoint_disarm(fp), 0);
  free(f);
}

static void test_failpoint_errors_keep_old(void **state) {
  (void)state;
  failpoint_case("atomic.after_write", "error(EIO)", -EIO);
  failpoint_case("atomic.before_rename", "error(EIO)", -EIO);
  failpoint_case("atomic.after_write", "error(ENOSPC)", -ENOSPC);
  failpoint_case("atomic.before_rename", "error(ENOSPC)", -ENOSPC);
  /* a failing begin leaves nothing behind and the struct inactive */
  char *f = ckl_test_path(tmpdir, "f");
  assert_int_equal(ckl_failpoint_arm("atomic.after_create", "error(EROFS)"), 0);
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0644, 0), -EROFS);
  assert_int_equal(af.active, 0);
  assert_file_is(f, "old");
  assert_int_equal(count_all(tmpdir), 1);
  free(f);
}

/* Only the directory sync failed: the error is returned, yet the target is
 * already the new file and nothing is left to roll back. */
static void test_error_after_rename(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  ckl_test_write_file(f, "old", 3);
  assert_int_equal(ckl_failpoint_arm("atomic.after_rename", "error(EIO)"), 0);
  assert_int_equal(ckl_atomic_replace(f, "new", 3, 0644, 0), -EIO);
  assert_file_is(f, "new");
  assert_int_equal(count_all(tmpdir), 1);
  free(f);
}

/* A file size limit makes the kernel accept part of a write (a real short
 * write) and refuse the rest with EFBIG: write must carry on after the
 * short write, then report the refusal and remove the temp. Run in a child
 * so the limit does not outlive the test. */
static int short_write_child(void *p) {
  const char *f = p;
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit rl = {.rlim_cur = 1000, .rlim_max = RLIM_INFINITY};
  if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 10;
  static char big[3000];
  memset(big, 'z', sizeof big);
  ckl_atomic_file af = {0};
  if (ckl_atomic_begin(&af, f, 0644, 0) != 0) return 11;
  int fd = ckl_atomic_fd(&af);
  if (write(fd, big, 500) != 500) return 12; /* 500 fit, 500 more may */
  if (ckl_failpoint_arm("atomic.after_write", "count") != 0) return 13;
  int rc = ckl_atomic_write(&af, big, sizeof big);
  if (af.active || ckl_failpoint_hits("atomic.after_write") != 0) return 14;
  return rc == -EFBIG ? 0 : 15;
}

static void test_short_write_then_error(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  ckl_test_write_file(f, "old", 3);
  assert_int_equal(ckl_test_wait(ckl_test_fork(short_write_child, f)), 0);
  assert_file_is(f, "old");
  assert_int_equal(count_all(tmpdir), 1);
  free(f);
}

/* ---- cleanup ------------------------------------------------------------------ */

typedef struct child_arg {
  const char *target;
  const char *fp;     /* failpoint the child arms */
  const char *action;
  int dir;            /* replace a directory instead of a file */
  mode_t mode;        /* of the new file; 0644 when 0 */
} child_arg;

static int replace_child(void *p) {
  const child_arg *a = p;
  if (ckl_failpoint_arm(a->fp, a->action) != 0) return 10;
  if (a->dir) {
    ckl_atomic_dir ad = {0};
    if (ckl_atomic_dir_begin(&ad, a->target, 0755, 0) != 0) return 11;
    char *f = ckl_test_path(ckl_atomic_dir_path(&ad), "new");
    int fd = open(f, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    free(f);
    if (fd < 0) return 12;
    close(fd);
    return ckl_atomic_dir_commit(&ad) == 0 ? 0 : 13;
  }
  return ckl_atomic_replace(a->target, "new", 3, a->mode ? a->mode : 0644, 0) == 0 ? 0 : 14;
}

static void test_cleanup_live_in_process(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  char *d = ckl_test_path(tmpdir, "d");
  ckl_test_write_file(f, "old", 3);
  ckl_atomic_file af = {0};
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_begin(&af, f, 0444, 0), 0);
  assert_int_equal(ckl_atomic_write(&af, "new", 3), 0);
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), 0);
  /* our own live temps are locked through other open file descriptions:
   * a cleanup in the same process must see them as live */
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 0);
  assert_int_equal(count_hidden(tmpdir), 2);
  assert_int_equal(ckl_atomic_commit(&af), 0);
  assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
  assert_file_is(f, "new");
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 0);
  assert_int_equal(count_all(tmpdir), 2);
  free(f);
  free(d);
}

static void test_cleanup_live_child(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  char *fpdir = ckl_test_path(tmpdir, "fp");
  assert_int_equal(mkdir(fpdir, 0700), 0);
  ckl_test_write_file(f, "old", 3);
  char action[600];
  snprintf(action, sizeof action, "pausefile(%s)", fpdir);
  child_arg a = {.target = f, .fp = "atomic.before_rename", .action = action};
  pid_t pid = ckl_test_fork(replace_child, &a);
  char hit[256];
  snprintf(hit, sizeof hit, "atomic.before_rename.hit.%d", (int)pid);
  /* a handshake, not a race: wait until the child is parked at the site */
  ckl_test_wait_file(fpdir, hit);
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 0);
  assert_int_equal(count_hidden(tmpdir), 1);
  ckl_test_release_pausefile(fpdir, "atomic.before_rename");
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_file_is(f, "new");
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 0);
  assert_int_equal(count_hidden(tmpdir), 0);
  free(fpdir);
  free(f);
}

static void test_cleanup_crashed_children(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  char *g = ckl_test_path(tmpdir, "g");
  char *d = ckl_test_path(tmpdir, "d");
  ckl_test_write_file(f, "old", 3);
  child_arg crashes[] = {
      {.target = f, .fp = "atomic.after_write", .action = "crash"},
      {.target = g, .fp = "atomic.after_create", .action = "crash"},
      {.target = d, .fp = "atomic.dir_before_rename", .action = "crash", .dir = 1},
  };
  for (size_t i = 0; i < CKL__ARRAY_SIZE(crashes); i++)
    assert_int_equal(ckl_test_wait(ckl_test_fork(replace_child, &crashes[i])),
                     CKL_FAILPOINT_CRASH_STATUS);
  assert_int_equal(count_hidden(tmpdir), 3);
  /* bystanders: a live temp of ours, names that only look alike, and a
   * symlink with a temp name (never followed, never removed) */
  ckl_atomic_file live = {0};
  assert_int_equal(ckl_atomic_begin(&live, f, 0644, 0), 0);
  const char *keep[] = {".notes.tmp-old", "x.tmp-0123456789abcdef", ".x.tmp-0123456789ABCDEF",
                        ".tmp-0123456789abcdef"};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(keep); i++) {
    char *p = ckl_test_path(tmpdir, keep[i]);
    ckl_test_write_file(p, "keep", 4);
    free(p);
  }
  char *lnk = ckl_test_path(tmpdir, ".f.tmp-00000000000000ff");
  assert_int_equal(symlink("f", lnk), 0);
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 3);
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 0);
  struct stat st;
  assert_int_equal(lstat(lnk, &st), 0);
  assert_true(S_ISLNK(st.st_mode));
  /* f, live temp, 4 look-alikes, the symlink */
  assert_int_equal(count_all(tmpdir), 1 + 1 + 4 + 1);
  assert_file_is(f, "old");
  ckl_atomic_rollback(&live);
  assert_int_equal(count_all(tmpdir), 1 + 4 + 1);
  free(lnk);
  free(f);
  free(g);
  free(d);
}

/* Temps whose mode denies the owner writing (0444) or reading (0200) are
 * still judged and removed: cleanup asks for a read lock through a
 * read-only fd, or a write lock through a write-only one. (Only matters
 * when not root, where the permission checks apply.) */
static void test_cleanup_restrictive_modes(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  child_arg ro = {.target = f, .fp = "atomic.after_write", .action = "crash", .mode = 0444};
  child_arg wo = {.target = f, .fp = "atomic.after_write", .action = "crash", .mode = 0200};
  assert_int_equal(ckl_test_wait(ckl_test_fork(replace_child, &ro)), CKL_FAILPOINT_CRASH_STATUS);
  assert_int_equal(ckl_test_wait(ckl_test_fork(replace_child, &wo)), CKL_FAILPOINT_CRASH_STATUS);
  assert_int_equal(count_hidden(tmpdir), 2);
  /* and a live one of each mode stays */
  ckl_atomic_file a = {0}, b = {0};
  assert_int_equal(ckl_atomic_begin(&a, f, 0444, 0), 0);
  assert_int_equal(ckl_atomic_begin(&b, f, 0200, 0), 0);
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 2);
  assert_int_equal(count_all(tmpdir), 2);
  ckl_atomic_rollback(&a);
  ckl_atomic_rollback(&b);
  assert_int_equal(count_all(tmpdir), 0);
  free(f);
}

/* ---- concurrent replacers in processes --------------------------------------- */

#define NPROC 4
#define ROUNDS 200
#define NREADERS 2

/* A version: "<len> <seed>\n" then len bytes derived from seed. Any mix of
 * two versions, or a truncated one, fails the check. */
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

typedef struct shared_state {
  volatile int done;
  volatile int readers_ready;
  volatile int readers_read; /* readers that finished a read */
} shared_state;

static shared_state *shared;

static int writer_proc(void *p) {
  const char *target = p;
  char buf[4096];
  int me = (int)getpid();
  for (int i = 0; i < ROUNDS; i++) {
    /* Overlap by construction: no writer makes its last replace before
     * every reader has read once, and readers read until the writers are
     * done. Otherwise a reader descheduled for the whole (short) write
     * phase read nothing and failed with 4. */
    if (i == ROUNDS - 1)
      while (__atomic_load_n(&shared->readers_read, __ATOMIC_SEQ_CST) < NREADERS) sched_yield();
    size_t n = make_version(buf, sizeof buf, (uint64_t)me * 1000 + (uint64_t)i);
    if (ckl_atomic_replace(target, buf, n, 0644, i % 2 ? CKL_ATOMIC_NOSYNC : 0) != 0) return 1;
  }
  return 0;
}

static int reader_proc(void *p) {
  const char *target = p;
  long reads = 0;
  int rc = 0;
  __atomic_add_fetch(&shared->readers_ready, 1, __ATOMIC_SEQ_CST);
  while (rc == 0 && !__atomic_load_n(&shared->done, __ATOMIC_SEQ_CST)) {
    size_t n;
    char *data = ckl_test_read_file(target, &n);
    if (!data) {
      rc = 2; /* never missing */
    } else {
      if (check_version(data, n) != 0) rc = 3; /* never a mix */
      free(data);
    }
    /* counted after the first read, or when failing: no writer waits for
     * a reader that has stopped */
    if (reads++ == 0 || rc != 0) __atomic_add_fetch(&shared->readers_read, 1, __ATOMIC_SEQ_CST);
  }
  return rc ? rc : reads > 0 ? 0 : 4;
}

static void test_concurrent_processes(void **state) {
  (void)state;
  char *f = ckl_test_path(tmpdir, "f");
  char buf[4096];
  size_t n = make_version(buf, sizeof buf, 1);
  ckl_test_write_file(f, buf, n);
  shared = ckl_test_shared_alloc(sizeof *shared);
  pid_t readers[NREADERS], writers[NPROC];
  for (int i = 0; i < NREADERS; i++) readers[i] = ckl_test_fork(reader_proc, f);
  while (__atomic_load_n(&shared->readers_ready, __ATOMIC_SEQ_CST) < NREADERS) sched_yield();
  for (int i = 0; i < NPROC; i++) writers[i] = ckl_test_fork(writer_proc, f);
  for (int i = 0; i < NPROC; i++) assert_int_equal(ckl_test_wait(writers[i]), 0);
  __atomic_store_n(&shared->done, 1, __ATOMIC_SEQ_CST);
  for (int i = 0; i < NREADERS; i++) assert_int_equal(ckl_test_wait(readers[i]), 0);
  char *data = ckl_test_read_file(f, &n);
  assert_non_null(data);
  assert_int_equal(check_version(data, n), 0);
  free(data);
  assert_int_equal(count_all(tmpdir), 1);
  ckl_test_shared_free(shared, sizeof *shared);
  free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_round_trip),
      T(test_replace_existing),
      T(test_write_through_fd),
      T(test_mode_honoured),
      T(test_zeroed_struct),
      T(test_rollback_after_commit),
      T(test_rollback_removes_temp),
      T(test_double_begin),
      T(test_bad_arguments),
      T(test_missing_directory),
      T(test_target_is_directory),
      T(test_symlink_target_replaced),
      T(test_long_name),
      T(test_failpoint_errors_keep_old),
      T(test_error_after_rename),
      T(test_short_write_then_error),
      T(test_cleanup_live_in_process),
      T(test_cleanup_live_child),
      T(test_cleanup_crashed_children),
      T(test_cleanup_restrictive_modes),
      T(test_concurrent_processes),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

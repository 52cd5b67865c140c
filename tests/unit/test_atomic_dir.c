/* Atomic replace of directories: new and existing targets (rename vs
 * exchange), modes, rollback of a filled temp tree, symlinked targets,
 * failpoint-injected errors before and after the swap. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"

static char *tmpdir;

static int setup(void **state) {
  (void)state;
  tmpdir = ckl_test_mkdtemp("atomic-dir");
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

static void make_tree(const char *root, const char *tag) {
  char *p = ckl_test_path(root, "a");
  ckl_test_write_file(p, tag, strlen(tag));
  free(p);
  p = ckl_test_path(root, "sub");
  assert_int_equal(mkdir(p, 0755), 0);
  free(p);
  p = ckl_test_path(root, "sub/b");
  ckl_test_write_file(p, tag, strlen(tag));
  free(p);
}

static void assert_tree(const char *root, const char *tag) {
  assert_int_equal(count_all(root), 2);
  char *p = ckl_test_path(root, "a");
  assert_file_is(p, tag);
  free(p);
  p = ckl_test_path(root, "sub");
  assert_int_equal(count_all(p), 1);
  free(p);
  p = ckl_test_path(root, "sub/b");
  assert_file_is(p, tag);
  free(p);
}

static void test_dir_new_target(void **state) {
  (void)state;
  char *d = ckl_test_path(tmpdir, "snap");
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), 0);
  const char *tp = ckl_atomic_dir_path(&ad);
  assert_non_null(tp);
  assert_int_equal(strncmp(tp + strlen(tmpdir) + 1, ".snap.tmpdir-", 13), 0);
  make_tree(tp, "new");
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), -EINVAL); /* double begin */
  assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
  assert_int_equal(ad.active, 0);
  assert_null(ckl_atomic_dir_path(&ad));
  ckl_atomic_dir_rollback(&ad); /* no-op after commit */
  assert_tree(d, "new");
  assert_int_equal(count_all(tmpdir), 1);
  free(d);
}

static void test_dir_replace_existing(void **state) {
  (void)state;
  char *d = ckl_test_path(tmpdir, "snap");
  assert_int_equal(mkdir(d, 0755), 0);
  make_tree(d, "old");
  assert_int_equal(chmod(d, 0555), 0); /* an old tree with an unwritable top */
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0750, 0), 0);
  make_tree(ckl_atomic_dir_path(&ad), "new");
  assert_tree(d, "old"); /* readers still see the old tree */
  assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
  assert_tree(d, "new");
  struct stat st;
  assert_int_equal(stat(d, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0750);
  assert_int_equal(count_all(tmpdir), 1); /* the old tree is gone */
  free(d);
}

static void test_dir_mode_honoured(void **state) {
  (void)state;
  char *d = ckl_test_path(tmpdir, "snap");
  mode_t old = umask(077);
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0751, CKL_ATOMIC_NOSYNC), 0);
  assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
  umask(old);
  struct stat st;
  assert_int_equal(lstat(d, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0751);
  free(d);
}

static void test_dir_rollback(void **state) {
  (void)state;
  char *d = ckl_test_path(tmpdir, "snap");
  assert_int_equal(mkdir(d, 0755), 0);
  make_tree(d, "old");
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0700, 0), 0);
  make_tree(ckl_atomic_dir_path(&ad), "new");
  assert_int_equal(count_hidden(tmpdir), 1);
  ckl_atomic_dir_rollback(&ad);
  assert_int_equal(ad.active, 0);
  assert_int_equal(ad.lock_fd, -1);
  assert_tree(d, "old");
  assert_int_equal(count_all(tmpdir), 1);
  free(d);
}

static void test_dir_symlink_target(void **state) {
  (void)state;
  char *real = ckl_test_path(tmpdir, "real");
  char *link = ckl_test_path(tmpdir, "link");
  assert_int_equal(mkdir(real, 0755), 0);
  make_tree(real, "real");
  assert_int_equal(symlink("real", link), 0);
  ckl_atomic_dir ad = {0};
  assert_int_equal(ckl_atomic_dir_begin(&ad, link, 0755, 0), 0);
  make_tree(ckl_atomic_dir_path(&ad), "new");
  assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
  struct stat st;
  assert_int_equal(lstat(link, &st), 0);
  assert_true(S_ISDIR(st.st_mode)); /* the link itself was replaced */
  assert_tree(link, "new");
  assert_tree(real, "real");       /* and the tree it pointed to untouched */
  assert_int_equal(count_all(tmpdir), 2);
  free(real);
  free(link);
}

static void test_dir_failpoints(void **state) {
  (void)state;
  char *d = ckl_test_path(tmpdir, "snap");
  assert_int_equal(mkdir(d, 0755), 0);
  make_tree(d, "old");
  ckl_atomic_dir ad = {0};
  /* error before the swap: old tree stays, temp tree is gone */
  assert_int_equal(ckl_failpoint_arm("atomic.dir_before_rename", "error(EIO)"), 0);
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), 0);
  make_tree(ckl_atomic_dir_path(&ad), "new");
  assert_int_equal(ckl_atomic_dir_commit(&ad), -EIO);
  assert_int_equal(ad.active, 0);
  assert_tree(d, "old");
  assert_int_equal(count_all(tmpdir), 1);
  /* error after the exchange: new tree in place, error reported, the old
   * tree left at an unlocked temp name for cleanup */
  assert_int_equal(ckl_failpoint_arm("atomic.dir_after_exchange", "error(EIO)"), 0);
  assert_int_equal(ckl_failpoint_disarm("atomic.dir_before_rename"), 0);
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), 0);
  make_tree(ckl_atomic_dir_path(&ad), "new");
  assert_int_equal(ckl_atomic_dir_commit(&ad), -EIO);
  assert_tree(d, "new");
  assert_int_equal(count_hidden(tmpdir), 1);
  char *left = only_hidden(tmpdir);
  char *leftp = ckl_test_path(tmpdir, left);
  assert_tree(leftp, "old");
  assert_int_equal(ckl_atomic_cleanup(tmpdir), 1);
  assert_int_equal(count_all(tmpdir), 1);
  /* a failing begin leaves no temp dir */
  assert_int_equal(ckl_failpoint_arm("atomic.dir_after_create", "error(ENOSPC)"), 0);
  assert_int_equal(ckl_atomic_dir_begin(&ad, d, 0755, 0), -ENOSPC);
  assert_int_equal(ad.active, 0);
  assert_int_equal(count_all(tmpdir), 1);
  free(left);
  free(leftp);
  free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_dir_new_target),
      T(test_dir_replace_existing),
      T(test_dir_mode_honoured),
      T(test_dir_rollback),
      T(test_dir_symlink_target),
      T(test_dir_failpoints),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

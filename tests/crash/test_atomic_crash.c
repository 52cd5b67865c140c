/* Crash at every atomic.* failpoint: a child arms `crash` at the point and
 * replaces a file or a directory whose old content is known. After the
 * child dies (exit 77, no cleanup of any kind, like kill -9) the target
 * must be exactly the old or exactly the new version - whole file
 * byte-exact, whole tree file for file - and ckl_atomic_cleanup() must
 * remove exactly the temp entries left, leaving nothing behind.
 *
 * The catalog drives the test: a new atomic.* failpoint without a crash
 * scenario here fails it. */
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
  tmpdir = ckl_test_mkdtemp("atomic-crash");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  assert_int_equal(ckl_test_rmtree(tmpdir), 0);
  free(tmpdir);
  return 0;
}

/* ---- versions ---------------------------------------------------------------- */

/* Old and new file versions differ in every byte and in length, so any
 * mix or truncation is visible. The new one is written in two calls, so a
 * crash between them leaves a half-written temp. */
#define OLD_LEN 40000
#define NEW_LEN 70001
static char old_data[OLD_LEN], new_data[NEW_LEN];

static void fill_versions(void) {
  for (size_t i = 0; i < OLD_LEN; i++) old_data[i] = (char)('A' + i % 23);
  for (size_t i = 0; i < NEW_LEN; i++) new_data[i] = (char)('a' + i % 19);
}

/* Trees as sorted "path=content" lines ("path/" for a directory). */
static const char OLD_TREE[] = "a=old-a\nsub/\nsub/b=old-b\n";
static const char NEW_TREE[] = "a=new-a\nc=new-c\nsub2/\nsub2/d=new-d\n";

static void put(const char *dir, const char *name, const char *content) {
  char *p = ckl_test_path(dir, name);
  ckl_test_write_file(p, content, strlen(content));
  free(p);
}

static void make_old_tree(const char *root) {
  assert_int_equal(mkdir(root, 0755), 0);
  put(root, "a", "old-a");
  char *sub = ckl_test_path(root, "sub");
  assert_int_equal(mkdir(sub, 0755), 0);
  put(sub, "b", "old-b");
  free(sub);
}

/* Runs in the child: no cmocka asserts, just a status. */
static int make_new_tree(const char *root) {
  char *p[4] = {ckl_test_path(root, "a"), ckl_test_path(root, "c"), ckl_test_path(root, "sub2"),
                ckl_test_path(root, "sub2/d")};
  const char *content[4] = {"new-a", "new-c", NULL, "new-d"};
  int rc = 0;
  for (int i = 0; i < 4 && rc == 0; i++) {
    if (!content[i]) {
      if (mkdir(p[i], 0755) != 0) rc = -errno;
      continue;
    }
    int fd = open(p[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      rc = -errno;
      break;
    }
    size_t n = strlen(content[i]);
    if (write(fd, content[i], n) != (ssize_t)n || fsync(fd) != 0) rc = -EIO;
    close(fd);
  }
  for (int i = 0; i < 4; i++) free(p[i]);
  return rc;
}

static void tree_lines(const char *root, const char *prefix, char **out, size_t *len) {
  struct dirent **list;
  int n = scandir(root, &list, NULL, alphasort);
  assert_true(n >= 0);
  for (int i = 0; i < n; i++) {
    const char *name = list[i]->d_name;
    if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
      char *p = ckl_test_path(root, name);
      struct stat st;
      assert_int_equal(lstat(p, &st), 0);
      char *line = NULL;
      if (S_ISDIR(st.st_mode)) {
        assert_true(asprintf(&line, "%s%s/\n", prefix, name) > 0);
      } else {
        assert_true(S_ISREG(st.st_mode));
        char *data = ckl_test_read_file(p, NULL);
        assert_non_null(data);
        assert_true(asprintf(&line, "%s%s=%s\n", prefix, name, data) > 0);
        free(data);
      }
      *out = realloc(*out, *len + strlen(line) + 1);
      memcpy(*out + *len, line, strlen(line) + 1);
      *len += strlen(line);
      free(line);
      if (S_ISDIR(st.st_mode)) {
        char *sub_prefix = NULL;
        assert_true(asprintf(&sub_prefix, "%s%s/", prefix, name) > 0);
        tree_lines(p, sub_prefix, out, len);
        free(sub_prefix);
      }
      free(p);
    }
    free(list[i]);
  }
  free(list);
}

static char *tree_of(const char *root) {
  char *out = calloc(1, 1);
  size_t len = 0;
  tree_lines(root, "", &out, &len);
  return out;
}

/* ---- scenarios --------------------------------------------------------------- */

enum scenario {
  SC_FILE = 1,         /* replace an existing file */
  SC_DIR_EXISTING = 2, /* replace an existing directory (exchange) */
  SC_DIR_ABSENT = 4,   /* create a directory (rename, no old target) */
  SC_CLEAN_FILE = 8,   /* a cleanup crashes while holding an abandoned temp file */
  SC_CLEAN_DIR = 16,   /* ... an abandoned temp directory */
};

enum outcome { OLD, NEW };

typedef struct point {
  const char *name;
  unsigned scenarios;
  enum outcome outcome; /* what the target must hold after the crash */
  int temps;            /* temp entries the crash leaves, all abandoned */
  int sync_only;        /* not reached with CKL_ATOMIC_NOSYNC */
} point;

static const point points[] = {
    {"atomic.before_lock", SC_FILE, OLD, 1, 0},
    {"atomic.after_create", SC_FILE, OLD, 1, 0},
    {"atomic.after_write", SC_FILE, OLD, 1, 0},
    {"atomic.before_fsync", SC_FILE, OLD, 1, 1},
    {"atomic.before_rename", SC_FILE, OLD, 1, 0},
    {"atomic.after_rename", SC_FILE, NEW, 0, 0},
    {"atomic.dir_before_lock", SC_DIR_EXISTING | SC_DIR_ABSENT, OLD, 1, 0},
    {"atomic.dir_after_create", SC_DIR_EXISTING | SC_DIR_ABSENT, OLD, 1, 0},
    {"atomic.dir_before_rename", SC_DIR_EXISTING | SC_DIR_ABSENT, OLD, 1, 0},
    {"atomic.dir_after_exchange", SC_DIR_EXISTING, NEW, 1, 0}, /* the old tree */
    {"atomic.dir_after_rename", SC_DIR_ABSENT, NEW, 0, 0},
    {"atomic.cleanup_locked", SC_CLEAN_FILE | SC_CLEAN_DIR, OLD, 1, 0},
};

typedef struct child_arg {
  const char *fp;
  enum scenario sc;
  unsigned flags;
  const char *dir;    /* the directory holding the target */
  const char *target;
} child_arg;

static int file_child(const child_arg *a) {
  ckl_atomic_file af = {0};
  if (ckl_atomic_begin(&af, a->target, 0644, a->flags) != 0) return 20;
  if (ckl_atomic_write(&af, new_data, NEW_LEN / 2) != 0) return 21;
  if (ckl_atomic_write(&af, new_data + NEW_LEN / 2, NEW_LEN - NEW_LEN / 2) != 0) return 22;
  return ckl_atomic_commit(&af) == 0 ? 0 : 23;
}

static int dir_child(const child_arg *a) {
  ckl_atomic_dir ad = {0};
  if (ckl_atomic_dir_begin(&ad, a->target, 0755, a->flags) != 0) return 30;
  if (make_new_tree(ckl_atomic_dir_path(&ad)) != 0) return 31;
  return ckl_atomic_dir_commit(&ad) == 0 ? 0 : 32;
}

static int crash_child(void *p) {
  const child_arg *a = p;
  if (ckl_failpoint_arm(a->fp, "crash") != 0) return 10;
  switch (a->sc) {
    case SC_FILE: return file_child(a);
    case SC_DIR_EXISTING:
    case SC_DIR_ABSENT: return dir_child(a);
    case SC_CLEAN_FILE:
    case SC_CLEAN_DIR: return ckl_atomic_cleanup(a->dir) >= 0 ? 0 : 40;
  }
  return 11;
}

/* A writer that dies at `fp` before its rename (for the cleanup cases). */
static void abandon(const char *fp, enum scenario sc, const char *dir, const char *target) {
  child_arg a = {.fp = fp, .sc = sc, .dir = dir, .target = target};
  assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)), CKL_FAILPOINT_CRASH_STATUS);
}

static void assert_file_bytes(const char *path, const char *want, size_t want_len) {
  size_t len = 0;
  char *got = ckl_test_read_file(path, &len);
  assert_non_null(got);
  assert_int_equal(len, want_len);
  assert_memory_equal(got, want, len);
  free(got);
}

static void run_case(const point *pt, enum scenario sc, unsigned flags) {
  print_message("crash at %-26s scenario %2d flags %u\n", pt->name, (int)sc, flags);
  char *dir = ckl_test_path(tmpdir, "case");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *target = ckl_test_path(dir, "target");
  bool is_dir = sc != SC_FILE && sc != SC_CLEAN_FILE;
  bool old_exists = sc != SC_DIR_ABSENT;
  if (old_exists) {
    if (is_dir) make_old_tree(target);
    else ckl_test_write_file(target, old_data, OLD_LEN);
  }
  if (sc == SC_CLEAN_FILE) abandon("atomic.after_write", SC_FILE, dir, target);
  if (sc == SC_CLEAN_DIR) abandon("atomic.dir_before_rename", SC_DIR_EXISTING, dir, target);

  child_arg a = {.fp = pt->name, .sc = sc, .flags = flags, .dir = dir, .target = target};
  assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)), CKL_FAILPOINT_CRASH_STATUS);

  /* the target: exactly one whole version, never a mix, never missing */
  struct stat st;
  if (pt->outcome == OLD && !old_exists) {
    assert_int_equal(lstat(target, &st), -1);
    assert_int_equal(errno, ENOENT);
  } else if (is_dir) {
    char *tree = tree_of(target);
    assert_string_equal(tree, pt->outcome == OLD ? OLD_TREE : NEW_TREE);
    free(tree);
  } else if (pt->outcome == OLD) {
    assert_file_bytes(target, old_data, OLD_LEN);
  } else {
    assert_file_bytes(target, new_data, NEW_LEN);
  }
  /* the leftovers: exactly the expected temps, all removable */
  int target_entries = pt->outcome == OLD && !old_exists ? 0 : 1;
  assert_int_equal(ckl_test_count_entries(dir, "."), pt->temps);
  assert_int_equal(ckl_test_count_entries(dir, NULL), target_entries + pt->temps);
  assert_int_equal(ckl_atomic_cleanup(dir), pt->temps);
  assert_int_equal(ckl_test_count_entries(dir, NULL), target_entries);
  assert_int_equal(ckl_atomic_cleanup(dir), 0);

  /* and the store goes on: the next replace works */
  if (is_dir) {
    ckl_atomic_dir ad = {0};
    assert_int_equal(ckl_atomic_dir_begin(&ad, target, 0755, 0), 0);
    assert_int_equal(make_new_tree(ckl_atomic_dir_path(&ad)), 0);
    assert_int_equal(ckl_atomic_dir_commit(&ad), 0);
    char *tree = tree_of(target);
    assert_string_equal(tree, NEW_TREE);
    free(tree);
  } else {
    assert_int_equal(ckl_atomic_replace(target, new_data, NEW_LEN, 0644, 0), 0);
    assert_file_bytes(target, new_data, NEW_LEN);
  }
  assert_int_equal(ckl_test_count_entries(dir, NULL), 1);
  assert_int_equal(ckl_test_rmtree(dir), 0);
  free(target);
  free(dir);
}

static const point *find_point(const char *name) {
  for (size_t i = 0; i < CKL__ARRAY_SIZE(points); i++)
    if (strcmp(points[i].name, name) == 0) return &points[i];
  return NULL;
}

static void test_crash_every_atomic_failpoint(void **state) {
  (void)state;
  fill_versions();
  size_t covered = 0;
  for (size_t i = 0; i < ckl_failpoint_count(); i++) {
    const char *name = ckl_failpoint_catalog(i, NULL);
    if (strncmp(name, "atomic.", 7) != 0) continue;
    const point *pt = find_point(name);
    if (!pt) fail_msg("failpoint %s has no crash scenario in this test", name);
    covered++;
    for (unsigned sc = 1; sc <= SC_CLEAN_DIR; sc <<= 1) {
      if (!(pt->scenarios & sc)) continue;
      run_case(pt, (enum scenario)sc, 0);
      if (sc != SC_CLEAN_FILE && sc != SC_CLEAN_DIR && !pt->sync_only)
        run_case(pt, (enum scenario)sc, CKL_ATOMIC_NOSYNC);
    }
  }
  /* every scenario in the table names a catalogued point */
  assert_int_equal(covered, CKL__ARRAY_SIZE(points));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_crash_every_atomic_failpoint, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

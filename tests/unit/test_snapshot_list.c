/* Listing groups and snapshots (order, states, archive files, skipping
 * invalid names and symlinks) and the group/snapshot/manifest lock
 * helpers: paths in the lock namespace, busy answers naming the holder,
 * existence re-checked after locking (forced with a failpoint), the fixed
 * order, and locks_dir keeping every lock file out of the store. */
// ctest-labels: threads
#include "testutil.h"

#include <limits.h>
#define BIG (2 * PATH_MAX) /* room for a path plus a suffix, without truncation warnings */

#include <errno.h>
#include <ftw.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "datastore/store_internal.h"
#include "ops_util.h"

typedef ops_store fixture;

/* One store for the whole file (making one costs seconds on a busy disk);
 * each test uses its own group, and test_list, which asserts the complete
 * listing, runs first. */
static int setup(void **state) { return ops_group_setup(state, "snaplist"); }

/* mkdir -p of STORE/rel. */
static void mkdirs(fixture *f, const char *rel) { ckl_test_mkdirs(f->path, rel); }

static void touch(fixture *f, const char *rel) {
  char p[BIG];
  snprintf(p, sizeof p, "%s/%s", f->path, rel);
  ckl_test_write_file(p, "x", 1);
}

static void link_in(fixture *f, const char *target, const char *rel) {
  char p[BIG];
  snprintf(p, sizeof p, "%s/%s", f->path, rel);
  assert_int_equal(symlink(target, p), 0);
}

static bool exists(const char *dir, const char *rel) {
  char *p = ckl_test_path(dir, rel);
  struct stat st;
  bool yes = lstat(p, &st) == 0;
  free(p);
  return yes;
}

static ckl_snapshot_name snap(const char *s) {
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_parse(s, &n), 0);
  return n;
}

static void test_list(void **state) {
  fixture *f = *state;
  size_t n;
  ckl_group_name *groups;
  assert_int_equal(ckl_group_list(f->st, &groups, &n), 0);
  assert_int_equal(n, 0);
  assert_null(groups);

  /* Three snapshots, deliberately created out of order. */
  mkdirs(f, "host/web/2026-01-02T00:00:00Z");
  mkdirs(f, "host/web/2026-03-01T12:00:00Z");
  mkdirs(f, "host/web/2025-12-31T23:59:59Z");
  touch(f, "host/web/2026-03-01T12:00:00Z/index.json");
  touch(f, "host/web/2026-03-01T12:00:00Z/root.didx");
  touch(f, "host/web/2026-03-01T12:00:00Z/disk.fidx");
  touch(f, "host/web/2026-03-01T12:00:00Z/.root.didx.tmp-1234");
  touch(f, "host/web/2026-03-01T12:00:00Z/client.log");
  mkdirs(f, "host/web/2026-03-01T12:00:00Z/dir.didx");
  link_in(f, "root.didx", "host/web/2026-03-01T12:00:00Z/link.didx");
  touch(f, "host/web/2025-12-31T23:59:59Z/index.json");
  /* index.json as a symlink is not a manifest. */
  link_in(f, "/etc/hostname", "host/web/2026-01-02T00:00:00Z/index.json");
  touch(f, "host/web/2026-01-02T00:00:00Z/a.didx");
  /* Junk that must be skipped. */
  mkdirs(f, "host/web/not-a-time");
  mkdirs(f, "host/web/2026-02-30T00:00:00Z");
  mkdirs(f, "host/web/.2026-01-01T00:00:00Z");
  touch(f, "host/web/2021-01-01T00:00:00Z");
  mkdirs(f, "elsewhere/x/2022-01-01T00:00:00Z");
  link_in(f, "../elsewhere/x/2022-01-01T00:00:00Z", "host/web/2022-01-01T00:00:00Z");
  link_in(f, "web", "host/linked");
  mkdirs(f, "Upper/x");
  mkdirs(f, "vm/.hidden");
  mkdirs(f, "vm/100");
  touch(f, "vm/file");
  link_in(f, "vm", "ct");
  touch(f, "notes");

  assert_int_equal(ckl_group_list(f->st, &groups, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(groups[0].type, "elsewhere");
  assert_string_equal(groups[0].id, "x");
  assert_string_equal(groups[1].type, "host");
  assert_string_equal(groups[1].id, "web");
  assert_string_equal(groups[2].type, "vm");
  assert_string_equal(groups[2].id, "100");
  free(groups);

  ckl_group_name g = {.type = "host", .id = "web"};
  ckl_snapshot_info *list;
  assert_int_equal(ckl_snapshot_list(f->st, &g, &list, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(list[0].name.time, "2026-03-01T12:00:00Z");
  assert_int_equal(list[0].state, CKL_SNAP_COMPLETE);
  assert_int_equal(list[0].nfiles, 2);
  assert_string_equal(list[0].files[0], "disk.fidx");
  assert_string_equal(list[0].files[1], "root.didx");
  assert_string_equal(list[1].name.time, "2026-01-02T00:00:00Z");
  assert_int_equal(list[1].state, CKL_SNAP_IN_PROGRESS);
  assert_int_equal(list[1].nfiles, 1);
  assert_string_equal(list[1].files[0], "a.didx");
  assert_string_equal(list[2].name.time, "2025-12-31T23:59:59Z");
  assert_int_equal(list[2].state, CKL_SNAP_COMPLETE);
  assert_int_equal(list[2].nfiles, 0);
  assert_null(list[2].files);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(list[i].name.type, "host");
    assert_string_equal(list[i].name.id, "web");
    assert_true(ckl__snapshot_name_ok(&list[i].name));
  }
  ckl_snapshot_list_free(list, n);

  /* A symlinked group or type is not listed through. */
  ckl_group_name linked = {.type = "host", .id = "linked"};
  assert_int_equal(ckl_snapshot_list(f->st, &linked, &list, &n), -ENOENT);
  ckl_group_name via_ct = {.type = "ct", .id = "100"};
  assert_int_equal(ckl_snapshot_list(f->st, &via_ct, &list, &n), -ENOENT);
  ckl_group_name missing = {.type = "host", .id = "nope"};
  assert_int_equal(ckl_snapshot_list(f->st, &missing, &list, &n), -ENOENT);
  ckl_group_name bad = {.type = "host", .id = ".."};
  assert_int_equal(ckl_snapshot_list(f->st, &bad, &list, &n), -EINVAL);
  ckl_group_name empty = {.type = "vm", .id = "100"};
  assert_int_equal(ckl_snapshot_list(f->st, &empty, &list, &n), 0);
  assert_int_equal(n, 0);
  ckl_snapshot_list_free(list, n);

  char p[BIG];
  ckl_snapshot_name sn = snap("host/web/2026-03-01T12:00:00Z");
  assert_true(ckl_snapshot_path(f->st, &sn, p, sizeof p) > 0);
  char expect[BIG];
  snprintf(expect, sizeof expect, "%s/host/web/2026-03-01T12:00:00Z", ckl_store_path(f->st));
  assert_string_equal(p, expect);
}

static void test_lock_paths_and_busy(void **state) {
  fixture *f = *state;
  const char *root = ckl_store_locks_root(f->st);
  ckl_snapshot_name sn = snap("host/locks/2026-03-01T12:00:00Z");
  ckl_group_name g = {.type = "host", .id = "locks"};
  mkdirs(f, "host/locks/2026-03-01T12:00:00Z");

  ckl_path_lock gl = {0}, gl2 = {0};
  ckl_holder who = {0};
  ckl_snap_lock_opts bo = {.operation = "backup"};
  ckl_snap_lock_opts po = {.operation = "prune", .busy_holder = &who};
  assert_int_equal(ckl_group_lock(f->st, &g, &gl, &bo), 0);
  assert_true(exists(root, "host/locks.lck"));
  assert_int_equal(ckl_group_lock(f->st, &g, &gl2, &po), CKL_EBUSY);
  assert_int_equal(gl2.held, 0);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(who.pid, getpid());
  assert_int_equal(ckl_path_lock_release(&gl), 0);
  assert_int_equal(ckl_group_lock(f->st, &g, &gl2, &po), 0);
  assert_int_equal(ckl_path_lock_release(&gl2), 0);

  /* Snapshot lock: shared with shared, exclusive against either. */
  ckl_path_lock r1 = {0}, r2 = {0}, w = {0};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &r1, NULL), 0);
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &r2, NULL), 0);
  assert_true(exists(root, "host/locks/2026-03-01T12:00:00Z.lck"));
  memset(&who, 0, sizeof who);
  ckl_snap_lock_opts fo = {.operation = "forget", .busy_holder = &who};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &w, &fo), CKL_EBUSY);
  assert_int_equal(w.held, 0);
  assert_int_equal(ckl_path_lock_release(&r1), 0);
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &w, &fo), CKL_EBUSY);
  assert_int_equal(ckl_path_lock_release(&r2), 0);
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &w, &fo), 0);
  memset(&who, 0, sizeof who);
  ckl_snap_lock_opts ro = {.busy_holder = &who};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &r1, &ro), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "forget");
  assert_int_equal(ckl_path_lock_release(&w), 0);

  /* Manifest lock: exclusive, waits up to the deadline. */
  ckl_path_lock m1 = {0}, m2 = {0};
  ckl_snap_lock_opts vo = {.operation = "verify"};
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &m1, &vo), 0);
  assert_true(exists(root, "host/locks/2026-03-01T12:00:00Z.manifest.lck"));
  memset(&who, 0, sizeof who);
  ckl_snap_lock_opts to = {.timeout_ms = 30, .busy_holder = &who};
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &m2, &to), CKL_ETIMEDOUT);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "verify");
  assert_int_equal(ckl_path_lock_release(&m1), 0);
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &m2, &to), 0);
  assert_int_equal(ckl_path_lock_release(&m2), 0);

  /* Nothing was created inside the snapshot (data) directory. */
  char snapdir[BIG];
  ckl_snapshot_path(f->st, &sn, snapdir, sizeof snapdir);
  assert_int_equal(ckl_test_count_entries(snapdir, NULL), 0);

  /* Bad arguments. */
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, (ckl_lock_mode)9, &w, NULL), -EINVAL);
  ckl_snapshot_name broken = sn;
  broken.time_s++;
  assert_int_equal(ckl_snapshot_lock(f->st, &broken, CKL_LOCK_SHARED, &w, NULL), -EINVAL);
  ckl_group_name badg = {.type = "host", .id = "a/b"};
  assert_int_equal(ckl_group_lock(f->st, &badg, &w, NULL), -EINVAL);
}

static void test_lock_missing_snapshot(void **state) {
  fixture *f = *state;
  const char *root = ckl_store_locks_root(f->st);
  ckl_snapshot_name sn = snap("host/new/2026-03-01T12:00:00Z");
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &lk, NULL), -ENOENT);
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &lk, NULL), -ENOENT);
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &lk, NULL), -ENOENT);
  /* No lock litter for a snapshot that does not exist. */
  assert_false(exists(root, "host/new"));
  /* A symlink where the snapshot belongs is not a snapshot. */
  mkdirs(f, "host/new/elsewhere");
  link_in(f, "elsewhere", "host/new/2026-03-01T12:00:00Z");
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_SHARED, &lk, NULL), -ENOENT);

  /* A backup locks the name before it creates the directory. */
  ckl_snapshot_name sn2 = snap("host/new/2026-03-02T12:00:00Z");
  ckl_snap_lock_opts co = {.operation = "backup", .flags = CKL_SNAP_LOCK_CREATING};
  assert_int_equal(ckl_snapshot_lock(f->st, &sn2, CKL_LOCK_EXCLUSIVE, &lk, &co), 0);
  assert_true(exists(root, "host/new/2026-03-02T12:00:00Z.lck"));
  assert_int_equal(ckl_path_lock_release(&lk), 0);
}

/* The snapshot is forgotten while the locker is between its existence
 * check and the lock: the re-check after the lock answers -ENOENT, and an
 * exclusive locker removes the lock file it made. */
static void forgotten_while_locking(fixture *f, ckl_lock_mode mode, int manifest) {
  const char *root = ckl_store_locks_root(f->st);
  mkdirs(f, "host/gone/2026-03-01T12:00:00Z");
  ops_locker a = {.s = f, .sn = snap("host/gone/2026-03-01T12:00:00Z"), .mode = mode,
                  .manifest = manifest, .rc = 1};
  assert_int_equal(ckl_failpoint_arm("flock.before_lock", "pause"), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, ops_locker_main, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.before_lock", 1, CKL_TEST_WAIT_MS), 0);
  char p[BIG];
  snprintf(p, sizeof p, "%s/host/gone/2026-03-01T12:00:00Z", f->path);
  assert_int_equal(rmdir(p), 0);
  ckl_failpoint_disarm("flock.before_lock");
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a.rc, -ENOENT);
  assert_int_equal(a.lk.held, 0);
  const char *lockname = manifest ? "host/gone/2026-03-01T12:00:00Z.manifest.lck"
                                  : "host/gone/2026-03-01T12:00:00Z.lck";
  assert_int_equal(exists(root, lockname), mode == CKL_LOCK_SHARED);
}

static void test_forgotten_while_locking(void **state) {
  fixture *f = *state;
  forgotten_while_locking(f, CKL_LOCK_SHARED, 0);
  forgotten_while_locking(f, CKL_LOCK_EXCLUSIVE, 0);
  forgotten_while_locking(f, CKL_LOCK_EXCLUSIVE, 1);
}

static void test_lock_order(void **state) {
  fixture *f = *state;
  mkdirs(f, "host/order/2026-03-01T12:00:00Z");
  ckl_snapshot_name sn = snap("host/order/2026-03-01T12:00:00Z");
  ckl_group_name g = {.type = "host", .id = "order"};
  ckl_lock_order order = {0};
  ckl_snap_lock_opts o = {.order = &order, .operation = "forget"};
  ckl_path_lock gl = {0}, sl = {0}, ml = {0};
  assert_int_equal(ckl_group_lock(f->st, &g, &gl, &o), 0);
  assert_int_equal(ckl_snapshot_lock(f->st, &sn, CKL_LOCK_EXCLUSIVE, &sl, &o), 0);
  assert_int_equal(ckl_manifest_lock(f->st, &sn, &ml, &o), 0);
  assert_int_equal(order.n, 3);
  assert_int_equal(order.held[0], CKL_LEVEL_GROUP);
  assert_int_equal(order.held[1], CKL_LEVEL_SNAPSHOT);
  assert_int_equal(order.held[2], CKL_LEVEL_MANIFEST);
  ckl_path_lock_release(&ml);
  ckl_path_lock_release(&sl);
  ckl_path_lock_release(&gl);
  assert_int_equal(order.n, 0);
}

static int reversed_order_child(void *p) {
  fixture *f = p;
  ckl_store *st;
  if (ckl_store_open(f->path, NULL, &st) != 0) return 1;
  ckl_snapshot_name sn = snap("host/order/2026-03-01T12:00:00Z");
  ckl_group_name g = {.type = "host", .id = "order"};
  ckl_lock_order order = {0};
  ckl_snap_lock_opts o = {.order = &order};
  ckl_path_lock ml = {0}, gl = {0};
  if (ckl_manifest_lock(st, &sn, &ml, &o) != 0) return 2;
  int rc = ckl_group_lock(st, &g, &gl, &o);
  return rc == CKL_ELOCKORDER && !gl.held ? 42 : 3;
}

/* Manifest then group is a reversed order: refused (or, in CKL_DEBUG
 * builds, abort()). Run in a child so either outcome is observable. */
static void test_lock_order_violation(void **state) {
  fixture *f = *state;
  mkdirs(f, "host/order/2026-03-01T12:00:00Z");
  int status = ckl_test_wait(ckl_test_fork(reversed_order_child, f));
  assert_true(status == 42 || status == 128 + 6);
}

static int tree_count;
static int count_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)p;
  (void)sb;
  (void)flag;
  (void)ftw;
  tree_count++;
  return 0;
}

/* Entries below dir, recursively (dir itself included). */
static int count_tree(const char *dir) {
  tree_count = 0;
  assert_int_equal(nftw(dir, count_cb, 16, FTW_PHYS), 0);
  return tree_count;
}

/* With a locks_dir, every lock file lives under <locks_dir>/<uuid>/ and
 * nothing appears under STORE/.locks (nor in the snapshot directory). */
static void check_external_locks(fixture *f, ckl_store *st, const char *locks) {
  char *root = ckl_test_path(locks, ckl_store_get_config(st)->uuid);
  assert_string_equal(ckl_store_locks_root(st), root);
  char *inside = ckl_test_path(f->path, ".locks");
  int before = count_tree(inside);
  mkdirs(f, "host/ext/2026-03-01T12:00:00Z");
  ckl_snapshot_name sn = snap("host/ext/2026-03-01T12:00:00Z");
  ckl_group_name g = {.type = "host", .id = "ext"};
  ckl_path_lock gl = {0}, sl = {0}, ml = {0};
  assert_int_equal(ckl_group_lock(st, &g, &gl, NULL), 0);
  assert_int_equal(ckl_snapshot_lock(st, &sn, CKL_LOCK_EXCLUSIVE, &sl, NULL), 0);
  assert_int_equal(ckl_manifest_lock(st, &sn, &ml, NULL), 0);
  assert_true(exists(root, "host/ext.lck"));
  assert_true(exists(root, "host/ext/2026-03-01T12:00:00Z.lck"));
  assert_true(exists(root, "host/ext/2026-03-01T12:00:00Z.manifest.lck"));
  struct stat sb;
  assert_int_equal(stat(root, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0700);
  char *p = ckl_test_path(root, "host/ext");
  assert_int_equal(stat(p, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0700);
  free(p);
  ckl_path_lock_release(&ml);
  ckl_path_lock_release(&sl);
  ckl_path_lock_release(&gl);
  assert_int_equal(count_tree(inside), before);
  assert_false(exists(inside, "host/ext"));
  assert_false(exists(inside, "host/ext.lck"));
  p = ckl_test_path(f->path, "host/ext/2026-03-01T12:00:00Z");
  assert_int_equal(ckl_test_count_entries(p, NULL), 0);
  free(p);
  free(inside);
  free(root);
}

static void test_locks_dir(void **state) {
  fixture *f = *state;
  /* Given at open time to a store created without one. */
  char *other = ckl_test_path(f->dir, "tmpfs-locks");
  assert_int_equal(mkdir(other, 0755), 0);
  ckl_store_open_opts oo = {.locks_dir = other};
  ckl_store *st;
  assert_int_equal(ckl_store_open(f->path, &oo, &st), 0);
  check_external_locks(f, st, other);
  ckl_store_close(st);

  /* Configured in chunklock.json (ckl_store_create writes it there, see
   * test_store); the directory itself is created on demand. */
  char *cfg = ckl_test_path(f->path, CKL_STORE_CONFIG_NAME);
  size_t len;
  char *saved = ckl_test_read_file(cfg, &len);
  json_t *j = json_loads(saved, 0, NULL);
  assert_non_null(j);
  char *locks = ckl_test_path(f->dir, "run-locks");
  json_object_set_new(j, "locks_dir", json_string(locks));
  char *text = json_dumps(j, JSON_SORT_KEYS | JSON_INDENT(2));
  ckl_test_write_file(cfg, text, strlen(text));
  assert_int_equal(ckl_store_open(f->path, NULL, &st), 0);
  assert_string_equal(ckl_store_get_config(st)->locks_dir, locks);
  check_external_locks(f, st, locks);
  ckl_store_close(st);
  ckl_test_write_file(cfg, saved, len);
  free(text);
  json_decref(j);
  free(saved);
  free(cfg);
  free(locks);
  free(other);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_list, ops_disarm),
      cmocka_unit_test_teardown(test_lock_paths_and_busy, ops_disarm),
      cmocka_unit_test_teardown(test_lock_missing_snapshot, ops_disarm),
      cmocka_unit_test_teardown(test_forgotten_while_locking, ops_disarm),
      cmocka_unit_test_teardown(test_lock_order, ops_disarm),
      cmocka_unit_test_teardown(test_lock_order_violation, ops_disarm),
      cmocka_unit_test_teardown(test_locks_dir, ops_disarm),
  };
  return cmocka_run_group_tests(tests, setup, ops_group_teardown);
}

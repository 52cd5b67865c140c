/*
 * I/O errors: error(EIO) armed at the failpoints that stand for a failed
 * fsync (chunk insert, chunk store syncfs, atomic file, state commit) or a
 * failed read (chunk, index, manifest). For each: the operation returns
 * exactly -EIO (the GC, which refuses to sweep on an incomplete view,
 * CKL_EGCABORT), the log names the file and the cause, and the store is
 * not damaged: fsck is clean, the earlier snapshots read back exactly,
 * nothing half-written is left, and the same operation retried succeeds.
 */
#include "testutil.h"

#include "ops_util.h"

#include "crash_util.h"

#define EIO_TEXT "Input/output error"

static const cu_snap A = {"host", "a", 0, {{"root.didx", {1, 2, 3}, 3}, {"disk.fidx", {4}, 1}}, 2};

typedef struct eio_fx {
  ops_store o;
} eio_fx;

static int setup_sync(void **state, ckl_sync_policy sync) {
  eio_fx *f = calloc(1, sizeof *f);
  cu_store_new(&f->o, "eio", sync);
  assert_int_equal(cu_backup(f->o.st, &A, false), 0);
  *state = f;
  return 0;
}
static int setup_file(void **state) { return setup_sync(state, CKL_SYNC_FILE); }
static int setup_fs(void **state) { return setup_sync(state, CKL_SYNC_FILESYSTEM); }

static int teardown(void **state) {
  eio_fx *f = *state;
  ckl_failpoint_disarm_all();
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  ckl_store_close(f->o.st);
  ops_rmtree(f->o.dir);
  free(f->o.path);
  free(f->o.dir);
  free(f);
  return 0;
}

/* Arm point with error(EIO) and capture the log. */
static void arm(const char *point) {
  ckl_test_log_capture();
  ckl_test_log_clear();
  assert_int_equal(ckl_failpoint_arm(point, "error(EIO)"), 0);
}

/* Disarm, then: fsck clean, A exact, no insert temp of any chunk used here,
 * no roster record, nothing in .trash. */
static void store_intact(eio_fx *f) {
  ckl_failpoint_disarm_all();
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  assert_int_equal(cu_fsck(&f->o, 0), 0);
  assert_int_equal(cu_read_back(f->o.st, &A), 0);
  static const uint32_t seeds[] = {1, 2, 3, 4, 10, 11, 12};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(seeds); i++)
    assert_int_equal(cu_prefix_entries(&f->o, seeds[i], ".tmp-", 0), 0);
  assert_int_equal(cu_roster_count(&f->o), 0);
  assert_int_equal(ops_trash_count(&f->o), 0);
}

/* The next snapshot of host/a (new chunks 10, 11, reuses 1). */
static const cu_snap B = {"host", "a", 10, {{"root.didx", {1 | CU_REUSE, 10, 11}, 3}}, 1};

/* A failed backup publishes nothing; the retry does. */
static void backup_fails_then_retry(eio_fx *f, int want_rc, const char *const *needles) {
  int rc = cu_backup(f->o.st, &B, false);
  assert_int_equal(rc, want_rc);
  for (size_t i = 0; needles[i]; i++) ckl_test_assert_logged(needles[i]);
  assert_false(cu_present(&f->o, &B));
  store_intact(f);
  assert_int_equal(cu_backup(f->o.st, &B, false), 0);
  assert_int_equal(cu_read_back(f->o.st, &B), 0);
  assert_int_equal(cu_fsck(&f->o, 0), 0);
}

static void test_chunk_fsync(void **state) {
  eio_fx *f = *state;
  arm("chunk.insert.before_fsync");
  const char *n[] = {"/.tmp-", ": fsync: " EIO_TEXT, NULL};
  backup_fails_then_retry(f, -EIO, n);
}

static void test_chunk_syncfs(void **state) {
  eio_fx *f = *state;
  arm("chunk.sync.before_syncfs");
  char want[PATH_MAX + 64];
  snprintf(want, sizeof want, "chunk store %s/.chunks: syncfs: " EIO_TEXT, f->o.path);
  const char *n[] = {want, NULL};
  backup_fails_then_retry(f, -EIO, n);
}

static void test_index_fsync(void **state) {
  eio_fx *f = *state;
  arm("atomic.before_fsync");
  const char *n[] = {"/root.didx: fsync ", EIO_TEXT, NULL};
  backup_fails_then_retry(f, -EIO, n);
}

static void test_state_commit(void **state) {
  eio_fx *f = *state;
  arm("state.txn.before_commit");
  const char *n[] = {"/.state/data.mdb: committing: " EIO_TEXT, NULL};
  backup_fails_then_retry(f, -EIO, n);
  /* A forget whose state transactions cannot commit changes nothing. */
  ckl_snapshot_name a = cu_name(&A);
  arm("state.txn.before_commit");
  assert_int_equal(ckl_forget(f->o.st, &a, NULL), -EIO);
  ckl_test_assert_logged("/.state/data.mdb: committing: " EIO_TEXT);
  store_intact(f);
  assert_int_equal(ckl_forget(f->o.st, &a, NULL), CKL_FORGET_DELETED);
  assert_false(cu_present(&f->o, &A));
}

static void test_manifest_fsync(void **state) {
  eio_fx *f = *state;
  ckl_snapshot_name a = cu_name(&A);
  char *dir = ops_snap_dir(&f->o, &a);
  char *p = ckl_test_path(dir, "index.json");
  char *before = ckl_test_read_file(p, NULL);
  arm("atomic.before_fsync");
  assert_int_equal(ckl_verify(f->o.st, &a, NULL, NULL), -EIO);
  ckl_test_assert_logged("/index.json: fsync ");
  ckl_test_assert_logged(EIO_TEXT);
  char *after = ckl_test_read_file(p, NULL);
  assert_string_equal(before, after); /* the old manifest, whole */
  assert_int_equal(ckl_test_count_entries(dir, ".index.json.tmp-"), 0);
  store_intact(f);
  assert_int_equal(ckl_verify(f->o.st, &a, NULL, NULL), 0);
  free(p);
  free(before);
  free(after);
  free(dir);
}

/* Reads: a reader and a verify get -EIO naming the file; verify writes
 * nothing; the GC aborts rather than sweep on a partial view. */
static void read_case(eio_fx *f, const char *point, const char *needle, bool at_open) {
  ckl_snapshot_name a = cu_name(&A);
  /* garbage the GC would sweep if it (wrongly) went on */
  unsigned char buf[CU_CHUNK];
  ckl_digest d;
  cu_chunk(12, buf, &d);
  assert_int_equal(ckl_chunk_insert(f->o.st->chunks, &d, buf, CU_CHUNK, NULL), CKL_INSERT_NEW);
  cu_age_chunk(&f->o, 12, 3600);

  arm(point);
  int rc = cu_read_back(f->o.st, &A);
  assert_int_equal(rc, -EIO);
  ckl_test_assert_logged(needle);
  ckl_test_assert_logged(f->o.path);
  ckl_test_assert_logged(at_open ? ": read: " EIO_TEXT : ": " EIO_TEXT ": read");
  ckl_test_log_clear();
  ckl_verify_result vr;
  assert_int_equal(ckl_verify(f->o.st, &a, NULL, &vr), -EIO);
  ckl_test_assert_logged(needle);
  json_t *m;
  assert_int_equal(ckl_failpoint_disarm(point), 0);
  assert_int_equal(ckl_manifest_load(f->o.st, &a, &m), 0);
  assert_null(json_object_get(json_object_get(m, "unprotected"), "verify_state"));
  json_decref(m);
  if (strcmp(point, "chunk.read.after_open") != 0) {
    /* the GC reads indexes (not chunks, not manifests: it only lists) */
    arm(point);
    ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0};
    rc = ckl_gc_run(f->o.st, &go, NULL);
    if (strncmp(point, "index.", 6) == 0) {
      assert_int_equal(rc, CKL_EGCABORT);
      ckl_test_assert_logged(needle);
      assert_true(cu_has_chunk(&f->o, 12)); /* nothing swept */
    } else {
      assert_int_equal(rc, 0);
    }
  }
  store_intact(f);
  assert_int_equal(ckl_verify(f->o.st, &a, NULL, NULL), 0);
  ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0};
  assert_int_equal(ckl_gc_run(f->o.st, &go, NULL), 0);
  assert_false(cu_has_chunk(&f->o, 12));
  assert_int_equal(cu_read_back(f->o.st, &A), 0);
}

static void test_chunk_read(void **state) {
  read_case(*state, "chunk.read.after_open", "/.chunks/", false);
}
static void test_index_read(void **state) {
  read_case(*state, "index.open.after_open", "/2023-11-14T22:13:20Z/", true);
}
/* The read itself (pread), after the open: the reader and verify meet
 * it first in the file checksum, the GC in the index open. */
static void test_index_pread(void **state) {
  read_case(*state, "index.read.before_pread", "idx: read: " EIO_TEXT, true);
}
static void test_manifest_read(void **state) {
  read_case(*state, "manifest.load.before_read", "/2023-11-14T22:13:20Z/index.json: read: ", true);
}

#define F(t) cmocka_unit_test_setup_teardown(t, setup_file, teardown)
int main(void) {
  const struct CMUnitTest tests[] = {
      F(test_chunk_fsync),
      cmocka_unit_test_setup_teardown(test_chunk_syncfs, setup_fs, teardown),
      F(test_index_fsync),
      F(test_state_commit),
      F(test_manifest_fsync),
      F(test_chunk_read),
      F(test_index_read),
      F(test_index_pread),
      F(test_manifest_read),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

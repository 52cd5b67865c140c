/* The invariant checker (tests/support/invariants.h) can fail: a clean
 * store passes, and each way of breaking an invariant is reported with
 * its exact code and a message naming the culprit; undoing the damage
 * makes the store pass again, so each case isolates one invariant. */
#include "testutil.h"

#include "ops_util.h"

#include "invariants.h"

static int group_setup(void **state) { return ops_group_setup(state, "inv"); }

static ckl_snapshot_name snap_a;

static int setup(void **state) {
  ops_store *s = *state;
  ops_store_reset(s);
  snap_a = ops_make_snapshot(s->st, "host", "a", 0, 1);
  return 0;
}

static const ckl_inv_opts quiet = {.quiescent = 1};
static char why[1024];

#define EXPECT(rc_expr, code, needle)                                                          \
  do {                                                                                         \
    int rc_ = (rc_expr);                                                                       \
    if (rc_ != (code)) fail_msg("got %s (%s), want %s", ckl_err_name(rc_), why, #code);        \
    if (!strstr(why, needle)) fail_msg("\"%s\" does not name \"%s\"", why, needle);            \
  } while (0)

static void expect_clean(ops_store *s) {
  int rc = ckl_inv_check(s->path, &quiet, why, sizeof why);
  if (rc != 0) fail_msg("store should pass: %s (%s)", ckl_err_name(rc), why);
}

/* The first chunk of host/a's root.didx. */
static ckl_digest first_chunk(ops_store *s) {
  char *dir = ops_snap_dir(s, &snap_a);
  char *p = ckl_test_path(dir, "root.didx");
  ckl_index *ix;
  assert_int_equal(ckl_index_open(p, &ix), 0);
  ckl_digest d = *ckl_index_digest(ix, 0);
  ckl_index_close(ix);
  free(p);
  free(dir);
  return d;
}

static void test_clean_store_passes(void **state) {
  ops_store *s = *state;
  expect_clean(s);
  assert_int_equal(ckl_inv_no_leftovers(s->path, "host/a/2023-11-14T22:13:20Z", NULL, why, sizeof why), 0);
  assert_int_equal(ckl_inv_check("/nonexistent/store", NULL, why, sizeof why), CKL_INV_ESTORE);
}

static void test_missing_chunk(void **state) {
  ops_store *s = *state;
  ckl_digest d = first_chunk(s);
  char *cp = ops_chunk_path(s, &d);
  size_t len;
  char *saved = ckl_test_read_file(cp, &len);
  assert_int_equal(unlink(cp), 0);
  char hex[CKL_DIGEST_HEX_LEN + 1];
  ckl_digest_to_hex(&d, hex);
  EXPECT(ckl_inv_check(s->path, NULL, why, sizeof why), CKL_INV_ECHUNK_MISSING, hex);
  assert_non_null(strstr(why, "host/a/2023-11-14T22:13:20Z/root.didx"));
  ckl_test_write_file(cp, saved, len);
  expect_clean(s);
  /* a chunk an in-progress backup wrote must exist too */
  ckl_digest absent;
  ckl_digest_compute("never written", 13, &absent);
  ckl_inv_opts o = {.live_chunks = &absent, .nlive_chunks = 1};
  ckl_digest_to_hex(&absent, hex);
  EXPECT(ckl_inv_check(s->path, &o, why, sizeof why), CKL_INV_ECHUNK_MISSING, hex);
  o.live_chunks = &d;
  assert_int_equal(ckl_inv_check(s->path, &o, why, sizeof why), 0);
  free(saved);
  free(cp);
}

static void test_corrupt_chunk(void **state) {
  ops_store *s = *state;
  ckl_digest d = first_chunk(s);
  char *cp = ops_chunk_path(s, &d);
  size_t len;
  char *img = ckl_test_read_file(cp, &len);
  img[len - 1] ^= 0x5a; /* payload byte: the CRC no longer matches */
  ckl_test_write_file(cp, img, len);
  char hex[CKL_DIGEST_HEX_LEN + 1];
  ckl_digest_to_hex(&d, hex);
  EXPECT(ckl_inv_check(s->path, NULL, why, sizeof why), CKL_INV_ECHUNK_CORRUPT, hex);
  img[len - 1] ^= 0x5a;
  ckl_test_write_file(cp, img, len);
  expect_clean(s);
  free(img);
  free(cp);
}

static void test_bad_index(void **state) {
  ops_store *s = *state;
  char *dir = ops_snap_dir(s, &snap_a);
  char *p = ckl_test_path(dir, "root.didx");
  size_t len;
  char *img = ckl_test_read_file(p, &len);
  assert_int_equal(truncate(p, 100), 0);
  EXPECT(ckl_inv_check(s->path, NULL, why, sizeof why), CKL_INV_EINDEX, "root.didx");
  ckl_test_write_file(p, img, len);
  expect_clean(s);
  free(img);
  free(p);
  free(dir);
}

static int bump(json_t *m, void *arg) {
  (void)arg;
  json_t *u = json_object_get(m, "unprotected");
  json_int_t v = json_integer_value(json_object_get(u, "counter"));
  return json_object_set_new(u, "counter", json_integer(v + 1));
}

static void test_lost_update(void **state) {
  ops_store *s = *state;
  assert_int_equal(ckl_update_manifest(s->st, &snap_a, bump, NULL, NULL), 0);
  assert_int_equal(ckl_update_manifest(s->st, &snap_a, bump, NULL, NULL), 0);
  ckl_inv_counter k = {.snapshot = "host/a/2023-11-14T22:13:20Z", .expected = 3};
  ckl_inv_opts o = {.quiescent = 1, .counters = &k, .ncounters = 1};
  EXPECT(ckl_inv_check(s->path, &o, why, sizeof why), CKL_INV_ELOST_UPDATE, "is 2, expected 3");
  k.expected = 2;
  assert_int_equal(ckl_inv_check(s->path, &o, why, sizeof why), 0);
  /* a forgotten snapshot: lost unless the test says it may be gone */
  assert_int_equal(ckl_forget(s->st, &snap_a, NULL), CKL_FORGET_DELETED);
  EXPECT(ckl_inv_check(s->path, &o, why, sizeof why), CKL_INV_ELOST_UPDATE, "host/a/");
  k.gone_ok = 1;
  assert_int_equal(ckl_inv_check(s->path, &o, why, sizeof why), 0);
}

static void test_lock_held(void **state) {
  ops_store *s = *state;
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_snapshot_lock(s->st, &snap_a, CKL_LOCK_SHARED, &lk, NULL), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_ELOCK_HELD,
         "2023-11-14T22:13:20Z.lck");
  /* not quiescent: locks are allowed */
  assert_int_equal(ckl_inv_check(s->path, NULL, why, sizeof why), 0);
  ckl_path_lock_release(&lk);
  expect_clean(s);

  ckl_gclock gl = {0};
  assert_int_equal(ckl_gclock_acquire(s->st->lock_path, &gl, CKL_TRY, NULL), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_ELOCK_HELD, "byte 1 (GC lock)");
  ckl_gclock_release(&gl);

  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_shared(s->st->proclock, &g, CKL_TRY, NULL), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_ELOCK_HELD,
         "byte 0 (process locker)");
  ckl_proclock_release(&g);
  expect_clean(s);
}

static void test_roster_record(void **state) {
  ops_store *s = *state;
  ckl_deleter del = {0};
  ckl_freeze_opts fo = {.operation = "forget"};
  assert_int_equal(ckl_deleter_acquire(s->st, &del, &fo), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_ELOCK_HELD,
         "byte 3 (deleter guard)");
  ckl_deleter_release(&del);
  /* a record without a lock: a holder that forgot to deregister */
  ckl__state *state_h;
  assert_int_equal(ckl__state_open(s->path, &state_h), 0);
  char tok[CKL_TOKEN_HEX_LEN + 1];
  ckl__roster_reg reg = {.operation = "verify", .target = "host/a/2023-11-14T22:13:20Z"};
  assert_int_equal(ckl__state_register(state_h, &reg, tok), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_EROSTER, "verify pid");
  int64_t me = getpid();
  ckl_inv_opts o = {.quiescent = 1, .pids = &me, .npids = 1};
  assert_int_equal(ckl_inv_check(s->path, &o, why, sizeof why), 0);
  assert_int_equal(ckl__state_deregister(state_h, tok), 0);
  ckl__state_close(state_h);
  expect_clean(s);
}

static void test_gc_active(void **state) {
  ops_store *s = *state;
  ckl__state *st;
  assert_int_equal(ckl__state_open(s->path, &st), 0);
  char tok[CKL_TOKEN_HEX_LEN + 1];
  assert_int_equal(ckl__random_token(tok), 0);
  ckl__gc_begin_info bi;
  assert_int_equal(ckl__state_gc_begin(st, tok, 0, 0, &bi), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_EGC_ACTIVE, tok);
  assert_int_equal(ckl__state_gc_abort(st, tok), 0);
  ckl__state_close(st);
  expect_clean(s);
}

static void test_leftovers(void **state) {
  ops_store *s = *state;
  /* a half-created snapshot nobody holds */
  char *half = ckl_test_path(s->path, "host/a/2023-11-14T22:14:20Z");
  assert_int_equal(mkdir(half, 0755), 0);
  EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_ELEFTOVER, half);
  EXPECT(ckl_inv_no_leftovers(s->path, "host/a/2023-11-14T22:14:20Z", NULL, why, sizeof why),
         CKL_INV_ELEFTOVER, "half-created");
  /* held by a backup: in flight, unless it is the named loser */
  ckl_snapshot_name hn = ops_snap("host", "a", OPS_T0 + 60);
  ckl_path_lock lk = {0};
  ckl_snap_lock_opts so = {.flags = CKL_SNAP_LOCK_CREATING};
  assert_int_equal(ckl_snapshot_lock(s->st, &hn, CKL_LOCK_EXCLUSIVE, &lk, &so), 0);
  assert_int_equal(ckl_inv_no_leftovers(s->path, NULL, NULL, why, sizeof why), 0);
  EXPECT(ckl_inv_no_leftovers(s->path, "host/a/2023-11-14T22:14:20Z", NULL, why, sizeof why),
         CKL_INV_ELEFTOVER, "half-created");
  ckl_path_lock_release(&lk);
  assert_int_equal(rmdir(half), 0);
  free(half);

  /* an atomic temp file: a leftover unless its writer's lock is on it */
  char *dir = ops_snap_dir(s, &snap_a);
  char *tmp = ckl_test_path(dir, ".index.json.tmp-0123456789abcdef");
  ckl_test_write_file(tmp, "x", 1);
  EXPECT(ckl_inv_no_leftovers(s->path, NULL, NULL, why, sizeof why), CKL_INV_ELEFTOVER, tmp);
  int fd = open(tmp, O_RDWR | O_CLOEXEC);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
  assert_int_equal(ckl_inv_no_leftovers(s->path, NULL, NULL, why, sizeof why), 0);
  close(fd);
  assert_int_equal(unlink(tmp), 0);
  free(tmp);
  free(dir);

  /* a chunk temp file, a sweep name, a trash entry */
  static const char *const strays[] = {".chunks/0000/.tmp-00-0123456789abcdef",
                                       ".chunks/ffff/.gc-ffff", ".trash/host-a-x"};
  for (size_t i = 0; i < 3; i++) {
    char *p = ckl_test_path(s->path, strays[i]);
    /* read the clock BEFORE the write: the file's directory mtime is at or
     * after it, whereas a clock read after the write may already be in the
     * next second on a loaded machine (seen under ctest -j2) */
    int64_t before = (int64_t)time(NULL);
    ckl_test_write_file(p, "", 0);
    EXPECT(ckl_inv_check(s->path, &quiet, why, sizeof why), CKL_INV_ELEFTOVER, strays[i]);
    /* the mtime filter still sees a directory changed just now */
    ckl_inv_opts o = {.quiescent = 1, .chunk_scan_since_s = before};
    EXPECT(ckl_inv_check(s->path, &o, why, sizeof why), CKL_INV_ELEFTOVER, strays[i]);
    /* a prefix list scans those directories only */
    static const uint16_t pre[] = {0x0000, 0xffff};
    ckl_inv_opts po = {.quiescent = 1, .chunk_prefixes = pre, .nchunk_prefixes = 2};
    EXPECT(ckl_inv_check(s->path, &po, why, sizeof why), CKL_INV_ELEFTOVER, strays[i]);
    po.nchunk_prefixes = 1; /* 0000 only: ffff is not looked at */
    assert_int_equal(ckl_inv_check(s->path, &po, why, sizeof why), i == 1 ? 0 : CKL_INV_ELEFTOVER);
    assert_int_equal(unlink(p), 0);
    free(p);
  }
  expect_clean(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_clean_store_passes, setup),
      cmocka_unit_test_setup(test_missing_chunk, setup),
      cmocka_unit_test_setup(test_corrupt_chunk, setup),
      cmocka_unit_test_setup(test_bad_index, setup),
      cmocka_unit_test_setup(test_lost_update, setup),
      cmocka_unit_test_setup(test_lock_held, setup),
      cmocka_unit_test_setup(test_roster_record, setup),
      cmocka_unit_test_setup(test_gc_active, setup),
      cmocka_unit_test_setup(test_leftovers, setup),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

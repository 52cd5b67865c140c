/* Verify: a clean snapshot gets verify_state "ok" (and nothing else in
 * the manifest changes); a corrupt chunk makes it "failed", listed by
 * hex, renamed to <hex>.0.bad, and the next backup writes a good copy; a
 * missing chunk and a tampered index fail too; a failpoint before the
 * result writes nothing; verifies share the snapshot, forgets and writers
 * do not; a crashed manifest update's temp file is cleaned. */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

#include <fcntl.h>

static int group_setup(void **state) { return ops_group_setup(state, "verify"); }

static json_t *verify_state_of(ops_store *s, const ckl_snapshot_name *n) {
  json_t *m;
  assert_int_equal(ckl_manifest_load(s->st, n, &m), 0);
  json_t *vs = json_incref(json_object_get(json_object_get(m, "unprotected"), "verify_state"));
  json_decref(m);
  return vs;
}

static ckl_digest chunk_digest(uint32_t seed) {
  unsigned char buf[1000];
  ops_fill(buf, sizeof buf, seed);
  ckl_digest d;
  ckl_digest_compute(buf, sizeof buf, &d);
  return d;
}

static void test_ok(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  json_t *before;
  assert_int_equal(ckl_manifest_load(s->st, &n, &before), 0);
  ckl_verify_result r;
  assert_int_equal(ckl_verify(s->st, &n, NULL, &r), 0);
  assert_int_equal(r.ok, 1);
  assert_int_equal(r.files, 1);
  assert_int_equal(r.chunks, 3);
  assert_int_equal(r.bad_chunks, 0);
  assert_int_equal(r.bad_files, 0);
  json_t *vs = verify_state_of(s, &n);
  assert_int_equal(json_object_size(vs), 3);
  assert_string_equal(json_string_value(json_object_get(vs, "state")), "ok");
  const char *t = json_string_value(json_object_get(vs, "time"));
  assert_int_equal(ckl_snapshot_time_parse(t, strlen(t), NULL), 0);
  assert_int_equal(json_array_size(json_object_get(vs, "bad_chunks")), 0);
  json_t *after;
  assert_int_equal(ckl_manifest_load(s->st, &n, &after), 0);
  assert_true(json_equal(json_object_get(before, "files"), json_object_get(after, "files")));
  assert_true(json_equal(json_object_get(before, "created"), json_object_get(after, "created")));
  json_decref(before);
  json_decref(after);
  json_decref(vs);
  assert_int_equal(ops_roster_count(s, "verify", NULL), 0);
}

static void test_corrupt_chunk(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_digest d = chunk_digest(2); /* the snapshot's second chunk */
  char *cp = ops_chunk_path(s, &d);
  int fd = open(cp, O_RDWR);
  assert_true(fd >= 0);
  unsigned char byte;
  assert_int_equal(pread(fd, &byte, 1, 100), 1);
  byte ^= 0x55;
  assert_int_equal(pwrite(fd, &byte, 1, 100), 1);
  close(fd);
  ckl_verify_result r;
  assert_int_equal(ckl_verify(s->st, &n, NULL, &r), CKL_ECORRUPT);
  assert_int_equal(r.ok, 0);
  assert_int_equal(r.bad_chunks, 1);
  assert_int_equal(r.chunks, 3);
  char bad[PATH_MAX];
  snprintf(bad, sizeof bad, "%s.0.bad", cp);
  assert_false(ops_exists(cp));
  assert_true(ops_exists(bad));
  json_t *vs = verify_state_of(s, &n);
  assert_string_equal(json_string_value(json_object_get(vs, "state")), "failed");
  char hex[65];
  ckl_digest_to_hex(&d, hex);
  json_t *list = json_object_get(vs, "bad_chunks");
  assert_int_equal(json_array_size(list), 1);
  assert_string_equal(json_string_value(json_array_get(list, 0)), hex);
  json_decref(vs);
  /* the next backup with that data writes a good copy (its touch now
   * says ENOENT), after which the old snapshot verifies again */
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0 + 60};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  unsigned char buf[1000];
  ops_fill(buf, sizeof buf, 2);
  assert_int_equal(ckl_backup_insert_chunk(b, &d, buf, sizeof buf), CKL_INSERT_NEW);
  ckl_backup_abort(b);
  assert_int_equal(ckl_verify(s->st, &n, NULL, &r), 0);
  vs = verify_state_of(s, &n);
  assert_string_equal(json_string_value(json_object_get(vs, "state")), "ok");
  json_decref(vs);
  free(cp);
}

static void test_missing_chunk_and_bad_index(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_digest d = chunk_digest(3);
  char *cp = ops_chunk_path(s, &d);
  assert_int_equal(unlink(cp), 0);
  ckl_verify_result r;
  assert_int_equal(ckl_verify(s->st, &n, NULL, &r), CKL_ECORRUPT);
  assert_int_equal(r.bad_chunks, 1);
  char bad[PATH_MAX];
  snprintf(bad, sizeof bad, "%s.0.bad", cp);
  assert_false(ops_exists(bad)); /* nothing to set aside */
  json_t *vs = verify_state_of(s, &n);
  char hex[65];
  ckl_digest_to_hex(&d, hex);
  assert_string_equal(json_string_value(json_array_get(json_object_get(vs, "bad_chunks"), 0)), hex);
  json_decref(vs);

  ckl_snapshot_name m = ops_make_snapshot(s->st, "host", "b", 0, 10);
  char *dir = ops_snap_dir(s, &m), *ix = ckl_test_path(dir, "root.didx");
  int fd = open(ix, O_WRONLY | O_APPEND);
  assert_int_equal(write(fd, "x", 1), 1);
  close(fd);
  assert_int_equal(ckl_verify(s->st, &m, NULL, &r), CKL_ECORRUPT);
  assert_int_equal(r.bad_files, 1);
  assert_int_equal(r.bad_chunks, 0);
  vs = verify_state_of(s, &m);
  assert_string_equal(json_string_value(json_object_get(vs, "state")), "failed");
  assert_int_equal(json_array_size(json_object_get(vs, "bad_chunks")), 0);
  json_decref(vs);
  free(ix);
  free(dir);
  free(cp);
}

static void test_nothing_written_on_error(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  char *dir = ops_snap_dir(s, &n), *mp = ckl_test_path(dir, "index.json");
  size_t l1, l2;
  char *before = ckl_test_read_file(mp, &l1);
  assert_int_equal(ckl_failpoint_arm("verify.before_finish", "error(EIO)"), 0);
  assert_int_equal(ckl_verify(s->st, &n, NULL, NULL), -EIO);
  char *after = ckl_test_read_file(mp, &l2);
  assert_int_equal(l1, l2);
  assert_memory_equal(before, after, l1);
  assert_int_equal(ops_roster_count(s, "verify", NULL), 0);
  /* no such snapshot, and one without a manifest */
  ckl_snapshot_name none = ops_snap("host", "a", OPS_T0 + 1);
  assert_int_equal(ckl_verify(s->st, &none, NULL, NULL), -ENOENT);
  char *nd = ops_snap_dir(s, &none);
  assert_int_equal(mkdir(nd, 0755), 0);
  assert_int_equal(ckl_verify(s->st, &none, NULL, NULL), -ENOENT);
  free(nd);
  free(before);
  free(after);
  free(mp);
  free(dir);
}

typedef struct varg {
  ckl_store *st;
  ckl_snapshot_name n;
  int rc;
} varg;

static void *verify_thread(void *p) {
  varg *a = p;
  a->rc = ckl_verify(a->st, &a->n, NULL, NULL);
  return NULL;
}

static void test_sharing(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  /* two verifies at once: both hold the lock shared */
  assert_int_equal(ckl_failpoint_arm("verify.before_finish", "1*pause"), 0);
  varg a = {.st = s->st, .n = n};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, verify_thread, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("verify.before_finish", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ops_roster_count(s, "verify", "host/a/2023-11-14T22:13:20Z"), 1);
  assert_int_equal(ckl_verify(s->st, &n, NULL, NULL), 0);
  ckl_failpoint_release("verify.before_finish");
  pthread_join(th, NULL);
  assert_int_equal(a.rc, 0);
  /* a snapshot being written cannot be verified */
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0 + 60};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  ckl_holder who = {0};
  ckl_verify_opts vo = {.busy_holder = &who};
  assert_int_equal(ckl_verify(s->st, ckl_backup_snapshot(b), &vo, NULL), CKL_EBUSY);
  assert_string_equal(who.operation, "backup");
  ckl_backup_abort(b);
}

/* A manifest update that crashed left ".index.json.tmp-*" (its lock died
 * with it): the next verify of the snapshot removes it. */
static void test_cleans_stale_manifest_temp(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  char *dir = ops_snap_dir(s, &n), *tmp = ckl_test_path(dir, ".index.json.tmp-0123456789abcdef");
  ckl_test_write_file(tmp, "{", 1);
  assert_int_equal(ckl_verify(s->st, &n, NULL, NULL), 0);
  assert_false(ops_exists(tmp));
  free(tmp);
  free(dir);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ops_reset, ops_reset)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_ok),
      T(test_corrupt_chunk),
      T(test_missing_chunk_and_bad_index),
      T(test_nothing_written_on_error),
      T(test_sharing),
      T(test_cleans_stale_manifest_temp),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

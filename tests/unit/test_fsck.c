/* fsck: a clean store is 0; each problem kind is detected with its exact
 * count and path; what a running operation has in flight is not a problem
 * (a snapshot being written, an insert temp younger than the oldest live
 * writer, a locked atomic temp, .gc-* names while the GC lock is held,
 * .trash while a GC marks); CKL_FSCK_CLEAN removes what is provably
 * garbage, and the next run is clean. */
// ctest-labels: threads
// ctest-timeout: 300
#include "testutil.h"

#include "ops_util.h"

#include <fcntl.h>
#include <sys/time.h>

#include "datastore/proc_identity.h"

/* Most checks need no scan of the 65,536 chunk directories. */
#define Q CKL_FSCK_SNAPSHOTS_ONLY

typedef struct seen {
  int n;
  ckl_fsck_kind kind[32];
  char path[32][PATH_MAX];
  char detail[32][256];
} seen;

static void collect(const ckl_fsck_problem *p, void *arg) {
  seen *s = arg;
  if (s->n >= 32) return;
  s->kind[s->n] = p->kind;
  snprintf(s->path[s->n], PATH_MAX, "%s", p->path);
  snprintf(s->detail[s->n], 256, "%s", p->detail);
  s->n++;
}

static int group_setup(void **state) { return ops_group_setup(state, "fsck"); }

/* Each test starts from three complete snapshots. */
static int setup(void **state) {
  ops_store *s = *state;
  ops_store_reset(s);
  ops_make_snapshot(s->st, "host", "a", 0, 1);
  ops_make_snapshot(s->st, "host", "a", 60, 2);
  ops_make_snapshot(s->st, "vm", "100", 0, 1); /* shares chunks with host/a */
  return 0;
}

/* Run fsck, expect exactly `count` problems, all of `kind`. */
static seen expect(ops_store *s, unsigned flags, int count, ckl_fsck_kind kind) {
  seen got = {0};
  ckl_fsck_summary sum;
  ckl_fsck_opts o = {.flags = flags};
  int rc = ckl_fsck(s->st, &o, collect, &got, &sum);
  if (rc != count) {
    for (int i = 0; i < got.n; i++)
      fprintf(stderr, "  %s %s: %s\n", ckl_fsck_kind_name(got.kind[i]), got.path[i], got.detail[i]);
    fail_msg("fsck returned %d, expected %d", rc, count);
  }
  assert_int_equal(got.n, count);
  assert_int_equal(sum.problems, (size_t)count);
  if (count) assert_int_equal(sum.by_kind[kind], (size_t)count);
  return got;
}

static ckl_digest digest_of(uint32_t seed) {
  unsigned char buf[1000];
  ops_fill(buf, sizeof buf, seed);
  ckl_digest d;
  ckl_digest_compute(buf, sizeof buf, &d);
  return d;
}

static void set_age(const char *path, int64_t seconds_ago) {
  struct timeval now;
  gettimeofday(&now, NULL);
  struct timeval tv[2] = {{now.tv_sec - seconds_ago, 0}, {now.tv_sec - seconds_ago, 0}};
  assert_int_equal(utimes(path, tv), 0);
}

static void test_clean(void **state) {
  ops_store *s = *state;
  ckl_fsck_summary sum;
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, &sum), 0);
  assert_int_equal(sum.snapshots, 3);
  assert_int_equal(sum.indexes, 3);
  assert_int_equal(sum.chunks, 4); /* seeds 1,2,3 and 2,3,4; vm/100 = seeds 1,2,3 */
  assert_int_equal(sum.problems, 0);
  /* verified snapshots, forgotten ones, .bad-free chunks: still clean */
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  assert_int_equal(ckl_verify(s->st, &n, NULL, NULL), 0);
  assert_int_equal(ckl_forget(s->st, &n, NULL), 0);
  assert_int_equal(ckl_fsck(s->st, NULL, NULL, NULL, &sum), 0);
  assert_int_equal(sum.snapshots, 2);
}

static void test_chunk_problems(void **state) {
  ops_store *s = *state;
  ckl_digest d4 = digest_of(4), d1 = digest_of(1);
  char *p4 = ops_chunk_path(s, &d4), *p1 = ops_chunk_path(s, &d1);
  char *saved = ckl_test_path(s->dir, "saved");
  assert_int_equal(rename(p4, saved), 0);
  seen got = expect(s, Q, 1, CKL_FSCK_CHUNK_MISSING);
  assert_string_equal(got.path[0], p4);
  assert_non_null(strstr(got.detail[0], "host/a/2023-11-14T22:14:20Z/root.didx"));
  assert_int_equal(rename(saved, p4), 0);
  /* corrupt, and referenced by two snapshots: reported once */
  size_t len;
  char *good = ckl_test_read_file(p1, &len);
  char *badc = malloc(len);
  memcpy(badc, good, len);
  badc[len - 1] ^= 1;
  ckl_test_write_file(p1, badc, len);
  got = expect(s, Q, 1, CKL_FSCK_CHUNK_CORRUPT);
  assert_string_equal(got.path[0], p1);
  ckl_test_write_file(p1, good, len);
  /* a chunk set aside by a verify */
  char bad[PATH_MAX];
  snprintf(bad, sizeof bad, "%s.0.bad", p1);
  ckl_test_write_file(bad, badc, len);
  got = expect(s, 0, 1, CKL_FSCK_BAD_CHUNK);
  assert_string_equal(got.path[0], bad);
  expect(s, Q, 0, 0); /* the .chunks scan is what finds it */
  unlink(bad);
  expect(s, 0, 0, 0);
  free(good);
  free(badc);
  free(saved);
  free(p1);
  free(p4);
}

static void test_snapshot_problems(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0 + 60);
  char *dir = ops_snap_dir(s, &n), *mp = ckl_test_path(dir, "index.json");
  char *ix = ckl_test_path(dir, "root.didx"), *extra = ckl_test_path(dir, "extra.didx");
  size_t mlen, ilen;
  char *manifest = ckl_test_read_file(mp, &mlen), *index = ckl_test_read_file(ix, &ilen);
  /* manifest */
  ckl_test_write_file(mp, "{\"format\": 1,", 13);
  seen got = expect(s, Q, 1, CKL_FSCK_MANIFEST_CORRUPT);
  assert_string_equal(got.path[0], mp);
  ckl_test_write_file(mp, manifest, mlen);
  /* an index not listed in the manifest */
  ckl_test_write_file(extra, index, ilen);
  got = expect(s, Q, 1, CKL_FSCK_MANIFEST_MISMATCH);
  assert_string_equal(got.path[0], extra);
  unlink(extra);
  /* a truncated index: it differs from the manifest AND does not parse */
  ckl_test_write_file(ix, index, ilen - 1);
  seen two = {0};
  ckl_fsck_summary sum;
  assert_int_equal(ckl_fsck(s->st, NULL, collect, &two, &sum), 2);
  assert_int_equal(sum.by_kind[CKL_FSCK_MANIFEST_MISMATCH], 1);
  assert_int_equal(sum.by_kind[CKL_FSCK_INDEX_CORRUPT], 1);
  ckl_test_write_file(ix, index, ilen);
  /* a listed index missing */
  assert_int_equal(unlink(ix), 0);
  got = expect(s, Q, 1, CKL_FSCK_MANIFEST_MISMATCH);
  assert_non_null(strstr(got.detail[0], "missing"));
  ckl_test_write_file(ix, index, ilen);
  expect(s, 0, 0, 0);
  free(manifest);
  free(index);
  free(extra);
  free(ix);
  free(mp);
  free(dir);
}

static void test_half_written_and_in_progress(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_snap("host", "b", OPS_T0);
  char *gdir = ckl_test_path(s->path, "host/b"), *dir = ops_snap_dir(s, &n);
  assert_int_equal(mkdir(gdir, 0755), 0);
  assert_int_equal(mkdir(dir, 0755), 0);
  seen got = expect(s, Q, 1, CKL_FSCK_HALF_WRITTEN);
  assert_string_equal(got.path[0], dir);
  assert_int_equal(rmdir(dir), 0);
  /* a backup at work is not a problem, even with an index in place; a
   * bad index in it still is */
  ckl_group_name g = ops_group("host", "b");
  ckl_backup_opts o = {.time_s = OPS_T0};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  assert_int_equal(ops_write_didx(b, "root.didx", 2, 100, 7, NULL), 0);
  expect(s, Q, 0, 0);
  char *junk = ckl_test_path(dir, "junk.didx");
  ckl_test_write_file(junk, "not an index", 12);
  got = expect(s, Q, 1, CKL_FSCK_INDEX_CORRUPT);
  assert_string_equal(got.path[0], junk);
  unlink(junk);
  assert_int_equal(ckl_backup_finish(b), 0);
  expect(s, 0, 0, 0);
  free(junk);
  free(dir);
  free(gdir);
}

static void test_temp_files(void **state) {
  ops_store *s = *state;
  ckl_digest d = digest_of(99);
  char hex[65];
  ckl_digest_to_hex(&d, hex);
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s/.chunks/%.4s/.tmp-%s-0123456789abcdef", s->path, hex, hex);
  ckl_test_write_file(tmp, "x", 1);
  expect(s, 0, 0, 0); /* fresh: may be a writer's that just registered */
  set_age(tmp, 3600);
  seen got = expect(s, 0, 1, CKL_FSCK_TEMP_FILE);
  assert_string_equal(got.path[0], tmp);
  /* a live writer older than the temp: the temp may be its own */
  ckl__state *st;
  assert_int_equal(ckl__state_open(s->path, &st), 0);
  const ckl__host_ident *me = ckl__host_identity();
  ckl__roster_ident id = {.host_id = me->host_id,
                          .boot_id = me->boot_id,
                          .hostname = me->hostname,
                          .pidns = me->pidns,
                          .pid = getpid(),
                          .start_ns = ckl__now_realtime_ns() - INT64_C(7200) * 1000000000};
  ckl__self_start_time(&id.pid_start);
  ckl__roster_reg reg = {.operation = "backup", .target = "host/x/2023-11-14T22:13:20Z"};
  char tok[33];
  assert_int_equal(ckl__state_register_as(st, &reg, &id, tok), 0);
  expect(s, 0, 0, 0);
  assert_int_equal(ckl__state_deregister(st, tok), 0);
  ckl__state_close(st);
  expect(s, 0, 1, CKL_FSCK_TEMP_FILE);
  assert_int_equal(unlink(tmp), 0);

  /* an atomic-replace temp in a snapshot: a problem only once unlocked */
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  char *dir = ops_snap_dir(s, &n), *target = ckl_test_path(dir, "index.json");
  ckl_atomic_file af = {0};
  assert_int_equal(ckl_atomic_begin(&af, target, 0644, CKL_ATOMIC_NOSYNC), 0);
  expect(s, Q, 0, 0);
  char held[PATH_MAX];
  snprintf(held, sizeof held, "%s", af.tmp_path);
  char *copy = ckl_test_path(dir, ".index.json.tmp-fedcba9876543210");
  ckl_test_write_file(copy, "{", 1); /* same shape, no lock */
  got = expect(s, Q, 1, CKL_FSCK_TEMP_FILE);
  assert_string_equal(got.path[0], copy);
  ckl_atomic_rollback(&af);
  assert_false(ops_exists(held));
  unlink(copy);
  expect(s, 0, 0, 0);
  free(copy);
  free(target);
  free(dir);
}

static void test_gc_leftovers_and_trash(void **state) {
  ops_store *s = *state;
  ckl_digest d = digest_of(1);
  char *cp = ops_chunk_path(s, &d);
  char hex[65], gcname[PATH_MAX];
  ckl_digest_to_hex(&d, hex);
  snprintf(gcname, sizeof gcname, "%s/.chunks/%.4s/.gc-%s", s->path, hex, hex);
  assert_int_equal(link(cp, gcname), 0);
  seen got = expect(s, 0, 1, CKL_FSCK_GC_LEFTOVER);
  assert_string_equal(got.path[0], gcname);
  ckl_gclock gl = {0};
  assert_int_equal(ckl_gclock_acquire(s->st->lock_path, &gl, CKL_TRY, NULL), 0);
  expect(s, 0, 0, 0); /* a sweep in flight */
  ckl_gclock_release(&gl);
  unlink(gcname);

  char *trash = ckl_test_path(s->path, ".trash/host-a-2023-11-14T22:13:20Z-0123456789abcdef");
  assert_int_equal(mkdir(trash, 0700), 0);
  got = expect(s, Q, 1, CKL_FSCK_TRASH_ENTRY);
  assert_string_equal(got.path[0], trash);
  ckl__state *st;
  assert_int_equal(ckl__state_open(s->path, &st), 0);
  char tok[33];
  assert_int_equal(ckl__random_token(tok), 0);
  ckl__gc_begin_info gi;
  assert_int_equal(ckl__state_gc_begin(st, tok, 0, 0, &gi), 0);
  expect(s, Q, 0, 0); /* the marking GC's */
  assert_int_equal(ckl__state_gc_end(st, tok), 0);
  ckl__state_close(st);
  rmdir(trash);
  expect(s, 0, 0, 0);
  free(trash);
  free(cp);
}

static void test_clean_flag(void **state) {
  ops_store *s = *state;
  ckl_digest d = digest_of(77);
  char hex[65];
  ckl_digest_to_hex(&d, hex);
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s/.chunks/%.4s/.tmp-%s-0123456789abcdef", s->path, hex, hex);
  ckl_test_write_file(tmp, "x", 1);
  set_age(tmp, 3600);
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  char *dir = ops_snap_dir(s, &n), *at = ckl_test_path(dir, ".index.json.tmp-fedcba9876543210");
  ckl_test_write_file(at, "{", 1);
  char *trash = ckl_test_path(s->path, ".trash/host-a-x-0123456789abcdef");
  assert_int_equal(mkdir(trash, 0700), 0);
  seen got = {0};
  ckl_fsck_summary sum;
  ckl_fsck_opts o = {.flags = CKL_FSCK_CLEAN};
  assert_int_equal(ckl_fsck(s->st, &o, collect, &got, &sum), 3);
  assert_int_equal(sum.by_kind[CKL_FSCK_TEMP_FILE], 2);
  assert_int_equal(sum.by_kind[CKL_FSCK_TRASH_ENTRY], 1);
  assert_int_equal(sum.cleaned, 3);
  for (int i = 0; i < got.n; i++) assert_non_null(strstr(got.detail[i], "; removed"));
  assert_false(ops_exists(tmp));
  assert_false(ops_exists(at));
  assert_false(ops_exists(trash));
  expect(s, 0, 0, 0);
  assert_string_equal(ckl_fsck_kind_name(CKL_FSCK_HALF_WRITTEN), "half-written");
  assert_string_equal(ckl_fsck_kind_name((ckl_fsck_kind)0), "unknown");
  free(trash);
  free(at);
  free(dir);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, NULL)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_clean),
      T(test_chunk_problems),
      T(test_snapshot_problems),
      T(test_half_written_and_in_progress),
      T(test_temp_files),
      T(test_gc_leftovers_and_trash),
      T(test_clean_flag),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

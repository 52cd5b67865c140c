/* Crash the operations at each protocol step (a forked child armed with
 * `crash` dies with _exit, like kill -9) and check that the store is
 * consistent: fsck reports exactly what the crash may leave (an abandoned
 * snapshot, a stray temp file, a trash entry), the next operation cleans
 * it as documented in docs/datastore-ops.md, and fsck is then clean.
 *
 * "The next operation":
 *   - an abandoned snapshot (backup died): the next backup of its group
 *     (or a prune of the group) removes it through the forget path;
 *   - an insert temp file: no index refers to it; once it is older than
 *     every live writer, fsck --clean (or the GC) removes it. The test
 *     ages it explicitly instead of waiting;
 *   - a manifest update's temp file: the next verify of the snapshot;
 *   - a forgotten snapshot left in .trash: the next forget or prune (or
 *     the GC's purge). */
#include "testutil.h"

#include "ops_util.h"

#include <dirent.h>
#include <sys/time.h>

typedef enum mode { M_BACKUP, M_ABORT, M_VERIFY, M_FORGET } mode;

typedef struct crash_arg {
  const char *path, *point;
  mode m;
  const char *id;
  int64_t dt;
} crash_arg;

static int child(void *p) {
  crash_arg *c = p;
  ckl_store *st;
  if (ckl_store_open(c->path, NULL, &st) != 0) return 10;
  if (ckl_failpoint_arm(c->point, "crash") != 0) return 11;
  ckl_snapshot_name n;
  ckl_snapshot_name_make("host", c->id, OPS_T0 + c->dt, &n);
  if (c->m == M_VERIFY) return ckl_verify(st, &n, NULL, NULL) == 0 ? 0 : 12;
  if (c->m == M_FORGET) return ckl_forget(st, &n, NULL) == 0 ? 0 : 13;
  ckl_group_name g;
  ckl_snapshot_group(&n, &g);
  ckl_backup_opts o = {.time_s = OPS_T0 + c->dt};
  ckl_backup *b;
  if (ckl_backup_begin(st, &g, &o, &b) != 0) return 14;
  /* fresh data (seed from dt), so inserts write new chunks */
  if (ops_write_didx(b, "root.didx", 3, 700, 1000 + (uint32_t)c->dt, NULL) != 0) return 15;
  if (c->m == M_ABORT) {
    ckl_backup_abort(b);
    return 16;
  }
  return ckl_backup_finish(b) == 0 ? 0 : 17;
}

static void crash(ops_store *s, const char *point, mode m, const char *id, int64_t dt) {
  crash_arg c = {.path = s->path, .point = point, .m = m, .id = id, .dt = dt};
  int st = ckl_test_wait(ckl_test_fork(child, &c));
  if (st != CKL_FAILPOINT_CRASH_STATUS) fail_msg("%s: child exited %d, not crashed", point, st);
}

/* Crashes outside insert leave nothing in .chunks: the per-step checks
 * skip its scan, and each test ends with a full fsck. */
#define Q CKL_FSCK_SNAPSHOTS_ONLY

static int fsck_count(ops_store *s, unsigned flags, ckl_fsck_summary *sum) {
  ckl_fsck_opts o = {.flags = flags};
  return ckl_fsck(s->st, &o, NULL, NULL, sum);
}

/* Age the insert temp files of the first chunk a crashed backup at dt
 * was inserting ("time passes"); returns how many there are. */
static int age_chunk_temps(ops_store *s, int64_t dt) {
  unsigned char buf[700];
  ops_fill(buf, sizeof buf, 1000 + (uint32_t)dt);
  ckl_digest d;
  ckl_digest_compute(buf, sizeof buf, &d);
  char hex[65], dir[PATH_MAX];
  ckl_digest_to_hex(&d, hex);
  snprintf(dir, sizeof dir, "%s/.chunks/%.4s", s->path, hex);
  int n = 0;
  DIR *dp = opendir(dir);
  assert_non_null(dp);
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (strncmp(e->d_name, ".tmp-", 5) != 0) continue;
    char f[PATH_MAX + 256];
    snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
    struct timeval tv[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    assert_int_equal(utimes(f, tv), 0);
    n++;
  }
  closedir(dp);
  return n;
}

static int setup(void **state) {
  ops_store *s = calloc(1, sizeof *s);
  ops_store_new(s, "opscrash");
  *state = s;
  return 0;
}


/* Inside insert: the snapshot is abandoned, and an insert temp may be
 * left. The next backup of the group removes the snapshot. */
static void test_crash_in_insert(void **state) {
  ops_store *s = *state;
  static const char *const points[] = {"chunk.insert.after_tmp_create",
                                       "chunk.insert.after_tmp_write", "chunk.insert.before_rename",
                                       "chunk.insert.after_rename"};
  for (size_t i = 0; i < 4; i++) {
    int64_t dt = (int64_t)i * 10;
    crash(s, points[i], M_BACKUP, "a", dt);
    ckl_snapshot_name n = ops_snap("host", "a", OPS_T0 + dt);
    assert_true(ops_snap_exists(s, &n));
    int temps = age_chunk_temps(s, dt);
    assert_int_equal(temps, i < 3 ? 1 : 0);
    ckl_fsck_summary sum;
    assert_int_equal(fsck_count(s, 0, &sum), 1 + temps);
    assert_int_equal(sum.by_kind[CKL_FSCK_HALF_WRITTEN], 1);
    assert_int_equal(sum.by_kind[CKL_FSCK_TEMP_FILE], (size_t)temps);
    /* recovery: the next backup of the group, and the temp's cleanup */
    ckl_snapshot_name next = ops_make_snapshot(s->st, "host", "a", dt + 5, 7);
    assert_false(ops_snap_exists(s, &n));
    assert_int_equal(fsck_count(s, CKL_FSCK_CLEAN, &sum), temps);
    assert_int_equal(sum.cleaned, (size_t)temps);
    assert_int_equal(fsck_count(s, 0, NULL), 0);
    assert_int_equal(ckl_verify(s->st, &next, NULL, NULL), 0);
  }
}

/* Inside the index write and the backup's own steps: an abandoned
 * snapshot at most (its temp files go with it). */
static void test_crash_in_index_and_backup_steps(void **state) {
  ops_store *s = *state;
  static const char *const points[] = {"index.write.after_create",   "index.write.after_entries",
                                       "index.write.before_commit",  "index.write.after_rename",
                                       "backup.after_register",      "backup.after_mkdir",
                                       "backup.archive.after_close", "backup.before_finish"};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(points); i++) {
    int64_t dt = (int64_t)i * 10;
    crash(s, points[i], M_BACKUP, "b", dt);
    ckl_snapshot_name n = ops_snap("host", "b", OPS_T0 + dt);
    bool made = strcmp(points[i], "backup.after_register") != 0;
    assert_int_equal(ops_snap_exists(s, &n), made);
    ckl_fsck_summary sum;
    assert_int_equal(fsck_count(s, Q, &sum), made ? 1 : 0);
    assert_int_equal(sum.by_kind[CKL_FSCK_HALF_WRITTEN], made ? 1 : 0);
    ops_make_snapshot(s->st, "host", "b", dt + 5, 7);
    assert_false(ops_snap_exists(s, &n));
    assert_int_equal(fsck_count(s, Q, NULL), 0);
  }
  /* a crash after the manifest: the snapshot is complete and consistent */
  crash(s, "backup.after_manifest", M_BACKUP, "b", 1000);
  ckl_snapshot_name n = ops_snap("host", "b", OPS_T0 + 1000);
  assert_int_equal(fsck_count(s, Q, NULL), 0);
  assert_int_equal(ckl_verify(s->st, &n, NULL, NULL), 0);
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0); /* reaped */
  /* and while removing a partial snapshot */
  crash(s, "backup.abort.before_remove", M_ABORT, "b", 2000);
  assert_int_equal(fsck_count(s, Q, NULL), 1);
  ops_make_snapshot(s->st, "host", "b", 2005, 7);
  assert_int_equal(fsck_count(s, 0, NULL), 0);
}

static int drop_state(json_t *m, void *arg) {
  (void)arg;
  json_object_del(json_object_get(m, "unprotected"), "verify_state");
  return 0;
}

/* Inside a manifest update (verify's result): the old manifest stays; a
 * temp file may be left, which the next verify of the snapshot removes. */
static void test_crash_in_manifest_update(void **state) {
  ops_store *s = *state;
  static const struct {
    const char *point;
    int temps;
  } cases[] = {{"update_manifest.after_lock", 0},
               {"update_manifest.after_load", 0},
               {"update_manifest.before_replace", 0},
               {"atomic.after_create", 1},
               {"atomic.after_write", 1},
               {"atomic.before_rename", 1},
               {"atomic.after_rename", 0},
               {"update_manifest.after_replace", 0}};
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "c", 0, 3);
  char *dir = ops_snap_dir(s, &n);
  for (size_t i = 0; i < CKL__ARRAY_SIZE(cases); i++) {
    crash(s, cases[i].point, M_VERIFY, "c", 0);
    json_t *m;
    assert_int_equal(ckl_manifest_load(s->st, &n, &m), 0); /* whole, old or new */
    json_decref(m);
    int temps = ckl_test_count_entries(dir, ".index.json.tmp-");
    assert_int_equal(temps, cases[i].temps);
    assert_int_equal(fsck_count(s, Q, NULL), temps);
    assert_int_equal(ckl_verify(s->st, &n, NULL, NULL), 0);
    assert_int_equal(ckl_test_count_entries(dir, ".index.json.tmp-"), 0);
    assert_int_equal(fsck_count(s, Q, NULL), 0);
    /* so that the next verify changes the manifest even within a second */
    assert_int_equal(ckl_update_manifest(s->st, &n, drop_state, NULL, NULL), 0);
  }
  assert_int_equal(fsck_count(s, 0, NULL), 0);
  free(dir);
}

/* Inside forget: the snapshot is either still whole or gone from its
 * place; a trash entry may be left, which the next forget purges. */
static void test_crash_in_forget(void **state) {
  ops_store *s = *state;
  static const struct {
    const char *point;
    bool moved;
  } cases[] = {{"forget.after_lock", false},
               {"state.forget.before_move", false},
               {"state.forget.before_commit", true},
               {"forget.after_move", true},
               {"forget.before_unlink", true}};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(cases); i++) {
    int64_t dt = (int64_t)i * 10;
    ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "d", dt, 4);
    crash(s, cases[i].point, M_FORGET, "d", dt);
    assert_int_equal(ops_snap_exists(s, &n), !cases[i].moved);
    int trash = ops_trash_count(s);
    /* before_unlink: the trash entry was deleted before the crash */
    assert_int_equal(trash, cases[i].moved && strcmp(cases[i].point, "forget.before_unlink") != 0);
    ckl_fsck_summary sum;
    assert_int_equal(fsck_count(s, Q, &sum), trash);
    assert_int_equal(sum.by_kind[CKL_FSCK_TRASH_ENTRY], (size_t)trash);
    /* recovery: a forget (of the same snapshot if it is still there, of
     * another one otherwise) */
    if (!cases[i].moved) {
      assert_int_equal(ckl_forget(s->st, &n, NULL), CKL_FORGET_DELETED);
    } else {
      assert_int_equal(ckl_forget(s->st, &n, NULL), -ENOENT);
      ckl_snapshot_name other = ops_make_snapshot(s->st, "host", "d", dt + 5, 4);
      assert_int_equal(ckl_forget(s->st, &other, NULL), CKL_FORGET_DELETED);
    }
    assert_int_equal(ops_trash_count(s), 0);
    assert_int_equal(fsck_count(s, Q, NULL), 0);
  }
  assert_int_equal(fsck_count(s, 0, NULL), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, ops_group_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_crash_in_insert),
      T(test_crash_in_index_and_backup_steps),
      T(test_crash_in_manifest_update),
      T(test_crash_in_forget),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

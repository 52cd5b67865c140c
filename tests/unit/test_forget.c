/* Forget: exact codes (-ENOENT, CKL_EBUSY naming the reader, verify,
 * backup or other forget that holds the snapshot, CKL_ETIMEDOUT on the
 * manifest lock) and exact on-disk outcomes (deleted at once without a
 * GC; left in .trash and recorded in the removed-during-GC set while a GC
 * marks; recorded but deleted at once while a dry-run GC marks; lock files
 * unlinked; stale trash purged by the next forget). */
// ctest-labels: threads
#include "testutil.h"

#include "ops_util.h"

static int group_setup(void **state) { return ops_group_setup(state, "forget"); }

static char *lock_file(const ops_store *s, const ckl_snapshot_name *n, const char *suffix) {
  char *p = NULL;
  if (asprintf(&p, "%s/.locks/%s/%s/%s%s", s->path, n->type, n->id, n->time, suffix) < 0) abort();
  return p;
}

static void test_missing_and_invalid(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_snap("host", "a", OPS_T0);
  assert_int_equal(ckl_forget(s->st, &n, NULL), -ENOENT);
  char *lk = lock_file(s, &n, ".lck");
  assert_false(ops_exists(lk)); /* no lock file for a snapshot that never was */
  free(lk);
  ckl_snapshot_name bad = n;
  bad.type[0] = '/';
  assert_int_equal(ckl_forget(s->st, &bad, NULL), -EINVAL);
  assert_int_equal(ckl_forget(NULL, &n, NULL), -EINVAL);
  /* once forgotten, gone */
  ckl_snapshot_name m = ops_make_snapshot(s->st, "host", "a", 0, 1);
  assert_int_equal(ckl_forget(s->st, &m, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ckl_forget(s->st, &m, NULL), -ENOENT);
}

static void test_deletes_at_once(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_snapshot_name keep = ops_make_snapshot(s->st, "host", "a", 60, 2);
  /* the manifest lock file exists once an update has run */
  ckl_verify_result vr;
  assert_int_equal(ckl_verify(s->st, &n, NULL, &vr), 0);
  char *lk = lock_file(s, &n, ".lck"), *ml = lock_file(s, &n, ".manifest.lck");
  assert_true(ops_exists(lk));
  assert_true(ops_exists(ml));
  assert_int_equal(ckl_forget(s->st, &n, NULL), CKL_FORGET_DELETED);
  assert_false(ops_snap_exists(s, &n));
  assert_true(ops_snap_exists(s, &keep));
  assert_int_equal(ops_trash_count(s), 0);
  assert_false(ops_exists(lk));
  assert_false(ops_exists(ml));
  assert_int_equal(ops_roster_count(s, "forget", NULL), 0);
  ckl_group_name g = ops_group("host", "a");
  ckl_snapshot_info *list;
  size_t cnt;
  assert_int_equal(ckl_snapshot_list(s->st, &g, &list, &cnt), 0);
  assert_int_equal(cnt, 1);
  assert_string_equal(list[0].name.time, keep.time);
  ckl_snapshot_list_free(list, cnt);
  free(lk);
  free(ml);
}

static void test_gc_active_leaves_trash(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl__state *gs;
  assert_int_equal(ckl__state_open(s->path, &gs), 0);
  char tok[33];
  assert_int_equal(ckl__random_token(tok), 0);
  ckl__gc_begin_info gi;
  assert_int_equal(ckl__state_gc_begin(gs, tok, 0, 0, &gi), 0);
  assert_int_equal(ckl_forget(s->st, &n, NULL), CKL_FORGET_TRASHED);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 1);
  ckl__removed_list l;
  assert_int_equal(ckl__state_removed_take_unmarked(gs, tok, &l), 1);
  assert_string_equal(l.v[0].snapshot_rel, "host/a/2023-11-14T22:13:20Z");
  char *t = ckl_test_path(s->path, l.v[0].trash_rel);
  char *ti = ckl_test_path(t, "root.didx"), *tm = ckl_test_path(t, "index.json");
  assert_true(ops_exists(ti)); /* what the GC marks */
  assert_true(ops_exists(tm));
  ckl__removed_list_free(&l);
  char *lk = lock_file(s, &n, ".lck");
  assert_false(ops_exists(lk));
  /* a second forget during the same GC does not purge the first's copy */
  ckl_snapshot_name n2 = ops_make_snapshot(s->st, "host", "a", 60, 2);
  assert_int_equal(ckl_forget(s->st, &n2, NULL), CKL_FORGET_TRASHED);
  assert_int_equal(ops_trash_count(s), 2);
  assert_true(ops_exists(ti));
  /* the GC ends: the copies are no longer needed; the next forget purges */
  assert_int_equal(ckl__state_gc_end(gs, tok), 0);
  ckl_snapshot_name n3 = ops_make_snapshot(s->st, "host", "a", 120, 3);
  assert_int_equal(ckl_forget(s->st, &n3, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ops_trash_count(s), 0);
  ckl__state_close(gs);
  free(t);
  free(ti);
  free(tm);
  free(lk);
}

/* A dry-run GC marking: the forget records the snapshot (settled, so the
 * dry run's mark knows it was forgotten) and deletes it at once. A settled
 * copy that stayed in .trash (its forget failed before its delete) is
 * nobody's: the next forget purges it although the dry run still marks. */
static void test_dry_run_gc_deletes_at_once(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_snapshot_name n2 = ops_make_snapshot(s->st, "host", "a", 60, 2);
  ckl_snapshot_name n3 = ops_make_snapshot(s->st, "host", "a", 120, 3);
  ckl__state *gs;
  assert_int_equal(ckl__state_open(s->path, &gs), 0);
  char tok[33];
  assert_int_equal(ckl__random_token(tok), 0);
  ckl__gc_begin_info gi;
  assert_int_equal(ckl__state_gc_begin(gs, tok, 0, CKL__GC_DRY_RUN, &gi), 0);
  assert_int_equal(ckl_forget(s->st, &n, NULL), CKL_FORGET_DELETED);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 0);
  char *lk = lock_file(s, &n, ".lck");
  assert_false(ops_exists(lk));
  free(lk);
  assert_int_equal(ckl__state_is_removed(gs, "host/a/2023-11-14T22:13:20Z"), 1);
  /* n2's forget fails after the move, before its delete */
  assert_int_equal(ckl_failpoint_arm("forget.after_move", "1*error(EIO)"), 0);
  assert_int_equal(ckl_forget(s->st, &n2, NULL), -EIO);
  assert_int_equal(ops_trash_count(s), 1);
  ckl__removed_list l;
  assert_int_equal(ckl__state_removed_list(gs, &l), 0);
  assert_int_equal(l.n, 2);
  for (size_t i = 0; i < l.n; i++) assert_int_equal(l.v[i].marked, CKL__RM_SETTLED);
  ckl__removed_list_free(&l);
  assert_int_equal(ckl_forget(s->st, &n3, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ops_trash_count(s), 0);
  /* nothing for the dry run to mark */
  assert_int_equal(ckl__state_removed_take_unmarked(gs, tok, &l), 0);
  assert_int_equal(ckl__state_gc_end(gs, tok), 0);
  ckl__state_close(gs);
}

/* The move happened but the state transaction failed: the snapshot is in
 * .trash all the same, the error is returned, the next forget purges. */
static void test_commit_failure_after_move(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  assert_int_equal(ckl_failpoint_arm("state.forget.before_commit", "error(EIO)"), 0);
  assert_int_equal(ckl_forget(s->st, &n, NULL), -EIO);
  ckl_failpoint_disarm_all();
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 1);
  ckl_snapshot_name n2 = ops_make_snapshot(s->st, "host", "a", 60, 2);
  assert_int_equal(ckl_forget(s->st, &n2, NULL), CKL_FORGET_DELETED);
  assert_int_equal(ops_trash_count(s), 0);
}

static void test_busy_reader_in_process(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_reader *r;
  assert_int_equal(ckl_reader_open(s->st, &n, NULL, &r), 0);
  ckl_holder who = {0};
  ckl_forget_opts fo = {.busy_holder = &who};
  assert_int_equal(ckl_forget(s->st, &n, &fo), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "read");
  assert_int_equal(who.pid, getpid());
  assert_string_equal(who.target, "host/a/2023-11-14T22:13:20Z");
  assert_true(ops_snap_exists(s, &n));
  assert_int_equal(ckl_reader_close(r), 0);
  assert_int_equal(ckl_forget(s->st, &n, &fo), CKL_FORGET_DELETED);
}

typedef struct child_arg {
  const char *path, *fpdir;
} child_arg;

static int reader_child(void *p) {
  child_arg *c = p;
  ckl_store *st;
  if (ckl_store_open(c->path, NULL, &st) != 0) return 10;
  char spec[PATH_MAX];
  snprintf(spec, sizeof spec, "pausefile(%s)", c->fpdir);
  if (ckl_failpoint_arm("restore.before_finish", spec) != 0) return 11;
  ckl_snapshot_name n;
  ckl_snapshot_name_make("host", "a", OPS_T0, &n);
  ckl_reader *r;
  if (ckl_reader_open(st, &n, NULL, &r) != 0) return 12;
  int rc = ckl_reader_close(r);
  ckl_store_close(st);
  return rc == 0 ? 0 : 13;
}

static void test_busy_reader_across_processes(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  char *fp = ckl_test_mkdtemp("fp");
  child_arg c = {.path = s->path, .fpdir = fp};
  pid_t pid = ckl_test_fork(reader_child, &c);
  ops_wait_pausefile(fp, "restore.before_finish");
  ckl_holder who = {0};
  ckl_forget_opts fo = {.busy_holder = &who};
  assert_int_equal(ckl_forget(s->st, &n, &fo), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "read");
  assert_int_equal(who.pid, pid);
  assert_true(ops_snap_exists(s, &n));
  ops_release_pausefile(fp, "restore.before_finish");
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(ckl_forget(s->st, &n, NULL), CKL_FORGET_DELETED);
  ckl_test_rmtree(fp);
  free(fp);
}

typedef struct verify_arg {
  ckl_store *st;
  ckl_snapshot_name n;
  int rc;
} verify_arg;

static void *verify_thread(void *p) {
  verify_arg *a = p;
  a->rc = ckl_verify(a->st, &a->n, NULL, NULL);
  return NULL;
}

static void *forget_thread(void *p) {
  verify_arg *a = p;
  a->rc = ckl_forget(a->st, &a->n, NULL);
  return NULL;
}

static void test_busy_verify_and_forget(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  assert_int_equal(ckl_failpoint_arm("verify.after_lock", "pause"), 0);
  verify_arg va = {.st = s->st, .n = n};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, verify_thread, &va), 0);
  assert_int_equal(ckl_failpoint_wait_hits("verify.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  ckl_holder who = {0};
  ckl_forget_opts fo = {.busy_holder = &who};
  assert_int_equal(ckl_forget(s->st, &n, &fo), CKL_EBUSY);
  assert_string_equal(who.operation, "verify");
  ckl_failpoint_release("verify.after_lock");
  pthread_join(th, NULL);
  assert_int_equal(va.rc, 0);
  ckl_failpoint_disarm_all();

  /* two forgets of one snapshot: the second meets the first */
  assert_int_equal(ckl_failpoint_arm("forget.after_lock", "pause"), 0);
  verify_arg fa = {.st = s->st, .n = n};
  assert_int_equal(pthread_create(&th, NULL, forget_thread, &fa), 0);
  assert_int_equal(ckl_failpoint_wait_hits("forget.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_forget(s->st, &n, &fo), CKL_EBUSY);
  assert_string_equal(who.operation, "forget");
  assert_int_equal(who.pid, getpid());
  ckl_failpoint_release("forget.after_lock");
  pthread_join(th, NULL);
  assert_int_equal(fa.rc, CKL_FORGET_DELETED);
  assert_int_equal(ckl_forget(s->st, &n, &fo), -ENOENT);
}

static void test_busy_backup(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name base = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0 + 60, .base = &base};
  ckl_backup *b;
  assert_int_equal(ckl_backup_begin(s->st, &g, &o, &b), 0);
  ckl_holder who = {0};
  ckl_forget_opts fo = {.busy_holder = &who};
  assert_int_equal(ckl_forget(s->st, &base, &fo), CKL_EBUSY);
  assert_string_equal(who.operation, "backup-base");
  /* the snapshot being written */
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_forget(s->st, ckl_backup_snapshot(b), &fo), CKL_EBUSY);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(ops_write_didx(b, "root.didx", 1, 10, 1, NULL), 0);
  assert_int_equal(ckl_backup_finish(b), 0);
  assert_int_equal(ckl_forget(s->st, &base, &fo), CKL_FORGET_DELETED);
}

/* The manifest lock: an update holding it makes the forget wait up to the
 * deadline, then fail with nothing moved. */
typedef struct upd_arg {
  ckl_store *st;
  ckl_snapshot_name n;
  int rc;
} upd_arg;

static int set_note(json_t *m, void *arg) {
  (void)arg;
  return json_object_set_new(json_object_get(m, "unprotected"), "note", json_string("x"));
}

static void *update_thread(void *p) {
  upd_arg *a = p;
  a->rc = ckl_update_manifest(a->st, &a->n, set_note, NULL, NULL);
  return NULL;
}

static void test_manifest_lock_deadline(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "host", "a", 0, 1);
  ckl_store *quick;
  ckl_store_open_opts oo = {.manifest_lock_timeout_ms = 100};
  assert_int_equal(ckl_store_open(s->path, &oo, &quick), 0);
  assert_int_equal(ckl_failpoint_arm("update_manifest.after_lock", "pause"), 0);
  upd_arg ua = {.st = s->st, .n = n};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, update_thread, &ua), 0);
  assert_int_equal(ckl_failpoint_wait_hits("update_manifest.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_forget(quick, &n, NULL), CKL_ETIMEDOUT);
  assert_true(ops_snap_exists(s, &n));
  assert_int_equal(ops_trash_count(s), 0);
  ckl_failpoint_release("update_manifest.after_lock");
  pthread_join(th, NULL);
  assert_int_equal(ua.rc, 0);
  assert_int_equal(ckl_forget(quick, &n, NULL), CKL_FORGET_DELETED);
  ckl_store_close(quick);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ops_reset, ops_reset)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_missing_and_invalid),    T(test_deletes_at_once),
      T(test_gc_active_leaves_trash), T(test_commit_failure_after_move),
      T(test_busy_reader_in_process), T(test_busy_reader_across_processes),
      T(test_busy_verify_and_forget), T(test_busy_backup),
      T(test_manifest_lock_deadline),     T(test_dry_run_gc_deletes_at_once),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

/*
 * Lease tests (DESIGN.md section 6): a task whose roster record is
 * removed, whose lock file is replaced, or whose machine "slept" past the
 * TTL (the injected clock steps forward) ends with CKL_ELOCKLOST at its
 * next safe point and rolls back; a GC that loses its lease sweeps
 * nothing; an undisturbed lease is refreshed (its record gets an expiry).
 */
// ctest-labels: threads
// ctest-timeout: 120
#include "test_runtime_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define TTL_MS 10000

static int setup(void **state) {
  ckl_log_set(ckl_test_log_env, NULL, CKL_LOG_DEBUG);
  atomic_store(&test_clock_offset, 0);
  assert_int_equal(ckl_failpoint_arm("task.lease.after_round", "count"), 0);
  gcfx *f = calloc(1, sizeof *f);
  gcfx_open(f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  gcfx *f = *state;
  gcfx_close(f); /* disarms every failpoint */
  free(f);
  atomic_store(&test_clock_offset, 0);
  return 0;
}

/* A task that writes a partial file, waits at a gate, then commits it
 * (renames it to its final name) only if its safe point says go on. */
typedef struct lease_job {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started, open;
  char token[CKL_TOKEN_HEX_LEN + 1];
  char partial[4096], final[4096];
  int check_rc;
} lease_job;

static int lease_work(ckl_task_ctx *ctx, void *arg) {
  lease_job *j = arg;
  int fd = open(j->partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  close(fd);
  pthread_mutex_lock(&j->mu);
  snprintf(j->token, sizeof j->token, "%s", ckl_task_ctx_token(ctx));
  j->started = 1;
  pthread_cond_broadcast(&j->cv);
  while (!j->open) pthread_cond_wait(&j->cv, &j->mu);
  pthread_mutex_unlock(&j->mu);
  int rc = ckl_task_ctx_check(ctx);
  j->check_rc = rc;
  if (rc < 0) {
    unlink(j->partial); /* roll back */
    return rc;
  }
  return rename(j->partial, j->final) == 0 ? 0 : -errno;
}

typedef struct lease_fx {
  uv_loop_t loop;
  ckl_runtime *rt;
  ckl_task t;
  rec r;
  lease_job j;
  ckl_task_lock_spec lock;
  char lock_path[4096];
} lease_fx;

static void lease_start(gcfx *f, lease_fx *x) {
  memset(x, 0, sizeof *x);
  pthread_mutex_init(&x->j.mu, NULL);
  pthread_cond_init(&x->j.cv, NULL);
  snprintf(x->j.partial, sizeof x->j.partial, "%s/partial", f->dir);
  snprintf(x->j.final, sizeof x->j.final, "%s/final", f->dir);
  uv_loop_init(&x->loop);
  x->rt = rt_new(&x->loop, TTL_MS, 1);
  x->lock = (ckl_task_lock_spec){.kind = CKL_TASK_LOCK_GROUP, .mode = CKL_LOCK_EXCLUSIVE};
  assert_int_equal(ckl_group_name_parse("host/l", &x->lock.group), 0);
  snprintf(x->lock_path, sizeof x->lock_path, "%s/host/l.lck", ckl_store_locks_root(f->st));
  ckl_task_custom_args a = {.store = f->st, .nlocks = 1, .locks = &x->lock,
                            .operation = "backup", .target = "host/l",
                            .roster_flags = CKL_ROSTER_WRITER, .work = lease_work,
                            .work_arg = &x->j};
  x->t.data = &x->r;
  assert_int_equal(ckl_task_custom(x->rt, &x->t, &a, rec_progress, rec_done), 0);
  pthread_mutex_lock(&x->j.mu);
  while (!x->j.started) pthread_cond_wait(&x->j.cv, &x->j.mu);
  pthread_mutex_unlock(&x->j.mu);
}

static void lease_finish(lease_fx *x) {
  pthread_mutex_lock(&x->j.mu);
  x->j.open = 1;
  pthread_cond_broadcast(&x->j.cv);
  pthread_mutex_unlock(&x->j.mu);
  uv_run(&x->loop, UV_RUN_DEFAULT);
  assert_int_equal(x->r.done_calls, 1);
  rt_close_run(x->rt, &x->loop);
  assert_int_equal(uv_loop_close(&x->loop), 0);
  pthread_mutex_destroy(&x->j.mu);
  pthread_cond_destroy(&x->j.cv);
}

/* Refresh rounds until the lease is lost (one round after the disturbance
 * suffices; a round already in flight before it may not see it). */
static void refresh_until_lost(ckl_runtime *rt, ckl_task *t) {
  ckl__task_impl *impl = t->impl_;
  for (int i = 0; i < 20 && !atomic_load(&impl->lease.lost); i++) {
    uint64_t h = ckl_failpoint_hits("task.lease.after_round");
    assert_int_equal(ckl_runtime_refresh_now(rt), 0);
    assert_int_equal(ckl_failpoint_wait_hits("task.lease.after_round", h + 1, CKL_TEST_WAIT_MS), 0);
  }
  assert_int_not_equal(atomic_load(&impl->lease.lost), 0);
}

static int64_t record_expiry(gcfx *f, const char *token) {
  ckl__state *s;
  assert_int_equal(ckl__state_open(f->dir, &s), 0);
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(s, 0, &l, NULL), 0);
  int64_t exp = -1;
  for (size_t i = 0; i < l.n; i++)
    if (strcmp(l.v[i].token, token) == 0) exp = l.v[i].lease_expiry_ns;
  ckl__roster_list_free(&l);
  ckl__state_close(s);
  return exp;
}

/* Control: nothing disturbs the lease; a refresh moves the record's
 * expiry to about now + TTL, and the work commits. */
static void test_lease_refreshed(void **state) {
  gcfx *f = *state;
  lease_fx x;
  lease_start(f, &x);
  int64_t before = ckl__now_realtime_ns();
  uint64_t h = ckl_failpoint_hits("task.lease.after_round");
  assert_int_equal(ckl_runtime_refresh_now(x.rt), 0);
  assert_int_equal(ckl_failpoint_wait_hits("task.lease.after_round", h + 1, CKL_TEST_WAIT_MS), 0);
  int64_t exp = record_expiry(f, x.j.token);
  assert_true(exp >= before + (int64_t)TTL_MS * 1000000);
  assert_int_equal(atomic_load(&x.t.impl_->lease.lost), 0);
  lease_finish(&x);
  assert_int_equal(x.r.status, 0);
  assert_int_equal(access(x.j.final, F_OK), 0);
  assert_int_equal(record_expiry(f, x.j.token), -1); /* deregistered */
}

/* Another process removed our roster record (a GC could now start
 * without seeing this writer): lost, rolled back. */
static void test_lease_lost_record_removed(void **state) {
  gcfx *f = *state;
  lease_fx x;
  lease_start(f, &x);
  ckl__state *s;
  assert_int_equal(ckl__state_open(f->dir, &s), 0);
  assert_int_equal(ckl__state_deregister(s, x.j.token), 0);
  ckl__state_close(s);
  refresh_until_lost(x.rt, &x.t);
  lease_finish(&x);
  assert_int_equal(x.j.check_rc, CKL_ELOCKLOST);
  assert_int_equal(x.r.status, CKL_ELOCKLOST);
  assert_int_equal(access(x.j.partial, F_OK), -1);
  assert_int_equal(access(x.j.final, F_OK), -1);
}

/* The group lock file was replaced under the holder: the lock guards
 * nothing any more. */
static void test_lease_lost_lock_replaced(void **state) {
  gcfx *f = *state;
  lease_fx x;
  lease_start(f, &x);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.new", x.lock_path);
  ckl_test_write_file(tmp, "", 0);
  assert_int_equal(rename(tmp, x.lock_path), 0);
  refresh_until_lost(x.rt, &x.t);
  lease_finish(&x);
  assert_int_equal(x.r.status, CKL_ELOCKLOST);
  assert_int_equal(access(x.j.partial, F_OK), -1);
  assert_int_equal(access(x.j.final, F_OK), -1);
}

/* Suspend: the boottime clock jumps past the TTL between two safe points.
 * No refresh runs; the monitor alone decides. */
static void test_lease_lost_suspend(void **state) {
  gcfx *f = *state;
  lease_fx x;
  lease_start(f, &x);
  atomic_fetch_add(&test_clock_offset, (int64_t)3 * TTL_MS * 1000000);
  lease_finish(&x);
  assert_int_equal(x.r.status, CKL_ELOCKLOST);
  assert_int_equal(atomic_load(&test_clock_offset) > 0, 1);
  assert_int_equal(access(x.j.final, F_OK), -1);
  assert_int_equal(access(x.j.partial, F_OK), -1);
}

/* A suspend seen by a refresh: the refresh does not rescue a lease that
 * already ran out, even though the record is still there. */
static void test_lease_late_refresh_is_lost(void **state) {
  gcfx *f = *state;
  lease_fx x;
  lease_start(f, &x);
  atomic_fetch_add(&test_clock_offset, (int64_t)2 * TTL_MS * 1000000);
  refresh_until_lost(x.rt, &x.t);
  assert_int_equal(atomic_load(&x.t.impl_->lease.lost), 2); /* too late, not a failed refresh */
  lease_finish(&x);
  assert_int_equal(x.r.status, CKL_ELOCKLOST);
}

/* A GC whose roster record vanishes during the mark stops before the
 * sweep: CKL_ELOCKLOST, gc_active cleared, nothing removed. */
static ckl_task gc_t;
static rec gc_r;

static void test_gc_lease_lost(void **state) {
  gcfx *f = *state;
  uint32_t keep[] = {1, 2};
  gcfx_snapshot(f, "host/a/2026-01-01T00:00:00Z", keep, 2);
  gcfx_insert(f, 9);
  gcfx_age_chunks(f, 3600);
  assert_int_equal(ckl_failpoint_arm("gc.mark.after_list", "1*pause"), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, TTL_MS, 1);
  gc_r = (rec){0};
  gc_t.data = &gc_r;
  ckl_task_gc_args ga = {.store = f->st};
  assert_int_equal(ckl_task_gc(rt, &gc_t, &ga, rec_progress, rec_done), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gc.mark.after_list", 1, CKL_TEST_WAIT_MS), 0);
  /* the GC's records: operation "gc", this process (its own and, for a
   * GC that sweeps, its deleter guard against a freeze) */
  ckl__state *s;
  assert_int_equal(ckl__state_open(f->dir, &s), 0);
  ckl__roster_list l;
  assert_int_equal(ckl__state_list(s, 0, &l, NULL), 0);
  int removed = 0;
  for (size_t i = 0; i < l.n; i++) {
    if (strcmp(l.v[i].operation, "gc") == 0 && l.v[i].pid == getpid()) {
      assert_int_equal(ckl__state_deregister(s, l.v[i].token), 0);
      removed++;
    }
  }
  ckl__roster_list_free(&l);
  ckl__state_close(s);
  assert_true(removed >= 1);
  refresh_until_lost(rt, &gc_t);
  ckl_failpoint_release("gc.mark.after_list");
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(gc_r.status, CKL_ELOCKLOST);
  assert_int_equal(gcfx_gc_active(f), 0);
  assert_true(gcfx_has(f, 1));
  assert_true(gcfx_has(f, 9)); /* garbage, but nothing was swept */
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_lease_refreshed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_lost_record_removed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_lost_lock_replaced, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_lost_suspend, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_late_refresh_is_lost, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gc_lease_lost, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Runtime tests in one process (DESIGN.md section 8): the task API's
 * contract (no callback after an error return, done exactly once, never
 * from inside a call), GC and custom tasks, many tasks on one loop without
 * blocking it, cancel in every state, close draining, progress.
 */
// ctest-labels: threads
// ctest-timeout: 240
#include "test_runtime_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define S0 "host/a/2026-01-01T00:00:00Z"

static int return_seven(ckl_task_ctx *ctx, void *arg) {
  (void)ctx;
  (void)arg;
  return 7;
}

/* A blocking gate: work functions wait on it, the test opens it. */
typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started, open;
} gate;
#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0}

static void gate_wait_started(gate *g, int n) {
  pthread_mutex_lock(&g->mu);
  while (g->started < n) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Work: say it started, wait for the gate, then report the safe point. */
static int gated_work(ckl_task_ctx *ctx, void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->mu);
  g->started++;
  pthread_cond_broadcast(&g->cv);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  return ckl_task_ctx_check(ctx);
}

/* ---- the API contract --------------------------------------------------------------- */

static void test_errors_never_call_back(void **state) {
  gcfx *f = *state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  ckl_runtime_opts bad = {.lease_ttl_ms = 5};
  ckl_runtime *rt = NULL;
  assert_int_equal(ckl_runtime_new(&bad, &rt), -EINVAL);
  bad = (ckl_runtime_opts){.max_threads = 100000};
  assert_int_equal(ckl_runtime_new(&bad, &rt), -EINVAL);
  assert_null(rt);
  rt = rt_new(&loop, 0, 0);

  ckl_task t;
  rec r = {0};
  t.data = &r;
  ckl_task_gc_args ga = {0};
  assert_int_equal(ckl_task_gc(rt, &t, &ga, rec_progress, rec_done), -EINVAL);
  ga.store = f->st;
  ga.timeout_ms = -2;
  assert_int_equal(ckl_task_gc(rt, &t, &ga, rec_progress, rec_done), -EINVAL);
  ckl_task_custom_args ca = {0};
  assert_int_equal(ckl_task_custom(rt, &t, &ca, rec_progress, rec_done), -EINVAL);
  ca.work = return_seven;
  ckl_task_lock_spec shared_group = {.kind = CKL_TASK_LOCK_GROUP, .mode = CKL_LOCK_SHARED};
  ca.store = f->st;
  ca.nlocks = 1;
  ca.locks = &shared_group; /* group locks are exclusive only */
  assert_int_equal(ckl_task_custom(rt, &t, &ca, rec_progress, rec_done), -EINVAL);
  ca.nlocks = 0;
  ca.store = NULL;
  ca.operation = "backup"; /* a record needs a store */
  assert_int_equal(ckl_task_custom(rt, &t, &ca, rec_progress, rec_done), -EINVAL);
  ca.operation = NULL;
  assert_int_equal(ckl_task_cancel(NULL), -EINVAL);
  assert_int_equal(ckl_runtime_task_count(rt), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.done_calls, 0);

  /* Closing: new tasks are refused, and still never called back. */
  int closed = 0;
  assert_int_equal(ckl_runtime_close(rt, on_closed_flag, &closed), 0);
  assert_int_equal(ckl_task_custom(rt, &t, &ca, rec_progress, rec_done), -ECANCELED);
  assert_int_equal(ckl_runtime_close(rt, NULL, NULL), -EALREADY);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  assert_int_equal(r.done_calls, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* The runtime's own loop: run, the task's value comes back, close is
 * synchronous, the struct is the caller's again after done_cb. */
static void test_own_loop(void **state) {
  (void)state;
  ckl_runtime *rt;
  assert_int_equal(ckl_runtime_new(NULL, &rt), 0);
  assert_non_null(ckl_runtime_loop(rt));
  ckl_task t;
  rec r = {0};
  t.data = &r;
  ckl_task_custom_args ca = {.work = return_seven};
  assert_int_equal(ckl_task_custom(rt, &t, &ca, rec_progress, rec_done), 0);
  assert_int_equal(r.done_calls, 0); /* never from inside the call */
  assert_int_equal(ckl_runtime_task_count(rt), 1);
  assert_int_equal(ckl_runtime_run(rt), 0);
  assert_int_equal(r.done_calls, 1);
  assert_int_equal(r.status, 7);
  assert_int_equal(t.attempts, 1);
  assert_null(t.impl_);
  assert_int_equal(ckl_task_cancel(&t), -EINVAL); /* not live any more */
  assert_int_equal(ckl_runtime_task_count(rt), 0);
  int closed = 0;
  assert_int_equal(ckl_runtime_close(rt, on_closed_flag, &closed), 0);
  assert_int_equal(closed, 1);
}

/* ---- GC task ---------------------------------------------------------------------------- */

typedef struct gc_obs {
  int sweep_complete_seen;
  ckl_gc_result result;
  int have_result;
} gc_obs;

static void gc_on_progress(ckl_task *t, const ckl_task_progress *p) {
  rec *r = t->data;
  gc_obs *o = r->user;
  if (strcmp(p->phase, "sweep") == 0) {
    assert_int_equal(p->total, 65536);
    if (p->done == 65536 && !o->sweep_complete_seen) {
      o->sweep_complete_seen = 1;
      /* The whole sweep was reported; the GC is at, or on its way to, the
       * pause before its purge. A release only wakes a thread already
       * paused (failpoint.h), and this tick can run before the GC thread
       * gets there (seen under ASan on a loaded machine: the GC then
       * paused for ever), so wait for the hit first. The GC thread needs
       * nothing from this loop to reach the pause. */
      assert_int_equal(ckl_failpoint_wait_hits("gc.purge.before", 1, CKL_TEST_WAIT_MS), 0);
      assert_int_equal(ckl_failpoint_release("gc.purge.before"), 1);
    }
  }
}

static void gc_on_done(ckl_task *t, int status) {
  rec *r = t->data;
  gc_obs *o = r->user;
  const ckl_gc_result *res = ckl_task_gc_result(t);
  if (status == 0) {
    assert_non_null(res);
    o->result = *res;
    o->have_result = 1;
  }
}

static void test_gc_task_progress_and_result(void **state) {
  gcfx *f = *state;
  uint32_t keep[] = {1, 2, 3};
  gcfx_snapshot(f, S0, keep, 3);
  for (uint32_t id = 10; id < 13; id++) gcfx_insert(f, id);
  gcfx_age_chunks(f, 3600);
  assert_int_equal(ckl_failpoint_arm("gc.purge.before", "1*pause"), 0);

  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);
  ckl_task t;
  gc_obs o = {0};
  rec r = {.user = &o, .on_progress = gc_on_progress, .on_done = gc_on_done};
  t.data = &r;
  ckl_task_gc_args ga = {.store = f->st, .timeout_ms = CKL_TRY};
  ga.opts.threads = 1; /* the observed thread sweeps every directory */
  assert_int_equal(ckl_task_gc(rt, &t, &ga, rec_progress, rec_done), 0);
  assert_int_equal(t.type, CKL_TASK_GC);
  assert_null(ckl_task_gc_result(&t)); /* only during done_cb */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.done_calls, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(o.sweep_complete_seen, 1);
  assert_int_equal(o.have_result, 1);
  assert_int_equal(o.result.removed_chunks, 3);
  assert_int_equal(o.result.referenced_chunks, 3);
  for (uint32_t id = 1; id <= 3; id++) assert_true(gcfx_has(f, id));
  for (uint32_t id = 10; id < 13; id++) assert_false(gcfx_has(f, id));
  assert_int_equal(gcfx_gc_active(f), 0);
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- many tasks at once on one loop -------------------------------------------------------- */

#define NWRITERS 16
#define NCONTEND 4

/* The first contender to get the group lock holds it until every other
 * contender has seen it named in a "wait" event: each has then waited
 * for it, and its name was there to be read (the attempt did not meet a
 * grant or release half-done, which names nobody: test_runtime_util.h). */
typedef struct contend {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int named;       /* contenders that saw the holder named (loop thread) */
  int first_taken;
} contend;

static contend cont = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

typedef struct contend_job {
  writer_job w;
  int saw_name;     /* loop thread */
  ckl_holder named; /* the first holder a wait event named */
} contend_job;

static int contend_work(ckl_task_ctx *ctx, void *arg) {
  contend_job *j = arg;
  pthread_mutex_lock(&cont.mu);
  if (!cont.first_taken) {
    cont.first_taken = 1;
    while (cont.named < NCONTEND - 1) pthread_cond_wait(&cont.cv, &cont.mu);
  }
  pthread_mutex_unlock(&cont.mu);
  return writer_work(ctx, &j->w);
}

static void contend_on_progress(ckl_task *t, const ckl_task_progress *p) {
  rec *r = t->data;
  contend_job *j = r->user;
  if (strcmp(p->phase, "wait") != 0 || !p->waiting_for->known || j->saw_name) return;
  j->saw_name = 1;
  j->named = *p->waiting_for;
  pthread_mutex_lock(&cont.mu);
  cont.named++;
  pthread_cond_broadcast(&cont.cv);
  pthread_mutex_unlock(&cont.mu);
}

static void test_many_tasks_one_loop(void **state) {
  gcfx *f = *state;
  for (uint32_t id = 100; id < 121; id++) gcfx_insert(f, id); /* garbage */
  gcfx_age_chunks(f, 3600);

  uv_loop_t loop;
  uv_loop_init(&loop);
  loopmon mon;
  loopmon_start(&mon, &loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);

  static ckl_task wt[NWRITERS], ct[NCONTEND], gt;
  static rec wr[NWRITERS], cr[NCONTEND], gr;
  static writer_job wj[NWRITERS];
  static contend_job cj[NCONTEND];
  static ckl_task_lock_spec wl[NWRITERS][2], cl[NCONTEND];
  char target[NWRITERS][64];
  for (int i = 0; i < NWRITERS; i++) {
    wj[i] = (writer_job){.st = f->st, .group = (uint32_t)i + 1, .nchunks = 32};
    snprintf(wj[i].snap_rel, sizeof wj[i].snap_rel, "host/w%d/2026-01-01T00:00:00Z", i);
    wl[i][0] = (ckl_task_lock_spec){.kind = CKL_TASK_LOCK_PROCESS, .mode = CKL_LOCK_SHARED};
    wl[i][1] = (ckl_task_lock_spec){.kind = CKL_TASK_LOCK_GROUP, .mode = CKL_LOCK_EXCLUSIVE};
    char id[16];
    snprintf(id, sizeof id, "w%d", i);
    assert_int_equal(ckl_group_name_parse("host/w0", &wl[i][1].group), 0);
    snprintf(wl[i][1].group.id, sizeof wl[i][1].group.id, "%s", id);
    snprintf(target[i], sizeof target[i], "host/%s", id);
    ckl_task_custom_args ca = {.store = f->st, .nlocks = 2, .locks = wl[i], .operation = "backup",
                               .target = target[i], .roster_flags = CKL_ROSTER_WRITER,
                               .timeout_ms = CKL_TEST_WAIT_MS, .work = writer_work,
                               .work_arg = &wj[i]};
    wr[i] = (rec){0};
    wt[i].data = &wr[i];
    assert_int_equal(ckl_task_custom(rt, &wt[i], &ca, rec_progress, rec_done), 0);
  }
  ckl_task_gc_args ga = {.store = f->st, .timeout_ms = CKL_TEST_WAIT_MS};
  gr = (rec){0};
  gt.data = &gr;
  assert_int_equal(ckl_task_gc(rt, &gt, &ga, rec_progress, rec_done), 0);
  for (int i = 0; i < NCONTEND; i++) {
    cj[i] = (contend_job){.w = {.st = f->st, .group = 100 + (uint32_t)i, .nchunks = 8}};
    snprintf(cj[i].w.snap_rel, sizeof cj[i].w.snap_rel, "host/shared/2026-01-0%dT00:00:00Z", i + 1);
    cl[i] = (ckl_task_lock_spec){.kind = CKL_TASK_LOCK_GROUP, .mode = CKL_LOCK_EXCLUSIVE};
    assert_int_equal(ckl_group_name_parse("host/shared", &cl[i].group), 0);
    ckl_task_custom_args ca = {.store = f->st, .nlocks = 1, .locks = &cl[i], .operation = "backup",
                               .target = "host/shared", .roster_flags = CKL_ROSTER_WRITER,
                               .timeout_ms = CKL_TEST_WAIT_MS, .work = contend_work,
                               .work_arg = &cj[i]};
    cr[i] = (rec){.on_progress = contend_on_progress, .user = &cj[i]};
    ct[i].data = &cr[i];
    assert_int_equal(ckl_task_custom(rt, &ct[i], &ca, rec_progress, rec_done), 0);
  }
  assert_int_equal(ckl_runtime_task_count(rt), NWRITERS + NCONTEND + 1);
  uv_run(&loop, UV_RUN_DEFAULT);

  assert_int_equal(ckl_runtime_task_count(rt), 0);
  for (int i = 0; i < NWRITERS; i++) {
    assert_int_equal(wr[i].done_calls, 1);
    assert_int_equal(wr[i].status, 0);
    assert_int_equal(wj[i].checks, 32);
    assert_true(writer_chunks_present(f->st, wj[i].group, 32));
  }
  int waited = 0;
  for (int i = 0; i < NCONTEND; i++) {
    assert_int_equal(cr[i].status, 0);
    assert_true(writer_chunks_present(f->st, cj[i].w.group, 8));
    if (ct[i].attempts > 1) {
      waited++;
      /* who was in the way: another contender of this process */
      assert_int_equal(cj[i].saw_name, 1);
      assert_int_equal(cj[i].named.pid, getpid());
      assert_string_equal(cj[i].named.operation, "backup");
    } else {
      assert_int_equal(cj[i].saw_name, 0); /* the first holder never waited */
    }
  }
  assert_int_equal(waited, NCONTEND - 1);
  assert_int_equal(gr.status, 0);
  for (uint32_t id = 100; id < 121; id++) assert_false(gcfx_has(f, id));
  loopmon_stop(&mon);
  rt_close_run(rt, &loop);
  loopmon_assert(&mon);
  assert_int_equal(uv_loop_close(&loop), 0);
  cont.named = 0;
  cont.first_taken = 0;
}

/* ---- cancel in every state ---------------------------------------------------------------- */

typedef struct cancel_ctx {
  ckl_runtime *rt;
  ckl_task h, h2, w, q;
  rec hr, h2r, wr, qr;
  gate hg, h2g;
  int in_cancel;
  ckl_task_lock_spec lock;
} cancel_ctx;

static cancel_ctx cc;

static void cc_done_check(ckl_task *t, int status) {
  (void)t;
  (void)status;
  assert_int_equal(cc.in_cancel, 0); /* never from inside ckl_task_cancel */
}

static void cc_q_done(ckl_task *t, int status) {
  cc_done_check(t, status);
  /* The queued task is gone; now end the two running ones. */
  cc.in_cancel = 1;
  assert_int_equal(ckl_task_cancel(&cc.h), 0);
  cc.in_cancel = 0;
  gate_open(&cc.hg);
  gate_open(&cc.h2g);
}

static void cc_w_done(ckl_task *t, int status) {
  cc_done_check(t, status);
  /* Fill the second worker, then queue one more and cancel it there. */
  ckl_task_custom_args a2 = {.work = gated_work, .work_arg = &cc.h2g};
  cc.h2.data = &cc.h2r;
  cc.h2r = (rec){.on_done = cc_done_check};
  assert_int_equal(ckl_task_custom(cc.rt, &cc.h2, &a2, rec_progress, rec_done), 0);
  gate_wait_started(&cc.h2g, 1);
  ckl_task_custom_args aq = {.work = return_seven};
  cc.q.data = &cc.qr;
  cc.qr = (rec){.on_done = cc_q_done};
  assert_int_equal(ckl_task_custom(cc.rt, &cc.q, &aq, rec_progress, rec_done), 0);
  cc.in_cancel = 1;
  assert_int_equal(ckl_task_cancel(&cc.q), 0);
  assert_int_equal(ckl_task_cancel(&cc.q), -EALREADY);
  cc.in_cancel = 0;
}

static void cc_w_on_wait(ckl_task *t, rec *r) {
  (void)r;
  cc.in_cancel = 1;
  assert_int_equal(ckl_task_cancel(t), 0);
  assert_int_equal(ckl_task_cancel(t), -EALREADY);
  cc.in_cancel = 0;
}

static void test_cancel_queued_waiting_running(void **state) {
  gcfx *f = *state;
  memset(&cc, 0, sizeof cc);
  cc.hg = (gate)GATE_INIT;
  cc.h2g = (gate)GATE_INIT;
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime_opts o = {.loop = &loop, .max_threads = 2, .progress_interval_ms = 5,
                        .backoff_max_ms = 20};
  assert_int_equal(ckl_runtime_new(&o, &cc.rt), 0);

  cc.lock = (ckl_task_lock_spec){.kind = CKL_TASK_LOCK_GROUP, .mode = CKL_LOCK_EXCLUSIVE};
  assert_int_equal(ckl_group_name_parse("host/c", &cc.lock.group), 0);
  /* H holds the group and waits at its gate (running). */
  ckl_task_custom_args ah = {.store = f->st, .nlocks = 1, .locks = &cc.lock, .operation = "hold",
                             .target = "host/c", .work = gated_work, .work_arg = &cc.hg};
  cc.h.data = &cc.hr;
  cc.hr = (rec){.on_done = cc_done_check};
  assert_int_equal(ckl_task_custom(cc.rt, &cc.h, &ah, rec_progress, rec_done), 0);
  gate_wait_started(&cc.hg, 1);
  /* W wants the same group forever (waiting); cancelled on its first wait. */
  ckl_task_custom_args aw = {.store = f->st, .nlocks = 1, .locks = &cc.lock,
                             .timeout_ms = CKL_FOREVER, .work = return_seven};
  cc.w.data = &cc.wr;
  cc.wr = (rec){.on_wait = cc_w_on_wait, .on_done = cc_w_done};
  assert_int_equal(ckl_task_custom(cc.rt, &cc.w, &aw, rec_progress, rec_done), 0);

  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(cc.wr.status, CKL_ECANCELED);
  assert_true(cc.w.attempts >= 1);
  assert_int_equal(cc.wr.wait_holder.known, 1);
  assert_string_equal(cc.wr.wait_holder.operation, "hold");
  assert_int_equal(cc.wr.wait_holder.pid, getpid());
  assert_int_equal(cc.w.holder.known, 1);
  assert_int_equal(cc.qr.status, CKL_ECANCELED);
  assert_int_equal(cc.q.attempts, 0); /* never ran */
  assert_int_equal(cc.hr.status, CKL_ECANCELED);
  assert_int_equal(cc.h2r.status, 0);
  /* H released the group: it can be taken again at once. */
  ckl_path_lock lk = {0};
  assert_int_equal(ckl_group_lock(f->st, &cc.lock.group, &lk, NULL), 0);
  ckl_path_lock_release(&lk);
  rt_close_run(cc.rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- close cancels and drains -------------------------------------------------------------- */

typedef struct close_ctx {
  int done_before_close, close_calls;
} close_ctx;
static close_ctx clc;

static void clc_done(ckl_task *t, int status) {
  (void)t;
  assert_int_equal(status, CKL_ECANCELED);
  assert_int_equal(clc.close_calls, 0);
  clc.done_before_close++;
}

static void clc_closed(ckl_runtime *rt, void *arg) {
  (void)rt;
  (void)arg;
  clc.close_calls++;
  assert_int_equal(clc.done_before_close, 2);
}

static void test_close_cancels_and_drains(void **state) {
  gcfx *f = *state;
  memset(&clc, 0, sizeof clc);
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);
  gate g = GATE_INIT;
  ckl_task_lock_spec lock = {.kind = CKL_TASK_LOCK_GROUP, .mode = CKL_LOCK_EXCLUSIVE};
  assert_int_equal(ckl_group_name_parse("host/d", &lock.group), 0);
  ckl_task h, w;
  rec hr = {.on_done = clc_done}, wr = {.on_done = clc_done};
  h.data = &hr;
  w.data = &wr;
  ckl_task_custom_args ah = {.store = f->st, .nlocks = 1, .locks = &lock, .work = gated_work,
                             .work_arg = &g};
  assert_int_equal(ckl_task_custom(rt, &h, &ah, rec_progress, rec_done), 0);
  gate_wait_started(&g, 1);
  ckl_task_custom_args aw = {.store = f->st, .nlocks = 1, .locks = &lock,
                             .timeout_ms = CKL_FOREVER, .work = return_seven};
  assert_int_equal(ckl_task_custom(rt, &w, &aw, rec_progress, rec_done), 0);
  /* Let W meet the busy lock and start waiting. */
  while (w.attempts == 0 && wr.wait_events == 0) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(ckl_runtime_close(rt, clc_closed, NULL), 0);
  gate_open(&g); /* H reaches its safe point and sees the cancel */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(clc.done_before_close, 2);
  assert_int_equal(clc.close_calls, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_errors_never_call_back, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_own_loop, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_gc_task_progress_and_result, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_many_tasks_one_loop, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_cancel_queued_waiting_running, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_close_cancels_and_drains, gcfx_setup, gcfx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * tasks/runtime.c - the runtime: its loop handles, the worker pool, the
 * life of a task (submit, attempt, wait, cancel, finish), progress
 * delivery, and close. tasks_internal.h states who owns which field
 * (R1..R5); docs/runtime.md has the design.
 *
 * The life of a task, as the loop sees it:
 *
 *   submit -> QUEUED -> RUNNING (a worker runs one attempt)
 *     attempt busy   -> WAITING (uv timer: backoff with jitter) -> QUEUED ...
 *                       until the deadline: CKL_ETIMEDOUT
 *     attempt done   -> FINISHING -> done_cb
 *   cancel: QUEUED/WAITING end at once (CKL_ECANCELED), RUNNING at the next
 *   safe point. A task type with a cleanup step (the GC's intent record)
 *   runs it on a worker before it finishes, whatever the way out.
 *
 * Every completion travels through the completed queue and the async
 * handle, so done_cb never runs inside a ckl_task_* call.
 */
#include <stdlib.h>
#include <string.h>

#include "datastore/store_internal.h"
#include "tasks/tasks_internal.h"

#define BACKOFF_START_MS 10
#define MAX_THREADS 256

static int64_t now_ms(void) { return (int64_t)(uv_hrtime() / 1000000u); }

static int64_t default_clock(void *arg) {
  (void)arg;
  return ckl__now_boottime_ns();
}

int64_t ckl__rt_clock(ckl_runtime *rt) { return rt->clock(rt->clock_arg); }

const char *ckl_task_type_name(ckl_task_type t) {
  switch (t) {
  case CKL_TASK_CUSTOM: return "custom";
  case CKL_TASK_GC: return "gc";
  case CKL_TASK_BACKUP: return "backup";
  case CKL_TASK_FORGET: return "forget";
  case CKL_TASK_PRUNE: return "prune";
  case CKL_TASK_VERIFY: return "verify";
  case CKL_TASK_READ: return "read";
  }
  return "unknown";
}

/* ---- task records ------------------------------------------------------------- */

ckl__task_impl *ckl__task_alloc(const task_vt *vt, void *args) {
  ckl__task_impl *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->vt = vt;
  t->args = args;
  atomic_init(&t->refs, 1); /* the loop's */
  atomic_init(&t->cancel, 0);
  ckl__lease_init(&t->lease);
  pthread_mutex_init(&t->prog_mu, NULL);
  ckl__observer_init(t);
  return t;
}

static void task_free(ckl__task_impl *t) {
  if (t->vt->free_args) t->vt->free_args(t);
  ckl__lease_destroy(&t->lease);
  pthread_mutex_destroy(&t->prog_mu);
  ckl__state_close(t->state);
  free(t);
}

void ckl__task_unref(ckl__task_impl *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1) task_free(t);
}

int ckl__task_state(ckl__task_impl *t, const char *store_path) {
  if (!t->state) {
    int rc = ckl__state_open(store_path, &t->state);
    if (rc < 0) return rc;
  }
  if (!t->reaped) {
    /* Stale holders are reaped by whoever meets them: a dead process's
     * record would otherwise hold back every GC's cutoff. Never our own
     * (a live local process is never stale). */
    int n = ckl__state_reap(t->state, 0); /* logs what it reaped */
    if (n < 0) ckl__log_warn("%s task: cannot reap stale roster records in %s: %s",
                             ckl_task_type_name(t->vt->type), store_path, ckl_strerror(n));
    t->reaped = true;
  }
  return 0;
}

int ckl__task_cancel_reason(ckl__task_impl *t, int rc) {
  if (rc == CKL_ECANCELED && atomic_load(&t->lease.lost)) return CKL_ELOCKLOST;
  return rc;
}

int ckl__task_checkpoint(ckl__task_impl *t) {
  /* A lost lease outranks a cancel: the caller must learn that the work
   * was not protected. */
  int rc = ckl__lease_check(t);
  if (rc < 0) return rc;
  if (atomic_load(&t->cancel)) return CKL_ECANCELED;
  return 0;
}

void ckl__task_progress(ckl__task_impl *t, const char *phase, uint64_t done, uint64_t total,
                        uint64_t bytes) {
  pthread_mutex_lock(&t->prog_mu);
  if (!t->prog_phase || strcmp(t->prog_phase, phase) != 0) {
    t->prog_phase = phase;
    t->prog_phase_start_ns = ckl__now_monotonic_ns();
  }
  t->prog_done = done;
  t->prog_total = total;
  t->prog_bytes = bytes;
  t->prog_dirty = true;
  pthread_mutex_unlock(&t->prog_mu);
}

/* ---- the worker pool ------------------------------------------------------------ */

static void run_step(ckl__task_impl *t) {
  /* The observer lets the library report locks, records, progress and
   * safe points of whatever this thread runs for the task. */
  ckl__tls_observer = &t->obs;
  if (t->cleanup_only) {
    if (t->vt->cleanup) t->vt->cleanup(t);
    t->busy = false;
    t->status = t->final_status;
  } else {
    bool busy = false;
    t->attempts++;
    memset(&t->busy_holder, 0, sizeof t->busy_holder);
    int rc = ckl__task_checkpoint(t);
    if (rc == 0) rc = CKL_FAILPOINT("task.before_attempt");
    if (rc == 0) rc = t->vt->attempt(t, &busy);
    t->busy = busy;
    t->status = rc;
    if (!busy && t->vt->cleanup) t->vt->cleanup(t);
  }
  if (!t->busy) ckl__lease_clear(t); /* the task holds nothing any more */
  /* Close the state here, not on the loop (closing the last handle of an
   * environment unmaps it). Kept while a record is leased (a waiting GC's
   * intent): the lease thread refreshes through it. With no record leased
   * the lease thread no longer touches it (R3). */
  if (t->state && !ckl__lease_has_records(t)) {
    ckl__state_close(t->state);
    t->state = NULL;
  }
  ckl__tls_observer = NULL;
}

static void *worker_main(void *arg) {
  ckl_runtime *rt = arg;
  pthread_mutex_lock(&rt->mu);
  for (;;) {
    while (!rt->runq_head && !rt->stop) {
      rt->idle++;
      pthread_cond_wait(&rt->cv, &rt->mu);
      rt->idle--;
    }
    ckl__task_impl *t = rt->runq_head;
    if (!t) break; /* stopping, nothing left */
    rt->runq_head = t->next_q;
    if (!rt->runq_head) rt->runq_tail = NULL;
    rt->nqueued--;
    t->next_q = NULL;
    t->tstate = T_RUNNING;
    pthread_mutex_unlock(&rt->mu);

    run_step(t);

    pthread_mutex_lock(&rt->mu);
    if (rt->done_tail) rt->done_tail->next_q = t;
    else rt->done_head = t;
    rt->done_tail = t;
    pthread_mutex_unlock(&rt->mu);
    /* After the queue push: the loop may already have taken it, which is
     * fine; uv_async_send coalesces. The async handle is closed only after
     * every worker has been joined. */
    uv_async_send(&rt->async);
    pthread_mutex_lock(&rt->mu);
  }
  pthread_mutex_unlock(&rt->mu);
  return NULL;
}

/* Loop thread. Put t on the run queue, growing the pool if nobody is idle. */
static void enqueue(ckl__task_impl *t) {
  ckl_runtime *rt = t->rt;
  pthread_mutex_lock(&rt->mu);
  t->tstate = T_QUEUED;
  t->next_q = NULL;
  if (rt->runq_tail) rt->runq_tail->next_q = t;
  else rt->runq_head = t;
  rt->runq_tail = t;
  rt->nqueued++;
  /* Compare with the queue, not with "nobody idle": a signalled worker
   * stays counted as idle until it wakes, and a burst of submissions
   * would otherwise all land on it. */
  if (rt->nqueued > rt->idle && rt->nthreads < rt->max_threads) {
    /* If this fails the task waits for a busy thread (there is always the
     * one started with the runtime). */
    int err = pthread_create(&rt->threads[rt->nthreads], NULL, worker_main, rt);
    if (err == 0) rt->nthreads++;
    else ckl__log_warn("runtime: cannot start a worker thread: %s", strerror(err));
  }
  pthread_cond_signal(&rt->cv);
  pthread_mutex_unlock(&rt->mu);
}

/* Loop thread, under rt->mu. Take t off the run queue; false if a worker
 * already took it. */
static bool runq_remove(ckl_runtime *rt, ckl__task_impl *t) {
  ckl__task_impl **pp = &rt->runq_head, *prev = NULL;
  while (*pp && *pp != t) {
    prev = *pp;
    pp = &(*pp)->next_q;
  }
  if (!*pp) return false;
  *pp = t->next_q;
  if (rt->runq_tail == t) rt->runq_tail = prev;
  rt->nqueued--;
  t->next_q = NULL;
  return true;
}

/* ---- finishing ---------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h) { ckl__task_unref(h->data); }
static void maybe_finish_close(ckl_runtime *rt);

static void on_heartbeat(uv_timer_t *h) { ckl__lease_round(h->data); }
static void on_progress_tick(uv_timer_t *h);

static void update_timers(ckl_runtime *rt) {
  if (rt->live > 0 && !uv_is_active((uv_handle_t *)&rt->heartbeat)) {
    uint64_t beat = (uint64_t)(rt->ttl_ms / 3);
    uv_timer_start(&rt->heartbeat, on_heartbeat, beat, beat);
    uv_timer_start(&rt->progress, on_progress_tick, (uint64_t)rt->progress_ms,
                   (uint64_t)rt->progress_ms);
  } else if (rt->live == 0) {
    uv_timer_stop(&rt->heartbeat);
    uv_timer_stop(&rt->progress);
  }
}

/* Loop thread: the task's result is decided. Tasks with a cleanup step
 * run it on a worker first; either way done_cb comes from on_async. */
static void finish(ckl__task_impl *t, int status) {
  ckl_runtime *rt = t->rt;
  t->decided = true;
  t->tstate = T_FINISHING; /* on no queue and no worker now */
  uv_timer_stop(&t->timer);
  if (t->vt->cleanup && !t->cleanup_only) {
    t->cleanup_only = true;
    t->final_status = status;
    enqueue(t);
    return;
  }
  pthread_mutex_lock(&rt->mu);
  t->busy = false;
  t->status = status;
  if (rt->done_tail) rt->done_tail->next_q = t;
  else rt->done_head = t;
  rt->done_tail = t;
  pthread_mutex_unlock(&rt->mu);
  uv_async_send(&rt->async);
}

static void deliver(ckl__task_impl *t) {
  ckl_runtime *rt = t->rt;
  ckl_task *task = t->task;
  t->decided = true;
  t->tstate = T_FINISHING; /* taken off the completed queue: no worker has it */
  uv_timer_stop(&t->timer);
  task->status = t->status;
  task->attempts = t->attempts;
  /* unlink from the live list before the callback, which may submit */
  if (t->prev_live) t->prev_live->next_live = t->next_live;
  else rt->live_head = t->next_live;
  if (t->next_live) t->next_live->prev_live = t->prev_live;
  else rt->live_tail = t->prev_live;
  rt->live--;
  if (t->done_cb) t->done_cb(task, t->status);
  /* The callback may have reused the struct for a new task. */
  if (task->impl_ == t) task->impl_ = NULL;
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
  update_timers(rt);
}

static void on_retry(uv_timer_t *h) { enqueue(h->data); }

static void set_wait_progress(ckl__task_impl *t) {
  pthread_mutex_lock(&t->prog_mu);
  if (!t->prog_phase || strcmp(t->prog_phase, "wait") != 0) {
    t->prog_phase = "wait";
    t->prog_phase_start_ns = ckl__now_monotonic_ns();
  }
  t->prog_done = t->prog_total = t->prog_bytes = 0;
  t->prog_holder = t->busy_holder;
  t->prog_dirty = true;
  pthread_mutex_unlock(&t->prog_mu);
}

/* Loop thread: an attempt found the locks busy. */
static void handle_busy(ckl__task_impl *t) {
  ckl_runtime *rt = t->rt;
  t->task->holder = t->busy_holder;
  if (atomic_load(&t->cancel) || rt->closing) {
    finish(t, CKL_ECANCELED);
    return;
  }
  if (t->timeout_ms == CKL_TRY) {
    finish(t, CKL_EBUSY);
    return;
  }
  int64_t now = now_ms();
  if (t->timeout_ms > 0 && now >= t->deadline_ms) {
    char who[256];
    ckl_holder_format(&t->busy_holder, who, sizeof who);
    ckl__log_info("%s task: timed out after %lld ms waiting for %s",
                  ckl_task_type_name(t->vt->type), (long long)t->timeout_ms, who);
    finish(t, CKL_ETIMEDOUT);
    return;
  }
  /* Exponential backoff with full jitter over [b/2, b]: contenders that
   * collided once do not collide in step again. The last retry lands on
   * the deadline itself, so a release just before it is still seen. */
  int64_t b = t->backoff_ms;
  int64_t delay = b / 2 + (int64_t)(ckl__random_u64() % (uint64_t)(b / 2 + 1));
  if (t->timeout_ms > 0 && delay > t->deadline_ms - now) delay = t->deadline_ms - now;
  t->backoff_ms = b * 2 > rt->backoff_max_ms ? rt->backoff_max_ms : b * 2;
  t->tstate = T_WAITING;
  set_wait_progress(t);
  uv_timer_start(&t->timer, on_retry, (uint64_t)delay, 0);
}

static void on_async(uv_async_t *h) {
  ckl_runtime *rt = h->data;
  pthread_mutex_lock(&rt->mu);
  ckl__task_impl *list = rt->done_head;
  rt->done_head = rt->done_tail = NULL;
  pthread_mutex_unlock(&rt->mu);
  while (list) {
    ckl__task_impl *t = list;
    list = t->next_q;
    t->next_q = NULL;
    t->task->attempts = t->attempts;
    if (t->busy) handle_busy(t);
    else deliver(t); /* a final attempt, a cleanup step, or finish() */
  }
  maybe_finish_close(rt);
}

/* ---- progress ------------------------------------------------------------------- */

static void emit_progress(ckl__task_impl *t) {
  ckl_task_progress p;
  ckl_holder holder;
  memset(&p, 0, sizeof p);
  pthread_mutex_lock(&t->prog_mu);
  if (!t->prog_dirty || !t->prog_phase) {
    pthread_mutex_unlock(&t->prog_mu);
    return;
  }
  t->prog_dirty = false;
  p.phase = t->prog_phase;
  p.done = t->prog_done;
  p.total = t->prog_total;
  p.bytes = t->prog_bytes;
  int64_t phase_ns = ckl__now_monotonic_ns() - t->prog_phase_start_ns;
  holder = t->prog_holder;
  pthread_mutex_unlock(&t->prog_mu);
  p.rate = phase_ns > 0 ? (double)p.bytes * 1e9 / (double)phase_ns : 0.0;
  p.elapsed_ms = now_ms() - t->submit_ms;
  if (strcmp(p.phase, "wait") == 0) p.waiting_for = &holder;
  t->prog_last_emit_ms = now_ms();
  t->progress_cb(t->task, &p);
}

static void on_progress_tick(uv_timer_t *h) {
  ckl_runtime *rt = h->data;
  for (ckl__task_impl *t = rt->live_head, *next; t; t = next) {
    next = t->next_live; /* a callback may submit (appends) but never unlinks */
    if (t->progress_cb && !t->decided) emit_progress(t);
  }
}

/* ---- submit and cancel ---------------------------------------------------------- */

int ckl__task_submit(ckl_runtime *rt, ckl_task *task, ckl__task_impl *t,
                     ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (rt->closing) {
    ckl__task_unref(t);
    return -ECANCELED;
  }
  int rc = uv_timer_init(rt->loop, &t->timer);
  if (rc < 0) {
    ckl__task_unref(t);
    return rc;
  }
  t->timer.data = t;
  t->rt = rt;
  t->task = task;
  t->progress_cb = progress_cb;
  t->done_cb = done_cb;
  t->submit_ms = now_ms();
  t->deadline_ms = t->timeout_ms > 0 ? t->submit_ms + t->timeout_ms : 0;
  t->backoff_ms = BACKOFF_START_MS;
  task->rt = rt;
  task->type = t->vt->type;
  task->status = 0;
  task->attempts = 0;
  memset(&task->holder, 0, sizeof task->holder);
  task->impl_ = t;
  t->prev_live = rt->live_tail;
  if (rt->live_tail) rt->live_tail->next_live = t;
  else rt->live_head = t;
  rt->live_tail = t;
  rt->live++;
  update_timers(rt);
  enqueue(t);
  return 0;
}

int ckl_task_cancel(ckl_task *task) {
  if (!task || !task->impl_) return -EINVAL;
  ckl__task_impl *t = task->impl_;
  ckl_runtime *rt = t->rt;
  if (t->decided) return -EALREADY;
  atomic_store(&t->cancel, 1);
  /* The GC polls a plain int with atomic builtins (gc.h). */
  __atomic_store_n(&t->gc_cancel, 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&rt->mu);
  task_state s = t->tstate;
  bool dequeued = s == T_QUEUED && runq_remove(rt, t);
  pthread_mutex_unlock(&rt->mu);
  if (dequeued || s == T_WAITING) finish(t, CKL_ECANCELED);
  /* RUNNING: the attempt sees the flag at its next safe point. */
  return 0;
}

/* ---- the runtime ------------------------------------------------------------------ */

static void free_runtime(ckl_runtime *rt) {
  pthread_mutex_destroy(&rt->mu);
  pthread_cond_destroy(&rt->cv);
  pthread_mutex_destroy(&rt->lmu);
  pthread_cond_destroy(&rt->lcv);
  free(rt->ljobs);
  free(rt->threads);
  free(rt);
}

/* Stop and join every thread; they must be idle (no live task). */
static void stop_threads(ckl_runtime *rt) {
  pthread_mutex_lock(&rt->mu);
  rt->stop = true;
  pthread_cond_broadcast(&rt->cv);
  pthread_mutex_unlock(&rt->mu);
  for (unsigned i = 0; i < rt->nthreads; i++) pthread_join(rt->threads[i], NULL);
  rt->nthreads = 0;
  ckl__lease_thread_stop(rt);
}

int ckl_runtime_new(const ckl_runtime_opts *opts, ckl_runtime **out) {
  static const ckl_runtime_opts defaults;
  const ckl_runtime_opts *o = opts ? opts : &defaults;
  if (!out) return -EINVAL;
  *out = NULL;
  if (o->max_threads > MAX_THREADS || o->lease_ttl_ms < 0 ||
      (o->lease_ttl_ms && o->lease_ttl_ms < 30) || o->progress_interval_ms < 0 ||
      o->backoff_max_ms < 0)
    return -EINVAL;
  ckl_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) return -ENOMEM;
  rt->max_threads = o->max_threads ? o->max_threads : CKL_RUNTIME_DEFAULT_THREADS;
  rt->ttl_ms = o->lease_ttl_ms ? o->lease_ttl_ms : CKL_RUNTIME_DEFAULT_LEASE_TTL_MS;
  rt->progress_ms =
      o->progress_interval_ms ? o->progress_interval_ms : CKL_RUNTIME_DEFAULT_PROGRESS_MS;
  rt->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : CKL_RUNTIME_DEFAULT_BACKOFF_MAX_MS;
  if (rt->backoff_max_ms < BACKOFF_START_MS) rt->backoff_max_ms = BACKOFF_START_MS;
  rt->intent_max_ms = o->intent_max_ms ? o->intent_max_ms : CKL_RUNTIME_DEFAULT_INTENT_MAX_MS;
  rt->clock = o->clock ? o->clock : default_clock;
  rt->clock_arg = o->clock_arg;
  pthread_mutex_init(&rt->mu, NULL);
  pthread_cond_init(&rt->cv, NULL);
  pthread_mutex_init(&rt->lmu, NULL);
  pthread_cond_init(&rt->lcv, NULL);
  rt->threads = calloc(rt->max_threads, sizeof *rt->threads);
  if (!rt->threads) {
    free_runtime(rt);
    return -ENOMEM;
  }
  /* Threads first: their failure needs no libuv handle undone. One worker
   * always exists, so queued work never waits for a thread that cannot be
   * created. */
  int rc = ckl__lease_thread_start(rt);
  if (rc == 0) {
    rc = -pthread_create(&rt->threads[0], NULL, worker_main, rt);
    if (rc == 0) rt->nthreads = 1;
  }
  if (rc == 0 && o->loop) {
    rt->loop = o->loop;
  } else if (rc == 0) {
    rc = uv_loop_init(&rt->own_loop);
    if (rc == 0) {
      rt->loop = &rt->own_loop;
      rt->owns_loop = true;
    }
  }
  if (rc == 0) {
    rc = uv_async_init(rt->loop, &rt->async, on_async);
    if (rc < 0 && rt->owns_loop) uv_loop_close(&rt->own_loop);
  }
  if (rc < 0) {
    stop_threads(rt);
    free_runtime(rt);
    return rc;
  }
  rt->async.data = rt;
  /* Only live tasks keep the loop alive (through the heartbeat timer). */
  uv_unref((uv_handle_t *)&rt->async);
  uv_timer_init(rt->loop, &rt->heartbeat);
  uv_timer_init(rt->loop, &rt->progress);
  rt->heartbeat.data = rt->progress.data = rt;
  rt->handles_open = 3;
  *out = rt;
  return 0;
}

uv_loop_t *ckl_runtime_loop(ckl_runtime *rt) { return rt ? rt->loop : NULL; }

int ckl_runtime_run(ckl_runtime *rt) {
  if (!rt) return -EINVAL;
  rt->running = true;
  uv_run(rt->loop, UV_RUN_DEFAULT);
  rt->running = false;
  return 0;
}

size_t ckl_runtime_task_count(const ckl_runtime *rt) { return rt ? rt->live : 0; }

int ckl_runtime_refresh_now(ckl_runtime *rt) {
  if (!rt) return -EINVAL;
  ckl__lease_round(rt);
  return 0;
}

static void on_handle_closed(uv_handle_t *h) {
  ckl_runtime *rt = h->data;
  if (--rt->handles_open > 0) return;
  if (rt->close_cb) rt->close_cb(rt, rt->close_arg);
  /* With its own loop, ckl_runtime_close frees after uv_loop_close. */
  if (!rt->owns_loop) free_runtime(rt);
}

static void maybe_finish_close(ckl_runtime *rt) {
  if (!rt->closing || rt->live > 0 || rt->stop) return; /* stop: already closing handles */
  /* Every task is done: the workers are idle or about to be (a worker may
   * still be between its queue push and uv_async_send: the join waits for
   * it, and the async handle is closed only after), the lease thread at
   * most finishes a refresh round of tasks that are over. */
  stop_threads(rt);
  uv_timer_stop(&rt->heartbeat);
  uv_timer_stop(&rt->progress);
  uv_close((uv_handle_t *)&rt->async, on_handle_closed);
  uv_close((uv_handle_t *)&rt->heartbeat, on_handle_closed);
  uv_close((uv_handle_t *)&rt->progress, on_handle_closed);
}

int ckl_runtime_close(ckl_runtime *rt, ckl_runtime_close_cb close_cb, void *arg) {
  if (!rt) return -EINVAL;
  if (rt->closing) return -EALREADY;
  if (rt->owns_loop && rt->running) return -EBUSY; /* no nested uv_run */
  rt->closing = true;
  rt->close_cb = close_cb;
  rt->close_arg = arg;
  for (ckl__task_impl *t = rt->live_head; t; t = t->next_live) {
    int rc = ckl_task_cancel(t->task);
    (void)rc; /* -EALREADY: it is finishing anyway */
  }
  maybe_finish_close(rt);
  if (rt->owns_loop) {
    uv_run(rt->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&rt->own_loop);
    if (rc < 0) ckl__log_warn("runtime: closing its loop: %s", uv_strerror(rc));
    free_runtime(rt);
  }
  return 0;
}

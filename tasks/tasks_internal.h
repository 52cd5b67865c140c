/*
 * tasks/tasks_internal.h - the runtime's pieces: task records, the worker
 * pool, leases. Not installed. docs/runtime.md explains the design.
 *
 * Who touches what (the invariants the files keep):
 *   R1  Loop-owned: the live-task list, a task's timer, deadline,
 *       backoff, ckl_task fields, and every callback. Only the loop thread
 *       reads or writes them.
 *   R2  rt->mu guards the run queue, the completed queue, t->state for the
 *       QUEUED -> RUNNING and RUNNING -> completed transitions, and the
 *       pool's thread bookkeeping. A worker hands a task back by putting
 *       it on the completed queue under rt->mu, then uv_async_send; what
 *       the worker wrote into the task before that is visible to the loop
 *       after it takes the task off the queue (the mutex orders them).
 *   R3  t->lease.mu guards the lease's lock and record lists. The lease
 *       thread holds it while it verifies and refreshes, so the observer's
 *       "about to release" calls on the worker wait for a refresh in
 *       flight: no lock struct is read after its owner released it, no
 *       record refreshed after its owner deregistered it. No library
 *       code calls the observer while inside an LMDB write transaction
 *       (register reports after commit, deregister before begin), so a
 *       refresh's write transaction never waits on a worker that waits on
 *       lease.mu.
 *   R4  t->prog_mu guards the progress snapshot (worker writes, loop reads).
 *   R5  A task is freed by whoever drops its last reference: the loop (after
 *       done_cb and the timer's close callback) or the lease thread (after
 *       a refresh that ran past the end of the task). Nothing but memory
 *       and the state handle is released by then.
 */
#ifndef CKL_TASKS_INTERNAL_H
#define CKL_TASKS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "chunklock/chunklock.h"
#include "chunklock/runtime.h"
#include "common/internal.h"
#include "datastore/state.h"

typedef enum task_state {
  T_NEW = 0,
  T_QUEUED,    /* on the run queue */
  T_RUNNING,   /* a worker runs an attempt (or the cleanup step) */
  T_WAITING,   /* busy: the timer brings it back */
  T_FINISHING  /* result decided; done_cb pending or running */
} task_state;

/* ---- leases (lease.c) -------------------------------------------------------- */

typedef struct lease_rec {
  char token[CKL_TOKEN_HEX_LEN + 1];
  bool soft; /* an intent: if it vanishes, drop it (it is registered again) */
} lease_rec;

typedef struct ckl__lease {
  pthread_mutex_t mu;            /* R3 */
  const ckl_path_lock **locks;
  size_t nlocks, cap_locks;
  lease_rec *recs;
  size_t nrecs, cap_recs;
  _Atomic int64_t last_ok;       /* runtime clock ns of the last good refresh */
  atomic_bool active;            /* something is held (a lock or a hard record):
                                    the monitor applies */
  atomic_bool refreshable;       /* anything to refresh, intents included */
  atomic_int lost;               /* 0, or why: 1 refresh failed, 2 too late */
} ckl__lease;

/* ---- tasks --------------------------------------------------------------------- */

typedef struct task_vt {
  ckl_task_type type;
  const char *phase; /* the task's main phase name */
  /* Worker thread: one attempt to take the locks and, having them, do
   * the work. Sets *busy (and t->busy_holder) when the locks are in the
   * way: nothing is held then, and the runtime retries later. Otherwise
   * returns the final status. */
  int (*attempt)(ckl__task_impl *t, bool *busy);
  /* Worker thread, optional: undo what attempts left for retries (an
   * intent record) when the task ends without a running attempt. */
  void (*cleanup)(ckl__task_impl *t);
  /* Any thread, optional: free the copied arguments and results. */
  void (*free_args)(ckl__task_impl *t);
} task_vt;

struct ckl__task_impl {
  ckl__observer obs;             /* first: the worker thread's observer */
  ckl_runtime *rt;
  ckl_task *task;                /* R1 */
  const task_vt *vt;
  ckl_task_progress_cb progress_cb;
  ckl_task_done_cb done_cb;
  atomic_int refs;               /* R5 */

  /* R1 */
  task_state tstate;             /* R2: read on the loop only under rt->mu */
  bool decided;                  /* the result is decided (finish or deliver) */
  ckl__task_impl *next_live, *prev_live;
  uv_timer_t timer;
  int64_t submit_ms;             /* uv_hrtime based ms */
  int64_t timeout_ms;            /* CKL_TRY, ms, CKL_FOREVER */
  int64_t deadline_ms;
  int64_t backoff_ms;
  bool cleanup_only;             /* the next run is the cleanup step */
  int final_status;              /* status for the cleanup step */

  /* R2: filled by the worker, read by the loop after completion */
  ckl__task_impl *next_q;
  int status;
  bool busy;
  ckl_holder busy_holder;
  int attempts;

  /* cross-thread */
  atomic_int cancel;             /* ckl_task_cancel asked */
  int gc_cancel;                 /* ckl_gc_opts.cancel (atomic builtins) */
  ckl__lease lease;
  atomic_bool refresh_pending;   /* a refresh of this task is queued */
  ckl__state *state;             /* opened by the first attempt (worker) */
  bool reaped;                   /* the first attempt reaped stale records */

  /* R4 */
  pthread_mutex_t prog_mu;
  const char *prog_phase;
  uint64_t prog_done, prog_total, prog_bytes, prog_phase_bytes0;
  int64_t prog_phase_start_ns;   /* monotonic */
  bool prog_dirty;
  int64_t prog_last_emit_ms;     /* R1 */
  ckl_holder prog_holder;        /* phase "wait" */

  void *args;                    /* the task type's copy of its arguments */
};

struct ckl_runtime {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  bool owns_loop, running, closing;
  ckl_runtime_close_cb close_cb;
  void *close_arg;
  int handles_open;

  unsigned max_threads;
  int64_t ttl_ms, progress_ms, backoff_max_ms, intent_max_ms;
  ckl_clock_fn clock;
  void *clock_arg;

  uv_async_t async;              /* workers and the lease thread -> loop */
  uv_timer_t heartbeat;          /* lease refresh + monitor, every TTL/3 */
  uv_timer_t progress;           /* progress events */

  /* R1 */
  ckl__task_impl *live_head, *live_tail;
  size_t live;

  /* R2 */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ckl__task_impl *runq_head, *runq_tail;
  size_t nqueued;                /* tasks on the run queue */
  ckl__task_impl *done_head, *done_tail;
  pthread_t *threads;
  unsigned nthreads, idle;
  bool stop;

  /* the lease thread */
  pthread_mutex_t lmu;
  pthread_cond_t lcv;
  ckl__task_impl **ljobs;
  size_t nljobs, cap_ljobs;
  bool lstop, lstarted;
  pthread_t lthread;
};

/* runtime.c */
int64_t ckl__rt_clock(ckl_runtime *rt);
void ckl__task_unref(ckl__task_impl *t);
/* Submit a prepared task (vt, args set). On error nothing was queued and
 * t is freed (free_args included). */
int ckl__task_submit(ckl_runtime *rt, ckl_task *task, ckl__task_impl *t,
                     ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);
ckl__task_impl *ckl__task_alloc(const task_vt *vt, void *args);
/* Worker thread: set the progress snapshot (any phase string that lives
 * as long as the task). */
void ckl__task_progress(ckl__task_impl *t, const char *phase, uint64_t done, uint64_t total,
                        uint64_t bytes);
/* Worker thread: the checkpoint (cancel, lease). */
int ckl__task_checkpoint(ckl__task_impl *t);
/* Worker thread: open t->state on first use; reap stale records the first
 * time. 0 or an error of ckl__state_open. */
int ckl__task_state(ckl__task_impl *t, const char *store_path);
/* Map a cancellation the operation reported to the reason: ELOCKLOST when
 * the lease was lost, else rc. */
int ckl__task_cancel_reason(ckl__task_impl *t, int rc);

/* lease.c */
void ckl__lease_init(ckl__lease *l);
void ckl__lease_destroy(ckl__lease *l);
void ckl__lease_add_lock(ckl__task_impl *t, const ckl_path_lock *lk);
void ckl__lease_remove_lock(ckl__task_impl *t, const ckl_path_lock *lk);
void ckl__lease_add_record(ckl__task_impl *t, const char *token, bool soft);
void ckl__lease_remove_record(ckl__task_impl *t, const char *token);
/* Forget everything (the task is over: nothing it held may be touched). */
void ckl__lease_clear(ckl__task_impl *t);
bool ckl__lease_has_records(ckl__task_impl *t);
/* Lost? Also applies the monitor (too late). 0 or CKL_ELOCKLOST. */
int ckl__lease_check(ckl__task_impl *t);
/* Lease thread: verify and refresh. */
void ckl__lease_refresh(ckl__task_impl *t);
/* The soft record (intent) token, copied into out; false when none. */
bool ckl__lease_soft_token(ckl__task_impl *t, char out[CKL_TOKEN_HEX_LEN + 1]);
int ckl__lease_thread_start(ckl_runtime *rt);
void ckl__lease_thread_stop(ckl_runtime *rt);
/* Loop: queue a refresh round of every live task that holds something. */
void ckl__lease_round(ckl_runtime *rt);
/* The observer callbacks for t->obs. */
void ckl__observer_init(ckl__task_impl *t);

/* intent.c: the strict GC's "exclusive waiting" intent */
/* Register the intent of t (a waiting strict GC) unless it has one. */
int ckl__intent_set(ckl__task_impl *t, ckl_store *st);
/* Deregister it (no-op without one). */
void ckl__intent_clear(ckl__task_impl *t);
/* For a writer about to take the process locker shared: 1 (and *who
 * filled) when another process's strict GC waits, within the bound; 0; or
 * an error of the state. */
int ckl__intent_check(ckl__task_impl *t, ckl_store *st, ckl_holder *who);

#endif

/*
 * tasks/task_gc.c - garbage collection as a task.
 *
 * Each attempt is one ckl_gc_run with CKL_TRY: busy means the GC lock or,
 * in strict mode, the process locker was in the way before anything was
 * done, and the runtime retries on its timer. The run's cancel flag is
 * the task's: ckl_task_cancel and a lost lease both set it, and the GC
 * stops at its next step with nothing half-removed (gc.h).
 */
#include <stdlib.h>
#include <string.h>

#include "tasks/tasks_internal.h"

typedef struct gc_args {
  ckl_store *st;
  ckl_gc_opts opts;
  ckl_gc_result result;
} gc_args;

static int gc_attempt(ckl__task_impl *t, bool *busy) {
  gc_args *a = t->args;
  int rc = ckl__task_state(t, ckl_store_path(a->st));
  if (rc < 0) return rc;
  ckl_gc_opts o = a->opts;
  o.wait_ms = CKL_TRY;
  o.cancel = &t->gc_cancel;
  o.busy_holder = &t->busy_holder;
  rc = ckl_gc_run(a->st, &o, &a->result);
  if (rc == CKL_EBUSY) {
    /* Another GC holds the GC lock: an intent would not help (writers do
     * not block it). Otherwise strict mode met other processes' writers. */
    bool other_gc = t->busy_holder.known && strcmp(t->busy_holder.operation, "gc") == 0;
    if (o.exclusive && !other_gc) (void)ckl__intent_set(t, a->st);
    *busy = true;
    return rc;
  }
  return ckl__task_cancel_reason(t, rc);
}

static void gc_cleanup(ckl__task_impl *t) { ckl__intent_clear(t); }

static void gc_free(ckl__task_impl *t) { free(t->args); }

static const task_vt gc_vt = {.type = CKL_TASK_GC, .phase = "mark", .attempt = gc_attempt,
                              .cleanup = gc_cleanup, .free_args = gc_free};

int ckl_task_gc(ckl_runtime *rt, ckl_task *task, const ckl_task_gc_args *args,
                ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->store || args->timeout_ms < CKL_FOREVER) return -EINVAL;
  gc_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->st = args->store;
  a->opts = args->opts;
  ckl__task_impl *t = ckl__task_alloc(&gc_vt, a);
  if (!t) {
    free(a);
    return -ENOMEM;
  }
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

const ckl_gc_result *ckl_task_gc_result(const ckl_task *task) {
  if (!task || !task->impl_ || task->impl_->vt != &gc_vt) return NULL;
  if (!task->impl_->decided) return NULL;
  return &((gc_args *)task->impl_->args)->result;
}

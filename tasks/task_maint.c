/*
 * tasks/task_maint.c - forget, prune and verify as tasks.
 *
 * Each attempt is the synchronous operation itself: all three take their
 * first lock without waiting (snapshot lock, group lock), so CKL_EBUSY
 * means nothing was done and the runtime retries on its timer until the
 * task's deadline. Prune and verify reach the task's safe points through
 * the observer (datastore/prune.c between removals, datastore/verify.c
 * between chunks); a forget is one short atomic step without one.
 */
#include <stdlib.h>
#include <string.h>

#include "datastore/store_internal.h"
#include "tasks/tasks_internal.h"

/* ---- forget ------------------------------------------------------------------------- */

typedef struct forget_args {
  ckl_store *st;
  ckl_snapshot_name snap;
} forget_args;

static int forget_attempt(ckl__task_impl *t, bool *busy) {
  forget_args *a = t->args;
  int rc = ckl__task_state(t, a->st->path);
  if (rc < 0) return rc;
  ckl_forget_opts o = {.busy_holder = &t->busy_holder};
  rc = ckl_forget(a->st, &a->snap, &o);
  if (rc == CKL_EBUSY) *busy = true;
  return rc;
}

static void plain_free(ckl__task_impl *t) { free(t->args); }

static const task_vt forget_vt = {.type = CKL_TASK_FORGET, .phase = "forget",
                                  .attempt = forget_attempt, .free_args = plain_free};

int ckl_task_forget(ckl_runtime *rt, ckl_task *task, const ckl_task_forget_args *args,
                    ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->store || args->timeout_ms < CKL_FOREVER) return -EINVAL;
  forget_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->st = args->store;
  a->snap = args->snapshot;
  ckl__task_impl *t = ckl__task_alloc(&forget_vt, a);
  if (!t) {
    free(a);
    return -ENOMEM;
  }
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

/* ---- prune ---------------------------------------------------------------------------- */

typedef struct prune_args {
  ckl_store *st;
  ckl_group_name group;
  ckl_prune_opts opts;
  ckl_prune_item *items;
  size_t count;
} prune_args;

static int prune_attempt(ckl__task_impl *t, bool *busy) {
  prune_args *a = t->args;
  int rc = ckl__task_state(t, a->st->path);
  if (rc < 0) return rc;
  ckl_prune_opts o = a->opts;
  o.busy_holder = &t->busy_holder;
  free(a->items); /* from a busy attempt: the listing of that try */
  a->items = NULL;
  a->count = 0;
  rc = ckl_prune(a->st, &a->group, &o, &a->items, &a->count);
  if (rc == CKL_EBUSY) *busy = true;
  return rc;
}

static void prune_free(ckl__task_impl *t) {
  prune_args *a = t->args;
  free(a->items);
  free(a);
}

static const task_vt prune_vt = {.type = CKL_TASK_PRUNE, .phase = "prune",
                                 .attempt = prune_attempt, .free_args = prune_free};

int ckl_task_prune(ckl_runtime *rt, ckl_task *task, const ckl_task_prune_args *args,
                   ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->store || args->timeout_ms < CKL_FOREVER) return -EINVAL;
  prune_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->st = args->store;
  a->group = args->group;
  a->opts = args->opts;
  a->opts.busy_holder = NULL;
  ckl__task_impl *t = ckl__task_alloc(&prune_vt, a);
  if (!t) {
    free(a);
    return -ENOMEM;
  }
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

const ckl_prune_item *ckl_task_prune_items(const ckl_task *task, size_t *count) {
  if (count) *count = 0;
  if (!task || !task->impl_ || task->impl_->vt != &prune_vt || !task->impl_->decided)
    return NULL;
  prune_args *a = task->impl_->args;
  if (count) *count = a->count;
  return a->items;
}

/* ---- verify ------------------------------------------------------------------------------ */

typedef struct verify_args {
  ckl_store *st;
  ckl_snapshot_name snap;
  ckl_verify_result result;
} verify_args;

static int verify_attempt(ckl__task_impl *t, bool *busy) {
  verify_args *a = t->args;
  int rc = ckl__task_state(t, a->st->path);
  if (rc < 0) return rc;
  ckl_verify_opts o = {.busy_holder = &t->busy_holder};
  rc = ckl_verify(a->st, &a->snap, &o, &a->result);
  if (rc == CKL_EBUSY) *busy = true;
  return rc;
}

static const task_vt verify_vt = {.type = CKL_TASK_VERIFY, .phase = "verify",
                                  .attempt = verify_attempt, .free_args = plain_free};

int ckl_task_verify(ckl_runtime *rt, ckl_task *task, const ckl_task_verify_args *args,
                    ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->store || args->timeout_ms < CKL_FOREVER) return -EINVAL;
  verify_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  a->st = args->store;
  a->snap = args->snapshot;
  ckl__task_impl *t = ckl__task_alloc(&verify_vt, a);
  if (!t) {
    free(a);
    return -ENOMEM;
  }
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

const ckl_verify_result *ckl_task_verify_result(const ckl_task *task) {
  if (!task || !task->impl_ || task->impl_->vt != &verify_vt || !task->impl_->decided)
    return NULL;
  return &((verify_args *)task->impl_->args)->result;
}

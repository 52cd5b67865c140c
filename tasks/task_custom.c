/*
 * tasks/task_custom.c - the embedder's own work under chunklock locks.
 *
 * An attempt tries every lock of the list with CKL_TRY, in the order given
 * (checked against the fixed lock order); if one is busy, everything taken
 * so far is released and the runtime retries later, so a waiting task
 * never sits on a lock another task needs. With all locks held it
 * registers the roster record (if asked), runs work() under the lease, and
 * then deregisters and releases, in reverse order.
 *
 * A writer (a task that takes the process locker shared) first looks for a
 * strict GC's intent of another process (intent.c) and waits while one is
 * there, within the bound.
 */
#include <stdlib.h>
#include <string.h>

#include "datastore/store_internal.h"
#include "tasks/tasks_internal.h"

#define MS 1000000LL

struct ckl_task_ctx {
  ckl__task_impl *t;
};

typedef struct custom_args {
  ckl_store *st;
  size_t nlocks;
  ckl_task_lock_spec locks[CKL_TASK_MAX_LOCKS];
  char *paths[CKL_TASK_MAX_LOCKS];
  char *operation, *target;
  unsigned flags;
  ckl_task_work_fn work;
  void *work_arg;
  /* worker thread, during an attempt */
  ckl_path_lock held[CKL_TASK_MAX_LOCKS];
  ckl_proclock_guard guards[CKL_TASK_MAX_LOCKS];
  ckl_lock_order order;
  char token[CKL_TOKEN_HEX_LEN + 1];
  ckl_task_ctx ctx;
} custom_args;

static void release_all(custom_args *a) {
  for (size_t i = a->nlocks; i-- > 0;) {
    if (a->guards[i].held) {
      ckl_proclock_release(&a->guards[i]);
      ckl_lock_order_pop(&a->order, CKL_LEVEL_PROCESS);
    }
    ckl_path_lock_release(&a->held[i]); /* no-op when not held */
  }
}

static int take(custom_args *a, size_t i, ckl_holder *who) {
  const ckl_task_lock_spec *s = &a->locks[i];
  ckl_snap_lock_opts so = {.order = &a->order, .operation = a->operation, .busy_holder = who};
  switch (s->kind) {
  case CKL_TASK_LOCK_PROCESS: {
    int rc = ckl_lock_order_push(&a->order, CKL_LEVEL_PROCESS);
    if (rc < 0) return rc;
    rc = s->mode == CKL_LOCK_EXCLUSIVE
             ? ckl_proclock_exclusive(a->st->proclock, &a->guards[i], CKL_TRY, who)
             : ckl_proclock_shared(a->st->proclock, &a->guards[i], CKL_TRY, who);
    if (rc < 0) ckl_lock_order_pop(&a->order, CKL_LEVEL_PROCESS);
    return rc;
  }
  case CKL_TASK_LOCK_GROUP:
    return ckl_group_lock(a->st, &s->group, &a->held[i], &so);
  case CKL_TASK_LOCK_SNAPSHOT:
    return ckl_snapshot_lock(a->st, &s->snapshot, s->mode, &a->held[i], &so);
  case CKL_TASK_LOCK_PATH: {
    ckl_lock_opts lo = {.timeout_ms = CKL_TRY, .operation = a->operation, .busy_holder = who};
    return ckl_path_lock_acquire(&a->held[i], a->paths[i], s->mode, &lo);
  }
  }
  return -EINVAL;
}

static bool is_writer(const custom_args *a) {
  for (size_t i = 0; i < a->nlocks; i++)
    if (a->locks[i].kind == CKL_TASK_LOCK_PROCESS && a->locks[i].mode == CKL_LOCK_SHARED)
      return true;
  return false;
}

static int custom_attempt(ckl__task_impl *t, bool *busy) {
  custom_args *a = t->args;
  int rc = 0;
  if (a->st) {
    rc = ckl__task_state(t, a->st->path);
    if (rc < 0) return rc;
  }
  if (a->st && is_writer(a)) {
    rc = ckl__intent_check(t, a->st, &t->busy_holder);
    if (rc < 0) return rc;
    if (rc == 1) {
      *busy = true;
      return CKL_EBUSY;
    }
  }
  memset(&a->order, 0, sizeof a->order);
  for (size_t i = 0; i < a->nlocks; i++) {
    rc = take(a, i, &t->busy_holder);
    if (rc < 0) {
      release_all(a);
      /* Replaced under us repeatedly: a forget is in progress; try again. */
      if (rc == CKL_EBUSY || rc == CKL_EREPLACED) {
        *busy = true;
        return CKL_EBUSY;
      }
      return rc;
    }
  }
  a->token[0] = '\0';
  if (a->operation) {
    ckl__roster_reg reg = {.operation = a->operation, .target = a->target, .flags = a->flags,
                           .lease_expiry_ns = ckl__now_realtime_ns() + t->rt->ttl_ms * MS};
    rc = ckl__state_register(t->state, &reg, a->token); /* the observer leases it */
    if (rc < 0) {
      a->token[0] = '\0';
      release_all(a);
      return rc;
    }
  }
  rc = CKL_FAILPOINT("task.custom.before_work");
  if (rc == 0) rc = ckl__task_checkpoint(t);
  if (rc == 0) rc = a->work(&a->ctx, a->work_arg);
  if (a->token[0]) {
    int dr = ckl__state_deregister(t->state, a->token);
    if (dr == -ENOENT)
      ckl__log_warn("custom task %s: its roster record was gone at the end",
                    a->operation);
    a->token[0] = '\0';
  }
  release_all(a);
  return rc;
}

static void args_free(custom_args *a) {
  for (size_t i = 0; i < CKL_TASK_MAX_LOCKS; i++) free(a->paths[i]);
  free(a->operation);
  free(a->target);
  free(a);
}

static void custom_free(ckl__task_impl *t) { args_free(t->args); }

static const task_vt custom_vt = {.type = CKL_TASK_CUSTOM, .phase = "custom",
                                  .attempt = custom_attempt, .free_args = custom_free};

static int copy_specs(custom_args *a, const ckl_task_custom_args *in) {
  for (size_t i = 0; i < in->nlocks; i++) {
    const ckl_task_lock_spec *s = &in->locks[i];
    if (s->mode != CKL_LOCK_SHARED && s->mode != CKL_LOCK_EXCLUSIVE) return -EINVAL;
    switch (s->kind) {
    case CKL_TASK_LOCK_PROCESS:
    case CKL_TASK_LOCK_SNAPSHOT:
      if (!in->store) return -EINVAL;
      break;
    case CKL_TASK_LOCK_GROUP:
      if (!in->store || s->mode != CKL_LOCK_EXCLUSIVE) return -EINVAL;
      break;
    case CKL_TASK_LOCK_PATH:
      if (!s->path || !*s->path) return -EINVAL;
      if (!(a->paths[i] = strdup(s->path))) return -ENOMEM;
      break;
    default:
      return -EINVAL;
    }
    a->locks[i] = *s;
    a->locks[i].path = a->paths[i];
  }
  a->nlocks = in->nlocks;
  return 0;
}

int ckl_task_custom(ckl_runtime *rt, ckl_task *task, const ckl_task_custom_args *args,
                    ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb) {
  if (!rt || !task || !args || !args->work || args->timeout_ms < CKL_FOREVER ||
      args->nlocks > CKL_TASK_MAX_LOCKS || (args->nlocks && !args->locks) ||
      (args->operation && (!args->store || !*args->operation || strlen(args->operation) > 31)) ||
      (args->roster_flags & ~(unsigned)(CKL_ROSTER_WRITER | CKL_ROSTER_EXCLUSIVE)))
    return -EINVAL;
  custom_args *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  int rc = copy_specs(a, args);
  if (rc == 0 && args->operation && !(a->operation = strdup(args->operation))) rc = -ENOMEM;
  if (rc == 0 && args->target && !(a->target = strdup(args->target))) rc = -ENOMEM;
  if (rc < 0) {
    args_free(a);
    return rc;
  }
  a->st = args->store;
  a->flags = args->roster_flags;
  a->work = args->work;
  a->work_arg = args->work_arg;
  ckl__task_impl *t = ckl__task_alloc(&custom_vt, a);
  if (!t) {
    args_free(a);
    return -ENOMEM;
  }
  a->ctx.t = t;
  t->timeout_ms = args->timeout_ms;
  return ckl__task_submit(rt, task, t, progress_cb, done_cb);
}

int ckl_task_ctx_check(ckl_task_ctx *ctx) {
  if (!ctx) return -EINVAL;
  return ckl__task_checkpoint(ctx->t);
}

void ckl_task_ctx_progress(ckl_task_ctx *ctx, const char *phase, uint64_t done, uint64_t total,
                           uint64_t bytes) {
  if (ctx && phase) ckl__task_progress(ctx->t, phase, done, total, bytes);
}

ckl_path_lock *ckl_task_ctx_lock(ckl_task_ctx *ctx, size_t i) {
  if (!ctx) return NULL;
  custom_args *a = ctx->t->args;
  if (i >= a->nlocks || !a->held[i].held) return NULL;
  return &a->held[i];
}

const char *ckl_task_ctx_token(ckl_task_ctx *ctx) {
  if (!ctx) return "";
  return ((custom_args *)ctx->t->args)->token;
}

ckl_task *ckl_task_ctx_task(ckl_task_ctx *ctx) { return ctx ? ctx->t->task : NULL; }

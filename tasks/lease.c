/*
 * tasks/lease.c - leases: what a task holds, the heartbeat that refreshes
 * it, the monitor that notices a refresh came too late, and the worker
 * thread's observer that tells the lease what the library took.
 *
 * A lease covers every path lock a task's operation acquired and every
 * roster record it registered, as reported by the observer (library code
 * on the task's worker thread). Every TTL/3 the heartbeat (a uv timer on
 * the loop) queues a refresh round for the lease thread, which, per task:
 *   - checks the monitor: if more than TTL passed on the runtime clock
 *     (CLOCK_BOOTTIME: it counts suspend) since the last good refresh,
 *     the lease is lost, whatever the refresh would say now: others may
 *     already have judged our records by their expiry;
 *   - re-verifies each lock (ckl_path_lock_verify: the file at the path
 *     is still the inode we locked);
 *   - moves each record's lease expiry to now + TTL (ckl__state_refresh:
 *     -ENOENT means someone removed it, or the state was recreated).
 * Lost means: the task's checkpoint returns CKL_ELOCKLOST from now on and a
 * GC's cancel flag is set, so the operation stops at its next safe point
 * and rolls back. Errors that say nothing about ownership (EIO reading the
 * state, ENOMEM) are not a loss by themselves; if they last, the monitor
 * turns them into one when TTL passes without a good refresh.
 *
 * A holder never declares its own records stale (roster.h: a live local
 * process is never reaped): losing a lease here is the holder's own
 * decision to stop, not a judgement on the record.
 */
#include <stdlib.h>
#include <string.h>

#include "tasks/tasks_internal.h"

#define MS 1000000LL

void ckl__lease_init(ckl__lease *l) {
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
  atomic_init(&l->last_ok, 0);
  atomic_init(&l->active, false);
  atomic_init(&l->refreshable, false);
  atomic_init(&l->lost, 0);
}

void ckl__lease_destroy(ckl__lease *l) {
  free(l->locks);
  free(l->recs);
  pthread_mutex_destroy(&l->mu);
}

/* Under l->mu: the number of things held (locks and records, intents
 * excepted). */
static size_t hard_count(const ckl__lease *l) {
  size_t n = l->nlocks;
  for (size_t i = 0; i < l->nrecs; i++) n += !l->recs[i].soft;
  return n;
}

/* Under l->mu: something became held, or nothing is. The lease period
 * starts when the first thing is taken. An intent alone is refreshed but
 * not monitored: losing it is not losing a lock (it is registered again). */
static void set_active(ckl__task_impl *t) {
  ckl__lease *l = &t->lease;
  bool held = hard_count(l) > 0;
  if (held && !atomic_load(&l->active)) {
    atomic_store(&l->last_ok, ckl__rt_clock(t->rt));
    atomic_store(&l->active, true);
  } else if (!held) {
    atomic_store(&l->active, false);
  }
  atomic_store(&l->refreshable, l->nlocks + l->nrecs > 0);
}

static void lose(ckl__task_impl *t, int why, const char *what) {
  int zero = 0;
  if (atomic_compare_exchange_strong(&t->lease.lost, &zero, why))
    ckl__log_error("%s task: lease lost: %s", ckl_task_type_name(t->vt->type), what);
  __atomic_store_n(&t->gc_cancel, 1, __ATOMIC_RELAXED);
}

void ckl__lease_add_lock(ckl__task_impl *t, const ckl_path_lock *lk) {
  ckl__lease *l = &t->lease;
  pthread_mutex_lock(&l->mu);
  if (l->nlocks == l->cap_locks) {
    size_t cap = l->cap_locks ? 2 * l->cap_locks : 8;
    const ckl_path_lock **v = realloc(l->locks, cap * sizeof *v);
    if (!v) {
      /* Not leased: refreshes would never see it. Safer to stop the task
       * than to run it with a lock nobody verifies. */
      pthread_mutex_unlock(&l->mu);
      lose(t, 1, "out of memory recording a lock");
      return;
    }
    l->locks = v;
    l->cap_locks = cap;
  }
  l->locks[l->nlocks++] = lk;
  set_active(t);
  pthread_mutex_unlock(&l->mu);
}

void ckl__lease_remove_lock(ckl__task_impl *t, const ckl_path_lock *lk) {
  ckl__lease *l = &t->lease;
  pthread_mutex_lock(&l->mu);
  for (size_t i = 0; i < l->nlocks; i++) {
    if (l->locks[i] == lk) {
      l->locks[i] = l->locks[--l->nlocks];
      break;
    }
  }
  set_active(t);
  pthread_mutex_unlock(&l->mu);
}

void ckl__lease_add_record(ckl__task_impl *t, const char *token, bool soft) {
  ckl__lease *l = &t->lease;
  pthread_mutex_lock(&l->mu);
  if (l->nrecs == l->cap_recs) {
    size_t cap = l->cap_recs ? 2 * l->cap_recs : 4;
    lease_rec *v = realloc(l->recs, cap * sizeof *v);
    if (!v) {
      pthread_mutex_unlock(&l->mu);
      lose(t, 1, "out of memory recording a roster record");
      return;
    }
    l->recs = v;
    l->cap_recs = cap;
  }
  ckl__strlcpy(l->recs[l->nrecs].token, token, sizeof l->recs[0].token);
  l->recs[l->nrecs].soft = soft;
  l->nrecs++;
  set_active(t);
  pthread_mutex_unlock(&l->mu);
}

void ckl__lease_remove_record(ckl__task_impl *t, const char *token) {
  ckl__lease *l = &t->lease;
  pthread_mutex_lock(&l->mu);
  for (size_t i = 0; i < l->nrecs; i++) {
    if (strcmp(l->recs[i].token, token) == 0) {
      l->recs[i] = l->recs[--l->nrecs];
      break;
    }
  }
  set_active(t);
  pthread_mutex_unlock(&l->mu);
}

void ckl__lease_clear(ckl__task_impl *t) {
  ckl__lease *l = &t->lease;
  pthread_mutex_lock(&l->mu);
  l->nlocks = l->nrecs = 0;
  set_active(t);
  pthread_mutex_unlock(&l->mu);
}

bool ckl__lease_soft_token(ckl__task_impl *t, char out[CKL_TOKEN_HEX_LEN + 1]) {
  ckl__lease *l = &t->lease;
  bool found = false;
  pthread_mutex_lock(&l->mu);
  for (size_t i = 0; i < l->nrecs && !found; i++) {
    if (l->recs[i].soft) {
      memcpy(out, l->recs[i].token, CKL_TOKEN_HEX_LEN + 1);
      found = true;
    }
  }
  pthread_mutex_unlock(&l->mu);
  return found;
}

bool ckl__lease_has_records(ckl__task_impl *t) {
  pthread_mutex_lock(&t->lease.mu);
  bool any = t->lease.nrecs > 0;
  pthread_mutex_unlock(&t->lease.mu);
  return any;
}

int ckl__lease_check(ckl__task_impl *t) {
  ckl__lease *l = &t->lease;
  if (atomic_load(&l->lost)) return CKL_ELOCKLOST;
  if (atomic_load(&l->active)) {
    /* The monitor. last_ok is stored before active is set, so an active
     * lease never pairs with a stale last_ok. */
    int64_t gap = ckl__rt_clock(t->rt) - atomic_load(&l->last_ok);
    if (gap > t->rt->ttl_ms * MS) {
      char what[128];
      snprintf(what, sizeof what, "no refresh for %lld ms (TTL %lld ms): suspended or stalled",
               (long long)(gap / MS), (long long)t->rt->ttl_ms);
      lose(t, 2, what);
      return CKL_ELOCKLOST;
    }
  }
  return 0;
}

void ckl__lease_refresh(ckl__task_impl *t) {
  ckl__lease *l = &t->lease;
  pthread_mutex_lock(&l->mu); /* R3: owners wait before they release */
  if (l->nlocks + l->nrecs == 0 || atomic_load(&l->lost)) {
    pthread_mutex_unlock(&l->mu);
    return;
  }
  /* The time this refresh stands for is taken before it starts: the new
   * expiry is computed after it, so it never claims more than it got. */
  int64_t t0 = ckl__rt_clock(t->rt);
  bool held = hard_count(l) > 0;
  if (held && ckl__lease_check(t) < 0) {
    pthread_mutex_unlock(&l->mu);
    return;
  }
  bool ok = true;
  char what[4400];
  for (size_t i = 0; i < l->nlocks && ok; i++) {
    int rc = CKL_FAILPOINT("task.lease.verify");
    if (rc == 0) rc = ckl_path_lock_verify(l->locks[i]);
    if (rc == CKL_EREPLACED) {
      snprintf(what, sizeof what, "lock file %s was replaced or removed", l->locks[i]->path);
      lose(t, 1, what);
      ok = false;
    } else if (rc < 0) {
      ckl__log_warn("lease: cannot verify lock file %s: %s", l->locks[i]->path,
                    ckl_strerror(rc));
      ok = false;
    }
  }
  int64_t expiry = ckl__now_realtime_ns() + t->rt->ttl_ms * MS;
  for (size_t i = l->nrecs; ok && i-- > 0;) {
    int rc = t->state ? ckl__state_refresh(t->state, l->recs[i].token, expiry) : -ENOENT;
    if (l->recs[i].soft) {
      /* An intent someone removed: the next attempt registers a new one.
       * Its other failures only let it expire sooner. */
      if (rc == -ENOENT) l->recs[i] = l->recs[--l->nrecs];
    } else if (rc == -ENOENT || rc == CKL_ECORRUPT) {
      snprintf(what, sizeof what, "roster record %s is %s", l->recs[i].token,
               rc == -ENOENT ? "gone (reaped, removed, or the state was recreated)"
                             : "damaged");
      lose(t, 1, what);
      ok = false;
    } else if (rc < 0) {
      ckl__log_warn("lease: cannot refresh roster record %s: %s", l->recs[i].token,
                    ckl_strerror(rc));
      ok = false;
    }
  }
  if (ok && held) atomic_store(&l->last_ok, t0);
  set_active(t);
  pthread_mutex_unlock(&l->mu);
}

/* ---- the lease thread ------------------------------------------------------------ */

static void *lease_main(void *arg) {
  ckl_runtime *rt = arg;
  pthread_mutex_lock(&rt->lmu);
  for (;;) {
    while (rt->nljobs == 0 && !rt->lstop) pthread_cond_wait(&rt->lcv, &rt->lmu);
    if (rt->nljobs == 0) break;
    /* Take the whole queue: refreshes run without rt->lmu, so the loop's
     * heartbeat never waits for one. */
    ckl__task_impl **jobs = rt->ljobs;
    size_t n = rt->nljobs;
    rt->ljobs = NULL;
    rt->nljobs = rt->cap_ljobs = 0;
    pthread_mutex_unlock(&rt->lmu);
    for (size_t i = 0; i < n; i++) {
      ckl__lease_refresh(jobs[i]);
      atomic_store(&jobs[i]->refresh_pending, false);
      ckl__task_unref(jobs[i]);
    }
    free(jobs);
    /* A counter for tests: a refresh round is complete. */
    (void)CKL_FAILPOINT("task.lease.after_round");
    pthread_mutex_lock(&rt->lmu);
  }
  pthread_mutex_unlock(&rt->lmu);
  return NULL;
}

int ckl__lease_thread_start(ckl_runtime *rt) {
  int err = pthread_create(&rt->lthread, NULL, lease_main, rt);
  if (err) {
    ckl__log_error("runtime: cannot start the lease thread: %s", strerror(err));
    return -err;
  }
  rt->lstarted = true;
  return 0;
}

void ckl__lease_thread_stop(ckl_runtime *rt) {
  if (!rt->lstarted) return;
  pthread_mutex_lock(&rt->lmu);
  rt->lstop = true;
  pthread_cond_signal(&rt->lcv);
  pthread_mutex_unlock(&rt->lmu);
  pthread_join(rt->lthread, NULL);
  rt->lstarted = false;
}

void ckl__lease_round(ckl_runtime *rt) {
  pthread_mutex_lock(&rt->lmu);
  size_t queued = 0;
  for (ckl__task_impl *t = rt->live_head; t; t = t->next_live) {
    if (!atomic_load(&t->lease.refreshable)) continue;
    /* The monitor runs here too, so a loss is seen even if the lease
     * thread is stuck in a refresh (a no-op unless something is held). */
    (void)ckl__lease_check(t);
    if (atomic_load(&t->refresh_pending)) continue; /* one in flight is enough */
    if (rt->nljobs == rt->cap_ljobs) {
      size_t cap = rt->cap_ljobs ? 2 * rt->cap_ljobs : 16;
      ckl__task_impl **v = realloc(rt->ljobs, cap * sizeof *v);
      if (!v) break; /* the next heartbeat tries again; the monitor still runs */
      rt->ljobs = v;
      rt->cap_ljobs = cap;
    }
    atomic_fetch_add(&t->refs, 1);
    atomic_store(&t->refresh_pending, true);
    rt->ljobs[rt->nljobs++] = t;
    queued++;
  }
  if (queued) pthread_cond_signal(&rt->lcv);
  pthread_mutex_unlock(&rt->lmu);
}

/* ---- the observer ------------------------------------------------------------------- */

static void obs_lock(ckl__observer *o, const struct ckl_path_lock *lk, int held) {
  ckl__task_impl *t = (ckl__task_impl *)o;
  if (held) ckl__lease_add_lock(t, lk);
  else ckl__lease_remove_lock(t, lk);
}

static void obs_record(ckl__observer *o, const char *token, int registered) {
  ckl__task_impl *t = (ckl__task_impl *)o;
  if (registered) ckl__lease_add_record(t, token, false);
  else ckl__lease_remove_record(t, token);
}

static void obs_progress(ckl__observer *o, const char *phase, uint64_t done, uint64_t total,
                         uint64_t bytes) {
  ckl__task_progress((ckl__task_impl *)o, phase, done, total, bytes);
}

static int obs_checkpoint(ckl__observer *o) { return ckl__task_checkpoint((ckl__task_impl *)o); }

void ckl__observer_init(ckl__task_impl *t) {
  t->obs.lock = obs_lock;
  t->obs.record = obs_record;
  t->obs.progress = obs_progress;
  t->obs.checkpoint = obs_checkpoint;
}

/*
 * tasks/intent.c - the strict GC's "exclusive waiting" intent.
 *
 * Strict mode takes the process locker exclusively, which other processes'
 * writers hold shared. Kernel locks are not fair: with writers that
 * overlap, some shared holder is always there and a waiting GC retries
 * forever. So a strict GC task that finds the process locker busy
 * registers an intent in the roster, visible to every process:
 *
 *     operation "gc", target "STORE/.lock#exclusive-wait", flags EXCLUSIVE,
 *     leased like any record (refreshed by the GC task's heartbeat)
 *
 * and a writer task of another process checks the roster before it takes
 * the process locker shared: an intent younger than intent_max_ms makes
 * it wait as if the locker were busy. Running writers finish, new ones
 * hold back, the GC's next try succeeds.
 *
 * Bounds. The writer side counts the intent's age from its registration
 * (start_ns), so a GC that cannot get in for other reasons (a writer that
 * never ends) holds writers back for at most intent_max_ms, after which
 * they run again; the GC keeps trying until its own deadline. A GC task
 * has at most one intent, registered again only if someone removed it.
 * Writers of the same process ignore it: the process locker lets them run
 * beside their own process's strict GC anyway. The intent is removed when
 * the GC task ends, whatever the way (a cleanup step on a worker).
 *
 * The intent is not a lock: writers that use the synchronous API do not
 * check it, and a dead GC's intent is reaped like any dead holder's record.
 */
#include <string.h>
#include <unistd.h>

#include "datastore/store_internal.h"
#include "tasks/tasks_internal.h"

#define MS 1000000LL

static int intent_target(const ckl_store *st, char *buf, size_t len) {
  return ckl__pathf(buf, len, "%s#exclusive-wait", st->lock_path);
}

int ckl__intent_set(ckl__task_impl *t, ckl_store *st) {
  if (t->rt->intent_max_ms < 0) return 0;
  char tok[CKL_TOKEN_HEX_LEN + 1];
  if (ckl__lease_soft_token(t, tok)) return 0;
  char target[4096];
  int rc = intent_target(st, target, sizeof target);
  if (rc < 0) return rc;
  rc = ckl__task_state(t, st->path);
  if (rc < 0) return rc;
  ckl__roster_reg reg = {.operation = "gc", .target = target, .flags = CKL_ROSTER_EXCLUSIVE,
                         .lease_expiry_ns = ckl__now_realtime_ns() + t->rt->ttl_ms * MS};
  /* Registered as a soft lease entry, not as something the task holds:
   * losing it is not losing a lock. */
  ckl__observer *saved = ckl__tls_observer;
  ckl__tls_observer = NULL;
  rc = ckl__state_register(t->state, &reg, tok);
  ckl__tls_observer = saved;
  if (rc < 0) {
    ckl__log_warn("gc task: cannot register the exclusive-wait intent in %s: %s", st->path,
                  ckl_strerror(rc));
    return rc;
  }
  ckl__lease_add_record(t, tok, true);
  ckl__log_info("gc task: strict GC waits for the process locker of %s: intent registered",
                st->path);
  return 0;
}

void ckl__intent_clear(ckl__task_impl *t) {
  char tok[CKL_TOKEN_HEX_LEN + 1];
  if (!ckl__lease_soft_token(t, tok)) return;
  ckl__lease_remove_record(t, tok);
  ckl__observer *saved = ckl__tls_observer;
  ckl__tls_observer = NULL;
  int rc = t->state ? ckl__state_deregister(t->state, tok) : -ENOENT;
  ckl__tls_observer = saved;
  if (rc < 0 && rc != -ENOENT)
    ckl__log_warn("gc task: cannot remove the exclusive-wait intent %s: %s", tok,
                  ckl_strerror(rc));
}

int ckl__intent_check(ckl__task_impl *t, ckl_store *st, ckl_holder *who) {
  if (t->rt->intent_max_ms < 0) return 0;
  char target[4096];
  int rc = intent_target(st, target, sizeof target);
  if (rc < 0) return rc;
  rc = ckl__task_state(t, st->path);
  if (rc < 0) return rc;
  ckl__roster_list l;
  rc = ckl__state_list(t->state, 0, &l, NULL); /* reaps dead GCs' intents on sight */
  if (rc < 0) return rc;
  int64_t young = ckl__now_realtime_ns() - t->rt->intent_max_ms * MS;
  int found = 0;
  for (size_t i = 0; i < l.n && !found; i++) {
    const ckl_roster_entry *e = &l.v[i];
    if (!e->parsed || strcmp(e->target, target) != 0) continue;
    if (e->local && e->pid == (int64_t)ckl__getpid()) continue;
    if (e->start_ns < young) continue;
    memset(who, 0, sizeof *who);
    who->known = 1;
    memcpy(who->token, e->token, sizeof who->token);
    ckl__strlcpy(who->operation, e->operation, sizeof who->operation);
    ckl__strlcpy(who->host, e->hostname, sizeof who->host);
    who->pid = e->pid;
    who->tid = e->tid;
    who->since_ns = e->start_ns;
    who->lease_expiry_ns = e->lease_expiry_ns;
    ckl__strlcpy(who->target, e->target, sizeof who->target);
    found = 1;
  }
  ckl__roster_list_free(&l);
  return found;
}

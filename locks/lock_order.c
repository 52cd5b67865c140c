/*
 * locks/lock_order.c - the fixed lock order: process -> group -> snapshot
 * -> manifest.
 *
 * Two operations that take the same two locks in opposite orders deadlock
 * only under the right interleaving, which tests rarely hit and production
 * eventually does. So the order is checked on every acquisition, against
 * every lock the operation still holds, not just the last one: releasing a
 * lock in the middle does not make a lower level legal again while a higher
 * one is held.
 */
#include <stdlib.h>

#include "locks/locks_internal.h"

static const char *level_name(ckl_lock_level l) {
  switch (l) {
    case CKL_LEVEL_NONE: return "none";
    case CKL_LEVEL_PROCESS: return "process locker";
    case CKL_LEVEL_GROUP: return "group";
    case CKL_LEVEL_SNAPSHOT: return "snapshot";
    case CKL_LEVEL_MANIFEST: return "manifest";
  }
  return "?";
}

int ckl_lock_order_push(ckl_lock_order *o, ckl_lock_level level) {
  if (!o || level == CKL_LEVEL_NONE) return 0;
  if (level < CKL_LEVEL_PROCESS || level > CKL_LEVEL_MANIFEST) return -EINVAL;
  if (o->n < 0 || o->n > CKL_LOCK_ORDER_MAX) return -EINVAL; /* not a tracker */
  for (int i = 0; i < o->n; i++) {
    if (o->held[i] > level) {
      ckl__log_error("lock order violation: taking a %s lock while holding a %s lock",
                     level_name(level), level_name(o->held[i]));
#ifdef CKL_DEBUG
      abort();
#endif
      return CKL_ELOCKORDER;
    }
  }
  if (o->n == CKL_LOCK_ORDER_MAX) return -EOVERFLOW;
  o->held[o->n++] = level;
  return 0;
}

void ckl_lock_order_pop(ckl_lock_order *o, ckl_lock_level level) {
  if (!o || level == CKL_LEVEL_NONE || o->n <= 0 || o->n > CKL_LOCK_ORDER_MAX) return;
  /* Locks need not be released in reverse order; drop the latest entry of
   * this level and keep the others in acquisition order. */
  for (int i = o->n - 1; i >= 0; i--) {
    if (o->held[i] == level) {
      for (int j = i; j + 1 < o->n; j++) o->held[j] = o->held[j + 1];
      o->n--;
      return;
    }
  }
}

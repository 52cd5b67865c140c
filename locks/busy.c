/*
 * locks/busy.c - the bounded re-probe that lets a busy answer name its
 * holder (issue 7: "the loser of a conflict got CKL_EBUSY, with holder").
 *
 * Why a busy lock can be nameless
 * -------------------------------
 * The kernel decides who holds a lock; the name comes from elsewhere: the
 * record an exclusive holder pwrites into its lock file, or the holder's
 * roster record (shared holders). A lock and its name are two writes, so
 * there are windows where the kernel says "held" and no name exists:
 *   (W1) an exclusive holder between its grant and its record write, and
 *        between clearing its record and its unlock (the clear must come
 *        first: cleared after the unlock it could erase the NEXT holder's
 *        record, see flock.c release);
 *   (W2) a holder named by the roster that registers after its grant or
 *        deregisters before its unlock;
 *   (W3) a holder that leaves between the contender's failed attempt and
 *        its lookup: the lock is free, the lookup finds nobody.
 * The callers close (W2) by ordering (register before the lock, deregister
 * after the unlock: the ordering invariant is stated next to each of them)
 * and shrink (W1) to the pwrite right after the grant. What is left lasts
 * microseconds, unless the holder is descheduled inside it, which on a
 * loaded machine means a scheduler tick or a few.
 *
 * The re-probe
 * ------------
 * A contender that finds the lock held and cannot name the holder tries
 * again: {try-lock; look up the holder} until the lock is granted (the
 * caller proceeds: better than a false busy), a holder is named, or
 * CKL__REPROBE_MS have passed. Only then is the answer "busy, holder
 * unknown" (known = 0), which therefore still happens when a holder stays
 * inside one of the windows above for longer than the bound (stopped,
 * descheduled for long, paused at a failpoint between grant and name, or
 * a name that cannot be written or read at all: ENOSPC, EIO, no roster).
 *
 * Cost: the bound is paid only by a contender that asked for a name
 * (busy_holder != NULL) and found none; a named busy answer returns at
 * once. The first retries only yield (the holder is usually one pwrite
 * away from being named), later ones sleep briefly so that a stopped
 * holder is not polled in a tight loop.
 */
#include <sched.h>
#include <time.h>

#include "locks/locks_internal.h"

#define REPROBE_YIELDS 2
#define REPROBE_SLEEP_START_US 100
#define REPROBE_SLEEP_CAP_US 1000

bool ckl__reprobe_next(ckl__reprobe *r) {
  int64_t now = ckl__now_monotonic_ns();
  if (r->tries == 0) r->end_ns = now + (int64_t)CKL__REPROBE_MS * 1000000;
  if (now >= r->end_ns) return false;
  /* Tests park a contender here (it found the lock held and nobody to
   * name) while the holder names itself or leaves. Any error action ends
   * the re-probe: the answer is busy, unnamed, at once. */
  if (CKL_FAILPOINT("busy.reprobe") < 0) return false;
  now = ckl__now_monotonic_ns(); /* a pause may have outlasted the bound: retry once anyway */
  if (r->tries < REPROBE_YIELDS) {
    sched_yield();
  } else {
    unsigned shift = r->tries - REPROBE_YIELDS;
    int64_t us = shift >= 4 ? REPROBE_SLEEP_CAP_US : (int64_t)REPROBE_SLEEP_START_US << shift;
    if (us > REPROBE_SLEEP_CAP_US) us = REPROBE_SLEEP_CAP_US;
    int64_t left_us = (r->end_ns - now) / 1000;
    if (us > left_us) us = left_us > 0 ? left_us : 1;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(us * 1000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  r->tries++;
  return true;
}

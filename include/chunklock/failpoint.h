/*
 * chunklock/failpoint.h - deterministic fault injection.
 *
 * Every lock-protocol step in chunklock has a named failpoint site. A site
 * costs one relaxed atomic load while no failpoint is armed, so they are
 * compiled into release builds and available to users' own integration
 * harnesses. `chunklock failpoints` (or ckl_failpoint_catalog) lists them.
 *
 * Arming
 *   - at start-up from the environment:
 *       CHUNKLOCK_FAILPOINTS="gc.mark.after_list=pause;sweep.x=sleep(200)"
 *     (parsed once when the library is loaded; a malformed spec arms
 *     nothing and is reported by ckl_failpoint_env_status());
 *   - at run time with ckl_failpoint_arm() / ckl_failpoint_arm_spec().
 *
 * Actions (optionally prefixed "N*" to fire on the first N hits only,
 * after which the point stays armed as a plain hit counter):
 *   sleep(MS)        sleep MS milliseconds, then continue
 *   error(CODE)      the site returns CODE: an errno name (EIO, ENOSPC, ...)
 *                    or a chunklock name (CKL_EBUSY, ...) or a number
 *   crash            _exit(77) at once, without cleanup (simulates kill -9)
 *   pause            block until ckl_failpoint_release() or disarm
 *                    (in-process: what makes interleavings deterministic)
 *   pausefile(DIR)   cross-process pause: create DIR/NAME.hit.PID, then
 *                    block until DIR/NAME.go exists (polled every 2 ms)
 *   count            do nothing; only count hits
 *   off              disarm
 *
 * Hit counting: every hit of an armed point is counted, whatever its
 * action; ckl_failpoint_wait_hits() lets a test wait until a thread has
 * reached a site (e.g. is paused there).
 *
 * Errors: CKL_EFAILPOINT for an unknown name or a malformed action;
 * CKL_ETIMEDOUT from ckl_failpoint_wait_hits().
 */
#ifndef CHUNKLOCK_FAILPOINT_H
#define CHUNKLOCK_FAILPOINT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Exit status of the `crash` action. */
#define CKL_FAILPOINT_CRASH_STATUS 77

/** Arm `name` with `action` (see above). Re-arming replaces the action and
 * resets the hit count. */
CKL_EXTERN int ckl_failpoint_arm(const char *name, const char *action);

/** Arm several: "a=action;b=action". All or nothing: on a parse error no
 * point is changed. */
CKL_EXTERN int ckl_failpoint_arm_spec(const char *spec);

/** Disarm `name`, waking any thread paused there. */
CKL_EXTERN int ckl_failpoint_disarm(const char *name);

/** Disarm every point, waking every paused thread. */
CKL_EXTERN void ckl_failpoint_disarm_all(void);

/** Wake the threads paused at `name` now; the point stays armed, so later
 * hits pause again. Returns the number of threads woken. */
CKL_EXTERN int ckl_failpoint_release(const char *name);

/** Hits of `name` since it was armed (0 if not armed). */
CKL_EXTERN uint64_t ckl_failpoint_hits(const char *name);

/** Wait until `name` has at least `n` hits, or timeout_ms passes
 * (CKL_FOREVER allowed). 0 or CKL_ETIMEDOUT, CKL_EFAILPOINT if unarmed. */
CKL_EXTERN int ckl_failpoint_wait_hits(const char *name, uint64_t n, int64_t timeout_ms);

/** Result of parsing CHUNKLOCK_FAILPOINTS at load time: 0, or the error,
 * with a description of the bad part in *detail (static) if non-NULL. */
CKL_EXTERN int ckl_failpoint_env_status(const char **detail);

/** A trace function (see ckl_failpoint_set_trace). */
typedef void (*ckl_failpoint_trace_fn)(const char *name, void *arg);

/**
 * Install a trace function, process-wide (fn NULL removes it): fn is
 * called on the hitting thread at every hit of an ARMED failpoint, after
 * the hit is counted and before the action runs, so a thread that sleeps
 * or pauses at a point has already reported it. Arm points with "count"
 * to trace them without changing behaviour. `name` is the catalog's
 * string, the same pointer ckl_failpoint_catalog() returns, so a harness
 * can map it to an index by address. fn must be thread-safe, must not
 * block and must not call back into chunklock; no chunklock lock is held
 * during the call. A hit already in flight may still reach the previous fn.
 */
CKL_EXTERN void ckl_failpoint_set_trace(ckl_failpoint_trace_fn fn, void *arg);

/** The catalog: number of known failpoints, and the i-th name and
 * one-line description. Returns NULL past the end. */
CKL_EXTERN size_t ckl_failpoint_count(void);
CKL_EXTERN const char *ckl_failpoint_catalog(size_t i, const char **description);

#ifdef __cplusplus
}
#endif
#endif

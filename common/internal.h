/*
 * common/internal.h - helpers shared by every module of the library.
 * Not installed; not part of the API.
 */
#ifndef CKL_COMMON_INTERNAL_H
#define CKL_COMMON_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include "chunklock/common.h"
#include "chunklock/error.h"
#include "chunklock/failpoint.h"
#include "chunklock/log.h"

#define CKL__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CKL__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CKL__LIKELY(x) __builtin_expect(!!(x), 1)

/* ---- failpoint sites ---------------------------------------------------
 * CKL_FAILPOINT("name") evaluates to 0 (continue) or a negative error code
 * the site must return. When nothing is armed it is one relaxed load.
 * Every name must be listed in common/failpoints.def. */
extern atomic_int ckl__failpoints_armed;
int ckl__failpoint_hit(const char *name);
#define CKL_FAILPOINT(name)                                                    \
  (CKL__UNLIKELY(atomic_load_explicit(&ckl__failpoints_armed,                  \
                                      memory_order_relaxed) != 0)              \
       ? ckl__failpoint_hit(name)                                              \
       : 0)

/* ---- logging ------------------------------------------------------------ */
extern atomic_int ckl__log_max_level; /* -1 when no callback is set */
void ckl__log_impl(ckl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define ckl__log(level, ...)                                                   \
  do {                                                                         \
    if ((int)(level) <=                                                        \
        atomic_load_explicit(&ckl__log_max_level, memory_order_relaxed))       \
      ckl__log_impl((level), __VA_ARGS__);                                     \
  } while (0)
#define ckl__log_error(...) ckl__log(CKL_LOG_ERROR, __VA_ARGS__)
#define ckl__log_warn(...) ckl__log(CKL_LOG_WARN, __VA_ARGS__)
#define ckl__log_info(...) ckl__log(CKL_LOG_INFO, __VA_ARGS__)
#define ckl__log_debug(...) ckl__log(CKL_LOG_DEBUG, __VA_ARGS__)

/* ---- clocks --------------------------------------------------------------
 * Wall clock for timestamps humans and other hosts read (roster, status);
 * monotonic for deadlines; boottime for leases (counts suspend). */
int64_t ckl__now_realtime_ns(void);
int64_t ckl__now_monotonic_ns(void);
int64_t ckl__now_boottime_ns(void);
/* Sleep ms milliseconds, restarting on EINTR. */
void ckl__sleep_ms(int64_t ms);
/* Format a wall-clock ns time as RFC 3339 UTC ("2026-11-21T15:07:43Z"). */
void ckl__format_time(int64_t realtime_ns, char *buf, size_t len);

/* ---- identity (common/process.c) ----------------------------------------
 * All of these are right in a fork child: their state is reset there. */
/* 128 bits from a keyed PRF (SipHash, key from getrandom once per process)
 * as 32 lowercase hex chars + NUL: unique, not guessable without the key.
 * 0 or -errno when no random key could be had. No system call. */
int ckl__random_token(char out[CKL_TOKEN_HEX_LEN + 1]);
/* Uniform 64-bit value from the same generator (jitter, temp names). */
uint64_t ckl__random_u64(void);
/* getpid() and gettid(), cached (no system call after the first). */
pid_t ckl__getpid(void);
int64_t ckl__gettid(void);

/* Fork generation, for a release that wants to skip its explicit unlock
 * when close() alone releases the lock, i.e. when no other process can
 * share its open file description. Read the generation BEFORE opening the
 * fd; at release, if ckl__fork_gate_enter(gen) returns true no fork()
 * started since (one cannot start before ckl__fork_gate_leave, which must
 * be called right after close()); if false, unlock explicitly. Forks that
 * bypass pthread_atfork (raw clone(), _Fork()) are not seen: their
 * children keep a shared description alive until they exec or exit. */
uint64_t ckl__fork_generation(void);
bool ckl__fork_gate_enter(uint64_t gen);
void ckl__fork_gate_leave(void);
/* Cached host name (never fails; "unknown" if gethostname fails). */
const char *ckl__hostname(void);

/* ---- deadlines and backoff ------------------------------------------------
 * A deadline made from a CKL_TRY / CKL_FOREVER / ms timeout, and the pace
 * of the retries while busy (common/util.c says why). */
typedef struct ckl__deadline {
  int64_t timeout_ms;  /* as given */
  int64_t end_ns;      /* monotonic; meaningful when timeout_ms > 0 */
  int spin;            /* retry with sched_yield() for a while first */
  int64_t spin_end_ns; /* monotonic; 0 until the first busy answer */
  int64_t backoff_us;  /* next sleep, doubles up to a cap */
} ckl__deadline;
/* For kernel locks (an attempt is a cheap non-blocking fcntl): ~100 us of
 * yielding retries, then sleeps from 50 us doubling to 64 ms. */
void ckl__deadline_init(ckl__deadline *d, int64_t timeout_ms);
/* For marker-file locks (an attempt is file-server round trips): no
 * spinning, sleeps from 1 ms doubling to 64 ms. */
void ckl__deadline_init_files(ckl__deadline *d, int64_t timeout_ms);
/* Wait before the next attempt (yield, or sleep for the next backoff step
 * with jitter) if the deadline allows it. Returns true if the caller
 * should try again, false if time is up. */
bool ckl__deadline_backoff(ckl__deadline *d);
/* The spin part alone: true (after a sched_yield) while the spin window,
 * opened by the first call, lasts and the deadline allows; false
 * otherwise, without waiting. For callers that retry differently while
 * spinning (on the same fd) than after a sleep (on a reopened one). */
bool ckl__deadline_spin(ckl__deadline *d);

/* ---- small string helpers --------------------------------------------------
 * Copy src into dst of size n, always NUL-terminated; returns -ENAMETOOLONG
 * when src did not fit (dst then holds a truncated copy). */
int ckl__strlcpy(char *dst, const char *src, size_t n);
/* snprintf that returns -ENAMETOOLONG on truncation, else the length. */
int ckl__pathf(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse "EIO", "CKL_EBUSY" or a number into a negative code: 0 or
 * CKL_EFAILPOINT. */
int ckl__err_parse(const char *s, size_t len, int *out);

/* Write all of buf to fd, going on after short writes and EINTR. 0, or
 * -errno (-EIO if the kernel reports progress 0). */
int ckl__write_all(int fd, const void *buf, size_t len);
/* Read from offset off until cap bytes or end of file, across short reads
 * and EINTR: the byte count (< cap only at end of file), or -errno. */
ssize_t ckl__pread_upto(int fd, void *buf, size_t cap, off_t off);

/* Close fd preserving errno; no-op for fd < 0. */
void ckl__close(int fd);

/* Scope-guard cleanup, systemd style. */
static inline void ckl__closep(int *fd) {
  if (fd && *fd >= 0) ckl__close(*fd);
}
#define CKL__CLEANUP_CLOSE __attribute__((cleanup(ckl__closep)))

/* ---- task observer ---------------------------------------------------------
 * The libuv runtime (tasks/) runs library operations on its own worker
 * threads. To lease what an operation holds, show its progress and stop it
 * at a safe point, it installs an observer on the worker thread; the library
 * reports through the calls below. With no observer installed (every
 * synchronous caller) each call is one thread-local load.
 *   lock      after a path lock is acquired (held = 1), and before it is
 *             released or unlinked (held = 0): after the held = 0 call
 *             returns, the observer no longer touches *lk
 *   record    after a roster record is registered (1), before it is
 *             deregistered (0)
 *   progress  phase, units done / total (0 = unknown), bytes so far
 *   checkpoint  a safe point: 0 to go on, or CKL_ECANCELED / CKL_ELOCKLOST,
 *             which the operation returns after rolling back
 * Callbacks run on the calling thread and must not call back into the
 * operation. */
struct ckl_path_lock;
typedef struct ckl__observer ckl__observer;
struct ckl__observer {
  void (*lock)(ckl__observer *o, const struct ckl_path_lock *lk, int held);
  void (*record)(ckl__observer *o, const char *token, int registered);
  void (*progress)(ckl__observer *o, const char *phase, uint64_t done, uint64_t total,
                   uint64_t bytes);
  int (*checkpoint)(ckl__observer *o);
};
extern _Thread_local ckl__observer *ckl__tls_observer;
static inline void ckl__observe_lock(const struct ckl_path_lock *lk, int held) {
  ckl__observer *o = ckl__tls_observer;
  if (CKL__UNLIKELY(o != NULL) && o->lock) o->lock(o, lk, held);
}
static inline void ckl__observe_record(const char *token, int registered) {
  ckl__observer *o = ckl__tls_observer;
  if (CKL__UNLIKELY(o != NULL) && o->record) o->record(o, token, registered);
}
static inline void ckl__observe_progress(const char *phase, uint64_t done, uint64_t total,
                                         uint64_t bytes) {
  ckl__observer *o = ckl__tls_observer;
  if (CKL__UNLIKELY(o != NULL) && o->progress) o->progress(o, phase, done, total, bytes);
}
static inline int ckl__observe_checkpoint(void) {
  ckl__observer *o = ckl__tls_observer;
  return CKL__UNLIKELY(o != NULL) && o->checkpoint ? o->checkpoint(o) : 0;
}

#endif

/*
 * chunklock/common.h - definitions shared by every chunklock module.
 *
 * Conventions (libuv style):
 *   - Every function returns 0 (or a non-negative count) on success and a
 *     negative code on failure: -errno for system errors, CKL_E* (see
 *     error.h) for domain errors.
 *   - Public names start with ckl_, internal ones with ckl__.
 *   - A zero-initialised struct is a valid "empty" value for every struct
 *     the caller allocates (locks, atomic files, holders).
 *   - Timeouts are milliseconds: CKL_TRY (0) never waits, CKL_FOREVER (-1)
 *     waits without limit, a positive value is a deadline from the call.
 */
#ifndef CHUNKLOCK_COMMON_H
#define CHUNKLOCK_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CKL_BUILDING) && defined(__GNUC__)
#define CKL_EXTERN __attribute__((visibility("default")))
#else
#define CKL_EXTERN
#endif

#define CKL_VERSION_MAJOR 0
#define CKL_VERSION_MINOR 1
#define CKL_VERSION_PATCH 0
#define CKL_VERSION_STRING "0.1.0"

/** Lock wait policies, in milliseconds. */
#define CKL_TRY 0
#define CKL_FOREVER (-1)

/** Length of a holder token in hex characters (128 random bits). */
#define CKL_TOKEN_HEX_LEN 32

/**
 * Who holds a lock. Filled in when an acquisition returns CKL_EBUSY or
 * CKL_ETIMEDOUT and the caller passed a ckl_holder to receive it.
 *
 * Sources, best first: the coordination roster (every holder, shared or
 * exclusive, all processes), or the record an exclusive holder writes into
 * its lock file. When nothing can be learned, `known` is 0 and the lock
 * still counts as held: unreadable holder metadata never means "free".
 *
 * A contender that finds no name retries {lock; lookup} for up to ~10 ms
 * first (it takes the lock if it frees up meanwhile), so `known` = 0 is
 * left for a holder that stays unnamed longer than that: stopped or
 * descheduled between its kernel grant and its name (or between clearing
 * its name and its unlock), a name that could not be written or read
 * (ENOSPC, EIO, an unusable coordination state), a busy entry mutex of the
 * freeze protocol, or a holder outside the lookup's reach (a shared holder
 * of a lock that is not a snapshot or store lock).
 */
typedef struct ckl_holder {
  int known;                          /* 1 if the fields below are valid */
  char token[CKL_TOKEN_HEX_LEN + 1];  /* random holder identity */
  char operation[32];                 /* "backup", "gc", "forget", ... */
  char host[64];                      /* host name of the holder */
  int64_t pid;                        /* holder's pid on that host */
  int64_t tid;                        /* holder's thread id (gettid) */
  int64_t since_ns;                   /* wall clock (CLOCK_REALTIME) ns */
  int64_t lease_expiry_ns;            /* wall clock ns, 0 if none */
  char target[256];                   /* what is held (lock path or snapshot) */
} ckl_holder;

/**
 * Format a holder as one line ("gc pid 123 on host since 2026-...Z") into
 * buf. Returns the length written (truncated to len-1), never fails.
 */
CKL_EXTERN size_t ckl_holder_format(const ckl_holder *h, char *buf, size_t len);

/** Library version string, e.g. "0.1.0". */
CKL_EXTERN const char *ckl_version(void);

#ifdef __cplusplus
}
#endif
#endif

/*
 * chunklock/error.h - the error model.
 *
 * Functions return 0 (or a count) on success, and on failure either
 * -errno (a system error, e.g. -ENOENT, -EACCES, -ENOSPC) or one of the
 * domain codes below. Domain codes live in a reserved block
 * [CKL_ERR_BASE - 99, CKL_ERR_BASE] that no errno value reaches, so a caller can
 * always tell them apart: ckl_is_domain_error(rc).
 *
 * ckl_strerror() and ckl_err_name() are generated from the single X-macro
 * table CKL_ERRNO_MAP: to add a code, add one line there.
 */
#ifndef CHUNKLOCK_ERROR_H
#define CHUNKLOCK_ERROR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_ERR_BASE (-30000)

/* X(NAME, offset, message). Offsets are stable ABI: never renumber. */
#define CKL_ERRNO_MAP(X)                                                       \
  X(EBUSY, 1, "locked by another holder")                                      \
  X(ELOCKLOST, 2, "lock lost: lease could not be refreshed or was revoked")    \
  X(ETIMEDOUT, 3, "timed out waiting for a lock")                              \
  X(ECORRUPT, 4, "corrupt data")                                               \
  X(EGCABORT, 5, "garbage collection aborted before sweeping")                 \
  X(ENOTSTORE, 6, "not a chunklock store")                                     \
  X(EVERSION, 7, "unsupported format version")                                 \
  X(ECANCELED, 8, "operation cancelled")                                       \
  X(ELOCKORDER, 9, "lock order violation")                                     \
  X(EATIME, 10, "filesystem does not update access times as required")         \
  X(EREPLACED, 11, "lock file was replaced or removed while being locked")     \
  X(EHALFCREATED, 12, "store creation was interrupted (half-created store)")   \
  X(EPROTECTED, 13, "change outside the unprotected manifest section")         \
  X(EFAILPOINT, 14, "unknown failpoint or malformed failpoint spec")

/* Argument errors use -EINVAL, missing objects -ENOENT, existing ones
 * -EEXIST: the system codes already say it, so there is no domain twin. */

typedef enum ckl_errno {
#define CKL__ERR_ENUM(name, off, msg) CKL_##name = CKL_ERR_BASE - (off),
  CKL_ERRNO_MAP(CKL__ERR_ENUM)
#undef CKL__ERR_ENUM
  CKL_ERR_LAST = CKL_ERR_BASE - 99
} ckl_errno;

/**
 * Human-readable message for rc (a -errno or a CKL_E* code). Never NULL;
 * the string is static. Unknown codes give "unknown error".
 */
CKL_EXTERN const char *ckl_strerror(int rc);

/**
 * Symbolic name for rc: "CKL_EBUSY", "ENOENT", ... Never NULL; static.
 * Unknown codes give "UNKNOWN".
 */
CKL_EXTERN const char *ckl_err_name(int rc);

/** 1 if rc is in the domain block, 0 otherwise. */
CKL_EXTERN int ckl_is_domain_error(int rc);

#ifdef __cplusplus
}
#endif
#endif

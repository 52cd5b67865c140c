/*
 * chunklock/log.h - the library never prints; it reports here.
 *
 * Set a callback once, before other threads use the library (the setter
 * is thread-safe, but messages already in flight may still go to the old
 * callback). With no callback set, messages are dropped.
 */
#ifndef CHUNKLOCK_LOG_H
#define CHUNKLOCK_LOG_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ckl_log_level {
  CKL_LOG_ERROR = 0,
  CKL_LOG_WARN = 1,
  CKL_LOG_INFO = 2,
  CKL_LOG_DEBUG = 3
} ckl_log_level;

/** Called from any thread; must be thread-safe and must not call back into
 * chunklock. `msg` is valid only during the call. */
typedef void (*ckl_log_cb)(ckl_log_level level, const char *msg, void *userdata);

/** Install cb (NULL disables logging); messages above max_level are
 * dropped before formatting. */
CKL_EXTERN void ckl_log_set(ckl_log_cb cb, void *userdata, ckl_log_level max_level);

/** Name of a level: "error", "warn", "info", "debug". */
CKL_EXTERN const char *ckl_log_level_name(ckl_log_level level);

#ifdef __cplusplus
}
#endif
#endif

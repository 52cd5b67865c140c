/* common/log.c - the log callback. The library never writes to stdio. */
#include <pthread.h>
#include <stdio.h>

#include "internal.h"

atomic_int ckl__log_max_level = -1;

/* The callback and its userdata change together under this lock; the hot
 * path only reads ckl__log_max_level, so a disabled log costs one load. */
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static ckl_log_cb log_cb;
static void *log_userdata;

void ckl_log_set(ckl_log_cb cb, void *userdata, ckl_log_level max_level) {
  pthread_mutex_lock(&log_mutex);
  log_cb = cb;
  log_userdata = userdata;
  atomic_store(&ckl__log_max_level, cb ? (int)max_level : -1);
  pthread_mutex_unlock(&log_mutex);
}

const char *ckl_log_level_name(ckl_log_level level) {
  switch (level) {
    case CKL_LOG_ERROR: return "error";
    case CKL_LOG_WARN: return "warn";
    case CKL_LOG_INFO: return "info";
    case CKL_LOG_DEBUG: return "debug";
  }
  return "unknown";
}

void ckl__log_impl(ckl_log_level level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&log_mutex);
  ckl_log_cb cb = log_cb;
  void *ud = log_userdata;
  pthread_mutex_unlock(&log_mutex);
  /* Called outside the lock so a slow callback does not serialise threads;
   * a concurrent ckl_log_set() may race one message to the old callback,
   * which log.h documents. */
  if (cb) cb(level, msg, ud);
}

/* common/error.c - ckl_strerror / ckl_err_name from the one X-macro table. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int ckl_is_domain_error(int rc) {
  return rc <= CKL_ERR_BASE && rc >= CKL_ERR_LAST;
}

const char *ckl_strerror(int rc) {
  switch (rc) {
#define CKL__ERR_MSG(name, off, msg) \
  case CKL_##name:                   \
    return msg;
    CKL_ERRNO_MAP(CKL__ERR_MSG)
#undef CKL__ERR_MSG
    default:
      break;
  }
  if (rc == 0) return "success";
  if (rc < 0 && rc > -4096) {
    /* strerrordesc_np: glibc >= 2.32, static strings, thread-safe. */
    const char *s = strerrordesc_np(-rc);
    if (s) return s;
  }
  return "unknown error";
}

const char *ckl_err_name(int rc) {
  switch (rc) {
#define CKL__ERR_NAME(name, off, msg) \
  case CKL_##name:                    \
    return "CKL_" #name;
    CKL_ERRNO_MAP(CKL__ERR_NAME)
#undef CKL__ERR_NAME
    default:
      break;
  }
  if (rc == 0) return "OK";
  if (rc < 0 && rc > -4096) {
    const char *s = strerrorname_np(-rc);
    if (s) return s;
  }
  return "UNKNOWN";
}

/* Parse "EIO", "CKL_EBUSY" or "-5"/"5" into a negative code. Used by the
 * failpoint parser. Returns 0 on success. */
int ckl__err_parse(const char *s, size_t len, int *out) {
  char buf[48];
  if (len == 0 || len >= sizeof buf) return CKL_EFAILPOINT;
  memcpy(buf, s, len);
  buf[len] = '\0';
#define CKL__ERR_PARSE(name, off, msg)     \
  if (strcmp(buf, "CKL_" #name) == 0) {    \
    *out = CKL_##name;                     \
    return 0;                              \
  }
  CKL_ERRNO_MAP(CKL__ERR_PARSE)
#undef CKL__ERR_PARSE
  char *end = NULL;
  long v = strtol(buf, &end, 10);
  if (end && *end == '\0' && end != buf) {
    if (v > 0) v = -v;
    if (v == 0 || v < -100000) return CKL_EFAILPOINT;
    *out = (int)v;
    return 0;
  }
  for (int e = 1; e < 4096; e++) {
    const char *n = strerrorname_np(e);
    if (n && strcmp(n, buf) == 0) {
      *out = -e;
      return 0;
    }
  }
  return CKL_EFAILPOINT;
}

/*
 * datastore/json_util.h - reading JSON files with precise error reports.
 *
 * jansson reports line and column for syntax errors and duplicate keys,
 * but a value of the wrong type is found only after parsing, when the
 * positions are gone. ckl__jctx keeps the raw text and the JSON path of
 * the value being checked, so a schema error is reported like a syntax
 * error: "FILE:LINE:COLUMN: PATH: what is wrong", the position found by
 * walking the (already validated) raw text along the path.
 */
#ifndef CKL_DATASTORE_JSON_UTIL_H
#define CKL_DATASTORE_JSON_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CKL__JPATH_MAX 8

typedef struct ckl__jctx {
  const char *file; /* for messages */
  const char *raw;  /* the parsed text; NULL when checking a built document */
  size_t len;
  int depth;
  struct {
    const char *key; /* NULL for an array index */
    size_t index;
  } seg[CKL__JPATH_MAX];
} ckl__jctx;

/* Read a whole regular file dirfd/name (O_NOFOLLOW) of at most max bytes
 * into a malloc'd NUL-terminated buffer. 0, -ENOENT, -ELOOP (symlink),
 * CKL_ECORRUPT (not a regular file, or larger than max; logged), -errno
 * (logged with `display` and the failing step: open, stat, read). -ENOENT
 * and -ELOOP are not logged: callers decide what they mean. */
int ckl__read_file_at(int dirfd, const char *name, const char *display, size_t max, char **out,
                      size_t *len);

/* Parse raw with JSON_REJECT_DUPLICATES. On error log
 * "FILE:LINE:COLUMN: message" and return CKL_ECORRUPT. */
int ckl__json_parse(const char *file, const char *raw, size_t len, json_t **out);

void ckl__jpush_key(ckl__jctx *c, const char *key);
void ckl__jpush_index(ckl__jctx *c, size_t index);
void ckl__jpop(ckl__jctx *c);

/* Log "FILE:LINE:COLUMN: PATH: message" (position of the deepest element
 * of the current path found in the raw text) and return CKL_ECORRUPT. */
int ckl__jfail(const ckl__jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Type masks for ckl__jmember. */
#define CKL__JT(t) (1u << (t))
#define CKL__JT_INT CKL__JT(JSON_INTEGER)
#define CKL__JT_STR CKL__JT(JSON_STRING)
#define CKL__JT_OBJ CKL__JT(JSON_OBJECT)
#define CKL__JT_ARR CKL__JT(JSON_ARRAY)
#define CKL__JT_NULL CKL__JT(JSON_NULL)

/* obj[key] if present with one of the types in mask: 0 and *out.
 * Missing (when required) or of another type: logged, CKL_ECORRUPT.
 * Missing and not required: 0 and *out = NULL. */
int ckl__jmember(ckl__jctx *c, const json_t *obj, const char *key, unsigned mask, bool required,
                 json_t **out);

/* Fail on any key of obj not in the NULL-terminated list. */
int ckl__jonly_keys(ckl__jctx *c, const json_t *obj, const char *const *keys);

/* Integer member in [lo, hi]. */
int ckl__jint(ckl__jctx *c, const json_t *obj, const char *key, long long lo, long long hi,
              long long *out);

#endif

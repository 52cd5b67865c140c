/* datastore/json_util.c - JSON files read strictly, errors with positions. */
#include "datastore/json_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/internal.h"

int ckl__read_file_at(int dirfd, const char *name, const char *display, size_t max, char **out,
                      size_t *len) {
  *out = NULL;
  *len = 0;
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int e = -errno;
    if (e != -ENOENT && e != -ELOOP) ckl__log_error("%s: open: %s", display, strerror(-e));
    return e;
  }
  int rc = 0;
  char *buf = NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    ckl__log_error("%s: stat: %s", display, strerror(-rc));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    ckl__log_error("%s: not a regular file", display);
    rc = CKL_ECORRUPT;
    goto out;
  }
  if ((uint64_t)st.st_size > max) {
    ckl__log_error("%s: %lld bytes, more than the %zu allowed", display, (long long)st.st_size,
                   max);
    rc = CKL_ECORRUPT;
    goto out;
  }
  /* Read to EOF rather than trusting st_size: files we read are replaced
   * atomically, never rewritten in place, but a hand edit could be. */
  size_t cap = (size_t)st.st_size + 1, got = 0;
  buf = malloc(cap + 1);
  if (!buf) {
    rc = -ENOMEM;
    goto out;
  }
  for (;;) {
    if (got == cap) {
      if (cap > max) {
        ckl__log_error("%s: grew past the %zu bytes allowed while being read", display, max);
        rc = CKL_ECORRUPT;
        goto out;
      }
      char *nb = realloc(buf, cap * 2 + 1);
      if (!nb) {
        rc = -ENOMEM;
        goto out;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + got, cap - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      /* Callers log only what they act on (ENOENT at open); a failed read
       * is never expected, so it is named here, where the cause is known. */
      ckl__log_error("%s: read: %s", display, strerror(-rc));
      goto out;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  if (got > max) {
    ckl__log_error("%s: grew past the %zu bytes allowed while being read", display, max);
    rc = CKL_ECORRUPT;
    goto out;
  }
  buf[got] = '\0';
  *out = buf;
  *len = got;
  buf = NULL;
out:
  free(buf);
  ckl__close(fd);
  return rc;
}

int ckl__json_parse(const char *file, const char *raw, size_t len, json_t **out) {
  json_error_t err;
  *out = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &err);
  if (*out) return 0;
  ckl__log_error("%s:%d:%d: %s", file, err.line, err.column, err.text);
  return CKL_ECORRUPT;
}

void ckl__jpush_key(ckl__jctx *c, const char *key) {
  if (c->depth < CKL__JPATH_MAX) {
    c->seg[c->depth].key = key;
    c->seg[c->depth].index = 0;
  }
  c->depth++;
}

void ckl__jpush_index(ckl__jctx *c, size_t index) {
  if (c->depth < CKL__JPATH_MAX) {
    c->seg[c->depth].key = NULL;
    c->seg[c->depth].index = index;
  }
  c->depth++;
}

void ckl__jpop(ckl__jctx *c) {
  if (c->depth > 0) c->depth--;
}

/* ---- locating a path in raw JSON ------------------------------------------
 * The text has been parsed by jansson already, so it is valid JSON: the
 * scanner below only needs to skip values, not to validate them. Every
 * step is bounded by len regardless. */

static size_t skip_ws(const char *s, size_t len, size_t i) {
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  return i;
}

/* s[i] == '"': index just past the closing quote. */
static size_t skip_string(const char *s, size_t len, size_t i) {
  i++;
  while (i < len && s[i] != '"') i += (s[i] == '\\') ? 2 : 1;
  return i < len ? i + 1 : len;
}

static size_t skip_value(const char *s, size_t len, size_t i) {
  if (i >= len) return len;
  if (s[i] == '"') return skip_string(s, len, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < len) {
      char ch = s[i];
      if (ch == '"') {
        i = skip_string(s, len, i);
        continue;
      }
      if (ch == '{' || ch == '[') depth++;
      if (ch == '}' || ch == ']') {
        depth--;
        if (depth == 0) return i + 1;
      }
      i++;
    }
    return len;
  }
  while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
         s[i] != '\t' && s[i] != '\r')
    i++;
  return i;
}

/* Does the string token s[b..e) (quotes included) spell key? */
static bool key_equals(const char *s, size_t b, size_t e, const char *key) {
  if (e < b + 2) return false;
  const char *in = s + b + 1;
  size_t n = e - b - 2;
  if (!memchr(in, '\\', n)) return strlen(key) == n && memcmp(in, key, n) == 0;
  json_t *k = json_loadb(s + b, e - b, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  bool eq = k && json_is_string(k) && json_string_length(k) == strlen(key) &&
            memcmp(json_string_value(k), key, strlen(key)) == 0;
  json_decref(k);
  return eq;
}

/* Offset of the deepest element of c's path present in the text. */
static size_t locate(const ckl__jctx *c) {
  const char *s = c->raw;
  size_t len = c->len;
  size_t at = skip_ws(s, len, 0);
  int depth = c->depth < CKL__JPATH_MAX ? c->depth : CKL__JPATH_MAX;
  for (int d = 0; d < depth; d++) {
    size_t i = at;
    bool found = false;
    if (i < len && s[i] == '{' && c->seg[d].key) {
      i = skip_ws(s, len, i + 1);
      while (i < len && s[i] == '"') {
        size_t kb = i, ke = skip_string(s, len, i);
        i = skip_ws(s, len, ke);
        if (i < len && s[i] == ':') i = skip_ws(s, len, i + 1);
        if (key_equals(s, kb, ke, c->seg[d].key)) {
          found = true;
          break;
        }
        i = skip_ws(s, len, skip_value(s, len, i));
        if (i < len && s[i] == ',') i = skip_ws(s, len, i + 1);
      }
    } else if (i < len && s[i] == '[' && !c->seg[d].key) {
      i = skip_ws(s, len, i + 1);
      for (size_t k = 0; i < len && s[i] != ']'; k++) {
        if (k == c->seg[d].index) {
          found = true;
          break;
        }
        i = skip_ws(s, len, skip_value(s, len, i));
        if (i < len && s[i] == ',') i = skip_ws(s, len, i + 1);
      }
    }
    if (!found) break;
    at = i;
  }
  return at;
}

static void position(const char *s, size_t off, int *line, int *col) {
  int l = 1, cl = 1;
  for (size_t i = 0; i < off; i++) {
    if (s[i] == '\n') {
      l++;
      cl = 1;
    } else if (((unsigned char)s[i] & 0xC0) != 0x80) {
      cl++; /* count characters like jansson does, not UTF-8 bytes */
    }
  }
  *line = l;
  *col = cl;
}

static void format_path(const ckl__jctx *c, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  int depth = c->depth < CKL__JPATH_MAX ? c->depth : CKL__JPATH_MAX;
  if (depth == 0) {
    snprintf(buf, n, "(top level)");
    return;
  }
  for (int d = 0; d < depth && used < n; d++) {
    int w;
    if (c->seg[d].key)
      w = snprintf(buf + used, n - used, "%s%s", d ? "." : "", c->seg[d].key);
    else
      w = snprintf(buf + used, n - used, "[%zu]", c->seg[d].index);
    if (w < 0) break;
    used += (size_t)w;
  }
}

int ckl__jfail(const ckl__jctx *c, const char *fmt, ...) {
  if (atomic_load_explicit(&ckl__log_max_level, memory_order_relaxed) < (int)CKL_LOG_ERROR)
    return CKL_ECORRUPT;
  char msg[512], path[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  format_path(c, path, sizeof path);
  if (c->raw) {
    int line, col;
    position(c->raw, locate(c), &line, &col);
    ckl__log_error("%s:%d:%d: %s: %s", c->file, line, col, path, msg);
  } else {
    ckl__log_error("%s: %s: %s", c->file, path, msg);
  }
  return CKL_ECORRUPT;
}

static const char *type_names(unsigned mask, char *buf, size_t n) {
  static const struct {
    json_type t;
    const char *name;
  } names[] = {{JSON_OBJECT, "an object"}, {JSON_ARRAY, "an array"},  {JSON_STRING, "a string"},
               {JSON_INTEGER, "an integer"}, {JSON_REAL, "a real"},  {JSON_TRUE, "true"},
               {JSON_FALSE, "false"},         {JSON_NULL, "null"}};
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < CKL__ARRAY_SIZE(names); i++) {
    if (!(mask & CKL__JT(names[i].t))) continue;
    int w = snprintf(buf + used, n - used, "%s%s", used ? " or " : "", names[i].name);
    if (w < 0 || (size_t)w >= n - used) break;
    used += (size_t)w;
  }
  return buf;
}

int ckl__jmember(ckl__jctx *c, const json_t *obj, const char *key, unsigned mask, bool required,
                 json_t **out) {
  *out = json_object_get(obj, key);
  if (!*out) {
    if (!required) return 0;
    return ckl__jfail(c, "missing key \"%s\"", key);
  }
  if (!(mask & CKL__JT(json_typeof(*out)))) {
    char want[96];
    ckl__jpush_key(c, key);
    int rc = ckl__jfail(c, "expected %s", type_names(mask, want, sizeof want));
    ckl__jpop(c);
    *out = NULL;
    return rc;
  }
  return 0;
}

int ckl__jonly_keys(ckl__jctx *c, const json_t *obj, const char *const *keys) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    (void)v;
    bool known = false;
    for (size_t i = 0; keys[i]; i++)
      if (strcmp(k, keys[i]) == 0) known = true;
    if (!known) {
      ckl__jpush_key(c, k);
      int rc = ckl__jfail(c, "unknown key");
      ckl__jpop(c);
      return rc;
    }
  }
  return 0;
}

int ckl__jint(ckl__jctx *c, const json_t *obj, const char *key, long long lo, long long hi,
              long long *out) {
  json_t *v;
  int rc = ckl__jmember(c, obj, key, CKL__JT_INT, true, &v);
  if (rc < 0) return rc;
  long long x = (long long)json_integer_value(v);
  if (x < lo || x > hi) {
    ckl__jpush_key(c, key);
    rc = ckl__jfail(c, "%lld is out of range [%lld, %lld]", x, lo, hi);
    ckl__jpop(c);
    return rc;
  }
  *out = x;
  return 0;
}

/* tools/catalog.c - the file catalog of a snapshot (tools/catalog.h). */
#include "tools/catalog.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunklock/chunklock.h"

static char *dup_or_null(const char *s, bool *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = true;
  return d;
}

int cat_add(catalog *c, const cat_entry *e) {
  if (c->n == c->cap) {
    size_t ncap = c->cap ? c->cap * 2 : 256;
    cat_entry *v = realloc(c->v, ncap * sizeof *v);
    if (!v) return -ENOMEM;
    c->v = v;
    c->cap = ncap;
  }
  bool oom = false;
  cat_entry x = *e;
  x.path = dup_or_null(e->path, &oom);
  x.archive = dup_or_null(e->archive, &oom);
  x.target = dup_or_null(e->target, &oom);
  if (oom || !x.path) {
    free(x.path);
    free(x.archive);
    free(x.target);
    return -ENOMEM;
  }
  c->v[c->n++] = x;
  free(c->sorted);
  c->sorted = NULL;
  return 0;
}

int cat_add_root(catalog *c, const char *name) {
  char **r = realloc(c->roots, (c->nroots + 1) * sizeof *r);
  if (!r) return -ENOMEM;
  c->roots = r;
  if (!(r[c->nroots] = strdup(name))) return -ENOMEM;
  c->nroots++;
  return 0;
}

void cat_free(catalog *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->v[i].path);
    free(c->v[i].archive);
    free(c->v[i].target);
  }
  for (size_t i = 0; i < c->nroots; i++) free(c->roots[i]);
  free(c->roots);
  free(c->v);
  free(c->sorted);
  memset(c, 0, sizeof *c);
}

int cat_path_ok(const char *p) {
  if (!p || !*p) return 0;
  const char *s = p;
  for (;;) {
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);
    if (len == 0) return 0;
    if (len == 1 && s[0] == '.') return 0;
    if (len == 2 && s[0] == '.' && s[1] == '.') return 0;
    if (!slash) return 1;
    s = slash + 1;
  }
}

/* ---- JSON ----------------------------------------------------------------- */

static const char *type_name(cat_type t) {
  return t == CAT_DIR ? "dir" : t == CAT_FILE ? "file" : "symlink";
}

static void hexify(const char *s, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (; *s; s++) {
    *out++ = hx[(unsigned char)*s >> 4];
    *out++ = hx[(unsigned char)*s & 15];
  }
  *out = '\0';
}

/* "key": UTF-8 string, or "key_hex": hex of the bytes when they are not
 * valid UTF-8. */
static int set_bytes(json_t *o, const char *key, const char *s) {
  json_t *v = json_string(s);
  if (v) return json_object_set_new(o, key, v);
  size_t len = strlen(s);
  char *hex = malloc(2 * len + 1);
  if (!hex) return -1;
  hexify(s, hex);
  char k[32];
  snprintf(k, sizeof k, "%s_hex", key);
  int rc = json_object_set_new(o, k, json_string(hex));
  free(hex);
  return rc;
}

static int unhex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Read "key" or "key_hex" into a malloc'd string. 1 found, 0 absent, -1
 * malformed. */
static int get_bytes(const json_t *o, const char *key, char **out) {
  const char *s = json_string_value(json_object_get(o, key));
  if (s) {
    if (strlen(s) != json_string_length(json_object_get(o, key))) return -1; /* NUL inside */
    return (*out = strdup(s)) ? 1 : -1;
  }
  char k[32];
  snprintf(k, sizeof k, "%s_hex", key);
  const char *h = json_string_value(json_object_get(o, k));
  if (!h) return json_object_get(o, k) ? -1 : 0;
  size_t n = strlen(h);
  if (n % 2 || n == 0) return -1;
  char *b = malloc(n / 2 + 1);
  if (!b) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int a = unhex(h[2 * i]), c = unhex(h[2 * i + 1]);
    if (a < 0 || c < 0 || (a == 0 && c == 0)) {
      free(b);
      return -1;
    }
    b[i] = (char)(a << 4 | c);
  }
  b[n / 2] = '\0';
  *out = b;
  return 1;
}

json_t *cat_to_json(const catalog *c) {
  json_t *j = json_object();
  json_t *ch = json_object();
  json_t *roots = json_array();
  json_t *entries = json_array();
  if (!j || !ch || !roots || !entries) goto oom;
  json_object_set_new(ch, "algorithm", json_string("fastcdc"));
  json_object_set_new(ch, "avg", json_integer(c->avg));
  json_object_set_new(ch, "min", json_integer(c->min));
  json_object_set_new(ch, "max", json_integer(c->max));
  json_object_set_new(j, "format", json_integer(CAT_FORMAT));
  json_object_set_new(j, "kind", json_string("chunklock-catalog"));
  json_object_set_new(j, "created_ns", json_integer(c->created_ns));
  json_object_set_new(j, "chunker", ch);
  ch = NULL;
  /* roots are objects so that a name can be stored as "name_hex" too */
  for (size_t i = 0; i < c->nroots; i++) {
    json_t *r = json_object();
    if (!r || set_bytes(r, "name", c->roots[i]) < 0) {
      json_decref(r);
      goto oom;
    }
    json_array_append_new(roots, r);
  }
  json_object_set_new(j, "roots", roots);
  roots = NULL;
  for (size_t i = 0; i < c->n; i++) {
    const cat_entry *e = &c->v[i];
    json_t *o = json_object();
    if (!o || set_bytes(o, "path", e->path) < 0) {
      json_decref(o);
      goto oom;
    }
    json_object_set_new(o, "type", json_string(type_name(e->type)));
    json_object_set_new(o, "mtime_ns", json_integer(e->mtime_ns));
    if (e->type != CAT_SYMLINK) json_object_set_new(o, "mode", json_integer(e->mode));
    if (e->type == CAT_FILE) {
      json_object_set_new(o, "size", json_integer((json_int_t)e->size));
      json_object_set_new(o, "ino", json_integer((json_int_t)e->ino));
      json_object_set_new(o, "ctime_ns", json_integer(e->ctime_ns));
      if (e->archive) json_object_set_new(o, "archive", json_string(e->archive));
    }
    if (e->type == CAT_SYMLINK && set_bytes(o, "target", e->target) < 0) {
      json_decref(o);
      goto oom;
    }
    json_array_append_new(entries, o);
  }
  json_object_set_new(j, "entries", entries);
  return j;
oom:
  json_decref(j);
  json_decref(ch);
  json_decref(roots);
  json_decref(entries);
  return NULL;
}

static int64_t get_int(const json_t *o, const char *k, bool *ok) {
  json_t *v = json_object_get(o, k);
  if (!json_is_integer(v)) *ok = false;
  return json_integer_value(v);
}

__attribute__((format(printf, 3, 4))) static int corrupt(char *why, size_t len,
                                                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, len, fmt, ap);
  va_end(ap);
  return CKL_ECORRUPT;
}

int cat_from_json(const json_t *j, catalog *c, char *why, size_t wl) {
  memset(c, 0, sizeof *c);
  bool ok = true;
  if (!json_is_object(j)) return corrupt(why, wl, "not a JSON object");
  int64_t fmt = get_int(j, "format", &ok);
  if (!ok) return corrupt(why, wl, "no \"format\"");
  if (fmt > CAT_FORMAT) return CKL_EVERSION;
  json_t *ch = json_object_get(j, "chunker");
  c->avg = (uint32_t)get_int(ch, "avg", &ok);
  c->min = (uint32_t)get_int(ch, "min", &ok);
  c->max = (uint32_t)get_int(ch, "max", &ok);
  c->created_ns = get_int(j, "created_ns", &ok);
  json_t *entries = json_object_get(j, "entries");
  json_t *roots = json_object_get(j, "roots");
  if (!ok || !json_is_array(entries) || !json_is_array(roots))
    return corrupt(why, wl, "missing or malformed header fields");
  json_t *dirs = json_object(); /* directories seen so far: a parent must come first */
  json_t *seen = json_object();
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < json_array_size(roots); i++) {
    char *name = NULL;
    if (get_bytes(json_array_get(roots, i), "name", &name) != 1 || strchr(name, '/') ||
        !cat_path_ok(name))
      rc = corrupt(why, wl, "root %zu is not a plain name", i);
    else if (cat_add_root(c, name) < 0)
      rc = -ENOMEM;
    free(name);
  }
  for (size_t i = 0; rc == 0 && i < json_array_size(entries); i++) {
    const json_t *o = json_array_get(entries, i);
    cat_entry e = {0};
    const char *t = json_string_value(json_object_get(o, "type"));
    e.type = !t ? 0 : !strcmp(t, "dir") ? CAT_DIR : !strcmp(t, "file") ? CAT_FILE
             : !strcmp(t, "symlink") ? CAT_SYMLINK : 0;
    ok = true;
    e.mtime_ns = get_int(o, "mtime_ns", &ok);
    if (e.type != CAT_SYMLINK) {
      int64_t m = get_int(o, "mode", &ok);
      if (m < 0 || m > 07777) ok = false;
      e.mode = (uint32_t)m;
    }
    if (e.type == CAT_FILE) {
      int64_t sz = get_int(o, "size", &ok);
      if (sz < 0) ok = false;
      e.size = (uint64_t)sz;
      e.ino = (uint64_t)json_integer_value(json_object_get(o, "ino"));
      e.ctime_ns = json_integer_value(json_object_get(o, "ctime_ns"));
      const char *a = json_string_value(json_object_get(o, "archive"));
      if (a && (ckl_archive_name_kind(a, strlen(a)) != CKL_ARCHIVE_DIDX || !strcmp(a, CAT_ARCHIVE)))
        ok = false;
      if ((e.size > 0) != (a != NULL)) ok = false;
      e.archive = (char *)a;
    }
    if (!e.type || !ok || get_bytes(o, "path", &e.path) != 1) {
      free(e.path);
      rc = corrupt(why, wl, "entry %zu is malformed", i);
      break;
    }
    if (e.type == CAT_SYMLINK && get_bytes(o, "target", &e.target) != 1) {
      free(e.path);
      rc = corrupt(why, wl, "symlink entry %zu has no target", i);
      break;
    }
    const char *slash = strrchr(e.path, '/');
    if (!cat_path_ok(e.path) || json_object_get(seen, e.path)) {
      rc = corrupt(why, wl, "entry %zu: unsafe or repeated path", i);
    } else if (slash) {
      char *parent = strndup(e.path, (size_t)(slash - e.path));
      if (!parent) rc = -ENOMEM;
      else if (!json_object_get(dirs, parent))
        rc = corrupt(why, wl, "entry %zu comes before its directory", i);
      free(parent);
    } else {
      bool root = false;
      for (size_t k = 0; k < c->nroots; k++) root |= !strcmp(c->roots[k], e.path);
      if (!root) rc = corrupt(why, wl, "entry %zu is outside every root", i);
    }
    if (rc == 0) {
      json_object_set_new_nocheck(seen, e.path, json_true());
      if (e.type == CAT_DIR) json_object_set_new_nocheck(dirs, e.path, json_true());
      rc = cat_add(c, &e);
    }
    free(e.path);
    free(e.target);
  }
  json_decref(dirs);
  json_decref(seen);
  if (rc < 0) cat_free(c);
  return rc;
}

static int by_path(const void *a, const void *b) {
  return strcmp((*(cat_entry *const *)a)->path, (*(cat_entry *const *)b)->path);
}

const cat_entry *cat_find(catalog *c, const char *path) {
  if (c->n == 0) return NULL;
  if (!c->sorted) {
    c->sorted = malloc(c->n * sizeof *c->sorted);
    if (!c->sorted) return NULL;
    for (size_t i = 0; i < c->n; i++) c->sorted[i] = &c->v[i];
    qsort(c->sorted, c->n, sizeof *c->sorted, by_path);
  }
  cat_entry key = {.path = (char *)path}, *kp = &key;
  cat_entry **hit = bsearch(&kp, c->sorted, c->n, sizeof *c->sorted, by_path);
  return hit ? *hit : NULL;
}

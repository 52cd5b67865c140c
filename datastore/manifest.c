/*
 * datastore/manifest.c - index.json: load, validate, write, update.
 *
 * Concurrency (DESIGN.md section 5, "update_manifest"):
 *   - Writers of an existing manifest serialise on the manifest lock and
 *     hold it from before the load until after the replace, so no update
 *     is computed from a stale copy (the lost update that load + store in
 *     two steps allows).
 *   - Readers take no lock: the file is only ever replaced by rename, so
 *     a reader sees the old or the new manifest, whole.
 *   - The first write (the backup's finish) happens under the snapshot's
 *     exclusive lock, before any reader or updater can lock the snapshot
 *     as complete.
 *   - The atomic replace swaps the inode of index.json but not of the
 *     lock file, which lives apart in the lock namespace: that is why the
 *     lock is a separate file and not a lock on the manifest itself.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/atomic_file.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/json_util.h"
#include "datastore/manifest_internal.h"
#include "datastore/store_internal.h"

#define UNPROTECTED "unprotected"

static bool lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

static int check_files(ckl__jctx *c, const json_t *files) {
  static const char *const file_keys[] = {"name", "size", "csum", NULL};
  size_t i;
  json_t *f, *v;
  json_array_foreach(files, i, f) {
    ckl__jpush_index(c, i);
    int rc;
    long long size;
    if (!json_is_object(f)) {
      rc = ckl__jfail(c, "expected an object");
      goto out;
    }
    if ((rc = ckl__jonly_keys(c, f, file_keys)) < 0) goto out;
    if ((rc = ckl__jmember(c, f, "name", CKL__JT_STR, true, &v)) < 0) goto out;
    const char *name = json_string_value(v);
    if (ckl_archive_name_kind(name, json_string_length(v)) == CKL_ARCHIVE_NONE) {
      ckl__jpush_key(c, "name");
      rc = ckl__jfail(c, "not a valid archive name (*.didx or *.fidx)");
      goto out;
    }
    for (size_t j = 0; j < i; j++) {
      const char *other = json_string_value(json_object_get(json_array_get(files, j), "name"));
      if (strcmp(other, name) == 0) {
        ckl__jpush_key(c, "name");
        rc = ckl__jfail(c, "\"%s\" is listed twice", name);
        goto out;
      }
    }
    if ((rc = ckl__jint(c, f, "size", 0, INT64_MAX, &size)) < 0) goto out;
    if ((rc = ckl__jmember(c, f, "csum", CKL__JT_STR, true, &v)) < 0) goto out;
    if (json_string_length(v) != CKL_DIGEST_HEX_LEN ||
        !lower_hex(json_string_value(v), CKL_DIGEST_HEX_LEN)) {
      ckl__jpush_key(c, "csum");
      rc = ckl__jfail(c, "expected %d lowercase hex digits", CKL_DIGEST_HEX_LEN);
      goto out;
    }
  out:
    if (rc < 0) return rc;
    ckl__jpop(c);
  }
  return 0;
}

/* The shape check shared by load (with the raw text, for positions) and
 * write/validate (without). */
static int check_manifest(ckl__jctx *c, const json_t *m, const ckl_snapshot_name *snap) {
  json_t *v;
  long long x;
  int rc;
  if (!json_is_object(m)) return ckl__jfail(c, "expected an object");
  if ((rc = ckl__jmember(c, m, "format", CKL__JT_INT, true, &v)) < 0) return rc;
  if (json_integer_value(v) > CKL_MANIFEST_FORMAT) {
    ckl__log_error("%s: manifest format %lld is newer than this library's %d", c->file,
                   (long long)json_integer_value(v), CKL_MANIFEST_FORMAT);
    return CKL_EVERSION;
  }
  if ((rc = ckl__jint(c, m, "format", 1, CKL_MANIFEST_FORMAT, &x)) < 0) return rc;

  if ((rc = ckl__jmember(c, m, "snapshot", CKL__JT_STR, true, &v)) < 0) return rc;
  ckl_snapshot_name parsed;
  if (ckl_snapshot_name_parsen(json_string_value(v), json_string_length(v), &parsed) < 0) {
    ckl__jpush_key(c, "snapshot");
    rc = ckl__jfail(c, "not a valid snapshot name");
    ckl__jpop(c);
    return rc;
  }
  if (snap && (strcmp(parsed.type, snap->type) || strcmp(parsed.id, snap->id) ||
               strcmp(parsed.time, snap->time))) {
    ckl__jpush_key(c, "snapshot");
    rc = ckl__jfail(c, "names another snapshot, not %s/%s/%s", snap->type, snap->id, snap->time);
    ckl__jpop(c);
    return rc;
  }

  if ((rc = ckl__jmember(c, m, "files", CKL__JT_ARR, true, &v)) < 0) return rc;
  ckl__jpush_key(c, "files");
  if ((rc = check_files(c, v)) < 0) return rc;
  ckl__jpop(c);

  if ((rc = ckl__jmember(c, m, "created", CKL__JT_STR, true, &v)) < 0) return rc;
  if (ckl_snapshot_time_parse(json_string_value(v), json_string_length(v), NULL) < 0) {
    ckl__jpush_key(c, "created");
    rc = ckl__jfail(c, "expected a time \"YYYY-MM-DDTHH:MM:SSZ\"");
    ckl__jpop(c);
    return rc;
  }
  return ckl__jmember(c, m, UNPROTECTED, CKL__JT_OBJ, true, &v);
}

int ckl_manifest_validate(const json_t *m, const ckl_snapshot_name *snap) {
  if (!m || (snap && !ckl__snapshot_name_ok(snap))) return -EINVAL;
  ckl__jctx c = {.file = "manifest"};
  return check_manifest(&c, m, snap);
}

static int manifest_display_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf,
                                 size_t len) {
  return ckl__pathf(buf, len, "%s/%s/%s/%s/" CKL_MANIFEST_NAME, st->path, n->type, n->id,
                    n->time);
}

int ckl_manifest_load(ckl_store *st, const ckl_snapshot_name *snap, json_t **out) {
  if (!out) return -EINVAL;
  *out = NULL;
  if (!st || !ckl__snapshot_name_ok(snap)) return -EINVAL;
  char display[PATH_MAX];
  int rc = manifest_display_path(st, snap, display, sizeof display);
  if (rc < 0) return rc;
  int dfd = ckl__snapshot_open_dir(st, snap);
  if (dfd < 0) return (dfd == -ENOTDIR || dfd == -ELOOP) ? -ENOENT : dfd;
  char *raw = NULL;
  size_t len = 0;
  /* error(EIO) stands for a read that fails: reported as one. */
  if ((rc = CKL_FAILPOINT("manifest.load.before_read")) < 0)
    ckl__log_error("%s: read: %s", display, ckl_strerror(rc));
  else
    rc = ckl__read_file_at(dfd, CKL_MANIFEST_NAME, display, CKL_MANIFEST_MAX_BYTES, &raw, &len);
  ckl__close(dfd);
  if (rc == -ELOOP) ckl__log_error("%s: is a symlink, not followed", display);
  if (rc < 0) return rc;
  rc = ckl__manifest_parse(display, raw, len, snap, out);
  free(raw);
  return rc;
}

int ckl__manifest_parse(const char *display, const char *raw, size_t len,
                        const ckl_snapshot_name *snap, json_t **out) {
  *out = NULL;
  json_t *m = NULL;
  int rc = ckl__json_parse(display, raw, len, &m);
  if (rc == 0) {
    ckl__jctx c = {.file = display, .raw = raw, .len = len};
    rc = check_manifest(&c, m, snap);
  }
  if (rc < 0) {
    json_decref(m);
    return rc;
  }
  *out = m;
  return 0;
}

int ckl_manifest_new(const ckl_snapshot_name *snap, json_t **out) {
  if (!out) return -EINVAL;
  *out = NULL;
  char name[CKL_SNAP_NAME_MAX + 1], now[32];
  int rc = ckl_snapshot_name_format(snap, name, sizeof name);
  if (rc < 0) return rc;
  ckl__format_time(ckl__now_realtime_ns(), now, sizeof now);
  *out = json_pack("{s:i, s:s, s:[], s:s, s:{}}", "format", CKL_MANIFEST_FORMAT, "snapshot", name,
                   "files", "created", now, UNPROTECTED);
  return *out ? 0 : -ENOMEM;
}

int ckl_manifest_add_file(json_t *m, const char *name, uint64_t size, const ckl_digest *csum) {
  json_t *files = json_object_get(m, "files");
  if (!json_is_array(files) || !name || !csum || size > INT64_MAX) return -EINVAL;
  if (ckl_archive_name_kind(name, strlen(name)) == CKL_ARCHIVE_NONE) return -EINVAL;
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    const char *other = json_string_value(json_object_get(f, "name"));
    if (other && strcmp(other, name) == 0) return -EINVAL;
  }
  static const char hexd[] = "0123456789abcdef";
  char hex[CKL_DIGEST_HEX_LEN + 1];
  for (size_t k = 0; k < CKL_DIGEST_LEN; k++) {
    hex[2 * k] = hexd[csum->b[k] >> 4];
    hex[2 * k + 1] = hexd[csum->b[k] & 15];
  }
  hex[CKL_DIGEST_HEX_LEN] = '\0';
  json_t *entry = json_pack("{s:s, s:I, s:s}", "name", name, "size", (json_int_t)size, "csum", hex);
  if (!entry) return -ENOMEM;
  return json_array_append_new(files, entry) == 0 ? 0 : -ENOMEM;
}

/* The file's bytes: sorted keys, indented or compact, newline-terminated. */
static char *serialize(const json_t *m, unsigned flags, size_t *len) {
  size_t jf = JSON_SORT_KEYS | ((flags & CKL_MANIFEST_COMPACT) ? JSON_COMPACT : JSON_INDENT(2));
  char *s = json_dumps(m, jf);
  if (!s) return NULL;
  size_t n = strlen(s);
  char *t = realloc(s, n + 2);
  if (!t) {
    free(s);
    return NULL;
  }
  t[n] = '\n';
  t[n + 1] = '\0';
  *len = n + 1;
  return t;
}

static int replace_manifest(const ckl_store *st, const ckl_snapshot_name *snap, const json_t *m,
                            unsigned flags) {
  char path[PATH_MAX];
  int rc = manifest_display_path(st, snap, path, sizeof path);
  if (rc < 0) return rc;
  size_t len;
  char *buf = serialize(m, flags, &len);
  if (!buf) return -ENOMEM;
  rc = ckl_atomic_replace(path, buf, len, 0644, st->atomic_flags);
  free(buf);
  if (rc < 0) ckl__log_error("%s: cannot write: %s", path, ckl_strerror(rc));
  return rc;
}

int ckl_manifest_write_new(ckl_store *st, const ckl_snapshot_name *snap, const json_t *m,
                           unsigned flags) {
  if (!st || !m || !ckl__snapshot_name_ok(snap)) return -EINVAL;
  char display[PATH_MAX];
  int rc = manifest_display_path(st, snap, display, sizeof display);
  if (rc < 0) return rc;
  ckl__jctx c = {.file = display};
  if ((rc = check_manifest(&c, m, snap)) < 0) return rc;
  int dfd = ckl__snapshot_open_dir(st, snap);
  if (dfd < 0) return (dfd == -ENOTDIR || dfd == -ELOOP) ? -ENOENT : dfd;
  struct stat sb;
  /* Check-then-create is safe only because the caller holds the snapshot
   * lock exclusively (see manifest.h): nobody else writes a first
   * manifest for this snapshot, and updaters need one to exist. */
  bool exists = fstatat(dfd, CKL_MANIFEST_NAME, &sb, AT_SYMLINK_NOFOLLOW) == 0;
  ckl__close(dfd);
  if (exists) {
    ckl__log_error("%s: already exists; later changes go through ckl_update_manifest", display);
    return -EEXIST;
  }
  return replace_manifest(st, snap, m, flags);
}

/* Everything but "unprotected", serialised canonically (sorted keys,
 * compact): the bytes update_manifest compares before and after fn. */
static char *protected_part(const json_t *m) {
  json_t *copy = json_copy((json_t *)m); /* shallow: values are shared */
  if (!copy) return NULL;
  json_object_del(copy, UNPROTECTED);
  char *s = json_dumps(copy, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(copy);
  return s;
}

/* For the error message: the first protected top-level key that differs. */
static const char *changed_key(const char *before, const json_t *after, char *key, size_t n) {
  json_t *b = json_loads(before, 0, NULL);
  snprintf(key, n, "?");
  const char *k;
  json_t *v;
  if (b) {
    json_object_foreach(b, k, v) {
      if (!json_equal(v, json_object_get(after, k))) {
        snprintf(key, n, "%s", k);
        break;
      }
    }
    if (key[0] == '?') {
      json_object_foreach((json_t *)after, k, v) {
        if (strcmp(k, UNPROTECTED) != 0 && !json_object_get(b, k)) {
          snprintf(key, n, "%s", k);
          break;
        }
      }
    }
  }
  json_decref(b);
  return key;
}

int ckl_update_manifest(ckl_store *st, const ckl_snapshot_name *snap, ckl_manifest_update_fn fn,
                        void *arg, const ckl_manifest_update_opts *opts) {
  static const ckl_manifest_update_opts no_opts = {0};
  if (!opts) opts = &no_opts;
  if (!st || !fn || !ckl__snapshot_name_ok(snap)) return -EINVAL;
  char display[PATH_MAX];
  int rc = manifest_display_path(st, snap, display, sizeof display);
  if (rc < 0) return rc;

  ckl_path_lock lk = {0};
  ckl_snap_lock_opts lo = {.order = opts->order,
                           .operation = opts->operation ? opts->operation : "update_manifest",
                           .busy_holder = opts->busy_holder,
                           .timeout_ms = opts->timeout_ms};
  if ((rc = ckl_manifest_lock(st, snap, &lk, &lo)) < 0) return rc;
  json_t *m = NULL;
  char *before = NULL, *before_all = NULL, *after = NULL, *after_all = NULL;
  size_t len;
  /* Invariant from here to the release: we hold the manifest lock, so no
   * other update can replace index.json between our load and our write. */
  if ((rc = CKL_FAILPOINT("update_manifest.after_lock")) < 0) goto out;
  if ((rc = ckl_manifest_load(st, snap, &m)) < 0) goto out;
  if ((rc = CKL_FAILPOINT("update_manifest.after_load")) < 0) goto out;
  before = protected_part(m);
  before_all = serialize(m, opts->flags, &len);
  if (!before || !before_all) {
    rc = -ENOMEM;
    goto out;
  }
  if ((rc = fn(m, arg)) < 0) {
    ckl__log_debug("%s: update callback returned %s; nothing written", display,
                   ckl_err_name(rc));
    goto out;
  }
  if (!json_is_object(json_object_get(m, UNPROTECTED))) {
    ckl__log_error("%s: the update removed \"" UNPROTECTED "\" or made it a non-object; nothing "
                   "written",
                   display);
    rc = -EINVAL;
    goto out;
  }
  after = protected_part(m);
  after_all = serialize(m, opts->flags, &len);
  if (!after || !after_all) {
    rc = -ENOMEM;
    goto out;
  }
  if (strcmp(before, after) != 0) {
    char key[64];
    ckl__log_error("%s: the update changed protected key \"%s\"; only \"" UNPROTECTED
                   "\" may change, nothing written",
                   display, changed_key(before, m, key, sizeof key));
    rc = CKL_EPROTECTED;
    goto out;
  }
  if (strcmp(before_all, after_all) == 0) goto out; /* nothing to write */
  if ((rc = CKL_FAILPOINT("update_manifest.before_replace")) < 0) goto out;
  if ((rc = replace_manifest(st, snap, m, opts->flags)) < 0) goto out;
  rc = CKL_FAILPOINT("update_manifest.after_replace");
out:
  ckl_path_lock_release(&lk);
  json_decref(m);
  free(before);
  free(before_all);
  free(after);
  free(after_all);
  return rc;
}

/*
 * datastore/store.c - creating, opening and closing a store; its
 * configuration file; the lock namespace's paths.
 *
 * Creation is made crash-detectable rather than crash-atomic: a store is
 * dozens of thousands of directories, which no rename can publish at once.
 * The marker STORE/.creating is created first and removed last, and open
 * refuses a store that has it (CKL_EHALFCREATED). The configuration, the
 * file that makes a directory a store, is written after everything it
 * describes exists, through an atomic replace, so a store with a config
 * and no marker is always complete.
 *
 * The marker doubles as the create lock: the creator holds an exclusive
 * path lock on it for the whole create. Two creates of one path therefore
 * never interleave (the second gets CKL_EBUSY), and a marker whose lock is
 * free belongs to a create that died, which a new create may finish.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/atomic_file.h"
#include "chunklock/lock.h"
#include "common/internal.h"
#include "datastore/json_util.h"
#include "datastore/store_internal.h"

#define CONFIG_MAX_BYTES (64u * 1024u)
#define LOCKS_DIR_MAX 1024
#define ATIME_SAFETY_MAX_S 31536000 /* one year */
#define MARGIN_MAX_S 3600
#define AVG_MIN (64u * 1024u)
#define AVG_MAX (4u * 1024u * 1024u)

static const char *const sync_names[] = {
    [CKL_SYNC_NONE] = "none", [CKL_SYNC_FILE] = "file", [CKL_SYNC_FILESYSTEM] = "filesystem"};

const char *ckl_sync_policy_name(ckl_sync_policy p) {
  if ((unsigned)p >= CKL__ARRAY_SIZE(sync_names)) return NULL;
  return sync_names[p];
}

static bool locks_dir_ok(const char *s) {
  size_t n = strlen(s);
  if (n < 2 || n > LOCKS_DIR_MAX || s[0] != '/' || s[n - 1] == '/' || strstr(s, "//")) return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
  return true;
}

static bool average_ok(long long v) { return v >= AVG_MIN && v <= AVG_MAX && (v & (v - 1)) == 0; }

/* ---- configuration --------------------------------------------------- */

static int config_from_opts(const char *path, const ckl_store_create_opts *o,
                            ckl_store_config *cfg) {
  static const ckl_store_create_opts defaults = {0};
  if (!o) o = &defaults;
  memset(cfg, 0, sizeof *cfg);
  cfg->format = CKL_STORE_FORMAT;
  cfg->sync = o->sync;
  cfg->chunk_average_size =
      o->chunk_average_size ? o->chunk_average_size : CKL_STORE_DEFAULT_AVERAGE_SIZE;
  cfg->compress_level = o->compress_level ? o->compress_level : CKL_STORE_DEFAULT_COMPRESS_LEVEL;
  cfg->gc_atime_safety_s = (o->set & CKL_STORE_SET_ATIME_SAFETY) ? o->gc_atime_safety_s
                                                                 : CKL_STORE_DEFAULT_ATIME_SAFETY_S;
  cfg->gc_margin_s = (o->set & CKL_STORE_SET_MARGIN) ? o->gc_margin_s : CKL_STORE_DEFAULT_MARGIN_S;
  cfg->locks_dir = o->locks_dir;
  if (!ckl_sync_policy_name(cfg->sync)) {
    ckl__log_error("%s: store create: unknown sync policy %d", path, (int)cfg->sync);
    return -EINVAL;
  }
  if (!average_ok(cfg->chunk_average_size)) {
    ckl__log_error("%s: store create: chunk average size %u is not a power of two in [%u, %u]",
                   path, cfg->chunk_average_size, AVG_MIN, AVG_MAX);
    return -EINVAL;
  }
  if (cfg->compress_level < -1 || cfg->compress_level > 22) {
    ckl__log_error("%s: store create: compress level %d is not in [-1, 22]", path,
                   cfg->compress_level);
    return -EINVAL;
  }
  if (cfg->gc_atime_safety_s < 0 || cfg->gc_atime_safety_s > ATIME_SAFETY_MAX_S) {
    ckl__log_error("%s: store create: atime safety %lld s is not in [0, %d]", path,
                   (long long)cfg->gc_atime_safety_s, ATIME_SAFETY_MAX_S);
    return -EINVAL;
  }
  if (cfg->gc_margin_s < 0 || cfg->gc_margin_s > MARGIN_MAX_S) {
    ckl__log_error("%s: store create: GC margin %lld s is not in [0, %d]", path,
                   (long long)cfg->gc_margin_s, MARGIN_MAX_S);
    return -EINVAL;
  }
  if (cfg->locks_dir && !locks_dir_ok(cfg->locks_dir)) {
    ckl__log_error("%s: store create: locks_dir \"%s\" is not an absolute path", path,
                   cfg->locks_dir);
    return -EINVAL;
  }
  int rc = ckl__random_token(cfg->uuid);
  if (rc < 0) return rc;
  ckl__format_time(ckl__now_realtime_ns(), cfg->created, sizeof cfg->created);
  return 0;
}

/* Serialised configuration (malloc'd, newline-terminated) or NULL. */
char *ckl__store_config_dump(const ckl_store_config *cfg) {
  json_t *root =
      json_pack("{s:i, s:s, s:s, s:{s:I, s:i}, s:s, s:{s:I, s:I}, s:o}", "format", cfg->format,
                "uuid", cfg->uuid, "created", cfg->created, "chunk", "average_size",
                (json_int_t)cfg->chunk_average_size, "compress_level", cfg->compress_level, "sync",
                ckl_sync_policy_name(cfg->sync), "gc", "atime_safety_s",
                (json_int_t)cfg->gc_atime_safety_s, "margin_s", (json_int_t)cfg->gc_margin_s,
                "locks_dir", cfg->locks_dir ? json_string(cfg->locks_dir) : json_null());
  if (!root) return NULL;
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(root);
  if (!s) return NULL;
  size_t n = strlen(s);
  char *t = realloc(s, n + 2);
  if (!t) {
    free(s);
    return NULL;
  }
  t[n] = '\n';
  t[n + 1] = '\0';
  return t;
}

static bool is_lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

int ckl__store_config_parse(const char *file, const char *raw, size_t len,
                            ckl_store_config *cfg, char **locks_dir) {
  static const char *const top_keys[] = {"format", "uuid", "created",   "chunk",
                                         "sync",   "gc",   "locks_dir", NULL};
  static const char *const chunk_keys[] = {"average_size", "compress_level", NULL};
  static const char *const gc_keys[] = {"atime_safety_s", "margin_s", NULL};
  *locks_dir = NULL;
  memset(cfg, 0, sizeof *cfg);
  json_t *root;
  int rc = ckl__json_parse(file, raw, len, &root);
  if (rc < 0) return rc;
  ckl__jctx c = {.file = file, .raw = raw, .len = len};
  json_t *v, *chunk, *gc;
  long long x;
  if (!json_is_object(root)) {
    rc = ckl__jfail(&c, "expected an object");
    goto out;
  }
  /* The version first: a newer format may have any other shape. */
  if ((rc = ckl__jmember(&c, root, "format", CKL__JT_INT, true, &v)) < 0) goto out;
  if (json_integer_value(v) > CKL_STORE_FORMAT) {
    ckl__log_error("%s: format %lld is newer than this library's %d", file,
                   (long long)json_integer_value(v), CKL_STORE_FORMAT);
    rc = CKL_EVERSION;
    goto out;
  }
  if ((rc = ckl__jint(&c, root, "format", CKL_STORE_FORMAT, CKL_STORE_FORMAT, &x)) < 0) goto out;
  cfg->format = (int)x;
  if ((rc = ckl__jonly_keys(&c, root, top_keys)) < 0) goto out;

  if ((rc = ckl__jmember(&c, root, "uuid", CKL__JT_STR, true, &v)) < 0) goto out;
  if (json_string_length(v) != CKL_TOKEN_HEX_LEN ||
      !is_lower_hex(json_string_value(v), CKL_TOKEN_HEX_LEN)) {
    ckl__jpush_key(&c, "uuid");
    rc = ckl__jfail(&c, "expected %d lowercase hex digits", CKL_TOKEN_HEX_LEN);
    goto out;
  }
  memcpy(cfg->uuid, json_string_value(v), CKL_TOKEN_HEX_LEN + 1);

  if ((rc = ckl__jmember(&c, root, "created", CKL__JT_STR, true, &v)) < 0) goto out;
  int64_t t;
  if (json_string_length(v) != CKL_SNAP_TIME_LEN ||
      ckl_snapshot_time_parse(json_string_value(v), json_string_length(v), &t) < 0) {
    ckl__jpush_key(&c, "created");
    rc = ckl__jfail(&c, "expected a time \"YYYY-MM-DDTHH:MM:SSZ\"");
    goto out;
  }
  memcpy(cfg->created, json_string_value(v), CKL_SNAP_TIME_LEN + 1);

  if ((rc = ckl__jmember(&c, root, "chunk", CKL__JT_OBJ, true, &chunk)) < 0) goto out;
  ckl__jpush_key(&c, "chunk");
  if ((rc = ckl__jonly_keys(&c, chunk, chunk_keys)) < 0) goto out;
  if ((rc = ckl__jint(&c, chunk, "average_size", AVG_MIN, AVG_MAX, &x)) < 0) goto out;
  if (!average_ok(x)) {
    ckl__jpush_key(&c, "average_size");
    rc = ckl__jfail(&c, "%lld is not a power of two", x);
    goto out;
  }
  cfg->chunk_average_size = (uint32_t)x;
  if ((rc = ckl__jint(&c, chunk, "compress_level", -1, 22, &x)) < 0) goto out;
  cfg->compress_level = (int)x;
  ckl__jpop(&c);

  if ((rc = ckl__jmember(&c, root, "sync", CKL__JT_STR, true, &v)) < 0) goto out;
  bool found = false;
  for (size_t i = 0; i < CKL__ARRAY_SIZE(sync_names); i++) {
    if (strcmp(json_string_value(v), sync_names[i]) == 0) {
      cfg->sync = (ckl_sync_policy)i;
      found = true;
    }
  }
  if (!found) {
    ckl__jpush_key(&c, "sync");
    rc = ckl__jfail(&c, "expected \"none\", \"file\" or \"filesystem\"");
    goto out;
  }

  if ((rc = ckl__jmember(&c, root, "gc", CKL__JT_OBJ, true, &gc)) < 0) goto out;
  ckl__jpush_key(&c, "gc");
  if ((rc = ckl__jonly_keys(&c, gc, gc_keys)) < 0) goto out;
  if ((rc = ckl__jint(&c, gc, "atime_safety_s", 0, ATIME_SAFETY_MAX_S, &x)) < 0) goto out;
  cfg->gc_atime_safety_s = x;
  if ((rc = ckl__jint(&c, gc, "margin_s", 0, MARGIN_MAX_S, &x)) < 0) goto out;
  cfg->gc_margin_s = x;
  ckl__jpop(&c);

  if ((rc = ckl__jmember(&c, root, "locks_dir", CKL__JT_STR | CKL__JT_NULL, true, &v)) < 0)
    goto out;
  if (json_is_string(v)) {
    if (strlen(json_string_value(v)) != json_string_length(v) ||
        !locks_dir_ok(json_string_value(v))) {
      ckl__jpush_key(&c, "locks_dir");
      rc = ckl__jfail(&c, "expected null or an absolute path");
      goto out;
    }
    *locks_dir = strdup(json_string_value(v));
    if (!*locks_dir) rc = -ENOMEM;
  }
out:
  json_decref(root);
  return rc;
}

/* ---- create ----------------------------------------------------------- */

static int fsync_dirfd(int fd) { return fsync(fd) == 0 ? 0 : -errno; }

static int fsync_parent(const char *path) {
  char buf[PATH_MAX];
  int rc = ckl__pathf(buf, sizeof buf, "%s", path);
  if (rc < 0) return rc;
  char *slash = strrchr(buf, '/');
  if (slash == buf)
    buf[1] = '\0';
  else if (slash)
    *slash = '\0';
  else
    ckl__strlcpy(buf, ".", sizeof buf);
  int fd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  rc = fsync_dirfd(fd);
  ckl__close(fd);
  return rc;
}

/* Make dirfd/name a directory (mode), accepting one that exists. */
static int ensure_dir(int dirfd, const char *name, mode_t mode, const char *display) {
  if (mkdirat(dirfd, name, mode) == 0) return 0;
  if (errno != EEXIST) {
    int rc = -errno;
    ckl__log_error("%s/%s: mkdir: %s", display, name, ckl_strerror(rc));
    return rc;
  }
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return -errno;
  if (!S_ISDIR(st.st_mode)) {
    ckl__log_error("%s/%s: exists and is not a directory", display, name);
    return -ENOTDIR;
  }
  return 0;
}

/* Entries of an open directory other than the ones named in allow.
 * Returns the count (0 = empty) or -errno. */
static int count_foreign_entries(int dirfd, const char *const *allow) {
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR *d = fdopendir(fd);
  if (!d) {
    int rc = -errno;
    ckl__close(fd);
    return rc;
  }
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    bool ok = false;
    for (size_t i = 0; allow && allow[i]; i++)
      if (strcmp(e->d_name, allow[i]) == 0) ok = true;
    if (!ok) n++;
  }
  closedir(d);
  return n;
}

static int create_steps(const char *path, int dfd, const ckl_store_config *cfg) {
  char sub[PATH_MAX];
  int rc;
  if ((rc = ensure_dir(dfd, ".chunks", 0755, path)) < 0) return rc;
  if ((rc = ckl__pathf(sub, sizeof sub, "%s/.chunks", path)) < 0) return rc;
  if ((rc = ckl_chunkstore_init_layout(sub)) < 0) {
    ckl__log_error("%s: cannot create the chunk directories: %s", sub, ckl_strerror(rc));
    return rc;
  }
  if ((rc = CKL_FAILPOINT("store.create.after_chunks")) < 0) return rc;

  int fd = openat(dfd, ".lock", O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    ckl__log_error("%s/.lock: %s", path, ckl_strerror(rc));
    return rc;
  }
  ckl__close(fd);
  if ((rc = ensure_dir(dfd, ".locks", 0700, path)) < 0) return rc;
  if ((rc = ensure_dir(dfd, ".state", 0700, path)) < 0) return rc;
  if ((rc = ensure_dir(dfd, ".trash", 0700, path)) < 0) return rc;
  if ((rc = fsync_dirfd(dfd)) < 0) return rc;
  if ((rc = CKL_FAILPOINT("store.create.after_dirs")) < 0) return rc;

  char *json = ckl__store_config_dump(cfg);
  if (!json) return -ENOMEM;
  if ((rc = ckl__pathf(sub, sizeof sub, "%s/" CKL_STORE_CONFIG_NAME, path)) >= 0)
    rc = ckl_atomic_replace(sub, json, strlen(json), 0644, 0);
  free(json);
  if (rc < 0) {
    ckl__log_error("%s: cannot write: %s", sub, ckl_strerror(rc));
    return rc;
  }
  return CKL_FAILPOINT("store.create.after_config");
}

int ckl_store_create(const char *path, const ckl_store_create_opts *opts) {
  if (!path || !*path) return -EINVAL;
  ckl_store_config cfg;
  int rc = config_from_opts(path, opts, &cfg);
  if (rc < 0) return rc;

  bool made = mkdir(path, 0755) == 0;
  if (!made && errno != EEXIST) {
    rc = -errno;
    ckl__log_error("%s: cannot create the store directory: %s", path, ckl_strerror(rc));
    return rc;
  }
  if (made && (rc = fsync_parent(path)) < 0) return rc;
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    rc = -errno;
    ckl__log_error("%s: %s", path, ckl_strerror(rc));
    return rc;
  }
  char marker[PATH_MAX];
  ckl_path_lock lk = {0};
  if ((rc = ckl__pathf(marker, sizeof marker, "%s/" CKL_STORE_CREATING_NAME, path)) < 0) goto out;

  struct stat st;
  bool resume = fstatat(dfd, CKL_STORE_CREATING_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!resume) {
    if (fstatat(dfd, CKL_STORE_CONFIG_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      rc = -EEXIST;
      ckl__log_error("%s: already a store", path);
      goto out;
    }
    if ((rc = count_foreign_entries(dfd, NULL)) != 0) {
      if (rc > 0) {
        rc = -ENOTEMPTY;
        ckl__log_error("%s: not empty, refusing to create a store in it", path);
      }
      goto out;
    }
  }

  ckl_holder who = {0};
  ckl_lock_opts lo = {.timeout_ms = CKL_TRY, .operation = "create", .busy_holder = &who};
  rc = ckl_path_lock_acquire(&lk, marker, CKL_LOCK_EXCLUSIVE, &lo);
  if (rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    ckl__log_error("%s: another create is running (%s)", path, h);
    goto out;
  }
  if (rc < 0) {
    ckl__log_error("%s: cannot lock: %s", marker, ckl_strerror(rc));
    goto out;
  }
  if (!resume) {
    /* Between the checks above and our lock another create may have run
     * to completion or started filling the directory: check again, now
     * that no create can run. */
    static const char *const ours[] = {CKL_STORE_CREATING_NAME, NULL};
    if (fstatat(dfd, CKL_STORE_CONFIG_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0)
      rc = -EEXIST;
    else if ((rc = count_foreign_entries(dfd, ours)) > 0)
      rc = -ENOTEMPTY;
    if (rc < 0) {
      ckl__log_error("%s: %s", path,
                     rc == -EEXIST ? "already a store" : "not empty, refusing to create a store");
      ckl_path_lock_unlink(&lk); /* the marker we just made; nobody else uses it */
      goto out;
    }
  } else {
    ckl__log_info("%s: finishing an interrupted create", path);
  }
  if ((rc = fsync_dirfd(dfd)) < 0) goto out;
  if ((rc = CKL_FAILPOINT("store.create.after_marker")) < 0) goto out;
  if ((rc = create_steps(path, dfd, &cfg)) < 0) goto out;
  /* The store is complete: removing the marker publishes it. Unlink while
   * holding so that a create waiting on the old marker sees it is gone. */
  if ((rc = ckl_path_lock_unlink(&lk)) < 0) {
    ckl__log_error("%s: cannot remove the creation marker: %s", marker, ckl_strerror(rc));
    goto out;
  }
  rc = fsync_dirfd(dfd);
out:
  ckl_path_lock_release(&lk); /* no-op when unlinked above */
  ckl__close(dfd);
  return rc;
}

/* ---- open / close ------------------------------------------------------ */

static char *join(const char *a, const char *b) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", a, b) < 0) return NULL;
  return p;
}

void ckl_store_close(ckl_store *st) {
  if (!st) return;
  if (st->chunks) ckl_chunkstore_close(st->chunks);
  if (st->proclock) ckl_proclock_close(st->proclock);
  ckl__close(st->dirfd);
  free(st->path);
  free(st->chunks_path);
  free(st->lock_path);
  free(st->state_path);
  free(st->trash_path);
  free(st->gc_status_path);
  free(st->config_path);
  free(st->locks_root);
  free(st->locks_dir);
  free(st);
}

static int open_paths(ckl_store *st, const char *override) {
  st->chunks_path = join(st->path, ".chunks");
  st->lock_path = join(st->path, ".lock");
  st->state_path = join(st->path, ".state");
  st->trash_path = join(st->path, ".trash");
  st->gc_status_path = join(st->path, ".gc-status");
  st->config_path = join(st->path, CKL_STORE_CONFIG_NAME);
  const char *ld = override ? override : st->locks_dir;
  if (ld) {
    /* One directory per store UUID: several stores may share a locks_dir,
     * and a store that is moved or copied keeps its identity. */
    st->locks_root = join(ld, st->cfg.uuid);
    const char *slash = strrchr(ld, '/');
    st->locks_base_len = (size_t)(slash - ld);
  } else {
    st->locks_root = join(st->path, ".locks");
    st->locks_base_len = strlen(st->path);
  }
  if (!st->chunks_path || !st->lock_path || !st->state_path || !st->trash_path ||
      !st->gc_status_path || !st->config_path || !st->locks_root)
    return -ENOMEM;
  if (strlen(st->locks_root) > PATH_MAX / 2) return -ENAMETOOLONG;
  return 0;
}

int ckl_store_open(const char *path, const ckl_store_open_opts *opts, ckl_store **out) {
  if (!path || !*path || !out) return -EINVAL;
  *out = NULL;
  static const ckl_store_open_opts defaults = {0};
  if (!opts) opts = &defaults;
  if (opts->locks_dir && !locks_dir_ok(opts->locks_dir)) {
    ckl__log_error("store open: locks_dir \"%s\" is not an absolute path", opts->locks_dir);
    return -EINVAL;
  }
  if (opts->manifest_lock_timeout_ms < 0 && opts->manifest_lock_timeout_ms != CKL_FOREVER)
    return -EINVAL;
  ckl_store *st = calloc(1, sizeof *st);
  if (!st) return -ENOMEM;
  st->dirfd = -1;
  int rc;
  char *raw = NULL;
  size_t len;
  st->path = realpath(path, NULL);
  if (!st->path) {
    rc = -errno;
    if (rc == -ENOTDIR) rc = CKL_ENOTSTORE;
    ckl__log_error("%s: %s", path, ckl_strerror(rc));
    goto fail;
  }
  st->dirfd = open(st->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (st->dirfd < 0) {
    rc = errno == ENOTDIR ? CKL_ENOTSTORE : -errno;
    ckl__log_error("%s: %s", st->path,
                   rc == CKL_ENOTSTORE ? "not a directory, so not a store" : ckl_strerror(rc));
    goto fail;
  }
  struct stat sb;
  if (fstatat(st->dirfd, CKL_STORE_CREATING_NAME, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    ckl__log_error("%s/" CKL_STORE_CREATING_NAME
                   ": the store's creation was interrupted or is "
                   "running; create it again to finish it",
                   st->path);
    rc = CKL_EHALFCREATED;
    goto fail;
  }
  char display[PATH_MAX];
  if ((rc = ckl__pathf(display, sizeof display, "%s/" CKL_STORE_CONFIG_NAME, st->path)) < 0)
    goto fail;
  rc = ckl__read_file_at(st->dirfd, CKL_STORE_CONFIG_NAME, display, CONFIG_MAX_BYTES, &raw, &len);
  if (rc == -ENOENT) {
    ckl__log_error("%s: no " CKL_STORE_CONFIG_NAME ", not a store", st->path);
    rc = CKL_ENOTSTORE;
  }
  if (rc < 0) goto fail;
  if ((rc = ckl__store_config_parse(display, raw, len, &st->cfg, &st->locks_dir)) < 0) goto fail;
  st->cfg.locks_dir = st->locks_dir;
  st->manifest_lock_timeout_ms = opts->manifest_lock_timeout_ms ? opts->manifest_lock_timeout_ms
                                                                : CKL_MANIFEST_LOCK_TIMEOUT_MS;
  st->atomic_flags = st->cfg.sync == CKL_SYNC_NONE ? CKL_ATOMIC_NOSYNC : 0;
  if ((rc = open_paths(st, opts->locks_dir)) < 0) goto fail;
  if ((rc = ckl_proclock_open(st->lock_path, &st->proclock)) < 0) {
    ckl__log_error("%s: cannot open the process locker: %s", st->lock_path, ckl_strerror(rc));
    goto fail;
  }
  ckl_chunkstore_opts co = {.sync = st->cfg.sync, .compress_level = st->cfg.compress_level};
  if ((rc = ckl_chunkstore_open(st->chunks_path, &co, &st->chunks)) < 0) {
    ckl__log_error("%s: cannot open the chunk store: %s", st->chunks_path, ckl_strerror(rc));
    goto fail;
  }
  free(raw);
  *out = st;
  return 0;
fail:
  free(raw);
  ckl_store_close(st);
  return rc;
}

const char *ckl_store_path(const ckl_store *st) { return st->path; }
const char *ckl_store_locks_root(const ckl_store *st) { return st->locks_root; }
const ckl_store_config *ckl_store_get_config(const ckl_store *st) { return &st->cfg; }

/* ---- lock namespace ------------------------------------------------------ */

int ckl__store_group_lock_path(const ckl_store *st, const ckl_group_name *g, char *buf,
                               size_t len) {
  if (!ckl__group_name_ok(g)) return -EINVAL;
  return ckl__pathf(buf, len, "%s/%s/%s.lck", st->locks_root, g->type, g->id);
}

int ckl__store_snapshot_lock_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf,
                                  size_t len) {
  if (!ckl__snapshot_name_ok(n)) return -EINVAL;
  return ckl__pathf(buf, len, "%s/%s/%s/%s.lck", st->locks_root, n->type, n->id, n->time);
}

int ckl__store_manifest_lock_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf,
                                  size_t len) {
  if (!ckl__snapshot_name_ok(n)) return -EINVAL;
  return ckl__pathf(buf, len, "%s/%s/%s/%s.manifest.lck", st->locks_root, n->type, n->id, n->time);
}

int ckl__store_make_lock_parents(const ckl_store *st, const char *lock_path) {
  char buf[PATH_MAX];
  int rc = ckl__pathf(buf, sizeof buf, "%s", lock_path);
  if (rc < 0) return rc;
  size_t root_len = strlen(st->locks_root);
  if (strncmp(buf, st->locks_root, root_len) != 0 || buf[root_len] != '/') return -EINVAL;
  char *last = strrchr(buf, '/');
  /* Every component after the base (which must exist) up to the lock
   * file's directory. mkdir never follows a symlink in its last
   * component, and lock files themselves are opened O_NOFOLLOW. */
  for (char *p = buf + st->locks_base_len + 1; p <= last; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
      rc = -errno;
      ckl__log_error("%s: cannot create lock directory: %s", buf, ckl_strerror(rc));
      return rc;
    }
    *p = '/';
  }
  return 0;
}

/*
 * datastore/fsck.c - a store-wide consistency check (chunklock/maintenance.h).
 *
 * fsck takes no exclusive lock and no snapshot lock: it runs beside
 * backups, forgets and a GC, so it must tell what they have in flight from
 * what is broken.
 *   - A snapshot without manifest is a problem only if nobody holds its
 *     lock (a backup holds it exclusively from before mkdir until after
 *     the manifest); the manifest is looked for again after the probe, as
 *     the backup may have finished in between.
 *   - A snapshot may be forgotten while we read it. Everything is read
 *     through the snapshot directory's fd, which follows the directory into
 *     .trash; only when something is missing do we ask whether the
 *     snapshot is still at its name, and if not the miss is not reported.
 *   - A chunk insert's temp file has no lock. Writers register in the
 *     roster before they write, so a temp file older than the oldest live
 *     writer (and than this fsck) belongs to nobody: only those are
 *     reported (minus a margin for coarse file timestamps).
 *   - Atomic-replace temp files (".<name>.tmp-<hex>": index and manifest
 *     writers) carry their writer's OFD lock: only unlocked ones are
 *     reported.
 *   - ".gc-*" names in .chunks are a sweep in flight while the GC lock is
 *     held (probed without taking it: taking it would make a GC that starts
 *     now fail with CKL_EBUSY), leftovers otherwise.
 *   - .trash entries are the marking GC's while gc_active is set.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/atomic_file.h"
#include "chunklock/index.h"
#include "chunklock/maintenance.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/chunk_internal.h"
#include "datastore/ops_internal.h"
#include "locks/atomic_file.h"

static const char *const kind_names[] = {
    [CKL_FSCK_INDEX_CORRUPT] = "index-corrupt",
    [CKL_FSCK_CHUNK_MISSING] = "chunk-missing",
    [CKL_FSCK_CHUNK_CORRUPT] = "chunk-corrupt",
    [CKL_FSCK_MANIFEST_CORRUPT] = "manifest-corrupt",
    [CKL_FSCK_MANIFEST_MISMATCH] = "manifest-mismatch",
    [CKL_FSCK_TEMP_FILE] = "temp-file",
    [CKL_FSCK_GC_LEFTOVER] = "gc-leftover",
    [CKL_FSCK_BAD_CHUNK] = "bad-chunk",
    [CKL_FSCK_TRASH_ENTRY] = "trash-entry",
    [CKL_FSCK_HALF_WRITTEN] = "half-written",
};

const char *ckl_fsck_kind_name(ckl_fsck_kind k) {
  if ((unsigned)k >= CKL__ARRAY_SIZE(kind_names) || !kind_names[k]) return "unknown";
  return kind_names[k];
}

typedef struct frun {
  ckl_store *st;
  ckl__state *state;
  unsigned flags;
  ckl_fsck_cb cb;
  void *arg;
  ckl_fsck_summary sum;
  ckl__digest_set checked; /* chunks read (or found bad) once */
  int64_t temp_cutoff_ns;
  bool gc_running, gc_active;
} frun;

static void report(frun *f, ckl_fsck_kind kind, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(frun *f, ckl_fsck_kind kind, const char *path, const char *fmt, ...) {
  char detail[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  f->sum.problems++;
  f->sum.by_kind[kind]++;
  ckl__log_warn("fsck: %s: %s: %s", ckl_fsck_kind_name(kind), path, detail);
  if (f->cb) {
    ckl_fsck_problem p = {.kind = kind, .path = path, .detail = detail};
    f->cb(&p, f->arg);
  }
}

/* Is the snapshot still at its name, and is it the directory dfd? */
static bool still_there(frun *f, const char *rel, int dfd) {
  struct stat a, b;
  return fstatat(f->st->dirfd, rel, &a, AT_SYMLINK_NOFOLLOW) == 0 && fstat(dfd, &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static bool exists_at(int dfd, const char *name) {
  struct stat sb;
  return fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

/* ---- chunks and indexes --------------------------------------------------------- */

static int check_chunk(frun *f, const ckl_digest *d, const char *rel, int dfd, const char *index) {
  int rc = ckl__digest_set_insert(&f->checked, d);
  if (rc <= 0) return rc;
  void *data = NULL;
  size_t len = 0;
  rc = ckl_chunk_read(f->st->chunks, d, &data, &len);
  free(data);
  f->sum.chunks++;
  if (rc == 0) return 0;
  if (rc != -ENOENT && rc != CKL_ECORRUPT && rc != CKL_EVERSION) return rc;
  if (rc == -ENOENT && !still_there(f, rel, dfd)) return 0; /* forgotten, then swept */
  char hex[CKL_DIGEST_HEX_LEN + 1], cpath[PATH_MAX + 80];
  ckl_digest_to_hex(d, hex);
  snprintf(cpath, sizeof cpath, "%s/.chunks/%.4s/%s", f->st->path, hex, hex);
  if (rc == -ENOENT)
    report(f, CKL_FSCK_CHUNK_MISSING, cpath, "referenced by %s/%s", rel, index);
  else
    report(f, CKL_FSCK_CHUNK_CORRUPT, cpath, "%s (referenced by %s/%s)", ckl_strerror(rc), rel,
           index);
  return 0;
}

static int check_index(frun *f, const char *rel, int dfd, const char *name) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s/%s", f->st->path, rel, name);
  ckl_index *ix = NULL;
  int rc = ckl_index_openat(dfd, name, &ix);
  if (rc == -ENOENT) return 0; /* the snapshot's directory is being deleted */
  if (rc == CKL_ECORRUPT || rc == CKL_EVERSION) {
    report(f, CKL_FSCK_INDEX_CORRUPT, path, "%s", ckl_strerror(rc));
    return 0;
  }
  if (rc < 0) return rc;
  f->sum.indexes++;
  size_t n = ckl_index_count(ix);
  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = check_chunk(f, ckl_index_digest(ix, i), rel, dfd, name);
  ckl_index_close(ix);
  return rc;
}

/* ---- temp files ------------------------------------------------------------------ */

/* An atomic-replace temp file is its writer's while the writer holds an
 * OFD write lock on it; F_OFD_GETLK asks without taking anything. */
static bool temp_locked(int dfd, const char *name) {
  int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT; /* unreadable: say "owned", never guess */
  struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
  bool locked = fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
  ckl__close(fd);
  return locked;
}

static bool stray_temp(int dfd, const char *name) {
  return name[0] == '.' && strstr(name, CKL__TMP_FILE_TAG) && !temp_locked(dfd, name);
}

static bool any_entry(int dfd, const char *name) {
  (void)dfd;
  (void)name;
  return true;
}

static int check_snapshot_temps(frun *f, const char *rel, int dfd) {
  char **names;
  size_t n;
  int rc = ckl__dir_names(dfd, stray_temp, &names, &n);
  if (rc < 0) return rc == -ENOENT ? 0 : rc;
  char path[PATH_MAX];
  if (n && (f->flags & CKL_FSCK_CLEAN)) {
    snprintf(path, sizeof path, "%s/%s", f->st->path, rel);
    (void)ckl_atomic_cleanup(path); /* removes only temps whose lock is free */
  }
  for (size_t i = 0; i < n; i++) {
    bool removed = (f->flags & CKL_FSCK_CLEAN) && !exists_at(dfd, names[i]);
    if (removed) f->sum.cleaned++;
    snprintf(path, sizeof path, "%s/%s/%s", f->st->path, rel, names[i]);
    report(f, CKL_FSCK_TEMP_FILE, path, "temp file of a writer that is gone%s",
           removed ? "; removed" : "");
  }
  ckl__dir_names_free(names, n);
  return 0;
}

/* ---- snapshots -------------------------------------------------------------------- */

static bool lock_held(frun *f, const ckl_snapshot_name *n) {
  char path[PATH_MAX];
  if (ckl__store_snapshot_lock_path(f->st, n, path, sizeof path) < 0) return false;
  return ckl_path_lock_probe(path, CKL_LOCK_EXCLUSIVE, NULL) == CKL_EBUSY;
}

static int check_manifest(frun *f, const ckl_snapshot_info *si, const char *rel, int dfd) {
  char mpath[PATH_MAX];
  snprintf(mpath, sizeof mpath, "%s/%s/" CKL_MANIFEST_NAME, f->st->path, rel);
  json_t *m = NULL;
  int rc = ckl_manifest_load(f->st, &si->name, &m);
  if (rc == -ENOENT) return 0; /* forgotten under us */
  if (rc == CKL_ECORRUPT || rc == CKL_EVERSION || rc == -ELOOP) {
    report(f, CKL_FSCK_MANIFEST_CORRUPT, mpath, "%s", ckl_strerror(rc));
    return 0;
  }
  if (rc < 0) return rc;
  json_t *files = json_object_get(m, "files"), *fe;
  size_t i;
  json_array_foreach(files, i, fe) {
    const char *name = json_string_value(json_object_get(fe, "name"));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/%s", f->st->path, rel, name);
    uint64_t size;
    ckl_digest got, want;
    int r = ckl__file_sha256_at(dfd, name, &size, &got);
    if (r == -ENOENT && !still_there(f, rel, dfd)) break;
    if (r < 0 && r != -ENOENT && r != -ELOOP && r != -EINVAL) {
      rc = r;
      break;
    }
    if (r < 0) {
      report(f, CKL_FSCK_MANIFEST_MISMATCH, path, "listed in the manifest, but %s",
             r == -ENOENT ? "missing" : "not a regular file");
    } else if ((json_int_t)size != json_integer_value(json_object_get(fe, "size"))) {
      report(f, CKL_FSCK_MANIFEST_MISMATCH, path, "size %llu, the manifest says %lld",
             (unsigned long long)size, (long long)json_integer_value(json_object_get(fe, "size")));
    } else if (ckl_digest_from_hex(json_string_value(json_object_get(fe, "csum")), &want) < 0 ||
               memcmp(&want, &got, sizeof want) != 0) {
      report(f, CKL_FSCK_MANIFEST_MISMATCH, path, "checksum differs from the manifest's");
    }
  }
  for (size_t k = 0; rc == 0 && k < si->nfiles; k++) {
    bool listed = false;
    json_array_foreach(files, i, fe) {
      listed |= strcmp(json_string_value(json_object_get(fe, "name")), si->files[k]) == 0;
    }
    if (!listed && exists_at(dfd, si->files[k])) {
      char path[PATH_MAX];
      snprintf(path, sizeof path, "%s/%s/%s", f->st->path, rel, si->files[k]);
      report(f, CKL_FSCK_MANIFEST_MISMATCH, path, "index file not listed in the manifest");
    }
  }
  json_decref(m);
  return rc;
}

static int check_snapshot(frun *f, const ckl_snapshot_info *si) {
  char rel[CKL_SNAP_NAME_MAX + 1];
  ckl__ops_snap_str(&si->name, rel);
  int dfd = ckl__snapshot_open_dir(f->st, &si->name);
  if (dfd == -ENOENT) return 0;
  if (dfd < 0) return dfd;
  f->sum.snapshots++;
  int rc = 0;
  bool complete = si->state == CKL_SNAP_COMPLETE;
  if (!complete && !lock_held(f, &si->name) && !exists_at(dfd, CKL_MANIFEST_NAME)) {
    if (still_there(f, rel, dfd)) {
      char path[PATH_MAX];
      snprintf(path, sizeof path, "%s/%s", f->st->path, rel);
      report(f, CKL_FSCK_HALF_WRITTEN, path,
             "no manifest and no backup writing it (removed by the next backup or prune of "
             "the group)");
    }
    goto out; /* garbage: its contents are not the store's */
  }
  if (complete && (rc = check_manifest(f, si, rel, dfd)) < 0) goto out;
  if ((rc = check_snapshot_temps(f, rel, dfd)) < 0) goto out;
  for (size_t i = 0; rc == 0 && i < si->nfiles; i++) rc = check_index(f, rel, dfd, si->files[i]);
out:
  ckl__close(dfd);
  return rc;
}

static int check_snapshots(frun *f) {
  ckl_group_name *groups = NULL;
  size_t ng = 0;
  int rc = ckl_group_list(f->st, &groups, &ng);
  if (rc < 0) return rc;
  for (size_t g = 0; rc == 0 && g < ng; g++) {
    ckl_snapshot_info *list = NULL;
    size_t n = 0;
    rc = ckl_snapshot_list(f->st, &groups[g], &list, &n);
    if (rc == -ENOENT) {
      rc = 0;
      continue;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) rc = check_snapshot(f, &list[i]);
    ckl_snapshot_list_free(list, n);
  }
  free(groups);
  return rc;
}

/* ---- the chunk directories ---------------------------------------------------------- */

static int scan_prefix(frun *f, int cdfd, const char *prefix) {
  int pfd = openat(cdfd, prefix, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) return errno == ENOENT ? 0 : -errno;
  DIR *d = fdopendir(pfd);
  if (!d) {
    int rc = -errno;
    ckl__close(pfd);
    return rc;
  }
  struct dirent *e;
  char path[PATH_MAX];
  while ((e = readdir(d))) {
    if (e->d_name[0] != '.' && strchr(e->d_name, '.') == NULL) continue; /* a chunk */
    ckl__chunk_name k = ckl__chunk_name_kind(e->d_name, NULL);
    snprintf(path, sizeof path, "%s/.chunks/%s/%s", f->st->path, prefix, e->d_name);
    if (k == CKL__CHUNK_NAME_BAD) {
      report(f, CKL_FSCK_BAD_CHUNK, path, "a chunk set aside as corrupt (verify)");
    } else if (k == CKL__CHUNK_NAME_TMP) {
      struct stat sb;
      if (fstatat(pfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue; /* renamed in */
      int64_t mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
      if (mtime >= f->temp_cutoff_ns) continue; /* may be a live writer's */
      bool removed = (f->flags & CKL_FSCK_CLEAN) && unlinkat(pfd, e->d_name, 0) == 0;
      if (removed) f->sum.cleaned++;
      report(f, CKL_FSCK_TEMP_FILE, path, "insert temp file older than every live writer%s",
             removed ? "; removed" : "");
    } else if (strncmp(e->d_name, ".gc-", 4) == 0 && !f->gc_running) {
      report(f, CKL_FSCK_GC_LEFTOVER, path, "sweep name left by a GC that is gone");
    }
  }
  closedir(d);
  return 0;
}

static int scan_chunks(frun *f) {
  int cdfd = ckl_chunkstore_dirfd(f->st->chunks);
  int rc = 0;
  for (unsigned p = 0; rc == 0 && p < 0x10000; p++) {
    char prefix[5];
    snprintf(prefix, sizeof prefix, "%04x", p);
    rc = scan_prefix(f, cdfd, prefix);
  }
  return rc;
}

/* ---- trash and GC ------------------------------------------------------------------- */

static int check_trash(frun *f) {
  if (f->gc_active) return 0; /* the marking GC's, purged when it ends */
  int tfd = openat(f->st->dirfd, ".trash", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (tfd < 0) return errno == ENOENT ? 0 : -errno;
  char **names;
  size_t n;
  int rc = ckl__dir_names(tfd, any_entry, &names, &n);
  if (rc == 0 && n && (f->flags & CKL_FSCK_CLEAN)) (void)ckl__trash_purge_stale(f->st, f->state);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    bool removed = (f->flags & CKL_FSCK_CLEAN) && !exists_at(tfd, names[i]);
    if (removed) f->sum.cleaned++;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.trash/%s", f->st->path, names[i]);
    report(f, CKL_FSCK_TRASH_ENTRY, path,
           "a forgotten snapshot left in the trash (purged by the next forget, prune or GC)%s",
           removed ? "; removed" : "");
  }
  ckl__dir_names_free(names, n);
  ckl__close(tfd);
  return rc;
}

static bool gc_lock_held(const ckl_store *st) {
  int fd = open(st->lock_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  /* Byte 1 of STORE/.lock is the GC lock (chunklock/proclock.h). */
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};
  bool held = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  ckl__close(fd);
  return held;
}

int ckl_fsck(ckl_store *st, const ckl_fsck_opts *opts, ckl_fsck_cb cb, void *arg,
             ckl_fsck_summary *summary) {
  static const ckl_fsck_opts no_opts = {0};
  if (!opts) opts = &no_opts;
  if (summary) memset(summary, 0, sizeof *summary);
  if (!st) return -EINVAL;
  frun f = {.st = st, .flags = opts->flags, .cb = cb, .arg = arg};
  int rc = ckl__ops_state_open(st, &f.state);
  if (rc < 0) return rc;
  ckl__gc_info gi;
  int64_t oldest = INT64_MAX, now = ckl__now_realtime_ns();
  if ((rc = ckl__state_gc_info(f.state, &gi)) < 0) goto out;
  if ((rc = ckl__state_oldest_writer(f.state, now, &oldest)) < 0) goto out;
  f.gc_active = gi.active;
  f.gc_running = gc_lock_held(st);
  /* Coarse file timestamps lag the wall clock by up to a tick: the
   * store's GC margin, at least one second. */
  int64_t margin_s = st->cfg.gc_margin_s > 1 ? st->cfg.gc_margin_s : 1;
  f.temp_cutoff_ns = (oldest < now ? oldest : now) - margin_s * 1000000000;

  if ((rc = check_snapshots(&f)) < 0) goto out;
  if ((rc = CKL_FAILPOINT("fsck.before_chunk_scan")) < 0) goto out;
  if (!(f.flags & CKL_FSCK_SNAPSHOTS_ONLY) && (rc = scan_chunks(&f)) < 0) goto out;
  if ((rc = check_trash(&f)) < 0) goto out;
  ckl__log_info("fsck %s: %zu snapshots, %zu indexes, %zu chunks: %zu problems", st->path,
                f.sum.snapshots, f.sum.indexes, f.sum.chunks, f.sum.problems);
  rc = f.sum.problems > INT_MAX ? INT_MAX : (int)f.sum.problems;
out:
  if (summary) *summary = f.sum;
  ckl__digest_set_free(&f.checked);
  ckl__ops_state_close(st, f.state);
  return rc;
}

/*
 * gc/status.c - STORE/.gc-status: the last finished GC, as JSON, replaced
 * atomically; and the atime capability probe.
 *
 * One X-macro table lists the numeric fields, so the writer and the loader
 * cannot drift apart.
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/chunklock.h"
#include "common/internal.h"
#include "datastore/json_util.h"
#include "datastore/store_internal.h"
#include "gc/gc_internal.h"

#define CKL__GC_STATUS_FORMAT 1
#define CKL__GC_STATUS_MAX (64 * 1024)

#define GC_STATUS_FIELDS(X)                                                    \
  X(start_ns) X(end_ns) X(phase1_start_ns) X(oldest_writer_ns) X(cutoff_ns)    \
  X(mark_ns) X(sweep_ns) X(purge_ns) X(index_files) X(removed_set_snapshots)   \
  X(references) X(referenced_chunks) X(cache_hits) X(cache_misses)             \
  X(missing_chunks) X(logical_bytes) X(disk_chunks) X(disk_bytes)              \
  X(removed_chunks) X(removed_bytes) X(pending_chunks) X(pending_bytes)        \
  X(bad_chunks) X(trash_purged) X(touch_set_bytes) X(dry_run) X(exclusive)

int ckl__gc_status_write(ckl_store *st, const ckl_gc_result *r) {
  json_t *o = json_object();
  if (!o) return -ENOMEM;
  int bad = 0;
  bad |= json_object_set_new(o, "format", json_integer(CKL__GC_STATUS_FORMAT));
#define SET_FIELD(f) bad |= json_object_set_new(o, #f, json_integer((json_int_t)r->f));
  GC_STATUS_FIELDS(SET_FIELD)
#undef SET_FIELD
  char start[32], end[32];
  ckl__format_time(r->start_ns, start, sizeof start);
  ckl__format_time(r->end_ns, end, sizeof end);
  bad |= json_object_set_new(o, "start", json_string(start));
  bad |= json_object_set_new(o, "end", json_string(end));
  double dedup = r->disk_bytes - r->removed_bytes > 0
                     ? (double)r->logical_bytes / (double)(r->disk_bytes - r->removed_bytes)
                     : 0.0;
  bad |= json_object_set_new(o, "dedup_factor", json_real(dedup));
  char *text = bad ? NULL : json_dumps(o, JSON_SORT_KEYS | JSON_INDENT(2));
  json_decref(o);
  if (!text) return -ENOMEM;
  size_t len = strlen(text);
  text[len] = '\0';
  int rc = ckl_atomic_replace(st->gc_status_path, text, len, 0644, st->atomic_flags);
  if (rc < 0) ckl__log_error("gc: cannot write %s: %s", st->gc_status_path, ckl_strerror(rc));
  free(text);
  return rc;
}

int ckl_gc_status_load(ckl_store *st, ckl_gc_result *out) {
  if (!st || !out) return -EINVAL;
  memset(out, 0, sizeof *out);
  char *raw = NULL;
  size_t len = 0;
  int rc = ckl__read_file_at(st->dirfd, ".gc-status", st->gc_status_path, CKL__GC_STATUS_MAX,
                             &raw, &len);
  if (rc < 0) return rc;
  json_t *o = NULL;
  rc = ckl__json_parse(st->gc_status_path, raw, len, &o);
  if (rc == 0) {
    ckl__jctx c = {.file = st->gc_status_path, .raw = raw, .len = len};
    if (!json_is_object(o)) {
      rc = ckl__jfail(&c, "not an object");
    } else {
      long long v;
      rc = ckl__jint(&c, o, "format", 1, CKL__GC_STATUS_FORMAT, &v);
#define GET_FIELD(f)                                                  \
  if (rc == 0) {                                                      \
    rc = ckl__jint(&c, o, #f, INT64_MIN, INT64_MAX, &v);              \
    if (rc == 0) out->f = (__typeof__(out->f))v;                      \
  }
      GC_STATUS_FIELDS(GET_FIELD)
#undef GET_FIELD
    }
    json_decref(o);
  }
  free(raw);
  return rc;
}

/*
 * The sweep is only as safe as atime: if utimensat() did not move it (some
 * FUSE or network filesystems ignore it), every chunk would look unused.
 * So before marking, prove it on the very filesystem: set the probe's atime
 * far in the past, touch it as writers do, and check it moved forward.
 */
int ckl__gc_atime_check(int chunks_dirfd, const char *chunks_path) {
  int fd = openat(chunks_dirfd, ".atime-probe", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = -errno;
    ckl__log_error("gc: cannot create %s/.atime-probe: %s", chunks_path, strerror(errno));
    return err;
  }
  int rc = 0;
  int64_t before = ckl__now_realtime_ns();
  struct timespec past[2] = {{.tv_sec = 86400 * 2, .tv_nsec = 0}, {.tv_nsec = UTIME_OMIT}};
  struct timespec now[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
  struct stat sb;
  if (futimens(fd, past) != 0 || futimens(fd, now) != 0 || fstat(fd, &sb) != 0) {
    rc = -errno;
    ckl__log_error("gc: atime probe %s/.atime-probe failed: %s", chunks_path, strerror(errno));
  } else {
    int64_t at = (int64_t)sb.st_atim.tv_sec * 1000000000LL + sb.st_atim.tv_nsec;
    rc = CKL_FAILPOINT("gc.atime.after_check");
    /* Coarse timestamps may lag the clock by a tick: allow 2 s. */
    if (rc == 0 && at < before - 2000000000LL) {
      ckl__log_error("gc: the filesystem of %s does not update atime on utimensat "
                     "(probe atime %lld s, expected >= %lld s): refusing to collect",
                     chunks_path, (long long)(at / 1000000000LL),
                     (long long)(before / 1000000000LL));
      rc = CKL_EATIME;
    }
  }
  ckl__close(fd);
  return rc;
}

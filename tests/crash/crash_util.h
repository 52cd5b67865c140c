/*
 * tests/crash/crash_util.h - what the crash, full-disk and I/O-error tests
 * share: snapshots described by the seeds of their chunks (so any test can
 * say which bytes a snapshot must read back), a backup that writes such a
 * description without asserting (it also runs in forked children), and the
 * read-back and "nothing left over" checks. Header-only; include it after
 * testutil.h and ops_util.h.
 */
#ifndef CKL_CRASH_UTIL_H
#define CKL_CRASH_UTIL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>

/* Chunk k is ops_fill(CU_CHUNK bytes, seed k): distinct seeds, distinct
 * digests. */
#define CU_CHUNK 1000u
#define CU_MAX_CHUNKS 8
/* A seed with this bit is reused (touch + append), not written. */
#define CU_REUSE 0x80000000u

typedef struct cu_archive {
  const char *name; /* "*.didx" or "*.fidx" (fixed: chunk size CU_CHUNK) */
  uint32_t seeds[CU_MAX_CHUNKS];
  size_t n;
} cu_archive;

typedef struct cu_snap {
  const char *type, *id;
  int64_t dt; /* time OPS_T0 + dt */
  cu_archive a[2];
  size_t na;
} cu_snap;

static inline ckl_snapshot_name cu_name(const cu_snap *s) {
  ckl_snapshot_name n;
  if (ckl_snapshot_name_make(s->type, s->id, OPS_T0 + s->dt, &n) != 0) abort();
  return n;
}

static inline void cu_chunk(uint32_t seed, unsigned char buf[CU_CHUNK], ckl_digest *d) {
  ops_fill(buf, CU_CHUNK, seed & ~CU_REUSE);
  if (d) ckl_digest_compute(buf, CU_CHUNK, d);
}

/* Write the archives of s into an open backup. 0 or the first error. */
static inline int cu_write_archives(ckl_backup *b, const cu_snap *s) {
  for (size_t i = 0; i < s->na; i++) {
    const cu_archive *ar = &s->a[i];
    bool fixed = ckl_archive_name_kind(ar->name, strlen(ar->name)) == CKL_ARCHIVE_FIDX;
    ckl_backup_archive *a;
    int rc = ckl_backup_archive_open(b, ar->name, fixed ? CU_CHUNK : 0, &a);
    if (rc < 0) return rc;
    for (size_t k = 0; k < ar->n; k++) {
      unsigned char buf[CU_CHUNK];
      ckl_digest d;
      cu_chunk(ar->seeds[k], buf, &d);
      if (ar->seeds[k] & CU_REUSE) {
        rc = ckl_backup_reuse_chunk(b, &d);
        if (rc == 0) rc = ckl_backup_archive_append(a, &d, CU_CHUNK);
      } else {
        rc = ckl_backup_archive_write_chunk(a, buf, CU_CHUNK, NULL);
      }
      if (rc < 0) {
        ckl_backup_archive_abort(a);
        return rc;
      }
    }
    if ((rc = ckl_backup_archive_close(a)) < 0) return rc;
  }
  return 0;
}

/* One whole backup of s (base: the group's latest, if any). With abort,
 * the session is aborted after the archives (returns 1). 0 or an error;
 * never asserts (children run it). */
static inline int cu_backup(ckl_store *st, const cu_snap *s, bool abort_it) {
  ckl_group_name g;
  ckl_snapshot_name n = cu_name(s);
  ckl_snapshot_group(&n, &g);
  ckl_backup_opts o = {.time_s = OPS_T0 + s->dt, .flags = CKL_BACKUP_BASE_LATEST};
  ckl_backup *b;
  int rc = ckl_backup_begin(st, &g, &o, &b);
  if (rc < 0) return rc;
  rc = cu_write_archives(b, s);
  if (rc < 0 || abort_it) {
    ckl_backup_abort(b);
    return rc < 0 ? rc : 1;
  }
  return ckl_backup_finish(b);
}

/* Read every archive of s through a reader and compare with the bytes it
 * was made of. 0 when exact; otherwise the error, or CKL_ECORRUPT for a
 * mismatch (with a message on stderr). */
static inline int cu_read_back(ckl_store *st, const cu_snap *s) {
  ckl_snapshot_name n = cu_name(s);
  ckl_reader *r;
  int rc = ckl_reader_open(st, &n, NULL, &r);
  if (rc < 0) {
    fprintf(stderr, "read back %s/%s/%s: open: %s\n", n.type, n.id, n.time, ckl_err_name(rc));
    return rc;
  }
  if (ckl_reader_archive_count(r) != s->na) rc = CKL_ECORRUPT;
  for (size_t i = 0; rc == 0 && i < s->na; i++) {
    const cu_archive *ar = &s->a[i];
    ckl_reader_archive *a;
    if ((rc = ckl_reader_archive_open(r, ar->name, &a)) < 0) break;
    if (ckl_reader_archive_size(a) != ar->n * CU_CHUNK) rc = CKL_ECORRUPT;
    for (size_t k = 0; rc == 0 && k < ar->n; k++) {
      unsigned char want[CU_CHUNK], got[CU_CHUNK];
      cu_chunk(ar->seeds[k], want, NULL);
      ssize_t m = ckl_reader_archive_read(a, (uint64_t)k * CU_CHUNK, got, CU_CHUNK);
      if (m < 0) rc = (int)m;
      else if (m != (ssize_t)CU_CHUNK || memcmp(want, got, CU_CHUNK) != 0) rc = CKL_ECORRUPT;
    }
    ckl_reader_archive_close(a);
    if (rc < 0)
      fprintf(stderr, "read back %s/%s/%s: archive %s: %s\n", n.type, n.id, n.time, ar->name,
              ckl_err_name(rc));
  }
  int crc = ckl_reader_close(r);
  return rc < 0 ? rc : crc;
}

/* Does s have a manifest (is it a complete snapshot)? */
static inline bool cu_complete(const ops_store *o, const cu_snap *s) {
  ckl_snapshot_name n = cu_name(s);
  char *d = ops_snap_dir(o, &n);
  char *m = ckl_test_path(d, "index.json");
  bool e = ops_exists(m);
  free(m);
  free(d);
  return e;
}

static inline bool cu_present(const ops_store *o, const cu_snap *s) {
  ckl_snapshot_name n = cu_name(s);
  return ops_snap_exists(o, &n);
}

/* Entries of the prefix directory of chunk `seed` whose names start with
 * prefix (".tmp-", ".gc-"); with age_s > 0 their times are set age_s
 * into the past first ("time passes" for a dead writer's temp file). */
static inline int cu_prefix_entries(const ops_store *o, uint32_t seed, const char *prefix,
                                    int64_t age_s) {
  unsigned char buf[CU_CHUNK];
  ckl_digest d;
  cu_chunk(seed, buf, &d);
  char hex[CKL_DIGEST_HEX_LEN + 1], dir[PATH_MAX];
  ckl_digest_to_hex(&d, hex);
  snprintf(dir, sizeof dir, "%s/.chunks/%.4s", o->path, hex);
  DIR *dp = opendir(dir);
  if (!dp) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
    n++;
    if (age_s <= 0) continue;
    char f[PATH_MAX + 256];
    snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
    struct timeval tv[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
    if (utimes(f, tv) != 0) abort();
  }
  closedir(dp);
  return n;
}

/* Does chunk `seed` exist at its final name? */
static inline bool cu_has_chunk(const ops_store *o, uint32_t seed) {
  unsigned char buf[CU_CHUNK];
  ckl_digest d;
  cu_chunk(seed, buf, &d);
  struct stat sb;
  return ckl_chunk_stat(o->st->chunks, &d, &sb) == 0;
}

/* Set chunk `seed`'s atime and mtime age_s into the past. */
static inline void cu_age_chunk(const ops_store *o, uint32_t seed, int64_t age_s) {
  unsigned char buf[CU_CHUNK];
  ckl_digest d;
  cu_chunk(seed, buf, &d);
  char *p = ops_chunk_path(o, &d);
  struct timeval tv[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
  assert_int_equal(utimes(p, tv), 0);
  free(p);
}

/* A store in a fresh temp dir: sync policy as given, GC safety 0 and a
 * margin of 1 s (what a crashed writer leaves is judged by explicit
 * ageing, never by waiting). */
static inline void cu_store_new(ops_store *o, const char *tag, ckl_sync_policy sync) {
  o->dir = ckl_test_mkdtemp(tag);
  o->path = ckl_test_path(o->dir, "store");
  ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                              .sync = sync,
                              .gc_atime_safety_s = 0,
                              .gc_margin_s = 1};
  assert_int_equal(ckl_store_create(o->path, &co), 0);
  assert_int_equal(ckl_store_open(o->path, NULL, &o->st), 0);
}

static inline void cu_fsck_print(const ckl_fsck_problem *p, void *arg) {
  (void)arg;
  fprintf(stderr, "fsck: %s %s: %s\n", ckl_fsck_kind_name(p->kind), p->path, p->detail);
}

/* fsck problem count, printing each problem. */
static inline int cu_fsck(const ops_store *o, unsigned flags) {
  ckl_fsck_opts fo = {.flags = flags};
  return ckl_fsck(o->st, &fo, cu_fsck_print, NULL, NULL);
}

static inline int cu_roster_count_cb(const ckl_roster_entry *e, void *arg) {
  (void)e;
  (*(int *)arg)++;
  return 0;
}

/* Records in the roster (ckl_roster_list reaps dead holders first). */
static inline int cu_roster_count(const ops_store *o) {
  int n = 0;
  assert_true(ckl_roster_list(o->path, cu_roster_count_cb, &n) >= 0);
  return n;
}

#endif

/*
 * tests/support/ops_util.h - helpers for the tests of the operations
 * (backup, restore, forget, prune, verify, fsck). Header-only: include it
 * after testutil.h.
 */
#ifndef CKL_OPS_UTIL_H
#define CKL_OPS_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"

/* 2023-11-14T22:13:20Z: snapshot times are T0 + k. */
#define OPS_T0 INT64_C(1700000000)

typedef struct ops_store {
  char *dir, *path;
  ckl_store *st;
  int64_t reset_s; /* wall clock of the last reset (seconds) */
} ops_store;

/* A fresh store (sync "none": tmpfs, speed). */
static inline void ops_store_new(ops_store *s, const char *tag) {
  s->dir = ckl_test_mkdtemp(tag);
  s->path = ckl_test_path(s->dir, "store");
  ckl_store_create_opts o = {.sync = CKL_SYNC_NONE};
  assert_int_equal(ckl_store_create(s->path, &o), 0);
  assert_int_equal(ckl_store_open(s->path, NULL, &s->st), 0);
}

static inline int ops_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  if (flag == FTW_DP) return rmdir(path) == 0 || errno == ENOENT ? 0 : -1;
  return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* rm -rf of a tree this test made (writable directories only). */
static inline void ops_rmtree(const char *path) {
  assert_int_equal(nftw(path, ops_rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Remove every entry of dir (not dir itself), except those in keep. */
static inline void ops_empty_dir(const char *dir, const char *const *keep) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    bool kept = false;
    for (size_t i = 0; keep && keep[i]; i++) kept |= strcmp(keep[i], e->d_name) == 0;
    if (kept) continue;
    char p[PATH_MAX + 256];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    ops_rmtree(p);
  }
  closedir(d);
}

/* Make the store as new without recreating it (65,536 directories cost
 * more to make and remove than a test): no snapshots, no chunks, empty
 * .trash and .locks, no failpoints. The coordination state stays; each
 * test leaves its roster empty and any GC it simulated ended. */
static inline void ops_store_reset(ops_store *s) {
  ckl_failpoint_set_trace(NULL, NULL); /* a failed test's hook (gcfx_close) */
  ckl_failpoint_disarm_all();
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  static const char *const keep[] = {".chunks", ".lock",          ".locks", ".state",
                                     ".trash",  "chunklock.json", NULL};
  ops_empty_dir(s->path, keep);
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/.trash", s->path);
  ops_empty_dir(p, NULL);
  snprintf(p, sizeof p, "%s/.locks", s->path);
  ops_empty_dir(p, NULL);
  /* Only the prefix directories changed since the last reset can hold
   * anything: a create, rename or unlink in a directory moves its mtime.
   * One second of slack covers coarse file timestamps. */
  snprintf(p, sizeof p, "%s/.chunks", s->path);
  int cfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(cfd >= 0);
  for (unsigned i = 0; i < 0x10000; i++) {
    char name[8];
    snprintf(name, sizeof name, "%04x", i);
    struct stat sb;
    if (fstatat(cfd, name, &sb, 0) != 0 || sb.st_mtim.tv_sec < s->reset_s - 1) continue;
    int fd = openat(cfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlinkat(fd, e->d_name, 0);
    closedir(d);
  }
  close(cfd);
  s->reset_s = (int64_t)time(NULL);
}

/* A thread that takes a snapshot lock (mode) or the manifest lock of sn
 * and keeps it in lk; rc is the answer. */
typedef struct ops_locker {
  ops_store *s;
  ckl_snapshot_name sn;
  ckl_lock_mode mode;
  int manifest;
  int rc;
  ckl_path_lock lk;
} ops_locker;

static inline void *ops_locker_main(void *p) {
  ops_locker *a = p;
  if (a->manifest) a->rc = ckl_manifest_lock(a->s->st, &a->sn, &a->lk, NULL);
  else a->rc = ckl_snapshot_lock(a->s->st, &a->sn, a->mode, &a->lk, NULL);
  return NULL;
}

/* cmocka group and per-test hooks: one store per file, reset per test. */

/* Per-test teardown of a file that shares one store among its tests: a
 * test that fails with a failpoint armed (or a thread paused at one) must
 * not make the next test pause for ever at it, hiding the first failure
 * behind a ctest timeout. */
static inline int ops_disarm(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  return 0;
}
static inline int ops_group_setup(void **state, const char *tag) {
  ops_store *s = calloc(1, sizeof *s);
  ops_store_new(s, tag);
  *state = s;
  return 0;
}

static inline void ops_store_free(ops_store *s) {
  ckl_store_close(s->st);
  ckl_test_rmtree(s->dir);
  free(s->path);
  free(s->dir);
  memset(s, 0, sizeof *s);
}

static inline int ops_group_teardown(void **state) {
  ops_store_free(*state);
  free(*state);
  return 0;
}

static inline int ops_reset(void **state) {
  ops_store_reset(*state);
  return 0;
}

static inline ckl_group_name ops_group(const char *type, const char *id) {
  ckl_group_name g;
  char buf[CKL_SNAP_NAME_MAX + 1];
  snprintf(buf, sizeof buf, "%s/%s", type, id);
  assert_int_equal(ckl_group_name_parse(buf, &g), 0);
  return g;
}

static inline ckl_snapshot_name ops_snap(const char *type, const char *id, int64_t t) {
  ckl_snapshot_name n;
  assert_int_equal(ckl_snapshot_name_make(type, id, t, &n), 0);
  return n;
}

/* Deterministic bytes: the same (seed, i) always gives the same byte. */
static inline void ops_fill(void *buf, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 12345u;
  unsigned char *p = buf;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (unsigned char)x;
  }
}

/* One archive "root.didx" of `nchunks` chunks of `csize` bytes each made
 * from seed + k; the whole archive bytes go to *data_out if non-NULL. */
static inline int ops_write_didx(ckl_backup *b, const char *name, size_t nchunks, size_t csize,
                                 uint32_t seed, unsigned char **data_out) {
  ckl_backup_archive *a;
  int rc = ckl_backup_archive_open(b, name, 0, &a);
  if (rc < 0) return rc;
  unsigned char *all = malloc(nchunks * csize + 1);
  for (size_t k = 0; k < nchunks; k++) {
    ops_fill(all + k * csize, csize, seed + (uint32_t)k);
    rc = ckl_backup_archive_write_chunk(a, all + k * csize, csize, NULL);
    if (rc < 0) {
      ckl_backup_archive_abort(a);
      free(all);
      return rc;
    }
  }
  rc = ckl_backup_archive_close(a);
  if (data_out)
    *data_out = all;
  else
    free(all);
  return rc;
}

/* A complete snapshot type/id/(OPS_T0 + dt) with one archive. */
static inline ckl_snapshot_name ops_make_snapshot(ckl_store *st, const char *type, const char *id,
                                                  int64_t dt, uint32_t seed) {
  ckl_group_name g = ops_group(type, id);
  ckl_backup_opts o = {.time_s = OPS_T0 + dt};
  ckl_backup *b;
  int rc = ckl_backup_begin(st, &g, &o, &b);
  if (rc != 0) fail_msg("backup_begin %s/%s: %s", type, id, ckl_err_name(rc));
  assert_int_equal(ops_write_didx(b, "root.didx", 3, 1000, seed, NULL), 0);
  assert_int_equal(ckl_backup_finish(b), 0);
  return ops_snap(type, id, OPS_T0 + dt);
}

static inline char *ops_snap_dir(const ops_store *s, const ckl_snapshot_name *n) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s/%s/%s", s->path, n->type, n->id, n->time) < 0) abort();
  return p;
}

static inline bool ops_exists(const char *path) {
  struct stat sb;
  return lstat(path, &sb) == 0;
}

static inline bool ops_snap_exists(const ops_store *s, const ckl_snapshot_name *n) {
  char *p = ops_snap_dir(s, n);
  bool e = ops_exists(p);
  free(p);
  return e;
}

static inline int ops_trash_count(const ops_store *s) {
  char *t = ckl_test_path(s->path, ".trash");
  int n = ckl_test_count_entries(t, NULL);
  free(t);
  return n;
}

/* Path of a chunk file. */
static inline char *ops_chunk_path(const ops_store *s, const ckl_digest *d) {
  char rel[80];
  assert_int_equal(ckl_chunk_relpath(d, rel, sizeof rel), 0);
  char *p = NULL;
  if (asprintf(&p, "%s/.chunks/%s", s->path, rel) < 0) abort();
  return p;
}

/* Number of roster records of `operation` whose target is `target`. */
typedef struct ops_roster_q {
  const char *op, *target;
  int n;
  int64_t pid;
  unsigned flags;
} ops_roster_q;

static inline int ops_roster_cb(const ckl_roster_entry *e, void *arg) {
  ops_roster_q *q = arg;
  if (strcmp(e->operation, q->op) == 0 && (!q->target || strcmp(e->target, q->target) == 0)) {
    q->n++;
    q->pid = e->pid;
    q->flags = e->flags;
  }
  return 0;
}

static inline int ops_roster_count(const ops_store *s, const char *op, const char *target) {
  ops_roster_q q = {.op = op, .target = target};
  assert_true(ckl_roster_list(s->path, ops_roster_cb, &q) >= 0);
  return q.n;
}

/* A pausefile child has reached `name` / may go on (testutil.h). */
static inline void ops_wait_pausefile(const char *dir, const char *name) {
  ckl_test_wait_pausefile(dir, name);
}

static inline void ops_release_pausefile(const char *dir, const char *name) {
  ckl_test_release_pausefile(dir, name);
}

#endif

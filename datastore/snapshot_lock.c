/*
 * datastore/snapshot_lock.c - the group, snapshot and manifest locks.
 *
 * Each helper builds the lock file's path in the store's lock namespace
 * (never inside a data directory), creates missing parent directories on
 * demand, and takes the lock through ckl_path_lock_acquire at its level in
 * the fixed order, so a caller that threads one ckl_lock_order through an
 * operation gets the order checked: group -> snapshot -> manifest.
 *
 * A snapshot may be forgotten at any moment we do not hold its lock. The
 * existence check that decides is made after the lock is granted (a forget
 * may have completed in between; it unlinks the lock files while holding
 * them, so lock-then-verify in ckl_path_lock_acquire hands us a fresh lock
 * file, on which the snapshot is simply gone).
 *
 * A check before locking only keeps a typo from leaving a lock file behind
 * for a snapshot that never existed (a shared holder may not unlink it
 * afterwards: see ckl_snapshot_lock), and a busy lock from making us wait
 * for (or answer CKL_EBUSY about) a snapshot that is gone. So it is made
 * only when one of those is about to happen: the lock file is opened
 * without O_CREAT, and the check runs at the first busy answer, before any
 * waiting. When the file is there and free (the common case) there is
 * nothing to pre-check; when it is missing we fall back to check-then-
 * create-and-lock exactly as before. So a missing snapshot is still
 * reported before any lock file is created and before any waiting, and any
 * other failure is answered as the pre-check would have answered it first:
 * -ENOENT if the snapshot is gone, else the error.
 *
 * Each existence check is one openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
 * of "type/id/time" (ckl__snapshot_dir_exists), not three openat + close.
 */
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "common/internal.h"
#include "datastore/store_internal.h"
#include "locks/locks_internal.h"

static const ckl_snap_lock_opts no_opts = {0};

/* ckl_path_lock_acquire, creating the lock file's parent directories when
 * they are missing. A concurrent prune may remove an empty lock directory
 * between our mkdir and our open, hence the few retries. */
static int acquire(const ckl_store *st, ckl_path_lock *lk, const char *path, ckl_lock_mode mode,
                   const ckl_lock_opts *lo) {
  for (int attempt = 0;; attempt++) {
    int rc = ckl_path_lock_acquire(lk, path, mode, lo);
    if (rc != -ENOENT || attempt == 3) return rc;
    rc = ckl__store_make_lock_parents(st, path);
    if (rc < 0) return rc;
  }
}

static int snapshot_exists(const ckl_store *st, const ckl_snapshot_name *n) {
  return ckl__snapshot_dir_exists(st, n);
}

/* Lock an existing snapshot's lock file: the fast first attempt described
 * at the top, then check-then-lock. *lo is the caller's request. */
typedef struct exists_arg {
  const ckl_store *st;
  const ckl_snapshot_name *n;
  bool checked; /* the snapshot was found to exist at the first busy answer */
} exists_arg;

static int exists_on_busy(void *v) {
  exists_arg *a = v;
  int rc = snapshot_exists(a->st, a->n);
  a->checked = rc == 0;
  return rc;
}

static int acquire_existing(ckl_store *st, const ckl_snapshot_name *n, ckl_path_lock *lk,
                            const char *path, ckl_lock_mode mode, const ckl_lock_opts *lo) {
  /* The check a busy answer needs is made when the first one comes, before
   * any waiting: a held lock file of a snapshot already gone answers
   * -ENOENT at once (its holder is a forget, which will unlink it), and
   * busy_holder is then left untouched, as the pre-check left it. */
  exists_arg ea = {.st = st, .n = n};
  int rc = ckl__path_lock_acquire_existing(lk, path, mode, lo, exists_on_busy, &ea);
  if (rc == 0) return 0;
  if (rc == -ENOENT) {
    /* No lock file (never locked, or unlinked by a forget or prune), or
     * the snapshot is gone: check, then create and lock as before. */
    if ((rc = snapshot_exists(st, n)) < 0) return rc;
    return acquire(st, lk, path, mode, lo);
  }
  if ((rc == CKL_EBUSY || rc == CKL_ETIMEDOUT) && ea.checked) return rc;
  /* Any other failure, as the pre-check would have answered it first. */
  int ex = snapshot_exists(st, n);
  return ex < 0 ? ex : rc;
}

int ckl_group_lock(ckl_store *st, const ckl_group_name *g, ckl_path_lock *lk,
                   const ckl_snap_lock_opts *opts) {
  if (!st || !lk || lk->held) return -EINVAL;
  if (!opts) opts = &no_opts;
  char path[PATH_MAX];
  int rc = ckl__store_group_lock_path(st, g, path, sizeof path);
  if (rc < 0) return rc;
  ckl_lock_opts lo = {.timeout_ms = CKL_TRY,
                      .level = CKL_LEVEL_GROUP,
                      .order = opts->order,
                      .operation = opts->operation,
                      .busy_holder = opts->busy_holder};
  return acquire(st, lk, path, CKL_LOCK_EXCLUSIVE, &lo);
}

int ckl_snapshot_lock(ckl_store *st, const ckl_snapshot_name *n, ckl_lock_mode mode,
                      ckl_path_lock *lk, const ckl_snap_lock_opts *opts) {
  if (!st || !lk || lk->held) return -EINVAL;
  if (mode != CKL_LOCK_SHARED && mode != CKL_LOCK_EXCLUSIVE) return -EINVAL;
  if (!opts) opts = &no_opts;
  char path[PATH_MAX];
  int rc = ckl__store_snapshot_lock_path(st, n, path, sizeof path);
  if (rc < 0) return rc;
  bool must_exist = !(opts->flags & CKL_SNAP_LOCK_CREATING);
  ckl_lock_opts lo = {.timeout_ms = CKL_TRY,
                      .level = CKL_LEVEL_SNAPSHOT,
                      .order = opts->order,
                      .operation = opts->operation,
                      .busy_holder = opts->busy_holder};
  rc = must_exist ? acquire_existing(st, n, lk, path, mode, &lo) : acquire(st, lk, path, mode, &lo);
  if (rc < 0) return rc;
  if (must_exist && (rc = snapshot_exists(st, n)) < 0) {
    /* Forgotten between the check and the lock. A lock file with no
     * snapshot is litter; only an exclusive holder may remove it (a shared
     * holder unlinking would split later holders across two inodes). */
    if (mode == CKL_LOCK_EXCLUSIVE) ckl_path_lock_unlink(lk);
    else ckl_path_lock_release(lk);
    return rc;
  }
  return 0;
}

int ckl_manifest_lock(ckl_store *st, const ckl_snapshot_name *n, ckl_path_lock *lk,
                      const ckl_snap_lock_opts *opts) {
  if (!st || !lk || lk->held) return -EINVAL;
  if (!opts) opts = &no_opts;
  if (opts->timeout_ms < 0 && opts->timeout_ms != CKL_FOREVER) return -EINVAL;
  char path[PATH_MAX];
  int rc = ckl__store_manifest_lock_path(st, n, path, sizeof path);
  if (rc < 0) return rc;
  bool must_exist = !(opts->flags & CKL_SNAP_LOCK_CREATING);
  ckl_holder who = {0};
  ckl_lock_opts lo = {.timeout_ms = opts->timeout_ms ? opts->timeout_ms
                                                     : st->manifest_lock_timeout_ms,
                      .level = CKL_LEVEL_MANIFEST,
                      .order = opts->order,
                      .operation = opts->operation ? opts->operation : "manifest",
                      .busy_holder = &who};
  rc = must_exist ? acquire_existing(st, n, lk, path, CKL_LOCK_EXCLUSIVE, &lo)
                 : acquire(st, lk, path, CKL_LOCK_EXCLUSIVE, &lo);
  if (rc == -ENOENT && must_exist) return rc; /* as the pre-check answered it */
  if (opts->busy_holder) *opts->busy_holder = who;
  if (rc == CKL_ETIMEDOUT || rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    ckl__log_error("%s: still held by %s after %lld ms", path, h, (long long)lo.timeout_ms);
    return rc;
  }
  if (rc < 0) return rc;
  if (must_exist && (rc = snapshot_exists(st, n)) < 0) {
    ckl_path_lock_unlink(lk); /* exclusive: see ckl_snapshot_lock */
    return rc;
  }
  return 0;
}

/*
 * datastore/forget.c - removing a snapshot: forget, and the one path that
 * every other removal (prune, a backup's abort, abandoned snapshots) goes
 * through.
 *
 * Why a move to .trash inside a state transaction (DESIGN.md section 5)
 * -------------------------------------------------------------------------
 * A GC lists every index file, then touches the chunks each references.
 * If a snapshot disappears between the listing and the touch, the GC must
 * know whether that was a forget (fine: but a backup that started during
 * the mark may have reused the snapshot's chunks, so they must still be
 * marked) or damage (abort, never sweep on a partial view). The forget
 * therefore renames the directory to .trash/<unique> while it holds the
 * state's write transaction, and in that same transaction records
 * (snapshot, trash name) in the removed-during-GC set if a GC is marking.
 * The GC's final check of the set clears gc_active in one write
 * transaction too, so each forget is entirely before that check (the GC
 * marks the trash copy) or entirely after it (gc_active was clear: the
 * forget deletes the copy at once). Deleting a copy the GC still needs is
 * impossible: only copies of forgets that saw gc_active == 0, of forgets
 * that saw a dry-run GC (below), or that are not in the set at all, are
 * ever deleted outside a GC purge.
 *
 * A dry-run GC sweeps nothing, so it needs no copy, and a forget must not
 * wait on it: a dry run holds no deleter guard (it may run while the store
 * is frozen), so a deletion left to it could be stuck behind a freeze. The
 * forget transaction still records the snapshot (settled), so the dry
 * run's mark knows a vanished index was forgotten, not damaged; then the
 * forget deletes the copy at once, as with no GC. The dry run counts the
 * snapshot's chunks as garbage: what a real GC starting now would free.
 * The verdict comes from the GC record in the forget's own transaction,
 * and only gc_begin (under the GC lock) sets the dry-run flag, so a GC
 * that will sweep always gets its copies.
 *
 * Lock order: snapshot lock (exclusive, never waits) -> manifest lock
 * (short deadline: an update_manifest may be finishing). Both lock files
 * are unlinked while held, manifest first: a waiter that then gets the
 * kernel lock on the old inode sees the path gone (lock-then-verify) and
 * finds the snapshot missing.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/atomic_file.h"
#include "chunklock/freeze.h"
#include "chunklock/maintenance.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"
#include "locks/atomic_file.h"

#define TRASH_DIR ".trash"

typedef struct move_ctx {
  int dirfd;
  const char *rel, *trash_rel;
  bool moved;
} move_ctx;

/* Runs inside the state's write transaction: quick, and no state calls. */
static int move_to_trash(void *arg, int verdict) {
  (void)verdict;
  move_ctx *c = arg;
  if (renameat(c->dirfd, c->rel, c->dirfd, c->trash_rel) != 0) return -errno;
  c->moved = true;
  return 0;
}

static void fsync_dir_at(ckl_store *st, const char *rel) {
  if (st->atomic_flags & CKL_ATOMIC_NOSYNC) return;
  int fd = openat(st->dirfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  int rc = ckl__atomic_fsync_dir(fd);
  if (rc < 0) ckl__log_warn("%s/%s: fsync: %s", st->path, rel, ckl_strerror(rc));
  ckl__close(fd);
}

int ckl__forget_held(ckl_store *st, ckl__state *state, const ckl_snapshot_name *n,
                     ckl_path_lock *snap_lock, ckl_lock_order *order, const char *why,
                     ckl_holder *busy) {
  char rel[CKL_SNAP_NAME_MAX + 1], trash_rel[CKL_SNAP_NAME_MAX + 64];
  ckl_path_lock ml = {0};
  int rc = ckl__snapshot_relpath(n, rel, sizeof rel);
  if (rc < 0) goto release;
  struct stat sb;
  if (fstatat(st->dirfd, rel, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode)) {
    rc = -ENOENT;
    goto release;
  }
  ckl_snap_lock_opts mo = {.order = order, .operation = "forget", .busy_holder = busy};
  if ((rc = ckl_manifest_lock(st, n, &ml, &mo)) < 0) goto release;
  /* Invariant from here: we hold the snapshot exclusively and its
   * manifest lock; nobody reads, writes, updates or forgets it. */
  if ((rc = CKL_FAILPOINT("forget.after_lock")) < 0) goto release;
  if (mkdirat(st->dirfd, TRASH_DIR, 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    ckl__log_error("%s/" TRASH_DIR ": cannot create: %s", st->path, ckl_strerror(rc));
    goto release;
  }
  char tok[CKL_TOKEN_HEX_LEN + 1];
  if ((rc = ckl__random_token(tok)) < 0) goto release;
  tok[16] = '\0'; /* 64 random bits: unique among trash entries */
  if ((rc = ckl__pathf(trash_rel, sizeof trash_rel, TRASH_DIR "/%s-%s-%s-%s", n->type, n->id,
                       n->time, tok)) < 0)
    goto release;

  move_ctx mc = {.dirfd = st->dirfd, .rel = rel, .trash_rel = trash_rel};
  int verdict = ckl__state_forget_txn(state, rel, trash_rel, move_to_trash, &mc);
  if (verdict < 0) {
    rc = verdict;
    if (!mc.moved) {
      ckl__log_error("%s/%s: %s: cannot move to %s: %s", st->path, rel, why, trash_rel,
                     ckl_strerror(rc));
      goto release;
    }
    /* The move happened but its record did not commit: the snapshot is
     * gone from its place either way. A GC that needed the record aborts
     * (an index vanished that is not in the set): never a wrong sweep. */
    ckl__log_error("%s/%s: %s: moved to %s, but the state transaction failed: %s", st->path, rel,
                   why, trash_rel, ckl_strerror(rc));
    goto unlink;
  }
  fsync_dir_at(st, TRASH_DIR);
  char group_rel[CKL_SNAP_NAME_MAX + 1];
  snprintf(group_rel, sizeof group_rel, "%s/%s", n->type, n->id);
  fsync_dir_at(st, group_rel);
  if ((rc = CKL_FAILPOINT("forget.after_move")) < 0) goto release;
  if (verdict == CKL__FORGET_KEEP) {
    ckl__log_info("%s/%s: %s: a GC is marking; left in %s for it", st->path, rel, why, trash_rel);
  } else {
    if (verdict == CKL__FORGET_DRY_GC)
      ckl__log_debug("%s/%s: %s: a dry-run GC is marking: recorded for it, deleted at once",
                     st->path, rel, why);
    int r = ckl__atomic_rmtree_at(st->dirfd, trash_rel);
    /* Not fatal: the snapshot is forgotten; the next purge removes it. */
    if (r < 0) ckl__log_warn("%s/%s: cannot delete: %s", st->path, trash_rel, ckl_strerror(r));
  }
  if ((rc = CKL_FAILPOINT("forget.before_unlink")) < 0) goto release;
  rc = verdict == CKL__FORGET_KEEP ? CKL_FORGET_TRASHED : CKL_FORGET_DELETED;
unlink:;
  int r = ckl_path_lock_unlink(&ml);
  if (r < 0)
    ckl__log_warn("%s: %s: cannot unlink the manifest lock: %s", rel, why, ckl_strerror(r));
  r = ckl_path_lock_unlink(snap_lock);
  if (r < 0)
    ckl__log_warn("%s: %s: cannot unlink the snapshot lock: %s", rel, why, ckl_strerror(r));
  return rc;
release:
  ckl_path_lock_release(&ml);
  ckl_path_lock_release(snap_lock);
  return rc;
}

int ckl_forget(ckl_store *st, const ckl_snapshot_name *n, const ckl_forget_opts *opts) {
  static const ckl_forget_opts no_opts = {0};
  if (!opts) opts = &no_opts;
  if (!st || !ckl__snapshot_name_ok(n)) return -EINVAL;
  char name[CKL_SNAP_NAME_MAX + 1];
  ckl__ops_snap_str(n, name);
  ckl__state *state = NULL;
  int rc = ckl__ops_state_open(st, &state);
  if (rc < 0) return rc;
  ckl_lock_order o = {0};
  ckl_path_lock lk = {0};
  ckl_holder who = {0};
  /* A frozen store deletes nothing (freeze.h): the deleter guard comes
   * before the snapshot lock, in the fixed order. */
  ckl_deleter del = {0};
  ckl_freeze_opts fo = {.operation = "forget", .busy_holder = &who};
  rc = ckl_deleter_acquire(st, &del, &fo);
  if (rc < 0) {
    if (opts->busy_holder) *opts->busy_holder = who;
    goto out;
  }
  /* Deleters share the guard: another forget of the same snapshot may
   * pass here too; the exclusive snapshot lock below picks one. */
  if ((rc = CKL_FAILPOINT("forget.after_guard")) < 0) goto out;
  ckl_snap_lock_opts so = {.order = &o, .operation = "forget", .busy_holder = &who};
  rc = ckl_snapshot_lock(st, n, CKL_LOCK_EXCLUSIVE, &lk, &so);
  if (opts->busy_holder) *opts->busy_holder = who;
  if (rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    ckl__log_info("%s: forget %s: in use by %s", st->path, name, h);
  }
  if (rc < 0) goto out;
  char token[CKL_TOKEN_HEX_LEN + 1] = "";
  if ((rc = ckl__ops_register(st, state, "forget", name, CKL_ROSTER_EXCLUSIVE, token)) < 0) {
    ckl_path_lock_release(&lk);
    goto out;
  }
  rc = ckl__forget_held(st, state, n, &lk, &o, "forget", opts->busy_holder);
  ckl__ops_deregister(state, token);
  if (rc >= 0) (void)ckl__trash_purge_stale(st, state);
out:
  ckl_deleter_release(&del);
  ckl__ops_state_close(st, state);
  return rc;
}

/* ---- stale trash ------------------------------------------------------------ */

/*
 * Why purging entries outside the removed set is safe at any time: an
 * entry our readdir saw was renamed there inside a forget transaction that
 * had begun before the readdir. ckl__state_is_removed is a write
 * transaction (it commits nothing): it starts only after that forget's
 * transaction ended, so the removed-set listing that follows sees its
 * entry if it committed one. An entry that is not in the set then belongs
 * to a forget that saw no GC marking (it deletes the entry itself: we race
 * it harmlessly, ENOENT counts as done), to one whose commit failed or
 * that crashed after the move (no GC can rely on it: a GC that lost the
 * snapshot without a record aborts), or to a GC that already ended. An
 * entry in the set as settled belongs to a forget during a dry run: the
 * dry run never marks it, so it is as free to delete.
 */
int ckl__trash_purge_stale(ckl_store *st, ckl__state *state) {
  int tfd = openat(st->dirfd, TRASH_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (tfd < 0) return errno == ENOENT ? 0 : -errno;
  char **names = NULL;
  size_t n = 0;
  int rc = ckl__dir_names(tfd, NULL, &names, &n);
  if (rc < 0 || n == 0) goto out;
  if ((rc = ckl__state_is_removed(state, ".barrier")) < 0) goto out;
  ckl__removed_list l = {0};
  if ((rc = ckl__state_removed_list(state, &l)) < 0) goto out;
  int removed = 0;
  for (size_t i = 0; i < n; i++) {
    char rel[NAME_MAX + sizeof TRASH_DIR + 2];
    snprintf(rel, sizeof rel, TRASH_DIR "/%s", names[i]);
    /* A settled entry (a dry run's) is never marked: its copy is not
     * needed, only its forget's own delete failed or has yet to run. */
    bool needed = false;
    for (size_t j = 0; j < l.n && !needed; j++)
      needed = l.v[j].marked != CKL__RM_SETTLED && strcmp(l.v[j].trash_rel, rel) == 0;
    if (needed) continue;
    int r = ckl__atomic_rmtree_at(tfd, names[i]);
    if (r < 0) {
      ckl__log_warn("%s/%s: cannot purge: %s", st->path, rel, ckl_strerror(r));
      continue;
    }
    ckl__log_info("%s/%s: purged a forgotten snapshot left in the trash", st->path, rel);
    removed++;
  }
  ckl__removed_list_free(&l);
  rc = removed;
out:
  ckl__dir_names_free(names, n);
  ckl__close(tfd);
  return rc;
}

/* ---- abandoned snapshots ----------------------------------------------------- */

/*
 * A backup holds its snapshot's lock exclusively from before it creates
 * the directory until after the manifest is written (or the partial
 * snapshot is removed). A snapshot without a manifest whose exclusive
 * lock we can take therefore has no writer: its backup died. The check
 * for the manifest is repeated under the lock, since the backup may have
 * finished between the listing and our lock.
 */
int ckl__remove_abandoned(ckl_store *st, ckl__state *state, const ckl_group_name *g,
                          ckl_lock_order *order) {
  ckl_snapshot_info *list = NULL;
  size_t n = 0;
  int rc = ckl_snapshot_list(st, g, &list, &n);
  if (rc == -ENOENT) return 0;
  if (rc < 0) return rc;
  int removed = 0;
  for (size_t i = 0; i < n; i++) {
    if (list[i].state != CKL_SNAP_IN_PROGRESS) continue;
    const ckl_snapshot_name *sn = &list[i].name;
    ckl_path_lock lk = {0};
    ckl_snap_lock_opts so = {.order = order, .operation = "cleanup"};
    if (ckl_snapshot_lock(st, sn, CKL_LOCK_EXCLUSIVE, &lk, &so) < 0) continue; /* live writer */
    if (ckl__ops_has_manifest(st, sn)) {
      ckl_path_lock_release(&lk);
      continue;
    }
    int r = ckl__forget_held(st, state, sn, &lk, order, "abandoned snapshot", NULL);
    char name[CKL_SNAP_NAME_MAX + 1];
    ckl__ops_snap_str(sn, name);
    if (r < 0) {
      ckl__log_warn("%s: cannot remove abandoned snapshot %s: %s", st->path, name, ckl_strerror(r));
      continue;
    }
    ckl__log_info("%s: removed abandoned snapshot %s (no manifest, no writer)", st->path, name);
    removed++;
  }
  ckl_snapshot_list_free(list, n);
  return removed;
}

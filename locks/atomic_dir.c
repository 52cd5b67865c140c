/*
 * locks/atomic_dir.c - replace a whole directory atomically.
 *
 * The new tree is built in ".<name>.tmpdir-<16 hex>" beside the target and
 * swapped in with one renameat2() call, so a reader that resolves the
 * target's path sees the complete old tree or the complete new one.
 *
 * Liveness of a temp directory: the writer holds flock(LOCK_EX) on an
 * fd of the directory itself (ad->lock_fd) from begin to the end of commit
 * or rollback. A directory cannot take an fcntl write lock (it cannot be
 * opened for writing); flock can, and like an OFD lock it belongs to the
 * open file description, so it dies with the writer and nothing else.
 * Because the lock sits on the directory and not on a file inside it,
 * nothing has to be removed from the tree before it goes into place, and
 * there is no moment when a live temp dir lacks its mark. The begin race
 * with ckl_atomic_cleanup() is closed as for files ("lock, then verify",
 * see atomic_file.c): after taking its lock, begin checks that the name
 * still leads to its directory.
 *
 * Commit:
 *   target absent:  renameat2(RENAME_NOREPLACE)       -> new tree in place
 *   target present: renameat2(RENAME_EXCHANGE)        -> new tree in place,
 *                   old tree now at the temp name, unlocked
 *                   fsync(parent), then remove the old tree
 * The parent is synced before the old tree is destroyed, so a power loss
 * can never leave neither tree. A crash after the exchange leaves the new
 * tree in place and the old one under an unlocked temp name: garbage that
 * ckl_atomic_cleanup() removes. If the target appears or disappears
 * between the two renameat2 calls (another replacer), commit simply tries
 * the other one again.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunklock/atomic_file.h"
#include "common/internal.h"
#include "locks/atomic_file.h"

/* Rounds of NOREPLACE/EXCHANGE when other replacers keep creating and
 * removing the target between our two calls. */
#define SWAP_ATTEMPTS 8

static void ad_reset(ckl_atomic_dir *ad) {
  free(ad->tmp_path);
  free(ad->target_path);
  ad->tmp_path = NULL;
  ad->target_path = NULL;
  ad->lock_fd = -1;
  ad->active = 0;
}

/* Lock a temp dir we just made. 0: ours; 1: a cleanup got to it first
 * (holds it, or has removed it): pick another name; -errno. */
static int lock_new_dir(int fd, const char *path) {
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return 1;
    int rc = -errno;
    ckl__log_error("atomic dir: cannot lock temp dir %s: %s", path, ckl_strerror(rc));
    return rc;
  }
  int rc = ckl__atomic_same_entry(AT_FDCWD, path, fd);
  return rc < 0 ? rc : !rc;
}

/* Remove a temp tree we hold the lock of (begin failure, rollback). */
static void remove_locked_tree(int fd, const char *path, const char *target) {
  int rc = ckl__atomic_rm_contents(fd);
  if (rc == 0 && rmdir(path) != 0 && errno != ENOENT) rc = -errno;
  if (rc < 0)
    ckl__log_warn("atomic dir %s: cannot remove temp dir %s: %s (cleanup will)", target, path,
                  ckl_strerror(rc));
}

int ckl_atomic_dir_begin(ckl_atomic_dir *ad, const char *target, mode_t mode, unsigned flags) {
  if (!ad || !target || ad->active) return -EINVAL;
  if ((flags & ~CKL_ATOMIC_NOSYNC) != 0 || (mode & ~(mode_t)07777) != 0) return -EINVAL;
  char *dir = NULL;
  const char *base = NULL;
  int rc = ckl__atomic_split(target, &dir, &base);
  if (rc < 0) return rc;
  char *target_copy = strdup(target);
  if (!target_copy) {
    free(dir);
    return -ENOMEM;
  }
  char *tmp = NULL;
  int fd = -1;
  rc = -EEXIST;
  for (int attempt = 0; attempt < CKL__TMP_ATTEMPTS; attempt++) {
    tmp = ckl__atomic_temp_name(dir, base, CKL__TMP_DIR_TAG);
    if (!tmp) {
      rc = -ENOMEM;
      break;
    }
    if (mkdir(tmp, 0700) != 0) {
      rc = -errno;
      if (rc == -EEXIST) {
        free(tmp);
        tmp = NULL;
        continue;
      }
      ckl__log_error("atomic dir %s: cannot create temp dir %s: %s", target, tmp,
                     ckl_strerror(rc));
      break;
    }
    fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      rc = -errno;
      ckl__log_error("atomic dir %s: cannot open temp dir %s: %s", target, tmp, ckl_strerror(rc));
      if (rmdir(tmp) != 0 && errno != ENOENT)
        ckl__log_warn("atomic dir %s: cannot remove %s (cleanup will)", target, tmp);
      break;
    }
    rc = CKL_FAILPOINT("atomic.dir_before_lock");
    if (rc == 0) rc = lock_new_dir(fd, tmp);
    if (rc == 1) {
      /* A cleanup owns this directory now and removes it. */
      ckl__log_debug("atomic dir %s: temp %s taken by a cleanup, retrying", target, tmp);
      ckl__close(fd);
      fd = -1;
      free(tmp);
      tmp = NULL;
      rc = -EEXIST;
      continue;
    }
    /* The mode is the caller's from the start, so files created inside
     * see it; a mode without u+wx is the caller's to live with. */
    if (rc == 0 && fchmod(fd, mode) != 0) {
      rc = -errno;
      ckl__log_error("atomic dir %s: fchmod %s: %s", target, tmp, ckl_strerror(rc));
    }
    if (rc == 0) rc = CKL_FAILPOINT("atomic.dir_after_create");
    if (rc < 0) {
      remove_locked_tree(fd, tmp, target);
      ckl__close(fd);
      fd = -1;
    }
    break;
  }
  free(dir);
  if (rc < 0) {
    free(tmp);
    free(target_copy);
    return rc;
  }
  ad->lock_fd = fd;
  ad->flags = flags;
  ad->tmp_path = tmp;
  ad->target_path = target_copy;
  ad->active = 1;
  return 0;
}

const char *ckl_atomic_dir_path(const ckl_atomic_dir *ad) {
  return ad && ad->active ? ad->tmp_path : NULL;
}

enum { SWAP_NONE, SWAP_RENAMED, SWAP_EXCHANGED };

/* Put the temp dir in place. Sets *how; 0 or -errno. */
static int swap_in(int pfd, const char *tmp_base, const char *base, int *how) {
  *how = SWAP_NONE;
  for (int i = 0; i < SWAP_ATTEMPTS; i++) {
    if (renameat2(pfd, tmp_base, pfd, base, RENAME_NOREPLACE) == 0) {
      *how = SWAP_RENAMED;
      return 0;
    }
    if (errno != EEXIST) return -errno;
    if (renameat2(pfd, tmp_base, pfd, base, RENAME_EXCHANGE) == 0) {
      *how = SWAP_EXCHANGED;
      return 0;
    }
    /* ENOENT: the target vanished since the first call (or our temp did,
     * which the next NOREPLACE reports as ENOENT itself). */
    if (errno != ENOENT) return -errno;
  }
  return -EAGAIN;
}

int ckl_atomic_dir_commit(ckl_atomic_dir *ad) {
  if (!ad || !ad->active) return -EINVAL;
  const bool sync = (ad->flags & CKL_ATOMIC_NOSYNC) == 0;
  const char *step = "fsync";
  char *dir = NULL;
  const char *base = NULL;
  int rc = 0, pfd = -1, how = SWAP_NONE;
  /* The caller synced the files it wrote; the entries naming them live
   * in the temp dir, which is ours to sync. */
  if (sync) rc = ckl__atomic_fsync_dir(ad->lock_fd);
  if (rc == 0) {
    step = "open parent of";
    rc = ckl__atomic_split(ad->target_path, &dir, &base);
  }
  if (rc == 0) {
    pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0) rc = -errno;
  }
  if (rc == 0) {
    step = "rename";
    rc = CKL_FAILPOINT("atomic.dir_before_rename");
  }
  const char *tmp_base = ckl__atomic_basename(ad->tmp_path);
  if (rc == 0) rc = swap_in(pfd, tmp_base, base, &how);
  if (rc < 0) {
    ckl__log_error("atomic dir %s: %s %s: %s", ad->target_path, step, ad->tmp_path,
                   ckl_strerror(rc));
    ckl__close(pfd);
    free(dir);
    ckl_atomic_dir_rollback(ad);
    return rc;
  }
  /* The new tree is at the target from here on. */
  if (how == SWAP_EXCHANGED) {
    rc = CKL_FAILPOINT("atomic.dir_after_exchange");
    if (rc == 0 && sync) rc = ckl__atomic_fsync_dir(pfd);
    /* Only once the exchange is durable may the old tree go. A failure
     * to remove it does not undo the replacement: report it, leave the
     * rest to ckl_atomic_cleanup(). */
    if (rc == 0) {
      int r = ckl__atomic_rmtree_at(pfd, tmp_base);
      if (r < 0)
        ckl__log_warn("atomic dir %s: old tree left at %s: %s (cleanup will remove it)",
                      ad->target_path, ad->tmp_path, ckl_strerror(r));
    }
  } else {
    rc = CKL_FAILPOINT("atomic.dir_after_rename");
    if (rc == 0 && sync) rc = ckl__atomic_fsync_dir(pfd);
  }
  if (rc < 0)
    ckl__log_error("atomic dir %s: fsync directory %s: %s", ad->target_path, dir,
                   ckl_strerror(rc));
  ckl__close(pfd);
  free(dir);
  ckl__close(ad->lock_fd);
  ad_reset(ad);
  return rc;
}

void ckl_atomic_dir_rollback(ckl_atomic_dir *ad) {
  if (!ad || !ad->active) return;
  /* Removed while still locked: no cleanup races us for it. */
  remove_locked_tree(ad->lock_fd, ad->tmp_path, ad->target_path);
  ckl__close(ad->lock_fd);
  ad_reset(ad);
}

/*
 * chunklock/atomic_file.h - replace a file (or a directory) atomically.
 *
 * A reader never needs a lock to see a consistent file: it sees the old
 * content or the new one, never a mix, never nothing.
 *
 * Calling sequence (git lockfile.h style):
 *
 *     ckl_atomic_file af = {0};          // zeroed = inactive, valid
 *     rc = ckl_atomic_begin(&af, "dir/index.json", 0644, 0);
 *     if (rc < 0) return rc;
 *     rc = ckl_atomic_write(&af, buf, len);  // or write to ckl_atomic_fd(&af)
 *     if (rc == 0) rc = ckl_atomic_commit(&af);
 *     ckl_atomic_rollback(&af);          // always safe: no-op after commit
 *     return rc;
 *
 * Steps: create a unique temp file ".<name>.tmp-<random>" beside the
 * target (O_EXCL, O_NOFOLLOW), holding an OFD write lock on it while it is
 * ours; write; fsync the file; rename over the target; fsync the
 * directory. A crash at any step leaves the old or the new target plus at
 * most a temp file whose lock is gone, which ckl_atomic_cleanup() removes
 * (it never removes a temp file that a live writer still has locked, so it
 * is safe to run at any time, with no age heuristics).
 *
 * Flags: CKL_ATOMIC_NOSYNC skips both fsyncs (store sync policy "none":
 * still atomic against crashes of the process, not of the machine).
 */
#ifndef CHUNKLOCK_ATOMIC_FILE_H
#define CHUNKLOCK_ATOMIC_FILE_H

#include <sys/types.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_ATOMIC_NOSYNC 0x1u

typedef struct ckl_atomic_file {
  int active;          /* 1 between begin and commit/rollback */
  int fd;
  unsigned flags;
  char *tmp_path;      /* malloc'd */
  char *target_path;   /* malloc'd */
} ckl_atomic_file;

/** Start replacing `target` (which need not exist). 0, or -ENOENT (no
 * directory), -EACCES, -EROFS, -ENOSPC, -EINVAL (af active), -errno. */
CKL_EXTERN int ckl_atomic_begin(ckl_atomic_file *af, const char *target, mode_t mode,
                                unsigned flags);
/** The temp file's fd, for callers that write themselves (-1 if inactive). */
CKL_EXTERN int ckl_atomic_fd(const ckl_atomic_file *af);
/** Write all of buf. 0 or -errno (-ENOSPC, -EIO); on error, roll back. */
CKL_EXTERN int ckl_atomic_write(ckl_atomic_file *af, const void *buf, size_t len);
/** fsync, rename over the target, fsync the directory. 0 or -errno; on
 * error the target is untouched (if the rename failed) or already new (if
 * only the directory fsync failed: the error is still returned, as the
 * rename may not be durable). af becomes inactive either way. */
CKL_EXTERN int ckl_atomic_commit(ckl_atomic_file *af);
/** Remove the temp file and deactivate. No-op if inactive or committed. */
CKL_EXTERN void ckl_atomic_rollback(ckl_atomic_file *af);

/** One call: replace `target` with buf. 0 or -errno. */
CKL_EXTERN int ckl_atomic_replace(const char *target, const void *buf, size_t len, mode_t mode,
                                  unsigned flags);

/** Remove abandoned temp files and temp directories (those whose writer
 * is gone) in `dir`. Returns the number removed, or -errno. */
CKL_EXTERN int ckl_atomic_cleanup(const char *dir);

/*
 * Whole-directory replacement, for multi-file entries:
 *
 *     ckl_atomic_dir ad = {0};
 *     rc = ckl_atomic_dir_begin(&ad, "store/host/a/2026-...", 0755, 0);
 *     ... create files inside ckl_atomic_dir_path(&ad) ...
 *     rc = ckl_atomic_dir_commit(&ad);   // fsyncs files? no: the caller
 *                                        // fsyncs what it wrote; commit
 *                                        // fsyncs the temp dir and parent
 *     ckl_atomic_dir_rollback(&ad);      // removes the temp tree; no-op
 *                                        // after commit
 *
 * Commit renames the temp directory into place when the target does not
 * exist, and otherwise exchanges the two with renameat2(RENAME_EXCHANGE)
 * and removes the old tree: readers see the old or the new directory.
 */
typedef struct ckl_atomic_dir {
  int active;
  unsigned flags;
  int lock_fd;         /* OFD lock on the temp dir, marks it as live */
  char *tmp_path;
  char *target_path;
} ckl_atomic_dir;

/** Create the temp dir ".<name>.tmpdir-<random>" beside `target` with
 * `mode` (set at once: keep u+wx to fill it). 0, or -ENOENT (no parent),
 * -EACCES, -EROFS, -ENOSPC, -EINVAL (ad active, bad target or flags),
 * -errno. */
CKL_EXTERN int ckl_atomic_dir_begin(ckl_atomic_dir *ad, const char *target, mode_t mode,
                                    unsigned flags);
/** Path of the temp dir to fill (NULL if inactive). */
CKL_EXTERN const char *ckl_atomic_dir_path(const ckl_atomic_dir *ad);
/** Put the temp dir in place (see above). 0 or -errno; -EINVAL if
 * inactive. On error before the rename the target is untouched and the
 * temp tree removed; on a parent fsync error after it the target is
 * already new. ad becomes inactive either way. */
CKL_EXTERN int ckl_atomic_dir_commit(ckl_atomic_dir *ad);
/** Remove the temp tree and deactivate. No-op if inactive or committed. */
CKL_EXTERN void ckl_atomic_dir_rollback(ckl_atomic_dir *ad);

#ifdef __cplusplus
}
#endif
#endif

/*
 * chunklock/lock.h - path locks: shared/exclusive locks on a lock file.
 *
 * Built on open-file-description (OFD) fcntl locks. Every acquisition
 * opens the lock file anew, so it owns its own open file description:
 * two threads of one process exclude each other exactly as two processes
 * do, and closing some unrelated fd on the same file never drops the lock
 * (the POSIX-lock trap; see docs/locks.md).
 *
 * Calling sequence (git lockfile.h style):
 *
 *     ckl_path_lock lk = {0};            // zero-initialised = not held
 *     ckl_lock_opts o = {.timeout_ms = CKL_TRY, .operation = "forget"};
 *     ckl_holder who = {0};
 *     o.busy_holder = &who;
 *     int rc = ckl_path_lock_acquire(&lk, path, CKL_LOCK_EXCLUSIVE, &o);
 *     if (rc == CKL_EBUSY) { ... ckl_holder_format(&who, ...) ... }
 *     else if (rc < 0) { ... }
 *     ...
 *     ckl_path_lock_release(&lk);        // no-op when not held
 *
 *   To destroy the object a lock file guards (e.g. a snapshot), call
 *   ckl_path_lock_unlink() while holding it: the lock file is unlinked
 *   first, then released, so every waiter that then gets the kernel lock
 *   on the old inode notices (lock-then-verify) and retries on the new file.
 *
 * Lock, then verify: after the kernel grants the lock, fstat(fd) must match
 * stat(path) (dev and inode). If the file was unlinked or replaced while
 * we waited, the lock protects nothing: drop it and retry on the new file
 * (within the deadline), never return a lock on a dead inode.
 *
 * Lock files are opened O_NOFOLLOW|O_CLOEXEC and created mode 0600. An
 * exclusive holder writes a small holder record (token, pid, operation,
 * time) into its lock file so that a CKL_EBUSY can name it; shared
 * holders are named by the coordination roster.
 *
 * Caveats:
 *   - A lock belongs to the ckl_path_lock struct, not to a thread: any
 *     thread may release it, but two threads must not use one struct at once.
 *   - After fork() a child shares the parent's open file descriptions, so
 *     an unlock there would release the parent's lock. Releasing an
 *     inherited lock in the child therefore only closes the child's copy
 *     of the fd (the lock stays with the parent); unlink, convert and
 *     verify refuse it (-EINVAL). Take new locks in the child instead.
 *   - Never dup() lk->fd (or pass it to another process): release relies
 *     on its close() being the last reference to the open file description
 *     when no fork() happened since the acquisition (it then skips the
 *     explicit unlock; after a fork it unlocks explicitly). A child made
 *     by a raw clone() or _Fork(), which pthread_atfork does not see, and
 *     that neither execs nor exits, keeps such a lock until it does.
 *   - Lock files must live on a filesystem with working OFD locks (any local
 *     Linux filesystem). For NFS use the soft locks (softlock.h).
 */
#ifndef CHUNKLOCK_LOCK_H
#define CHUNKLOCK_LOCK_H

#include <sys/types.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ckl_lock_mode {
  CKL_LOCK_SHARED = 1,
  CKL_LOCK_EXCLUSIVE = 2
} ckl_lock_mode;

/**
 * The fixed lock order: process locker -> group -> snapshot -> manifest.
 * A lock may be taken only at a level >= every level already held through
 * the same ckl_lock_order tracker (equal is allowed: a backup holds its base
 * snapshot and its new snapshot). Violations return CKL_ELOCKORDER, and
 * abort() in debug builds (CKL_DEBUG), because a reversed order is a
 * deadlock waiting for the right interleaving.
 */
typedef enum ckl_lock_level {
  CKL_LEVEL_NONE = 0, /* not order-checked */
  CKL_LEVEL_PROCESS = 1,
  CKL_LEVEL_GROUP = 2,
  CKL_LEVEL_SNAPSHOT = 3,
  CKL_LEVEL_MANIFEST = 4
} ckl_lock_level;

#define CKL_LOCK_ORDER_MAX 16

/** Order tracker for one operation (one backup, one forget, ...). Locks are
 * recorded on acquire and removed on release; zero-initialised = empty.
 * Not thread-safe: one operation, one tracker. */
typedef struct ckl_lock_order {
  int n;
  ckl_lock_level held[CKL_LOCK_ORDER_MAX];
} ckl_lock_order;

/** Record that a lock at `level` is about to be taken. 0 or CKL_ELOCKORDER
 * (or -EOVERFLOW when more than CKL_LOCK_ORDER_MAX locks are held). */
CKL_EXTERN int ckl_lock_order_push(ckl_lock_order *o, ckl_lock_level level);
/** Forget one lock at `level` (on release). */
CKL_EXTERN void ckl_lock_order_pop(ckl_lock_order *o, ckl_lock_level level);

typedef struct ckl_lock_opts {
  int64_t timeout_ms;       /* CKL_TRY (default), CKL_FOREVER, or ms */
  ckl_lock_level level;     /* for the order check (NONE = unchecked) */
  ckl_lock_order *order;    /* tracker; NULL = unchecked */
  const char *operation;    /* written to the holder record; may be NULL */
  ckl_holder *busy_holder;  /* out, optional: who holds it on EBUSY/ETIMEDOUT */
} ckl_lock_opts;

typedef struct ckl_path_lock {
  int held;               /* 1 while locked; all else is valid only then */
  int fd;
  ckl_lock_mode mode;
  ckl_lock_level level;
  ckl_lock_order *order;
  dev_t dev;
  ino_t ino;
  int64_t acquired_ns;    /* CLOCK_REALTIME */
  char *path;             /* malloc'd copy, for verify and unlink */
  char token[CKL_TOKEN_HEX_LEN + 1];
  pid_t owner_pid;        /* process that took it: release elsewhere only
                             closes the inherited fd (fork safety) */
  uint64_t fork_gen;      /* fork generation before the open: release skips
                             the explicit unlock if no fork() happened since */
} ckl_path_lock;

/**
 * Lock `path` in `mode`, creating the lock file (0600) if it does not
 * exist. `opts` may be NULL (try, unchecked).
 *
 * Returns 0, or:
 *   CKL_EBUSY      held by another holder and opts->timeout_ms == CKL_TRY;
 *                  opts->busy_holder says who (if it can be known)
 *   CKL_ETIMEDOUT  still held when the deadline passed (holder as above)
 *   CKL_EREPLACED  CKL_TRY only: the lock file was replaced or removed
 *                  under us several times in a row (a deadline retries
 *                  until it passes instead)
 *   CKL_ELOCKORDER taking it would break the lock order
 *   -EOVERFLOW     the order tracker already holds CKL_LOCK_ORDER_MAX locks
 *   -ELOOP         path is a symlink (never followed)
 *   -EISDIR        path is a directory
 *   -EACCES/-EPERM no permission to open or create the lock file (a shared
 *                  lock on an existing file that is readable but not
 *                  writable succeeds, read-only)
 *   -EROFS         the lock file is missing and the filesystem is read-only,
 *                  or an exclusive lock is asked for on a read-only
 *                  filesystem (a directory the caller may not write to gives
 *                  -EACCES, as the kernel says)
 *   -ENOENT        the parent directory does not exist
 *   -ENAMETOOLONG  path or one of its components is too long
 *   -EINVAL        bad arguments, lk is already held, or path is not a
 *                  regular file (FIFO, device, socket)
 *   -ENOMEM, other -errno from open/fcntl/fstat
 * On error lk is left not held and nothing is created beyond the lock file.
 */
CKL_EXTERN int ckl_path_lock_acquire(ckl_path_lock *lk, const char *path, ckl_lock_mode mode,
                                     const ckl_lock_opts *opts);

/** Release. No-op (returns 0) when not held; always leaves lk not held. */
CKL_EXTERN int ckl_path_lock_release(ckl_path_lock *lk);

/** Unlink the lock file while still holding it, then release. Waiters
 * retry on whatever file appears at the path next. 0, CKL_EREPLACED (the
 * path is no longer our file: nothing is unlinked), -EINVAL (not held,
 * held shared, or inherited through fork), or -errno from unlink. The lock
 * is released in every case. */
CKL_EXTERN int ckl_path_lock_unlink(ckl_path_lock *lk);

/** Is the lock still attached to the file at its path? 0 if yes,
 * CKL_EREPLACED if the path is gone or is another file, -EINVAL if not held.
 * Used by lease refresh. */
CKL_EXTERN int ckl_path_lock_verify(const ckl_path_lock *lk);

/** Convert a held lock: downgrade exclusive->shared always succeeds;
 * upgrade shared->exclusive honours timeout_ms like acquire (CKL_EBUSY,
 * CKL_ETIMEDOUT). On failure the shared lock is kept. -EACCES / -EROFS
 * when the shared lock had to be opened read-only; -EINVAL when not held.
 * Two shared holders upgrading at once with CKL_FOREVER wait for each
 * other forever (OFD locks have no deadlock detection): use a deadline.
 * The record an upgraded holder writes has no operation name. */
CKL_EXTERN int ckl_path_lock_convert(ckl_path_lock *lk, ckl_lock_mode mode, int64_t timeout_ms,
                                     ckl_holder *busy_holder);

/** Probe `path` without taking it: 0 if it could be locked in `mode` now,
 * CKL_EBUSY (holder filled if known) if not, -ENOENT if the file does not
 * exist, -ELOOP, -EISDIR, other -errno. Never creates the file. A lock held
 * by the calling process counts as busy too. Racy by nature: for reports,
 * not for decisions. */
CKL_EXTERN int ckl_path_lock_probe(const char *path, ckl_lock_mode mode, ckl_holder *holder);

#ifdef __cplusplus
}
#endif
#endif

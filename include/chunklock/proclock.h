/*
 * chunklock/proclock.h - the store's process locker and GC lock.
 *
 * Both live in one file, STORE/.lock, on separate byte ranges:
 *   byte 0  process locker  (shared: writers; exclusive: GC strict mode,
 *                            maintenance)
 *   byte 1  GC lock         (exclusive only: one GC per store)
 *   bytes 2+ reserved for the store freeze / with-lock locks
 *   4096 + 256 n   holder record of the exclusive holder of byte n (the
 *                  process locker's at 4096, the GC's at 4352), written
 *                  with one pwrite and cleared before unlocking, so that
 *                  CKL_EBUSY can name who is in the way
 *
 * Process locker (Proxmox ProcessLocker semantics): a process holds the
 * kernel lock on byte 0 through ONE open file description, shared while it
 * has only shared guards, exclusive while it has at least one exclusive
 * guard. So "exclusive" excludes other *processes* only: inside a process
 * an exclusive guard coexists with shared guards (the lock is upgraded in
 * place and downgraded when the last exclusive guard goes). The per-process
 * state lives in a registry keyed by the lock file's (st_dev, st_ino):
 * two ckl_proclock handles of one store in one process are the same
 * locker, and closing one never drops the other's lock.
 *
 * Calling sequence:
 *
 *     ckl_proclock *pl;
 *     rc = ckl_proclock_open("STORE/.lock", &pl);
 *     ckl_proclock_guard g = {0};
 *     rc = ckl_proclock_shared(pl, &g, CKL_TRY, NULL);   // a writer
 *     ...
 *     ckl_proclock_release(&g);                          // no-op if not held
 *     ckl_proclock_close(pl);
 *
 * GC lock: exclusive between ALL holders, threads included (each holder
 * has its own open file description), try or deadline.
 *
 * Caveats:
 *   - After fork() the child's registry starts empty (a pthread_atfork
 *     handler forgets inherited state without unlocking, which would
 *     release the parent's lock); guards inherited by the child are inert:
 *     releasing them there is a no-op.
 *   - A guard must be released before its ckl_proclock is closed.
 */
#ifndef CHUNKLOCK_PROCLOCK_H
#define CHUNKLOCK_PROCLOCK_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ckl_proclock ckl_proclock;

typedef struct ckl_proclock_guard {
  int held;             /* 1 while held */
  int exclusive;        /* 1 for an exclusive guard */
  ckl_proclock *pl;
  int64_t since_ns;     /* CLOCK_REALTIME when taken (coarse: may be one
                           clock tick, a few ms, early) */
  uint64_t id;          /* registry slot identity */
  pid_t owner_pid;      /* process that took it (fork safety) */
} ckl_proclock_guard;

/**
 * Open (creating, 0600, O_NOFOLLOW) the lock file and return the process's
 * locker for it, adding a reference. 0, or -ELOOP (symlink), -EISDIR,
 * -EACCES, -EROFS, -ENOENT (directory missing), -EINVAL (NULL or empty
 * path, not a regular file), -ENOMEM, other -errno.
 */
CKL_EXTERN int ckl_proclock_open(const char *path, ckl_proclock **out);

/** Drop a reference. The kernel lock stays while any reference holds
 * guards; the locker is freed with the last reference. */
CKL_EXTERN void ckl_proclock_close(ckl_proclock *pl);

/**
 * Take a shared guard. The first shared guard in the process takes the
 * kernel lock (waiting per timeout_ms while another process is exclusive);
 * nested guards only count (no syscall).
 * 0, CKL_EBUSY, CKL_ETIMEDOUT (busy_holder filled when known), -EINVAL
 * (bad arguments, g already held, or pl inherited through fork: open the
 * store again in the child), CKL_EREPLACED (the lock file at the path is
 * no longer the one pl has open: close pl and open again), -ENOMEM.
 * Waiting (deadline or CKL_FOREVER) polls with backoff; it never blocks
 * other threads' guards on the same locker.
 */
CKL_EXTERN int ckl_proclock_shared(ckl_proclock *pl, ckl_proclock_guard *g, int64_t timeout_ms,
                                   ckl_holder *busy_holder);

/**
 * Take an exclusive guard: excludes other processes' shared and exclusive
 * guards, coexists with this process's. Errors as ckl_proclock_shared.
 */
CKL_EXTERN int ckl_proclock_exclusive(ckl_proclock *pl, ckl_proclock_guard *g,
                                      int64_t timeout_ms, ckl_holder *busy_holder);

/** Release a guard (no-op if not held, or if inherited through fork). */
CKL_EXTERN int ckl_proclock_release(ckl_proclock_guard *g);

/** Convert a held guard between shared and exclusive (upgrade honours
 * timeout_ms; on failure the guard keeps its old mode). Upgrade: 0,
 * CKL_EBUSY, CKL_ETIMEDOUT, -EINVAL (not held, inherited). Downgrade: 0,
 * -EINVAL. Two processes upgrading at once with CKL_FOREVER wait for each
 * other forever: give upgrades a deadline. */
CKL_EXTERN int ckl_proclock_upgrade(ckl_proclock_guard *g, int64_t timeout_ms,
                                    ckl_holder *busy_holder);
CKL_EXTERN int ckl_proclock_downgrade(ckl_proclock_guard *g);

/** Start time (CLOCK_REALTIME ns) of the oldest shared guard held in this
 * process: 0 and *since_ns, or -ENOENT when there is none (always, for a
 * locker inherited through fork), -EINVAL for NULL arguments. */
CKL_EXTERN int ckl_proclock_oldest_shared(ckl_proclock *pl, int64_t *since_ns);

/** Counts of guards held in this process (for tests and `locks`). */
CKL_EXTERN void ckl_proclock_counts(ckl_proclock *pl, int *shared, int *exclusive);

typedef struct ckl_gclock {
  int held;
  int fd;
  int64_t since_ns;
  pid_t owner_pid;      /* process that took it: release in a fork child
                           only closes the inherited fd */
} ckl_gclock;

/**
 * Take the store's GC lock (byte 1 of `path`). One holder per store across
 * all threads and processes. 0, CKL_EBUSY / CKL_ETIMEDOUT (busy_holder
 * names the holder from the record it keeps: pid, tid, operation "gc", or
 * the freeze's operation when an exclusive freeze holds it, freeze.h),
 * CKL_EREPLACED (CKL_TRY, the file kept being replaced), -ELOOP, -EISDIR,
 * -EACCES, -EROFS, -ENOENT, -EINVAL (bad arguments, g already held).
 * Released in a fork child, only the child's copy of the fd is closed.
 */
CKL_EXTERN int ckl_gclock_acquire(const char *path, ckl_gclock *g, int64_t timeout_ms,
                                  ckl_holder *busy_holder);
/** Release (no-op if not held). */
CKL_EXTERN int ckl_gclock_release(ckl_gclock *g);

#ifdef __cplusplus
}
#endif
#endif

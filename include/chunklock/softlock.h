/*
 * chunklock/softlock.h - soft reader/writer lease locks for shared
 * filesystems (NFS, cluster filesystems) where kernel locks are unreliable.
 *
 * The lock is made of marker files beside the lock path P (P itself is
 * never created or opened; any path in a writable directory will do):
 *
 *     P.state      short-held state mutex (itself a soft exclusive marker)
 *     P.write      the writer marker
 *     P.readers/   mode 0700: one marker "r.<token>" per reader, and the
 *                  "b.<token>" names markers are moved to while evicted
 *
 * A marker is created O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, through a
 * directory fd, and holds a random 128-bit token, the host id, boot id,
 * pid namespace, pid, creation time and operation name (text, < 1 KiB).
 * Its holder stamps its mtime every heartbeat (TTL/3, default 30 s of a
 * 90 s TTL); any process on any host evicts a marker whose mtime is older
 * than the TTL plus a small slack for coarse file timestamps (min(2 s,
 * TTL/10)), or a marker of a dead pid on the same host, boot and pid
 * namespace at once. Markers are identified by their token, never by
 * inode. See docs/softlock.md for the protocol and its assumptions
 * (wall clocks in sync within one heartbeat interval; NFS mount options).
 *
 * Calling sequence:
 *
 *     ckl_softlock lk = {0};                 // zero-initialised = not held
 *     ckl_softlock_opts o = {.timeout_ms = 30000, .operation = "backup"};
 *     int rc = ckl_softlock_acquire(&lk, "/nfs/store/.softlock",
 *                                   CKL_LOCK_EXCLUSIVE, &o);
 *     ...
 *     if (ckl_softlock_check(&lk) == CKL_ELOCKLOST) { stop; }  // poll often
 *     ...
 *     ckl_softlock_release(&lk);             // no-op when not held
 *
 * Semantics:
 *   - Shared holders coexist; an exclusive holder excludes everyone. Every
 *     ckl_softlock struct is its own holder: two structs in one thread
 *     exclude each other exactly like two hosts do.
 *   - Writer preference: an exclusive acquisition first claims P.write
 *     (from then on new readers wait), then waits for the readers already
 *     in to leave. Continuous readers cannot starve a writer.
 *   - Reentrancy: acquiring again through the SAME held struct in the SAME
 *     mode only counts (depth + 1; each acquire needs its release); in the
 *     other mode it is -EDEADLK (there are no upgrades or downgrades:
 *     release and acquire again). Acquiring through another struct never
 *     counts as reentrant: shared + shared is granted, anything with an
 *     exclusive side waits like any other holder (and so waits for itself).
 *   - Strict leases: when the heartbeat cannot refresh the marker before
 *     the lease runs out (TTL - heartbeat interval after the last refresh,
 *     measured on CLOCK_BOOTTIME, which counts suspend), or finds it gone
 *     or re-owned, the lock is LOST: opts.on_lost is called once and
 *     ckl_softlock_check() returns CKL_ELOCKLOST from then on. A lost lock
 *     is never revived: release it and acquire again.
 *   - Heartbeat: by default a small thread per held lock. With
 *     CKL_SOFTLOCK_HEARTBEAT_EXTERNAL the caller (the libuv runtime) calls
 *     ckl_softlock_refresh() when ckl_softlock_due_ns() says so.
 *   - Fork: holds inherited by a fork child are invalid there: check says
 *     CKL_ELOCKLOST, refresh too, release only frees the child's copy and
 *     touches no file (the markers stay the parent's). The child takes its
 *     own lock.
 *   - Thread use: one struct is used by one thread at a time (acquire,
 *     release, refresh); ckl_softlock_check() may be called from any thread
 *     at any time while the struct is held.
 *
 * Waiting: CKL_TRY makes one attempt (a state mutex held by a concurrent
 * acquisition counts as busy), a deadline or CKL_FOREVER polls with
 * backoff and jitter. There is no wake-up on release: a shared filesystem
 * offers none.
 */
#ifndef CHUNKLOCK_SOFTLOCK_H
#define CHUNKLOCK_SOFTLOCK_H

#include "common.h"
#include "lock.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_SOFTLOCK_DEFAULT_TTL_MS 90000

/** Which clock the lock reads: the wall clock stamps and ages markers
 * (comparable across hosts), the boot clock times the holder's own lease
 * (monotonic, counts suspend). */
typedef enum ckl_softlock_clock_id {
  CKL_SOFTLOCK_CLOCK_WALL = 0, /* CLOCK_REALTIME */
  CKL_SOFTLOCK_CLOCK_BOOT = 1  /* CLOCK_BOOTTIME */
} ckl_softlock_clock_id;

/** A clock source, in nanoseconds. Tests inject one to step time instead
 * of sleeping for TTLs. Must be thread-safe (the heartbeat thread calls it). */
typedef int64_t (*ckl_softlock_clock_fn)(ckl_softlock_clock_id which, void *ctx);

typedef enum ckl_softlock_heartbeat {
  CKL_SOFTLOCK_HEARTBEAT_THREAD = 0,  /* default: a thread per held lock */
  CKL_SOFTLOCK_HEARTBEAT_EXTERNAL = 1 /* the caller drives ckl_softlock_refresh() */
} ckl_softlock_heartbeat;

/** Why a lock was lost. */
typedef enum ckl_softlock_lost {
  CKL_SOFTLOCK_OK = 0,
  CKL_SOFTLOCK_LOST_EXPIRED = 1, /* not refreshed before the lease ran out */
  CKL_SOFTLOCK_LOST_GONE = 2,    /* the marker was removed (evicted) */
  CKL_SOFTLOCK_LOST_REOWNED = 3  /* the marker is another holder's, or not ours any more */
} ckl_softlock_lost;

/** Called once when the lock is lost, from the thread that noticed (the
 * heartbeat thread, or a caller of refresh/check). It must not release
 * the lock; it should make the holder stop (set a flag, cancel a task). */
typedef void (*ckl_softlock_lost_fn)(void *ctx, ckl_softlock_lost reason);

typedef struct ckl_softlock_opts {
  int64_t timeout_ms;              /* CKL_TRY (default), CKL_FOREVER, or ms */
  int64_t ttl_ms;                  /* marker TTL; 0 = 90000; >= 30 */
  int64_t heartbeat_ms;            /* 0 = ttl/3; must be <= ttl/3 */
  ckl_softlock_heartbeat heartbeat;
  const char *host_id;             /* NULL = host name; printable ASCII, 1..63 */
  const char *operation;           /* written to markers; may be NULL */
  ckl_softlock_clock_fn clock;     /* NULL = the system clocks */
  void *clock_ctx;
  ckl_softlock_lost_fn on_lost;    /* optional */
  void *on_lost_ctx;
  ckl_holder *busy_holder;         /* out, optional: who is in the way */
} ckl_softlock_opts;

struct ckl__softlock_hold;
typedef struct ckl_softlock {
  struct ckl__softlock_hold *hold; /* NULL = not held; opaque */
} ckl_softlock;

/**
 * Acquire the soft lock at `path` in `mode`. `opts` may be NULL (try,
 * defaults). Creates P.readers/ (0700) if missing; never creates P.
 *
 * Returns 0, or:
 *   CKL_EBUSY      held and opts->timeout_ms == CKL_TRY (opts->busy_holder
 *                  names the writer, a reader or the state mutex holder
 *                  when its marker can be trusted; known = 0 otherwise)
 *   CKL_ETIMEDOUT  still held when the deadline passed (holder as above)
 *   CKL_ELOCKLOST  reentrant acquire on a struct whose lease is lost
 *   -EDEADLK       lk is held in the other mode (no upgrades/downgrades)
 *   -ELOOP         P.readers is a symlink (never followed)
 *   -ENOTDIR       P.readers exists and is not a directory
 *   -EPERM         P.readers is not owned by us or is open to group/other
 *   -ENOENT        the directory of P does not exist
 *   -EACCES, -EROFS, -ENOSPC, -EDQUOT: cannot create markers there
 *   -ENAMETOOLONG  P's name plus the marker suffixes is too long
 *   -EINVAL        bad arguments (NULL, empty path, path ending in '/',
 *                  bad mode, ttl_ms < 30, heartbeat_ms > ttl/3, bad host id)
 *   -ENOMEM, -EAGAIN (heartbeat thread), other -errno from the filesystem
 * On error lk is not held and none of our markers remain.
 */
CKL_EXTERN int ckl_softlock_acquire(ckl_softlock *lk, const char *path, ckl_lock_mode mode,
                                    const ckl_softlock_opts *opts);

/**
 * Release one level (see reentrancy). On the last level: stop the
 * heartbeat, remove our marker (only if it is still ours), free.
 * Returns 0, or CKL_ELOCKLOST if the lease had been lost meanwhile (the
 * struct is released all the same); 0 when not held. In a fork child:
 * frees the child's copy and touches no file.
 */
CKL_EXTERN int ckl_softlock_release(ckl_softlock *lk);

/** 0 while the lease is valid, CKL_ELOCKLOST once it is lost (also when
 * the lease ran out on the boot clock and the heartbeat has not noticed
 * yet, e.g. right after a suspend), -EINVAL if not held. Cheap: no I/O. */
CKL_EXTERN int ckl_softlock_check(const ckl_softlock *lk);

/**
 * Heartbeat once now: verify the marker is ours and stamp its mtime.
 * Returns 0, CKL_ELOCKLOST (lost; on_lost has been called), -EINVAL (not
 * held), or -errno of a failed filesystem call: the lease stays valid
 * until it runs out, call again soon (the thread retries at a quarter of
 * the interval). Must not run concurrently with release on the same struct.
 */
CKL_EXTERN int ckl_softlock_refresh(ckl_softlock *lk);

/** When the next refresh is due, on the lock's boot clock (ns); -EINVAL
 * if not held. */
CKL_EXTERN int64_t ckl_softlock_due_ns(const ckl_softlock *lk);

/** Milliseconds from now until the next refresh is due (0 if overdue),
 * for a uv timer; -EINVAL if not held. */
CKL_EXTERN int64_t ckl_softlock_due_in_ms(const ckl_softlock *lk);

/** Describe our own hold (token, host, pid, operation, since, lease
 * expiry on the wall clock, target = the marker path). 0 or -EINVAL. */
CKL_EXTERN int ckl_softlock_info(const ckl_softlock *lk, ckl_holder *out);

#ifdef __cplusplus
}
#endif
#endif

/*
 * chunklock/freeze.h - store-wide locks for outside tools: the freeze
 * ("nothing is deleted while I copy the store") and the exclusive store
 * lock ("nobody but me touches the store"). `chunklock with-lock` is built
 * on them; deleters (forget, prune, GC) take the deleter guard that makes
 * them honour a freeze.
 *
 * What each holds (the full pairwise table is docs/locking.md):
 *
 *   freeze (shared)   many at once. While one is held, nothing is deleted
 *                     from the store: GC, forget and prune fail CKL_EBUSY
 *                     naming the freezer (or wait, with a timeout). Backups
 *                     may still add chunks and snapshots; readers and
 *                     verify run.
 *   freeze exclusive  one at a time, and nothing else: no backup (the
 *                     process locker exclusive), no GC (the GC lock), no
 *                     forget, prune or freeze (the freeze byte exclusive).
 *                     Readers and verify still run. The process locker's
 *                     exclusivity is per process (proclock.h): guards of
 *                     the holder's own process are not excluded.
 *   deleter guard     held by every forget, prune and (non-dry-run) GC for
 *                     its whole run. Deleters never exclude each other;
 *                     they exclude freezes of both kinds.
 *
 * Calling sequence:
 *
 *     ckl_freeze f = {0};
 *     ckl_holder who = {0};
 *     ckl_freeze_opts o = {.timeout_ms = CKL_TRY, .busy_holder = &who};
 *     rc = ckl_freeze_acquire(st, CKL_FREEZE_SHARED, &f, &o);
 *     if (rc == CKL_EBUSY) ... a GC, forget or prune runs: `who`
 *     ... copy the store ...
 *     ckl_freeze_release(&f);
 *
 * Lock file layout (STORE/.lock, next to proclock.h's bytes 0 and 1):
 *   byte 2   freeze byte: F_RDLCK by each shared freeze, F_WRLCK by the
 *            exclusive one (its holder record at 4096 + 256 * 2)
 *   byte 3   deleter byte: F_RDLCK by each deleter
 *   byte 4   entry mutex: F_WRLCK, held only for the check-and-take below
 *   bytes 5+ still reserved
 * Every holder opens its own open file description, so threads of one
 * process exclude each other exactly as processes do; a holder that dies
 * loses its locks with its descriptions.
 *
 * Holders register in the roster (roster.h) with target
 * "STORE/.lock#freeze" or "STORE/.lock#delete", which is how a CKL_EBUSY
 * names them; `chunklock locks` lists them.
 *
 * Fork: a ckl_freeze or ckl_deleter inherited by a child is inert there:
 * releasing it only closes the child's copies of the descriptors.
 */
#ifndef CHUNKLOCK_FREEZE_H
#define CHUNKLOCK_FREEZE_H

#include "common.h"
#include "proclock.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ckl_freeze_mode {
  CKL_FREEZE_SHARED = 1,   /* nothing is deleted meanwhile */
  CKL_FREEZE_EXCLUSIVE = 2 /* nothing but readers runs meanwhile */
} ckl_freeze_mode;

typedef struct ckl_freeze_opts {
  int64_t timeout_ms;      /* CKL_TRY (0, default), ms, CKL_FOREVER */
  const char *operation;   /* roster operation name (<= 31 bytes);
                              NULL = "freeze" / "freeze-exclusive" / "delete" */
  ckl_holder *busy_holder; /* out, optional: who is in the way on
                              CKL_EBUSY / CKL_ETIMEDOUT */
} ckl_freeze_opts;

typedef struct ckl_freeze {
  int held;                 /* 1 while held */
  ckl_freeze_mode mode;
  int fd;                   /* its own description of STORE/.lock */
  int64_t since_ns;         /* wall clock when taken */
  pid_t owner_pid;          /* fork safety */
  ckl_gclock gc;            /* exclusive mode: the GC lock */
  ckl_proclock_guard pl;    /* exclusive mode: the process locker */
  void *state_;             /* roster handle (internal) */
  char token[CKL_TOKEN_HEX_LEN + 1]; /* roster record, "" if none */
} ckl_freeze;

typedef struct ckl_deleter {
  int held;
  int fd;
  int64_t since_ns;
  pid_t owner_pid;
  void *state_;
  char token[CKL_TOKEN_HEX_LEN + 1];
} ckl_deleter;

/**
 * Take a freeze of the store. `f` must be zeroed or released; opts may be
 * NULL (try, default operation name). Exclusive mode takes, in this order,
 * the GC lock, the process locker exclusively and the freeze byte
 * exclusively (the order a strict GC uses too), each within what is left
 * of the timeout; on failure everything taken is released.
 *
 * Returns 0, or:
 *   CKL_EBUSY      (CKL_TRY) a deleter runs (shared and exclusive mode), an
 *                  exclusive freeze is held (shared), any freeze is held, a
 *                  GC runs, or another process holds writer guards
 *                  (exclusive); opts->busy_holder names it when known
 *   CKL_ETIMEDOUT  the same at the deadline
 *   CKL_EREPLACED  STORE/.lock kept being replaced under us (try mode)
 *   -EINVAL        bad arguments, f already held
 *   -errno         opening or locking STORE/.lock (-EACCES, -EROFS, ...)
 * A roster registration that fails is logged and does not fail the call:
 * the kernel lock is what excludes; the roster only names holders.
 */
CKL_EXTERN int ckl_freeze_acquire(ckl_store *st, ckl_freeze_mode mode, ckl_freeze *f,
                                  const ckl_freeze_opts *opts);

/** Release a freeze (no-op if not held; inert in a fork child). 0. */
CKL_EXTERN int ckl_freeze_release(ckl_freeze *f);

/**
 * Take the deleter guard: fails while any freeze is held, never waits for
 * other deleters. Errors as ckl_freeze_acquire (CKL_EBUSY / CKL_ETIMEDOUT
 * name the freezer). A thread that already holds a deleter guard on the
 * store always gets another one at once.
 */
CKL_EXTERN int ckl_deleter_acquire(ckl_store *st, ckl_deleter *d, const ckl_freeze_opts *opts);

/** Release (no-op if not held; inert in a fork child). 0. */
CKL_EXTERN int ckl_deleter_release(ckl_deleter *d);

typedef struct ckl_freeze_info {
  int frozen;   /* 0 no freeze, CKL_FREEZE_SHARED or CKL_FREEZE_EXCLUSIVE */
  int deleting; /* 1 if at least one deleter guard is held */
} ckl_freeze_info;

/**
 * What is held right now, from the kernel's view (every process and
 * thread, the caller's own holders included). Racy by nature: for
 * reports, not decisions. 0, or -errno opening STORE/.lock.
 */
CKL_EXTERN int ckl_freeze_probe(ckl_store *st, ckl_freeze_info *out);

#ifdef __cplusplus
}
#endif
#endif

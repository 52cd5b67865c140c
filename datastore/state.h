/*
 * datastore/state.h - the coordination state: STORE/.state/, an LMDB
 * environment holding the roster of active holders, the GC state and the
 * removed-during-GC set (DESIGN.md sections 4 and 5; docs/state.md).
 *
 * The state is coordination only and disposable: missing, corrupt or
 * left over from a previous boot, it is recreated. Nothing durable depends
 * on it; what a lost state costs is that current leases are lost (their
 * refresh and deregister say -ENOENT) and that a running GC aborts.
 *
 * Threads and processes
 *   - One LMDB environment per .state directory per process, shared by
 *     every handle: a process-wide registry keyed by the (st_dev, st_ino)
 *     of the directory, refcounted. Opening the same store twice returns
 *     two handles on one environment (LMDB forbids opening one environment
 *     twice in a process: closing the second would drop the first's locks).
 *   - Every call is thread-safe and runs exactly one LMDB transaction from
 *     start to end on the calling thread. The environment is opened with
 *     MDB_NOTLS, so read transactions are not tied to threads; a write
 *     transaction still belongs to the thread that began it until it ends
 *     (LMDB's writer mutex is held by that thread), which is why no write
 *     transaction ever escapes a call, and why the callback of
 *     ckl__state_forget_txn must not call back into the state.
 *   - All write transactions of all processes are serialized by LMDB's
 *     writer mutex (a robust mutex: a writer that dies holding it does not
 *     wedge the others). Every protocol step below that says "one write
 *     transaction" is atomic with respect to every other step.
 *   - fork(): a handle belongs to the process that opened it. In a child,
 *     every call on an inherited handle returns -ECHILD and closing it is a
 *     no-op; the child opens its own handle.
 *
 * Replacement: if the environment's files are replaced under a running
 * process (another process recovered a damaged state, or an administrator
 * deleted .state), the next call notices (data.mdb is no longer the file
 * it mapped), drops the old environment and opens the new one. Records of
 * the old one are gone: refresh and deregister return -ENOENT, which a
 * holder treats as a lost lease.
 *
 * Errors common to every call: -ECHILD (handle inherited through fork),
 * -ENOMEM, -ENOSPC (the map reached its maximum size), CKL_ECORRUPT (the
 * environment turned out to be damaged during the call; the next call
 * recovers it), CKL_EVERSION (written by an incompatible chunklock),
 * other -errno from the filesystem. Each is logged with the file and cause.
 */
#ifndef CKL_DATASTORE_STATE_H
#define CKL_DATASTORE_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "chunklock/common.h"
#include "chunklock/roster.h"

typedef struct ckl__state ckl__state;

/* ---- opening ---------------------------------------------------------- */

typedef struct ckl__state_opts {
  size_t map_size; /* initial map size; 0 = CKL__STATE_MAP_SIZE */
  size_t map_max;  /* growth limit; 0 = CKL__STATE_MAP_MAX */
} ckl__state_opts;

#define CKL__STATE_MAP_SIZE ((size_t)64 << 20)
#define CKL__STATE_MAP_MAX ((size_t)4 << 30)
#define CKL__STATE_MAX_READERS 1024

/*
 * Open STORE/.state (creating it 0700 if missing) and return a handle.
 * Damaged or unreadable environment files are moved aside to
 * data.mdb.damaged / lock.mdb.damaged and recreated, with a warning that
 * names the file and the cause; an environment left by a previous boot is
 * discarded (see docs/state.md). opts may be NULL; the first opener in the
 * process decides the map size.
 * 0, or -ENOENT (store_dir missing), -ENOTDIR, -ELOOP (.state is a
 * symlink), -EACCES, -EROFS, -ENOMEM, CKL_EVERSION, other -errno.
 */
int ckl__state_open(const char *store_dir, ckl__state **out);
int ckl__state_open_opts(const char *store_dir, const ckl__state_opts *opts, ckl__state **out);

/* Release a handle (NULL and inherited handles: no-op). The environment
 * closes with the last handle of the process. No other thread may be
 * using this handle (other handles of the store are unaffected). */
void ckl__state_close(ckl__state *st);

/* ---- roster --------------------------------------------------------------
 * One record per active holder, keyed by its random token. Writers
 * register BEFORE they touch any chunk: the GC's cutoff counts only writers
 * it can see. */

typedef struct ckl__roster_reg {
  const char *operation;   /* required: "backup", "gc", "forget", ... (<= 31 bytes) */
  const char *target;      /* snapshot or lock path; NULL = "" (<= 4095 bytes) */
  unsigned flags;          /* CKL_ROSTER_WRITER, CKL_ROSTER_EXCLUSIVE */
  int64_t lease_expiry_ns; /* wall clock; 0 = no lease (never expires) */
} ckl__roster_reg;

/* Register. Records whose operation is "backup" are always writers.
 * Writes the new token to token_out. 0, -EINVAL (operation missing or bad
 * flags), -ENAMETOOLONG (a field is too long), common errors. */
int ckl__state_register(ckl__state *st, const ckl__roster_reg *reg,
                        char token_out[CKL_TOKEN_HEX_LEN + 1]);

/* The identity a record claims. Tests (and only tests) forge records of
 * other hosts, boots or processes with ckl__state_register_as. */
typedef struct ckl__roster_ident {
  const char *host_id, *boot_id, *hostname;
  uint64_t pidns;
  int64_t pid, tid;
  uint64_t pid_start;
  int64_t start_ns; /* 0 = now */
} ckl__roster_ident;
int ckl__state_register_as(ckl__state *st, const ckl__roster_reg *reg,
                           const ckl__roster_ident *id, char token_out[CKL_TOKEN_HEX_LEN + 1]);

/*
 * Remove the record. 0, or -ENOENT when it was already gone: reaped (the
 * holder was judged dead or its lease expired) or the state was recreated.
 * A WRITER that gets -ENOENT must treat its work as unprotected: a GC may
 * have started without seeing it, so the snapshot it wrote must not be
 * published (CKL_ELOCKLOST). -EINVAL for a malformed token.
 */
int ckl__state_deregister(ckl__state *st, const char *token);

/* Move the record's lease expiry. 0, or -ENOENT when the record is gone:
 * the lease is lost and the caller cancels its task with CKL_ELOCKLOST.
 * CKL_ECORRUPT if the record no longer decodes. */
int ckl__state_refresh(ckl__state *st, const char *token, int64_t new_expiry_ns);

/* Roster listing: entries valid until ckl__roster_list_free. */
typedef struct ckl__roster_list {
  ckl_roster_entry *v;
  size_t n;
  char **bufs; /* per-entry string storage */
} ckl__roster_list;

/*
 * Every record that is not provably stale, in key order, reaping the stale
 * ones on sight (dead local holders; foreign holders whose lease expired
 * before now_ns). now_ns 0 = the wall clock. Unparseable records are
 * listed (parsed = 0, note set) and never reaped: unreadable holder
 * metadata counts as held. *reaped (optional) gets the number removed.
 * 0 or a common error.
 */
int ckl__state_list(ckl__state *st, int64_t now_ns, ckl__roster_list *out, int *reaped);
void ckl__roster_list_free(ckl__roster_list *l);

/* Reap stale records only. Returns the number removed, or an error. */
int ckl__state_reap(ckl__state *st, int64_t now_ns);

/*
 * Name a holder of `target` (the lock layer calls this to fill a
 * ckl_holder for a CKL_EBUSY). Prefers an exclusive record, then the
 * oldest; never reports a record it can prove stale (read-only: it does
 * not reap). 0 with out->known = 1, or -ENOENT (no live record names
 * that target; out->known = 0), or a common error.
 */
int ckl__state_holder_for_target(ckl__state *st, const char *target, ckl_holder *out);

/* Name the oldest live writer record of any OTHER process, as
 * ckl__state_holder_for_target does for a target (read-only): who holds
 * the process locker shared when an exclusive guard is refused (the
 * caller's own writers share its kernel lock and are never in the way).
 * 0 with out->known = 1, -ENOENT (no such writer), or a common error. */
int ckl__state_holder_writer(ckl__state *st, ckl_holder *out);

/* Start (wall clock ns) of the oldest writer record of any process,
 * reaping on sight: INT64_MAX if none. An unparseable record counts as a
 * writer that started at 0 (never free). 0 or a common error. */
int ckl__state_oldest_writer(ckl__state *st, int64_t now_ns, int64_t *start_ns);

/* Number of live writer records of every process, the caller's own
 * included, read-only (no reaping; stale records are skipped, unparseable
 * ones counted). What the GC sweep asks to decide whether to leave the
 * disk to writers (gc/sweep.h). 0 with *n, or a common error. */
int ckl__state_writers_live(ckl__state *st, int64_t now_ns, int *n);

/* Admin removal of one record (ckl_roster_remove). 0, -ENOENT, CKL_EBUSY
 * when the record is of a live local process (it is not stale: that
 * process must deregister itself). */
int ckl__state_remove(ckl__state *st, const char *token);

/* ---- record encoding (exposed for tests and the fuzz target) ------------
 * Version 1, little endian: a 64-byte fixed header (magic "CKLR", version,
 * header length, flags, pid, tid, pid start, pid ns, start ns, lease ns)
 * then five strings, each a u16 length and that many bytes: host id, boot
 * id, hostname, operation, target. The decoder is bounded: it never reads
 * outside [buf, buf+len), demands the exact total length, rejects unknown
 * versions and flags, NUL bytes and out-of-range lengths. */
#define CKL__ROSTER_REC_MAX (64 + 5 * 2 + 72 + 40 + 63 + 31 + 4095)

typedef struct ckl__roster_view {
  unsigned flags;
  int64_t pid, tid;
  uint64_t pid_start, pidns;
  int64_t start_ns, lease_expiry_ns;
  const char *str[5]; /* host id, boot id, hostname, operation, target */
  size_t len[5];      /* not NUL-terminated: pointers into the buffer */
} ckl__roster_view;

/* Decode. 0, or CKL_ECORRUPT / CKL_EVERSION with *why (optional) set to a
 * static description. */
int ckl__roster_decode(const void *buf, size_t len, ckl__roster_view *v, const char **why);
/* Encode into buf (cap >= CKL__ROSTER_REC_MAX is always enough). Returns
 * the length, or -ENAMETOOLONG / -EINVAL. */
int ckl__roster_encode(const ckl__roster_view *v, void *buf, size_t cap);

/* ---- GC state ------------------------------------------------------------
 * gc_active, the running GC's token and its phase-1 start, and the
 * removed-during-GC set: snapshots forgotten (moved to .trash) while a GC
 * was marking. See docs/state.md for the protocol these steps implement. */

typedef struct ckl__gc_begin_info {
  int64_t phase1_start_ns;        /* wall clock, taken inside the transaction */
  int64_t oldest_writer_start_ns; /* INT64_MAX when no writer is registered */
  int writers;                    /* writer records counted (incl. unparseable) */
  int unparseable;                /* unparseable records (counted as writers from 0) */
  int reaped;                     /* stale records removed */
  int recovered;                  /* 1: gc_active was left set by a GC that died */
  size_t stale_removed;           /* removed-set entries of that GC, cleared */
} ckl__gc_begin_info;

/* gc_begin flags. */
#define CKL__GC_DRY_RUN 1u /* the GC sweeps nothing: forgets need not wait for it */

/*
 * One write transaction: reap stale roster records; if gc_active is still
 * set (a GC died mid-run), take over; clear a stale removed set; set
 * gc_active with gc_token, phase1_start (now_ns, or the wall clock when
 * 0) and the flags (CKL__GC_DRY_RUN); read the oldest writer start over
 * all processes. The caller holds the GC lock. flags 0 is a GC that
 * sweeps. 0, -EINVAL (bad token or unknown flags), common errors.
 */
int ckl__state_gc_begin(ckl__state *st, const char *gc_token, int64_t now_ns, unsigned flags,
                        ckl__gc_begin_info *info);

/* What a forget transaction found, and so what the forget does with the
 * snapshot it moved to .trash. */
#define CKL__FORGET_NO_GC 0  /* no GC marks: not recorded; delete the copy now */
#define CKL__FORGET_KEEP 1   /* a GC that will sweep marks: recorded unmarked;
                                leave the copy in .trash for it to mark */
#define CKL__FORGET_DRY_GC 2 /* a dry-run GC marks: recorded settled (never
                                handed out for marking); delete the copy now */

/* The forget step that moves a snapshot to .trash. Called INSIDE the write
 * transaction with the verdict (CKL__FORGET_*) it will return; returns 0
 * or a negative code. */
typedef int (*ckl__forget_fn)(void *arg, int verdict);

/*
 * One write transaction: read the GC record; call fn(arg, verdict), which
 * renames the snapshot to STORE/<trash_rel>; if a GC is marking and fn
 * returned 0, add (snapshot_rel, trash_rel) to the removed set: unmarked
 * for a GC that sweeps, settled for a dry run; commit.
 *
 * Because the rename happens while this transaction holds LMDB's writer
 * mutex, and ckl__state_removed_take_unmarked checks the set and clears
 * gc_active in one write transaction, a forget is ordered entirely before
 * (its entry is handed to the GC for marking) or entirely after (it saw
 * gc_active == 0 and deletes at once) the GC's final check: it cannot slip
 * in between.
 *
 * A dry-run GC's entries only tell its mark that the index it may find
 * gone was forgotten (not damage); the dry run never marks the copy, so
 * the forget may delete it at once and never waits on a GC that deletes
 * nothing (and may run while the store is frozen).
 *
 * fn must be quick (every writer of every process waits) and must not
 * call into the state (self-deadlock on the writer mutex).
 *
 * Returns CKL__FORGET_NO_GC, CKL__FORGET_KEEP or CKL__FORGET_DRY_GC when
 * committed (an undecodable GC record answers KEEP: keeping a copy is
 * always safe); fn's error (the transaction is aborted, nothing recorded);
 * -ENAMETOOLONG (paths too long for a key); -EINVAL; common errors. If fn
 * succeeded but the commit failed, the error is returned and fn's rename
 * is NOT undone: the caller knows it moved the snapshot. The missing
 * removed-set entry is then safe: a GC that finds the snapshot's index
 * gone and not in the set aborts instead of sweeping.
 */
int ckl__state_forget_txn(ckl__state *st, const char *snapshot_rel, const char *trash_rel,
                          ckl__forget_fn fn, void *arg);

/* A removed-set entry's state. */
#define CKL__RM_UNMARKED 0 /* the GC has yet to mark its .trash copy */
#define CKL__RM_MARKED 1   /* handed out to the GC for marking */
#define CKL__RM_SETTLED 2  /* a dry run's: its forget deleted the copy; never marked */

typedef struct ckl__removed_item {
  char *snapshot_rel;
  char *trash_rel;
  int marked; /* CKL__RM_* */
} ckl__removed_item;

typedef struct ckl__removed_list {
  ckl__removed_item *v;
  size_t n;
} ckl__removed_list;
void ckl__removed_list_free(ckl__removed_list *l);

/*
 * One write transaction: if the removed set holds unmarked entries (never
 * settled ones), mark them as handed out and return them (the GC marks their trash indexes and
 * calls again); if it holds none, clear gc_active IN THE SAME TRANSACTION
 * and return 0 entries. Returns the number of entries returned, or
 * CKL_ELOCKLOST (the GC state belongs to another GC token: ours was taken
 * over), CKL_ECORRUPT (an entry does not decode: never sweep on a partial
 * view), common errors. With gc_active already clear, returns 0.
 */
int ckl__state_removed_take_unmarked(ckl__state *st, const char *gc_token,
                                     ckl__removed_list *out);

/*
 * Is snapshot_rel in the removed set (the mark phase found its index
 * gone)? Runs as a write transaction that commits nothing: it waits for a
 * forget transaction in flight, whose rename may already be visible on
 * disk while its set entry is not yet committed. 1, 0, or an error.
 */
int ckl__state_is_removed(ckl__state *st, const char *snapshot_rel);

/* Every entry of the removed set (for the trash purge). 0 or an error. */
int ckl__state_removed_list(ckl__state *st, ckl__removed_list *out);

/* End (gc_end) or abandon (gc_abort) the GC: clear gc_active and the
 * removed set in one write transaction. 0, or CKL_ELOCKLOST when the GC
 * state belongs to another token (nothing changed). */
int ckl__state_gc_end(ckl__state *st, const char *gc_token);
int ckl__state_gc_abort(ckl__state *st, const char *gc_token);

typedef struct ckl__gc_info {
  int active;
  int dry_run;      /* the GC of the record is (or was) a dry run */
  char token[CKL_TOKEN_HEX_LEN + 1];
  int64_t phase1_start_ns;
  int64_t began_ns;
  size_t removed;   /* entries in the removed set */
  size_t unmarked;  /* of which not yet handed out */
  int unparseable;  /* 1 when the GC record does not decode */
} ckl__gc_info;
/* Read-only snapshot of the GC state. 0 or an error. */
int ckl__state_gc_info(ckl__state *st, ckl__gc_info *out);

/* ---- test hooks ----------------------------------------------------------
 * Write raw bytes into one of the databases ("roster", "gc", "removed",
 * "meta"), bypassing every encoder: how tests plant unparseable records. */
int ckl__state_raw_put(ckl__state *st, const char *dbi, const void *key, size_t klen,
                       const void *val, size_t vlen);
/* Current map size of the handle's environment (tests of growth). */
size_t ckl__state_map_size(ckl__state *st);

#endif

/*
 * chunklock/runtime.h - the libuv runtime: chunklock operations as tasks
 * on an event loop (DESIGN.md sections 6 and 8; docs/runtime.md).
 *
 *     ckl_runtime *rt;
 *     ckl_runtime_opts ro = {.loop = my_loop};     // NULL: its own loop
 *     rc = ckl_runtime_new(&ro, &rt);
 *     ckl_task t;                                  // valid until done_cb
 *     ckl_task_gc_args ga = {.store = st, .timeout_ms = 60000};
 *     rc = ckl_task_gc(rt, &t, &ga, on_progress, on_done);
 *     ...                                          // run the loop
 *     ckl_task_cancel(&t);                         // optional
 *     ckl_runtime_close(rt, on_closed);            // cancels, drains
 *
 * Threads. Every callback (progress, done, close) runs on the loop
 * thread. Every ckl_runtime_* / ckl_task_* call must be made on the loop
 * thread, except the ckl_task_ctx_* calls a custom task's work function
 * makes on its worker thread. Blocking work never runs on the loop:
 *   - task steps (each attempt to take a task's locks, and the task's
 *     body: a GC, a backup, a verify ...) run on the runtime's own worker
 *     threads (at most max_threads at once; more tasks queue, FIFO). The
 *     libuv threadpool is never used: a GC or a big verify would hold one
 *     of its four threads for minutes and starve the embedder's uv_fs and
 *     getaddrinfo work, and the embedder's slow filesystem requests would
 *     in turn delay lease refreshes;
 *   - lease refreshes run on one lease thread per runtime, so a full
 *     worker pool never makes a lease late.
 * A task that waits for a lock occupies no thread: it tries, and when the
 * lock is busy, a uv timer brings it back after an exponential backoff
 * with jitter (capped at backoff_max_ms), until its deadline.
 *
 * Callbacks: a ckl_task_* call that returns an error never calls a
 * callback. One that returns 0 calls done_cb exactly once, never from
 * inside the call itself, and progress_cb (optional) only before done_cb.
 * After done_cb returns, the task struct belongs to the caller again.
 *
 * Leases (DESIGN.md section 6). Every lock a task holds and every roster
 * record it registered are leased: a uv timer refreshes them every TTL/3
 * on the lease thread (the lock file must still be the one that was locked,
 * ckl_path_lock_verify; the roster record must still exist, and its lease
 * expiry moves to now + TTL). A monitor measures time on the runtime clock
 * (CLOCK_BOOTTIME by default, which counts suspend). When a refresh fails
 * or comes more than TTL after the last good one (the machine slept, the
 * loop was blocked), the lease is lost: the task stops at its next safe
 * point, rolls back what it did, and ends with CKL_ELOCKLOST. A holder
 * never declares its own lease stale: its roster record is reaped only by
 * others, by the rules of roster.h.
 *
 * Strict GC fairness. A strict-mode GC (ckl_gc_opts.exclusive) that finds
 * the process locker held by writers of other processes registers an
 * "exclusive waiting" intent in the roster (operation "gc", target
 * "STORE/.lock#exclusive-wait"). Writers that start through any chunklock
 * runtime in another process (backup tasks, custom tasks that take the
 * process locker shared) see it and wait, as if the process locker were
 * busy, while the intent is younger than intent_max_ms: running writers
 * finish, no new ones start, the GC gets in. The guarantee is bounded both
 * ways: a GC never waits behind runtime writers that started after its
 * intent, for up to intent_max_ms; a writer never waits for an intent
 * longer than that. Writers that call the synchronous API directly do not
 * look at intents.
 */
#ifndef CHUNKLOCK_RUNTIME_H
#define CHUNKLOCK_RUNTIME_H

#include <sys/types.h>
#include <uv.h>

#include "backup.h"
#include "common.h"
#include "gc.h"
#include "lock.h"
#include "maintenance.h"
#include "snapshot.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ckl_runtime ckl_runtime;
typedef struct ckl_task ckl_task;
typedef struct ckl__task_impl ckl__task_impl;

/** A clock in nanoseconds that never goes back and counts suspend. Called
 * from any thread. */
typedef int64_t (*ckl_clock_fn)(void *arg);

/** Defaults of ckl_runtime_opts. */
#define CKL_RUNTIME_DEFAULT_THREADS 8
#define CKL_RUNTIME_DEFAULT_LEASE_TTL_MS 30000
#define CKL_RUNTIME_DEFAULT_PROGRESS_MS 250
#define CKL_RUNTIME_DEFAULT_BACKOFF_MAX_MS 1000
#define CKL_RUNTIME_DEFAULT_INTENT_MAX_MS 60000

typedef struct ckl_runtime_opts {
  uv_loop_t *loop;              /* NULL: the runtime makes its own loop */
  unsigned max_threads;         /* worker threads; 0 = 8, at most 256 */
  int64_t lease_ttl_ms;         /* 0 = 30 s; >= 30 ms */
  int64_t progress_interval_ms; /* least time between two progress events of a task; 0 = 250 */
  int64_t backoff_max_ms;       /* cap of the lock retry backoff; 0 = 1 s */
  int64_t intent_max_ms;        /* bound of a strict GC's intent; 0 = 60 s; < 0 = no intents */
  ckl_clock_fn clock;           /* lease monitor clock; NULL = CLOCK_BOOTTIME */
  void *clock_arg;
} ckl_runtime_opts;

/**
 * Create a runtime. opts may be NULL. With opts->loop NULL the runtime
 * owns a loop: run it with ckl_runtime_run (or uv_run(ckl_runtime_loop())).
 * The runtime's handles keep the loop alive only while tasks exist.
 * 0, -EINVAL (an option out of range), -ENOMEM, -errno from libuv or
 * pthread_create.
 */
CKL_EXTERN int ckl_runtime_new(const ckl_runtime_opts *opts, ckl_runtime **out);

/** The loop the runtime runs on. */
CKL_EXTERN uv_loop_t *ckl_runtime_loop(ckl_runtime *rt);

/** uv_run(loop, UV_RUN_DEFAULT): returns when no task (and nothing else
 * of the embedder's) is left. 0, or -EINVAL for NULL. */
CKL_EXTERN int ckl_runtime_run(ckl_runtime *rt);

/** Number of tasks submitted and not yet done (done_cb not yet returned). */
CKL_EXTERN size_t ckl_runtime_task_count(const ckl_runtime *rt);

/**
 * Refresh every held lease now instead of at the next heartbeat: for an
 * embedder that learns the machine resumed from suspend, and for tests.
 * Asynchronous; returns 0, or -EINVAL.
 */
CKL_EXTERN int ckl_runtime_refresh_now(ckl_runtime *rt);

typedef void (*ckl_runtime_close_cb)(ckl_runtime *rt, void *arg);

/**
 * Close: cancel every task (their done_cbs run with CKL_ECANCELED, or with
 * their own result if they finish first), wait for them to drain, stop the
 * threads, close the handles, then call close_cb (may be NULL) and free rt.
 * With a caller's loop this returns at once and the drain happens as the
 * loop runs; with the runtime's own loop, the loop is run here until
 * everything is closed, and close_cb has run when this returns.
 * Once closing, ckl_task_* calls return -ECANCELED. The threads are joined
 * on the loop thread, when every task is done (they are idle by then).
 * 0, -EINVAL (NULL), -EALREADY (already closing), -EBUSY (own loop, called
 * from inside ckl_runtime_run: libuv loops do not nest).
 */
CKL_EXTERN int ckl_runtime_close(ckl_runtime *rt, ckl_runtime_close_cb close_cb, void *arg);

/* ---- tasks ------------------------------------------------------------------ */

typedef enum ckl_task_type {
  CKL_TASK_CUSTOM = 1,
  CKL_TASK_GC,
  CKL_TASK_BACKUP,
  CKL_TASK_FORGET,
  CKL_TASK_PRUNE,
  CKL_TASK_VERIFY,
  CKL_TASK_READ
} ckl_task_type;

/** "custom", "gc", "backup", "forget", "prune", "verify", "read". */
CKL_EXTERN const char *ckl_task_type_name(ckl_task_type t);

/**
 * One progress event. Events are rate limited per task (at most one per
 * progress_interval_ms), so a phase shorter than that may never be seen.
 * Phases: "wait" (the task's locks are busy; waiting_for names the holder),
 * then the task's own: "mark", "sweep" (gc), "backup", "verify", "prune",
 * "read", "forget", or a custom task's.
 */
typedef struct ckl_task_progress {
  const char *phase;
  uint64_t done, total;      /* units of the phase; total 0 = unknown */
  uint64_t bytes;            /* bytes processed in the phase */
  double rate;               /* bytes per second over the phase so far */
  int64_t elapsed_ms;        /* since the task was submitted */
  const ckl_holder *waiting_for; /* phase "wait": who is in the way (known may be 0) */
} ckl_task_progress;

typedef void (*ckl_task_progress_cb)(ckl_task *task, const ckl_task_progress *p);
typedef void (*ckl_task_done_cb)(ckl_task *task, int status);

/**
 * A task. The caller allocates it (zeroing is not needed) and keeps it
 * valid until its done_cb has returned. Fields other than `data` are set
 * by the runtime and read-only for the caller.
 */
struct ckl_task {
  void *data;          /* the caller's */
  ckl_runtime *rt;
  ckl_task_type type;
  int status;          /* the done_cb's status, also left here */
  int attempts;        /* lock attempts made (1 = got the locks at once) */
  ckl_holder holder;   /* CKL_EBUSY / CKL_ETIMEDOUT: who was in the way */
  ckl__task_impl *impl_; /* private */
};

/**
 * Cancel a task. Queued or waiting for a lock: it ends with CKL_ECANCELED
 * (done_cb from a later loop iteration). Running: it stops at its next safe
 * point, rolls back, and ends with CKL_ECANCELED, unless it finishes first
 * (then with its own result). 0, -EINVAL (not a live task of a runtime),
 * -EALREADY (its result is already decided; done_cb is on its way).
 */
CKL_EXTERN int ckl_task_cancel(ckl_task *task);

/* ---- GC ---------------------------------------------------------------------- */

typedef struct ckl_task_gc_args {
  ckl_store *store;       /* open; must outlive the task */
  ckl_gc_opts opts;       /* wait_ms, cancel and busy_holder are ignored:
                             the task sets them */
  int64_t timeout_ms;     /* lock wait: CKL_TRY, ms, CKL_FOREVER */
} ckl_task_gc_args;

/**
 * Run a GC (ckl_gc_run) as a task. Phases "mark" (done/total: snapshots)
 * and "sweep" (done/total: chunk prefix directories, bytes seen). Status:
 * 0, CKL_EBUSY (CKL_TRY and another GC or, strict, another process's
 * writers: task->holder), CKL_ETIMEDOUT (same, at the deadline),
 * CKL_ECANCELED, CKL_ELOCKLOST (nothing half-removed, as for a cancel), and
 * the errors of ckl_gc_run. ckl_task_gc_result() has the result.
 * Returns 0, or -EINVAL (NULL arguments, bad timeout), -ECANCELED
 * (runtime closing), -ENOMEM.
 */
CKL_EXTERN int ckl_task_gc(ckl_runtime *rt, ckl_task *task, const ckl_task_gc_args *args,
                           ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

/** The GC result, valid during the done_cb of a GC task (NULL otherwise). */
CKL_EXTERN const ckl_gc_result *ckl_task_gc_result(const ckl_task *task);

/* ---- custom tasks --------------------------------------------------------------
 * The embedder's own work under chunklock locks: the runtime takes the
 * listed locks (waiting asynchronously), optionally registers a roster
 * record, runs work() on a worker thread under a lease, then deregisters
 * and releases. */

typedef enum ckl_task_lock_kind {
  CKL_TASK_LOCK_PROCESS = 1, /* the store's process locker (mode) */
  CKL_TASK_LOCK_GROUP,       /* group lock (exclusive only) */
  CKL_TASK_LOCK_SNAPSHOT,    /* snapshot lock (mode); the snapshot must exist */
  CKL_TASK_LOCK_PATH         /* any lock file (mode), not order-checked */
} ckl_task_lock_kind;

typedef struct ckl_task_lock_spec {
  ckl_task_lock_kind kind;
  ckl_lock_mode mode;
  ckl_group_name group;        /* GROUP */
  ckl_snapshot_name snapshot;  /* SNAPSHOT */
  const char *path;            /* PATH (copied) */
} ckl_task_lock_spec;

#define CKL_TASK_MAX_LOCKS 8

typedef struct ckl_task_ctx ckl_task_ctx;

/** The work of a custom task, on a worker thread. Returns the task's
 * status (>= 0 success). Must call ckl_task_ctx_check at safe points and,
 * when it says stop, undo its partial work and return that code. */
typedef int (*ckl_task_work_fn)(ckl_task_ctx *ctx, void *arg);

typedef struct ckl_task_custom_args {
  ckl_store *store;               /* required for PROCESS/GROUP/SNAPSHOT locks
                                     and for a roster record; else may be NULL */
  size_t nlocks;                  /* <= CKL_TASK_MAX_LOCKS */
  const ckl_task_lock_spec *locks; /* in the lock order (process, group,
                                     snapshot; PATH locks anywhere) */
  const char *operation;          /* register a roster record ("backup",
                                     "with-lock", ...; <= 31 bytes); NULL = none */
  const char *target;             /* its target; NULL = "" */
  unsigned roster_flags;          /* CKL_ROSTER_WRITER | CKL_ROSTER_EXCLUSIVE */
  int64_t timeout_ms;             /* lock wait: CKL_TRY, ms, CKL_FOREVER */
  ckl_task_work_fn work;          /* required */
  void *work_arg;
} ckl_task_custom_args;

/**
 * Submit a custom task. Status: work()'s return value, or before work
 * runs CKL_EBUSY / CKL_ETIMEDOUT (task->holder), CKL_ECANCELED, -ENOENT
 * (a snapshot to lock does not exist), CKL_ELOCKORDER, and the errors of
 * the lock and roster calls. Returns 0, -EINVAL (bad arguments), -ECANCELED
 * (runtime closing), -ENOMEM.
 */
CKL_EXTERN int ckl_task_custom(ckl_runtime *rt, ckl_task *task, const ckl_task_custom_args *args,
                               ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

/** A safe point: 0 to continue, CKL_ECANCELED (ckl_task_cancel), or
 * CKL_ELOCKLOST (the lease was lost). Worker thread only. */
CKL_EXTERN int ckl_task_ctx_check(ckl_task_ctx *ctx);

/** Report progress (rate limited on the way to the loop). phase must be a
 * string that lives until the task is done. Worker thread only. */
CKL_EXTERN void ckl_task_ctx_progress(ckl_task_ctx *ctx, const char *phase, uint64_t done,
                                      uint64_t total, uint64_t bytes);

/** The i-th lock of the spec list as held (PATH, GROUP, SNAPSHOT), for
 * ckl_path_lock_unlink or ckl_path_lock_verify; NULL for PROCESS locks or
 * out of range. Do not release it: the runtime does. */
CKL_EXTERN ckl_path_lock *ckl_task_ctx_lock(ckl_task_ctx *ctx, size_t i);

/** The roster token of the task's record ("" if none). */
CKL_EXTERN const char *ckl_task_ctx_token(ckl_task_ctx *ctx);

/** The task (for its data pointer). */
CKL_EXTERN ckl_task *ckl_task_ctx_task(ckl_task_ctx *ctx);

/* ---- backup -------------------------------------------------------------------------
 * A backup session (backup.h) driven by the task: begin (locks, roster),
 * then each archive read from its source and cut into chunks of
 * chunk_size bytes (the last may be shorter), inserted (a dedup hit only
 * touches), then finish (manifest). A safe point before every chunk and
 * before finish: a cancel or a lost lease aborts the session, which removes
 * the partial snapshot through the forget path; nothing is published.
 * Content-defined chunking is the caller's: use a custom task and the
 * backup API for it. */

/** Read up to len bytes of the archive into buf, on a worker thread.
 * Returns the number of bytes (0 at the end) or a negative code, which
 * becomes the task's status (the backup is aborted). */
typedef ssize_t (*ckl_task_read_fn)(void *arg, void *buf, size_t len);

typedef struct ckl_task_archive {
  const char *name;         /* "root.didx", "disk.fidx" (copied) */
  uint64_t chunk_size;      /* bytes per chunk; 0 = the store's average size */
  ckl_task_read_fn read;    /* the source; NULL: data/size below */
  void *read_arg;
  const void *data;         /* read == NULL: the archive's bytes (not copied:
                               valid until done_cb) */
  size_t size;
  uint64_t size_hint;       /* expected bytes for progress (0: size, or unknown) */
} ckl_task_archive;

#define CKL_TASK_MAX_ARCHIVES 64

typedef struct ckl_task_backup_args {
  ckl_store *store;
  ckl_group_name group;
  ckl_backup_opts opts;          /* time_s, base, flags; the task sets the
                                    process locker wait and busy_holder */
  size_t narchives;              /* 1 .. CKL_TASK_MAX_ARCHIVES */
  const ckl_task_archive *archives; /* copied */
  int64_t timeout_ms;            /* lock wait: CKL_TRY, ms, CKL_FOREVER */
} ckl_task_backup_args;

/**
 * Back up as a task. Phase "backup": done/total in bytes over all
 * archives (total 0 when unknown), bytes the same. Status: 0, CKL_EBUSY /
 * CKL_ETIMEDOUT (the group is being backed up or pruned, the base is being
 * forgotten, a strict GC holds the process locker, or another process's
 * strict GC waits for it: task->holder), CKL_ECANCELED, CKL_ELOCKLOST
 * (nothing published, the partial snapshot removed), a read callback's
 * error, and the errors of ckl_backup_begin / _archive_* / _finish.
 * Returns 0, -EINVAL (bad arguments), -ECANCELED (runtime closing), -ENOMEM.
 */
CKL_EXTERN int ckl_task_backup(ckl_runtime *rt, ckl_task *task, const ckl_task_backup_args *args,
                               ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

/** The snapshot a backup task wrote (or was writing), valid during its
 * done_cb; NULL otherwise or when begin never succeeded. */
CKL_EXTERN const ckl_snapshot_name *ckl_task_backup_snapshot(const ckl_task *task);

/* ---- read (restore) ------------------------------------------------------------------- */

/** Receive bytes of an archive, in order, on a worker thread. Return 0 to
 * go on or a negative code to stop (it becomes the task's status). */
typedef int (*ckl_task_write_fn)(void *arg, const char *archive, uint64_t offset,
                                 const void *buf, size_t len);

typedef struct ckl_task_read_args {
  ckl_store *store;
  ckl_snapshot_name snapshot;
  const char *archive;      /* one archive (copied); NULL = all, in manifest order */
  ckl_task_write_fn write;  /* required */
  void *write_arg;
  int64_t timeout_ms;       /* lock wait */
} ckl_task_read_args;

/**
 * Read a snapshot as a task (ckl_reader_*: snapshot lock shared, so it
 * cannot be forgotten meanwhile). Phase "read": done/total in bytes.
 * Status: 0, CKL_EBUSY / CKL_ETIMEDOUT (being written or forgotten),
 * CKL_ECANCELED, CKL_ELOCKLOST, the write callback's error, and the errors
 * of ckl_reader_open / _archive_open / _archive_read (-ENOENT,
 * CKL_ECORRUPT, ...). Returns 0, -EINVAL, -ECANCELED, -ENOMEM.
 */
CKL_EXTERN int ckl_task_read(ckl_runtime *rt, ckl_task *task, const ckl_task_read_args *args,
                             ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

/* ---- forget, prune, verify ----------------------------------------------------------- */

typedef struct ckl_task_forget_args {
  ckl_store *store;
  ckl_snapshot_name snapshot;
  int64_t timeout_ms;       /* waiting for readers, verifies, a backup's base */
} ckl_task_forget_args;

/** Forget as a task (ckl_forget; one step, no safe point inside). Status:
 * CKL_FORGET_DELETED, CKL_FORGET_TRASHED, or CKL_EBUSY / CKL_ETIMEDOUT
 * (task->holder), CKL_ECANCELED (before it ran), and ckl_forget's errors.
 * Returns 0, -EINVAL, -ECANCELED, -ENOMEM. */
CKL_EXTERN int ckl_task_forget(ckl_runtime *rt, ckl_task *task, const ckl_task_forget_args *args,
                               ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

typedef struct ckl_task_prune_args {
  ckl_store *store;
  ckl_group_name group;
  ckl_prune_opts opts;      /* busy_holder is set by the task */
  int64_t timeout_ms;       /* waiting for the group lock */
} ckl_task_prune_args;

/** Prune as a task. Phase "prune": snapshots considered / total. A cancel
 * or a lost lease stops it between two removals: the rest keep rc
 * CKL_ECANCELED / CKL_ELOCKLOST and so does the task. Status: ckl_prune's
 * result, CKL_EBUSY / CKL_ETIMEDOUT, CKL_ECANCELED, CKL_ELOCKLOST.
 * Returns 0, -EINVAL, -ECANCELED, -ENOMEM. */
CKL_EXTERN int ckl_task_prune(ckl_runtime *rt, ckl_task *task, const ckl_task_prune_args *args,
                              ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

/** The prune's items (newest first) and their count, valid during the
 * done_cb of a prune task; NULL and 0 otherwise. */
CKL_EXTERN const ckl_prune_item *ckl_task_prune_items(const ckl_task *task, size_t *count);

typedef struct ckl_task_verify_args {
  ckl_store *store;
  ckl_snapshot_name snapshot;
  int64_t timeout_ms;
} ckl_task_verify_args;

/** Verify as a task. Phase "verify": chunks read (total unknown), logical
 * bytes. A cancel or a lost lease stops it between two chunks with nothing
 * written to the manifest. Status: 0 (ok), CKL_ECORRUPT (failed, recorded),
 * CKL_EBUSY / CKL_ETIMEDOUT, CKL_ECANCELED, CKL_ELOCKLOST, and ckl_verify's
 * errors. Returns 0, -EINVAL, -ECANCELED, -ENOMEM. */
CKL_EXTERN int ckl_task_verify(ckl_runtime *rt, ckl_task *task, const ckl_task_verify_args *args,
                               ckl_task_progress_cb progress_cb, ckl_task_done_cb done_cb);

/** The verify result, valid during the done_cb of a verify task. */
CKL_EXTERN const ckl_verify_result *ckl_task_verify_result(const ckl_task *task);

#ifdef __cplusplus
}
#endif
#endif

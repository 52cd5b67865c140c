/*
 * chunklock/gc.h - garbage collection that never blocks writers.
 *
 *     ckl_gc_opts o = {0};               // defaults: try, store's safety
 *     ckl_gc_result r;
 *     ckl_holder who = {0};
 *     o.busy_holder = &who;
 *     int rc = ckl_gc_run(store, &o, &r);
 *     if (rc == CKL_EBUSY) ... another GC (or, in strict mode, a writer
 *                              in another process) holds the store: `who`
 *
 * The protocol (DESIGN.md section 5):
 *   1. GC lock (one GC per store across threads and processes); strict
 *      mode also takes the process locker exclusively.
 *   2. One LMDB write transaction: gc_active = 1, phase1_start = now, the
 *      oldest registered writer's start over all processes.
 *   3. atime check: refuse (CKL_EATIME) where utimensat does not move atime.
 *   4. Mark: touch every chunk every index references (each unique digest
 *      once). An index that vanished is accepted only if its snapshot is in
 *      the removed-during-GC set (a forget moved it to .trash, where it is
 *      marked next); otherwise GC aborts before any sweep (CKL_EGCABORT).
 *      Then mark the removed-during-GC set until one write transaction finds
 *      nothing unmarked and clears gc_active in that same transaction.
 *   5. Sweep with cutoff = min(phase1_start - safety, oldest_writer) - margin:
 *      rename-then-verify per chunk (see gc/sweep.h), no lock on writers.
 *   6. Purge .trash/, write STORE/.gc-status (JSON, atomic replace).
 * Backups in any process keep running throughout (default mode).
 *
 * Errors of ckl_gc_run:
 *   CKL_EBUSY       another GC runs (busy_holder names it), or strict mode and
 *                   another process holds writer (shared) guards, or (not in
 *                   dry-run mode) the store is frozen (freeze.h), try mode
 *   CKL_ETIMEDOUT   the same, after opts->wait_ms
 *   CKL_EATIME      the filesystem does not update atime on utimensat
 *   CKL_EGCABORT    an index vanished outside forget, or could not be read
 *                   (EACCES/EIO/corrupt): nothing was swept
 *   CKL_ECANCELED   opts->cancel was set; the store is consistent, gc_active
 *                   cleared, nothing half-removed
 *   CKL_ELOCKLOST   the coordination state was lost mid-run (another process
 *                   recreated it): aborted before the sweep, or the sweep
 *                   stopped
 *   -errno          I/O errors (named in the log)
 * In every error case gc_active is cleared and no chunk a snapshot needs
 * was removed.
 */
#ifndef CHUNKLOCK_GC_H
#define CHUNKLOCK_GC_H

#include "common.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ckl_gc_opts {
  int dry_run;              /* report what would be removed; remove nothing.
                               Forgets during it delete at once, and their
                               chunks count as garbage (docs/gc.md) */
  int exclusive;            /* strict mode: process locker exclusive too */
  int64_t wait_ms;          /* lock waits: CKL_TRY (default), ms, CKL_FOREVER */
  int64_t atime_safety_s;   /* < 0 or unset (0 with use_safety == 0): store config */
  int use_safety;           /* 1: atime_safety_s overrides the store's value */
  int threads;              /* sweep threads; 0 = auto: 2, but 1 while backups are
                               registered (the sweep leaves the disk to them) */
  const int *cancel;        /* optional; set to non-zero (with __atomic_store_n
                               or an atomic int) to cancel at the next step */
  ckl_holder *busy_holder;  /* out, optional: who holds the lock on EBUSY */
} ckl_gc_opts;

typedef struct ckl_gc_result {
  int64_t start_ns, end_ns;        /* wall clock */
  int64_t phase1_start_ns;
  int64_t oldest_writer_ns;        /* INT64_MAX when no writer ran */
  int64_t cutoff_ns;
  int64_t mark_ns, sweep_ns, purge_ns; /* phase durations */
  uint64_t index_files;            /* indexes marked (incl. removed set) */
  uint64_t removed_set_snapshots;  /* snapshots marked from .trash */
  uint64_t references;             /* digests read, with repeats */
  uint64_t referenced_chunks;      /* unique digests */
  uint64_t cache_hits, cache_misses;
  uint64_t missing_chunks;         /* referenced but absent (damage) */
  uint64_t logical_bytes;          /* sum of archive sizes marked */
  uint64_t disk_chunks, disk_bytes;
  uint64_t removed_chunks, removed_bytes;
  uint64_t pending_chunks, pending_bytes;
  uint64_t bad_chunks;
  uint64_t trash_purged;           /* .trash entries removed */
  uint64_t touch_set_bytes;        /* memory of the touched-digest set */
  int dry_run, exclusive;
} ckl_gc_result;

/** Run one GC. See the header comment for the errors. `out` is filled
 * on success and, as far as the run got, on error. */
CKL_EXTERN int ckl_gc_run(ckl_store *st, const ckl_gc_opts *opts, ckl_gc_result *out);

/** Read STORE/.gc-status (the last successful GC) into out. 0, -ENOENT
 * (no GC yet), CKL_ECORRUPT. */
CKL_EXTERN int ckl_gc_status_load(ckl_store *st, ckl_gc_result *out);

#ifdef __cplusplus
}
#endif
#endif

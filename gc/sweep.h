/*
 * gc/sweep.h - phase 2 of GC: remove chunks whose atime is below the cutoff.
 *
 * The protocol (DESIGN.md section 5) needs no lock against writers:
 *
 *   for each chunk with atime < cutoff:
 *     rename(<hex>, .gc-<hex>)              # failpoint gc.sweep.before_rename / after_rename
 *     fstatat(.gc-<hex>)
 *     if atime still < cutoff: unlink(.gc-<hex>)
 *     else: renameat2(.gc-<hex>, <hex>, RENAME_NOREPLACE)
 *           and on EEXIST unlink(.gc-<hex>)   # a writer rewrote it meanwhile
 *
 * Why it is safe: a writer reuses a chunk only by touching it (utimensat,
 * atime = now >= phase1_start > cutoff) and treats success as "the chunk
 * exists". A touch that lands before the rename moves the new atime along
 * with the inode, so the re-stat sees it and the chunk goes back. A touch
 * after the rename finds no file (ENOENT) and the writer uploads the chunk
 * again. Either way the chunk is present when the writer finishes.
 *
 * The trash name is deterministic (one GC per store at a time, guaranteed
 * by the GC lock), so a GC that crashed between rename and unlink/put-back
 * leaves ".gc-<hex>" files that the next sweep judges like any chunk:
 * restored when their atime is recent, removed when not.
 *
 * Insert temp files (".tmp-*") older than the cutoff belong to writers that
 * died (every live writer started after the cutoff: the cutoff is at or
 * below the oldest registered writer's start) and are removed.
 */
#ifndef CKL_GC_SWEEP_H
#define CKL_GC_SWEEP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Threads. A fixed count (threads >= 1) sweeps with that many threads from
 * start to end. threads == 0 is "auto": two threads, except while writers
 * are registered, when the helper stands by and the calling thread sweeps
 * alone. A sweep is mostly metadata I/O on the disk the writers write to;
 * with writers running, a second sweep thread bought little GC time and
 * cost them a fifth of their throughput (docs/benchmarks.md, figure 5).
 * The calling thread asks writers_live() before starting the helpers and
 * then after every SWEEP_RECHECK_BATCHES batches (16 x 64 directories, 64
 * times per sweep); an error answer counts as "writers". The helpers wait
 * on a condition variable, woken when the answer turns to "none" and when
 * the sweep ends, so they never hold up its end.
 */
typedef struct ckl__sweep_opts {
  int chunks_dirfd;        /* fd of STORE/.chunks (O_DIRECTORY) */
  int64_t cutoff_ns;       /* atime < cutoff => garbage */
  int64_t pending_below_ns;/* cutoff ignoring writers: cutoff <= atime < this => pending */
  bool dry_run;            /* count only */
  int threads;             /* worker threads, >= 1; 0 = auto (above) */
  atomic_bool *cancel;     /* optional: set to stop at the next directory */
  /* auto mode only (optional): > 0 while writers are registered, 0 when
   * none, < 0 on error; called on the calling thread only */
  int (*writers_live)(void *arg);
  void *writers_arg;
} ckl__sweep_opts;

typedef struct ckl__sweep_stats {
  uint64_t disk_chunks, disk_bytes;       /* chunks seen (before removal) */
  uint64_t removed_chunks, removed_bytes; /* removed (or would be, dry run) */
  uint64_t pending_chunks, pending_bytes; /* kept only because of a writer */
  uint64_t bad_chunks, bad_bytes;         /* "<hex>.N.bad" files */
  uint64_t restored;                      /* touched during the rename window, put back */
  uint64_t rewritten;                     /* rewritten by a writer in the window; copy dropped */
  uint64_t temps_removed;                 /* abandoned insert temp files */
  uint64_t leftovers;                     /* ".gc-" files of a crashed GC that were judged */
  uint64_t errors;                        /* entries that could not be handled (logged) */
  uint64_t helper_batches;                /* batches of 64 directories swept by helpers */
  uint64_t writer_checks;                 /* writers_live() calls (auto mode) */
} ckl__sweep_stats;

/* Sweep all 65,536 prefix directories. 0, CKL_ECANCELED, or the first
 * fatal -errno (a prefix directory that cannot be opened for a reason other
 * than ENOENT, or cannot be read). Per-entry failures are counted in errors
 * and logged; they never cause a removal. */
int ckl__sweep(const ckl__sweep_opts *opts, ckl__sweep_stats *stats);

#endif

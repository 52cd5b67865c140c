/*
 * tests/support/invariants.h - the one store invariant checker shared by
 * the race matrix (tests/race/) and the soak tests.
 *
 * After any interleaving of operations, a store must satisfy:
 *   (a) every chunk a live snapshot references exists and its content
 *       matches its digest: every index of every finished snapshot (one
 *       with a manifest), plus the chunks in-progress backups have
 *       already written (o->live_chunks);
 *   (b) no ckl_update_manifest update was lost: per-snapshot counters
 *       kept in the manifest's "unprotected" object have the value the
 *       test expects (the number of updates that returned 0);
 *   (c) when nothing runs (o->quiescent): no lock outlives its holder
 *       (every lock file under the lock namespace and every byte 0..4 of
 *       STORE/.lock could be taken exclusively right now), the roster
 *       holds no record except of the pids in o->pids, and gc_active is
 *       clear;
 *   (d) nothing is left behind (ckl_inv_no_leftovers): no half-created
 *       snapshot, no temp file or directory, no sweep name, no .trash
 *       entry, unless a running operation owns it.
 *
 * What it relies on, and nothing else:
 *   - ckl_group_list / ckl_snapshot_list to find snapshots (state
 *     COMPLETE = index.json present), ckl_manifest_load for (b) and to
 *     check a complete snapshot's manifest parses;
 *   - ckl_index_open to read each *.didx / *.fidx the directory holds;
 *   - ckl_chunk_read, which re-hashes the plain content and compares it
 *     with the digest (CKL_ECORRUPT on any mismatch, -ENOENT if absent).
 *     It reads through the normal open path, so on a relatime mount it
 *     may move a referenced chunk's atime forward; referenced chunks are
 *     never garbage, so no GC verdict changes;
 *   - ckl_path_lock_probe (which also reports locks of the calling
 *     process as busy) and F_OFD_GETLK on STORE/.lock, which see holders
 *     of every thread and process without taking anything;
 *   - ckl_roster_list (which reaps records of dead processes first) and
 *     ckl_roster_gc_state;
 *   - the temp name formats of locks/atomic_file.h (".<name>.tmp-<16 hex>",
 *     ".<name>.tmpdir-<16 hex>", with an OFD lock / flock while owned) and
 *     of datastore/chunk.c (".tmp-<digest>-<16 hex>" in a prefix
 *     directory, owned by some registered writer), and the sweep's
 *     ".gc-" names (owned while the GC lock, byte 1, is held).
 * It does not call ckl_fsck: the matrix must not depend on the code it
 * checks more than it has to, and fsck's notion of "in flight" is looser
 * (age-based) than "quiescent" needs.
 *
 * The checker only reads: it creates no lock file, takes no lock, writes
 * nothing. It opens its own store handle.
 */
#ifndef CKL_TEST_INVARIANTS_H
#define CKL_TEST_INVARIANTS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "chunklock/chunklock.h"

/* The checker's results: one code per broken invariant, so a test can
 * assert which one broke. All are negative; `why` names the file,
 * snapshot or holder. A check that cannot run at all (the store does not
 * open, a directory cannot be listed) is CKL_INV_ESTORE. */
#define CKL_INV_ECHUNK_MISSING (-ENOENT)   /* (a) a referenced chunk is absent */
#define CKL_INV_ECHUNK_CORRUPT CKL_ECORRUPT /* (a) a referenced chunk fails its digest */
#define CKL_INV_EINDEX (-EBADMSG)          /* (a) an index or manifest of a finished
                                              snapshot does not open or parse */
#define CKL_INV_ELOST_UPDATE (-ESTALE)     /* (b) a counter differs from the expected */
#define CKL_INV_ELOCK_HELD CKL_EBUSY       /* (c) a lock is held while quiescent */
#define CKL_INV_EROSTER (-EUSERS)          /* (c) a roster record of a live holder */
#define CKL_INV_EGC_ACTIVE (-EINPROGRESS)  /* (c) gc_active is set while quiescent */
#define CKL_INV_ELEFTOVER (-ENOTEMPTY)     /* (d) something was left behind */
#define CKL_INV_ESTORE (-ENODEV)           /* the store cannot be opened or listed */

/* Default key of a counter in "unprotected". */
#define CKL_INV_COUNTER_KEY "counter"

typedef struct ckl_inv_counter {
  const char *snapshot; /* "type/id/time" */
  const char *key;      /* key in "unprotected"; NULL = CKL_INV_COUNTER_KEY;
                           an absent key reads as 0 */
  int64_t expected;     /* the value: updates that returned 0 */
  int gone_ok;          /* 1: the snapshot may have been forgotten (then
                           nothing is compared); 0: it must exist */
} ckl_inv_counter;

typedef struct ckl_inv_opts {
  /* 1: no operation runs now; checks (c) and the store-wide (d). */
  int quiescent;
  /* Chunks written by backups in progress and not aborted: each must
   * exist and match its digest. */
  const ckl_digest *live_chunks;
  size_t nlive_chunks;
  /* (b): counters to compare. */
  const ckl_inv_counter *counters;
  size_t ncounters;
  /* (c): roster records of these pids are allowed while quiescent (e.g.
   * a test's own long-lived holder); every other live record fails. */
  const int64_t *pids;
  size_t npids;
  /* (d): scan only the .chunks prefix directories whose mtime is at or
   * after this wall-clock second (an entry created, renamed or removed
   * in a directory moves its mtime); 0 scans all 65,536. */
  int64_t chunk_scan_since_s;
} ckl_inv_opts;

/*
 * Check invariants (a) and (b), and with o->quiescent also (c) and the
 * store-wide (d). o may be NULL (just (a)). why (optional) receives one
 * line naming what is wrong. Returns 0 or the first broken invariant's
 * CKL_INV_E* code, in the order (a), (b), (c), (d).
 */
int ckl_inv_check(const char *store_path, const ckl_inv_opts *o, char *why, size_t whylen);

/*
 * (d) "The loser left nothing behind": the snapshot `snapshot` ("type/
 * id/time", or NULL) either does not exist or is complete (has its
 * manifest), whoever holds it; and anywhere in the store there is no
 * half-created snapshot nobody holds, no atomic temp file or directory
 * whose writer's lock is gone, no chunk temp file while no writer is
 * registered, no ".gc-" name while the GC lock is free, and no .trash
 * entry while no GC is marking. chunk_scan_since_s as in ckl_inv_opts.
 * 0, CKL_INV_ELEFTOVER (why names the path), CKL_INV_ESTORE.
 */
int ckl_inv_no_leftovers(const char *store_path, const char *snapshot, int64_t chunk_scan_since_s,
                         char *why, size_t whylen);

#endif

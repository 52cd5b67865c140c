/*
 * gc/mark.h - phase 1 of GC: touch every chunk an index references.
 *
 * Touching (utimensat atime = now) is what protects a chunk from the
 * sweep: every touched chunk has atime >= phase1_start > cutoff. Each
 * unique digest is touched once per run (the digest set), which is the
 * same number of utimensat calls as the minimal floor program.
 */
#ifndef CKL_GC_MARK_H
#define CKL_GC_MARK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "chunklock/chunk.h"
#include "datastore/digest_set.h"

typedef struct ckl__mark_stats {
  uint64_t index_files;      /* indexes marked */
  uint64_t references;       /* digests read from them, with repeats */
  uint64_t touched;          /* unique digests touched (cache misses) */
  uint64_t cache_hits;       /* repeats skipped thanks to the set */
  uint64_t missing_chunks;   /* referenced but absent: damage for fsck */
  uint64_t logical_bytes;    /* sum of the marked archives' sizes */
} ckl__mark_stats;

/*
 * Mark one index file. Returns 0; -ENOENT when the index does not exist
 * (the caller decides whether that is a forget or an abort); or an error
 * that must abort the GC before any sweep: -EACCES/-EPERM/-EIO reading the
 * index, CKL_ECORRUPT/CKL_EVERSION (cannot know what it references), an
 * error touching a chunk other than ENOENT (the chunk could not be
 * protected), -ENOMEM, CKL_ECANCELED. A chunk that is missing is counted
 * and logged, not fatal: it is already lost, GC cannot make it worse.
 */
int ckl__mark_index(ckl_chunkstore *cs, const char *index_path, ckl__digest_set *touched,
                    ckl__mark_stats *st, atomic_bool *cancel);

#endif

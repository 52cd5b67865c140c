/*
 * datastore/digest_set.h - an exact set of chunk digests: the GC mark's
 * "already touched this run", the backup's "proven to exist" (every digest
 * an index references was inserted or touched by the writer), verify's and
 * fsck's "already checked".
 *
 * Open addressing over full 32-byte digests. No false positives, ever: a
 * false positive would skip the touch of a referenced chunk and let the
 * sweep delete it, so compact probabilistic filters are not an option.
 * Memory: 32 bytes per slot, load factor <= 0.75, power-of-two slots, so
 * 43-64 bytes per unique referenced chunk (about 64 MiB at 1 M chunks,
 * plus a transient x1.5 while growing).
 */
#ifndef CKL_DATASTORE_DIGEST_SET_H
#define CKL_DATASTORE_DIGEST_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunklock/chunk.h"

typedef struct ckl__digest_set {
  ckl_digest *slots;   /* all-zero = empty slot */
  size_t cap;          /* power of two, 0 when unallocated */
  size_t count;        /* entries excluding the zero digest */
  bool has_zero;       /* the all-zero digest is tracked out of band */
} ckl__digest_set;

/* Insert: 1 if newly added, 0 if already present, -ENOMEM. A zeroed
 * struct is an empty set. */
int ckl__digest_set_insert(ckl__digest_set *s, const ckl_digest *d);
bool ckl__digest_set_contains(const ckl__digest_set *s, const ckl_digest *d);
size_t ckl__digest_set_count(const ckl__digest_set *s);
size_t ckl__digest_set_bytes(const ckl__digest_set *s);
void ckl__digest_set_free(ckl__digest_set *s);

#endif

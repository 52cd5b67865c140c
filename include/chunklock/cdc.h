/*
 * chunklock/cdc.h - content-defined chunking (FastCDC).
 *
 * Splits a byte stream into chunks whose boundaries depend on the content,
 * so that inserting or deleting bytes changes only the chunks near the
 * edit and every other chunk deduplicates against earlier backups.
 *
 * The algorithm is FastCDC (Xia et al., "FastCDC: a Fast and Efficient
 * Content-Defined Chunking Approach for Data Deduplication", USENIX ATC
 * 2016): a gear rolling hash (fp = (fp << 1) + G[byte]), cut-point
 * skipping (no boundary is looked for in the first min_size bytes of a
 * chunk), and normalized chunking (a stricter mask, 2 more bits, before
 * the average size and a looser one, 2 fewer bits, after it, which
 * narrows the distribution of chunk sizes around the average). The masks
 * test the hash's HIGH bits: after the shift, bit k of the gear hash
 * depends on the last k + 1 bytes, so the high bits carry a window of up
 * to 64 bytes while the low bits would see only the last few.
 *
 * Sizes: avg_size is a power of two in [CKL_CDC_MIN_AVG, CKL_CDC_MAX_AVG];
 * min_size = avg_size / 4, max_size = avg_size * 4 (so the largest chunk,
 * 16 MiB at the largest average, is CKL_CHUNK_MAX).
 *
 * The gear table is a fixed constant of the format: the same input and
 * average always give the same chunks, in every version and on every
 * machine (backups deduplicate against each other only if they agree).
 *
 * Streaming: ckl_cdc_next looks at most max_size bytes ahead, so a caller
 * keeps a buffer of max_size bytes, refills it, and asks where the chunk
 * at its start ends:
 *
 *     ckl_cdc c;
 *     ckl_cdc_init(&c, 0);                     // 1 MiB average
 *     // buf holds `have` bytes; have >= c.max_size unless at end of input
 *     size_t n = ckl_cdc_next(&c, buf, have);  // the first chunk is buf[0..n)
 *
 * All functions are pure: thread-safe, no allocation, no I/O.
 */
#ifndef CHUNKLOCK_CDC_H
#define CHUNKLOCK_CDC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_CDC_DEFAULT_AVG (1u << 20) /* 1 MiB */
#define CKL_CDC_MIN_AVG 64u
#define CKL_CDC_MAX_AVG (4u << 20)     /* max_size = 16 MiB = CKL_CHUNK_MAX */

typedef struct ckl_cdc {
  uint32_t min_size, avg_size, max_size;
  uint64_t mask_s; /* before avg_size: log2(avg) + 2 high bits must be 0 */
  uint64_t mask_l; /* from avg_size on: log2(avg) - 2 high bits */
} ckl_cdc;

/**
 * Set up a chunker with average size avg_size (0 = CKL_CDC_DEFAULT_AVG).
 * 0, or -EINVAL (c is NULL, avg_size is not a power of two or is outside
 * [CKL_CDC_MIN_AVG, CKL_CDC_MAX_AVG]).
 */
CKL_EXTERN int ckl_cdc_init(ckl_cdc *c, uint32_t avg_size);

/**
 * Length of the chunk that starts at data. The caller passes
 * len >= c->max_size bytes, or all that remains of the input when less is
 * left (the input is then taken to end at data + len). The result is in
 * [1, min(len, max_size)]: len itself when len <= min_size; otherwise the
 * first content boundary at or after min_size, or max_size. 0 only when
 * len is 0 (or c or data is NULL).
 */
CKL_EXTERN size_t ckl_cdc_next(const ckl_cdc *c, const void *data, size_t len);

/** Called once per chunk, in order; return 0 to go on, or a negative
 * code to stop the split (ckl_cdc_split then returns it). */
typedef int (*ckl_cdc_cb)(const void *chunk, size_t len, void *arg);

/**
 * Split a whole in-memory buffer, calling cb for each chunk. Returns the
 * number of chunks (0 for an empty buffer, capped at INT_MAX), the
 * callback's negative return value when it stops the split, or -EINVAL
 * (c or cb NULL, data NULL with len > 0).
 */
CKL_EXTERN int ckl_cdc_split(const ckl_cdc *c, const void *data, size_t len, ckl_cdc_cb cb,
                             void *arg);

#ifdef __cplusplus
}
#endif
#endif

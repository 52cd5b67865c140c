/*
 * chunklock/index.h - index files: which chunks make up an archive.
 *
 * Dynamic index (.didx): entries of (end offset, digest), for
 * content-defined chunks of varying size. Fixed index (.fidx): one chunk
 * size and a list of digests, for images. Both have a 128-byte header
 * (magic, version, kind, UUID, creation time, counts, SHA-256 of the
 * entries, CRC32C of the header); docs/datastore.md has the layout.
 *
 * Indexes are written once, through a temp file renamed into place, and
 * read whole with pread (not mmap, whose read errors are SIGBUS), every
 * offset bounds-checked: a truncated or malformed index is CKL_ECORRUPT,
 * a failed read -EIO, never a crash.
 *
 * Writing:
 *     ckl_index_writer *w;
 *     rc = ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, 0, &w);
 *     rc = ckl_index_writer_add(w, end_offset, &digest);  ... per chunk
 *     rc = ckl_index_writer_commit(w, &file_sha256);  // frees w, even on error
 *   or ckl_index_writer_abort(w) to drop it (removes the temp file).
 *
 * Reading:
 *     ckl_index *ix;
 *     rc = ckl_index_open(path, &ix);
 *     for (size_t i = 0; i < ckl_index_count(ix); i++) use(ckl_index_digest(ix, i));
 *     ckl_index_close(ix);
 */
#ifndef CHUNKLOCK_INDEX_H
#define CHUNKLOCK_INDEX_H

#include "chunk.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ckl_index_kind {
  CKL_INDEX_DYNAMIC = 1,
  CKL_INDEX_FIXED = 2
} ckl_index_kind;

typedef struct ckl_index ckl_index;
typedef struct ckl_index_writer ckl_index_writer;

/** Open an index file (kind from its header) and read it whole. 0, or
 * -ENOENT (it vanished: GC checks this exact code; not logged), -EACCES,
 * -EIO (a failed read) or another -errno, CKL_ECORRUPT (not a regular
 * file, bad magic, truncated, checksum mismatch, entry count past the end
 * of the file, non-monotonic offsets, or the file changed size while it
 * was read), CKL_EVERSION (newer format), -ENOMEM. Every error but
 * -ENOENT is logged with the full path and the cause. */
CKL_EXTERN int ckl_index_open(const char *path, ckl_index **out);
/** Same, relative to a directory fd. */
CKL_EXTERN int ckl_index_openat(int dirfd, const char *name, ckl_index **out);
/** Parse an in-memory image (copied); for fuzzing and tests. */
CKL_EXTERN int ckl_index_parse(const void *buf, size_t len, ckl_index **out);
CKL_EXTERN void ckl_index_close(ckl_index *ix);

CKL_EXTERN ckl_index_kind ckl_index_get_kind(const ckl_index *ix);
CKL_EXTERN size_t ckl_index_count(const ckl_index *ix);
/** i < count, else NULL. */
CKL_EXTERN const ckl_digest *ckl_index_digest(const ckl_index *ix, size_t i);
/** Byte range [start, end) of entry i in the archive. 0 or -EINVAL. */
CKL_EXTERN int ckl_index_range(const ckl_index *ix, size_t i, uint64_t *start, uint64_t *end);
/** Total archive size in bytes. */
CKL_EXTERN uint64_t ckl_index_size(const ckl_index *ix);
/** Fixed index chunk size (0 for dynamic). */
CKL_EXTERN uint64_t ckl_index_chunk_size(const ckl_index *ix);
CKL_EXTERN int64_t ckl_index_ctime_ns(const ckl_index *ix);
CKL_EXTERN void ckl_index_uuid(const ckl_index *ix, uint8_t out[16]);

/** Is `name` an index file name (*.didx / *.fidx)? Returns the kind or 0. */
CKL_EXTERN int ckl_index_kind_from_name(const char *name);

/** Start writing `path` (temp + rename on commit). chunk_size is required
 * for CKL_INDEX_FIXED, ignored for dynamic. flags: CKL_ATOMIC_NOSYNC.
 * 0, -EINVAL, -errno. */
CKL_EXTERN int ckl_index_writer_create(const char *path, ckl_index_kind kind, uint64_t chunk_size,
                                       unsigned flags, ckl_index_writer **out);
/** Append an entry. Dynamic: `value` is the end offset (strictly
 * increasing). Fixed: `value` is the chunk's length (== chunk_size for all
 * but the last). 0, -EINVAL (order/size rule broken), -ENOMEM. */
CKL_EXTERN int ckl_index_writer_add(ckl_index_writer *w, uint64_t value, const ckl_digest *d);
/** Write header + entries, commit atomically; *file_sha256 (optional)
 * receives the SHA-256 of the whole file for the manifest. Frees w. */
CKL_EXTERN int ckl_index_writer_commit(ckl_index_writer *w, ckl_digest *file_sha256);
/** Drop an unfinished index (removes the temp file). Frees w. NULL ok. */
CKL_EXTERN void ckl_index_writer_abort(ckl_index_writer *w);

#ifdef __cplusplus
}
#endif
#endif

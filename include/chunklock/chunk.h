/*
 * chunklock/chunk.h - the content-addressed chunk store (STORE/.chunks).
 *
 * A chunk is named by the SHA-256 of its plain content and stored at
 * .chunks/<first 4 hex digits>/<64 hex digits>. A chunk file is a 24-byte
 * header (magic "CKLC", version, flags, plain length, CRC32C of the stored
 * payload) followed by the payload, zstd-compressed when that makes it
 * smaller, raw otherwise. docs/datastore.md has the byte layout.
 *
 * The one rule GC depends on (DESIGN.md section 5): a writer that reuses a
 * chunk TOUCHES it (utimensat, atime = now) and treats success as proof
 * that the chunk exists; -ENOENT means it must upload the chunk. Insert
 * does exactly that: touch first (a dedup hit costs one syscall), else
 * write temp + rename.
 *
 * All functions are safe to call from many threads and processes at once,
 * including concurrent inserts of the same digest (each writes its own
 * temp file; the renames are atomic and carry identical content).
 */
#ifndef CHUNKLOCK_CHUNK_H
#define CHUNKLOCK_CHUNK_H

#include <sys/stat.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_DIGEST_LEN 32
#define CKL_DIGEST_HEX_LEN 64
/** Largest chunk accepted (plain bytes). */
#define CKL_CHUNK_MAX (16u << 20)

typedef struct ckl_digest {
  uint8_t b[CKL_DIGEST_LEN];
} ckl_digest;

/** SHA-256 of data (OpenSSL EVP, algorithm fetched once per process). */
CKL_EXTERN void ckl_digest_compute(const void *data, size_t len, ckl_digest *out);
/** 64 lowercase hex digits + NUL. */
CKL_EXTERN void ckl_digest_to_hex(const ckl_digest *d, char out[CKL_DIGEST_HEX_LEN + 1]);
/** Parse exactly 64 hex digits (either case): 0 or -EINVAL. */
CKL_EXTERN int ckl_digest_from_hex(const char *hex, ckl_digest *out);

typedef enum ckl_sync_policy {
  /* The default is 0 so that a zeroed ckl_chunkstore_opts is the safe,
   * documented default rather than the fastest, least durable policy. */
  CKL_SYNC_FILESYSTEM = 0, /* syncfs() once per backup at finish (default) */
  CKL_SYNC_FILE = 1,       /* fsync each new chunk file and its directory */
  CKL_SYNC_NONE = 2        /* no fsync: fastest; a power loss may lose recent chunks */
} ckl_sync_policy;

typedef struct ckl_chunkstore_opts {
  ckl_sync_policy sync;
  int compress_level;      /* zstd level; 0 = default (3); < 0 = never compress */
  int verify;              /* 1: insert recomputes the digest of its data and
                              rejects a mismatch with -EINVAL (always on in
                              debug builds) */
} ckl_chunkstore_opts;

typedef struct ckl_chunkstore ckl_chunkstore;

/** Create the 65,536 prefix directories under chunks_dir (which must
 * exist). Idempotent. 0 or -errno. */
CKL_EXTERN int ckl_chunkstore_init_layout(const char *chunks_dir);

/** Open a chunk store rooted at chunks_dir. opts may be NULL (defaults:
 * CKL_SYNC_FILESYSTEM, level 3, no verify; so does a zeroed struct). 0, or -ENOENT / -ENOTDIR / CKL_ENOTSTORE (prefix
 * directories missing), -EINVAL (unknown sync policy, level above zstd's
 * maximum), -ENOMEM. */
CKL_EXTERN int ckl_chunkstore_open(const char *chunks_dir, const ckl_chunkstore_opts *opts,
                                   ckl_chunkstore **out);
CKL_EXTERN void ckl_chunkstore_close(ckl_chunkstore *cs);

/** The store's root fd for .chunks (O_DIRECTORY|O_PATH); GC uses it. */
CKL_EXTERN int ckl_chunkstore_dirfd(const ckl_chunkstore *cs);

typedef enum ckl_insert_result {
  CKL_INSERT_NEW = 0,   /* the chunk was written */
  CKL_INSERT_DEDUP = 1  /* it existed and was touched */
} ckl_insert_result;

/**
 * Insert data under digest d (the caller computed it; in debug builds and
 * when `verify` is set in the opts it is rechecked). Touch if present,
 * else write. Returns CKL_INSERT_NEW or CKL_INSERT_DEDUP (>= 0), or
 * -EINVAL (len > CKL_CHUNK_MAX; data does not hash to d when verifying),
 * -ENOSPC, -EIO, -EACCES, -errno.
 * *stored_bytes, if non-NULL, receives the bytes written to disk (0 for a
 * dedup hit). On error no partial chunk file is left at the final name.
 */
CKL_EXTERN int ckl_chunk_insert(ckl_chunkstore *cs, const ckl_digest *d, const void *data,
                                size_t len, uint64_t *stored_bytes);

/** Touch a chunk known from an earlier snapshot (atime = now). 0 if it
 * exists (it will survive a GC that is running now), -ENOENT if the caller
 * must upload it, other -errno. */
CKL_EXTERN int ckl_chunk_touch(ckl_chunkstore *cs, const ckl_digest *d);

/**
 * Read and verify a chunk: *data is malloc'd (caller frees), *len its
 * plain length. 0, or -ENOENT, CKL_ECORRUPT (bad header, CRC, zstd frame,
 * length or digest; logged with the chunk's path), -ENOMEM, -errno.
 */
CKL_EXTERN int ckl_chunk_read(ckl_chunkstore *cs, const ckl_digest *d, void **data, size_t *len);

/** Rename a corrupt chunk to "<hex>.<N>.bad" (first free N) so that a later
 * insert of the same digest writes a good copy. 0 or -errno. */
CKL_EXTERN int ckl_chunk_mark_bad(ckl_chunkstore *cs, const ckl_digest *d);

/** stat the chunk file (no touch). 0 or -errno. */
CKL_EXTERN int ckl_chunk_stat(ckl_chunkstore *cs, const ckl_digest *d, struct stat *st);

/** Relative path of a chunk under .chunks ("abcd/abcd...", 69 chars) into
 * buf. 0, or -ENAMETOOLONG when len < 70 (buf then holds "" if len > 0). */
CKL_EXTERN int ckl_chunk_relpath(const ckl_digest *d, char *buf, size_t len);

/** Flush per the sync policy at the end of a backup (syncfs for
 * CKL_SYNC_FILESYSTEM, nothing otherwise). 0 or -errno. */
CKL_EXTERN int ckl_chunkstore_sync(ckl_chunkstore *cs);

/*
 * Encoding, exposed for fsck and the fuzz targets. encode writes a complete
 * chunk file image into a malloc'd *out; decode parses a chunk file image,
 * checks everything (header, CRC, lengths, zstd frame bounds) and returns
 * the plain content in a malloc'd *data. decode never reads outside
 * [buf, buf+len) and never allocates more than CKL_CHUNK_MAX + header.
 * encode: 0, -EINVAL (len > CKL_CHUNK_MAX), -ENOMEM. decode: 0,
 * CKL_ECORRUPT, CKL_EVERSION (a newer format version), -ENOMEM.
 */
CKL_EXTERN int ckl_chunk_encode(const void *data, size_t len, int compress_level, void **out,
                                size_t *out_len);
CKL_EXTERN int ckl_chunk_decode(const void *buf, size_t len, void **data, size_t *data_len);

#ifdef __cplusplus
}
#endif
#endif

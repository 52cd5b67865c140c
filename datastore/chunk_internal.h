/*
 * datastore/chunk_internal.h - chunk file names and header constants for
 * the modules that walk .chunks themselves (GC sweep, fsck). Not installed.
 */
#ifndef CKL_DATASTORE_CHUNK_INTERNAL_H
#define CKL_DATASTORE_CHUNK_INTERNAL_H

#include "chunklock/chunk.h"

/* The chunk file header (docs/datastore.md, "Chunk files"). */
#define CKL__CHUNK_HDR_LEN 24
#define CKL__CHUNK_VERSION 1
#define CKL__CHUNK_FLAG_ZSTD 0x01u

/* "abcd/" + 64 hex digits. */
#define CKL__CHUNK_RELPATH_LEN (5 + CKL_DIGEST_HEX_LEN)

/* An insert writes ".tmp-<64 hex digest>-<16 hex random>" in the prefix
 * directory, then renames it onto the chunk's name. The leading dot keeps
 * it out of anything that looks for 64-hex names. */
#define CKL__CHUNK_TMP_PREFIX ".tmp-"

typedef enum ckl__chunk_name {
  CKL__CHUNK_NAME_OTHER = 0, /* not ours: leave it alone */
  CKL__CHUNK_NAME_CHUNK,     /* "<64 hex>": a chunk; *d receives its digest */
  CKL__CHUNK_NAME_TMP,       /* ".tmp-<64 hex>-<16 hex>": an insert in flight or abandoned */
  CKL__CHUNK_NAME_BAD        /* "<64 hex>.<N>.bad": set aside by ckl_chunk_mark_bad */
} ckl__chunk_name;

/* Classify an entry of a prefix directory. d may be NULL. The digest is
 * filled for CHUNK, TMP and BAD names. Only lowercase hex is accepted, as
 * only lowercase is ever written. */
ckl__chunk_name ckl__chunk_name_kind(const char *name, ckl_digest *d);

#endif

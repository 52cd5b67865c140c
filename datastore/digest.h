/*
 * datastore/digest.h - hex helpers shared by the chunk store and indexes.
 * Not installed. The SHA-256 itself is public (ckl_digest_compute).
 */
#ifndef CKL_DATASTORE_DIGEST_H
#define CKL_DATASTORE_DIGEST_H

#include <stddef.h>
#include <stdint.h>

/* Write 2*len lowercase hex digits of buf to out (no NUL added). */
void ckl__hex_encode(const void *buf, size_t len, char *out);

#endif

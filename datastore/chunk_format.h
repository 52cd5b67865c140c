/*
 * datastore/chunk_format.h - the pieces of chunk decoding that the chunk
 * store uses to read a file without staging it in a second buffer.
 * Not installed.
 */
#ifndef CKL_DATASTORE_CHUNK_FORMAT_H
#define CKL_DATASTORE_CHUNK_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CKL__CHUNK_DEFAULT_LEVEL 3

typedef struct ckl__chunk_hdr {
  bool zstd;
  uint32_t plain_len;
  uint32_t stored_len;
  uint32_t payload_crc;
} ckl__chunk_hdr;

/* Chunks of this size and more are sampled before compression: blocks of
 * CKL__CHUNK_SAMPLE_LEN bytes at ckl__chunk_sample_offset(len, i) for i in
 * [0, CKL__CHUNK_SAMPLE_BLOCKS). */
#define CKL__CHUNK_SAMPLE_MIN (16u * 1024u)
#define CKL__CHUNK_SAMPLE_BLOCKS 64u
#define CKL__CHUNK_SAMPLE_LEN 64u
size_t ckl__chunk_sample_offset(size_t len, size_t i);

/* Is a full zstd attempt on these len bytes likely to shrink them? true
 * for every chunk below CKL__CHUNK_SAMPLE_MIN; above it, a sample of the
 * chunk decides (chunk_format.c explains the checks). A false answer
 * stores the chunk raw, which is never wrong. */
bool ckl__chunk_worth_compressing(const uint8_t *data, size_t len);

/* 1 if level is acceptable to encode (<= zstd's maximum). */
int ckl__chunk_level_valid(int level);

/* Validate the 24 header bytes at p of an image total_len bytes long.
 * 0, CKL_ECORRUPT or CKL_EVERSION with *why (static) saying what is wrong. */
int ckl__chunk_parse_header(const uint8_t *p, uint64_t total_len, ckl__chunk_hdr *h,
                            const char **why);

/* Check the payload (h->stored_len bytes) against h and write the
 * h->plain_len plain bytes to out. 0, CKL_ECORRUPT (+ *why), -ENOMEM. */
int ckl__chunk_decode_payload(const ckl__chunk_hdr *h, const uint8_t *payload, uint8_t *out,
                              const char **why);

/* ckl_chunk_decode with the reason of a failure. */
int ckl__chunk_decode(const void *buf, size_t len, void **data, size_t *data_len,
                      const char **why);

#endif

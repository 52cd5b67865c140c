/*
 * tests/fuzz/fuzz_chunk.c - ckl_chunk_decode on arbitrary chunk files.
 *
 * Each input is decoded twice: as given, and with its checksums and its
 * stored length fixed up (bytes 12..23 recomputed). Without the fix-up the
 * header CRC would stop nearly every mutation at the door; with it the
 * fuzzer reaches the length rules and the zstd frame checks.
 *
 * What a successful decode must satisfy:
 *   - at most CKL_CHUNK_MAX plain bytes;
 *   - a raw-stored image is canonical: encoding the plain bytes raw gives
 *     back the input byte for byte;
 *   - encode(plain) at the default level decodes to the same plain bytes.
 * A failure must be CKL_ECORRUPT, CKL_EVERSION or -ENOMEM.
 */
#include <string.h>

#include "chunklock/chunk.h"
#include "chunklock/error.h"
#include "datastore/chunk_internal.h"
#include "datastore/crc32c.h"
#include "fuzz.h"

/* Re-encoding a decompression bomb of 16 MiB on every run would make the
 * fuzzer crawl; the round trip is checked on anything smaller. */
#define ROUNDTRIP_MAX (1u << 20)

static void roundtrip(const uint8_t *img, size_t img_len, const uint8_t *plain, size_t len) {
  void *enc = NULL, *dec = NULL;
  size_t enc_len = 0, dec_len = 0;
  if (!(img[5] & CKL__CHUNK_FLAG_ZSTD)) {
    FUZZ_CHECK(ckl_chunk_encode(plain, len, -1, &enc, &enc_len) == 0);
    FUZZ_CHECK(enc_len == img_len && memcmp(enc, img, img_len) == 0);
    free(enc);
  }
  FUZZ_CHECK(ckl_chunk_encode(plain, len, 0, &enc, &enc_len) == 0);
  FUZZ_CHECK(ckl_chunk_decode(enc, enc_len, &dec, &dec_len) == 0);
  FUZZ_CHECK(dec_len == len && (len == 0 || memcmp(dec, plain, len) == 0));
  free(enc);
  free(dec);
}

static bool decode(const uint8_t *img, size_t len) {
  void *plain = NULL;
  size_t plain_len = 0;
  int rc = ckl_chunk_decode(img, len, &plain, &plain_len);
  if (rc < 0) {
    FUZZ_CHECK(rc == CKL_ECORRUPT || rc == CKL_EVERSION || rc == -ENOMEM);
    return false;
  }
  FUZZ_CHECK(plain != NULL && plain_len <= CKL_CHUNK_MAX);
  FUZZ_CHECK(len >= CKL__CHUNK_HDR_LEN);
  if (plain_len <= ROUNDTRIP_MAX) roundtrip(img, len, plain, plain_len);
  free(plain);
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *img = fuzz_dup(data, size);
  fuzz_accepted = decode(img, size);
  if (size >= CKL__CHUNK_HDR_LEN) {
    fuzz_put_le32(img + 12, (uint32_t)(size - CKL__CHUNK_HDR_LEN));
    fuzz_put_le32(img + 16, ckl__crc32c(0, img + CKL__CHUNK_HDR_LEN, size - CKL__CHUNK_HDR_LEN));
    fuzz_put_le32(img + 20, ckl__crc32c(0, img, 20));
    decode(img, size);
  }
  free(img);
  return 0;
}

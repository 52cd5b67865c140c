/*
 * tests/fuzz/fuzz_index.c - ckl_index_parse on arbitrary .didx / .fidx
 * images. Built twice: CKL_FUZZ_INDEX_KIND=1 (fuzz_didx) and 2 (fuzz_fidx),
 * each with its own seed corpus.
 *
 * Each input is parsed twice: as given, and with the target's magic, the
 * SHA-256 of the entries (bytes 64..95) and the header CRC (124..127)
 * fixed up, so that mutations reach the count, offset and size rules
 * instead of dying at the checksums. Header size and version are left as
 * the input has them.
 *
 * What a successful parse must satisfy (everything a GC mark or a reader
 * relies on): the file is exactly header + count entries; every entry's
 * digest is where the format puts it; the ranges are contiguous from 0,
 * non-empty, at most CKL_CHUNK_MAX long and end at the total size; a fixed
 * index's chunks are all chunk_size long but the last; out-of-range
 * accessors answer NULL / -EINVAL. A failure must be CKL_ECORRUPT or
 * CKL_EVERSION (or -ENOMEM) and leave *out NULL.
 */
#include <string.h>

#include "chunklock/error.h"
#include "chunklock/index.h"
#include "datastore/crc32c.h"
#include "fuzz.h"

#ifndef CKL_FUZZ_INDEX_KIND
#error "build with -DCKL_FUZZ_INDEX_KIND=1 (dynamic) or 2 (fixed)"
#endif

#define HDR 128

static bool parse(const uint8_t *img, size_t len) {
  ckl_index *ix = (ckl_index *)1;
  int rc = ckl_index_parse(img, len, &ix);
  if (rc < 0) {
    FUZZ_CHECK(rc == CKL_ECORRUPT || rc == CKL_EVERSION || rc == -ENOMEM);
    FUZZ_CHECK(ix == NULL);
    return false;
  }
  ckl_index_kind kind = ckl_index_get_kind(ix);
  FUZZ_CHECK(kind == CKL_INDEX_DYNAMIC || kind == CKL_INDEX_FIXED);
  size_t es = kind == CKL_INDEX_DYNAMIC ? 40 : 32;
  size_t count = ckl_index_count(ix);
  uint64_t total = ckl_index_size(ix), cs = ckl_index_chunk_size(ix);
  FUZZ_CHECK(len >= HDR && (len - HDR) % es == 0 && (len - HDR) / es == count);
  FUZZ_CHECK(kind == CKL_INDEX_DYNAMIC ? cs == 0 : (cs > 0 && cs <= CKL_CHUNK_MAX));
  uint64_t prev = 0;
  for (size_t i = 0; i < count; i++) {
    const ckl_digest *d = ckl_index_digest(ix, i);
    FUZZ_CHECK(d != NULL);
    const uint8_t *want = img + HDR + i * es + (kind == CKL_INDEX_DYNAMIC ? 8 : 0);
    FUZZ_CHECK(memcmp(d->b, want, CKL_DIGEST_LEN) == 0);
    uint64_t start = 0, end = 0;
    FUZZ_CHECK(ckl_index_range(ix, i, &start, &end) == 0);
    FUZZ_CHECK(start == prev && end > start && end - start <= CKL_CHUNK_MAX && end <= total);
    if (kind == CKL_INDEX_FIXED && i + 1 < count) FUZZ_CHECK(end - start == cs);
    prev = end;
  }
  FUZZ_CHECK(prev == total);
  uint64_t s, e;
  FUZZ_CHECK(ckl_index_digest(ix, count) == NULL);
  FUZZ_CHECK(ckl_index_range(ix, count, &s, &e) == -EINVAL);
  uint8_t uuid[16];
  ckl_index_uuid(ix, uuid);
  FUZZ_CHECK(memcmp(uuid, img + 16, 16) == 0);
  (void)ckl_index_ctime_ns(ix);
  ckl_index_close(ix);
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *img = fuzz_dup(data, size);
  fuzz_accepted = parse(img, size);
  if (size >= HDR) {
    memcpy(img, CKL_FUZZ_INDEX_KIND == 1 ? "CKLDIDX" : "CKLFIDX", 8);
    ckl_digest sha;
    ckl_digest_compute(img + HDR, size - HDR, &sha);
    memcpy(img + 64, sha.b, CKL_DIGEST_LEN);
    fuzz_put_le32(img + 124, ckl__crc32c(0, img, 124));
    parse(img, size);
  }
  free(img);
  return 0;
}

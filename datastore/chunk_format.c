/*
 * datastore/chunk_format.c - the chunk file image: encode and decode.
 *
 * Layout (docs/datastore.md, "Chunk files"), all integers little-endian:
 *
 *   0  4  magic "CKLC"
 *   4  1  version (1)
 *   5  1  flags: bit 0 = payload is one zstd frame; other bits 0
 *   6  2  reserved, 0
 *   8  4  plain length (<= CKL_CHUNK_MAX)
 *  12  4  stored payload length (== file length - 24)
 *  16  4  CRC32C of the stored payload
 *  20  4  CRC32C of bytes 0..19
 *
 * Why a header CRC as well: the payload CRC and the SHA-256 of the plain
 * content would catch most damage anyway, but only after trusting the
 * lengths; with the header CRC a flipped length or flag is reported as what
 * it is before anything is allocated or decompressed. The check order is
 * magic, header CRC, version: every version keeps magic, version and the
 * header CRC at these offsets, so a damaged version byte is CKL_ECORRUPT
 * and only a well-formed header of a newer version is CKL_EVERSION.
 *
 * zstd contexts are per thread (about 1 MB for a CCtx at level 3): creating
 * one per insert would dominate small-chunk inserts. A pthread key frees
 * them when the thread exits.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "chunk_internal.h"
#include "chunk_format.h"
#include "common/internal.h"
#include "crc32c.h"

static const uint8_t chunk_magic[4] = {'C', 'K', 'L', 'C'};

static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- per-thread zstd contexts ------------------------------------------- */

typedef struct zctx {
  ZSTD_CCtx *c;
  ZSTD_DCtx *d;
} zctx;

static __thread zctx *tl_z;
static pthread_key_t z_key;
static int z_key_ok;
static pthread_once_t z_once = PTHREAD_ONCE_INIT;

static void z_destroy(void *p) {
  zctx *z = p;
  tl_z = NULL;
  ZSTD_freeCCtx(z->c);
  ZSTD_freeDCtx(z->d);
  free(z);
}

static void z_init(void) {
  z_key_ok = pthread_key_create(&z_key, z_destroy) == 0;
  if (!z_key_ok) ckl__log_error("chunk: pthread_key_create failed; cannot cache zstd contexts");
}

static zctx *z_get(void) {
  if (CKL__LIKELY(tl_z != NULL)) return tl_z;
  pthread_once(&z_once, z_init);
  if (!z_key_ok) return NULL;
  zctx *z = calloc(1, sizeof *z);
  if (!z) return NULL;
  if (pthread_setspecific(z_key, z) != 0) {
    free(z);
    return NULL;
  }
  tl_z = z;
  return z;
}

static ZSTD_CCtx *get_cctx(void) {
  zctx *z = z_get();
  if (!z) return NULL;
  if (!z->c) z->c = ZSTD_createCCtx();
  return z->c;
}

static ZSTD_DCtx *get_dctx(void) {
  zctx *z = z_get();
  if (!z) return NULL;
  if (!z->d) z->d = ZSTD_createDCtx();
  return z->d;
}

/* ---- encode ---------------------------------------------------------------- */

int ckl__chunk_level_valid(int level) { return level <= ZSTD_maxCLevel(); }

/*
 * Is the chunk worth a full compression attempt? Most of a backup's bytes
 * that do not compress (media, archives, encrypted data) do not compress
 * anywhere in the chunk, and for them zstd at level 3 costs more than
 * hashing and writing the chunk together (docs/benchmarks.md, figure 3).
 * So a large chunk is first probed: three 8 KiB slices (start, middle,
 * end) compressed at level 1, a few percent of the full attempt's cost.
 * Only when they shrink by at least 1/32 (3%) does the chunk get the real
 * attempt. A chunk whose compressible part hides between the slices is
 * stored raw: never wrong (the format says which), only larger. Small
 * chunks skip the probe: for them the full attempt is already cheap.
 * `scratch` has room for at least PROBE_SLICE bytes of compressed output
 * (ZSTD_compressBound is more, but an output that does not fit means the
 * slice did not shrink, which is the answer we want).
 */
#define PROBE_MIN_LEN (128u * 1024u)
#define PROBE_SLICE (8u * 1024u)
static bool worth_compressing(ZSTD_CCtx *cctx, const uint8_t *data, size_t len,
                              uint8_t *scratch) {
  if (len < PROBE_MIN_LEN) return true;
  const size_t at[3] = {0, len / 2 - PROBE_SLICE / 2, len - PROBE_SLICE};
  size_t in = 0, outn = 0;
  for (int i = 0; i < 3; i++) {
    size_t n = ZSTD_compressCCtx(cctx, scratch, PROBE_SLICE, data + at[i], PROBE_SLICE, 1);
    in += PROBE_SLICE;
    outn += ZSTD_isError(n) ? PROBE_SLICE : n;
  }
  return outn <= in - in / 32;
}

int ckl_chunk_encode(const void *data, size_t len, int compress_level, void **out,
                     size_t *out_len) {
  if (!out || !out_len || (!data && len > 0)) return -EINVAL;
  if (len > CKL_CHUNK_MAX) return -EINVAL;
  if (compress_level == 0) compress_level = CKL__CHUNK_DEFAULT_LEVEL;
  if (compress_level > ZSTD_maxCLevel()) return -EINVAL;

  /* One allocation: the raw image size. zstd gets len - 1 bytes of room,
   * so a frame that does not shrink the chunk fails with dstSize_tooSmall
   * and the chunk is stored raw. */
  uint8_t *img = malloc(CKL__CHUNK_HDR_LEN + len);
  if (!img) return -ENOMEM;
  uint8_t *payload = img + CKL__CHUNK_HDR_LEN;
  size_t stored = len;
  uint8_t flags = 0;
  if (compress_level > 0 && len > 1) {
    ZSTD_CCtx *cctx = get_cctx();
    if (!cctx) {
      free(img);
      return -ENOMEM;
    }
    /* payload (len bytes, >= PROBE_SLICE when probing) is free scratch
     * until the real attempt or the raw copy overwrites it */
    bool try_it = worth_compressing(cctx, data, len, payload);
    size_t n = try_it ? ZSTD_compressCCtx(cctx, payload, len - 1, data, len, compress_level)
                      : (size_t)-ZSTD_error_dstSize_tooSmall;
    if (!ZSTD_isError(n)) {
      stored = n;
      flags = CKL__CHUNK_FLAG_ZSTD;
    } else if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation) {
      free(img);
      return -ENOMEM;
    }
  }
  if (!flags && len > 0) memcpy(payload, data, len);

  memcpy(img, chunk_magic, 4);
  img[4] = CKL__CHUNK_VERSION;
  img[5] = flags;
  img[6] = img[7] = 0;
  put_le32(img + 8, (uint32_t)len);
  put_le32(img + 12, (uint32_t)stored);
  put_le32(img + 16, ckl__crc32c(0, payload, stored));
  put_le32(img + 20, ckl__crc32c(0, img, 20));
  *out = img;
  *out_len = CKL__CHUNK_HDR_LEN + stored;
  return 0;
}

/* ---- decode ---------------------------------------------------------------- */

int ckl__chunk_parse_header(const uint8_t *p, uint64_t total_len, ckl__chunk_hdr *h,
                            const char **why) {
  if (total_len < CKL__CHUNK_HDR_LEN) {
    *why = "shorter than its header";
    return CKL_ECORRUPT;
  }
  if (memcmp(p, chunk_magic, 4) != 0) {
    *why = "bad magic";
    return CKL_ECORRUPT;
  }
  if (ckl__crc32c(0, p, 20) != get_le32(p + 20)) {
    *why = "header CRC mismatch";
    return CKL_ECORRUPT;
  }
  if (p[4] > CKL__CHUNK_VERSION) {
    *why = "written by a newer format version";
    return CKL_EVERSION;
  }
  if (p[4] != CKL__CHUNK_VERSION || (p[5] & ~CKL__CHUNK_FLAG_ZSTD) != 0 || p[6] != 0 ||
      p[7] != 0) {
    *why = "bad version, flags or reserved bytes";
    return CKL_ECORRUPT;
  }
  h->zstd = (p[5] & CKL__CHUNK_FLAG_ZSTD) != 0;
  h->plain_len = get_le32(p + 8);
  h->stored_len = get_le32(p + 12);
  h->payload_crc = get_le32(p + 16);
  if (h->plain_len > CKL_CHUNK_MAX) {
    *why = "plain length above CKL_CHUNK_MAX";
    return CKL_ECORRUPT;
  }
  /* The encoder stores zstd only when it is strictly smaller, raw
   * otherwise: anything else was not written by us. */
  if (h->zstd ? h->stored_len >= h->plain_len : h->stored_len != h->plain_len) {
    *why = "stored length inconsistent with plain length";
    return CKL_ECORRUPT;
  }
  if (total_len != CKL__CHUNK_HDR_LEN + (uint64_t)h->stored_len) {
    *why = total_len < CKL__CHUNK_HDR_LEN + (uint64_t)h->stored_len ? "truncated payload"
                                                                     : "trailing bytes";
    return CKL_ECORRUPT;
  }
  return 0;
}

int ckl__chunk_decode_payload(const ckl__chunk_hdr *h, const uint8_t *payload, uint8_t *out,
                              const char **why) {
  if (ckl__crc32c(0, payload, h->stored_len) != h->payload_crc) {
    *why = "payload CRC mismatch";
    return CKL_ECORRUPT;
  }
  if (!h->zstd) {
    if (h->plain_len > 0) memcpy(out, payload, h->plain_len);
    return 0;
  }
  /* Exactly one frame covering the whole payload, announcing exactly the
   * plain length; single-shot decompression into the caller's buffer
   * writes at most plain_len bytes and allocates no window. */
  size_t fsz = ZSTD_findFrameCompressedSize(payload, h->stored_len);
  if (ZSTD_isError(fsz) || fsz != h->stored_len) {
    *why = "payload is not exactly one zstd frame";
    return CKL_ECORRUPT;
  }
  unsigned long long csz = ZSTD_getFrameContentSize(payload, h->stored_len);
  if (csz != h->plain_len) {
    *why = "zstd frame content size differs from the plain length";
    return CKL_ECORRUPT;
  }
  ZSTD_DCtx *dctx = get_dctx();
  if (!dctx) return -ENOMEM;
  size_t n = ZSTD_decompressDCtx(dctx, out, h->plain_len, payload, h->stored_len);
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation) return -ENOMEM;
    *why = "zstd frame does not decompress";
    return CKL_ECORRUPT;
  }
  if (n != h->plain_len) {
    *why = "zstd frame decompresses to the wrong length";
    return CKL_ECORRUPT;
  }
  return 0;
}

int ckl__chunk_decode(const void *buf, size_t len, void **data, size_t *data_len,
                      const char **why) {
  ckl__chunk_hdr h;
  int rc = ckl__chunk_parse_header(buf, len, &h, why);
  if (rc < 0) return rc;
  uint8_t *out = malloc(h.plain_len ? h.plain_len : 1);
  if (!out) return -ENOMEM;
  rc = ckl__chunk_decode_payload(&h, (const uint8_t *)buf + CKL__CHUNK_HDR_LEN, out, why);
  if (rc < 0) {
    free(out);
    return rc;
  }
  *data = out;
  *data_len = h.plain_len;
  return 0;
}

int ckl_chunk_decode(const void *buf, size_t len, void **data, size_t *data_len) {
  if ((!buf && len > 0) || !data || !data_len) return -EINVAL;
  const char *why = "";
  return ckl__chunk_decode(buf, len, data, data_len, &why);
}

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
 * writing the chunk (docs/benchmarks.md, figure 3: a 64 KiB random chunk
 * took ~58 us in zstd against ~140 us for open+write+rename).
 *
 * So a chunk of CKL__CHUNK_SAMPLE_MIN bytes or more is sampled first, the
 * way btrfs's compression heuristic does it: 64 blocks of 64 bytes spread
 * evenly over the chunk (4 KiB in all; a few microseconds, no allocation,
 * no zstd call). Block offsets are rounded down to a multiple of 512 (256
 * for chunks under 32 KiB, where the blocks are closer than 512), which
 * the repeat check below needs.
 *   - Byte distribution: the collision (Renyi order-2) entropy
 *     H2 = -log2(sum p_i^2) of the sampled bytes. Uniform random bytes
 *     give H2 ~ 7.91 bits; text, zero runs, sparse images and most
 *     structured data are far below. Below 7.8 bits (sum of squared counts
 *     above 2^-7.8 * n^2) the chunk gets the real attempt. The bound sits
 *     ~15 standard deviations above random data's sum, so random data is
 *     never sent to zstd, and H2 <= Shannon entropy, so a chunk with a
 *     skewed distribution is never refused by this test.
 *   - Repeats: data of random-looking bytes that repeats (a block written
 *     again and again into a disk image) has a flat distribution but
 *     compresses well. If two sampled blocks start with the same 16 bytes,
 *     the chunk gets the real attempt. Content-defined chunk boundaries
 *     put such data at an arbitrary shift k inside the chunk, but the same
 *     one throughout: with block offsets on multiples of 512, a period P
 *     that is a multiple of 512 leaves only P/512 distinct offsets mod P,
 *     so for P below 32 KiB two of the 64 blocks must read the same bytes
 *     (pigeonhole). Random data never matches 16 bytes by chance.
 * A chunk whose redundancy hides from both checks is stored raw: never
 * wrong (the header says which), only larger. Smaller chunks always get
 * the full attempt: for them it is cheap, and a sample would be most of
 * the chunk.
 */
#define SAMPLE_BLOCKS CKL__CHUNK_SAMPLE_BLOCKS
#define SAMPLE_LEN CKL__CHUNK_SAMPLE_LEN
#define SAMPLE_BYTES (SAMPLE_BLOCKS * SAMPLE_LEN)
/* floor(2^-7.8 * SAMPLE_BYTES^2): sum of squared counts at H2 = 7.8 bits */
#define SAMPLE_SUMSQ_LIMIT 75281u
_Static_assert(CKL__CHUNK_SAMPLE_MIN >= 4 * SAMPLE_BYTES, "the sample is a small part of a chunk");

size_t ckl__chunk_sample_offset(size_t len, size_t i) {
  size_t span = len - SAMPLE_LEN, align = 512;
  /* blocks at least `align` apart stay distinct after rounding down */
  while (align > span / (SAMPLE_BLOCKS - 1)) align >>= 1;
  return (span * i / (SAMPLE_BLOCKS - 1)) & ~(align - 1);
}

bool ckl__chunk_worth_compressing(const uint8_t *data, size_t len) {
  if (len < CKL__CHUNK_SAMPLE_MIN) return true;
  uint32_t count[256] = {0};
  uint8_t head[SAMPLE_BLOCKS][16];
  for (size_t i = 0; i < SAMPLE_BLOCKS; i++) {
    const uint8_t *b = data + ckl__chunk_sample_offset(len, i);
    for (size_t k = 0; k < SAMPLE_LEN; k++) count[b[k]]++;
    memcpy(head[i], b, 16);
  }
  uint64_t sumsq = 0;
  for (int v = 0; v < 256; v++) sumsq += (uint64_t)count[v] * count[v];
  if (sumsq > SAMPLE_SUMSQ_LIMIT) return true;
  for (size_t i = 1; i < SAMPLE_BLOCKS; i++)
    for (size_t j = 0; j < i; j++)
      if (memcmp(head[i], head[j], 16) == 0) return true;
  return false;
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
    bool try_it = ckl__chunk_worth_compressing(data, len);
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

/*
 * datastore/crc32c.c - CRC-32C with a hardware path and a portable one.
 *
 * Every chunk read checksums its whole stored payload, so this runs over
 * every byte GC-verify and restores touch. The SSE4.2 crc32 instruction
 * does 8 bytes per instruction (~a few GB/s even without interleaving the
 * three-way pipeline); the portable fallback is slicing-by-8 (~1-2 GB/s).
 * The choice is made once per process (pthread_once) and cached in a
 * plain pointer: after the once-barrier every thread sees it.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];

static void build_tables(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
}

static uint64_t load_le64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static uint32_t sw_update(uint32_t crc, const unsigned char *p, size_t len) {
  while (len > 0 && ((uintptr_t)p & 7u) != 0) {
    crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    len--;
  }
  while (len >= 8) {
    uint64_t v = load_le64(p) ^ crc;
    crc = table[7][v & 0xFF] ^ table[6][(v >> 8) & 0xFF] ^ table[5][(v >> 16) & 0xFF] ^
          table[4][(v >> 24) & 0xFF] ^ table[3][(v >> 32) & 0xFF] ^
          table[2][(v >> 40) & 0xFF] ^ table[1][(v >> 48) & 0xFF] ^ table[0][v >> 56];
    p += 8;
    len -= 8;
  }
  while (len-- > 0) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
  return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t hw_update(uint32_t crc, const unsigned char *p,
                                                            size_t len) {
  while (len > 0 && ((uintptr_t)p & 7u) != 0) {
    crc = _mm_crc32_u8(crc, *p++);
    len--;
  }
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    len -= 8;
  }
  crc = (uint32_t)c;
  while (len-- > 0) crc = _mm_crc32_u8(crc, *p++);
  return crc;
}
#endif

typedef uint32_t (*update_fn)(uint32_t, const unsigned char *, size_t);
static update_fn impl = sw_update;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
  build_tables();
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) impl = hw_update;
#endif
}

uint32_t ckl__crc32c(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&once, init);
  return ~impl(~crc, buf, len);
}

uint32_t ckl__crc32c_sw(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&once, init);
  return ~sw_update(~crc, buf, len);
}

int ckl__crc32c_hw(void) {
  pthread_once(&once, init);
  return impl != sw_update;
}

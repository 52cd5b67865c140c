/*
 * bench/encode_bench.c - what deciding "compress or not" costs per chunk,
 * for figure 3 (docs/benchmarks.md, "What the sample saves"). Not part of
 * bench/run: a diagnostic that compares, side by side in one process on
 * the same bytes, interleaved, best of 7 rounds:
 *   always   zstd level 3 on every chunk (keep the frame if smaller)
 *   probe    the rule until 2026-11-21: chunks >= 128 KiB first compress
 *            three 8 KiB slices at level 1 and skip zstd unless they
 *            shrink by 1/32
 *   sample   the library's rule (datastore/chunk_format.c): a 4 KiB
 *            sample's byte distribution and repeats decide, >= 16 KiB
 * Each variant ends with the payload in an output buffer (the raw copy
 * when zstd is skipped or fails), as ckl_chunk_encode does; header, CRC
 * and allocation are the same for all three and left out.
 *
 *     encode_bench
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "datastore/chunk_format.h"

static ZSTD_CCtx *cctx;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t attempt(const uint8_t *d, size_t len, uint8_t *out, bool try_it) {
  size_t n = try_it ? ZSTD_compressCCtx(cctx, out, len - 1, d, len, 3) : (size_t)-1;
  if (ZSTD_isError(n)) {
    memcpy(out, d, len);
    n = len;
  }
  return n;
}

static bool old_probe(const uint8_t *d, size_t len, uint8_t *scratch) {
  if (len < 128 * 1024) return true;
  const size_t at[3] = {0, len / 2 - 4096, len - 8192};
  size_t in = 0, outn = 0;
  for (int i = 0; i < 3; i++) {
    size_t n = ZSTD_compressCCtx(cctx, scratch, 8192, d + at[i], 8192, 1);
    in += 8192;
    outn += ZSTD_isError(n) ? 8192 : n;
  }
  return outn <= in - in / 32;
}

enum { ALWAYS, PROBE, SAMPLE, NVAR };

static size_t run(int v, const uint8_t *d, size_t len, uint8_t *out) {
  switch (v) {
    case ALWAYS: return attempt(d, len, out, true);
    case PROBE: return attempt(d, len, out, old_probe(d, len, out));
    default: return attempt(d, len, out, ckl__chunk_worth_compressing(d, len));
  }
}

static void fill(uint8_t *p, size_t len, int kind, uint64_t seed) {
  static const char *const words[] = {"chunk ", "lock ", "keeps ", "every ", "referenced ",
                                      "alive ", "store ", "garbage "};
  uint64_t s = seed;
  size_t i = 0;
  switch (kind) {
    case 0: /* random */
      for (; i < len; i++) p[i] = (uint8_t)splitmix(&s);
      break;
    case 1: /* text */
      while (i < len) {
        const char *w = words[splitmix(&s) % 8];
        size_t n = strlen(w) < len - i ? strlen(w) : len - i;
        memcpy(p + i, w, n);
        i += n;
      }
      break;
    default: /* one random 4 KiB block, repeated, shifted by 1000 bytes */
      for (; i < 4096; i++) p[i] = (uint8_t)splitmix(&s);
      for (; i < len; i++) p[i] = p[(i + 1000) % 4096];
      break;
  }
}

int main(void) {
  cctx = ZSTD_createCCtx();
  const size_t sizes[2] = {64 * 1024, 1024 * 1024};
  static const char *const kinds[3] = {"random", "text", "repeated 4 KiB block"};
  uint8_t *d = malloc(1 << 20), *out = malloc((1 << 20) + 64);
  if (!cctx || !d || !out) return 1;
  printf("%-7s %-21s %10s %10s %10s %9s %9s %9s\n", "size", "data", "always us", "probe us",
         "sample us", "always %", "probe %", "sample %");
  for (int si = 0; si < 2; si++) {
    for (int k = 0; k < 3; k++) {
      size_t len = sizes[si];
      fill(d, len, k, 1 + (uint64_t)k);
      int n = len <= 65536 ? 2000 : 100;
      double best[NVAR] = {1e9, 1e9, 1e9};
      size_t stored[NVAR] = {0};
      for (int round = 0; round < 7; round++) {
        for (int v0 = 0; v0 < NVAR; v0++) {
          int v = (v0 + round) % NVAR; /* rotate the order every round */
          double t = now_s();
          for (int i = 0; i < n; i++) stored[v] = run(v, d, len, out);
          double per = (now_s() - t) / n;
          if (per < best[v]) best[v] = per;
        }
      }
      printf("%-7s %-21s %10.1f %10.1f %10.1f %9.1f %9.1f %9.1f\n",
             len == 65536 ? "64 KiB" : "1 MiB", kinds[k], best[0] * 1e6, best[1] * 1e6,
             best[2] * 1e6, 100.0 * (double)stored[0] / (double)len,
             100.0 * (double)stored[1] / (double)len, 100.0 * (double)stored[2] / (double)len);
    }
  }
  printf("(us: best of 7 rounds per chunk; %%: stored size of the plain size; %s)\n",
         "variants interleaved, order rotated each round");
  ZSTD_freeCCtx(cctx);
  free(d);
  free(out);
  return 0;
}

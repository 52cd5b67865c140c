/* FastCDC: parameter checks, determinism (a pinned chunk list, so a change
 * of the gear table or the masks cannot go unnoticed), min/max respected
 * on random, constant and adversarial data, streaming equals whole-buffer
 * splitting, shift resistance (an early insertion changes only the chunks
 * near it), the size distribution around the average, empty input. */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;
static uint64_t rng(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static uint8_t *random_buf(size_t len, uint64_t seed) {
  uint8_t *b = malloc(len ? len : 1);
  assert_non_null(b);
  rng_state = seed;
  for (size_t i = 0; i < len; i++) b[i] = (uint8_t)rng();
  return b;
}

typedef struct cuts {
  size_t n, cap;
  size_t *len;
  ckl_digest *d;
} cuts;
static int collect(const void *chunk, size_t len, void *arg) {
  cuts *c = arg;
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 64;
    c->len = realloc(c->len, c->cap * sizeof *c->len);
    c->d = realloc(c->d, c->cap * sizeof *c->d);
    assert_non_null(c->len);
    assert_non_null(c->d);
  }
  c->len[c->n] = len;
  ckl_digest_compute(chunk, len, &c->d[c->n]);
  c->n++;
  return 0;
}
static void cuts_free(cuts *c) {
  free(c->len);
  free(c->d);
  memset(c, 0, sizeof *c);
}
static cuts split(const ckl_cdc *c, const uint8_t *b, size_t len) {
  cuts out = {0};
  int rc = ckl_cdc_split(c, b, len, collect, &out);
  assert_int_equal(rc, (int)out.n);
  size_t sum = 0;
  for (size_t i = 0; i < out.n; i++) sum += out.len[i];
  assert_int_equal(sum, len);
  return out;
}

static void test_init_params(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 0), 0);
  assert_int_equal(c.avg_size, 1u << 20);
  assert_int_equal(c.min_size, 1u << 18);
  assert_int_equal(c.max_size, 1u << 22);
  assert_int_equal(ckl_cdc_init(&c, 4096), 0);
  assert_int_equal(c.min_size, 1024);
  assert_int_equal(c.max_size, 16384);
  assert_true(c.mask_s == ~0ull << (64 - 14));
  assert_true(c.mask_l == ~0ull << (64 - 10));
  assert_int_equal(ckl_cdc_init(&c, CKL_CDC_MAX_AVG), 0);
  assert_int_equal(c.max_size, CKL_CHUNK_MAX);
  assert_int_equal(ckl_cdc_init(&c, CKL_CDC_MIN_AVG), 0);
  assert_int_equal(ckl_cdc_init(&c, 3000), -EINVAL);        /* not a power of two */
  assert_int_equal(ckl_cdc_init(&c, 32), -EINVAL);          /* below the minimum */
  assert_int_equal(ckl_cdc_init(&c, 8u << 20), -EINVAL);    /* max would pass CKL_CHUNK_MAX */
  assert_int_equal(ckl_cdc_init(NULL, 4096), -EINVAL);
}

static void test_empty_and_small(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 4096), 0);
  uint8_t b[2000] = {0};
  assert_int_equal(ckl_cdc_next(&c, b, 0), 0);
  assert_int_equal(ckl_cdc_next(&c, NULL, 10), 0);
  cuts out = {0};
  assert_int_equal(ckl_cdc_split(&c, NULL, 0, collect, &out), 0);
  assert_int_equal(out.n, 0);
  assert_int_equal(ckl_cdc_split(&c, b, 0, collect, &out), 0);
  assert_int_equal(ckl_cdc_split(&c, NULL, 1, collect, &out), -EINVAL);
  assert_int_equal(ckl_cdc_split(&c, b, 1, NULL, NULL), -EINVAL);
  /* Up to min_size the whole rest is one chunk: no boundary is sought. */
  assert_int_equal(ckl_cdc_next(&c, b, 1), 1);
  assert_int_equal(ckl_cdc_next(&c, b, 1024), 1024);
  out = split(&c, b, 1500); /* past min, no boundary in zeros: one chunk to the end */
  assert_int_equal(out.n, 1);
  assert_int_equal(out.len[0], 1500);
  cuts_free(&out);
}

/* Pinned output: the chunk lengths of 256 KiB of SplitMix64 bytes (seed
 * 42) at a 4 KiB average. Backups made by different versions dedup against
 * each other only if this never changes. */
static void test_deterministic_pinned(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 4096), 0);
  size_t len = 256 * 1024;
  uint8_t *b = random_buf(len, 42);
  cuts a = split(&c, b, len);
  cuts again = split(&c, b, len);
  assert_int_equal(a.n, again.n);
  assert_memory_equal(a.len, again.len, a.n * sizeof *a.len);
  static const size_t pinned[] = {4213, 4434, 5192, 4576, 1304, 4364, 5520, 3386,
                                  4799, 2397, 6273, 4768, 7222, 2642, 5542, 5383,
                                  5083, 4877, 2904, 4253, 4795, 2817, 5464, 5401};
  assert_int_equal(a.n, 58);
  size_t npinned = sizeof pinned / sizeof pinned[0];
  assert_true(a.n >= npinned);
  assert_memory_equal(a.len, pinned, sizeof pinned);
  cuts_free(&a);
  cuts_free(&again);
  free(b);
}

static void check_bounds(const ckl_cdc *c, const uint8_t *b, size_t len) {
  cuts out = split(c, b, len);
  for (size_t i = 0; i < out.n; i++) {
    assert_true(out.len[i] <= c->max_size);
    if (i + 1 < out.n) assert_true(out.len[i] >= c->min_size); /* only the last may be short */
  }
  cuts_free(&out);
}

static void test_min_max_respected(void **state) {
  (void)state;
  size_t len = 1 << 20;
  uint32_t avgs[] = {64, 1024, 4096, 65536};
  for (size_t k = 0; k < sizeof avgs / sizeof avgs[0]; k++) {
    ckl_cdc c;
    assert_int_equal(ckl_cdc_init(&c, avgs[k]), 0);
    uint8_t *b = random_buf(len, 7 + k);
    check_bounds(&c, b, len);
    /* Constant data: the hash settles to one value 64 bytes after min_size,
     * so every chunk but the last has the same length, and dedups to one. */
    memset(b, 0xAB, len);
    cuts out = split(&c, b, len);
    for (size_t i = 0; i + 1 < out.n; i++) {
      assert_int_equal(out.len[i], out.len[0]);
      assert_memory_equal(&out.d[i], &out.d[0], sizeof out.d[0]);
    }
    cuts_free(&out);
    /* Zeros: the gear hash of 0 bytes is a fixed sequence; bounds hold. */
    memset(b, 0, len);
    check_bounds(&c, b, len);
    free(b);
  }
}

/* Adversarial: a byte whose gear value has the high bits clear makes
 * every position a candidate; the cut must still wait for min_size. */
static void test_min_with_eager_boundaries(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 1024), 0);
  size_t len = 1 << 16;
  uint8_t *b = random_buf(len, 99);
  /* Try every byte value as filler; whatever it is, bounds hold. */
  for (int v = 0; v < 256; v++) {
    memset(b, v, len);
    check_bounds(&c, b, len);
  }
  free(b);
}

/* Chunking a stream through a max_size window gives the same chunks as
 * splitting the whole buffer at once. */
static void test_streaming_equals_whole(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 2048), 0);
  size_t len = 300001;
  uint8_t *b = random_buf(len, 5);
  cuts whole = split(&c, b, len);
  uint8_t *win = malloc(c.max_size);
  assert_non_null(win);
  size_t pos = 0, have = 0, i = 0;
  while (pos < len) {
    size_t want = c.max_size - have;
    if (want > len - (pos + have)) want = len - (pos + have);
    memcpy(win + have, b + pos + have, want);
    have += want;
    size_t n = ckl_cdc_next(&c, win, have);
    assert_true(i < whole.n);
    assert_int_equal(n, whole.len[i]);
    memmove(win, win + n, have - n);
    have -= n;
    pos += n;
    i++;
  }
  assert_int_equal(i, whole.n);
  free(win);
  cuts_free(&whole);
  free(b);
}

static size_t count_shared(const cuts *a, const cuts *b) {
  size_t shared = 0;
  for (size_t i = 0; i < b->n; i++)
    for (size_t j = 0; j < a->n; j++)
      if (!memcmp(&b->d[i], &a->d[j], sizeof b->d[i])) {
        shared++;
        break;
      }
  return shared;
}

/* Inserting one byte early changes only the chunks around it: the chunk
 * containing the edit and at most a couple after it (until a boundary
 * re-synchronises); every later chunk is byte-identical. Same for a
 * deletion, and for an edit in the middle. */
static void test_shift_resistance(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 4096), 0);
  size_t len = 1 << 20;
  uint8_t *b = random_buf(len, 1234);
  cuts orig = split(&c, b, len);
  assert_true(orig.n > 150);

  size_t edits[] = {100, 5000, len / 2};
  for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
    size_t at = edits[k];
    uint8_t *ins = malloc(len + 1);
    assert_non_null(ins);
    memcpy(ins, b, at);
    ins[at] = 0x5A;
    memcpy(ins + at + 1, b + at, len - at);
    cuts mod = split(&c, ins, len + 1);
    size_t shared = count_shared(&orig, &mod);
    /* at most 3 chunks of the new list are new */
    assert_true(mod.n - shared <= 3);
    /* and the tail, from the edit's chunk + 3 on, is identical in order */
    size_t tail = 0;
    while (tail < mod.n && tail < orig.n &&
           !memcmp(&mod.d[mod.n - 1 - tail], &orig.d[orig.n - 1 - tail], sizeof(ckl_digest)))
      tail++;
    size_t before = 0, off = 0;
    while (before < orig.n && off + orig.len[before] <= at) off += orig.len[before++];
    assert_true(tail + before + 3 >= orig.n);
    cuts_free(&mod);

    uint8_t *del = malloc(len - 1);
    assert_non_null(del);
    memcpy(del, b, at);
    memcpy(del + at, b + at + 1, len - at - 1);
    mod = split(&c, del, len - 1);
    assert_true(mod.n - count_shared(&orig, &mod) <= 3);
    cuts_free(&mod);
    free(del);
    free(ins);
  }
  cuts_free(&orig);
  free(b);
}

/* Normalized chunking: the mean chunk size is near the average (within a
 * factor of 1.5 either way on 4 MiB of random data). */
static void test_size_distribution(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 8192), 0);
  size_t len = 4 << 20;
  uint8_t *b = random_buf(len, 77);
  cuts out = split(&c, b, len);
  double mean = (double)len / (double)out.n;
  assert_true(mean > 8192 / 1.5 && mean < 8192 * 1.5);
  cuts_free(&out);
  free(b);
}

static int stop_at_three(const void *chunk, size_t len, void *arg) {
  (void)chunk;
  (void)len;
  int *n = arg;
  return ++*n == 3 ? -ECANCELED : 0;
}

static void test_callback_stops(void **state) {
  (void)state;
  ckl_cdc c;
  assert_int_equal(ckl_cdc_init(&c, 1024), 0);
  uint8_t *b = random_buf(100000, 3);
  int n = 0;
  assert_int_equal(ckl_cdc_split(&c, b, 100000, stop_at_three, &n), -ECANCELED);
  assert_int_equal(n, 3);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_params),
      cmocka_unit_test(test_empty_and_small),
      cmocka_unit_test(test_deterministic_pinned),
      cmocka_unit_test(test_min_max_respected),
      cmocka_unit_test(test_min_with_eager_boundaries),
      cmocka_unit_test(test_streaming_equals_whole),
      cmocka_unit_test(test_shift_resistance),
      cmocka_unit_test(test_size_distribution),
      cmocka_unit_test(test_callback_stops),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

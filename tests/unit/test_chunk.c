/* Chunk store: SHA-256 and hex, CRC32C, the chunk file format (round trips,
 * every truncation and bit flip, versions), the store (layout, insert/
 * dedup/touch/read/mark_bad with exact on-disk outcomes), and failpoints
 * (error and crash) at every insert step. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/chunk_format.h"
#include "datastore/chunk_internal.h"
#include "datastore/crc32c.h"

/* ---- helpers --------------------------------------------------------------- */

static char last_log[1024];
static void log_cb(ckl_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (level <= CKL_LOG_WARN) snprintf(last_log, sizeof last_log, "%s", msg);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Compressible: short repeating text with a seed-dependent twist. */
static void fill_text(uint8_t *p, size_t len, unsigned seed) {
  static const char words[] = "chunklock keeps every referenced chunk alive ";
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)words[(i + seed) % (sizeof words - 1)];
  if (len > 0) p[0] = (uint8_t)seed;
}
static void fill_random(uint8_t *p, size_t len) {
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)(rng() >> 24);
}

static void le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
/* Recompute both CRCs of an image after a deliberate edit. */
static void reseal(uint8_t *img, size_t len) {
  le32(img + 16, ckl__crc32c(0, img + 24, len - 24));
  le32(img + 20, ckl__crc32c(0, img, 20));
}

typedef struct fixture {
  char *root;       /* test dir */
  char *chunks;     /* root/.chunks */
  ckl_chunkstore *cs;
} fixture;
static fixture fx;

static int group_setup(void **state) {
  (void)state;
  ckl_log_set(log_cb, NULL, CKL_LOG_WARN);
  fx.root = ckl_test_mkdtemp("chunk");
  fx.chunks = ckl_test_path(fx.root, ".chunks");
  if (mkdir(fx.chunks, 0755) != 0) return -1;
  if (ckl_chunkstore_init_layout(fx.chunks) != 0) return -1;
  ckl_chunkstore_opts o = {.sync = CKL_SYNC_FILE, .compress_level = 3, .verify = 1};
  return ckl_chunkstore_open(fx.chunks, &o, &fx.cs);
}
static int group_teardown(void **state) {
  (void)state;
  ckl_chunkstore_close(fx.cs);
  ckl_test_rmtree(fx.root);
  free(fx.root);
  free(fx.chunks);
  return 0;
}
static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  return 0;
}

static char *chunk_file(const ckl_digest *d) {
  char rel[80];
  assert_int_equal(ckl_chunk_relpath(d, rel, sizeof rel), 0);
  return ckl_test_path(fx.chunks, rel);
}
static char *prefix_dir(const ckl_digest *d) {
  char rel[80];
  assert_int_equal(ckl_chunk_relpath(d, rel, sizeof rel), 0);
  rel[4] = '\0';
  return ckl_test_path(fx.chunks, rel);
}
static int count_tmp(const ckl_digest *d) {
  char *dir = prefix_dir(d);
  int n = ckl_test_count_entries(dir, CKL__CHUNK_TMP_PREFIX);
  free(dir);
  return n;
}
static bool exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* ---- digest, hex, crc ----------------------------------------------------------- */

static void test_digest_known_answers(void **state) {
  (void)state;
  ckl_digest d;
  char hex[CKL_DIGEST_HEX_LEN + 1];
  ckl_digest_compute("", 0, &d);
  ckl_digest_to_hex(&d, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  ckl_digest_compute("abc", 3, &d);
  ckl_digest_to_hex(&d, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hex_round_trip(void **state) {
  (void)state;
  for (int k = 0; k < 64; k++) {
    ckl_digest d, back;
    fill_random(d.b, sizeof d.b);
    char hex[CKL_DIGEST_HEX_LEN + 1];
    ckl_digest_to_hex(&d, hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(ckl_digest_from_hex(hex, &back), 0);
    assert_memory_equal(d.b, back.b, 32);
    for (char *c = hex; *c; c++)
      if (*c >= 'a') *c = (char)(*c - 'a' + 'A');
    memset(&back, 0, sizeof back);
    assert_int_equal(ckl_digest_from_hex(hex, &back), 0); /* either case */
    assert_memory_equal(d.b, back.b, 32);
  }
}

static void test_hex_rejects(void **state) {
  (void)state;
  const char *good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  ckl_digest d, keep;
  memset(&d, 0x5a, sizeof d);
  keep = d;
  char buf[80];
  assert_int_equal(ckl_digest_from_hex("", &d), -EINVAL);
  assert_int_equal(ckl_digest_from_hex(NULL, &d), -EINVAL);
  memcpy(buf, good, 63);
  buf[63] = '\0'; /* 63 digits */
  assert_int_equal(ckl_digest_from_hex(buf, &d), -EINVAL);
  snprintf(buf, sizeof buf, "%s0", good); /* 65 digits */
  assert_int_equal(ckl_digest_from_hex(buf, &d), -EINVAL);
  for (size_t pos = 0; pos < 64; pos += 7) {
    const char bad[] = {'g', 'G', ' ', 'x', '-', '\xff'};
    for (size_t b = 0; b < sizeof bad; b++) {
      memcpy(buf, good, 65);
      buf[pos] = bad[b];
      assert_int_equal(ckl_digest_from_hex(buf, &d), -EINVAL);
    }
  }
  assert_memory_equal(d.b, keep.b, 32); /* untouched on failure */
}

static void test_crc32c(void **state) {
  (void)state;
  assert_int_equal(ckl__crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(ckl__crc32c_sw(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(ckl__crc32c(0, "", 0), 0);
  /* chaining equals one pass */
  assert_int_equal(ckl__crc32c(ckl__crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
  uint8_t buf[4096 + 16];
  fill_random(buf, sizeof buf);
  for (size_t off = 0; off < 9; off++)
    for (size_t len = 0; len < 300; len += 1 + len / 8)
      assert_int_equal(ckl__crc32c(0, buf + off, len), ckl__crc32c_sw(0, buf + off, len));
  assert_int_equal(ckl__crc32c(0, buf, 4096), ckl__crc32c_sw(0, buf, 4096));
}

/* ---- format -------------------------------------------------------------------- */

static void round_trip(const uint8_t *data, size_t len, int level, bool expect_zstd) {
  void *img, *back;
  size_t img_len, back_len;
  assert_int_equal(ckl_chunk_encode(data, len, level, &img, &img_len), 0);
  const uint8_t *h = img;
  assert_memory_equal(h, "CKLC", 4);
  assert_int_equal(h[4], 1);
  assert_int_equal(h[5], expect_zstd ? 1 : 0);
  assert_int_equal(h[6] | h[7], 0);
  uint32_t plain = (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
  uint32_t stored = (uint32_t)h[12] | (uint32_t)h[13] << 8 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 24;
  assert_int_equal(plain, len);
  assert_int_equal(img_len, 24 + (size_t)stored);
  if (expect_zstd)
    assert_true(stored < len);
  else
    assert_int_equal(stored, len);
  assert_int_equal(ckl_chunk_decode(img, img_len, &back, &back_len), 0);
  assert_int_equal(back_len, len);
  if (len) assert_memory_equal(back, data, len);
  free(back);
  free(img);
}

static void test_format_round_trip(void **state) {
  (void)state;
  uint8_t *buf = malloc(CKL_CHUNK_MAX + 4096) /* + the largest shift below */;
  fill_text(buf, 65536, 1);
  round_trip(buf, 65536, 0, true);      /* default level */
  round_trip(buf, 65536, 19, true);
  round_trip(buf, 65536, -1, false);    /* never compress */
  fill_random(buf, 65536);
  round_trip(buf, 65536, 3, false);     /* incompressible: raw */
  round_trip(buf, 0, 3, false);         /* empty chunk */
  round_trip(buf, 1, 3, false);
  fill_text(buf, CKL_CHUNK_MAX, 2);
  round_trip(buf, CKL_CHUNK_MAX, 3, true);
  fill_random(buf, CKL_CHUNK_MAX);
  round_trip(buf, CKL_CHUNK_MAX, 1, false);
  /* The sample before compression (chunk_format.c:
   * ckl__chunk_worth_compressing) for chunks of CKL__CHUNK_SAMPLE_MIN and
   * more. Sizes: the largest chunk, a common one, the smallest sampled. */
  const size_t sizes[3] = {CKL_CHUNK_MAX, 64 * 1024, CKL__CHUNK_SAMPLE_MIN};
  for (int i = 0; i < 3; i++) {
    size_t m = sizes[i];
    /* Text with random bytes exactly where the sample looks: stored raw
     * (the sample decides; without it the chunk would compress). */
    fill_text(buf, m, 3);
    for (size_t b = 0; b < CKL__CHUNK_SAMPLE_BLOCKS; b++)
      fill_random(buf + ckl__chunk_sample_offset(m, b), CKL__CHUNK_SAMPLE_LEN);
    assert_false(ckl__chunk_worth_compressing(buf, m));
    round_trip(buf, m, 3, false);
    /* One sampled block of text among random ones is not enough to
     * matter, but text across a quarter of the samples is. */
    fill_random(buf, m);
    assert_false(ckl__chunk_worth_compressing(buf, m));
    fill_text(buf, m / 4, 7);
    assert_true(ckl__chunk_worth_compressing(buf, m));
    round_trip(buf, m, 3, true);
    /* Half zeros (a sparse image): skewed distribution, compressed. */
    fill_random(buf, m);
    memset(buf + m / 2, 0, m / 2);
    assert_true(ckl__chunk_worth_compressing(buf, m));
    round_trip(buf, m, 3, true);
    /* Random bytes that repeat (one 4 KiB or 24 KiB block written again
     * and again, at any shift): a flat distribution, caught by two
     * sampled blocks reading the same bytes (when the chunk holds the
     * block at least twice). */
    const size_t periods[2] = {4096, 24576}, shifts[3] = {0, 1, 2777};
    for (int pi = 0; pi < 2; pi++) {
      for (int si = 0; si < 3; si++) {
        size_t per = periods[pi];
        if (2 * per > m) continue;
        fill_random(buf, per);
        for (size_t off = per; off < m + shifts[si]; off += per)
          memcpy(buf + off, buf, off + per <= m + shifts[si] ? per : m + shifts[si] - off);
        assert_true(ckl__chunk_worth_compressing(buf + shifts[si], m));
      }
    }
    round_trip(buf, m, 3, true);
  }
  /* Below the threshold every chunk gets the full attempt. */
  fill_random(buf, CKL__CHUNK_SAMPLE_MIN - 1);
  assert_true(ckl__chunk_worth_compressing(buf, CKL__CHUNK_SAMPLE_MIN - 1));
  round_trip(buf, CKL__CHUNK_SAMPLE_MIN - 1, 3, false);
  fill_text(buf, CKL__CHUNK_SAMPLE_MIN - 1, 3);
  for (size_t b = 0; b < CKL__CHUNK_SAMPLE_BLOCKS; b++)
    fill_random(buf + ckl__chunk_sample_offset(CKL__CHUNK_SAMPLE_MIN - 1, b), CKL__CHUNK_SAMPLE_LEN);
  round_trip(buf, CKL__CHUNK_SAMPLE_MIN - 1, 3, true);
  void *img = (void *)0x1;
  size_t img_len = 7;
  assert_int_equal(ckl_chunk_encode(buf, CKL_CHUNK_MAX + 1, 3, &img, &img_len), -EINVAL);
  assert_int_equal(ckl_chunk_encode(buf, 10, 1000, &img, &img_len), -EINVAL);
  free(buf);
}

/* Every truncation, every single-bit flip, one trailing byte: CKL_ECORRUPT,
 * never a crash or an out-of-bounds read (ASan build). */
static void corrupt_everywhere(const uint8_t *data, size_t len, int level, bool zstd) {
  uint8_t *img;
  size_t n;
  assert_int_equal(ckl_chunk_encode(data, len, level, (void **)&img, &n), 0);
  assert_int_equal(img[5], zstd ? 1 : 0);
  void *out;
  size_t out_len;
  for (size_t cut = 0; cut < n; cut++) {
    /* an exact-size copy, so ASan catches any read past the end */
    uint8_t *t = malloc(cut ? cut : 1);
    memcpy(t, img, cut);
    assert_int_equal(ckl_chunk_decode(cut ? t : NULL, cut, &out, &out_len), CKL_ECORRUPT);
    free(t);
  }
  uint8_t *longer = malloc(n + 1);
  memcpy(longer, img, n);
  longer[n] = 0;
  assert_int_equal(ckl_chunk_decode(longer, n + 1, &out, &out_len), CKL_ECORRUPT);
  free(longer);
  for (size_t pos = 0; pos < n; pos++)
    for (int bit = 0; bit < 8; bit++) {
      img[pos] ^= (uint8_t)(1u << bit);
      assert_int_equal(ckl_chunk_decode(img, n, &out, &out_len), CKL_ECORRUPT);
      img[pos] ^= (uint8_t)(1u << bit);
    }
  assert_int_equal(ckl_chunk_decode(img, n, &out, &out_len), 0);
  free(out);
  free(img);
}

static void test_format_corruption(void **state) {
  (void)state;
  uint8_t data[300];
  fill_text(data, sizeof data, 3);
  corrupt_everywhere(data, sizeof data, 3, true);
  fill_random(data, 40);
  corrupt_everywhere(data, 40, 3, false);
  corrupt_everywhere(data, 0, 3, false);
}

/* Edits with valid CRCs: the structural checks behind the checksums. */
static void test_format_resealed(void **state) {
  (void)state;
  uint8_t data[4096];
  fill_text(data, sizeof data, 4);
  uint8_t *img, *t;
  size_t n;
  void *out;
  size_t out_len;
  assert_int_equal(ckl_chunk_encode(data, sizeof data, 3, (void **)&img, &n), 0);
  assert_int_equal(img[5], 1);
  t = malloc(n);
#define EDIT(stmt, expect)                                                     \
  do {                                                                         \
    memcpy(t, img, n);                                                         \
    stmt;                                                                      \
    reseal(t, n);                                                              \
    assert_int_equal(ckl_chunk_decode(t, n, &out, &out_len), (expect));        \
  } while (0)
  EDIT((void)0, 0);
  free(out);
  EDIT(t[4] = 2, CKL_EVERSION);      /* a newer version */
  EDIT(t[4] = 255, CKL_EVERSION);
  EDIT(t[4] = 0, CKL_ECORRUPT);      /* version 0 never existed */
  EDIT(t[5] = 3, CKL_ECORRUPT);      /* unknown flag bit */
  EDIT(t[6] = 1, CKL_ECORRUPT);      /* reserved */
  EDIT(le32(t + 8, sizeof data - 1), CKL_ECORRUPT); /* frame content size differs */
  EDIT(le32(t + 8, sizeof data + 1), CKL_ECORRUPT);
  EDIT(le32(t + 8, CKL_CHUNK_MAX + 1), CKL_ECORRUPT);
  EDIT(le32(t + 8, (uint32_t)(n - 24)), CKL_ECORRUPT); /* zstd not smaller */
  EDIT(le32(t + 12, (uint32_t)(n - 25)), CKL_ECORRUPT); /* length vs file size */
  EDIT(t[5] = 0, CKL_ECORRUPT);      /* raw flag but stored != plain */
  EDIT(memcpy(t + 24, "\0\0\0\0", 4), CKL_ECORRUPT); /* zstd magic gone */
  free(t);
  free(img);
  /* a raw image relabelled as zstd: not a frame */
  fill_random(data, 64);
  assert_int_equal(ckl_chunk_encode(data, 64, -1, (void **)&img, &n), 0);
  t = malloc(n);
  EDIT((t[5] = 1, le32(t + 8, 65)), CKL_ECORRUPT);
  free(t);
  free(img);
#undef EDIT
}

/* ---- store ---------------------------------------------------------------------- */

static void test_open_errors(void **state) {
  (void)state;
  char *dir = ckl_test_mkdtemp("chunk-open");
  char *missing = ckl_test_path(dir, "nope");
  char *file = ckl_test_path(dir, "file");
  ckl_test_write_file(file, "x", 1);
  ckl_chunkstore *cs = (ckl_chunkstore *)0x1;
  assert_int_equal(ckl_chunkstore_open(missing, NULL, &cs), -ENOENT);
  assert_null(cs);
  assert_int_equal(ckl_chunkstore_open(file, NULL, &cs), -ENOTDIR);
  last_log[0] = '\0';
  assert_int_equal(ckl_chunkstore_open(dir, NULL, &cs), CKL_ENOTSTORE);
  assert_non_null(strstr(last_log, dir));
  assert_int_equal(ckl_chunkstore_init_layout(missing), -ENOENT);
  /* a file where a probed prefix dir belongs is not a store either */
  char *p = ckl_test_path(dir, "0000");
  ckl_test_write_file(p, "", 0);
  assert_int_equal(ckl_chunkstore_open(dir, NULL, &cs), CKL_ENOTSTORE);
  free(p);
  ckl_chunkstore_opts bad = {.sync = (ckl_sync_policy)7};
  assert_int_equal(ckl_chunkstore_open(fx.chunks, &bad, &cs), -EINVAL);
  ckl_chunkstore_opts badlvl = {.compress_level = 1000};
  assert_int_equal(ckl_chunkstore_open(fx.chunks, &badlvl, &cs), -EINVAL);
  ckl_test_rmtree(dir);
  free(dir);
  free(missing);
  free(file);
}

static void test_layout(void **state) {
  (void)state;
  assert_int_equal(ckl_test_count_entries(fx.chunks, NULL), 65536);
  char *p = ckl_test_path(fx.chunks, "abcd");
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  free(p);
  /* idempotent */
  assert_int_equal(ckl_chunkstore_init_layout(fx.chunks), 0);
  assert_int_equal(ckl_test_count_entries(fx.chunks, NULL), 65536);
  assert_true(ckl_chunkstore_dirfd(fx.cs) >= 0);
}

static void test_relpath_and_names(void **state) {
  (void)state;
  ckl_digest d;
  ckl_digest_compute("abc", 3, &d);
  char rel[70];
  assert_int_equal(ckl_chunk_relpath(&d, rel, sizeof rel), 0);
  assert_string_equal(rel, "ba78/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert_int_equal(ckl_chunk_relpath(&d, rel, 69), -ENAMETOOLONG);
  assert_string_equal(rel, "");
  ckl_digest got;
  assert_int_equal(ckl__chunk_name_kind(rel + 5, &got), CKL__CHUNK_NAME_CHUNK);
  assert_memory_equal(got.b, d.b, 32);
  char name[128];
  snprintf(name, sizeof name, ".tmp-%s-0123456789abcdef", rel + 5);
  assert_int_equal(ckl__chunk_name_kind(name, &got), CKL__CHUNK_NAME_TMP);
  snprintf(name, sizeof name, "%s.0.bad", rel + 5);
  assert_int_equal(ckl__chunk_name_kind(name, NULL), CKL__CHUNK_NAME_BAD);
  snprintf(name, sizeof name, "%s.17.bad", rel + 5);
  assert_int_equal(ckl__chunk_name_kind(name, NULL), CKL__CHUNK_NAME_BAD);
  snprintf(name, sizeof name, "%s.07.bad", rel + 5);
  assert_int_equal(ckl__chunk_name_kind(name, NULL), CKL__CHUNK_NAME_OTHER);
  snprintf(name, sizeof name, "%s..bad", rel + 5);
  assert_int_equal(ckl__chunk_name_kind(name, NULL), CKL__CHUNK_NAME_OTHER);
  snprintf(name, sizeof name, "%s", rel + 5);
  name[0] = 'B'; /* uppercase is never written */
  assert_int_equal(ckl__chunk_name_kind(name, NULL), CKL__CHUNK_NAME_OTHER);
  assert_int_equal(ckl__chunk_name_kind(rel + 6, NULL), CKL__CHUNK_NAME_OTHER);
  assert_int_equal(ckl__chunk_name_kind(".tmp-x", NULL), CKL__CHUNK_NAME_OTHER);
}

static void check_valid(const ckl_digest *d, const uint8_t *data, size_t len) {
  void *back;
  size_t blen;
  assert_int_equal(ckl_chunk_read(fx.cs, d, &back, &blen), 0);
  assert_int_equal(blen, len);
  assert_memory_equal(back, data, len);
  free(back);
}

static void set_atime_past(const char *path) {
  struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_nsec = UTIME_OMIT}};
  assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_insert_dedup_touch_read(void **state) {
  (void)state;
  uint8_t data[10000];
  fill_text(data, sizeof data, 5);
  ckl_digest d;
  ckl_digest_compute(data, sizeof data, &d);
  char *path = chunk_file(&d);
  assert_false(exists(path));
  assert_int_equal(ckl_chunk_touch(fx.cs, &d), -ENOENT);

  uint64_t stored = 99;
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, &stored), CKL_INSERT_NEW);
  struct stat st, st2;
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(stored, (uint64_t)st.st_size);
  assert_true(stored < sizeof data); /* compressed */
  assert_int_equal(count_tmp(&d), 0);
  assert_int_equal(ckl_chunk_stat(fx.cs, &d, &st2), 0);
  assert_int_equal(st2.st_ino, st.st_ino);

  /* dedup: atime moves, mtime and the inode stay, nothing is written */
  set_atime_past(path);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_atim.tv_sec, 1000000000);
  stored = 99;
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, &stored), CKL_INSERT_DEDUP);
  assert_int_equal(stored, 0);
  assert_int_equal(stat(path, &st2), 0);
  assert_true(st2.st_atim.tv_sec > 1000000000);
  assert_int_equal(st2.st_mtim.tv_sec, st.st_mtim.tv_sec);
  assert_int_equal(st2.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
  assert_int_equal(st2.st_ino, st.st_ino);

  set_atime_past(path);
  assert_int_equal(ckl_chunk_touch(fx.cs, &d), 0);
  assert_int_equal(stat(path, &st2), 0);
  assert_true(st2.st_atim.tv_sec > 1000000000);
  assert_int_equal(st2.st_mtim.tv_nsec, st.st_mtim.tv_nsec);

  void *back;
  size_t len;
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), 0);
  assert_int_equal(len, sizeof data);
  assert_memory_equal(back, data, sizeof data);
  free(back);

  ckl_digest other;
  ckl_digest_compute("missing", 7, &other);
  assert_int_equal(ckl_chunk_read(fx.cs, &other, &back, &len), -ENOENT);
  assert_int_equal(ckl_chunk_stat(fx.cs, &other, &st), -ENOENT);
  assert_int_equal(ckl_chunk_mark_bad(fx.cs, &other), -ENOENT);
  free(path);
}

static void test_insert_empty_and_raw(void **state) {
  (void)state;
  ckl_digest d;
  ckl_digest_compute("", 0, &d);
  uint64_t stored;
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, NULL, 0, &stored), CKL_INSERT_NEW);
  assert_int_equal(stored, 24);
  void *back;
  size_t len = 5;
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), 0);
  assert_int_equal(len, 0);
  free(back);
  uint8_t data[5000];
  fill_random(data, sizeof data);
  ckl_digest_compute(data, sizeof data, &d);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, &stored), CKL_INSERT_NEW);
  assert_int_equal(stored, 24 + sizeof data);
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), 0);
  assert_int_equal(len, sizeof data);
  assert_memory_equal(back, data, len);
  free(back);
}

static void test_insert_rejects(void **state) {
  (void)state;
  uint8_t data[100];
  fill_text(data, sizeof data, 6);
  ckl_digest d;
  ckl_digest_compute("not this data", 13, &d);
  char *path = chunk_file(&d);
  /* the store was opened with verify: a wrong digest writes nothing */
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), -EINVAL);
  assert_false(exists(path));
  assert_int_equal(count_tmp(&d), 0);
  uint8_t *big = calloc(1, CKL_CHUNK_MAX + 1);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, big, CKL_CHUNK_MAX + 1, NULL), -EINVAL);
  free(big);
  assert_false(exists(path));
  free(path);
}

/* Damage on disk is found by read and named in the log. */
static void test_read_corrupt(void **state) {
  (void)state;
  uint8_t data[3000];
  fill_text(data, sizeof data, 7);
  ckl_digest d;
  ckl_digest_compute(data, sizeof data, &d);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), CKL_INSERT_NEW);
  char *path = chunk_file(&d);
  size_t n;
  uint8_t *img = (uint8_t *)ckl_test_read_file(path, &n);
  void *back;
  size_t len;

  img[n - 1] ^= 0x40; /* payload bit flip: CRC */
  ckl_test_write_file(path, img, n);
  last_log[0] = '\0';
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), CKL_ECORRUPT);
  assert_non_null(strstr(last_log, path + strlen(fx.chunks) + 1));
  assert_non_null(strstr(last_log, fx.chunks));
  img[n - 1] ^= 0x40;

  /* valid image of other content under this name: only SHA-256 sees it */
  uint8_t *other;
  size_t on;
  data[0] ^= 1;
  assert_int_equal(ckl_chunk_encode(data, sizeof data, 3, (void **)&other, &on), 0);
  ckl_test_write_file(path, other, on);
  last_log[0] = '\0';
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), CKL_ECORRUPT);
  assert_non_null(strstr(last_log, "SHA-256"));
  free(other);

  ckl_test_write_file(path, img, 10); /* truncated header */
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), CKL_ECORRUPT);
  ckl_test_write_file(path, img, n - 1); /* truncated payload */
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), CKL_ECORRUPT);
  img[4] = 2;
  reseal(img, n);
  ckl_test_write_file(path, img, n);
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), CKL_EVERSION);
  img[4] = 1;
  reseal(img, n);
  ckl_test_write_file(path, img, n);
  data[0] ^= 1;
  check_valid(&d, data, sizeof data);
  free(img);
  free(path);
}

static void test_mark_bad_and_repair(void **state) {
  (void)state;
  uint8_t data[2000];
  fill_text(data, sizeof data, 8);
  ckl_digest d;
  ckl_digest_compute(data, sizeof data, &d);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), CKL_INSERT_NEW);
  char *path = chunk_file(&d);
  char bad0[512], bad1[512];
  snprintf(bad0, sizeof bad0, "%s.0.bad", path);
  snprintf(bad1, sizeof bad1, "%s.1.bad", path);
  ckl_test_write_file(path, "garbage", 7);
  void *back;
  size_t len;
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), CKL_ECORRUPT);
  /* a dedup hit cannot repair it ... */
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), CKL_INSERT_DEDUP);
  /* ... marking it bad lets the next insert write a good copy */
  assert_int_equal(ckl_chunk_mark_bad(fx.cs, &d), 0);
  assert_false(exists(path));
  assert_true(exists(bad0));
  assert_int_equal(ckl_chunk_touch(fx.cs, &d), -ENOENT);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), 0);
  assert_memory_equal(back, data, sizeof data);
  free(back);
  assert_int_equal(ckl_chunk_mark_bad(fx.cs, &d), 0);
  assert_true(exists(bad0));
  assert_true(exists(bad1));
  assert_false(exists(path));
  size_t n0, n1;
  char *c0 = ckl_test_read_file(bad0, &n0), *c1 = ckl_test_read_file(bad1, &n1);
  assert_int_equal(n0, 7); /* the first .bad kept its evidence */
  assert_memory_equal(c0, "garbage", 7);
  assert_true(n1 > 24);
  free(c0);
  free(c1);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), 0);
  free(back);
  free(path);
}

static void test_sync_policies(void **state) {
  (void)state;
  static const ckl_sync_policy pols[] = {CKL_SYNC_NONE, CKL_SYNC_FILE, CKL_SYNC_FILESYSTEM};
  for (size_t pi = 0; pi < 3; pi++) {
    int pol = (int)pols[pi];
    ckl_chunkstore_opts o = {.sync = (ckl_sync_policy)pol,
                             .compress_level = pol == CKL_SYNC_NONE ? -1 : (int)pi};
    ckl_chunkstore *cs;
    assert_int_equal(ckl_chunkstore_open(fx.chunks, &o, &cs), 0);
    uint8_t data[777];
    fill_text(data, sizeof data, (unsigned)(20 + pol));
    ckl_digest d;
    ckl_digest_compute(data, sizeof data, &d);
    uint64_t stored;
    assert_int_equal(ckl_chunk_insert(cs, &d, data, sizeof data, &stored), CKL_INSERT_NEW);
    /* level -1 (policy NONE here) never compresses */
    if (pol == CKL_SYNC_NONE) assert_int_equal(stored, 24 + sizeof data);
    else assert_true(stored < sizeof data);
    assert_int_equal(ckl_chunkstore_sync(cs), 0);
    void *back;
    size_t len;
    assert_int_equal(ckl_chunk_read(cs, &d, &back, &len), 0);
    assert_memory_equal(back, data, sizeof data);
    free(back);
    ckl_chunkstore_close(cs);
  }
  ckl_chunkstore *cs;
  assert_int_equal(ckl_chunkstore_open(fx.chunks, NULL, &cs), 0);
  assert_int_equal(ckl_chunkstore_sync(cs), 0);
  ckl_chunkstore_close(cs);
}

/* ---- failpoints at every insert step ------------------------------------------ */

static const char *const steps[] = {
    "chunk.touch", "chunk.insert.after_tmp_create", "chunk.insert.after_tmp_write",
    "chunk.insert.before_rename", "chunk.insert.after_rename",
};
#define N_STEPS (sizeof steps / sizeof steps[0])
#define AFTER_RENAME (N_STEPS - 1)

static void test_failpoint_errors(void **state) {
  (void)state;
  for (size_t s = 0; s < N_STEPS; s++) {
    uint8_t data[1500];
    fill_text(data, sizeof data, (unsigned)(40 + s));
    ckl_digest d;
    ckl_digest_compute(data, sizeof data, &d);
    char *path = chunk_file(&d);
    assert_int_equal(ckl_failpoint_arm(steps[s], "error(EIO)"), 0);
    uint64_t stored = 5;
    assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, &stored), -EIO);
    assert_int_equal(stored, 0);
    assert_int_equal(ckl_failpoint_hits(steps[s]), 1);
    assert_int_equal(count_tmp(&d), 0);
    if (s == AFTER_RENAME) {
      /* committed: the complete chunk stays (another writer may rely on it) */
      check_valid(&d, data, sizeof data);
    } else {
      assert_false(exists(path));
    }
    ckl_failpoint_disarm_all();
    assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL),
                     s == AFTER_RENAME ? CKL_INSERT_DEDUP : CKL_INSERT_NEW);
    check_valid(&d, data, sizeof data);
    free(path);
  }
  /* the read failpoint */
  uint8_t data[64];
  fill_text(data, sizeof data, 60);
  ckl_digest d;
  ckl_digest_compute(data, sizeof data, &d);
  assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL), CKL_INSERT_NEW);
  assert_int_equal(ckl_failpoint_arm("chunk.read.after_open", "error(EIO)"), 0);
  void *back;
  size_t len;
  assert_int_equal(ckl_chunk_read(fx.cs, &d, &back, &len), -EIO);
}

typedef struct crash_arg {
  const char *step;
  const uint8_t *data;
  size_t len;
  const ckl_digest *d;
} crash_arg;

static int crash_child(void *p) {
  crash_arg *a = p;
  if (ckl_failpoint_arm(a->step, "crash") != 0) return 1;
  ckl_chunk_insert(fx.cs, a->d, a->data, a->len, NULL);
  return 2; /* must not get here */
}

static void test_failpoint_crash(void **state) {
  (void)state;
  for (size_t s = 0; s < N_STEPS; s++) {
    uint8_t data[20000];
    fill_text(data, sizeof data, (unsigned)(70 + s));
    ckl_digest d;
    ckl_digest_compute(data, sizeof data, &d);
    char *path = chunk_file(&d);
    crash_arg a = {steps[s], data, sizeof data, &d};
    assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)), CKL_FAILPOINT_CRASH_STATUS);
    /* never a partial chunk: absent before the rename, complete after */
    if (s == AFTER_RENAME)
      check_valid(&d, data, sizeof data);
    else
      assert_false(exists(path));
    /* a crash leaves at most its own recognisable temp file */
    int tmps = count_tmp(&d);
    assert_int_equal(tmps, (s == 0 || s == AFTER_RENAME) ? 0 : 1);
    assert_int_equal(ckl_chunk_insert(fx.cs, &d, data, sizeof data, NULL),
                     s == AFTER_RENAME ? CKL_INSERT_DEDUP : CKL_INSERT_NEW);
    check_valid(&d, data, sizeof data);
    free(path);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_digest_known_answers),
      cmocka_unit_test(test_hex_round_trip),
      cmocka_unit_test(test_hex_rejects),
      cmocka_unit_test(test_crc32c),
      cmocka_unit_test(test_format_round_trip),
      cmocka_unit_test(test_format_corruption),
      cmocka_unit_test(test_format_resealed),
      cmocka_unit_test(test_open_errors),
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_relpath_and_names),
      cmocka_unit_test(test_insert_dedup_touch_read),
      cmocka_unit_test(test_insert_empty_and_raw),
      cmocka_unit_test(test_insert_rejects),
      cmocka_unit_test(test_read_corrupt),
      cmocka_unit_test(test_mark_bad_and_repair),
      cmocka_unit_test(test_sync_policies),
      cmocka_unit_test_teardown(test_failpoint_errors, teardown),
      cmocka_unit_test_teardown(test_failpoint_crash, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

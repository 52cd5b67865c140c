/*
 * tests/fuzz/mkcorpus.c - writes the seed corpora of the fuzz targets.
 *
 *     ckl_fuzz_mkcorpus tests/fuzz/corpus
 *
 * Seeds are made with the library's own encoders (so they are what the
 * library writes today) plus edge cases: each valid seed's nearest
 * invalid neighbours with their checksums fixed, so the replay test and
 * the fuzzer start on both sides of every rule. Output is deterministic
 * (UUIDs, times and random bytes are fixed), so regenerating gives the
 * same files; files named "regress-*" (minimised crash reproducers added
 * by hand) are never touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunklock/chunklock.h"
#include "datastore/chunk_internal.h"
#include "datastore/crc32c.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"
#include "locks/softlock_internal.h"

static const char *out_root;

static void die(const char *what) {
  fprintf(stderr, "mkcorpus: %s\n", what);
  exit(1);
}

static void put(const char *target, const char *name, const void *data, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", out_root, target);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) die(path);
  snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
  FILE *f = fopen(path, "wb");
  if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) die(path);
}

static void put_str(const char *target, const char *name, const char *s) {
  put(target, name, s, strlen(s));
}

static void le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Deterministic bytes (xorshift), for incompressible payloads. */
static void fill(uint8_t *p, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (uint8_t)x;
  }
}

/* ---- chunk ------------------------------------------------------------- */

static void chunk_seed(const char *name, const void *data, size_t len, int level) {
  void *img;
  size_t n;
  if (ckl_chunk_encode(data, len, level, &img, &n) != 0) die("chunk encode");
  put("chunk", name, img, n);
  free(img);
}

/* A raw 5-byte chunk with header bytes changed and both CRCs recomputed. */
static void chunk_edge(const char *name, int off, uint8_t val, int extra) {
  void *img;
  size_t n;
  if (ckl_chunk_encode("hello", 5, -1, &img, &n) != 0) die("chunk encode");
  uint8_t *p = realloc(img, n + (size_t)(extra > 0 ? extra : 0));
  if (!p) die("oom");
  if (off >= 0) p[off] = val;
  if (extra > 0) memset(p + n, 'x', (size_t)extra);
  le32(p + 20, ckl__crc32c(0, p, 20));
  put("chunk", name, p, extra < 0 ? n + (size_t)extra : n + (size_t)extra);
  free(p);
}

static void chunk_corpus(void) {
  static const char text[] = "chunklock chunk seed: the quick brown fox jumps over the lazy dog. ";
  uint8_t big[4096];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)text[i % (sizeof text - 1)];
  uint8_t rnd[256];
  fill(rnd, sizeof rnd, 1);
  chunk_seed("empty", "", 0, 0);
  chunk_seed("one-byte", "x", 1, 0);
  chunk_seed("raw-hello", "hello", 5, -1);
  chunk_seed("zstd-text-4k", big, sizeof big, 3);
  chunk_seed("zstd-text-4k-l19", big, sizeof big, 19);
  chunk_seed("raw-random-256", rnd, sizeof rnd, 3); /* does not shrink: stored raw */
  chunk_edge("edge-newer-version", 4, 2, 0);
  chunk_edge("edge-unknown-flag", 5, 0x02, 0);
  chunk_edge("edge-zstd-flag-on-raw", 5, 0x01, 0);
  chunk_edge("edge-trailing-bytes", -1, 0, 3);
  chunk_edge("edge-truncated", -1, 0, -2);
  put("chunk", "edge-header-only-short", "CKLC\x01\x00\x00", 7);
}

/* ---- indexes ----------------------------------------------------------- */

static char *tmpdir;

/* Write an index with the library's writer, then pin UUID and ctime so
 * the file is reproducible. Returns the malloc'd image. */
static uint8_t *index_image(ckl_index_kind kind, uint64_t chunk_size, const uint64_t *vals,
                            size_t n, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/x.%s", tmpdir, kind == CKL_INDEX_DYNAMIC ? "didx" : "fidx");
  ckl_index_writer *w;
  if (ckl_index_writer_create(path, kind, chunk_size, CKL_ATOMIC_NOSYNC, &w) != 0)
    die("index writer");
  for (size_t i = 0; i < n; i++) {
    ckl_digest d;
    uint8_t seed[8];
    le32(seed, (uint32_t)i);
    le32(seed + 4, (uint32_t)kind);
    ckl_digest_compute(seed, sizeof seed, &d);
    if (ckl_index_writer_add(w, vals[i], &d) != 0) die("index add");
  }
  if (ckl_index_writer_commit(w, NULL) != 0) die("index commit");
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  uint8_t *buf = malloc(1 << 20);
  if (!buf) die("oom");
  *len = fread(buf, 1, 1 << 20, f);
  fclose(f);
  unlink(path);
  for (int i = 0; i < 16; i++) buf[16 + i] = (uint8_t)(0xa0 + i);
  memset(buf + 32, 0, 8);
  buf[32] = 0x42; /* ctime: a fixed small value */
  le32(buf + 124, ckl__crc32c(0, buf, 124));
  return buf;
}

static void index_put(const char *target, const char *name, ckl_index_kind kind, uint64_t cs,
                      const uint64_t *vals, size_t n) {
  size_t len;
  uint8_t *img = index_image(kind, cs, vals, n, &len);
  put(target, name, img, len);
  free(img);
}

/* A valid image with the 32-bit field at off set to v, header CRC fixed
 * (the entry SHA-256 stays valid: only header bytes change). */
static void index_edge(const char *target, const char *name, ckl_index_kind kind, uint64_t cs,
                       const uint64_t *vals, size_t n, int off, uint32_t v) {
  size_t len;
  uint8_t *img = index_image(kind, cs, vals, n, &len);
  le32(img + off, v);
  le32(img + 124, ckl__crc32c(0, img, 124));
  put(target, name, img, len);
  free(img);
}

static void index_corpus(void) {
  static const uint64_t dyn3[] = {4096, 10000, 1 << 20};
  static const uint64_t dyn1[] = {1};
  static const uint64_t dynmax[] = {CKL_CHUNK_MAX, CKL_CHUNK_MAX + 1ull};
  index_put("didx", "empty", CKL_INDEX_DYNAMIC, 0, NULL, 0);
  index_put("didx", "one-byte", CKL_INDEX_DYNAMIC, 0, dyn1, 1);
  index_put("didx", "three", CKL_INDEX_DYNAMIC, 0, dyn3, 3);
  index_put("didx", "max-chunk", CKL_INDEX_DYNAMIC, 0, dynmax, 2);
  index_edge("didx", "edge-newer-version", CKL_INDEX_DYNAMIC, 0, dyn3, 3, 8, 2);
  index_edge("didx", "edge-count-off-by-one", CKL_INDEX_DYNAMIC, 0, dyn3, 3, 40, 4);
  index_edge("didx", "edge-total-mismatch", CKL_INDEX_DYNAMIC, 0, dyn3, 3, 48, 7);
  index_edge("didx", "edge-chunk-size-set", CKL_INDEX_DYNAMIC, 0, dyn3, 3, 56, 4096);

  static const uint64_t fix3[] = {4096, 4096, 100};
  static const uint64_t fix2[] = {4096, 4096};
  index_put("fidx", "empty", CKL_INDEX_FIXED, 4096, NULL, 0);
  index_put("fidx", "exact-multiple", CKL_INDEX_FIXED, 4096, fix2, 2);
  index_put("fidx", "short-last", CKL_INDEX_FIXED, 4096, fix3, 3);
  index_edge("fidx", "edge-newer-version", CKL_INDEX_FIXED, 4096, fix3, 3, 8, 2);
  index_edge("fidx", "edge-chunk-size-zero", CKL_INDEX_FIXED, 4096, fix3, 3, 56, 0);
  index_edge("fidx", "edge-total-too-big", CKL_INDEX_FIXED, 4096, fix3, 3, 48, 3 * 4096 + 1);
  index_edge("fidx", "edge-header-size-132", CKL_INDEX_FIXED, 4096, fix3, 3, 12, 132);
}

/* ---- manifest -------------------------------------------------------------- */

static void manifest_corpus(void) {
  ckl_snapshot_name sn;
  if (ckl_snapshot_name_parse("vm/100/2024-02-29T12:00:00Z", &sn) != 0) die("name");
  json_t *m;
  if (ckl_manifest_new(&sn, &m) != 0) die("manifest new");
  json_object_set_new(m, "created", json_string("2024-02-29T12:05:00Z"));
  char *s = json_dumps(m, JSON_SORT_KEYS | JSON_INDENT(2));
  put_str("manifest", "no-files", s);
  free(s);
  ckl_digest d;
  ckl_digest_compute("a", 1, &d);
  ckl_manifest_add_file(m, "root.didx", 1234, &d);
  ckl_digest_compute("b", 1, &d);
  ckl_manifest_add_file(m, "disk-0.fidx", 0, &d);
  json_object_set_new(json_object_get(m, "unprotected"), "verify_state",
                      json_pack("{s:s, s:i, s:[b, n, f]}", "state", "ok", "upid", 7, "more", 1,
                                0.5));
  s = json_dumps(m, JSON_SORT_KEYS | JSON_INDENT(2));
  put_str("manifest", "two-files", s);
  free(s);
  s = json_dumps(m, JSON_SORT_KEYS | JSON_COMPACT);
  put_str("manifest", "two-files-compact", s);
  free(s);
  json_decref(m);

  static const char *const hdr = "{\"format\": 1, \"snapshot\": \"host/a.b_c-D/0000-01-01T00:00:00Z\", ";
  char buf[2048];
  struct {
    const char *name, *rest;
  } edges[] = {
      {"edge-unknown-key-kept", "\"files\": [], \"created\": \"2020-01-01T00:00:00Z\", "
                                "\"unprotected\": {}, \"x-extra\": [1, {\"a\": null}]}"},
      {"edge-escaped-keys", "\"fi\\u006ces\": [{\"n\\u0061me\": \"a.didx\", \"size\": \"1\"}], "
                            "\"created\": \"2020-01-01T00:00:00Z\", \"unprotected\": {}}"},
      {"edge-bad-csum", "\"files\": [{\"name\": \"a.didx\", \"size\": 1, \"csum\": \"ABC\"}], "
                        "\"created\": \"2020-01-01T00:00:00Z\", \"unprotected\": {}}"},
      {"edge-duplicate-file", "\"files\": [{\"name\": \"a.didx\", \"size\": 1, \"csum\": "
                              "\"0000000000000000000000000000000000000000000000000000000000000000\"}, "
                              "{\"name\": \"a.didx\", \"size\": 2, \"csum\": "
                              "\"0000000000000000000000000000000000000000000000000000000000000000\"}], "
                              "\"created\": \"2020-01-01T00:00:00Z\", \"unprotected\": {}}"},
      {"edge-duplicate-key", "\"files\": [], \"files\": [], \"created\": \"2020-01-01T00:00:00Z\", "
                             "\"unprotected\": {}}"},
      {"edge-bad-created", "\"files\": [], \"created\": \"2020-02-30T00:00:00Z\", "
                           "\"unprotected\": {}}"},
      {"edge-unprotected-array", "\"files\": [], \"created\": \"2020-01-01T00:00:00Z\", "
                                 "\"unprotected\": []}"},
      {"edge-truncated", "\"files\": [{\"name\": \"a.di"},
  };
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
    snprintf(buf, sizeof buf, "%s%s", hdr, edges[i].rest);
    put_str("manifest", edges[i].name, buf);
  }
  put_str("manifest", "edge-newer-format", "{\"format\": 2, \"anything\": true}");
  put_str("manifest", "edge-not-object", "[\"format\", 1]");
  put_str("manifest", "edge-invalid-utf8", "{\"format\": 1, \"snapshot\": \"\xff\xfe\"}");
}

/* ---- roster ------------------------------------------------------------ */

static void roster_seed(const char *name, ckl__roster_view *v, int patch_off, uint8_t patch) {
  uint8_t buf[CKL__ROSTER_REC_MAX];
  int n = ckl__roster_encode(v, buf, sizeof buf);
  if (n < 0) die("roster encode");
  if (patch_off >= 0) buf[patch_off] = patch;
  put("roster", name, buf, (size_t)n);
}

static void roster_corpus(void) {
  static char target[4096];
  memset(target, 'p', 4095);
  target[0] = '/';
  ckl__roster_view v = {.flags = CKL_ROSTER_WRITER,
                        .pid = 4242,
                        .tid = 4243,
                        .pid_start = 123456789,
                        .pidns = 4026531836u,
                        .start_ns = 1700000000000000000LL,
                        .lease_expiry_ns = 0,
                        .str = {"machine:0123456789abcdef0123456789abcdef",
                                "fedcba98-7654-3210-fedc-ba9876543210", "backup-host", "backup",
                                "vm/100/2024-02-29T12:00:00Z"}};
  for (int i = 0; i < 5; i++) v.len[i] = strlen(v.str[i]);
  roster_seed("backup-writer", &v, -1, 0);
  v.flags = CKL_ROSTER_EXCLUSIVE;
  v.str[3] = "gc";
  v.len[3] = 2;
  v.lease_expiry_ns = 1700000060000000000LL;
  roster_seed("gc-leased", &v, -1, 0);
  v.str[4] = target;
  v.len[4] = 4095;
  v.str[0] = v.str[1] = v.str[2] = "";
  v.len[0] = v.len[1] = v.len[2] = 0;
  roster_seed("longest-target", &v, -1, 0);
  v.str[4] = "/srv/store/.locks/vm/100/2024-02-29T12:00:00Z.lck \xc3\xa9";
  v.len[4] = strlen(v.str[4]);
  roster_seed("utf8-target", &v, -1, 0);
  roster_seed("edge-newer-version", &v, 4, 2);
  roster_seed("edge-unknown-flag", &v, 8, 0x04);
  roster_seed("edge-negative-start", &v, 55, 0x80);
}

/* ---- store config ------------------------------------------------------------ */

static void config_seed(const char *name, const ckl_store_config *c) {
  char *s = ckl__store_config_dump(c);
  if (!s) die("config dump");
  put_str("store_config", name, s);
  free(s);
}

static void config_corpus(void) {
  ckl_store_config c = {.format = 1,
                        .uuid = "00112233445566778899aabbccddeeff",
                        .created = "2024-02-29T12:00:00Z",
                        .chunk_average_size = 1 << 20,
                        .compress_level = 3,
                        .sync = CKL_SYNC_FILESYSTEM,
                        .gc_atime_safety_s = 87300,
                        .gc_margin_s = 5};
  config_seed("default", &c);
  c.locks_dir = "/run/chunklock";
  c.sync = CKL_SYNC_NONE;
  c.compress_level = -1;
  c.chunk_average_size = 65536;
  c.gc_atime_safety_s = 0;
  c.gc_margin_s = 0;
  config_seed("locks-dir-nosync", &c);
  c.locks_dir = NULL;
  c.chunk_average_size = 4u << 20;
  c.compress_level = 22;
  c.gc_atime_safety_s = 31536000;
  c.gc_margin_s = 3600;
  c.sync = CKL_SYNC_FILE;
  config_seed("maxima", &c);
  put_str("store_config", "edge-newer-format", "{\"format\": 2}");
  put_str("store_config", "edge-not-object", "[{\"format\": 1}]");
  put_str("store_config", "edge-bad-average",
          "{\"format\": 1, \"uuid\": \"00112233445566778899aabbccddeeff\", \"created\": "
          "\"2024-02-29T12:00:00Z\", \"chunk\": {\"average_size\": 100000, \"compress_level\": 3}, "
          "\"sync\": \"file\", \"gc\": {\"atime_safety_s\": 0, \"margin_s\": 0}, \"locks_dir\": null}");
  put_str("store_config", "edge-relative-locks-dir",
          "{\"format\": 1, \"uuid\": \"00112233445566778899aabbccddeeff\", \"created\": "
          "\"2024-02-29T12:00:00Z\", \"chunk\": {\"average_size\": 65536, \"compress_level\": 3}, "
          "\"sync\": \"file\", \"gc\": {\"atime_safety_s\": 0, \"margin_s\": 0}, \"locks_dir\": "
          "\"run/x\"}");
  put_str("store_config", "edge-unknown-gc-key",
          "{\"format\": 1, \"uuid\": \"00112233445566778899aabbccddeeff\", \"created\": "
          "\"2024-02-29T12:00:00Z\", \"chunk\": {\"average_size\": 65536, \"compress_level\": 3}, "
          "\"sync\": \"file\", \"gc\": {\"atime_safety_s\": 0, \"margin_s\": 0, \"x\": 1}, "
          "\"locks_dir\": null}");
}

/* ---- names --------------------------------------------------------------------- */

static void names_corpus(void) {
  static const struct {
    const char *file, *text;
  } seeds[] = {
      {"snapshot", "vm/100/2024-02-29T12:00:00Z"},
      {"snapshot-year-0", "host/a.b_c-D/0000-01-01T00:00:00Z"},
      {"snapshot-year-9999", "ct/x/9999-12-31T23:59:59Z"},
      {"group", "vm/100"},
      {"time", "1970-01-01T00:00:00Z"},
      {"archive-didx", "root.didx"},
      {"archive-fidx", "drive-scsi0.img.fidx"},
      {"chunk-name", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
      {"chunk-tmp-name",
       ".tmp-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-0011223344556677"},
      {"chunk-bad-name", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.12.bad"},
      {"edge-feb-30", "vm/100/2023-02-30T12:00:00Z"},
      {"edge-feb-29-non-leap", "vm/100/1900-02-29T12:00:00Z"},
      {"edge-hour-24", "vm/100/2024-01-01T24:00:00Z"},
      {"edge-dotdot-id", "vm/../2024-01-01T00:00:00Z"},
      {"edge-extra-slash", "vm/1/0/2024-01-01T00:00:00Z"},
      {"edge-lowercase-z", "vm/100/2024-01-01T00:00:00z"},
      {"edge-uppercase-type", "VM/100/2024-01-01T00:00:00Z"},
      {"edge-archive-no-stem", ".didx"},
  };
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
    put_str("snapshot_name", seeds[i].file, seeds[i].text);
  char buf[512];
  memset(buf, 0, sizeof buf);
  memset(buf, 't', 32);
  buf[32] = '/';
  memset(buf + 33, 'i', 128);
  memcpy(buf + 161, "/2024-01-01T00:00:00Z", 21);
  put("snapshot_name", "longest", buf, 182);
  buf[0] = '\0';
  put("snapshot_name", "edge-nul-in-type", buf, 182);
  put("snapshot_name", "edge-nul-before-time", "vm/100\0/2024-01-01T00:00:00Z", 28);
}

/* ---- soft lock markers --------------------------------------------------- */

static void marker_seed(const char *name, const ckl__softlock_marker *m) {
  char buf[CKL__SOFTLOCK_MARKER_MAX + 1];
  int n = ckl__softlock_marker_format(m, buf, sizeof buf);
  if (n < 0) die("marker format");
  put("softlock_marker", name, buf, (size_t)n);
}

static void marker_corpus(void) {
  ckl__softlock_marker m = {.token = "00112233445566778899aabbccddeeff",
                            .host = "backup-host",
                            .boot = "fedcba98-7654-3210-fedc-ba9876543210",
                            .pidns = 4026531836u,
                            .pid = 4242,
                            .created_ns = 1700000000000000000LL,
                            .op = "backup"};
  marker_seed("writer", &m);
  memset(m.host, 'h', 63);
  m.host[63] = '\0';
  memset(m.boot, 'f', 63);
  m.boot[63] = '\0';
  memset(m.op, 'o', 31);
  m.op[31] = '\0';
  m.pidns = UINT64_MAX;
  m.pid = CKL__SOFTLOCK_PID_MAX;
  m.created_ns = INT64_MAX;
  marker_seed("maxima", &m);
  ckl__softlock_marker z = {.token = "ffffffffffffffffffffffffffffffff",
                            .host = "h", .boot = "-", .pidns = 0, .pid = 1, .created_ns = 1,
                            .op = "-"};
  marker_seed("minima", &z);
  static const char head[] = "chunklock-softlock 1\ntoken 00112233445566778899aabbccddeeff\n"
                             "host h\nboot -\npidns 0\n";
  char buf[512];
  snprintf(buf, sizeof buf, "%spid 01\ncreated 1\nop -\n", head);
  put_str("softlock_marker", "edge-leading-zero", buf);
  snprintf(buf, sizeof buf, "%spid 4194305\ncreated 1\nop -\n", head);
  put_str("softlock_marker", "edge-pid-too-big", buf);
  snprintf(buf, sizeof buf, "%spid 1\ncreated 9223372036854775808\nop -\n", head);
  put_str("softlock_marker", "edge-created-overflow", buf);
  snprintf(buf, sizeof buf, "%spid 1\ncreated 1\nop -", head);
  put_str("softlock_marker", "edge-no-final-newline", buf);
  snprintf(buf, sizeof buf, "%spid  1\ncreated 1\nop -\n", head);
  put_str("softlock_marker", "edge-two-spaces", buf);
  put_str("softlock_marker", "edge-version-2", "chunklock-softlock 2\n");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  out_root = argv[1];
  if (mkdir(out_root, 0755) != 0 && errno != EEXIST) die(out_root);
  char tpl[] = "/tmp/ckl-mkcorpus-XXXXXX";
  tmpdir = mkdtemp(tpl);
  if (!tmpdir) die("mkdtemp");
  chunk_corpus();
  index_corpus();
  manifest_corpus();
  roster_corpus();
  config_corpus();
  names_corpus();
  marker_corpus();
  rmdir(tmpdir);
  return 0;
}

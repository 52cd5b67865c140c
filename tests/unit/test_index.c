/* Index files: write/read round trips of both kinds (0, 1, 10k entries),
 * the writer's order and size rules, the reader against every truncation,
 * every bit flip, crafted headers (count overflow, versions, sizes), the
 * exact -ENOENT GC relies on, failpoints (error, crash) at each write
 * step, and the pread reader (index open and file checksum): a failed
 * read is exactly -EIO naming the file, and a file truncated or extended
 * between fstat and read is CKL_ECORRUPT, not a SIGBUS. */
// ctest-labels: threads
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "datastore/crc32c.h"
#include "datastore/ops_internal.h"

static char *dir;

static int group_setup(void **state) {
  (void)state;
  dir = ckl_test_mkdtemp("index");
  return 0;
}
static int group_teardown(void **state) {
  (void)state;
  ckl_test_rmtree(dir);
  free(dir);
  return 0;
}
static int teardown(void **state) {
  (void)state;
  ckl_failpoint_disarm_all();
  ckl_log_set(NULL, NULL, CKL_LOG_ERROR);
  return 0;
}

static void digest_of(size_t i, ckl_digest *d) {
  uint64_t v = i * 0x9E3779B97F4A7C15ull + 1;
  ckl_digest_compute(&v, sizeof v, d);
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
/* Recompute the entry SHA-256 and the header CRC after an edit. */
static void reseal(uint8_t *img, size_t len) {
  ckl_digest sha;
  ckl_digest_compute(img + 128, len - 128, &sha);
  memcpy(img + 64, sha.b, 32);
  put_le(img + 124, ckl__crc32c(0, img, 124), 4);
}

static bool exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* Try a read lock on the one entry of dir starting with prefix: 0 if
 * granted (no live writer), -EAGAIN if a writer holds its lock. */
static int probe_temp_lock(const char *prefix) {
  DIR *dd = opendir(dir);
  assert_non_null(dd);
  struct dirent *e;
  char *name = NULL;
  while ((e = readdir(dd)))
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) name = ckl_test_path(dir, e->d_name);
  closedir(dd);
  assert_non_null(name);
  int fd = open(name, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
  int rc = fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
  close(fd);
  free(name);
  return rc;
}

/* Dynamic chunk i spans [i*1000 + i*(i%7), ...): varying sizes. */
static uint64_t dyn_end(size_t i) { return (uint64_t)(i + 1) * 1000 + (i % 7) * 100; }

static char *write_dynamic(const char *name, size_t n, ckl_digest *file_sha) {
  char *path = ckl_test_path(dir, name);
  ckl_index_writer *w;
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, 0, &w), 0);
  uint64_t prev = 0;
  for (size_t i = 0; i < n; i++) {
    ckl_digest d;
    digest_of(i, &d);
    uint64_t end = prev + dyn_end(i) % 4096 + 1;
    assert_int_equal(ckl_index_writer_add(w, end, &d), 0);
    prev = end;
  }
  assert_int_equal(ckl_index_writer_commit(w, file_sha), 0);
  return path;
}

static void check_dynamic(const ckl_index *ix, size_t n) {
  assert_int_equal(ckl_index_get_kind(ix), CKL_INDEX_DYNAMIC);
  assert_int_equal(ckl_index_count(ix), n);
  assert_int_equal(ckl_index_chunk_size(ix), 0);
  uint64_t prev = 0;
  for (size_t i = 0; i < n; i++) {
    ckl_digest d;
    digest_of(i, &d);
    assert_memory_equal(ckl_index_digest(ix, i)->b, d.b, 32);
    uint64_t s, e;
    assert_int_equal(ckl_index_range(ix, i, &s, &e), 0);
    assert_int_equal(s, prev);
    assert_int_equal(e, prev + dyn_end(i) % 4096 + 1);
    prev = e;
  }
  assert_int_equal(ckl_index_size(ix), prev);
  assert_null(ckl_index_digest(ix, n));
  uint64_t s, e;
  assert_int_equal(ckl_index_range(ix, n, &s, &e), -EINVAL);
}

static void test_dynamic_round_trip(void **state) {
  (void)state;
  const size_t sizes[] = {0, 1, 10000};
  for (size_t k = 0; k < 3; k++) {
    char name[64];
    snprintf(name, sizeof name, "dyn%zu.didx", sizes[k]);
    int64_t t0 = ckl__now_realtime_ns();
    ckl_digest fsha;
    char *path = write_dynamic(name, sizes[k], &fsha);
    int64_t t1 = ckl__now_realtime_ns();
    size_t flen;
    char *bytes = ckl_test_read_file(path, &flen);
    assert_int_equal(flen, 128 + 40 * sizes[k]);
    assert_memory_equal(bytes, "CKLDIDX\0", 8);
    ckl_digest want;
    ckl_digest_compute(bytes, flen, &want);
    assert_memory_equal(fsha.b, want.b, 32); /* the manifest's file checksum */

    ckl_index *ix;
    assert_int_equal(ckl_index_open(path, &ix), 0);
    check_dynamic(ix, sizes[k]);
    assert_true(ckl_index_ctime_ns(ix) >= t0 && ckl_index_ctime_ns(ix) <= t1);
    uint8_t uuid[16], zero[16] = {0};
    ckl_index_uuid(ix, uuid);
    assert_memory_not_equal(uuid, zero, 16);
    ckl_index_close(ix);

    assert_int_equal(ckl_index_parse(bytes, flen, &ix), 0);
    check_dynamic(ix, sizes[k]);
    ckl_index_close(ix);

    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_int_equal(ckl_index_openat(dfd, name, &ix), 0);
    check_dynamic(ix, sizes[k]);
    ckl_index_close(ix);
    close(dfd);
    /* only the index itself: no temp file left behind */
    char pfx[80];
    snprintf(pfx, sizeof pfx, ".%s.tmp-", name);
    assert_int_equal(ckl_test_count_entries(dir, pfx), 0);
    free(bytes);
    free(path);
  }
  /* two files never share a UUID */
  ckl_index *a, *b;
  char *pa = ckl_test_path(dir, "dyn0.didx"), *pb = ckl_test_path(dir, "dyn1.didx");
  assert_int_equal(ckl_index_open(pa, &a), 0);
  assert_int_equal(ckl_index_open(pb, &b), 0);
  uint8_t ua[16], ub[16];
  ckl_index_uuid(a, ua);
  ckl_index_uuid(b, ub);
  assert_memory_not_equal(ua, ub, 16);
  ckl_index_close(a);
  ckl_index_close(b);
  free(pa);
  free(pb);
}

static void fixed_case(const char *name, uint64_t cs, uint64_t total) {
  char *path = ckl_test_path(dir, name);
  ckl_index_writer *w;
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_FIXED, cs, CKL_ATOMIC_NOSYNC, &w), 0);
  size_t n = (size_t)(total / cs + (total % cs != 0));
  for (size_t i = 0; i < n; i++) {
    ckl_digest d;
    digest_of(i + 77, &d);
    uint64_t len = i + 1 < n ? cs : total - i * cs;
    assert_int_equal(ckl_index_writer_add(w, len, &d), 0);
  }
  assert_int_equal(ckl_index_writer_commit(w, NULL), 0);
  ckl_index *ix;
  assert_int_equal(ckl_index_open(path, &ix), 0);
  assert_int_equal(ckl_index_get_kind(ix), CKL_INDEX_FIXED);
  assert_int_equal(ckl_index_count(ix), n);
  assert_int_equal(ckl_index_size(ix), total);
  assert_int_equal(ckl_index_chunk_size(ix), cs);
  for (size_t i = 0; i < n; i++) {
    ckl_digest d;
    digest_of(i + 77, &d);
    assert_memory_equal(ckl_index_digest(ix, i)->b, d.b, 32);
    uint64_t s, e;
    assert_int_equal(ckl_index_range(ix, i, &s, &e), 0);
    assert_int_equal(s, i * cs);
    assert_int_equal(e, i + 1 < n ? (i + 1) * cs : total);
  }
  ckl_index_close(ix);
  size_t flen;
  char *bytes = ckl_test_read_file(path, &flen);
  assert_int_equal(flen, 128 + 32 * n);
  assert_memory_equal(bytes, "CKLFIDX\0", 8);
  free(bytes);
  free(path);
}

static void test_fixed_round_trip(void **state) {
  (void)state;
  fixed_case("f0.fidx", 4096, 0);
  fixed_case("f1.fidx", 4096, 100);           /* one short chunk */
  fixed_case("f1b.fidx", 4096, 4096);         /* one full chunk */
  fixed_case("f10k.fidx", 4096, 4096 * 9999 + 1234);
  fixed_case("fexact.fidx", 65536, 65536 * 10000ull);
}

static void test_writer_rules(void **state) {
  (void)state;
  char *path = ckl_test_path(dir, "rules.didx");
  ckl_index_writer *w = (ckl_index_writer *)0x1;
  assert_int_equal(ckl_index_writer_create(path, (ckl_index_kind)3, 0, 0, &w), -EINVAL);
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_FIXED, 0, 0, &w), -EINVAL);
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_FIXED, CKL_CHUNK_MAX + 1ull, 0, &w), -EINVAL);
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, 0x100, &w), -EINVAL);
  char *nodir = ckl_test_path(dir, "nodir/x.didx");
  assert_int_equal(ckl_index_writer_create(nodir, CKL_INDEX_DYNAMIC, 0, 0, &w), -ENOENT);
  free(nodir);
  assert_int_equal(ckl_test_count_entries(dir, ".rules.didx.tmp-"), 0);

  ckl_digest d;
  digest_of(1, &d);
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, 0, &w), 0);
  assert_int_equal(ckl_test_count_entries(dir, ".rules.didx.tmp-"), 1);
  assert_int_equal(ckl_index_writer_add(w, 0, &d), -EINVAL);        /* empty first chunk */
  assert_int_equal(ckl_index_writer_add(w, 100, &d), 0);
  assert_int_equal(ckl_index_writer_add(w, 100, &d), -EINVAL);      /* equal */
  assert_int_equal(ckl_index_writer_add(w, 99, &d), -EINVAL);       /* decreasing */
  assert_int_equal(ckl_index_writer_add(w, 100 + CKL_CHUNK_MAX + 1ull, &d), -EINVAL);
  assert_int_equal(ckl_index_writer_add(w, 100 + CKL_CHUNK_MAX, &d), 0);
  /* rejected entries were not added: the file has exactly two */
  assert_int_equal(ckl_index_writer_commit(w, NULL), 0);
  ckl_index *ix;
  assert_int_equal(ckl_index_open(path, &ix), 0);
  assert_int_equal(ckl_index_count(ix), 2);
  assert_int_equal(ckl_index_size(ix), 100 + CKL_CHUNK_MAX);
  ckl_index_close(ix);

  char *fpath = ckl_test_path(dir, "rules.fidx");
  assert_int_equal(ckl_index_writer_create(fpath, CKL_INDEX_FIXED, 4096, 0, &w), 0);
  assert_int_equal(ckl_index_writer_add(w, 4097, &d), -EINVAL);     /* larger than chunk size */
  assert_int_equal(ckl_index_writer_add(w, 0, &d), -EINVAL);
  assert_int_equal(ckl_index_writer_add(w, 4096, &d), 0);
  assert_int_equal(ckl_index_writer_add(w, 10, &d), 0);             /* short: must be last */
  assert_int_equal(ckl_index_writer_add(w, 4096, &d), -EINVAL);
  assert_int_equal(ckl_index_writer_add(w, 10, &d), -EINVAL);
  assert_int_equal(ckl_index_writer_commit(w, NULL), 0);
  assert_int_equal(ckl_index_open(fpath, &ix), 0);
  assert_int_equal(ckl_index_count(ix), 2);
  assert_int_equal(ckl_index_size(ix), 4106);
  ckl_index_close(ix);

  /* abort removes the temp file and never creates the target */
  char *apath = ckl_test_path(dir, "aborted.didx");
  assert_int_equal(ckl_index_writer_create(apath, CKL_INDEX_DYNAMIC, 0, 0, &w), 0);
  assert_int_equal(ckl_index_writer_add(w, 5, &d), 0);
  assert_int_equal(ckl_test_count_entries(dir, ".aborted.didx.tmp-"), 1);
  /* live temp files are locked, as ckl_atomic_cleanup() expects */
  assert_int_equal(probe_temp_lock(".aborted.didx.tmp-"), -EAGAIN);
  ckl_index_writer_abort(w);
  ckl_index_writer_abort(NULL);
  assert_int_equal(ckl_test_count_entries(dir, ".aborted.didx.tmp-"), 0);
  assert_false(exists(apath));
  free(apath);
  free(fpath);
  free(path);
}

/* A small index (3 dynamic entries) as bytes. */
static uint8_t *small_image(const char *name, size_t *len) {
  char *path = write_dynamic(name, 3, NULL);
  uint8_t *img = (uint8_t *)ckl_test_read_file(path, len);
  assert_int_equal(*len, 128 + 3 * 40);
  free(path);
  return img;
}

static void test_reader_truncation_and_flips(void **state) {
  (void)state;
  size_t n;
  uint8_t *img = small_image("small.didx", &n);
  ckl_index *ix = (ckl_index *)0x1;
  for (size_t cut = 0; cut < n; cut++) {
    uint8_t *t = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
    memcpy(t, img, cut);
    assert_int_equal(ckl_index_parse(cut ? t : NULL, cut, &ix), CKL_ECORRUPT);
    assert_null(ix);
    free(t);
  }
  /* the file path too, at a few lengths, including 0 (cannot be mapped) */
  char *tpath = ckl_test_path(dir, "trunc.didx");
  const size_t cuts[] = {0, 1, 127, 128, 129, 167, 168, n - 1};
  for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
    ckl_test_write_file(tpath, img, cuts[k]);
    assert_int_equal(ckl_index_open(tpath, &ix), CKL_ECORRUPT);
  }
  ckl_test_write_file(tpath, img, n);
  assert_int_equal(ckl_index_open(tpath, &ix), 0);
  ckl_index_close(ix);
  uint8_t *longer = malloc(n + 40);
  memcpy(longer, img, n);
  memset(longer + n, 0, 40);
  assert_int_equal(ckl_index_parse(longer, n + 40, &ix), CKL_ECORRUPT); /* an extra entry */
  assert_int_equal(ckl_index_parse(longer, n + 1, &ix), CKL_ECORRUPT);
  free(longer);
  for (size_t pos = 0; pos < n; pos++)
    for (int bit = 0; bit < 8; bit++) {
      img[pos] ^= (uint8_t)(1u << bit);
      assert_int_equal(ckl_index_parse(img, n, &ix), CKL_ECORRUPT);
      img[pos] ^= (uint8_t)(1u << bit);
    }
  assert_int_equal(ckl_index_parse(img, n, &ix), 0);
  ckl_index_close(ix);
  free(tpath);
  free(img);
}

static void test_reader_crafted(void **state) {
  (void)state;
  size_t n;
  uint8_t *img = small_image("crafted.didx", &n);
  uint8_t *t = malloc(n);
  ckl_index *ix;
#define EDIT(stmt, expect)                                                     \
  do {                                                                         \
    memcpy(t, img, n);                                                         \
    stmt;                                                                      \
    reseal(t, n);                                                              \
    int rc_ = ckl_index_parse(t, n, &ix);                                      \
    assert_int_equal(rc_, (expect));                                           \
    if (rc_ == 0) ckl_index_close(ix);                                         \
  } while (0)
  EDIT((void)0, 0);
  EDIT(memcpy(t, "CKLXIDX\0", 8), CKL_ECORRUPT);                  /* wrong magic */
  EDIT(memcpy(t, "CKLFIDX\0", 8), CKL_ECORRUPT);                  /* other kind: sizes differ */
  EDIT(put_le(t + 8, 2, 4), CKL_EVERSION);                        /* newer version */
  EDIT(put_le(t + 8, 0xFFFFFFFF, 4), CKL_EVERSION);
  EDIT(put_le(t + 8, 0, 4), CKL_ECORRUPT);
  /* count overflow: 3 + 2^61 entries wraps count*40 back to 120 */
  EDIT(put_le(t + 40, 3 + (1ull << 61), 8), CKL_ECORRUPT);
  EDIT(put_le(t + 40, UINT64_MAX, 8), CKL_ECORRUPT);
  EDIT(put_le(t + 40, 2, 8), CKL_ECORRUPT);
  EDIT(put_le(t + 40, 4, 8), CKL_ECORRUPT);
  EDIT(put_le(t + 48, get_le(t + 48, 8) + 1, 8), CKL_ECORRUPT);  /* total != last end */
  EDIT(put_le(t + 56, 4096, 8), CKL_ECORRUPT);                    /* chunk size in a didx */
  EDIT(t[100] = 1, CKL_ECORRUPT);                                 /* reserved */
  EDIT(put_le(t + 128 + 40, get_le(t + 128, 8), 8), CKL_ECORRUPT); /* equal offsets */
  EDIT(put_le(t + 128 + 40, get_le(t + 128, 8) - 1, 8), CKL_ECORRUPT);
  EDIT(put_le(t + 128, 0, 8), CKL_ECORRUPT);                      /* empty first chunk */
  EDIT(put_le(t + 12, 64, 4), CKL_ECORRUPT);                      /* header size < 128 */
  free(t);

  /* A newer version with a longer header validates as such: EVERSION, not
   * corruption, so old readers report the right thing. */
  size_t big = n + 128;
  t = calloc(1, big);
  memcpy(t, img, 124);
  put_le(t + 8, 2, 4);
  put_le(t + 12, 256, 4);
  put_le(t + 252, ckl__crc32c(0, t, 252), 4);
  memcpy(t + 256, img + 128, n - 128);
  assert_int_equal(ckl_index_parse(t, big, &ix), CKL_EVERSION);
  put_le(t + 8, 1, 4); /* version 1 must have a 128-byte header */
  put_le(t + 252, ckl__crc32c(0, t, 252), 4);
  assert_int_equal(ckl_index_parse(t, big, &ix), CKL_ECORRUPT);
  put_le(t + 12, 1u << 20, 4); /* header size past the file */
  assert_int_equal(ckl_index_parse(t, big, &ix), CKL_ECORRUPT);
  free(t);
  free(img);

  /* fixed: count must cover the total size exactly */
  char *fpath = ckl_test_path(dir, "crafted.fidx");
  ckl_index_writer *w;
  ckl_digest d;
  digest_of(3, &d);
  assert_int_equal(ckl_index_writer_create(fpath, CKL_INDEX_FIXED, 1000, 0, &w), 0);
  assert_int_equal(ckl_index_writer_add(w, 1000, &d), 0);
  assert_int_equal(ckl_index_writer_add(w, 500, &d), 0);
  assert_int_equal(ckl_index_writer_commit(w, NULL), 0);
  img = (uint8_t *)ckl_test_read_file(fpath, &n);
  assert_int_equal(n, 128 + 64);
  t = malloc(n);
  EDIT((void)0, 0);
  EDIT(put_le(t + 48, 2001, 8), CKL_ECORRUPT);  /* needs 3 chunks */
  EDIT(put_le(t + 48, 1000, 8), CKL_ECORRUPT);  /* needs 1 chunk */
  EDIT(put_le(t + 48, 2000, 8), 0);             /* two full chunks: fine */
  EDIT(put_le(t + 56, 0, 8), CKL_ECORRUPT);     /* chunk size 0 */
  EDIT(put_le(t + 56, CKL_CHUNK_MAX + 1ull, 8), CKL_ECORRUPT);
  EDIT(memcpy(t, "CKLDIDX\0", 8), CKL_ECORRUPT); /* 64 entry bytes are not 40-byte entries */
#undef EDIT
  free(t);
  free(img);
  free(fpath);
}

static void test_open_errors(void **state) {
  (void)state;
  ckl_index *ix = (ckl_index *)0x1;
  char *missing = ckl_test_path(dir, "gone.didx");
  assert_int_equal(ckl_index_open(missing, &ix), -ENOENT);
  assert_null(ix);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_int_equal(ckl_index_openat(dfd, "gone.didx", &ix), -ENOENT);
  char *sub = ckl_test_path(dir, "adir.didx");
  assert_int_equal(mkdir(sub, 0755), 0);
  assert_int_equal(ckl_index_openat(dfd, "adir.didx", &ix), CKL_ECORRUPT);
  close(dfd);
  char *nodir = ckl_test_path(dir, "nodir/x.didx");
  assert_int_equal(ckl_index_open(nodir, &ix), -ENOENT);
  free(nodir);
  free(sub);
  free(missing);
}

static void test_kind_from_name(void **state) {
  (void)state;
  assert_int_equal(ckl_index_kind_from_name("root.pxar.didx"), CKL_INDEX_DYNAMIC);
  assert_int_equal(ckl_index_kind_from_name("drive-scsi0.img.fidx"), CKL_INDEX_FIXED);
  assert_int_equal(ckl_index_kind_from_name("a.didx"), CKL_INDEX_DYNAMIC);
  assert_int_equal(ckl_index_kind_from_name(".didx"), 0);
  assert_int_equal(ckl_index_kind_from_name("didx"), 0);
  assert_int_equal(ckl_index_kind_from_name(""), 0);
  assert_int_equal(ckl_index_kind_from_name(NULL), 0);
  assert_int_equal(ckl_index_kind_from_name("a.DIDX"), 0);
  assert_int_equal(ckl_index_kind_from_name("index.json"), 0);
  assert_int_equal(ckl_index_kind_from_name(".a.didx.tmp-0123456789abcdef"), 0);
  assert_int_equal(ckl_index_kind_from_name("a.didx.bak"), 0);
}

/* ---- failpoints at each write step ------------------------------------------- */

static const char *const steps[] = {"index.write.after_entries", "index.write.before_commit",
                                    "index.write.after_rename"};

static void test_failpoint_errors(void **state) {
  (void)state;
  ckl_index_writer *w;
  ckl_digest d;
  digest_of(9, &d);
  char *path = ckl_test_path(dir, "fp.didx");
  assert_int_equal(ckl_failpoint_arm("index.write.after_create", "error(ENOSPC)"), 0);
  assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, 0, &w), -ENOSPC);
  assert_int_equal(ckl_test_count_entries(dir, ".fp.didx.tmp-"), 0);
  ckl_failpoint_disarm_all();
  for (size_t s = 0; s < 3; s++) {
    assert_int_equal(ckl_failpoint_arm(steps[s], "error(EIO)"), 0);
    assert_int_equal(ckl_index_writer_create(path, CKL_INDEX_DYNAMIC, 0, 0, &w), 0);
    assert_int_equal(ckl_index_writer_add(w, 10, &d), 0);
    assert_int_equal(ckl_index_writer_commit(w, NULL), -EIO);
    assert_int_equal(ckl_failpoint_hits(steps[s]), 1);
    assert_int_equal(ckl_test_count_entries(dir, ".fp.didx.tmp-"), 0);
    ckl_index *ix;
    if (s == 2) {
      /* renamed already: the complete file stays */
      assert_int_equal(ckl_index_open(path, &ix), 0);
      assert_int_equal(ckl_index_count(ix), 1);
      ckl_index_close(ix);
      assert_int_equal(unlink(path), 0);
    } else {
      assert_int_equal(ckl_index_open(path, &ix), -ENOENT);
    }
    ckl_failpoint_disarm_all();
  }
  assert_int_equal(ckl_failpoint_arm("index.open.after_open", "error(EACCES)"), 0);
  char *good = write_dynamic("fpopen.didx", 2, NULL);
  ckl_index *ix;
  assert_int_equal(ckl_index_open(good, &ix), -EACCES);
  free(good);
  free(path);
}

/* ---- the pread reader ---------------------------------------------------------- */

#define EIO_TEXT "Input/output error"

/* The directory as the kernel names it (what the log shows for a dirfd). */
static char *real_dir(void) {
  char *r = realpath(dir, NULL);
  assert_non_null(r);
  return r;
}

/* A failed read at open and at the file checksum: exactly -EIO, nothing
 * returned, the log names the full path (also through a directory fd)
 * and the cause; disarmed, the same calls succeed. */
static void test_read_eio(void **state) {
  (void)state;
  ckl_digest want, got;
  char *path = write_dynamic("eio.didx", 5, &want);
  char *rdir = real_dir();
  char *rpath = ckl_test_path(rdir, "eio.didx");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(dfd >= 0);
  ckl_test_log_capture();
  ckl_test_log_clear();
  assert_int_equal(ckl_failpoint_arm("index.read.before_pread", "error(EIO)"), 0);

  ckl_index *ix = (ckl_index *)0x1;
  assert_int_equal(ckl_index_open(path, &ix), -EIO);
  assert_null(ix);
  assert_int_equal(ckl_failpoint_hits("index.read.before_pread"), 1);
  char want_log[PATH_MAX + 64];
  snprintf(want_log, sizeof want_log, "index %s: read: " EIO_TEXT, path);
  ckl_test_assert_logged(want_log);

  ckl_test_log_clear();
  assert_int_equal(ckl_index_openat(dfd, "eio.didx", &ix), -EIO);
  snprintf(want_log, sizeof want_log, "index %s: read: " EIO_TEXT, rpath);
  ckl_test_assert_logged(want_log);

  ckl_test_log_clear();
  uint64_t size = 7;
  assert_int_equal(ckl__file_sha256_at(dfd, "eio.didx", &size, &got), -EIO);
  assert_int_equal(size, 7); /* untouched on error */
  snprintf(want_log, sizeof want_log, "%s: read: " EIO_TEXT, rpath);
  ckl_test_assert_logged(want_log);
  assert_int_equal(ckl_failpoint_hits("index.read.before_pread"), 3);

  ckl_failpoint_disarm_all();
  assert_int_equal(ckl_index_openat(dfd, "eio.didx", &ix), 0);
  assert_int_equal(ckl_index_count(ix), 5);
  ckl_index_close(ix);
  assert_int_equal(ckl__file_sha256_at(dfd, "eio.didx", &size, &got), 0);
  assert_int_equal(size, 128 + 5 * 40);
  assert_memory_equal(got.b, want.b, CKL_DIGEST_LEN);
  close(dfd);
  free(rpath);
  free(rdir);
  free(path);
}

typedef struct read_arg {
  int dfd;
  const char *name;
  bool checksum; /* ckl__file_sha256_at, else ckl_index_openat */
  int rc;
  ckl_index *ix;
} read_arg;

static void *read_thread(void *p) {
  read_arg *a = p;
  if (a->checksum) {
    uint64_t size;
    ckl_digest d;
    a->rc = ckl__file_sha256_at(a->dfd, a->name, &size, &d);
  } else {
    a->rc = ckl_index_openat(a->dfd, a->name, &a->ix);
  }
  return NULL;
}

/* Another hand resizes an index between the reader's fstat and its read
 * (the failpoint pauses the reader there): CKL_ECORRUPT naming the file
 * and what happened. With mmap the shrink was a SIGBUS and the growth
 * went unnoticed (the file validated as its old size). */
static void resized_while_read(bool checksum, off_t new_len, const char *what) {
  char *path = write_dynamic("resize.didx", 100, NULL);
  char *rdir = real_dir();
  char *rpath = ckl_test_path(rdir, "resize.didx");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(dfd >= 0);
  ckl_test_log_capture();
  ckl_test_log_clear();
  assert_int_equal(ckl_failpoint_arm("index.read.before_pread", "pause"), 0);
  read_arg a = {.dfd = dfd, .name = "resize.didx", .checksum = checksum, .rc = 1,
                .ix = (ckl_index *)0x1};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, read_thread, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("index.read.before_pread", 1, CKL_TEST_WAIT_MS), 0);
  /* The reader has the fd and the old size (128 + 100 * 40). */
  assert_int_equal(truncate(path, new_len), 0);
  assert_int_equal(ckl_failpoint_release("index.read.before_pread"), 1);
  assert_int_equal(pthread_join(t, NULL), 0);
  ckl_failpoint_disarm_all();

  assert_int_equal(a.rc, CKL_ECORRUPT);
  if (!checksum) assert_null(a.ix);
  char want_log[PATH_MAX + 128];
  snprintf(want_log, sizeof want_log, "%s%s: %s: file %s while it was read",
           checksum ? "" : "index ", rpath, ckl_strerror(CKL_ECORRUPT), what);
  ckl_test_assert_logged(want_log);
  assert_int_equal(unlink(path), 0);
  close(dfd);
  free(rpath);
  free(rdir);
  free(path);
}

static void test_truncated_while_read(void **state) {
  (void)state;
  resized_while_read(false, 128 + 50 * 40, "shrank");
  resized_while_read(false, 0, "shrank");
  resized_while_read(true, 128 + 50 * 40, "shrank");
}

static void test_extended_while_read(void **state) {
  (void)state;
  resized_while_read(false, 128 + 101 * 40, "grew");
  resized_while_read(true, 128 + 100 * 40 + 1, "grew");
}

typedef struct crash_arg {
  const char *step;
  const char *path;
} crash_arg;

static int crash_child(void *p) {
  crash_arg *a = p;
  if (ckl_failpoint_arm(a->step, "crash") != 0) return 1;
  ckl_index_writer *w;
  if (ckl_index_writer_create(a->path, CKL_INDEX_DYNAMIC, 0, 0, &w) != 0) return 2;
  for (size_t i = 0; i < 100; i++) {
    ckl_digest d;
    digest_of(i, &d);
    if (ckl_index_writer_add(w, (i + 1) * 100, &d) != 0) return 3;
  }
  ckl_index_writer_commit(w, NULL);
  return 4; /* must not get here */
}

static void test_failpoint_crash(void **state) {
  (void)state;
  const char *all[] = {"index.write.after_create", steps[0], steps[1], steps[2]};
  for (size_t s = 0; s < 4; s++) {
    char name[64];
    snprintf(name, sizeof name, "crash%zu.didx", s);
    char *path = ckl_test_path(dir, name);
    crash_arg a = {all[s], path};
    assert_int_equal(ckl_test_wait(ckl_test_fork(crash_child, &a)), CKL_FAILPOINT_CRASH_STATUS);
    ckl_index *ix;
    int rc = ckl_index_open(path, &ix);
    if (s == 3) {
      /* crashed after the rename: complete */
      assert_int_equal(rc, 0);
      assert_int_equal(ckl_index_count(ix), 100);
      ckl_index_close(ix);
    } else {
      assert_int_equal(rc, -ENOENT); /* never a partial index */
    }
    char pfx[80];
    snprintf(pfx, sizeof pfx, ".%s.tmp-", name);
    assert_int_equal(ckl_test_count_entries(dir, pfx), s == 3 ? 0 : 1);
    /* the dead writer's lock died with it: a cleanup may remove the temp */
    if (s != 3) assert_int_equal(probe_temp_lock(pfx), 0);
    free(path);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dynamic_round_trip),
      cmocka_unit_test(test_fixed_round_trip),
      cmocka_unit_test(test_writer_rules),
      cmocka_unit_test(test_reader_truncation_and_flips),
      cmocka_unit_test(test_reader_crafted),
      cmocka_unit_test(test_open_errors),
      cmocka_unit_test(test_kind_from_name),
      cmocka_unit_test_teardown(test_failpoint_errors, teardown),
      cmocka_unit_test_teardown(test_failpoint_crash, teardown),
      cmocka_unit_test_teardown(test_read_eio, teardown),
      cmocka_unit_test_teardown(test_truncated_while_read, teardown),
      cmocka_unit_test_teardown(test_extended_while_read, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * datastore/index.c - dynamic (.didx) and fixed (.fidx) index files.
 *
 * Header, 128 bytes, integers little-endian (docs/datastore.md):
 *
 *    0   8  magic "CKLDIDX\0" (dynamic) or "CKLFIDX\0" (fixed)
 *    8   4  version (1)
 *   12   4  header size (128)
 *   16  16  UUID (random per file)
 *   32   8  creation time, ns since the epoch (signed)
 *   40   8  entry count
 *   48   8  total archive size in bytes
 *   56   8  chunk size (fixed; 0 for dynamic)
 *   64  32  SHA-256 of the entry bytes
 *   96  28  reserved, 0
 *  124   4  CRC32C of bytes 0..123
 *
 * Entries follow the header: dynamic {u64 end offset, 32-byte digest}
 * (40 bytes), fixed {32-byte digest}.
 *
 * Reader checks, in this order so that each failure gets the right code:
 * size >= 128, magic, header size within the file, header CRC (the CRC
 * sits in the last 4 bytes of "header size" bytes in every version, so a
 * newer version's header still validates and is CKL_EVERSION, while a
 * damaged version field is CKL_ECORRUPT), version, reserved bytes, entry
 * count against the file size (without overflow), SHA-256 of the entries,
 * then the offset/size rules.
 *
 * The entry SHA-256 is verified on every open. GC mark reads every index
 * and hashing runs at ~1 GB/s here, a few ms for a large index; it is the
 * only protection against a bit flip in a digest, which would otherwise
 * make GC spare the wrong chunk and delete the right one. Safety first.
 *
 * pread, not mmap: the file is read into a malloc'ed buffer. With a
 * mapping, an I/O error on a page (a bad sector, a network filesystem
 * gone away) is delivered as SIGBUS on the first access, and so is an
 * access past the end of a file that someone else truncated while it was
 * mapped: the process dies instead of answering. Index files are never
 * changed in place by chunklock (written once under a temp name, renamed
 * in), but an outside hand or a failing disk can; the rule is a clear
 * error naming the file, never a crash. So a failed read is the -errno
 * (-EIO), logged with the full path, and a file whose size changed
 * between fstat and the end of the read is CKL_ECORRUPT (file_read.c).
 * Costs one copy of the file, which is small next to the SHA-256 that
 * validate() computes over the same bytes. A forget that unlinks or
 * moves the file after the open changes nothing: the fd still reads it.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunklock/atomic_file.h"
#include "chunklock/index.h"
#include "common/internal.h"
#include "crc32c.h"
#include "digest.h"
#include "file_read.h"

#define HDR_LEN 128
#define VERSION 1
#define OFF_VERSION 8
#define OFF_HDRSIZE 12
#define OFF_UUID 16
#define OFF_CTIME 32
#define OFF_COUNT 40
#define OFF_TOTAL 48
#define OFF_CHUNK 56
#define OFF_SHA 64
#define OFF_RESERVED 96
#define OFF_CRC 124
#define DYN_ENTRY 40
#define FIX_ENTRY 32
/* A header longer than this is damage, not a future version. */
#define HDR_MAX 65536

static const char magic_dyn[8] = "CKLDIDX";
static const char magic_fix[8] = "CKLFIDX";

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static size_t entry_size(ckl_index_kind k) { return k == CKL_INDEX_DYNAMIC ? DYN_ENTRY : FIX_ENTRY; }

struct ckl_index {
  const uint8_t *base; /* malloc'ed, the whole file */
  size_t len;
  ckl_index_kind kind;
  size_t count;
  uint64_t total;
  uint64_t chunk_size;
  int64_t ctime;
  const uint8_t *entries;
};

/* ---- reader -------------------------------------------------------------- */

#define BAD(code, msg)                                                         \
  do {                                                                         \
    *why = (msg);                                                              \
    return (code);                                                             \
  } while (0)

static int validate(ckl_index *ix, const char **why) {
  const uint8_t *p = ix->base;
  size_t len = ix->len;
  if (len < HDR_LEN) BAD(CKL_ECORRUPT, "shorter than its header");
  if (memcmp(p, magic_dyn, 8) == 0)
    ix->kind = CKL_INDEX_DYNAMIC;
  else if (memcmp(p, magic_fix, 8) == 0)
    ix->kind = CKL_INDEX_FIXED;
  else
    BAD(CKL_ECORRUPT, "bad magic");
  uint64_t hs = get_le(p + OFF_HDRSIZE, 4);
  if (hs < HDR_LEN || hs > HDR_MAX || hs > len || hs % 4 != 0)
    BAD(CKL_ECORRUPT, "bad header size");
  if (ckl__crc32c(0, p, hs - 4) != (uint32_t)get_le(p + hs - 4, 4))
    BAD(CKL_ECORRUPT, "header CRC mismatch");
  uint64_t version = get_le(p + OFF_VERSION, 4);
  if (version > VERSION) BAD(CKL_EVERSION, "written by a newer format version");
  if (version != VERSION || hs != HDR_LEN) BAD(CKL_ECORRUPT, "bad version");
  for (size_t i = OFF_RESERVED; i < OFF_CRC; i++)
    if (p[i] != 0) BAD(CKL_ECORRUPT, "reserved bytes not zero");

  uint64_t count = get_le(p + OFF_COUNT, 8);
  size_t es = entry_size(ix->kind);
  size_t body = len - HDR_LEN;
  /* count * es == body, checked by division so a huge count cannot wrap. */
  if (body % es != 0 || count != body / es)
    BAD(CKL_ECORRUPT, "entry count does not match the file size");
  ix->count = (size_t)count;
  ix->entries = p + HDR_LEN;
  ix->total = get_le(p + OFF_TOTAL, 8);
  ix->chunk_size = get_le(p + OFF_CHUNK, 8);
  ix->ctime = (int64_t)get_le(p + OFF_CTIME, 8);

  ckl_digest sha;
  ckl_digest_compute(ix->entries, body, &sha);
  if (memcmp(sha.b, p + OFF_SHA, CKL_DIGEST_LEN) != 0)
    BAD(CKL_ECORRUPT, "entry checksum (SHA-256) mismatch");

  if (ix->kind == CKL_INDEX_DYNAMIC) {
    if (ix->chunk_size != 0) BAD(CKL_ECORRUPT, "chunk size set in a dynamic index");
    uint64_t prev = 0;
    for (size_t i = 0; i < ix->count; i++) {
      uint64_t end = get_le(ix->entries + i * DYN_ENTRY, 8);
      if (end <= prev) BAD(CKL_ECORRUPT, "end offsets not strictly increasing");
      if (end - prev > CKL_CHUNK_MAX) BAD(CKL_ECORRUPT, "chunk larger than CKL_CHUNK_MAX");
      prev = end;
    }
    if (prev != ix->total) BAD(CKL_ECORRUPT, "last end offset differs from the total size");
  } else {
    uint64_t cs = ix->chunk_size;
    if (cs == 0 || cs > CKL_CHUNK_MAX) BAD(CKL_ECORRUPT, "bad chunk size");
    if (count != ix->total / cs + (ix->total % cs != 0))
      BAD(CKL_ECORRUPT, "entry count does not cover the total size");
  }
  return 0;
}
#undef BAD

static void ix_free(ckl_index *ix) {
  if (!ix) return;
  free((void *)ix->base);
  free(ix);
}

void ckl_index_close(ckl_index *ix) { ix_free(ix); }

int ckl_index_openat(int dirfd, const char *name, ckl_index **out) {
  char where_buf[PATH_MAX];
#define WHERE ckl__display_path(dirfd, name, where_buf, sizeof where_buf)
  if (!name || !out) return -EINVAL;
  *out = NULL;
  int fd CKL__CLEANUP_CLOSE = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    /* -ENOENT is an answer GC acts on (the snapshot was forgotten), not an
     * error worth a log line. */
    if (rc != -ENOENT) ckl__log_error("index %s: open: %s", WHERE, strerror(-rc));
    return rc;
  }
  /* Stands for a read that fails (EIO): reported like one. */
  int rc = CKL_FAILPOINT("index.open.after_open");
  if (rc < 0) {
    ckl__log_error("index %s: read: %s", WHERE, ckl_strerror(rc));
    return rc;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    ckl__log_error("index %s: stat: %s", WHERE, strerror(-rc));
    return rc;
  }
  const char *why = "";
  if (!S_ISREG(st.st_mode)) {
    ckl__log_error("index %s: %s", WHERE, "not a regular file");
    return CKL_ECORRUPT;
  }
  if ((uint64_t)st.st_size < HDR_LEN || (uint64_t)st.st_size > SIZE_MAX) {
    ckl__log_error("index %s: corrupt: %s", WHERE, "shorter than its header");
    return CKL_ECORRUPT;
  }
  ckl_index *ix = calloc(1, sizeof *ix);
  uint8_t *buf = malloc((size_t)st.st_size);
  if (!ix || !buf) {
    free(ix);
    free(buf);
    ckl__log_error("index %s: %s", WHERE, strerror(ENOMEM));
    return -ENOMEM;
  }
  ix->base = buf;
  ix->len = (size_t)st.st_size;
  /* The failpoint stands for a read that fails (error(EIO)); a pause
   * there lets a test change the file's size between fstat and read. */
  if ((rc = CKL_FAILPOINT("index.read.before_pread")) == 0 &&
      (rc = ckl__pread_exact(fd, buf, ix->len, &why)) == CKL_ECORRUPT)
    ckl__log_error("index %s: %s: %s", WHERE, ckl_strerror(rc), why);
  else if (rc < 0)
    ckl__log_error("index %s: read: %s", WHERE, ckl_strerror(rc));
  if (rc < 0) {
    ix_free(ix);
    return rc;
  }
  rc = validate(ix, &why);
  if (rc < 0) {
    ckl__log_error("index %s: %s: %s", WHERE, ckl_strerror(rc), why);
    ix_free(ix);
    return rc;
  }
  *out = ix;
  return 0;
}
#undef WHERE

int ckl_index_open(const char *path, ckl_index **out) {
  return ckl_index_openat(AT_FDCWD, path, out);
}

int ckl_index_parse(const void *buf, size_t len, ckl_index **out) {
  if ((!buf && len > 0) || !out) return -EINVAL;
  *out = NULL;
  ckl_index *ix = calloc(1, sizeof *ix);
  uint8_t *copy = malloc(len ? len : 1);
  if (!ix || !copy) {
    free(ix);
    free(copy);
    return -ENOMEM;
  }
  if (len) memcpy(copy, buf, len);
  ix->base = copy;
  ix->len = len;
  const char *why = "";
  int rc = validate(ix, &why);
  if (rc < 0) {
    ckl__log_debug("index image: %s: %s", ckl_strerror(rc), why);
    ix_free(ix);
    return rc;
  }
  *out = ix;
  return 0;
}

ckl_index_kind ckl_index_get_kind(const ckl_index *ix) { return ix->kind; }
size_t ckl_index_count(const ckl_index *ix) { return ix->count; }
uint64_t ckl_index_size(const ckl_index *ix) { return ix->total; }
uint64_t ckl_index_chunk_size(const ckl_index *ix) { return ix->chunk_size; }
int64_t ckl_index_ctime_ns(const ckl_index *ix) { return ix->ctime; }
void ckl_index_uuid(const ckl_index *ix, uint8_t out[16]) { memcpy(out, ix->base + OFF_UUID, 16); }

const ckl_digest *ckl_index_digest(const ckl_index *ix, size_t i) {
  if (!ix || i >= ix->count) return NULL;
  /* ckl_digest is a byte array (alignment 1): pointing into the buffer is fine. */
  if (ix->kind == CKL_INDEX_DYNAMIC) return (const ckl_digest *)(ix->entries + i * DYN_ENTRY + 8);
  return (const ckl_digest *)(ix->entries + i * FIX_ENTRY);
}

int ckl_index_range(const ckl_index *ix, size_t i, uint64_t *start, uint64_t *end) {
  if (!ix || !start || !end || i >= ix->count) return -EINVAL;
  if (ix->kind == CKL_INDEX_DYNAMIC) {
    *start = i ? get_le(ix->entries + (i - 1) * DYN_ENTRY, 8) : 0;
    *end = get_le(ix->entries + i * DYN_ENTRY, 8);
  } else {
    /* validate() proved count == ceil(total / cs), so i * cs < total. */
    *start = (uint64_t)i * ix->chunk_size;
    uint64_t e = *start + ix->chunk_size;
    *end = e < ix->total ? e : ix->total;
  }
  return 0;
}

int ckl_index_kind_from_name(const char *name) {
  if (!name) return 0;
  size_t n = strlen(name);
  if (n <= 5) return 0;
  if (strcmp(name + n - 5, ".didx") == 0) return CKL_INDEX_DYNAMIC;
  if (strcmp(name + n - 5, ".fidx") == 0) return CKL_INDEX_FIXED;
  return 0;
}

/* ---- writer -------------------------------------------------------------- */

struct ckl_index_writer {
  ckl_index_kind kind;
  uint64_t chunk_size;
  unsigned flags;
  ckl_atomic_file af;  /* temp file, live (OFD-locked) from create to commit */
  char *path;          /* as given, for messages */
  uint8_t *buf;        /* header space + entries */
  size_t len, cap;
  uint64_t count;
  uint64_t last;       /* dynamic: last end offset; fixed: bytes so far */
  bool short_seen;     /* fixed: a chunk shorter than chunk_size was added */
};

static void writer_free(ckl_index_writer *w) {
  ckl_atomic_rollback(&w->af); /* no-op after commit */
  free(w->path);
  free(w->buf);
  free(w);
}

int ckl_index_writer_create(const char *path, ckl_index_kind kind, uint64_t chunk_size,
                            unsigned flags, ckl_index_writer **out) {
  if (!path || !out) return -EINVAL;
  *out = NULL;
  if ((kind != CKL_INDEX_DYNAMIC && kind != CKL_INDEX_FIXED) || (flags & ~CKL_ATOMIC_NOSYNC) != 0)
    return -EINVAL;
  if (kind == CKL_INDEX_FIXED && (chunk_size == 0 || chunk_size > CKL_CHUNK_MAX)) return -EINVAL;
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) return -EINVAL;

  ckl_index_writer *w = calloc(1, sizeof *w);
  if (!w) return -ENOMEM;
  w->kind = kind;
  w->chunk_size = kind == CKL_INDEX_FIXED ? chunk_size : 0;
  w->flags = flags;
  w->path = strdup(path);
  w->cap = HDR_LEN + 64 * DYN_ENTRY;
  w->buf = calloc(1, w->cap);
  if (!w->path || !w->buf) {
    writer_free(w);
    return -ENOMEM;
  }
  w->len = HDR_LEN;
  /* The temp file exists (and is locked, so ckl_atomic_cleanup leaves it
   * alone) from now on; entries are kept in memory and written at commit. */
  int rc = ckl_atomic_begin(&w->af, path, 0644, flags);
  if (rc < 0) {
    ckl__log_error("index %s: cannot create its temp file: %s", path, ckl_strerror(rc));
    writer_free(w);
    return rc;
  }
  if ((rc = CKL_FAILPOINT("index.write.after_create")) < 0) {
    ckl_index_writer_abort(w);
    return rc;
  }
  uint64_t r = ckl__random_u64();
  put_le(w->buf + OFF_UUID, r, 8);
  r = ckl__random_u64();
  put_le(w->buf + OFF_UUID + 8, r, 8);
  put_le(w->buf + OFF_CTIME, (uint64_t)ckl__now_realtime_ns(), 8);
  *out = w;
  return 0;
}

int ckl_index_writer_add(ckl_index_writer *w, uint64_t value, const ckl_digest *d) {
  if (!w || !d) return -EINVAL;
  if (w->kind == CKL_INDEX_DYNAMIC) {
    if (value <= w->last || value - w->last > CKL_CHUNK_MAX) {
      ckl__log_error("index %s: end offset %llu after %llu breaks the order/size rule", w->path,
                     (unsigned long long)value, (unsigned long long)w->last);
      return -EINVAL;
    }
  } else {
    if (value == 0 || value > w->chunk_size || w->short_seen || value > UINT64_MAX - w->last) {
      ckl__log_error("index %s: chunk %llu of %llu bytes breaks the fixed size %llu", w->path,
                     (unsigned long long)w->count, (unsigned long long)value,
                     (unsigned long long)w->chunk_size);
      return -EINVAL;
    }
  }
  size_t es = entry_size(w->kind);
  if (w->cap - w->len < es) {
    if (w->cap > SIZE_MAX / 2) return -ENOMEM;
    uint8_t *nb = realloc(w->buf, w->cap * 2);
    if (!nb) return -ENOMEM;
    w->buf = nb;
    w->cap *= 2;
  }
  uint8_t *e = w->buf + w->len;
  if (w->kind == CKL_INDEX_DYNAMIC) {
    put_le(e, value, 8);
    memcpy(e + 8, d->b, CKL_DIGEST_LEN);
    w->last = value;
  } else {
    memcpy(e, d->b, CKL_DIGEST_LEN);
    w->last += value;
    w->short_seen = value < w->chunk_size;
  }
  w->len += es;
  w->count++;
  return 0;
}

int ckl_index_writer_commit(ckl_index_writer *w, ckl_digest *file_sha256) {
  if (!w) return -EINVAL;
  uint8_t *h = w->buf;
  memcpy(h, w->kind == CKL_INDEX_DYNAMIC ? magic_dyn : magic_fix, 8);
  put_le(h + OFF_VERSION, VERSION, 4);
  put_le(h + OFF_HDRSIZE, HDR_LEN, 4);
  put_le(h + OFF_COUNT, w->count, 8);
  put_le(h + OFF_TOTAL, w->last, 8);
  put_le(h + OFF_CHUNK, w->chunk_size, 8);
  ckl_digest sha;
  ckl_digest_compute(h + HDR_LEN, w->len - HDR_LEN, &sha);
  memcpy(h + OFF_SHA, sha.b, CKL_DIGEST_LEN);
  memset(h + OFF_RESERVED, 0, OFF_CRC - OFF_RESERVED);
  put_le(h + OFF_CRC, ckl__crc32c(0, h, OFF_CRC), 4);

  int rc = ckl_atomic_write(&w->af, w->buf, w->len);
  if (rc < 0) {
    ckl__log_error("index %s: write: %s", w->path, ckl_strerror(rc));
    goto out;
  }
  if ((rc = CKL_FAILPOINT("index.write.after_entries")) < 0) goto out;
  if ((rc = CKL_FAILPOINT("index.write.before_commit")) < 0) goto out;
  /* fsync, rename, fsync the directory (unless CKL_ATOMIC_NOSYNC). An
   * error from the directory fsync leaves the complete index in place,
   * but it may not be durable, so the error is still returned. */
  rc = ckl_atomic_commit(&w->af);
  if (rc < 0) {
    ckl__log_error("index %s: commit: %s", w->path, ckl_strerror(rc));
    goto out;
  }
  if (file_sha256) ckl_digest_compute(w->buf, w->len, file_sha256);
  rc = CKL_FAILPOINT("index.write.after_rename");
out:
  writer_free(w); /* rolls the temp file back unless committed */
  return rc;
}

void ckl_index_writer_abort(ckl_index_writer *w) {
  if (!w) return;
  writer_free(w);
}

/*
 * datastore/chunk.c - the chunk store: .chunks/<4 hex>/<64 hex>.
 *
 * No lock is taken anywhere in this file. Safety between writers, readers
 * and GC rests on three kernel guarantees and one rule:
 *   - rename(2) replaces a name atomically: a reader or toucher sees the old
 *     inode or the new complete one, never a partial file. Temp files are
 *     written under a private name and renamed only when complete.
 *   - O_EXCL gives every inserter its own temp file, so concurrent inserts
 *     of one digest (threads or processes) never write into the same file;
 *     their renames carry identical content, so whichever lands last wins
 *     harmlessly and both callers may report CKL_INSERT_NEW.
 *   - utimensat(UTIME_NOW) on an existing name succeeds only if the name
 *     exists at that instant. The GC sweep (DESIGN.md section 5) renames a
 *     chunk away before judging its atime, so a touch either lands before
 *     the rename (GC sees the new atime and keeps the chunk) or fails with
 *     ENOENT (the writer uploads the chunk again).
 *   - The rule: a writer treats only a successful touch or its own
 *     completed rename as proof that a chunk exists.
 *
 * Temp files: ".tmp-<digest hex>-<16 hex random>" in the chunk's prefix
 * directory (same filesystem, so the rename is atomic). A crash leaves at
 * most such a file; GC removes those older than its cutoff (a live
 * writer's temp is younger: writers register before writing).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunk_format.h"
#include "chunk_internal.h"
#include "common/internal.h"
#include "crc32c.h"
#include "digest.h"

struct ckl_chunkstore {
  int dirfd;              /* O_PATH|O_DIRECTORY on .chunks */
  ckl_sync_policy sync;
  int level;              /* effective zstd level; < 0 = never compress */
  bool verify;
  char *root;             /* for messages */
};

/* The *at calls below take "abcd/<hex>" relative to dirfd. */

static void relpath(const ckl_digest *d, char out[CKL__CHUNK_RELPATH_LEN + 1]) {
  ckl__hex_encode(d->b, 2, out);
  out[4] = '/';
  ckl__hex_encode(d->b, CKL_DIGEST_LEN, out + 5);
  out[CKL__CHUNK_RELPATH_LEN] = '\0';
}

int ckl_chunk_relpath(const ckl_digest *d, char *buf, size_t len) {
  if (!d || !buf) return -EINVAL;
  if (len <= CKL__CHUNK_RELPATH_LEN) {
    if (len > 0) buf[0] = '\0';
    return -ENAMETOOLONG;
  }
  relpath(d, buf);
  return 0;
}

static bool is_lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

ckl__chunk_name ckl__chunk_name_kind(const char *name, ckl_digest *d) {
  const size_t H = CKL_DIGEST_HEX_LEN, P = sizeof CKL__CHUNK_TMP_PREFIX - 1;
  size_t n = strlen(name);
  const char *hex = NULL;
  ckl__chunk_name kind = CKL__CHUNK_NAME_OTHER;
  if (n == H && is_lower_hex(name, H)) {
    hex = name;
    kind = CKL__CHUNK_NAME_CHUNK;
  } else if (n == P + H + 1 + 16 && memcmp(name, CKL__CHUNK_TMP_PREFIX, P) == 0 &&
             is_lower_hex(name + P, H) && name[P + H] == '-' && is_lower_hex(name + P + H + 1, 16)) {
    hex = name + P;
    kind = CKL__CHUNK_NAME_TMP;
  } else if (n > H + 5 && is_lower_hex(name, H) && name[H] == '.' &&
             strcmp(name + n - 4, ".bad") == 0) {
    /* "<hex>.<N>.bad" with N decimal, no leading zeros except "0" itself */
    const char *num = name + H + 1, *end = name + n - 4;
    bool ok = end > num && (end - num == 1 || num[0] != '0');
    for (const char *c = num; ok && c < end; c++) ok = *c >= '0' && *c <= '9';
    if (ok) {
      hex = name;
      kind = CKL__CHUNK_NAME_BAD;
    }
  }
  if (kind != CKL__CHUNK_NAME_OTHER && d) {
    char buf[CKL_DIGEST_HEX_LEN + 1];
    memcpy(buf, hex, H);
    buf[H] = '\0';
    ckl_digest_from_hex(buf, d);
  }
  return kind;
}

/* ---- layout --------------------------------------------------------------- */

int ckl_chunkstore_init_layout(const char *chunks_dir) {
  if (!chunks_dir) return -EINVAL;
  int fd CKL__CLEANUP_CLOSE = open(chunks_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    ckl__log_error("chunk store %s: cannot open: %s", chunks_dir, strerror(errno));
    return rc;
  }
  /* Idempotent: EEXIST is success, so a half-finished earlier run (crash,
   * ENOSPC) is completed by running again. */
  for (unsigned i = 0; i < 65536; i++) {
    uint8_t b[2] = {(uint8_t)(i >> 8), (uint8_t)i};
    char name[5];
    ckl__hex_encode(b, 2, name);
    name[4] = '\0';
    if (mkdirat(fd, name, 0755) != 0 && errno != EEXIST) {
      int rc = -errno;
      ckl__log_error("chunk store %s: mkdir %s: %s", chunks_dir, name, strerror(errno));
      return rc;
    }
  }
  /* The 65,536 entries live in chunks_dir itself: one fsync makes them
   * durable (the new directories are empty). */
  if (fsync(fd) != 0) {
    int rc = -errno;
    ckl__log_error("chunk store %s: fsync: %s", chunks_dir, strerror(errno));
    return rc;
  }
  return 0;
}

int ckl_chunkstore_open(const char *chunks_dir, const ckl_chunkstore_opts *opts,
                        ckl_chunkstore **out) {
  if (!chunks_dir || !out) return -EINVAL;
  *out = NULL;
  ckl_chunkstore_opts o = {.sync = CKL_SYNC_FILESYSTEM, .compress_level = 0, .verify = 0};
  if (opts) o = *opts;
  if ((unsigned)o.sync > CKL_SYNC_NONE || !ckl__chunk_level_valid(o.compress_level)) {
    ckl__log_error("chunk store %s: invalid options (sync %d, level %d)", chunks_dir, (int)o.sync,
                   o.compress_level);
    return -EINVAL;
  }
  int fd = open(chunks_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  /* A few probes, not 65,536 stats: enough to tell a store from a
   * directory that merely happens to exist. */
  static const char *const probes[] = {"0000", "7fff", "8000", "ffff"};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(probes); i++) {
    struct stat st;
    int rc = 0;
    if (fstatat(fd, probes[i], &st, AT_SYMLINK_NOFOLLOW) != 0)
      rc = (errno == ENOENT || errno == ENOTDIR) ? CKL_ENOTSTORE : -errno;
    else if (!S_ISDIR(st.st_mode))
      rc = CKL_ENOTSTORE;
    if (rc < 0) {
      ckl__log_error("chunk store %s: prefix directory %s: %s", chunks_dir, probes[i],
                     rc == CKL_ENOTSTORE ? "missing: not a chunk store" : strerror(-rc));
      close(fd);
      return rc;
    }
  }
  ckl_chunkstore *cs = calloc(1, sizeof *cs);
  char *root = strdup(chunks_dir);
  if (!cs || !root) {
    free(cs);
    free(root);
    close(fd);
    return -ENOMEM;
  }
  cs->dirfd = fd;
  cs->sync = o.sync;
  cs->level = o.compress_level == 0 ? CKL__CHUNK_DEFAULT_LEVEL : o.compress_level;
  cs->verify = o.verify != 0;
#ifndef NDEBUG
  cs->verify = true;
#endif
  cs->root = root;
  *out = cs;
  return 0;
}

void ckl_chunkstore_close(ckl_chunkstore *cs) {
  if (!cs) return;
  close(cs->dirfd);
  free(cs->root);
  free(cs);
}

int ckl_chunkstore_dirfd(const ckl_chunkstore *cs) { return cs ? cs->dirfd : -EINVAL; }

int ckl_chunkstore_sync(ckl_chunkstore *cs) {
  if (!cs) return -EINVAL;
  if (cs->sync != CKL_SYNC_FILESYSTEM) return 0;
  /* syncfs needs a real descriptor; dirfd is O_PATH. */
  int fd CKL__CLEANUP_CLOSE = openat(cs->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = fd < 0 ? -errno : CKL_FAILPOINT("chunk.sync.before_syncfs");
  if (rc == 0 && syncfs(fd) != 0) rc = -errno;
  if (rc < 0) ckl__log_error("chunk store %s: syncfs: %s", cs->root, strerror(-rc));
  return rc;
}

/* fsync the prefix directory of rel ("abcd/...") so a rename in it is
 * durable. */
static int fsync_prefix(ckl_chunkstore *cs, const char *rel) {
  char dir[5];
  memcpy(dir, rel, 4);
  dir[4] = '\0';
  int fd CKL__CLEANUP_CLOSE = openat(cs->dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int rc = -errno;
    ckl__log_error("chunk store %s: fsync directory %s: %s", cs->root, dir, strerror(errno));
    return rc;
  }
  return 0;
}

/* ---- touch ------------------------------------------------------------------ */

/* One syscall. atime = now is the GC's liveness mark; mtime is left alone
 * so it keeps meaning "when this content was written". */
static int touch_rel(ckl_chunkstore *cs, const char *rel) {
  int rc = CKL_FAILPOINT("chunk.touch");
  if (rc < 0) return rc;
  static const struct timespec ts[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
  if (utimensat(cs->dirfd, rel, ts, 0) == 0) return 0;
  rc = -errno;
  if (rc != -ENOENT) ckl__log_error("chunk %s/%s: touch: %s", cs->root, rel, strerror(-rc));
  return rc;
}

int ckl_chunk_touch(ckl_chunkstore *cs, const ckl_digest *d) {
  if (!cs || !d) return -EINVAL;
  char rel[CKL__CHUNK_RELPATH_LEN + 1];
  relpath(d, rel);
  return touch_rel(cs, rel);
}

int ckl_chunk_stat(ckl_chunkstore *cs, const ckl_digest *d, struct stat *st) {
  if (!cs || !d || !st) return -EINVAL;
  char rel[CKL__CHUNK_RELPATH_LEN + 1];
  relpath(d, rel);
  return fstatat(cs->dirfd, rel, st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
}

/* ---- insert ----------------------------------------------------------------- */

/* Write img under a private temp name and rename it onto rel. On failure
 * before the rename the temp file is removed and rel is untouched. */
static int write_new(ckl_chunkstore *cs, const char *rel, const uint8_t *img, size_t len) {
  /* "abcd/" ".tmp-" <64 hex> "-" <16 hex> */
  char tmp[5 + sizeof CKL__CHUNK_TMP_PREFIX - 1 + CKL_DIGEST_HEX_LEN + 1 + 16 + 1];
  const size_t P = sizeof CKL__CHUNK_TMP_PREFIX - 1;
  memcpy(tmp, rel, 5);
  memcpy(tmp + 5, CKL__CHUNK_TMP_PREFIX, P);
  memcpy(tmp + 5 + P, rel + 5, CKL_DIGEST_HEX_LEN);
  tmp[5 + P + CKL_DIGEST_HEX_LEN] = '-';
  char *rnd = tmp + 5 + P + CKL_DIGEST_HEX_LEN + 1;
  rnd[16] = '\0';

  int fd = -1, rc;
  /* O_EXCL: the temp file is ours alone. A name collision (same random
   * value, e.g. a forked child that inherited a PRNG state) just retries. */
  for (int attempt = 0; attempt < 8; attempt++) {
    uint64_t r = ckl__random_u64();
    uint8_t rb[8];
    for (int i = 0; i < 8; i++) rb[i] = (uint8_t)(r >> (8 * i));
    ckl__hex_encode(rb, 8, rnd);
    fd = openat(cs->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd >= 0 || errno != EEXIST) break;
  }
  if (fd < 0) {
    rc = -errno;
    ckl__log_error("chunk %s/%s: create temp file: %s", cs->root, tmp, strerror(errno));
    return rc;
  }
  if ((rc = CKL_FAILPOINT("chunk.insert.after_tmp_create")) < 0) goto fail;
  if ((rc = ckl__write_all(fd, img, len)) < 0) {
    ckl__log_error("chunk %s/%s: write: %s", cs->root, tmp, strerror(-rc));
    goto fail;
  }
  if ((rc = CKL_FAILPOINT("chunk.insert.after_tmp_write")) < 0) goto fail;
  if (cs->sync == CKL_SYNC_FILE) {
    /* The failpoint stands for an fsync that fails (EIO: the disk lost
     * the pages): it takes the same path, so the temp file never becomes
     * the chunk. */
    rc = CKL_FAILPOINT("chunk.insert.before_fsync");
    if (rc == 0 && fsync(fd) != 0) rc = -errno;
    if (rc < 0) {
      ckl__log_error("chunk %s/%s: fsync: %s", cs->root, tmp, strerror(-rc));
      goto fail;
    }
  }
  if ((rc = CKL_FAILPOINT("chunk.insert.before_rename")) < 0) goto fail;
  rc = close(fd);
  fd = -1;
  if (rc != 0) {
    rc = -errno;
    ckl__log_error("chunk %s/%s: close: %s", cs->root, tmp, strerror(errno));
    goto fail;
  }
  /* The commit point. Replacing a copy another inserter renamed in a moment
   * ago is harmless: same digest, same content, and an open reader keeps
   * the inode it opened. */
  if (renameat(cs->dirfd, tmp, cs->dirfd, rel) != 0) {
    rc = -errno;
    ckl__log_error("chunk %s/%s: rename onto %s: %s", cs->root, tmp, rel + 5, strerror(errno));
    goto fail;
  }
  /* From here on the chunk is complete at its name. An error is still
   * returned (the rename may not be durable), but the file is never
   * removed: another writer may already have touched it and counted on it. */
  if ((rc = CKL_FAILPOINT("chunk.insert.after_rename")) < 0) return rc;
  if (cs->sync == CKL_SYNC_FILE) return fsync_prefix(cs, rel);
  return 0;

fail:
  ckl__close(fd);
  if (unlinkat(cs->dirfd, tmp, 0) != 0 && errno != ENOENT)
    ckl__log_warn("chunk %s/%s: remove temp file: %s", cs->root, tmp, strerror(errno));
  return rc;
}

int ckl_chunk_insert(ckl_chunkstore *cs, const ckl_digest *d, const void *data, size_t len,
                     uint64_t *stored_bytes) {
  if (stored_bytes) *stored_bytes = 0;
  if (!cs || !d || (!data && len > 0)) return -EINVAL;
  char rel[CKL__CHUNK_RELPATH_LEN + 1];
  relpath(d, rel);
  if (len > CKL_CHUNK_MAX) {
    ckl__log_error("chunk %s/%s: %zu bytes exceed CKL_CHUNK_MAX", cs->root, rel, len);
    return -EINVAL;
  }
  if (cs->verify) {
    /* Before the touch: a wrong digest must not dedup against a chunk that
     * holds other content. */
    ckl_digest real;
    ckl_digest_compute(data, len, &real);
    if (memcmp(real.b, d->b, CKL_DIGEST_LEN) != 0) {
      ckl__log_error("chunk %s/%s: data does not hash to this digest", cs->root, rel);
      return -EINVAL;
    }
  }
  int rc = touch_rel(cs, rel);
  if (rc == 0) return CKL_INSERT_DEDUP;
  if (rc != -ENOENT) return rc;

  void *img;
  size_t img_len;
  rc = ckl_chunk_encode(data, len, cs->level, &img, &img_len);
  if (rc < 0) {
    ckl__log_error("chunk %s/%s: encode: %s", cs->root, rel, ckl_strerror(rc));
    return rc;
  }
  rc = write_new(cs, rel, img, img_len);
  free(img);
  if (rc < 0) return rc;
  if (stored_bytes) *stored_bytes = img_len;
  return CKL_INSERT_NEW;
}

/* ---- read --------------------------------------------------------------------- */

static int pread_all(int fd, void *buf, size_t len, off_t off) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = pread(fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return CKL_ECORRUPT; /* shorter than fstat said: cannot happen to a chunk */
    p += n;
    len -= (size_t)n;
    off += n;
  }
  return 0;
}

static int corrupt(ckl_chunkstore *cs, const char *rel, int rc, const char *why) {
  ckl__log_error("chunk %s/%s: %s: %s", cs->root, rel, ckl_strerror(rc), why);
  return rc;
}

int ckl_chunk_read(ckl_chunkstore *cs, const ckl_digest *d, void **data, size_t *len) {
  if (!cs || !d || !data || !len) return -EINVAL;
  char rel[CKL__CHUNK_RELPATH_LEN + 1];
  relpath(d, rel);
  int fd CKL__CLEANUP_CLOSE = openat(cs->dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int rc = -errno;
    if (rc != -ENOENT) ckl__log_error("chunk %s/%s: open: %s", cs->root, rel, strerror(errno));
    return rc;
  }
  /* Stands for a read that fails (EIO): reported like one. */
  int rc = CKL_FAILPOINT("chunk.read.after_open");
  if (rc < 0) return corrupt(cs, rel, rc, "read");
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  if (!S_ISREG(st.st_mode)) return corrupt(cs, rel, CKL_ECORRUPT, "not a regular file");
  /* Bound the size before anything is allocated from header fields. */
  if ((uint64_t)st.st_size > CKL__CHUNK_HDR_LEN + (uint64_t)CKL_CHUNK_MAX)
    return corrupt(cs, rel, CKL_ECORRUPT, "larger than any valid chunk");
  uint8_t hdr[CKL__CHUNK_HDR_LEN];
  const char *why = "";
  ckl__chunk_hdr h;
  if ((uint64_t)st.st_size < sizeof hdr) return corrupt(cs, rel, CKL_ECORRUPT, "shorter than its header");
  if ((rc = pread_all(fd, hdr, sizeof hdr, 0)) < 0) return corrupt(cs, rel, rc, "read header");
  if ((rc = ckl__chunk_parse_header(hdr, (uint64_t)st.st_size, &h, &why)) < 0)
    return corrupt(cs, rel, rc, why);

  uint8_t *out = malloc(h.plain_len ? h.plain_len : 1);
  if (!out) return -ENOMEM;
  if (!h.zstd) {
    /* Raw: read straight into the result and check the CRC here, saving
     * the staging buffer a zstd payload needs. */
    rc = pread_all(fd, out, h.stored_len, CKL__CHUNK_HDR_LEN);
    if (rc == 0 && ckl__crc32c(0, out, h.stored_len) != h.payload_crc) {
      rc = CKL_ECORRUPT;
      why = "payload CRC mismatch";
    }
  } else {
    uint8_t *payload = malloc(h.stored_len ? h.stored_len : 1);
    if (!payload) {
      free(out);
      return -ENOMEM;
    }
    rc = pread_all(fd, payload, h.stored_len, CKL__CHUNK_HDR_LEN);
    if (rc == 0) rc = ckl__chunk_decode_payload(&h, payload, out, &why);
    free(payload);
  }
  if (rc == 0) {
    ckl_digest real;
    ckl_digest_compute(out, h.plain_len, &real);
    if (memcmp(real.b, d->b, CKL_DIGEST_LEN) != 0) {
      rc = CKL_ECORRUPT;
      why = "content does not match its name (SHA-256)";
    }
  }
  if (rc < 0) {
    free(out);
    if (rc == CKL_ECORRUPT || rc == CKL_EVERSION) return corrupt(cs, rel, rc, why);
    ckl__log_error("chunk %s/%s: read: %s", cs->root, rel, ckl_strerror(rc));
    return rc;
  }
  *data = out;
  *len = h.plain_len;
  return 0;
}

/* ---- mark_bad --------------------------------------------------------------------- */

int ckl_chunk_mark_bad(ckl_chunkstore *cs, const ckl_digest *d) {
  if (!cs || !d) return -EINVAL;
  char rel[CKL__CHUNK_RELPATH_LEN + 1];
  relpath(d, rel);
  char bad[CKL__CHUNK_RELPATH_LEN + 32];
  /* RENAME_NOREPLACE: two markers (or an older .bad) never overwrite each
   * other's evidence; the first free N wins. */
  for (unsigned n = 0; n < 100000; n++) {
    int w = ckl__pathf(bad, sizeof bad, "%s.%u.bad", rel, n);
    if (w < 0) return w;
    int r = renameat2(cs->dirfd, rel, cs->dirfd, bad, RENAME_NOREPLACE);
    if (r != 0 && (errno == EINVAL || errno == ENOSYS)) {
      /* No RENAME_NOREPLACE on this filesystem: link (fails on EEXIST)
       * then unlink gives the same no-overwrite outcome. */
      r = linkat(cs->dirfd, rel, cs->dirfd, bad, 0);
      if (r == 0 && unlinkat(cs->dirfd, rel, 0) != 0 && errno != ENOENT) {
        int rc = -errno;
        unlinkat(cs->dirfd, bad, 0);
        ckl__log_error("chunk %s/%s: mark bad: unlink: %s", cs->root, rel, strerror(-rc));
        return rc;
      }
    }
    if (r == 0) {
      ckl__log_warn("chunk %s/%s: marked bad as %s", cs->root, rel, bad + 5);
      return cs->sync == CKL_SYNC_FILE ? fsync_prefix(cs, rel) : 0;
    }
    if (errno != EEXIST) {
      int rc = -errno;
      if (rc != -ENOENT)
        ckl__log_error("chunk %s/%s: mark bad: %s", cs->root, rel, strerror(-rc));
      return rc;
    }
  }
  ckl__log_error("chunk %s/%s: mark bad: too many .bad copies", cs->root, rel);
  return -EEXIST;
}

/*
 * datastore/restore.c - reading a snapshot back (chunklock/backup.h).
 *
 * The reader holds the snapshot lock shared from open to close. That is
 * the whole protection it needs: a forget needs the lock exclusively, so
 * the snapshot, its indexes and its manifest stay; a GC marks every index
 * of every snapshot, so every chunk they reference survives the sweep.
 * The reader registers in the roster ("read", target = the snapshot name)
 * so that the forget that meets its lock can say who is in the way.
 *
 * Index files are opened through the snapshot directory's fd and checked
 * against the manifest (size and SHA-256) before use: what is read is
 * exactly what the backup published.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "chunklock/backup.h"
#include "chunklock/index.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"

struct ckl_reader_archive {
  ckl_reader *r;
  ckl_reader_archive *next;
  ckl_index *ix;
  char name[CKL_ARCHIVE_NAME_MAX + 1];
  /* one-chunk cache: sequential reads decode each chunk once */
  size_t cached; /* entry index + 1; 0 = empty */
  void *data;
  size_t data_len;
};

struct ckl_reader {
  ckl_store *st;
  ckl__state *state;
  ckl_snapshot_name name;
  char name_str[CKL_SNAP_NAME_MAX + 1];
  ckl_lock_order order;
  ckl_path_lock lock;
  char token[CKL_TOKEN_HEX_LEN + 1];
  int dirfd;
  json_t *manifest;
  json_t *files;      /* borrowed from manifest */
  pthread_mutex_t mu; /* guards open: archives may be opened from many threads */
  ckl_reader_archive *open;
};

static void reader_free(ckl_reader *r) {
  while (r->open) {
    ckl_reader_archive *a = r->open;
    r->open = a->next;
    ckl_index_close(a->ix);
    free(a->data);
    free(a);
  }
  ckl__close(r->dirfd);
  json_decref(r->manifest);
  /* Unlocked before deregistering: a forget that finds the lock held
   * must find our record too (registered before the lock). */
  ckl_path_lock_release(&r->lock);
  (void)ckl__ops_deregister(r->state, r->token);
  ckl__ops_state_close(r->st, r->state);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

int ckl_reader_open(ckl_store *st, const ckl_snapshot_name *n, const ckl_reader_opts *opts,
                    ckl_reader **out) {
  static const ckl_reader_opts no_opts = {0};
  if (!out) return -EINVAL;
  *out = NULL;
  if (!opts) opts = &no_opts;
  if (!st || !ckl__snapshot_name_ok(n)) return -EINVAL;
  ckl_reader *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->st = st;
  r->name = *n;
  r->dirfd = -1;
  pthread_mutex_init(&r->mu, NULL);
  ckl__ops_snap_str(n, r->name_str);
  ckl_holder who = {0};
  int rc = ckl__ops_state_open(st, &r->state);
  if (rc < 0) goto fail;
  /* Registered before locking, so a forget that finds the lock busy can
   * always name us. */
  if ((rc = ckl__ops_register(st, r->state, "read", r->name_str, 0, r->token)) < 0) goto fail;
  ckl_snap_lock_opts so = {.order = &r->order, .busy_holder = &who};
  rc = ckl_snapshot_lock(st, n, CKL_LOCK_SHARED, &r->lock, &so);
  if (opts->busy_holder) *opts->busy_holder = who;
  if (rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    ckl__log_info("%s: read %s: busy: held by %s", st->path, r->name_str, h);
  }
  if (rc < 0) goto fail;
  if ((rc = ckl_manifest_load(st, n, &r->manifest)) < 0) {
    if (rc == -ENOENT)
      ckl__log_error("%s: read %s: no manifest (still being written, or abandoned)", st->path,
                     r->name_str);
    goto fail;
  }
  r->files = json_object_get(r->manifest, "files");
  if ((r->dirfd = ckl__snapshot_open_dir(st, n)) < 0) {
    rc = r->dirfd;
    goto fail;
  }
  if ((rc = CKL_FAILPOINT("restore.after_open")) < 0) goto fail;
  *out = r;
  return 0;
fail:
  reader_free(r);
  return rc;
}

size_t ckl_reader_archive_count(const ckl_reader *r) { return r ? json_array_size(r->files) : 0; }

const char *ckl_reader_archive_name(const ckl_reader *r, size_t i) {
  if (!r) return NULL;
  return json_string_value(json_object_get(json_array_get(r->files, i), "name"));
}

static const json_t *find_file(const ckl_reader *r, const char *name) {
  size_t i;
  json_t *f;
  json_array_foreach(r->files, i, f) {
    if (strcmp(json_string_value(json_object_get(f, "name")), name) == 0) return f;
  }
  return NULL;
}

int ckl_reader_archive_open(ckl_reader *r, const char *name, ckl_reader_archive **out) {
  if (!out) return -EINVAL;
  *out = NULL;
  if (!r || !name) return -EINVAL;
  const json_t *f = find_file(r, name);
  if (!f) {
    ckl__log_error("%s: read %s: no archive \"%s\" in the manifest", r->st->path, r->name_str,
                   name);
    return -ENOENT;
  }
  uint64_t size = 0;
  ckl_digest csum, want;
  int rc = ckl__file_sha256_at(r->dirfd, name, &size, &csum);
  if (rc < 0) {
    ckl__log_error("%s/%s/%s: %s", r->st->path, r->name_str, name, ckl_strerror(rc));
    return rc == -ELOOP || rc == -EINVAL ? CKL_ECORRUPT : rc;
  }
  if (ckl_digest_from_hex(json_string_value(json_object_get(f, "csum")), &want) < 0 ||
      memcmp(&want, &csum, sizeof want) != 0 ||
      (json_int_t)size != json_integer_value(json_object_get(f, "size"))) {
    ckl__log_error("%s/%s/%s: the index file does not match the manifest's size and checksum",
                   r->st->path, r->name_str, name);
    return CKL_ECORRUPT;
  }
  ckl_reader_archive *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  if ((rc = ckl_index_openat(r->dirfd, name, &a->ix)) < 0) {
    free(a);
    return rc;
  }
  a->r = r;
  ckl__strlcpy(a->name, name, sizeof a->name);
  pthread_mutex_lock(&r->mu);
  a->next = r->open;
  r->open = a;
  pthread_mutex_unlock(&r->mu);
  *out = a;
  return 0;
}

uint64_t ckl_reader_archive_size(const ckl_reader_archive *a) {
  return a ? ckl_index_size(a->ix) : 0;
}

/* The entry holding byte `off` (off < size): binary search over the end
 * offsets (a fixed index is the same search with equal steps). */
static size_t entry_at(const ckl_index *ix, uint64_t off) {
  size_t lo = 0, hi = ckl_index_count(ix);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    uint64_t s, e;
    ckl_index_range(ix, mid, &s, &e);
    if (e <= off)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int load_chunk(ckl_reader_archive *a, size_t i) {
  if (a->cached == i + 1) return 0;
  free(a->data);
  a->data = NULL;
  a->cached = 0;
  const ckl_digest *d = ckl_index_digest(a->ix, i);
  uint64_t s, e;
  ckl_index_range(a->ix, i, &s, &e);
  int rc = ckl_chunk_read(a->r->st->chunks, d, &a->data, &a->data_len);
  char hex[CKL_DIGEST_HEX_LEN + 1];
  if (rc < 0) {
    ckl_digest_to_hex(d, hex);
    ckl__log_error("%s: read %s/%s: chunk %s: %s", a->r->st->path, a->r->name_str, a->name, hex,
                   ckl_strerror(rc));
    return rc;
  }
  if (a->data_len != e - s) {
    ckl_digest_to_hex(d, hex);
    ckl__log_error("%s: read %s/%s: chunk %s is %zu bytes, the index says %llu", a->r->st->path,
                   a->r->name_str, a->name, hex, a->data_len, (unsigned long long)(e - s));
    free(a->data);
    a->data = NULL;
    return CKL_ECORRUPT;
  }
  a->cached = i + 1;
  return 0;
}

ssize_t ckl_reader_archive_read(ckl_reader_archive *a, uint64_t offset, void *buf, size_t len) {
  if (!a || (!buf && len)) return -EINVAL;
  uint64_t size = ckl_index_size(a->ix);
  if (offset >= size || len == 0) return 0;
  if (len > SSIZE_MAX) len = SSIZE_MAX;
  if (len > size - offset) len = (size_t)(size - offset);
  size_t done = 0;
  size_t i = entry_at(a->ix, offset);
  while (done < len) {
    int rc = load_chunk(a, i);
    if (rc < 0) return rc;
    uint64_t s, e;
    ckl_index_range(a->ix, i, &s, &e);
    uint64_t at = offset + done;
    size_t n = (size_t)(e - at) < len - done ? (size_t)(e - at) : len - done;
    memcpy((char *)buf + done, (const char *)a->data + (at - s), n);
    done += n;
    i++;
  }
  return (ssize_t)done;
}

void ckl_reader_archive_close(ckl_reader_archive *a) {
  if (!a) return;
  ckl_reader *r = a->r;
  pthread_mutex_lock(&r->mu);
  for (ckl_reader_archive **pp = &r->open; *pp; pp = &(*pp)->next) {
    if (*pp == a) {
      *pp = a->next;
      break;
    }
  }
  pthread_mutex_unlock(&r->mu);
  ckl_index_close(a->ix);
  free(a->data);
  free(a);
}

int ckl_reader_close(ckl_reader *r) {
  if (!r) return 0;
  /* Still holding the lock and the roster record here. */
  int rc = CKL_FAILPOINT("restore.before_finish");
  reader_free(r);
  return rc;
}

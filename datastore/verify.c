/*
 * datastore/verify.c - read back every chunk of a snapshot and record the
 * result in its manifest (DESIGN.md section 5, "Verify").
 *
 * Locks: the snapshot lock shared for the whole run (no forget can remove
 * the snapshot, so every chunk it references stays referenced and no GC
 * sweeps it; other readers and verifies run beside it), then, for the
 * result, the manifest lock through ckl_update_manifest, which may change
 * only the "unprotected" part. The order tracker sees snapshot ->
 * manifest. Verify registers "verify" in the roster (not a writer: it
 * touches nothing), so a forget that meets its lock can name it.
 *
 * A corrupt chunk is renamed aside (ckl_chunk_mark_bad): the next backup
 * that has the data inserts a good copy under the real name, since its
 * insert's touch now says ENOENT. A missing chunk is reported the same
 * way. Any other read error (EIO, ENOMEM) stops the verify without
 * writing a verdict: a failure of the machine is not a property of the
 * snapshot.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "chunklock/atomic_file.h"
#include "chunklock/index.h"
#include "chunklock/maintenance.h"
#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/ops_internal.h"

typedef struct vrun {
  ckl_store *st;
  const char *name; /* "type/id/time" for messages */
  int dirfd;
  ckl__digest_set seen;
  char (*bad)[CKL_DIGEST_HEX_LEN + 1];
  size_t nbad, capbad;
  uint64_t bytes; /* logical bytes checked, for a runtime task's progress */
  ckl_verify_result res;
  ckl_holder *busy; /* the caller's busy_holder: the manifest lock's holder on timeout */
} vrun;

static int add_bad(vrun *v, const ckl_digest *d) {
  if (v->nbad == v->capbad) {
    size_t cap = v->capbad ? v->capbad * 2 : 16;
    void *p = realloc(v->bad, cap * sizeof *v->bad);
    if (!p) return -ENOMEM;
    v->bad = p;
    v->capbad = cap;
  }
  ckl_digest_to_hex(d, v->bad[v->nbad++]);
  v->res.bad_chunks++;
  return 0;
}

static int check_chunk(vrun *v, const ckl_digest *d, const char *file) {
  int rc = ckl__digest_set_insert(&v->seen, d);
  if (rc <= 0) return rc; /* read already (or -ENOMEM) */
  void *data = NULL;
  size_t len = 0;
  rc = ckl_chunk_read(v->st->chunks, d, &data, &len);
  free(data);
  v->res.chunks++;
  if (rc == 0) return 0;
  char hex[CKL_DIGEST_HEX_LEN + 1];
  ckl_digest_to_hex(d, hex);
  if (rc == CKL_ECORRUPT) {
    int r = ckl_chunk_mark_bad(v->st->chunks, d);
    ckl__log_error("%s: verify %s: chunk %s (in %s) is corrupt%s", v->st->path, v->name, hex, file,
                   r == 0 ? "; set aside as .bad" : "; could not set it aside");
    return add_bad(v, d);
  }
  if (rc == -ENOENT) {
    ckl__log_error("%s: verify %s: chunk %s (in %s) is missing", v->st->path, v->name, hex, file);
    return add_bad(v, d);
  }
  ckl__log_error("%s: verify %s: cannot read chunk %s: %s", v->st->path, v->name, hex,
                 ckl_strerror(rc));
  return rc;
}

/* One archive: the file must match the manifest, then every chunk. */
static int check_file(vrun *v, const json_t *f) {
  const char *name = json_string_value(json_object_get(f, "name"));
  v->res.files++;
  uint64_t size = 0;
  ckl_digest csum, want;
  int rc = ckl__file_sha256_at(v->dirfd, name, &size, &csum);
  if (rc < 0 && rc != -ENOENT && rc != -ELOOP && rc != -EINVAL) return rc;
  if (rc < 0 || ckl_digest_from_hex(json_string_value(json_object_get(f, "csum")), &want) < 0 ||
      memcmp(&want, &csum, sizeof want) != 0 ||
      (json_int_t)size != json_integer_value(json_object_get(f, "size"))) {
    ckl__log_error("%s: verify %s: %s %s", v->st->path, v->name, name,
                   rc < 0 ? "is missing or not a regular file"
                          : "does not match the manifest's size and checksum");
    v->res.bad_files++;
    return 0;
  }
  ckl_index *ix = NULL;
  if ((rc = ckl_index_openat(v->dirfd, name, &ix)) < 0) {
    if (rc != CKL_ECORRUPT && rc != CKL_EVERSION) return rc;
    ckl__log_error("%s: verify %s: %s does not parse: %s", v->st->path, v->name, name,
                   ckl_strerror(rc));
    v->res.bad_files++;
    return 0;
  }
  size_t n = ckl_index_count(ix);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    /* A runtime task's safe point: a cancel or a lost lease stops here,
     * before the verdict, so nothing is written. */
    if ((rc = ckl__observe_checkpoint()) < 0) break;
    rc = check_chunk(v, ckl_index_digest(ix, i), name);
    uint64_t s, e;
    if (ckl_index_range(ix, i, &s, &e) == 0) v->bytes += e - s;
    ckl__observe_progress("verify", v->res.chunks, 0, v->bytes);
  }
  ckl_index_close(ix);
  return rc;
}

static int cmp_hex(const void *a, const void *b) { return strcmp(a, b); }

static int set_state(json_t *m, void *arg) {
  vrun *v = arg;
  char now[32];
  ckl__format_time(ckl__now_realtime_ns(), now, sizeof now);
  json_t *bad = json_array();
  if (!bad) return -ENOMEM;
  for (size_t i = 0; i < v->nbad; i++) {
    if (json_array_append_new(bad, json_string(v->bad[i])) < 0) {
      json_decref(bad);
      return -ENOMEM;
    }
  }
  json_t *vs = json_pack("{s:s, s:s, s:o}", "state", v->res.ok ? "ok" : "failed", "time", now,
                         "bad_chunks", bad);
  if (!vs) return -ENOMEM;
  return json_object_set_new(json_object_get(m, "unprotected"), "verify_state", vs) == 0 ? 0
                                                                                         : -ENOMEM;
}

static int run(vrun *v, const ckl_snapshot_name *n, ckl_lock_order *order) {
  ckl_store *st = v->st;
  if ((v->dirfd = ckl__snapshot_open_dir(st, n)) < 0) return v->dirfd;
  /* A manifest update that crashed left its temp file; its writer's lock
   * is gone, so removing it is safe, and this is the next operation on
   * the snapshot. Live writers' temps are locked and stay. */
  char dir[PATH_MAX];
  if (ckl__pathf(dir, sizeof dir, "%s/%s", st->path, v->name) >= 0) (void)ckl_atomic_cleanup(dir);
  json_t *m = NULL;
  int rc = ckl_manifest_load(st, n, &m);
  if (rc == -ENOENT)
    ckl__log_error("%s: verify %s: no manifest (still being written, or abandoned)", st->path,
                   v->name);
  if (rc < 0) return rc;
  json_t *files = json_object_get(m, "files"), *f;
  size_t i;
  json_array_foreach(files, i, f) {
    if ((rc = check_file(v, f)) < 0) break;
  }
  json_decref(m);
  if (rc < 0) return rc;
  v->res.ok = v->res.bad_chunks == 0 && v->res.bad_files == 0;
  if (v->nbad) qsort(v->bad, v->nbad, sizeof *v->bad, cmp_hex);
  if ((rc = CKL_FAILPOINT("verify.before_finish")) < 0) return rc;
  ckl_manifest_update_opts uo = {.order = order, .operation = "verify", .busy_holder = v->busy};
  if ((rc = ckl_update_manifest(st, n, set_state, v, &uo)) < 0) {
    ckl__log_error("%s: verify %s: cannot record the result: %s", st->path, v->name,
                   ckl_strerror(rc));
    return rc;
  }
  ckl__log_info("%s: verify %s: %s (%zu files, %zu chunks, %zu bad chunks, %zu bad files)",
                st->path, v->name, v->res.ok ? "ok" : "FAILED", v->res.files, v->res.chunks,
                v->res.bad_chunks, v->res.bad_files);
  return v->res.ok ? 0 : CKL_ECORRUPT;
}

int ckl_verify(ckl_store *st, const ckl_snapshot_name *n, const ckl_verify_opts *opts,
               ckl_verify_result *result) {
  static const ckl_verify_opts no_opts = {0};
  if (!opts) opts = &no_opts;
  if (result) memset(result, 0, sizeof *result);
  if (!st || !ckl__snapshot_name_ok(n)) return -EINVAL;
  char name[CKL_SNAP_NAME_MAX + 1];
  ckl__ops_snap_str(n, name);
  vrun v = {.st = st, .name = name, .dirfd = -1, .busy = opts->busy_holder};
  ckl__state *state = NULL;
  int rc = ckl__ops_state_open(st, &state);
  if (rc < 0) return rc;
  ckl_lock_order order = {0};
  ckl_path_lock lk = {0};
  ckl_holder who = {0};
  char token[CKL_TOKEN_HEX_LEN + 1] = "";
  /* Registered before locking, so a forget that finds the lock busy can
   * always name us. */
  if ((rc = ckl__ops_register(st, state, "verify", name, 0, token)) < 0) goto out;
  ckl_snap_lock_opts so = {.order = &order, .busy_holder = &who};
  rc = ckl_snapshot_lock(st, n, CKL_LOCK_SHARED, &lk, &so);
  if (opts->busy_holder) *opts->busy_holder = who;
  if (rc == CKL_EBUSY) {
    char h[256];
    ckl_holder_format(&who, h, sizeof h);
    ckl__log_info("%s: verify %s: busy: held by %s", st->path, name, h);
  }
  if (rc < 0) goto out;
  if ((rc = CKL_FAILPOINT("verify.after_lock")) < 0) goto out;
  rc = run(&v, n, &order);
  if (result) *result = v.res;
out:
  ckl__close(v.dirfd);
  ckl__digest_set_free(&v.seen);
  free(v.bad);
  /* Unlocked before deregistering: a forget that finds the lock held
   * must find our record too (registered before the lock, above). */
  ckl_path_lock_release(&lk);
  ckl__ops_deregister(state, token);
  ckl__ops_state_close(st, state);
  return rc;
}

/*
 * chunklock/manifest.h - a snapshot's manifest, index.json.
 *
 * Shape (docs/datastore.md "Manifest"):
 *
 *     {"format": 1,
 *      "snapshot": "<type>/<id>/<time>",
 *      "files": [{"name": "root.didx", "size": 1234,
 *                 "csum": "<SHA-256 hex of the index file>"}, ...],
 *      "created": "<RFC 3339 UTC>",
 *      "unprotected": {...}}
 *
 * Everything but "unprotected" is written once, when the backup finishes
 * (ckl_manifest_write_new), and never changes. "unprotected" holds what
 * later operations add (verify state, notes): it changes only through
 * ckl_update_manifest, under the manifest lock. Unknown top-level keys are
 * kept and count as protected. Keys are written sorted; the file is
 * replaced atomically, so a reader never needs a lock (it sees the old or
 * the new manifest).
 *
 * Why a callback rather than load + store: a load-modify-store done by two
 * callers at once loses one update. ckl_update_manifest holds the manifest
 * lock across load, change and replace, so updates serialise; and it
 * compares the protected part before and after the callback, so a callback
 * can never alter what the backup wrote.
 */
#ifndef CHUNKLOCK_MANIFEST_H
#define CHUNKLOCK_MANIFEST_H

#include <jansson.h>

#include "chunk.h"
#include "common.h"
#include "lock.h"
#include "snapshot.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_MANIFEST_NAME "index.json"
#define CKL_MANIFEST_FORMAT 1
/** Largest manifest file read. */
#define CKL_MANIFEST_MAX_BYTES (16u << 20)

/** Flags for writing: compact output instead of 2-space indentation. */
#define CKL_MANIFEST_COMPACT 0x1u

/**
 * Load and validate the manifest of `snap` WITHOUT a lock. The result is a
 * consistent snapshot of the file (it is replaced atomically), but it must
 * never be written back: use ckl_update_manifest to change anything.
 * *out is a new reference (json_decref it).
 *
 * Returns 0, or:
 *   -ENOENT        no manifest (snapshot missing or still in progress)
 *   CKL_ECORRUPT   malformed JSON, a duplicate key, a wrong type, a bad
 *                  value (format < 1, invalid file name, csum that is not
 *                  64 hex digits, created not RFC 3339, "snapshot" not
 *                  naming this snapshot), a non-regular file or one over
 *                  CKL_MANIFEST_MAX_BYTES; the log names file, line, column
 *   CKL_EVERSION   "format" newer than CKL_MANIFEST_FORMAT
 *   -ELOOP         index.json is a symlink (never followed)
 *   -EINVAL        bad arguments, -ENAMETOOLONG, -ENOMEM, -EACCES, -EIO
 */
CKL_EXTERN int ckl_manifest_load(ckl_store *st, const ckl_snapshot_name *snap, json_t **out);

/**
 * Check a manifest document against the shape above and against `snap`
 * (NULL: do not check "snapshot"). 0, CKL_ECORRUPT (logged with the JSON
 * path of the bad value), CKL_EVERSION.
 */
CKL_EXTERN int ckl_manifest_validate(const json_t *m, const ckl_snapshot_name *snap);

/**
 * A new manifest for `snap`: format 1, no files, created = now, empty
 * unprotected. *out is a new reference. 0, -EINVAL, -ENOMEM.
 */
CKL_EXTERN int ckl_manifest_new(const ckl_snapshot_name *snap, json_t **out);

/**
 * Append a file entry. 0, -EINVAL (invalid archive name, or a file of that
 * name is already listed, or m is not a manifest), -ENOMEM.
 */
CKL_EXTERN int ckl_manifest_add_file(json_t *m, const char *name, uint64_t size,
                                     const ckl_digest *csum);

/**
 * Write the manifest of a snapshot for the first time (the backup's
 * finish): validate, then atomically create index.json in the snapshot
 * directory. The caller holds the snapshot lock exclusively, so nobody
 * else can create the file in between the existence check and the rename.
 * `flags`: CKL_MANIFEST_COMPACT.
 *
 * Returns 0, or:
 *   -EEXIST        the snapshot already has a manifest
 *   -ENOENT        the snapshot directory does not exist
 *   CKL_ECORRUPT / CKL_EVERSION   m is not a valid manifest for snap
 *   -EINVAL, -ENAMETOOLONG, -ENOMEM, and the -errno codes of the atomic
 *   replace (-ENOSPC, -EIO, -EACCES, -EROFS)
 */
CKL_EXTERN int ckl_manifest_write_new(ckl_store *st, const ckl_snapshot_name *snap,
                                      const json_t *m, unsigned flags);

/**
 * The change ckl_update_manifest applies. It may change only
 * manifest["unprotected"] (which must remain an object) and must not keep
 * references to the document after it returns. Return 0 to write, or a
 * negative code to abort: nothing is written and that code is returned.
 * Called with the manifest lock held: keep it short, take no other lock.
 */
typedef int (*ckl_manifest_update_fn)(json_t *manifest, void *arg);

typedef struct ckl_manifest_update_opts {
  int64_t timeout_ms;      /* manifest lock: 0 = the store's deadline (5 s),
                              > 0 this deadline, CKL_FOREVER */
  ckl_lock_order *order;   /* the caller's tracker (e.g. verify holds the
                              snapshot lock); NULL = unchecked */
  const char *operation;   /* written to the lock's holder record;
                              NULL = "update_manifest" */
  ckl_holder *busy_holder; /* out, optional: the holder on CKL_ETIMEDOUT */
  unsigned flags;          /* CKL_MANIFEST_COMPACT */
} ckl_manifest_update_opts;

/**
 * Update a manifest under its lock: lock (deadline) -> load -> fn ->
 * compare everything except "unprotected" (serialised with sorted keys)
 * before and after -> atomic replace -> release. If fn changed nothing at
 * all the file is left as it is (same inode) and 0 is returned.
 * opts may be NULL.
 *
 * Returns 0, or:
 *   CKL_ETIMEDOUT   the manifest lock was still held at the deadline; the
 *                   log names the holder, opts->busy_holder receives it
 *   CKL_EPROTECTED  fn changed something outside "unprotected": nothing
 *                   was written, the file is byte for byte unchanged
 *   -EINVAL         fn removed "unprotected" or made it a non-object
 *                   (nothing written), or bad arguments
 *   -ENOENT         no such snapshot, or no manifest yet
 *   fn's own negative return (nothing written)
 *   CKL_ECORRUPT, CKL_EVERSION, -ELOOP   as ckl_manifest_load
 *   CKL_ELOCKORDER  opts->order holds a lock above the manifest level
 *   -ENOSPC, -EIO, ... from the atomic replace (old manifest kept)
 *   any code of a failpoint update_manifest.*
 */
CKL_EXTERN int ckl_update_manifest(ckl_store *st, const ckl_snapshot_name *snap,
                                   ckl_manifest_update_fn fn, void *arg,
                                   const ckl_manifest_update_opts *opts);

#ifdef __cplusplus
}
#endif
#endif

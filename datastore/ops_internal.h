/*
 * datastore/ops_internal.h - what the operations (backup, restore,
 * forget, prune, verify, fsck) share. Not installed.
 *
 * docs/datastore-ops.md has the protocols; the comments here are the
 * contracts between the files.
 */
#ifndef CKL_DATASTORE_OPS_INTERNAL_H
#define CKL_DATASTORE_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunklock/chunk.h"
#include "datastore/digest_set.h"
#include "chunklock/lock.h"
#include "chunklock/snapshot.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"

/* ---- the coordination state of an operation ------------------------------
 * Every operation opens its own state handle with ckl__ops_state_open and
 * closes it with ckl__ops_state_close. Besides the handle, this keeps the
 * store's lock root in a process-wide registry for as long as any
 * operation of the store runs, which is how the lock layer's
 * ckl__holder_lookup hook maps a busy snapshot lock file back to a store
 * and asks its roster who holds it (shared holders write no record into a
 * lock file; only the roster can name them). */
int ckl__ops_state_open(ckl_store *st, ckl__state **out);
void ckl__ops_state_close(ckl_store *st, ckl__state *state);

/* Register a roster record for the calling thread: flags CKL_ROSTER_*,
 * target "type/id/time" (or "type/id"), no lease. 0 or an error of
 * ckl__state_register (logged with the store path). */
int ckl__ops_register(ckl_store *st, ckl__state *state, const char *operation, const char *target,
                      unsigned flags, char token[CKL_TOKEN_HEX_LEN + 1]);
/* Deregister; "" tokens are a no-op. Returns ckl__state_deregister's code
 * (-ENOENT: the record was gone, the lease lost). */
int ckl__ops_deregister(ckl__state *state, char token[CKL_TOKEN_HEX_LEN + 1]);

/* ---- files --------------------------------------------------------------- */
/* SHA-256 and size of the regular file dirfd/name (O_NOFOLLOW), read with
 * pread (a failed read is an error, never SIGBUS). 0, -ENOENT, -ELOOP,
 * -EINVAL (not a regular file): answers, not logged; CKL_ECORRUPT (the
 * file changed size while it was read), -ENOMEM, -errno (-EIO: a failed
 * read): logged with the full path and the cause. */
int ckl__file_sha256_at(int dirfd, const char *name, uint64_t *size, ckl_digest *out);

/* Make the directory `type/id` (each part 0755, existing ones are fine).
 * 0 or -errno. */
int ckl__ops_make_group_dir(ckl_store *st, const ckl_group_name *g);

/* Does the snapshot have its manifest (a regular index.json)? */
bool ckl__ops_has_manifest(ckl_store *st, const ckl_snapshot_name *n);

/* "type/id/time" into buf[CKL_SNAP_NAME_MAX + 1]. */
void ckl__ops_snap_str(const ckl_snapshot_name *n, char buf[CKL_SNAP_NAME_MAX + 1]);

/* ---- the forget path (forget.c) --------------------------------------------
 * Remove a snapshot whose lock the caller already holds EXCLUSIVELY in
 * *snap_lock (taken through `order`, which may be NULL): manifest lock ->
 * one state transaction that moves the directory to .trash/<unique> and,
 * while a GC marks, records it in the removed-during-GC set -> delete the
 * trash entry at once unless a GC is marking -> unlink the manifest lock
 * file, then the snapshot lock file, while holding them. The snapshot
 * lock is released in every case (unlinked on success).
 *
 * Every removal of a snapshot directory goes through here: forget, prune,
 * a backup's abort and the cleanup of abandoned snapshots. A plain rm -rf
 * would make a GC that listed the snapshot's indexes abort (an index
 * vanished that is not in the removed-during-GC set).
 *
 * Returns 0 (deleted), 1 (left in .trash for the marking GC), -ENOENT
 * (the directory is not there: nothing moved), CKL_ETIMEDOUT (manifest
 * lock; *busy, if non-NULL, names its holder when known), an error of the
 * state transaction (if the move was done but the commit failed, the
 * snapshot is in .trash anyway; logged), any code of a forget.* failpoint,
 * -errno. `why` names the caller in logs. */
int ckl__forget_held(ckl_store *st, ckl__state *state, const ckl_snapshot_name *n,
                     ckl_path_lock *snap_lock, ckl_lock_order *order, const char *why,
                     ckl_holder *busy);

/* The entry names of directory dfd (without "." and ".."), those `want`
 * accepts when it is given, as a malloc'd vector for
 * ckl__dir_names_free. dfd's own offset is left alone (a dup is read).
 * 0, -ENOMEM, or the -errno of dup/readdir. */
int ckl__dir_names(int dfd, bool (*want)(int dfd, const char *name), char ***out, size_t *n);
void ckl__dir_names_free(char **v, size_t n);

/* Delete the entries of .trash that no GC needs: those not in the
 * removed-during-GC set (leftovers of forgets that crashed after the
 * move). Safe at any time; see forget.c for why. Returns the number
 * removed or an error. */
int ckl__trash_purge_stale(ckl_store *st, ckl__state *state);

/* Remove the abandoned snapshots of a group: no manifest and no holder
 * (the exclusive snapshot lock is free, so no backup is writing it). The
 * caller holds the group lock through `order`. Each removal goes through
 * ckl__forget_held. Returns the number removed or a listing error
 * (removals that fail are logged and skipped). */
int ckl__remove_abandoned(ckl_store *st, ckl__state *state, const ckl_group_name *g,
                          ckl_lock_order *order);

#endif

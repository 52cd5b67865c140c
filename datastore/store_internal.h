/*
 * datastore/store_internal.h - the store handle, for the library's own
 * operations (backup, forget, prune, verify, fsck, GC). Not installed.
 *
 * Everything in struct ckl_store is set by ckl_store_open and never
 * changed until ckl_store_close, so any thread may read it without a lock.
 */
#ifndef CKL_DATASTORE_STORE_INTERNAL_H
#define CKL_DATASTORE_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "chunklock/chunk.h"
#include "chunklock/proclock.h"
#include "chunklock/snapshot.h"
#include "chunklock/store.h"

struct ckl_store {
  char *path;           /* absolute, resolved at open */
  int dirfd;            /* STORE, O_RDONLY|O_DIRECTORY */
  char *chunks_path;    /* STORE/.chunks */
  char *lock_path;      /* STORE/.lock: process locker and GC lock */
  char *state_path;     /* STORE/.state: LMDB environment */
  char *trash_path;     /* STORE/.trash */
  char *gc_status_path; /* STORE/.gc-status */
  char *config_path;    /* STORE/chunklock.json */
  char *locks_root;     /* STORE/.locks or <locks_dir>/<uuid> */
  size_t locks_base_len; /* prefix of locks_root that must already exist:
                            STORE, or the parent of locks_dir */
  char *locks_dir;      /* the configured locks_dir (not the override), or NULL */
  ckl_store_config cfg; /* cfg.locks_dir points at locks_dir */
  int64_t manifest_lock_timeout_ms;
  unsigned atomic_flags; /* CKL_ATOMIC_NOSYNC when sync is "none" */
  ckl_proclock *proclock;
  ckl_chunkstore *chunks;
};

/* The configuration file (STORE/chunklock.json), in memory: for open,
 * create, and the fuzz target.
 *
 * Parse and check raw[0..len) (need not be NUL-terminated); `file` names
 * it in messages. *locks_dir receives a malloc'd copy of a configured
 * locks_dir (NULL if none); cfg->locks_dir is left NULL. 0, CKL_ECORRUPT
 * (malformed JSON, duplicate or unknown key, wrong type, value out of
 * range; logged with line and column), CKL_EVERSION (newer format),
 * -ENOMEM. */
int ckl__store_config_parse(const char *file, const char *raw, size_t len,
                            ckl_store_config *cfg, char **locks_dir);
/* The file's bytes for cfg: malloc'd, newline-terminated, or NULL (no
 * memory). */
char *ckl__store_config_dump(const ckl_store_config *cfg);

/* Lock file paths inside the lock namespace. Each returns the length, or
 * -EINVAL (invalid name), -ENAMETOOLONG. Nothing is created. */
int ckl__store_group_lock_path(const ckl_store *st, const ckl_group_name *g, char *buf,
                               size_t len);
int ckl__store_snapshot_lock_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf,
                                  size_t len);
int ckl__store_manifest_lock_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf,
                                  size_t len);

/* Create the missing directories (mode 0700) between the lock namespace's
 * parent and lock_path's directory. 0 or -errno. */
int ckl__store_make_lock_parents(const ckl_store *st, const char *lock_path);

/* Snapshot directory relative to the store root ("type/id/time"), for
 * *at() calls on st->dirfd. Length or -EINVAL / -ENAMETOOLONG. */
int ckl__snapshot_relpath(const ckl_snapshot_name *n, char *buf, size_t len);

/* Open the snapshot directory (O_RDONLY|O_DIRECTORY), following no
 * symlink on the way. fd, or -ENOENT, -ENOTDIR/-ELOOP (a symlink or a
 * file where a directory belongs), -EINVAL, -errno. */
int ckl__snapshot_open_dir(const ckl_store *st, const ckl_snapshot_name *n);
/* Does the snapshot directory exist (same walk, nothing kept open)? 0, or
 * -ENOENT (missing, or a symlink or file where a directory belongs),
 * -EINVAL, -errno. */
int ckl__snapshot_dir_exists(const ckl_store *st, const ckl_snapshot_name *n);

/* Is n a valid, consistent name (parts valid, time_s matches time)? */
bool ckl__snapshot_name_ok(const ckl_snapshot_name *n);
bool ckl__group_name_ok(const ckl_group_name *g);

#endif

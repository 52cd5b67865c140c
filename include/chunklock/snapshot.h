/*
 * chunklock/snapshot.h - snapshot names, listing and the snapshot locks.
 *
 * A snapshot is the directory STORE/<type>/<id>/<time>/ holding index
 * files (*.didx, *.fidx) and, once complete, the manifest index.json. A
 * group is all snapshots of one <type>/<id>.
 *
 * Names (docs/datastore.md "Snapshot names"):
 *   type  [a-z0-9-]{1,32}
 *   id    [A-Za-z0-9_.-]{1,128}, not starting with '.' (so never "." or "..")
 *   time  "YYYY-MM-DDTHH:MM:SSZ" exactly: UTC, a valid calendar date, hour
 *         00-23, minute and second 00-59
 * Anything else, including a slash inside a part, a control character or
 * a NUL byte, is -EINVAL. The parsers take an explicit length, so a NUL
 * inside the input is seen and rejected, never silently ends the string.
 *
 * Locks (DESIGN.md section 3), all taken through the store's lock
 * namespace (store.h) and recorded in a caller's ckl_lock_order so the
 * fixed order process -> group -> snapshot -> manifest is checked:
 *   group lock     <ns>/<type>/<id>.lck                exclusive, try
 *   snapshot lock  <ns>/<type>/<id>/<time>.lck         shared or exclusive, try
 *   manifest lock  <ns>/<type>/<id>/<time>.manifest.lck exclusive, deadline
 * Release any of them with ckl_path_lock_release() (or, to destroy the
 * snapshot, ckl_path_lock_unlink() while holding it).
 */
#ifndef CHUNKLOCK_SNAPSHOT_H
#define CHUNKLOCK_SNAPSHOT_H

#include "common.h"
#include "lock.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKL_SNAP_TYPE_MAX 32
#define CKL_SNAP_ID_MAX 128
#define CKL_SNAP_TIME_LEN 20 /* "YYYY-MM-DDTHH:MM:SSZ" */
/** Longest "type/id/time" (without the NUL). */
#define CKL_SNAP_NAME_MAX (CKL_SNAP_TYPE_MAX + 1 + CKL_SNAP_ID_MAX + 1 + CKL_SNAP_TIME_LEN)
/** Longest archive (index file) name, e.g. "root.didx". */
#define CKL_ARCHIVE_NAME_MAX 128

typedef struct ckl_group_name {
  char type[CKL_SNAP_TYPE_MAX + 1];
  char id[CKL_SNAP_ID_MAX + 1];
} ckl_group_name;

typedef struct ckl_snapshot_name {
  char type[CKL_SNAP_TYPE_MAX + 1];
  char id[CKL_SNAP_ID_MAX + 1];
  char time[CKL_SNAP_TIME_LEN + 1];
  int64_t time_s; /* the same instant in seconds since the epoch (UTC) */
} ckl_snapshot_name;

/* ---- names ----------------------------------------------------------- */

/** Is s[0..len) a valid type / id? 1 or 0. */
CKL_EXTERN int ckl_snapshot_type_valid(const char *s, size_t len);
CKL_EXTERN int ckl_snapshot_id_valid(const char *s, size_t len);

/** Parse a time "YYYY-MM-DDTHH:MM:SSZ" of exactly len bytes into seconds
 * since the epoch. 0 or -EINVAL. */
CKL_EXTERN int ckl_snapshot_time_parse(const char *s, size_t len, int64_t *out);
/** Format seconds since the epoch (years 0000-9999) into out. 0 or
 * -EINVAL (out of range). */
CKL_EXTERN int ckl_snapshot_time_format(int64_t t, char out[CKL_SNAP_TIME_LEN + 1]);

/** Parse "type/id/time" of exactly len bytes. 0, or -EINVAL (malformed;
 * *out is then zeroed). */
CKL_EXTERN int ckl_snapshot_name_parsen(const char *s, size_t len, ckl_snapshot_name *out);
/** Same for a NUL-terminated string. -EINVAL also for NULL. */
CKL_EXTERN int ckl_snapshot_name_parse(const char *s, ckl_snapshot_name *out);
/** Parse "type/id" of exactly len bytes. 0 or -EINVAL. */
CKL_EXTERN int ckl_group_name_parsen(const char *s, size_t len, ckl_group_name *out);
CKL_EXTERN int ckl_group_name_parse(const char *s, ckl_group_name *out);

/** Build a name from its parts (each validated). 0 or -EINVAL. */
CKL_EXTERN int ckl_snapshot_name_make(const char *type, const char *id, int64_t time_s,
                                      ckl_snapshot_name *out);

/** Write "type/id/time" into buf. Returns the length, -EINVAL if n is not
 * a valid name, -ENAMETOOLONG if buf is too small (then truncated, NUL
 * terminated). */
CKL_EXTERN int ckl_snapshot_name_format(const ckl_snapshot_name *n, char *buf, size_t len);
/** The group of a snapshot. */
CKL_EXTERN void ckl_snapshot_group(const ckl_snapshot_name *n, ckl_group_name *out);

typedef enum ckl_archive_kind {
  CKL_ARCHIVE_NONE = 0,
  CKL_ARCHIVE_DIDX = 1, /* dynamic index, "*.didx" */
  CKL_ARCHIVE_FIDX = 2  /* fixed index, "*.fidx" */
} ckl_archive_kind;

/** Is s[0..len) a valid archive file name: [A-Za-z0-9_.-]{1,128}, not
 * starting with '.', ending ".didx" or ".fidx" with a non-empty stem?
 * Returns its kind, or CKL_ARCHIVE_NONE. */
CKL_EXTERN ckl_archive_kind ckl_archive_name_kind(const char *s, size_t len);

/* ---- paths and listing ----------------------------------------------- */

/** Absolute path of a snapshot directory into buf. Length, or -EINVAL,
 * -ENAMETOOLONG. */
CKL_EXTERN int ckl_snapshot_path(const ckl_store *st, const ckl_snapshot_name *n, char *buf,
                                 size_t len);

typedef enum ckl_snapshot_state {
  CKL_SNAP_IN_PROGRESS = 1, /* no manifest: being written, or abandoned */
  CKL_SNAP_COMPLETE = 2     /* index.json is present */
} ckl_snapshot_state;

typedef struct ckl_snapshot_info {
  ckl_snapshot_name name;
  ckl_snapshot_state state;
  size_t nfiles;
  char **files; /* archive names present in the directory, sorted */
} ckl_snapshot_info;

/**
 * List the groups of the store, sorted by type then id. *out is a
 * malloc'd array (free() it; NULL when *count is 0). Entries whose names
 * are not valid types or ids, and anything that is not a directory
 * (symlinks are never followed), are skipped and logged at debug level.
 * 0, or -ENOMEM, -EACCES, -EIO, other -errno from reading the store root.
 */
CKL_EXTERN int ckl_group_list(ckl_store *st, ckl_group_name **out, size_t *count);

/**
 * List the snapshots of a group, newest first, each with its state and
 * its archive files. Skips (and logs at debug) invalid names and
 * non-directories, never follows symlinks; a snapshot that vanishes while
 * being listed (a concurrent forget) is skipped. Free with
 * ckl_snapshot_list_free.
 * 0, or -ENOENT (the group does not exist), -EINVAL (bad group name),
 * -ENOMEM, -errno.
 */
CKL_EXTERN int ckl_snapshot_list(ckl_store *st, const ckl_group_name *g, ckl_snapshot_info **out,
                                 size_t *count);
CKL_EXTERN void ckl_snapshot_list_free(ckl_snapshot_info *list, size_t count);

/* ---- locks ------------------------------------------------------------ */

/** ckl_snapshot_lock flag: the snapshot directory need not exist (a
 * backup locks the name before it creates the directory). Without it a
 * missing snapshot is -ENOENT, checked again after the lock is granted. */
#define CKL_SNAP_LOCK_CREATING 0x1u

typedef struct ckl_snap_lock_opts {
  ckl_lock_order *order;   /* tracker for the fixed order; NULL = unchecked */
  const char *operation;   /* exclusive holders: "backup", "forget", ... */
  ckl_holder *busy_holder; /* out, optional: who holds it on busy/timeout */
  int64_t timeout_ms;      /* manifest lock only: 0 = the store's deadline
                              (5 s), > 0 this deadline, CKL_FOREVER */
  unsigned flags;          /* CKL_SNAP_LOCK_* */
} ckl_snap_lock_opts;

/**
 * Take the group lock (exclusive, never waits) at level CKL_LEVEL_GROUP.
 * `lk` must be zeroed / not held; opts may be NULL.
 * 0, CKL_EBUSY (opts->busy_holder filled when known), CKL_ELOCKORDER,
 * -EINVAL (bad name, lk held), -ENAMETOOLONG, and the -errno codes of
 * ckl_path_lock_acquire.
 */
CKL_EXTERN int ckl_group_lock(ckl_store *st, const ckl_group_name *g, ckl_path_lock *lk,
                              const ckl_snap_lock_opts *opts);

/**
 * Take a snapshot lock in `mode` (never waits) at level CKL_LEVEL_SNAPSHOT.
 * Unless CKL_SNAP_LOCK_CREATING is set, the snapshot directory must exist
 * before and after the lock is granted (a forget may finish in between).
 * 0, CKL_EBUSY (holder filled when known), -ENOENT (no such snapshot),
 * CKL_ELOCKORDER, -EINVAL, -ENAMETOOLONG, and the -errno codes of
 * ckl_path_lock_acquire.
 */
CKL_EXTERN int ckl_snapshot_lock(ckl_store *st, const ckl_snapshot_name *n, ckl_lock_mode mode,
                                 ckl_path_lock *lk, const ckl_snap_lock_opts *opts);

/**
 * Take the manifest lock (exclusive) at level CKL_LEVEL_MANIFEST, waiting
 * up to opts->timeout_ms (default: the store's, 5 s). The snapshot
 * directory must exist unless CKL_SNAP_LOCK_CREATING is set.
 * 0, CKL_ETIMEDOUT (still held at the deadline; holder filled when known
 * and named in the log), -ENOENT, CKL_ELOCKORDER, -EINVAL,
 * -ENAMETOOLONG, and the -errno codes of ckl_path_lock_acquire.
 */
CKL_EXTERN int ckl_manifest_lock(ckl_store *st, const ckl_snapshot_name *n, ckl_path_lock *lk,
                                 const ckl_snap_lock_opts *opts);

#ifdef __cplusplus
}
#endif
#endif

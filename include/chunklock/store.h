/*
 * chunklock/store.h - a store: create, open, close, configuration.
 *
 * A store is a directory (DESIGN.md section 2; docs/datastore.md "Store
 * layout"):
 *
 *     STORE/chunklock.json   versioned configuration, written last
 *     STORE/.chunks/         the chunk store (chunk.h)
 *     STORE/.lock            process locker and GC lock (proclock.h)
 *     STORE/.locks/          group, snapshot and manifest lock files
 *     STORE/.state/          coordination state (LMDB, disposable)
 *     STORE/.trash/          snapshots forgotten while a GC marks
 *     STORE/<type>/<id>/<time>/   snapshots (snapshot.h)
 *
 * Calling sequence:
 *
 *     ckl_store_create_opts co = {0};          // zeroed = defaults
 *     rc = ckl_store_create("/srv/store", &co); // once
 *     ckl_store *st;
 *     rc = ckl_store_open("/srv/store", NULL, &st);
 *     ...
 *     ckl_store_close(st);
 *
 * A ckl_store is immutable after open and may be used by many threads at
 * once. After fork() a child must open its own handle (the process locker
 * registry starts empty in the child, see proclock.h).
 *
 * Lock namespace: group, snapshot and manifest lock files live under
 * STORE/.locks/ unless a locks_dir is configured (at create time, stored in
 * the configuration, or at open time, which overrides it); then they live
 * under <locks_dir>/<store uuid>/, for example on a tmpfs, so that no lock
 * file is ever created inside the store's data. Lock files and their parent
 * directories (mode 0700) are created on demand.
 */
#ifndef CHUNKLOCK_STORE_H
#define CHUNKLOCK_STORE_H

#include "chunk.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Configuration format version this library writes and reads. */
#define CKL_STORE_FORMAT 1
/** Name of the configuration file inside the store. */
#define CKL_STORE_CONFIG_NAME "chunklock.json"
/** Marker present while a create is in progress (or was interrupted). */
#define CKL_STORE_CREATING_NAME ".creating"

/** Defaults written by ckl_store_create. */
#define CKL_STORE_DEFAULT_AVERAGE_SIZE 1048576u
#define CKL_STORE_DEFAULT_COMPRESS_LEVEL 3
#define CKL_STORE_DEFAULT_ATIME_SAFETY_S 87300 /* 24 h 5 min: relatime */
#define CKL_STORE_DEFAULT_MARGIN_S 5
/** Deadline of the manifest lock unless the store is opened with another. */
#define CKL_MANIFEST_LOCK_TIMEOUT_MS 5000

/** Bits of ckl_store_create_opts.set: fields whose zero is a real value. */
#define CKL_STORE_SET_ATIME_SAFETY 0x1u  /* use .gc_atime_safety_s */
#define CKL_STORE_SET_MARGIN 0x2u        /* use .gc_margin_s */

typedef struct ckl_store_create_opts {
  unsigned set;                  /* CKL_STORE_SET_* bits */
  ckl_sync_policy sync;          /* 0 = CKL_SYNC_FILESYSTEM (chunk.h) */
  uint32_t chunk_average_size;   /* 0 = 1 MiB; else a power of two in
                                    [64 KiB, 4 MiB] */
  int compress_level;            /* 0 = 3; -1 = never compress; 1..22 */
  int64_t gc_atime_safety_s;     /* with CKL_STORE_SET_ATIME_SAFETY:
                                    0 .. 31536000 */
  int64_t gc_margin_s;           /* with CKL_STORE_SET_MARGIN: 0 .. 3600 */
  const char *locks_dir;         /* NULL = STORE/.locks; else an absolute
                                    path, recorded in the configuration */
} ckl_store_create_opts;

typedef struct ckl_store_open_opts {
  const char *locks_dir;           /* absolute path overriding the
                                      configuration's; NULL = as configured */
  int64_t manifest_lock_timeout_ms; /* 0 = CKL_MANIFEST_LOCK_TIMEOUT_MS;
                                       > 0 = this deadline (tests) */
} ckl_store_open_opts;

/** The parsed configuration file, as ckl_store_get_config returns it. */
typedef struct ckl_store_config {
  int format;                          /* CKL_STORE_FORMAT */
  char uuid[CKL_TOKEN_HEX_LEN + 1];    /* 128 random bits, hex */
  char created[21];                    /* RFC 3339 UTC */
  uint32_t chunk_average_size;
  int compress_level;
  ckl_sync_policy sync;
  int64_t gc_atime_safety_s;
  int64_t gc_margin_s;
  const char *locks_dir;               /* configured locks_dir or NULL;
                                          owned by the store */
} ckl_store_config;

typedef struct ckl_store ckl_store;

/**
 * Create a store at `path`, which must not exist (its parent must) or be an
 * empty directory. `opts` may be NULL (defaults). Steps, in this order: the
 * marker STORE/.creating (held locked while creating), .chunks with its
 * prefix directories, .lock, .locks/, .state/, .trash/, then
 * STORE/chunklock.json through an atomic replace, then the marker is
 * removed. A crash at any step leaves a store that ckl_store_open refuses
 * with CKL_EHALFCREATED.
 *
 * Creating over a half-created store (the marker is there and no create
 * holds it) finishes it: every step is idempotent, the configuration is
 * written from `opts` (the interrupted create never wrote one that anybody
 * could have used), and the marker is removed.
 *
 * Returns 0, or:
 *   -EEXIST       `path` is already a store (complete)
 *   -ENOTEMPTY    `path` is a non-empty directory that is not a
 *                 half-created store
 *   -ENOTDIR      `path` exists and is not a directory
 *   -ENOENT       the parent directory does not exist
 *   CKL_EBUSY     another create is working on `path` right now
 *   -EINVAL       an option is out of range (logged)
 *   -EACCES, -EROFS, -ENOSPC, other -errno from the filesystem
 *   any code of a failpoint store.create.*
 */
CKL_EXTERN int ckl_store_create(const char *path, const ckl_store_create_opts *opts);

/**
 * Open the store at `path`. `opts` may be NULL. Opens the process locker
 * (STORE/.lock) and the chunk store.
 *
 * Returns 0 and *out, or:
 *   -ENOENT         `path` does not exist
 *   CKL_ENOTSTORE   `path` is not a directory, or has no chunklock.json
 *   CKL_EHALFCREATED  a create was interrupted (or is running): the
 *                   marker STORE/.creating exists; the log names it
 *   CKL_EVERSION    the configuration's format is newer than this library
 *   CKL_ECORRUPT    chunklock.json is malformed JSON, has a duplicate key,
 *                   a value of the wrong type or out of range, or an
 *                   unknown key; or is not a regular file or over 64 KiB;
 *                   the log names the file, line and column
 *   -ELOOP          chunklock.json is a symlink (never followed)
 *   -EINVAL         opts->locks_dir is not an absolute path
 *   -ENOMEM, and any error of ckl_proclock_open or ckl_chunkstore_open
 *   (e.g. CKL_ENOTSTORE when .chunks is missing)
 */
CKL_EXTERN int ckl_store_open(const char *path, const ckl_store_open_opts *opts,
                              ckl_store **out);

/** Close a store (NULL is a no-op). Every lock taken through it must have
 * been released. */
CKL_EXTERN void ckl_store_close(ckl_store *st);

/** The store's absolute path (resolved at open). Never NULL. */
CKL_EXTERN const char *ckl_store_path(const ckl_store *st);

/** The root of the store's lock namespace: STORE/.locks or
 * <locks_dir>/<uuid>. Never NULL. */
CKL_EXTERN const char *ckl_store_locks_root(const ckl_store *st);

/** The configuration read at open. Valid until ckl_store_close. */
CKL_EXTERN const ckl_store_config *ckl_store_get_config(const ckl_store *st);

/** Name of a sync policy as written in the configuration: "none",
 * "file", "filesystem" (NULL for an unknown value). */
CKL_EXTERN const char *ckl_sync_policy_name(ckl_sync_policy p);

#ifdef __cplusplus
}
#endif
#endif

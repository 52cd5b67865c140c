/*
 * chunklock/maintenance.h - forget, prune, verify, fsck.
 *
 * docs/datastore-ops.md has the protocols and the locks each one takes.
 * All are synchronous, thread-safe, and may run beside backups, readers
 * and a GC, in any thread or process.
 */
#ifndef CHUNKLOCK_MAINTENANCE_H
#define CHUNKLOCK_MAINTENANCE_H

#include "common.h"
#include "snapshot.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- forget ----------------------------------------------------------------
 * Snapshot lock exclusive (never waits) -> manifest lock -> one write
 * transaction of the coordination state: move the snapshot directory to
 * STORE/.trash/<unique>, and if a GC is marking, add it to the
 * removed-during-GC set (the GC marks its chunks from .trash and purges
 * it later) -> delete the trash entry at once when no GC was marking ->
 * unlink the lock files while holding them. */

typedef struct ckl_forget_opts {
  ckl_holder *busy_holder; /* out, optional: who holds the snapshot */
} ckl_forget_opts;

/** ckl_forget's non-negative results. */
#define CKL_FORGET_DELETED 0 /* deleted at once */
#define CKL_FORGET_TRASHED 1 /* left in .trash for the GC that is marking
                                (never for a dry-run GC: it deletes nothing) */

/**
 * Forget a snapshot (complete, or abandoned by a backup that died).
 * opts may be NULL.
 *
 * Returns CKL_FORGET_DELETED or CKL_FORGET_TRASHED, or:
 *   CKL_EBUSY      a reader, verify or backup holds the snapshot, or the
 *                  store is frozen (freeze.h) (never waits);
 *                  opts->busy_holder names it (operation, pid)
 *   -ENOENT        no such snapshot
 *   CKL_ETIMEDOUT  the manifest lock stayed held past its deadline;
 *                  opts->busy_holder names its holder when known
 *   -EINVAL        bad name
 *   errors of the coordination state; if the move was done but its
 *   transaction failed to commit, the snapshot is in .trash all the same
 *   (logged) and a GC that needed the record aborts instead of sweeping
 *   -errno from the filesystem; failpoint codes (forget.*)
 */
CKL_EXTERN int ckl_forget(ckl_store *st, const ckl_snapshot_name *n, const ckl_forget_opts *opts);

/* ---- prune -------------------------------------------------------------------
 * Which snapshots of a group to keep. Rules, as in Proxmox Backup Server
 * and restic: walk the group's complete snapshots newest -> oldest;
 * keep-last keeps the N newest; each period rule (hourly, daily, weekly,
 * monthly, yearly; periods in UTC, weeks are ISO 8601 weeks) keeps the
 * newest snapshot of each distinct period until N periods are kept, a
 * snapshot kept by an earlier rule counting for its period; rules apply in
 * that order and a snapshot is credited to the first rule that keeps it.
 * Whatever no rule keeps is removed. With at least one rule, the newest
 * snapshot is always kept. */

typedef enum ckl_prune_reason {
  CKL_PRUNE_REMOVE = 0, /* kept by no rule: removed */
  CKL_PRUNE_KEEP_LAST,  /* kept by keep_last */
  CKL_PRUNE_KEEP_HOURLY,
  CKL_PRUNE_KEEP_DAILY,
  CKL_PRUNE_KEEP_WEEKLY,
  CKL_PRUNE_KEEP_MONTHLY,
  CKL_PRUNE_KEEP_YEARLY,
  CKL_PRUNE_IN_PROGRESS, /* no manifest and a live writer: never removed */
  CKL_PRUNE_ABANDONED    /* no manifest and no writer: removed */
} ckl_prune_reason;

typedef struct ckl_prune_opts {
  unsigned keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly;
  int dry_run;             /* 1: decide and report, remove nothing */
  ckl_holder *busy_holder; /* out, optional: the holder on CKL_EBUSY */
} ckl_prune_opts;

typedef struct ckl_prune_item {
  ckl_snapshot_name name;
  int keep;                /* 1: kept; 0: to be removed */
  ckl_prune_reason reason; /* the rule that keeps it, or why it goes */
  int rc;                  /* removals: 0 done (or dry run), CKL_EBUSY
                              skipped because it is in use (a warning, not
                              a failure), -ENOENT already gone, or the
                              forget's error */
} ckl_prune_item;

/** "keep-last", "keep-hourly", ..., "remove", "in-progress", "abandoned";
 * "unknown" otherwise. */
CKL_EXTERN const char *ckl_prune_reason_name(ckl_prune_reason r);

/**
 * The keep algorithm alone, for times_s[0..n) (seconds since the epoch,
 * strictly decreasing: newest first). out[i] receives the rule that keeps
 * snapshot i, or CKL_PRUNE_REMOVE. 0, or -EINVAL (no rule set, times not
 * strictly decreasing or not formattable, NULL arguments with n > 0).
 */
CKL_EXTERN int ckl_prune_select(const int64_t *times_s, size_t n, const ckl_prune_opts *opts,
                                ckl_prune_reason *out);

/**
 * Prune group `g`: take the group lock (never waits), register "prune",
 * list the snapshots, decide with ckl_prune_select over the complete ones,
 * and forget each one to remove (unless dry_run). Snapshots without a
 * manifest are never decided by the rules: one that a writer holds is
 * kept (CKL_PRUNE_IN_PROGRESS); one that nobody holds was abandoned by a
 * backup that died and is removed (CKL_PRUNE_ABANDONED). Removing a
 * snapshot in use is skipped with a warning (item rc CKL_EBUSY).
 *
 * *out (free() it) lists every snapshot, newest first, whenever the
 * listing succeeded, also when an error is returned.
 *
 * Returns 0 (busy skips included), or:
 *   CKL_EBUSY      the group is being backed up or pruned (the group lock),
 *                  or (not in a dry run) the store is frozen (freeze.h)
 *   -ENOENT        no such group
 *   -EINVAL        no rule set, bad name
 *   the first error of a removal that was not a busy skip (the others
 *   were still attempted); errors of the state and the filesystem
 */
CKL_EXTERN int ckl_prune(ckl_store *st, const ckl_group_name *g, const ckl_prune_opts *opts,
                         ckl_prune_item **out, size_t *count);

/* ---- verify ------------------------------------------------------------------
 * Snapshot lock shared; registers "verify" in the roster; checks each
 * index file against the manifest (size, SHA-256), reads every chunk of
 * every index once (ckl_chunk_read checks its digest), sets corrupt
 * chunks aside (ckl_chunk_mark_bad, so a later backup writes a good
 * copy), and records the result through ckl_update_manifest as
 *   unprotected.verify_state = {"state": "ok" | "failed",
 *                               "time": RFC 3339,
 *                               "bad_chunks": [hex, ...]}
 * (bad_chunks: corrupt or missing chunks, sorted). */

typedef struct ckl_verify_opts {
  ckl_holder *busy_holder; /* out, optional: the holder on CKL_EBUSY */
} ckl_verify_opts;

typedef struct ckl_verify_result {
  int ok;            /* 1: state "ok" */
  size_t files;      /* index files checked */
  size_t chunks;     /* distinct chunks read */
  size_t bad_chunks; /* corrupt or missing */
  size_t bad_files;  /* index files that are missing, differ from the
                        manifest, or do not parse */
} ckl_verify_result;

/**
 * Verify a complete snapshot. opts and result may be NULL.
 * Returns 0 (state "ok" written), CKL_ECORRUPT (state "failed" written),
 * or, with nothing written:
 *   CKL_EBUSY      being written or forgotten
 *   -ENOENT        no such snapshot, or no manifest
 *   CKL_ETIMEDOUT  the manifest lock stayed held past its deadline;
 *                  opts->busy_holder names its holder when known
 *   -EIO and other -errno reading chunks or indexes, errors of
 *   ckl_manifest_load and of the state, failpoint codes (verify.*)
 */
CKL_EXTERN int ckl_verify(ckl_store *st, const ckl_snapshot_name *n, const ckl_verify_opts *opts,
                          ckl_verify_result *result);

/* ---- fsck ----------------------------------------------------------------------
 * A store-wide check that takes no exclusive lock: it may run beside
 * backups, forgets and GC. What a running operation has in flight (a
 * snapshot being written, the temp file of an insert in progress, a GC's
 * sweep names while a GC runs) is not a problem. */

typedef enum ckl_fsck_kind {
  CKL_FSCK_INDEX_CORRUPT = 1, /* an index file does not parse */
  CKL_FSCK_CHUNK_MISSING,     /* a referenced chunk does not exist */
  CKL_FSCK_CHUNK_CORRUPT,     /* a referenced chunk fails its checks */
  CKL_FSCK_MANIFEST_CORRUPT,  /* index.json does not parse or validate */
  CKL_FSCK_MANIFEST_MISMATCH, /* a listed file is missing or differs in
                                 size or checksum, or an index file is
                                 not listed */
  CKL_FSCK_TEMP_FILE,         /* a temp file no live writer owns */
  CKL_FSCK_GC_LEFTOVER,       /* a ".gc-*" sweep name and no GC running */
  CKL_FSCK_BAD_CHUNK,         /* a chunk set aside as "<hex>.<N>.bad" */
  CKL_FSCK_TRASH_ENTRY,       /* an entry in .trash and no GC marking */
  CKL_FSCK_HALF_WRITTEN,      /* a snapshot without manifest and without
                                 a backup writing it */
  CKL_FSCK_KIND_MAX
} ckl_fsck_kind;

typedef struct ckl_fsck_problem {
  ckl_fsck_kind kind;
  const char *path;   /* absolute path of the file or directory */
  const char *detail; /* one line: what is wrong, and what refers to it */
} ckl_fsck_problem;

/** Called once per problem; strings are valid during the call only. */
typedef void (*ckl_fsck_cb)(const ckl_fsck_problem *p, void *arg);

/** ckl_fsck_opts.flags: remove what is provably garbage as it is found:
 * insert temp files older than every live writer, atomic-replace temp
 * files whose writer's lock is gone, and .trash entries no GC needs. They
 * are still reported (detail says "removed"). */
#define CKL_FSCK_CLEAN 0x1u
/** ckl_fsck_opts.flags: check snapshots, manifests, indexes and the chunks
 * they reference, but skip the scan of .chunks for stray files (temp,
 * .gc-*, .bad), which on a large store is most of the work. .trash is
 * still checked. */
#define CKL_FSCK_SNAPSHOTS_ONLY 0x2u

typedef struct ckl_fsck_opts {
  unsigned flags;
} ckl_fsck_opts;

typedef struct ckl_fsck_summary {
  size_t snapshots, indexes, chunks; /* checked (chunks: distinct, read) */
  size_t problems;
  size_t by_kind[CKL_FSCK_KIND_MAX];
  size_t cleaned; /* with CKL_FSCK_CLEAN: entries removed */
} ckl_fsck_summary;

/** "index-corrupt", "chunk-missing", ... */
CKL_EXTERN const char *ckl_fsck_kind_name(ckl_fsck_kind k);

/**
 * Check the whole store. opts, cb and summary may be NULL.
 * Returns 0 when clean, the number of problems (> 0, capped at INT_MAX),
 * or an error that stopped the check (-ENOMEM, -EIO reading a directory,
 * errors of the state).
 */
CKL_EXTERN int ckl_fsck(ckl_store *st, const ckl_fsck_opts *opts, ckl_fsck_cb cb, void *arg,
                        ckl_fsck_summary *summary);

#ifdef __cplusplus
}
#endif
#endif

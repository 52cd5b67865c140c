/*
 * chunklock/roster.h - who is working on a store right now.
 *
 * Every backup, GC, forget, prune, verify, reader and `with-lock` session
 * registers a record in the store's coordination state (STORE/.state/, see
 * docs/state.md) before it starts and removes it when done. This header
 * lets tools (`chunklock locks`) and embedders list those records, clean
 * up records of holders that are gone, and see whether a GC is running.
 *
 * Staleness. A record is stale, and reaped on sight by any listing, when
 *   - it was written on this machine, this boot and this pid namespace
 *     ("local") and its process is provably gone: no such pid, a zombie,
 *     or a pid now used by a process with a different start time; or
 *   - it is foreign (another machine, boot or pid namespace) and its
 *     lease expired (foreign records without a lease never expire).
 * A record that cannot be decoded (damaged, or written by a newer
 * chunklock) is listed with parsed = 0 and is never reaped automatically:
 * unreadable holder metadata counts as held. ckl_roster_remove() takes
 * such a record out by hand.
 *
 * All functions take the store directory, are thread-safe, and create
 * STORE/.state if it is missing. They return CKL_ENOTSTORE when store_dir
 * has no .chunks directory (so a typo never litters a random directory).
 */
#ifndef CHUNKLOCK_ROSTER_H
#define CHUNKLOCK_ROSTER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The holder inserts chunks: the GC's sweep cutoff waits for it. */
#define CKL_ROSTER_WRITER 0x1u
/** The holder holds its target exclusively (otherwise shared). */
#define CKL_ROSTER_EXCLUSIVE 0x2u

typedef struct ckl_roster_entry {
  int parsed;             /* 0: could not be decoded; counts as held */
  const char *note;       /* why it could not be decoded; "" when parsed */
  char token[CKL_TOKEN_HEX_LEN + 1]; /* record key ("?" for bytes that are not hex) */
  const char *operation;  /* "backup", "gc", ... ("" when not parsed) */
  const char *target;     /* snapshot or lock path, may be "" */
  const char *host_id;    /* machine id, or "host:<hostname>" */
  const char *boot_id;
  const char *hostname;
  uint64_t pidns;         /* pid namespace inode */
  int64_t pid;
  int64_t tid;
  uint64_t pid_start;     /* /proc/<pid>/stat field 22 (ticks after boot) */
  unsigned flags;         /* CKL_ROSTER_WRITER | CKL_ROSTER_EXCLUSIVE */
  int64_t start_ns;       /* wall clock (CLOCK_REALTIME) ns */
  int64_t lease_expiry_ns; /* wall clock ns; 0 = no lease */
  int local;              /* 1: same host, boot and pid namespace as the caller */
} ckl_roster_entry;

/** Called once per entry; strings are valid only during the call. Return
 * non-zero to stop the listing (ckl_roster_list then returns that value). */
typedef int (*ckl_roster_cb)(const ckl_roster_entry *e, void *arg);

/**
 * List the records of store_dir, reaping stale ones first. The callback
 * runs after the state's transaction has ended, so it may call chunklock.
 * Returns the number of entries listed, the callback's non-zero value, or
 * CKL_ENOTSTORE, -ENOENT, -EACCES, CKL_ECORRUPT, CKL_EVERSION, -errno.
 */
CKL_EXTERN int ckl_roster_list(const char *store_dir, ckl_roster_cb cb, void *arg);

/**
 * Remove stale records as of now_ns (wall clock ns; 0 = now). Returns the
 * number removed, or an error as for ckl_roster_list.
 */
CKL_EXTERN int ckl_roster_reap(const char *store_dir, int64_t now_ns);

/**
 * Remove one record by token, stale or not, unless it belongs to a live
 * local process. For records listed as unparseable or of hosts that will
 * not come back: removing a live writer's record lets a GC sweep chunks
 * that writer is about to reference. 0, -ENOENT (no such record), -EINVAL
 * (malformed token), CKL_EBUSY (a live local process owns it), or an error
 * as for ckl_roster_list.
 */
CKL_EXTERN int ckl_roster_remove(const char *store_dir, const char *token);

/** The GC part of the coordination state. */
typedef struct ckl_roster_gc {
  int active;                        /* a GC is marking (or died while marking) */
  char token[CKL_TOKEN_HEX_LEN + 1]; /* that GC's token; "" if none ever ran */
  int64_t phase1_start_ns;           /* wall clock */
  size_t removed;                    /* snapshots forgotten during the mark */
} ckl_roster_gc;

/** Read the GC state. 0 or an error as for ckl_roster_list. */
CKL_EXTERN int ckl_roster_gc_state(const char *store_dir, ckl_roster_gc *out);

#ifdef __cplusplus
}
#endif
#endif

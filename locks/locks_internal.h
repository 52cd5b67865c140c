/*
 * locks/locks_internal.h - what the lock modules share with each other and
 * with the rest of the library. Not installed; not part of the API.
 *
 * Holder records. An exclusive holder writes one fixed-size record into its
 * lock file with a single pwrite, so that a contender that gets CKL_EBUSY can
 * say who is in the way. The record is advisory: it is never consulted to
 * decide whether a lock is held (the kernel decides that), only to name the
 * holder, and a record that cannot be read or does not parse means
 * "unknown holder", never "free".
 *
 * Layout (256 bytes, integers little-endian):
 *     0  magic "CKLHOLD1"
 *     8  u32 record size (256)
 *    12  u32 reserved (0)
 *    16  i64 pid          24  i64 tid          32  i64 since (CLOCK_REALTIME ns)
 *    40  token, 32 lowercase hex chars (no NUL)
 *    72  host, 64 bytes, NUL-terminated, NUL-padded
 *   136  operation, 32 bytes, NUL-terminated, NUL-padded
 *   168  reserved (zeros)
 *   248  u64 FNV-1a of bytes [0, 248): a torn or stale-garbage record fails it
 *
 * Where the records live:
 *   - a path lock file: offset 0 (the file holds nothing else);
 *   - STORE/.lock: the holder of lock byte n writes at 4096 + 256 n
 *     (byte 0 process locker, byte 1 GC lock), far from the lock bytes so the
 *     reserved byte range 2+ can grow without moving a record.
 */
#ifndef CKL_LOCKS_INTERNAL_H
#define CKL_LOCKS_INTERNAL_H

#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "chunklock/lock.h"
#include "chunklock/proclock.h"
#include "common/internal.h"

#define CKL__HOLDER_REC_SIZE 256
#define CKL__HOLDER_SLOT_BASE 4096

/* Offset of the holder record for lock byte `byte` of STORE/.lock. */
static inline off_t ckl__holder_slot(int byte) {
  return (off_t)CKL__HOLDER_SLOT_BASE + (off_t)CKL__HOLDER_REC_SIZE * byte;
}

/* Fill buf with a record for the calling thread. `operation` may be NULL. */
void ckl__holder_record_encode(unsigned char buf[CKL__HOLDER_REC_SIZE],
                               const char token[CKL_TOKEN_HEX_LEN + 1], const char *operation,
                               int64_t since_ns);
/* Parse len bytes. 0 and out filled (known = 1, target untouched) if they
 * are a well-formed record; -1 (out untouched) otherwise. Never reads past
 * len, never trusts a length or terminator inside the record. */
int ckl__holder_record_parse(const unsigned char *buf, size_t len, ckl_holder *out);
/* pwrite a record for the calling thread at off. 0 or -errno. */
int ckl__holder_record_write(int fd, off_t off, const char token[CKL_TOKEN_HEX_LEN + 1],
                             const char *operation, int64_t since_ns);
/* Overwrite the record at off with zeros (while the lock is still held, so
 * no later holder's record can be hit). 0 or -errno. */
int ckl__holder_record_clear(int fd, off_t off);

/*
 * Hook through which the coordination-state module (the roster) names
 * holders, shared ones included, which no lock file can. Called with the
 * lock file path, the first byte of the contended range, and whether the
 * conflicting kernel lock is exclusive. Returns 1 after filling *out
 * (known = 1), 0 if it knows nothing. Must not take chunklock locks.
 * NULL (the default) = no roster: shared holders stay unknown.
 */
typedef int (*ckl__holder_lookup_fn)(const char *lock_path, off_t start, int exclusive_holder,
                                     ckl_holder *out);
extern _Atomic(ckl__holder_lookup_fn) ckl__holder_lookup;

/*
 * Bounded re-probe of a busy lock whose holder could not be named (see
 * locks/busy.c for the windows it covers and those that remain). Zeroed =
 * not started. After a busy attempt with an unknown holder, call
 * ckl__reprobe_next: true = it paused (yield or a short sleep), try the
 * lock and the lookup again; false = CKL__REPROBE_MS have passed since the
 * first call, answer busy with the holder unknown.
 */
#define CKL__REPROBE_MS 10
typedef struct ckl__reprobe {
  int64_t end_ns; /* monotonic; set by the first call */
  unsigned tries;
} ckl__reprobe;
bool ckl__reprobe_next(ckl__reprobe *r);

/* Fill *out (if non-NULL) about whoever blocks a `want_exclusive` lock on
 * [start, start+len) of fd: the roster hook first, then the record at
 * rec_off (< 0: none) when the blocker is exclusive. out->target = path. */
void ckl__fill_busy_holder(int fd, const char *path, off_t start, off_t len, int want_exclusive,
                           off_t rec_off, ckl_holder *out);

/* ckl_gclock_acquire with the operation its holder record names: the
 * exclusive freeze holds the GC lock too, and a GC it refuses must not be
 * told that a GC is running. `operation` <= 31 bytes. */
int ckl__gclock_acquire_as(const char *path, ckl_gclock *g, int64_t timeout_ms,
                           ckl_holder *busy_holder, const char *operation);

/* ckl_proclock_exclusive whose holder record (written when this process's
 * kernel lock becomes exclusive) names `operation` instead of
 * "proclock-exclusive": a strict GC and the exclusive freeze, so that a
 * backup they refuse is told who is in the way. <= 31 bytes. */
int ckl__proclock_exclusive_as(ckl_proclock *pl, ckl_proclock_guard *g, int64_t timeout_ms,
                               ckl_holder *busy_holder, const char *operation);

/* Open (creating, 0600) a lock file: O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC;
 * when read_only_ok and the file exists but cannot be opened for writing,
 * O_RDONLY instead. Returns the fd (>= 0) and fills *st, or:
 * -ELOOP (symlink), -EISDIR, -EINVAL (not a regular file), -EACCES, -EPERM,
 * -EROFS, -ENOENT (directory missing), -ENAMETOOLONG, other -errno.
 * *writable says which way it was opened. */
int ckl__lockfile_open(const char *path, int read_only_ok, int *writable, struct stat *st);

/* 0 if fd is the file now at path (same dev and inode, still linked),
 * CKL_EREPLACED if path is gone or is another file, -errno if lstat fails
 * otherwise. */
int ckl__lockfile_verify(int fd, const char *path);

/* F_OFD_SETLK(W) on [start, start+len). type F_RDLCK / F_WRLCK / F_UNLCK.
 * 0, -EAGAIN when another open file description conflicts, other -errno. */
int ckl__ofd_setlk(int fd, short type, off_t start, off_t len, int wait);

/* One acquisition of a byte range of a lock file with lock-then-verify, the
 * engine under path locks and the GC lock. */
typedef enum ckl__lock_kind { CKL__KIND_PATH = 0, CKL__KIND_GC = 1 } ckl__lock_kind;

typedef struct ckl__range_req {
  const char *path;
  ckl__lock_kind kind;      /* picks the failpoint names */
  int exclusive;
  off_t start, len;         /* len 0 = to the end of the file (whole file) */
  off_t rec_off;            /* where an exclusive holder's record is, < 0 none */
  int64_t timeout_ms;
  ckl_holder *busy_holder;  /* out, optional */
  /* Exclusive only: when rec_token is set, our holder record (rec_token,
   * rec_operation) is written at rec_off right after the kernel grant,
   * before anything else (failpoint, verify) can delay it, and cleared
   * again if the grant is then dropped. *since_ns (optional) receives the
   * time it names. */
  const char *rec_token;
  const char *rec_operation;
  int64_t *since_ns;
  int no_create;            /* open without O_CREAT: -ENOENT if missing */
  /* Optional: called once, at the first busy answer, before any waiting
   * (and before CKL_EBUSY for CKL_TRY); a negative return is returned at
   * once, busy_holder untouched. */
  int (*on_busy)(void *arg);
  void *on_busy_arg;
} ckl__range_req;

/* Consecutive "file was replaced" retries taken at once before the loop
 * starts pacing itself with the backoff (which, for CKL_TRY, means giving
 * up with CKL_EREPLACED: a TRY caller wanted an answer now, and a file that
 * keeps being replaced under it cannot give one). */
#define CKL__REPLACED_FAST_RETRIES 8

/* Returns the locked fd (>= 0) and fills *st and *writable, or CKL_EBUSY,
 * CKL_ETIMEDOUT, CKL_EREPLACED (CKL_TRY only: the file kept being replaced
 * under us), or an error of ckl__lockfile_open / fcntl. A busy answer whose
 * holder cannot be named is re-probed first (ckl__reprobe_next), so with
 * busy_holder set it may take up to CKL__REPROBE_MS longer, or end in a
 * grant. */
int ckl__range_acquire(const ckl__range_req *rq, struct stat *st, int *writable);

/* ckl_path_lock_acquire that never creates the lock file: -ENOENT (logged
 * at debug level only) when it, or its directory, does not exist; every
 * other answer as ckl_path_lock_acquire. on_busy (optional) as in
 * ckl__range_req: a check to make before waiting or answering busy. For
 * callers that must check something before they may create a lock file
 * or wait for one, and can skip that check when the file is already there
 * and free (datastore/snapshot_lock.c). */
int ckl__path_lock_acquire_existing(ckl_path_lock *lk, const char *path, ckl_lock_mode mode,
                                    const ckl_lock_opts *opts, int (*on_busy)(void *),
                                    void *on_busy_arg);

#endif

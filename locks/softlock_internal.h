/*
 * locks/softlock_internal.h - soft lock markers: format, bounded parser,
 * observation ("is this marker live?") and eviction. Shared by
 * locks/softlock.c and tests (and a future fuzz target of the parser).
 * Not installed; not part of the API.
 *
 * Marker file format (text, at most CKL__SOFTLOCK_MARKER_MAX bytes, every
 * line ends in '\n', fields in this order, exactly one space after a key):
 *
 *     chunklock-softlock 1
 *     token <32 lowercase hex>            random 128 bits: the holder identity
 *     host <1..63 printable ASCII>        host id (default: host name)
 *     boot <1..63 of [0-9a-f-]>           kernel boot id, "-" if unknown
 *     pidns <0..2^64-1>                   pid namespace inode, 0 if unknown
 *     pid <1..4194304>
 *     created <1..2^63-1>                 wall clock ns when the marker was made
 *     op <1..31 printable ASCII>          operation name, "-" if none
 *
 * Anything else - longer, shorter, reordered, a NUL, a non-ASCII byte, a
 * value out of range, trailing bytes - is rejected as a whole. A rejected
 * marker is never free: it counts as held by an unknown holder until its
 * mtime is older than the TTL.
 */
#ifndef CKL_LOCKS_SOFTLOCK_INTERNAL_H
#define CKL_LOCKS_SOFTLOCK_INTERNAL_H

#include <sys/stat.h>
#include <sys/types.h>

#include "chunklock/softlock.h"
#include "common/internal.h"

#define CKL__SOFTLOCK_MARKER_MAX 1024
#define CKL__SOFTLOCK_PID_MAX 4194304 /* PID_MAX_LIMIT on 64-bit Linux */
#define CKL__SOFTLOCK_MAGIC "chunklock-softlock 1"

typedef struct ckl__softlock_marker {
  char token[CKL_TOKEN_HEX_LEN + 1];
  char host[64];
  char boot[64];
  uint64_t pidns;
  int64_t pid;
  int64_t created_ns;
  char op[32];
} ckl__softlock_marker;

/* Write m as marker text into buf. Returns the length, or -EINVAL when a
 * field would not parse back (the parser is the authority), -ENAMETOOLONG
 * when buf is too small. */
int ckl__softlock_marker_format(const ckl__softlock_marker *m, char *buf, size_t len);

/* Parse exactly len bytes (no NUL needed). 0 and *out filled, or
 * CKL_ECORRUPT (*out untouched). Reads nothing past len, trusts no length
 * inside the data, allocates nothing: safe on hostile input. */
int ckl__softlock_marker_parse(const void *buf, size_t len, ckl__softlock_marker *out);

/* Who we are and how we judge markers: fixed for one hold. */
typedef struct ckl__softlock_env {
  ckl_softlock_clock_fn clock;
  void *clock_ctx;
  int64_t ttl_ns;
  uid_t uid;                 /* markers of any other owner are never trusted */
  char host[64];
  char boot[64];
  uint64_t pidns;
  int dir_fd;                /* the directory of the lock path */
  int readers_fd;            /* P.readers/, where evicted markers are moved */
  const char *dir_path;      /* for messages */
  const char *readers_path;  /* for messages */
} ckl__softlock_env;

int64_t ckl__softlock_now(const ckl__softlock_env *e, ckl_softlock_clock_id which);

/* How far past the TTL a marker's mtime must be before it is stale, and
 * how far two mtimes may differ and still be "the same stamp": file
 * timestamps can be coarser than the nanoseconds we stamp (SFTP and SMB
 * keep seconds, FAT two), and a client may show its own exact value until
 * it re-reads the server's truncated one. 2 s, or TTL/10 if smaller. */
static inline int64_t ckl__softlock_slack_ns(int64_t ttl_ns) {
  return ttl_ns / 10 < 2000000000LL ? ttl_ns / 10 : 2000000000LL;
}

/* The identity parts every marker of this process carries. */
const char *ckl__softlock_boot_id(void);
uint64_t ckl__softlock_pidns(void);

typedef enum ckl__softlock_verdict {
  CKL__MK_ABSENT = 0,
  CKL__MK_LIVE = 1,  /* a holder, or unknown: counts as held */
  CKL__MK_STALE = 2  /* may be evicted */
} ckl__softlock_verdict;

typedef enum ckl__softlock_why {
  CKL__WHY_NONE = 0,
  CKL__WHY_TTL = 1,        /* mtime older than the TTL */
  CKL__WHY_FUTURE = 2,     /* mtime more than a TTL in the future */
  CKL__WHY_DEAD = 3,       /* same host, boot and pid namespace; pid is gone */
  CKL__WHY_NOT_MARKER = 4  /* symlink, FIFO, directory, ...: never one of ours */
} ckl__softlock_why;

typedef struct ckl__softlock_obs {
  ckl__softlock_verdict verdict;
  ckl__softlock_why why;
  mode_t type;             /* S_IFMT bits */
  dev_t dev;
  ino_t ino;
  uid_t uid;
  off_t size;
  struct timespec mtime, ctime;
  int parsed;              /* m is valid */
  int trusted;             /* regular, our uid, parsed */
  ckl__softlock_marker m;
} ckl__softlock_obs;

/* Look at dirfd/name without following symlinks, opening only regular
 * files (O_NONBLOCK|O_NOFOLLOW, then fstat S_ISREG), reading at most
 * CKL__SOFTLOCK_MARKER_MAX + 1 bytes, and only files of our uid. An I/O
 * error other than ENOENT gives LIVE (unreadable = held). Never fails. */
void ckl__softlock_observe(const ckl__softlock_env *e, int dirfd, const char *name,
                           ckl__softlock_obs *o);

/* Create dirfd/name O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, write m, stamp
 * atime/mtime with the env's wall clock. 0 and *st (of the new file), or
 * -EEXIST (anything at the name, symlinks included), -errno; on failure
 * after creating, the file is removed again. */
int ckl__softlock_marker_create(const ckl__softlock_env *e, int dirfd, const char *name,
                                const ckl__softlock_marker *m, struct stat *st);

/* Evict the marker at dirfd/name that was observed as *seen: rename it to
 * a unique "b.<token>" in the readers directory, observe it again, and
 * unlink it only if it is the very marker judged (same type, owner and
 * token - or, unparsed, the same size - and the same stamp); otherwise
 * link it back under its name if that is still free. Inode numbers are
 * not part of the identity: some network filesystems (sshfs) renumber a
 * file when it is renamed or forgotten by the client.
 * Returns 1 evicted, 0 not evicted (already gone, or changed and put
 * back), or -errno / a failpoint's code. `own`: removing our own marker
 * on release (same steps, without the softlock.break.* failpoints). */
int ckl__softlock_evict(const ckl__softlock_env *e, int dirfd, const char *name,
                        const ckl__softlock_obs *seen, int own);

/* Fill a ckl_holder from an observation (known = 1 only if trusted). */
void ckl__softlock_obs_holder(const ckl__softlock_env *e, const ckl__softlock_obs *o,
                              const char *target, ckl_holder *out);

/* "r.<32 hex>" / "b.<32 hex>": 1 if name has that prefix and form. */
int ckl__softlock_name_is(const char *name, char prefix);

#endif

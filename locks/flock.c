/*
 * locks/flock.c - path locks on OFD byte-range locks, with lock-then-verify.
 *
 * Why open file description (OFD) locks: classic POSIX fcntl locks belong to
 * the (process, inode) pair, so two threads never exclude each other and
 * close() of ANY fd on the file drops every lock the process has on it.
 * OFD locks belong to the open file description made by open(): every
 * acquisition opens the file itself, so each one is a separate owner
 * (threads exclude each other like processes do), and only closing that
 * description releases it. See docs/locks.md.
 *
 * Invariant kept here: a ckl_path_lock that says held is a kernel lock on
 * the inode that was at lk->path when the lock was granted. Every grant is
 * followed by a comparison of fstat(fd) with lstat(path) (lock, then
 * verify); a grant on an inode that has been unlinked or replaced while we
 * waited protects nothing and is dropped and retried.
 *
 * Release in a process that did not take the lock (a fork child) only
 * closes the inherited fd: an explicit unlock there would unlock the
 * parent's open file description, which the child shares. In the owner,
 * release unlocks explicitly only if a fork() may have given a child a
 * copy of the fd; otherwise close() is the last reference and releases.
 *
 * Cost, uncontended (docs/benchmarks.md, figure 1): open, F_OFD_SETLK,
 * fstat + fstatat (verify, and the regular-file check), close; an
 * exclusive holder adds the pwrite of its record and the one clearing it.
 * Nothing else makes a system call: pid and token are cached/generated in
 * user space (common/process.c).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include "locks/locks_internal.h"

_Atomic(ckl__holder_lookup_fn) ckl__holder_lookup; /* static storage: starts NULL */

/* ---- holder records ------------------------------------------------------ */

#define REC_MAGIC "CKLHOLD1"
#define REC_OFF_SIZE 8
#define REC_OFF_PID 16
#define REC_OFF_TID 24
#define REC_OFF_SINCE 32
#define REC_OFF_TOKEN 40
#define REC_OFF_HOST 72
#define REC_HOST_LEN 64
#define REC_OFF_OP 136
#define REC_OP_LEN 32
#define REC_OFF_SUM 248

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}
static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* Copy a string into a fixed NUL-padded field, truncating (the record is a
 * label, so a cut host name is better than none). */
static void put_str(unsigned char *field, size_t n, const char *s) {
  size_t len = s ? strnlen(s, n - 1) : 0;
  memcpy(field, s ? s : "", len);
  memset(field + len, 0, n - len);
}

void ckl__holder_record_encode(unsigned char buf[CKL__HOLDER_REC_SIZE],
                               const char token[CKL_TOKEN_HEX_LEN + 1], const char *operation,
                               int64_t since_ns) {
  memset(buf, 0, CKL__HOLDER_REC_SIZE);
  memcpy(buf, REC_MAGIC, 8);
  put_u64(buf + REC_OFF_SIZE, CKL__HOLDER_REC_SIZE); /* u32 size + u32 reserved 0 */
  put_u64(buf + REC_OFF_PID, (uint64_t)ckl__getpid());
  put_u64(buf + REC_OFF_TID, (uint64_t)ckl__gettid());
  put_u64(buf + REC_OFF_SINCE, (uint64_t)since_ns);
  memcpy(buf + REC_OFF_TOKEN, token, CKL_TOKEN_HEX_LEN);
  put_str(buf + REC_OFF_HOST, REC_HOST_LEN, ckl__hostname());
  put_str(buf + REC_OFF_OP, REC_OP_LEN, operation);
  put_u64(buf + REC_OFF_SUM, fnv1a(buf, REC_OFF_SUM));
}

/* A text field is valid if it has a NUL inside its bounds, only printable
 * ASCII before it and only NULs after it. */
static int get_str(const unsigned char *field, size_t n, char *out, size_t outlen) {
  size_t len = 0;
  while (len < n && field[len] != 0) {
    if (field[len] < 0x20 || field[len] > 0x7e) return -1;
    len++;
  }
  if (len == n || len >= outlen) return -1;
  for (size_t i = len; i < n; i++)
    if (field[i] != 0) return -1;
  memcpy(out, field, len);
  out[len] = '\0';
  return 0;
}

int ckl__holder_record_parse(const unsigned char *buf, size_t len, ckl_holder *out) {
  if (!buf || len < CKL__HOLDER_REC_SIZE) return -1;
  if (memcmp(buf, REC_MAGIC, 8) != 0) return -1;
  if (get_u64(buf + REC_OFF_SIZE) != CKL__HOLDER_REC_SIZE) return -1;
  if (get_u64(buf + REC_OFF_SUM) != fnv1a(buf, REC_OFF_SUM)) return -1;
  for (size_t i = REC_OFF_OP + REC_OP_LEN; i < REC_OFF_SUM; i++)
    if (buf[i] != 0) return -1;
  ckl_holder h;
  memset(&h, 0, sizeof h);
  h.pid = (int64_t)get_u64(buf + REC_OFF_PID);
  h.tid = (int64_t)get_u64(buf + REC_OFF_TID);
  h.since_ns = (int64_t)get_u64(buf + REC_OFF_SINCE);
  if (h.pid <= 0 || h.tid <= 0 || h.since_ns < 0) return -1;
  for (size_t i = 0; i < CKL_TOKEN_HEX_LEN; i++) {
    unsigned char c = buf[REC_OFF_TOKEN + i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
    h.token[i] = (char)c;
  }
  if (get_str(buf + REC_OFF_HOST, REC_HOST_LEN, h.host, sizeof h.host) < 0) return -1;
  if (get_str(buf + REC_OFF_OP, REC_OP_LEN, h.operation, sizeof h.operation) < 0) return -1;
  h.known = 1;
  memcpy(h.target, out->target, sizeof h.target);
  *out = h;
  return 0;
}

static int pwrite_all(int fd, const void *buf, size_t n, off_t off) {
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
    off += w;
  }
  return 0;
}

int ckl__holder_record_write(int fd, off_t off, const char token[CKL_TOKEN_HEX_LEN + 1],
                             const char *operation, int64_t since_ns) {
  unsigned char rec[CKL__HOLDER_REC_SIZE];
  ckl__holder_record_encode(rec, token, operation, since_ns);
  return pwrite_all(fd, rec, sizeof rec, off);
}

int ckl__holder_record_clear(int fd, off_t off) {
  static const unsigned char zeros[CKL__HOLDER_REC_SIZE];
  return pwrite_all(fd, zeros, sizeof zeros, off);
}

void ckl__fill_busy_holder(int fd, const char *path, off_t start, off_t len, int want_exclusive,
                           off_t rec_off, ckl_holder *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (path) ckl__strlcpy(out->target, path, sizeof out->target); /* a cut label is fine */
  /* Which kind of lock is in the way? OFD locks report l_pid = -1, so the
   * kernel cannot name the owner; the type tells whether a record exists. */
  struct flock fl = {.l_type = want_exclusive ? F_WRLCK : F_RDLCK,
                     .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  int blocker_exclusive = 0;
  if (fcntl(fd, F_OFD_GETLK, &fl) == 0) blocker_exclusive = fl.l_type == F_WRLCK;
  ckl__holder_lookup_fn hook = atomic_load(&ckl__holder_lookup);
  if (hook) {
    ckl_holder h;
    memset(&h, 0, sizeof h);
    memcpy(h.target, out->target, sizeof h.target);
    if (hook(path, start, blocker_exclusive, &h) == 1) {
      h.known = 1;
      if (!h.target[0]) memcpy(h.target, out->target, sizeof h.target);
      *out = h;
      return;
    }
  }
  if (!blocker_exclusive || rec_off < 0) return;
  unsigned char rec[CKL__HOLDER_REC_SIZE];
  ssize_t n = pread(fd, rec, sizeof rec, rec_off);
  if (n == (ssize_t)sizeof rec) (void)ckl__holder_record_parse(rec, sizeof rec, out);
}

/* ---- opening, verifying, locking ------------------------------------------ */

/* open() half of ckl__lockfile_open: fd or -errno (logged). */
static int open_lockfile(const char *path, int read_only_ok, int create, int *writable) {
  /* O_NONBLOCK: a FIFO planted at the path must not hang the open; it is
   * rejected as not a regular file. It has no effect on fcntl locks. */
  const int common = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
  int w = 1;
  int fd = open(path, O_RDWR | (create ? O_CREAT : 0) | common, 0600);
  if (fd < 0) {
    int err = errno;
    if (read_only_ok && (err == EACCES || err == EPERM || err == EROFS)) {
      fd = open(path, O_RDONLY | common);
      /* Missing file we may not create: the first error is the true one. */
      if (fd < 0 && errno != ENOENT) err = errno;
      w = 0;
    }
    if (fd < 0) {
      /* A missing directory is often an answer (the snapshot is gone). */
      if (err == ENOENT) ckl__log_debug("lock file %s: open: %s", path, strerror(err));
      else ckl__log_error("lock file %s: open: %s", path, strerror(err));
      return -err;
    }
  }
  if (writable) *writable = w;
  return fd;
}

/* 0 if st (of the fd opened at path) is a regular file, else the error
 * ckl__lockfile_open documents (logged). */
static int check_regular(const struct stat *st, const char *path) {
  if (S_ISREG(st->st_mode)) return 0;
  ckl__log_error("lock file %s: not a regular file", path);
  /* O_RDWR on a directory fails with EISDIR, but the read-only retry
   * opens it: say the same thing either way. */
  return S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
}

int ckl__lockfile_open(const char *path, int read_only_ok, int *writable, struct stat *st) {
  int fd = open_lockfile(path, read_only_ok, 1, writable);
  if (fd < 0) return fd;
  int rc = fstat(fd, st) == 0 ? check_regular(st, path) : -errno;
  if (rc < 0) {
    if (rc != -EISDIR && rc != -EINVAL)
      ckl__log_error("lock file %s: fstat: %s", path, strerror(-rc));
    ckl__close(fd);
    return rc;
  }
  return fd;
}

/* stat, asking only for type, inode and link count (statx), or fstatat
 * where statx does not exist. Why not plain fstat: on filesystems with
 * multigrain timestamps (ext4, xfs, btrfs, tmpfs since Linux 6.13) reading
 * an inode's ctime flags it as queried, and the next write must then give
 * it a fine-grained, new timestamp, which on ext4 is a journal update: the
 * holder record's pwrite cost twice as much after every lock's verify.
 * Only st_dev, st_ino, st_mode (type) and st_nlink of *out are filled. */
static atomic_int no_statx; /* statx said ENOSYS/EPERM (old kernel, seccomp) */

static int stat_min(int dirfd, const char *path, int flags, struct stat *out) {
  if (!atomic_load_explicit(&no_statx, memory_order_relaxed)) {
    struct statx sx;
    if (statx(dirfd, path, flags, STATX_TYPE | STATX_INO | STATX_NLINK, &sx) == 0) {
      memset(out, 0, sizeof *out);
      out->st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
      out->st_ino = (ino_t)sx.stx_ino;
      out->st_mode = sx.stx_mode;
      out->st_nlink = (nlink_t)sx.stx_nlink;
      return 0;
    }
    /* EPERM: a seccomp filter that predates statx. If it was a real
     * denial, fstatat answers the same and we only lose the mask. */
    if (errno != ENOSYS && errno != EPERM) return -errno;
    atomic_store_explicit(&no_statx, 1, memory_order_relaxed);
  }
  return fstatat(dirfd, path, out, flags) == 0 ? 0 : -errno;
}

/* Lock, then verify, in two system calls: a stat of the fd (which also
 * tells a regular file from a FIFO or device planted at the path, so no
 * separate check is made before locking) and one fstatat of the path that
 * follows no symlink in its last component (a symlink planted at the path
 * is not our file; the fd itself was opened O_NOFOLLOW). *fst receives the
 * fd's stat. 0, CKL_EREPLACED, -EISDIR/-EINVAL (not a regular file), or
 * -errno. */
static int verify_st(int fd, const char *path, struct stat *fst, int want_regular) {
  struct stat b;
  int rc = stat_min(fd, "", AT_EMPTY_PATH, fst);
  if (rc < 0) return rc;
  if (want_regular && (rc = check_regular(fst, path)) < 0) return rc;
  if ((rc = stat_min(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, &b)) < 0)
    return rc == -ENOENT ? CKL_EREPLACED : rc;
  /* Same dev and inode is the test; nlink 0 cannot pass it (the path
   * names the inode, so it is linked) but costs nothing to state. The
   * inode number cannot have been reused: our fd keeps the old one alive. */
  if (fst->st_nlink == 0 || fst->st_dev != b.st_dev || fst->st_ino != b.st_ino)
    return CKL_EREPLACED;
  return 0;
}

int ckl__lockfile_verify(int fd, const char *path) {
  struct stat a;
  return verify_st(fd, path, &a, 0);
}

int ckl__ofd_setlk(int fd, short type, off_t start, off_t len, int wait) {
  for (;;) {
    /* l_pid must be 0 for OFD requests; the initialiser zeroes it. */
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return -EAGAIN;
    return -errno;
  }
}


int ckl__range_acquire(const ckl__range_req *rq, struct stat *st, int *writable) {
  ckl__deadline d;
  ckl__deadline_init(&d, rq->timeout_ms);
  const short type = rq->exclusive ? F_WRLCK : F_RDLCK;
  const int wait = rq->timeout_ms == CKL_FOREVER;
  int replaced = 0, busy_seen = 0;
  ckl__reprobe rp = {0};
  for (;;) {
    int fd = open_lockfile(rq->path, !rq->exclusive, !rq->no_create, writable);
    if (fd < 0) return fd;
    int rc = rq->kind == CKL__KIND_GC ? CKL_FAILPOINT("gclock.before_lock")
                                      : CKL_FAILPOINT("flock.before_lock");
    if (rc == 0) rc = ckl__ofd_setlk(fd, type, rq->start, rq->len, wait);
    if (rc == -EAGAIN) {
      /* Busy. The regular-file check is made after locking on the fast
       * path (verify_st); a busy FIFO or device must still be refused as
       * such, not waited for. */
      int bad = stat_min(fd, "", AT_EMPTY_PATH, st);
      if (bad == 0) bad = check_regular(st, rq->path);
      if (bad == 0 && !busy_seen++ && rq->on_busy) bad = rq->on_busy(rq->on_busy_arg);
      if (bad < 0) {
        ckl__close(fd);
        return bad;
      }
      /* First, for ~100 us, retry on this fd, yielding between attempts
       * (common/util.c says why): most holders are about to release. A
       * file replaced meanwhile is caught by the verify after the grant,
       * as for any waiter. */
      while (rc == -EAGAIN && ckl__deadline_spin(&d))
        rc = ckl__ofd_setlk(fd, type, rq->start, rq->len, 0);
    }
    if (rc == -EAGAIN) {
      /* Sleep with the fd open (so the holder can still be read if time
       * runs out), but reopen for every attempt after a sleep: if the file
       * is replaced meanwhile, polling the old inode would wait for a
       * holder that no longer guards anything. */
      if (!ckl__deadline_backoff(&d)) {
        ckl__fill_busy_holder(fd, rq->path, rq->start, rq->len, rq->exclusive, rq->rec_off,
                              rq->busy_holder);
        /* Nameless: the holder is inside a grant/name window or just left;
         * try {lock; lookup} again for a short bound (locks/busy.c). */
        int again = rq->busy_holder && !rq->busy_holder->known && ckl__reprobe_next(&rp);
        ckl__close(fd);
        if (again) continue;
        return rq->timeout_ms == CKL_TRY ? CKL_EBUSY : CKL_ETIMEDOUT;
      }
      ckl__close(fd);
      continue;
    }
    if (rc < 0) {
      if (rc != CKL_EFAILPOINT && !ckl_is_domain_error(rc))
        ckl__log_error("lock file %s: fcntl(F_OFD_SETLK): %s", rq->path, ckl_strerror(rc));
      ckl__close(fd); /* nothing granted, or the grant dies with the fd */
      return rc;
    }
    /* Named at once: a contender that finds the lock busy reads this
     * record, and until it exists it can only say "unknown holder". We
     * hold the inode exclusively, so the slot is ours even if the verify
     * below finds the inode replaced. */
    int64_t since = ckl__now_realtime_ns();
    if (rq->since_ns) *rq->since_ns = since;
    if (rq->rec_token &&
        (rc = ckl__holder_record_write(fd, rq->rec_off, rq->rec_token, rq->rec_operation,
                                       since)) < 0)
      ckl__log_warn("lock file %s: cannot write holder record: %s", rq->path, strerror(-rc));
    rc = rq->kind == CKL__KIND_GC ? CKL_FAILPOINT("gclock.after_lock")
                                  : CKL_FAILPOINT("flock.after_lock");
    if (rc == 0) rc = verify_st(fd, rq->path, st, 1);
    if (rc == 0) return fd;
    /* Cleared while still held (as in release), then closing drops the
     * grant: this description is ours alone. */
    if (rq->rec_token) (void)ckl__holder_record_clear(fd, rq->rec_off);
    ckl__close(fd);
    if (rc != CKL_EREPLACED) return rc;
    /* Granted on an inode that is no longer at the path (unlinked by a
     * destroyer, or replaced) while we waited: that lock guards nothing.
     * Retry on whatever is at the path now. */
    replaced++;
    ckl__log_debug("lock file %s was replaced while being locked; retrying (%d)", rq->path,
                   replaced);
    if (replaced > CKL__REPLACED_FAST_RETRIES && !ckl__deadline_backoff(&d)) {
      if (rq->busy_holder) {
        memset(rq->busy_holder, 0, sizeof *rq->busy_holder);
        ckl__strlcpy(rq->busy_holder->target, rq->path, sizeof rq->busy_holder->target);
      }
      return rq->timeout_ms == CKL_TRY ? CKL_EREPLACED : CKL_ETIMEDOUT;
    }
  }
}

/* ---- the public path lock -------------------------------------------------- */

static int valid_mode(ckl_lock_mode m) { return m == CKL_LOCK_SHARED || m == CKL_LOCK_EXCLUSIVE; }

static void reset(ckl_path_lock *lk) {
  memset(lk, 0, sizeof *lk);
  lk->fd = -1;
}

static int acquire(ckl_path_lock *lk, const char *path, ckl_lock_mode mode,
                   const ckl_lock_opts *opts, int no_create, int (*on_busy)(void *),
                   void *on_busy_arg) {
  static const ckl_lock_opts defaults = {.timeout_ms = CKL_TRY};
  if (!opts) opts = &defaults;
  if (!lk || !path || !*path || !valid_mode(mode) || opts->timeout_ms < CKL_FOREVER)
    return -EINVAL;
  if (lk->held) return -EINVAL; /* a struct holds one lock; not touched */
  ckl_lock_order *order = opts->level != CKL_LEVEL_NONE ? opts->order : NULL;
  int rc = ckl_lock_order_push(order, opts->level);
  if (rc < 0) return rc;

  char token[CKL_TOKEN_HEX_LEN + 1];
  char *dup = strdup(path);
  rc = dup ? ckl__random_token(token) : -ENOMEM;
  if (rc < 0) {
    free(dup);
    ckl_lock_order_pop(order, opts->level);
    return rc;
  }
  int64_t since = 0;
  /* Before the open: see ckl__fork_gate_enter (common/internal.h). */
  uint64_t fork_gen = ckl__fork_generation();
  ckl__range_req rq = {.path = path, .kind = CKL__KIND_PATH,
                       .exclusive = mode == CKL_LOCK_EXCLUSIVE, .start = 0, .len = 0,
                       .rec_off = 0, .timeout_ms = opts->timeout_ms,
                       .busy_holder = opts->busy_holder, .no_create = no_create,
                       .on_busy = on_busy, .on_busy_arg = on_busy_arg,
                       .rec_token = mode == CKL_LOCK_EXCLUSIVE ? token : NULL,
                       .rec_operation = opts->operation, .since_ns = &since};
  struct stat st;
  int writable = 0;
  int fd = ckl__range_acquire(&rq, &st, &writable);
  if (fd < 0) {
    free(dup);
    ckl_lock_order_pop(order, opts->level);
    return fd;
  }
  reset(lk);
  lk->held = 1;
  lk->fd = fd;
  lk->mode = mode;
  lk->level = order ? opts->level : CKL_LEVEL_NONE;
  lk->order = order;
  lk->dev = st.st_dev;
  lk->ino = st.st_ino;
  lk->acquired_ns = since;
  lk->path = dup;
  lk->owner_pid = ckl__getpid();
  lk->fork_gen = fork_gen;
  /* An exclusive holder's record was written at the grant (range
   * acquire). It only names us; failing to write it (ENOSPC, EIO) leaves
   * contenders with "unknown holder", which is still "busy". */
  memcpy(lk->token, token, sizeof lk->token);
  ckl__observe_lock(lk, 1); /* a runtime task leases it from now on */
  return 0;
}

int ckl_path_lock_acquire(ckl_path_lock *lk, const char *path, ckl_lock_mode mode,
                          const ckl_lock_opts *opts) {
  return acquire(lk, path, mode, opts, 0, NULL, NULL);
}

int ckl__path_lock_acquire_existing(ckl_path_lock *lk, const char *path, ckl_lock_mode mode,
                                    const ckl_lock_opts *opts, int (*on_busy)(void *),
                                    void *on_busy_arg) {
  return acquire(lk, path, mode, opts, 1, on_busy, on_busy_arg);
}

int ckl_path_lock_release(ckl_path_lock *lk) {
  if (!lk || !lk->held) return 0;
  ckl__observe_lock(lk, 0); /* the lease stops verifying it before it goes */
  if (lk->owner_pid == ckl__getpid()) {
    /* Clear our record while still holding, so it can never be mistaken
     * for a later holder's. Cleared by overwriting it with zeros, not by
     * ftruncate(0): on ext4 (auto_da_alloc) a file truncated to 0 and
     * written again is flushed to disk on close, so truncating made every
     * exclusive acquire+release cycle a disk write, ~1 ms on a virtual
     * disk (docs/benchmarks.md, figure 2). An all-zero record is no record
     * (bad magic). */
    int rc = 0;
    if (lk->mode == CKL_LOCK_EXCLUSIVE && (rc = ckl__holder_record_clear(lk->fd, 0)) < 0)
      ckl__log_debug("lock file %s: clearing holder record: %s", lk->path, strerror(-rc));
    /* Unlock explicitly only when close() might not release: the OFD lock
     * goes with the last reference to the open file description, and a
     * fork child that neither exec'd nor exited still holds one (its copy
     * of the fd). The gate tells us that no fork() has copied our fd
     * table since before the open (the generation is unchanged) and that
     * none can copy it until our close() is done. Then our fd is the only
     * reference (path locks never dup it; lock.h forbids callers to) and
     * close() alone releases: one system call saved on every release. */
    if (ckl__fork_gate_enter(lk->fork_gen)) {
      ckl__close(lk->fd);
      ckl__fork_gate_leave();
    } else {
      rc = ckl__ofd_setlk(lk->fd, F_UNLCK, 0, 0, 0);
      if (rc < 0) ckl__log_warn("lock file %s: unlock: %s (close releases it)", lk->path,
                                strerror(-rc));
      ckl__close(lk->fd);
    }
  } else {
    ckl__close(lk->fd); /* inherited: the parent still holds it */
  }
  ckl_lock_order_pop(lk->order, lk->level);
  free(lk->path);
  reset(lk);
  return 0;
}

int ckl_path_lock_unlink(ckl_path_lock *lk) {
  if (!lk || !lk->held) return -EINVAL;
  /* Before the unlink: a lease verifying it afterwards would call it lost. */
  ckl__observe_lock(lk, 0);
  int rc = 0;
  if (lk->owner_pid != ckl__getpid() || lk->mode != CKL_LOCK_EXCLUSIVE) {
    /* Only the exclusive owner may destroy the file others wait on. */
    rc = -EINVAL;
  } else {
    /* While we hold it exclusively on the inode at the path, no one who
     * follows the protocol can replace that path (only holders unlink, and
     * a waiter creates a file only where none exists), so verify-then-unlink
     * cannot remove someone else's lock file. */
    rc = ckl__lockfile_verify(lk->fd, lk->path);
    if (rc == 0) rc = CKL_FAILPOINT("flock.before_unlink");
    if (rc == 0 && unlink(lk->path) != 0) {
      rc = -errno;
      ckl__log_error("lock file %s: unlink: %s", lk->path, strerror(errno));
    }
  }
  int rel = ckl_path_lock_release(lk);
  return rc < 0 ? rc : rel;
}

int ckl_path_lock_verify(const ckl_path_lock *lk) {
  if (!lk || !lk->held) return -EINVAL;
  return ckl__lockfile_verify(lk->fd, lk->path);
}

/* Why an fd opened read-only cannot take a write lock: the directory or
 * file refused writing. Tell the two apart like open() would have. */
static int readonly_reason(int fd) {
  struct statvfs vfs;
  if (fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) return -EROFS;
  return -EACCES;
}

int ckl_path_lock_convert(ckl_path_lock *lk, ckl_lock_mode mode, int64_t timeout_ms,
                          ckl_holder *busy_holder) {
  if (!lk || !lk->held || !valid_mode(mode) || timeout_ms < CKL_FOREVER) return -EINVAL;
  if (lk->owner_pid != ckl__getpid()) return -EINVAL;
  if (mode == lk->mode) return 0;
  if (mode == CKL_LOCK_SHARED) {
    /* Downgrading never waits: we are the only holder. Clear the record
     * first: a shared holder is named by the roster, not the file. */
    int rc = ckl__holder_record_clear(lk->fd, 0); /* zeros: see release */
    if (rc < 0)
      ckl__log_debug("lock file %s: clearing holder record: %s", lk->path, strerror(-rc));
    rc = ckl__ofd_setlk(lk->fd, F_RDLCK, 0, 0, 0);
    if (rc < 0) {
      ckl__log_error("lock file %s: downgrade: %s", lk->path, strerror(-rc));
      return rc;
    }
    lk->mode = CKL_LOCK_SHARED;
    return 0;
  }
  int fl = fcntl(lk->fd, F_GETFL);
  if (fl >= 0 && (fl & O_ACCMODE) == O_RDONLY) return readonly_reason(lk->fd);
  /* Upgrade in place: the kernel keeps our shared lock while the exclusive
   * request waits or fails, so failure leaves lk exactly as it was. Two
   * shared holders upgrading with CKL_FOREVER wait for each other forever
   * (OFD locks have no deadlock detection): give upgrades a deadline. */
  ckl__deadline d;
  ckl__deadline_init(&d, timeout_ms);
  ckl__reprobe rp = {0};
  for (;;) {
    int rc = ckl__ofd_setlk(lk->fd, F_WRLCK, 0, 0, timeout_ms == CKL_FOREVER);
    if (rc == 0) break;
    if (rc != -EAGAIN) {
      ckl__log_error("lock file %s: upgrade: %s", lk->path, strerror(-rc));
      return rc;
    }
    if (!ckl__deadline_backoff(&d)) {
      ckl__fill_busy_holder(lk->fd, lk->path, 0, 0, 1, 0, busy_holder);
      if (busy_holder && !busy_holder->known && ckl__reprobe_next(&rp)) continue; /* busy.c */
      return timeout_ms == CKL_TRY ? CKL_EBUSY : CKL_ETIMEDOUT;
    }
  }
  lk->mode = CKL_LOCK_EXCLUSIVE;
  int rc = ckl__holder_record_write(lk->fd, 0, lk->token, NULL, ckl__now_realtime_ns());
  if (rc < 0) ckl__log_warn("lock file %s: cannot write holder record: %s", lk->path,
                            strerror(-rc));
  return 0;
}

int ckl_path_lock_probe(const char *path, ckl_lock_mode mode, ckl_holder *holder) {
  if (!path || !*path || !valid_mode(mode)) return -EINVAL;
  if (holder) memset(holder, 0, sizeof *holder);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return -errno;
  struct stat st;
  int err = 0;
  if (fstat(fd, &st) != 0) err = errno;
  else if (!S_ISREG(st.st_mode)) err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
  if (err) {
    ckl__close(fd);
    return -err;
  }
  /* F_OFD_GETLK tests against every lock but those of this description,
   * which holds none: exactly "could someone lock it now". */
  struct flock fl = {.l_type = mode == CKL_LOCK_EXCLUSIVE ? F_WRLCK : F_RDLCK,
                     .l_whence = SEEK_SET};
  int rc = 0;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) rc = -errno;
  else if (fl.l_type != F_UNLCK) {
    rc = CKL_EBUSY;
    ckl__fill_busy_holder(fd, path, 0, 0, mode == CKL_LOCK_EXCLUSIVE, 0, holder);
  }
  ckl__close(fd);
  return rc;
}

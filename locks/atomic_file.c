/*
 * locks/atomic_file.c - replace a file atomically; remove the temp
 * entries that crashed writers left behind.
 *
 * How a temp entry says "my writer is alive"
 * ------------------------------------------
 * A temp file ".<name>.tmp-<16 hex>" carries an OFD write lock
 * (F_OFD_SETLK, F_WRLCK) for as long as its writer holds it: from begin
 * until commit or rollback closes the fd. OFD locks belong to the open
 * file description, so they vanish exactly when the last fd to it closes,
 * which the kernel does for a process that crashes or is killed. They do
 * not vanish when some other fd of the same process on the same file is
 * closed (the classic POSIX-lock trap), and two threads of one process
 * exclude each other like two processes do.
 *
 * ckl_atomic_cleanup() therefore needs no age heuristic: it opens each
 * temp file and asks for a conflicting lock without waiting. Refused means
 * a writer holds it: leave it. Granted means no writer holds it: remove it,
 * still holding the lock. It uses a read lock (F_RDLCK): that conflicts
 * with the writer's write lock just as well, and needs only read
 * permission, so temp files of read-only modes (0444) can be cleaned too.
 *
 * The one window: begin creates the file, then locks it. A cleanup that
 * runs in between gets its lock and unlinks the file. The rule that closes
 * it is "lock, then verify" on both sides:
 *   - cleanup unlinks only while it holds the lock, and only if the name
 *     still leads to the inode it locked;
 *   - begin, once it holds its lock, checks that the file is still linked
 *     (st_nlink > 0); if its lock is refused (a cleanup holds it) or the
 *     file is unlinked, begin drops it and starts over with a fresh name.
 * So a writer never writes into a file a cleanup has removed or will
 * remove: whoever locks first wins, and the loser sees it.
 *
 * Temp directories (atomic_dir.c) use the same protocol with flock() on
 * the directory itself: a directory cannot be opened for writing, so it
 * cannot take an F_WRLCK, but flock(LOCK_EX) needs no write access and is
 * also tied to the open file description.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunklock/atomic_file.h"
#include "common/internal.h"
#include "locks/atomic_file.h"

#define RAND_HEX_LEN 16
/* Bytes of the target's name kept in a temp name: ".", the kept part, the
 * tag (at most 8) and the hex must fit in NAME_MAX (255). */
#define BASE_KEEP 200
/* Deeper trees than this are refused by the remover (-ELOOP): each level
 * holds two fds, and no chunklock entry is anywhere near as deep. */
#define MAX_DEPTH 64

/* ---- names ---------------------------------------------------------------- */

int ckl__atomic_split(const char *target, char **dir, const char **base) {
  if (!target || !*target) return -EINVAL;
  const char *slash = strrchr(target, '/');
  const char *b = slash ? slash + 1 : target;
  if (!*b || strcmp(b, ".") == 0 || strcmp(b, "..") == 0) return -EINVAL;
  char *d;
  if (!slash) d = strdup(".");
  else if (slash == target) d = strdup("/");
  else d = strndup(target, (size_t)(slash - target));
  if (!d) return -ENOMEM;
  *dir = d;
  *base = b;
  return 0;
}

char *ckl__atomic_temp_name(const char *dir, const char *base, const char *tag) {
  size_t keep = strlen(base);
  if (keep > BASE_KEEP) keep = BASE_KEEP;
  char *p = NULL;
  const char *sep = dir[strlen(dir) - 1] == '/' ? "" : "/";
  if (asprintf(&p, "%s%s.%.*s%s%016llx", dir, sep, (int)keep, base, tag,
               (unsigned long long)ckl__random_u64()) < 0)
    return NULL;
  return p;
}

const char *ckl__atomic_basename(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static bool is_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

/* 1 if name is ".<something><tag><16 hex>", as ckl__atomic_temp_name makes
 * them. Stricter than ".*<tag>*" on purpose: cleanup must not delete a
 * user's ".notes.tmp-old". */
static bool is_temp_name(const char *name, const char *tag) {
  size_t n = strlen(name), t = strlen(tag);
  if (n < 2 + t + RAND_HEX_LEN || name[0] != '.') return false;
  const char *hex = name + n - RAND_HEX_LEN;
  return is_hex(hex, RAND_HEX_LEN) && memcmp(hex - t, tag, t) == 0;
}

/* ---- small fs helpers ------------------------------------------------------ */

int ckl__atomic_same_entry(int dirfd, const char *name, int fd) {
  struct stat a, b;
  if (fstat(fd, &a) != 0) return -errno;
  if (fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -errno;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_nlink > 0;
}

int ckl__atomic_fsync_dir(int fd) {
  if (fsync(fd) == 0) return 0;
  /* Some filesystems cannot sync a directory and say EINVAL; nothing more
   * durable can be had there, so it is not an error of this operation. */
  return errno == EINVAL ? 0 : -errno;
}

/* A directory we remove must let us unlink inside it; one made with a
 * mode like 0555 would not. We own the tree being removed (it is ours or
 * abandoned), so widening the owner bits first is harmless. */
static void owner_rwx(int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU)
    (void)fchmod(fd, (st.st_mode & 07777) | S_IRWXU);
}

static int rm_contents(int dirfd, int depth);

static int rm_entry(int dirfd, const char *name, int depth) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -errno;
  if (S_ISDIR(st.st_mode)) {
    if (depth >= MAX_DEPTH) return -ELOOP;
    int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) return errno == ENOENT ? 0 : -errno;
    owner_rwx(sub);
    int rc = rm_contents(sub, depth + 1);
    ckl__close(sub);
    if (rc < 0) return rc;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) return -errno;
    return 0;
  }
  if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) return -errno;
  return 0;
}

static int rm_contents(int dirfd, int depth) {
  /* fdopendir takes the fd it is given; a dup shares the directory
   * position with dirfd, hence the rewind. */
  int dup_fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return -errno;
  DIR *d = fdopendir(dup_fd);
  if (!d) {
    int rc = -errno;
    ckl__close(dup_fd);
    return rc;
  }
  rewinddir(d);
  int rc = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno) rc = -errno;
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    rc = rm_entry(dirfd, e->d_name, depth);
    if (rc < 0) break;
  }
  closedir(d);
  return rc;
}

int ckl__atomic_rm_contents(int dirfd) {
  owner_rwx(dirfd);
  return rm_contents(dirfd, 0);
}

int ckl__atomic_rmtree_at(int dirfd, const char *name) { return rm_entry(dirfd, name, 0); }

/* ---- one file ------------------------------------------------------------ */

static void af_reset(ckl_atomic_file *af) {
  free(af->tmp_path);
  free(af->target_path);
  af->tmp_path = NULL;
  af->target_path = NULL;
  af->fd = -1;
  af->active = 0;
}

/* Lock a temp file we just created. 0: ours. 1: a cleanup got to it
 * first (it holds the lock or has already unlinked the file): pick another
 * name. -errno: locking is not possible here. */
static int lock_new_file(int fd, const char *path) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    if (errno == EAGAIN || errno == EACCES) return 1;
    int rc = -errno;
    ckl__log_error("atomic replace: cannot lock temp file %s: %s", path, ckl_strerror(rc));
    return rc;
  }
  /* Lock, then verify: see the essay at the top of this file. */
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  return st.st_nlink > 0 ? 0 : 1;
}

int ckl_atomic_begin(ckl_atomic_file *af, const char *target, mode_t mode, unsigned flags) {
  if (!af || !target || af->active) return -EINVAL;
  if ((flags & ~CKL_ATOMIC_NOSYNC) != 0 || (mode & ~(mode_t)07777) != 0) return -EINVAL;
  char *dir = NULL;
  const char *base = NULL;
  int rc = ckl__atomic_split(target, &dir, &base);
  if (rc < 0) return rc;
  char *target_copy = strdup(target);
  if (!target_copy) {
    free(dir);
    return -ENOMEM;
  }
  char *tmp = NULL;
  int fd = -1;
  rc = -EEXIST;
  for (int attempt = 0; attempt < CKL__TMP_ATTEMPTS; attempt++) {
    tmp = ckl__atomic_temp_name(dir, base, CKL__TMP_FILE_TAG);
    if (!tmp) {
      rc = -ENOMEM;
      break;
    }
    /* 0600 at first: the requested mode is applied with fchmod below, so
     * the umask cannot change it. */
    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      rc = -errno;
      if (rc == -EEXIST) {
        free(tmp);
        tmp = NULL;
        continue;
      }
      ckl__log_error("atomic replace of %s: cannot create temp file %s: %s", target, tmp,
                     ckl_strerror(rc));
      break;
    }
    rc = CKL_FAILPOINT("atomic.before_lock");
    if (rc == 0) rc = lock_new_file(fd, tmp);
    if (rc == 1) {
      /* A cleanup owns this file now and removes it; leave it alone. */
      ckl__log_debug("atomic replace of %s: temp %s taken by a cleanup, retrying", target, tmp);
      ckl__close(fd);
      fd = -1;
      free(tmp);
      tmp = NULL;
      rc = -EEXIST;
      continue;
    }
    if (rc == 0 && fchmod(fd, mode) != 0) {
      rc = -errno;
      ckl__log_error("atomic replace of %s: fchmod %s: %s", target, tmp, ckl_strerror(rc));
    }
    if (rc == 0) rc = CKL_FAILPOINT("atomic.after_create");
    if (rc < 0) {
      if (unlink(tmp) != 0 && errno != ENOENT)
        ckl__log_warn("atomic replace of %s: cannot remove temp %s: %s", target, tmp,
                      ckl_strerror(-errno));
      ckl__close(fd);
      fd = -1;
    }
    break;
  }
  free(dir);
  if (rc < 0) {
    free(tmp);
    free(target_copy);
    return rc;
  }
  af->fd = fd;
  af->flags = flags;
  af->tmp_path = tmp;
  af->target_path = target_copy;
  af->active = 1;
  return 0;
}

int ckl_atomic_fd(const ckl_atomic_file *af) { return af && af->active ? af->fd : -1; }

int ckl_atomic_write(ckl_atomic_file *af, const void *buf, size_t len) {
  if (!af || !af->active) return -EINVAL;
  int rc = !buf && len > 0 ? -EINVAL : ckl__write_all(af->fd, buf, len);
  if (rc == 0) rc = CKL_FAILPOINT("atomic.after_write");
  if (rc < 0) {
    ckl__log_error("atomic replace of %s: write %s: %s", af->target_path, af->tmp_path,
                   ckl_strerror(rc));
    ckl_atomic_rollback(af);
  }
  return rc;
}

int ckl_atomic_commit(ckl_atomic_file *af) {
  if (!af || !af->active) return -EINVAL;
  const bool sync = (af->flags & CKL_ATOMIC_NOSYNC) == 0;
  const char *step = "fsync";
  int rc = 0, dfd = -1;
  char *dir = NULL;
  const char *base = NULL;
  /* After an fsync error the kernel may have dropped the dirty pages and
   * a retry would "succeed" on lost data: never rename such a file. */
  if (sync) {
    rc = CKL_FAILPOINT("atomic.before_fsync"); /* error(EIO): a failed fsync */
    if (rc == 0 && fsync(af->fd) != 0) rc = -errno;
  }
  if (rc == 0) {
    step = "open directory";
    rc = ckl__atomic_split(af->target_path, &dir, &base);
  }
  if (rc == 0) {
    /* The fd serves the rename and the directory fsync, so the directory
     * made durable is the one the rename happened in. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) rc = -errno;
  }
  if (rc == 0) {
    step = "rename";
    rc = CKL_FAILPOINT("atomic.before_rename");
  }
  if (rc == 0 && renameat(dfd, ckl__atomic_basename(af->tmp_path), dfd, base) != 0) rc = -errno;
  if (rc < 0) {
    ckl__log_error("atomic replace of %s: %s %s: %s", af->target_path, step, af->tmp_path,
                   ckl_strerror(rc));
    ckl__close(dfd);
    free(dir);
    ckl_atomic_rollback(af);
    return rc;
  }
  /* The target is the new file from here on; the temp name is gone. An
   * error below only means the rename may not survive a power loss. */
  rc = CKL_FAILPOINT("atomic.after_rename");
  if (rc == 0 && sync) rc = ckl__atomic_fsync_dir(dfd);
  if (rc < 0)
    ckl__log_error("atomic replace of %s: fsync directory %s: %s", af->target_path, dir,
                   ckl_strerror(rc));
  ckl__close(dfd);
  free(dir);
  /* Closing drops the OFD lock. The name it protected is already gone, so
   * no cleanup can mistake the file for abandoned. */
  if (close(af->fd) != 0 && errno != EINTR)
    ckl__log_warn("atomic replace of %s: close: %s", af->target_path, ckl_strerror(-errno));
  af->fd = -1;
  af_reset(af);
  return rc;
}

void ckl_atomic_rollback(ckl_atomic_file *af) {
  if (!af || !af->active) return;
  /* Unlink while still holding the lock: no cleanup can be removing this
   * name at the same time, and no one else ever creates it. */
  if (unlink(af->tmp_path) != 0 && errno != ENOENT)
    ckl__log_warn("atomic replace of %s: cannot remove temp %s: %s (cleanup will)",
                  af->target_path, af->tmp_path, ckl_strerror(-errno));
  ckl__close(af->fd);
  af_reset(af);
}

int ckl_atomic_replace(const char *target, const void *buf, size_t len, mode_t mode,
                       unsigned flags) {
  ckl_atomic_file af = {0};
  int rc = ckl_atomic_begin(&af, target, mode, flags);
  if (rc < 0) return rc;
  rc = ckl_atomic_write(&af, buf, len);
  if (rc == 0) rc = ckl_atomic_commit(&af);
  ckl_atomic_rollback(&af);
  return rc;
}

/* ---- cleanup ---------------------------------------------------------------- */

/* 1 to go on removing, or the code the failpoint injects. */
static int cleanup_failpoint(void) {
  int rc = CKL_FAILPOINT("atomic.cleanup_locked");
  return rc < 0 ? rc : 1;
}

/* 1 if the temp file `name` was abandoned and is now removed, 0 if it is
 * live (or gone, or not ours to judge), -errno on error. */
static int clean_file(int dfd, const char *name) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISREG(st.st_mode)) return 0; /* never one of ours */
  /* O_NONBLOCK: should the name turn into a FIFO meanwhile, do not hang. */
  short type = F_RDLCK;
  int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == EACCES) { /* a write-only mode such as 0200 */
    type = F_WRLCK;
    fd = openat(dfd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  }
  if (fd < 0) return errno == ENOENT ? 0 : -errno;
  int rc;
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    /* Refused: its writer is alive (or another cleanup is removing it). */
    rc = errno == EAGAIN || errno == EACCES ? 0 : -errno;
  } else {
    /* Held: no writer has it, and a writer that locks after us will see
     * the file unlinked and move on. Verify we locked what the name is. */
    rc = ckl__atomic_same_entry(dfd, name, fd);
    if (rc == 1) rc = cleanup_failpoint();
    if (rc == 1 && unlinkat(dfd, name, 0) != 0) rc = errno == ENOENT ? 0 : -errno;
  }
  ckl__close(fd);
  return rc;
}

/* As clean_file, for ".<name>.tmpdir-<hex>" entries. */
static int clean_dir(int dfd, const char *name) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISDIR(st.st_mode)) {
    /* A live temp dir is always a directory. Anything else under this
     * name is what a directory commit exchanged out of the target (a
     * symlink or file that was there), which nobody needs any more. */
    if (unlinkat(dfd, name, 0) != 0) return errno == ENOENT ? 0 : -errno;
    return 1;
  }
  int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -errno;
  int rc;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    rc = errno == EWOULDBLOCK ? 0 : -errno;
  } else {
    rc = ckl__atomic_same_entry(dfd, name, fd);
    if (rc == 1) rc = cleanup_failpoint();
    if (rc == 1) {
      int r = ckl__atomic_rm_contents(fd);
      if (r < 0) rc = r;
      else if (unlinkat(dfd, name, AT_REMOVEDIR) != 0) rc = errno == ENOENT ? 0 : -errno;
    }
  }
  ckl__close(fd);
  return rc;
}

int ckl_atomic_cleanup(const char *dir) {
  if (!dir || !*dir) return -EINVAL;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    int rc = -errno;
    ckl__log_error("atomic cleanup: cannot open directory %s: %s", dir, ckl_strerror(rc));
    return rc;
  }
  int list_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  DIR *d = list_fd >= 0 ? fdopendir(list_fd) : NULL;
  if (!d) {
    int rc = -errno;
    ckl__close(list_fd);
    ckl__close(dfd);
    return rc;
  }
  int removed = 0, rc = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno) rc = -errno;
      break;
    }
    int r;
    if (is_temp_name(e->d_name, CKL__TMP_FILE_TAG)) r = clean_file(dfd, e->d_name);
    else if (is_temp_name(e->d_name, CKL__TMP_DIR_TAG)) r = clean_dir(dfd, e->d_name);
    else continue;
    if (r > 0) {
      removed++;
      ckl__log_info("atomic cleanup: removed abandoned %s/%s", dir, e->d_name);
    } else if (r < 0) {
      /* One entry we cannot judge or remove (say, a mode without owner
       * read) must not stop the others from being cleaned. */
      ckl__log_warn("atomic cleanup: %s/%s: %s", dir, e->d_name, ckl_strerror(r));
    }
  }
  closedir(d);
  ckl__close(dfd);
  if (rc < 0) {
    ckl__log_error("atomic cleanup: reading %s: %s", dir, ckl_strerror(rc));
    return rc;
  }
  return removed;
}

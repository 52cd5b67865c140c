/*
 * datastore/ops_common.c - what the operations share: their state
 * handles, the holder-naming hook, digest sets, file checksums.
 *
 * Naming shared holders
 * ---------------------
 * A CKL_EBUSY should say who is in the way. An exclusive holder writes a
 * record into its lock file, but a shared holder (a reader, a verify, a
 * backup's base) cannot: several share the file. Those holders register in
 * the roster with target = the snapshot name, and the lock layer asks
 * through its hook ckl__holder_lookup(lock_path, ...). The hook only knows
 * a path, so this file keeps a registry of the lock roots of the stores
 * that have operations running in this process, each with a state handle
 * of its own. A snapshot lock path "<root>/<type>/<id>/<time>.lck" maps to
 * the roster target "<type>/<id>/<time>". The process locker byte of
 * STORE/.lock held shared maps to the oldest writer in the roster (the
 * backups a strict GC or an exclusive freeze is refused by; a backup
 * registers after its locks, so in that short window it stays unnamed).
 * Exclusive holders, paths of other stores, group and manifest locks are
 * left to the lock file's record (the hook says 0).
 *
 * The registry is populated by the operation that meets the busy lock
 * (ckl__ops_state_open runs before any lock is taken), so the lookup
 * works across processes too: the roster is shared, the registry only
 * says which roster a path belongs to.
 *
 * Locking: one mutex guards the registry; the hook holds it while it
 * reads the roster so that the entry's handle cannot be closed under it.
 * The roster read is an LMDB read transaction; it takes no chunklock lock
 * and nothing here is ever called inside a state transaction, so the
 * mutex is always the innermost lock. Fork: pthread_atfork takes the mutex
 * around fork(), so a child never inherits it locked; entries made by the
 * parent carry its pid and are ignored (never used, never closed) in the
 * child, whose inherited state handles would answer -ECHILD anyway.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chunklock/manifest.h"
#include "common/internal.h"
#include "datastore/file_read.h"
#include "datastore/ops_internal.h"
#include "locks/locks_internal.h"

typedef struct root_entry {
  struct root_entry *next;
  char *root;
  char *lock_path; /* STORE/.lock */
  size_t len;
  ckl__state *state;
  int refs;
  pid_t pid;
} root_entry;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static root_entry *reg_head;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&reg_mu); }
static void atfork_release(void) { pthread_mutex_unlock(&reg_mu); }

/* The roster target for a snapshot lock path of a registered store, or
 * false. */
static bool target_of(const root_entry *e, const char *path, char out[CKL_SNAP_NAME_MAX + 1]) {
  if (strncmp(path, e->root, e->len) != 0 || path[e->len] != '/') return false;
  const char *rel = path + e->len + 1;
  size_t n = strlen(rel);
  if (n < 5 || strcmp(rel + n - 4, ".lck") != 0 || n - 4 > CKL_SNAP_NAME_MAX) return false;
  ckl_snapshot_name sn;
  /* "<time>.manifest.lck" and group locks "<type>/<id>.lck" do not parse. */
  if (ckl_snapshot_name_parsen(rel, n - 4, &sn) < 0) return false;
  memcpy(out, rel, n - 4);
  out[n - 4] = '\0';
  return true;
}

static int lookup_hook(const char *lock_path, off_t start, int exclusive_holder, ckl_holder *out) {
  /* An exclusive holder named itself in the lock file, which is exact; a
   * roster lookup could name somebody merely registered for the target
   * (a verify that registers before it tries the lock). */
  if (!lock_path || exclusive_holder) return 0;
  int found = 0;
  pid_t me = ckl__getpid();
  pthread_mutex_lock(&reg_mu);
  for (root_entry *e = reg_head; e; e = e->next) {
    char target[CKL_SNAP_NAME_MAX + 1];
    bool proclock = start == 0 && strcmp(lock_path, e->lock_path) == 0;
    if (e->pid != me || (!proclock && !target_of(e, lock_path, target))) continue;
    ckl_holder h;
    memset(&h, 0, sizeof h);
    int rc = proclock ? ckl__state_holder_writer(e->state, &h)
                      : ckl__state_holder_for_target(e->state, target, &h);
    if (rc == 0 && h.known) {
      *out = h;
      found = 1;
    }
    break;
  }
  pthread_mutex_unlock(&reg_mu);
  return found;
}

static void reg_init(void) {
  pthread_atfork(atfork_prepare, atfork_release, atfork_release);
  atomic_store(&ckl__holder_lookup, lookup_hook);
}

/* Add a reference to the store's registry entry, creating it (with its
 * own state handle) on first use. Failure only costs names in busy
 * messages, so it is logged at debug level and not returned. */
static void reg_add(ckl_store *st) {
  pthread_once(&reg_once, reg_init);
  pid_t me = ckl__getpid();
  pthread_mutex_lock(&reg_mu);
  root_entry *e = reg_head;
  while (e && (e->pid != me || strcmp(e->root, st->locks_root) != 0)) e = e->next;
  if (e) {
    e->refs++;
  } else if ((e = calloc(1, sizeof *e)) && (e->root = strdup(st->locks_root)) &&
             (e->lock_path = strdup(st->lock_path))) {
    e->len = strlen(e->root);
    e->pid = me;
    e->refs = 1;
    int rc = ckl__state_open(st->path, &e->state);
    if (rc == 0) {
      e->next = reg_head;
      reg_head = e;
    } else {
      ckl__log_debug("%s: holders of shared locks will be unnamed: %s", st->path, ckl_strerror(rc));
      free(e->lock_path);
      free(e->root);
      free(e);
    }
  } else if (e) {
    free(e->root);
    free(e);
  }
  pthread_mutex_unlock(&reg_mu);
}

static void reg_drop(ckl_store *st) {
  pid_t me = ckl__getpid();
  root_entry *dead = NULL;
  pthread_mutex_lock(&reg_mu);
  for (root_entry **pp = &reg_head; *pp; pp = &(*pp)->next) {
    root_entry *e = *pp;
    if (e->pid != me || strcmp(e->root, st->locks_root) != 0) continue;
    if (--e->refs == 0) {
      *pp = e->next;
      dead = e;
    }
    break;
  }
  pthread_mutex_unlock(&reg_mu);
  if (dead) {
    ckl__state_close(dead->state);
    free(dead->lock_path);
    free(dead->root);
    free(dead);
  }
}

int ckl__ops_state_open(ckl_store *st, ckl__state **out) {
  int rc = ckl__state_open(st->path, out);
  if (rc < 0) {
    ckl__log_error("%s/.state: cannot open the coordination state: %s", st->path, ckl_strerror(rc));
    return rc;
  }
  reg_add(st);
  return 0;
}

void ckl__ops_state_close(ckl_store *st, ckl__state *state) {
  if (!state) return;
  reg_drop(st);
  ckl__state_close(state);
}

int ckl__ops_register(ckl_store *st, ckl__state *state, const char *operation, const char *target,
                      unsigned flags, char token[CKL_TOKEN_HEX_LEN + 1]) {
  ckl__roster_reg reg = {.operation = operation, .target = target, .flags = flags};
  int rc = ckl__state_register(state, &reg, token);
  if (rc < 0) {
    token[0] = '\0';
    ckl__log_error("%s: %s %s: cannot register in the roster: %s", st->path, operation, target,
                   ckl_strerror(rc));
  }
  return rc;
}

int ckl__ops_deregister(ckl__state *state, char token[CKL_TOKEN_HEX_LEN + 1]) {
  if (!token[0]) return 0;
  int rc = ckl__state_deregister(state, token);
  token[0] = '\0';
  return rc;
}

/* ---- files ------------------------------------------------------------------ */

/* Read whole, with pread, not mmap (datastore/index.c says why: SIGBUS
 * against -EIO, an outside truncation). Not streamed: the digest module
 * offers no incremental SHA-256, and these are index files, which
 * ckl_index_openat reads whole as well. */
int ckl__file_sha256_at(int dirfd, const char *name, uint64_t *size, ckl_digest *out) {
  char where_buf[PATH_MAX];
#define WHERE ckl__display_path(dirfd, name, where_buf, sizeof where_buf)
  int fd CKL__CLEANUP_CLOSE = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    /* Missing or a symlink: answers the callers report in their terms. */
    if (rc != -ENOENT && rc != -ELOOP) ckl__log_error("%s: open: %s", WHERE, strerror(-rc));
    return rc;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int rc = -errno;
    ckl__log_error("%s: stat: %s", WHERE, strerror(-rc));
    return rc;
  }
  if (!S_ISREG(sb.st_mode)) return -EINVAL;
  if ((uint64_t)sb.st_size > SIZE_MAX) {
    ckl__log_error("%s: %s", WHERE, strerror(ENOMEM));
    return -ENOMEM;
  }
  size_t len = (size_t)sb.st_size;
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    ckl__log_error("%s: %s", WHERE, strerror(ENOMEM));
    return -ENOMEM;
  }
  const char *why = "";
  int rc;
  /* The same failpoint as the index open's read: a failed read of an
   * index file, whichever reader meets it first. */
  if ((rc = CKL_FAILPOINT("index.read.before_pread")) == 0 &&
      (rc = ckl__pread_exact(fd, buf, len, &why)) == CKL_ECORRUPT)
    ckl__log_error("%s: %s: %s", WHERE, ckl_strerror(rc), why);
  else if (rc < 0)
    ckl__log_error("%s: read: %s", WHERE, ckl_strerror(rc));
  if (rc == 0) {
    ckl_digest_compute(buf, len, out);
    *size = len;
  }
  free(buf);
  return rc;
#undef WHERE
}

static int mkdir_at(int dirfd, const char *name) {
  if (mkdirat(dirfd, name, 0755) == 0 || errno == EEXIST) return 0;
  return -errno;
}

int ckl__ops_make_group_dir(ckl_store *st, const ckl_group_name *g) {
  int rc = mkdir_at(st->dirfd, g->type);
  if (rc < 0) return rc;
  int tfd = openat(st->dirfd, g->type, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (tfd < 0) return -errno;
  rc = mkdir_at(tfd, g->id);
  ckl__close(tfd);
  return rc;
}

bool ckl__ops_has_manifest(ckl_store *st, const ckl_snapshot_name *n) {
  char rel[CKL_SNAP_NAME_MAX + sizeof CKL_MANIFEST_NAME + 2];
  if (ckl__pathf(rel, sizeof rel, "%s/%s/%s/" CKL_MANIFEST_NAME, n->type, n->id, n->time) < 0)
    return false;
  struct stat sb;
  return fstatat(st->dirfd, rel, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode);
}

void ckl__ops_snap_str(const ckl_snapshot_name *n, char buf[CKL_SNAP_NAME_MAX + 1]) {
  if (ckl_snapshot_name_format(n, buf, CKL_SNAP_NAME_MAX + 1) < 0) buf[0] = '\0';
}

/* ---- directory listings -------------------------------------------------- */

int ckl__dir_names(int dfd, bool (*want)(int dfd, const char *name), char ***out, size_t *n) {
  *out = NULL;
  *n = 0;
  int fd = dup(dfd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    int rc = -errno;
    ckl__close(fd);
    return rc;
  }
  size_t cap = 0;
  int rc = 0;
  struct dirent *e;
  while ((errno = 0, e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (want && !want(dfd, e->d_name)) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 8;
      char **v = realloc(*out, cap * sizeof *v);
      if (!v) {
        rc = -ENOMEM;
        break;
      }
      *out = v;
    }
    if (!((*out)[*n] = strdup(e->d_name))) {
      rc = -ENOMEM;
      break;
    }
    (*n)++;
  }
  if (rc == 0 && errno) rc = -errno;
  rewinddir(d); /* the fd is a dup: it shares its offset with dfd */
  closedir(d);
  return rc;
}

void ckl__dir_names_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

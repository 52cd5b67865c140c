/*
 * datastore/state.c - the LMDB environment behind STORE/.state/: the
 * process-wide registry, opening with recovery of damaged or stale files,
 * and the transaction runner every state operation goes through.
 *
 * Why these LMDB flags (docs/state.md has the long version):
 *   MDB_NOTLS   our calls may run on any thread (libuv work threads), and a
 *               read transaction must not be pinned to a thread-local slot.
 *   MDB_NOSYNC  nothing is fsync'ed. Other processes see our commits at
 *               once through the shared page cache that LMDB's mmap reads;
 *               fsync only matters for a machine crash, and after one every
 *               holder the state describes is dead. The price, a file that
 *               may be inconsistent after a crash, is paid by the boot
 *               stamp: an environment written during another boot is
 *               discarded unread.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "datastore/proc_identity.h"
#include "datastore/state_int.h"

#define SCHEMA_VERSION 1u

/* ---- the registry ------------------------------------------------------
 * Invariant: at most one live (not dead) ckl__env per .state directory
 * (dev, ino) is linked on reg_head, so one process never maps one set of
 * LMDB files through two environments it might close independently.
 * Entries leave the list when dead or when their last reference goes. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static ckl__env *reg_head;
/* Dead environments are never closed, only parked here (reachable, so
 * leak checkers stay quiet). Closing one would close its lock.mdb fd, and
 * POSIX locks belong to (process, inode): if the new environment uses the
 * same lock.mdb inode, this process would silently lose its lock on it.
 * Replacement is rare, so the parked memory is bounded in practice. */
static ckl__env *graveyard;
static _Atomic uint64_t fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&reg_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&reg_mu); }
static void atfork_child(void) {
  /* LMDB: an environment must not be used across fork(). The child forgets
   * the parent's environments without closing them (closing would close
   * fds the parent's locks may hang on) and starts an empty registry;
   * handles it inherited refuse with -ECHILD. */
  while (reg_head) { /* park them, reachable, never to be used */
    ckl__env *e = reg_head;
    reg_head = e->next;
    e->next = graveyard;
    graveyard = e;
  }
  atomic_fetch_add(&fork_gen, 1);
  pthread_mutex_unlock(&reg_mu);
}
static void atfork_init(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

static void reg_unlink_locked(ckl__env *e) {
  if (!e->linked) return;
  for (ckl__env **pp = &reg_head; *pp; pp = &(*pp)->next) {
    if (*pp == e) {
      *pp = e->next;
      break;
    }
  }
  e->linked = 0;
}

static void env_free(ckl__env *e) {
  pthread_rwlock_destroy(&e->rw);
  free(e->dir);
  free(e->data_path);
  free(e);
}

static void env_unref_locked(ckl__env *e) {
  if (--e->refs > 0) return;
  reg_unlink_locked(e);
  if (atomic_load(&e->dead)) {
    e->next = graveyard;
    graveyard = e;
    return;
  }
  if (e->env) mdb_env_close(e->env);
  env_free(e);
}

static void env_unref(ckl__env *e) {
  pthread_mutex_lock(&reg_mu);
  env_unref_locked(e);
  pthread_mutex_unlock(&reg_mu);
}

/* Lock-free on purpose: it runs inside transactions, possibly holding
 * LMDB's writer mutex, and reg_mu may be held by a thread that waits (via
 * the open lock) for another process that waits for that writer mutex.
 * registry_get unlinks dead entries it meets. */
static void env_mark_dead(ckl__env *e) { atomic_store(&e->dead, 1); }

/* MDB_BAD_TXN belongs here: every transaction of ours is fresh and ends
 * within one call, and every LMDB return is checked, so a transaction can
 * only go bad when LMDB hit damage inside a call that does not report it
 * (mdb_cursor_open loads a database's root and swallows MDB_CORRUPTED,
 * leaving the transaction poisoned for the next call). */
int ckl__mdb_is_damage(int rc) {
  return rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
         rc == MDB_VERSION_MISMATCH || rc == MDB_INCOMPATIBLE || rc == MDB_PANIC ||
         rc == MDB_BAD_TXN;
}

int ckl__mdb_err(ckl__txn *t, int rc, const char *what) {
  const char *path = t && t->e ? t->e->data_path : "coordination state";
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return -ENOENT;
  if (rc == MDB_MAP_FULL) return CKL__STATE_MAP_FULL;
  if (ckl__mdb_is_damage(rc)) {
    ckl__log_error("coordination state %s: %s: %s; it will be recreated on next use", path,
                   what, mdb_strerror(rc));
    if (t && t->e) env_mark_dead(t->e);
    return CKL_ECORRUPT;
  }
  if (rc > 0) {
    ckl__log_error("coordination state %s: %s: %s", path, what, strerror(rc));
    return -rc;
  }
  ckl__log_error("coordination state %s: %s: %s", path, what, mdb_strerror(rc));
  switch (rc) {
    case MDB_TXN_FULL: return -ENOSPC;
    case MDB_READERS_FULL:
    case MDB_MAP_RESIZED: return -EAGAIN;
    case MDB_BAD_VALSIZE: return -ENAMETOOLONG;
    default: return -EIO;
  }
}

int ckl__token_valid(const char *s, size_t len) {
  if (!s || len != CKL_TOKEN_HEX_LEN) return 0;
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

/* ---- opening ------------------------------------------------------------ */

/* Create STORE/.state (0700) if needed; refuse a symlink; its identity. */
static int ensure_dir(const char *dir, dev_t *dev, ino_t *ino) {
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    int e = -errno;
    ckl__log_error("coordination state %s: cannot create the directory: %s", dir, strerror(-e));
    return e;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int e = errno == ENOTDIR ? -ENOTDIR : -errno;
    struct stat lst;
    if (lstat(dir, &lst) == 0 && S_ISLNK(lst.st_mode)) e = -ELOOP;
    ckl__log_error("coordination state %s: cannot open the directory: %s", dir, strerror(-e));
    return e;
  }
  struct stat st;
  int rc = fstat(fd, &st) == 0 ? 0 : -errno;
  ckl__close(fd);
  if (rc == 0) {
    *dev = st.st_dev;
    *ino = st.st_ino;
  }
  return rc;
}

/* The boot stamp: STORE/.state/boot holds the boot id of the boot that
 * last (re)created the environment. Returns 1 when it matches ours. */
static int stamp_matches(const char *dir) {
  char path[4200], buf[64];
  /* Without a boot id there is no telling boots apart: never discard. */
  if (ckl__host_identity()->boot_id[0] == '\0') return 1;
  if (ckl__pathf(path, sizeof path, "%s/boot", dir) < 0) return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  ckl__close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  buf[strcspn(buf, "\n")] = '\0';
  const char *boot = ckl__host_identity()->boot_id;
  return strcmp(buf, boot) == 0;
}

static int stamp_write(const char *dir) {
  char path[4200], tmp[4200];
  if (ckl__pathf(path, sizeof path, "%s/boot", dir) < 0 ||
      ckl__pathf(tmp, sizeof tmp, "%s/boot.tmp.%d", dir, (int)ckl__getpid()) < 0)
    return -ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -errno;
  char buf[64];
  int len = snprintf(buf, sizeof buf, "%s\n", ckl__host_identity()->boot_id);
  int rc = write(fd, buf, (size_t)len) == len ? 0 : -EIO;
  ckl__close(fd);
  /* No fsync: the stamp is as disposable as what it stamps; a stamp lost
   * in a crash only causes a discard that the crash justified anyway. */
  if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
  if (rc < 0) {
    unlink(tmp);
    ckl__log_warn("coordination state %s: cannot write the boot stamp: %s", path, strerror(-rc));
  }
  return rc;
}

static int unlink_env_files(const char *dir) {
  static const char *const names[] = {"data.mdb", "lock.mdb"};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(names); i++) {
    char p[4200];
    if (ckl__pathf(p, sizeof p, "%s/%s", dir, names[i]) < 0) return -ENAMETOOLONG;
    if (unlink(p) != 0 && errno != ENOENT) return -errno;
  }
  return 0;
}

/* Move both files aside (both: a fresh data.mdb must not share the old
 * lock.mdb's reader table and writer mutex with processes still mapping
 * the old data.mdb). One generation of evidence is kept. */
static int move_aside(const char *dir) {
  static const char *const names[] = {"data.mdb", "lock.mdb"};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(names); i++) {
    char from[4200], to[4200];
    if (ckl__pathf(from, sizeof from, "%s/%s", dir, names[i]) < 0 ||
        ckl__pathf(to, sizeof to, "%s/%s.damaged", dir, names[i]) < 0)
      return -ENAMETOOLONG;
    if (rename(from, to) != 0 && errno != ENOENT) {
      int e = -errno;
      ckl__log_error("coordination state %s: cannot move it aside to %s: %s", from, to,
                     strerror(-e));
      return e;
    }
  }
  return 0;
}

/* Visit every record of a database: LMDB only checks the pages it reads,
 * so this is how damage below the root is found at open instead of in the
 * middle of a GC. The state is small; this is cheap. */
static int walk_dbi(MDB_txn *txn, MDB_dbi dbi) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return rc;
  MDB_val k, v;
  while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Open the environment files as they are. Returns 0, an LMDB code, a
 * positive errno (LMDB style), or CKL_EVERSION; *why describes damage. */
static int try_open(ckl__env *e, const ckl__state_opts *o, char *why, size_t whylen) {
  MDB_env *env = NULL;
  int rc = mdb_env_create(&env);
  if (rc) return rc;
  mdb_env_set_maxdbs(env, 4);
  mdb_env_set_maxreaders(env, CKL__STATE_MAX_READERS);
  mdb_env_set_mapsize(env, o->map_size);
  rc = mdb_env_open(env, e->dir, MDB_NOTLS | MDB_NOSYNC, 0600);
  if (rc) {
    snprintf(why, whylen, "%s", rc > 0 ? strerror(rc) : mdb_strerror(rc));
    mdb_env_close(env);
    return rc;
  }
  int stale_readers = 0;
  mdb_reader_check(env, &stale_readers);

  /* A data.mdb shorter than its meta page claims (truncated, or a crash
   * lost its tail) would SIGBUS on the first access past the end. */
  MDB_envinfo info;
  MDB_stat mst;
  struct stat fst;
  mdb_filehandle_t fd;
  if ((rc = mdb_env_info(env, &info)) || (rc = mdb_env_stat(env, &mst)) ||
      (rc = mdb_env_get_fd(env, &fd)))
    goto fail;
  if (fstat(fd, &fst) != 0) {
    rc = errno;
    goto fail;
  }
  uint64_t need = ((uint64_t)info.me_last_pgno + 1) * mst.ms_psize;
  if ((uint64_t)fst.st_size < need) {
    snprintf(why, whylen, "truncated: %lld bytes, its meta page needs %llu",
             (long long)fst.st_size, (unsigned long long)need);
    rc = MDB_CORRUPTED;
    goto fail_nowhy;
  }

  MDB_txn *txn;
  if ((rc = mdb_txn_begin(env, NULL, 0, &txn))) goto fail;
  if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &e->dbi_meta)) ||
      (rc = mdb_dbi_open(txn, "roster", MDB_CREATE, &e->dbi_roster)) ||
      (rc = mdb_dbi_open(txn, "gc", MDB_CREATE, &e->dbi_gc)) ||
      (rc = mdb_dbi_open(txn, "removed", MDB_CREATE, &e->dbi_removed))) {
    mdb_txn_abort(txn);
    goto fail;
  }
  MDB_val k = {6, "schema"}, v;
  rc = mdb_get(txn, e->dbi_meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    unsigned char b[4];
    ckl__put_u32(b, SCHEMA_VERSION);
    v = (MDB_val){4, b};
    rc = mdb_put(txn, e->dbi_meta, &k, &v, 0);
  } else if (rc == 0 && v.mv_size != 4) {
    rc = MDB_CORRUPTED;
  } else if (rc == 0 && ckl__get_u32(v.mv_data) != SCHEMA_VERSION) {
    ckl__log_error("coordination state %s: schema version %u, this chunklock knows %u",
                   e->data_path, ckl__get_u32(v.mv_data), SCHEMA_VERSION);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return CKL_EVERSION;
  }
  if (rc) {
    mdb_txn_abort(txn);
    goto fail;
  }
  if ((rc = mdb_txn_commit(txn))) goto fail;

  if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) goto fail;
  MDB_dbi all[] = {e->dbi_meta, e->dbi_roster, e->dbi_gc, e->dbi_removed};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(all) && rc == 0; i++) rc = walk_dbi(txn, all[i]);
  mdb_txn_abort(txn);
  if (rc) goto fail;

  if ((rc = mdb_env_info(env, &info))) goto fail;
  e->env = env;
  e->mapsize = info.me_mapsize;
  e->data_dev = fst.st_dev;
  e->data_ino = fst.st_ino;
  if (stale_readers > 0)
    ckl__log_debug("coordination state %s: cleared %d reader slots of dead processes",
                   e->data_path, stale_readers);
  return 0;
fail:
  snprintf(why, whylen, "%s", rc > 0 ? strerror(rc) : mdb_strerror(rc));
fail_nowhy:
  mdb_env_close(env);
  return rc;
}

static int to_ckl(int rc) {
  if (rc == 0 || rc == CKL_EVERSION) return rc;
  if (rc > 0) return -rc;
  return ckl__mdb_is_damage(rc) ? CKL_ECORRUPT : -EIO;
}

/* Called with reg_mu held and the open lock taken: bring the files into a
 * usable state and open them. */
static int env_create(ckl__env *e, const ckl__state_opts *o) {
  int fresh_boot = !stamp_matches(e->dir);
  if (fresh_boot) {
    struct stat st;
    if (lstat(e->data_path, &st) == 0) {
      /* Written during another boot (or the stamp was removed): every
       * holder it names is dead, and with MDB_NOSYNC the file may be torn
       * by the crash that ended that boot. Discard without reading. */
      ckl__log_info("coordination state %s is from a previous boot: starting a new one",
                    e->data_path);
    }
    int rc = unlink_env_files(e->dir);
    if (rc < 0) {
      ckl__log_error("coordination state %s: cannot remove the previous boot's files: %s",
                     e->data_path, strerror(-rc));
      return rc;
    }
  }
  char why[160] = "";
  int rc = CKL_FAILPOINT("state.open.before_env_open");
  if (rc < 0) return rc;
  rc = try_open(e, o, why, sizeof why);
  if (rc != 0 && (ckl__mdb_is_damage(rc) || rc == EACCES || rc == EPERM || rc == EISDIR)) {
    ckl__log_warn("coordination state %s is damaged or unreadable (%s): moving data.mdb and "
                  "lock.mdb aside to *.damaged and starting a new one",
                  e->data_path, why);
    rc = CKL_FAILPOINT("state.open.before_recover");
    if (rc < 0) return rc;
    rc = move_aside(e->dir);
    if (rc < 0) return rc;
    rc = try_open(e, o, why, sizeof why);
  }
  if (rc != 0) {
    if (rc != CKL_EVERSION)
      ckl__log_error("coordination state %s: cannot open: %s", e->data_path, why);
    return to_ckl(rc);
  }
  if (fresh_boot) stamp_write(e->dir);
  return 0;
}

/* Does data.mdb at the path still name the file this env mapped? */
static int env_replaced(const ckl__env *e) {
  struct stat st;
  if (stat(e->data_path, &st) != 0) return 1;
  return st.st_dev != e->data_dev || st.st_ino != e->data_ino;
}

/* Find or create the live env of store_dir/.state, taking a reference. */
static int registry_get(const char *store_dir, const ckl__state_opts *o, ckl__env **out) {
  char *dir = NULL, *data = NULL;
  if (asprintf(&dir, "%s/.state", store_dir) < 0) return -ENOMEM;
  if (asprintf(&data, "%s/data.mdb", dir) < 0) {
    free(dir);
    return -ENOMEM;
  }
  pthread_mutex_lock(&reg_mu);
  dev_t dev = 0;
  ino_t ino = 0;
  int rc = ensure_dir(dir, &dev, &ino);
  if (rc < 0) goto out;
  /* Match by directory, or by the data file itself: if .state was
   * replaced between someone's ensure_dir and their open, the directory
   * key is stale but the data file still tells which files an env maps. */
  struct stat dsb;
  int have_data = stat(data, &dsb) == 0;
  for (ckl__env *e = reg_head, *next; e; e = next) {
    next = e->next;
    if (atomic_load(&e->dead)) {
      reg_unlink_locked(e);
      continue;
    }
    int same_dir = e->dev == dev && e->ino == ino;
    int same_data = have_data && e->data_dev == dsb.st_dev && e->data_ino == dsb.st_ino;
    if (!same_dir && !same_data) continue;
    if (env_replaced(e)) {
      atomic_store(&e->dead, 1);
      reg_unlink_locked(e);
      continue;
    }
    e->refs++;
    *out = e;
    goto out;
  }

  ckl__env *e = calloc(1, sizeof *e);
  if (!e) {
    rc = -ENOMEM;
    goto out;
  }
  pthread_rwlock_init(&e->rw, NULL);
  e->dir = dir;
  e->data_path = data;
  dir = data = NULL;
  e->dev = dev;
  e->ino = ino;
  e->map_max = o->map_max;

  /* Serialize openers of all processes: the boot-stamp check, recovery
   * and the first open must not interleave (two processes moving files
   * aside at once would each discard the other's fresh environment). */
  char lck[4200];
  int lfd = -1;
  if ((rc = ckl__pathf(lck, sizeof lck, "%s/open.lck", e->dir)) >= 0) {
    lfd = open(lck, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0) rc = -errno;
  }
  while (lfd >= 0 && flock(lfd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      rc = -errno;
      break;
    }
  }
  if (rc >= 0) rc = env_create(e, o);
  else ckl__log_error("coordination state %s: open lock: %s", lck, strerror(-rc));
  ckl__close(lfd); /* releases the flock */
  if (rc < 0) {
    env_free(e);
    goto out;
  }
  e->refs = 1;
  e->linked = 1;
  e->next = reg_head;
  reg_head = e;
  *out = e;
  rc = 0;
out:
  pthread_mutex_unlock(&reg_mu);
  free(dir);
  free(data);
  return rc;
}

int ckl__state_open_opts(const char *store_dir, const ckl__state_opts *opts, ckl__state **out) {
  if (!store_dir || !out) return -EINVAL;
  *out = NULL;
  pthread_once(&atfork_once, atfork_init);
  ckl__state *st = calloc(1, sizeof *st);
  if (!st) return -ENOMEM;
  if (opts) st->opts = *opts;
  if (!st->opts.map_size) st->opts.map_size = CKL__STATE_MAP_SIZE;
  if (!st->opts.map_max) st->opts.map_max = CKL__STATE_MAP_MAX;
  if (st->opts.map_max < st->opts.map_size) st->opts.map_max = st->opts.map_size;
  st->store_dir = strdup(store_dir);
  if (!st->store_dir) {
    free(st);
    return -ENOMEM;
  }
  int rc = registry_get(store_dir, &st->opts, &st->env);
  if (rc < 0) {
    free(st->store_dir);
    free(st);
    return rc;
  }
  pthread_mutex_init(&st->mu, NULL);
  st->fork_gen = atomic_load(&fork_gen);
  *out = st;
  return 0;
}

int ckl__state_open(const char *store_dir, ckl__state **out) {
  return ckl__state_open_opts(store_dir, NULL, out);
}

void ckl__state_close(ckl__state *st) {
  if (!st) return;
  if (st->fork_gen != atomic_load(&fork_gen)) return; /* inherited: the parent's */
  env_unref(st->env);
  pthread_mutex_destroy(&st->mu);
  free(st->store_dir);
  free(st);
}

/* ---- the transaction runner ------------------------------------------- */

/* The handle's current env with a reference for one call; a dead env is
 * swapped for the live one of the same path first. */
static int handle_env(ckl__state *st, ckl__env **out) {
  pthread_mutex_lock(&st->mu);
  ckl__env *e = st->env;
  if (atomic_load(&e->dead)) {
    ckl__env *ne;
    int rc = registry_get(st->store_dir, &st->opts, &ne);
    if (rc < 0) {
      pthread_mutex_unlock(&st->mu);
      return rc;
    }
    st->env = ne;
    env_unref(e);
    e = ne;
    ckl__log_info("coordination state %s was replaced: using the new one", e->data_path);
  }
  pthread_mutex_lock(&reg_mu);
  e->refs++;
  pthread_mutex_unlock(&reg_mu);
  pthread_mutex_unlock(&st->mu);
  *out = e;
  return 0;
}

/* Double the map (seen = the size the failing transaction ran with, so
 * that threads that hit MAP_FULL together grow it once). */
static int env_grow(ckl__env *e, size_t seen) {
  int rc = 0;
  pthread_rwlock_wrlock(&e->rw);
  if (e->mapsize <= seen) {
    size_t want = e->mapsize * 2;
    if (want > e->map_max) want = e->map_max;
    if (want <= e->mapsize) {
      ckl__log_error("coordination state %s is full at its maximum map size %zu bytes",
                     e->data_path, e->mapsize);
      rc = -ENOSPC;
    } else {
      int mrc = mdb_env_set_mapsize(e->env, want);
      if (mrc) rc = ckl__mdb_err(&(ckl__txn){.e = e}, mrc, "growing the map");
      else {
        ckl__log_debug("coordination state %s: map grown to %zu bytes", e->data_path, want);
        e->mapsize = want;
      }
    }
  }
  pthread_rwlock_unlock(&e->rw);
  return rc;
}

/* Another process grew the map past ours: adopt its size. */
static int env_adopt_size(ckl__env *e) {
  int rc = 0;
  pthread_rwlock_wrlock(&e->rw);
  int mrc = mdb_env_set_mapsize(e->env, 0);
  MDB_envinfo info;
  if (!mrc) mrc = mdb_env_info(e->env, &info);
  if (mrc) rc = ckl__mdb_err(&(ckl__txn){.e = e}, mrc, "adopting the map size");
  else e->mapsize = info.me_mapsize;
  pthread_rwlock_unlock(&e->rw);
  return rc;
}

/* After a commit: grow early, while no caller has side effects pending,
 * so a commit (which cannot be replayed after the forget's rename) almost
 * never meets a full map. Caller holds rw for reading. */
static int env_needs_growth(ckl__env *e) {
  MDB_envinfo info;
  MDB_stat mst;
  if (mdb_env_info(e->env, &info) || mdb_env_stat(e->env, &mst)) return 0;
  uint64_t used = ((uint64_t)info.me_last_pgno + 1) * mst.ms_psize;
  return used > (uint64_t)e->mapsize / 4 * 3 && e->mapsize < e->map_max;
}

int ckl__state_run(ckl__state *st, int write, ckl__txn_fn fn, void *arg) {
  if (!st || !fn) return -EINVAL;
  if (st->fork_gen != atomic_load(&fork_gen)) return -ECHILD;
  int rc = -EAGAIN;
  /* Each retry follows progress elsewhere (an env replaced, a map grown);
   * the bound only stops a pathological loop. */
  for (int attempt = 0; attempt < 16; attempt++) {
    ckl__env *e;
    rc = handle_env(st, &e);
    if (rc < 0) return rc;
    enum { DONE, RETRY, GROW, RESIZED } next = DONE;
    int grow_early = 0;
    pthread_rwlock_rdlock(&e->rw);
    size_t seen = e->mapsize;
    if (env_replaced(e)) {
      env_mark_dead(e);
      next = RETRY;
    } else {
      MDB_txn *txn = NULL;
      int mrc = mdb_txn_begin(e->env, NULL, write ? 0 : MDB_RDONLY, &txn);
      if (mrc == MDB_MAP_RESIZED) {
        next = RESIZED;
      } else if (mrc == MDB_READERS_FULL) {
        int cleared = 0;
        mdb_reader_check(e->env, &cleared);
        if (cleared > 0) next = RETRY;
        else rc = ckl__mdb_err(&(ckl__txn){.e = e}, mrc, "beginning a transaction");
      } else if (mrc) {
        rc = ckl__mdb_err(&(ckl__txn){.e = e}, mrc, "beginning a transaction");
        if (rc == CKL_ECORRUPT) next = RETRY;
      } else {
        ckl__txn t = {.txn = txn, .e = e, .write = write};
        rc = fn(&t, arg);
        if (write && rc >= 0) {
          /* error(EIO) stands for a commit whose write or fsync failed:
           * LMDB then frees the transaction and reports the errno. */
          int frc = CKL_FAILPOINT("state.txn.before_commit");
          if (frc < 0) {
            mdb_txn_abort(txn);
            mrc = -frc;
          } else {
            mrc = mdb_txn_commit(txn); /* frees txn, on failure too */
          }
          if (mrc) rc = ckl__mdb_err(&t, mrc, "committing");
          else grow_early = env_needs_growth(e);
        } else {
          mdb_txn_abort(txn);
        }
        if (rc == CKL__STATE_MAP_FULL) {
          if (t.no_retry) {
            ckl__log_error("coordination state %s: map full after an irrevocable step",
                           e->data_path);
            rc = -ENOSPC;
          } else {
            next = GROW;
          }
        }
      }
    }
    pthread_rwlock_unlock(&e->rw);
    if (next == GROW || grow_early) {
      int grc = env_grow(e, seen);
      if (grc < 0 && next == GROW) {
        rc = grc;
        next = DONE;
      }
    } else if (next == RESIZED) {
      int grc = env_adopt_size(e);
      if (grc < 0) {
        rc = grc;
        next = DONE;
      }
    }
    env_unref(e);
    if (next == DONE) return rc;
  }
  return rc;
}

/* ---- test hooks --------------------------------------------------------- */

struct raw_put {
  const char *dbi;
  MDB_val k, v;
};

static int raw_put_txn(ckl__txn *t, void *arg) {
  struct raw_put *r = arg;
  MDB_dbi d;
  if (!strcmp(r->dbi, "roster")) d = t->e->dbi_roster;
  else if (!strcmp(r->dbi, "gc")) d = t->e->dbi_gc;
  else if (!strcmp(r->dbi, "removed")) d = t->e->dbi_removed;
  else if (!strcmp(r->dbi, "meta")) d = t->e->dbi_meta;
  else return -EINVAL;
  return ckl__mdb_err(t, mdb_put(t->txn, d, &r->k, &r->v, 0), "raw put");
}

int ckl__state_raw_put(ckl__state *st, const char *dbi, const void *key, size_t klen,
                       const void *val, size_t vlen) {
  if (!dbi || !key || !klen) return -EINVAL;
  struct raw_put r = {dbi, {klen, (void *)key}, {vlen, (void *)val}};
  return ckl__state_run(st, 1, raw_put_txn, &r);
}

size_t ckl__state_map_size(ckl__state *st) {
  if (!st || st->fork_gen != atomic_load(&fork_gen)) return 0;
  pthread_mutex_lock(&st->mu);
  ckl__env *e = st->env;
  pthread_rwlock_rdlock(&e->rw);
  size_t n = e->mapsize;
  pthread_rwlock_unlock(&e->rw);
  pthread_mutex_unlock(&st->mu);
  return n;
}

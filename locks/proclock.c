/*
 * locks/proclock.c - the store's process locker (byte 0 of STORE/.lock) and
 * GC lock (byte 1).
 *
 * Process locker, the model. Each process has at most one locker per lock
 * file, found in a registry keyed by the file's (st_dev, st_ino), and each
 * locker owns ONE open file description. The kernel lock on byte 0 of that
 * description is the process's vote: F_RDLCK while the process has only
 * shared guards, F_WRLCK while it has at least one exclusive guard, none
 * when it has no guards. Guards are counted in user space, so within one
 * process an exclusive guard coexists with shared guards (they are the same
 * kernel owner), while across processes the kernel makes exclusive exclude
 * everyone else. Keying by inode rather than path makes "STORE/.lock" and
 * "STORE/./.lock" one locker, and with one description per locker no
 * close() of another fd can drop the lock (the POSIX-lock trap).
 *
 * Invariants, all under reg_mu:
 *   (I1) kmode == desired(n_shared, n_excl) whenever reg_mu is free, where
 *        desired = WR if n_excl, else RD if n_shared, else none. Raising
 *        happens before a guard is counted, lowering (settle) right after a
 *        guard goes away, both under reg_mu.
 *   (I2) Every fcntl on a locker's fd happens under reg_mu, so no two
 *        threads ever race lock conversions on one description. Only the
 *        non-blocking F_OFD_SETLK is used; waiting is done by sleeping
 *        with reg_mu released and trying again.
 *   (I3) The holder record at slot 0 is written right after byte 0 becomes
 *        F_WRLCK and zeroed right before it stops being F_WRLCK, so a
 *        readable record always names the current exclusive process.
 *   (I4) A locker is freed only when it has no handles and no guards: a
 *        guard outlives a prematurely closed handle without dropping the
 *        kernel lock under it.
 *
 * Fork. The child inherits the parent's descriptions: unlocking anything
 * there would unlock the parent. The atfork child handler forgets the
 * registry without unlocking (it closes the child's copies of the fds,
 * which never releases an OFD lock while the parent still has its copy).
 * Lockers and guards remember the pid that made them; in any other process
 * they are inert: release is a no-op, taking guards is -EINVAL.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunklock/proclock.h"
#include "locks/locks_internal.h"

enum { K_NONE = 0, K_RD = 1, K_WR = 2 };

#define PL_BYTE 0
#define GC_BYTE 1
#define PL_EXCL_OPERATION "proclock-exclusive"

typedef struct guard_rec {
  uint64_t id;
  int exclusive;
  int64_t since_ns;
} guard_rec;

struct ckl_proclock {
  struct ckl_proclock *next;
  dev_t dev;
  ino_t ino;
  pid_t pid;  /* creator; immutable, read without the mutex */
  int fd;     /* immutable */
  char *path; /* immutable */
  char token[CKL_TOKEN_HEX_LEN + 1];
  /* under reg_mu: */
  int handles;
  int kmode;
  int n_shared, n_excl;
  guard_rec *guards;
  size_t n_guards, cap;
  uint64_t next_id;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static ckl_proclock *reg_head;

static void reg_prepare(void) { pthread_mutex_lock(&reg_mu); }
static void reg_parent(void) { pthread_mutex_unlock(&reg_mu); }
static void reg_child(void) {
  /* Forget, never unlock: see the header comment. The lockers themselves
   * are leaked on purpose, as handles and guards in the child's memory
   * still point at them and must find them inert, not freed. */
  for (ckl_proclock *p = reg_head; p; p = p->next) ckl__close(p->fd);
  reg_head = NULL;
  pthread_mutex_unlock(&reg_mu);
}
__attribute__((constructor)) static void proclock_init(void) {
  pthread_atfork(reg_prepare, reg_parent, reg_child);
}

static int desired(const ckl_proclock *pl) {
  return pl->n_excl ? K_WR : pl->n_shared ? K_RD : K_NONE;
}

/* Bring the kernel lock down to what the guards need (I1). Lowering never
 * waits and on one byte cannot fail for lack of locks to split; if it
 * fails anyway we keep the stronger lock (safe, only less concurrent). */
static void settle(ckl_proclock *pl) {
  int want = desired(pl);
  if (want >= pl->kmode) return;
  if (pl->kmode == K_WR) {
    int rc = ckl__holder_record_clear(pl->fd, ckl__holder_slot(PL_BYTE));
    if (rc < 0) ckl__log_debug("%s: clearing holder record: %s", pl->path, strerror(-rc));
  }
  int rc = ckl__ofd_setlk(pl->fd, want == K_RD ? F_RDLCK : F_UNLCK, PL_BYTE, 1, 0);
  if (rc < 0) {
    ckl__log_error("%s: process locker: lowering the lock: %s", pl->path, strerror(-rc));
    return;
  }
  pl->kmode = want;
}

/* One non-blocking attempt to raise the kernel lock to `need`, under
 * reg_mu. 0, -EAGAIN (another process is in the way), CKL_EREPLACED, -errno. */
static int raise_to(ckl_proclock *pl, int need, const char *op) {
  int from_none = pl->kmode == K_NONE;
  int rc = ckl__ofd_setlk(pl->fd, need == K_WR ? F_WRLCK : F_RDLCK, PL_BYTE, 1, 0);
  if (rc < 0) return rc;
  if (from_none) {
    /* Lock, then verify: a lock on a .lock that was replaced excludes no
     * one who opens the path now. The locker is bound to its inode, so
     * the caller must reopen; report it instead of retrying here. */
    rc = ckl__lockfile_verify(pl->fd, pl->path);
    if (rc < 0) {
      (void)ckl__ofd_setlk(pl->fd, F_UNLCK, PL_BYTE, 1, 0);
      ckl__log_error("%s: process locker file was replaced or removed", pl->path);
      return rc;
    }
  }
  if (need == K_WR && pl->kmode != K_WR) {
    rc = ckl__holder_record_write(pl->fd, ckl__holder_slot(PL_BYTE), pl->token,
                                  op ? op : PL_EXCL_OPERATION, ckl__now_realtime_ns());
    if (rc < 0) ckl__log_warn("%s: cannot write holder record: %s", pl->path, strerror(-rc));
  }
  pl->kmode = need;
  return 0;
}

/* Raise to `need` (K_RD or K_WR), waiting per d, and run `commit` with
 * reg_mu held once the kernel lock covers it. The waiting is done with
 * reg_mu released, so guards of other threads come and go meanwhile. */
static int wait_and_commit(ckl_proclock *pl, int need, const char *op, ckl__deadline *d,
                           ckl_holder *busy, int (*commit)(ckl_proclock *, void *), void *arg) {
  ckl__reprobe rp = {0};
  pthread_mutex_lock(&reg_mu);
  for (;;) {
    int rc = pl->kmode >= need ? 0 : raise_to(pl, need, op);
    if (rc == 0) {
      rc = commit(pl, arg);
      if (rc < 0) settle(pl);
      pthread_mutex_unlock(&reg_mu);
      return rc;
    }
    if (rc != -EAGAIN) {
      settle(pl);
      pthread_mutex_unlock(&reg_mu);
      if (rc != CKL_EREPLACED)
        ckl__log_error("%s: process locker: %s", pl->path, ckl_strerror(rc));
      return rc;
    }
    pthread_mutex_unlock(&reg_mu);
    if (!ckl__deadline_backoff(d)) {
      ckl__fill_busy_holder(pl->fd, pl->path, PL_BYTE, 1, need == K_WR,
                            ckl__holder_slot(PL_BYTE), busy);
      /* Nameless: a backup between its grant and its roster record, or an
       * exclusive holder around its record write: look again, briefly
       * (locks/busy.c). */
      if (!busy || busy->known || !ckl__reprobe_next(&rp))
        return d->timeout_ms == CKL_TRY ? CKL_EBUSY : CKL_ETIMEDOUT;
    }
    pthread_mutex_lock(&reg_mu);
  }
}

/* ---- registry ------------------------------------------------------------- */

int ckl_proclock_open(const char *path, ckl_proclock **out) {
  if (out) *out = NULL;
  if (!path || !*path || !out) return -EINVAL;
  struct stat st;
  int fd = ckl__lockfile_open(path, 0, NULL, &st);
  if (fd < 0) {
    ckl__log_error("%s: cannot open the process locker: %s", path, ckl_strerror(fd));
    return fd;
  }
  pthread_mutex_lock(&reg_mu);
  for (ckl_proclock *p = reg_head; p; p = p->next) {
    if (p->dev == st.st_dev && p->ino == st.st_ino) {
      p->handles++;
      pthread_mutex_unlock(&reg_mu);
      /* Our fresh description holds no lock, so closing it drops nothing:
       * the OFD property that makes a registry of one fd per file safe. */
      ckl__close(fd);
      *out = p;
      return 0;
    }
  }
  ckl_proclock *pl = calloc(1, sizeof *pl);
  int rc = pl ? 0 : -ENOMEM;
  if (rc == 0 && !(pl->path = strdup(path))) rc = -ENOMEM;
  if (rc == 0) rc = ckl__random_token(pl->token);
  if (rc < 0) {
    pthread_mutex_unlock(&reg_mu);
    if (pl) free(pl->path);
    free(pl);
    ckl__close(fd);
    return rc;
  }
  pl->dev = st.st_dev;
  pl->ino = st.st_ino;
  pl->pid = ckl__getpid();
  pl->fd = fd;
  pl->handles = 1;
  pl->next_id = 1;
  pl->next = reg_head;
  reg_head = pl;
  pthread_mutex_unlock(&reg_mu);
  *out = pl;
  return 0;
}

/* Unlink pl from the registry and free it if nothing refers to it (I4).
 * Called with reg_mu held; returns 1 if the caller must free it after
 * unlocking. */
static int detach_if_unused(ckl_proclock *pl) {
  if (pl->handles > 0 || pl->n_guards > 0) return 0;
  for (ckl_proclock **pp = &reg_head; *pp; pp = &(*pp)->next) {
    if (*pp == pl) {
      *pp = pl->next;
      break;
    }
  }
  return 1;
}

static void destroy(ckl_proclock *pl) {
  /* No guards, so (I1) no kernel lock: closing drops nothing held. */
  ckl__close(pl->fd);
  free(pl->guards);
  free(pl->path);
  free(pl);
}

void ckl_proclock_close(ckl_proclock *pl) {
  if (!pl || pl->pid != ckl__getpid()) return; /* inherited: forgotten at fork */
  pthread_mutex_lock(&reg_mu);
  if (pl->handles <= 0) {
    pthread_mutex_unlock(&reg_mu);
    ckl__log_error("%s: process locker closed more often than opened", pl->path);
    return;
  }
  pl->handles--;
  if (pl->handles == 0 && pl->n_guards > 0)
    ckl__log_warn("%s: process locker closed with %zu guards held; kept until they are released",
                  pl->path, pl->n_guards);
  int gone = detach_if_unused(pl);
  pthread_mutex_unlock(&reg_mu);
  if (gone) destroy(pl);
}

/* ---- guards --------------------------------------------------------------- */

static guard_rec *find_guard(ckl_proclock *pl, uint64_t id) {
  for (size_t i = 0; i < pl->n_guards; i++)
    if (pl->guards[i].id == id) return &pl->guards[i];
  return NULL;
}

typedef struct add_arg {
  int exclusive;
  uint64_t id;
  int64_t since_ns;
} add_arg;

/* A guard's start time. CLOCK_REALTIME_COARSE (the time of the last
 * tick, a few ms behind at most): a plain memory read in the vDSO, where
 * CLOCK_REALTIME reads the clock source, which under a hypervisor was 40 %
 * of a nested guard's acquire+release. A start time that is early by a
 * tick only makes ckl_proclock_oldest_shared older, the conservative
 * direction for anything computing a cutoff from it. */
static int64_t guard_now_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME_COARSE, &ts) != 0) return ckl__now_realtime_ns();
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int commit_add(ckl_proclock *pl, void *v) {
  add_arg *a = v;
  if (pl->n_guards == pl->cap) {
    size_t cap = pl->cap ? pl->cap * 2 : 8;
    guard_rec *g = realloc(pl->guards, cap * sizeof *g);
    if (!g) return -ENOMEM;
    pl->guards = g;
    pl->cap = cap;
  }
  a->id = pl->next_id++;
  a->since_ns = guard_now_ns();
  pl->guards[pl->n_guards++] = (guard_rec){a->id, a->exclusive, a->since_ns};
  if (a->exclusive) pl->n_excl++;
  else pl->n_shared++;
  return 0;
}

static int take(ckl_proclock *pl, ckl_proclock_guard *g, int exclusive, int64_t timeout_ms,
                ckl_holder *busy, const char *op) {
  if (!pl || !g || g->held || timeout_ms < CKL_FOREVER) return -EINVAL;
  if (pl->pid != ckl__getpid()) {
    ckl__log_error("%s: process locker inherited through fork; open it again", pl->path);
    return -EINVAL;
  }
  int rc = exclusive ? CKL_FAILPOINT("proclock.before_exclusive")
                     : CKL_FAILPOINT("proclock.before_shared");
  if (rc < 0) return rc;
  ckl__deadline d;
  ckl__deadline_init(&d, timeout_ms);
  add_arg a = {.exclusive = exclusive};
  rc = wait_and_commit(pl, exclusive ? K_WR : K_RD, op, &d, busy, commit_add, &a);
  if (rc < 0) return rc;
  memset(g, 0, sizeof *g);
  g->held = 1;
  g->exclusive = exclusive;
  g->pl = pl;
  g->since_ns = a.since_ns;
  g->id = a.id;
  g->owner_pid = ckl__getpid();
  if (exclusive && (rc = CKL_FAILPOINT("proclock.after_exclusive")) < 0) {
    ckl_proclock_release(g);
    return rc;
  }
  return 0;
}

int ckl_proclock_shared(ckl_proclock *pl, ckl_proclock_guard *g, int64_t timeout_ms,
                        ckl_holder *busy_holder) {
  return take(pl, g, 0, timeout_ms, busy_holder, NULL);
}

int ckl_proclock_exclusive(ckl_proclock *pl, ckl_proclock_guard *g, int64_t timeout_ms,
                           ckl_holder *busy_holder) {
  return take(pl, g, 1, timeout_ms, busy_holder, NULL);
}

int ckl__proclock_exclusive_as(ckl_proclock *pl, ckl_proclock_guard *g, int64_t timeout_ms,
                               ckl_holder *busy_holder, const char *operation) {
  return take(pl, g, 1, timeout_ms, busy_holder, operation);
}

int ckl_proclock_release(ckl_proclock_guard *g) {
  if (!g || !g->held) return 0;
  if (g->owner_pid != ckl__getpid()) {
    /* Inherited through fork: the parent still holds it. Forget only. */
    memset(g, 0, sizeof *g);
    return 0;
  }
  ckl_proclock *pl = g->pl;
  pthread_mutex_lock(&reg_mu);
  guard_rec *r = find_guard(pl, g->id);
  int gone = 0;
  if (r) {
    if (r->exclusive) pl->n_excl--;
    else pl->n_shared--;
    *r = pl->guards[--pl->n_guards];
    settle(pl);
    gone = detach_if_unused(pl);
  } else {
    ckl__log_error("%s: release of an unknown process locker guard", pl->path);
  }
  pthread_mutex_unlock(&reg_mu);
  if (gone) destroy(pl);
  memset(g, 0, sizeof *g);
  return r ? 0 : -EINVAL;
}

static int commit_upgrade(ckl_proclock *pl, void *v) {
  guard_rec *r = find_guard(pl, *(uint64_t *)v);
  if (!r) return -EINVAL;
  if (!r->exclusive) {
    r->exclusive = 1;
    pl->n_shared--;
    pl->n_excl++;
  }
  return 0;
}

int ckl_proclock_upgrade(ckl_proclock_guard *g, int64_t timeout_ms, ckl_holder *busy_holder) {
  if (!g || !g->held || timeout_ms < CKL_FOREVER || g->owner_pid != ckl__getpid())
    return -EINVAL;
  if (g->exclusive) return 0;
  int rc = CKL_FAILPOINT("proclock.before_exclusive");
  if (rc < 0) return rc;
  ckl__deadline d;
  ckl__deadline_init(&d, timeout_ms);
  /* While we wait the guard stays shared and the kernel keeps our F_RDLCK
   * (a failed F_OFD_SETLK changes nothing), so failure is a clean no-op. */
  rc = wait_and_commit(g->pl, K_WR, NULL, &d, busy_holder, commit_upgrade, &g->id);
  if (rc < 0) return rc;
  g->exclusive = 1;
  if ((rc = CKL_FAILPOINT("proclock.after_exclusive")) < 0) {
    ckl_proclock_downgrade(g);
    return rc;
  }
  return 0;
}

int ckl_proclock_downgrade(ckl_proclock_guard *g) {
  if (!g || !g->held || g->owner_pid != ckl__getpid()) return -EINVAL;
  if (!g->exclusive) return 0;
  ckl_proclock *pl = g->pl;
  pthread_mutex_lock(&reg_mu);
  guard_rec *r = find_guard(pl, g->id);
  if (r && r->exclusive) {
    r->exclusive = 0;
    pl->n_excl--;
    pl->n_shared++;
    settle(pl);
  }
  pthread_mutex_unlock(&reg_mu);
  if (!r) return -EINVAL;
  g->exclusive = 0;
  return 0;
}

int ckl_proclock_oldest_shared(ckl_proclock *pl, int64_t *since_ns) {
  if (!pl || !since_ns) return -EINVAL;
  if (pl->pid != ckl__getpid()) return -ENOENT; /* this process holds nothing on it */
  int rc = -ENOENT;
  pthread_mutex_lock(&reg_mu);
  for (size_t i = 0; i < pl->n_guards; i++) {
    const guard_rec *r = &pl->guards[i];
    if (!r->exclusive && (rc < 0 || r->since_ns < *since_ns)) {
      *since_ns = r->since_ns;
      rc = 0;
    }
  }
  pthread_mutex_unlock(&reg_mu);
  return rc;
}

void ckl_proclock_counts(ckl_proclock *pl, int *shared, int *exclusive) {
  int s = 0, e = 0;
  if (pl && pl->pid == ckl__getpid()) {
    pthread_mutex_lock(&reg_mu);
    s = pl->n_shared;
    e = pl->n_excl;
    pthread_mutex_unlock(&reg_mu);
  }
  if (shared) *shared = s;
  if (exclusive) *exclusive = e;
}

/* ---- GC lock ---------------------------------------------------------------
 * Byte 1 of the same file, but never through the locker's description:
 * every GC holder opens its own, so two threads of one process exclude
 * each other. Its record lives at slot 1 so a second GC can name the first.
 */

int ckl_gclock_acquire(const char *path, ckl_gclock *g, int64_t timeout_ms,
                       ckl_holder *busy_holder) {
  return ckl__gclock_acquire_as(path, g, timeout_ms, busy_holder, "gc");
}

int ckl__gclock_acquire_as(const char *path, ckl_gclock *g, int64_t timeout_ms,
                           ckl_holder *busy_holder, const char *operation) {
  if (!path || !*path || !g || g->held || timeout_ms < CKL_FOREVER) return -EINVAL;
  char token[CKL_TOKEN_HEX_LEN + 1];
  int rc = ckl__random_token(token);
  if (rc < 0) return rc;
  /* The record is written at the grant, before gclock.after_lock and the
   * verify, so a second GC (or freeze) that finds byte 1 busy can name us
   * (locks/busy.c, W1). */
  int64_t since = 0;
  ckl__range_req rq = {.path = path, .kind = CKL__KIND_GC, .exclusive = 1,
                       .start = GC_BYTE, .len = 1, .rec_off = ckl__holder_slot(GC_BYTE),
                       .timeout_ms = timeout_ms, .busy_holder = busy_holder,
                       .rec_token = token, .rec_operation = operation, .since_ns = &since};
  struct stat st;
  int fd = ckl__range_acquire(&rq, &st, NULL);
  if (fd < 0) return fd;
  memset(g, 0, sizeof *g);
  g->held = 1;
  g->fd = fd;
  g->since_ns = since;
  g->owner_pid = ckl__getpid();
  return 0;
}

int ckl_gclock_release(ckl_gclock *g) {
  if (!g || !g->held) return 0;
  if (g->owner_pid == ckl__getpid()) {
    (void)ckl__holder_record_clear(g->fd, ckl__holder_slot(GC_BYTE));
    int rc = ckl__ofd_setlk(g->fd, F_UNLCK, GC_BYTE, 1, 0);
    if (rc < 0) ckl__log_warn("GC lock: unlock: %s (close releases it)", strerror(-rc));
  }
  ckl__close(g->fd);
  memset(g, 0, sizeof *g);
  g->fd = -1;
  return 0;
}

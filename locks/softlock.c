/*
 * locks/softlock.c - the soft reader/writer lease lock (see softlock.h and
 * docs/softlock.md). Marker I/O and parsing are in softlock_marker.c.
 *
 * The protocol, and the invariant each step keeps:
 *
 *   reader:  create P.readers/r.<token>, THEN look at P.write.
 *   writer:  (under the state mutex) create P.write, THEN list P.readers/
 *            until no live reader marker is left.
 *
 *   I1 (exclusion). Each side writes its own marker before it looks for
 *   the other's. Whichever of the two creations comes second, its creator's
 *   look comes after both creations and sees the other marker. So a reader
 *   and a writer are never both in; the loser of the race backs off (the
 *   reader removes its marker, the writer keeps waiting). No mutex is
 *   needed for this, which is what makes writers unstarvable: readers never
 *   compete with a writer for anything, and once P.write exists no reader
 *   gets in (a reader that started before may still be finishing).
 *
 *   I2 (one writer). P.write is created with O_EXCL: one creator.
 *
 *   I3 (evictions never create a second owner). P.write is claimed, and
 *   evicted, only while holding the state mutex P.state. An eviction
 *   renames the stale marker aside and re-checks it (softlock_marker.c);
 *   if it is not the marker it judged, it puts it back with link(). Under
 *   the mutex no claim can take the name in between, so the put-back
 *   cannot fail for a protocol follower. Reader markers have unique random
 *   names, so their evictions need no mutex. The state mutex itself has
 *   nothing above it: it is evicted with the same rename-and-check, and
 *   its holders re-check their own age before each step they guard.
 *
 *   I4 (strict lease). A holder's lease runs TTL - interval on the boot
 *   clock from the start of its last successful stamp; it never stamps
 *   once the lease has run out, so as long as hosts' wall clocks agree
 *   within one interval, no process can judge a marker stale (mtime older
 *   than TTL) whose holder still believes it holds the lock.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "locks/softlock_internal.h"

#define MIN_TTL_MS 30

struct ckl__softlock_hold {
  /* fixed once acquired */
  ckl__softlock_env env;
  char *path;                 /* P, for messages and ckl_holder.target */
  char *dir_path, *readers_path;
  char name_state[NAME_MAX + 1], name_write[NAME_MAX + 1], name_readers[NAME_MAX + 1];
  char marker_name[NAME_MAX + 1]; /* our marker: name_write or r.<token> */
  int marker_dirfd;
  struct stat marker_st;
  ckl__softlock_marker me;
  ckl_lock_mode mode;
  int depth;
  pid_t owner_pid;
  int64_t interval_ns, lease_ns;
  ckl_softlock_heartbeat hb_mode;
  ckl_softlock_lost_fn on_lost;
  void *on_lost_ctx;
  /* shared with the heartbeat thread and check() (atomics, no lock) */
  _Atomic int64_t last_ok_boot;  /* boot clock at the start of the last good stamp */
  _Atomic int64_t last_ok_wall;
  _Atomic int64_t due_boot;
  atomic_int lost;               /* ckl_softlock_lost */
  atomic_int published;          /* acquire returned: on_lost may be called */
  atomic_int notified;
  atomic_int forked;             /* set in a fork child by the atfork handler */
  /* heartbeat thread */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;                      /* under mu */
  int thread_started;
  pthread_t thread;
  struct ckl__softlock_hold *reg_next, *reg_prev; /* under reg_mu */
};
typedef struct ckl__softlock_hold hold;

/* ---- fork: the registry of holds ------------------------------------------------
 * A fork child gets copies of every hold but no heartbeat thread; if it
 * believed it held the lock, parent and child would both act as the one
 * holder. The child handler marks every hold forked: check/refresh answer
 * CKL_ELOCKLOST and release touches no file there. The child's copy of a
 * hold's mutex may have been locked by a parent thread at fork time, so
 * nothing in the child locks it again. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static hold *reg_head;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void reg_prepare(void) { pthread_mutex_lock(&reg_mu); }
static void reg_parent(void) { pthread_mutex_unlock(&reg_mu); }
static void reg_child(void) {
  for (hold *h = reg_head; h; h = h->reg_next) atomic_store(&h->forked, 1);
  reg_head = NULL; /* the child's holds are freed by their release, unlisted */
  pthread_mutex_unlock(&reg_mu);
}
static void reg_init(void) { pthread_atfork(reg_prepare, reg_parent, reg_child); }

static void reg_add(hold *h) {
  pthread_mutex_lock(&reg_mu);
  h->reg_prev = NULL;
  h->reg_next = reg_head;
  if (reg_head) reg_head->reg_prev = h;
  reg_head = h;
  pthread_mutex_unlock(&reg_mu);
}
static void reg_remove(hold *h) {
  pthread_mutex_lock(&reg_mu);
  if (h->reg_prev) h->reg_prev->reg_next = h->reg_next;
  else if (reg_head == h) reg_head = h->reg_next;
  if (h->reg_next) h->reg_next->reg_prev = h->reg_prev;
  h->reg_next = h->reg_prev = NULL;
  pthread_mutex_unlock(&reg_mu);
}

static int is_forked(const hold *h) {
  return atomic_load(&h->forked) || h->owner_pid != ckl__getpid();
}

/* ---- setup and teardown ------------------------------------------------------- */

static int valid_id(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
  return 1;
}

static void hold_free(hold *h) {
  if (!h) return;
  ckl__close(h->env.dir_fd);
  ckl__close(h->env.readers_fd);
  if (!atomic_load(&h->forked) && h->owner_pid == ckl__getpid()) {
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
  }
  free(h->path);
  free(h->dir_path);
  free(h->readers_path);
  free(h);
}

/* Open P.readers/ (creating it 0700), refusing anything but a directory
 * of ours that is closed to group and other. mkdir has no O_NOFOLLOW, so:
 * mkdirat, lstat, open O_NOFOLLOW|O_DIRECTORY, and the fd must be the
 * inode lstat saw. From then on the directory is used only through fd. */
static int open_readers(hold *h) {
  const char *rp = h->readers_path;
  for (int attempt = 0; attempt < 3; attempt++) {
    int created = mkdirat(h->env.dir_fd, h->name_readers, 0700) == 0;
    if (!created && errno != EEXIST) {
      int err = errno;
      ckl__log_error("soft lock %s: mkdir %s: %s", h->path, rp, strerror(err));
      return -err;
    }
    struct stat st, fst;
    if (fstatat(h->env.dir_fd, h->name_readers, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return -errno;
    }
    if (S_ISLNK(st.st_mode)) {
      ckl__log_error("soft lock %s: %s is a symlink: refusing to follow it", h->path, rp);
      return -ELOOP;
    }
    if (!S_ISDIR(st.st_mode)) {
      ckl__log_error("soft lock %s: %s is not a directory", h->path, rp);
      return -ENOTDIR;
    }
    if (st.st_uid != h->env.uid || (!created && (st.st_mode & 077))) {
      ckl__log_error("soft lock %s: %s is owned by uid %u with mode %03o; it must be ours "
                     "(uid %u, e.g. not root-squashed) and 0700",
                     h->path, rp, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777),
                     (unsigned)h->env.uid);
      return -EPERM;
    }
    int fd = openat(h->env.dir_fd, h->name_readers,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR) continue; /* swapped: look again */
      int err = errno;
      ckl__log_error("soft lock %s: open %s: %s", h->path, rp, strerror(err));
      return -err;
    }
    if (fstat(fd, &fst) != 0 || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino) {
      ckl__close(fd);
      continue;
    }
    /* A umask may have taken bits we need; never grant more than 0700. */
    if (created && (fst.st_mode & 0777) != 0700 && fchmod(fd, 0700) != 0) {
      int err = errno;
      ckl__close(fd);
      return -err;
    }
    h->env.readers_fd = fd;
    return 0;
  }
  ckl__log_error("soft lock %s: %s keeps being replaced", h->path, rp);
  return -EAGAIN;
}

static int setup(hold *h, const char *path, const ckl_softlock_opts *o) {
  h->env.dir_fd = h->env.readers_fd = -1;
  h->owner_pid = ckl__getpid();
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) return -EINVAL;
  size_t dlen = slash ? (size_t)(slash - path) : 1;
  if (slash && dlen == 0) dlen = 1; /* "/x": the root directory */
  h->path = strdup(path);
  h->dir_path = slash ? strndup(path, dlen) : strdup(".");
  if (!h->path || !h->dir_path || asprintf(&h->readers_path, "%s.readers", path) < 0) {
    h->readers_path = NULL;
    return -ENOMEM;
  }
  if (ckl__pathf(h->name_state, sizeof h->name_state, "%s.state", base) < 0 ||
      ckl__pathf(h->name_write, sizeof h->name_write, "%s.write", base) < 0 ||
      ckl__pathf(h->name_readers, sizeof h->name_readers, "%s.readers", base) < 0 ||
      strlen(h->name_readers) > NAME_MAX)
    return -ENAMETOOLONG;

  int64_t ttl_ms = o->ttl_ms ? o->ttl_ms : CKL_SOFTLOCK_DEFAULT_TTL_MS;
  int64_t hb_ms = o->heartbeat_ms ? o->heartbeat_ms : ttl_ms / 3;
  if (ttl_ms < MIN_TTL_MS || hb_ms < 1 || hb_ms > ttl_ms / 3) return -EINVAL;
  h->env.ttl_ns = ttl_ms * 1000000LL;
  h->interval_ns = hb_ms * 1000000LL;
  h->lease_ns = h->env.ttl_ns - h->interval_ns;
  h->env.clock = o->clock;
  h->env.clock_ctx = o->clock_ctx;
  h->env.uid = geteuid();
  const char *host = o->host_id ? o->host_id : ckl__hostname();
  if (!valid_id(host, 63)) {
    if (o->host_id) return -EINVAL;
    host = "unknown"; /* a host name with spaces or non-ASCII: say nothing wrong */
  }
  ckl__strlcpy(h->env.host, host, sizeof h->env.host);
  ckl__strlcpy(h->env.boot, ckl__softlock_boot_id(), sizeof h->env.boot);
  h->env.pidns = ckl__softlock_pidns();
  h->env.dir_path = h->dir_path;
  h->env.readers_path = h->readers_path;
  h->hb_mode = o->heartbeat;
  h->on_lost = o->on_lost;
  h->on_lost_ctx = o->on_lost_ctx;

  h->env.dir_fd = open(h->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (h->env.dir_fd < 0) {
    int err = errno;
    ckl__log_error("soft lock %s: open directory %s: %s", path, h->dir_path, strerror(err));
    return -err;
  }
  return open_readers(h);
}

/* A marker for this hold with a fresh token. */
static int new_marker(hold *h, const char *op, ckl__softlock_marker *m) {
  memset(m, 0, sizeof *m);
  int rc = ckl__random_token(m->token);
  if (rc < 0) return rc;
  memcpy(m->host, h->env.host, sizeof m->host);
  memcpy(m->boot, h->env.boot, sizeof m->boot);
  m->pidns = h->env.pidns;
  m->pid = ckl__getpid();
  m->created_ns = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_WALL);
  if (m->created_ns < 1) m->created_ns = 1;
  if (ckl__strlcpy(m->op, op && valid_id(op, 31) ? op : "-", sizeof m->op) < 0) return -EINVAL;
  return 0;
}

static int busy_code(const ckl__deadline *d) {
  return d->timeout_ms == CKL_TRY ? CKL_EBUSY : CKL_ETIMEDOUT;
}

/* ---- the state mutex ------------------------------------------------------------ */

typedef struct mutex_hold {
  ckl__softlock_marker m;
  struct stat st;
  int64_t boot_at;
} mutex_hold;

static int mutex_lock(hold *h, ckl__deadline *d, mutex_hold *mh, ckl_holder *busy) {
  for (;;) {
    int rc = CKL_FAILPOINT("softlock.mutex.before_create");
    if (rc < 0) return rc;
    rc = new_marker(h, "state-mutex", &mh->m);
    if (rc < 0) return rc;
    mh->boot_at = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
    rc = ckl__softlock_marker_create(&h->env, h->env.dir_fd, h->name_state, &mh->m, &mh->st);
    if (rc == 0) {
      rc = CKL_FAILPOINT("softlock.mutex.after_create");
      if (rc < 0) unlinkat(h->env.dir_fd, h->name_state, 0); /* fresh: still ours */
      return rc;
    }
    if (rc != -EEXIST) return rc;
    ckl__softlock_obs o;
    ckl__softlock_observe(&h->env, h->env.dir_fd, h->name_state, &o);
    if (o.verdict == CKL__MK_ABSENT) continue;
    if (o.verdict == CKL__MK_STALE) {
      rc = ckl__softlock_evict(&h->env, h->env.dir_fd, h->name_state, &o, 0);
      if (rc < 0) return rc;
      continue;
    }
    if (!ckl__deadline_backoff(d)) {
      char target[PATH_MAX];
      snprintf(target, sizeof target, "%s.state", h->path);
      ckl__softlock_obs_holder(&h->env, &o, target, busy);
      return busy_code(d);
    }
  }
}

/* May we still act under the mutex? Held longer than a lease, it may have
 * been evicted as stale, and the step it guards must be retried. */
static int mutex_fresh(hold *h, const mutex_hold *mh) {
  return ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT) - mh->boot_at < h->lease_ns;
}

static void mutex_unlock(hold *h, const mutex_hold *mh) {
  int rc = CKL_FAILPOINT("softlock.mutex.before_unlock");
  if (rc < 0) return; /* left behind as by a crash: stale after the TTL */
  ckl__softlock_obs o;
  ckl__softlock_observe(&h->env, h->env.dir_fd, h->name_state, &o);
  if (o.verdict == CKL__MK_ABSENT || !o.trusted || strcmp(o.m.token, mh->m.token) != 0) {
    ckl__log_warn("soft lock %s: the state mutex was evicted while we held it", h->path);
    return;
  }
  (void)ckl__softlock_evict(&h->env, h->env.dir_fd, h->name_state, &o, 1);
}

/* ---- lease: lost, refresh, heartbeat thread --------------------------------------- */

static int mark_lost(hold *h, ckl_softlock_lost why) {
  int expected = CKL_SOFTLOCK_OK;
  if (atomic_compare_exchange_strong(&h->lost, &expected, (int)why))
    ckl__log_warn("soft lock %s: lock lost (%s)", h->path,
                  why == CKL_SOFTLOCK_LOST_EXPIRED ? "lease not refreshed in time"
                  : why == CKL_SOFTLOCK_LOST_GONE  ? "marker removed"
                                                   : "marker re-owned");
  if (atomic_load(&h->published) && !atomic_exchange(&h->notified, 1) && h->on_lost)
    h->on_lost(h->on_lost_ctx, (ckl_softlock_lost)atomic_load(&h->lost));
  return CKL_ELOCKLOST;
}

static int lease_check(hold *h) {
  if (is_forked(h)) return CKL_ELOCKLOST;
  if (atomic_load(&h->lost)) return CKL_ELOCKLOST;
  int64_t now = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
  if (now - atomic_load(&h->last_ok_boot) > h->lease_ns)
    return mark_lost(h, CKL_SOFTLOCK_LOST_EXPIRED);
  return 0;
}

/*
 * One heartbeat. Stamp through an fd opened by name, THEN check that the
 * name still leads to that inode: an eviction renames the marker away, so
 * a stamp that lands after the rename is always followed by a failed
 * check (the holder learns it lost), and a stamp before the rename changes
 * the mtime the evictor re-checks (the evictor puts the marker back).
 */
static int do_refresh(hold *h) {
  int rc = lease_check(h);
  if (rc < 0) return rc;
  int64_t boot = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
  int fd = -1;
  rc = CKL_FAILPOINT("softlock.heartbeat.before_touch");
  if (rc < 0) goto transient;
  fd = openat(h->marker_dirfd, h->marker_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
                                                   O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return mark_lost(h, CKL_SOFTLOCK_LOST_GONE);
    if (errno == ELOOP) return mark_lost(h, CKL_SOFTLOCK_LOST_REOWNED);
    rc = -errno;
    goto transient;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    goto transient;
  }
  char buf[CKL__SOFTLOCK_MARKER_MAX + 1];
  ckl__softlock_marker m;
  ssize_t n = -1;
  if (S_ISREG(st.st_mode) && st.st_uid == h->env.uid && st.st_dev == h->marker_st.st_dev &&
      st.st_size <= CKL__SOFTLOCK_MARKER_MAX) {
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t r = pread(fd, buf + got, sizeof buf - got, (off_t)got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += (size_t)r;
    }
    n = (ssize_t)got;
  }
  if (n < 0 || ckl__softlock_marker_parse(buf, (size_t)n, &m) != 0 ||
      strcmp(m.token, h->me.token) != 0) {
    ckl__close(fd);
    return mark_lost(h, CKL_SOFTLOCK_LOST_REOWNED);
  }
  int64_t wall = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_WALL);
  struct timespec ts[2] = {{.tv_sec = wall / 1000000000LL, .tv_nsec = wall % 1000000000LL}};
  ts[1] = ts[0];
  if (futimens(fd, ts) != 0) {
    rc = -errno;
    goto transient;
  }
  rc = CKL_FAILPOINT("softlock.heartbeat.after_touch");
  if (rc < 0) goto transient;
  /* The fd still pins the inode we stamped, so comparing it with what the
   * name leads to now is meaningful even where inode numbers are not
   * stable over time (sshfs). */
  struct stat now;
  if (fstatat(h->marker_dirfd, h->marker_name, &now, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) {
      ckl__close(fd);
      return mark_lost(h, CKL_SOFTLOCK_LOST_GONE);
    }
    rc = -errno;
    goto transient;
  }
  ckl__close(fd);
  fd = -1;
  if (now.st_dev != st.st_dev || now.st_ino != st.st_ino)
    return mark_lost(h, CKL_SOFTLOCK_LOST_REOWNED);
  /* The lease counts from before the stamp: conservative. */
  atomic_store(&h->last_ok_boot, boot);
  atomic_store(&h->last_ok_wall, wall);
  atomic_store(&h->due_boot, boot + h->interval_ns);
  return 0;
transient:
  ckl__close(fd);
  if (rc != CKL_EFAILPOINT && !ckl_is_domain_error(rc))
    ckl__log_warn("soft lock %s: heartbeat: %s (will retry)", h->path, strerror(-rc));
  atomic_store(&h->due_boot, boot + h->interval_ns / 4);
  return rc;
}

static void *hb_main(void *arg) {
  hold *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    int64_t wait = atomic_load(&h->due_boot) - ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
    if (wait > 0) {
      /* Sleep on the monotonic clock (condvars cannot use the boot clock);
       * after a suspend the boot clock has moved on and the lease check in
       * do_refresh sees it. Capped so a stepped test clock is seen soon. */
      if (wait > h->interval_ns) wait = h->interval_ns;
      int64_t until = ckl__now_monotonic_ns() + wait;
      struct timespec ts = {.tv_sec = until / 1000000000LL, .tv_nsec = until % 1000000000LL};
      pthread_cond_timedwait(&h->cv, &h->mu, &ts);
      continue;
    }
    pthread_mutex_unlock(&h->mu);
    int rc = do_refresh(h);
    pthread_mutex_lock(&h->mu);
    if (rc == CKL_ELOCKLOST) break;
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

/* Start the lease of the marker just created (boot0: boot clock read
 * before it was created). */
static int hb_start(hold *h, int64_t boot0) {
  atomic_store(&h->last_ok_boot, boot0);
  atomic_store(&h->last_ok_wall, ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_WALL));
  atomic_store(&h->due_boot, boot0 + h->interval_ns);
  atomic_store(&h->lost, CKL_SOFTLOCK_OK);
  h->stop = 0;
  if (h->hb_mode != CKL_SOFTLOCK_HEARTBEAT_THREAD) return 0;
  int rc = pthread_create(&h->thread, NULL, hb_main, h);
  if (rc != 0) {
    ckl__log_error("soft lock %s: heartbeat thread: %s", h->path, strerror(rc));
    return -rc;
  }
  h->thread_started = 1;
  return 0;
}

static void hb_stop(hold *h) {
  if (!h->thread_started) return;
  pthread_mutex_lock(&h->mu);
  h->stop = 1;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->thread, NULL);
  h->thread_started = 0;
}

/* Remove our own marker, unless it is no longer ours. */
static void remove_own(hold *h) {
  int rc = CKL_FAILPOINT("softlock.release.before_remove");
  if (rc < 0) return; /* left behind as by a crash */
  ckl__softlock_obs o;
  ckl__softlock_observe(&h->env, h->marker_dirfd, h->marker_name, &o);
  if (o.verdict == CKL__MK_ABSENT) return;
  if (!o.trusted || strcmp(o.m.token, h->me.token) != 0) {
    ckl__log_warn("soft lock %s: %s is no longer ours; leaving it", h->path, h->marker_name);
    return;
  }
  rc = ckl__softlock_evict(&h->env, h->marker_dirfd, h->marker_name, &o, 1);
  if (rc < 0) ckl__log_warn("soft lock %s: removing %s: %s", h->path, h->marker_name,
                            ckl_strerror(rc));
}

/* ---- readers and writers -------------------------------------------------------- */

/* Count the live reader markers, evicting stale ones and sweeping break
 * leftovers older than the TTL. Fills busy from the first live reader. */
static int scan_readers(hold *h, ckl_holder *busy) {
  int fd = openat(h->env.readers_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR *d = fdopendir(fd);
  if (!d) {
    int err = errno;
    ckl__close(fd);
    return -err;
  }
  int live = 0, rc = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (ckl__softlock_name_is(de->d_name, 'b')) {
      struct stat st;
      int64_t now = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_WALL);
      int64_t old = now - h->env.ttl_ns - ckl__softlock_slack_ns(h->env.ttl_ns);
      if (fstatat(h->env.readers_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec < old &&
          st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec < old)
        unlinkat(h->env.readers_fd, de->d_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
      continue;
    }
    if (!ckl__softlock_name_is(de->d_name, 'r')) continue; /* not ours to judge: .nfs*, junk */
    ckl__softlock_obs o;
    ckl__softlock_observe(&h->env, h->env.readers_fd, de->d_name, &o);
    if (o.verdict == CKL__MK_STALE) {
      rc = ckl__softlock_evict(&h->env, h->env.readers_fd, de->d_name, &o, 0);
      if (rc < 0) break;
      if (rc == 1) continue;
      ckl__softlock_observe(&h->env, h->env.readers_fd, de->d_name, &o);
    }
    if (o.verdict == CKL__MK_ABSENT) continue;
    if (live++ == 0 && busy) {
      char target[PATH_MAX];
      snprintf(target, sizeof target, "%s/%s", h->readers_path, de->d_name);
      ckl__softlock_obs_holder(&h->env, &o, target, busy);
    }
  }
  closedir(d);
  return rc < 0 ? rc : live;
}

static void write_target(hold *h, char *buf, size_t len) {
  snprintf(buf, len, "%s.write", h->path);
}

static int acquire_writer(hold *h, const ckl_softlock_opts *o, ckl__deadline *d) {
  char target[PATH_MAX];
  write_target(h, target, sizeof target);
  for (;;) {
    /* Phase 1: claim P.write under the state mutex (I2, I3). */
    mutex_hold mh;
    int rc = mutex_lock(h, d, &mh, o->busy_holder);
    if (rc < 0) return rc;
    ckl__softlock_obs w;
    ckl__softlock_observe(&h->env, h->env.dir_fd, h->name_write, &w);
    if (w.verdict == CKL__MK_STALE) {
      if (mutex_fresh(h, &mh))
        rc = ckl__softlock_evict(&h->env, h->env.dir_fd, h->name_write, &w, 0);
      mutex_unlock(h, &mh);
      if (rc < 0) return rc;
      continue;
    }
    if (w.verdict == CKL__MK_LIVE) {
      mutex_unlock(h, &mh);
      if (!ckl__deadline_backoff(d)) {
        ckl__softlock_obs_holder(&h->env, &w, target, o->busy_holder);
        return busy_code(d);
      }
      continue;
    }
    rc = CKL_FAILPOINT("softlock.writer.before_claim");
    if (rc == 0) rc = new_marker(h, o->operation, &h->me);
    if (rc < 0 || !mutex_fresh(h, &mh)) {
      mutex_unlock(h, &mh);
      if (rc < 0) return rc;
      continue;
    }
    int64_t boot0 = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
    rc = ckl__softlock_marker_create(&h->env, h->env.dir_fd, h->name_write, &h->me,
                                     &h->marker_st);
    if (rc == -EEXIST) {
      /* Only a process outside the protocol (or one that lost the state
       * mutex to an eviction) creates P.write without the mutex. */
      mutex_unlock(h, &mh);
      if (!ckl__deadline_backoff(d)) return busy_code(d);
      continue;
    }
    if (rc < 0) {
      mutex_unlock(h, &mh);
      return rc;
    }
    memcpy(h->marker_name, h->name_write, sizeof h->marker_name);
    h->marker_dirfd = h->env.dir_fd;
    rc = CKL_FAILPOINT("softlock.writer.after_claim");
    mutex_unlock(h, &mh);
    if (rc == 0) rc = hb_start(h, boot0);
    if (rc < 0) {
      remove_own(h);
      return rc;
    }
    /* Phase 2: from here on no new reader gets in (I1); wait for the
     * readers already in to leave. Our heartbeat keeps P.write fresh. */
    for (;;) {
      rc = CKL_FAILPOINT("softlock.writer.before_scan");
      if (rc == 0 && lease_check(h) < 0) rc = CKL_ELOCKLOST;
      if (rc == 0) rc = scan_readers(h, o->busy_holder);
      if (rc == 0) return 0;
      if (rc > 0 && ckl__deadline_backoff(d)) continue;
      hb_stop(h);
      if (rc != CKL_ELOCKLOST) remove_own(h);
      if (rc > 0) return busy_code(d);
      if (rc != CKL_ELOCKLOST) return rc;
      /* Our claim was evicted while we waited (we were stalled longer
       * than a lease): start over with a new claim. */
      ckl__log_warn("soft lock %s: writer claim lost while draining readers; retrying", h->path);
      break;
    }
  }
}

static int acquire_reader(hold *h, const ckl_softlock_opts *o, ckl__deadline *d) {
  char target[PATH_MAX];
  write_target(h, target, sizeof target);
  for (;;) {
    int rc = new_marker(h, o->operation, &h->me);
    if (rc < 0) return rc;
    snprintf(h->marker_name, sizeof h->marker_name, "r.%s", h->me.token);
    h->marker_dirfd = h->env.readers_fd;
    int64_t boot0 = ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
    /* I1: our marker first, then the look at P.write. */
    rc = ckl__softlock_marker_create(&h->env, h->env.readers_fd, h->marker_name, &h->me,
                                     &h->marker_st);
    if (rc < 0) return rc;
    rc = CKL_FAILPOINT("softlock.reader.after_create");
    ckl__softlock_obs w;
    if (rc == 0) ckl__softlock_observe(&h->env, h->env.dir_fd, h->name_write, &w);
    if (rc == 0 && w.verdict == CKL__MK_ABSENT) {
      rc = CKL_FAILPOINT("softlock.reader.after_check");
      if (rc == 0) rc = hb_start(h, boot0);
      if (rc == 0) return 0;
    }
    /* A unique name nobody else creates: a plain unlink is safe. */
    unlinkat(h->env.readers_fd, h->marker_name, 0);
    if (rc < 0) return rc;
    if (w.verdict == CKL__MK_STALE) {
      /* Evicting P.write needs the mutex (I3); look again under it. */
      mutex_hold mh;
      rc = mutex_lock(h, d, &mh, o->busy_holder);
      if (rc < 0) return rc;
      ckl__softlock_observe(&h->env, h->env.dir_fd, h->name_write, &w);
      if (w.verdict == CKL__MK_STALE && mutex_fresh(h, &mh))
        rc = ckl__softlock_evict(&h->env, h->env.dir_fd, h->name_write, &w, 0);
      mutex_unlock(h, &mh);
      if (rc < 0) return rc;
      continue;
    }
    if (!ckl__deadline_backoff(d)) {
      ckl__softlock_obs_holder(&h->env, &w, target, o->busy_holder);
      return busy_code(d);
    }
  }
}

/* ---- public API ------------------------------------------------------------------ */

int ckl_softlock_acquire(ckl_softlock *lk, const char *path, ckl_lock_mode mode,
                         const ckl_softlock_opts *opts) {
  static const ckl_softlock_opts defaults = {.timeout_ms = CKL_TRY};
  if (!opts) opts = &defaults;
  if (!lk || !path || !*path || (mode != CKL_LOCK_SHARED && mode != CKL_LOCK_EXCLUSIVE) ||
      opts->timeout_ms < CKL_FOREVER ||
      (opts->heartbeat != CKL_SOFTLOCK_HEARTBEAT_THREAD &&
       opts->heartbeat != CKL_SOFTLOCK_HEARTBEAT_EXTERNAL))
    return -EINVAL;
  if (lk->hold) {
    hold *h = lk->hold;
    if (strcmp(h->path, path) != 0) return -EINVAL; /* a struct holds one lock */
    if (h->mode != mode) return -EDEADLK;
    int rc = lease_check(h);
    if (rc < 0) return rc;
    h->depth++;
    return 0;
  }
  pthread_once(&reg_once, reg_init);
  hold *h = calloc(1, sizeof *h);
  if (!h) return -ENOMEM;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&h->mu, NULL);
  int rc = setup(h, path, opts);
  if (rc == 0) {
    h->mode = mode;
    ckl__deadline d;
    ckl__deadline_init_files(&d, opts->timeout_ms); /* no spin: NFS */
    rc = mode == CKL_LOCK_EXCLUSIVE ? acquire_writer(h, opts, &d) : acquire_reader(h, opts, &d);
  }
  if (rc < 0) {
    hold_free(h);
    return rc;
  }
  h->depth = 1;
  reg_add(h);
  atomic_store(&h->published, 1);
  lk->hold = h;
  /* A loss noticed during the acquisition (possible only in the writer's
   * phase 2, where it restarts) is not reported; one from now on is. */
  return 0;
}

int ckl_softlock_release(ckl_softlock *lk) {
  if (!lk || !lk->hold) return 0;
  hold *h = lk->hold;
  if (--h->depth > 0) return 0;
  lk->hold = NULL;
  if (is_forked(h)) {
    /* The markers and the thread are the parent's. Free our copy only. */
    hold_free(h);
    return 0;
  }
  reg_remove(h);
  hb_stop(h);
  int rc = lease_check(h);
  if (rc == 0) remove_own(h);
  /* A lost marker is left alone: it is gone, someone else's, or ages out
   * after the TTL; removing it could race its evictor. */
  hold_free(h);
  return rc;
}

int ckl_softlock_check(const ckl_softlock *lk) {
  if (!lk || !lk->hold) return -EINVAL;
  return lease_check(lk->hold);
}

int ckl_softlock_refresh(ckl_softlock *lk) {
  if (!lk || !lk->hold) return -EINVAL;
  return do_refresh(lk->hold);
}

int64_t ckl_softlock_due_ns(const ckl_softlock *lk) {
  if (!lk || !lk->hold) return -EINVAL;
  return atomic_load(&lk->hold->due_boot);
}

int64_t ckl_softlock_due_in_ms(const ckl_softlock *lk) {
  if (!lk || !lk->hold) return -EINVAL;
  hold *h = lk->hold;
  int64_t left = atomic_load(&h->due_boot) - ckl__softlock_now(&h->env, CKL_SOFTLOCK_CLOCK_BOOT);
  return left > 0 ? (left + 999999) / 1000000 : 0;
}

int ckl_softlock_info(const ckl_softlock *lk, ckl_holder *out) {
  if (!lk || !lk->hold || !out) return -EINVAL;
  hold *h = lk->hold;
  memset(out, 0, sizeof *out);
  out->known = 1;
  memcpy(out->token, h->me.token, sizeof out->token);
  memcpy(out->host, h->me.host, sizeof out->host);
  if (strcmp(h->me.op, "-") != 0) memcpy(out->operation, h->me.op, sizeof h->me.op);
  out->pid = h->me.pid;
  out->tid = 0;
  out->since_ns = h->me.created_ns;
  out->lease_expiry_ns = atomic_load(&h->last_ok_wall) + h->env.ttl_ns;
  if (h->marker_dirfd == h->env.readers_fd)
    (void)ckl__pathf(out->target, sizeof out->target, "%s/%s", h->readers_path, h->marker_name);
  else
    (void)ckl__pathf(out->target, sizeof out->target, "%s.write", h->path); /* a cut label */
  return 0;
}

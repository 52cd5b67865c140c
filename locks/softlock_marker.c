/*
 * locks/softlock_marker.c - marker files of the soft lock: the bounded
 * format, observing a marker without trusting it, creating one, evicting
 * one. The protocol that uses them is in locks/softlock.c.
 *
 * Trust. A marker is data written by whoever can write the lock directory,
 * read over a filesystem that may be shared with other hosts. Nothing in
 * it is trusted until it passes every check: it must be a regular file
 * (lstat first, so a FIFO, socket or device is never even opened), opened
 * O_NOFOLLOW|O_NONBLOCK and fstat-checked again, owned by our uid, at most
 * 1 KiB, and parse completely. A marker that fails any check is not
 * "free": it counts as held by an unknown holder until its mtime ages past
 * the TTL, except for objects we never create (symlinks, FIFOs,
 * directories...), which cannot be anyone's marker and are evicted at
 * once. Eviction renames and unlinks the object itself; it never follows
 * a symlink, so a planted link to a victim file cannot touch the victim.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "locks/softlock_internal.h"

/* ---- format ----------------------------------------------------------------- */

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
static int is_graph(unsigned char c) { return c >= 0x21 && c <= 0x7e; }

static int valid_token(const char *s, size_t n) {
  if (n != CKL_TOKEN_HEX_LEN) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_hex(s[i])) return 0;
  return 1;
}
static int valid_graph(const char *s, size_t n, size_t max) {
  if (n == 0 || n > max) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_graph((unsigned char)s[i])) return 0;
  return 1;
}
static int valid_boot(const char *s, size_t n) {
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_hex(s[i]) && s[i] != '-') return 0;
  return 1;
}

int ckl__softlock_marker_format(const ckl__softlock_marker *m, char *buf, size_t len) {
  if (!m || !buf) return -EINVAL;
  size_t hl = strnlen(m->host, sizeof m->host), bl = strnlen(m->boot, sizeof m->boot);
  size_t ol = strnlen(m->op, sizeof m->op);
  if (!valid_token(m->token, strnlen(m->token, sizeof m->token)) ||
      !valid_graph(m->host, hl, 63) || !valid_boot(m->boot, bl) ||
      !valid_graph(m->op, ol, 31) || m->pid < 1 || m->pid > CKL__SOFTLOCK_PID_MAX ||
      m->created_ns < 1)
    return -EINVAL;
  int n = snprintf(buf, len,
                   CKL__SOFTLOCK_MAGIC "\ntoken %s\nhost %s\nboot %s\npidns %llu\npid %lld\n"
                                       "created %lld\nop %s\n",
                   m->token, m->host, m->boot, (unsigned long long)m->pidns, (long long)m->pid,
                   (long long)m->created_ns, m->op);
  if (n < 0) return -EINVAL;
  if ((size_t)n >= len || n > CKL__SOFTLOCK_MARKER_MAX) return -ENAMETOOLONG;
  return n;
}

/* A cursor over the bytes being parsed; every read is bounds-checked. */
typedef struct cursor {
  const char *p;
  size_t left;
} cursor;

/* Consume "key " and the value up to the newline; val and vlen point into the
 * buffer. 0, or -1 if the line is not there. */
static int take_line(cursor *c, const char *key, const char **val, size_t *vlen) {
  size_t kl = strlen(key);
  if (c->left < kl + 1 || memcmp(c->p, key, kl) != 0 || c->p[kl] != ' ') return -1;
  const char *v = c->p + kl + 1;
  size_t room = c->left - kl - 1;
  const char *nl = memchr(v, '\n', room);
  if (!nl) return -1;
  *val = v;
  *vlen = (size_t)(nl - v);
  c->left -= (size_t)(nl + 1 - c->p);
  c->p = nl + 1;
  return 0;
}

/* Strict decimal: digits only, no sign, no leading zero (except "0"), at
 * most max_digits, value <= max. */
static int parse_u64(const char *s, size_t n, size_t max_digits, uint64_t max, uint64_t *out) {
  if (n == 0 || n > max_digits || (n > 1 && s[0] == '0')) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  if (v > max) return -1;
  *out = v;
  return 0;
}

static void copy_field(char *dst, const char *src, size_t n) {
  memcpy(dst, src, n);
  dst[n] = '\0';
}

int ckl__softlock_marker_parse(const void *buf, size_t len, ckl__softlock_marker *out) {
  if (!buf || !out || len > CKL__SOFTLOCK_MARKER_MAX) return CKL_ECORRUPT;
  cursor c = {buf, len};
  static const char magic[] = CKL__SOFTLOCK_MAGIC "\n";
  if (len < sizeof magic - 1 || memcmp(buf, magic, sizeof magic - 1) != 0) return CKL_ECORRUPT;
  c.p += sizeof magic - 1;
  c.left -= sizeof magic - 1;
  ckl__softlock_marker m;
  memset(&m, 0, sizeof m);
  const char *v;
  size_t n;
  uint64_t u;
  if (take_line(&c, "token", &v, &n) < 0 || !valid_token(v, n)) return CKL_ECORRUPT;
  copy_field(m.token, v, n);
  if (take_line(&c, "host", &v, &n) < 0 || !valid_graph(v, n, 63)) return CKL_ECORRUPT;
  copy_field(m.host, v, n);
  if (take_line(&c, "boot", &v, &n) < 0 || !valid_boot(v, n)) return CKL_ECORRUPT;
  copy_field(m.boot, v, n);
  if (take_line(&c, "pidns", &v, &n) < 0 || parse_u64(v, n, 20, UINT64_MAX, &u) < 0)
    return CKL_ECORRUPT;
  m.pidns = u;
  if (take_line(&c, "pid", &v, &n) < 0 || parse_u64(v, n, 7, CKL__SOFTLOCK_PID_MAX, &u) < 0 ||
      u == 0)
    return CKL_ECORRUPT;
  m.pid = (int64_t)u;
  if (take_line(&c, "created", &v, &n) < 0 || parse_u64(v, n, 19, INT64_MAX, &u) < 0 || u == 0)
    return CKL_ECORRUPT;
  m.created_ns = (int64_t)u;
  if (take_line(&c, "op", &v, &n) < 0 || !valid_graph(v, n, 31)) return CKL_ECORRUPT;
  copy_field(m.op, v, n);
  if (c.left != 0) return CKL_ECORRUPT;
  *out = m;
  return 0;
}

/* ---- identity ----------------------------------------------------------------- */

static pthread_once_t boot_once = PTHREAD_ONCE_INIT;
static char boot_id[64] = "-";
static void boot_init(void) {
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char b[64];
  ssize_t n = read(fd, b, sizeof b - 1);
  ckl__close(fd);
  if (n <= 0) return;
  while (n > 0 && b[n - 1] == '\n') n--;
  if (valid_boot(b, (size_t)n)) copy_field(boot_id, b, (size_t)n);
}
const char *ckl__softlock_boot_id(void) {
  pthread_once(&boot_once, boot_init);
  return boot_id;
}

uint64_t ckl__softlock_pidns(void) {
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) != 0) return 0;
  return (uint64_t)st.st_ino;
}

int64_t ckl__softlock_now(const ckl__softlock_env *e, ckl_softlock_clock_id which) {
  if (e->clock) return e->clock(which, e->clock_ctx);
  return which == CKL_SOFTLOCK_CLOCK_BOOT ? ckl__now_boottime_ns() : ckl__now_realtime_ns();
}

/* ---- observe ------------------------------------------------------------------ */

static int64_t ts_ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec; }

static const char *where(const ckl__softlock_env *e, int dirfd) {
  return dirfd == e->readers_fd ? e->readers_path : e->dir_path;
}

static void take_stat(ckl__softlock_obs *o, const struct stat *st) {
  o->type = st->st_mode & S_IFMT;
  o->dev = st->st_dev;
  o->ino = st->st_ino;
  o->uid = st->st_uid;
  o->size = st->st_size;
  o->mtime = st->st_mtim;
  o->ctime = st->st_ctim;
}

/* Is the holder of a trusted marker a dead process of this very host,
 * boot and pid namespace? Only then can kill() speak for it: the same host
 * name on another machine, another boot, or another container's pid
 * namespace would make a live holder look dead. */
static int holder_dead(const ckl__softlock_env *e, const ckl__softlock_marker *m) {
  if (strcmp(m->host, e->host) != 0 || strcmp(m->boot, e->boot) != 0 ||
      strcmp(m->boot, "-") == 0 || m->pidns != e->pidns || e->pidns == 0)
    return 0;
  return kill((pid_t)m->pid, 0) != 0 && errno == ESRCH;
}


void ckl__softlock_observe(const ckl__softlock_env *e, int dirfd, const char *name,
                           ckl__softlock_obs *o) {
  memset(o, 0, sizeof *o);
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return; /* ABSENT */
    ckl__log_error("soft lock marker %s/%s: lstat: %s (counted as held)", where(e, dirfd), name,
                   strerror(errno));
    o->verdict = CKL__MK_LIVE;
    return;
  }
  take_stat(o, &st);
  if (!S_ISREG(st.st_mode)) {
    o->verdict = CKL__MK_STALE;
    o->why = CKL__WHY_NOT_MARKER;
    return;
  }
  /* Attributes from the open fd are the fresh ones on NFS (close-to-open
   * revalidation); lstat may have answered from the attribute cache. */
  if (st.st_uid == e->uid) {
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) {
        memset(o, 0, sizeof *o);
        return;
      }
      /* ELOOP: replaced by a symlink since the lstat; the next look sees it. */
      ckl__log_warn("soft lock marker %s/%s: open: %s (counted as held)", where(e, dirfd), name,
                    strerror(errno));
      o->verdict = CKL__MK_LIVE;
      return;
    }
    struct stat fst;
    if (fstat(fd, &fst) == 0) {
      take_stat(o, &fst);
      if (!S_ISREG(fst.st_mode)) {
        ckl__close(fd);
        o->verdict = CKL__MK_STALE;
        o->why = CKL__WHY_NOT_MARKER;
        return;
      }
      /* One byte more than a valid marker can have: a file that grew past
       * it is recognised without reading it. */
      char buf[CKL__SOFTLOCK_MARKER_MAX + 1];
      ssize_t n = fst.st_uid == e->uid && fst.st_size <= CKL__SOFTLOCK_MARKER_MAX
                      ? ckl__pread_upto(fd, buf, sizeof buf, 0)
                      : -1;
      if (n >= 0 && ckl__softlock_marker_parse(buf, (size_t)n, &o->m) == 0) o->parsed = 1;
    }
    ckl__close(fd);
    o->trusted = o->parsed && o->uid == e->uid;
  }
  int64_t age = ckl__softlock_now(e, CKL_SOFTLOCK_CLOCK_WALL) - ts_ns(o->mtime);
  if (age > e->ttl_ns + ckl__softlock_slack_ns(e->ttl_ns)) {
    o->verdict = CKL__MK_STALE;
    o->why = CKL__WHY_TTL;
  } else if (age < -e->ttl_ns) {
    /* A stamp from beyond any plausible clock skew: nobody refreshes it
     * into the present, so it would block forever. */
    o->verdict = CKL__MK_STALE;
    o->why = CKL__WHY_FUTURE;
  } else if (o->trusted && holder_dead(e, &o->m)) {
    o->verdict = CKL__MK_STALE;
    o->why = CKL__WHY_DEAD;
  } else {
    o->verdict = CKL__MK_LIVE;
  }
  if (o->verdict == CKL__MK_STALE)
    ckl__log_debug("soft lock marker %s/%s is stale (%s, age %lld ms)", where(e, dirfd), name,
                   o->why == CKL__WHY_TTL      ? "older than the TTL"
                   : o->why == CKL__WHY_FUTURE ? "stamped in the future"
                                               : "its holder is dead",
                   (long long)(age / 1000000));
}

void ckl__softlock_obs_holder(const ckl__softlock_env *e, const ckl__softlock_obs *o,
                              const char *target, ckl_holder *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (target) ckl__strlcpy(out->target, target, sizeof out->target);
  if (!o->trusted) return;
  out->known = 1;
  memcpy(out->token, o->m.token, sizeof out->token);
  memcpy(out->host, o->m.host, sizeof out->host);
  if (strcmp(o->m.op, "-") != 0) memcpy(out->operation, o->m.op, sizeof o->m.op);
  out->pid = o->m.pid;
  out->since_ns = o->m.created_ns;
  out->lease_expiry_ns = ts_ns(o->mtime) + e->ttl_ns;
}

int ckl__softlock_name_is(const char *name, char prefix) {
  if (name[0] != prefix || name[1] != '.') return 0;
  return strlen(name + 2) == CKL_TOKEN_HEX_LEN && valid_token(name + 2, CKL_TOKEN_HEX_LEN);
}

/* ---- create ------------------------------------------------------------------- */

int ckl__softlock_marker_create(const ckl__softlock_env *e, int dirfd, const char *name,
                                const ckl__softlock_marker *m, struct stat *st) {
  char buf[CKL__SOFTLOCK_MARKER_MAX + 1];
  int len = ckl__softlock_marker_format(m, buf, sizeof buf);
  if (len < 0) return len;
  /* O_EXCL fails on anything at the name, a dangling symlink included, so
   * a planted link can never redirect the create (O_NOFOLLOW is belt and
   * braces). */
  int fd = -1;
  for (int attempt = 0; fd < 0; attempt++) {
    fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) break;
    int err = errno;
    /* SFTP has no "exists" status: sshfs reports a lost O_EXCL race as
     * EPERM (other network filesystems have similar mappings). If the name
     * is taken now, that is what the failure meant; if it is free again
     * (the winner was quick), try again a few times before believing it. */
    if (err != EEXIST && err != ENOENT) {
      struct stat st2;
      if (fstatat(dirfd, name, &st2, AT_SYMLINK_NOFOLLOW) == 0) err = EEXIST;
      else if (attempt < 3) continue;
    }
    if (err != EEXIST)
      ckl__log_error("soft lock marker %s/%s: create: %s", where(e, dirfd), name, strerror(err));
    return -err;
  }
  int rc = ckl__write_all(fd, buf, (size_t)len);
  if (rc == 0) {
    int64_t now = ckl__softlock_now(e, CKL_SOFTLOCK_CLOCK_WALL);
    struct timespec ts[2] = {{.tv_sec = now / 1000000000LL, .tv_nsec = now % 1000000000LL}};
    ts[1] = ts[0];
    if (futimens(fd, ts) != 0) rc = -errno;
  }
  if (rc == 0 && fstat(fd, st) != 0) rc = -errno;
  /* close() is where NFS flushes and reports write errors. */
  if (close(fd) != 0 && rc == 0 && errno != EINTR) rc = -errno;
  if (rc < 0) {
    ckl__log_error("soft lock marker %s/%s: write: %s", where(e, dirfd), name, strerror(-rc));
    /* Our own fresh name: nobody else creates it while it exists. */
    unlinkat(dirfd, name, 0);
  }
  return rc;
}

/* ---- evict -------------------------------------------------------------------- */

/* Is b (after the rename) the marker a (judged before it)? The same kind
 * of object with the same owner, the same token (a random 128-bit
 * identity) or, for an unparsed file, the same size; and - unless it is
 * our own marker, whose heartbeat is stopped - the same stamp. A
 * heartbeat's stamp moves the mtime by about the marker's age, more than
 * a TTL, so a tolerance of the timestamp slack cannot hide one (and it
 * absorbs coarse server timestamps). */
static int same_marker(const ckl__softlock_env *e, const ckl__softlock_obs *a,
                       const ckl__softlock_obs *b, int own) {
  if (b->verdict == CKL__MK_ABSENT || a->type != b->type || a->dev != b->dev ||
      a->uid != b->uid || a->parsed != b->parsed)
    return 0;
  int64_t d = ts_ns(a->mtime) - ts_ns(b->mtime), slack = ckl__softlock_slack_ns(e->ttl_ns);
  if (!own && (d > slack || -d > slack)) return 0;
  if (a->parsed) return strcmp(a->m.token, b->m.token) == 0;
  return a->size == b->size;
}

/*
 * Why rename first: unlinking by name would remove whatever is at the name
 * at that instant, which may be a marker created after we looked. A rename
 * to a name only we know takes the object out of every other process's
 * reach in one atomic step; what we then hold can be inspected at leisure.
 * If it is not the marker we judged (a heartbeat stamped it after we read
 * it, or it was evicted and the name re-claimed before our rename), it
 * goes back with link(), which - unlike rename() - refuses to overwrite a
 * marker claimed at the name meanwhile (and, unlike RENAME_NOREPLACE,
 * works on NFS).
 *
 * A heartbeat racing us stamps through its own fd and then checks that its
 * name still leads to its inode; after our rename it does not, so the
 * holder learns it lost the lock. Before our rename, its stamp changes the
 * mtime, and our re-check puts the marker back. Either way one owner.
 */
int ckl__softlock_evict(const ckl__softlock_env *e, int dirfd, const char *name,
                        const ckl__softlock_obs *seen, int own) {
  char tok[CKL_TOKEN_HEX_LEN + 1];
  int rc = ckl__random_token(tok);
  if (rc < 0) return rc;
  char bname[CKL_TOKEN_HEX_LEN + 3];
  snprintf(bname, sizeof bname, "b.%s", tok);
  rc = own ? 0 : CKL_FAILPOINT("softlock.break.before_rename");
  if (rc < 0) return rc;
  if (renameat(dirfd, name, e->readers_fd, bname) != 0) {
    if (errno == ENOENT) return 0; /* evicted or released by someone else */
    rc = -errno;
    ckl__log_error("soft lock marker %s/%s: evict: rename: %s", where(e, dirfd), name,
                   strerror(errno));
    return rc;
  }
  /* An error here leaves b.<token> behind, exactly like a crash would;
   * writers sweep such leftovers once they are older than the TTL. */
  rc = own ? 0 : CKL_FAILPOINT("softlock.break.after_rename");
  if (rc < 0) return rc;
  ckl__softlock_obs now;
  ckl__softlock_observe(e, e->readers_fd, bname, &now);
  if (same_marker(e, seen, &now, own)) {
    rc = own ? 0 : CKL_FAILPOINT("softlock.break.before_unlink");
    if (rc < 0) return rc;
    if (unlinkat(e->readers_fd, bname, now.type == S_IFDIR ? AT_REMOVEDIR : 0) != 0)
      ckl__log_warn("soft lock: evicted %s/%s, but removing it as %s/%s failed: %s",
                    where(e, dirfd), name, e->readers_path, bname, strerror(errno));
    return 1;
  }
  if (now.verdict == CKL__MK_ABSENT) return 0;
  ckl__log_warn("soft lock marker %s/%s changed while being evicted (a heartbeat, or a new "
                "holder); putting it back",
                where(e, dirfd), name);
  if (linkat(e->readers_fd, bname, dirfd, name, 0) != 0)
    ckl__log_warn("soft lock marker %s/%s: putting back: %s; its holder will find it gone",
                  where(e, dirfd), name, strerror(errno));
  unlinkat(e->readers_fd, bname, 0);
  return 0;
}

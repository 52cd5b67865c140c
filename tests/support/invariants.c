/*
 * tests/support/invariants.c - the store invariant checker (invariants.h).
 *
 * Each check returns 0 or its CKL_INV_E* code with `why` filled; the first
 * failure wins. Everything here only reads: probes instead of locks, no
 * lock file created (ckl_path_lock_probe never creates one), no state
 * written (ckl_roster_list reaps records of dead processes, which is what
 * any reader of the roster does and changes no live holder's record).
 */
#include "invariants.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datastore/digest_set.h"
#include "datastore/store_internal.h"

/* STORE/.lock: process locker, GC lock, freeze, deleter, entry mutex
 * (proclock.h, freeze.h). */
#define LOCK_BYTES 5
#define GC_BYTE 1

static int whyf(char *why, size_t len, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int whyf(char *why, size_t len, int rc, const char *fmt, ...) {
  if (why && len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* ---- (a) referenced chunks ------------------------------------------------ */

typedef struct checker {
  ckl_store *st;
  ckl__digest_set seen; /* chunks read once already */
  char *why;
  size_t whylen;
} checker;

static int check_chunk(checker *c, const ckl_digest *d, const char *referrer) {
  if (ckl__digest_set_contains(&c->seen, d)) return 0;
  void *data = NULL;
  size_t len = 0;
  int rc = ckl_chunk_read(c->st->chunks, d, &data, &len);
  free(data);
  char hex[CKL_DIGEST_HEX_LEN + 1];
  ckl_digest_to_hex(d, hex);
  if (rc == -ENOENT)
    return whyf(c->why, c->whylen, CKL_INV_ECHUNK_MISSING, "chunk %s referenced by %s is missing",
                hex, referrer);
  if (rc < 0)
    return whyf(c->why, c->whylen, CKL_INV_ECHUNK_CORRUPT,
                "chunk %s referenced by %s does not read back as its digest: %s", hex, referrer,
                ckl_err_name(rc));
  if (ckl__digest_set_insert(&c->seen, d) < 0)
    return whyf(c->why, c->whylen, CKL_INV_ESTORE, "out of memory");
  return 0;
}

static int check_snapshot(checker *c, const ckl_snapshot_info *si) {
  char name[CKL_SNAP_NAME_MAX + 1];
  ckl_snapshot_name_format(&si->name, name, sizeof name);
  json_t *m = NULL;
  int rc = ckl_manifest_load(c->st, &si->name, &m);
  json_decref(m);
  if (rc < 0)
    return whyf(c->why, c->whylen, CKL_INV_EINDEX, "manifest of finished snapshot %s: %s", name,
                ckl_err_name(rc));
  for (size_t i = 0; i < si->nfiles; i++) {
    char path[PATH_MAX], ref[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/%s", c->st->path, name, si->files[i]);
    snprintf(ref, sizeof ref, "%s/%s", name, si->files[i]);
    ckl_index *ix = NULL;
    rc = ckl_index_open(path, &ix);
    if (rc < 0)
      return whyf(c->why, c->whylen, CKL_INV_EINDEX, "index %s of finished snapshot %s: %s", path,
                  name, ckl_err_name(rc));
    for (size_t k = 0; rc == 0 && k < ckl_index_count(ix); k++)
      rc = check_chunk(c, ckl_index_digest(ix, k), ref);
    ckl_index_close(ix);
    if (rc < 0) return rc;
  }
  return 0;
}

static int check_referenced(checker *c, const ckl_inv_opts *o) {
  ckl_group_name *groups = NULL;
  size_t ng = 0;
  int rc = ckl_group_list(c->st, &groups, &ng);
  if (rc < 0)
    return whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s: cannot list groups: %s", c->st->path,
                ckl_err_name(rc));
  for (size_t g = 0; rc == 0 && g < ng; g++) {
    ckl_snapshot_info *list = NULL;
    size_t n = 0;
    int lr = ckl_snapshot_list(c->st, &groups[g], &list, &n);
    if (lr == -ENOENT) continue; /* forgotten while we listed */
    if (lr < 0) {
      rc = whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s/%s/%s: cannot list: %s", c->st->path,
                groups[g].type, groups[g].id, ckl_err_name(lr));
      break;
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
      if (list[i].state == CKL_SNAP_COMPLETE) rc = check_snapshot(c, &list[i]);
    ckl_snapshot_list_free(list, n);
  }
  free(groups);
  for (size_t i = 0; rc == 0 && o && i < o->nlive_chunks; i++)
    rc = check_chunk(c, &o->live_chunks[i], "a backup in progress");
  return rc;
}

/* ---- (b) manifest counters ------------------------------------------------- */

static int check_counters(checker *c, const ckl_inv_opts *o) {
  for (size_t i = 0; o && i < o->ncounters; i++) {
    const ckl_inv_counter *k = &o->counters[i];
    const char *key = k->key ? k->key : CKL_INV_COUNTER_KEY;
    ckl_snapshot_name n;
    if (ckl_snapshot_name_parse(k->snapshot, &n) < 0)
      return whyf(c->why, c->whylen, CKL_INV_ESTORE, "counter: bad snapshot name \"%s\"",
                  k->snapshot);
    json_t *m = NULL;
    int rc = ckl_manifest_load(c->st, &n, &m);
    if (rc == -ENOENT && k->gone_ok) continue;
    if (rc < 0)
      return whyf(c->why, c->whylen, CKL_INV_ELOST_UPDATE,
                  "counter %s of %s: manifest cannot be loaded (%s); expected %lld", key,
                  k->snapshot, ckl_err_name(rc), (long long)k->expected);
    json_t *v = json_object_get(json_object_get(m, "unprotected"), key);
    int64_t got = json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
    bool bad_type = v && !json_is_integer(v);
    json_decref(m);
    if (bad_type || got != k->expected)
      return whyf(c->why, c->whylen, CKL_INV_ELOST_UPDATE,
                  "counter %s of %s/index.json is %lld, expected %lld: an update was lost", key,
                  k->snapshot, (long long)got, (long long)k->expected);
  }
  return 0;
}

/* ---- (c) no lock outlives its holder --------------------------------------- */

static int probe_lock_files(checker *c, const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s: %s", dir,
                                            strerror(errno));
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat sb;
    if (lstat(p, &sb) != 0) continue; /* unlinked by its releasing holder */
    if (S_ISDIR(sb.st_mode)) {
      rc = probe_lock_files(c, p);
      continue;
    }
    ckl_holder h = {0};
    int pr = ckl_path_lock_probe(p, CKL_LOCK_EXCLUSIVE, &h);
    if (pr == CKL_EBUSY) {
      char hs[256];
      ckl_holder_format(&h, hs, sizeof hs);
      rc = whyf(c->why, c->whylen, CKL_INV_ELOCK_HELD, "lock %s is still held (%s)", p,
                h.known ? hs : "holder unknown");
    }
  }
  closedir(d);
  return rc;
}

static int probe_store_lock(checker *c) {
  int fd = open(c->st->lock_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s: %s", c->st->lock_path, strerror(errno));
  static const char *const what[LOCK_BYTES] = {"process locker", "GC lock", "freeze",
                                               "deleter guard", "freeze entry mutex"};
  int rc = 0;
  for (int b = 0; rc == 0 && b < LOCK_BYTES; b++) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = b, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
      rc = whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s: F_OFD_GETLK: %s", c->st->lock_path,
                strerror(errno));
    else if (fl.l_type != F_UNLCK)
      rc = whyf(c->why, c->whylen, CKL_INV_ELOCK_HELD, "%s byte %d (%s) is still held (%s)",
                c->st->lock_path, b, what[b], fl.l_type == F_WRLCK ? "exclusive" : "shared");
  }
  close(fd);
  return rc;
}

typedef struct roster_scan {
  const ckl_inv_opts *o;
  char line[512];
  int bad;
} roster_scan;

static int roster_cb(const ckl_roster_entry *e, void *arg) {
  roster_scan *s = arg;
  for (size_t i = 0; i < s->o->npids; i++)
    if (e->parsed && e->pid == s->o->pids[i]) return 0;
  snprintf(s->line, sizeof s->line, "roster record %s: %s pid %lld target \"%s\"%s", e->token,
           e->parsed ? e->operation : "(unparseable)", (long long)e->pid, e->target,
           e->pid == getpid() ? " (this process)" : "");
  s->bad = 1;
  return 1;
}

static int check_quiescent(checker *c, const ckl_inv_opts *o) {
  int rc = probe_lock_files(c, c->st->locks_root);
  if (rc == 0) rc = probe_store_lock(c);
  if (rc < 0) return rc;
  roster_scan s = {.o = o};
  int lr = ckl_roster_list(c->st->path, roster_cb, &s);
  if (s.bad)
    return whyf(c->why, c->whylen, CKL_INV_EROSTER, "%s: %s outlived its operation", c->st->path,
                s.line);
  if (lr < 0)
    return whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s: roster: %s", c->st->path, ckl_err_name(lr));
  ckl_roster_gc gs;
  if ((lr = ckl_roster_gc_state(c->st->path, &gs)) < 0)
    return whyf(c->why, c->whylen, CKL_INV_ESTORE, "%s: GC state: %s", c->st->path,
                ckl_err_name(lr));
  if (gs.active)
    return whyf(c->why, c->whylen, CKL_INV_EGC_ACTIVE,
                "%s: gc_active is set (GC %s, %zu removed-set entries) and no GC runs",
                c->st->path, gs.token, gs.removed);
  return 0;
}

/* ---- (d) leftovers ------------------------------------------------------- */

static bool is_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

/* ".<name><tag><16 hex>" as locks/atomic_file.c names them. */
static bool atomic_temp(const char *name, const char *tag) {
  size_t n = strlen(name), t = strlen(tag);
  if (n < 2 + t + 16 || name[0] != '.') return false;
  return is_hex(name + n - 16, 16) && memcmp(name + n - 16 - t, tag, t) == 0;
}

/* Does a writer still hold the temp entry? An atomic temp file carries an
 * OFD write lock, a temp directory a flock, for as long as it is owned. */
static bool temp_owned(const char *path, bool dir) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
  if (fd < 0) return errno == ENOENT; /* gone: its writer finished */
  bool owned;
  if (dir) {
    owned = flock(fd, LOCK_SH | LOCK_NB) != 0;
  } else {
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    owned = fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
  }
  close(fd); /* drops our flock, if granted */
  return owned;
}

typedef struct leftovers {
  checker *c;
  bool writer_live; /* a registered writer may own chunk temp files */
  bool gc_running;  /* the GC lock is held: ".gc-" names are in flight */
  bool gc_marking;  /* gc_active: .trash entries are the GC's */
} leftovers;

static int writer_cb(const ckl_roster_entry *e, void *arg) {
  (void)arg;
  return !e->parsed || (e->flags & CKL_ROSTER_WRITER) ? 1 : 0;
}

static int scan_temps(leftovers *l, const char *dir, int depth) {
  DIR *d = opendir(dir);
  if (!d) return 0; /* removed meanwhile, or not a directory */
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d))) {
    const char *n = e->d_name;
    if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
    if (depth == 0 && (!strcmp(n, ".chunks") || !strcmp(n, ".state") || !strcmp(n, ".locks") ||
                       !strcmp(n, ".trash")))
      continue; /* scanned by their own rules */
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, n);
    struct stat sb;
    if (lstat(p, &sb) != 0) continue;
    bool isdir = S_ISDIR(sb.st_mode);
    if (atomic_temp(n, isdir ? ".tmpdir-" : ".tmp-")) {
      if (!temp_owned(p, isdir))
        rc = whyf(l->c->why, l->c->whylen, CKL_INV_ELEFTOVER,
                  "temp %s %s is left behind: no writer holds it", isdir ? "directory" : "file",
                  p);
      continue;
    }
    if (isdir && depth < 3) rc = scan_temps(l, p, depth + 1);
  }
  closedir(d);
  return rc;
}

static int scan_chunks(leftovers *l, int64_t since_s) {
  int cfd = open(l->c->st->chunks_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cfd < 0)
    return whyf(l->c->why, l->c->whylen, CKL_INV_ESTORE, "%s: %s", l->c->st->chunks_path,
                strerror(errno));
  int rc = 0;
  for (unsigned i = 0; rc == 0 && i < 0x10000; i++) {
    char pre[8];
    snprintf(pre, sizeof pre, "%04x", i);
    struct stat sb;
    if (since_s > 0 && (fstatat(cfd, pre, &sb, 0) != 0 || sb.st_mtim.tv_sec < since_s - 1))
      continue; /* one second of slack for coarse timestamps */
    int fd = openat(cfd, pre, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
      if (fd >= 0) close(fd);
      continue;
    }
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
      const char *n = e->d_name;
      if (n[0] != '.' || !strcmp(n, ".") || !strcmp(n, "..")) continue;
      bool chunk_tmp = strncmp(n, ".tmp-", 5) == 0;
      bool sweep = strncmp(n, ".gc-", 4) == 0;
      if ((chunk_tmp && l->writer_live) || (sweep && l->gc_running)) continue;
      rc = whyf(l->c->why, l->c->whylen, CKL_INV_ELEFTOVER, "%s/%s/%s is left behind (%s)",
                l->c->st->chunks_path, pre, n,
                chunk_tmp ? "a chunk temp file and no writer is registered"
                : sweep   ? "a sweep name and no GC holds the GC lock"
                          : "an unknown dot file");
    }
    closedir(d);
  }
  close(cfd);
  return rc;
}

static bool has_manifest(const char *store, const char *snapshot) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s/" CKL_MANIFEST_NAME, store, snapshot);
  struct stat sb;
  return lstat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Snapshots without a manifest must be held (being written). */
static int scan_half_created(leftovers *l) {
  ckl_store *st = l->c->st;
  ckl_group_name *groups = NULL;
  size_t ng = 0;
  int rc = ckl_group_list(st, &groups, &ng);
  if (rc < 0)
    return whyf(l->c->why, l->c->whylen, CKL_INV_ESTORE, "%s: cannot list groups: %s", st->path,
                ckl_err_name(rc));
  for (size_t g = 0; rc == 0 && g < ng; g++) {
    ckl_snapshot_info *list = NULL;
    size_t n = 0;
    if (ckl_snapshot_list(st, &groups[g], &list, &n) < 0) continue;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      if (list[i].state == CKL_SNAP_COMPLETE) continue;
      char lp[PATH_MAX], name[CKL_SNAP_NAME_MAX + 1];
      ckl_snapshot_name_format(&list[i].name, name, sizeof name);
      if (ckl__store_snapshot_lock_path(st, &list[i].name, lp, sizeof lp) < 0) continue;
      if (ckl_path_lock_probe(lp, CKL_LOCK_EXCLUSIVE, NULL) == CKL_EBUSY) continue;
      if (has_manifest(st->path, name)) continue; /* finished meanwhile */
      rc = whyf(l->c->why, l->c->whylen, CKL_INV_ELEFTOVER,
                "%s/%s is a half-created snapshot (no manifest) that nobody holds", st->path, name);
    }
    ckl_snapshot_list_free(list, n);
  }
  free(groups);
  return rc;
}

static int scan_trash(leftovers *l) {
  if (l->gc_marking) return 0;
  DIR *d = opendir(l->c->st->trash_path);
  if (!d) return 0;
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      rc = whyf(l->c->why, l->c->whylen, CKL_INV_ELEFTOVER,
                "%s/%s is left in the trash and no GC is marking", l->c->st->trash_path,
                e->d_name);
  closedir(d);
  return rc;
}

static int leftovers_run(checker *c, const char *snapshot, int64_t since_s) {
  ckl_store *st = c->st;
  if (snapshot) {
    ckl_snapshot_name n;
    if (ckl_snapshot_name_parse(snapshot, &n) < 0)
      return whyf(c->why, c->whylen, CKL_INV_ESTORE, "bad snapshot name \"%s\"", snapshot);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", st->path, snapshot);
    struct stat sb;
    if (lstat(dir, &sb) == 0 && !has_manifest(st->path, snapshot))
      return whyf(c->why, c->whylen, CKL_INV_ELEFTOVER,
                  "%s exists without a manifest: its operation left a half-created snapshot", dir);
  }
  leftovers l = {.c = c};
  l.writer_live = ckl_roster_list(st->path, writer_cb, NULL) == 1;
  ckl_roster_gc gs = {0};
  l.gc_marking = ckl_roster_gc_state(st->path, &gs) == 0 && gs.active;
  int fd = open(st->lock_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = GC_BYTE, .l_len = 1};
    l.gc_running = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
  }
  int rc = scan_half_created(&l);
  if (rc == 0) rc = scan_temps(&l, st->path, 0);
  if (rc == 0) rc = scan_trash(&l);
  if (rc == 0) rc = scan_chunks(&l, since_s);
  return rc;
}

/* ---- entry points ------------------------------------------------------------ */

static int checker_open(checker *c, const char *store_path, char *why, size_t whylen) {
  memset(c, 0, sizeof *c);
  c->why = why;
  c->whylen = whylen;
  if (why && whylen) why[0] = '\0';
  int rc = ckl_store_open(store_path, NULL, &c->st);
  if (rc < 0)
    return whyf(why, whylen, CKL_INV_ESTORE, "%s: cannot open the store: %s", store_path,
                ckl_err_name(rc));
  return 0;
}

static void checker_close(checker *c) {
  ckl__digest_set_free(&c->seen);
  ckl_store_close(c->st);
}

int ckl_inv_check(const char *store_path, const ckl_inv_opts *o, char *why, size_t whylen) {
  checker c;
  int rc = checker_open(&c, store_path, why, whylen);
  if (rc < 0) return rc;
  rc = check_referenced(&c, o);
  if (rc == 0) rc = check_counters(&c, o);
  if (rc == 0 && o && o->quiescent) rc = check_quiescent(&c, o);
  if (rc == 0 && o && o->quiescent) rc = leftovers_run(&c, NULL, o->chunk_scan_since_s);
  checker_close(&c);
  return rc;
}

int ckl_inv_no_leftovers(const char *store_path, const char *snapshot, int64_t chunk_scan_since_s,
                         char *why, size_t whylen) {
  checker c;
  int rc = checker_open(&c, store_path, why, whylen);
  if (rc < 0) return rc;
  rc = leftovers_run(&c, snapshot, chunk_scan_since_s);
  checker_close(&c);
  return rc;
}

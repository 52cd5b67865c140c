/*
 * bench/lock_bench.c - figures 1 and 2 of docs/benchmarks.md: what a lock
 * costs uncontended, and how fast an exclusive lock passes between two
 * contenders, against the kernel floor and against the peers.
 *
 *     lock_bench [--dir DIR] [--json FILE] [--quick] [--runs N]
 *                [--seconds S] [--peers bench/peers/lock_peers.py]
 *                [--python /usr/bin/python3] [--figures 1,2]
 *
 * Figure 1 (pairs/s, one thread, uncontended): acquire+release pairs in a
 * loop for S seconds per case. Cases: the process locker's first shared
 * guard (a kernel lock conversion) and a nested shared guard (counting
 * only), the snapshot lock shared and exclusive, the manifest lock, a raw
 * path lock, the soft lock. Floors: a bare OFD F_RDLCK/F_UNLCK pair on an
 * fd kept open, and open + F_OFD_SETLK + close per iteration (shared and
 * exclusive: what any correct per-acquisition-description lock must pay).
 *
 * Figure 2 (ops/s): two contenders (2 processes, or 2 threads) pass one
 * exclusive lock back and forth. A strict handoff protocol in shared
 * memory makes every acquisition a real wait: the holder releases only
 * once the other contender has announced that it is trying, and does not
 * try again until the other one got the lock. So ops/s = 1 / (handoff
 * latency + the pair's own cost). Floor: blocking F_OFD_SETLKW on one fd
 * per contender.
 *
 * Every run measures all cases back to back (A B C ... A B C ...), so the
 * floor, chunklock and the peers see the same machine load; results are
 * medians over --runs (5, or 2 with --quick) with min and max. Peers run
 * in /usr/bin/python3 (bench/peers/lock_peers.py), one process per
 * measurement, and report their own rate.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/benchjson.h"
#include "chunklock/chunklock.h"

#define MAX_RUNS 32

static struct {
  char dir[PATH_MAX - 64]; /* our temp dir */
  char store_path[PATH_MAX - 32];
  char store_lock[PATH_MAX]; /* STORE/.lock: process locker, GC lock */
  char lockfile[PATH_MAX]; /* floors and raw path locks */
  char softpath[PATH_MAX];
  ckl_store *st;
  ckl_proclock *pl;
  ckl_snapshot_name snap;
  double seconds;
  int runs;
  const char *peers;
  const char *python;
} B;

static void die(const char *what, int rc) {
  fprintf(stderr, "lock_bench: %s: %s\n", what, rc < 0 ? ckl_strerror(rc) : strerror(errno));
  exit(1);
}

/* ---- figure 1: one acquire+release pair per call ---------------------------------- */

static int floor_fd = -1;
static ckl_proclock_guard outer_guard;

static void op_floor_pair(void) {
  struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
  if (fcntl(floor_fd, F_OFD_SETLK, &fl) != 0) die("F_OFD_SETLK", 0);
  fl.l_type = F_UNLCK;
  if (fcntl(floor_fd, F_OFD_SETLK, &fl) != 0) die("F_UNLCK", 0);
}

static void open_lock_close(short type) {
  int fd = open(B.lockfile, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) die("open", 0);
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET};
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) die("F_OFD_SETLK", 0);
  close(fd); /* closing the only fd of the description releases the lock */
}
static void op_floor_open_rd(void) { open_lock_close(F_RDLCK); }
static void op_floor_open_wr(void) { open_lock_close(F_WRLCK); }

static void op_proclock_first(void) {
  ckl_proclock_guard g = {0};
  int rc = ckl_proclock_shared(B.pl, &g, CKL_TRY, NULL);
  if (rc < 0) die("ckl_proclock_shared", rc);
  ckl_proclock_release(&g);
}

static void op_proclock_nested(void) {
  ckl_proclock_guard g = {0};
  int rc = ckl_proclock_shared(B.pl, &g, CKL_TRY, NULL);
  if (rc < 0) die("ckl_proclock_shared (nested)", rc);
  ckl_proclock_release(&g);
}

static void snap_lock(ckl_lock_mode mode) {
  ckl_path_lock lk = {0};
  int rc = ckl_snapshot_lock(B.st, &B.snap, mode, &lk, NULL);
  if (rc < 0) die("ckl_snapshot_lock", rc);
  ckl_path_lock_release(&lk);
}
static void op_snap_shared(void) { snap_lock(CKL_LOCK_SHARED); }
static void op_snap_excl(void) { snap_lock(CKL_LOCK_EXCLUSIVE); }

static void op_manifest(void) {
  ckl_path_lock lk = {0};
  int rc = ckl_manifest_lock(B.st, &B.snap, &lk, NULL);
  if (rc < 0) die("ckl_manifest_lock", rc);
  ckl_path_lock_release(&lk);
}

static void path_lock(ckl_lock_mode mode) {
  ckl_path_lock lk = {0};
  int rc = ckl_path_lock_acquire(&lk, B.lockfile, mode, NULL);
  if (rc < 0) die("ckl_path_lock_acquire", rc);
  ckl_path_lock_release(&lk);
}
static void op_path_shared(void) { path_lock(CKL_LOCK_SHARED); }
static void op_path_excl(void) { path_lock(CKL_LOCK_EXCLUSIVE); }

static void soft_lock(ckl_lock_mode mode, ckl_softlock_heartbeat hb) {
  ckl_softlock lk = {0};
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .heartbeat = hb, .operation = "bench"};
  int rc = ckl_softlock_acquire(&lk, B.softpath, mode, &o);
  if (rc < 0) die("ckl_softlock_acquire", rc);
  rc = ckl_softlock_release(&lk);
  if (rc < 0) die("ckl_softlock_release", rc);
}
static void op_soft_shared(void) { soft_lock(CKL_LOCK_SHARED, CKL_SOFTLOCK_HEARTBEAT_EXTERNAL); }
static void op_soft_excl(void) { soft_lock(CKL_LOCK_EXCLUSIVE, CKL_SOFTLOCK_HEARTBEAT_EXTERNAL); }
static void op_soft_excl_thread(void) {
  soft_lock(CKL_LOCK_EXCLUSIVE, CKL_SOFTLOCK_HEARTBEAT_THREAD);
}

/* Pairs per second of op over B.seconds (checked in batches, so the clock
 * is read rarely enough not to count). */
static double rate_of(void (*op)(void)) {
  for (int i = 0; i < 8; i++) op(); /* warm the dentry and page caches */
  long n = 0;
  double t0 = bj_now(), t;
  do {
    for (int i = 0; i < 32; i++) op();
    n += 32;
    t = bj_now();
  } while (t - t0 < B.seconds);
  return (double)n / (t - t0);
}

/* ---- peers: one python process per measurement -------------------------------------- */

/* Run the peer script for `fig` and `kase`; returns its rate, NAN if the
 * peer is not available (the script prints "unavailable: why"). */
static double peer_rate(int fig, const char *kase, char *why, size_t whylen) {
  if (!B.peers) {
    snprintf(why, whylen, "no --peers script");
    return NAN;
  }
  char cmd[3 * PATH_MAX];
  snprintf(cmd, sizeof cmd, "'%s' '%s' --figure %d --case %s --seconds %g --dir '%s'", B.python,
           B.peers, fig, kase, B.seconds, B.dir);
  FILE *p = popen(cmd, "re");
  if (!p) {
    snprintf(why, whylen, "popen: %s", strerror(errno));
    return NAN;
  }
  char line[512] = "";
  double v = NAN;
  while (fgets(line, sizeof line, p)) {
    if (strncmp(line, "rate ", 5) == 0) v = strtod(line + 5, NULL);
    else if (strncmp(line, "unavailable: ", 13) == 0) {
      line[strcspn(line, "\n")] = 0;
      snprintf(why, whylen, "%.200s", line + 13);
    }
  }
  int st = pclose(p);
  if (st != 0 && isnan(v) && !why[0]) snprintf(why, whylen, "peer script failed (%d)", st);
  return v;
}

/* ---- figure 2: handoff ---------------------------------------------------------------- */

typedef enum { H_FLOOR, H_PATH_FOREVER, H_PATH_DEADLINE, H_MANIFEST, H_GCLOCK } hkind;

/* Futex words (32 bits, in MAP_SHARED memory, so plain FUTEX_WAIT works
 * across the two processes). */
typedef struct shared {
  atomic_int go, stop;
  atomic_int waiting[2];
  atomic_int count[2];
  atomic_int failed;
} shared;

typedef struct contender {
  shared *sh;
  int me;
  hkind kind;
  ckl_store *st; /* manifest: this contender's own handle */
} contender;

static void wake(atomic_int *w) { syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0); }

/* Wait while *w == old (and not stopped): a short spin, then futex sleeps.
 * Sleeping, not spinning, because the machine is shared and loaded: a
 * spinning contender would take the core the woken one needs. The 10 ms
 * timeout only bounds how late a stop is noticed. */
static void wait_while(atomic_int *w, int old, atomic_int *stop) {
  for (int i = 0; i < 200 && atomic_load(w) == old && !atomic_load(stop); i++) __builtin_ia32_pause();
  while (atomic_load(w) == old && !atomic_load(stop)) {
    struct timespec ts = {0, 10000000};
    syscall(SYS_futex, w, FUTEX_WAIT, old, &ts, NULL, 0);
  }
}

static void spin_until(atomic_int *flag, int v, atomic_int *stop) {
  int cur;
  while ((cur = atomic_load(flag)) != v && !atomic_load(stop)) wait_while(flag, cur, stop);
}

/* The handoff protocol (see the top of the file). Invariant: a contender
 * releases only while the other one has announced it is trying, and tries
 * again only after the other one's count moved, so every acquisition but
 * the very first waits for a release. */
static void contend(contender *c) {
  shared *sh = c->sh;
  int me = c->me, other = 1 - me;
  int fd = -1;
  if (c->kind == H_FLOOR) {
    fd = open(B.lockfile, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) die("open", 0);
  }
  spin_until(&sh->go, 1, &sh->stop);
  while (!atomic_load(&sh->stop)) {
    ckl_path_lock lk = {0};
    ckl_gclock g = {0};
    int rc = 0;
    atomic_store(&sh->waiting[me], 1);
    wake(&sh->waiting[me]);
    switch (c->kind) {
    case H_FLOOR: {
      struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
      while ((rc = fcntl(fd, F_OFD_SETLKW, &fl)) != 0 && errno == EINTR) {
      }
      if (rc != 0) rc = -errno;
      break;
    }
    case H_PATH_FOREVER: {
      ckl_lock_opts o = {.timeout_ms = CKL_FOREVER};
      rc = ckl_path_lock_acquire(&lk, B.lockfile, CKL_LOCK_EXCLUSIVE, &o);
      break;
    }
    case H_PATH_DEADLINE: {
      ckl_lock_opts o = {.timeout_ms = 10000};
      rc = ckl_path_lock_acquire(&lk, B.lockfile, CKL_LOCK_EXCLUSIVE, &o);
      break;
    }
    case H_MANIFEST:
      rc = ckl_manifest_lock(c->st, &B.snap, &lk, NULL); /* the store's 5 s deadline */
      break;
    case H_GCLOCK:
      rc = ckl_gclock_acquire(B.store_lock, &g, 10000, NULL);
      break;
    }
    atomic_store(&sh->waiting[me], 0);
    if (rc != 0) {
      fprintf(stderr, "lock_bench: handoff acquire: %s\n", ckl_strerror(rc));
      atomic_store(&sh->failed, 1);
      atomic_store(&sh->stop, 1);
      wake(&sh->waiting[me]);
      wake(&sh->count[me]);
      break;
    }
    atomic_fetch_add(&sh->count[me], 1);
    wake(&sh->count[me]);
    int seen = atomic_load(&sh->count[other]);
    spin_until(&sh->waiting[other], 1, &sh->stop);
    if (c->kind == H_FLOOR) {
      struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
      fcntl(fd, F_OFD_SETLK, &fl);
    } else if (c->kind == H_GCLOCK) {
      ckl_gclock_release(&g);
    } else {
      ckl_path_lock_release(&lk);
    }
    wait_while(&sh->count[other], seen, &sh->stop);
  }
  if (fd >= 0) close(fd);
}

static void *contend_thread(void *arg) {
  contend(arg);
  return NULL;
}

/* Both contenders run for B.seconds; ops/s of acquisitions (both sides). */
static double handoff_rate(hkind kind, int processes) {
  shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) die("mmap", 0);
  memset(sh, 0, sizeof *sh);
  contender c[2];
  pid_t pid[2] = {0, 0};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    c[i] = (contender){.sh = sh, .me = i, .kind = kind, .st = B.st};
    if (processes) {
      pid[i] = fork();
      if (pid[i] < 0) die("fork", 0);
      if (pid[i] == 0) {
        /* A child needs its own store handle (store.h: after fork). */
        if (kind == H_MANIFEST) {
          int rc = ckl_store_open(B.store_path, NULL, &c[i].st);
          if (rc < 0) die("ckl_store_open (child)", rc);
        }
        contend(&c[i]);
        _exit(atomic_load(&sh->failed) ? 1 : 0);
      }
    } else if (pthread_create(&th[i], NULL, contend_thread, &c[i]) != 0) {
      die("pthread_create", 0);
    }
  }
  usleep(20000); /* let both reach the start line */
  double t0 = bj_now();
  atomic_store(&sh->go, 1);
  wake(&sh->go);
  usleep((useconds_t)(B.seconds * 1e6));
  long n = (long)atomic_load(&sh->count[0]) + atomic_load(&sh->count[1]);
  double t = bj_now();
  atomic_store(&sh->stop, 1);
  for (int i = 0; i < 2; i++) {
    wake(&sh->waiting[i]);
    wake(&sh->count[i]);
  }
  for (int i = 0; i < 2; i++) {
    if (processes) waitpid(pid[i], NULL, 0);
    else pthread_join(th[i], NULL);
  }
  int failed = atomic_load(&sh->failed);
  munmap(sh, sizeof *sh);
  if (failed) {
    fprintf(stderr, "lock_bench: handoff failed\n");
    exit(1);
  }
  return (double)n / (t - t0);
}

/* ---- the cases ------------------------------------------------------------------------ */

typedef struct bcase {
  const char *name;
  void (*op)(void);              /* figure 1 */
  int hkind, processes;          /* figure 2 (hkind >= 0) */
  const char *peer;              /* peer case name for lock_peers.py */
  int floor;                     /* index of the floor case, -1 none */
  int vs;                        /* peers: index of the chunklock case compared */
  double target;                 /* NAN none */
  const char *note;
  double v[MAX_RUNS];
  char why[256];
} bcase;

#define NOF -1
#define F1_CASES                                                                              \
  X("floor: bare OFD F_RDLCK/F_UNLCK pair on an open fd", op_floor_pair, NOF, NAN, NULL)     \
  X("floor: open+F_RDLCK+close", op_floor_open_rd, NOF, NAN, NULL)                            \
  X("floor: open+F_WRLCK+close", op_floor_open_wr, NOF, NAN, NULL)                            \
  X("process locker, first shared guard", op_proclock_first, 0, NAN,                          \
    "a kernel F_RDLCK/F_UNLCK on the locker's one fd, under the registry mutex")              \
  X("process locker, nested shared guard", op_proclock_nested, NOF, 10e6,                     \
    "another guard of this process is held: counting only, no syscall")                      \
  X("snapshot lock shared", op_snap_shared, 1, 0.667, NULL)                                   \
  X("snapshot lock exclusive", op_snap_excl, 2, 0.667, NULL)                                  \
  X("manifest lock", op_manifest, 2, 0.667, NULL)                                             \
  X("path lock shared (ckl_path_lock_acquire)", op_path_shared, 1, 0.667, NULL)               \
  X("path lock exclusive (ckl_path_lock_acquire)", op_path_excl, 2, 0.667, NULL)              \
  X("soft lock shared (external heartbeat)", op_soft_shared, 2, NAN,                          \
    "marker files: state mutex, reader marker, readers dir; for NFS, not a kernel lock")      \
  X("soft lock exclusive (external heartbeat)", op_soft_excl, 2, NAN,                         \
    "marker files: state mutex, writer marker; for NFS, not a kernel lock")                   \
  X("soft lock exclusive (heartbeat thread)", op_soft_excl_thread, 2, NAN,                    \
    "as above plus starting and joining the heartbeat thread")

enum {
#define X(n_, op_, fl_, tg_, note_) F1_##op_,
  F1_CASES
#undef X
  F1_N
};

static bcase fig1[] = {
#define X(n_, op_, fl_, tg_, note_) \
  {.name = n_, .op = op_, .hkind = -1, .floor = fl_, .vs = -1, .target = tg_, .note = note_},
    F1_CASES
#undef X
};

static bcase fig1_peers[] = {
    {.name = "snapshot lock exclusive vs borg Lock (exclusive)", .peer = "borg_excl",
     .vs = F1_op_snap_excl, .floor = NOF, .target = NAN},
    {.name = "snapshot lock shared vs borg Lock (shared)", .peer = "borg_shared",
     .vs = F1_op_snap_shared, .floor = NOF, .target = NAN},
    {.name = "snapshot lock exclusive vs filelock FileLock", .peer = "filelock",
     .vs = F1_op_snap_excl, .floor = NOF, .target = NAN},
    {.name = "soft lock exclusive vs filelock SoftFileLock", .peer = "softfilelock",
     .vs = F1_op_soft_excl, .floor = NOF, .target = NAN},
};

static bcase fig2[] = {
    {.name = "2 processes, floor: F_OFD_SETLKW on one fd each", .hkind = H_FLOOR, .processes = 1,
     .floor = NOF, .vs = -1, .target = NAN},
    {.name = "2 processes, path lock, CKL_FOREVER", .hkind = H_PATH_FOREVER, .processes = 1,
     .floor = 0, .vs = -1, .target = 0.7},
    {.name = "2 processes, path lock, 10 s deadline", .hkind = H_PATH_DEADLINE, .processes = 1,
     .floor = 0, .vs = -1, .target = 0.7},
    {.name = "2 processes, manifest lock (5 s deadline)", .hkind = H_MANIFEST, .processes = 1,
     .floor = 0, .vs = -1, .target = 0.7},
    {.name = "2 processes, GC lock, 10 s deadline", .hkind = H_GCLOCK, .processes = 1,
     .floor = 0, .vs = -1, .target = 0.7},
    {.name = "2 threads, floor: F_OFD_SETLKW on one fd each", .hkind = H_FLOOR, .processes = 0,
     .floor = NOF, .vs = -1, .target = NAN},
    {.name = "2 threads, path lock, CKL_FOREVER", .hkind = H_PATH_FOREVER, .processes = 0,
     .floor = 5, .vs = -1, .target = 0.7},
    {.name = "2 threads, path lock, 10 s deadline", .hkind = H_PATH_DEADLINE, .processes = 0,
     .floor = 5, .vs = -1, .target = 0.7},
    {.name = "2 threads, manifest lock (5 s deadline)", .hkind = H_MANIFEST, .processes = 0,
     .floor = 5, .vs = -1, .target = 0.7},
};

static bcase fig2_peers[] = {
    {.name = "2 processes, path lock CKL_FOREVER vs borg Lock", .peer = "borg_excl", .vs = 1,
     .hkind = -1, .floor = NOF, .target = NAN},
    {.name = "2 processes, path lock CKL_FOREVER vs filelock FileLock", .peer = "filelock",
     .vs = 1, .hkind = -1, .floor = NOF, .target = NAN},
};

static double measure(bcase *c, int fig) {
  if (c->peer) {
    char why[256] = "";
    double v = peer_rate(fig, c->peer, why, sizeof why);
    if (isnan(v) && !c->why[0]) snprintf(c->why, sizeof c->why, "%s", why);
    return v;
  }
  if (c->op) return rate_of(c->op);
  return handoff_rate((hkind)c->hkind, c->processes);
}

static void emit(bj_file *j, int fig, bcase *cs, size_t n, bcase *base, const char *unit) {
  for (size_t i = 0; i < n; i++) {
    bcase *c = &cs[i];
    int have = 0;
    double ok[MAX_RUNS];
    for (int r = 0; r < B.runs; r++)
      if (!isnan(c->v[r])) ok[have++] = c->v[r];
    if (have == 0) {
      fprintf(stderr, "lock_bench: %s: no result (%s)\n", c->name, c->why);
      continue;
    }
    bj_rec r = bj_rec_init(fig, c->name, unit, bj_stats_of(ok, have));
    r.note = c->note;
    if (c->peer) {
      bj_stats mine = bj_stats_of(base[c->vs].v, B.runs);
      r.peer = true;
      r.ratio = mine.median / r.s.median;
    } else if (c->floor >= 0) {
      r.floor = bj_stats_of(cs[c->floor].v, B.runs).median;
    }
    if (!isnan(c->target)) {
      r.target = c->target;
      r.cmp = ">=";
    }
    char note[512];
    if (bj_met(&r) == 0 && !r.note) {
      snprintf(note, sizeof note, "missed: see docs/benchmarks.md, figure %d", fig);
      r.note = note;
    }
    bj_write(j, r);
  }
}

/* ---- setup ---------------------------------------------------------------------------- */

static void setup(const char *parent) {
  snprintf(B.dir, sizeof B.dir, "%s/lock_bench.XXXXXX", parent);
  if (!mkdtemp(B.dir)) die(B.dir, 0);
  snprintf(B.store_path, sizeof B.store_path, "%s/store", B.dir);
  snprintf(B.lockfile, sizeof B.lockfile, "%s/floor.lck", B.dir);
  snprintf(B.softpath, sizeof B.softpath, "%s/soft.lck", B.dir);
  ckl_store_create_opts co = {.sync = CKL_SYNC_NONE};
  int rc = ckl_store_create(B.store_path, &co);
  if (rc == 0) rc = ckl_store_open(B.store_path, NULL, &B.st);
  if (rc < 0) die(B.store_path, rc);
  rc = ckl_snapshot_name_parse("host/bench/2026-01-01T00:00:00Z", &B.snap);
  if (rc < 0) die("snapshot name", rc);
  char p[PATH_MAX + 64];
  const char *parts[] = {"host", "host/bench", "host/bench/2026-01-01T00:00:00Z"};
  for (size_t i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s/%s", B.store_path, parts[i]);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) die(p, 0);
  }
  snprintf(B.store_lock, sizeof B.store_lock, "%s/.lock", B.store_path);
  if ((rc = ckl_proclock_open(B.store_lock, &B.pl)) < 0) die(B.store_lock, rc);
  floor_fd = open(B.lockfile, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (floor_fd < 0) die(B.lockfile, 0);
}

static void teardown(void) {
  if (floor_fd >= 0) close(floor_fd);
  ckl_proclock_close(B.pl);
  ckl_store_close(B.st);
  char cmd[PATH_MAX + 32];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", B.dir);
  if (system(cmd) != 0) fprintf(stderr, "lock_bench: could not remove %s\n", B.dir);
}

static void usage(void) {
  fputs("usage: lock_bench [--dir DIR] [--json FILE] [--quick] [--runs N] [--seconds S]\n"
        "                  [--peers lock_peers.py] [--python /usr/bin/python3] [--figures 1,2]\n",
        stderr);
  exit(2);
}

int main(int argc, char **argv) {
  const char *dir = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/var/tmp";
  const char *json = NULL, *figures = "1,2";
  int quick = 0;
  B.runs = 0;
  B.seconds = 0;
  B.python = "/usr/bin/python3";
  static const struct option lo[] = {
      {"dir", required_argument, NULL, 'd'},   {"json", required_argument, NULL, 'j'},
      {"quick", no_argument, NULL, 'q'},       {"runs", required_argument, NULL, 'r'},
      {"seconds", required_argument, NULL, 's'}, {"peers", required_argument, NULL, 'p'},
      {"python", required_argument, NULL, 'P'}, {"figures", required_argument, NULL, 'f'},
      {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'd': dir = optarg; break;
    case 'j': json = optarg; break;
    case 'q': quick = 1; break;
    case 'r': B.runs = atoi(optarg); break;
    case 's': B.seconds = atof(optarg); break;
    case 'p': B.peers = optarg; break;
    case 'P': B.python = optarg; break;
    case 'f': figures = optarg; break;
    default: usage();
    }
  }
  if (optind != argc) usage();
  if (B.runs <= 0) B.runs = quick ? 2 : 7;
  if (B.runs > MAX_RUNS) B.runs = MAX_RUNS;
  if (B.seconds <= 0) B.seconds = quick ? 0.05 : 0.3;
  if (B.peers && access(B.peers, R_OK) != 0) {
    fprintf(stderr, "lock_bench: WARNING: peer script %s not readable; no peers\n", B.peers);
    B.peers = NULL;
  }
  int do1 = strchr(figures, '1') != NULL, do2 = strchr(figures, '2') != NULL;
  bj_file j;
  if (bj_open(&j, json) < 0) die(json, 0);
  setup(dir);
  signal(SIGPIPE, SIG_IGN);
  for (int r = 0; r < B.runs; r++) {
    fprintf(stderr, "lock_bench: run %d/%d\n", r + 1, B.runs);
    if (do1) {
      if (ckl_proclock_shared(B.pl, &outer_guard, CKL_TRY, NULL) < 0) die("outer guard", -EBUSY);
      fig1[F1_op_proclock_nested].v[r] = rate_of(op_proclock_nested);
      ckl_proclock_release(&outer_guard);
      for (size_t i = 0; i < F1_N; i++)
        if (i != F1_op_proclock_nested) fig1[i].v[r] = measure(&fig1[i], 1);
      for (size_t i = 0; i < sizeof fig1_peers / sizeof *fig1_peers; i++)
        fig1_peers[i].v[r] = measure(&fig1_peers[i], 1);
    }
    if (do2) {
      for (size_t i = 0; i < sizeof fig2 / sizeof *fig2; i++) fig2[i].v[r] = measure(&fig2[i], 2);
      for (size_t i = 0; i < sizeof fig2_peers / sizeof *fig2_peers; i++)
        fig2_peers[i].v[r] = measure(&fig2_peers[i], 2);
    }
  }
  if (do1) {
    emit(&j, 1, fig1, F1_N, fig1, "pairs/s");
    emit(&j, 1, fig1_peers, sizeof fig1_peers / sizeof *fig1_peers, fig1, "pairs/s");
  }
  if (do2) {
    emit(&j, 2, fig2, sizeof fig2 / sizeof *fig2, fig2, "ops/s");
    emit(&j, 2, fig2_peers, sizeof fig2_peers / sizeof *fig2_peers, fig2, "ops/s");
  }
  teardown();
  if (bj_close(&j) < 0) die(json, 0);
  return 0;
}

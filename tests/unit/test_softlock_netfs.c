/* Soft lock on a real network filesystem: one directory exported over SFTP
 * and mounted twice with sshfs over loopback (tests/scripts/
 * softlock-sshfs.sh), every client cache off. Mount m1 is "node-a", m2 is
 * "node-b": processes on both exclude each other, a holder that died on
 * node-b is evicted by node-a after the TTL (stepped clock) and not before,
 * and node-b's heartbeat through its mount keeps node-a out. Skipped, with
 * the reason, when sshfs, sshd or FUSE is not available.
 *
 * sshfs is a harsher model than NFS in two ways the lock must survive: it
 * renumbers inodes on rename (markers are identified by token, not inode)
 * and keeps whole seconds of mtime (the staleness slack absorbs it). Like
 * NFS's .nfsXXXX files, unlinking a file another process has open leaves a
 * .fuse_hidden* file behind for a while; the lock ignores such names. */
#include "test_softlock_util.h"

#include <libgen.h>
#include <sched.h>
#include <sys/wait.h>

#define NPROCS 4
#define ROUNDS 60
#define TTL_MS 90000

typedef struct shared {
  atomic_int writers_inside, readers_inside, violations, errors;
  atomic_long entries, writer_entries;
  _Atomic int64_t wall_off, wall_base; /* the stepped clock (test_softlock_util.h) */
} shared;

typedef struct netfs {
  int skip;
  char *dir, *script;
  char *export_path; /* the server's view */
  char *path[2];     /* the lock path seen through m1 and m2 */
  shared *sh;
} netfs;

static netfs nf;

static int run_script(const char *cmd) {
  char *line = NULL;
  if (asprintf(&line, "'%s' %s '%s'", nf.script, cmd, nf.dir) < 0) abort();
  int st = system(line);
  free(line);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int group_setup(void **state) {
  (void)state;
  char *src = strdup(__FILE__);
  if (asprintf(&nf.script, "%s/../scripts/softlock-sshfs.sh", dirname(src)) < 0) abort();
  free(src);
  nf.dir = ckl_test_mkdtemp("softnetfs");
  int rc = run_script("start");
  if (rc != 0) {
    nf.skip = 1;
    fprintf(stderr, "test_softlock_netfs: no network filesystem here (sshfs setup exit %d): "
                    "skipping\n", rc);
    return 0;
  }
  nf.export_path = ckl_test_path(nf.dir, "export/lk");
  if (asprintf(&nf.path[0], "%s/m1/lk", nf.dir) < 0 ||
      asprintf(&nf.path[1], "%s/m2/lk", nf.dir) < 0)
    abort();
  nf.sh = ckl_test_shared_alloc(sizeof *nf.sh);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  run_script("stop");
  ckl_test_rmtree(nf.dir);
  if (nf.sh) ckl_test_shared_free(nf.sh, sizeof *nf.sh);
  free(nf.dir);
  free(nf.script);
  free(nf.export_path);
  free(nf.path[0]);
  free(nf.path[1]);
  return 0;
}

static int setup(void **state) {
  (void)state;
  if (!nf.skip) memset(nf.sh, 0, sizeof *nf.sh);
  return 0;
}

static const char *host_of(int i) { return i == 0 ? "node-a" : "node-b"; }

static int64_t shared_clock(ckl_softlock_clock_id which, void *ctx) {
  shared *sh = ctx;
  if (which == CKL_SOFTLOCK_CLOCK_WALL) return sl_wall(&sh->wall_base, &sh->wall_off);
  return ckl__now_boottime_ns();
}

/* Markers left in the export (the filesystem's own .fuse_hidden* aside). */
static int leftovers(void) {
  char *w = sl_sib(nf.export_path, ".write"), *s = sl_sib(nf.export_path, ".state");
  char *r = sl_sib(nf.export_path, ".readers");
  int n = sl_exists(w) + sl_exists(s);
  n += ckl_test_count_entries(r, "r.") + ckl_test_count_entries(r, "b.");
  free(w);
  free(s);
  free(r);
  return n;
}

/* ---- exclusion between the two hosts -------------------------------------------------- */

static int worker(void *arg) {
  int index = (int)(intptr_t)arg;
  int host = index % 2;
  shared *sh = nf.sh;
  for (int i = 0; i < ROUNDS; i++) {
    int excl = index == 0 || i % 4 == 0;
    ckl_softlock lk = {0};
    ckl_softlock_opts o = {.timeout_ms = CKL_TEST_NEVER_MS, .host_id = host_of(host),
                           .heartbeat = index < 2 ? CKL_SOFTLOCK_HEARTBEAT_THREAD
                                                  : CKL_SOFTLOCK_HEARTBEAT_EXTERNAL};
    if (ckl_softlock_acquire(&lk, nf.path[host], excl ? CKL_LOCK_EXCLUSIVE : CKL_LOCK_SHARED,
                             &o) != 0) {
      atomic_fetch_add(&sh->errors, 1);
      return 1;
    }
    if (excl) {
      if (atomic_fetch_add(&sh->writers_inside, 1) != 0) atomic_fetch_add(&sh->violations, 1);
      if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
      atomic_fetch_add(&sh->writer_entries, 1);
      sched_yield();
      if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
      atomic_fetch_sub(&sh->writers_inside, 1);
    } else {
      atomic_fetch_add(&sh->readers_inside, 1);
      if (atomic_load(&sh->writers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
      sched_yield();
      if (atomic_load(&sh->writers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
      atomic_fetch_sub(&sh->readers_inside, 1);
    }
    atomic_fetch_add(&sh->entries, 1);
    if (ckl_softlock_check(&lk) != 0 || ckl_softlock_release(&lk) != 0)
      atomic_fetch_add(&sh->errors, 1);
  }
  return 0;
}

static void test_netfs_two_hosts_exclude(void **state) {
  (void)state;
  if (nf.skip) skip();
  pid_t pids[NPROCS];
  for (int i = 0; i < NPROCS; i++) pids[i] = ckl_test_fork(worker, (void *)(intptr_t)i);
  int status[NPROCS];
  for (int i = 0; i < NPROCS; i++) status[i] = ckl_test_wait(pids[i]); /* all, then judge */
  for (int i = 0; i < NPROCS; i++) assert_int_equal(status[i], 0);
  assert_int_equal(atomic_load(&nf.sh->errors), 0);
  assert_int_equal(atomic_load(&nf.sh->violations), 0);
  assert_int_equal(atomic_load(&nf.sh->entries), NPROCS * ROUNDS);
  assert_true(atomic_load(&nf.sh->writer_entries) >= ROUNDS);
  assert_int_equal(leftovers(), 0);
}

/* ---- a holder that died on node-b ---------------------------------------------------- */

static int die_on_b(void *arg) {
  (void)arg;
  ckl_softlock lk = {0};
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .host_id = "node-b", .clock = shared_clock,
                         .clock_ctx = nf.sh};
  return ckl_softlock_acquire(&lk, nf.path[1], CKL_LOCK_EXCLUSIVE, &o) == 0 ? 0 : 1;
}

static int take_on_a(ckl_lock_mode mode) {
  ckl_softlock lk = {0};
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .host_id = "node-a", .clock = shared_clock,
                         .clock_ctx = nf.sh};
  int rc = ckl_softlock_acquire(&lk, nf.path[0], mode, &o);
  if (rc == 0) assert_int_equal(ckl_softlock_release(&lk), 0);
  return rc;
}

static void test_netfs_dead_holder_evicted_after_ttl(void **state) {
  (void)state;
  if (nf.skip) skip();
  /* Frozen: real time between the stamp and the check below the TTL
   * must not cross it (the 1.5 s already cover the server's whole-second
   * timestamps, nothing else). */
  sl_freeze_wall(&nf.sh->wall_base);
  assert_int_equal(ckl_test_wait(ckl_test_fork(die_on_b, NULL)), 0);
  assert_int_equal(take_on_a(CKL_LOCK_SHARED), CKL_EBUSY);
  /* The server keeps whole seconds: our stamp may read up to 1 s older. */
  atomic_store(&nf.sh->wall_off, (STALE_MS(TTL_MS) - 1500) * MS);
  assert_int_equal(take_on_a(CKL_LOCK_SHARED), CKL_EBUSY);
  atomic_store(&nf.sh->wall_off, (STALE_MS(TTL_MS) + 1500) * MS);
  assert_int_equal(take_on_a(CKL_LOCK_EXCLUSIVE), 0);
  assert_int_equal(leftovers(), 0);
}

static void test_netfs_heartbeat_keeps_holder(void **state) {
  (void)state;
  if (nf.skip) skip();
  tclock cb = {.wall_off = &nf.sh->wall_off};
  ckl_softlock b = {0};
  ckl_softlock_opts ob = sl_opts(&cb, "node-b", TTL_MS);
  assert_int_equal(ckl_softlock_acquire(&b, nf.path[1], CKL_LOCK_EXCLUSIVE, &ob), 0);
  for (int i = 1; i <= 3; i++) {
    atomic_store(&nf.sh->wall_off, i * 50 * SEC);
    atomic_store(&cb.boot_off, i * 50 * SEC);
    assert_int_equal(ckl_softlock_refresh(&b), 0);
    assert_int_equal(take_on_a(CKL_LOCK_SHARED), CKL_EBUSY);
  }
  atomic_store(&nf.sh->wall_off, 150 * SEC + (STALE_MS(TTL_MS) + 1500) * MS);
  assert_int_equal(take_on_a(CKL_LOCK_SHARED), 0);
  assert_int_equal(ckl_softlock_refresh(&b), CKL_ELOCKLOST);
  assert_int_equal(ckl_softlock_release(&b), CKL_ELOCKLOST);
  assert_int_equal(leftovers(), 0);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, NULL)
  const struct CMUnitTest tests[] = {
      T(test_netfs_two_hosts_exclude),
      T(test_netfs_dead_holder_evicted_after_ttl),
      T(test_netfs_heartbeat_keeps_holder),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

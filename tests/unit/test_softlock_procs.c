/* Soft lock across processes: 4 processes x rounds keep writers alone and
 * readers away from writers (counters in shared memory); fork semantics
 * (inherited holds are invalid in the child, release there touches no
 * file, the child takes its own); holders that really died: on this host
 * evicted at once (markers, and the state mutex), on "another host" only
 * after the TTL of a stepped clock. */
#include "test_softlock_util.h"

#include <signal.h>
#include <sched.h>

#define NPROCS 4
#define ROUNDS 500
#define TTL_MS 90000

typedef struct shared {
  atomic_int writers_inside, readers_inside;
  atomic_int violations, errors;
  atomic_long entries, writer_entries;
  _Atomic int64_t wall_off, wall_base; /* the stepped clock (test_softlock_util.h) */
} shared;

typedef struct fx {
  char *dir, *path, *wpath, *spath, *rpath;
  shared *sh;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("softprocs");
  f->path = ckl_test_path(f->dir, "lk");
  f->wpath = sl_sib(f->path, ".write");
  f->spath = sl_sib(f->path, ".state");
  f->rpath = sl_sib(f->path, ".readers");
  f->sh = ckl_test_shared_alloc(sizeof *f->sh);
  memset(f->sh, 0, sizeof *f->sh);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_failpoint_disarm_all();
  ckl_test_shared_free(f->sh, sizeof *f->sh);
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->wpath);
  free(f->spath);
  free(f->rpath);
  free(f->dir);
  free(f);
  return 0;
}

/* ---- exclusion across processes ------------------------------------------------- */

typedef struct child_arg {
  fx *f;
  int index;
  int mixed;
} child_arg;

static int worker_child(void *arg) {
  child_arg *a = arg;
  shared *sh = a->f->sh;
  for (int i = 0; i < ROUNDS; i++) {
    int excl = !a->mixed || a->index == 0 || i % 8 == 0;
    ckl_softlock lk = {0};
    ckl_softlock_opts o = {.timeout_ms = a->index % 2 ? CKL_TEST_NEVER_MS : CKL_FOREVER,
                           .heartbeat = a->index % 2 ? CKL_SOFTLOCK_HEARTBEAT_EXTERNAL
                                                     : CKL_SOFTLOCK_HEARTBEAT_THREAD};
    if (ckl_softlock_acquire(&lk, a->f->path, excl ? CKL_LOCK_EXCLUSIVE : CKL_LOCK_SHARED,
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
    if (ckl_softlock_release(&lk) != 0) atomic_fetch_add(&sh->errors, 1);
  }
  return 0;
}

static void run_procs(fx *f, int mixed) {
  child_arg args[NPROCS];
  pid_t pids[NPROCS];
  for (int i = 0; i < NPROCS; i++) {
    args[i] = (child_arg){.f = f, .index = i, .mixed = mixed};
    pids[i] = ckl_test_fork(worker_child, &args[i]);
  }
  for (int i = 0; i < NPROCS; i++) assert_int_equal(ckl_test_wait(pids[i]), 0);
  assert_int_equal(atomic_load(&f->sh->errors), 0);
  assert_int_equal(atomic_load(&f->sh->violations), 0);
  assert_int_equal(atomic_load(&f->sh->entries), NPROCS * ROUNDS);
  assert_false(sl_exists(f->wpath));
  assert_false(sl_exists(f->spath));
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
}

static void test_exclusive_processes(void **state) { run_procs(*state, 0); }

static void test_mixed_processes(void **state) {
  fx *f = *state;
  run_procs(f, 1);
  assert_true(atomic_load(&f->sh->writer_entries) >= ROUNDS);
}

/* ---- fork ------------------------------------------------------------------------ */

typedef struct fork_arg {
  fx *f;
  ckl_softlock *inherited;
  ckl_lock_mode mode;
} fork_arg;

static atomic_int lost_calls;
static void on_lost(void *ctx, ckl_softlock_lost why) {
  (void)ctx;
  (void)why;
  atomic_fetch_add(&lost_calls, 1);
}

/* Exit codes name the first failed expectation. */
static int fork_child(void *arg) {
  fork_arg *a = arg;
  ckl_holder me;
  if (ckl_softlock_info(a->inherited, &me) != 0) return 2;
  char before[CKL_TOKEN_HEX_LEN + 1];
  sl_token_of(me.target, before);
  if (strcmp(before, me.token) != 0) return 3;
  if (ckl_softlock_check(a->inherited) != CKL_ELOCKLOST) return 4;
  if (ckl_softlock_refresh(a->inherited) != CKL_ELOCKLOST) return 5;
  if (atomic_load(&lost_calls) != 0) return 6; /* not a loss: never the parent's callback */
  /* The child takes its own lock: busy against the parent's writer,
   * granted beside the parent's reader. */
  ckl_softlock mine = {0};
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY};
  int rc = ckl_softlock_acquire(&mine, a->f->path, CKL_LOCK_SHARED, &o);
  if (a->mode == CKL_LOCK_EXCLUSIVE && rc != CKL_EBUSY) return 7;
  if (a->mode == CKL_LOCK_SHARED) {
    if (rc != 0) return 8;
    if (ckl_test_count_entries(a->f->rpath, "r.") != 2) return 9;
    if (ckl_softlock_release(&mine) != 0) return 10;
  }
  /* Releasing the inherited hold is a no-op on disk. */
  if (ckl_softlock_release(a->inherited) != 0) return 11;
  if (a->inherited->hold != NULL) return 12;
  char after[CKL_TOKEN_HEX_LEN + 1];
  sl_token_of(me.target, after);
  if (strcmp(after, me.token) != 0) return 13;
  return 0;
}

static void test_fork_semantics(void **state) {
  fx *f = *state;
  for (int mode = CKL_LOCK_SHARED; mode <= CKL_LOCK_EXCLUSIVE; mode++) {
    ckl_softlock lk = {0};
    ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .on_lost = on_lost};
    assert_int_equal(ckl_softlock_acquire(&lk, f->path, (ckl_lock_mode)mode, &o), 0);
    fork_arg a = {.f = f, .inherited = &lk, .mode = (ckl_lock_mode)mode};
    pid_t pid = ckl_test_fork(fork_child, &a);
    assert_int_equal(ckl_test_wait(pid), 0);
    /* The parent still holds it, heartbeat and all. */
    assert_int_equal(ckl_softlock_check(&lk), 0);
    assert_int_equal(ckl_softlock_refresh(&lk), 0);
    ckl_holder me;
    assert_int_equal(ckl_softlock_info(&lk, &me), 0);
    assert_true(sl_exists(me.target));
    assert_int_equal(ckl_softlock_release(&lk), 0);
    assert_false(sl_exists(me.target));
    assert_int_equal(atomic_load(&lost_calls), 0);
    assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  }
}

/* ---- holders that died -------------------------------------------------------------- */

typedef struct die_arg {
  fx *f;
  ckl_lock_mode mode;
  const char *host;        /* NULL: this host */
  const char *fp, *action; /* optional failpoint to die at */
} die_arg;

static int64_t shared_clock(ckl_softlock_clock_id which, void *ctx) {
  shared *sh = ctx;
  if (which == CKL_SOFTLOCK_CLOCK_WALL) return sl_wall(&sh->wall_base, &sh->wall_off);
  return ckl__now_boottime_ns();
}

static int die_holding(void *arg) {
  die_arg *a = arg;
  if (a->fp && ckl_failpoint_arm(a->fp, a->action) != 0) return 2;
  ckl_softlock lk = {0};
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .host_id = a->host, .clock = shared_clock,
                         .clock_ctx = a->f->sh};
  if (ckl_softlock_acquire(&lk, a->f->path, a->mode, &o) != 0) return 3;
  return 0; /* exit without releasing: the markers stay behind */
}

static int take(fx *f, ckl_lock_mode mode, const char *host) {
  ckl_softlock lk = {0};
  ckl_softlock_opts o = {.timeout_ms = CKL_TRY, .host_id = host, .clock = shared_clock,
                         .clock_ctx = f->sh};
  int rc = ckl_softlock_acquire(&lk, f->path, mode, &o);
  if (rc == 0) assert_int_equal(ckl_softlock_release(&lk), 0);
  return rc;
}

static void test_dead_holder_on_this_host_evicted_at_once(void **state) {
  fx *f = *state;
  for (int mode = CKL_LOCK_SHARED; mode <= CKL_LOCK_EXCLUSIVE; mode++) {
    die_arg a = {.f = f, .mode = (ckl_lock_mode)mode};
    assert_int_equal(ckl_test_wait(ckl_test_fork(die_holding, &a)), 0);
    assert_true(mode == CKL_LOCK_SHARED ? ckl_test_count_entries(f->rpath, "r.") == 1
                                        : sl_exists(f->wpath));
    assert_int_equal(take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
    assert_false(sl_exists(f->wpath));
    assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  }
  /* Killed while holding the state mutex. */
  die_arg a = {.f = f, .mode = CKL_LOCK_EXCLUSIVE, .fp = "softlock.mutex.after_create",
               .action = "crash"};
  assert_int_equal(ckl_test_wait(ckl_test_fork(die_holding, &a)), CKL_FAILPOINT_CRASH_STATUS);
  assert_true(sl_exists(f->spath));
  assert_int_equal(take(f, CKL_LOCK_EXCLUSIVE, NULL), 0);
  assert_false(sl_exists(f->spath));
  /* Killed between claiming P.write and releasing the mutex. */
  a.fp = "softlock.writer.after_claim";
  assert_int_equal(ckl_test_wait(ckl_test_fork(die_holding, &a)), CKL_FAILPOINT_CRASH_STATUS);
  assert_true(sl_exists(f->spath) && sl_exists(f->wpath));
  assert_int_equal(take(f, CKL_LOCK_SHARED, NULL), 0);
  assert_false(sl_exists(f->spath) || sl_exists(f->wpath));
}

static void test_dead_holder_on_other_host_waits_for_ttl(void **state) {
  fx *f = *state;
  /* Frozen: a second of real time between the child's stamp and the
   * "still busy 1 s before the TTL" check must not cross the TTL. */
  sl_freeze_wall(&f->sh->wall_base);
  for (int mode = CKL_LOCK_SHARED; mode <= CKL_LOCK_EXCLUSIVE; mode++) {
    atomic_store(&f->sh->wall_off, 0);
    die_arg a = {.f = f, .mode = (ckl_lock_mode)mode, .host = "node-b"};
    assert_int_equal(ckl_test_wait(ckl_test_fork(die_holding, &a)), 0);
    assert_int_equal(take(f, CKL_LOCK_EXCLUSIVE, "node-a"), CKL_EBUSY);
    atomic_store(&f->sh->wall_off, (STALE_MS(TTL_MS) - 1000) * MS);
    assert_int_equal(take(f, CKL_LOCK_EXCLUSIVE, "node-a"), CKL_EBUSY);
    atomic_store(&f->sh->wall_off, (STALE_MS(TTL_MS) + 1000) * MS);
    assert_int_equal(take(f, CKL_LOCK_EXCLUSIVE, "node-a"), 0);
    assert_false(sl_exists(f->wpath));
    assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  }
}

int main(void) {
  /* A child that dies at a failpoint must not take the test runner's
   * output buffers with it half-written. */
  setvbuf(stdout, NULL, _IONBF, 0);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_exclusive_processes),
      T(test_mixed_processes),
      T(test_fork_semantics),
      T(test_dead_holder_on_this_host_evicted_at_once),
      T(test_dead_holder_on_other_host_waits_for_ttl),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * The store freeze, the exclusive store lock and the deleter guard
 * (freeze.h): every pair of holders, across threads and processes, with
 * exact codes and the named holder; the entry protocol's invariant under
 * contention (a freezer and a deleter never hold at once); waiting; fork
 * inertness; what an exclusive freeze excludes (GC lock, writers of other
 * processes) and what a failed one leaves behind (nothing); and the GC's
 * wiring (a frozen store refuses a sweeping GC, not a dry run), and
 * forget's and prune's.
 */
// ctest-labels: threads
// ctest-timeout: 300
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datastore/store_internal.h"
#include "gc_fixture.h"

static ckl_freeze_opts try_opts(ckl_holder *who, const char *op) {
  ckl_freeze_opts o = {.timeout_ms = CKL_TRY, .operation = op, .busy_holder = who};
  return o;
}

static void assert_frozen(gcfx *f, int frozen, int deleting) {
  ckl_freeze_info fi;
  assert_int_equal(ckl_freeze_probe(f->st, &fi), 0);
  assert_int_equal(fi.frozen, frozen);
  assert_int_equal(fi.deleting, deleting);
}

/* Freezers share; deleters share; each group excludes the other, and the
 * CKL_EBUSY names the holder of the other group from the roster. */
static void test_groups_share_and_exclude(void **state) {
  gcfx *f = *state;
  ckl_freeze a = {0}, b = {0};
  ckl_holder who;
  ckl_freeze_opts o = try_opts(&who, "with-lock");
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, &o), 0);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &b, &o), 0);
  assert_frozen(f, CKL_FREEZE_SHARED, 0);

  ckl_deleter d = {0};
  memset(&who, 0, sizeof who);
  ckl_freeze_opts od = try_opts(&who, "forget");
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &od), CKL_EBUSY);
  assert_false(d.held);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "with-lock");
  assert_int_equal(who.pid, getpid());
  assert_non_null(strstr(who.target, ".lock#freeze"));

  ckl_freeze_release(&a);
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &od), CKL_EBUSY); /* b still freezes */
  ckl_freeze_release(&b);
  assert_frozen(f, 0, 0);

  ckl_deleter d2 = {0};
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &od), 0);
  od.operation = "gc";
  assert_int_equal(ckl_deleter_acquire(f->st, &d2, &od), 0); /* deleters share */
  assert_frozen(f, 0, 1);
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, &o), CKL_EBUSY);
  assert_false(a.held);
  assert_int_equal(who.known, 1);
  assert_true(!strcmp(who.operation, "forget") || !strcmp(who.operation, "gc"));
  assert_non_null(strstr(who.target, ".lock#delete"));
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_EXCLUSIVE, &a, &o), CKL_EBUSY);
  ckl_deleter_release(&d);
  ckl_deleter_release(&d2);
  assert_frozen(f, 0, 0);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, &o), 0);
  ckl_freeze_release(&a);
  /* release of a released or zeroed struct is a no-op */
  assert_int_equal(ckl_freeze_release(&a), 0);
  assert_int_equal(ckl_deleter_release(&d), 0);
}

static void test_bad_arguments(void **state) {
  gcfx *f = *state;
  ckl_freeze a = {0};
  ckl_deleter d = {0};
  assert_int_equal(ckl_freeze_acquire(NULL, CKL_FREEZE_SHARED, &a, NULL), -EINVAL);
  assert_int_equal(ckl_freeze_acquire(f->st, 7, &a, NULL), -EINVAL);
  ckl_freeze_opts o = {.timeout_ms = -2};
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, &o), -EINVAL);
  o.timeout_ms = 0;
  o.operation = "";
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &o), -EINVAL);
  o.operation = "an-operation-name-far-longer-than-31-bytes";
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &o), -EINVAL);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, NULL), 0);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, NULL), -EINVAL); /* held */
  assert_true(a.held);
  ckl_freeze_release(&a);
  assert_int_equal(ckl_freeze_probe(f->st, NULL), -EINVAL);
}

/* The exclusive freeze excludes every other freeze, deleters, the GC lock
 * and other processes' writers; and is excluded by each of them. */
static int child_try_writer(void *arg) {
  const char *dir = arg;
  ckl_store *st;
  if (ckl_store_open(dir, NULL, &st) != 0) return 10;
  ckl_proclock_guard g = {0};
  ckl_holder who = {0};
  int rc = ckl_proclock_shared(st->proclock, &g, CKL_TRY, &who);
  ckl_proclock_release(&g);
  ckl_store_close(st);
  return rc == CKL_EBUSY ? 0 : rc == 0 ? 1 : 2;
}

static void test_exclusive(void **state) {
  gcfx *f = *state;
  ckl_freeze x = {0}, y = {0};
  ckl_holder who;
  ckl_freeze_opts o = try_opts(&who, "maintenance");
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_EXCLUSIVE, &x, &o), 0);
  assert_frozen(f, CKL_FREEZE_EXCLUSIVE, 0);

  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &y, &o), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "maintenance");
  /* a second exclusive: the GC lock is the first thing in its way */
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_EXCLUSIVE, &y, &o), CKL_EBUSY);
  ckl_deleter d = {0};
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &o), CKL_EBUSY);
  assert_string_equal(who.operation, "maintenance");
  ckl_gclock gl = {0};
  assert_int_equal(ckl_gclock_acquire(f->st->lock_path, &gl, CKL_TRY, NULL), CKL_EBUSY);
  /* a writer of another process */
  assert_int_equal(ckl_test_wait(ckl_test_fork(child_try_writer, f->dir)), 0);
  /* a GC, dry run or not, meets the GC lock */
  ckl_gc_opts go = {.dry_run = 1, .busy_holder = &who};
  assert_int_equal(ckl_gc_run(f->st, &go, NULL), CKL_EBUSY);
  ckl_freeze_release(&x);
  assert_frozen(f, 0, 0);
  assert_int_equal(ckl_test_wait(ckl_test_fork(child_try_writer, f->dir)), 1);

  /* ... and a shared freeze keeps an exclusive out, releasing what it
   * took on the way: the GC lock and the process locker are free after. */
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &y, &o), 0);
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_EXCLUSIVE, &x, &o), CKL_EBUSY);
  assert_false(x.held);
  assert_string_equal(who.operation, "maintenance");
  int s = -1, e = -1;
  ckl_proclock_counts(f->st->proclock, &s, &e);
  assert_int_equal(e, 0);
  assert_int_equal(ckl_gclock_acquire(f->st->lock_path, &gl, CKL_TRY, NULL), 0);
  /* and a running GC keeps an exclusive out, naming it */
  ckl_freeze_release(&y);
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_EXCLUSIVE, &x, &o), CKL_EBUSY);
  assert_string_equal(who.operation, "gc");
  ckl_gclock_release(&gl);
  /* a deleter keeps an exclusive out at its last step; nothing is left */
  assert_int_equal(ckl_deleter_acquire(f->st, &d, NULL), 0);
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_EXCLUSIVE, &x, &o), CKL_EBUSY);
  ckl_proclock_counts(f->st->proclock, &s, &e);
  assert_int_equal(e, 0);
  assert_int_equal(ckl_gclock_acquire(f->st->lock_path, &gl, CKL_TRY, NULL), 0);
  ckl_gclock_release(&gl);
  ckl_deleter_release(&d);
}

/* Deadlines: a waiting deleter times out while the freeze stays, naming
 * it; a waiting deleter gets in once the freeze is released. */
typedef struct waiter {
  gcfx *f;
  int64_t timeout;
  int rc;
  ckl_holder who;
} waiter;
static void *deleter_thread(void *arg) {
  waiter *w = arg;
  ckl_deleter d = {0};
  ckl_freeze_opts o = {.timeout_ms = w->timeout, .operation = "prune", .busy_holder = &w->who};
  w->rc = ckl_deleter_acquire(w->f->st, &d, &o);
  ckl_deleter_release(&d);
  return NULL;
}

static void test_waiting(void **state) {
  gcfx *f = *state;
  ckl_freeze a = {0};
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &a, NULL), 0);
  waiter w = {.f = f, .timeout = 150};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, deleter_thread, &w), 0);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, CKL_ETIMEDOUT);
  assert_string_equal(w.who.operation, "freeze");

  w = (waiter){.f = f, .timeout = CKL_FOREVER};
  assert_int_equal(pthread_create(&t, NULL, deleter_thread, &w), 0);
  ckl_freeze_release(&a);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, 0);
}

/* The invariant of the entry protocol under contention: threads that take
 * freezes and deleter guards in a loop never see a member of the other
 * group inside, and a thread that holds a deleter guard always gets a
 * second one (no spurious busy from a freezer that is only trying). */
typedef struct arena {
  gcfx *f;
  atomic_int freezers, deleters;
  atomic_int violations, nested_busy, entered[2];
} arena;
typedef struct worker {
  arena *a;
  int id;
} worker;
static void *contender(void *arg) {
  worker *w = arg;
  arena *a = w->a;
  for (int i = 0; i < 400; i++) {
    if ((i + w->id) % 2 == 0) {
      ckl_freeze fz = {0};
      if (ckl_freeze_acquire(a->f->st, CKL_FREEZE_SHARED, &fz, NULL) == 0) {
        atomic_fetch_add(&a->freezers, 1);
        if (atomic_load(&a->deleters) != 0) atomic_fetch_add(&a->violations, 1);
        atomic_fetch_add(&a->entered[0], 1);
        atomic_fetch_sub(&a->freezers, 1);
        ckl_freeze_release(&fz);
      }
    } else {
      ckl_deleter d = {0}, d2 = {0};
      if (ckl_deleter_acquire(a->f->st, &d, NULL) == 0) {
        atomic_fetch_add(&a->deleters, 1);
        if (atomic_load(&a->freezers) != 0) atomic_fetch_add(&a->violations, 1);
        if (ckl_deleter_acquire(a->f->st, &d2, NULL) != 0) atomic_fetch_add(&a->nested_busy, 1);
        atomic_fetch_add(&a->entered[1], 1);
        atomic_fetch_sub(&a->deleters, 1);
        ckl_deleter_release(&d2);
        ckl_deleter_release(&d);
      }
    }
  }
  return NULL;
}

static void test_contention_invariant(void **state) {
  gcfx *f = *state;
  arena a = {.f = f};
  enum { N = 4 };
  pthread_t t[N];
  worker w[N];
  for (int i = 0; i < N; i++) {
    w[i] = (worker){&a, i};
    assert_int_equal(pthread_create(&t[i], NULL, contender, &w[i]), 0);
  }
  for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
  assert_int_equal(atomic_load(&a.violations), 0);
  assert_int_equal(atomic_load(&a.nested_busy), 0);
  /* both groups got in at some point (each thread's first try runs while
   * nobody holds anything or only its own group does) */
  assert_true(atomic_load(&a.entered[0]) > 0);
  assert_true(atomic_load(&a.entered[1]) > 0);
  assert_frozen(f, 0, 0);
}

/* Across processes: a child's freeze stops the parent's deleter, named by
 * the child's pid; a child's release of an inherited freeze is inert. */
typedef struct xproc {
  const char *dir;
  int to_parent[2], to_child[2];
} xproc;
static int child_freezer(void *arg) {
  ckl_test_die_with_parent();
  xproc *x = arg;
  ckl_store *st;
  if (ckl_store_open(x->dir, NULL, &st) != 0) return 10;
  ckl_freeze fz = {0};
  ckl_freeze_opts o = {.operation = "with-lock"};
  int rc = ckl_freeze_acquire(st, CKL_FREEZE_SHARED, &fz, &o);
  char c = rc == 0 ? 'y' : 'n';
  if (write(x->to_parent[1], &c, 1) != 1) return 11;
  if (read(x->to_child[0], &c, 1) != 1) return 12;
  ckl_freeze_release(&fz);
  ckl_store_close(st);
  return 0;
}

static void test_cross_process(void **state) {
  gcfx *f = *state;
  xproc x = {.dir = f->dir};
  assert_int_equal(pipe(x.to_parent), 0);
  assert_int_equal(pipe(x.to_child), 0);
  pid_t pid = ckl_test_fork(child_freezer, &x);
  char c;
  assert_int_equal(read(x.to_parent[0], &c, 1), 1);
  assert_int_equal(c, 'y');
  ckl_deleter d = {0};
  ckl_holder who = {0};
  ckl_freeze_opts o = try_opts(&who, "forget");
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &o), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, pid);
  assert_string_equal(who.operation, "with-lock");
  c = 'g';
  assert_int_equal(write(x.to_child[1], &c, 1), 1);
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(ckl_deleter_acquire(f->st, &d, &o), 0);
  ckl_deleter_release(&d);
  for (int i = 0; i < 2; i++) {
    close(x.to_parent[i]);
    close(x.to_child[i]);
  }
}

static int child_release_inherited(void *arg) {
  ckl_freeze *fz = arg;
  ckl_freeze_release(fz);
  return fz->held ? 1 : 0;
}

static void test_fork_inert(void **state) {
  gcfx *f = *state;
  ckl_freeze fz = {0};
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &fz, NULL), 0);
  assert_int_equal(ckl_test_wait(ckl_test_fork(child_release_inherited, &fz)), 0);
  assert_frozen(f, CKL_FREEZE_SHARED, 0); /* the parent's lock survived */
  ckl_deleter d = {0};
  assert_int_equal(ckl_deleter_acquire(f->st, &d, NULL), CKL_EBUSY);
  ckl_freeze_release(&fz);
  assert_frozen(f, 0, 0);
}

/* GC honours the freeze: a sweeping GC gets CKL_EBUSY naming the freezer
 * (or CKL_ETIMEDOUT when it waits), deletes nothing; a dry run goes on. */
static void test_gc_honours_freeze(void **state) {
  gcfx *f = *state;
  gcfx_insert(f, 1); /* unreferenced, old: a GC would remove it */
  gcfx_age_chunks(f, 100000);
  ckl_freeze fz = {0};
  ckl_freeze_opts fo = {.operation = "with-lock"};
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &fz, &fo), 0);
  ckl_holder who = {0};
  ckl_gc_opts go = {.use_safety = 1, .atime_safety_s = 0, .busy_holder = &who};
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f->st, &go, &r), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "with-lock");
  assert_true(gcfx_has(f, 1));
  go.wait_ms = 100;
  assert_int_equal(ckl_gc_run(f->st, &go, &r), CKL_ETIMEDOUT);
  go.wait_ms = 0;
  go.dry_run = 1;
  assert_int_equal(ckl_gc_run(f->st, &go, &r), 0);
  assert_int_equal(r.removed_chunks, 1); /* would remove */
  assert_true(gcfx_has(f, 1));
  ckl_freeze_release(&fz);
  go.dry_run = 0;
  assert_int_equal(ckl_gc_run(f->st, &go, &r), 0);
  assert_int_equal(r.removed_chunks, 1);
  assert_false(gcfx_has(f, 1));
  /* the GC's deleter guard is gone with it */
  assert_frozen(f, 0, 0);
}

/* forget and prune honour the freeze in the library itself: CKL_EBUSY
 * naming the freezer, the snapshots untouched; a dry-run prune goes on. */
static void test_forget_prune_honour_freeze(void **state) {
  gcfx *f = *state;
  uint32_t ids[] = {1, 2};
  gcfx_snapshot(f, "host/a/2026-01-01T00:00:00Z", ids, 2);
  gcfx_snapshot(f, "host/a/2026-01-02T00:00:00Z", ids, 2);
  ckl_snapshot_name old;
  assert_int_equal(ckl_snapshot_name_parse("host/a/2026-01-01T00:00:00Z", &old), 0);
  ckl_group_name g;
  assert_int_equal(ckl_group_name_parse("host/a", &g), 0);
  char path[4096];
  assert_true(ckl_snapshot_path(f->st, &old, path, sizeof path) > 0);

  ckl_freeze fz = {0};
  ckl_freeze_opts fo = {.operation = "with-lock"};
  assert_int_equal(ckl_freeze_acquire(f->st, CKL_FREEZE_SHARED, &fz, &fo), 0);
  ckl_holder who = {0};
  ckl_forget_opts o = {.busy_holder = &who};
  assert_int_equal(ckl_forget(f->st, &old, &o), CKL_EBUSY);
  assert_string_equal(who.operation, "with-lock");
  assert_int_equal(access(path, F_OK), 0);
  memset(&who, 0, sizeof who);
  ckl_prune_opts po = {.keep_last = 1, .busy_holder = &who};
  ckl_prune_item *items = NULL;
  size_t n = 99;
  assert_int_equal(ckl_prune(f->st, &g, &po, &items, &n), CKL_EBUSY);
  assert_string_equal(who.operation, "with-lock");
  free(items);
  po.dry_run = 1;
  assert_int_equal(ckl_prune(f->st, &g, &po, &items, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(items[1].keep, 0); /* would remove the old one */
  free(items);
  assert_int_equal(access(path, F_OK), 0);
  ckl_freeze_release(&fz);

  assert_int_equal(ckl_forget(f->st, &old, NULL), CKL_FORGET_DELETED);
  assert_int_equal(access(path, F_OK), -1);
  assert_frozen(f, 0, 0); /* forget's deleter guard went with it */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_groups_share_and_exclude, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_exclusive, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_waiting, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_contention_invariant, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_cross_process, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_fork_inert, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_gc_honours_freeze, gcfx_setup, gcfx_teardown),
      cmocka_unit_test_setup_teardown(test_forget_prune_honour_freeze, gcfx_setup, gcfx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

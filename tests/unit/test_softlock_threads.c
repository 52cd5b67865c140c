/* Soft lock under threads: 8 threads x thousands of rounds never put two
 * writers, or a writer and a reader, inside at once; 8 readers are inside
 * together; and a writer facing readers that never stop still gets in,
 * with at most one round per reader thread after its claim (counted in
 * rounds, not time). Every check is "never", none is about timing. */
// ctest-labels: threads
// ctest-timeout: 180
#include "test_softlock_util.h"

#include <pthread.h>
#include <sched.h>

#define NTHREADS 8
#define EXCL_ROUNDS 500
#define MIXED_ROUNDS 500
#define RENDEZVOUS_ROUNDS 10
#define WRITER_ROUNDS 20

typedef struct shared {
  atomic_int writers_inside, readers_inside, max_readers;
  atomic_int violations, errors;
  atomic_long entries, reader_entries, writer_entries;
  atomic_int stop;
} shared;

typedef struct fx {
  char *dir, *path, *rpath;
  shared sh;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("softthreads");
  f->path = ckl_test_path(f->dir, "lk");
  f->rpath = sl_sib(f->path, ".readers");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_failpoint_disarm_all();
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->rpath);
  free(f->dir);
  free(f);
  return 0;
}

typedef struct worker {
  fx *f;
  int index;
  pthread_t th;
} worker;

/* Half the workers wait forever, half with a deadline (never reached:
 * CKL_TEST_NEVER_MS); odd ones drive their heartbeat externally, even ones
 * get the thread. */
static ckl_softlock_opts worker_opts(int index) {
  ckl_softlock_opts o;
  memset(&o, 0, sizeof o);
  o.timeout_ms = index % 2 ? CKL_TEST_NEVER_MS : CKL_FOREVER;
  o.heartbeat = index % 2 ? CKL_SOFTLOCK_HEARTBEAT_EXTERNAL : CKL_SOFTLOCK_HEARTBEAT_THREAD;
  o.operation = "worker";
  return o;
}

static void enter_writer(shared *sh) {
  if (atomic_fetch_add(&sh->writers_inside, 1) != 0) atomic_fetch_add(&sh->violations, 1);
  if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
  atomic_fetch_add(&sh->entries, 1);
  atomic_fetch_add(&sh->writer_entries, 1);
  for (int i = 0; i < 10; i++) sched_yield(); /* give a wrongly admitted thread a chance to show */
  if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
  atomic_fetch_sub(&sh->writers_inside, 1);
}

static void enter_reader(shared *sh) {
  int n = atomic_fetch_add(&sh->readers_inside, 1) + 1;
  if (atomic_load(&sh->writers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
  int m = atomic_load(&sh->max_readers);
  while (n > m && !atomic_compare_exchange_weak(&sh->max_readers, &m, n)) {
  }
  atomic_fetch_add(&sh->entries, 1);
  atomic_fetch_add(&sh->reader_entries, 1);
  for (int i = 0; i < 10; i++) sched_yield();
  if (atomic_load(&sh->writers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
  atomic_fetch_sub(&sh->readers_inside, 1);
}

static int one_round(fx *f, int index, ckl_lock_mode mode) {
  ckl_softlock lk = {0};
  ckl_softlock_opts o = worker_opts(index);
  int rc = ckl_softlock_acquire(&lk, f->path, mode, &o);
  if (rc != 0) {
    atomic_fetch_add(&f->sh.errors, 1);
    return rc;
  }
  if (mode == CKL_LOCK_EXCLUSIVE) enter_writer(&f->sh);
  else enter_reader(&f->sh);
  if (ckl_softlock_check(&lk) != 0) atomic_fetch_add(&f->sh.errors, 1);
  if (o.heartbeat == CKL_SOFTLOCK_HEARTBEAT_EXTERNAL && ckl_softlock_refresh(&lk) != 0)
    atomic_fetch_add(&f->sh.errors, 1);
  if (ckl_softlock_release(&lk) != 0) atomic_fetch_add(&f->sh.errors, 1);
  return 0;
}

static void run_workers(fx *f, void *(*fn)(void *)) {
  worker w[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    w[i].f = f;
    w[i].index = i;
    assert_int_equal(pthread_create(&w[i].th, NULL, fn, &w[i]), 0);
  }
  for (int i = 0; i < NTHREADS; i++) assert_int_equal(pthread_join(w[i].th, NULL), 0);
}

static void *excl_main(void *arg) {
  worker *w = arg;
  for (int i = 0; i < EXCL_ROUNDS; i++)
    if (one_round(w->f, w->index, CKL_LOCK_EXCLUSIVE) != 0) break;
  return NULL;
}

static void test_exclusive_threads(void **state) {
  fx *f = *state;
  run_workers(f, excl_main);
  assert_int_equal(atomic_load(&f->sh.errors), 0);
  assert_int_equal(atomic_load(&f->sh.violations), 0);
  assert_int_equal(atomic_load(&f->sh.entries), NTHREADS * EXCL_ROUNDS);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
  assert_int_equal(ckl_test_count_entries(f->dir, NULL), 1); /* only P.readers */
}

static void *mixed_main(void *arg) {
  worker *w = arg;
  for (int i = 0; i < MIXED_ROUNDS; i++) {
    /* Two dedicated writers, and every reader writes now and then. */
    ckl_lock_mode mode = w->index < 2 || i % 8 == 0 ? CKL_LOCK_EXCLUSIVE : CKL_LOCK_SHARED;
    if (one_round(w->f, w->index, mode) != 0) break;
  }
  return NULL;
}

static void test_mixed_threads(void **state) {
  fx *f = *state;
  run_workers(f, mixed_main);
  assert_int_equal(atomic_load(&f->sh.errors), 0);
  assert_int_equal(atomic_load(&f->sh.violations), 0);
  assert_int_equal(atomic_load(&f->sh.entries), NTHREADS * MIXED_ROUNDS);
  assert_true(atomic_load(&f->sh.writer_entries) >= 2 * MIXED_ROUNDS);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
}

/* All eight readers inside at once: each waits (bounded) for the others. */
static void *rendezvous_main(void *arg) {
  worker *w = arg;
  shared *sh = &w->f->sh;
  for (int round = 0; round < RENDEZVOUS_ROUNDS; round++) {
    ckl_softlock lk = {0};
    ckl_softlock_opts o = worker_opts(w->index);
    if (ckl_softlock_acquire(&lk, w->f->path, CKL_LOCK_SHARED, &o) != 0) {
      atomic_fetch_add(&sh->errors, 1);
      return NULL;
    }
    int target = NTHREADS * (round + 1);
    atomic_fetch_add(&sh->entries, 1);
    for (int i = 0; i < CKL_TEST_WAIT_MS && atomic_load(&sh->entries) < target; i++)
      ckl__sleep_ms(1);
    if (atomic_load(&sh->entries) < target) atomic_fetch_add(&sh->violations, 1);
    /* Leave only when everyone has seen the full house. */
    atomic_fetch_add(&sh->readers_inside, 1);
    for (int i = 0; i < CKL_TEST_WAIT_MS && atomic_load(&sh->readers_inside) < target; i++)
      ckl__sleep_ms(1);
    ckl_softlock_release(&lk);
  }
  return NULL;
}

static void test_readers_share(void **state) {
  fx *f = *state;
  run_workers(f, rendezvous_main);
  assert_int_equal(atomic_load(&f->sh.errors), 0);
  assert_int_equal(atomic_load(&f->sh.violations), 0);
  assert_int_equal(atomic_load(&f->sh.entries), NTHREADS * RENDEZVOUS_ROUNDS);
}

/* ---- writer starvation ----------------------------------------------------------- */

static void *reader_loop(void *arg) {
  worker *w = arg;
  while (!atomic_load(&w->f->sh.stop))
    if (one_round(w->f, w->index, CKL_LOCK_SHARED) != 0) break;
  return NULL;
}

typedef struct writer_round {
  fx *f;
  int rc;
  long entries_at_entry;
  int readers_at_entry;
} writer_round;

static void *writer_once(void *arg) {
  writer_round *wr = arg;
  ckl_softlock lk = {0};
  ckl_softlock_opts o = worker_opts(0);
  o.timeout_ms = CKL_TEST_NEVER_MS;
  wr->rc = ckl_softlock_acquire(&lk, wr->f->path, CKL_LOCK_EXCLUSIVE, &o);
  wr->entries_at_entry = atomic_load(&wr->f->sh.reader_entries);
  wr->readers_at_entry = atomic_load(&wr->f->sh.readers_inside);
  if (wr->rc == 0) ckl_softlock_release(&lk);
  return NULL;
}

static void test_writer_not_starved(void **state) {
  fx *f = *state;
  worker w[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    w[i].f = f;
    w[i].index = i;
    assert_int_equal(pthread_create(&w[i].th, NULL, reader_loop, &w[i]), 0);
  }
  long before_all = atomic_load(&f->sh.reader_entries);
  for (int round = 0; round < WRITER_ROUNDS; round++) {
    /* Let the readers run a while between writers: wait for 50 rounds. */
    long start = atomic_load(&f->sh.reader_entries);
    for (int i = 0; i < CKL_TEST_WAIT_MS && atomic_load(&f->sh.reader_entries) < start + 50; i++)
      ckl__sleep_ms(1);
    assert_int_equal(ckl_failpoint_arm("softlock.writer.after_claim", "1*pause"), 0);
    writer_round wr = {.f = f};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_once, &wr), 0);
    assert_int_equal(ckl_failpoint_wait_hits("softlock.writer.after_claim", 1, CKL_TEST_WAIT_MS),
                     0);
    long at_claim = atomic_load(&f->sh.reader_entries);
    assert_int_equal(ckl_failpoint_release("softlock.writer.after_claim"), 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(wr.rc, 0);
    /* Once P.write exists no reader gets in; a reader that had already
     * looked may still count its entry: at most one per reader thread. */
    assert_true(wr.entries_at_entry - at_claim <= NTHREADS);
    assert_int_equal(wr.readers_at_entry, 0);
  }
  atomic_store(&f->sh.stop, 1);
  for (int i = 0; i < NTHREADS; i++) assert_int_equal(pthread_join(w[i].th, NULL), 0);
  assert_int_equal(atomic_load(&f->sh.errors), 0);
  assert_int_equal(atomic_load(&f->sh.violations), 0);
  assert_true(atomic_load(&f->sh.reader_entries) - before_all >= 50L * WRITER_ROUNDS);
  assert_int_equal(ckl_test_count_entries(f->rpath, NULL), 0);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_exclusive_threads),
      T(test_mixed_threads),
      T(test_readers_share),
      T(test_writer_not_starved),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

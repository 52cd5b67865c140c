/* The borg thread-safety report, done right: path locks exclude between
 * threads exactly as between processes, readers never see a writer inside,
 * and the process locker keeps processes apart through two handles of one
 * store used by many threads. Counters are atomics (in shared memory for
 * forked processes); every check is "never", none is about timing. */
// ctest-labels: threads
// ctest-timeout: 180
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/internal.h"

#define NWORKERS 8
#define EXCL_ROUNDS 1000
#define RW_ROUNDS 300
#define PL_ROUNDS 200

typedef struct shared {
  atomic_int inside;         /* exclusive holders inside */
  atomic_int max_inside;
  atomic_int readers_inside;
  atomic_int writer_inside;
  atomic_int violations;     /* a check that must never fail, failed */
  atomic_int errors;         /* an acquisition that returned an error */
  atomic_int done;
  atomic_long entries;
  atomic_long writer_entries;
} shared;

typedef struct fx {
  char *dir;
  char *path;
  shared *sh;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("lockthreads");
  f->path = ckl_test_path(f->dir, "one.lck");
  f->sh = ckl_test_shared_alloc(sizeof *f->sh);
  memset(f->sh, 0, sizeof *f->sh);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_test_shared_free(f->sh, sizeof *f->sh);
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->dir);
  free(f);
  return 0;
}

typedef struct worker {
  fx *f;
  int index;
} worker;

/* Half the workers block in the kernel (CKL_FOREVER), half poll with a
 * deadline: both waiting paths must exclude. */
static int64_t timeout_for(int index) { return index % 2 ? CKL_TEST_NEVER_MS : CKL_FOREVER; }

/* ---- exclusive: never two inside --------------------------------------- */

static void exclusive_rounds(fx *f, int index) {
  shared *sh = f->sh;
  for (int i = 0; i < EXCL_ROUNDS; i++) {
    ckl_path_lock lk = {0};
    ckl_lock_opts o = {.timeout_ms = timeout_for(index), .operation = "worker"};
    int rc = ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, &o);
    if (rc != 0) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    int now = atomic_fetch_add(&sh->inside, 1) + 1;
    int seen = atomic_load(&sh->max_inside);
    while (now > seen && !atomic_compare_exchange_weak(&sh->max_inside, &seen, now)) {
    }
    if (now != 1) atomic_fetch_add(&sh->violations, 1);
    sched_yield(); /* stay inside across a scheduling point */
    if (atomic_load(&sh->inside) != 1) atomic_fetch_add(&sh->violations, 1);
    atomic_fetch_add(&sh->entries, 1);
    atomic_fetch_sub(&sh->inside, 1);
    if (ckl_path_lock_release(&lk) != 0) atomic_fetch_add(&sh->errors, 1);
  }
}

static void *exclusive_thread(void *v) {
  worker *w = v;
  exclusive_rounds(w->f, w->index);
  return NULL;
}

static int exclusive_proc(void *v) {
  worker *w = v;
  exclusive_rounds(w->f, w->index);
  return 0;
}

static void check_exclusive(const shared *sh) {
  assert_int_equal(atomic_load(&sh->errors), 0);
  assert_int_equal(atomic_load(&sh->violations), 0);
  assert_int_equal(atomic_load(&sh->max_inside), 1);
  assert_int_equal(atomic_load(&sh->entries), (long)NWORKERS * EXCL_ROUNDS);
}

static void test_threads_exclusive(void **state) {
  fx *f = *state;
  pthread_t t[NWORKERS];
  worker w[NWORKERS];
  for (int i = 0; i < NWORKERS; i++) {
    w[i] = (worker){f, i};
    assert_int_equal(pthread_create(&t[i], NULL, exclusive_thread, &w[i]), 0);
  }
  for (int i = 0; i < NWORKERS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  check_exclusive(f->sh);
}

static void test_processes_exclusive(void **state) {
  fx *f = *state;
  pid_t pid[NWORKERS];
  worker w[NWORKERS];
  for (int i = 0; i < NWORKERS; i++) {
    w[i] = (worker){f, i};
    pid[i] = ckl_test_fork(exclusive_proc, &w[i]);
  }
  for (int i = 0; i < NWORKERS; i++) assert_int_equal(ckl_test_wait(pid[i]), 0);
  check_exclusive(f->sh);
}

/* ---- readers and a writer: never both inside ------------------------- */

static void reader_rounds(fx *f, int index) {
  shared *sh = f->sh;
  for (int i = 0; i < RW_ROUNDS; i++) {
    ckl_path_lock lk = {0};
    ckl_lock_opts o = {.timeout_ms = timeout_for(index)};
    if (ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_SHARED, &o) != 0) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    atomic_fetch_add(&sh->readers_inside, 1);
    if (atomic_load(&sh->writer_inside) != 0) atomic_fetch_add(&sh->violations, 1);
    sched_yield(); /* stay inside across a scheduling point */
    if (atomic_load(&sh->writer_inside) != 0) atomic_fetch_add(&sh->violations, 1);
    atomic_fetch_sub(&sh->readers_inside, 1);
    atomic_fetch_add(&sh->entries, 1);
    if (ckl_path_lock_release(&lk) != 0) atomic_fetch_add(&sh->errors, 1);
  }
}

static void writer_rounds(fx *f) {
  shared *sh = f->sh;
  for (int i = 0; i < RW_ROUNDS; i++) {
    ckl_path_lock lk = {0};
    ckl_lock_opts o = {.timeout_ms = CKL_FOREVER, .operation = "writer"};
    if (ckl_path_lock_acquire(&lk, f->path, CKL_LOCK_EXCLUSIVE, &o) != 0) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    atomic_store(&sh->writer_inside, 1);
    if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
    sched_yield();
    if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
    atomic_store(&sh->writer_inside, 0);
    atomic_fetch_add(&sh->writer_entries, 1);
    if (ckl_path_lock_release(&lk) != 0) atomic_fetch_add(&sh->errors, 1);
  }
}

static void *reader_thread(void *v) {
  worker *w = v;
  reader_rounds(w->f, w->index);
  return NULL;
}
static void *writer_thread(void *v) {
  writer_rounds(((worker *)v)->f);
  return NULL;
}
static int reader_proc(void *v) {
  worker *w = v;
  reader_rounds(w->f, w->index);
  return 0;
}
static int writer_proc(void *v) {
  writer_rounds(((worker *)v)->f);
  return 0;
}

static void check_rw(const shared *sh) {
  assert_int_equal(atomic_load(&sh->errors), 0);
  assert_int_equal(atomic_load(&sh->violations), 0);
  assert_int_equal(atomic_load(&sh->entries), (long)NWORKERS * RW_ROUNDS);
  assert_int_equal(atomic_load(&sh->writer_entries), RW_ROUNDS);
}

static void test_threads_readers_and_writer(void **state) {
  fx *f = *state;
  pthread_t t[NWORKERS + 1];
  worker w[NWORKERS + 1];
  for (int i = 0; i <= NWORKERS; i++) {
    w[i] = (worker){f, i};
    assert_int_equal(
        pthread_create(&t[i], NULL, i == NWORKERS ? writer_thread : reader_thread, &w[i]), 0);
  }
  for (int i = 0; i <= NWORKERS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  check_rw(f->sh);
}

static void test_processes_readers_and_writer(void **state) {
  fx *f = *state;
  pid_t pid[NWORKERS + 1];
  worker w[NWORKERS + 1];
  for (int i = 0; i <= NWORKERS; i++) {
    w[i] = (worker){f, i};
    pid[i] = ckl_test_fork(i == NWORKERS ? writer_proc : reader_proc, &w[i]);
  }
  for (int i = 0; i <= NWORKERS; i++) assert_int_equal(ckl_test_wait(pid[i]), 0);
  check_rw(f->sh);
}

/* ---- process locker: many threads, two handles, one other process ----
 * "Inside" is per process here: process A's threads (through handles h1
 * and h2 of one store) against process B. B runs TRY attempts back to
 * back for as long as A works, so it lands in every gap A leaves; it must
 * never be inside while any of A's guards is. */

typedef struct pl_worker {
  ckl_proclock *pl;
  shared *sh;
  int exclusive;
} pl_worker;

static void *pl_a_thread(void *v) {
  pl_worker *w = v;
  shared *sh = w->sh;
  for (int i = 0; i < PL_ROUNDS; i++) {
    ckl_proclock_guard g = {0};
    int rc = w->exclusive ? ckl_proclock_exclusive(w->pl, &g, CKL_FOREVER, NULL)
                          : ckl_proclock_shared(w->pl, &g, CKL_FOREVER, NULL);
    if (rc != 0) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    atomic_fetch_add(&sh->readers_inside, 1); /* "A is inside" */
    if (atomic_load(&sh->writer_inside) != 0) atomic_fetch_add(&sh->violations, 1);
    sched_yield();
    if (atomic_load(&sh->writer_inside) != 0) atomic_fetch_add(&sh->violations, 1);
    atomic_fetch_sub(&sh->readers_inside, 1);
    atomic_fetch_add(&sh->entries, 1);
    if (ckl_proclock_release(&g) != 0) atomic_fetch_add(&sh->errors, 1);
  }
  return NULL;
}

typedef struct pl_b_arg {
  const char *path;
  shared *sh;
  int exclusive;
} pl_b_arg;

static int pl_b_proc(void *v) {
  pl_b_arg *a = v;
  shared *sh = a->sh;
  ckl_proclock *pl;
  if (ckl_proclock_open(a->path, &pl) != 0) return 1;
  /* At least one entry after A is done, so B is known to work at all. */
  long mine = 0;
  for (;;) {
    int a_done = atomic_load(&sh->done);
    ckl_proclock_guard g = {0};
    int rc = a->exclusive ? ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL)
                          : ckl_proclock_shared(pl, &g, CKL_TRY, NULL);
    if (rc == 0) {
      atomic_store(&sh->writer_inside, 1); /* "B is inside" */
      if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
      sched_yield();
      if (atomic_load(&sh->readers_inside) != 0) atomic_fetch_add(&sh->violations, 1);
      atomic_store(&sh->writer_inside, 0);
      atomic_fetch_add(&sh->writer_entries, 1);
      mine++;
      if (ckl_proclock_release(&g) != 0) atomic_fetch_add(&sh->errors, 1);
      if (a_done) break;
    } else if (rc != CKL_EBUSY) {
      atomic_fetch_add(&sh->errors, 1);
      break;
    }
  }
  ckl_proclock_close(pl);
  return mine > 0 ? 0 : 2;
}

static void proclock_two_handles(fx *f, int a_exclusive, int b_exclusive) {
  shared *sh = f->sh;
  char *alias = ckl_test_path(f->dir, "./one.lck");
  ckl_proclock *h1, *h2;
  assert_int_equal(ckl_proclock_open(f->path, &h1), 0);
  assert_int_equal(ckl_proclock_open(alias, &h2), 0);
  /* Fork B while this process is still single-threaded. */
  pl_b_arg ba = {.path = f->path, .sh = sh, .exclusive = b_exclusive};
  pid_t b = ckl_test_fork(pl_b_proc, &ba);
  pthread_t t[NWORKERS];
  pl_worker w[NWORKERS];
  for (int i = 0; i < NWORKERS; i++) {
    w[i] = (pl_worker){i % 2 ? h2 : h1, sh, a_exclusive};
    assert_int_equal(pthread_create(&t[i], NULL, pl_a_thread, &w[i]), 0);
  }
  for (int i = 0; i < NWORKERS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  atomic_store(&sh->done, 1);
  assert_int_equal(ckl_test_wait(b), 0);
  print_message("process B got in %ld times while or after A worked\n",
                atomic_load(&sh->writer_entries));
  assert_int_equal(atomic_load(&sh->errors), 0);
  assert_int_equal(atomic_load(&sh->violations), 0);
  assert_int_equal(atomic_load(&sh->entries), (long)NWORKERS * PL_ROUNDS);
  int s = -1, e = -1;
  ckl_proclock_counts(h1, &s, &e);
  assert_int_equal(s + e, 0);
  ckl_proclock_close(h1);
  ckl_proclock_close(h2);
  free(alias);
}

static void test_proclock_shared_threads_vs_exclusive_process(void **state) {
  proclock_two_handles(*state, 0, 1);
}

static void test_proclock_exclusive_threads_vs_shared_process(void **state) {
  /* A's exclusive guards coexist with each other (one process), and still
   * keep B's shared guards out. */
  proclock_two_handles(*state, 1, 0);
}

static void test_proclock_exclusive_threads_vs_exclusive_process(void **state) {
  proclock_two_handles(*state, 1, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_threads_exclusive),
      T(test_threads_readers_and_writer),
      T(test_processes_exclusive),
      T(test_processes_readers_and_writer),
      T(test_proclock_shared_threads_vs_exclusive_process),
      T(test_proclock_exclusive_threads_vs_shared_process),
      T(test_proclock_exclusive_threads_vs_exclusive_process),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

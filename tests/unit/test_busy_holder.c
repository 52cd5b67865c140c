/* Busy answers name their holder (issue 7), forced with failpoints:
 *   - a holder parked right after its kernel grant (flock.after_lock,
 *     gclock.after_lock) has already written its record: a contender gets
 *     CKL_EBUSY naming it, then the lock once the holder is done;
 *   - a contender that finds the lock held and nobody to name re-probes
 *     (locks/busy.c, parked at busy.reprobe): it takes the lock if the
 *     holder leaves meanwhile, names the holder if one appears, and answers
 *     busy with known = 0 only after its bound;
 *   - a contender that asked for no name never re-probes.
 * A holder "without a name" is made by zeroing its record while it holds
 * the lock: exactly its state between clearing the record and unlocking. */
// ctest-labels: threads
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "locks/locks_internal.h"

typedef struct fx {
  char *dir;
  char *path;  /* dir/a.lck, a path lock */
  char *store; /* dir/.lock, for the GC lock */
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("busyholder");
  f->path = ckl_test_path(f->dir, "a.lck");
  f->store = ckl_test_path(f->dir, ".lock");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_failpoint_disarm_all();
  ckl_test_rmtree(f->dir);
  free(f->store);
  free(f->path);
  free(f->dir);
  free(f);
  return 0;
}

static int try_lock(const char *path, ckl_lock_mode mode, int64_t timeout, ckl_holder *who) {
  ckl_path_lock lk = {0};
  ckl_lock_opts o = {.timeout_ms = timeout, .busy_holder = who};
  int rc = ckl_path_lock_acquire(&lk, path, mode, &o);
  if (rc == 0) assert_int_equal(ckl_path_lock_release(&lk), 0);
  return rc;
}

/* ---- a holder parked between its grant and the rest of its acquire ------ */

typedef struct holder_arg {
  const char *path;
  ckl_path_lock lk;
  ckl_gclock gl;
  int64_t tid;
  int rc;
} holder_arg;

static void *path_holder(void *p) {
  holder_arg *a = p;
  a->tid = ckl__gettid();
  ckl_lock_opts o = {.timeout_ms = CKL_TRY, .operation = "backup"};
  a->rc = ckl_path_lock_acquire(&a->lk, a->path, CKL_LOCK_EXCLUSIVE, &o);
  return NULL;
}

static void *gc_holder(void *p) {
  holder_arg *a = p;
  a->tid = ckl__gettid();
  a->rc = ckl_gclock_acquire(a->path, &a->gl, CKL_TRY, NULL);
  return NULL;
}

static void test_path_holder_named_at_grant(void **state) {
  fx *f = *state;
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "1*pause"), 0);
  holder_arg a = {.path = f->path};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, path_holder, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("flock.after_lock", 1, CKL_TEST_WAIT_MS), 0);

  /* Granted, not yet verified or returned: the record is there already. */
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(who.pid, getpid());
  assert_int_equal(who.tid, a.tid);
  assert_string_equal(who.target, f->path);
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "backup");
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, 20, &who), CKL_ETIMEDOUT);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.tid, a.tid);

  ckl_failpoint_release("flock.after_lock");
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(a.rc, 0);
  /* The name given while parked is the holder's: same token and time. */
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_string_equal(who.token, a.lk.token);
  assert_int_equal(who.since_ns, a.lk.acquired_ns);
  assert_int_equal(ckl_path_lock_release(&a.lk), 0);
  /* The holder finished: the contender gets the lock. */
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), 0);
}

/* A grant dropped at flock.after_lock (failpoint error) takes its record
 * with it: the next holder is not named after a lock that never was. */
static void test_dropped_grant_clears_record(void **state) {
  fx *f = *state;
  assert_int_equal(ckl_failpoint_arm("flock.after_lock", "1*error(EIO)"), 0);
  holder_arg a = {.path = f->path};
  path_holder(&a);
  assert_int_equal(a.rc, -EIO);
  assert_int_equal(a.lk.held, 0);
  unsigned char rec[CKL__HOLDER_REC_SIZE], zeros[CKL__HOLDER_REC_SIZE] = {0};
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, rec, sizeof rec, 0), (ssize_t)sizeof rec);
  close(fd);
  assert_memory_equal(rec, zeros, sizeof rec);
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), 0);
}

static void test_gc_holder_named_at_grant(void **state) {
  fx *f = *state;
  assert_int_equal(ckl_failpoint_arm("gclock.after_lock", "1*pause"), 0);
  holder_arg a = {.path = f->store};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, gc_holder, &a), 0);
  assert_int_equal(ckl_failpoint_wait_hits("gclock.after_lock", 1, CKL_TEST_WAIT_MS), 0);

  ckl_gclock g2 = {0};
  ckl_holder who;
  memset(&who, 0, sizeof who);
  assert_int_equal(ckl_gclock_acquire(f->store, &g2, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(g2.held, 0);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "gc");
  assert_int_equal(who.pid, getpid());
  assert_int_equal(who.tid, a.tid);

  ckl_failpoint_release("gclock.after_lock");
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(a.rc, 0);
  assert_int_equal(ckl_gclock_acquire(f->store, &g2, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.since_ns, a.gl.since_ns);
  assert_int_equal(ckl_gclock_release(&a.gl), 0);
  assert_int_equal(ckl_gclock_acquire(f->store, &g2, CKL_TRY, &who), 0);
  assert_int_equal(ckl_gclock_release(&g2), 0);
}

/* ---- the re-probe of a nameless busy -------------------------------------- */

typedef struct contender_arg {
  const char *path;
  int64_t timeout_ms;
  ckl_holder who;
  int rc;
} contender_arg;

static void *contender(void *p) {
  contender_arg *c = p;
  memset(&c->who, 0, sizeof c->who);
  c->rc = try_lock(c->path, CKL_LOCK_EXCLUSIVE, c->timeout_ms, &c->who);
  return NULL;
}

/* Run fn(arg) on a thread and return once it is parked at its first
 * re-probe (busy.reprobe, found the lock held by nobody it could name). */
static void park_at_reprobe(void *(*fn)(void *), void *arg, pthread_t *th) {
  assert_int_equal(ckl_failpoint_arm("busy.reprobe", "1*pause"), 0);
  assert_int_equal(pthread_create(th, NULL, fn, arg), 0);
  assert_int_equal(ckl_failpoint_wait_hits("busy.reprobe", 1, CKL_TEST_WAIT_MS), 0);
}

/* Let it retry, and wait for it. */
static void resume_from_reprobe(pthread_t th) {
  assert_int_equal(ckl_failpoint_release("busy.reprobe"), 1);
  assert_int_equal(pthread_join(th, NULL), 0);
}

/* Hold `path` exclusively with the record zeroed: a held lock, no name. */
static void hold_nameless(const char *path, ckl_path_lock *lk) {
  ckl_lock_opts o = {.timeout_ms = CKL_TRY, .operation = "forget"};
  assert_int_equal(ckl_path_lock_acquire(lk, path, CKL_LOCK_EXCLUSIVE, &o), 0);
  assert_int_equal(ckl__holder_record_clear(lk->fd, 0), 0);
}

static void test_reprobe_takes_lock_holder_left(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  hold_nameless(f->path, &lk);
  contender_arg c = {.path = f->path, .timeout_ms = CKL_TRY};
  pthread_t th;
  park_at_reprobe(contender, &c, &th);
  /* It found the lock held and nobody to name, and is about to retry. */
  assert_int_equal(ckl_path_lock_release(&lk), 0);
  resume_from_reprobe(th);
  /* Not a false busy: the retry got the lock the holder had let go. */
  assert_int_equal(c.rc, 0);
  assert_int_equal(ckl_failpoint_hits("busy.reprobe"), 1);
}

static void test_reprobe_names_holder_that_appears(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  hold_nameless(f->path, &lk);
  contender_arg c = {.path = f->path, .timeout_ms = CKL_TRY};
  pthread_t th;
  park_at_reprobe(contender, &c, &th);
  /* The holder names itself (as one does right after its grant). */
  assert_int_equal(ckl__holder_record_write(lk.fd, 0, lk.token, "late", lk.acquired_ns), 0);
  resume_from_reprobe(th);
  assert_int_equal(c.rc, CKL_EBUSY);
  assert_int_equal(c.who.known, 1);
  assert_string_equal(c.who.operation, "late");
  assert_string_equal(c.who.token, lk.token);
  assert_int_equal(c.who.tid, ckl__gettid());
  assert_int_equal(ckl_path_lock_release(&lk), 0);
}

static void test_reprobe_bounded_then_unknown(void **state) {
  fx *f = *state;
  ckl_path_lock lk = {0};
  hold_nameless(f->path, &lk);
  assert_int_equal(ckl_failpoint_arm("busy.reprobe", "count"), 0);
  /* A holder that never names itself: busy, unknown, after re-probing. */
  ckl_holder who;
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 0);
  assert_string_equal(who.target, f->path);
  uint64_t hits = ckl_failpoint_hits("busy.reprobe");
  assert_true(hits >= 1);
  assert_int_equal(try_lock(f->path, CKL_LOCK_SHARED, 20, &who), CKL_ETIMEDOUT);
  assert_int_equal(who.known, 0);
  assert_true(ckl_failpoint_hits("busy.reprobe") > hits);
  /* An error action ends the re-probe at once: one hit, then busy. */
  assert_int_equal(ckl_failpoint_arm("busy.reprobe", "error(EIO)"), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 0);
  assert_int_equal(ckl_failpoint_hits("busy.reprobe"), 1);
  /* Who asks for no name is answered at once. */
  assert_int_equal(ckl_failpoint_arm("busy.reprobe", "count"), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, NULL), CKL_EBUSY);
  assert_int_equal(ckl_failpoint_hits("busy.reprobe"), 0);
  /* A named holder is answered at once too. */
  assert_int_equal(ckl__holder_record_write(lk.fd, 0, lk.token, "forget", lk.acquired_ns), 0);
  assert_int_equal(try_lock(f->path, CKL_LOCK_EXCLUSIVE, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_string_equal(who.operation, "forget");
  assert_int_equal(ckl_failpoint_hits("busy.reprobe"), 0);
  assert_int_equal(ckl_path_lock_release(&lk), 0);
}

/* The upgrade of a shared lock re-probes like an acquire. */
typedef struct up_arg {
  ckl_path_lock *lk;
  ckl_holder who;
  int rc;
} up_arg;

static void *upgrader(void *p) {
  up_arg *u = p;
  u->rc = ckl_path_lock_convert(u->lk, CKL_LOCK_EXCLUSIVE, CKL_TRY, &u->who);
  return NULL;
}

static void test_convert_reprobe_takes_lock(void **state) {
  fx *f = *state;
  ckl_path_lock sh = {0}, other = {0};
  ckl_lock_opts o = {.timeout_ms = CKL_TRY};
  assert_int_equal(ckl_path_lock_acquire(&sh, f->path, CKL_LOCK_SHARED, &o), 0);
  assert_int_equal(ckl_path_lock_acquire(&other, f->path, CKL_LOCK_SHARED, &o), 0);
  /* No roster hook in this binary: the other shared holder has no name. */
  up_arg u = {.lk = &sh, .rc = 1};
  pthread_t th;
  park_at_reprobe(upgrader, &u, &th);
  assert_int_equal(ckl_path_lock_release(&other), 0);
  resume_from_reprobe(th);
  assert_int_equal(u.rc, 0);
  assert_int_equal(sh.mode, CKL_LOCK_EXCLUSIVE);
  assert_int_equal(ckl_path_lock_release(&sh), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_path_holder_named_at_grant, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dropped_grant_clears_record, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gc_holder_named_at_grant, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reprobe_takes_lock_holder_left, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reprobe_names_holder_that_appears, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reprobe_bounded_then_unknown, setup, teardown),
      cmocka_unit_test_setup_teardown(test_convert_reprobe_takes_lock, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Per-process state that a fork must change (common/process.c): the cached
 * pid and tid, the token generator's key, the fork generation and the
 * release gate. Each test fails if the state is not reset in a child:
 * a child that kept the parent's key would hand out the parent's next
 * token, one that kept the pid would call the parent's locks its own. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NO_RAW_CLONE 1 /* TSan cannot follow a child it did not see forked */
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define NO_RAW_CLONE 1
#endif

static int is_token(const char *t) {
  if (strlen(t) != CKL_TOKEN_HEX_LEN) return 0;
  for (const char *p = t; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

/* ---- tokens ------------------------------------------------------------------ */

#define N_THREADS 4
#define PER_THREAD 5000

typedef struct tok { char s[CKL_TOKEN_HEX_LEN + 1]; } tok;
static tok *all_tokens;

static void *make_tokens(void *arg) {
  tok *out = all_tokens + (size_t)(intptr_t)arg * PER_THREAD;
  for (int i = 0; i < PER_THREAD; i++)
    if (ckl__random_token(out[i].s) != 0) return (void *)1;
  return NULL;
}

static int tok_cmp(const void *a, const void *b) { return strcmp(a, b); }

static void test_tokens_unique_across_threads(void **state) {
  (void)state;
  all_tokens = calloc(N_THREADS * PER_THREAD, sizeof *all_tokens);
  assert_non_null(all_tokens);
  pthread_t th[N_THREADS];
  for (intptr_t i = 0; i < N_THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, make_tokens, (void *)i), 0);
  for (int i = 0; i < N_THREADS; i++) {
    void *r;
    assert_int_equal(pthread_join(th[i], &r), 0);
    assert_null(r);
  }
  qsort(all_tokens, N_THREADS * PER_THREAD, sizeof *all_tokens, tok_cmp);
  for (size_t i = 0; i < N_THREADS * PER_THREAD; i++) {
    assert_true(is_token(all_tokens[i].s));
    if (i > 0) assert_string_not_equal(all_tokens[i - 1].s, all_tokens[i].s);
  }
  /* Both halves carry randomness: no fixed prefix across tokens. */
  assert_memory_not_equal(all_tokens[0].s, all_tokens[N_THREADS * PER_THREAD - 1].s, 16);
  free(all_tokens);
}

/* ---- fork children ------------------------------------------------------------ */

typedef struct report {
  pid_t pid;       /* ckl__getpid() in the child */
  pid_t real_pid;  /* getpid(2) in the child */
  int64_t tid, real_tid;
  char token[CKL_TOKEN_HEX_LEN + 1];
  int token_rc;
} report;

static report *rep;

static int child_report(void *arg) {
  (void)arg;
  rep->real_pid = (pid_t)syscall(SYS_getpid);
  rep->pid = ckl__getpid();
  rep->real_tid = (int64_t)syscall(SYS_gettid);
  rep->tid = ckl__gettid();
  rep->token_rc = ckl__random_token(rep->token);
  return 0;
}

/* The parent's next token, as a child with a copied generator would have
 * produced it: the child's first one must differ. */
static void check_child(pid_t child, const char *parent_next) {
  assert_int_equal(rep->real_pid, child);
  assert_int_equal(rep->pid, child);
  assert_int_equal(rep->tid, rep->real_tid);
  assert_int_equal(rep->token_rc, 0);
  assert_true(is_token(rep->token));
  assert_string_not_equal(rep->token, parent_next);
}

static void test_fork_child_gets_own_pid_tid_and_key(void **state) {
  (void)state;
  rep = ckl_test_shared_alloc(sizeof *rep);
  /* Warm every cache in the parent first, so the child has something to
   * inherit. */
  assert_int_equal(ckl__getpid(), getpid());
  assert_int_equal(ckl__gettid(), (int64_t)syscall(SYS_gettid));
  char t[CKL_TOKEN_HEX_LEN + 1], next[CKL_TOKEN_HEX_LEN + 1];
  assert_int_equal(ckl__random_token(t), 0);
  pid_t child = ckl_test_fork(child_report, NULL);
  assert_int_equal(ckl_test_wait(child), 0);
  assert_int_equal(ckl__random_token(next), 0);
  check_child(child, next);
  assert_int_equal(ckl__getpid(), getpid()); /* the parent's is unchanged */
  ckl_test_shared_free(rep, sizeof *rep);
}

static void test_raw_clone_child_gets_own_pid_and_key(void **state) {
  (void)state;
#ifdef NO_RAW_CLONE
  skip();
#else
  /* clone() without CLONE_VM and without glibc's fork(): no atfork handler
   * runs, only MADV_WIPEONFORK can reset the state. */
  rep = ckl_test_shared_alloc(sizeof *rep);
  char t[CKL_TOKEN_HEX_LEN + 1], next[CKL_TOKEN_HEX_LEN + 1];
  assert_int_equal(ckl__random_token(t), 0);
  (void)ckl__getpid();
  fflush(NULL);
  long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, NULL, NULL, 0UL);
  if (pid == 0) {
    child_report(NULL);
    syscall(SYS_exit_group, 0);
  }
  assert_true(pid > 0);
  assert_int_equal(ckl_test_wait((pid_t)pid), 0);
  assert_int_equal(ckl__random_token(next), 0);
  /* The tid cache is glibc-thread-local state that a raw clone leaves
   * stale in glibc itself; only the pid and key are ours to reset. */
  assert_int_equal(rep->real_pid, (pid_t)pid);
  assert_int_equal(rep->pid, (pid_t)pid);
  assert_int_equal(rep->token_rc, 0);
  assert_string_not_equal(rep->token, next);
  ckl_test_shared_free(rep, sizeof *rep);
#endif
}

/* ---- fork generation and gate ------------------------------------------------- */

static int exit0(void *arg) {
  (void)arg;
  return 0;
}

static void test_fork_generation_and_gate(void **state) {
  (void)state;
  uint64_t g = ckl__fork_generation();
  assert_true(g != 0);
  assert_true(ckl__fork_gate_enter(g));
  ckl__fork_gate_leave();
  assert_false(ckl__fork_gate_enter(0)); /* "unknown" never passes */
  assert_false(ckl__fork_gate_enter(g + 1));
  assert_int_equal(ckl_test_wait(ckl_test_fork(exit0, NULL)), 0);
  /* A fork happened since g was read: its holder must unlock explicitly. */
  assert_false(ckl__fork_gate_enter(g));
  uint64_t g2 = ckl__fork_generation();
  assert_true(g2 != g && g2 != 0);
  assert_true(ckl__fork_gate_enter(g2));
  ckl__fork_gate_leave();
}

/* A fork must wait for a release that passed the gate: stay inside it,
 * fork from another thread, and check the fork cannot finish until the
 * gate is left. */
typedef struct gate_arg {
  atomic_int forked;
  pid_t child;
} gate_arg;

static void *fork_thread(void *v) {
  gate_arg *a = v;
  a->child = ckl_test_fork(exit0, NULL);
  atomic_store(&a->forked, 1);
  return NULL;
}

static void test_fork_waits_for_gate(void **state) {
  (void)state;
  uint64_t g = ckl__fork_generation();
  assert_true(ckl__fork_gate_enter(g));
  gate_arg a = {0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, fork_thread, &a), 0);
  /* Wait until the fork has begun (its prepare handler makes the
   * generation read as "unknown", 0) or, were the gate broken, finished.
   * With a working gate it is now stuck until we leave. */
  while (ckl__fork_generation() != 0 && !atomic_load(&a.forked)) sched_yield();
  assert_int_equal(atomic_load(&a.forked), 0);
  assert_int_equal(ckl__fork_generation(), 0);
  ckl__fork_gate_leave();
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(atomic_load(&a.forked), 1);
  assert_int_equal(ckl_test_wait(a.child), 0);
  assert_false(ckl__fork_gate_enter(g));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tokens_unique_across_threads),
      cmocka_unit_test(test_fork_child_gets_own_pid_tid_and_key),
      cmocka_unit_test(test_raw_clone_child_gets_own_pid_and_key),
      cmocka_unit_test(test_fork_generation_and_gate),
      cmocka_unit_test(test_fork_waits_for_gate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Process locker and GC lock: exclusion across processes, coexistence
 * inside one, the per-(dev, ino) registry, oldest_shared, upgrade and
 * downgrade, fork safety, holder records, failpoints. Every cross-process
 * claim is checked from a real second process. */
// ctest-labels: threads
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "locks/locks_internal.h"

typedef struct fx {
  char *dir;
  char *path; /* dir/.lock */
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = ckl_test_mkdtemp("proclock");
  f->path = ckl_test_path(f->dir, ".lock");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  ckl_failpoint_disarm_all();
  ckl_test_rmtree(f->dir);
  free(f->path);
  free(f->dir);
  free(f);
  return 0;
}

enum op { OP_SHARED, OP_EXCL, OP_GC };

/* ---- helpers: a second process that probes, or holds until told -------- */

typedef struct probe_out {
  int rc;
  ckl_holder who;
} probe_out;

typedef struct probe_arg {
  const char *path;
  enum op op;
  probe_out *out;
} probe_arg;

static int take_op(const char *path, enum op op, int64_t timeout, ckl_proclock **pl,
                   ckl_proclock_guard *g, ckl_gclock *gc, ckl_holder *who) {
  if (op == OP_GC) return ckl_gclock_acquire(path, gc, timeout, who);
  int rc = ckl_proclock_open(path, pl);
  if (rc < 0) return rc;
  rc = op == OP_EXCL ? ckl_proclock_exclusive(*pl, g, timeout, who)
                     : ckl_proclock_shared(*pl, g, timeout, who);
  if (rc < 0) {
    ckl_proclock_close(*pl);
    *pl = NULL;
  }
  return rc;
}

static void drop_op(ckl_proclock *pl, ckl_proclock_guard *g, ckl_gclock *gc) {
  ckl_gclock_release(gc);
  ckl_proclock_release(g);
  ckl_proclock_close(pl);
}

static int probe_child(void *v) {
  probe_arg *a = v;
  ckl_proclock *pl = NULL;
  ckl_proclock_guard g = {0};
  ckl_gclock gc = {0};
  a->out->rc = take_op(a->path, a->op, CKL_TRY, &pl, &g, &gc, &a->out->who);
  if (a->out->rc == 0) drop_op(pl, &g, &gc);
  return 0;
}

/* One TRY attempt at op from a fresh process. */
static int probe(const char *path, enum op op, ckl_holder *who) {
  probe_out *out = ckl_test_shared_alloc(sizeof *out);
  probe_arg a = {.path = path, .op = op, .out = out};
  assert_int_equal(ckl_test_wait(ckl_test_fork(probe_child, &a)), 0);
  int rc = out->rc;
  if (who) *who = out->who;
  ckl_test_shared_free(out, sizeof *out);
  return rc;
}

typedef struct holder_proc {
  const char *path;
  enum op op;
  int ready[2], go[2];
  pid_t pid;
} holder_proc;

static int hold_child(void *v) {
  ckl_test_die_with_parent();
  holder_proc *h = v;
  ckl_proclock *pl = NULL;
  ckl_proclock_guard g = {0};
  ckl_gclock gc = {0};
  int rc = take_op(h->path, h->op, CKL_TRY, &pl, &g, &gc, NULL);
  char c = rc == 0 ? 'R' : 'E';
  if (write(h->ready[1], &c, 1) != 1) return 2;
  if (read(h->go[0], &c, 1) != 1) return 3;
  if (rc == 0) drop_op(pl, &g, &gc);
  return rc == 0 ? 0 : 1;
}

static void hold_start(holder_proc *h, const char *path, enum op op) {
  memset(h, 0, sizeof *h);
  h->path = path;
  h->op = op;
  assert_int_equal(pipe2(h->ready, O_CLOEXEC), 0);
  assert_int_equal(pipe2(h->go, O_CLOEXEC), 0);
  h->pid = ckl_test_fork(hold_child, h);
  char c = 0;
  assert_int_equal(read(h->ready[0], &c, 1), 1);
  assert_int_equal(c, 'R');
}

static void hold_stop(holder_proc *h) {
  assert_int_equal(write(h->go[1], "G", 1), 1);
  assert_int_equal(ckl_test_wait(h->pid), 0);
  for (int i = 0; i < 2; i++) {
    close(h->ready[i]);
    close(h->go[i]);
  }
}

static void counts_are(ckl_proclock *pl, int s, int e) {
  int cs = -1, ce = -1;
  ckl_proclock_counts(pl, &cs, &ce);
  assert_int_equal(cs, s);
  assert_int_equal(ce, e);
}

/* ---- process locker ---------------------------------------------------- */

static void test_open_errors_and_bad_args(void **state) {
  fx *f = *state;
  ckl_proclock *pl = (ckl_proclock *)1;
  char *link = ckl_test_path(f->dir, "link.lock");
  char *orphan = ckl_test_path(f->dir, "missing/.lock");
  assert_int_equal(symlink(f->path, link), 0);
  assert_int_equal(ckl_proclock_open(link, &pl), -ELOOP);
  assert_null(pl);
  assert_int_equal(access(f->path, F_OK), -1); /* the target was not created */
  assert_int_equal(ckl_proclock_open(f->dir, &pl), -EISDIR);
  assert_int_equal(ckl_proclock_open(orphan, &pl), -ENOENT);
  assert_int_equal(ckl_proclock_open(NULL, &pl), -EINVAL);
  assert_int_equal(ckl_proclock_open(f->path, NULL), -EINVAL);

  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  struct stat st;
  assert_int_equal(lstat(f->path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_release(&g), 0);
  assert_int_equal(ckl_proclock_release(NULL), 0);
  assert_int_equal(ckl_proclock_downgrade(&g), -EINVAL);
  assert_int_equal(ckl_proclock_upgrade(&g, CKL_TRY, NULL), -EINVAL);
  assert_int_equal(ckl_proclock_shared(NULL, &g, CKL_TRY, NULL), -EINVAL);
  assert_int_equal(ckl_proclock_shared(pl, &g, -2, NULL), -EINVAL);
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), -EINVAL); /* held */
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL), -EINVAL);
  counts_are(pl, 1, 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  assert_int_equal(g.held, 0);
  counts_are(pl, 0, 0);
  ckl_proclock_close(pl);
  ckl_proclock_close(NULL);
  free(link);
  free(orphan);
}

static void test_registry_is_keyed_by_inode(void **state) {
  fx *f = *state;
  char *alias = ckl_test_path(f->dir, "./.lock");
  char *other = ckl_test_path(f->dir, "other.lock");
  ckl_proclock *a, *b, *c;
  assert_int_equal(ckl_proclock_open(f->path, &a), 0);
  assert_int_equal(ckl_proclock_open(alias, &b), 0);
  assert_int_equal(ckl_proclock_open(other, &c), 0);
  assert_ptr_equal(a, b);
  assert_ptr_not_equal(a, c);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_shared(b, &g, CKL_TRY, NULL), 0);
  counts_are(a, 1, 0);
  counts_are(c, 0, 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  ckl_proclock_close(a);
  ckl_proclock_close(b);
  ckl_proclock_close(c);
  free(alias);
  free(other);
}

static void test_exclusive_refused_while_another_process_shares(void **state) {
  fx *f = *state;
  holder_proc h;
  hold_start(&h, f->path, OP_SHARED);
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard g = {0};
  ckl_holder who;
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 0); /* a shared holder: the roster's to name */
  assert_string_equal(who.target, f->path);
  assert_int_equal(ckl_proclock_exclusive(pl, &g, 30, &who), CKL_ETIMEDOUT);
  assert_int_equal(g.held, 0);
  counts_are(pl, 0, 0);
  /* Shared guards of two processes coexist. */
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  hold_stop(&h);
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  ckl_proclock_close(pl);
}

static void test_exclusive_holder_is_named(void **state) {
  fx *f = *state;
  holder_proc h;
  hold_start(&h, f->path, OP_EXCL);
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard g = {0};
  ckl_holder who;
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, h.pid);
  assert_string_equal(who.operation, "proclock-exclusive");
  assert_int_equal(ckl_proclock_shared(pl, &g, 30, &who), CKL_ETIMEDOUT);
  assert_int_equal(who.pid, h.pid);
  hold_stop(&h);
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  ckl_proclock_close(pl);
}

static void test_exclusive_coexists_inside_one_process(void **state) {
  fx *f = *state;
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard s1 = {0}, s2 = {0}, e1 = {0}, e2 = {0};
  assert_int_equal(ckl_proclock_shared(pl, &s1, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_exclusive(pl, &e1, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_exclusive(pl, &e2, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_shared(pl, &s2, CKL_TRY, NULL), 0);
  counts_are(pl, 2, 2);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), CKL_EBUSY);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), CKL_EBUSY);
  assert_int_equal(ckl_proclock_release(&e1), 0);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), CKL_EBUSY); /* e2 still there */
  assert_int_equal(ckl_proclock_release(&e2), 0);
  counts_are(pl, 2, 0);
  /* Downgraded in place: others may share, not exclude. */
  assert_int_equal(probe(f->path, OP_SHARED, NULL), 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), CKL_EBUSY);
  assert_int_equal(ckl_proclock_release(&s1), 0);
  assert_int_equal(ckl_proclock_release(&s2), 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), 0);
  ckl_proclock_close(pl);
}

static void test_oldest_shared(void **state) {
  fx *f = *state;
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  int64_t since = 77;
  assert_int_equal(ckl_proclock_oldest_shared(pl, &since), -ENOENT);
  assert_int_equal(since, 77);
  ckl_proclock_guard a = {0}, e = {0}, b = {0};
  assert_int_equal(ckl_proclock_exclusive(pl, &e, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_oldest_shared(pl, &since), -ENOENT);
  assert_int_equal(ckl_proclock_shared(pl, &a, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_shared(pl, &b, CKL_TRY, NULL), 0);
  assert_true(a.since_ns > 0 && a.since_ns <= b.since_ns);
  assert_true(e.since_ns <= a.since_ns);
  assert_int_equal(ckl_proclock_oldest_shared(pl, &since), 0);
  assert_int_equal(since, a.since_ns);
  int64_t b_since = b.since_ns;
  assert_int_equal(ckl_proclock_release(&a), 0);
  assert_int_equal(ckl_proclock_oldest_shared(pl, &since), 0);
  assert_int_equal(since, b_since);
  assert_int_equal(ckl_proclock_downgrade(&e), 0); /* now shared, and the oldest */
  assert_int_equal(ckl_proclock_oldest_shared(pl, &since), 0);
  assert_int_equal(since, e.since_ns);
  assert_int_equal(ckl_proclock_release(&b), 0);
  assert_int_equal(ckl_proclock_release(&e), 0);
  assert_int_equal(ckl_proclock_oldest_shared(pl, &since), -ENOENT);
  assert_int_equal(ckl_proclock_oldest_shared(NULL, &since), -EINVAL);
  ckl_proclock_close(pl);
}

static void test_closing_a_handle_keeps_the_other_handles_lock(void **state) {
  fx *f = *state;
  char *alias = ckl_test_path(f->dir, "./.lock");
  ckl_proclock *h1, *h2;
  assert_int_equal(ckl_proclock_open(f->path, &h1), 0);
  assert_int_equal(ckl_proclock_open(alias, &h2), 0);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_exclusive(h1, &g, CKL_TRY, NULL), 0);
  ckl_proclock_close(h2);
  /* The POSIX-lock trap: open and close some other fd on the same file. */
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), CKL_EBUSY);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), CKL_EBUSY);
  /* Even the last handle closed early does not drop a held guard. */
  ckl_proclock_close(h1);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), CKL_EBUSY);
  assert_int_equal(ckl_proclock_release(&g), 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), 0);
  free(alias);
}

static void test_upgrade_and_downgrade(void **state) {
  fx *f = *state;
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard g = {0}, s = {0};
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_shared(pl, &s, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_upgrade(&g, CKL_TRY, NULL), 0);
  assert_int_equal(g.exclusive, 1);
  counts_are(pl, 1, 1);
  ckl_holder who;
  assert_int_equal(probe(f->path, OP_SHARED, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, getpid());
  assert_int_equal(ckl_proclock_upgrade(&g, CKL_TRY, NULL), 0); /* already */
  assert_int_equal(ckl_proclock_downgrade(&g), 0);
  assert_int_equal(g.exclusive, 0);
  counts_are(pl, 2, 0);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), 0);
  assert_int_equal(probe(f->path, OP_EXCL, &who), CKL_EBUSY);
  assert_int_equal(who.known, 0);
  /* The exclusive record was cleared when the process stopped being
   * exclusive, so it can never name a holder that is gone. */
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  unsigned char rec[CKL__HOLDER_REC_SIZE], zeros[CKL__HOLDER_REC_SIZE] = {0};
  assert_int_equal(pread(fd, rec, sizeof rec, ckl__holder_slot(0)), (ssize_t)sizeof rec);
  assert_memory_equal(rec, zeros, sizeof rec);
  close(fd);
  assert_int_equal(ckl_proclock_release(&s), 0);

  /* Another process shares: the upgrade fails and the guard stays shared. */
  holder_proc h;
  hold_start(&h, f->path, OP_SHARED);
  assert_int_equal(ckl_proclock_upgrade(&g, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(ckl_proclock_upgrade(&g, 30, &who), CKL_ETIMEDOUT);
  assert_int_equal(g.held, 1);
  assert_int_equal(g.exclusive, 0);
  counts_are(pl, 1, 0);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), 0); /* still shared, not dropped */
  assert_int_equal(probe(f->path, OP_EXCL, NULL), CKL_EBUSY);
  hold_stop(&h);
  assert_int_equal(ckl_proclock_upgrade(&g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), 0);
  ckl_proclock_close(pl);
}

typedef struct fork_arg {
  const char *path;
  ckl_proclock *inherited;
  ckl_proclock_guard *guard;
} fork_arg;

static int fork_child(void *v) {
  fork_arg *a = v;
  int s = -1, e = -1;
  ckl_proclock_counts(a->inherited, &s, &e);
  if (s != 0 || e != 0) return 1; /* the child holds nothing */
  if (ckl_proclock_release(a->guard) != 0 || a->guard->held) return 2;
  ckl_proclock_guard g = {0};
  if (ckl_proclock_shared(a->inherited, &g, CKL_TRY, NULL) != -EINVAL) return 3;
  int64_t since;
  if (ckl_proclock_oldest_shared(a->inherited, &since) != -ENOENT) return 4;
  ckl_proclock_close(a->inherited); /* inert */
  ckl_proclock *mine;
  if (ckl_proclock_open(a->path, &mine) != 0) return 5;
  if (mine == a->inherited) return 6; /* the registry was forgotten */
  if (ckl_proclock_exclusive(mine, &g, CKL_TRY, NULL) != CKL_EBUSY) return 7;
  if (ckl_proclock_shared(mine, &g, CKL_TRY, NULL) != CKL_EBUSY) return 8;
  ckl_proclock_close(mine);
  return 0;
}

static void test_fork_child_release_is_a_noop(void **state) {
  fx *f = *state;
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL), 0);
  fork_arg a = {.path = f->path, .inherited = pl, .guard = &g};
  assert_int_equal(ckl_test_wait(ckl_test_fork(fork_child, &a)), 0);
  /* The child has exited (closing its copies): the parent still holds. */
  assert_int_equal(g.held, 1);
  counts_are(pl, 0, 1);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), CKL_EBUSY);
  assert_int_equal(ckl_proclock_release(&g), 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), 0);
  ckl_proclock_close(pl);
}

static void test_replaced_lock_file_is_reported(void **state) {
  fx *f = *state;
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  char *tmp = ckl_test_path(f->dir, "new.lock");
  ckl_test_write_file(tmp, "", 0);
  assert_int_equal(rename(tmp, f->path), 0);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), CKL_EREPLACED);
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL), CKL_EREPLACED);
  counts_are(pl, 0, 0);
  ckl_proclock *fresh;
  assert_int_equal(ckl_proclock_open(f->path, &fresh), 0);
  assert_ptr_not_equal(fresh, pl);
  assert_int_equal(ckl_proclock_exclusive(fresh, &g, CKL_TRY, NULL), 0);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), CKL_EBUSY);
  assert_int_equal(ckl_proclock_release(&g), 0);
  ckl_proclock_close(fresh);
  ckl_proclock_close(pl);
  free(tmp);
}

static void test_proclock_failpoints(void **state) {
  fx *f = *state;
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard g = {0};
  assert_int_equal(ckl_failpoint_arm("proclock.before_shared", "1*error(EIO)"), 0);
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), -EIO);
  assert_int_equal(ckl_failpoint_arm("proclock.before_exclusive", "1*error(ENOSPC)"), 0);
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL), -ENOSPC);
  /* Failing after the grant must give the kernel lock back. */
  assert_int_equal(ckl_failpoint_arm("proclock.after_exclusive", "1*error(EIO)"), 0);
  assert_int_equal(ckl_proclock_exclusive(pl, &g, CKL_TRY, NULL), -EIO);
  assert_int_equal(g.held, 0);
  counts_are(pl, 0, 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), 0);
  assert_int_equal(ckl_proclock_shared(pl, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_failpoint_arm("proclock.after_exclusive", "1*error(EIO)"), 0);
  assert_int_equal(ckl_proclock_upgrade(&g, CKL_TRY, NULL), -EIO);
  assert_int_equal(g.exclusive, 0);
  counts_are(pl, 1, 0);
  assert_int_equal(probe(f->path, OP_SHARED, NULL), 0);
  assert_int_equal(ckl_proclock_release(&g), 0);
  ckl_proclock_close(pl);
}

/* ---- GC lock ------------------------------------------------------------ */

typedef struct gc_thread {
  const char *path;
  ckl_gclock g;
  int rc;
  int64_t tid;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stage; /* 1 = holding, 2 = told to release */
} gc_thread;

static void *gc_thread_main(void *v) {
  gc_thread *t = v;
  t->tid = ckl__gettid();
  t->rc = ckl_gclock_acquire(t->path, &t->g, CKL_TRY, NULL);
  pthread_mutex_lock(&t->mu);
  t->stage = 1;
  pthread_cond_broadcast(&t->cv);
  while (t->stage != 2) pthread_cond_wait(&t->cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
  ckl_gclock_release(&t->g);
  return NULL;
}

static void test_gc_lock_between_threads(void **state) {
  fx *f = *state;
  gc_thread t = {.path = f->path};
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.cv, NULL);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, gc_thread_main, &t), 0);
  pthread_mutex_lock(&t.mu);
  while (t.stage != 1) pthread_cond_wait(&t.cv, &t.mu);
  pthread_mutex_unlock(&t.mu);
  assert_int_equal(t.rc, 0);
  ckl_gclock g = {0};
  ckl_holder who;
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, getpid());
  assert_int_equal(who.tid, t.tid);
  assert_string_equal(who.operation, "gc");
  assert_int_equal(who.since_ns, t.g.since_ns);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, 30, &who), CKL_ETIMEDOUT);
  assert_int_equal(who.tid, t.tid);
  assert_int_equal(g.held, 0);
  pthread_mutex_lock(&t.mu);
  t.stage = 2;
  pthread_cond_broadcast(&t.cv);
  pthread_mutex_unlock(&t.mu);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, NULL), -EINVAL); /* held */
  assert_int_equal(ckl_gclock_release(&g), 0);
  assert_int_equal(ckl_gclock_release(&g), 0);
  pthread_mutex_destroy(&t.mu);
  pthread_cond_destroy(&t.cv);
}

static void test_gc_lock_between_processes(void **state) {
  fx *f = *state;
  holder_proc h;
  hold_start(&h, f->path, OP_GC);
  ckl_gclock g = {0};
  ckl_holder who;
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, &who), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, h.pid);
  assert_string_equal(who.operation, "gc");
  assert_string_equal(who.target, f->path);
  /* Its own byte: the process locker is free meanwhile, both ways. */
  ckl_proclock *pl;
  assert_int_equal(ckl_proclock_open(f->path, &pl), 0);
  ckl_proclock_guard pg = {0};
  assert_int_equal(ckl_proclock_exclusive(pl, &pg, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, 30, &who), CKL_ETIMEDOUT);
  assert_int_equal(who.pid, h.pid);
  hold_stop(&h);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, NULL), 0);
  assert_int_equal(probe(f->path, OP_GC, &who), CKL_EBUSY);
  assert_int_equal(who.pid, getpid());
  assert_int_equal(ckl_proclock_release(&pg), 0);
  assert_int_equal(probe(f->path, OP_EXCL, NULL), 0); /* GC lock does not block it */
  assert_int_equal(ckl_gclock_release(&g), 0);
  assert_int_equal(probe(f->path, OP_GC, NULL), 0);
  ckl_proclock_close(pl);
}

static ckl_gclock gc_inherited;
static const char *gc_path;
static int gc_fork_child(void *v) {
  (void)v;
  if (ckl_gclock_release(&gc_inherited) != 0 || gc_inherited.held) return 1;
  ckl_gclock g = {0};
  ckl_holder who;
  if (ckl_gclock_acquire(gc_path, &g, CKL_TRY, &who) != CKL_EBUSY) return 2;
  if (!who.known || who.pid != getppid()) return 3; /* the record survived too */
  return 0;
}

static void test_gc_lock_fork_and_errors(void **state) {
  fx *f = *state;
  gc_path = f->path;
  memset(&gc_inherited, 0, sizeof gc_inherited);
  assert_int_equal(ckl_gclock_acquire(f->path, &gc_inherited, CKL_TRY, NULL), 0);
  assert_int_equal(ckl_test_wait(ckl_test_fork(gc_fork_child, NULL)), 0);
  assert_int_equal(probe(f->path, OP_GC, NULL), CKL_EBUSY);
  assert_int_equal(ckl_gclock_release(&gc_inherited), 0);

  ckl_gclock g = {0};
  assert_int_equal(ckl_failpoint_arm("gclock.after_lock", "1*error(EIO)"), 0);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, NULL), -EIO);
  assert_int_equal(ckl_failpoint_arm("gclock.before_lock", "1*error(ENOLCK)"), 0);
  assert_int_equal(ckl_gclock_acquire(f->path, &g, CKL_TRY, NULL), -ENOLCK);
  assert_int_equal(g.held, 0);
  assert_int_equal(probe(f->path, OP_GC, NULL), 0);
  char *link = ckl_test_path(f->dir, "gc-link");
  assert_int_equal(symlink(f->path, link), 0);
  assert_int_equal(ckl_gclock_acquire(link, &g, CKL_TRY, NULL), -ELOOP);
  assert_int_equal(ckl_gclock_acquire(f->dir, &g, CKL_TRY, NULL), -EISDIR);
  assert_int_equal(ckl_gclock_acquire(NULL, &g, CKL_TRY, NULL), -EINVAL);
  assert_int_equal(ckl_gclock_release(NULL), 0);
  free(link);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_open_errors_and_bad_args),
      T(test_registry_is_keyed_by_inode),
      T(test_exclusive_refused_while_another_process_shares),
      T(test_exclusive_holder_is_named),
      T(test_exclusive_coexists_inside_one_process),
      T(test_oldest_shared),
      T(test_closing_a_handle_keeps_the_other_handles_lock),
      T(test_upgrade_and_downgrade),
      T(test_fork_child_release_is_a_noop),
      T(test_replaced_lock_file_is_reported),
      T(test_proclock_failpoints),
      T(test_gc_lock_between_threads),
      T(test_gc_lock_between_processes),
      T(test_gc_lock_fork_and_errors),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

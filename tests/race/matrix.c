/*
 * tests/race/matrix.c - operations, fixture and runners of the race
 * matrix (matrix.h). The expectations are in matrix_expect.c.
 *
 * Why B never waits: B runs while A is parked holding its locks, so a B
 * that waited for A would wait for ever. Every lock B takes is try-mode
 * (backup's process locker, GC, freeze, snapshot and group locks) except
 * the manifest lock, which always has a deadline: B's store handle is
 * opened with a 100 ms one, so "A holds the manifest lock" shows up as
 * CKL_ETIMEDOUT in 100 ms instead of 5 s. A's handle keeps the default.
 *
 * Steps that are not in the lists, and why:
 *   state.*             inside an LMDB write transaction: parked there, A
 *                       holds the writer mutex of every process and B's
 *                       first roster registration waits for it
 *   freeze.after_check  inside the freeze entry mutex, held for two fcntl
 *                       calls; a B that enters polls it for 2 s and then
 *                       says CKL_EBUSY with no holder (test_freeze.c)
 *   chunk.*, index.write.*, atomic.*, flock.*   below the lock protocol:
 *                       the operation's locks are the same as at the
 *                       enclosing step (backup.archive.after_close etc.)
 */
#include "testutil.h"

#include "ops_util.h"

#include <sys/wait.h>

#include "invariants.h"
#include "matrix.h"

#define MX_WAIT_MS CKL_TEST_WAIT_MS
#define MX_B_MANIFEST_MS 100
#define PR_KEEP 1

const mx_op_info mx_ops[MX_NOPS] = {
    [MX_RI] = {"RI", {"index.open.after_open"}},
    [MX_BK] = {"BK",
               {"backup.after_locks", "backup.after_register", "backup.after_mkdir",
                "backup.archive.after_close", "backup.before_finish", "backup.after_manifest"}},
    [MX_GM] = {"GM",
               {"gc.begin.after_lock", "gc.begin.after_guard", "gc.begin.after_state",
                "gc.mark.after_list", "gc.mark.before_snapshot", "gc.mark.before_removed_set"}},
    [MX_GS] = {"GS",
               {"gc.sweep.before", "gc.sweep.before_rename", "gc.sweep.after_rename",
                "gc.sweep.before_unlink", "gc.purge.before", "gc.status.before_write"}},
    [MX_GX] = {"GX",
               {"gc.begin.after_lock", "proclock.after_exclusive", "gc.begin.after_guard",
                "gc.begin.after_state", "gc.mark.after_list", "gc.sweep.before"}},
    [MX_UM] = {"UM",
               {"update_manifest.after_lock", "update_manifest.after_load",
                "update_manifest.before_replace", "update_manifest.after_replace"}},
    [MX_FG] = {"FG",
               {"forget.after_guard", "forget.after_lock", "forget.after_move",
                "forget.before_unlink"}},
    [MX_PR] = {"PR",
               {"prune.after_guard", "prune.after_list", "prune.before_remove",
                "forget.after_move"}},
    [MX_VF] = {"VF", {"verify.after_lock", "verify.before_finish", "update_manifest.after_lock"}},
    [MX_RD] = {"RD", {"restore.after_open", "restore.before_finish"}},
    [MX_WS] = {"WS", {"freeze.after_acquire"}},
    [MX_WX] = {"WX", {"gclock.after_lock", "proclock.after_exclusive", "freeze.after_acquire"}},
};

const mx_op mx_b_ops[] = {MX_RI, MX_BK, MX_GC, MX_GX, MX_UM, MX_FG,
                          MX_PR, MX_VF, MX_RD, MX_WS, MX_WX};
const size_t mx_nb_ops = sizeof mx_b_ops / sizeof mx_b_ops[0];

/* ---- the store and the fixture ------------------------------------------------ */

typedef struct mx_env {
  ops_store s;      /* s.st: A's handle (threads variant) */
  ckl_store *b_st;  /* B's handle: 100 ms manifest deadline */
  char *fpdir;      /* pausefile directory (procs variant) */
  ckl_snapshot_name s1, s2;
  ckl_digest garbage[2];
  /* The .chunks prefix directories of every chunk the matrix writes
   * (seeds 1..4 and the garbage): the only ones a reset empties and a
   * run's leftover check scans. Each row ends with a full scan. */
  uint16_t prefixes[6];
  size_t nprefixes;
} mx_env;

static mx_env *env; /* one per binary: cmocka runs the rows one at a time */

int mx_group_setup(void **state) {
  env = calloc(1, sizeof *env);
  ops_store_new(&env->s, "matrix");
  ckl_store_open_opts oo = {.manifest_lock_timeout_ms = MX_B_MANIFEST_MS};
  assert_int_equal(ckl_store_open(env->s.path, &oo, &env->b_st), 0);
  env->fpdir = ckl_test_path(env->s.dir, "fp");
  assert_int_equal(mkdir(env->fpdir, 0700), 0);
  static const uint32_t seeds[] = {1, 2, 3, 4, 900, 901};
  for (size_t i = 0; i < CKL__ARRAY_SIZE(seeds); i++) {
    unsigned char buf[1000];
    ops_fill(buf, sizeof buf, seeds[i]);
    ckl_digest d;
    ckl_digest_compute(buf, sizeof buf, &d);
    uint16_t p = (uint16_t)(d.b[0] << 8 | d.b[1]);
    bool dup = false;
    for (size_t j = 0; j < env->nprefixes; j++) dup |= env->prefixes[j] == p;
    if (!dup) env->prefixes[env->nprefixes++] = p;
  }
  *state = env;
  return 0;
}

int mx_group_teardown(void **state) {
  (void)state;
  ckl_store_close(env->b_st);
  free(env->fpdir);
  ops_store_free(&env->s);
  free(env);
  env = NULL;
  return 0;
}

static void age_chunk(const ckl_digest *d, int64_t age_s) {
  char *p = ops_chunk_path(&env->s, d);
  struct timespec ts[2] = {{.tv_sec = time(NULL) - age_s}, {.tv_nsec = UTIME_OMIT}};
  assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
  free(p);
}

/* ops_store_reset, but only the prefix directories the matrix writes to:
 * the 65,536 stat calls of a full reset cost more than a whole run. */
static void reset(void) {
  ckl_failpoint_disarm_all();
  static const char *const keep[] = {".chunks", ".lock", ".locks", ".state",
                                     ".trash", "chunklock.json", NULL};
  ops_empty_dir(env->s.path, keep);
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/.trash", env->s.path);
  ops_empty_dir(p, NULL);
  snprintf(p, sizeof p, "%s/.locks", env->s.path);
  ops_empty_dir(p, NULL);
  for (size_t i = 0; i < env->nprefixes; i++) {
    snprintf(p, sizeof p, "%s/.chunks/%04x", env->s.path, env->prefixes[i]);
    ops_empty_dir(p, NULL);
  }
}

static void fixture(void) {
  reset();
  /* The store has the default 5 s margin; every GC here runs with atime
   * safety 0 (ckl_gc_opts), so garbage aged an hour is swept and chunks
   * written or touched now are not. */
  env->s1 = ops_make_snapshot(env->s.st, "host", "a", 0, 1);
  env->s2 = ops_make_snapshot(env->s.st, "host", "a", 60, 2);
  for (int i = 0; i < 2; i++) {
    unsigned char buf[1000];
    ops_fill(buf, sizeof buf, 900 + (uint32_t)i);
    ckl_digest_compute(buf, sizeof buf, &env->garbage[i]);
    assert_true(ckl_chunk_insert(env->s.st->chunks, &env->garbage[i], buf, sizeof buf, NULL) >= 0);
    age_chunk(&env->garbage[i], 3600);
  }
}

/* ---- the operations ------------------------------------------------------------- */

typedef enum role { ROLE_A, ROLE_B } role;

static int op_ri(ckl_store *st, mx_result *r) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/host/a/%s/root.didx", ckl_store_path(st), env->s1.time);
  ckl_index *ix = NULL;
  int rc = ckl_index_open(p, &ix);
  if (rc == 0) {
    /* The whole index must be readable through the mapping, even after a
     * forget moved the file (cell 2): S1's index has 3 entries. */
    if (ckl_index_count(ix) != 3) rc = CKL_ECORRUPT;
    for (size_t i = 0; rc == 0 && i < ckl_index_count(ix); i++)
      if (!ckl_index_digest(ix, i)) rc = -EIO;
    ckl_index_close(ix);
  }
  (void)r;
  return rc;
}

static int op_bk(ckl_store *st, role ro, mx_result *r) {
  ckl_group_name g = ops_group("host", "a");
  ckl_backup_opts o = {.time_s = OPS_T0 + (ro == ROLE_A ? 120 : 180),
                       .base = &env->s1,
                       .busy_holder = &r->who};
  ckl_backup *b = NULL;
  int rc = ckl_backup_begin(st, &g, &o, &b);
  if (rc < 0) return rc;
  /* seeds 1..3: chunk 1 is reused from S1 by content (a touch), 2 and 3
   * as well (S2 has them), 4 is new when A and B both run */
  rc = ops_write_didx(b, "root.didx", 3, 1000, ro == ROLE_A ? 1 : 2, NULL);
  if (rc < 0) {
    ckl_backup_abort(b);
    return rc;
  }
  return ckl_backup_finish(b);
}

static int op_gc(ckl_store *st, role ro, int exclusive, mx_result *r) {
  (void)ro;
  ckl_gc_opts o = {.use_safety = 1,
                   .atime_safety_s = 0,
                   .exclusive = exclusive,
                   .threads = 1, /* one sweeper: a `1*` failpoint parks the only one */
                   .busy_holder = &r->who};
  ckl_gc_result res;
  int rc = ckl_gc_run(st, &o, &res);
  r->aux = MX_AUX_NONE;
  return rc;
}

static int bump(json_t *m, void *arg) {
  (void)arg;
  json_t *u = json_object_get(m, "unprotected");
  json_int_t v = json_integer_value(json_object_get(u, CKL_INV_COUNTER_KEY));
  return json_object_set_new(u, CKL_INV_COUNTER_KEY, json_integer(v + 1));
}

static int op_um(ckl_store *st, mx_result *r) {
  ckl_manifest_update_opts o = {.busy_holder = &r->who};
  return ckl_update_manifest(st, &env->s1, bump, NULL, &o);
}

static int op_fg(ckl_store *st, mx_result *r) {
  ckl_forget_opts o = {.busy_holder = &r->who};
  return ckl_forget(st, &env->s1, &o);
}

static int op_pr(ckl_store *st, mx_result *r) {
  ckl_group_name g = ops_group("host", "a");
  ckl_prune_opts o = {.keep_last = PR_KEEP, .busy_holder = &r->who};
  ckl_prune_item *items = NULL;
  size_t n = 0;
  int rc = ckl_prune(st, &g, &o, &items, &n);
  r->aux = MX_ABSENT;
  for (size_t i = 0; i < n; i++)
    if (strcmp(items[i].name.time, env->s1.time) == 0) r->aux = items[i].rc;
  free(items);
  return rc;
}

static int op_vf(ckl_store *st, mx_result *r) {
  ckl_verify_opts o = {.busy_holder = &r->who};
  ckl_verify_result vr;
  return ckl_verify(st, &env->s1, &o, &vr);
}

static int op_rd(ckl_store *st, mx_result *r) {
  ckl_reader_opts o = {.busy_holder = &r->who};
  ckl_reader *rd = NULL;
  int rc = ckl_reader_open(st, &env->s1, &o, &rd);
  if (rc < 0) return rc;
  ckl_reader_archive *a = NULL;
  rc = ckl_reader_archive_open(rd, "root.didx", &a);
  unsigned char got[3000], want[3000];
  for (uint32_t k = 0; k < 3; k++) ops_fill(want + k * 1000, 1000, 1 + k);
  if (rc == 0) {
    ssize_t n = ckl_reader_archive_read(a, 0, got, sizeof got);
    rc = n < 0 ? (int)n : n != (ssize_t)sizeof got || memcmp(got, want, sizeof got) ? CKL_ECORRUPT : 0;
  }
  ckl_reader_archive_close(a);
  int cr = ckl_reader_close(rd);
  return rc < 0 ? rc : cr;
}

static int op_freeze(ckl_store *st, ckl_freeze_mode mode, mx_result *r) {
  ckl_freeze f = {0};
  ckl_freeze_opts o = {.timeout_ms = CKL_TRY, .busy_holder = &r->who};
  int rc = ckl_freeze_acquire(st, mode, &f, &o);
  if (rc == 0) ckl_freeze_release(&f);
  return rc;
}

/* Run op on st. Never asserts: it also runs in forked children. */
static void run_op(mx_op op, role ro, ckl_store *st, mx_result *r) {
  memset(r, 0, sizeof *r);
  r->aux = MX_AUX_NONE;
  switch (op) {
  case MX_RI: r->rc = op_ri(st, r); break;
  case MX_BK: r->rc = op_bk(st, ro, r); break;
  case MX_GM:
  case MX_GS: r->rc = op_gc(st, ro, 0, r); break;
  case MX_GX: r->rc = op_gc(st, ro, 1, r); break;
  case MX_UM: r->rc = op_um(st, r); break;
  case MX_FG: r->rc = op_fg(st, r); break;
  case MX_PR: r->rc = op_pr(st, r); break;
  case MX_VF: r->rc = op_vf(st, r); break;
  case MX_RD: r->rc = op_rd(st, r); break;
  case MX_WS: r->rc = op_freeze(st, CKL_FREEZE_SHARED, r); break;
  case MX_WX: r->rc = op_freeze(st, CKL_FREEZE_EXCLUSIVE, r); break;
  default: r->rc = -EINVAL;
  }
}

/* ---- A in a thread --------------------------------------------------------------- */

typedef struct a_run {
  mx_op op;
  mx_result res;
} a_run;

static void *a_thread(void *arg) {
  a_run *a = arg;
  run_op(a->op, ROLE_A, env->s.st, &a->res);
  return NULL;
}

/* 0, or -1 with msg set (A never reached the step). */
static int run_threads(mx_op a, const char *step, mx_op b, mx_result *ra, mx_result *rb,
                       char *msg, size_t len) {
  assert_int_equal(ckl_failpoint_arm(step, "1*pause"), 0);
  a_run ar = {.op = a};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, a_thread, &ar), 0);
  int rc = ckl_failpoint_wait_hits(step, 1, MX_WAIT_MS);
  if (rc == 0) run_op(b, ROLE_B, env->b_st, rb);
  ckl_failpoint_disarm(step); /* releases A */
  pthread_join(th, NULL);
  *ra = ar.res;
  if (rc < 0) {
    snprintf(msg, len, "A never reached %s (A returned %s)", step, ckl_err_name(ar.res.rc));
    return -1;
  }
  return 0;
}

/* ---- A in a child process ---------------------------------------------------------- */

typedef struct child_arg {
  mx_op op;
  char step[64];
  mx_result res; /* in shared memory */
} child_arg;

static int a_child(void *arg) {
  child_arg *c = arg;
  ckl_store *st = NULL;
  if (ckl_store_open(env->s.path, NULL, &st) != 0) return 10;
  char spec[PATH_MAX + 32];
  snprintf(spec, sizeof spec, "1*pausefile(%s)", env->fpdir);
  if (ckl_failpoint_arm(c->step, spec) != 0) return 11;
  run_op(c->op, ROLE_A, st, &c->res);
  ckl_store_close(st);
  return 0;
}

static bool child_hit(const char *step, pid_t pid) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s.hit.%d", env->fpdir, step, (int)pid);
  for (int i = 0; i < MX_WAIT_MS / 2; i++) {
    if (access(p, F_OK) == 0) return true;
    siginfo_t si = {0};
    /* finished without stopping? (WNOWAIT: ckl_test_wait reaps it) */
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
      return false;
    ckl__sleep_ms(2);
  }
  return false;
}

static int run_procs(mx_op a, const char *step, mx_op b, mx_result *ra, mx_result *rb, char *msg,
                     size_t len) {
  child_arg *c = ckl_test_shared_alloc(sizeof *c);
  c->op = a;
  snprintf(c->step, sizeof c->step, "%s", step);
  c->res.rc = INT32_MIN;
  pid_t pid = ckl_test_fork(a_child, c);
  bool hit = child_hit(step, pid);
  if (hit) run_op(b, ROLE_B, env->b_st, rb);
  ops_release_pausefile(env->fpdir, step);
  int status = ckl_test_wait(pid);
  *ra = c->res;
  ckl_test_shared_free(c, sizeof *c);
  ops_empty_dir(env->fpdir, NULL);
  if (!hit) {
    snprintf(msg, len, "A never reached %s (A returned %s)", step, ckl_err_name(ra->rc));
    return -1;
  }
  if (status != 0) {
    snprintf(msg, len, "A's child exited with %d", status);
    return -1;
  }
  return 0;
}

/* ---- one run and its checks ------------------------------------------------------ */

static bool result_ok(const mx_result *r, int rc, const char *holder, int aux) {
  if (r->rc != rc) return false;
  if (aux != MX_ANY && r->aux != aux) return false;
  if (holder && (!r->who.known || strcmp(r->who.operation, holder) != 0)) return false;
  return true;
}

static void describe(const mx_result *r, char *buf, size_t len) {
  char h[256] = "";
  if (r->who.known) ckl_holder_format(&r->who, h, sizeof h);
  int n = snprintf(buf, len, "%s", r->rc == 1 ? "1 (trashed)" : ckl_err_name(r->rc));
  if (r->aux != MX_AUX_NONE && n >= 0 && (size_t)n < len)
    n += snprintf(buf + n, len - (size_t)n, " aux %s",
                  r->aux == MX_ABSENT ? "absent" : ckl_err_name(r->aux));
  if ((r->rc == CKL_EBUSY || r->rc == CKL_ETIMEDOUT) && n >= 0 && (size_t)n < len)
    snprintf(buf + n, len - (size_t)n, " holder [%s]", r->who.known ? h : "unknown");
}

static int one_run(mx_op a, size_t si, mx_op b, mx_variant v) {
  const char *step = mx_ops[a].steps[si];
  const char *bcode = b == MX_GC ? "GC" : mx_ops[b].code;
  fixture();
  mx_result ra, rb;
  memset(&rb, 0, sizeof rb);
  rb.rc = INT32_MIN;
  rb.aux = MX_AUX_NONE;
  char msg[2048] = "";
  int rc = v == MX_THREADS ? run_threads(a, step, b, &ra, &rb, msg, sizeof msg)
                           : run_procs(a, step, b, &ra, &rb, msg, sizeof msg);
  mx_expect e = mx_expect_for(a, b, si, v);
  if (rc == 0) {
    char da[512], db[512];
    describe(&ra, da, sizeof da);
    describe(&rb, db, sizeof db);
    if (!result_ok(&rb, e.b_rc, e.b_holder, e.b_aux) || !result_ok(&ra, e.a_rc, NULL, e.a_aux))
      snprintf(msg, sizeof msg, "B got %s, want %s%s%s; A got %s, want %s", db,
               e.b_rc == 1 ? "1 (trashed)" : ckl_err_name(e.b_rc), e.b_holder ? " naming " : "",
               e.b_holder ? e.b_holder : "", da, ckl_err_name(e.a_rc));
  }
  /* The invariants, whatever the outcome. */
  if (!msg[0]) {
    int updates = (a == MX_UM && ra.rc == 0) + (b == MX_UM && rb.rc == 0);
    bool may_go = a == MX_FG || a == MX_PR || b == MX_FG || b == MX_PR;
    ckl_inv_counter k = {.snapshot = "host/a/2023-11-14T22:13:20Z",
                         .expected = updates,
                         .gone_ok = may_go};
    ckl_inv_opts io = {.quiescent = 1,
                       .counters = &k,
                       .ncounters = 1,
                       .chunk_prefixes = env->prefixes,
                       .nchunk_prefixes = env->nprefixes};
    char why[1024];
    int ir = ckl_inv_check(env->s.path, &io, why, sizeof why);
    if (ir == 0 && (a == MX_BK || b == MX_BK)) {
      /* the loser of a backup race left no half-made snapshot */
      const char *names[] = {"host/a/2023-11-14T22:15:20Z", "host/a/2023-11-14T22:16:20Z"};
      for (int i = 0; ir == 0 && i < 2; i++)
        ir = ckl_inv_no_leftovers(env->s.path, names[i], &io, why, sizeof why);
    }
    if (ir != 0) snprintf(msg, sizeof msg, "invariant broken (%s): %s", ckl_err_name(ir), why);
  }
  if (msg[0]) {
    fprintf(stderr, "MISMATCH %s x %s at %s (%s, cell %d): %s\n", mx_ops[a].code, bcode, step,
            v == MX_THREADS ? "threads" : "procs", e.cell, msg);
    return 1;
  }
  return 0;
}

int mx_run_row(mx_op a, mx_variant v, int *runs) {
  int bad = 0, n = 0;
  for (size_t si = 0; si < MX_MAX_STEPS && mx_ops[a].steps[si]; si++) {
    for (size_t j = 0; j < mx_nb_ops; j++) {
      bad += one_run(a, si, mx_b_ops[j], v);
      n++;
    }
  }
  ckl_failpoint_disarm_all();
  /* every .chunks directory, once per row: nothing the runs wrote went
   * where the per-run scans do not look */
  char why[1024];
  ckl_inv_opts full = {.quiescent = 1};
  int ir = ckl_inv_check(env->s.path, &full, why, sizeof why);
  if (ir != 0) {
    fprintf(stderr, "MISMATCH row %s: full check: %s: %s\n", mx_ops[a].code, ckl_err_name(ir), why);
    bad++;
  }
  if (runs) *runs = n;
  return bad;
}

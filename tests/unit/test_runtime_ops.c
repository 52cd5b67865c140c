/*
 * The operations as tasks: 16 backups, a GC, forgets, verifies, a read
 * and a prune at once on one loop that never blocks, with exact results
 * and a clean fsck; a backup whose lease is lost (record removed, lock
 * file replaced, suspend) publishes nothing and leaves fsck clean; a
 * forget waits for another process's reader; a cancelled verify writes no
 * verdict; a backup killed mid-way leaves nothing in the next one's way.
 */
// ctest-labels: threads
// ctest-timeout: 180
#include "test_runtime_util.h"

#include "ops_util.h"

#include <signal.h>
#include <sys/wait.h>

#define TTL_MS 10000

static int group_setup(void **state) {
  ops_store *s = calloc(1, sizeof *s);
  s->dir = ckl_test_mkdtemp("rtops");
  s->path = ckl_test_path(s->dir, "store");
  /* GC safety 0, margin 1 s: aged garbage goes, nothing else does. */
  ckl_store_create_opts o = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                             .sync = CKL_SYNC_NONE, .gc_atime_safety_s = 0, .gc_margin_s = 1};
  assert_int_equal(ckl_store_create(s->path, &o), 0);
  assert_int_equal(ckl_store_open(s->path, NULL, &s->st), 0);
  *state = s;
  return 0;
}

static int reset(void **state) {
  ops_store_reset(*state);
  ckl_log_set(ckl_test_log_env, NULL, CKL_LOG_DEBUG);
  atomic_store(&test_clock_offset, 0);
  assert_int_equal(ckl_failpoint_arm("task.lease.after_round", "count"), 0);
  return 0;
}

static int fsck_problems(ops_store *s) {
  ckl_fsck_summary sum;
  int rc = ckl_fsck(s->st, NULL, NULL, NULL, &sum);
  assert_true(rc >= 0);
  return rc;
}

/* Age every chunk file now in the store (garbage candidates). */
static void age_all_chunks(ops_store *s, int64_t age_s) {
  gcfx f = {.dir = s->path, .st = s->st};
  gcfx_age_chunks(&f, age_s);
}

static void insert_garbage(ops_store *s, uint32_t seed, int n) {
  for (int i = 0; i < n; i++) {
    unsigned char buf[512];
    ops_fill(buf, sizeof buf, seed + (uint32_t)i);
    ckl_digest d;
    ckl_digest_compute(buf, sizeof buf, &d);
    assert_int_equal(ckl_chunk_insert(s->st->chunks, &d, buf, sizeof buf, NULL), CKL_INSERT_NEW);
  }
}

static bool garbage_present(ops_store *s, uint32_t seed, int n) {
  for (int i = 0; i < n; i++) {
    unsigned char buf[512];
    ops_fill(buf, sizeof buf, seed + (uint32_t)i);
    ckl_digest d;
    ckl_digest_compute(buf, sizeof buf, &d);
    struct stat sb;
    if (ckl_chunk_stat(s->st->chunks, &d, &sb) == 0) return true;
  }
  return false;
}

/* ---- many operations at once on one loop ------------------------------------------------- */

#define NB 16
#define BSIZE (64 * 1024)

typedef struct sink {
  unsigned char *buf;
  size_t cap;
  uint64_t len;
  char archive[64];
} sink;

static int sink_write(void *arg, const char *archive, uint64_t off, const void *buf, size_t len) {
  sink *k = arg;
  if (off != k->len || off + len > k->cap) return -EINVAL;
  snprintf(k->archive, sizeof k->archive, "%s", archive);
  memcpy(k->buf + off, buf, len);
  k->len += len;
  return 0;
}

static void test_many_operations_one_loop(void **state) {
  ops_store *s = *state;
  /* Before: snapshots to forget, verify, read and prune; aged garbage. */
  ckl_snapshot_name old[4];
  for (int i = 0; i < 4; i++) old[i] = ops_make_snapshot(s->st, "vm", "old", i, 100 + 10 * (uint32_t)i);
  ckl_snapshot_name pr[3];
  for (int i = 0; i < 3; i++) pr[i] = ops_make_snapshot(s->st, "vm", "prune", i, 200 + 10 * (uint32_t)i);
  insert_garbage(s, 9000, 12);
  age_all_chunks(s, 3600);
  unsigned char *want3 = malloc(3000);
  for (int k = 0; k < 3; k++) ops_fill(want3 + k * 1000, 1000, 130 + (uint32_t)k);

  uv_loop_t loop;
  uv_loop_init(&loop);
  loopmon mon;
  loopmon_start(&mon, &loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);

  static unsigned char data[NB][BSIZE];
  static ckl_task bt[NB], gt, ft[2], vt[2], rtk, pt;
  static rec br[NB], gr, fr[2], vr[2], rr, prr;
  for (int i = 0; i < NB; i++) {
    ops_fill(data[i], BSIZE, 5000 + 100 * (uint32_t)i);
    char id[16];
    snprintf(id, sizeof id, "b%d", i);
    ckl_task_archive ar = {.name = "root.fidx", .chunk_size = 16384, .data = data[i],
                           .size = BSIZE};
    ckl_task_backup_args a = {.store = s->st, .group = ops_group("host", id), .narchives = 1,
                              .archives = &ar, .timeout_ms = 30000};
    a.opts.time_s = OPS_T0 + 1000;
    br[i] = (rec){0};
    bt[i].data = &br[i];
    assert_int_equal(ckl_task_backup(rt, &bt[i], &a, rec_progress, rec_done), 0);
  }
  gr = (rec){0};
  gt.data = &gr;
  ckl_task_gc_args ga = {.store = s->st, .timeout_ms = 30000};
  assert_int_equal(ckl_task_gc(rt, &gt, &ga, rec_progress, rec_done), 0);
  for (int i = 0; i < 2; i++) {
    fr[i] = (rec){0};
    ft[i].data = &fr[i];
    ckl_task_forget_args fa = {.store = s->st, .snapshot = old[i], .timeout_ms = 30000};
    assert_int_equal(ckl_task_forget(rt, &ft[i], &fa, rec_progress, rec_done), 0);
    vr[i] = (rec){0};
    vt[i].data = &vr[i];
    ckl_task_verify_args va = {.store = s->st, .snapshot = old[2 + i], .timeout_ms = 30000};
    assert_int_equal(ckl_task_verify(rt, &vt[i], &va, rec_progress, rec_done), 0);
  }
  sink k = {.buf = malloc(3000), .cap = 3000};
  rr = (rec){0};
  rtk.data = &rr;
  ckl_task_read_args ra = {.store = s->st, .snapshot = old[3], .write = sink_write,
                           .write_arg = &k, .timeout_ms = 30000};
  assert_int_equal(ckl_task_read(rt, &rtk, &ra, rec_progress, rec_done), 0);
  prr = (rec){0};
  pt.data = &prr;
  ckl_task_prune_args pa = {.store = s->st, .group = ops_group("vm", "prune"),
                            .timeout_ms = 30000};
  pa.opts.keep_last = 1;
  assert_int_equal(ckl_task_prune(rt, &pt, &pa, rec_progress, rec_done), 0);
  assert_int_equal(ckl_runtime_task_count(rt), NB + 1 + 2 + 2 + 1 + 1);

  uv_run(&loop, UV_RUN_DEFAULT);
  loopmon_stop(&mon);
  rt_close_run(rt, &loop);
  loopmon_assert(&mon);
  assert_int_equal(uv_loop_close(&loop), 0);

  for (int i = 0; i < NB; i++) {
    assert_int_equal(br[i].status, 0);
    char id[16];
    snprintf(id, sizeof id, "b%d", i);
    ckl_snapshot_name n = ops_snap("host", id, OPS_T0 + 1000);
    ckl_reader *r;
    assert_int_equal(ckl_reader_open(s->st, &n, NULL, &r), 0);
    ckl_reader_archive *a;
    assert_int_equal(ckl_reader_archive_open(r, "root.fidx", &a), 0);
    static unsigned char back[BSIZE];
    assert_int_equal(ckl_reader_archive_read(a, 0, back, BSIZE), BSIZE);
    assert_memory_equal(back, data[i], BSIZE);
    ckl_reader_archive_close(a);
    assert_int_equal(ckl_reader_close(r), 0);
  }
  assert_int_equal(gr.status, 0);
  assert_false(garbage_present(s, 9000, 12));
  for (int i = 0; i < 2; i++) {
    assert_true(fr[i].status == CKL_FORGET_DELETED || fr[i].status == CKL_FORGET_TRASHED);
    assert_false(ops_snap_exists(s, &old[i]));
    assert_int_equal(vr[i].status, 0);
  }
  assert_int_equal(rr.status, 0);
  assert_int_equal(k.len, 3000);
  assert_string_equal(k.archive, "root.didx");
  assert_memory_equal(k.buf, want3, 3000);
  assert_int_equal(prr.status, 0);
  assert_true(ops_snap_exists(s, &pr[2]));
  assert_false(ops_snap_exists(s, &pr[0]));
  assert_false(ops_snap_exists(s, &pr[1]));
  assert_int_equal(fsck_problems(s), 0);
  assert_int_equal(ops_trash_count(s), 0);
  free(k.buf);
  free(want3);
}

/* ---- results are available in done_cb ---------------------------------------------------- */

typedef struct results {
  size_t prune_n;
  ckl_prune_item items[4];
  ckl_verify_result vres;
  int have_v;
  ckl_snapshot_name bsnap;
  int have_b;
} results;
static results res;

static void prune_done(ckl_task *t, int status) {
  (void)status;
  const ckl_prune_item *it = ckl_task_prune_items(t, &res.prune_n);
  assert_non_null(it);
  assert_true(res.prune_n <= 4);
  memcpy(res.items, it, res.prune_n * sizeof *it);
}

static void verify_done(ckl_task *t, int status) {
  (void)status;
  const ckl_verify_result *v = ckl_task_verify_result(t);
  assert_non_null(v);
  res.vres = *v;
  res.have_v = 1;
}

static void backup_done(ckl_task *t, int status) {
  (void)status;
  const ckl_snapshot_name *n = ckl_task_backup_snapshot(t);
  if (n) {
    res.bsnap = *n;
    res.have_b = 1;
  }
}

static ssize_t counting_read(void *arg, void *buf, size_t len) {
  uint64_t *left = arg;
  size_t n = *left < len ? (size_t)*left : len;
  memset(buf, 0x5a, n);
  *left -= n;
  return (ssize_t)n;
}

static void test_results_in_done_cb(void **state) {
  ops_store *s = *state;
  memset(&res, 0, sizeof res);
  ckl_snapshot_name a0 = ops_make_snapshot(s->st, "vm", "r", 0, 1);
  (void)ops_make_snapshot(s->st, "vm", "r", 1, 2);
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);
  ckl_task tp, tv, tb;
  rec rp = {.on_done = prune_done}, rv = {.on_done = verify_done}, rb = {.on_done = backup_done};
  tp.data = &rp;
  tv.data = &rv;
  tb.data = &rb;
  ckl_task_prune_args pa = {.store = s->st, .group = ops_group("vm", "r")};
  pa.opts.keep_last = 1;
  pa.opts.dry_run = 1;
  assert_int_equal(ckl_task_prune(rt, &tp, &pa, rec_progress, rec_done), 0);
  ckl_task_verify_args va = {.store = s->st, .snapshot = a0};
  assert_int_equal(ckl_task_verify(rt, &tv, &va, rec_progress, rec_done), 0);
  uint64_t left = 100000;
  ckl_task_archive ar = {.name = "disk.fidx", .chunk_size = 32768, .read = counting_read,
                         .read_arg = &left, .size_hint = 100000};
  ckl_task_backup_args ba = {.store = s->st, .group = ops_group("vm", "new"), .narchives = 1,
                             .archives = &ar};
  ba.opts.time_s = OPS_T0 + 50;
  assert_int_equal(ckl_task_backup(rt, &tb, &ba, rec_progress, rec_done), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(rp.status, 0);
  assert_int_equal(res.prune_n, 2);
  assert_int_equal(res.items[0].keep, 1);
  assert_int_equal(res.items[0].reason, CKL_PRUNE_KEEP_LAST);
  assert_int_equal(res.items[1].keep, 0);
  assert_true(ops_snap_exists(s, &a0)); /* dry run */
  assert_int_equal(rv.status, 0);
  assert_int_equal(res.have_v, 1);
  assert_int_equal(res.vres.ok, 1);
  assert_int_equal(res.vres.chunks, 3);
  assert_int_equal(rb.status, 0);
  assert_int_equal(res.have_b, 1);
  ckl_snapshot_name want = ops_snap("vm", "new", OPS_T0 + 50);
  assert_string_equal(res.bsnap.time, want.time);
  assert_int_equal(left, 0);
  assert_null(ckl_task_prune_items(&tp, NULL)); /* only during done_cb */
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fsck_problems(s), 0);
}

/* ---- a backup loses its lease ---------------------------------------------------------------- */

typedef enum { LOSE_RECORD, LOSE_LOCKFILE, LOSE_SUSPEND } lose_how;

static void refresh_until_lost(ckl_runtime *rt, ckl_task *t) {
  ckl__task_impl *impl = t->impl_;
  for (int i = 0; i < 20 && !atomic_load(&impl->lease.lost); i++) {
    uint64_t h = ckl_failpoint_hits("task.lease.after_round");
    assert_int_equal(ckl_runtime_refresh_now(rt), 0);
    assert_int_equal(ckl_failpoint_wait_hits("task.lease.after_round", h + 1, CKL_TEST_WAIT_MS), 0);
  }
  assert_int_not_equal(atomic_load(&impl->lease.lost), 0);
}

static void backup_loses_lease(ops_store *s, lose_how how) {
  assert_int_equal(ckl_failpoint_arm("task.backup.before_finish", "1*pause"), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, TTL_MS, 1);
  static unsigned char data[40000];
  ops_fill(data, sizeof data, 77);
  ckl_task_archive ar = {.name = "root.didx", .chunk_size = 8192, .data = data,
                         .size = sizeof data};
  ckl_task_backup_args a = {.store = s->st, .group = ops_group("host", "lease"), .narchives = 1,
                            .archives = &ar};
  a.opts.time_s = OPS_T0;
  ckl_task t;
  rec r = {0};
  t.data = &r;
  assert_int_equal(ckl_task_backup(rt, &t, &a, rec_progress, rec_done), 0);
  assert_int_equal(ckl_failpoint_wait_hits("task.backup.before_finish", 1, CKL_TEST_WAIT_MS), 0);
  ckl_snapshot_name n = ops_snap("host", "lease", OPS_T0);
  assert_true(ops_snap_exists(s, &n)); /* partial, no manifest yet */
  if (how == LOSE_RECORD) {
    ckl__state *st;
    assert_int_equal(ckl__state_open(s->path, &st), 0);
    ckl__roster_list l;
    assert_int_equal(ckl__state_list(st, 0, &l, NULL), 0);
    int removed = 0;
    for (size_t i = 0; i < l.n; i++) {
      if (strcmp(l.v[i].operation, "backup") == 0 && l.v[i].pid == getpid()) {
        assert_int_equal(ckl__state_deregister(st, l.v[i].token), 0);
        removed++;
      }
    }
    ckl__roster_list_free(&l);
    ckl__state_close(st);
    assert_int_equal(removed, 1);
    refresh_until_lost(rt, &t);
  } else if (how == LOSE_LOCKFILE) {
    char lp[4096], tmp[4200];
    snprintf(lp, sizeof lp, "%s/host/lease.lck", ckl_store_locks_root(s->st));
    snprintf(tmp, sizeof tmp, "%s.new", lp);
    ckl_test_write_file(tmp, "", 0);
    assert_int_equal(rename(tmp, lp), 0);
    refresh_until_lost(rt, &t);
  } else {
    atomic_fetch_add(&test_clock_offset, (int64_t)3 * TTL_MS * 1000000);
  }
  ckl_failpoint_release("task.backup.before_finish");
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.status, CKL_ELOCKLOST);
  assert_false(ops_snap_exists(s, &n)); /* not committed, removed */
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fsck_problems(s), 0);
}

static void test_backup_lease_lost_record(void **state) { backup_loses_lease(*state, LOSE_RECORD); }
static void test_backup_lease_lost_lockfile(void **state) {
  backup_loses_lease(*state, LOSE_LOCKFILE);
}
static void test_backup_lease_lost_suspend(void **state) {
  backup_loses_lease(*state, LOSE_SUSPEND);
}

/* ---- a forget waits for another process's reader ---------------------------------------------- */

typedef struct reader_child {
  const char *path;
  ckl_snapshot_name n;
  int up, down;
} reader_child;

static int reader_child_main(void *arg) {
  ckl_test_die_with_parent();
  reader_child *c = arg;
  ckl_store *st;
  if (ckl_store_open(c->path, NULL, &st) != 0) return 10;
  ckl_reader *r;
  if (ckl_reader_open(st, &c->n, NULL, &r) != 0) return 11;
  char b = 'O';
  if (write(c->up, &b, 1) != 1) return 12;
  while (read(c->down, &b, 1) < 0 && errno == EINTR) {
  }
  if (ckl_reader_close(r) != 0) return 13;
  ckl_store_close(st);
  return 0;
}

static int down_fd;
static void release_reader(ckl_task *t, rec *r) {
  (void)t;
  (void)r;
  char b = 'C';
  assert_int_equal(write(down_fd, &b, 1), 1);
}

static void test_forget_waits_for_reader_process(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "vm", "f", 0, 1);
  int up[2], down[2];
  assert_int_equal(pipe(up), 0);
  assert_int_equal(pipe(down), 0);
  reader_child c = {.path = s->path, .n = n, .up = up[1], .down = down[0]};
  pid_t child = ckl_test_fork(reader_child_main, &c);
  close(up[1]);
  close(down[0]);
  char b = 0;
  assert_int_equal(read(up[0], &b, 1), 1);
  assert_int_equal(b, 'O');
  down_fd = down[1];
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);
  ckl_task t;
  rec r = {.on_wait = release_reader};
  t.data = &r;
  ckl_task_forget_args fa = {.store = s->st, .snapshot = n, .timeout_ms = 30000};
  assert_int_equal(ckl_task_forget(rt, &t, &fa, rec_progress, rec_done), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.status, CKL_FORGET_DELETED);
  assert_true(t.attempts >= 2);
  /* the reader, named in the first wait (the one that let it go) */
  assert_int_equal(r.first_wait_holder.known, 1);
  assert_string_equal(r.first_wait_holder.operation, "read");
  assert_int_equal(r.first_wait_holder.pid, child);
  assert_false(ops_snap_exists(s, &n));
  assert_int_equal(ckl_test_wait(child), 0);
  close(up[0]);
  close(down[1]);
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fsck_problems(s), 0);
}

/* ---- a cancelled verify writes no verdict ---------------------------------------------------- */

static void test_verify_cancelled_writes_nothing(void **state) {
  ops_store *s = *state;
  ckl_snapshot_name n = ops_make_snapshot(s->st, "vm", "v", 0, 1);
  assert_int_equal(ckl_failpoint_arm("verify.after_lock", "1*pause"), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);
  ckl_task t;
  rec r = {0};
  t.data = &r;
  ckl_task_verify_args va = {.store = s->st, .snapshot = n};
  assert_int_equal(ckl_task_verify(rt, &t, &va, rec_progress, rec_done), 0);
  assert_int_equal(ckl_failpoint_wait_hits("verify.after_lock", 1, CKL_TEST_WAIT_MS), 0);
  assert_int_equal(ckl_task_cancel(&t), 0); /* running: at the next chunk */
  ckl_failpoint_release("verify.after_lock");
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.status, CKL_ECANCELED);
  json_t *m;
  assert_int_equal(ckl_manifest_load(s->st, &n, &m), 0);
  assert_null(json_object_get(json_object_get(m, "unprotected"), "verify_state"));
  json_decref(m);
  assert_int_equal(ops_roster_count(s, "verify", NULL), 0);
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- a backup killed mid-way ---------------------------------------------------------------------- */

static const char *crash_path;
static int crash_backup_child(void *arg) {
  (void)arg;
  ckl_store *st;
  if (ckl_store_open(crash_path, NULL, &st) != 0) return 10;
  if (ckl_failpoint_arm("task.backup.after_begin", "crash") != 0) return 11;
  ckl_runtime *rt;
  if (ckl_runtime_new(NULL, &rt) != 0) return 12;
  static unsigned char data[10000];
  ckl_task_archive ar = {.name = "root.didx", .data = data, .size = sizeof data};
  ckl_group_name g;
  ckl_group_name_parse("host/crash", &g);
  ckl_task_backup_args a = {.store = st, .group = g, .narchives = 1, .archives = &ar};
  a.opts.time_s = OPS_T0;
  ckl_task t;
  if (ckl_task_backup(rt, &t, &a, NULL, NULL) != 0) return 13;
  ckl_runtime_run(rt);
  return 14;
}

static void test_crashed_backup_leaves_nothing_in_the_way(void **state) {
  ops_store *s = *state;
  crash_path = s->path;
  pid_t child = ckl_test_fork(crash_backup_child, NULL);
  assert_int_equal(ckl_test_wait(child), CKL_FAILPOINT_CRASH_STATUS);
  ckl_snapshot_name dead = ops_snap("host", "crash", OPS_T0);
  assert_true(ops_snap_exists(s, &dead)); /* abandoned, no manifest */
  ckl_test_log_capture();
  uv_loop_t loop;
  uv_loop_init(&loop);
  ckl_runtime *rt = rt_new(&loop, 0, 0);
  static unsigned char data[10000];
  ops_fill(data, sizeof data, 3);
  ckl_task_archive ar = {.name = "root.didx", .data = data, .size = sizeof data};
  ckl_task_backup_args a = {.store = s->st, .group = ops_group("host", "crash"), .narchives = 1,
                            .archives = &ar, .timeout_ms = CKL_TRY};
  a.opts.time_s = OPS_T0 + 1;
  ckl_task t;
  rec r = {0};
  t.data = &r;
  assert_int_equal(ckl_task_backup(rt, &t, &a, rec_progress, rec_done), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.status, 0);
  assert_int_equal(t.attempts, 1); /* the kernel freed the locks at once */
  assert_true(ckl_test_logged("reaped 1 stale roster record"));
  ckl_log_set(ckl_test_log_env, NULL, CKL_LOG_DEBUG);
  assert_false(ops_snap_exists(s, &dead)); /* the abandoned snapshot is gone */
  ckl_snapshot_name mine = ops_snap("host", "crash", OPS_T0 + 1);
  assert_true(ops_snap_exists(s, &mine));
  assert_int_equal(ops_roster_count(s, "backup", NULL), 0);
  rt_close_run(rt, &loop);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fsck_problems(s), 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_many_operations_one_loop, reset),
      cmocka_unit_test_setup(test_results_in_done_cb, reset),
      cmocka_unit_test_setup(test_backup_lease_lost_record, reset),
      cmocka_unit_test_setup(test_backup_lease_lost_lockfile, reset),
      cmocka_unit_test_setup(test_backup_lease_lost_suspend, reset),
      cmocka_unit_test_setup(test_forget_waits_for_reader_process, reset),
      cmocka_unit_test_setup(test_verify_cancelled_writes_nothing, reset),
      cmocka_unit_test_setup(test_crashed_backup_leaves_nothing_in_the_way, reset),
  };
  return cmocka_run_group_tests(tests, group_setup, ops_group_teardown);
}

/*
 * GC protocol tests (DESIGN.md section 5). Each test names the protocol
 * step it defends; failpoints force the interleavings.
 */
// ctest-labels: threads
// ctest-timeout: 600
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
#include "datastore/proc_identity.h"
#include "datastore/state.h"
#include "datastore/store_internal.h"
#include "gc_fixture.h"

#define S0 "host/a/2026-01-01T00:00:00Z"
#define S1 "host/a/2026-01-02T00:00:00Z"
#define S2 "host/b/2026-01-01T00:00:00Z"

static ckl_gc_opts zero_safety(void) {
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0};
  return o;
}

typedef struct gc_thread {
  gcfx *f;
  ckl_gc_opts o;
  ckl_gc_result r;
  int rc;
} gc_thread;

static void *gc_main(void *arg) {
  gc_thread *t = arg;
  t->rc = ckl_gc_run(t->f->st, &t->o, &t->r);
  return NULL;
}

/* Start a GC with t->o on a thread and park it at failpoint `point`
 * (action "pause" or "1*pause"); returns once it is there. */
static void gc_park(gc_thread *t, pthread_t *th, const char *point, const char *action) {
  assert_int_equal(ckl_failpoint_arm(point, action), 0);
  assert_int_equal(pthread_create(th, NULL, gc_main, t), 0);
  assert_int_equal(ckl_failpoint_wait_hits(point, 1, CKL_TEST_WAIT_MS), 0);
}

/* Let the GC parked at `point` go on, wait for it, disarm everything. */
static void gc_resume(pthread_t th, const char *point) {
  assert_int_equal(ckl_failpoint_release(point), 1);
  assert_int_equal(pthread_join(th, NULL), 0);
  ckl_failpoint_disarm_all();
}


/* Protocol steps 2, 4, 5, 6: marked chunks stay, unreferenced old ones go,
 * .gc-status records the run. */
static void test_basic_collect(void **state) {
  gcfx *f = *state;
  uint32_t a[] = {1, 2, 3}, b[] = {3, 4};
  gcfx_snapshot(f, S0, a, 3);
  gcfx_snapshot(f, S2, b, 2);
  gcfx_insert(f, 5);
  gcfx_insert(f, 6);
  gcfx_age_chunks(f, 3600);
  ckl_gc_opts o = zero_safety();
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  for (uint32_t i = 1; i <= 4; i++) assert_true(gcfx_has(f, i));
  assert_false(gcfx_has(f, 5));
  assert_false(gcfx_has(f, 6));
  assert_int_equal(r.index_files, 2);
  assert_int_equal(r.references, 5);
  assert_int_equal(r.referenced_chunks, 4);
  assert_int_equal(r.cache_hits, 1);
  assert_int_equal(r.disk_chunks, 6);
  assert_int_equal(r.removed_chunks, 2);
  assert_int_equal(r.missing_chunks, 0);
  assert_int_equal(r.logical_bytes, 5 * 64);
  assert_int_equal(gcfx_gc_active(f), 0);
  ckl_gc_result s;
  assert_int_equal(ckl_gc_status_load(f->st, &s), 0);
  assert_int_equal(s.removed_chunks, 2);
  assert_int_equal(s.index_files, 2);
  assert_int_equal(s.cutoff_ns, r.cutoff_ns);
  assert_int_equal(gcfx_count_gc_leftovers(f), 0);
}

static void test_dry_run(void **state) {
  gcfx *f = *state;
  uint32_t a[] = {1};
  gcfx_snapshot(f, S0, a, 1);
  gcfx_insert(f, 9);
  gcfx_age_chunks(f, 3600);
  ckl_gc_opts o = zero_safety();
  o.dry_run = 1;
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_true(gcfx_has(f, 9));
  assert_int_equal(r.removed_chunks, 1);
  ckl_gc_result s;
  assert_int_equal(ckl_gc_status_load(f->st, &s), -ENOENT); /* dry runs leave no status */
}

/* The safety window and writers (step 5's cutoff): chunks newer than the
 * cutoff stay even when unreferenced. */
static void test_recent_chunks_survive(void **state) {
  gcfx *f = *state;
  /* A chunk written once the GC has recorded its phase-1 start is newer
   * than any cutoff it computes (phase1_start - safety - margin): kept,
   * though nothing references it. It is written while the GC is parked
   * right after that record: written just BEFORE the GC starts, it would
   * be kept only if the GC got there within the 1 s margin, which a
   * loaded machine (or TSan) does not promise. */
  gc_thread t = {.f = f, .o = zero_safety()};
  pthread_t th;
  gc_park(&t, &th, "gc.begin.after_state", "1*pause");
  gcfx_insert(f, 7);
  gc_resume(th, "gc.begin.after_state");
  assert_int_equal(t.rc, 0);
  assert_true(gcfx_has(f, 7));
  assert_int_equal(t.r.removed_chunks, 0);
  ckl_gc_opts o = zero_safety();
  ckl_gc_result r;
  gcfx_age_chunks(f, 3600);
  o.use_safety = 0;            /* store default: 0 s in the fixture */
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_false(gcfx_has(f, 7));
  /* a safety of two hours keeps a chunk aged one hour */
  gcfx_insert(f, 8);
  gcfx_age_chunks(f, 3600);
  o = zero_safety();
  o.atime_safety_s = 7200;
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_true(gcfx_has(f, 8));
}

/* Step 5: a writer registered before the GC lowers the cutoff to its start;
 * its chunks are "pending", not removed. */
static void test_oldest_writer_bounds_cutoff(void **state) {
  gcfx *f = *state;
  ckl__state *st;
  assert_int_equal(ckl__state_open(f->dir, &st), 0);
  ckl__roster_reg reg = {.operation = "backup", .target = S1, .flags = CKL_ROSTER_WRITER};
  ckl__roster_ident id = {0};
  /* A writer that started two hours ago in this very process. */
  char tok[CKL_TOKEN_HEX_LEN + 1];
  assert_int_equal(ckl__state_register(st, &reg, tok), 0);
  gcfx_insert(f, 20); /* written by the "writer" an hour ago */
  gcfx_insert(f, 21); /* garbage from long before it */
  gcfx_age_chunks(f, 3600);
  ckl_digest d;
  gcfx_chunk(21, &d);
  char rel[200];
  ckl_chunk_relpath(&d, rel, sizeof rel);
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", f->st->chunks_path, rel);
  struct timespec old[2] = {{.tv_sec = ckl__now_realtime_ns() / 1000000000LL - 4 * 3600},
                            {.tv_nsec = UTIME_OMIT}};
  assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
  assert_int_equal(ckl__state_deregister(st, tok), 0);
  (void)id;
  const ckl__host_ident *me = ckl__host_identity();
  ckl__roster_ident who = {.host_id = me->host_id, .boot_id = me->boot_id,
                           .hostname = me->hostname, .pidns = me->pidns,
                           .pid = getpid(), .tid = ckl__gettid(),
                           .start_ns = ckl__now_realtime_ns() - 2 * 3600 * 1000000000LL};
  ckl__self_start_time(&who.pid_start);
  assert_int_equal(ckl__state_register_as(st, &reg, &who, tok), 0);
  ckl_gc_opts o = zero_safety();
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_true(gcfx_has(f, 20));
  assert_false(gcfx_has(f, 21));
  assert_int_equal(r.pending_chunks, 1);
  assert_true(r.oldest_writer_ns < ckl__now_realtime_ns() - 3600 * 1000000000LL);
  assert_int_equal(ckl__state_deregister(st, tok), 0);
  ckl__state_close(st);
}

/* ---- step 1: one GC per store --------------------------------------------- */

static void test_two_gcs_threads(void **state) {
  gcfx *f = *state;
  gc_thread t = {.f = f, .o = zero_safety()};
  pthread_t th;
  gc_park(&t, &th, "gc.begin.after_state", "pause");
  ckl_holder who = {0};
  ckl_gc_opts o = zero_safety();
  o.busy_holder = &who;
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f->st, &o, &r), CKL_EBUSY);
  assert_int_equal(who.known, 1);
  assert_int_equal(who.pid, getpid());
  assert_string_equal(who.operation, "gc");
  gc_resume(th, "gc.begin.after_state");
  assert_int_equal(t.rc, 0);
  assert_int_equal(gcfx_gc_active(f), 0);
}

static int child_gc_paused(void *arg) {
  gcfx *f = arg;
  char spec[4200];
  snprintf(spec, sizeof spec, "pausefile(%s)", f->dir);
  ckl_store *st;
  if (ckl_store_open(f->dir, NULL, &st) != 0) return 10;
  if (ckl_failpoint_arm("gc.mark.after_list", spec) != 0) return 11;
  ckl_gc_opts o = zero_safety();
  int rc = ckl_gc_run(st, &o, NULL);
  ckl_store_close(st);
  return rc == 0 ? 0 : 12;
}

static void wait_hit_file(const char *dir, const char *fp, pid_t pid) {
  char hit[256];
  snprintf(hit, sizeof hit, "%s.hit.%d", fp, (int)pid);
  ckl_test_wait_file(dir, hit);
}

static void release_file(const char *dir, const char *fp) { ckl_test_release_pausefile(dir, fp); }

static void test_two_gcs_processes(void **state) {
  gcfx *f = *state;
  pid_t pid = ckl_test_fork(child_gc_paused, f);
  wait_hit_file(f->dir, "gc.mark.after_list", pid);
  ckl_holder who = {0};
  ckl_gc_opts o = zero_safety();
  o.busy_holder = &who;
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), CKL_EBUSY);
  assert_int_equal(who.pid, pid);
  release_file(f->dir, "gc.mark.after_list");
  assert_int_equal(ckl_test_wait(pid), 0);
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), 0);
}

/* ---- step 4: the Proxmox race and forget during the mark ------------------ */

/* GC lists the indexes -> a backup starts and reuses (touches) chunks of S0
 * -> S0 is forgotten -> GC reaches S0. No chunk of the new snapshot may go,
 * and S0's own chunks are collected by the NEXT GC. */
static void test_proxmox_race(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1, 2, 3};
  gcfx_snapshot(f, S0, s0, 3);
  gcfx_age_chunks(f, 3600);
  gc_thread t = {.f = f, .o = zero_safety()};
  pthread_t th;
  gc_park(&t, &th, "gc.mark.after_list", "pause");
  /* the backup: reuses chunk 2 by touching it, uploads 10 */
  ckl_digest d;
  gcfx_chunk(2, &d);
  assert_int_equal(ckl_chunk_touch(f->st->chunks, &d), 0);
  uint32_t s1[] = {2, 10};
  gcfx_snapshot(f, S1, s1, 2);
  /* S0 is forgotten while the GC is between listing and marking */
  assert_int_equal(gcfx_forget(f, S0), 1);
  gc_resume(th, "gc.mark.after_list");
  assert_int_equal(t.rc, 0);
  assert_true(gcfx_has(f, 2));
  assert_true(gcfx_has(f, 10));
  /* S0 was marked from .trash: its chunks survive this GC */
  assert_true(gcfx_has(f, 1));
  assert_true(gcfx_has(f, 3));
  assert_int_equal(t.r.removed_set_snapshots, 1);
  assert_int_equal(t.r.trash_purged, 1);
  assert_int_equal(ckl_test_count_entries(f->st->trash_path, NULL), 0);
  /* ... and the next GC collects them */
  gcfx_age_chunks(f, 3600);
  ckl_gc_result r;
  ckl_gc_opts o = zero_safety();
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_false(gcfx_has(f, 1));
  assert_false(gcfx_has(f, 3));
  assert_true(gcfx_has(f, 2));
  assert_true(gcfx_has(f, 10));
}

/* Forget after the listed snapshots were marked but before the removed-set
 * loop: it lands in the set and is marked from .trash. */
static void test_forget_before_removed_set(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1}, s2[] = {2};
  gcfx_snapshot(f, S0, s0, 1);
  gcfx_snapshot(f, S2, s2, 1);
  gcfx_age_chunks(f, 3600);
  gc_thread t = {.f = f, .o = zero_safety()};
  pthread_t th;
  gc_park(&t, &th, "gc.mark.before_removed_set", "pause");
  assert_int_equal(gcfx_forget(f, S2), 1);
  gc_resume(th, "gc.mark.before_removed_set");
  assert_int_equal(t.rc, 0);
  assert_int_equal(t.r.removed_set_snapshots, 1);
  assert_true(gcfx_has(f, 1));
  assert_true(gcfx_has(f, 2));
  /* after the GC, a forget deletes at once (gc_active is clear) */
  assert_int_equal(gcfx_forget(f, S0), 0);
}

static int child_forget(void *arg) {
  gcfx *f = arg;
  return gcfx_forget(f, S0) == 1 ? 0 : 1;
}

/* The same forget-during-mark, from another process. */
static void test_forget_during_mark_other_process(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1, 2};
  gcfx_snapshot(f, S0, s0, 2);
  gcfx_age_chunks(f, 3600);
  gc_thread t = {.f = f, .o = zero_safety()};
  pthread_t th;
  gc_park(&t, &th, "gc.mark.after_list", "pause");
  assert_int_equal(ckl_test_wait(ckl_test_fork(child_forget, f)), 0);
  gc_resume(th, "gc.mark.after_list");
  assert_int_equal(t.rc, 0);
  assert_true(gcfx_has(f, 1));
  assert_true(gcfx_has(f, 2));
  gcfx_age_chunks(f, 3600);
  assert_int_equal(ckl_gc_run(f->st, &t.o, NULL), 0);
  assert_false(gcfx_has(f, 1));
}

static int child_forget_dry(void *arg) {
  gcfx *f = arg;
  if (gcfx_forget(f, S0) != CKL__FORGET_DRY_GC) return 1;
  return ckl_test_count_entries(f->st->trash_path, NULL) == 0 ? 0 : 2;
}

/* A forget (another process) during a dry run's mark: recorded settled and
 * deleted at once; the dry run accepts the vanished index (G1), never
 * looks for the copy, and counts S0's unique chunk as garbage. */
static void test_forget_during_dry_run_mark(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1, 2}, s2[] = {2, 3};
  gcfx_snapshot(f, S0, s0, 2);
  gcfx_snapshot(f, S2, s2, 2);
  gcfx_age_chunks(f, 3600);
  gc_thread t = {.f = f, .o = zero_safety()};
  t.o.dry_run = 1;
  pthread_t th;
  gc_park(&t, &th, "gc.mark.after_list", "pause");
  assert_int_equal(ckl_test_wait(ckl_test_fork(child_forget_dry, f)), 0);
  gc_resume(th, "gc.mark.after_list");
  assert_int_equal(t.rc, 0);
  assert_int_equal(t.r.index_files, 1);
  assert_int_equal(t.r.removed_set_snapshots, 0);
  assert_int_equal(t.r.referenced_chunks, 2);
  assert_int_equal(t.r.disk_chunks, 3);
  assert_int_equal(t.r.removed_chunks, 1); /* chunk 1, S0's alone */
  for (uint32_t i = 1; i <= 3; i++) assert_true(gcfx_has(f, i));
  assert_int_equal(gcfx_gc_active(f), 0);
}

/* A forget after the dry run marked the listed snapshots, before its
 * removed-set loop: the settled entry is not handed out (its copy is
 * gone: marking it would abort), and the chunks were already marked. */
static void test_forget_before_dry_run_removed_set(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1}, s2[] = {2};
  gcfx_snapshot(f, S0, s0, 1);
  gcfx_snapshot(f, S2, s2, 1);
  gcfx_age_chunks(f, 3600);
  gc_thread t = {.f = f, .o = zero_safety()};
  t.o.dry_run = 1;
  pthread_t th;
  gc_park(&t, &th, "gc.mark.before_removed_set", "pause");
  assert_int_equal(gcfx_forget(f, S2), CKL__FORGET_DRY_GC);
  assert_int_equal(ckl_test_count_entries(f->st->trash_path, NULL), 0);
  gc_resume(th, "gc.mark.before_removed_set");
  assert_int_equal(t.rc, 0);
  assert_int_equal(t.r.index_files, 2);
  assert_int_equal(t.r.removed_set_snapshots, 0);
  assert_int_equal(t.r.removed_chunks, 0);
  /* after it, forgets delete at once and are not recorded */
  assert_int_equal(gcfx_forget(f, S0), CKL__FORGET_NO_GC);
}

/* S0 {1} and S2 {2}, garbage chunk 50, everything old; a GC started on
 * a thread and parked between its listing and its marking. */
static void gc_parked_after_list(gcfx *f, gc_thread *t, pthread_t *th) {
  uint32_t s0[] = {1}, s2[] = {2};
  gcfx_snapshot(f, S0, s0, 1);
  gcfx_snapshot(f, S2, s2, 1);
  gcfx_insert(f, 50); /* garbage that must survive an aborted run */
  gcfx_age_chunks(f, 3600);
  *t = (gc_thread){.f = f, .o = zero_safety()};
  gc_park(t, th, "gc.mark.after_list", "pause");
}

/* G1: an index removed behind GC's back (not via forget) aborts the GC
 * before any sweep. */
static void test_index_removed_behind_back(void **state) {
  gcfx *f = *state;
  gc_thread t;
  pthread_t th;
  gc_parked_after_list(f, &t, &th);
  char p[4200];
  snprintf(p, sizeof p, "%s/%s/data.didx", f->dir, S2);
  assert_int_equal(unlink(p), 0);
  gc_resume(th, "gc.mark.after_list");
  assert_int_equal(t.rc, CKL_EGCABORT);
  assert_true(gcfx_has(f, 50));
  assert_true(gcfx_has(f, 2));
  assert_int_equal(t.r.removed_chunks, 0);
  assert_int_equal(gcfx_gc_active(f), 0);
}

/* A forget during the mark whose move to .trash succeeded but whose state
 * transaction failed: its snapshot vanished without a removed-set entry.
 * The GC cannot mark it, so it must abort before any sweep (G1), keep
 * every chunk, and leave the store to the next forget and GC. */
static void test_forget_commit_failure_during_mark(void **state) {
  gcfx *f = *state;
  gc_thread t;
  pthread_t th;
  gc_parked_after_list(f, &t, &th);
  ckl_snapshot_name n2;
  assert_int_equal(ckl_snapshot_name_parse(S2, &n2), 0);
  assert_int_equal(ckl_failpoint_arm("state.forget.before_commit", "1*error(EIO)"), 0);
  assert_int_equal(ckl_forget(f->st, &n2, NULL), -EIO);
  assert_int_equal(ckl_test_count_entries(f->st->trash_path, NULL), 1); /* moved, unrecorded */
  gc_resume(th, "gc.mark.after_list");
  assert_int_equal(t.rc, CKL_EGCABORT);
  assert_int_equal(t.r.removed_chunks, 0);
  assert_true(gcfx_has(f, 1));
  assert_true(gcfx_has(f, 2));
  assert_true(gcfx_has(f, 50));
  assert_int_equal(gcfx_gc_active(f), 0);
  /* The next GC finds nothing missing: S2 is gone from the listing, its
   * trash copy is purged, and its chunk is collected with the garbage. */
  gcfx_age_chunks(f, 3600);
  ckl_gc_result r;
  ckl_gc_opts o = zero_safety();
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_true(gcfx_has(f, 1));
  assert_false(gcfx_has(f, 2));
  assert_false(gcfx_has(f, 50));
  assert_int_equal(r.trash_purged, 1);
  assert_int_equal(ckl_test_count_entries(f->st->trash_path, NULL), 0);
  assert_int_equal(gcfx_count_gc_leftovers(f), 0);
}

/* An unreadable index aborts too. */
static void test_unreadable_index_aborts(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1};
  gcfx_snapshot(f, S0, s0, 1);
  gcfx_insert(f, 50);
  gcfx_age_chunks(f, 3600);
  assert_int_equal(ckl_failpoint_arm("index.open.after_open", "error(EIO)"), 0);
  ckl_gc_opts o = zero_safety();
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), CKL_EGCABORT);
  assert_true(gcfx_has(f, 50));
  assert_int_equal(gcfx_gc_active(f), 0);
}

/* Step 3: a filesystem whose atime does not move is refused. */
static void test_atime_check_refuses(void **state) {
  gcfx *f = *state;
  gcfx_insert(f, 50);
  gcfx_age_chunks(f, 3600);
  assert_int_equal(ckl_failpoint_arm("gc.atime.after_check", "error(CKL_EATIME)"), 0);
  ckl_gc_opts o = zero_safety();
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), CKL_EATIME);
  assert_true(gcfx_has(f, 50));
  assert_int_equal(gcfx_gc_active(f), 0);
}

static void test_cancel(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1};
  gcfx_snapshot(f, S0, s0, 1);
  gcfx_insert(f, 50);
  gcfx_age_chunks(f, 3600);
  int cancel = 1;
  ckl_gc_opts o = zero_safety();
  o.cancel = &cancel;
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), CKL_ECANCELED);
  assert_true(gcfx_has(f, 50));
  assert_int_equal(gcfx_gc_active(f), 0);
}

/* Strict mode: exclusive against other processes' writers, not ours. */
static int child_writer(void *arg) {
  gcfx *f = arg;
  ckl_store *st;
  if (ckl_store_open(f->dir, NULL, &st) != 0) return 10;
  ckl_proclock_guard g = {0};
  if (ckl_proclock_shared(st->proclock, &g, CKL_TRY, NULL) != 0) return 11;
  char spec[4200];
  snprintf(spec, sizeof spec, "pausefile(%s)", f->dir);
  ckl_failpoint_arm("gc.begin.after_lock", spec); /* used only as a rendezvous */
  (void)CKL_FAILPOINT("gc.begin.after_lock");
  ckl_proclock_release(&g);
  ckl_store_close(st);
  return 0;
}

static void test_strict_mode(void **state) {
  gcfx *f = *state;
  ckl_proclock_guard mine = {0};
  assert_int_equal(ckl_proclock_shared(f->st->proclock, &mine, CKL_TRY, NULL), 0);
  ckl_gc_opts o = zero_safety();
  o.exclusive = 1;
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), 0); /* own writers coexist */
  pid_t pid = ckl_test_fork(child_writer, f);
  wait_hit_file(f->dir, "gc.begin.after_lock", pid);
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), CKL_EBUSY);
  o.wait_ms = 50;
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), CKL_ETIMEDOUT);
  o.exclusive = 0; /* default mode runs alongside the other process's writer */
  assert_int_equal(ckl_gc_run(f->st, &o, NULL), 0);
  release_file(f->dir, "gc.begin.after_lock");
  assert_int_equal(ckl_test_wait(pid), 0);
  ckl_proclock_release(&mine);
  assert_int_equal(gcfx_gc_active(f), 0);
}

/* A missing chunk is damage to report, not a reason to abort. */
static void test_missing_chunk_counted(void **state) {
  gcfx *f = *state;
  uint32_t s0[] = {1, 2};
  gcfx_snapshot(f, S0, s0, 2);
  ckl_digest d;
  gcfx_chunk(2, &d);
  char rel[200], p[4200];
  ckl_chunk_relpath(&d, rel, sizeof rel);
  snprintf(p, sizeof p, "%s/%s", f->st->chunks_path, rel);
  assert_int_equal(unlink(p), 0);
  ckl_gc_opts o = zero_safety();
  ckl_gc_result r;
  assert_int_equal(ckl_gc_run(f->st, &o, &r), 0);
  assert_int_equal(r.missing_chunks, 1);
  assert_true(gcfx_has(f, 1));
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, gcfx_setup, gcfx_teardown)
  const struct CMUnitTest tests[] = {
      T(test_basic_collect),
      T(test_dry_run),
      T(test_recent_chunks_survive),
      T(test_oldest_writer_bounds_cutoff),
      T(test_two_gcs_threads),
      T(test_two_gcs_processes),
      T(test_proxmox_race),
      T(test_forget_before_removed_set),
      T(test_forget_during_mark_other_process),
      T(test_forget_during_dry_run_mark),
      T(test_forget_before_dry_run_removed_set),
      T(test_index_removed_behind_back),
      T(test_forget_commit_failure_during_mark),
      T(test_unreadable_index_aborts),
      T(test_atime_check_refuses),
      T(test_cancel),
      T(test_strict_mode),
      T(test_missing_chunk_counted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

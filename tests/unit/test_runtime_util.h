/*
 * tests/unit/test_runtime_util.h - helpers shared by the runtime tests:
 * a loop-block monitor, an injectable clock, a task recorder, and a
 * custom "writer" work function. Static functions: each test file
 * includes this once.
 */
#ifndef CKL_TEST_RUNTIME_UTIL_H
#define CKL_TEST_RUNTIME_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/internal.h"
#include "datastore/store_internal.h"
#include "gc_fixture.h"
#include "tasks/tasks_internal.h"
#include "testutil.h"

/* Each test file uses some of these helpers. */
#define RTU static __attribute__((unused))

#define NS_PER_MS 1000000ULL
/* The "generous bound": no loop iteration may take this long. */
#define LOOP_BLOCK_BOUND_MS 100

/* ---- loop-block monitor ----------------------------------------------------
 * "The loop never blocks" is checked in two ways that do not depend on how
 * loaded the machine is. Wall-clock lateness does: on two busy cores the
 * loop thread can wait 100 ms and more for a CPU while doing nothing
 * wrong (a release run here measured 32 ms of probe lag with the loop
 * idle), so a wall-clock bound fails correct code under a sanitizer.
 *   - no protocol step runs on the loop thread: every lock-protocol step
 *     of the library has a failpoint (docs/hacking.md: lock acquisitions,
 *     state write transactions, chunk, index and manifest writes, ...), so
 *     every failpoint is armed with "count" and a trace hook records any
 *     hit on the loop thread (a lock wait or file work there is exactly
 *     what the runtime must keep off the loop);
 *   - no callback burns the CPU: the loop thread's own CPU time
 *     (CLOCK_THREAD_CPUTIME_ID, which does not advance while it waits for
 *     a CPU or sleeps) between uv_check (after the poll phase) and the next
 *     uv_prepare, and between two ticks of a 5 ms probe timer (callbacks of
 *     I/O watchers, such as the runtime's uv_async, run inside the poll
 *     phase), stays under LOOP_BLOCK_BOUND_MS.
 * The wall-clock figures are still measured and printed with CKL_TEST_LOG,
 * for a human reading a slow run. */
typedef struct loopmon {
  uv_prepare_t prep;
  uv_check_t check;
  uv_timer_t probe;
  pthread_t loop_thread;
  uint64_t last_check_cpu, max_busy_cpu_ns;
  uint64_t last_probe_cpu, max_probe_cpu_ns;
  uint64_t last_check, max_busy_ns; /* wall, reported only */
  uint64_t last_probe, max_lag_ns;  /* wall, reported only */
  uint64_t iterations;
  atomic_int on_loop_hits;
  _Atomic(const char *) first_on_loop;
} loopmon;

RTU uint64_t lm_thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

RTU void lm_check(uv_check_t *h) {
  loopmon *m = h->data;
  m->last_check = uv_hrtime();
  m->last_check_cpu = lm_thread_cpu_ns();
}

RTU void lm_prepare(uv_prepare_t *h) {
  loopmon *m = h->data;
  if (m->last_check) {
    uint64_t busy = uv_hrtime() - m->last_check;
    if (busy > m->max_busy_ns) m->max_busy_ns = busy;
    uint64_t cpu = lm_thread_cpu_ns() - m->last_check_cpu;
    if (cpu > m->max_busy_cpu_ns) m->max_busy_cpu_ns = cpu;
  }
  m->iterations++;
}

RTU void lm_probe(uv_timer_t *h) {
  loopmon *m = h->data;
  uint64_t now = uv_hrtime(), cpu = lm_thread_cpu_ns();
  if (m->last_probe) {
    uint64_t gap = now - m->last_probe;
    uint64_t lag = gap > 5 * NS_PER_MS ? gap - 5 * NS_PER_MS : 0;
    if (lag > m->max_lag_ns) m->max_lag_ns = lag;
    if (cpu - m->last_probe_cpu > m->max_probe_cpu_ns) m->max_probe_cpu_ns = cpu - m->last_probe_cpu;
  }
  m->last_probe = now;
  m->last_probe_cpu = cpu;
}

/* Failpoint trace hook: called on the hitting thread (failpoint.h). */
RTU void lm_trace(const char *name, void *arg) {
  loopmon *m = arg;
  if (!pthread_equal(pthread_self(), m->loop_thread)) return;
  const char *none = NULL;
  atomic_compare_exchange_strong(&m->first_on_loop, &none, name);
  atomic_fetch_add(&m->on_loop_hits, 1);
}

/* Start monitoring `loop`, which the calling thread runs. Arms every
 * failpoint with "count" (replacing whatever the test armed) and installs
 * the trace hook; loopmon_stop removes both. Call it right before the
 * loop runs the tasks: submitting a task is an API call of the loop
 * thread too. */
RTU void loopmon_start(loopmon *m, uv_loop_t *loop) {
  memset(m, 0, sizeof *m);
  m->loop_thread = pthread_self();
  atomic_init(&m->on_loop_hits, 0);
  atomic_init(&m->first_on_loop, NULL);
  for (size_t i = 0; i < ckl_failpoint_count(); i++)
    assert_int_equal(ckl_failpoint_arm(ckl_failpoint_catalog(i, NULL), "count"), 0);
  ckl_failpoint_set_trace(lm_trace, m);
  uv_prepare_init(loop, &m->prep);
  uv_check_init(loop, &m->check);
  uv_timer_init(loop, &m->probe);
  m->prep.data = m->check.data = m->probe.data = m;
  uv_prepare_start(&m->prep, lm_prepare);
  uv_check_start(&m->check, lm_check);
  uv_timer_start(&m->probe, lm_probe, 5, 5);
  /* none of them keeps the loop alive */
  uv_unref((uv_handle_t *)&m->prep);
  uv_unref((uv_handle_t *)&m->check);
  uv_unref((uv_handle_t *)&m->probe);
}

RTU void loopmon_stop(loopmon *m) {
  ckl_failpoint_set_trace(NULL, NULL);
  ckl_failpoint_disarm_all();
  uv_close((uv_handle_t *)&m->prep, NULL);
  uv_close((uv_handle_t *)&m->check, NULL);
  uv_close((uv_handle_t *)&m->probe, NULL);
}

RTU void loopmon_assert(const loopmon *m) {
  if (getenv("CKL_TEST_LOG"))
    fprintf(stderr,
            "loop: %llu iterations; longest callbacks %.1f ms (%.1f ms CPU); longest probe "
            "lag %.1f ms (%.1f ms CPU between ticks); %d failpoint hits on the loop thread\n",
            (unsigned long long)m->iterations, (double)m->max_busy_ns / 1e6,
            (double)m->max_busy_cpu_ns / 1e6, (double)m->max_lag_ns / 1e6,
            (double)m->max_probe_cpu_ns / 1e6, atomic_load(&m->on_loop_hits));
  assert_true(m->iterations > 0);
  const char *first = atomic_load(&m->first_on_loop);
  if (first) fail_msg("a protocol step ran on the loop thread: failpoint %s", first);
  assert_true(m->max_busy_cpu_ns < LOOP_BLOCK_BOUND_MS * NS_PER_MS);
  assert_true(m->max_probe_cpu_ns < LOOP_BLOCK_BOUND_MS * NS_PER_MS);
}

/* ---- injectable clock ---------------------------------------------------------
 * A runtime made with_clock judges its leases by this clock, which stands
 * still: it reads the boot time taken when the runtime was made, plus the
 * offset a test steps. Real time never enters, so a lease is lost exactly
 * when a test says (a step past the TTL, a refresh that fails), never
 * because a loaded machine let the TTL pass between two lines of a test
 * while the loop, whose heartbeat refreshes it, was not running. */
static _Atomic int64_t test_clock_base;
static _Atomic int64_t test_clock_offset;
RTU int64_t test_clock(void *arg) {
  (void)arg;
  return atomic_load(&test_clock_base) + atomic_load(&test_clock_offset);
}

/* ---- recorder ---------------------------------------------------------------------
 * ckl_task.data points at one of these.
 *
 * Who was in the way: a busy answer may name nobody (known = 0) when the
 * attempt meets a holder between its grant and its record, or between
 * clearing its record and its unlock (locks/busy.c, windows W1-W3); a
 * holder descheduled there outlasts the re-probe bound on a loaded
 * machine. A test that checks the holder reads a wait event known to have
 * met the holder with its name written (usually the first: taken before
 * the test lets the holder go), not the latest, which may come from the
 * holder's release. */
typedef struct rec {
  int done_calls;
  int status;
  int progress_calls;
  int wait_events;
  char last_phase[32];
  uint64_t last_done, last_total;
  ckl_holder wait_holder;       /* named by the latest "wait" event */
  ckl_holder first_wait_holder; /* named by the first one */
  void (*on_wait)(ckl_task *t, struct rec *r); /* first "wait" event */
  void (*on_progress)(ckl_task *t, const ckl_task_progress *p);
  void (*on_done)(ckl_task *t, int status);
  void *user;
} rec;

RTU void rec_progress(ckl_task *t, const ckl_task_progress *p) {
  rec *r = t->data;
  assert_int_equal(r->done_calls, 0); /* never after done */
  assert_non_null(p->phase);
  if (p->total) assert_true(p->done <= p->total);
  r->progress_calls++;
  snprintf(r->last_phase, sizeof r->last_phase, "%s", p->phase);
  r->last_done = p->done;
  r->last_total = p->total;
  if (strcmp(p->phase, "wait") == 0) {
    assert_non_null(p->waiting_for);
    r->wait_holder = *p->waiting_for;
    if (r->wait_events == 0) r->first_wait_holder = *p->waiting_for;
    if (r->wait_events++ == 0 && r->on_wait) r->on_wait(t, r);
  }
  if (r->on_progress) r->on_progress(t, p);
}

RTU void rec_done(ckl_task *t, int status) {
  rec *r = t->data;
  assert_int_equal(r->done_calls, 0); /* exactly once */
  r->done_calls++;
  r->status = status;
  assert_int_equal(t->status, status);
  if (r->on_done) r->on_done(t, status);
}

RTU ckl_runtime *rt_new(uv_loop_t *loop, int64_t ttl_ms, int with_clock) {
  ckl_runtime_opts o = {.loop = loop, .lease_ttl_ms = ttl_ms, .progress_interval_ms = 5,
                        .backoff_max_ms = 50};
  if (with_clock) {
    atomic_store(&test_clock_base, ckl__now_boottime_ns());
    o.clock = test_clock;
  }
  ckl_runtime *rt = NULL;
  assert_int_equal(ckl_runtime_new(&o, &rt), 0);
  return rt;
}

RTU void on_closed_flag(ckl_runtime *rt, void *arg) {
  (void)rt;
  *(int *)arg = 1;
}

/* Close a runtime on a caller's loop and run the loop until it is gone. */
RTU void rt_close_run(ckl_runtime *rt, uv_loop_t *loop) {
  int closed = 0;
  assert_int_equal(ckl_runtime_close(rt, on_closed_flag, &closed), 0);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
}

/* ---- a custom writer: chunks + one index, like a small backup --------------------- */

RTU void chunk_content(uint32_t group, uint32_t i, uint8_t buf[256]) {
  for (int k = 0; k < 256; k++) buf[k] = (uint8_t)((group * 131u + i * 7u + (uint32_t)k * 13u) ^ (uint32_t)(k >> 3));
  memcpy(buf, &group, sizeof group);
  memcpy(buf + 4, &i, sizeof i);
}

typedef struct writer_job {
  ckl_store *st;
  uint32_t group;  /* chunks group*1000+i */
  uint32_t nchunks;
  char snap_rel[128]; /* "type/id/time" to write (directory created) */
  int checks;      /* safe points passed */
} writer_job;

/* Worker thread: no cmocka asserts here, only return codes. */
RTU int writer_work(ckl_task_ctx *ctx, void *arg) {
  writer_job *j = arg;
  char dir[4096], ipath[4200];
  snprintf(dir, sizeof dir, "%s/%s", ckl_store_path(j->st), j->snap_rel);
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", dir);
  for (char *p = tmp + strlen(ckl_store_path(j->st)) + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -errno;
      *p = '/';
    }
  }
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) return -errno;
  snprintf(ipath, sizeof ipath, "%s/data.didx", dir);
  ckl_index_writer *w;
  int rc = ckl_index_writer_create(ipath, CKL_INDEX_DYNAMIC, 0, CKL_ATOMIC_NOSYNC, &w);
  if (rc < 0) return rc;
  for (uint32_t i = 0; i < j->nchunks; i++) {
    rc = ckl_task_ctx_check(ctx);
    if (rc < 0) break;
    j->checks++;
    uint8_t buf[256];
    chunk_content(j->group, i, buf);
    ckl_digest d;
    ckl_digest_compute(buf, sizeof buf, &d);
    rc = ckl_chunk_insert(j->st->chunks, &d, buf, sizeof buf, NULL);
    if (rc < 0) break;
    rc = ckl_index_writer_add(w, (uint64_t)(i + 1) * sizeof buf, &d);
    if (rc < 0) break;
    ckl_task_ctx_progress(ctx, "write", i + 1, j->nchunks, (uint64_t)(i + 1) * sizeof buf);
  }
  if (rc < 0) {
    ckl_index_writer_abort(w);
    return rc;
  }
  return ckl_index_writer_commit(w, NULL);
}

RTU bool writer_chunks_present(ckl_store *st, uint32_t group, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    uint8_t buf[256];
    chunk_content(group, i, buf);
    ckl_digest d;
    ckl_digest_compute(buf, sizeof buf, &d);
    struct stat sb;
    if (ckl_chunk_stat(st->chunks, &d, &sb) != 0) return false;
  }
  return true;
}

#endif

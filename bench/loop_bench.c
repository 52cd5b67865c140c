/*
 * bench/loop_bench.c - figure 6 of docs/benchmarks.md: loop health. 64
 * chunklock tasks (backups, reads, verifies, forgets, GCs) run at once on
 * one libuv loop; how long is the loop thread ever kept from polling?
 *
 *     loop_bench [--dir DIR] [--json FILE] [--quick] [--runs N]
 *
 * Measure. The loop is configured with UV_METRICS_IDLE_TIME, so libuv
 * counts the time it spends blocked in the poll. A uv_prepare handle runs
 * once per loop iteration; at each call, the wall time since the previous
 * call minus the idle time since then is what the loop thread spent
 * running callbacks (timers, task completions, progress, lease timers,
 * closes) during that iteration: the stall an embedder's own handles
 * would see. A 1 ms repeating timer keeps iterations short when nothing
 * else happens, and its lateness is recorded as a cross-check (lateness
 * also includes the OS not scheduling the thread on a loaded machine).
 *
 * One run = submit the 64 tasks, run the loop until all are done. The mix
 * per run: 24 backups (1 MiB, 64 KiB chunks, new groups), 16 reads and 16
 * verifies of snapshots made in the setup, 6 forgets of other setup
 * snapshots, 2 GCs (they take turns on the GC lock, waiting on a timer).
 * Every task must succeed. Results: per run the p50, p99 and max of the
 * per-iteration stall; reported as medians over runs, min-max.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "bench/benchjson.h"
#include "chunklock/chunklock.h"

#define MAX_RUNS 32
#define NTASKS 64
#define N_BACKUP 24
#define N_READ 16
#define N_VERIFY 16
#define N_FORGET 6
#define N_GC 2
#define ARCHIVE_SIZE (1u << 20)
#define CHUNK_SIZE (64u * 1024)
#define BASE_TIME 1767225600 /* 2026-01-01T00:00:00Z */

static uv_loop_t loop;
static ckl_store *st;
static ckl_runtime *rt;
static unsigned char *payload[N_BACKUP];
static int pending, failures;

/* ---- the stall monitor ------------------------------------------------------- */

typedef struct samples {
  double *v;
  size_t n, cap;
} samples;

static void push(samples *s, double x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4096;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v) abort();
  }
  s->v[s->n++] = x;
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(samples *s, double p) {
  if (!s->n) return NAN;
  qsort(s->v, s->n, sizeof *s->v, cmpd);
  size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
  return s->v[i];
}

static struct {
  uv_prepare_t prep;
  uv_timer_t tick;
  uint64_t last_ns, last_idle, last_tick, last_cpu;
  samples stall, late, cpu;
} mon;

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_prepare(uv_prepare_t *h) {
  (void)h;
  uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(&loop), cpu = thread_cpu_ns();
  if (mon.last_ns) {
    double busy = (double)(now - mon.last_ns) - (double)(idle - mon.last_idle);
    push(&mon.stall, busy > 0 ? busy / 1e6 : 0);
    push(&mon.cpu, (double)(cpu - mon.last_cpu) / 1e6);
  }
  mon.last_ns = now;
  mon.last_idle = idle;
  mon.last_cpu = cpu;
}

static void on_tick(uv_timer_t *h) {
  (void)h;
  uint64_t now = uv_hrtime();
  if (mon.last_tick) {
    double late = (double)(now - mon.last_tick) / 1e6 - 1.0;
    push(&mon.late, late > 0 ? late : 0);
  }
  mon.last_tick = now;
}

static void monitor_start(void) {
  mon.stall.n = mon.late.n = mon.cpu.n = 0;
  mon.last_ns = mon.last_tick = 0;
  uv_prepare_init(&loop, &mon.prep);
  uv_prepare_start(&mon.prep, on_prepare);
  uv_timer_init(&loop, &mon.tick);
  uv_timer_start(&mon.tick, on_tick, 1, 1);
}

static void monitor_stop(void) {
  uv_prepare_stop(&mon.prep);
  uv_timer_stop(&mon.tick);
  uv_close((uv_handle_t *)&mon.prep, NULL);
  uv_close((uv_handle_t *)&mon.tick, NULL);
}

/* ---- tasks ------------------------------------------------------------------------ */

static void die(const char *what, int rc) {
  fprintf(stderr, "loop_bench: %s: %s\n", what, ckl_strerror(rc));
  exit(1);
}

static void on_done(ckl_task *t, int status) {
  if (status < 0) {
    fprintf(stderr, "loop_bench: %s task failed: %s\n", ckl_task_type_name(t->type),
            ckl_strerror(status));
    failures++;
  }
  if (--pending == 0 && uv_is_active((uv_handle_t *)&mon.prep)) monitor_stop();
}

static int discard(void *arg, const char *archive, uint64_t off, const void *buf, size_t len) {
  (void)arg, (void)archive, (void)off, (void)buf, (void)len;
  return 0;
}

static void fill(unsigned char *buf, size_t len, unsigned seed) {
  unsigned x = seed * 2654435761u + 1u;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    buf[i] = (unsigned char)x;
  }
}

static ckl_task tasks[NTASKS];

static void backup(ckl_task *t, const char *group, int64_t time_s, int i) {
  ckl_task_archive ar = {.name = "root.fidx", .chunk_size = CHUNK_SIZE, .data = payload[i],
                         .size = ARCHIVE_SIZE};
  ckl_task_backup_args a = {.store = st, .narchives = 1, .archives = &ar, .timeout_ms = 60000};
  a.opts.time_s = time_s;
  int rc = ckl_group_name_parse(group, &a.group);
  if (rc == 0) rc = ckl_task_backup(rt, t, &a, NULL, on_done);
  if (rc < 0) die("submit backup", rc);
  pending++;
}

static void snap(ckl_snapshot_name *n, const char *group, int64_t time_s) {
  char type[16], id[64];
  if (sscanf(group, "%15[^/]/%63s", type, id) != 2) abort();
  int rc = ckl_snapshot_name_make(type, id, time_s, n);
  if (rc < 0) die("snapshot name", rc);
}

static void run_loop(void) {
  uv_run(&loop, UV_RUN_DEFAULT);
  if (failures) {
    fprintf(stderr, "loop_bench: %d task(s) failed\n", failures);
    exit(1);
  }
}

/* The snapshots the runs read, verify and forget. */
static void setup(int runs) {
  int k = 0;
  char g[64];
  for (int i = 0; i < N_READ; i++) {
    snprintf(g, sizeof g, "host/keep-%02d", i);
    backup(&tasks[k++ % NTASKS], g, BASE_TIME, i % N_BACKUP);
    if (k % NTASKS == 0) run_loop();
  }
  for (int r = 0; r < runs; r++)
    for (int i = 0; i < N_FORGET; i++) {
      snprintf(g, sizeof g, "host/old-%02d", i);
      backup(&tasks[k++ % NTASKS], g, BASE_TIME + r, (i + 3) % N_BACKUP);
      if (k % NTASKS == 0) run_loop();
    }
  run_loop();
}

static void one_run(int r) {
  int k = 0;
  char g[64];
  monitor_start();
  for (int i = 0; i < N_BACKUP; i++) {
    snprintf(g, sizeof g, "host/new-%02d", i);
    backup(&tasks[k++], g, BASE_TIME + 100 + r, i);
  }
  for (int i = 0; i < N_READ; i++) {
    ckl_task_read_args a = {.store = st, .write = discard, .timeout_ms = 60000};
    snprintf(g, sizeof g, "host/keep-%02d", i);
    snap(&a.snapshot, g, BASE_TIME);
    int rc = ckl_task_read(rt, &tasks[k++], &a, NULL, on_done);
    if (rc < 0) die("submit read", rc);
    pending++;
  }
  for (int i = 0; i < N_VERIFY; i++) {
    ckl_task_verify_args a = {.store = st, .timeout_ms = 60000};
    snprintf(g, sizeof g, "host/keep-%02d", i);
    snap(&a.snapshot, g, BASE_TIME);
    int rc = ckl_task_verify(rt, &tasks[k++], &a, NULL, on_done);
    if (rc < 0) die("submit verify", rc);
    pending++;
  }
  for (int i = 0; i < N_FORGET; i++) {
    ckl_task_forget_args a = {.store = st, .timeout_ms = 60000};
    snprintf(g, sizeof g, "host/old-%02d", i);
    snap(&a.snapshot, g, BASE_TIME + r);
    int rc = ckl_task_forget(rt, &tasks[k++], &a, NULL, on_done);
    if (rc < 0) die("submit forget", rc);
    pending++;
  }
  for (int i = 0; i < N_GC; i++) {
    ckl_task_gc_args a = {.store = st, .timeout_ms = 120000};
    int rc = ckl_task_gc(rt, &tasks[k++], &a, NULL, on_done);
    if (rc < 0) die("submit gc", rc);
    pending++;
  }
  if (k != NTASKS) abort();
  run_loop();
}

int main(int argc, char **argv) {
  const char *dir = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/var/tmp";
  const char *json = NULL;
  int quick = 0, runs = 0;
  static const struct option lo[] = {{"dir", required_argument, NULL, 'd'},
                                     {"json", required_argument, NULL, 'j'},
                                     {"quick", no_argument, NULL, 'q'},
                                     {"runs", required_argument, NULL, 'r'},
                                     {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'd': dir = optarg; break;
    case 'j': json = optarg; break;
    case 'q': quick = 1; break;
    case 'r': runs = atoi(optarg); break;
    default:
      fputs("usage: loop_bench [--dir DIR] [--json FILE] [--quick] [--runs N]\n", stderr);
      return 2;
    }
  }
  if (runs <= 0) runs = quick ? 2 : 7;
  if (runs > MAX_RUNS) runs = MAX_RUNS;
  bj_file j;
  if (bj_open(&j, json) < 0) {
    perror(json);
    return 1;
  }
  char tmp[PATH_MAX - 16], store[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s/loop_bench.XXXXXX", dir);
  if (!mkdtemp(tmp)) {
    perror(tmp);
    return 1;
  }
  snprintf(store, sizeof store, "%s/store", tmp);
  ckl_store_create_opts co = {.sync = CKL_SYNC_NONE};
  int rc = ckl_store_create(store, &co);
  if (rc == 0) rc = ckl_store_open(store, NULL, &st);
  if (rc < 0) die(store, rc);
  for (int i = 0; i < N_BACKUP; i++) {
    if (!(payload[i] = malloc(ARCHIVE_SIZE))) abort();
    fill(payload[i], ARCHIVE_SIZE, (unsigned)i + 1);
  }
  uv_loop_init(&loop);
  if ((rc = uv_loop_configure(&loop, UV_METRICS_IDLE_TIME)) != 0) die("uv_loop_configure", rc);
  ckl_runtime_opts ro = {.loop = &loop};
  if ((rc = ckl_runtime_new(&ro, &rt)) < 0) die("ckl_runtime_new", rc);
  setup(runs);

  double p50[MAX_RUNS], p99[MAX_RUNS], mx[MAX_RUNS], late[MAX_RUNS], iters[MAX_RUNS];
  double cpumax[MAX_RUNS], secs[MAX_RUNS];
  for (int r = 0; r < runs; r++) {
    fprintf(stderr, "loop_bench: run %d/%d\n", r + 1, runs);
    double t0 = bj_now();
    one_run(r);
    secs[r] = bj_now() - t0;
    cpumax[r] = pct(&mon.cpu, 1.0);
    iters[r] = (double)mon.stall.n;
    p50[r] = pct(&mon.stall, 0.50);
    p99[r] = pct(&mon.stall, 0.99);
    mx[r] = pct(&mon.stall, 1.0);
    late[r] = pct(&mon.late, 1.0);
  }
  ckl_runtime_close(rt, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  ckl_store_close(st);

  char note[256];
  bj_stats li = bj_stats_of(late, runs), it = bj_stats_of(iters, runs);
  bj_stats ss = bj_stats_of(secs, runs);
  snprintf(note, sizeof note,
           "busy time of one loop iteration (wall minus poll idle, uv_metrics_idle_time); "
           "%.0f iterations in %.1f s per run (medians)", it.median, ss.median);
  bj_rec rec = bj_rec_init(6, "64 tasks on one loop: longest loop-thread stall", "ms",
                           bj_stats_of(mx, runs));
  rec.target = 10;
  rec.cmp = "<=";
  rec.note = note;
  bj_write(&j, rec);
  rec = bj_rec_init(6, "64 tasks on one loop: p99 loop-thread stall", "ms", bj_stats_of(p99, runs));
  bj_write(&j, rec);
  rec = bj_rec_init(6, "64 tasks on one loop: p50 loop-thread stall", "ms", bj_stats_of(p50, runs));
  bj_write(&j, rec);
  rec = bj_rec_init(6, "64 tasks on one loop: longest stall, loop-thread CPU time", "ms",
                    bj_stats_of(cpumax, runs));
  rec.note = "CPU the loop thread itself used in its busiest iteration "
             "(CLOCK_THREAD_CPUTIME_ID): the library's own work on the loop";
  bj_write(&j, rec);
  rec = bj_rec_init(6, "64 tasks on one loop: longest 1 ms timer lateness", "ms", li);
  rec.note = "a cross-check: also counts the OS not running the loop thread on a loaded machine";
  bj_write(&j, rec);

  char cmd[PATH_MAX + 32];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) fprintf(stderr, "loop_bench: could not remove %s\n", tmp);
  for (int i = 0; i < N_BACKUP; i++) free(payload[i]);
  free(mon.stall.v);
  free(mon.late.v);
  free(mon.cpu.v);
  return bj_close(&j) < 0;
}

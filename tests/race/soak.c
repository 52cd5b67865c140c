/*
 * tests/race/soak.c - the randomized soak: main, worker processes, the
 * coordinator and the report (soak.h has the design; docs/hacking.md
 * "Soak" the commands).
 *
 *   soak [--seconds N] [--procs P] [--threads T] [--seed S] [--dir DIR]
 *        [--crash] [--check-every SEC] [--json FILE] [--keep]
 *
 * Exit status: 0 when every check passed, 1 on a violation or unexpected
 * error (the seed to reproduce is printed), 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "soak.h"
#include "testutil.h"

#define QUIESCE_TIMEOUT_S 120 /* a worker that does not park by then hangs */
#define STOP_TIMEOUT_S 120

static pid_t pids[SOAK_MAX_PROCS];
static int lives[SOAK_MAX_PROCS];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct thread_arg {
  soak_worker w;
  pthread_t t;
} thread_arg;

static void *thread_main(void *p) {
  thread_arg *a = p;
  soak_worker_run(&a->w);
  return NULL;
}

/* A worker process: its own store handle, T threads. */
static int worker_process(int proc, int life) {
  soak_worker_process_init();
  ckl_store *st;
  int rc = ckl_store_open(soak->store, NULL, &st);
  if (rc != 0) {
    soak_fail("worker process %d: cannot open the store: %s", proc, ckl_err_name(rc));
    return 1;
  }
  thread_arg *ta = calloc((size_t)soak->threads, sizeof *ta);
  for (int t = 0; t < soak->threads; t++) {
    soak_worker *w = &ta[t].w;
    w->slot = proc * soak->threads + t;
    w->proc = proc;
    w->thread = t;
    w->life = life;
    w->seed = soak_mix(soak->seed ^ ((uint64_t)proc << 40) ^ ((uint64_t)life << 20) ^ (uint64_t)t);
    w->rng.s = w->seed;
    w->st = st;
    atomic_store(&soak->cur_op[w->slot], -1);
    if (pthread_create(&ta[t].t, NULL, thread_main, &ta[t]) != 0) abort();
  }
  for (int t = 0; t < soak->threads; t++) pthread_join(ta[t].t, NULL);
  free(ta);
  ckl_store_close(st);
  return atomic_load(&soak->failed) ? 1 : 0;
}

static void spawn(int proc) {
  pid_t pid = fork();
  if (pid < 0) {
    soak_fail("fork: %s", strerror(errno));
    return;
  }
  if (pid == 0) _exit(worker_process(proc, lives[proc]));
  pids[proc] = pid;
}

/* Reap finished workers. In crash mode a worker that crashed (status 77)
 * is settled and replaced; any other early end is a failure. */
static void reap(int stopping) {
  for (int p = 0; p < soak->procs; p++) {
    if (pids[p] <= 0) continue;
    int status;
    pid_t r = waitpid(pids[p], &status, WNOHANG);
    if (r == 0) continue;
    if (r < 0 && errno == EINTR) continue;
    pid_t dead = pids[p];
    pids[p] = 0;
    int code = r < 0 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == CKL_FAILPOINT_CRASH_STATUS && soak->crash) {
      atomic_fetch_add(&soak->crashes, 1);
      soak_reconcile_dead(dead, p);
      if (!stopping && !atomic_load(&soak->stop)) {
        lives[p]++;
        atomic_fetch_add(&soak->respawns, 1);
        spawn(p);
      }
    } else if (code != 0 || !stopping) {
      if (!atomic_load(&soak->failed))
        soak_fail("worker process %d (pid %d) ended with status %d%s", p, (int)dead, code,
                  code == CKL_FAILPOINT_CRASH_STATUS ? " (a crash failpoint outside crash mode)"
                                                     : "");
    }
  }
}

static int live_procs(void) {
  int n = 0;
  for (int p = 0; p < soak->procs; p++) n += pids[p] > 0;
  return n;
}

static void dump_workers(char *buf, size_t len) {
  size_t used = strlen(buf);
  for (int s = 0; s < soak->procs * soak->threads && used + 200 < len; s++) {
    int op = atomic_load(&soak->cur_op[s]), fp = atomic_load(&soak->cur_fp[s]);
    used += (size_t)snprintf(buf + used, len - used, "  worker %d: %s, last failpoint %s\n", s,
                             op >= 0 && op < OP_N ? soak_op_names[op] : "idle",
                             fp >= 0 ? soak_fp_name(fp) : "-");
  }
}

/* Park everybody, check, resume. */
static int quiesce_and_check(int *crashes_seen, double *last_crash_t) {
  int gen = atomic_fetch_add(&soak->pause_gen, 1) + 1; /* odd: park */
  double t0 = now_s();
  for (;;) {
    reap(0);
    if (atomic_load(&soak->failed)) break;
    int all = 1;
    for (int s = 0; s < soak->procs * soak->threads && all; s++) {
      int v = atomic_load(&soak->parked[s]);
      all = v == gen || v == -1;
    }
    if (all) break;
    if (now_s() - t0 > QUIESCE_TIMEOUT_S) {
      char buf[8192] = "";
      dump_workers(buf, sizeof buf);
      soak_fail("workers did not park within %d s (a hang?):\n%s", QUIESCE_TIMEOUT_S, buf);
      break;
    }
    usleep(1000);
  }
  int rc = 0;
  if (!atomic_load(&soak->failed)) {
    int c = (int)atomic_load(&soak->crashes);
    if (c != *crashes_seen) {
      *last_crash_t = now_s();
      *crashes_seen = c;
    }
    if (soak->crash) {
      /* temp files of a crashed insert become removable once older than
       * the store's margin (1 s here): wait it out, as time would */
      double wait = *last_crash_t + 1.5 - now_s();
      if (wait > 0) usleep((useconds_t)(wait * 1e6));
      rc = soak_recover();
    }
    if (rc == 0) rc = soak_check_quiescent("quiescent check");
  }
  atomic_fetch_add(&soak->pause_gen, 1); /* even: resume */
  return rc;
}

/* ---- report ------------------------------------------------------------------ */

static json_t *report(double secs, uint64_t *total_out, uint64_t *inter_out) {
  json_t *j = json_object();
  json_object_set_new(j, "seed", json_integer((json_int_t)soak->seed));
  json_object_set_new(j, "seconds", json_real(secs));
  json_object_set_new(j, "procs", json_integer(soak->procs));
  json_object_set_new(j, "threads", json_integer(soak->threads));
  json_object_set_new(j, "crash_mode", json_boolean(soak->crash));
  json_t *ops = json_object();
  uint64_t total = 0;
  for (int o = 0; o < OP_N; o++) {
    json_t *r = json_object();
    for (int k = 0; k < RES_N; k++) {
      uint64_t n = atomic_load(&soak->counts[o][k]);
      total += n;
      if (n) json_object_set_new(r, soak_res_names[k], json_integer((json_int_t)n));
    }
    json_object_set_new(ops, soak_op_names[o], r);
  }
  json_object_set_new(j, "ops", ops);
  json_object_set_new(j, "total_ops", json_integer((json_int_t)total));
  uint64_t inter = 0, steps = 0, pairs = 0;
  for (int a = 0; a < OP_N; a++)
    for (int b = 0; b < OP_N; b++) {
      int any = 0;
      for (int x = 0; x < SOAK_FP_MAX; x++) {
        inter += atomic_load(&soak->inter[a][x][b]);
        any |= atomic_load(&soak->inter[a][x][b]);
      }
      pairs += (uint64_t)any;
    }
  for (int a = 0; a < OP_N; a++)
    for (int x = 0; x < SOAK_FP_MAX; x++) steps += atomic_load(&soak->steps[a][x]);
  json_t *il = json_object();
  json_object_set_new(il, "distinct_triples", json_integer((json_int_t)inter));
  json_object_set_new(il, "distinct_steps", json_integer((json_int_t)steps));
  json_object_set_new(il, "distinct_op_pairs", json_integer((json_int_t)pairs));
  json_object_set_new(j, "interleavings", il);
  json_t *c = json_object();
#define C(name, field) json_object_set_new(c, name, json_integer((json_int_t)atomic_load(&soak->field)))
  C("chunks_new", chunks_new);
  C("chunks_dedup", chunks_dedup);
  C("chunks_reused_from_base", chunks_reused);
  C("bytes_read_compared", bytes_read);
  C("gc_removed_chunks", gc_removed_chunks);
  C("gc_removed_set_snapshots", gc_removed_set);
  C("freeze_nothing_deleted_checks", freeze_checks);
  C("failpoint_sleeps_armed", fp_sleeps_armed);
  C("crashes_armed", crashes_armed);
  C("crashes", crashes);
  C("respawns", respawns);
  C("busy_without_holder", busy_no_holder);
#undef C
  json_object_set_new(j, "counters", c);
  json_object_set_new(j, "invariant_checks", json_integer((json_int_t)atomic_load(&soak->checks_run)));
  json_object_set_new(j, "failures", json_integer(atomic_load(&soak->failed) ? 1 : 0));
  if (atomic_load(&soak->failed)) json_object_set_new(j, "failure", json_string(soak->failure));
  *total_out = total;
  *inter_out = inter;
  return j;
}

static void print_report(json_t *j, uint64_t total, uint64_t inter) {
  json_t *ops = json_object_get(j, "ops");
  printf("soak: seed 0x%llx, %.1f s, %d procs x %d threads%s\n",
         (unsigned long long)soak->seed, json_real_value(json_object_get(j, "seconds")),
         soak->procs, soak->threads, soak->crash ? ", crash mode" : "");
  printf("%-22s", "op");
  for (int k = 0; k < RES_N; k++) printf(" %9s", soak_res_names[k]);
  printf("\n");
  for (int o = 0; o < OP_N; o++) {
    printf("%-22s", soak_op_names[o]);
    json_t *r = json_object_get(ops, soak_op_names[o]);
    for (int k = 0; k < RES_N; k++)
      printf(" %9lld", (long long)json_integer_value(json_object_get(r, soak_res_names[k])));
    printf("\n");
  }
  json_t *il = json_object_get(j, "interleavings");
  printf("total ops %llu; interleavings: %llu distinct (op A at failpoint X, op B started) "
         "triples, %lld (op, failpoint) steps, %lld op pairs\n",
         (unsigned long long)total, (unsigned long long)inter,
         (long long)json_integer_value(json_object_get(il, "distinct_steps")),
         (long long)json_integer_value(json_object_get(il, "distinct_op_pairs")));
  const char *key;
  json_t *v;
  printf("counters:");
  json_object_foreach(json_object_get(j, "counters"), key, v)
      printf(" %s=%lld", key, (long long)json_integer_value(v));
  printf("\ninvariant checks %lld, failures %lld\n",
         (long long)json_integer_value(json_object_get(j, "invariant_checks")),
         (long long)json_integer_value(json_object_get(j, "failures")));
}

static void usage(FILE *f) {
  fprintf(f, "usage: soak [--seconds N] [--procs P] [--threads T] [--seed S] [--dir DIR]\n"
             "            [--crash] [--check-every SEC] [--json FILE] [--keep]\n"
             "            [--strict-holder]\n");
}

int main(int argc, char **argv) {
  int64_t seconds = 60, check_every = 5;
  int procs = 4, threads = 4, crash = 0, keep = 0, strict_holder = 0;
  uint64_t seed = 0;
  int have_seed = 0;
  const char *dir = NULL, *json_path = NULL;
  static const struct option lo[] = {
      {"seconds", required_argument, 0, 's'}, {"procs", required_argument, 0, 'p'},
      {"threads", required_argument, 0, 't'}, {"seed", required_argument, 0, 'S'},
      {"dir", required_argument, 0, 'd'},     {"crash", no_argument, 0, 'c'},
      {"check-every", required_argument, 0, 'e'}, {"json", required_argument, 0, 'j'},
      {"keep", no_argument, 0, 'k'},         {"strict-holder", no_argument, 0, 'u'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 's': seconds = strtoll(optarg, NULL, 10); break;
      case 'p': procs = atoi(optarg); break;
      case 't': threads = atoi(optarg); break;
      case 'S': seed = strtoull(optarg, NULL, 0); have_seed = 1; break;
      case 'd': dir = optarg; break;
      case 'c': crash = 1; break;
      case 'e': check_every = strtoll(optarg, NULL, 10); break;
      case 'j': json_path = optarg; break;
      case 'k': keep = 1; break;
      case 'u': strict_holder = 1; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind != argc || seconds < 1 || procs < 1 || procs > SOAK_MAX_PROCS || threads < 1 ||
      threads > SOAK_MAX_THREADS || check_every < 1) {
    usage(stderr);
    return 2;
  }
  if (!have_seed && getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint64_t)time(NULL);
  if (soak_shm_init() != 0) return 1;
  soak->seed = seed;
  soak->procs = procs;
  soak->threads = threads;
  soak->crash = crash;
  soak->seconds = seconds;
  atomic_store(&soak->strict_holder, strict_holder);
  char *base = dir ? strdup(dir) : ckl_test_mkdtemp("soak");
  snprintf(soak->store, sizeof soak->store, "%s/store", base);
  printf("soak: seed 0x%llx, store %s (reproduce: --seed 0x%llx%s)\n", (unsigned long long)seed,
         soak->store, (unsigned long long)seed, crash ? " --crash" : "");
  fflush(stdout);
  /* GC sweeps what is unreferenced for 1 s: no atime safety, the minimum
   * margin for coarse timestamps, so sweeps race the backups all along. */
  ckl_store_create_opts co = {.set = CKL_STORE_SET_ATIME_SAFETY | CKL_STORE_SET_MARGIN,
                              .gc_atime_safety_s = 0,
                              .gc_margin_s = 1,
                              .sync = CKL_SYNC_NONE,
                              .compress_level = 1};
  int rc = ckl_store_create(soak->store, &co);
  if (rc != 0) {
    fprintf(stderr, "soak: cannot create %s: %s\n", soak->store, ckl_err_name(rc));
    return 1;
  }
  double t0 = now_s(), next_check = t0 + (double)check_every;
  for (int p = 0; p < procs; p++) spawn(p);
  int crashes_seen = 0;
  double last_crash_t = 0;
  while (!atomic_load(&soak->failed)) {
    reap(0);
    double t = now_s();
    if (t - t0 >= (double)seconds) break;
    if (t >= next_check) {
      if (quiesce_and_check(&crashes_seen, &last_crash_t) < 0) break;
      next_check = now_s() + (double)check_every;
    }
    usleep(20000);
  }
  atomic_store(&soak->stop, 1);
  double stop_t = now_s();
  while (live_procs() > 0) {
    reap(1);
    if (now_s() - stop_t > STOP_TIMEOUT_S) {
      char buf[8192] = "";
      dump_workers(buf, sizeof buf);
      soak_fail("workers did not stop within %d s (a hang?):\n%s", STOP_TIMEOUT_S, buf);
      for (int p = 0; p < procs; p++)
        if (pids[p] > 0) kill(pids[p], SIGKILL);
    }
    usleep(10000);
  }
  double secs = now_s() - t0;
  if (!atomic_load(&soak->failed)) {
    if (soak->crash) usleep(1500000); /* the margin, for temp files of the last crashes */
    soak_check_final();
  }
  uint64_t total, inter;
  json_t *j = report(secs, &total, &inter);
  print_report(j, total, inter);
  if (json_path && json_dump_file(j, json_path, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
    fprintf(stderr, "soak: cannot write %s\n", json_path);
  json_decref(j);
  int failed = atomic_load(&soak->failed) != 0;
  if (failed) {
    printf("\nFAILED: %s\n", soak->failure);
    printf("reproduce with: --seed 0x%llx --procs %d --threads %d%s (the seed fixes each "
           "worker's choices, not the scheduling)\nstore kept at %s\n",
           (unsigned long long)seed, procs, threads, crash ? " --crash" : "", soak->store);
  } else if (!keep && !dir) {
    ckl_test_rmtree(base);
  }
  free(base);
  return failed ? 1 : 0;
}

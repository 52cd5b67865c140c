/*
 * bench/writers_gc_bench.c - figure 5: backup throughput while a GC runs
 * (docs/benchmarks.md, "Figure 5").
 *
 *     writers_gc_bench [--json FILE] [--quick] [--dir DIR] [--runs 5]
 *                      [--chunks 250k] [--backup-mib 256] [--seed 1] [--keep]
 *     writers_gc_bench --child-backup STORE GROUP MIB SEED    (internal)
 *     writers_gc_bench --child-gc STORE THREADS               (internal)
 *
 * The store is bench/gen_store's (N chunks, half garbage, 1,000 indexes;
 * its sync policy "none", zstd off). Each run, interleaved:
 *   A. without GC: two backup processes start together, each a new group
 *      and MIB MiB of new random data in 1 MiB chunks
 *      (ckl_backup_begin, ckl_backup_archive_write_chunk, _close, _finish);
 *      throughput = 2 x MIB / wall time from the first spawn to the last
 *      exit.
 *   B. with GC: gen_store --reset, sync, then a GC process (ckl_gc_run,
 *      atime safety 0, non-strict; once with the default sweep threads,
 *      "auto": the helper stands by while backups are registered, and once
 *      with 2 fixed sweep threads, what "auto" is without writers) and,
 *      once it has had
 *      50 ms to start marking, the same two backups (new groups, new data).
 *      The GC must outlast both backups, or the run does not count as
 *      "during GC" (reported in the note); the GC's result is checked:
 *      exactly N/2 garbage chunks removed, none of the backups' chunks.
 * Record: value = median throughput with GC, floor = median throughput
 * without GC, ratio = with / without. Target >= 0.8.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_record.h"
#include "chunklock/chunklock.h"

extern char **environ;

#define FIG 5

static void log_stderr(ckl_log_level level, const char *msg, void *ud) {
  (void)ud;
  fprintf(stderr, "chunklock %s: %s\n", ckl_log_level_name(level), msg);
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* ---- children -------------------------------------------------------------- */

static int child_backup(const char *store, const char *group, unsigned mib, uint64_t seed) {
  ckl_log_set(log_stderr, NULL, CKL_LOG_WARN);
  ckl_store *st;
  int rc = ckl_store_open(store, NULL, &st);
  if (rc < 0) {
    fprintf(stderr, "writers_gc_bench: open %s: %s\n", store, ckl_strerror(rc));
    return 1;
  }
  ckl_group_name g;
  if ((rc = ckl_group_name_parse(group, &g)) < 0) return 1;
  ckl_backup *b;
  ckl_backup_archive *a = NULL;
  ckl_backup_opts bo = {.proclock_timeout_ms = 10000};
  if ((rc = ckl_backup_begin(st, &g, &bo, &b)) < 0) {
    fprintf(stderr, "writers_gc_bench: backup begin %s: %s\n", group, ckl_strerror(rc));
    return 1;
  }
  const size_t csz = 1u << 20;
  uint8_t *buf = malloc(csz);
  rc = buf ? ckl_backup_archive_open(b, "data.didx", 0, &a) : -ENOMEM;
  uint64_t s = seed;
  for (unsigned i = 0; rc >= 0 && i < mib; i++) {
    for (size_t k = 0; k < csz; k += 8) {
      uint64_t v = splitmix(&s);
      memcpy(buf + k, &v, 8);
    }
    rc = ckl_backup_archive_write_chunk(a, buf, csz, NULL);
    if (rc >= 0 && rc != CKL_INSERT_NEW) rc = -EPROTO; /* new data must be new */
  }
  free(buf);
  if (rc >= 0) rc = ckl_backup_archive_close(a);
  else ckl_backup_archive_abort(a);
  if (rc >= 0) rc = ckl_backup_finish(b);
  else ckl_backup_abort(b);
  ckl_store_close(st);
  if (rc < 0) {
    fprintf(stderr, "writers_gc_bench: backup %s: %s\n", group, ckl_strerror(rc));
    return 1;
  }
  return 0;
}

static int child_gc(const char *store, int threads) {
  ckl_log_set(log_stderr, NULL, CKL_LOG_WARN);
  ckl_store *st;
  int rc = ckl_store_open(store, NULL, &st);
  if (rc < 0) return 1;
  ckl_gc_opts o = {.use_safety = 1, .atime_safety_s = 0, .threads = threads};
  ckl_gc_result r;
  rc = ckl_gc_run(st, &o, &r);
  ckl_store_close(st);
  if (rc < 0) {
    fprintf(stderr, "writers_gc_bench: gc: %s\n", ckl_strerror(rc));
    return 1;
  }
  printf("{\"removed_chunks\":%llu,\"disk_chunks\":%llu}\n",
         (unsigned long long)r.removed_chunks, (unsigned long long)r.disk_chunks);
  return 0;
}

/* ---- the parent -------------------------------------------------------------- */

typedef struct env {
  char self[PATH_MAX], gen[PATH_MAX], store[PATH_MAX];
  const char *dir;
  unsigned long long chunks, seed;
  unsigned mib;
  int runs, keep;
} env;

static pid_t spawn(char *const argv[], int out_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    fprintf(stderr, "writers_gc_bench: spawn %s: %s\n", argv[0], strerror(rc));
    return -1;
  }
  return pid;
}

static int wait_ok(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int run_wait(char *const argv[]) {
  pid_t p = spawn(argv, -1);
  return p < 0 ? -1 : wait_ok(p);
}

/* Two backups of run r, tag "a" (no GC), "g0" or "g1" (GC variants): every
 * (run, tag, k) gets its own data, so every chunk is new. Returns MB/s or
 * < 0; *busy receives the backups' CPU time (user + sys of both) over
 * twice the wall time: near 1 when they are CPU-bound, low when they wait
 * for the disk. */
static double two_backups(const env *e, int r, const char *tag, double *busy) {
  char grp[2][64], mib[16], seed[2][32];
  snprintf(mib, sizeof mib, "%u", e->mib);
  pid_t p[2];
  int64_t t0 = br_mono_ns();
  for (int k = 0; k < 2; k++) {
    snprintf(grp[k], sizeof grp[k], "host/writer-%s%d-%d", tag, r, k);
    snprintf(seed[k], sizeof seed[k], "%llu",
             e->seed * 1000003ull + (unsigned long long)r * 8 +
                 (tag[0] == 'g' ? 2u + 2u * (unsigned)(tag[1] == '1') : 0u) + (unsigned)k);
    char *argv[] = {(char *)e->self, "--child-backup", (char *)e->store, grp[k], mib, seed[k],
                    NULL};
    p[k] = spawn(argv, -1);
  }
  int ok = p[0] > 0 && p[1] > 0;
  double cpu = 0;
  for (int k = 0; k < 2; k++) {
    if (p[k] <= 0) continue;
    int st;
    struct rusage ru;
    while (wait4(p[k], &st, 0, &ru) < 0)
      if (errno != EINTR) break;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = 0;
    cpu += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  }
  double s = (double)(br_mono_ns() - t0) / 1e9;
  *busy = cpu / (2 * s);
  return ok ? 2.0 * e->mib * 1048576.0 / 1e6 / s : -1;
}

static int reset(const env *e, unsigned long long expect_written) {
  char n[32], sd[32];
  snprintf(n, sizeof n, "%llu", e->chunks);
  snprintf(sd, sizeof sd, "%llu", e->seed);
  char *argv[] = {(char *)e->gen, "--reset", "-n", n, "--seed", sd, (char *)e->store, NULL};
  (void)expect_written;
  if (run_wait(argv) < 0) return -1;
  sync();
  return 0;
}

static int run_all(env *e, br_out *out) {
  char n[32], sd[32];
  snprintf(n, sizeof n, "%llu", e->chunks);
  snprintf(sd, sizeof sd, "%llu", e->seed);
  char *rm[] = {"/bin/rm", "-rf", e->store, NULL};
  run_wait(rm);
  char *gen[] = {(char *)e->gen, "-n", n, "--seed", sd, e->store, NULL};
  fprintf(stderr, "== generating %s (%s chunks)\n", e->store, n);
  if (run_wait(gen) < 0) return -1;
  /* Variant 0: the default GC (threads 0 = auto: 1 sweep thread while
   * backups are registered); variant 1: 2 fixed sweep threads. */
  static const int gc_threads[2] = {0, 2};
  br_series with[2], without = {0}, gc_s[2], gc_cpu[2], busy_a = {0}, busy_g[2];
  memset(busy_g, 0, sizeof busy_g);
  memset(with, 0, sizeof with);
  memset(gc_s, 0, sizeof gc_s);
  memset(gc_cpu, 0, sizeof gc_cpu);
  int outlasted[2] = {0, 0};
  for (int r = 0; r < e->runs; r++) {
    if (reset(e, 0) < 0) return -1;
    /* A: without GC (after the reset too, so both see the same page cache) */
    double busy;
    double a = two_backups(e, r, "a", &busy);
    if (a < 0) return -1;
    br_add(&without, a);
    br_add(&busy_a, busy);
    for (int v = 0; v < 2; v++) {
      if (reset(e, 0) < 0) return -1;
      /* B: with GC */
      int pfd[2];
      if (pipe2(pfd, O_CLOEXEC) != 0) return -1;
      char th[8];
      snprintf(th, sizeof th, "%d", gc_threads[v]);
      char *gcv[] = {(char *)e->self, "--child-gc", e->store, th, NULL};
      int64_t g0 = br_mono_ns();
      pid_t gp = spawn(gcv, pfd[1]);
      close(pfd[1]);
      if (gp < 0) return -1;
      struct timespec ts = {0, 50 * 1000000};
      nanosleep(&ts, NULL); /* let the GC open the store and start marking */
      char tag[8];
      snprintf(tag, sizeof tag, "g%d", v);
      double g = two_backups(e, r, tag, &busy);
      br_add(&busy_g[v], busy);
      /* Still running after both backups ended? Only then did the backups
       * run entirely during the GC. */
      int status, still = waitpid(gp, &status, WNOHANG) == 0;
      char buf[512] = "";
      ssize_t got = 0, k;
      while ((k = read(pfd[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0) got += k;
      buf[got > 0 ? got : 0] = '\0';
      close(pfd[0]);
      struct rusage ru;
      if (still)
        while (wait4(gp, &status, 0, &ru) < 0 && errno == EINTR) {
        }
      else
        memset(&ru, 0, sizeof ru); /* already reaped by waitpid: no rusage */
      int gok = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
      double gsec = (double)(br_mono_ns() - g0) / 1e9;
      const char *rm_s = strstr(buf, "\"removed_chunks\":");
      unsigned long long removed = rm_s ? strtoull(rm_s + 17, NULL, 10) : 0;
      if (g < 0 || gok < 0 || removed != e->chunks - e->chunks / 2) {
        fprintf(stderr,
                "writers_gc_bench: run %d failed (backups %s, gc %s, removed %llu of %llu)\n",
                r + 1, g < 0 ? "failed" : "ok", gok < 0 ? "failed" : "ok", removed,
                e->chunks - e->chunks / 2);
        return -1;
      }
      outlasted[v] += still;
      br_add(&with[v], g);
      br_add(&gc_s[v], gsec);
      if (still)
        br_add(&gc_cpu[v], (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
      fprintf(stderr, "   run %d: without GC %.1f MB/s, with a GC (threads %d) %.1f MB/s (GC %.1f s, %s)\n",
              r + 1, a, gc_threads[v], g, gsec, still ? "outlasted the backups" : "ENDED FIRST");
    }
  }
  for (int v = 0; v < 2; v++) {
    char name[160], note[768];
    snprintf(name, sizeof name,
             "backup throughput with GC running / without GC, 2 writers%s",
             v == 0 ? "" : ", GC with 2 fixed sweep threads");
    br_rec rec = BR_REC(FIG, name, br_med(&with[v]), "MB/s");
    rec.floor = br_med(&without);
    rec.min = br_min(&with[v]);
    rec.max = br_max(&with[v]);
    rec.runs = with[v].n;
    rec.target = 0.8;
    rec.cmp = ">=";
    int len = snprintf(
        note, sizeof note,
        "2 backup processes (separate groups, %u MiB of new random data each, 1 MiB chunks) "
        "while ckl_gc_run (non-strict, %s) runs on a %llu-chunk store (half "
        "garbage); GC median %.1f s wall, %.1f s CPU (user+sys); the GC outlasted the backups "
        "in %d of %d runs; store sync none, compression off (gen_store); no backup waited for "
        "a lock; backup CPU share of wall (median) %.0f%% without GC, %.0f%% with",
        e->mib,
        gc_threads[v] == 0 ? "default sweep threads: 1 while backups are registered, else 2"
                           : "2 fixed sweep threads",
        e->chunks, br_med(&gc_s[v]),
        br_med(&gc_cpu[v]), outlasted[v], with[v].n, 100 * br_med(&busy_a),
        100 * br_med(&busy_g[v]));
    if (br_met(&rec) == 0 && len > 0 && (size_t)len < sizeof note)
      snprintf(note + len, sizeof note - (size_t)len,
               "; MISSED: no lock is in the way; the backups share the disk (their CPU share "
               "shows them waiting for I/O) and the 2 cores with the GC's sweep (renames, "
               "unlinks, journal); see docs/benchmarks.md");
    rec.note = note;
    br_emit(out, &rec);
  }
  br_rec rec = BR_REC(FIG, "backup throughput without GC, 2 writers", br_med(&without), "MB/s");
  rec.min = br_min(&without);
  rec.max = br_max(&without);
  rec.runs = without.n;
  br_emit(out, &rec);
  if (!e->keep) run_wait(rm);
  return 0;
}

static unsigned long long parse_count(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*end == 'k' || *end == 'K') v *= 1e3;
  else if (*end == 'm' || *end == 'M') v *= 1e6;
  return (unsigned long long)v;
}

int main(int argc, char **argv) {
  if (argc == 6 && !strcmp(argv[1], "--child-backup"))
    return child_backup(argv[2], argv[3], (unsigned)atoi(argv[4]), strtoull(argv[5], NULL, 10));
  if (argc == 4 && !strcmp(argv[1], "--child-gc")) return child_gc(argv[2], atoi(argv[3]));
  env e = {.dir = "/var/tmp/ckl-bench", .chunks = 250000, .seed = 1, .mib = 256, .runs = 5};
  const char *json = NULL;
  int quick = 0, set_runs = 0, set_chunks = 0, set_mib = 0;
  static const struct option lo[] = {
      {"json", required_argument, NULL, 'j'},   {"quick", no_argument, NULL, 'q'},
      {"dir", required_argument, NULL, 'd'},    {"runs", required_argument, NULL, 'r'},
      {"chunks", required_argument, NULL, 'n'}, {"backup-mib", required_argument, NULL, 'm'},
      {"seed", required_argument, NULL, 's'},  {"keep", no_argument, NULL, 'k'},
      {0}};
  int c;
  while ((c = getopt_long(argc, argv, "j:qd:r:n:m:s:k", lo, NULL)) != -1) {
    switch (c) {
    case 'j': json = optarg; break;
    case 'q': quick = 1; break;
    case 'd': e.dir = optarg; break;
    case 'r': e.runs = atoi(optarg); set_runs = 1; break;
    case 'n': e.chunks = parse_count(optarg); set_chunks = 1; break;
    case 'm': e.mib = (unsigned)atoi(optarg); set_mib = 1; break;
    case 's': e.seed = strtoull(optarg, NULL, 10); break;
    case 'k': e.keep = 1; break;
    default:
      fputs("usage: writers_gc_bench [--json FILE] [--quick] [--dir DIR] [--runs N]\n"
            "                        [--chunks 250k] [--backup-mib 256] [--seed S] [--keep]\n",
            stderr);
      return 2;
    }
  }
  if (quick) {
    if (!set_runs) e.runs = 1;
    if (!set_chunks) e.chunks = 20000;
    if (!set_mib) e.mib = 16;
  }
  if (e.runs < 1 || e.runs > BR_MAX_RUNS || e.mib < 1 || e.chunks < 2) return 2;
  ssize_t l = readlink("/proc/self/exe", e.self, sizeof e.self - 1);
  if (l <= 0) return 1;
  e.self[l] = '\0';
  snprintf(e.gen, sizeof e.gen, "%s", e.self);
  char *slash = strrchr(e.gen, '/');
  snprintf(slash + 1, sizeof e.gen - (size_t)(slash + 1 - e.gen), "gen_store");
  snprintf(e.store, sizeof e.store, "%s/writers-store", e.dir);
  if (mkdir(e.dir, 0755) != 0 && errno != EEXIST) return 1;
  br_out out;
  if (!br_open(&out, json)) return 1;
  int rc = run_all(&e, &out);
  if (br_close(&out) != 0) rc = -1;
  return rc == 0 ? 0 : 1;
}
